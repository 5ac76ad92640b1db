//! The churn soak (see `ensemble_tests::soak`), about two minutes here;
//! `ENSEMBLE_SOAK_SECS` makes it longer, `ENSEMBLE_SOAK_SEED` replays one.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_survive_runners_and_the_coordinator_killed_restarted_and_partitioned_at_random() {
    let secs = std::env::var("ENSEMBLE_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    let opts = ensemble_tests::soak::SoakOptions::from_env(
        ensemble_artifacts::BENCH_PARTIES,
        std::time::Duration::from_secs(secs),
    );
    ensemble_tests::soak::soak(opts).await;
}
