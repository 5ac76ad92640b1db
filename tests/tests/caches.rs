//! A runner's caches damaged while it was down — suites and compiled
//! suites truncated, swapped for another suite's, or unreadable — are
//! found out (hash, header, size) and fetched or compiled again: the runner
//! never runs wrong code and never crashes. A damaged identity file stops
//! the runner with a message saying how to recover, and the recovery works.
//! A cache past its bound loses the suites used least recently, and only
//! those.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ensemble_protocol::api::RunState;
use ensemble_protocol::event::EventKind;
use ensemble_tests::{Proc, Server, start_runner, start_runner_with, start_server};
use serde_json::json;

const TOKEN: &str = "cache-token";

/// The files under `dir` whose names end with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.file_name().is_some_and(|n| n.to_string_lossy().ends_with(suffix)) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The cache file of `sha256` among `paths`.
fn of(paths: &[PathBuf], sha256: &str) -> PathBuf {
    paths
        .iter()
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(sha256))
        .unwrap_or_else(|| panic!("no cache file of {sha256} in {paths:?}"))
        .clone()
}

/// Runs both suites on the runner; returns the tests each reported, by role.
async fn run_both(server: &Server, parties: &str, hello: &str) -> Vec<(String, String)> {
    let run = server
        .start_run(json!({
            "name": "cached",
            "profiles": [{ "name": "a", "labels": { "tier": "a" } }],
            "entries": [
                { "suite": format!("sha256:{parties}"), "profile": "a", "role": "parties" },
                { "suite": format!("sha256:{hello}"), "profile": "a", "role": "hello" }
            ]
        }))
        .await;
    let events =
        tokio::time::timeout(Duration::from_secs(300), server.events(&run)).await.expect("the run ended");
    assert_eq!(server.client().run(&run).await.unwrap().state, RunState::Passed, "{events:?}");
    let mut tests: Vec<(String, String)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::TestFinished { shard, test, .. } => Some((shard.role.clone(), test.clone())),
            _ => None,
        })
        .collect();
    tests.sort();
    tests
}

/// Runs one suite on the runner, which passes.
async fn run_one(server: &Server, sha256: &str) {
    let run = server
        .start_run(json!({
            "name": "one",
            "profiles": [{ "name": "a", "labels": { "tier": "a" } }],
            "entries": [{ "suite": format!("sha256:{sha256}"), "profile": "a" }]
        }))
        .await;
    let events =
        tokio::time::timeout(Duration::from_secs(300), server.events(&run)).await.expect("the run ended");
    assert_eq!(server.client().run(&run).await.unwrap().state, RunState::Passed, "{events:?}");
}

/// The bytes of the cache files (fetched and compiled) of `sha256` in `cache`.
fn held(cache: &Path, sha256: &str) -> Vec<(PathBuf, u64)> {
    [files(cache, ".wasm"), files(cache, ".cwasm")]
        .concat()
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(sha256))
        .map(|p| {
            let len = std::fs::metadata(&p).unwrap().len();
            (p, len)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_past_its_bound_loses_the_suites_used_least_recently() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--no-local-machine"]);
    let cache = dir.path().join("cache-bounded");
    let mut runner = start_runner(dir.path(), &server, "bounded", &["tier=a"], None);
    server.wait_online(1).await;
    let parties = server.upload(ensemble_artifacts::BENCH_PARTIES, "parties").await;
    let hello = server.upload(ensemble_artifacts::HELLO_COMMAND, "hello").await;
    run_one(&server, &parties).await;
    run_one(&server, &hello).await;
    runner.kill();
    let (p, h) = (held(&cache, &parties), held(&cache, &hello));
    assert_eq!((p.len(), h.len()), (2, 2), "each suite fetched and compiled: {p:?} {h:?}");
    let hello_bytes: u64 = h.iter().map(|(_, len)| len).sum();

    // Started again with room for the suite used last only: at its start
    // the runner removes the other's files (used before), and only those.
    let bound = hello_bytes.to_string();
    let _runner =
        start_runner_with(dir.path(), &server, "bounded", &["tier=a"], None, &["--cache-max-size", &bound]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !held(&cache, &parties).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cache was not trimmed: {:?}",
            held(&cache, &parties)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(held(&cache, &hello), h, "the suite used last stays");
    // Its identity was not the cache's: it joins under its name again.
    server.wait_online(1).await;

    // Run again, the suite is fetched and compiled again, and the one not
    // used since makes room for it.
    run_one(&server, &parties).await;
    assert!(held(&cache, &hello).is_empty(), "{:?}", held(&cache, &hello));
    let again = held(&cache, &parties);
    assert!(again.iter().any(|(p, _)| p.extension().is_some_and(|e| e == "cwasm")), "{again:?}");
    let total: u64 = again.iter().map(|(_, len)| len).sum();
    // Within the bound, or over it with only the file stored last (kept).
    assert!(total <= hello_bytes || again.len() == 1, "{again:?}: over {bound} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_caches_are_fetched_or_compiled_again_and_never_run_wrong_code() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--no-local-machine"]);
    let cache = dir.path().join("cache-keeper");
    let mut runner: Proc = start_runner(dir.path(), &server, "keeper", &["tier=a"], None);
    server.wait_online(1).await;
    let parties = server.upload(ensemble_artifacts::BENCH_PARTIES, "parties").await;
    let hello = server.upload(ensemble_artifacts::HELLO_COMMAND, "hello").await;
    let first = run_both(&server, &parties, &hello).await;
    assert!(first.iter().any(|(role, _)| role == "hello") && first.iter().any(|(role, _)| role == "parties"));
    runner.kill();

    // Damage every cached file while the runner is down.
    let (suites, compiled) = (files(&cache, ".wasm"), files(&cache, ".cwasm"));
    assert_eq!((suites.len(), compiled.len()), (2, 2), "{suites:?} {compiled:?}");
    let (parties_wasm, hello_wasm) = (of(&suites, &parties), of(&suites, &hello));
    let (parties_cwasm, hello_cwasm) = (of(&compiled, &parties), of(&compiled, &hello));
    // The parties suite's file is cut short; the hello suite's is the parties suite's.
    let bytes = std::fs::read(&parties_wasm).unwrap();
    std::fs::write(&parties_wasm, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(&hello_wasm, &bytes).unwrap();
    // The hello suite's compiled file is the parties suite's (a valid
    // artifact of this very engine, of other code); the parties suite's one
    // cannot be read at all (a directory where the file was).
    std::fs::copy(&parties_cwasm, &hello_cwasm).unwrap();
    std::fs::remove_file(&parties_cwasm).unwrap();
    std::fs::create_dir(&parties_cwasm).unwrap();

    let runner = start_runner(dir.path(), &server, "keeper", &["tier=a"], None);
    server.wait_online(1).await;
    let again = run_both(&server, &parties, &hello).await;
    assert_eq!(again, first, "the same tests of the same suites ran");
    let log = runner.log();
    assert!(
        log.contains("the cached compiled suite is damaged (it is the artifact of another suite)"),
        "{log}"
    );
    assert!(log.contains("the cached compiled suite cannot be read"), "{log}");
    // Put right on disk, too.
    assert_eq!(
        std::fs::read(&parties_wasm).unwrap(),
        std::fs::read(ensemble_artifacts::BENCH_PARTIES).unwrap()
    );
    assert_eq!(
        std::fs::read(&hello_wasm).unwrap(),
        std::fs::read(ensemble_artifacts::HELLO_COMMAND).unwrap()
    );
    assert!(parties_cwasm.is_file());
    drop(runner);

    // A damaged identity file stops the runner, saying how to recover.
    let identity = files(&cache.join("identities"), "");
    assert_eq!(identity.len(), 1, "{identity:?}");
    std::fs::write(&identity[0], "not a secret\n").unwrap();
    let mut refused = start_runner(dir.path(), &server, "keeper", &["tier=a"], None);
    let status = tokio::task::spawn_blocking(move || {
        let status = refused.child.wait().unwrap();
        (status, refused.log())
    });
    let (status, log) = tokio::time::timeout(Duration::from_secs(60), status).await.unwrap().unwrap();
    assert!(!status.success());
    assert!(log.contains("identity file") && log.contains("is damaged"), "{log}");
    assert!(log.contains("/api/machines/keeper/forget"), "{log}");
    // The recovery it names works: the name is released, the file removed.
    server.client().forget_machine("keeper").await.unwrap();
    std::fs::remove_file(&identity[0]).unwrap();
    let _back = start_runner(dir.path(), &server, "keeper", &["tier=a"], None);
    server.wait_online(1).await;
    assert_eq!(run_both(&server, &parties, &hello).await, first);
}
