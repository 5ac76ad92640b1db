//! Schedules: a plan's `[[schedule]]` runs it by itself — a seconds-granular
//! schedule fires and the run it started is linked from the plan; a bad
//! expression or timezone is refused at its field; a time missed while the
//! server was down runs once, not once per missed time, when it starts.
//! The tests wait for the scheduled runs' webhooks, never for the clock.

use ensemble_client::ClientError;
use ensemble_protocol::Plan;
use ensemble_tests::{SCHEDULE_FLAGS, restart_server, start_server, webhook_receiver};

const TOKEN: &str = "schedules-token";

fn plan(suite: &str, hook: &str, schedule: serde_json::Value) -> Plan {
    serde_json::from_value(serde_json::json!({
        "name": "nightly",
        "profiles": [{"name": "here"}],
        "entries": [{"suite": format!("sha256:{suite}"), "profile": "here"}],
        "notify": [{"url": hook}],
        "schedule": schedule,
    }))
    .unwrap()
}

/// The run a webhook call was about.
fn run_of(call: &ensemble_tests::WebhookCall) -> String {
    let body: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
    body["run"].as_str().unwrap_or_else(|| panic!("{body}")).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_and_its_run_is_linked_from_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, SCHEDULE_FLAGS);
    let suite = server.upload(ensemble_artifacts::HELLO_COMMAND, "hello").await;
    let (hook, mut calls) = webhook_receiver(vec![]).await;
    let client = server.client();

    // Refused at the field: an expression out of range, a zone that is none.
    let bad = plan(
        &suite,
        &hook,
        serde_json::json!([{"cron": "0 25 * * *"}, {"cron": "0 2 * * *", "timezone": "Atlantis/Capital"}]),
    );
    let err = client.create_plan(&bad).await.unwrap_err();
    let ClientError::Api { status, error, .. } = &err else { panic!("{err}") };
    assert_eq!(*status, 422, "{err}");
    let paths: Vec<&str> = error.details().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["schedule[0].cron", "schedule[1].timezone"], "{err}");

    // Every second, in a zone of its own.
    let every_second = serde_json::json!([{"cron": "* * * * * *", "timezone": "Asia/Kolkata"}]);
    let saved = client.create_plan(&plan(&suite, &hook, every_second)).await.unwrap();
    assert_eq!(saved.schedules.len(), 1, "{saved:?}");
    let status = &saved.schedules[0];
    assert_eq!(status.schedule, "* * * * * * (Asia/Kolkata)");
    assert!(status.next_us.is_some_and(|t| t > saved.updated_us), "{status:?}");

    // A scheduled run finishes (its webhook says so) ...
    let run = run_of(&calls.recv().await.unwrap());
    let meta = client.run(&run).await.unwrap();
    assert_eq!(meta.scheduled.as_deref(), Some("* * * * * * (Asia/Kolkata)"));
    assert_eq!(meta.plan.name, "nightly");
    assert_eq!(meta.state, ensemble_protocol::api::RunState::Passed);

    // ... and the plan links the run its schedule last started.
    let stored = client.plan(&saved.id).await.unwrap();
    let status = &stored.schedules[0];
    let last = status.last_run.clone().expect("the schedule's last run");
    let linked = client.run(&last).await.unwrap();
    assert_eq!(linked.scheduled, meta.scheduled);
    // (Later firings may have come since: every second.)
    assert!(status.last_fired_us.is_some(), "{status:?}");
    assert!(status.error.is_none(), "{status:?}");

    // Without its schedule the plan runs no more by itself: its record goes.
    let mut unscheduled = stored.plan.clone();
    unscheduled.schedule.clear();
    let saved = client.update_plan(&saved.id, &unscheduled).await.unwrap();
    assert!(saved.schedules.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_missed_while_the_server_was_down_runs_once_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = start_server(dir.path(), &data, TOKEN, SCHEDULE_FLAGS);
    let suite = server.upload(ensemble_artifacts::HELLO_COMMAND, "hello").await;
    let (hook, mut calls) = webhook_receiver(vec![]).await;
    // New Year's midnight, UTC: far from now whenever the test runs.
    let yearly = serde_json::json!([{"cron": "0 0 0 1 1 *"}]);
    let saved = server.client().create_plan(&plan(&suite, &hook, yearly)).await.unwrap();
    let status = &saved.schedules[0];
    assert_eq!(status.schedule, "0 0 0 1 1 * (UTC)");
    assert!(status.last_fired_us.is_none() && status.last_run.is_none(), "{status:?}");
    let next = status.next_us.unwrap();

    // The server goes down; as far as its records say, the schedule last
    // fired three New Years ago, so it missed two (or three).
    server.proc.kill();
    let year_us: i64 = 366 * 24 * 3600 * 1_000_000;
    let long_ago = next - 3 * year_us - 1_000_000;
    let db = rusqlite::Connection::open(data.join("ensemble.db")).unwrap();
    let changed = db
        .execute(
            "UPDATE schedules SET last_us = ?1, fired = 1 WHERE plan = ?2",
            rusqlite::params![long_ago, saved.id],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);

    let server = restart_server(dir.path(), &data, &server, SCHEDULE_FLAGS);
    let run = run_of(&calls.recv().await.unwrap());
    let client = server.client();
    let stored = client.plan(&saved.id).await.unwrap();
    let status = &stored.schedules[0];
    assert_eq!(status.last_run.as_deref(), Some(run.as_str()), "{status:?}");
    // It ran for the latest missed time, which is the one before `next`.
    let fired = status.last_fired_us.unwrap();
    assert!(fired < next && fired > next - year_us - 2 * 24 * 3600 * 1_000_000, "{status:?}");
    assert_eq!(status.next_us, Some(next));
    // Once: one scheduled run, not one per missed New Year.
    let scheduled: Vec<_> =
        client.runs().await.unwrap().into_iter().filter(|r| r.scheduled.is_some()).collect();
    assert_eq!(scheduled.len(), 1, "{scheduled:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_editor_shows_and_edits_schedules() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, SCHEDULE_FLAGS);
    let suite = server.upload(ensemble_artifacts::HELLO_COMMAND, "hello").await;
    let (hook, _calls) = webhook_receiver(vec![]).await;
    let yearly = serde_json::json!([{"cron": "0 0 0 1 1 *"}]);
    let client = server.client();
    let saved = client.create_plan(&plan(&suite, &hook, yearly)).await.unwrap();
    // A run of it, which the plan page lists.
    let req = ensemble_protocol::api::RunRequest { plan_id: Some(saved.id.clone()), ..Default::default() };
    let run = client.start_run(&req).await.unwrap().id;
    server.events(&run).await;

    let browser = ensemble_tests::browser::Browser::start().await.unwrap();
    let b = &browser;
    let steps = async {
        b.goto(&format!("{}/plans/{}?token={TOKEN}", server.url, saved.id)).await?;
        b.wait_text(&format!("#plan-runs li[data-run='{run}']"), "passed").await?;
        // The stored schedule, with its next time.
        b.wait_text("#schedule-0-status", "Next run:").await?;
        let cron = b.execute("return document.querySelector('#schedule-0-cron').value", vec![]).await?;
        anyhow::ensure!(cron == "0 0 0 1 1 *", "{cron}");
        // A new one, first wrong: the server's refusal shows at the field.
        b.click("#add-schedule").await?;
        b.fill("#schedule-1-cron", "0 2 * * 9").await?;
        b.fill("#schedule-1-timezone", "Europe/Berlin").await?;
        b.wait_text("#schedule-1-status", "Save the plan to see its next run.").await?;
        b.click("#save").await?;
        b.wait_text("#schedule-1-cron-error", "is not a cron expression").await?;
        // Then right: saved, it has a next time too.
        b.fill("#schedule-1-cron", "30 6 * * 1-5").await?;
        b.click("#save").await?;
        b.wait_text("#editor-banner", "Saved.").await?;
        b.wait_text("#schedule-1-status", "Next run:").await?;
        b.wait_absent("#schedule-1-cron-error").await?;
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        panic!("{e:#}\n{}", browser.diagnostics().await);
    }
    browser.close().await.unwrap();
    let stored = client.plan(&saved.id).await.unwrap();
    let keys: Vec<String> = stored.plan.schedule.iter().map(|s| s.key()).collect();
    assert_eq!(keys, ["0 0 0 1 1 * (UTC)", "30 6 * * 1-5 (Europe/Berlin)"]);
    assert!(stored.schedules.iter().all(|s| s.next_us.is_some()), "{:?}", stored.schedules);
}
