//! Faults across machines: a sandboxed suite on one machine restarts and
//! pauses a real server (`ensemble-kv`, native) that a runner on another
//! machine started as the plan's service, in the middle of its tests; a
//! third machine's client writes before the restart and reads back after
//! it. Every fault is on the run's one timeline, where it happened; the
//! run's verdict is the suites' checks.

use std::path::PathBuf;

use ensemble_protocol::event::Outcome;
use ensemble_protocol::fault::{FaultAction, FaultStep};
use ensemble_protocol::service::ServiceState;
use ensemble_protocol::{Event, EventKind, Verdict};
use ensemble_tests::{ensemble, kv_fault_plan, kv_server, start_runner_with, start_server};
use serde_json::json;

const TOKEN: &str = "faults-token";

fn verdict(events: &[Event]) -> Verdict {
    events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::RunFinished { verdict, .. } => Some(*verdict),
            _ => None,
        })
        .expect("the run finished")
}

/// The seq of the first event after `after` that `pick` takes.
fn seq_of(events: &[Event], after: u64, pick: impl Fn(&EventKind) -> bool) -> u64 {
    events
        .iter()
        .find(|e| e.seq > after && pick(&e.kind))
        .map(|e| e.seq)
        .unwrap_or_else(|| panic!("no such event after {after}: {events:#?}"))
}

/// A server without a machine of its own, and runners `db` (allowed to
/// start ensemble-kv, role=db), `c1` (role=chaos) and `c2` (role=reader),
/// online, with kv-tcp-client uploaded: (kv, scratch, server, runners, suite).
async fn three_machines()
-> (PathBuf, tempfile::TempDir, ensemble_tests::Server, [ensemble_tests::Proc; 3], String) {
    let kv = kv_server();
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--no-local-machine"]);
    let allow = kv.display().to_string();
    let runners = [
        start_runner_with(dir.path(), &server, "db", &["role=db"], None, &["--allow-exec", &allow]),
        start_runner_with(dir.path(), &server, "c1", &["role=chaos"], None, &["--allow-net", "service:*"]),
        start_runner_with(dir.path(), &server, "c2", &["role=reader"], None, &["--allow-net", "service:*"]),
    ];
    server.wait_online(3).await;
    let client =
        format!("sha256:{}", server.upload(ensemble_artifacts::KV_TCP_CLIENT, "kv-tcp-client").await);
    (kv, dir, server, runners, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_restarts_and_pauses_a_server_on_another_machine_mid_run() {
    let (kv, dir, server, _runners, client) = three_machines().await;
    let run = server.start_run(kv_fault_plan(&client, &kv)).await;
    let events = server.events(&run).await;
    assert_eq!(verdict(&events), Verdict::Passed, "{events:#?}");
    let passed: Vec<(&str, &str)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::TestFinished { shard, test, outcome: Outcome::Passed, .. } => {
                Some((shard.machine.as_str(), test.as_str()))
            }
            _ => None,
        })
        .collect();
    for want in [
        ("c1", "survives_a_restart"),
        ("c1", "holds_still_while_paused"),
        ("c2", "reads_back_after_a_restart"),
        ("c2", "faults_need_a_grant"),
    ] {
        assert!(passed.contains(&want), "{want:?} did not pass: {passed:?}");
    }
    // The restart, where it happened: asked by c1's test, then on db's lane
    // the old process stopped (on purpose), a new one started and became
    // ready, and the fault was done: all in order on the one timeline.
    let restart = |k: &EventKind, step: fn(&FaultStep) -> bool| matches!(k, EventKind::Fault { action: FaultAction::Restart, step: s, .. } if step(s));
    let asked = seq_of(&events, 0, |k| restart(k, |s| matches!(s, FaultStep::Asked { .. })));
    let asked_by = events.iter().find(|e| e.seq == asked).unwrap();
    assert!(
        matches!(&asked_by.kind, EventKind::Fault { shard, test, .. } if shard.machine == "c1" && test == "survives_a_restart"),
        "{asked_by:?}"
    );
    let on_db = |s: fn(&ServiceState) -> bool| move |k: &EventKind| matches!(k, EventKind::Service { shard, state, .. } if shard.machine == "db" && s(state));
    let stopping = seq_of(&events, asked, on_db(|s| matches!(s, ServiceState::Stopping)));
    let exited =
        seq_of(&events, stopping, on_db(|s| matches!(s, ServiceState::Exited { expected: true, .. })));
    let started = seq_of(&events, exited, on_db(|s| matches!(s, ServiceState::Started { .. })));
    let ready = seq_of(&events, started, on_db(|s| matches!(s, ServiceState::Ready { .. })));
    let done = seq_of(&events, ready, |k| restart(k, |s| matches!(s, FaultStep::Done { .. })));
    let done_by = events.iter().find(|e| e.seq == done).unwrap();
    assert!(
        matches!(&done_by.kind, EventKind::Fault { shard, test, .. } if shard.machine == "db" && test == "survives_a_restart"),
        "{done_by:?}"
    );
    // On the corrected clock too: asked ≤ stopped ≤ ready ≤ done.
    let at = |seq: u64| events.iter().find(|e| e.seq == seq).unwrap().at_us;
    assert!(at(asked) <= at(stopping) && at(stopping) <= at(ready) && at(ready) <= at(done));
    // The reader's keys, written before the restart, were read back after.
    let read_back = seq_of(
        &events,
        done,
        |k| matches!(k, EventKind::TestFinished { test, outcome: Outcome::Passed, .. } if test == "reads_back_after_a_restart"),
    );
    assert!(read_back > done);
    // The pause and the resume, each asked and done, with the states between.
    for action in [FaultAction::Pause, FaultAction::Resume] {
        let asked = seq_of(
            &events,
            0,
            |k| matches!(k, EventKind::Fault { action: a, step: FaultStep::Asked { .. }, .. } if *a == action),
        );
        seq_of(
            &events,
            asked,
            |k| matches!(k, EventKind::Fault { action: a, step: FaultStep::Done { .. }, .. } if *a == action),
        );
    }
    seq_of(&events, 0, on_db(|s| matches!(s, ServiceState::Paused)));
    seq_of(&events, 0, on_db(|s| matches!(s, ServiceState::Resumed)));
    // The reader's restart was refused, and nothing was done for it.
    let faults_by_c2 = events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Fault { shard, .. } if shard.machine == "c2"))
        .count();
    assert_eq!(faults_by_c2, 0, "a refused fault is not routed");
    // Its life ended as the run's end asked, and never failed.
    assert!(!events.iter().any(|e| matches!(
        &e.kind,
        EventKind::Service {
            state: ServiceState::Failed { .. } | ServiceState::Exited { expected: false, .. },
            ..
        }
    )));

    // The reports carry the faults: the summary of `ensemble report`, the
    // HTML page's service lane and fault list, the JSON lines.
    let html = dir.path().join("report.html");
    let json_lines = dir.path().join("report.jsonl");
    let out = ensemble(
        &[
            "report",
            &run,
            "--server",
            &server.url,
            "--token",
            TOKEN,
            "--html",
            html.to_str().unwrap(),
            "--json",
            json_lines.to_str().unwrap(),
        ],
        dir.path(),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("Faults: 3 asked, 3 done by instances, 0 failed"), "{text}");
    assert!(text.contains("service kv: pause ×1, restart ×1, resume ×1"), "{text}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("\"kind\":\"fault\"") && page.contains("restart asked by chaos"),
        "the page lists the faults"
    );
    let lines = std::fs::read_to_string(&json_lines).unwrap();
    assert!(
        lines.lines().any(|l| l.contains("\"type\":\"fault\"") && l.contains("\"step\":\"done\"")),
        "{lines}"
    );
}

/// Two runs with a service of the same name on the same machine: a restart
/// asked in one never touches the other's (routing is by the run's own
/// service shards), whose service lives once, from its start to its run's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_reaches_only_its_own_runs_service() {
    let (kv, _dir, server, _runners, client) = three_machines().await;
    let basics = format!("sha256:{}", server.upload(ensemble_artifacts::BASICS, "basics").await);
    let service = json!([{
        "name": "kv", "profile": "db-box",
        "command": [kv.display().to_string(), "--port", "{port}", "--bind", "{host}", "--data", "{dir}"],
        "ready": { "tcp": "{port}" },
    }]);
    // The other run: its own kv, and a test that takes a while on c2.
    let other = server
        .start_run(json!({
            "name": "other run",
            "profiles": [{ "name": "db-box", "labels": { "role": "db" } }, { "name": "reader-box", "labels": { "role": "reader" } }],
            "services": service,
            "entries": [{ "suite": basics, "profile": "reader-box", "tests": ["naps"], "params": { "nap_ms": "3000", "greeting": "hi" } }],
        }))
        .await;
    server.watch(&other, 1, |e| !matches!(e.kind, EventKind::TestStarted { .. })).await;
    // This run restarts its kv, by the same name, meanwhile.
    let run = server
        .start_run(json!({
            "name": "this run",
            "profiles": [{ "name": "db-box", "labels": { "role": "db" } }, { "name": "chaos-box", "labels": { "role": "chaos" } }],
            "services": service,
            "entries": [{ "suite": client, "profile": "chaos-box", "tests": ["survives_a_restart"],
                          "capabilities": { "net": ["service:kv"], "faults": ["kv"] } }],
        }))
        .await;
    let events = server.events(&run).await;
    assert_eq!(verdict(&events), Verdict::Passed, "{events:#?}");
    seq_of(&events, 0, |k| matches!(k, EventKind::Fault { step: FaultStep::Done { .. }, .. }));
    let others = server.events(&other).await;
    assert_eq!(verdict(&others), Verdict::Passed, "{others:#?}");
    // The other run's kv lived once: started, ready, stopped at its run's end.
    let life: Vec<&ServiceState> = others
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Service { state, .. } => Some(state),
            _ => None,
        })
        .collect();
    assert!(
        matches!(
            life[..],
            [
                ServiceState::Started { .. },
                ServiceState::Ready { .. },
                ServiceState::Stopping,
                ServiceState::Exited { expected: true, .. }
            ]
        ),
        "{life:?}"
    );
    assert!(!others.iter().any(|e| matches!(e.kind, EventKind::Fault { .. })), "no fault in the other run");
}

/// The browser's timeline shows the faults where they happened: on the
/// service's lane (purple marks, titled with what was asked) and on the
/// client's; the service's row keeps them in its log; and the editor edits
/// an entry's fault grants, naming a service the plan lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_view_marks_faults_on_the_service_lane_and_the_editor_grants_them() {
    use ensemble_tests::browser::Browser;

    let kv = kv_server();
    let dir = tempfile::tempdir().unwrap();
    let allow = kv.display().to_string();
    let server = start_server(
        dir.path(),
        &dir.path().join("data"),
        TOKEN,
        &["--allow-exec", &allow, "--allow-net", "service:*"],
    );
    server.wait_online(1).await;
    let client =
        format!("sha256:{}", server.upload(ensemble_artifacts::KV_TCP_CLIENT, "kv-tcp-client").await);
    let plan = json!({
        "name": "faults here",
        "profiles": [{ "name": "here" }],
        "services": [{ "name": "kv", "profile": "here",
                       "command": [allow, "--port", "{port}", "--bind", "{host}", "--data", "{dir}"],
                       "ready": { "tcp": "{port}" } }],
        "entries": [{ "suite": client, "profile": "here", "role": "chaos",
                      "tests": ["holds_still_while_paused", "survives_a_restart"],
                      "capabilities": { "net": ["service:kv"], "faults": ["kv"] } }],
    });
    let stored = server
        .client()
        .create_plan(&ensemble_protocol::Plan::from_json(&plan.to_string()).unwrap())
        .await
        .unwrap();
    let run = server.start_run(plan).await;
    assert_eq!(verdict(&server.events(&run).await), Verdict::Passed);
    let browser = Browser::start().await.unwrap();
    let b = &browser;
    let steps = async {
        b.goto(&format!("{}/runs/{run}?token={TOKEN}", server.url)).await?;
        b.wait_text("#run-state", "passed").await?;
        // The service's lane: the asks (pause, resume, restart) marked where
        // they happened, and what its runner did.
        let service_marks = ".track-row[data-role='service:kv'] .mark.fault";
        let restart = b
            .wait_until("the restart's mark on the service lane", async |c| {
                let marks = c.find_all(fantoccini::Locator::Css(service_marks)).await?;
                for m in marks {
                    let title = m.attr("title").await?.unwrap_or_default();
                    if title.contains("asks to restart service kv") {
                        return Ok(Some(title));
                    }
                }
                Ok(None)
            })
            .await?;
        anyhow::ensure!(restart.contains("survives_a_restart"), "{restart}");
        let on_lane = b
            .execute(&format!("return document.querySelectorAll(\"{service_marks}\").length"), vec![])
            .await?;
        anyhow::ensure!(on_lane.as_u64().unwrap_or(0) >= 6, "asked and done, three faults: {on_lane}");
        let by_client = b
            .execute(
                "return document.querySelectorAll(\".track-row[data-role='chaos'] .mark.fault\").length",
                vec![],
            )
            .await?;
        anyhow::ensure!(by_client.as_u64().unwrap_or(0) >= 3, "the client's asks: {by_client}");
        b.click("tr[data-test='service:kv'] button").await?;
        let logs = b
            .wait_text("#test-detail .logs", "[fault] fault: restart of service kv done in")
            .await?
            .text()
            .await?;
        anyhow::ensure!(logs.contains("service kv paused") && logs.contains("service kv resumed"), "{logs}");

        // The editor: the entry's fault grants, checked against the plan's services.
        b.goto(&format!("{}/plans/{}?token={TOKEN}", server.url, stored.id)).await?;
        let field = b.wait_until("the faults field", async |c| {
            let v = c.find(fantoccini::Locator::Css("#entry-0-faults")).await?.prop("value").await?;
            Ok(v.filter(|v| v == "kv"))
        });
        field.await?;
        b.fill("#entry-0-faults", "kv, cache").await?;
        b.wait_text("#entry-0-faults-error", "\"cache\" names no service of the plan (kv)").await?;
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        panic!("{e:#}\n{}", browser.diagnostics().await);
    }
    browser.close().await.unwrap();
}

/// The same restart with clients in other languages: the Python suite
/// (TCP, its own `socket`) and the JavaScript suite (HTTP, `fetch`) write
/// before the Rust client restarts the server, and read everything back
/// after (`suites/plans/kv-polyglot.toml`, run as its comment says, every
/// profile an in-process machine).
#[test]
fn python_and_javascript_clients_read_back_across_a_restart_a_rust_client_makes() {
    let kv = kv_server();
    let dir = tempfile::tempdir().unwrap();
    // ensemble-kv from this build and the Python suite tools of `cargo xtask test`.
    let path = std::env::join_paths(
        [kv.parent().unwrap().to_path_buf(), ensemble_tests::repo_root().join("target/ci-tools")]
            .into_iter()
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    let out = std::process::Command::new(ensemble_tests::ensemble_bin())
        .args(["run", "suites/plans/kv-polyglot.toml"])
        .current_dir(ensemble_tests::repo_root())
        .env("ENSEMBLE_CACHE_DIR", dir.path())
        .env("PATH", path)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    for client in ["py-client@python-box", "js-client@js-box"] {
        assert!(text.contains(&format!("{client} reads_back_after_a_restart")), "{text}");
    }
    assert!(text.contains("fault: restart of service kv on server-box done in"), "{text}");
    assert!(text.contains("PASSED: 3 test(s)"), "{text}");
}
