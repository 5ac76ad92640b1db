//! A coordinator SIGKILLed at seeded points of distributed runs whose roles
//! coordinate (barriers, signals, topics), and in each run while a role waits
//! on a barrier, restarted each time on the same
//! data dir and address. After each kill the watcher resumes where it was;
//! at the end of each run, every event it received is in the store with the
//! same number, there is no gap and no duplicate, the run completed with
//! every test passing, and the stored run says what the stream said.
//!
//! `ENSEMBLE_CRASH_SEED` replays a seed (the test prints the one it used);
//! `ENSEMBLE_CRASH_KILLS` sets how many kill points (50 by default).

use ensemble_protocol::Verdict;
use ensemble_protocol::api::{RunState, routes};
use ensemble_protocol::event::{Event, EventKind, Outcome};
use ensemble_tests::{
    Rng, Server, hostile_test_plan, restart_server, start_runner, start_runner_with, start_server,
};
use futures::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "crash-token";
/// Kill points drawn for each run.
const KILLS_PER_RUN: usize = 5;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

enum Stop {
    /// `run-finished` was received.
    Finished,
    /// The watcher received event number `kill_at`, or the start of the
    /// test that waits on a barrier.
    KillPoint,
}

/// The server's test that waits on a barrier (`client-done`) for the client.
const BARRIER_TEST: &str = "server::sees_client_verdict";

/// Follows `run` from the event after `seen`, checking each arrives once and
/// in order, until `run-finished`, the event numbered `kill_at`, or (when
/// `mid_barrier`) the start of [`BARRIER_TEST`].
async fn follow(
    server: &Server,
    run: &str,
    seen: &mut Vec<Event>,
    kill_at: Option<u64>,
    mid_barrier: bool,
) -> Stop {
    let finished =
        |seen: &Vec<Event>| seen.last().is_some_and(|e| matches!(e.kind, EventKind::RunFinished { .. }));
    loop {
        if finished(seen) {
            return Stop::Finished;
        }
        let from = seen.len() as u64 + 1;
        let mut ws =
            server.client().websocket(&routes::run_events(run, from)).await.expect("the event stream");
        while let Some(Ok(msg)) = ws.next().await {
            let Message::Text(text) = msg else { continue };
            let ev: Event = serde_json::from_str(&text).unwrap();
            assert_eq!(ev.seq, seen.len() as u64 + 1, "events arrive once and in order: {ev:?}");
            let waits = matches!(&ev.kind, EventKind::TestStarted { test, .. } if test == BARRIER_TEST);
            seen.push(ev);
            if Some(seen.len() as u64) == kill_at || (mid_barrier && waits) {
                return Stop::KillPoint;
            }
            if finished(seen) {
                return Stop::Finished;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_anywhere_in_coordinating_runs_loses_nothing_and_they_complete() {
    let seed = env_or("ENSEMBLE_CRASH_SEED", 0x5eed_2026);
    let wanted = env_or("ENSEMBLE_CRASH_KILLS", 50) as usize;
    eprintln!("crash test: seed {seed} (set ENSEMBLE_CRASH_SEED to replay), {wanted} kill points");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--no-local-machine"];
    let mut server = start_server(dir.path(), &data, TOKEN, &args);
    let _server_box = start_runner(dir.path(), &server, "server-box", &["tier=server"], None);
    let _client_box = start_runner(dir.path(), &server, "client-box", &["tier=client"], None);
    server.wait_online(2).await;
    let kv_server = server.upload(ensemble_artifacts::KV_SERVER, "kv-server").await;
    let kv_client = server.upload(ensemble_artifacts::KV_CLIENT, "kv-client").await;
    let plan = json!({
        "name": "kv-crash", "type": "distributed",
        "settings": { "execution": "parallel", "barrier_timeout": "10m", "test_timeout": "10m" },
        "profiles": [{ "name": "s", "labels": { "tier": "server" } }, { "name": "c", "labels": { "tier": "client" } }],
        "entries": [
            { "suite": format!("sha256:{kv_server}"), "profile": "s", "role": "server",
              "params": { "keys": 100, "clients": 1, "timeout_ms": 600000 } },
            { "suite": format!("sha256:{kv_client}"), "profile": "c", "role": "client",
              "params": { "keys": 100, "timeout_ms": 600000 } }
        ]
    });

    let (mut kills, mut runs) = (0, 0);
    // The first run is not disturbed: its length bounds the kill points.
    let mut length = None;
    while kills < wanted {
        runs += 1;
        server.wait_online(2).await;
        let run = server.start_run(plan.clone()).await;
        let mut points: Vec<u64> = match length {
            None => Vec::new(),
            Some(n) => (0..KILLS_PER_RUN).map(|_| 1 + rng.draw() % n).collect(),
        };
        points.sort_unstable();
        points.dedup();
        let mut seen = Vec::new();
        // Besides the drawn points, every disturbed run is killed while the
        // server role waits on a barrier.
        let mut mid_barrier = length.is_some();
        loop {
            match follow(&server, &run, &mut seen, points.first().copied(), mid_barrier).await {
                Stop::Finished => break,
                Stop::KillPoint => {
                    let at = seen.len() as u64;
                    if points.first() == Some(&at) {
                        points.remove(0);
                    } else {
                        mid_barrier = false;
                    }
                    server.proc.kill();
                    kills += 1;
                    eprintln!("run {runs}: killed the coordinator after event {at} ({kills} kills)");
                    server = restart_server(dir.path(), &data, &server, &args);
                }
            }
        }
        length.get_or_insert(seen.len() as u64);
        check(&server, &run, &seen).await;
    }
    eprintln!("crash test: {kills} kills over {runs} runs, nothing lost");
}

/// What a watcher received is what the store holds, whole and in order, and
/// the run completed with every coordinating test passing.
async fn check(server: &Server, run: &str, seen: &[Event]) {
    let mut stored = Vec::new();
    server
        .watch(run, 1, |e| {
            stored.push(e.clone());
            true
        })
        .await;
    assert_eq!(stored.len(), seen.len(), "the store holds what was streamed");
    for (s, w) in stored.iter().zip(seen) {
        assert_eq!(s, w, "event {} as stored is what the watcher received", w.seq);
    }
    let EventKind::RunFinished { verdict, summary, .. } = &seen.last().unwrap().kind else { panic!() };
    let results: Vec<(String, String, Outcome)> = seen
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::TestFinished { shard, test, outcome, .. } => {
                Some((shard.role.clone(), test.clone(), *outcome))
            }
            _ => None,
        })
        .collect();
    assert!(results.iter().all(|r| r.2 == Outcome::Passed), "every test passes: {results:?}");
    let mut names: Vec<_> = results.iter().map(|r| (&r.0, &r.1)).collect();
    names.sort();
    let before = names.len();
    names.dedup();
    assert_eq!(names.len(), before, "each test finished once: {results:?}");
    assert!(before >= 5, "both roles ran their tests: {results:?}");
    assert_eq!(*verdict, Verdict::Passed, "{summary:?}");
    assert_eq!(server.client().run(run).await.unwrap().state, RunState::Passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_whose_machines_do_not_come_back_after_a_restart_end_lost_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The server role runs on the coordinator's own machine, the client on a runner.
    let args = ["--label", "tier=server", "--restart-grace", "1s"];
    let mut server = start_server(dir.path(), &data, TOKEN, &args);
    let mut client_box = start_runner(dir.path(), &server, "client-box", &["tier=client"], None);
    server.wait_online(2).await;
    let kv_server = server.upload(ensemble_artifacts::KV_SERVER, "kv-server").await;
    let kv_client = server.upload(ensemble_artifacts::KV_CLIENT, "kv-client").await;
    let run = server
        .start_run(json!({
            "name": "kv-gone", "type": "distributed",
            "profiles": [{ "name": "s", "labels": { "tier": "server" } }, { "name": "c", "labels": { "tier": "client" } }],
            "entries": [
                { "suite": format!("sha256:{kv_server}"), "profile": "s", "role": "server",
                  "params": { "keys": 100, "clients": 1 } },
                { "suite": format!("sha256:{kv_client}"), "profile": "c", "role": "client",
                  "params": { "keys": 100 } }
            ]
        }))
        .await;
    let mut seen = Vec::new();
    assert!(matches!(follow(&server, &run, &mut seen, Some(2), false).await, Stop::KillPoint));
    // The coordinator and the client's machine die together; only the coordinator comes back.
    server.proc.kill();
    client_box.kill();
    server = restart_server(dir.path(), &data, &server, &args);
    assert!(matches!(follow(&server, &run, &mut seen, None, false).await, Stop::Finished));
    let lost: Vec<(String, String)> = seen
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ShardFinished { shard, error: Some(why), .. } => {
                Some((shard.role.clone(), why.clone()))
            }
            _ => None,
        })
        .collect();
    let why = |role: &str| lost.iter().find(|(r, _)| r == role).map(|(_, w)| w.clone()).unwrap_or_default();
    assert!(why("server").contains("the coordinator's own machine, which restarted with it"), "{lost:?}");
    assert!(why("client").contains("did not come back within 1s of the coordinator's restart"), "{lost:?}");
    let EventKind::RunFinished { verdict, .. } = &seen.last().unwrap().kind else { panic!() };
    assert_eq!(*verdict, Verdict::Failed);
    assert_eq!(server.client().run(&run).await.unwrap().state, RunState::Failed);
}

/// A runner killed and started again at once under the same name (what
/// systemd's `Restart=always` or a pod restart does): the shard its old
/// process was running ends lost as soon as the new one joins, saying why —
/// before, the machine was back, so nothing was ever lost and the run waited
/// forever. The run finishes, and the machine takes new work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_restarted_at_once_loses_the_shards_its_old_process_held() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--no-local-machine"]);
    let mut runner = start_runner_with(dir.path(), &server, "phoenix", &["tier=a"], None, &[]);
    server.wait_online(1).await;
    let hostile = format!("sha256:{}", server.upload(ensemble_artifacts::HOSTILE, "hostile").await);
    let plan = |test: &str| hostile_test_plan("restarted", &hostile, test);
    let run = server.start_run(plan("long_sleep")).await;
    server.watch(&run, 1, |e| !matches!(e.kind, EventKind::TestStarted { .. })).await;
    runner.kill();
    let _again = start_runner_with(dir.path(), &server, "phoenix", &["tier=a"], None, &[]);
    let events = tokio::time::timeout(std::time::Duration::from_secs(120), server.events(&run))
        .await
        .expect("the run ended once its runner came back without the shard");
    let lost = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::TestFinished { test, outcome: Outcome::Lost, message, .. } if test == "long_sleep" => {
                message.clone()
            }
            _ => None,
        })
        .expect("the test ended lost");
    assert!(
        lost.contains("machine phoenix was lost: its runner restarted and no longer holds the shard"),
        "{lost}"
    );
    assert_eq!(server.client().run(&run).await.unwrap().state, RunState::Failed);
    // The machine is usable: a new run passes on it.
    let next = server.start_run(plan("passes")).await;
    server.events(&next).await;
    assert_eq!(server.client().run(&next).await.unwrap().state, RunState::Passed);
}

/// A cancel is a record: once acknowledged it is stored, and a coordinator
/// killed just after finishes cancelling — the running run ends cancelled
/// by whoever asked, the queued one ends at once instead of starting when
/// its machine frees up. Before, the restarted coordinator took both up
/// again as if nobody had asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_acknowledged_before_a_crash_is_finished_after_the_restart() {
    use ensemble_protocol::CancelReason;
    use ensemble_protocol::api::CancelRequest;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--no-local-machine"];
    let mut server = start_server(dir.path(), &data, TOKEN, &args);
    let _runner = start_runner_with(dir.path(), &server, "busy", &["tier=a"], None, &["--slots", "1"]);
    server.wait_online(1).await;
    // Both runs wait at a barrier for a party that never comes; the
    // second needs the one slot the first holds, so it is queued.
    let profile = json!({ "labels": { "tier": "a" } });
    let settings = json!({ "test_timeout": "1h", "barrier_timeout": "1h", "queue_timeout": "1h" });
    let parties = ensemble_artifacts::BENCH_PARTIES;
    let running = server.start_stuck_run(parties, profile.clone(), settings.clone()).await;
    server.watch(&running, 1, |e| !matches!(e.kind, EventKind::TestStarted { .. })).await;
    let queued = server.start_stuck_run(parties, profile.clone(), settings.clone()).await;
    server.watch(&queued, 1, |e| !matches!(e.kind, EventKind::RunQueued { .. })).await;
    let ask = |why: &str| CancelRequest { by: Some("ops@example".into()), why: Some(why.into()) };
    // The queued run first: the running one's end frees its slot.
    server.client().cancel_run_saying(&queued, &ask("not needed")).await.unwrap();
    server.client().cancel_run_saying(&running, &ask("maintenance")).await.unwrap();
    server.proc.kill();
    server = restart_server(dir.path(), &data, &server, &args);
    for (run, why) in [(&running, "maintenance"), (&queued, "not needed")] {
        let events = tokio::time::timeout(std::time::Duration::from_secs(120), server.events(run))
            .await
            .unwrap_or_else(|_| panic!("run {run} ({why}) ended after the restart"));
        let Some(EventKind::RunFinished { cancelled, verdict, .. }) = events.last().map(|e| &e.kind) else {
            panic!("{events:?}")
        };
        let by = CancelReason::User { by: Some("ops@example".into()), why: Some(why.into()) };
        assert_eq!(cancelled.as_ref(), Some(&by), "{run}");
        assert_eq!(*verdict, Verdict::Cancelled, "{run}");
        assert_eq!(server.client().run(run).await.unwrap().state, RunState::Cancelled);
        if run == &queued {
            let ran = events.iter().any(|e| matches!(&e.kind, EventKind::TestStarted { .. }));
            assert!(!ran, "the queued run never started a test: {events:?}");
        }
    }
    // A cancel with a body that is not what the API takes is refused, naming it.
    server.wait_online(1).await;
    let other = server.start_stuck_run(parties, profile, settings).await;
    let bad = server
        .client()
        .request(reqwest::Method::POST, &ensemble_protocol::api::routes::run_cancel(&other))
        .body(r#"{"by": "x", "when": "now"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("unknown field `when`"));
    // A cancel that does not say who (the browser's button) is a user's.
    server.client().cancel_run(&other).await.unwrap();
    let events = server.events(&other).await;
    let Some(EventKind::RunFinished { cancelled: Some(reason), .. }) = events.last().map(|e| &e.kind) else {
        panic!("{events:?}")
    };
    assert_eq!(reason, &CancelReason::user());
    assert_eq!(reason.to_string(), "cancelled by a user");
}
