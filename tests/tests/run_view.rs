//! The run view says what is so: a run the server does not have is "not
//! found" (not running, not cancellable, not reconnecting for ever), and a
//! finished run without sync events says it had none, not "yet"; Cancel
//! asks first.

use ensemble_tests::browser::Browser;
use ensemble_tests::start_server;

const TOKEN: &str = "run-view-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_run_is_not_found_and_a_finished_one_had_no_sync_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    server.wait_online(1).await;
    let suite = format!("sha256:{}", server.upload(ensemble_artifacts::HELLO_COMMAND, "hello").await);
    let run = server
        .start_run(serde_json::json!({
            "name": "quiet",
            "profiles": [{ "name": "here" }],
            "entries": [{ "suite": suite, "profile": "here" }],
        }))
        .await;
    server.events(&run).await;

    let browser = Browser::start().await.unwrap();
    let b = &browser;
    let steps = async {
        b.goto(&format!("{}/runs/no-such-run?token={TOKEN}", server.url)).await?;
        b.wait_text("#run-missing", "This server has no run \"no-such-run\"").await?;
        b.wait_absent("#run-state").await?;
        b.goto(&format!("{}/runs/{run}?token={TOKEN}", server.url)).await?;
        b.wait_text("#run-state", "passed").await?;
        b.wait_text("#no-sync", "No signals, barriers or publishes in this run.").await?;
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        panic!("{e:#}\n{}", browser.diagnostics().await);
    }
    browser.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_asks_before_it_cancels() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    server.wait_online(1).await;
    let suite = format!("sha256:{}", server.upload(ensemble_artifacts::BENCH_PARTIES, "parties").await);
    // Waits at a barrier for a party that never comes.
    let run = server
        .start_run(serde_json::json!({
            "name": "waits",
            "profiles": [{ "name": "here" }],
            "entries": [{
                "suite": suite, "profile": "here", "tests": ["barriers"],
                "params": { "parties": "2", "rounds": "1" },
            }],
        }))
        .await;
    let browser = Browser::start().await.unwrap();
    let b = &browser;
    let steps = async {
        b.goto(&format!("{}/runs/{run}?token={TOKEN}", server.url)).await?;
        b.wait_text("#run-state", "running").await?;
        b.execute("window.confirm = (q) => { window.asked = q; return true; }", vec![]).await?;
        b.click("#cancel-run").await?;
        b.wait_text("#run-state", "cancelled").await?;
        let asked = b.execute("return window.asked", vec![]).await?;
        anyhow::ensure!(
            asked.as_str().is_some_and(|q| q.starts_with(&format!("Cancel run {run}?"))),
            "{asked}"
        );
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        panic!("{e:#}\n{}", browser.diagnostics().await);
    }
    browser.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summary_count_filters_the_table_to_its_tests() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    server.wait_online(1).await;
    let suite = format!("sha256:{}", server.upload(ensemble_artifacts::BASICS, "basics").await);
    let run = server
        .start_run(serde_json::json!({
            "name": "mixed",
            "profiles": [{ "name": "here" }],
            "entries": [{ "suite": suite, "profile": "here", "params": { "greeting": "hi", "expected": "hi" } }],
        }))
        .await;
    let events = server.events(&run).await;
    let Some(ensemble_protocol::EventKind::RunFinished { summary, .. }) = events.last().map(|e| &e.kind)
    else {
        panic!("{events:?}")
    };
    let all =
        events.iter().filter(|e| matches!(e.kind, ensemble_protocol::EventKind::TestFinished { .. })).count();
    let browser = Browser::start().await.unwrap();
    let b = &browser;
    let steps = async {
        b.goto(&format!("{}/runs/{run}?token={TOKEN}", server.url)).await?;
        b.wait_text("#tests-title", &format!("Tests ({all} of {all})")).await?;
        b.click("#summary [data-count='passed'] button").await?;
        b.wait_text("#tests-title", &format!("Tests ({} of {all})", summary.passed + summary.flaky)).await?;
        b.click("#summary [data-count='failed'] button").await?;
        let failures = summary.failed + summary.timed_out + summary.crashed + summary.lost;
        b.wait_text("#tests-title", &format!("Tests ({failures} of {all})")).await?;
        // The same count again: every test.
        b.click("#summary [data-count='failed'] button").await?;
        b.wait_text("#tests-title", &format!("Tests ({all} of {all})")).await?;
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        panic!("{e:#}\n{}", browser.diagnostics().await);
    }
    browser.close().await.unwrap();
}
