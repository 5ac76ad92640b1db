//! Services: real programs under test, started by the runners of the
//! machines a plan picks, reached by sandboxed suites on other machines over
//! real TCP, stopped at the run's end, and never left behind, even when
//! their runner is SIGKILLed. The server under test is Redis from Debian
//! (`cargo xtask test` installs `redis-server`); the other services are plain shell
//! programs, so the rule is shown for any program the operator allows.

use std::path::Path;
use std::time::{Duration, Instant};

use ensemble_protocol::event::Outcome;
use ensemble_protocol::service::ServiceState;
use ensemble_protocol::{CancelReason, Event, EventKind, Verdict};
use ensemble_tests::{Server, ensemble, start_runner_with, start_server};
use serde_json::json;

const TOKEN: &str = "services-token";

/// The program's path, or a failure saying `cargo xtask test` installs it.
fn needs(program: &str) -> String {
    let found = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(program)).find(|p| p.is_file()));
    found
        .unwrap_or_else(|| {
            panic!(
                "{program} is not installed: `cargo xtask test` installs it (apt-get install redis-server)"
            )
        })
        .display()
        .to_string()
}

/// The service `name`'s events, in order, as (machine, state).
fn states<'a>(events: &'a [Event], name: &str) -> Vec<(&'a str, &'a ServiceState)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Service { shard, service, state } if service == name => {
                Some((shard.machine.as_str(), state))
            }
            _ => None,
        })
        .collect()
}

fn verdict(events: &[Event]) -> (Verdict, Option<CancelReason>) {
    events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::RunFinished { verdict, cancelled, .. } => Some((*verdict, cancelled.clone())),
            _ => None,
        })
        .expect("the run finished")
}

/// The pids of processes whose environment holds `SUT_MARK=mark`.
fn marked(mark: &str) -> Vec<u32> {
    let needle = format!("SUT_MARK={mark}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == needle.as_bytes()))
        })
        .collect()
}

/// A server without a machine of its own, and runners `db` (allowed to
/// start `exec`) and `c1`, `c2` (allowed to reach the run's services, and
/// `web.test`, a name they resolve to 127.0.0.1).
async fn setup(dir: &Path, exec: &str) -> (Server, Vec<ensemble_tests::Proc>) {
    let server = start_server(dir, &dir.join("data"), TOKEN, &["--no-local-machine"]);
    let mut runners =
        vec![start_runner_with(dir, &server, "db", &["role=db"], None, &["--allow-exec", exec])];
    for name in ["c1", "c2"] {
        runners.push(start_runner_with(
            dir,
            &server,
            name,
            &["role=client"],
            None,
            &["--allow-net", "service:*,web.test:*", "--add-host", "web.test=127.0.0.1"],
        ));
    }
    server.wait_online(3).await;
    (server, runners)
}

fn profiles() -> serde_json::Value {
    json!([
        { "name": "db-box", "labels": { "role": "db" } },
        { "name": "clients", "labels": { "role": "client" }, "count": 2 },
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_server_on_one_machine_is_tested_by_clients_on_two_others() {
    let redis = needs("redis-server");
    let dir = tempfile::tempdir().unwrap();
    let (server, _runners) = setup(dir.path(), "redis-server").await;
    let client = format!("sha256:{}", server.upload(ensemble_artifacts::RESP_CLIENT, "resp-client").await);
    let run = server
        .start_run(json!({
            "name": "redis",
            "profiles": profiles(),
            "services": [{
                "name": "db", "profile": "db-box",
                "command": ["redis-server", "--port", "{port}", "--bind", "{host}", "--dir", "{dir}",
                            "--save", "", "--appendonly", "no"],
                "ready": { "tcp": "{port}" },
                "env": { "SUT_MARK": "{run}" },
            }],
            "entries": [{
                "suite": client, "profile": "clients", "role": "client",
                "tests": ["ping", "set_then_get", "counts_together", "outside_is_refused"],
                "params": { "times": "25" },
                "capabilities": { "net": ["service:db"] },
            }],
        }))
        .await;
    let events = server.events(&run).await;
    assert_eq!(verdict(&events).0, Verdict::Passed, "{events:#?}");
    // Every client test passed on both client machines, over the network.
    let passed: Vec<(&str, &str)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::TestFinished { shard, test, outcome: Outcome::Passed, .. } => {
                Some((shard.machine.as_str(), test.as_str()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(passed.len(), 8, "{passed:?}");
    assert!(passed.iter().any(|(m, _)| *m == "c1") && passed.iter().any(|(m, _)| *m == "c2"));
    // Its life, on the db machine, on the run's timeline: started (the
    // program found on that machine's PATH), ready at an address, stopped
    // at the run's end on purpose.
    let life = states(&events, "db");
    assert!(life.iter().all(|(m, _)| *m == "db"), "{life:?}");
    assert!(
        matches!(life.first(), Some((_, ServiceState::Started { command, .. }))
            if Path::new(&command[0]) == std::fs::canonicalize(&redis).unwrap()),
        "{life:?}"
    );
    let address = life
        .iter()
        .find_map(|(_, s)| match s {
            ServiceState::Ready { address, .. } => Some(address.clone()),
            _ => None,
        })
        .expect("it became ready");
    assert_eq!(address.host, "127.0.0.1", "the runners joined over loopback, so that is its address");
    assert!(
        matches!(life.last(), Some((_, ServiceState::Exited { expected: true, .. }))),
        "it was stopped at the end: {life:?}"
    );
    // The server's own output is on the timeline, in the service's lane.
    assert!(events.iter().any(|e| matches!(&e.kind,
        EventKind::Log { test, message, .. } if test == "service:db" && message.contains("Ready to accept connections"))));
    // Ready came before any client test started.
    let ready_seq = events
        .iter()
        .find(|e| matches!(&e.kind, EventKind::Service { state: ServiceState::Ready { .. }, .. }))
        .unwrap()
        .seq;
    let first_test = events.iter().find(|e| matches!(e.kind, EventKind::TestStarted { .. })).unwrap().seq;
    assert!(ready_seq < first_test);
    // Nothing of it is left.
    assert_eq!(marked(&run), Vec::<u32>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_that_does_not_allow_the_program_refuses_the_plan_before_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _runners) = setup(dir.path(), "true").await;
    let client = format!("sha256:{}", server.upload(ensemble_artifacts::RESP_CLIENT, "resp-client").await);
    let plan = ensemble_protocol::Plan::from_json(
        &json!({
            "name": "not allowed",
            "profiles": profiles(),
            "services": [{ "name": "db", "profile": "db-box", "command": ["redis-server", "--port", "{port}"] }],
            "entries": [{ "suite": client, "profile": "clients", "capabilities": { "net": ["service:db"] } }],
        })
        .to_string(),
    )
    .unwrap();
    let err = server.client().start_plan(&plan).await.unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("machine db")
            && text.contains("redis-server")
            && text.contains("--allow-exec redis-server"),
        "{text}"
    );
    assert!(server.client().runs().await.unwrap().is_empty(), "nothing ran");

    // A grant that does not cover an address fails that connection, not the
    // runner: the suite sees the error, and the next run on it passes.
    let bare = server
        .start_run(json!({
            "name": "no grant",
            "profiles": [{ "name": "clients", "labels": { "role": "client" } }],
            "entries": [{ "suite": client, "profile": "clients", "tests": ["outside_is_refused"],
                          "params": { "outside": "127.0.0.1:1" } }],
        }))
        .await;
    assert_eq!(verdict(&server.events(&bare).await).0, Verdict::Passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_exits_mid_run_fails_the_run_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _runners) = setup(dir.path(), "sh").await;
    let client = format!("sha256:{}", server.upload(ensemble_artifacts::RESP_CLIENT, "resp-client").await);
    // Ready once it says so; it exits with status 3 once the file the test
    // creates (when both clients are inside their test) appears.
    let flag = dir.path().join("go");
    let script = format!(
        "echo up; while [ ! -e {flag} ]; do sleep 0.05; done; echo going away; exit 3",
        flag = flag.display()
    );
    let run = server
        .start_run(json!({
            "name": "crashing",
            "profiles": profiles(),
            "services": [{ "name": "db", "profile": "db-box", "command": ["sh", "-c", script], "ready": { "log": "up" } }],
            "entries": [{ "suite": client, "profile": "clients", "tests": ["hold"],
                          "params": { "hold_ms": "600000" }, "capabilities": { "net": ["service:db"] } }],
        }))
        .await;
    // Once both clients are inside their test, the service goes away.
    let mut running = 0;
    server
        .watch(&run, 1, |e| {
            if matches!(e.kind, EventKind::TestStarted { .. }) {
                running += 1;
            }
            running < 2
        })
        .await;
    std::fs::write(&flag, b"").unwrap();
    let events = server.events(&run).await;
    let (verdict, cancelled) = verdict(&events);
    assert_eq!(verdict, Verdict::Failed);
    match cancelled {
        Some(CancelReason::ServiceFailed { service, machine, message }) => {
            assert_eq!((service.as_str(), machine.as_str()), ("db", "db"));
            assert!(message.contains("exit code 3") && message.contains("going away"), "{message}");
        }
        other => panic!("the run was not failed by its service: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_process_of_a_service_outlives_its_runner_killed_mid_run() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut runners) = setup(dir.path(), "sh").await;
    let client = format!("sha256:{}", server.upload(ensemble_artifacts::RESP_CLIENT, "resp-client").await);
    // A service with a worker it forked: both must go.
    let run = server
        .start_run(json!({
            "name": "orphans",
            "profiles": profiles(),
            "services": [{ "name": "db", "profile": "db-box",
                           "command": ["sh", "-c", "sleep 600 & echo up; sleep 600"],
                           "ready": { "log": "up" }, "env": { "SUT_MARK": "{run}" } }],
            "entries": [{ "suite": client, "profile": "clients", "tests": ["hold"],
                          "params": { "hold_ms": "600000" }, "capabilities": { "net": ["service:db"] } }],
        }))
        .await;
    server
        .watch(&run, 1, |e| !matches!(&e.kind, EventKind::Service { state: ServiceState::Ready { .. }, .. }))
        .await;
    let before = marked(&run);
    assert!(before.len() >= 3, "the shell and its two sleeps run: {before:?}");
    // The service runs in its `{dir}`, which goes with it.
    let scratch = std::fs::read_link(format!("/proc/{}/cwd", before[0])).unwrap();
    assert!(scratch.file_name().unwrap().to_str().unwrap().starts_with("ensemble-service-"), "{scratch:?}");
    assert!(scratch.is_dir());
    runners[0].kill(); // SIGKILL: the runner gets no word in
    let killed = Instant::now();
    let mut left = before.clone();
    // Bounded wait for the processes to go (within 10 s on a quiet machine;
    // the bound is what a loaded one may take).
    while !left.is_empty() && killed.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
        left = marked(&run);
    }
    assert!(left.is_empty(), "left after {:?}: {left:?}", killed.elapsed());
    eprintln!("every process of the service was gone {:?} after its runner was killed", killed.elapsed());
    // Its keeper removes the directory once the group is gone.
    while scratch.exists() && killed.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!scratch.exists(), "the service's directory is left: {}", scratch.display());
}

/// A runner drained while its coordinator is out of reach ends the
/// services it runs once the coordinator must have counted it lost (the
/// run they served has failed there), and stops: it does not wait for a
/// run's end nobody can tell it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_drained_while_its_coordinator_is_gone_ends_its_services_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, mut runners) = setup(dir.path(), "sh").await;
    let client = format!("sha256:{}", server.upload(ensemble_artifacts::RESP_CLIENT, "resp-client").await);
    let run = server
        .start_run(json!({
            "name": "offline drain",
            "profiles": profiles(),
            "services": [{ "name": "db", "profile": "db-box",
                           "command": ["sh", "-c", "echo up; sleep 600"],
                           "ready": { "log": "up" }, "env": { "SUT_MARK": "{run}" } }],
            "entries": [{ "suite": client, "profile": "clients", "tests": ["hold"],
                          "params": { "hold_ms": "600000" }, "capabilities": { "net": ["service:db"] } }],
        }))
        .await;
    server
        .watch(&run, 1, |e| !matches!(&e.kind, EventKind::Service { state: ServiceState::Ready { .. }, .. }))
        .await;
    assert!(!marked(&run).is_empty(), "the service runs");
    server.proc.kill();
    let db = runners.remove(0);
    let pid = rustix::process::Pid::from_raw(db.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let drained = Instant::now();
    let mut db = db;
    // Bounded: 30 s of grace, and room for a loaded machine.
    let status = loop {
        if let Some(status) = db.child.try_wait().unwrap() {
            break status;
        }
        assert!(drained.elapsed() < Duration::from_secs(120), "still running: {}", db.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (code, log) = (status.code(), db.log());
    eprintln!("the drained runner stopped {:?} after SIGTERM", drained.elapsed());
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("ensemble runner: stopped (drained"), "{log}");
    assert!(marked(&run).is_empty(), "the service's processes are gone: {:?}", marked(&run));
}

/// A service that stops its own keeper (SIGSTOP to its parent) cannot
/// outlive the run: the runner kills the keeper once it does not end the
/// service in time, and every process carrying the instance's mark with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_stops_its_keeper_is_still_ended_with_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _runners) = setup(dir.path(), "sh").await;
    let client = format!("sha256:{}", server.upload(ensemble_artifacts::RESP_CLIENT, "resp-client").await);
    let run = server
        .start_run(json!({
            "name": "keeper stopped",
            "profiles": profiles(),
            "services": [{ "name": "db", "profile": "db-box",
                           "command": ["sh", "-c", "kill -STOP $PPID; sleep 600 & echo up; sleep 600"],
                           "ready": { "log": "up" }, "stop_timeout": "1s", "env": { "SUT_MARK": "{run}" } }],
            "entries": [{ "suite": client, "profile": "clients", "tests": ["outside_is_refused"] }],
        }))
        .await;
    let events = server.events(&run).await;
    assert_eq!(verdict(&events).0, Verdict::Passed, "{events:#?}");
    // The run ended once its service did: nothing of it is left.
    let ended = Instant::now();
    let mut left = marked(&run);
    while !left.is_empty() && ended.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
        left = marked(&run);
    }
    assert!(left.is_empty(), "left: {left:?}");
    assert!(
        matches!(states(&events, "db").last(), Some((_, ServiceState::Exited { expected: true, status, .. })) if status.contains("SIGKILL")),
        "{:?}",
        states(&events, "db")
    );
}

#[test]
fn a_standalone_run_starts_the_service_its_plan_names() {
    needs("redis-server");
    let dir = tempfile::tempdir().unwrap();
    let plan = ensemble_tests::repo_root().join("suites/plans/redis.toml");
    let out = ensemble(&["run", plan.to_str().unwrap()], dir.path());
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("PASSED: 8 test(s)"), "{text}");
    assert!(text.contains("service db ready at 127.0.0.1:"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suites_speak_http_to_a_service_over_wasi_http_within_their_grants() {
    // Debian's Python serves HTTP here: any program the operator allows.
    let python = "/usr/bin/python3";
    assert!(Path::new(python).exists(), "Debian's python3 is part of every Debian machine");
    let dir = tempfile::tempdir().unwrap();
    let (server, _runners) = setup(dir.path(), python).await;
    let probe = format!("sha256:{}", server.upload(ensemble_artifacts::HTTP_PROBE, "http-probe").await);
    let run = server
        .start_run(json!({
            "name": "http",
            "profiles": profiles(),
            "services": [{
                "name": "web", "profile": "db-box",
                "command": [python, "-m", "http.server", "{port}", "--bind", "{host}", "--directory", "{dir}"],
                "ready": { "http": "/" },
            }],
            "entries": [
                { "suite": probe, "profile": "clients", "role": "granted",
                  "params": { "expect": "Directory listing" }, "capabilities": { "net": ["service:web"] } },
                { "suite": probe, "profile": "clients", "role": "ungranted", "tests": ["get_ok"] },
                { "suite": probe, "profile": "clients", "role": "named",
                  "tests": ["get_by_name", "connect_by_name", "lookup_is_denied"],
                  "capabilities": { "net": ["web.test:*"] } },
                { "suite": probe, "profile": "clients", "role": "unnamed",
                  "tests": ["get_by_name", "connect_by_name"], "capabilities": { "net": ["service:web"] } },
            ],
        }))
        .await;
    let events = server.events(&run).await;
    let result = |role: &str, test: &str| {
        events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::TestFinished { shard, test: t, outcome, message, output, .. }
                    if shard.role == role && t == test =>
                {
                    Some((*outcome, format!("{} {output}", message.clone().unwrap_or_default())))
                }
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    for (outcome, text) in result("granted", "get_ok") {
        assert_eq!(outcome, Outcome::Passed, "{text}");
    }
    for (outcome, text) in result("granted", "outside_is_denied") {
        assert_eq!(outcome, Outcome::Passed, "{text}");
        assert!(text.contains("was denied: no net grant of this plan entry covers 127.0.0.1:9"), "{text}");
    }
    let ungranted = result("ungranted", "get_ok");
    assert_eq!(ungranted.len(), 2);
    for (outcome, text) in ungranted {
        assert_eq!(outcome, Outcome::Failed, "a request not granted fails: {text}");
        assert!(text.contains("denied"), "{text}");
    }
    // A granted host name: the guest's lookup and wasi:http resolve it to
    // what the runner resolved it to (`--add-host` here), and no other name
    // resolves at all.
    for test in ["get_by_name", "connect_by_name", "lookup_is_denied"] {
        let found = result("named", test);
        assert_eq!(found.len(), 2, "{test} ran on both clients");
        for (outcome, text) in found {
            assert_eq!(outcome, Outcome::Passed, "{test}: {text}");
        }
    }
    for (_, text) in result("named", "lookup_is_denied") {
        assert!(text.contains("the name lookup of \"not-granted.test\" was denied"), "{text}");
    }
    // Without the name's grant, neither reaches it (the service's address
    // is granted, the name is not).
    for test in ["get_by_name", "connect_by_name"] {
        for (outcome, text) in result("unnamed", test) {
            assert_eq!(outcome, Outcome::Failed, "{test}: {text}");
            assert!(text.contains("denied"), "{test}: {text}");
        }
    }
    // The refusals failed requests, not the runners: both clients are still
    // online and the service was stopped at the end.
    assert!(matches!(states(&events, "web").last(), Some((_, ServiceState::Exited { expected: true, .. }))));
    assert_eq!(server.wait_online(3).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_that_starts_ends_what_its_previous_life_left_running() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut runners) = setup(dir.path(), "sh").await;
    let client = format!("sha256:{}", server.upload(ensemble_artifacts::RESP_CLIENT, "resp-client").await);
    let run = server
        .start_run(json!({
            "name": "leftovers",
            "profiles": profiles(),
            "services": [{ "name": "db", "profile": "db-box",
                           "command": ["sh", "-c", "sleep 600 & echo up; sleep 600"],
                           "ready": { "log": "up" }, "env": { "SUT_MARK": "{run}" } }],
            "entries": [{ "suite": client, "profile": "clients", "tests": ["hold"],
                          "params": { "hold_ms": "600000" }, "capabilities": { "net": ["service:db"] } }],
        }))
        .await;
    server
        .watch(&run, 1, |e| !matches!(&e.kind, EventKind::Service { state: ServiceState::Ready { .. }, .. }))
        .await;
    // The keeper dies first (as if the OOM killer took it), then the
    // runner: nothing is left to end the service.
    let keepers: Vec<u32> = marked(&run)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("__keep-service"))
        })
        .collect();
    assert_eq!(keepers.len(), 1, "{keepers:?}");
    let scratch = std::fs::read_link(format!("/proc/{}/cwd", keepers[0])).unwrap();
    assert!(scratch.file_name().unwrap().to_str().unwrap().starts_with("ensemble-service-"), "{scratch:?}");
    let keeper = rustix::process::Pid::from_raw(keepers[0] as i32).unwrap();
    rustix::process::kill_process(keeper, rustix::process::Signal::KILL).unwrap();
    runners[0].kill();
    let left = marked(&run);
    assert!(left.len() >= 2, "the service outlived its keeper and runner: {left:?}");
    // The runner's next life, same name and cache, ends them as it starts.
    let next = start_runner_with(dir.path(), &server, "db", &["role=db"], None, &["--allow-exec", "sh"]);
    let started = Instant::now();
    while !marked(&run).is_empty() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(marked(&run), Vec::<u32>::new(), "runner log:\n{}", next.log());
    // And removes the service's `{dir}`, which nobody was left to remove.
    while scratch.exists() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!scratch.exists(), "{} is left; runner log:\n{}", scratch.display(), next.log());
}

#[test]
fn a_python_suite_finds_the_runs_services() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("finds");
    let out = ensemble(&["suite", "new", project.to_str().unwrap(), "--lang", "python"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(
        project.join("finds.py"),
        r#"from ensemble_suite import Tests, service, service_port, test, fail

__all__ = ["Tests"]


@test
def finds_db():
    db = service("db")
    assert db.host == "127.0.0.1" and db.port > 0, repr(db)
    assert service_port("db", "admin") > 0
    assert db.addr() == f"127.0.0.1:{db.port}"


@test
def a_missing_service_is_named():
    try:
        service("cache")
    except Exception as e:
        assert "no service 'cache'" in str(e), str(e)
    else:
        fail("service('cache') did not fail")
"#,
    )
    .unwrap();
    std::fs::write(
        project.join("plan.toml"),
        r#"name = "finds"
[[profiles]]
name = "any"
[[services]]
name = "db"
profile = "any"
command = ["sh", "-c", "echo up {port} {port.admin}; exec sleep 600"]
ready = { log = "up" }
[[entries]]
suite = "."
profile = "any"
"#,
    )
    .unwrap();
    let out = ensemble(&["run", project.join("plan.toml").to_str().unwrap()], dir.path());
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("PASSED: 2 test(s)"), "{text}");
}
