//! Silent links: a real TCP proxy between a runner and its coordinator
//! holds, delays, cuts or passes their traffic, as a flaky network does. A link
//! that goes silent without closing is given up on both sides within the
//! heartbeat timeout; one that comes back sooner goes on with nothing lost
//! or doubled; a machine that comes back after it was counted lost stops
//! the shards it held at once and takes new work.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use ensemble_protocol::api::RunState;
use ensemble_protocol::event::{EventKind, Outcome};
use ensemble_tests::proxy::{Fault, Proxy};
use ensemble_tests::{Proc, Server, hostile_test_plan, start_runner_at, start_runner_with, start_server};
use serde_json::json;

const TOKEN: &str = "partition-token";

fn address(server: &Server) -> SocketAddr {
    server.url.trim_start_matches("http://").parse().expect("the server's address")
}

/// Waits (bounded) until `runner`'s log says `what`.
async fn logged(runner: &Proc, what: &str) {
    for _ in 0..1200 {
        if runner.log().contains(what) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the runner never said {what:?}:\n{}", runner.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_link_is_given_up_on_both_sides_and_the_machine_back_stops_what_was_lost() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--no-local-machine", "--heartbeat-timeout", "10s"];
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &args);
    let proxy = Proxy::start(address(&server)).await;
    // One slot: a shard it kept running would hold it, and the next run with it.
    let runner =
        start_runner_at(dir.path(), &server, &proxy.url(), "island", &["tier=a"], None, &["--slots", "1"]);
    server.wait_online(1).await;
    let hostile = format!("sha256:{}", server.upload(ensemble_artifacts::HOSTILE, "hostile").await);
    let plan = |test: &str| hostile_test_plan("partitioned", &hostile, test);
    let run = server.start_run(plan("long_sleep")).await;
    server.watch(&run, 1, |e| !matches!(e.kind, EventKind::TestStarted { .. })).await;
    proxy.set(Fault::Blackhole);
    // The coordinator gives the silent machine up: its test ends lost, saying so.
    let events =
        tokio::time::timeout(Duration::from_secs(120), server.events(&run)).await.expect("the run ended");
    let lost = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::TestFinished { test, outcome: Outcome::Lost, message, .. } if test == "long_sleep" => {
                message.clone()
            }
            _ => None,
        })
        .expect("the test ended lost");
    assert!(lost.contains("machine island was lost: silent for"), "{lost}");
    assert!(lost.contains("(heartbeat timeout 10"), "{lost}");
    assert_eq!(server.client().run(&run).await.unwrap().state, RunState::Failed);
    // So does the runner: nothing came from the coordinator for its timeout.
    logged(&runner, "the coordinator was silent for 10 s").await;
    proxy.set(Fault::Pass);
    // Back, it is told the shard it holds is lost, and stops it at once.
    logged(&runner, "the coordinator counts this shard lost").await;
    server.wait_online(1).await;
    let next = server.start_run(plan("passes")).await;
    let ended = tokio::time::timeout(Duration::from_secs(120), server.events(&next)).await;
    ended.expect("the new run got the slot the lost shard held");
    assert_eq!(server.client().run(&next).await.unwrap().state, RunState::Passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_silent_for_less_than_the_heartbeat_timeout_goes_on_with_nothing_lost_or_doubled() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--no-local-machine", "--heartbeat-timeout", "20s"];
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &args);
    let proxy = Proxy::start(address(&server)).await;
    let _left = start_runner_at(dir.path(), &server, &proxy.url(), "left", &["tier=a"], None, &[]);
    let _right = start_runner_with(dir.path(), &server, "right", &["tier=b"], None, &[]);
    server.wait_online(2).await;
    let parties = format!("sha256:{}", server.upload(ensemble_artifacts::BENCH_PARTIES, "parties").await);
    const ROUNDS: u64 = 60;
    let entry = |profile: &str, role: &str| {
        json!({ "suite": parties, "profile": profile, "role": role, "tests": ["barriers"],
                "params": { "parties": "2", "rounds": ROUNDS.to_string() } })
    };
    let run = server
        .start_run(json!({
            "name": "held", "settings": { "barrier_timeout": "5m" },
            "profiles": [{ "name": "a", "labels": { "tier": "a" } }, { "name": "b", "labels": { "tier": "b" } }],
            "entries": [entry("a", "left"), entry("b", "right")]
        }))
        .await;
    let released = |e: &ensemble_protocol::Event, n: u64| {
        matches!(&e.kind, EventKind::Log { shard, message, .. }
            if shard.role == "left" && *message == format!("released {n}"))
    };
    // Held for a second at round 10, slowed down until round 40, then its
    // connection cut (the runner reconnects and resends what was not
    // acknowledged).
    server.watch(&run, 1, |e| !released(e, 10)).await;
    proxy.set(Fault::Blackhole);
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.set(Fault::Delay(Duration::from_millis(20)));
    server.watch(&run, 1, |e| !released(e, 40)).await;
    proxy.set(Fault::Pass);
    proxy.cut();
    let events =
        tokio::time::timeout(Duration::from_secs(300), server.events(&run)).await.expect("the run ended");
    assert_eq!(server.client().run(&run).await.unwrap().state, RunState::Passed, "{events:?}");
    // Every event is stored once, in order.
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    let mut lines: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in &events {
        if let EventKind::Log { shard, message, .. } = &e.kind {
            *lines.entry((shard.role.clone(), message.clone())).or_default() += 1;
        }
    }
    for role in ["left", "right"] {
        for n in 0..ROUNDS {
            let key = (role.to_string(), format!("released {n}"));
            assert_eq!(lines.get(&key), Some(&1), "{key:?} once");
        }
    }
    let finished = events.iter().filter(|e| matches!(e.kind, EventKind::TestFinished { .. })).count();
    assert_eq!(finished, 2);
}
