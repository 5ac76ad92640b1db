//! The fuzz targets' saved corpora (`fuzz/corpus/<target>/`), replayed on
//! stable: every input that ever found new code paths, and every crash once
//! fixed, keeps running in `cargo test`.

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut inputs: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{} holds no inputs", dir.display());
    inputs
}

fn replay(target: &str, run: fn(&[u8])) {
    for (path, bytes) in corpus(target) {
        let outcome = std::panic::catch_unwind(|| run(&bytes));
        assert!(outcome.is_ok(), "{target}: {} panicked", path.display());
    }
}

#[test]
fn plan_corpus() {
    replay("plan", ensemble_runner::fuzzing::plan);
}

#[test]
fn wire_corpus() {
    replay("wire", ensemble_runner::fuzzing::wire);
}

#[test]
fn inspect_corpus() {
    replay("inspect", ensemble_runner::fuzzing::inspect);
}

#[test]
fn replay_corpus() {
    // Its store's directory goes however the replay ends.
    struct Finish;
    impl Drop for Finish {
        fn drop(&mut self) {
            ensemble_runner::fuzzing::finish();
        }
    }
    let _finish = Finish;
    replay("replay", ensemble_runner::fuzzing::replay);
}

#[test]
fn depth_corpus() {
    replay("depth", ensemble_runner::fuzzing::depth);
}
