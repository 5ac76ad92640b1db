//! A store that cannot write (a full disk; here its quota,
//! `--store-max-size`, which fails SQLite's writes the same way): the
//! coordinator stays up, the run that cannot record fails naming the store,
//! new runs and uploads are refused (507), `/readyz` is unready naming the
//! store — and once room is made (`ensemble gc` removes old runs) it works
//! again without a restart, with nothing stored damaged.

use std::time::Duration;

use ensemble_protocol::api::{ErrorKind, RunState};
use ensemble_protocol::event::EventKind;
use ensemble_protocol::{CancelReason, Verdict};
use ensemble_tests::{Server, ensemble_async, start_runner, start_server};
use serde_json::json;

const TOKEN: &str = "disk-token";

/// `/readyz`'s status and its `store` check.
async fn readiness(server: &Server) -> (u16, String) {
    let answer =
        server.client().request(reqwest::Method::GET, "/readyz").send().await.expect("/readyz answers");
    let status = answer.status().as_u16();
    let body: serde_json::Value = answer.json().await.expect("readiness JSON");
    (status, body["checks"]["store"].as_str().unwrap_or_default().to_string())
}

/// Waits (bounded) until `/readyz` answers `status`.
async fn ready_becomes(server: &Server, status: u16) -> String {
    for _ in 0..600 {
        let (now, store) = readiness(server).await;
        if now == status {
            return store;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = server.proc.log();
    panic!(
        "/readyz never answered {status}; the server's log ends:\n{}",
        &log[log.len().saturating_sub(4000)..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_fails_what_cannot_record_refuses_new_work_and_recovers_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server =
        start_server(dir.path(), &data, TOKEN, &["--no-local-machine", "--store-max-size", "1MiB"]);
    let _runner = start_runner(dir.path(), &server, "disk", &["tier=a"], None);
    server.wait_online(1).await;
    let parties = format!("sha256:{}", server.upload(ensemble_artifacts::BENCH_PARTIES, "parties").await);
    let plan = |events: u64| {
        json!({
            "name": "chatty",
            "profiles": [{ "name": "a", "labels": { "tier": "a" } }],
            "entries": [{ "suite": parties, "profile": "a", "tests": ["events"],
                          "params": { "events": events.to_string() } }]
        })
    };
    // A run that fits, and will be removed to make room.
    let fits = server.start_run(plan(1_500)).await;
    server.events(&fits).await;
    assert_eq!(server.client().run(&fits).await.unwrap().state, RunState::Passed);
    assert_eq!(readiness(&server).await.0, 200);
    // One that does not.
    let overflows = server.start_run(plan(50_000)).await;
    let why = ready_becomes(&server, 503).await;
    assert!(why.contains("the store takes no writes") && why.contains("full"), "{why}");
    // New work is refused, naming the store; the coordinator stays up.
    let client = server.client();
    let refused =
        client.start_plan(&ensemble_protocol::Plan::from_json(&plan(10).to_string()).unwrap()).await;
    let e = refused.expect_err("a new run is refused");
    assert_eq!((e.status(), e.kind()), (Some(507), Some(ErrorKind::StoreUnavailable)), "{e}");
    assert!(e.to_string().contains("store cannot take writes"), "{e}");
    let basics = std::fs::read(ensemble_artifacts::BASICS).unwrap();
    let e = client.upload_suite("basics", basics).await.expect_err("an upload is refused");
    assert_eq!(e.status(), Some(507), "{e}");
    assert!(server.proc.child.try_wait().unwrap().is_none(), "the coordinator is up");
    // Room is made: the finished run goes.
    let gc =
        ensemble_async(&["gc", "--data-dir", data.to_str().unwrap(), "--max-runs", "0"], dir.path()).await;
    assert!(gc.status.success(), "{}", String::from_utf8_lossy(&gc.stderr));
    ready_becomes(&server, 200).await;
    // The run that could not record ended failed, saying why.
    let events = tokio::time::timeout(Duration::from_secs(300), server.events(&overflows)).await.unwrap();
    let Some(EventKind::RunFinished {
        cancelled: Some(CancelReason::StoreFailed { message }), verdict, ..
    }) = events.last().map(|e| &e.kind)
    else {
        panic!("{:?}", events.last())
    };
    assert_eq!(*verdict, Verdict::Failed);
    assert!(message.contains("full"), "{message}");
    assert_eq!(client.run(&overflows).await.unwrap().state, RunState::Failed);
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>(), "stored in order, without holes");
    // New work runs again, without a restart.
    let again = server.start_run(plan(100)).await;
    server.events(&again).await;
    assert_eq!(client.run(&again).await.unwrap().state, RunState::Passed);
    // Nothing stored was damaged.
    server.proc.kill();
    let db = rusqlite::Connection::open(data.join("ensemble.db")).unwrap();
    let check: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let kept: i64 = db.query_row("SELECT count(*) FROM runs", [], |r| r.get(0)).unwrap();
    assert_eq!(kept, 2, "the failed run and the last one are kept");
    drop(server);
}
