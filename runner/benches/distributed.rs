//! Coordinator benchmarks with real processes on loopback (prints figures):
//!
//! 1. Barrier release latency: 100 parties (25 roles × 4 runner processes)
//!    meet at a barrier, round after round. A party's latency is the time
//!    from the round's last signal reaching the coordinator to that party
//!    resuming on its machine (its "released" log event, stamped by the
//!    machine's clock and corrected by the coordinator's offset estimate).
//! 2. Event throughput: 4 runners each stream a burst of log events; the rate
//!    is what one WebSocket watcher receives, first event to last.
//!
//! `cargo bench -p ensemble-runner --bench distributed`

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use ensemble_protocol::EventKind;
use ensemble_protocol::event::SyncOp;
use ensemble_tests::{Server, start_bench_server, start_runner_with};
use serde_json::json;

const RUNNERS: usize = 4;
const ROLES: usize = 25;
const ROUNDS: u64 = 30;
const EVENTS_PER_RUNNER: u64 = 25_000;

fn percentile(sorted: &[i64], p: f64) -> i64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn barrier_latency(server: &Server, sha: &str) {
    let parties = RUNNERS * ROLES;
    let entries: Vec<_> = (0..ROLES)
        .map(|i| {
            json!({ "suite": format!("sha256:{sha}"), "profile": "bench", "role": format!("p{i}"),
                    "params": { "parties": parties.to_string(), "rounds": ROUNDS.to_string(), "events": "0" } })
        })
        .collect();
    let plan = json!({
        "name": "barrier-bench", "type": "distributed",
        "settings": { "test_timeout": "10m", "barrier_timeout": "10m" },
        "profiles": [{ "name": "bench", "labels": { "tier": "bench" }, "count": RUNNERS }],
        "entries": entries,
    });
    let run = server.start_run(plan).await;
    let mut last_signal: HashMap<u64, i64> = HashMap::new();
    let mut released: Vec<(u64, i64)> = Vec::new();
    let mut failures = 0;
    server
        .watch(&run, 1, |e| {
            match &e.kind {
                EventKind::Sync { op: SyncOp::Signal { state, .. }, .. } => {
                    if let Some(r) = state.strip_prefix("round-").and_then(|r| r.parse().ok()) {
                        let t = last_signal.entry(r).or_insert(e.at_us);
                        *t = (*t).max(e.at_us);
                    }
                }
                EventKind::Log { message, .. } => {
                    if let Some(r) = message.strip_prefix("released ").and_then(|r| r.parse().ok()) {
                        released.push((r, e.at_us));
                    }
                }
                EventKind::TestFinished { outcome, message, .. } if outcome.is_failure() => {
                    failures += 1;
                    eprintln!("a bench test failed: {message:?}");
                }
                _ => {}
            }
            true
        })
        .await;
    let mut lat: Vec<i64> = released.iter().map(|(r, t)| t - last_signal[r]).collect();
    lat.sort_unstable();
    assert!(!lat.is_empty() && failures == 0, "the barrier bench did not run cleanly");
    println!(
        "barrier release latency, {parties} parties on {RUNNERS} runner processes, {ROUNDS} rounds ({} samples): \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        lat.len(),
        percentile(&lat, 0.50) as f64 / 1000.0,
        percentile(&lat, 0.99) as f64 / 1000.0,
        *lat.last().unwrap() as f64 / 1000.0,
    );
    let machines = server.client().machines().await.unwrap();
    let unc: Vec<i64> = machines.iter().map(|m| m.clock_uncertainty_us).collect();
    println!("  (clock offset uncertainty per machine: {unc:?} µs)");
}

async fn event_rate(server: &Server, sha: &str) {
    let entries: Vec<_> = (0..RUNNERS)
        .map(|i| {
            json!({ "suite": format!("sha256:{sha}"), "profile": format!("m{i}"), "role": format!("e{i}"),
                    "params": { "events": EVENTS_PER_RUNNER.to_string(), "rounds": "0" } })
        })
        .collect();
    let profiles: Vec<_> =
        (0..RUNNERS).map(|i| json!({ "name": format!("m{i}"), "machine": format!("bench-{i}") })).collect();
    let plan = json!({
        "name": "event-bench", "type": "distributed",
        "settings": { "test_timeout": "10m" },
        "profiles": profiles, "entries": entries,
    });
    let run = server.start_run(plan).await;
    let mut first: Option<Instant> = None;
    let mut per_shard: BTreeMap<String, u64> = BTreeMap::new();
    let mut total = 0u64;
    server
        .watch(&run, 1, |e| {
            first.get_or_insert_with(Instant::now);
            total += 1;
            if let EventKind::Log { shard, .. } = &e.kind {
                *per_shard.entry(shard.machine.clone()).or_default() += 1;
            }
            true
        })
        .await;
    let secs = first.unwrap().elapsed().as_secs_f64();
    assert!(per_shard.values().all(|&n| n == EVENTS_PER_RUNNER), "{per_shard:?}");
    println!(
        "events from {RUNNERS} runners to one watcher: {total} events in {secs:.2} s = {:.0} events/s",
        total as f64 / secs
    );
}

fn main() {
    // `cargo bench` passes --bench; there is nothing to filter here.
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let server = start_bench_server(PathBuf::from(env!("CARGO_BIN_EXE_ensemble")), dir.path());
        let _runners: Vec<_> = (0..RUNNERS)
            .map(|i| {
                start_runner_with(
                    dir.path(),
                    &server,
                    &format!("bench-{i}"),
                    &["tier=bench"],
                    None,
                    &["--slots", "32"],
                )
            })
            .collect();
        server.wait_online(RUNNERS).await;
        let sha = server.upload(ensemble_artifacts::BENCH_PARTIES, "bench-parties").await;
        barrier_latency(&server, &sha).await;
        event_rate(&server, &sha).await;
    });
}
