//! The `ensemble` binary as a user runs it: plans from files, exit codes,
//! reports on disk, and errors that name what was wrong.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ensemble_protocol::{CancelReason, Event, EventKind, Outcome, Verdict};

fn ensemble(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ensemble"))
        .args(args)
        .env("ENSEMBLE_CACHE_DIR", cache)
        .output()
        .expect("ensemble runs")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A plan file in `dir` whose entries point at the built example suites.
fn write_plan(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("plan.toml");
    std::fs::write(&path, body).unwrap();
    path
}

fn basics_plan(settings: &str) -> String {
    format!(
        "name = \"basics\"\ntype = \"cross-platform\"\n[settings]\n{settings}\n[[profiles]]\nname = \"here\"\n\
         [[entries]]\nsuite = {:?}\nparams = {{ greeting = \"hello\" }}\n",
        ensemble_artifacts::BASICS
    )
}

#[test]
fn a_failing_suite_exits_1_with_readable_reports() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path(), &basics_plan("test_timeout = \"10s\""));
    let (junit, json) = (dir.path().join("out.xml"), dir.path().join("out.jsonl"));
    let out = ensemble(
        &[
            "run",
            plan.to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
        dir.path(),
    );
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(shown.contains("FAIL [") && shown.contains("basics@here fails_check_eq"), "{shown}");
    assert!(
        shown.contains("FAILED: 11 test(s)") && shown.contains("7 passed, 2 failed, 2 skipped"),
        "{shown}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("<testsuites name=\"basics\" tests=\"11\" failures=\"2\""), "{xml}");
    let events: Vec<Event> =
        std::fs::read_to_string(&json).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(matches!(events.first().unwrap().kind, EventKind::RunStarted { .. }));
    assert!(matches!(events.last().unwrap().kind, EventKind::RunFinished { .. }));
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "sequence numbers have no gaps");
    }
    let panicked = events.iter().find_map(|e| match &e.kind {
        EventKind::TestFinished { test, outcome, message, .. } if test == "panics" => {
            Some((*outcome, message.clone()))
        }
        _ => None,
    });
    let (outcome, message) = panicked.unwrap();
    assert_eq!(outcome, Outcome::Failed);
    assert!(message.unwrap().contains("boom: the answer was 42"));
}

#[test]
fn retries_and_fail_fast_apply() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path(), &basics_plan("retries = 1\nfail_fast = true"));
    let json = dir.path().join("out.jsonl");
    let out = ensemble(&["run", plan.to_str().unwrap(), "--json", json.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let events: Vec<Event> =
        std::fs::read_to_string(&json).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let finished: Vec<(String, Outcome, u32, Option<String>)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::TestFinished { test, outcome, attempt, message, .. } => {
                Some((test.clone(), *outcome, *attempt, message.clone()))
            }
            _ => None,
        })
        .collect();
    let failed = finished.iter().find(|f| f.0 == "fails_check_eq").unwrap();
    assert_eq!((failed.1, failed.2), (Outcome::Failed, 2), "a failure is retried once");
    let after = finished.iter().find(|f| f.0 == "panics").unwrap();
    assert_eq!(after.1, Outcome::Cancelled, "fail-fast cancels the rest: {after:?}");
    assert!(after.3.as_deref().unwrap().starts_with("cancelled: fail-fast: fails_check_eq"), "{after:?}");
    let EventKind::RunFinished { cancelled, verdict, .. } = &events.last().unwrap().kind else { panic!() };
    let Some(CancelReason::FailFast { test, outcome, .. }) = cancelled else { panic!("{cancelled:?}") };
    assert_eq!((test.as_str(), *outcome), ("fails_check_eq", Outcome::Failed));
    assert_eq!(*verdict, Verdict::Failed, "fail-fast stops a failed run");
}

#[test]
fn bad_plans_exit_2_naming_the_field_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path(), &basics_plan("test_timeout = \"soon\""));
    let out = ensemble(&["run", plan.to_str().unwrap()], dir.path());
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(
        shown.contains("plan.toml") && shown.contains("settings.test_timeout") && shown.contains("\"soon\""),
        "{shown}"
    );

    let missing = basics_plan("").replace(ensemble_artifacts::BASICS, "nowhere/suite.wasm");
    let plan = write_plan(dir.path(), &missing);
    let out = ensemble(&["plan", "check", plan.to_str().unwrap()], dir.path());
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(shown.contains("entries[0].suite") && shown.contains("nowhere/suite.wasm"), "{shown}");

    let not_wasm = dir.path().join("notes.wasm");
    std::fs::write(&not_wasm, "hello").unwrap();
    let plan = write_plan(
        dir.path(),
        &basics_plan("").replace(ensemble_artifacts::BASICS, not_wasm.to_str().unwrap()),
    );
    let out = ensemble(&["plan", "check", plan.to_str().unwrap()], dir.path());
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(shown.contains("entries[0].suite") && shown.contains("not a WebAssembly file"), "{shown}");

    let out = ensemble(&["run"], dir.path());
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2: {}", text(&out));
}

#[test]
fn plan_check_accepts_a_good_plan() {
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path(), &basics_plan(""));
    let out = ensemble(&["plan", "check", plan.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("plan \"basics\" is valid (cross-platform, 1 profile(s), 1 entry)"));
}

#[test]
fn suite_inspect_shows_kind_tests_and_imports() {
    let dir = tempfile::tempdir().unwrap();
    let out = ensemble(&["suite", "inspect", ensemble_artifacts::BASICS], dir.path());
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("kind:    ensemble suite"), "{shown}");
    assert!(shown.contains("  ignored  (ignored)"), "{shown}");
    assert!(shown.contains("  tagged_with_timeout  (tags: demo, tags; timeout: 5s)"), "{shown}");
    assert!(shown.contains("ensemble:suite/context@0.3.0"), "{shown}");
    let out = ensemble(&["suite", "inspect", ensemble_artifacts::LIBTEST_DEMO], dir.path());
    let shown = text(&out);
    assert!(shown.contains("kind:    libtest harness") && shown.contains("tests::adds"), "{shown}");
    let out = ensemble(&["suite", "inspect", "/nonexistent.wasm"], dir.path());
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_plan_that_checks_never_fails_later_for_a_grant() {
    let dir = tempfile::tempdir().unwrap();
    let with_grants = |grants: &str| {
        format!(
            "name = \"grants\"\ntype = \"cross-platform\"\n[[profiles]]\nname = \"here\"\n\
             [[entries]]\nsuite = {:?}\ncapabilities = {{ net = [{grants}], env = [\"HOME\"] }}\n",
            ensemble_artifacts::HELLO_COMMAND
        )
    };
    // An address with a port, and wildcards: accepted by the check, and the
    // run starts its shard with them (no shard error, exit 0).
    let good =
        write_plan(dir.path(), &with_grants("\"127.0.0.1:8080\", \"*:443\", \"localhost:*\", \"[::1]:9\""));
    let out = ensemble(&["plan", "check", good.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let json = dir.path().join("out.jsonl");
    let out = ensemble(&["run", good.to_str().unwrap(), "--json", json.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let events: Vec<Event> =
        std::fs::read_to_string(&json).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(events.iter().all(|e| !matches!(&e.kind, EventKind::ShardFinished { error: Some(_), .. })));
    // A host that is no name nor address is refused by the check itself,
    // at its field, never later.
    let named = write_plan(dir.path(), &with_grants("\"exa_mple.com:80\""));
    for cmd in [&["plan", "check"][..], &["run"][..]] {
        let mut args = cmd.to_vec();
        args.push(named.to_str().unwrap());
        let out = ensemble(&args, dir.path());
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {shown}");
        assert!(shown.contains("entries[0].capabilities.net[0]"), "{shown}");
        assert!(shown.contains("the host must be an IP address"), "{shown}");
    }
}

#[test]
fn plan_check_names_the_entry_and_the_param_a_suite_needs_or_does_not_read() {
    let dir = tempfile::tempdir().unwrap();
    // basics declares `greeting` (required), `expected` and `nap_ms`.
    let plan = write_plan(
        dir.path(),
        &format!(
            "name = \"p\"\ntype = \"cross-platform\"\n[[profiles]]\nname = \"here\"\n[[entries]]\nsuite = {:?}\n\
             role = \"greeter\"\nparams = {{ expcted = \"hi\", nap_ms = \"soon\" }}\n",
            ensemble_artifacts::BASICS
        ),
    );
    let out = ensemble(&["plan", "check", plan.to_str().unwrap()], dir.path());
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    for problem in [
        "entries[0].params: the suite of greeter requires the param `greeting` (string: the greeting greeting_param checks), and it is not set",
        "entries[0].params.expcted: the suite of greeter has no param `expcted` (did you mean `expected`?",
        "entries[0].params.nap_ms: \"soon\" is not an integer",
    ] {
        assert!(shown.contains(problem), "{problem}\n---\n{shown}");
    }
    // Nothing ran: `run` refuses the same plan before any test.
    let out = ensemble(&["run", plan.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!text(&out).contains("PASS ["), "{}", text(&out));
    // `suite inspect` shows what the suite declares.
    let out = ensemble(&["suite", "inspect", ensemble_artifacts::BASICS], dir.path());
    assert!(text(&out).contains("kind:    ensemble suite (ABI 0.3)"), "{}", text(&out));
    assert!(
        text(&out).contains("greeting (string, required)  the greeting greeting_param checks"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("nap_ms (integer, default 0)"), "{}", text(&out));
}

/// A reader that closes the output early (`ensemble suite inspect S | head`)
/// ends the command quietly, with the code a closed pipe gives: no panic,
/// no backtrace.
#[cfg(unix)]
#[test]
fn a_closed_output_ends_the_command_quietly() {
    use std::io::Read;
    let cache = tempfile::tempdir().unwrap();
    // Its list of 10,000 tests is more than a pipe holds (~90 KB).
    let mut child = Command::new(env!("CARGO_BIN_EXE_ensemble"))
        .args(["suite", "inspect", ensemble_artifacts::MANY_TESTS])
        .env("ENSEMBLE_CACHE_DIR", cache.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    stdout.read_exact(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("suite:"), "{}", String::from_utf8_lossy(&first));
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(ensemble_protocol::exit::CLOSED_OUTPUT), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
