//! Splitting an entry's tests across its machines (`split = "tests"`):
//! how close each way of dividing comes to the least possible time, on the
//! skewed suite (24 tests, one 24 units long, down to one of 1 unit) over 4
//! in-process machines.
//!
//! Run 1 has no history, so it deals the tests by count; run 2 balances them
//! by run 1's durations. Both are measured: the busiest machine's test time
//! against the lower bound (the longest test, or the total shared evenly,
//! whichever is more), both from that run's own durations. A split by hash
//! of the names is computed from run 1's durations (the same suite, the
//! same per-test times) for comparison.
//!
//! `cargo bench -p ensemble-runner --bench split`

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ensemble_protocol::filter::{Durations, Partition};
use ensemble_protocol::{Event, EventKind, Plan};
use ensemble_runner::report::Reporter;
use ensemble_runner::sandbox::{Sandbox, SandboxOptions, sha256_hex};
use ensemble_runner::suites::LocalSuite;

const MACHINES: u32 = 4;

/// Keeps every event of a run.
struct Keep(Arc<Mutex<Vec<Event>>>);

impl Reporter for Keep {
    fn event(&mut self, event: &Event) -> anyhow::Result<()> {
        self.0.lock().unwrap().push(event.clone());
        Ok(())
    }
}

/// Test time per shard and per test, of a run's events.
fn times(events: &[Event]) -> (BTreeMap<u32, u64>, BTreeMap<String, u64>) {
    let (mut per_shard, mut per_test) = (BTreeMap::new(), BTreeMap::new());
    for e in events {
        if let EventKind::TestFinished { shard, test, duration_ms, .. } = &e.kind {
            *per_shard.entry(shard.shard).or_insert(0) += duration_ms;
            per_test.insert(test.clone(), *duration_ms);
        }
    }
    (per_shard, per_test)
}

/// The busiest machine's time, and how far over the lower bound it is.
fn against_bound(loads: impl Iterator<Item = u64>, per_test: &BTreeMap<String, u64>) -> (u64, f64) {
    let busiest = loads.max().unwrap_or(0);
    let total: u64 = per_test.values().sum();
    let bound = per_test.values().copied().max().unwrap_or(0).max(total.div_ceil(u64::from(MACHINES)));
    (busiest, busiest as f64 / bound.max(1) as f64)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let sandbox = Arc::new(
        Sandbox::new(SandboxOptions { cache_dir: None, max_instances: 64, ..SandboxOptions::default() })
            .unwrap(),
    );
    let bytes = std::fs::read(ensemble_artifacts::SKEWED).unwrap();
    let suite = LocalSuite {
        name: "skewed".into(),
        path: ensemble_artifacts::SKEWED.into(),
        sha256: sha256_hex(&bytes),
        bytes: Arc::new(bytes),
    };
    let plan = Plan::from_toml(&format!(
        "name = \"split-bench\"\n[[profiles]]\nname = \"pool\"\ncount = {MACHINES}\n\
         [[entries]]\nsuite = \"skewed.wasm\"\nprofile = \"pool\"\nsplit = \"tests\"\nparams = {{ scale_ms = 20 }}\n"
    ))
    .unwrap();
    let run = |durations: &Durations| {
        let events = Arc::new(Mutex::new(Vec::new()));
        let reporters: Vec<Box<dyn Reporter>> = vec![Box::new(Keep(events.clone()))];
        rt.block_on(ensemble_runner::standalone::run(
            &plan,
            std::slice::from_ref(&suite),
            &[false],
            &ensemble_protocol::filter::shared(durations.clone()),
            sandbox.clone(),
            reporters,
        ))
        .unwrap();
        let events = events.lock().unwrap().clone();
        times(&events)
    };

    let (count_loads, first) = run(&Durations::new());
    let history: Durations = [("skewed".to_string(), first.clone())].into();
    let (duration_loads, second) = run(&history);

    let names: Vec<&str> = first.keys().map(String::as_str).collect();
    let mut hash_loads = vec![0u64; MACHINES as usize];
    for name in &names {
        hash_loads[Partition::part_of(&["skewed", name], MACHINES) as usize - 1] += first[*name];
    }

    println!("split of 24 skewed tests over {MACHINES} machines: busiest machine / lower bound");
    for (how, (busiest, ratio), note) in [
        ("count", against_bound(count_loads.into_values(), &first), "measured, run 1 (no history)"),
        ("hash", against_bound(hash_loads.into_iter(), &first), "computed from run 1's durations"),
        (
            "duration",
            against_bound(duration_loads.into_values(), &second),
            "measured, run 2 (run 1's durations)",
        ),
    ] {
        println!("  {how:>8}: {:>6.3} s  {ratio:>5.2}× the bound  ({note})", busiest as f64 / 1000.0);
    }
}
