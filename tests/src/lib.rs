//! Helpers for Ensemble's end-to-end tests: real `ensemble` processes.
//!
//! The tests here run the binary the workspace built (`cargo test --workspace`
//! builds it next to the test executables), against the repository's own plan
//! files, exactly as a user would.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the repository").to_path_buf()
}

/// The `ensemble` binary of this build (target/<profile>/ensemble).
pub fn ensemble_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/ensemble
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    let bin = profile_dir.join(format!("ensemble{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` so the binary is built",
        bin.display()
    );
    bin
}

/// Runs `ensemble` with `args` in the repository root, with a private cache.
pub fn ensemble(args: &[&str], cache: &std::path::Path) -> Output {
    Command::new(ensemble_bin())
        .args(args)
        .current_dir(repo_root())
        .env("ENSEMBLE_CACHE_DIR", cache)
        .output()
        .expect("ensemble runs")
}
