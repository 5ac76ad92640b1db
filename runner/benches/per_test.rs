//! The per-test cost: a fresh instance of a suite plus one trivial test.
//!
//! Measures `LoadedSuite::run` of the hostile suite's `passes` test — exactly
//! what the agent does for every test (new store, limits, captured output,
//! instantiate from the pre-instantiated component, call, drop). Criterion
//! prints the median (and its confidence interval) for each case; the
//! "list" case is the baseline of the same work plus a `list` call.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use criterion::{Criterion, criterion_group, criterion_main};
use ensemble_protocol::wire::{SyncCall, SyncFailure, SyncReply};
use ensemble_runner::sandbox::{Grants, Sandbox, SandboxOptions, SyncPort, TestEnv};

struct NoSync;

#[async_trait]
impl SyncPort for NoSync {
    async fn call(&self, _: SyncCall) -> SyncReply {
        SyncReply::Error { kind: SyncFailure::Invalid, message: "benchmark".into() }
    }
    fn log(&self, _: &str, _: &str, _: &str) {}
    fn attach(&self, _: &str, _: &str, _: Vec<u8>) {}
}

fn per_test(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let sandbox =
        Arc::new(Sandbox::new(SandboxOptions { cache_dir: None, ..SandboxOptions::default() }).unwrap());
    let bytes = Arc::new(std::fs::read(ensemble_artifacts::HOSTILE).unwrap());
    let suite = rt.block_on(sandbox.load(bytes)).unwrap();
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
    let tests = rt.block_on(suite.list(&env)).unwrap();
    let passes = tests.iter().find(|t| t.name == "passes").unwrap().clone();

    let mut group = c.benchmark_group("per-test");
    group.bench_function("fresh instance + trivial test", |b| {
        b.to_async(&rt).iter(|| async {
            let run = suite.run(&passes, &env).await;
            assert_eq!(run.outcome, ensemble_protocol::Outcome::Passed);
        })
    });
    group.bench_function("fresh instance + list tests", |b| {
        b.to_async(&rt).iter(|| async { suite.list(&env).await.unwrap() })
    });
    group.finish();
}

criterion_group!(benches, per_test);
criterion_main!(benches);
