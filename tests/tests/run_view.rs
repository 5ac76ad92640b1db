//! The run view says what is so: a run the server does not have is "not
//! found" (not running, not cancellable, not reconnecting for ever), and a
//! finished run without sync events says it had none, not "yet"; Cancel
//! asks first, and what it stopped shows as cancelled (not skipped); a
//! finished run runs again in one click.

use ensemble_tests::browser::Browser;
use ensemble_tests::start_server;
use serde_json::json;

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
    let run = server.start_stuck_run(ensemble_artifacts::BENCH_PARTIES, json!({}), json!({})).await;
    let browser = Browser::start().await.unwrap();
    let b = &browser;
    let steps = async {
        // The machines page links the shard it runs to its run.
        b.goto(&format!("{}/machines?token={TOKEN}", server.url)).await?;
        b.click(&format!(".running-shard a[href='/runs/{run}']")).await?;
        b.wait_text("#run-state", "running").await?;
        // The running test says what it waits on.
        b.click("tr[data-test='barriers'] button").await?;
        let waiting = b.wait_text("#test-waiting", "Waiting for barrier ").await?.text().await?;
        anyhow::ensure!(waiting.contains("(1 of 2 arrived), for "), "{waiting}");
        b.execute("window.confirm = (q) => { window.asked = q; return true; }", vec![]).await?;
        b.click("#cancel-run").await?;
        b.wait_text("#run-state", "cancelled").await?;
        let asked = b.execute("return window.asked", vec![]).await?;
        anyhow::ensure!(
            asked.as_str().is_some_and(|q| q.starts_with(&format!("Cancel run {run}?"))),
            "{asked}"
        );
        // What the cancel stopped is cancelled, not skipped.
        b.wait_text("tr[data-test='barriers'] .status", "cancelled").await?;
        b.wait_text("#summary [data-count='cancelled']", "1 cancelled").await?;
        b.wait_text("#summary [data-count='skipped']", "0 skipped").await?;

        // Run again: a new run of the same plan, opened.
        b.click("#run-again").await?;
        let again = b
            .wait_until("the new run's page", async |c| {
                let url = c.current_url().await?.to_string();
                let id =
                    url.split("/runs/").nth(1).map(|r| r.split(['?', '#']).next().unwrap_or(r).to_string());
                Ok(id.filter(|id| !id.is_empty() && *id != run))
            })
            .await?;
        b.wait_text("h1", &format!("Run {again}")).await?;
        b.wait_text("#run-state", "running").await?;
        // The plan's name leads to its history: both runs, no others.
        b.click("h1 .plan-link").await?;
        b.wait_text("h1", "Runs of plan waits").await?;
        b.wait_css(&format!("#runs tr[data-run='{again}']")).await?;
        b.wait_css(&format!("#runs tr[data-run='{run}']")).await?;
        let rows = b.execute("return document.querySelectorAll('#runs tbody tr').length", vec![]).await?;
        anyhow::ensure!(rows == 2, "{rows} runs listed");
        server.client().cancel_run(&again).await?;
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

/// `340 ms`, `2.35 s`, `1 min 05 s` (the app's durations) in milliseconds.
fn shown_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Some(ms) = text.strip_suffix(" ms") {
        return ms.parse().ok();
    }
    if let Some((min, rest)) = text.split_once(" min ") {
        let s: i64 = rest.strip_suffix(" s")?.parse().ok()?;
        return Some(min.parse::<i64>().ok()? * 60_000 + s * 1000);
    }
    let s: f64 = text.strip_suffix(" s")?.parse().ok()?;
    Some((s * 1000.0).round() as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_reload_the_elapsed_time_is_the_runs_not_the_pages() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    server.wait_online(1).await;
    let run = server.start_stuck_run(ensemble_artifacts::BENCH_PARTIES, json!({}), json!({})).await;
    let client = server.client();
    let started_us = client.run(&run).await.unwrap().started_us;
    let elapsed_text = "return document.querySelector('#run-elapsed')?.textContent ?? ''";
    let browser = Browser::start().await.unwrap();
    let b = &browser;
    let steps = async {
        let page = format!("{}/runs/{run}?token={TOKEN}", server.url);
        b.goto(&page).await?;
        b.wait_text("#run-state", "running").await?;
        // Long enough that a clock restarted by the reload would show it.
        b.wait_until("the run to be 10 s old", async |c| {
            let text = c.execute(elapsed_text, vec![]).await?;
            Ok(text.as_str().and_then(shown_ms).filter(|ms| *ms >= 10_000))
        })
        .await?;
        b.goto(&page).await?;
        b.wait_text("#run-state", "running").await?;
        // Read the clock just after it ticks, between two readings of the
        // server's: however slow the machine, the tick came between them.
        let server_before = (client.health().await?.now_us - started_us) / 1000;
        let before = b.execute(elapsed_text, vec![]).await?;
        let shown = b
            .wait_until("the clock to tick", async |c| {
                let text = c.execute(elapsed_text, vec![]).await?;
                Ok(text.as_str().filter(|t| !t.is_empty() && Some(*t) != before.as_str()).and_then(shown_ms))
            })
            .await?;
        let server_after = (client.health().await?.now_us - started_us) / 1000;
        anyhow::ensure!(
            server_before - 1_000 <= shown && shown <= server_after + 1_000,
            "after the reload the page says {shown} ms, the server {server_before}–{server_after} ms"
        );
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        panic!("{e:#}\n{}", browser.diagnostics().await);
    }
    browser.close().await.unwrap();
    client.cancel_run(&run).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_to_a_test_opens_it_and_choosing_a_test_makes_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    server.wait_online(1).await;
    let suite = format!("sha256:{}", server.upload(ensemble_artifacts::BASICS, "basics").await);
    let run = server
        .start_run(serde_json::json!({
            "name": "linked",
            "profiles": [{ "name": "here" }],
            "entries": [{ "suite": suite, "profile": "here", "params": { "greeting": "hi" } }],
        }))
        .await;
    server.events(&run).await;
    let browser = Browser::start().await.unwrap();
    let b = &browser;
    let steps = async {
        b.goto(&format!("{}/runs/{run}?test=concatenates&role=basics&token={TOKEN}", server.url)).await?;
        b.wait_text("#test-detail .detail-name", "concatenates").await?;
        // Failures first, unless asked for the run's order.
        let first_row = "return document.querySelector('table.tests tbody tr[data-test]').className";
        let class = b.execute(first_row, vec![]).await?;
        anyhow::ensure!(class.as_str().is_some_and(|c| c.contains("failed")), "{class}");
        b.click("#failures-first").await?;
        b.wait_until("the run's order", async |c| {
            let class = c.execute(first_row, vec![]).await?;
            Ok(class.as_str().filter(|c| !c.contains("failed")).map(str::to_string))
        })
        .await?;
        // The token leaves the address; the link to the test stays.
        let url = b.current_url().await?;
        anyhow::ensure!(url.contains("test=concatenates") && !url.contains("token="), "{url}");
        // Choosing another test puts it in the address, to share.
        b.click("tr[data-test='adds'] button").await?;
        b.wait_text("#test-detail .detail-name", "adds").await?;
        let url = b.current_url().await?;
        anyhow::ensure!(url.contains("test=adds") && url.contains("role=basics"), "{url}");
        b.goto(&url).await?;
        b.wait_text("#test-detail .detail-name", "adds").await?;
        // The filters are in the address too: a link shows the same list.
        b.select_by_value("#test-show", "failures").await?;
        b.fill("#test-filter", "s").await?;
        let url = b
            .wait_until("the filters in the address", async |c| {
                let url = c.current_url().await?.to_string();
                Ok((url.contains("show=failures") && url.contains("q=s")).then_some(url))
            })
            .await?;
        let title = b.text("#tests-title").await?;
        b.goto(&url).await?;
        b.wait_text("#tests-title", &title).await?;
        let shown = b.execute("return document.querySelector('#test-show').value", vec![]).await?;
        anyhow::ensure!(shown == "failures", "{shown}");
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        panic!("{e:#}\n{}", browser.diagnostics().await);
    }
    browser.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_whose_connection_closes_is_shown_disconnected_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // Silence would take ten minutes to notice: the alert can only come from
    // the connection closing, and the machine is not lost meanwhile.
    let args = ["--no-local-machine", "--heartbeat-timeout", "10m"];
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &args);
    let mut runner = ensemble_tests::start_runner(dir.path(), &server, "far-away", &["site=far"], None);
    server.wait_online(1).await;
    let profile = json!({ "labels": { "site": "far" } });
    let run = server.start_stuck_run(ensemble_artifacts::BENCH_PARTIES, profile, json!({})).await;
    let browser = Browser::start().await.unwrap();
    let b = &browser;
    let steps = async {
        b.goto(&format!("{}/runs/{run}?token={TOKEN}", server.url)).await?;
        b.wait_text("#run-state", "running").await?;
        b.wait_css(".lane[data-machine='far-away']").await?;
        let killed = std::time::Instant::now();
        runner.kill();
        b.wait_text(".lane[data-machine='far-away'] .lane-alert", "disconnected — lost in").await?;
        let took = killed.elapsed();
        anyhow::ensure!(took < std::time::Duration::from_secs(120), "it took {took:?} to show");
        let alert = b.text(".lane[data-machine='far-away'] .lane-alert").await?;
        anyhow::ensure!(alert.ends_with("s unless it returns"), "{alert}");
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        panic!("{e:#}\n{}", browser.diagnostics().await);
    }
    browser.close().await.unwrap();
    server.client().cancel_run(&run).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_that_times_out_at_a_barrier_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    server.wait_online(1).await;
    let settings = json!({ "test_timeout": "10s" });
    let run = server.start_stuck_run(ensemble_artifacts::BENCH_PARTIES, json!({}), settings).await;
    server.events(&run).await;
    let browser = Browser::start().await.unwrap();
    let b = &browser;
    let steps = async {
        b.goto(&format!("{}/runs/{run}?test=barriers&token={TOKEN}", server.url)).await?;
        b.wait_text("#run-state", "failed").await?;
        let message =
            b.wait_text("#test-detail pre.message", "while waiting for barrier ").await?.text().await?;
        anyhow::ensure!(message.contains("(1 of 2 arrived)"), "{message}");
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        panic!("{e:#}\n{}", browser.diagnostics().await);
    }
    browser.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runs_list_names_each_outcome_and_links_a_plans_history() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    server.wait_online(1).await;
    // A run whose test times out (not "failed"), and one of another plan.
    let settings = json!({ "test_timeout": "10s" });
    let timed_out = server.start_stuck_run(ensemble_artifacts::BENCH_PARTIES, json!({}), settings).await;
    server.events(&timed_out).await;
    let suite = format!("sha256:{}", server.upload(ensemble_artifacts::HELLO_COMMAND, "hello").await);
    let other = server
        .start_run(json!({
            "name": "greets",
            "profiles": [{ "name": "here" }],
            "entries": [{ "suite": suite, "profile": "here" }],
        }))
        .await;
    server.events(&other).await;
    let client = server.client();
    let summary = client.run(&timed_out).await.unwrap().summary.expect("a finished run has counts");
    assert_eq!((summary.timed_out, summary.failed), (1, 0), "{summary:?}");

    let browser = Browser::start().await.unwrap();
    let b = &browser;
    let steps = async {
        b.goto(&format!("{}/runs?token={TOKEN}", server.url)).await?;
        for id in [&timed_out, &other] {
            let counts = client.run(id).await?.summary.expect("counts").describe();
            b.wait_text(&format!("#runs tr[data-run='{id}'] td[data-label='Tests']"), &counts).await?;
        }
        let row = b.text(&format!("#runs tr[data-run='{timed_out}'] td[data-label='Tests']")).await?;
        anyhow::ensure!(row.contains("1 timed out") && !row.contains("failed"), "{row}");
        // A plan's name opens its history: its runs only.
        b.click(&format!("#runs tr[data-run='{timed_out}'] .plan-link")).await?;
        b.wait_text("h1", "Runs of plan waits").await?;
        b.wait_absent(&format!("#runs tr[data-run='{other}']")).await?;
        b.wait_css(&format!("#runs tr[data-run='{timed_out}']")).await?;
        let url = b.current_url().await?;
        anyhow::ensure!(url.ends_with("/runs?plan=waits"), "{url}");
        // Back to every run.
        b.click(".page-head .actions a[href='/runs']").await?;
        b.wait_text("h1", "Runs").await?;
        b.wait_css(&format!("#runs tr[data-run='{other}']")).await?;
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        panic!("{e:#}\n{}", browser.diagnostics().await);
    }
    browser.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_platform_run_shows_its_outcomes_across_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--no-local-machine"]);
    let _a = ensemble_tests::start_runner(dir.path(), &server, "box-a", &["tier=a"], None);
    let _b = ensemble_tests::start_runner(dir.path(), &server, "box-b", &["tier=b"], None);
    server.wait_online(2).await;
    let suite = format!("sha256:{}", server.upload(ensemble_artifacts::BASICS, "basics").await);
    let run = server
        .start_run(json!({
            "name": "everywhere",
            "type": "cross-platform",
            "profiles": [{ "name": "a", "labels": { "tier": "a" } }, { "name": "b", "labels": { "tier": "b" } }],
            "entries": [{ "suite": suite, "params": { "greeting": "hi", "expected": "hi" } }],
        }))
        .await;
    let events = server.events(&run).await;
    let tests = events
        .iter()
        .filter(|e| matches!(&e.kind, ensemble_protocol::EventKind::TestFinished { shard, .. } if shard.machine == "box-a"))
        .count();
    let platform = format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH);
    let browser = Browser::start().await.unwrap();
    let b = &browser;
    let steps = async {
        b.goto(&format!("{}/runs/{run}?token={TOKEN}", server.url)).await?;
        b.wait_text("#matrix-title", "Across 2 profiles").await?;
        b.wait_text(
            "#matrix-summary",
            &format!("All {tests} finished tests have the same outcome on every profile."),
        )
        .await?;
        b.wait_text("#matrix thead th[data-profile='b']", &platform).await?;
        // A cell opens that test as it ran on that profile's machine.
        b.click("#matrix tr[data-test='adds'] td[data-profile='b'] button").await?;
        b.wait_text("#test-detail .detail-name", "adds").await?;
        b.wait_text("#test-detail p", "on box-b").await?;
        b.click("#matrix tr[data-test='fails_check_eq'] td[data-profile='a'] button").await?;
        b.wait_text("#test-detail .detail-name", "fails_check_eq").await?;
        b.wait_text("#test-detail p", "failed on box-a").await?;
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        panic!("{e:#}\n{}", browser.diagnostics().await);
    }
    browser.close().await.unwrap();
}

/// A run's service is a row of its machine: its life and its output, and
/// the editor edits services like entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_shows_its_life_and_output_and_the_editor_adds_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--allow-exec", "sh"]);
    server.wait_online(1).await;
    let suite = format!("sha256:{}", server.upload(ensemble_artifacts::HELLO_COMMAND, "hello").await);
    let run = server
        .start_run(json!({
            "name": "with a service",
            "profiles": [{ "name": "here" }],
            "services": [{ "name": "db", "profile": "here",
                           "command": ["sh", "-c", "echo listening on {port}; exec sleep 600"],
                           "ready": { "log": "listening" } }],
            "entries": [{ "suite": suite, "profile": "here" }],
        }))
        .await;
    server.events(&run).await;
    let browser = Browser::start().await.unwrap();
    let b = &browser;
    let steps = async {
        b.goto(&format!("{}/runs/{run}?token={TOKEN}", server.url)).await?;
        b.wait_text("#run-state", "passed").await?;
        b.wait_text("tr[data-test='service:db'] .status", "passed").await?;
        b.click("tr[data-test='service:db'] button").await?;
        let logs = b.wait_text("#test-detail .logs", "ready at 127.0.0.1:").await?.text().await?;
        anyhow::ensure!(logs.contains("listening on ") && logs.contains("stopped ("), "{logs}");
        // Not a test: the counts are the entry's alone.
        b.wait_text("#summary [data-count='passed']", "1 passed").await?;

        b.goto(&format!("{}/plans/new?token={TOKEN}", server.url)).await?;
        b.click("#add-service").await?;
        b.wait_text("#service-0-reach", "service:db").await?;
        b.fill("#service-0-command", "redis-server\n--port\n{port}").await?;
        b.fill("#service-0-name", "Bad Name").await?;
        b.wait_text("#service-0-name-error", "is not a valid service name").await?;
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        panic!("{e:#}\n{}", browser.diagnostics().await);
    }
    browser.close().await.unwrap();
}
