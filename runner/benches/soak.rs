//! The churn soak (`ensemble_tests::soak`) for as long as asked: a
//! coordinator and four runners behind proxies, runners killed (SIGKILL and
//! SIGTERM), restarted and partitioned at random, the coordinator killed
//! and restarted a few times, coordinating runs submitted all the while;
//! then every run's events, verdict and state are checked, and the summary
//! table and the coordinator's memory and open files are printed.
//!
//! `cargo bench -p ensemble-runner --bench soak -- 1h` (the length is a
//! duration, default 10m; `ENSEMBLE_SOAK_SEED=N` replays a seed)

fn main() {
    let length = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(|a| humantime::parse_duration(&a).unwrap_or_else(|e| panic!("the soak's length {a:?}: {e}")))
        .unwrap_or(std::time::Duration::from_secs(600));
    let _ = ensemble_tests::BIN.set(std::path::PathBuf::from(env!("CARGO_BIN_EXE_ensemble")));
    let opts = ensemble_tests::soak::SoakOptions::from_env(ensemble_artifacts::BENCH_PARTIES, length);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    runtime.block_on(ensemble_tests::soak::soak(opts));
}
