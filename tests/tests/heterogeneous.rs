//! One plan over three kinds of machine: the same suite artifacts on an
//! x86_64 Linux runner (this machine's), an aarch64 Linux runner (built for
//! aarch64, run by qemu-user) and a Windows runner (built for Windows, run
//! by Wine), all real `ensemble runner` processes joining one coordinator
//! over the real protocol. Every suite that runs on every profile must end
//! each test the same way everywhere, and the coordinating kv pair meets
//! across CPU kinds: its server on aarch64, its client on x86_64.
//!
//! The runners for the other machines are built by this test (the `cross`
//! profile, one cargo run; `cargo xtask test` builds them beforehand, so here it is a
//! quick check), with the tools `cargo xtask test` installs from Debian.

use std::collections::BTreeMap;

use ensemble_protocol::event::SyncOp;
use ensemble_protocol::{EventKind, Outcome};
use ensemble_tests::browser::Browser;
use ensemble_tests::{
    AARCH64, WINDOWS, build_foreign_runners, start_foreign_runner, start_foreign_runner_with, start_runner,
    start_runner_with, start_server,
};
use serde_json::json;

const TOKEN: &str = "heterogeneous-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_plan_ends_every_test_alike_on_x86_64_aarch64_and_windows() {
    let bins = tokio::task::spawn_blocking(|| build_foreign_runners(&[&AARCH64, &WINDOWS])).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--no-local-machine"]);
    let x86 = start_runner(dir.path(), &server, "x86-box", &[], None);
    let arm = start_foreign_runner(dir.path(), &server, "arm-box", &AARCH64, &bins[0], &[]);
    let win = start_foreign_runner(dir.path(), &server, "win-box", &WINDOWS, &bins[1], &[]);
    let logs = || format!("x86:\n{}\narm:\n{}\nwindows:\n{}", x86.log(), arm.log(), win.log());

    // Each machine says what it is from its own facts: no label was given.
    let machines = server.client().wait_machines(3, std::time::Duration::from_secs(300)).await.unwrap();
    let facts: BTreeMap<&str, (&str, &str)> = machines
        .iter()
        .map(|m| (m.info.name.as_str(), (m.info.facts.os.as_str(), m.info.facts.arch.as_str())))
        .collect();
    assert_eq!(
        facts,
        [
            ("arm-box", ("linux", "aarch64")),
            ("win-box", ("windows", "x86_64")),
            ("x86-box", ("linux", "x86_64"))
        ]
        .into(),
        "{}",
        logs()
    );

    let mut suites = BTreeMap::new();
    for (name, path) in [
        ("basics", ensemble_artifacts::BASICS),
        ("libtest-demo", ensemble_artifacts::LIBTEST_DEMO),
        ("kv-server", ensemble_artifacts::KV_SERVER),
        ("kv-client", ensemble_artifacts::KV_CLIENT),
    ] {
        suites.insert(name, format!("sha256:{}", server.upload(path, name).await));
    }
    // Profiles pick machines by the os and arch labels every machine gets
    // from its facts.
    let run = server
        .start_run(json!({
            "name": "everywhere",
            "type": "cross-platform",
            "settings": { "test_timeout": "120s", "barrier_timeout": "120s" },
            "profiles": [
                { "name": "linux-x86_64", "labels": { "os": "linux", "arch": "x86_64" } },
                { "name": "linux-aarch64", "labels": { "os": "linux", "arch": "aarch64" } },
                { "name": "windows-x86_64", "labels": { "os": "windows", "arch": "x86_64" } },
            ],
            "entries": [
                { "suite": suites["basics"], "role": "basics", "params": { "greeting": "hi", "expected": "hi" } },
                { "suite": suites["libtest-demo"], "role": "libtest" },
                // The emulated machine compiles its suites slowly: the
                // client waits as long as the plan lets it.
                { "suite": suites["kv-server"], "role": "server", "profile": "linux-aarch64",
                  "params": { "keys": 100, "clients": 1, "timeout_ms": 120000 } },
                { "suite": suites["kv-client"], "role": "client", "profile": "linux-x86_64",
                  "params": { "keys": 100, "timeout_ms": 120000 } },
            ],
        }))
        .await;
    let events = server.events(&run).await;

    // (role, test) → machine → outcome, and each machine's test durations.
    let mut outcomes = Outcomes::new();
    let mut durations: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in &events {
        if let EventKind::TestFinished { shard, test, outcome, duration_ms, .. } = &e.kind {
            outcomes
                .entry((shard.role.clone(), test.clone()))
                .or_default()
                .insert(shard.machine.clone(), *outcome);
            if *outcome == Outcome::Passed && (shard.role == "basics" || shard.role == "libtest") {
                durations.entry(shard.machine.clone()).or_default().push(*duration_ms);
            }
        }
    }
    let on = |role: &str| of_role(&outcomes, role);
    let everywhere = ["arm-box", "win-box", "x86-box"];
    let mut compared = 0;
    for role in ["basics", "libtest"] {
        for (test, by_machine) in on(role) {
            let machines: Vec<&str> = by_machine.keys().map(String::as_str).collect();
            assert_eq!(
                machines,
                everywhere,
                "{role}::{test} did not run everywhere: {by_machine:?}\n{}",
                logs()
            );
            let x86 = by_machine["x86-box"];
            assert!(
                by_machine.values().all(|o| *o == x86),
                "{role}::{test} ended differently across machines: {by_machine:?}\n{}",
                logs()
            );
            compared += 1;
        }
    }
    // Alike, and alike for the right reason: each suite's known outcomes.
    let expect = |role: &str, test: &str, want: Outcome| {
        let got = outcomes.get(&(role.to_string(), test.to_string())).map(|m| m["x86-box"]);
        assert_eq!(got, Some(want), "{role}::{test}");
    };
    expect("basics", "adds", Outcome::Passed);
    expect("basics", "greeting_param", Outcome::Passed);
    expect("basics", "fails_check_eq", Outcome::Failed);
    expect("basics", "skips", Outcome::Skipped);
    expect("libtest", "tests::adds", Outcome::Passed);
    expect("libtest", "tests::fails_assert_eq", Outcome::Failed);
    expect("libtest", "tests::panics_as_expected", Outcome::Skipped);

    // The kv pair met across CPU kinds: the client on x86_64 passed the
    // server's barrier, the server on aarch64 saw the client's verdict.
    for (role, machine) in [("server", "arm-box"), ("client", "x86-box")] {
        let tests = on(role);
        assert!(!tests.is_empty(), "no {role} test ran\n{}", logs());
        for (test, by_machine) in tests {
            assert_eq!(by_machine.keys().collect::<Vec<_>>(), [machine], "{role}::{test}");
            assert_eq!(by_machine[machine], Outcome::Passed, "{role}::{test} on {machine}\n{}", logs());
        }
    }
    let released = events.iter().any(|e| {
        matches!(&e.kind, EventKind::Sync { shard, op: SyncOp::BarrierReleased { .. }, .. }
            if shard.machine == "x86-box" && shard.role == "client")
    });
    assert!(released, "the client on x86_64 never passed a barrier");

    // What a test costs on each machine (native, emulated, under Wine), and
    // how long from the run's start its basics shard took to its first
    // result (fetching and compiling the suite for that CPU, listing, a test).
    for (machine, d) in &durations {
        let mean = d.iter().sum::<u64>() as f64 / d.len() as f64;
        let at = |first: &dyn Fn(&EventKind) -> bool| {
            events.iter().find(|e| first(&e.kind)).map(|e| e.at_us).expect("the basics shard's events")
        };
        let ours = |shard: &ensemble_protocol::ShardRef| shard.machine == *machine && shard.role == "basics";
        let started = at(&|k| matches!(k, EventKind::RunStarted { .. }));
        let first = at(&|k| matches!(k, EventKind::TestFinished { shard, .. } if ours(shard)));
        eprintln!(
            "{machine}: {} passed tests, mean {mean:.1} ms per test; run start to its first basics result {:.2} s",
            d.len(),
            (first - started) as f64 / 1e6
        );
    }

    // The browser shows the run as a matrix: one column per profile, with
    // the os/arch its machine reported.
    let browser = Browser::start().await.unwrap();
    let b = &browser;
    let steps = async {
        b.goto(&format!("{}/runs/{run}?token={TOKEN}", server.url)).await?;
        b.wait_text("#matrix-title", "Across 3 profiles").await?;
        b.wait_text(
            "#matrix-summary",
            &format!("All {compared} finished tests have the same outcome on every profile."),
        )
        .await?;
        b.wait_text("#matrix thead th[data-profile='linux-aarch64']", "linux/aarch64").await?;
        b.wait_text("#matrix thead th[data-profile='windows-x86_64']", "windows/x86_64").await?;
        b.click("#matrix tr[data-test='tests::adds'] td[data-profile='linux-aarch64'] button").await?;
        b.wait_text("#test-detail .detail-name", "tests::adds").await?;
        b.wait_text("#test-detail p", "on arm-box").await?;
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        panic!("{e:#}\n{}", browser.diagnostics().await);
    }
    browser.close().await.unwrap();
}

type Outcomes = BTreeMap<(String, String), BTreeMap<String, Outcome>>;

/// The tests of `role` in `outcomes`, each with its outcome per machine.
fn of_role<'a>(outcomes: &'a Outcomes, role: &str) -> Vec<(&'a str, &'a BTreeMap<String, Outcome>)> {
    outcomes.iter().filter(|((r, _), _)| r == role).map(|((_, test), m)| (test.as_str(), m)).collect()
}

/// The release script names each machine's binary and sums them; here with
/// the `cross` profile the test above builds (a release build takes many
/// minutes), which exercises the same script.
#[test]
fn release_binaries_come_with_their_sums() {
    let bins = build_foreign_runners(&[&AARCH64, &WINDOWS]);
    let out = tempfile::tempdir().unwrap();
    let script = ensemble_tests::repo_root().join("build-support/release-binaries");
    let mut release = std::process::Command::new(&script);
    // Not as this test's package (its variables would rebuild crates the
    // build above made), and dlltool's leftovers in a scratch directory.
    ensemble_build_support::clean_cargo_env(&mut release);
    let scratch = tempfile::tempdir().unwrap();
    let run = release
        .args(["--profile", "cross", "--target", AARCH64.triple, "--target", WINDOWS.triple, "--out"])
        .arg(out.path())
        .env("TMPDIR", scratch.path())
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let version = env!("CARGO_PKG_VERSION");
    let sums = std::fs::read_to_string(out.path().join("SHA256SUMS")).unwrap();
    let names: Vec<&str> = sums.lines().filter_map(|l| l.split_whitespace().nth(1)).collect();
    assert_eq!(
        names,
        [format!("ensemble-{version}-linux-aarch64"), format!("ensemble-{version}-windows-x86_64.exe")]
    );
    let check =
        std::process::Command::new("sha256sum").arg("-c").arg("SHA256SUMS").current_dir(out.path()).output();
    assert!(check.unwrap().status.success(), "the sums do not match the files:\n{sums}");
    for (name, bin) in names.iter().zip(&bins) {
        assert_eq!(std::fs::read(out.path().join(name)).unwrap(), std::fs::read(bin).unwrap(), "{name}");
    }
    // The aarch64 binary starts (under qemu) and says its version.
    let (launcher, args) = AARCH64.launcher.split_first().unwrap();
    let said = std::process::Command::new(launcher)
        .args(args)
        .arg(out.path().join(names[0]))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&said.stdout).trim(), format!("ensemble {version}"));
}

/// Windows has no process groups: a service there runs in a job object,
/// ended whole when its run is over, and ended with its runner even when the
/// runner is killed outright (the runner's own job closes with it). The
/// service is a real server, the Windows build of `ensemble serve`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windows_runners_service_ends_with_its_run_and_with_its_runner_killed() {
    use ensemble_protocol::service::ServiceState;
    use std::time::{Duration, Instant};
    let bins = tokio::task::spawn_blocking(|| build_foreign_runners(&[&WINDOWS])).await.unwrap();
    // The program as Windows names it: Wine's drive Z: is the root.
    let exe = format!("Z:{}", bins[0].to_str().unwrap().replace('/', "\\"));
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--no-local-machine"]);
    let x86 = start_runner_with(dir.path(), &server, "x86-box", &[], None, &["--allow-net", "service:*"]);
    let mut win = start_foreign_runner_with(
        dir.path(),
        &server,
        "win-box",
        &WINDOWS,
        &bins[0],
        &[],
        &["--allow-exec", &exe],
    );
    let logs = |win: &ensemble_tests::Proc| format!("x86:\n{}\nwindows:\n{}", x86.log(), win.log());
    server.client().wait_machines(2, Duration::from_secs(300)).await.unwrap();
    let client = format!("sha256:{}", server.upload(ensemble_artifacts::RESP_CLIENT, "resp-client").await);
    let plan = |test: &str, hold_ms: &str| {
        json!({
            "name": "windows service",
            "profiles": [
                { "name": "win", "labels": { "os": "windows" } },
                { "name": "clients", "labels": { "os": "linux" } },
            ],
            "services": [{
                "name": "web", "profile": "win",
                "command": [exe, "serve", "--listen", "127.0.0.1:{port}", "--data-dir", "{dir}", "--no-local-machine"],
                "ready": { "tcp": "{port}" }, "ready_timeout": "120s", "stop_timeout": "5s",
            }],
            "entries": [{ "suite": client, "profile": "clients", "tests": [test],
                          "params": { "hold_ms": hold_ms }, "capabilities": { "net": ["service:web"] } }],
        })
    };
    let ready_port = |events: &[ensemble_protocol::Event]| {
        events.iter().find_map(|e| match &e.kind {
            EventKind::Service { state: ServiceState::Ready { address, .. }, .. } => address.port,
            _ => None,
        })
    };
    // Whether something still listens at the port, for up to `within`.
    let listening_after = |port: u16, within: Duration| {
        let start = Instant::now();
        while start.elapsed() < within {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    };

    // A run that ends: its service is stopped with it.
    let run = server.start_run(plan("outside_is_refused", "1")).await;
    let events = server.events(&run).await;
    let port = ready_port(&events)
        .unwrap_or_else(|| panic!("the service became ready: {events:#?}\n{}", logs(&win)));
    assert!(!listening_after(port, Duration::from_secs(10)), "the service outlived its run\n{}", logs(&win));

    // A run whose runner is killed: the service goes with it.
    let run = server.start_run(plan("hold", "600000")).await;
    let mut port = None;
    server
        .watch(&run, 1, |e| {
            if let EventKind::Service { state: ServiceState::Ready { address, .. }, .. } = &e.kind {
                port = address.port;
            }
            port.is_none()
        })
        .await;
    let port = port.expect("the service became ready");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(), "it serves");
    win.kill();
    assert!(
        !listening_after(port, Duration::from_secs(10)),
        "the service outlived its runner by 10 s\n{}",
        logs(&win)
    );
}
