//! The runner-only build (the runner crate without its `coordinator`
//! feature) behaves as the full binary's `ensemble runner` does: it joins a
//! full coordinator, runs suites of every kind in its sandbox, meets other
//! machines at barriers, starts a service a plan puts on it and carries out
//! the faults another machine's suite asks of that service. Its command
//! line has the runner's commands only, and says so.

use ensemble_protocol::event::SyncOp;
use ensemble_protocol::fault::{FaultAction, FaultStep};
use ensemble_protocol::{EventKind, Outcome, Verdict};
use ensemble_tests::{
    build_runner_only, kv_fault_plan, kv_server, start_runner_of, start_runner_with, start_server,
};
use serde_json::json;

const TOKEN: &str = "runner-only-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_only_build_runs_suites_services_and_faults_beside_full_runners() {
    let lean = tokio::task::spawn_blocking(build_runner_only).await.unwrap();
    let kv = kv_server();
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--no-local-machine"]);
    // A config file shared with a coordinator: its [serve] table is not this
    // build's business; its [runner] table is.
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[serve]\nlisten = \"127.0.0.1:0\"\n\n[runner]\nlabel = [\"role=chaos\"]\nallow-net = [\"service:*\"]\n",
    )
    .unwrap();
    let allow = kv.display().to_string();
    let url = server.url.clone();
    let runners = [
        start_runner_of(
            &lean,
            dir.path(),
            &server,
            &url,
            "db",
            &["role=db"],
            None,
            &["--allow-exec", &allow],
        ),
        start_runner_of(
            &lean,
            dir.path(),
            &server,
            &url,
            "c1",
            &[],
            None,
            &["--config", config.to_str().unwrap()],
        ),
        start_runner_with(dir.path(), &server, "c2", &["role=reader"], None, &["--allow-net", "service:*"]),
    ];
    let logs = || runners.iter().map(|r| r.log()).collect::<Vec<_>>().join("\n---\n");
    server.wait_online(3).await;

    let upload = |path: &'static str, name: &'static str| {
        let server = &server;
        async move { format!("sha256:{}", server.upload(path, name).await) }
    };
    let client = upload(ensemble_artifacts::KV_TCP_CLIENT, "kv-tcp-client").await;
    let basics = upload(ensemble_artifacts::BASICS, "basics").await;
    let libtest = upload(ensemble_artifacts::LIBTEST_DEMO, "libtest-demo").await;
    // The faults plan (the kv service on db, its chaos client on c1, its
    // reader on c2), with an SDK suite on c1 and a libtest harness on db.
    let mut plan = kv_fault_plan(&client, &kv);
    let entries = plan["entries"].as_array_mut().unwrap();
    entries.push(json!({ "suite": basics, "profile": "chaos-box", "role": "basics",
                         "params": { "greeting": "hi", "expected": "hi" } }));
    entries.push(json!({ "suite": libtest, "profile": "db-box", "role": "libtest" }));
    let run = server.start_run(plan).await;
    let events = server.events(&run).await;
    let outcome = |role: &str, test: &str| {
        events.iter().find_map(|e| match &e.kind {
            EventKind::TestFinished { shard, test: t, outcome, .. } if shard.role == role && t == test => {
                Some((shard.machine.clone(), *outcome))
            }
            _ => None,
        })
    };
    let on = |machine: &str, o: Outcome| Some((machine.to_string(), o));
    // Suites of each kind on the runner-only machines, with their known
    // outcomes: the SDK's and libtest's, failures and skips included.
    for (role, test, machine, want) in [
        ("chaos", "survives_a_restart", "c1", Outcome::Passed),
        ("chaos", "holds_still_while_paused", "c1", Outcome::Passed),
        ("reader", "reads_back_after_a_restart", "c2", Outcome::Passed),
        ("reader", "faults_need_a_grant", "c2", Outcome::Passed),
        ("basics", "adds", "c1", Outcome::Passed),
        ("basics", "greeting_param", "c1", Outcome::Passed),
        ("basics", "fails_check_eq", "c1", Outcome::Failed),
        ("basics", "skips", "c1", Outcome::Skipped),
        ("libtest", "tests::adds", "db", Outcome::Passed),
        ("libtest", "tests::fails_assert_eq", "db", Outcome::Failed),
    ] {
        assert_eq!(outcome(role, test), on(machine, want), "{role}::{test}\n{}", logs());
    }
    // The failures are the suites' own: the run failed for them alone.
    let verdict = events.iter().find_map(|e| match &e.kind {
        EventKind::RunFinished { verdict, shard_errors, .. } => Some((*verdict, *shard_errors)),
        _ => None,
    });
    assert_eq!(verdict, Some((Verdict::Failed, 0)), "{}", logs());
    // The chaos client on a runner-only machine met the full runner's
    // reader at a barrier, and the runner-only db machine restarted and
    // paused its service when asked.
    let released = events.iter().any(|e| {
        matches!(&e.kind, EventKind::Sync { shard, op: SyncOp::BarrierReleased { .. }, .. } if shard.machine == "c1")
    });
    assert!(released, "the chaos client never passed a barrier\n{}", logs());
    for action in [FaultAction::Restart, FaultAction::Pause] {
        let done = events.iter().any(|e| {
            matches!(&e.kind, EventKind::Fault { shard, action: a, step: FaultStep::Done { .. }, .. }
                if shard.machine == "db" && *a == action)
        });
        assert!(done, "db did not carry out {action:?}\n{}", logs());
    }
}

#[test]
fn a_runner_only_build_has_the_runners_commands_and_names_what_it_lacks() {
    let lean = build_runner_only();
    let help = std::process::Command::new(&lean).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    let commands: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(commands, ["runner", "completions", "man", "help"], "{text}");
    let serve =
        std::process::Command::new(&lean).args(["serve", "--listen", "127.0.0.1:0"]).output().unwrap();
    assert_eq!(serve.status.code(), Some(ensemble_protocol::exit::BAD_INPUT));
    let said = String::from_utf8_lossy(&serve.stderr);
    assert!(
        said.contains("`ensemble serve` is not in this runner-only build")
            && said.contains("use the full ensemble binary"),
        "{said}"
    );
    let version = std::process::Command::new(&lean).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("ensemble {}", env!("CARGO_PKG_VERSION"))
    );
}
