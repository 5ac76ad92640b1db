//! Coordinator benchmarks with real processes on loopback (prints figures):
//!
//! 1. Barrier release latency: 100 parties (25 roles × 4 runner processes)
//!    meet at a barrier, round after round. A party's latency is the time
//!    from the round's last signal reaching the coordinator to that party
//!    resuming on its machine (its "released" log event, stamped by the
//!    machine's clock and corrected by the coordinator's offset estimate).
//! 2. Event throughput: 4 runners each stream a burst of log events; the rate
//!    is what one WebSocket watcher receives, first event to last.
//! 3. A wide run: the 10,000 trivial tests of `many-tests` split over 2
//!    runners, from the request that starts the run to its last result at a
//!    watcher (goal < 1 s).
//! 4. The runner's footprint: an idle runner's resident memory, and the
//!    binary's size.
//! 5. The browser app over the wire: the page and its files as a browser
//!    that takes brotli gets them on a first load, against the same files
//!    uncompressed; and on a reload (the files are immutable and the page
//!    answers its ETag with 304: nothing).
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
    let p99 = percentile(&lat, 0.99) as f64 / 1000.0;
    println!(
        "barrier release latency, {parties} parties on {RUNNERS} runner processes, {ROUNDS} rounds ({} samples): \
         p50 {:.2} ms, p99 {p99:.2} ms, max {:.2} ms",
        lat.len(),
        percentile(&lat, 0.50) as f64 / 1000.0,
        *lat.last().unwrap() as f64 / 1000.0,
    );
    println!("row barrier: p99 {p99:.2} ms = {:.2}× the 5 ms goal ({})", p99 / 5.0, met(p99 < 5.0));
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
        // Log lines count against the output limit of their test.
        "settings": { "test_timeout": "10m", "output_limit": "8MiB" },
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

fn met(yes: bool) -> &'static str {
    if yes { "met" } else { "not met" }
}

/// 10,000 trivial tests split over 2 runners: run start to last result.
async fn wide_run(server: &Server) {
    const TESTS: usize = 10_000;
    let sha = server.upload(ensemble_artifacts::MANY_TESTS, "many-tests").await;
    let plan = json!({
        "name": "wide-bench", "type": "distributed",
        "profiles": [{ "name": "pair", "labels": { "tier": "bench" }, "count": 2 }],
        "entries": [{ "suite": format!("sha256:{sha}"), "profile": "pair", "role": "wide", "split": "tests" }],
    });
    let started = Instant::now();
    let run = server.start_run(plan).await;
    let mut finished = 0;
    let mut last_result = started;
    server
        .watch(&run, 1, |e| {
            if matches!(e.kind, EventKind::TestFinished { .. }) {
                finished += 1;
                last_result = Instant::now();
            }
            true
        })
        .await;
    assert_eq!(finished, TESTS, "every test reported once");
    let secs = (last_result - started).as_secs_f64();
    println!("10,000 trivial tests over 2 runners, run start to the last result at a watcher: {secs:.3} s");
    println!("row wide run: {secs:.3} s = {secs:.2}× the 1 s goal ({})", met(secs < 1.0));
}

/// The app's bytes over the wire: first load (brotli) and a reload.
async fn app_bytes(server: &Server) {
    let client = server.client().with_token(None);
    let get = |path: String, encoding: Option<&'static str>| {
        let mut req = client.request(reqwest::Method::GET, &path);
        if let Some(e) = encoding {
            req = req.header("accept-encoding", e);
        }
        async move {
            let resp = req.send().await.unwrap();
            assert!(resp.status().is_success(), "{path}: {}", resp.status());
            let etag = resp.headers().get("etag").map(|v| v.to_str().unwrap().to_string());
            (etag, resp.bytes().await.unwrap().len())
        }
    };
    let (etag, page_raw) = get("/".into(), None).await;
    let page = String::from_utf8(
        client.request(reqwest::Method::GET, "/").send().await.unwrap().bytes().await.unwrap().to_vec(),
    )
    .unwrap();
    let (_, page_br) = get("/".into(), Some("br")).await;
    let (mut raw, mut br) = (page_raw, page_br);
    for name in page.split("/assets/").skip(1).map(|rest| rest.split('"').next().unwrap().to_string()) {
        raw += get(format!("/assets/{name}"), None).await.1;
        br += get(format!("/assets/{name}"), Some("gzip, br")).await.1;
    }
    // A reload: the hashed files are `immutable` (not asked again); the page
    // is revalidated and answers 304 with no body.
    let revalidated = client
        .request(reqwest::Method::GET, "/")
        .header("if-none-match", etag.expect("the page has an ETag"))
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status().as_u16(), 304);
    let reload = revalidated.bytes().await.unwrap().len();
    println!(
        "the browser app over the wire: first load {:.0} KB (brotli) against {:.0} KB uncompressed; reload {reload} bytes",
        br as f64 / 1024.0,
        raw as f64 / 1024.0
    );
    println!(
        "row app: first load {:.0} KB = {:.2}× the 400 KB goal, {:.1}× smaller than uncompressed; reload {reload} bytes ({})",
        br as f64 / 1024.0,
        br as f64 / (400.0 * 1024.0),
        raw as f64 / br as f64,
        met(br <= 400 * 1024 && reload == 0)
    );
}

/// An idle runner's resident memory (joined, before any run: the median
/// of the runners), and the size of the binary: the full one, and the
/// runner-only build (`--no-default-features`), whose own runner joins
/// too and is measured idle the same way. Sizes as built, and without
/// the symbol table (`strip`, when this machine has it).
async fn footprint(server: &Server, dir: &std::path::Path, runners: &[ensemble_tests::Proc]) {
    let lean_bin = tokio::task::spawn_blocking(ensemble_tests::build_runner_only).await.unwrap();
    let url = server.url.clone();
    let lean =
        ensemble_tests::start_runner_of(&lean_bin, dir, server, &url, "lean", &["tier=lean"], None, &[]);
    server.wait_online(runners.len() + 1).await;
    let mib = |rss: Option<u64>| rss.map_or(0.0, |r| r as f64 / (1 << 20) as f64);
    let mut rss: Vec<u64> = runners.iter().filter_map(|r| r.rss()).collect();
    rss.sort();
    let idle = mib(rss.get(rss.len() / 2).copied());
    let lean_idle = mib(lean.rss());
    drop(lean);
    let size = |path: &std::path::Path| std::fs::metadata(path).map_or(0.0, |m| m.len() as f64 / 1e6);
    let stripped = |path: &std::path::Path| {
        let out = dir.join("stripped");
        let ok = std::process::Command::new("strip")
            .arg("--strip-all")
            .arg("-o")
            .arg(&out)
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        if ok { format!("{:.1} MB", size(&out)) } else { "strip is not here".to_string() }
    };
    let full = std::path::Path::new(env!("CARGO_BIN_EXE_ensemble"));
    let lean_size = size(&lean_bin);
    println!(
        "row footprint: idle runner RSS {idle:.1} MiB = {:.2}× the 20 MB goal ({}); runner-only build \
         {lean_idle:.1} MiB; the binary (runner, coordinator and app in one) {:.1} MB ({} without its symbol \
         table); the runner-only build {lean_size:.1} MB ({} without) = {:.2}× the 25 MB goal ({})",
        idle * 1.048_576 / 20.0,
        met(idle * 1.048_576 <= 20.0),
        size(full),
        stripped(full),
        stripped(&lean_bin),
        lean_size / 25.0,
        met(lean_size <= 25.0),
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
        footprint(&server, dir.path(), &_runners).await;
        let sha = server.upload(ensemble_artifacts::BENCH_PARTIES, "bench-parties").await;
        barrier_latency(&server, &sha).await;
        event_rate(&server, &sha).await;
        wide_run(&server).await;
        app_bytes(&server).await;
    });
}
