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
//! `cargo bench -p ensemble-runner --bench cold_start` (needs the Python
//! and JavaScript tools that `cargo xtask test` installs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ensemble_protocol::{Event, EventKind};
use ensemble_tests::{Server, ensemble, start_bench_server, start_runner_with};

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

/// A fresh server and `n` fresh runners labelled `label`, compiling with
/// `tiers`; the events of `plan` run on them.
fn cold_run(tiers: &str, runners: &[(&str, &str)], plan: &Path) -> Vec<Event> {
    let dir = tempfile::tempdir().unwrap();
    let server = start_bench_server(PathBuf::from(env!("CARGO_BIN_EXE_ensemble")), dir.path());
    let _runners: Vec<_> = runners
        .iter()
        .map(|(name, label)| {
            start_runner_with(
                dir.path(),
                &server,
                name,
                &[label],
                None,
                &["--slots", "1", "--compile-tiers", tiers],
            )
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(server.wait_online(runners.len()));
    run(&server, plan, dir.path())
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
    let (now, was) = (four_s["tiered"], four_s["optimized"]);
    println!(
        "row cold start, a 19 MB suite on 4 fresh runners at once: slowest first result {now:.2} s, {:.0}% of \
         Cranelift alone's {was:.2} s (goal ≤ 20%: {})",
        100.0 * now / was,
        if now <= 0.2 * was { "met" } else { "not met" },
    );
}
