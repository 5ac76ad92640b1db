//! The app on a phone (390×844 CSS pixels, Chromium's mobile emulation):
//! no page scrolls sideways, whatever it shows (a plan with suites, a
//! finished run with its timeline and tests, machines, suites, runs).
//! With `ENSEMBLE_UPDATE_SCREENSHOTS=1` it writes the README's phone
//! screenshot.

use ensemble_tests::browser::{Browser, screenshot};
use ensemble_tests::start_server;

const TOKEN: &str = "phone-token";

/// What sticks out past the right edge: `tag.class` of the outermost
/// elements wider than the viewport, and the page's scroll width.
const OVERFLOW: &str = r#"
const width = screen.width;
const out = [];
for (const el of document.querySelectorAll('body *')) {
  const r = el.getBoundingClientRect();
  if (r.width > 0 && r.right > width + 0.5 && !(el.parentElement && el.parentElement.getBoundingClientRect().right > width + 0.5)) {
    out.push(el.tagName.toLowerCase() + (el.className ? '.' + String(el.className).split(' ').join('.') : '') + (el.id ? '#' + el.id : '') + ' ' + Math.round(r.right));
  }
}
return { scroll: document.documentElement.scrollWidth, width, out: out.slice(0, 12) };
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_page_scrolls_sideways_on_a_phone() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    let pages = ensemble_tests::browser::app_pages(&server, ensemble_artifacts::BASICS).await;
    let browser = Browser::start_phone(390, 844).await.unwrap();
    let b = &browser;
    let mut wide = Vec::new();
    for (path, ready) in &pages {
        let steps = async {
            let sep = if path.contains('?') { '&' } else { '?' };
            b.goto(&format!("{}{path}{sep}token={}", server.url, server.token)).await?;
            b.wait_css(ready).await?;
            b.execute(OVERFLOW, vec![]).await
        };
        let measured = match steps.await {
            Ok(m) => m,
            Err(e) => panic!("{path}: {e:#}\n{}", browser.diagnostics().await),
        };
        assert_eq!(measured["width"], 390, "the phone's viewport: {measured}");
        if path.starts_with("/runs/") {
            b.screenshot_to(screenshot(dir.path(), "phone-run.png")).await.unwrap();
        }
        if measured["scroll"].as_u64() > measured["width"].as_u64() {
            wide.push(format!("{path}: {measured}"));
        }
    }
    browser.close().await.unwrap();
    assert!(wide.is_empty(), "pages wider than the phone:\n{}", wide.join("\n"));
}
