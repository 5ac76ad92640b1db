//! Distributed runs with real processes on loopback: `ensemble serve`, runners
//! joining it over WebSockets, and the CLI submitting plans.

use std::collections::BTreeMap;

use ensemble_protocol::api::{ErrorKind, MachineState, RunRequest, RunState};
use ensemble_protocol::event::SyncOp;
use ensemble_protocol::{CancelReason, Event, EventKind, Outcome, Verdict};
use ensemble_tests::{Proc, Server, ensemble_async, start_runner, start_runner_with, start_server};
use serde_json::json;

const TOKEN: &str = "test-token";

fn events_of(path: &std::path::Path) -> Vec<Event> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A distributed plan over profiles `a` (label tier=a) and `b` (tier=b).
fn tier_plan(name: &str, timeout: &str, entries: serde_json::Value) -> serde_json::Value {
    json!({
        "name": name,
        "type": "distributed",
        "settings": { "test_timeout": timeout, "barrier_timeout": timeout },
        "profiles": [
            { "name": "a", "labels": { "tier": "a" } },
            { "name": "b", "labels": { "tier": "b" } }
        ],
        "entries": entries
    })
}

/// `basics` twice: role `sleeper` on tier=a (its `naps` test sleeps `nap_ms`)
/// and role `other` on tier=b.
fn two_part_plan(sha: &str, nap_ms: u64) -> serde_json::Value {
    tier_plan(
        "two-part",
        "60s",
        json!([
            { "suite": format!("sha256:{sha}"), "profile": "a", "role": "sleeper",
              "params": { "greeting": "hello", "nap_ms": nap_ms.to_string() } },
            { "suite": format!("sha256:{sha}"), "profile": "b", "role": "other", "params": { "greeting": "hello" } }
        ]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_distributed_demo_runs_its_roles_on_two_machines() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    let _a = start_runner(dir.path(), &server, "box-server", &["tier=server"], None);
    let _b = start_runner(dir.path(), &server, "box-client", &["tier=client"], None);
    let machines = server.wait_online(3).await;
    for m in &machines {
        assert!(m.info.facts.cpus >= 1, "{m:?}");
        assert!(m.info.labels.contains_key("os") && m.info.labels.contains_key("arch"), "{m:?}");
    }

    let json_out = dir.path().join("out.jsonl");
    let out = ensemble_async(
        &[
            "run",
            "suites/plans/kv-sync.toml",
            "--server",
            &server.url,
            "--token",
            TOKEN,
            "--json",
            json_out.to_str().unwrap(),
        ],
        &dir.path().join("cache-cli"),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}\nserver log:\n{}", text(&out), server.proc.log());
    let events = events_of(&json_out);
    let mut machine_of = BTreeMap::new();
    for e in &events {
        if let EventKind::TestFinished { shard, outcome, .. } = &e.kind {
            assert_eq!(*outcome, Outcome::Passed, "{e:?}");
            machine_of.insert(shard.role.clone(), shard.machine.clone());
            assert!(e.machine_at_us.is_some(), "machine events carry the machine's own time too");
        }
    }
    assert_eq!(machine_of["server"], "box-server");
    assert_eq!(machine_of["client"], "box-client");
    assert!(events.iter().any(|e| matches!(&e.kind, EventKind::Sync { op: SyncOp::BarrierReleased { state, .. }, .. } if state == "server-ready")));
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "one run-wide sequence without gaps");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--no-local-machine"]);
    let mut bad = start_runner(dir.path(), &server, "intruder", &[], Some("not-the-token"));
    let status = bad.child.wait().unwrap();
    assert_eq!(status.code(), Some(2), "a refused runner exits 2: {}", bad.log());
    assert!(
        bad.log().contains("refused this machine: wrong token (pass it with the runner's --token"),
        "{}",
        bad.log()
    );
    let refused = server.client().with_token(Some("nope".into())).machines().await.unwrap_err();
    assert_eq!(refused.status(), Some(401));
    assert_eq!(refused.kind(), Some(ErrorKind::Unauthorized));
    assert!(refused.to_string().contains("wrong token"), "{refused}");
    let machines = server.client().machines().await.unwrap();
    assert!(machines.is_empty(), "the intruder never registered: {machines:?}");
    assert!(server.proc.log().contains("rejected a request with a wrong token"), "{}", server.proc.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsatisfiable_plans_are_refused_with_an_explanation() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--no-local-machine"]);
    let _a = start_runner(dir.path(), &server, "only-server", &["tier=server"], None);
    server.wait_online(1).await;
    let out = ensemble_async(
        &["run", "suites/plans/kv-sync.toml", "--server", &server.url, "--token", TOKEN],
        &dir.path().join("cache-cli"),
    )
    .await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(
        shown.contains("profile \"client-box\" needs 1 machine(s) with tier=client but 0 match"),
        "{shown}"
    );
    assert!(shown.contains("machines online: only-server (arch="), "{shown}");
    assert!(shown.contains("tier=server)"), "{shown}");
}

/// A server (without a machine of its own) and two runners, box-a (tier=a)
/// and box-b (tier=b), both online.
async fn two_tier_cluster(server_args: &[&str]) -> (tempfile::TempDir, Server, Proc, Proc) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--no-local-machine"];
    args.extend_from_slice(server_args);
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &args);
    let a = start_runner(dir.path(), &server, "box-a", &["tier=a"], None);
    let b = start_runner(dir.path(), &server, "box-b", &["tier=b"], None);
    server.wait_online(2).await;
    (dir, server, a, b)
}

/// Starts a two-part run and returns (run id, the sleeper's machine name).
async fn start_two_part(server: &Server, nap_ms: u64) -> String {
    let sha = server.upload(ensemble_artifacts::BASICS, "basics").await;
    server.start_run(two_part_plan(&sha, nap_ms)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runner_is_lost_its_partners_waits_fail_at_once_and_the_run_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(
        dir.path(),
        &dir.path().join("data"),
        TOKEN,
        &["--no-local-machine", "--heartbeat-timeout", "10s"],
    );
    let mut sleeper = start_runner(dir.path(), &server, "box-a", &["tier=a"], None);
    let _other = start_runner(dir.path(), &server, "box-b", &["tier=b"], None);
    server.wait_online(2).await;
    let basics = server.upload(ensemble_artifacts::BASICS, "basics").await;
    let parties = server.upload(ensemble_artifacts::BENCH_PARTIES, "bench-parties").await;
    // `waiter` waits (up to 10 minutes) at a barrier that `sleeper` would join
    // after its long nap; box-a dies first.
    let plan = tier_plan(
        "lost-party",
        "10m",
        json!([
            { "suite": format!("sha256:{basics}"), "profile": "a", "role": "sleeper",
              "params": { "greeting": "hello", "nap_ms": "600000" } },
            { "suite": format!("sha256:{parties}"), "profile": "b", "role": "waiter",
              "params": { "parties": "2", "rounds": "1" } }
        ]),
    );
    let run = server.start_run(plan).await;
    let started = std::time::Instant::now();
    let mut events = Vec::new();
    server
        .watch(&run, 1, |e| {
            events.push(e.clone());
            // Kill box-a with SIGKILL the moment its long test starts.
            if let EventKind::TestStarted { test, shard, .. } = &e.kind
                && test == "naps"
                && shard.role == "sleeper"
            {
                sleeper.kill();
            }
            true
        })
        .await;
    assert!(started.elapsed() < std::time::Duration::from_secs(120), "nobody waited out a timeout");
    let finished = |role: &str, test: &str| {
        events.iter().find_map(|e| match &e.kind {
            EventKind::TestFinished { shard, test: t, outcome, message, .. }
                if shard.role == role && t == test =>
            {
                Some((*outcome, message.clone().unwrap_or_default(), shard.machine.clone()))
            }
            _ => None,
        })
    };
    let (outcome, message, machine) = finished("sleeper", "naps").expect("the lost test is reported");
    assert_eq!((outcome, machine.as_str()), (Outcome::Lost, "box-a"));
    assert!(message.contains("machine box-a was lost"), "{message}");
    let (outcome, message, _) = finished("waiter", "barriers").expect("the waiter's test ends");
    assert_eq!(outcome, Outcome::Failed, "{message}");
    assert!(
        message.contains("role sleeper on machine box-a was lost"),
        "the failure names the lost party: {message}"
    );
    let EventKind::RunFinished { summary, .. } = &events.last().unwrap().kind else {
        panic!("no run-finished")
    };
    // Every test box-a was running when it died is lost (basics' tests run
    // at once: naps, and those beside it), and only those.
    let lost: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::TestFinished { shard, test, outcome: Outcome::Lost, .. } => {
                Some((shard.machine.as_str(), test.as_str()))
            }
            _ => None,
        })
        .collect();
    assert!(lost.iter().all(|(m, _)| *m == "box-a"), "{lost:?}");
    assert_eq!(summary.lost as usize, lost.len());
    assert_eq!(server.client().run(&run).await.unwrap().state, RunState::Failed);
    let machines = server.client().machines().await.unwrap();
    let a = machines.iter().find(|m| m.info.name == "box-a").unwrap();
    assert_eq!(a.state, MachineState::Offline);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_can_be_cancelled_through_the_api() {
    let (_dir, server, _a, _b) = two_tier_cluster(&[]).await;
    let run = start_two_part(&server, 600_000).await;
    let mut last = None;
    let srv = &server;
    let mut cancel = None;
    server
        .watch(&run, 1, |e| {
            if let EventKind::TestStarted { test, .. } = &e.kind
                && test == "naps"
                && cancel.is_none()
            {
                let (client, run) = (srv.client(), run.clone());
                cancel = Some(tokio::spawn(async move { client.cancel_run(&run).await }));
            }
            last = Some(e.kind.clone());
            true
        })
        .await;
    assert_eq!(cancel.unwrap().await.unwrap().unwrap().cancelling, run);
    let Some(EventKind::RunFinished { cancelled, verdict, .. }) = last else { panic!("{last:?}") };
    assert_eq!(cancelled, Some(CancelReason::user()));
    assert_eq!(verdict, Verdict::Cancelled);
    assert_eq!(server.client().run(&run).await.unwrap().state, RunState::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_resumes_without_missing_or_duplicated_events() {
    let (_dir, server, a, _b) = two_tier_cluster(&[]).await;
    let run = start_two_part(&server, 15_000).await;
    let mut kicked = false;
    let mut events = Vec::new();
    let srv = &server;
    let mut kick = None;
    server
        .watch(&run, 1, |e| {
            events.push(e.clone());
            if let EventKind::TestStarted { test, shard, .. } = &e.kind
                && test == "naps"
                && shard.role == "sleeper"
                && !kicked
            {
                kicked = true;
                // Drop box-a's WebSocket while its test runs; it must reconnect and resend.
                let client = srv.client();
                kick = Some(tokio::spawn(async move { client.disconnect_machine("box-a").await }));
            }
            true
        })
        .await;
    let kicked_ok = kick.expect("the long test started").await.unwrap().unwrap();
    assert_eq!(kicked_ok.disconnected, "box-a");
    assert_eq!(a.log().matches("box-a joined").count(), 2, "box-a reconnected once:\n{}", a.log());
    let mut finished: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "no gaps and no duplicates in the run's sequence");
        if let EventKind::TestFinished { shard, test, outcome, .. } = &e.kind {
            assert_ne!(*outcome, Outcome::Lost, "{e:?}");
            *finished.entry((shard.role.clone(), test.clone())).or_default() += 1;
        }
    }
    assert_eq!(finished.len(), 22, "every test of both parts reported: {finished:?}");
    assert!(finished.values().all(|&n| n == 1), "each test exactly once: {finished:?}");
    // The replay of a finished run is the same stream.
    let replay = server.events(&run).await;
    assert_eq!(replay, events);
    let mut tail = Vec::new();
    server
        .watch(&run, 10, |e| {
            tail.push(e.seq);
            true
        })
        .await;
    assert_eq!(tail.first(), Some(&10), "?from= replays from that sequence number");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_keeps_its_plans_suites_and_finished_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plan_id;
    let run;
    {
        let server = start_server(dir.path(), &data, TOKEN, &[]);
        server.wait_online(1).await;
        let sha = server.upload(ensemble_artifacts::HELLO_COMMAND, "hello").await;
        let toml = format!(
            "name = \"kept\"\ntype = \"cross-platform\"\n[[profiles]]\nname = \"any\"\n[[entries]]\nsuite = \"sha256:{sha}\"\n"
        );
        plan_id = server.client().import_plan(&toml).await.unwrap().id;
        let req = RunRequest { plan_id: Some(plan_id.clone()), ..RunRequest::default() };
        run = server.client().start_run(&req).await.unwrap().id;
        let mut last = None;
        server
            .watch(&run, 1, |e| {
                last = Some(e.kind.clone());
                true
            })
            .await;
        assert!(matches!(last, Some(EventKind::RunFinished { .. })));
        // Dropping the server kills it (SIGKILL): no chance to tidy up.
    }
    let server = start_server(dir.path(), &data, TOKEN, &[]);
    let client = server.client();
    let plans = client.plans().await.unwrap();
    assert_eq!(plans[0].id, plan_id);
    assert_eq!(plans[0].plan.name, "kept");
    assert!(client.plan_toml(&plan_id).await.unwrap().contains("name = \"kept\""));
    let got = client.run(&run).await.unwrap();
    assert_eq!(got.state, RunState::Passed, "{got:?}");
    // The list gives summaries that the store computes: they agree with the
    // suite's full metadata, and carry no test list.
    let listed = client.suites().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0], client.suite(&listed[0].sha256).await.unwrap().summary());
    assert!(listed[0].test_count > 0);
    let raw = client.request(reqwest::Method::GET, "/api/suites").send().await.unwrap().text().await.unwrap();
    assert!(!raw.contains("\"tests\""), "{raw}");
    let mut replayed = 0;
    server
        .watch(&run, 1, |_| {
            replayed += 1;
            true
        })
        .await;
    assert!(replayed >= 4, "the finished run's events are still there ({replayed})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_gets_the_same_counts_verdict_and_exit_code_standalone_and_through_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    server.wait_online(1).await;
    let cache = dir.path().join("cache-cli");
    let standalone_json = dir.path().join("standalone.jsonl");
    let standalone = ensemble_async(
        &["run", "suites/plans/basics.toml", "--json", standalone_json.to_str().unwrap()],
        &cache,
    )
    .await;
    let served_json = dir.path().join("served.jsonl");
    let served = ensemble_async(
        &[
            "run",
            "suites/plans/basics.toml",
            "--server",
            &server.url,
            "--token",
            TOKEN,
            "--json",
            served_json.to_str().unwrap(),
        ],
        &cache,
    )
    .await;
    // basics fails on purpose: exit 1 both ways.
    assert_eq!(standalone.status.code(), Some(1), "{}", text(&standalone));
    assert_eq!(served.status.code(), standalone.status.code(), "{}", text(&served));
    let end = |path: &std::path::Path| match events_of(path).pop().map(|e| e.kind) {
        Some(EventKind::RunFinished { summary, shard_errors, cancelled, verdict, .. }) => {
            (summary, shard_errors, cancelled, verdict)
        }
        other => panic!("the last event is {other:?}"),
    };
    let (a, b) = (end(&standalone_json), end(&served_json));
    assert_eq!(a, b, "the same plan, the same result");
    assert_eq!(a.3, Verdict::Failed);
    assert!(a.0.failed >= 1 && a.0.passed >= 1, "{a:?}");
    for out in [&standalone, &served] {
        assert!(String::from_utf8_lossy(&out.stdout).contains("FAILED:"), "{}", text(out));
    }
}

/// Sends SIGTERM to `proc` and waits (up to a minute) for it to exit.
async fn terminate(proc: &mut Proc) -> std::process::ExitStatus {
    let pid = rustix::process::Pid::from_raw(proc.child.id() as i32).expect("a child pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let mut child = std::mem::replace(&mut proc.child, std::process::Command::new("true").spawn().unwrap());
    let waited = tokio::task::spawn_blocking(move || child.wait());
    tokio::time::timeout(std::time::Duration::from_secs(60), waited)
        .await
        .expect("the process stops within a minute of SIGTERM")
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_serve_and_runners_cleanly_and_the_run_ends_cancelled() {
    let (dir, mut server, mut a, mut b) = two_tier_cluster(&[]).await;
    let run = start_two_part(&server, 600_000).await;
    // Stop the server while the sleeper's long test runs.
    server
        .watch(&run, 1, |e| {
            !matches!(&e.kind, EventKind::TestStarted { test, shard, .. } if test == "naps" && shard.role == "sleeper")
        })
        .await;
    let status = terminate(&mut server.proc).await;
    assert_eq!(status.code(), Some(0), "{}", server.proc.log());
    assert!(server.proc.log().contains("ensemble serve: stopped"), "{}", server.proc.log());
    for runner in [&mut a, &mut b] {
        let status = terminate(runner).await;
        assert_eq!(status.code(), Some(0), "{}", runner.log());
        assert!(runner.log().contains("ensemble runner: stopped"), "{}", runner.log());
    }
    // The run ended before the server did: cancelled for the shutdown, and
    // stored so, with its last event.
    let again = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--no-local-machine"]);
    let meta = again.client().run(&run).await.unwrap();
    assert_eq!(meta.state, RunState::Cancelled, "{meta:?}");
    let mut last = None;
    again
        .watch(&run, 1, |e| {
            last = Some(e.kind.clone());
            true
        })
        .await;
    let Some(EventKind::RunFinished { cancelled, verdict, .. }) = last else { panic!("{last:?}") };
    assert_eq!(cancelled, Some(CancelReason::ShuttingDown));
    assert_eq!(verdict, Verdict::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_bound_what_plans_grant_and_suites_never_reach_the_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--no-local-machine"]);
    let _closed = start_runner(dir.path(), &server, "closed", &["tier=a"], None);
    let _open = start_runner_with(
        dir.path(),
        &server,
        "open",
        &["tier=b"],
        None,
        &["--allow-env", "HOME", "--allow-net", "127.0.0.1:*", "--slots", "3"],
    );
    server.wait_online(2).await;
    let hostile = server.upload(ensemble_artifacts::HOSTILE, "hostile").await;
    // An honest service on loopback that suites may reach, and the
    // coordinator, which they may not, whatever the grant says.
    let honest = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let honest_addr = honest.local_addr().unwrap().to_string();
    let coordinator_addr = server.url.trim_start_matches("http://").to_string();
    let entry = |role: &str, profile: &str, addr: &str| {
        // Only the probes: the suite's floods and loops would share the
        // machine's cores with them.
        json!({ "suite": format!("sha256:{hostile}"), "profile": profile, "role": role,
                "tests": ["read_env", "connect"], "params": { "addr": addr, "name": "HOME" },
                "capabilities": { "net": ["127.0.0.1:*"], "env": ["HOME"] } })
    };
    let plan = tier_plan(
        "grants",
        "5m",
        json!([
            entry("on-closed", "a", &honest_addr),
            entry("to-honest", "b", &honest_addr),
            entry("to-coordinator", "b", &coordinator_addr)
        ]),
    );
    let run = server.start_run(plan).await;
    let events = server.events(&run).await;
    let shard_error = |role: &str| {
        events.iter().find_map(|e| match &e.kind {
            EventKind::ShardFinished { shard, error, .. } if shard.role == role => Some(error.clone()),
            _ => None,
        })
    };
    let outcome = |role: &str, test: &str| {
        events.iter().find_map(|e| match &e.kind {
            EventKind::TestFinished { shard, test: t, outcome, message, .. }
                if shard.role == role && t == test =>
            {
                Some((*outcome, message.clone().unwrap_or_default()))
            }
            _ => None,
        })
    };
    let refused = shard_error("on-closed").flatten().expect("the closed machine refuses the grants");
    assert!(refused.contains("`ensemble runner --allow-env HOME`"), "{refused}");
    assert_eq!(shard_error("to-honest"), Some(None));
    assert_eq!(outcome("to-honest", "read_env").map(|o| o.0), Some(Outcome::Passed));
    assert_eq!(outcome("to-honest", "connect").map(|o| o.0), Some(Outcome::Passed), "{events:?}");
    let (blocked, why) = outcome("to-coordinator", "connect").expect("the probe ran");
    assert_eq!(blocked, Outcome::Failed, "the coordinator is out of reach: {why}");
    assert!(why.contains(&format!("connecting to {coordinator_addr}")), "{why}");
    drop(honest);
}
