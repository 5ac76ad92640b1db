//! Webhooks: a finished run is told to its plan's `notify` URLs, signed
//! with the server's secret, retried after a receiver error, recorded in
//! the API; `on = "failed"` hears nothing of a passing run; the Slack
//! format carries a text.

use ensemble_tests::{WebhookCall as Call, ensemble_async, start_server, webhook_receiver as receiver};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const TOKEN: &str = "notify-token";
const SECRET: &str = "webhook-s3cret";

fn plan(dir: &std::path::Path, name: &str, suite: &str, notify: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    // basics requires its `greeting` param.
    let params = if suite == ensemble_artifacts::BASICS { "params = { greeting = \"hello\" }\n" } else { "" };
    std::fs::write(
        &path,
        format!(
            "name = {name:?}\n{notify}\n[[profiles]]\nname = \"here\"\n[[entries]]\nsuite = {suite:?}\nprofile = \"here\"\n{params}"
        ),
    )
    .unwrap();
    path
}

fn signed(call: &Call) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&call.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    call.headers.get("x-ensemble-signature") == Some(&expected)
}

/// A webhook to a loopback address the server does not allow.
const REFUSED: &str = "http://[::1]:9/never";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_run_is_told_signed_and_retried_and_a_passing_one_only_to_whom_it_concerns() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let server = start_server(
        dir.path(),
        &dir.path().join("data"),
        TOKEN,
        &[
            "--webhook-secret",
            SECRET,
            "--public-url",
            "https://ensemble.example",
            "--allow-webhook-to",
            "127.0.0.1",
        ],
    );
    let (failing_url, mut failing) = receiver(vec![500]).await;
    let (slack_url, mut slack) = receiver(vec![]).await;
    let (only_failed_url, mut only_failed) = receiver(vec![]).await;
    let (every_url, mut every) = receiver(vec![]).await;
    let served = ["--server", server.url.as_str(), "--token", TOKEN];

    // A passing run: the webhook for every run hears of it, the one for
    // failed runs does not.
    let passing = plan(
        dir.path(),
        "passing",
        ensemble_artifacts::HELLO_COMMAND,
        &format!(
            "[[notify]]\nurl = {only_failed_url:?}\non = \"failed\"\n[[notify]]\nurl = {every_url:?}\non = \"finished\"\n"
        ),
    );
    let out = ensemble_async(&[&["run", passing.to_str().unwrap()][..], &served].concat(), &cache).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let call = every.recv().await.unwrap();
    assert!(signed(&call), "{call:?}");
    let message: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(message["verdict"], "passed");
    // Which webhooks to call was decided before any was called.
    assert!(only_failed.try_recv().is_err(), "a failed-only webhook heard of a passing run");

    // A failing run: a receiver error is retried; the Slack format has a text.
    let failing_plan = plan(
        dir.path(),
        "failing",
        ensemble_artifacts::BASICS,
        &format!(
            "[[notify]]\nurl = {failing_url:?}\non = \"failed\"\n[[notify]]\nurl = {slack_url:?}\nformat = \"slack\"\n[[notify]]\nurl = {REFUSED:?}\n"
        ),
    );
    let out = ensemble_async(&[&["run", failing_plan.to_str().unwrap()][..], &served].concat(), &cache).await;
    assert_eq!(out.status.code(), Some(1));
    let first = failing.recv().await.unwrap();
    let second = failing.recv().await.unwrap();
    assert!(signed(&first) && signed(&second), "{first:?}");
    assert_eq!(first.body, second.body, "the retry sends the same message");
    let message: serde_json::Value = serde_json::from_slice(&second.body).unwrap();
    let run = message["run"].as_str().unwrap().to_string();
    assert_eq!(message["type"], "run-finished");
    assert_eq!(message["plan"], "failing");
    assert_eq!(message["verdict"], "failed");
    let stored = server.client().run(&run).await.unwrap().summary.unwrap();
    assert_eq!(message["summary"], serde_json::to_value(stored).unwrap(), "the stored run's counts");
    assert_eq!(message["url"], format!("https://ensemble.example/runs/{run}"));
    // The failed attempt is on record by the time the retry is sent.
    let deliveries = server.client().deliveries(&run).await.unwrap();
    let first_attempt = deliveries.iter().find(|d| d.url == failing_url).expect("recorded");
    assert_eq!((first_attempt.attempt, first_attempt.status, first_attempt.delivered), (1, Some(500), false));
    assert!(first_attempt.error.as_deref().unwrap_or_default().contains("500"), "{first_attempt:?}");
    // A loopback address the server was not told to allow is refused
    // before any call (recorded first), once, saying how to allow it.
    let refused: Vec<_> = deliveries.iter().filter(|d| d.url == REFUSED).collect();
    assert_eq!(refused.len(), 1, "{deliveries:?}");
    assert_eq!((refused[0].status, refused[0].delivered), (None, false));
    let why = refused[0].error.as_deref().unwrap_or_default();
    assert!(why.contains("[::1] is not a public address") && why.contains("--allow-webhook-to"), "{why}");

    let text = slack.recv().await.unwrap();
    assert!(signed(&text));
    let text: serde_json::Value = serde_json::from_slice(&text.body).unwrap();
    let text = text["text"].as_str().unwrap();
    assert!(text.starts_with("Run of plan failing failed: "), "{text}");
    assert!(
        text.contains(&format!("{} failed", stored.failed))
            && text.contains(&format!("/runs/{run}|Open the run>")),
        "{text}"
    );
    assert!(failing.try_recv().is_err(), "delivered once, no more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_url_that_is_not_http_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = plan(dir.path(), "bad", ensemble_artifacts::HELLO_COMMAND, "[[notify]]\nurl = \"ftp://x\"\n");
    let out = ensemble_async(&["plan", "check", path.to_str().unwrap()], &dir.path().join("cache")).await;
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("notify[0].url: \"ftp://x\" is not an http:// or https:// URL with a host"),
        "{text}"
    );
}
