//! No address the browser app builds carries the API token: links are bare
//! API paths (a download is fetched with the token in a header), and a
//! run's event WebSocket opens with a single-use ticket. Checked on every
//! request the page makes (from Chromium's network log), every link and
//! source in every page, and the console.

use ensemble_protocol::api::{Ticket, routes};
use ensemble_tests::browser::{Browser, app_pages};
use ensemble_tests::start_server;

/// Long and unlike anything else on a page, so any copy of it is found.
const TOKEN: &str = "tok-3f9c2a7e51d84b06a1c9e2f7d3b58a64";

/// Every `href`, `src` and `action` in the page.
const ADDRESSES: &str = r#"
return [...document.querySelectorAll('[href],[src],[action]')]
  .map((el) => el.getAttribute('href') || el.getAttribute('src') || el.getAttribute('action'));
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_address_the_app_builds_or_logs_carries_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    let pages = app_pages(&server, ensemble_artifacts::BASICS).await;
    let plan = server.client().plans().await.unwrap().into_iter().next().expect("a stored plan");
    let browser = Browser::start_logging_network().await.unwrap();
    let b = &browser;
    let mut requested = Vec::new();
    let mut found = Vec::new();
    let steps = async {
        // The token handed over in the address, as `serve` prints it: the
        // app keeps it and takes it out of the address at once.
        let handed = format!("{}/?token={TOKEN}", server.url);
        b.goto(&handed).await?;
        b.wait_css("h1").await?;
        let shown = b.current_url().await?;
        anyhow::ensure!(!shown.contains(TOKEN), "the address keeps the token: {shown}");
        requested.extend(b.requested_urls().await?.into_iter().filter(|u| *u != handed));
        for (path, ready) in &pages {
            b.goto(&format!("{}{path}", server.url)).await?;
            b.wait_css(ready).await?;
            for address in b.execute(ADDRESSES, vec![]).await?.as_array().into_iter().flatten() {
                if address.as_str().is_some_and(|a| a.contains(TOKEN)) {
                    found.push(format!("{path}: a link or source {address}"));
                }
            }
            requested.extend(b.requested_urls().await?);
        }
        // Export TOML downloads the plan (fetched with the header).
        b.goto(&format!("{}/plans/{}", server.url, plan.id)).await?;
        b.wait_css("#plan-name").await?;
        b.click(".page-head a[download]").await?;
        let toml = String::from_utf8(b.downloaded(&format!("{}.toml", plan.plan.name)).await?)?;
        anyhow::ensure!(toml.contains(&format!("name = {:?}", plan.plan.name)), "{toml}");
        requested.extend(b.requested_urls().await?);
        anyhow::Ok(b.console_log().await?)
    };
    let console = match steps.await {
        Ok(console) => console,
        Err(e) => panic!("{e:#}\n{}", browser.diagnostics().await),
    };
    browser.close().await.unwrap();
    found.extend(requested.iter().filter(|u| u.contains(TOKEN)).map(|u| format!("a request to {u}")));
    found.extend(console.iter().filter(|l| l.contains(TOKEN)).map(|l| format!("the console: {l}")));
    assert!(found.is_empty(), "the token in addresses:\n{}", found.join("\n"));
    // The run pages' event streams were opened, with tickets.
    let sockets: Vec<&String> = requested.iter().filter(|u| u.starts_with("ws")).collect();
    assert!(sockets.len() >= 2, "{requested:#?}");
    assert!(sockets.iter().all(|u| u.contains("ticket=")), "{sockets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_opens_one_event_stream_once_and_only_with_the_token_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    server.wait_online(1).await;
    let suite = format!("sha256:{}", server.upload(ensemble_artifacts::BASICS, "basics").await);
    let run = server
        .start_run(serde_json::json!({
            "name": "tickets",
            "profiles": [{ "name": "here", "labels": {} }],
            "entries": [{ "suite": suite, "profile": "here", "params": { "greeting": "hi" } }],
        }))
        .await;
    let client = server.client();
    let anonymous = client.with_token(None);
    let refused = anonymous.request(reqwest::Method::POST, routes::TICKETS).send().await.unwrap();
    assert_eq!(refused.status(), 401, "a ticket takes the token");
    let answer = client.request(reqwest::Method::POST, routes::TICKETS).send().await.unwrap();
    assert_eq!(answer.status(), 201);
    let ticket: Ticket = answer.json().await.unwrap();
    assert_eq!(ticket.expires_in_ms, 30_000);
    let path = format!("{}&ticket={}", routes::events(&run, 1), ticket.ticket);
    // Once: the stream opens and replays the run.
    let mut socket = anonymous.websocket(&path).await.expect("the ticket opens the stream");
    use futures::StreamExt;
    let first = socket.next().await.expect("an event").expect("a frame");
    assert!(first.to_text().unwrap().contains("\"seq\":1"), "{first:?}");
    drop(socket);
    // Not twice, and not a made-up one.
    for path in [path, format!("{}&ticket=0123", routes::events(&run, 1))] {
        let Err(err) = anonymous.websocket(&path).await else { panic!("{path} opened") };
        let err = err.to_string();
        assert!(err.contains("the ticket is unknown, used or expired"), "{err}");
    }
}
