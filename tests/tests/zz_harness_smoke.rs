//! Checks the browser harness against a tiny static page.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use ensemble_tests::browser::Browser;

const PAGE: &str = r#"<!doctype html>
<html><head><title>harness</title></head>
<body>
  <h1 id="status">Idle</h1>
  <input id="name" value="old">
  <select id="mode">
    <option value="a">A</option>
  </select>
  <button id="go" disabled>Go</button>
  <p id="echo"></p>
  <script>
    // Things appear late, as in a real app.
    setTimeout(() => {
      document.getElementById('go').disabled = false;
      const option = document.createElement('option');
      option.value = 'b "quoted"';
      option.textContent = 'B';
      document.getElementById('mode').appendChild(option);
    }, 300);
    document.getElementById('go').addEventListener('click', () => {
      console.log('clicked');
      const name = document.getElementById('name').value;
      const mode = document.getElementById('mode').value;
      setTimeout(() => {
        document.getElementById('status').textContent = 'Done';
        document.getElementById('echo').textContent = name + ' / ' + mode;
      }, 200);
    });
  </script>
</body></html>"#;

/// Serves `PAGE` for every request on a loopback port; returns its URL.
fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            // Read the request head, then answer and close.
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PAGE}",
                PAGE.len()
            );
        }
    });
    url
}

#[tokio::test]
async fn harness_drives_a_page() {
    let url = serve();
    let browser = Browser::start().await.unwrap();
    browser.goto(&url).await.unwrap();
    browser.wait_text("#status", "Idle").await.unwrap();
    browser.fill("#name", "Ada Lovelace").await.unwrap();
    browser.select_by_value("#mode", r#"b "quoted""#).await.unwrap();
    browser.click("#go").await.unwrap();
    browser.wait_text("h1", "Done").await.unwrap();
    let echo = browser.wait_text("#echo", "Ada").await.unwrap();
    assert_eq!(echo.text().await.unwrap(), r#"Ada Lovelace / b "quoted""#);
    assert!(browser.console_log().await.unwrap().iter().any(|entry| entry.contains("clicked")));

    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("shots/page.png");
    browser.screenshot_to(&png).await.unwrap();
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let (width, height) = (
        u32::from_be_bytes(bytes[16..20].try_into().unwrap()),
        u32::from_be_bytes(bytes[20..24].try_into().unwrap()),
    );
    println!("screenshot: {width}x{height}");
    assert_eq!(width, 1400);

    // A failure names what it waited for and shows the page.
    let mut browser = browser;
    browser.set_timeout(std::time::Duration::from_secs(1)).await.unwrap();
    let error = browser.wait_text("#status", "Never").await.unwrap_err().to_string();
    println!("{error}");
    assert!(error.contains("with text containing \"Never\""), "{error}");
    assert!(error.contains(&url), "{error}");
    assert!(error.contains("Ada Lovelace / b"), "{error}");
    assert!(error.contains("the matching elements' texts are [\"Done\"]"), "{error}");
    assert!(error.contains("clicked"), "the console: {error}");

    browser.close().await.unwrap();
}

/// Dropping a browser without closing it leaves no Chromium behind.
#[tokio::test]
async fn dropping_kills_chromium() {
    let browser = Browser::start().await.unwrap();
    browser.goto("about:blank").await.unwrap();
    let profile = browser.profile_dir().to_path_buf();
    drop(browser);
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let zombie = stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z'));
            if !zombie && cmdline.contains(&*profile.to_string_lossy()) {
                left.push(cmdline);
            }
        }
    }
    assert!(left.is_empty(), "processes left: {left:#?}");
    assert!(!profile.exists(), "{} is left", profile.display());
}
