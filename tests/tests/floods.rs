//! Floods against a real `ensemble serve`, all at once: 1,500 idle sockets,
//! thousands of requests with bad tokens, a machine sending garbage and
//! events that are not its own, watchers that never read, and a suite that
//! writes 300 MiB of output. Each is bounded (the server's peak RSS stays
//! under 300 MB, its log grows by little, it holds no more connections than
//! its cap) and an honest run beside them completes with every event stored
//! once and in order.

use ensemble_protocol::api::{RunState, routes};
use ensemble_protocol::event::{EventKind, Outcome, ShardRef};
use ensemble_protocol::wire::FromMachine;
use ensemble_tests::{FakeMachine, start_runner, start_server};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "flood-token";
/// The most resident memory the server may reach through the floods.
const RSS_LIMIT: u64 = 300 << 20;
/// The most its log may grow by through the floods.
const LOG_LIMIT: u64 = 256 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_are_bounded_and_an_honest_run_beside_them_completes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--label", "tier=server"]);
    let _honest = start_runner(dir.path(), &server, "honest", &["tier=a"], None);
    server.wait_online(2).await;
    let hostile = server.upload(ensemble_artifacts::HOSTILE, "hostile").await;
    let log_before = std::fs::metadata(&server.proc.log).unwrap().len();

    // 1,500 sockets that never send a byte, more than the cap of 1,024 (this
    // process may need more than the usual soft limit of open files).
    let mut files = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    files.current = files.maximum;
    let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, files);
    let addr = server.url.strip_prefix("http://").unwrap().to_string();
    let mut idle = Vec::new();
    for _ in 0..1500 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // An honest request still gets through: the longest idle connection makes room.
    server.client().machines().await.expect("the API answers beside 1,500 idle sockets");
    let open = server.proc.open_files().unwrap_or(0);
    assert!(open < 1024 + 100, "the server holds {open} files: more than its cap of connections");

    // Requests with a wrong token and without one, each refused and logged
    // at a bounded rate.
    let (wrong, none) = (server.client().with_token(Some("wrong".into())), server.client().with_token(None));
    for i in 0..3000 {
        let client = if i % 2 == 0 { &wrong } else { &none };
        assert_eq!(client.runs().await.unwrap_err().status(), Some(401));
    }

    // A machine that sends garbage and events for runs and shards it does not run.
    let mut noisy = FakeMachine::join(&server, "noisy", &[("tier", "noise")]).await;
    for i in 0..3000u64 {
        noisy.ws.send(Message::text(format!("not a message {i}\nforged log line"))).await.unwrap();
        let event = FromMachine::Event {
            run: "run-nonexistent".into(),
            shard: 1,
            seq: i + 1,
            at_us: 0,
            event: EventKind::Log {
                shard: ShardRef {
                    shard: 1,
                    machine: "noisy".into(),
                    role: "r".into(),
                    suite: "s".into(),
                    instance: 0,
                },
                test: "t".into(),
                level: "info".into(),
                message: "x".into(),
            },
        };
        noisy.send(&event).await;
    }

    // The honest run: 300 MiB of output on the server's own machine (8 MiB
    // kept), and a test on the runner.
    let run = server
        .start_run(json!({
            "name": "beside-floods", "type": "distributed",
            "settings": { "output_limit": "8MiB", "test_timeout": "30m" },
            "profiles": [{ "name": "server", "labels": { "tier": "server" } },
                         { "name": "a", "labels": { "tier": "a" } }],
            "entries": [
                { "suite": format!("sha256:{hostile}"), "profile": "server", "role": "flood",
                  "params": { "only": "output_flood", "mib": "300" } },
                { "suite": format!("sha256:{hostile}"), "profile": "a", "role": "steady",
                  "params": { "only": "passes" } }
            ]
        }))
        .await;
    // Watchers that never read a byte.
    let mut stuck = Vec::new();
    for _ in 0..30 {
        stuck.push(server.client().websocket(&routes::run_events(&run, 1)).await.unwrap());
    }

    let events = server.events(&run).await;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>(), "every event once, in order");
    let finished = |role: &str, test: &str| {
        events.iter().find_map(|e| match &e.kind {
            EventKind::TestFinished { shard, test: t, outcome, output, .. }
                if shard.role == role && t == test =>
            {
                Some((*outcome, output.len()))
            }
            _ => None,
        })
    };
    let (outcome, kept) = finished("flood", "output_flood").expect("the flood test finished");
    assert_eq!(outcome, Outcome::Passed);
    assert!(((8 << 20) - 4096..=(8 << 20) + 4096).contains(&kept), "about 8 MiB of output kept, not {kept}");
    assert_eq!(finished("steady", "passes").map(|f| f.0), Some(Outcome::Passed));
    assert_eq!(server.client().run(&run).await.unwrap().state, RunState::Passed);
    // What a second watcher replays is what the first saw.
    let again = server.events(&run).await;
    assert_eq!(again.len(), events.len());
    assert!(again.iter().zip(&events).all(|(a, b)| a == b), "the replay is what was streamed");

    let peak = server.proc.peak_rss().unwrap_or(0);
    assert!(peak < RSS_LIMIT, "the server's peak RSS was {} MB", peak >> 20);
    let grown = std::fs::metadata(&server.proc.log).unwrap().len() - log_before;
    assert!(grown < LOG_LIMIT, "the log grew by {grown} bytes:\n{}", server.proc.log());
    assert!(!server.proc.log().contains("\nforged log line"), "a frame cannot forge a log line");
    eprintln!("peak RSS {} MB, log grew {grown} bytes, {open} files open", peak >> 20);
    drop((idle, stuck));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_machines_are_forgotten_and_the_list_stays_small() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(
        dir.path(),
        &dir.path().join("data"),
        TOKEN,
        &["--no-local-machine", "--heartbeat-timeout", "1s", "--forget-offline-after", "1s"],
    );
    // Machines by the hundred, each with as many labels as allowed, gone at once.
    let labels: Vec<(String, String)> =
        (0..32).map(|i| (format!("k{i:02}{}", "k".repeat(60)), "v".repeat(256))).collect();
    let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // One that stays connected but never reads nor answers.
    let mut mute = FakeMachine::join(&server, "mute", &[]).await;
    for i in 0..200 {
        FakeMachine::join(&server, &format!("passer-{i}"), &labels).await;
    }
    let client = server.client();
    // Waits for the list to change (long-poll), until they are all forgotten.
    let mut listed = client.machines().await.unwrap();
    for _ in 0..60 {
        if listed.is_empty() {
            break;
        }
        listed = client.wait_machines(usize::MAX, std::time::Duration::from_secs(2)).await.unwrap();
    }
    assert!(listed.is_empty(), "still listed: {:?}", listed.iter().map(|m| &m.info.name).collect::<Vec<_>>());
    // Marked offline, the mute machine's socket was closed: what it finds
    // waiting is a few pings, then the end.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(Ok(msg)) = mute.ws.next().await {
            if msg.is_close() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "a machine that never reads is not kept once offline");
    assert!(server.proc.peak_rss().unwrap_or(0) < RSS_LIMIT);
}

/// A runner keeps each event it sends until the coordinator has stored it,
/// and counts their bytes while it does (its lanes start tests only while
/// they are under a bound): once a run has ended, it holds none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_holds_its_events_only_until_they_are_stored() {
    const HELD: &str = "ensemble_unacknowledged_event_bytes";
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--no-local-machine"]);
    let runner = ensemble_tests::start_runner_with(
        dir.path(),
        &server,
        "counted",
        &["tier=a"],
        None,
        &["--metrics-listen", "127.0.0.1:0"],
    );
    server.wait_online(1).await;
    let many = server.upload(ensemble_artifacts::MANY_TESTS, "many").await;
    let plan = json!({
        "name": "held",
        "profiles": [{ "name": "a", "labels": { "tier": "a" } }],
        "entries": [{ "suite": format!("sha256:{many}"), "profile": "a", "role": "many" }],
    });
    let run = server.start_run(plan).await;
    let events = tokio::time::timeout(std::time::Duration::from_secs(300), server.events(&run))
        .await
        .expect("the run ended");
    let finished = events.iter().filter(|e| matches!(e.kind, EventKind::TestFinished { .. })).count();
    assert_eq!(finished, 10_000);
    // The last acknowledgements reach the runner after the run's end:
    // read until they have (or a minute passes).
    let held = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            let metrics = ensemble_tests::runner_metrics(&runner).await;
            let held = metrics.get(HELD).copied().unwrap_or_else(|| panic!("no {HELD}: {metrics:#?}"));
            if held == 0.0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(held.is_ok(), "the runner still holds events it sent:\n{}", runner.log());
}
