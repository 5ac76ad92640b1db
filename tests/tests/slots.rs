//! Plans whose coordinating parts could never meet are caught before they
//! run: too few slots for the shards that wait for each other (refused at
//! once), sequential execution of entries that coordinate (refused), and
//! machines busy with other runs (the run waits, says for what, then runs
//! whole, or gives up after its queue timeout). Real processes on loopback.

use std::path::Path;

use ensemble_protocol::api::{ErrorKind, RunState};
use ensemble_protocol::{CancelReason, Event, EventKind, Outcome, Plan, Verdict};
use ensemble_tests::{Proc, Server, ensemble_async, restart_server, start_runner_with, start_server};
use serde_json::json;

const TOKEN: &str = "test-token";

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `roles` roles of `bench-parties` on the 4 machines labelled pool=peers:
/// `4 × roles` parties meeting at one barrier.
fn parties_toml(roles: usize) -> String {
    let mut t = String::from(
        "name = \"parties\"\n[settings]\ntest_timeout = \"10m\"\nbarrier_timeout = \"10m\"\n\
         [[profiles]]\nname = \"peers\"\nlabels = { pool = \"peers\" }\ncount = 4\n",
    );
    for r in 0..roles {
        t += &format!(
            "[[entries]]\nsuite = {:?}\nrole = \"r{r}\"\nprofile = \"peers\"\nparams = {{ parties = {}, rounds = 1 }}\n",
            ensemble_artifacts::BENCH_PARTIES,
            roles * 4
        );
    }
    t
}

/// The kv pair (server and client on their own machines), executed `execution`.
fn kv_toml(execution: &str) -> String {
    format!(
        "name = \"kv-{execution}\"\n[settings]\nexecution = \"{execution}\"\n\
         [[profiles]]\nname = \"server-box\"\nlabels = {{ tier = \"server\" }}\n\
         [[profiles]]\nname = \"client-box\"\nlabels = {{ tier = \"client\" }}\n\
         [[entries]]\nsuite = {:?}\nprofile = \"server-box\"\nrole = \"server\"\nparams = {{ clients = 1 }}\n\
         [[entries]]\nsuite = {:?}\nprofile = \"client-box\"\nrole = \"client\"\n",
        ensemble_artifacts::KV_SERVER,
        ensemble_artifacts::KV_CLIENT
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// Four runners labelled pool=peers with `slots` slots each, online.
async fn four_peers(dir: &Path, server: &Server, slots: &str) -> Vec<Proc> {
    let runners = (1..=4)
        .map(|i| {
            start_runner_with(dir, server, &format!("peer-{i}"), &["pool=peers"], None, &["--slots", slots])
        })
        .collect();
    server.wait_online(4).await;
    runners
}

fn outcomes(events: &[Event]) -> Vec<Outcome> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::TestFinished { outcome, .. } => Some(*outcome),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_parties_on_two_slot_runners_are_refused_at_once_and_pass_on_25_slots() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write(dir.path(), "parties.toml", &parties_toml(25));

    // 4 runners × 2 slots: 8 of the 100 parties could run at once.
    let server = start_server(dir.path(), &dir.path().join("small"), TOKEN, &["--no-local-machine"]);
    let _small = four_peers(dir.path(), &server, "2").await;
    let out = ensemble_async(
        &["run", &plan, "--server", &server.url, "--token", TOKEN],
        &dir.path().join("cache-cli"),
    )
    .await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    for part in [
        "the 100 shards of suites that use sync wait for each other",
        "peer-1 (profile peers) has 2 slot(s) for 25 of them",
        "peer-4 (profile peers) has 2 slot(s) for 25 of them",
        "`ensemble runner --slots 25`",
        "give profile peers more machines",
    ] {
        assert!(shown.contains(part), "{part:?} missing from:\n{shown}");
    }
    // The API says 409, and no run was made.
    let sha = server.upload(ensemble_artifacts::BENCH_PARTIES, "bench-parties").await;
    let mut inline = Plan::from_toml(&parties_toml(25)).unwrap();
    for e in &mut inline.entries {
        e.suite = format!("sha256:{sha}");
    }
    let err = server.client().start_plan(&inline).await.unwrap_err();
    assert_eq!((err.kind(), err.status()), (Some(ErrorKind::Unsatisfiable), Some(409)), "{err}");
    assert!(server.client().runs().await.unwrap().is_empty());

    // 4 runners × 25 slots: every party runs at once and they all meet.
    let server = start_server(dir.path(), &dir.path().join("big"), TOKEN, &["--no-local-machine"]);
    let _big = four_peers(dir.path(), &server, "25").await;
    let json = dir.path().join("events.jsonl");
    let out = ensemble_async(
        &["run", &plan, "--server", &server.url, "--token", TOKEN, "--json", json.to_str().unwrap()],
        &dir.path().join("cache-cli"),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let events: Vec<Event> =
        std::fs::read_to_string(&json).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let got = outcomes(&events);
    assert_eq!(got.len(), 200, "100 shards × 2 tests");
    assert!(got.iter().all(|o| *o == Outcome::Passed), "{got:?}");
    let released = events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Log { message, .. } if message == "released 0"))
        .count();
    assert_eq!(released, 100, "every party passed the barrier");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_parties_run_standalone() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write(dir.path(), "parties.toml", &parties_toml(25));
    let out = ensemble_async(&["run", &plan], &dir.path().join("cache")).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("200 passed"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequential_kv_pair_is_refused_standalone_and_through_serve() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let sequential = write(dir.path(), "kv-sequential.toml", &kv_toml("sequential"));
    let why = "entries 0 (server), 1 (client) use sync";

    for args in [vec!["run", &sequential], vec!["plan", "check", &sequential]] {
        let out = ensemble_async(&args, &cache).await;
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {shown}");
        assert!(shown.contains("settings.execution"), "{shown}");
        assert!(shown.contains(why), "{shown}");
        assert!(shown.contains("set execution = \"parallel\""), "{shown}");
    }
    // In parallel the same pair meets and passes.
    let parallel = write(dir.path(), "kv-parallel.toml", &kv_toml("parallel"));
    let out = ensemble_async(&["run", &parallel], &cache).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    let out = ensemble_async(&["run", &sequential, "--server", &server.url, "--token", TOKEN], &cache).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(shown.contains(why), "{shown}");
    // The API names the field, for the editor; saving is refused alike.
    let (s, c) = (
        server.upload(ensemble_artifacts::KV_SERVER, "kv-server").await,
        server.upload(ensemble_artifacts::KV_CLIENT, "kv-client").await,
    );
    let mut plan = Plan::from_toml(&kv_toml("sequential")).unwrap();
    plan.entries[0].suite = format!("sha256:{s}");
    plan.entries[1].suite = format!("sha256:{c}");
    for err in [
        server.client().start_plan(&plan).await.unwrap_err(),
        server.client().create_plan(&plan).await.unwrap_err(),
    ] {
        assert_eq!((err.kind(), err.status()), (Some(ErrorKind::InvalidPlan), Some(422)), "{err}");
        let ensemble_client::ClientError::Api { error, .. } = &err else { panic!("{err}") };
        assert_eq!(error.details()[0].path, "settings.execution", "{err}");
    }
    assert!(server.client().runs().await.unwrap().is_empty());
}

/// `basics` twice on the machine labelled pool=busy, napping 10 minutes:
/// both of its slots stay taken until the run is cancelled.
fn naps_on_busy(sha: &str) -> serde_json::Value {
    let napper = |role: &str| {
        json!({ "suite": format!("sha256:{sha}"), "profile": "busy", "role": role,
                "params": { "greeting": "hello", "nap_ms": "600000" } })
    };
    json!({
        "name": "naps",
        "settings": { "test_timeout": "20m" },
        "profiles": [{ "name": "busy", "labels": { "pool": "busy" } }],
        "entries": [napper("one"), napper("two")]
    })
}

/// The events of `run` once it ran whole after waiting: only `run-queued`
/// before `run-started`, passed, both parties' two tests passed.
async fn ran_whole_after_waiting(server: &Server, run: &str) -> Vec<Event> {
    let events = server.events(run).await;
    let started =
        events.iter().position(|e| matches!(e.kind, EventKind::RunStarted { .. })).expect("started");
    assert!(events[..started].iter().all(|e| matches!(e.kind, EventKind::RunQueued { .. })), "{events:?}");
    let Some(EventKind::RunFinished { verdict, .. }) = events.last().map(|e| &e.kind) else {
        panic!("{events:?}")
    };
    assert_eq!(*verdict, Verdict::Passed, "{events:?}");
    assert_eq!(outcomes(&events), [Outcome::Passed; 4], "2 shards × 2 tests");
    events
}

/// `bench-parties` twice on the machine labelled pool=busy: two parties that
/// wait for each other, and so need its two slots at once.
fn pair_on_busy(sha: &str, queue_timeout: &str) -> serde_json::Value {
    let entry = |role: &str| {
        json!({ "suite": format!("sha256:{sha}"), "profile": "busy", "role": role,
                "params": { "parties": "2", "rounds": "1" } })
    };
    json!({
        "name": "pair",
        "settings": { "queue_timeout": queue_timeout },
        "profiles": [{ "name": "busy", "labels": { "pool": "busy" } }],
        "entries": [entry("left"), entry("right")]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_slots_are_busy_waits_visibly_then_runs_whole() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--no-local-machine"]);
    let _box = start_runner_with(dir.path(), &server, "box", &["pool=busy"], None, &["--slots", "2"]);
    server.wait_online(1).await;
    let basics = server.upload(ensemble_artifacts::BASICS, "basics").await;
    let parties = server.upload(ensemble_artifacts::BENCH_PARTIES, "bench-parties").await;

    // Run 1 takes both slots of box for as long as it is not cancelled.
    let first = server.start_run(naps_on_busy(&basics)).await;

    // Run 2 needs both slots at once: it waits, and says for what.
    let second = server.start_run(pair_on_busy(&parties, "10m")).await;
    let mut queued = None;
    server
        .watch(&second, 1, |e| {
            queued = Some(e.kind.clone());
            false
        })
        .await;
    let Some(EventKind::RunQueued { waiting_for }) = queued else { panic!("{queued:?}") };
    assert_eq!(
        waiting_for,
        format!("slots busy with other runs: box needs 2 free slot(s) and has 0 of 2 (2 busy with {first})")
    );
    assert_eq!(server.client().run(&second).await.unwrap().state, RunState::Queued);

    // Run 3 waits behind run 2, and gives up after its queue timeout.
    let third = server.start_run(pair_on_busy(&parties, "1s")).await;
    let events = server.events(&third).await;
    let Some(EventKind::RunQueued { waiting_for }) = events.first().map(|e| &e.kind) else {
        panic!("{events:?}")
    };
    assert!(waiting_for.contains(&first) || waiting_for.contains(&second), "{waiting_for}");
    let Some(EventKind::RunFinished { verdict, cancelled, .. }) = events.last().map(|e| &e.kind) else {
        panic!("{events:?}")
    };
    assert_eq!(*verdict, Verdict::Failed);
    assert!(matches!(cancelled, Some(CancelReason::QueueTimeout { .. })), "{cancelled:?}");
    assert!(!events.iter().any(|e| matches!(e.kind, EventKind::RunStarted { .. })), "it never started");
    assert_eq!(server.client().run(&third).await.unwrap().state, RunState::Failed);

    // Run 1 ends: run 2 starts, whole, and both parties meet.
    server.client().cancel_run(&first).await.unwrap();
    ran_whole_after_waiting(&server, &second).await;
    assert_eq!(server.client().run(&second).await.unwrap().state, RunState::Passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_run_waits_on_through_a_coordinator_restart_then_runs_whole() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--no-local-machine"];
    let mut server = start_server(dir.path(), &data, TOKEN, &args);
    let _box = start_runner_with(dir.path(), &server, "box", &["pool=busy"], None, &["--slots", "2"]);
    server.wait_online(1).await;
    let basics = server.upload(ensemble_artifacts::BASICS, "basics").await;
    let parties = server.upload(ensemble_artifacts::BENCH_PARTIES, "bench-parties").await;
    let first = server.start_run(naps_on_busy(&basics)).await;
    // Both napping shards have started: box's slots are taken, not just promised.
    let mut naps = 0;
    server
        .watch(&first, 1, |e| {
            naps += usize::from(matches!(&e.kind, EventKind::TestStarted { test, .. } if test == "naps"));
            naps < 2
        })
        .await;
    let second = server.start_run(pair_on_busy(&parties, "10m")).await;
    let mut queued = 0;
    server
        .watch(&second, 1, |e| {
            queued += usize::from(matches!(e.kind, EventKind::RunQueued { .. }));
            queued == 0
        })
        .await;

    // The coordinator dies and comes back: box reconnects, still napping
    // for run 1, and run 2 must not start on the slots run 1 holds.
    server.proc.kill();
    server = restart_server(dir.path(), &data, &server, &args);
    server.wait_online(1).await;
    let reconnected = server.client().machines().await.unwrap();
    let boxed = reconnected.iter().find(|m| m.info.name == "box").expect("box is back");
    assert_eq!(boxed.running.len(), 2, "run 1's shards hold box's slots: {boxed:?}");
    let log = server.proc.log();
    assert_eq!(server.client().run(&second).await.unwrap().state, RunState::Queued, "{log}");
    assert_eq!(server.client().run(&first).await.unwrap().state, RunState::Running, "{log}");

    server.client().cancel_run(&first).await.unwrap();
    ran_whole_after_waiting(&server, &second).await;
}
