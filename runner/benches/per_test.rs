//! The per-test cost: a fresh instance of a suite plus one trivial test.
//!
//! Measures `LoadedSuite::run` — exactly what the agent does for every test
//! (new store, limits, captured output, instantiate from the
//! pre-instantiated component, call, drop) — for the hostile suite's
//! `passes` (hand-written against the ABI), a suite written with the Rust
//! SDK (`basics`, `adds`) and one test of a libtest harness
//! (`libtest-thousand`, a WASI command run with `--exact NAME`); the "list"
//! case is the same work plus a `list` call. And the cached load of a suite:
//! what a process that starts pays to have a suite ready when its compiled
//! artifact is in the on-disk cache (read, deserialize, link,
//! pre-instantiate; goal < 5 ms).
//!
//! Criterion prints each case's median and confidence interval; the `row`
//! lines at the end give the per-test costs against the hand-written suite's
//! and the cached load against its goal.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::Criterion;
use ensemble_protocol::Outcome;
use ensemble_protocol::wire::{SyncCall, SyncFailure, SyncReply};
use ensemble_runner::sandbox::{Grants, LoadedSuite, Sandbox, SandboxOptions, SyncPort, TestCase, TestEnv};
use tokio::runtime::Runtime;

struct NoSync;

#[async_trait]
impl SyncPort for NoSync {
    async fn call(&self, _: SyncCall) -> SyncReply {
        SyncReply::Error { kind: SyncFailure::Invalid, message: "benchmark".into() }
    }
    fn log(&self, _: &str, _: &str, _: &str) {}
    fn attach(&self, _: &str, _: &str, _: Vec<u8>) {}
}

/// One suite, loaded, and the test to run.
struct Case {
    label: &'static str,
    path: &'static str,
    suite: Arc<LoadedSuite>,
    test: TestCase,
}

struct Fixture {
    rt: Runtime,
    env: Arc<TestEnv>,
    cases: Vec<Case>,
    cache: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let sandbox =
            Arc::new(Sandbox::new(SandboxOptions { cache_dir: None, ..SandboxOptions::default() }).unwrap());
        let env = Arc::new(TestEnv {
            run_id: "bench".into(),
            role: "bench".into(),
            instance: 0,
            instance_count: 1,
            machine: "local".into(),
            params: BTreeMap::new(),
            grants: Grants::default(),
            memory_limit: 64 << 20,
            output_limit: 64 << 10,
            attachment_limit: 0,
            test_timeout: Duration::from_secs(10),
            barrier_timeout_ms: 1000,
            sync: Arc::new(NoSync),
        });
        let cases = [
            ("hand-written suite", ensemble_artifacts::HOSTILE, "passes"),
            ("Rust SDK suite", ensemble_artifacts::BASICS, "adds"),
            ("libtest harness", ensemble_artifacts::LIBTEST_THOUSAND, "d4::d5::d6"),
        ]
        .into_iter()
        .map(|(label, path, name)| {
            let suite = rt.block_on(sandbox.load(Arc::new(std::fs::read(path).unwrap()))).unwrap();
            let test = rt.block_on(suite.list(&env)).unwrap().into_iter().find(|t| t.name == name).unwrap();
            Case { label, path, suite, test }
        })
        .collect();
        Fixture { rt, env, cases, cache: tempfile::tempdir().unwrap() }
    }

    /// Runs `case`'s test `iters` times, one after another, on a worker
    /// thread of the runtime (as the agent does: the WASI streams' tasks
    /// run beside it, not across threads from a blocked caller).
    fn run_many(&self, case: &Case, iters: u64) -> Duration {
        let (suite, test, env, label) = (case.suite.clone(), case.test.clone(), self.env.clone(), case.label);
        self.rt
            .block_on(self.rt.spawn(async move {
                let started = Instant::now();
                for _ in 0..iters {
                    let run = suite.run(&test, &env).await;
                    assert_eq!(run.outcome, Outcome::Passed, "{label}: {run:?}");
                }
                started.elapsed()
            }))
            .unwrap()
    }

    /// A sandbox that never loaded anything, over the warm on-disk cache.
    fn fresh_sandbox(&self) -> Arc<Sandbox> {
        let opts =
            SandboxOptions { cache_dir: Some(self.cache.path().to_path_buf()), ..SandboxOptions::default() };
        Arc::new(Sandbox::new(opts).unwrap())
    }

    /// The time to load `case`'s suite in a fresh sandbox from the cache.
    fn cached_load(&self, case: &Case) -> Duration {
        let bytes = Arc::new(std::fs::read(case.path).unwrap());
        let sandbox = self.fresh_sandbox();
        let started = Instant::now();
        let loaded = self.rt.block_on(sandbox.load(bytes)).unwrap();
        let took = started.elapsed();
        drop(loaded);
        took
    }
}

fn criterion_cases(c: &mut Criterion, f: &Fixture) {
    let mut group = c.benchmark_group("per-test");
    for case in &f.cases {
        group.bench_function(format!("{}: fresh instance + trivial test", case.label), |b| {
            b.iter_custom(|iters| f.run_many(case, iters))
        });
    }
    let hostile = &f.cases[0];
    group.bench_function("hand-written suite: fresh instance + list tests", |b| {
        b.iter(|| f.rt.block_on(hostile.suite.list(&f.env)).unwrap())
    });
    group.finish();

    let mut group = c.benchmark_group("load");
    for case in &f.cases[1..] {
        group.bench_function(format!("{}: cached load", case.label), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| f.cached_load(case)).sum())
        });
    }
    group.finish();
}

/// The median of `n` timings of `each`.
fn median(n: usize, mut each: impl FnMut() -> Duration) -> Duration {
    let mut t: Vec<Duration> = (0..n).map(|_| each()).collect();
    t.sort();
    t[n / 2]
}

fn main() {
    let f = Fixture::new();
    // Fill the on-disk cache.
    for case in &f.cases {
        f.cached_load(case);
    }
    let mut c = Criterion::default().configure_from_args();
    criterion_cases(&mut c, &f);
    c.final_summary();

    let per_test: Vec<Duration> =
        f.cases.iter().map(|case| median(51, || f.run_many(case, 20) / 20)).collect();
    let base = per_test[0].as_secs_f64();
    for (case, t) in f.cases.iter().zip(&per_test).skip(1) {
        println!(
            "row per-test cost, {}: {:.1} µs = {:.2}× the hand-written suite's {:.1} µs",
            case.label,
            t.as_secs_f64() * 1e6,
            t.as_secs_f64() / base,
            base * 1e6
        );
    }
    for case in &f.cases[1..] {
        let t = median(51, || f.cached_load(case)).as_secs_f64() * 1e3;
        println!(
            "row cached load, {}: {t:.2} ms = {:.2}× the 5 ms goal ({})",
            case.label,
            t / 5.0,
            if t < 5.0 { "met" } else { "not met" }
        );
    }
}
