//! Cold start: runners that have never seen a suite get a plan of large
//! ones (an interpreted suite carries its interpreter: megabytes of code
//! to compile before its first test). Real processes on loopback, each
//! runner with an empty cache of compiled suites.
//!
//! 1. **polyglot**: `suites/plans/polyglot.toml` (the Rust kv-server, the
//!    Python and the JavaScript client) on three fresh runners: from the
//!    run's start to the first result of the Python client and of the
//!    JavaScript client.
//! 2. **four fresh runners**: the 19 MB Python suite `tests/suites/py-outcomes`
//!    on four fresh runners at once: from the run's start to the first
//!    result on each (the slowest of the four counts).
//!
//! Each is measured twice in the same run, on fresh servers and runners:
//! with `--compile-tiers optimized` (Cranelift alone: how every suite
//! started before compiling was tiered) and with the default tiers (the
//! baseline compiler first). The `row` lines give the tiered figures
//! against the goals and against Cranelift alone.
//!
//! 3. **saved first**: the polyglot plan saved on a fresh server before it
//!    runs (as the app, or a schedule, runs plans): its fresh runners
//!    compile its suites in the background once it is saved; when they
//!    say they are done, the run starts. From the run's start to the first
//!    result of each client, as in 1.
//!
//! `cargo bench -p ensemble-runner --bench cold_start` (needs the Python
//! and JavaScript tools that `cargo xtask test` installs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ensemble_protocol::api::RunRequest;
use ensemble_protocol::wire::{Facts, MachineInfo};
use ensemble_protocol::{Event, EventKind};
use ensemble_tests::{Proc, Server, ensemble, runner_metrics, start_bench_server, start_runner_with};

/// `ensemble run PLAN` against `server`; its events.
fn run(server: &Server, plan: &Path, dir: &Path) -> Vec<Event> {
    let json = dir.join("events.jsonl");
    let (plan, json_arg) = (plan.to_str().unwrap(), json.to_str().unwrap());
    let out = ensemble(
        &["run", plan, "--server", &server.url, "--token", &server.token, "--json", json_arg],
        &dir.join("cli-cache"),
    );
    let events: Vec<Event> = std::fs::read_to_string(&json)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an event"))
        .collect();
    assert!(
        events.iter().any(|e| matches!(e.kind, EventKind::TestFinished { .. })),
        "no result: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    events
}

/// Seconds from the run's start to the first result of each `key` (a
/// shard's role, or its machine).
fn first_results(events: &[Event], key: impl Fn(&EventKind) -> Option<String>) -> BTreeMap<String, f64> {
    let started = events
        .iter()
        .find(|e| matches!(e.kind, EventKind::RunStarted { .. }))
        .expect("the run started")
        .at_us;
    let mut first = BTreeMap::new();
    for e in events {
        if let Some(k) = key(&e.kind) {
            first.entry(k).or_insert((e.at_us - started) as f64 / 1e6);
        }
    }
    first
}

/// A fresh server in `dir` and fresh runners (name, label) with `flags`.
fn fresh(dir: &Path, runners: &[(&str, &str)], flags: &[&str]) -> (Server, Vec<Proc>) {
    let server = start_bench_server(PathBuf::from(env!("CARGO_BIN_EXE_ensemble")), dir);
    let procs = runners
        .iter()
        .map(|(name, label)| {
            let flags: Vec<&str> = ["--slots", "1"].into_iter().chain(flags.iter().copied()).collect();
            start_runner_with(dir, &server, name, &[label], None, &flags)
        })
        .collect();
    (server, procs)
}

/// A fresh server and fresh runners, compiling with `tiers`; the events
/// of `plan` run on them.
fn cold_run(tiers: &str, runners: &[(&str, &str)], plan: &Path) -> Vec<Event> {
    let dir = tempfile::tempdir().unwrap();
    let (server, _runners) = fresh(dir.path(), runners, &["--compile-tiers", tiers]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(server.wait_online(runners.len()));
    run(&server, plan, dir.path())
}

/// Suites a runner says it compiled ahead of their runs (or found
/// compiled, or could not compile).
fn precompiled(metrics: &BTreeMap<String, f64>) -> f64 {
    metrics.iter().filter(|(k, _)| k.starts_with("ensemble_suites_precompiled_total")).map(|(_, v)| v).sum()
}

/// A fresh server and fresh `runners`; `plan` is saved on the server
/// first, and run once every runner has compiled the suites it could be
/// given. Its events, and the seconds from the save until the runners
/// were done compiling.
fn saved_run(runners: &[(&str, &str)], plan: &Path) -> (Vec<Event>, f64) {
    let dir = tempfile::tempdir().unwrap();
    let (server, procs) = fresh(dir.path(), runners, &["--metrics-listen", "127.0.0.1:0"]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        server.wait_online(runners.len()).await;
        let file = ensemble_runner::prepare::resolve(plan).await.expect("the plan resolves");
        let client = server.client();
        let plan = file.upload(&client).await.expect("its suites upload");
        let began = Instant::now();
        let saved = client.create_plan(&plan).await.unwrap();
        for (proc, (name, label)) in procs.iter().zip(runners) {
            let (key, value) = label.split_once('=').unwrap();
            let machine = MachineInfo {
                name: name.to_string(),
                labels: [(key.to_string(), value.to_string())].into(),
                slots: 1,
                facts: Facts::default(),
                allow_exec: Vec::new(),
            };
            let suites = ensemble_runner::coordinator::matching::suites_for(&plan, &machine);
            let done = tokio::time::timeout(Duration::from_secs(600), async {
                while precompiled(&runner_metrics(proc).await) < suites.len() as f64 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            done.await.unwrap_or_else(|_| {
                panic!("{name} did not compile its {} suites:\n{}", suites.len(), proc.log())
            });
        }
        let ready = began.elapsed().as_secs_f64();
        let request = RunRequest { plan_id: Some(saved.id), ..Default::default() };
        let run = client.start_run(&request).await.unwrap().id;
        (server.events(&run).await, ready)
    })
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let polyglot = root.join("suites/plans/polyglot.toml");
    let scratch = tempfile::tempdir().unwrap();
    let four = scratch.path().join("four.toml");
    std::fs::write(
        &four,
        format!(
            "name = \"cold-four\"\ntype = \"distributed\"\n[settings]\nbarrier_timeout = \"100ms\"\n\
             [[profiles]]\nname = \"py\"\nlabels = {{ tier = \"py\" }}\ncount = 4\n\
             [[entries]]\nsuite = {:?}\nprofile = \"py\"\nrole = \"py\"\nparams = {{ word = \"ensemble\" }}\n",
            root.join("tests/suites/py-outcomes").display().to_string()
        ),
    )
    .unwrap();
    let three = [("rust-box", "tier=server"), ("client-a", "tier=client"), ("client-b", "tier=client")];
    let fours = [("py-0", "tier=py"), ("py-1", "tier=py"), ("py-2", "tier=py"), ("py-3", "tier=py")];

    let role = |k: &EventKind| match k {
        EventKind::TestFinished { shard, .. } => Some(shard.role.clone()),
        _ => None,
    };
    let machine = |k: &EventKind| match k {
        EventKind::TestFinished { shard, .. } => Some(shard.machine.clone()),
        _ => None,
    };
    let mut polyglot_s = BTreeMap::new();
    let mut four_s = BTreeMap::new();
    for tiers in ["optimized", "tiered"] {
        let firsts = first_results(&cold_run(tiers, &three, &polyglot), role);
        println!("polyglot, --compile-tiers {tiers}: run start to first result {firsts:?}");
        polyglot_s.insert(tiers, (firsts["py-client"], firsts["js-client"]));
        let firsts = first_results(&cold_run(tiers, &fours, &four), machine);
        println!("four fresh runners, --compile-tiers {tiers}: run start to first result {firsts:?}");
        assert_eq!(firsts.len(), 4, "a result on each of the four");
        four_s.insert(tiers, firsts.values().copied().fold(0.0, f64::max));
    }
    let (events, ready) = saved_run(&three, &polyglot);
    let firsts = first_results(&events, role);
    println!(
        "polyglot saved first (its runners compiled it in {ready:.1} s): run start to first result {firsts:?}"
    );
    let (py_saved, js_saved) = (firsts["py-client"], firsts["js-client"]);
    let ((py, js), (py_was, js_was)) = (polyglot_s["tiered"], polyglot_s["optimized"]);
    let worst = py.max(js);
    println!(
        "row cold start, polyglot on fresh runners: first result Python {py:.2} s, JavaScript {js:.2} s = {:.2}× \
         the 0.5 s goal ({}); Cranelift alone {py_was:.2} s / {js_was:.2} s ({:.0}% / {:.0}% of it)",
        worst / 0.5,
        if worst <= 0.5 { "met" } else { "not met" },
        100.0 * py / py_was,
        100.0 * js / js_was,
    );
    let saved = py_saved.max(js_saved);
    println!(
        "row cold start, polyglot saved before it runs (its fresh runners compiled it in the background, \
         {ready:.1} s): first result Python {py_saved:.2} s, JavaScript {js_saved:.2} s = {:.2}× the 0.5 s goal ({})",
        saved / 0.5,
        if saved <= 0.5 { "met" } else { "not met" },
    );
    let (now, was) = (four_s["tiered"], four_s["optimized"]);
    println!(
        "row cold start, a 19 MB suite on 4 fresh runners at once: slowest first result {now:.2} s, {:.0}% of \
         Cranelift alone's {was:.2} s (goal ≤ 20%: {})",
        100.0 * now / was,
        if now <= 0.2 * was { "met" } else { "not met" },
    );
}
