//! The README's "two commands" section, run as written (its commands are
//! read from the README): the demo comes up ready, its plan (a real server
//! on one machine, restarted mid-test by a client on another) runs from
//! another terminal, and `ensemble run suites/plans/demo.toml --junit …
//! --json …` passes on a fresh clone, with the kv-server and kv-client roles
//! running on two machines and coordinating through sync.

use ensemble_protocol::event::SyncOp;
use ensemble_protocol::{Event, EventKind, Outcome};
use ensemble_tests::ensemble;

/// The commands of the README's "two commands" section, in order: the
/// first line of each `sh` block.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(ensemble_tests::repo_root().join("README.md")).unwrap();
    let section = readme.split("\n## The two commands").nth(1).expect("the README's two commands");
    let section = section.split("\n## ").next().unwrap();
    section.split("```sh\n").skip(1).map(|block| block.lines().next().unwrap().to_string()).collect()
}

/// The README command that starts with `prefix`, as arguments to `ensemble`.
fn readme_command(prefix: &str) -> Vec<String> {
    let commands = readme_commands();
    let command = commands
        .iter()
        .find(|c| c.starts_with(prefix))
        .unwrap_or_else(|| panic!("no README command starts with {prefix:?}: {commands:?}"));
    command.split_whitespace().skip(1).map(str::to_string).collect()
}

#[test]
fn the_demo_plan_passes_with_both_roles_coordinating() {
    let dir = tempfile::tempdir().unwrap();
    // The README's standalone command; the reports it names go to a scratch
    // directory.
    let args: Vec<String> = readme_command("target/debug/ensemble run suites/plans/demo.toml")
        .into_iter()
        .map(|a| if a.starts_with("out.") { dir.path().join(a).display().to_string() } else { a })
        .collect();
    let (junit, json) = (dir.path().join("out.xml"), dir.path().join("out.jsonl"));
    assert!(
        args.contains(&junit.display().to_string()) && args.contains(&json.display().to_string()),
        "{args:?}"
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ensemble(&args, dir.path());
    let shown = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("PASSED: 6 test(s)"), "{shown}");

    let events: Vec<Event> =
        std::fs::read_to_string(&json).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut machines = std::collections::BTreeMap::new();
    for e in &events {
        if let EventKind::TestFinished { shard, outcome, .. } = &e.kind {
            assert_eq!(*outcome, Outcome::Passed, "{e:?}");
            machines.insert(shard.role.clone(), shard.machine.clone());
        }
    }
    assert_eq!(machines.len(), 2, "both roles ran: {machines:?}");
    assert_ne!(machines["server"], machines["client"], "the roles ran on different machines");
    let ops: Vec<&SyncOp> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Sync { op, .. } => Some(op),
            _ => None,
        })
        .collect();
    assert!(
        ops.iter().any(|op| matches!(op, SyncOp::BarrierReleased { state, .. } if state == "server-ready")),
        "{ops:?}"
    );
    assert!(
        ops.iter().any(|op| matches!(op, SyncOp::Publish { topic, .. } if topic == "kv/verdict")),
        "{ops:?}"
    );

    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("tests=\"6\" failures=\"0\" errors=\"0\""), "{xml}");
    assert_eq!(xml.matches("<testsuite ").count(), 2, "a testsuite per shard: {xml}");
}

/// The README's first command, read from the README: `ensemble demo` brings up a server, two runner
/// processes and the distributed demo plan, ready to run — on the next free
/// port when its own is taken — and leaves nothing behind when stopped.
#[test]
fn ensemble_demo_brings_up_a_ready_setup() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    // Its data goes to a scratch directory under TMPDIR, removed at the end.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    // The command as the README writes it: what comes after cargo's `--`
    // goes to this build's binary.
    let commands = readme_commands();
    let command = commands[0].clone();
    let args: Vec<&str> = command
        .strip_prefix("cargo run -p ensemble-runner -- ")
        .unwrap_or_else(|| panic!("the demo command runs the ensemble binary through cargo: {command}"))
        .split_whitespace()
        .collect();
    // And the test command is the one CI runs.
    let test_command = &commands[1];
    let ci = std::fs::read_to_string(ensemble_tests::repo_root().join(".ci/run")).unwrap();
    assert!(ci.lines().any(|l| l.trim() == test_command), ".ci/run does not run `{test_command}`");
    // Owned: it and its coordinator and runners go however the test ends.
    let mut demo = ensemble_tests::Owned(
        Command::new(ensemble_tests::ensemble_bin())
            .args(&args)
            .args(["--listen", &format!("127.0.0.1:{busy}")])
            .current_dir(ensemble_tests::repo_root())
            .env("ENSEMBLE_CACHE_DIR", dir.path().join("cache"))
            .env("TMPDIR", &tmp)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut moved = None;
    let url = loop {
        let line = lines.next().expect("the demo prints its URL").unwrap();
        if line.starts_with(&format!("Port {busy} is taken: the demo uses ")) {
            moved = Some(line.clone());
        }
        if let Some(url) = line.strip_prefix("Ensemble demo is up: ") {
            break url.to_string();
        }
    };
    let moved = moved.expect("the demo says it moved off the taken port");
    assert!(url.starts_with("http://127.0.0.1:") && !url.ends_with(&format!(":{busy}")), "{moved} / {url}");
    let scratch: Vec<_> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(scratch.len(), 1, "the demo's data dir: {scratch:?}");
    // It made a token, and prints it and a URL that carries it.
    // What it printed about its plans, for the messages below.
    let mut printed = Vec::new();
    let (token, open) = {
        let mut token = None;
        loop {
            let line = lines.next().expect("the demo prints its token and link").unwrap();
            printed.push(line.clone());
            if let Some(t) = line.trim().strip_prefix("token:") {
                token = Some(t.trim().to_string());
            }
            if let Some(rest) = line.strip_prefix("Open ") {
                let link = rest.split_whitespace().next().unwrap().to_string();
                break (token.expect("the token comes first"), link);
            }
        }
    };
    assert_eq!(open, format!("{url}/?token={token}"));
    // The command it prints works from where it runs: `ensemble` is not on
    // the PATH here, so it names the binary itself.
    let _or_from_a_terminal = lines.next();
    let export = lines.next().unwrap().unwrap();
    assert_eq!(export.trim(), format!("export ENSEMBLE_TOKEN={token}"));
    let command = lines.next().unwrap().unwrap();
    let program = command.split_whitespace().next().unwrap().to_string();
    let resolved = ensemble_tests::repo_root().join(&program);
    assert!(program == "ensemble" || resolved.is_file(), "{command}: {program} is not the binary");
    // It is the README's "from another terminal" command, with this demo's
    // address; run as written (the token from the environment), it passes.
    let from_another_terminal: Vec<String> =
        readme_command("target/debug/ensemble run suites/plans/demo-distributed.toml")
            .into_iter()
            .map(|a| if a.starts_with("http://127.0.0.1:") { url.clone() } else { a })
            .collect();
    let printed: Vec<&str> = command.split_whitespace().skip(1).collect();
    assert_eq!(printed, from_another_terminal, "the demo prints the README's command: {command}");
    let out = std::process::Command::new(ensemble_tests::ensemble_bin())
        .args(&from_another_terminal)
        .current_dir(ensemble_tests::repo_root())
        .env("ENSEMBLE_TOKEN", &token)
        .env("ENSEMBLE_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    let shown = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("PASSED: 4 test(s)"), "{shown}");
    assert!(
        shown.contains("asks to restart service kv"),
        "the restart is on the terminal's timeline: {shown}"
    );
    let result = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let server = ensemble_tests::Server {
            proc: ensemble_tests::Proc {
                child: Command::new("true").spawn().unwrap(),
                log: dir.path().join("none"),
            },
            url: url.clone(),
            token: token.clone(),
            join_token: String::new(),
        };
        // Without the token, the API refuses (a web page cannot drive the demo).
        let refused = server.client().with_token(None).plans().await.unwrap_err();
        assert_eq!(refused.status(), Some(401), "{refused}");
        let machines = server.wait_online(3).await;
        // The URL opens the browser app, with example suites in the catalog.
        let client = server.client();
        let page = client.request(reqwest::Method::GET, "/").send().await.unwrap().text().await.unwrap();
        assert!(page.contains("/assets/ensemble_frontend-"), "{page}");
        let suites = client.suites().await.unwrap();
        let names: Vec<&str> = suites.iter().map(|s| s.name.as_str()).collect();
        for name in ["kv-tcp-client", "kv-server", "kv-client", "basics", "hello-command", "many-tests"] {
            assert!(names.iter().any(|n| n.replace('_', "-") == name), "{name} not in {names:?}");
        }
        let plans = client.plans().await.unwrap();
        let named = |name: &str| plans.iter().find(|p| p.plan.name == name).map(|p| p.id.clone());
        // The polyglot plan is in the catalog too (this host has the
        // component tools of Python and JavaScript; tests/tests/polyglot.rs
        // runs it).
        assert!(
            named("polyglot").is_some(),
            "{:?}; the demo said:\n{}",
            plans.iter().map(|p| &p.plan.name).collect::<Vec<_>>(),
            printed.join("\n")
        );
        assert!(named("kv-sync").is_some(), "the sync example is stored too");
        let req =
            ensemble_protocol::api::RunRequest { plan_id: named("demo-distributed"), ..Default::default() };
        let run = client.start_run(&req).await.unwrap().id;
        let mut roles = std::collections::BTreeMap::new();
        let mut summary = None;
        server
            .watch(&run, 1, |e| {
                match &e.kind {
                    EventKind::TestFinished { shard, .. } => {
                        roles.insert(shard.role.clone(), shard.machine.clone());
                    }
                    // The server under test runs on the server machine, and
                    // the client's restart is done there.
                    EventKind::Fault {
                        shard,
                        step: ensemble_protocol::fault::FaultStep::Done { .. },
                        ..
                    } => {
                        roles.insert("restarted on".into(), shard.machine.clone());
                    }
                    EventKind::RunFinished { summary: s, .. } => summary = Some(*s),
                    _ => {}
                }
                true
            })
            .await;
        // The same server with Python and JavaScript clients, on the demo's machines.
        let req = ensemble_protocol::api::RunRequest { plan_id: named("kv-polyglot"), ..Default::default() };
        let polyglot = client.start_run(&req).await.unwrap().id;
        let mut polyglot_summary = None;
        server
            .watch(&polyglot, 1, |e| {
                if let EventKind::RunFinished { summary: s, .. } = &e.kind {
                    polyglot_summary = Some(*s);
                }
                true
            })
            .await;
        assert!(
            polyglot_summary.is_some_and(|s| s.success() && s.passed == 3),
            "kv-polyglot on the demo's machines: {polyglot_summary:?}"
        );
        (machines, roles, summary)
    });
    // Stop the demo the way a person does (Ctrl-C), so it stops its children.
    let _ = Command::new("kill").args(["-INT", &demo.id().to_string()]).status();
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let stopped = demo.wait().unwrap();
    assert!(rest.iter().any(|l| l.starts_with("Stopping the demo")), "{rest:?}");
    assert_eq!(rest.last().map(String::as_str), Some("Stopped."), "{rest:?}");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "the demo left {left:?} behind");
    drop(taken);
    let (machines, roles, summary) = result;
    let names: Vec<&str> = machines.iter().map(|m| m.info.name.as_str()).collect();
    assert_eq!(names, ["coordinator", "runner-client", "runner-server"]);
    assert_eq!(roles["restarted on"], "runner-server");
    assert_eq!(roles["client"], "runner-client");
    assert!(summary.unwrap().success() && summary.unwrap().passed == 4, "{summary:?}");
    assert!(stopped.success(), "the demo exits cleanly on Ctrl-C: {stopped:?}");
}

/// The demo removes its scratch data however it ends: when it fails while
/// starting (here its coordinator cannot use the cache directory) and when
/// it is stopped before it is up.
#[test]
fn the_demo_leaves_nothing_behind_when_it_fails_or_is_stopped_while_starting() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let left = || -> Vec<_> { std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().file_name()).collect() };
    let demo = |cache: &std::path::Path| {
        let mut cmd = Command::new(ensemble_tests::ensemble_bin());
        cmd.args(["demo", "--listen", "127.0.0.1:0"])
            .current_dir(ensemble_tests::repo_root())
            .env("ENSEMBLE_CACHE_DIR", cache)
            .env("TMPDIR", &tmp);
        cmd
    };

    // A cache "directory" that is a file: the coordinator refuses it, and
    // the demo says so and stops.
    let not_a_dir = dir.path().join("cache-file");
    std::fs::write(&not_a_dir, "").unwrap();
    let out = demo(&not_a_dir).output().unwrap();
    let shown = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "{shown}");
    assert!(
        shown.contains(&format!("the cache directory {} cannot be used", not_a_dir.display())),
        "{shown}"
    );
    assert!(shown.contains("ENSEMBLE_CACHE_DIR"), "{shown}");
    assert!(shown.contains("ensemble serve did not start (its error is above)"), "{shown}");
    assert!(left().is_empty(), "a failed demo left {:?} behind", left());

    // Stopped while its runners join.
    let mut child = ensemble_tests::Owned(
        demo(&dir.path().join("cache")).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap(),
    );
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines().map(|l| l.unwrap());
    lines.by_ref().find(|l| l.starts_with("Starting two runners")).expect("the demo says what it starts");
    assert_eq!(left().len(), 1, "its scratch data exists while it runs");
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let rest: Vec<String> = lines.collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}: {rest:?}");
    assert!(rest.iter().any(|l| l.starts_with("Stopping the demo before it was up")), "{rest:?}");
    assert!(!rest.iter().any(|l| l.starts_with("Ensemble demo is up")), "{rest:?}");
    assert_eq!(rest.last().map(String::as_str), Some("Stopped."), "{rest:?}");
    assert!(left().is_empty(), "a stopped demo left {:?} behind", left());
}
