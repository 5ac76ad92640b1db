//! What a suite's language costs: the kv client written in Rust, Python and
//! JavaScript (`suites/examples/kv-client`, `py-kv-client`, `js-kv-client`),
//! side by side.
//!
//! - **cold compile**: loading the component in a sandbox with an empty
//!   artifact cache (Cranelift compiles every function; an interpreted
//!   suite carries its interpreter, megabytes of code), and the same on
//!   the baseline tier (Winch), which a machine's first runs of a large
//!   suite use while Cranelift compiles in the background;
//! - **cached load**: loading it in a fresh sandbox over the warm on-disk
//!   cache (read, deserialize, link, pre-instantiate), which is what every
//!   machine pays after the first compile;
//! - **per-test cost**: a fresh instance and one small test
//!   (`client::waits_for_server`: read the params, pass a barrier), run as
//!   the agent runs tests, on Cranelift's code and on the baseline's.
//!
//! The Python and JavaScript components are built with `ensemble suite
//! build` (this build's binary), which needs componentize-py, esbuild and
//! componentize-js (`.ci/run` installs them). The `row` lines give each
//! figure against the Rust client's, measured in the same run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ensemble_protocol::Outcome;
use ensemble_protocol::wire::{SyncCall, SyncReply};
use ensemble_runner::sandbox::{
    Grants, LoadedSuite, Sandbox, SandboxOptions, SyncPort, TestCase, TestEnv, Tiers,
};

/// Every barrier is already released; every signal or publish is the first.
struct Released;

#[async_trait]
impl SyncPort for Released {
    async fn call(&self, call: SyncCall) -> SyncReply {
        match call {
            SyncCall::Barrier { .. } => SyncReply::Released,
            _ => SyncReply::Value { value: 1 },
        }
    }
    fn log(&self, _: &str, _: &str, _: &str) {}
    fn attach(&self, _: &str, _: &str, _: Vec<u8>) {}
}

/// Builds a Python or JavaScript example with `ensemble suite build`.
fn build(dir: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ensemble"))
        .args(["suite", "build", dir])
        .current_dir(&root)
        .output()
        .expect("ensemble runs");
    assert!(
        out.status.success(),
        "building {dir} (componentize-py, esbuild and componentize-js must be installed; .ci/run has the \
         commands): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    root.join(String::from_utf8_lossy(&out.stdout).trim())
}

fn sandbox(cache: Option<PathBuf>, tiers: Tiers) -> Arc<Sandbox> {
    Arc::new(Sandbox::new(SandboxOptions { cache_dir: cache, tiers, ..SandboxOptions::default() }).unwrap())
}

/// The median of `n` timings of `each`.
fn median(n: usize, mut each: impl FnMut() -> Duration) -> Duration {
    let mut t: Vec<Duration> = (0..n).map(|_| each()).collect();
    t.sort();
    t[n / 2]
}

struct Case {
    label: &'static str,
    bytes: Arc<Vec<u8>>,
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let cases = [
        ("Rust", PathBuf::from(ensemble_artifacts::KV_CLIENT)),
        ("Python", build("suites/examples/py-kv-client")),
        ("JavaScript", build("suites/examples/js-kv-client")),
    ]
    .map(|(label, path)| Case { label, bytes: Arc::new(std::fs::read(path).unwrap()) });
    let env = Arc::new(TestEnv {
        run_id: "bench".into(),
        role: "client".into(),
        instance: 0,
        instance_count: 1,
        machine: "local".into(),
        params: BTreeMap::from([("keys".to_string(), "100".to_string())]),
        grants: Grants::default(),
        memory_limit: 256 << 20,
        output_limit: 64 << 10,
        attachment_limit: 0,
        test_timeout: Duration::from_secs(30),
        barrier_timeout_ms: 1000,
        sync: Arc::new(Released),
    });

    let cold = |case: &Case, tiers: Tiers| -> Duration {
        let sb = sandbox(None, tiers);
        let started = Instant::now();
        drop(rt.block_on(sb.load(case.bytes.clone())).unwrap());
        started.elapsed()
    };
    let cache = tempfile::tempdir().unwrap();
    let cached = |case: &Case| -> Duration {
        let sb = sandbox(Some(cache.path().to_path_buf()), Tiers::Optimized);
        let started = Instant::now();
        drop(rt.block_on(sb.load(case.bytes.clone())).unwrap());
        started.elapsed()
    };
    let per_test = |case: &Case, tiers: Tiers| -> Duration {
        let sb = sandbox(None, tiers);
        let suite: Arc<LoadedSuite> = rt.block_on(sb.load(case.bytes.clone())).unwrap();
        let test: TestCase = rt
            .block_on(suite.list(&env))
            .unwrap()
            .into_iter()
            .find(|t| t.name == "client::waits_for_server")
            .unwrap();
        let (label, env) = (case.label, env.clone());
        median(5, || {
            let (suite, test, env) = (suite.clone(), test.clone(), env.clone());
            rt.block_on(rt.spawn(async move {
                let started = Instant::now();
                for _ in 0..20 {
                    let run = suite.run(&test, &env).await;
                    assert_eq!(run.outcome, Outcome::Passed, "{label}: {run:?}");
                }
                started.elapsed() / 20
            }))
            .unwrap()
        })
    };

    let mut figures = Vec::new();
    for case in &cases {
        let compile = median(3, || cold(case, Tiers::Optimized));
        cached(case); // fills the cache
        let load = median(11, || cached(case));
        let test = per_test(case, Tiers::Optimized);
        // The baseline tier: what a machine's first runs of a large suite
        // use until the optimized code is ready.
        let (quick, slow) = (median(3, || cold(case, Tiers::Baseline)), per_test(case, Tiers::Baseline));
        println!(
            "{}: {} bytes, cold compile {:.2} s, cached load {:.2} ms, per test {:.3} ms; on the baseline tier: \
             compile {:.2} s, per test {:.3} ms",
            case.label,
            case.bytes.len(),
            compile.as_secs_f64(),
            load.as_secs_f64() * 1e3,
            test.as_secs_f64() * 1e3,
            quick.as_secs_f64(),
            slow.as_secs_f64() * 1e3,
        );
        figures.push((case.label, case.bytes.len(), compile, load, test));
    }
    let (_, rust_size, rust_compile, rust_load, rust_test) = figures[0];
    for (label, size, compile, load, test) in &figures[1..] {
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        println!(
            "row cold compile, {label} kv-client ({:.1} MB): {:.2} s = {:.0}× the Rust one's {:.3} s ({:.1} MB)",
            *size as f64 / 1e6,
            compile.as_secs_f64(),
            ratio(*compile, rust_compile),
            rust_compile.as_secs_f64(),
            rust_size as f64 / 1e6
        );
        println!(
            "row cached load, {label} kv-client: {:.2} ms = {:.1}× the Rust one's {:.2} ms",
            load.as_secs_f64() * 1e3,
            ratio(*load, rust_load),
            rust_load.as_secs_f64() * 1e3
        );
        println!(
            "row per-test cost (fresh instance), {label} kv-client: {:.3} ms = {:.0}× the Rust one's {:.3} ms",
            test.as_secs_f64() * 1e3,
            ratio(*test, rust_test),
            rust_test.as_secs_f64() * 1e3
        );
    }
}
