//! Draining machines: a drained machine (through the API, or its runner
//! sent SIGTERM) finishes the shard it runs, is given no new one, and its
//! runner stops on its own once the coordinator says it is drained. The
//! drain ends when the machine leaves (its next runner takes work), or
//! when it is undrained.

use ensemble_protocol::EventKind;
use ensemble_protocol::api::MachineState;
use ensemble_tests::{Proc, Server, start_runner, start_server};

const TOKEN: &str = "drain-token";

/// The `skewed` suite (24 tests), uploaded: its plan reference.
async fn skewed(server: &Server) -> String {
    format!("sha256:{}", server.upload(ensemble_artifacts::SKEWED, "skewed").await)
}

/// A run of the `skewed` suite on machine `machine`: 24 tests sleeping 9 s
/// in all, so that it still runs when a drain lands, however loaded the machine.
async fn start_on(server: &Server, machine: &str) -> String {
    let suite = skewed(server).await;
    server
        .start_run(serde_json::json!({
            "name": format!("on {machine}"),
            "profiles": [{ "name": "p", "machine": machine }],
            "entries": [{ "suite": suite, "profile": "p", "params": { "scale_ms": "100" } }],
        }))
        .await
}

/// Waits until the run has started a test.
async fn first_test_started(server: &Server, run: &str) {
    server.watch(run, 1, |e| !matches!(e.kind, EventKind::TestStarted { .. })).await;
}

fn state_of(machines: &[ensemble_protocol::api::MachineStatus], name: &str) -> MachineState {
    machines.iter().find(|m| m.info.name == name).map(|m| m.state).unwrap_or(MachineState::Offline)
}

/// Waits for the runner to exit on its own; its exit code and log.
async fn exits(mut proc: Proc) -> (Option<i32>, String) {
    let status = tokio::task::spawn_blocking(move || {
        let status = proc.child.wait().unwrap();
        (status.code(), proc.log())
    });
    status.await.unwrap()
}

/// Every test of the run passed, on `machine`.
async fn all_passed_on(server: &Server, run: &str, machine: &str) {
    let events = server.events(run).await;
    let finished: Vec<(String, String)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::TestFinished { shard, outcome, .. } => {
                Some((shard.machine.clone(), outcome.to_string()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(finished.len(), 24, "{finished:?}");
    assert!(finished.iter().all(|(m, o)| m == machine && o == "passed"), "{finished:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_machine_finishes_its_shard_takes_no_new_one_and_its_runner_stops() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--no-local-machine"]);
    let drained = start_runner(dir.path(), &server, "drained", &["pool=d"], None);
    let _other = start_runner(dir.path(), &server, "other", &["pool=d"], None);
    server.wait_online(2).await;
    let client = server.client();

    let first = start_on(&server, "drained").await;
    first_test_started(&server, &first).await;
    let answer = client.drain_machine("drained").await.unwrap();
    assert_eq!((answer.draining.as_str(), answer.running), ("drained", 1));
    assert_eq!(state_of(&client.machines().await.unwrap(), "drained"), MachineState::Draining);

    // A new run on the pool goes to the other machine; one pinned to the
    // drained machine has nowhere to go.
    let suite = skewed(&server).await;
    let second = server
        .start_run(serde_json::json!({
            "name": "pool",
            "profiles": [{ "name": "p", "labels": { "pool": "d" } }],
            "entries": [{ "suite": suite, "profile": "p", "params": { "scale_ms": "1" } }],
        }))
        .await;
    all_passed_on(&server, &second, "other").await;
    let plan = ensemble_protocol::Plan::from_json(
        &serde_json::json!({
            "name": "pinned",
            "profiles": [{ "name": "p", "machine": "drained" }],
            "entries": [{ "suite": suite, "profile": "p" }],
        })
        .to_string(),
    )
    .unwrap();
    let refused = client.start_plan(&plan).await.unwrap_err().to_string();
    assert!(refused.contains("draining, so taking no new shards: drained"), "{refused}");

    // The shard it ran finished whole, then its runner stopped by itself.
    all_passed_on(&server, &first, "drained").await;
    let (code, log) = exits(drained).await;
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("ensemble runner: stopped (drained: its shards are done)"), "{log}");

    // Nothing to drain: the server's own machine, an unknown name.
    let err = client.drain_machine("nobody").await.unwrap_err().to_string();
    assert!(err.contains("no connected remote machine named \"nobody\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_runner_and_it_stops_once_its_shard_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    let runner = start_runner(dir.path(), &server, "termed", &[], None);
    server.wait_online(2).await;
    let err = server.client().drain_machine("local").await.unwrap_err().to_string();
    assert!(err.contains("the server's own machine is not drained"), "{err}");

    let run = start_on(&server, "termed").await;
    first_test_started(&server, &run).await;
    let pid = rustix::process::Pid::from_raw(runner.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    all_passed_on(&server, &run, "termed").await;
    let (code, log) = exits(runner).await;
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("ensemble runner: draining: finishing the shards here"), "{log}");
    assert!(log.contains("ensemble runner: stopped (drained: its shards are done)"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_machines_page_drains_a_machine_after_asking() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    let runner = start_runner(dir.path(), &server, "busy-box", &[], None);
    server.wait_online(2).await;
    // A shard that waits at a barrier for a party that never comes: the
    // machine stays draining until the run is cancelled.
    let profile = serde_json::json!({ "machine": "busy-box" });
    let run = server.start_stuck_run(ensemble_artifacts::BENCH_PARTIES, profile, serde_json::json!({})).await;
    first_test_started(&server, &run).await;
    let browser = ensemble_tests::browser::Browser::start().await.unwrap();
    let b = &browser;
    let steps = async {
        b.goto(&format!("{}/machines?token={TOKEN}", server.url)).await?;
        b.wait_css("tr[data-machine='busy-box'] button.drain").await?;
        b.wait_absent("tr[data-machine='local'] button.drain").await?;
        // It asks first (answered yes here).
        b.execute("window.confirm = (q) => { window.asked = q; return true; }", vec![]).await?;
        b.click("tr[data-machine='busy-box'] button.drain").await?;
        b.wait_text("#machines-banner", "Draining \"busy-box\": 1 shard(s) to finish").await?;
        b.wait_text("tr[data-machine='busy-box'] .state", "draining").await?;
        b.wait_absent("tr[data-machine='busy-box'] button.drain").await?;
        let asked = b.execute("return window.asked", vec![]).await?;
        anyhow::ensure!(asked.as_str().is_some_and(|q| q.starts_with("Drain \"busy-box\"?")), "{asked}");
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        panic!("{e:#}\n{}", browser.diagnostics().await);
    }
    browser.close().await.unwrap();
    // Its shard over, the drained machine stops.
    server.client().cancel_run(&run).await.unwrap();
    let (code, log) = exits(runner).await;
    assert_eq!(code, Some(0), "a drained machine stops once its shards are done: {log}");
}

/// Waits (30 s at most, checking every 50 ms) until machine `name` is in `state`.
async fn becomes(server: &Server, name: &str, state: MachineState) {
    let client = server.client();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = state_of(&client.machines().await.unwrap(), name);
        if now == state {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{name} is {now:?}, not {state:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_ends_when_the_machine_leaves_and_undrain_gives_it_work_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--no-local-machine"]);
    let client = server.client();
    let runner = start_runner(dir.path(), &server, "box-b", &[], None);
    server.wait_online(1).await;

    // Drained while idle, its runner stops at once; the machine shows as
    // drained, not as a crashed one.
    client.drain_machine("box-b").await.unwrap();
    let (code, log) = exits(runner).await;
    assert_eq!(code, Some(0), "{log}");
    becomes(&server, "box-b", MachineState::Drained).await;

    // Started again, it stays up and takes work: the drain ended when it left.
    let mut again = start_runner(dir.path(), &server, "box-b", &[], None);
    becomes(&server, "box-b", MachineState::Online).await;
    let run = start_on(&server, "box-b").await;
    all_passed_on(&server, &run, "box-b").await;
    assert!(again.child.try_wait().unwrap().is_none(), "the restarted runner stays up: {}", again.log());

    // Draining while it runs a shard, then undrained: it keeps its runner
    // and takes the next run.
    let profile = serde_json::json!({ "machine": "box-b" });
    let stuck =
        server.start_stuck_run(ensemble_artifacts::BENCH_PARTIES, profile, serde_json::json!({})).await;
    first_test_started(&server, &stuck).await;
    client.drain_machine("box-b").await.unwrap();
    assert_eq!(state_of(&client.machines().await.unwrap(), "box-b"), MachineState::Draining);
    let undrained = client.undrain_machine("box-b").await.unwrap();
    assert_eq!(undrained.undrained, "box-b");
    assert_eq!(state_of(&client.machines().await.unwrap(), "box-b"), MachineState::Busy);
    client.cancel_run(&stuck).await.unwrap();
    let next = start_on(&server, "box-b").await;
    all_passed_on(&server, &next, "box-b").await;
    assert!(again.child.try_wait().unwrap().is_none(), "undrained, it stays up: {}", again.log());
    let err = client.undrain_machine("box-b").await.unwrap_err().to_string();
    assert!(err.contains("no machine named \"box-b\" is draining"), "{err}");

    // The page: a drained machine that left shows as drained, with Undrain.
    client.drain_machine("box-b").await.unwrap();
    let (code, log) = exits(again).await;
    assert_eq!(code, Some(0), "{log}");
    let browser = ensemble_tests::browser::Browser::start().await.unwrap();
    let b = &browser;
    let steps = async {
        b.goto(&format!("{}/machines?token={TOKEN}", server.url)).await?;
        b.wait_text("tr[data-machine='box-b'] .state", "drained").await?;
        b.click("tr[data-machine='box-b'] button.undrain").await?;
        b.wait_text("#machines-banner", "\"box-b\" takes shards again").await?;
        b.wait_absent("tr[data-machine='box-b'] button.undrain").await?;
        // Gone, it is shown as any machine that left (disconnected, then offline).
        b.wait_css("tr[data-machine='box-b'] .state:not(.drained)").await?;
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        panic!("{e:#}\n{}", browser.diagnostics().await);
    }
    browser.close().await.unwrap();
}
