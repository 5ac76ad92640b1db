//! The browser app's links between a plan, its run history and its runs,
//! reruns and what a page says about them: each place is one click from
//! the others; a rerun names the run it reruns (on its page, in the runs
//! list and in the plan's latest runs) and its button says how many tests
//! run with the failed ones; a plan that is not there says so; the header
//! of a finished run shows its own time; the cancel dialog says what
//! happens; an export writes params as the types their suites declare.

use ensemble_protocol::api::routes;
use ensemble_tests::browser::Browser;
use ensemble_tests::{Server, start_server};
use serde_json::json;

const TOKEN: &str = "links-token";

/// kv-server and kv-client coordinating, the client expecting other keys
/// than the server wrote: its snapshot check fails.
async fn coordinating_plan(server: &Server) -> serde_json::Value {
    let kv_server = server.upload(ensemble_artifacts::KV_SERVER, "kv-server").await;
    let kv_client = server.upload(ensemble_artifacts::KV_CLIENT, "kv-client").await;
    json!({
        "name": "kv-links", "type": "distributed",
        "settings": { "execution": "parallel", "barrier_timeout": "60s", "test_timeout": "60s" },
        "profiles": [{ "name": "here", "labels": {} }],
        "entries": [
            { "suite": format!("sha256:{kv_server}"), "profile": "here", "role": "server",
              "params": { "keys": 100, "clients": 1, "timeout_ms": 60000 } },
            { "suite": format!("sha256:{kv_client}"), "profile": "here", "role": "client",
              "params": { "keys": 50, "timeout_ms": 60000 } }
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_runs_and_reruns_are_one_click_apart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    server.wait_online(1).await;
    let client = server.client();
    let plan = coordinating_plan(&server).await;
    let stored = client.create_plan(&serde_json::from_value(plan.clone()).unwrap()).await.unwrap();
    let first = server.start_run(plan).await;
    server.events(&first).await;
    let preview = client.rerun_preview(&first).await.unwrap();
    assert!(preview.failed >= 1 && preview.tests > preview.failed, "the others coordinate: {preview:?}");
    let label = format!(
        "Rerun {} failed (+{} that coordinate with {})",
        preview.failed,
        preview.tests - preview.failed,
        if preview.failed == 1 { "it" } else { "them" }
    );

    let browser = Browser::start().await.unwrap();
    let b = &browser;
    let steps = async {
        // The run: its rerun button says what runs.
        b.goto(&format!("{}/runs/{first}?token={TOKEN}", server.url)).await?;
        b.wait_text("#rerun-failed", &label).await?;
        // The header shows the run's own time, the same as the runs list.
        let elapsed = b.text("#run-elapsed").await?;
        b.click("#rerun-failed").await?;
        // The rerun names its run, and the run is one click away.
        b.wait_text("#reruns", &format!("Reruns the failures of run {first}")).await?;
        let rerun = b.current_url().await?.rsplit('/').next().unwrap_or_default().to_string();
        anyhow::ensure!(rerun != first && !rerun.is_empty(), "{rerun}");
        // The runs list marks it.
        b.goto(&format!("{}/runs", server.url)).await?;
        b.wait_text(&format!("tr[data-run='{rerun}'] .rerun-of"), &format!("rerun of {first}")).await?;
        let listed = b.text(&format!("tr[data-run='{first}'] td[data-label='Duration']")).await?;
        anyhow::ensure!(listed == elapsed, "the header said {elapsed}, the list {listed}");
        // Run → the plan's history → the editor → the run.
        b.goto(&format!("{}/runs/{first}", server.url)).await?;
        b.click("a.plan-link").await?;
        b.wait_text("h1", "Runs of plan kv-links").await?;
        b.click("a.edit-plan").await?;
        b.wait_css("#plan-name").await?;
        anyhow::ensure!(b.current_url().await?.ends_with(&format!("/plans/{}", stored.id)), "the editor");
        b.wait_text(&format!("#plan-runs li[data-run='{rerun}'] .rerun-of"), &format!("rerun of {first}"))
            .await?;
        // Its latest runs rerun failures from there.
        b.click(&format!("#plan-runs li[data-run='{first}'] button.rerun-failed")).await?;
        b.wait_text("#reruns", &format!("Reruns the failures of run {first}")).await?;
        // And the run's own link to the editor.
        b.click("a.edit-plan").await?;
        b.wait_css("#plan-name").await?;
        anyhow::ensure!(
            b.current_url().await?.ends_with(&format!("/plans/{}", stored.id)),
            "the editor again"
        );
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        panic!("{e:#}\n{}", browser.diagnostics().await);
    }
    browser.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_plan_says_so_the_cancel_dialog_says_what_ends_and_params_export_typed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    server.wait_online(1).await;
    let client = server.client();
    let plan = coordinating_plan(&server).await;
    let stored = client.create_plan(&serde_json::from_value(plan).unwrap()).await.unwrap();
    // A stuck run to cancel.
    let stuck = server.start_stuck_run(ensemble_artifacts::BENCH_PARTIES, json!({}), json!({})).await;
    server.watch(&stuck, 1, |e| !matches!(e.kind, ensemble_protocol::EventKind::TestStarted { .. })).await;

    let browser = Browser::start().await.unwrap();
    let b = &browser;
    let steps = async {
        // No such plan: said, with no form to create or save.
        b.goto(&format!("{}/plans/nope?token={TOKEN}", server.url)).await?;
        b.wait_text("#plan-missing", "This server has no plan \"nope\"").await?;
        b.wait_absent("#plan-name").await?;
        b.wait_absent("button.primary").await?;
        // The cancel dialog says the tests end cancelled (as they do).
        b.goto(&format!("{}/runs/{stuck}", server.url)).await?;
        b.execute("window.confirm = (q) => { window.asked = q; return true; }", vec![]).await?;
        b.click("#cancel-run").await?;
        b.wait_text("#run-state", "cancelled").await?;
        let asked = b.execute("return window.asked", vec![]).await?;
        let asked = asked.as_str().unwrap_or_default().to_string();
        anyhow::ensure!(asked.contains("end cancelled") && !asked.contains("skipped"), "{asked}");
        // Params typed in the editor export as their declared types.
        b.goto(&format!("{}/plans/{}", server.url, stored.id)).await?;
        b.wait_css("#plan-name").await?;
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        panic!("{e:#}\n{}", browser.diagnostics().await);
    }
    browser.close().await.unwrap();
    let toml = client.request(reqwest::Method::GET, &routes::plan_toml(&stored.id)).send().await.unwrap();
    let toml = toml.text().await.unwrap();
    for line in ["keys = 100", "clients = 1", "timeout_ms = 60000", "keys = 50"] {
        assert!(toml.lines().any(|l| l.trim() == line), "{line} in\n{toml}");
    }
}
