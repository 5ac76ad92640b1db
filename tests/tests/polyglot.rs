//! Suites in Python and JavaScript: the polyglot plan (the Rust kv-server,
//! a Python client and a JavaScript client) passes standalone and across
//! real runner processes; `ensemble suite new --lang python|js` makes
//! projects that build and pass; build failures and missing tools are
//! named. The Python and JavaScript suites are built by `ensemble suite
//! build` with componentize-py, esbuild and componentize-js, which `cargo xtask test`
//! installs (pinned).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use ensemble_protocol::{Event, EventKind, Outcome};
use ensemble_tests::{ensemble, ensemble_async, repo_root, start_runner_with, start_server};

const TOKEN: &str = "polyglot-token";

/// Builds the examples one test at a time: a Python or JavaScript build
/// takes seconds of both cores, and the second test finds them up to date.
static BUILDS: Mutex<()> = Mutex::new(());

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn build_examples(cache: &Path) {
    let _one_at_a_time = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    for dir in ["suites/examples/py-kv-client", "suites/examples/js-kv-client"] {
        let out = ensemble(&["suite", "build", dir], cache);
        assert_eq!(out.status.code(), Some(0), "{dir}: {}", text(&out));
        let wasm = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(repo_root().join(&wasm).is_file(), "{dir}: the component {wasm} is there");
    }
}

fn events_of(path: &Path) -> Vec<Event> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// What a run's events say: every role's tests with their outcomes, the
/// machine each role ran on, and the log lines (the server's verdicts).
#[derive(Default)]
struct Seen {
    tests: BTreeMap<String, Vec<(String, Outcome)>>,
    machines: BTreeMap<String, String>,
    logs: Vec<String>,
}

fn outcomes(events: &[Event]) -> Seen {
    let Seen { mut tests, mut machines, mut logs } = Seen::default();
    for e in events {
        match &e.kind {
            EventKind::TestFinished { shard, test, outcome, .. } => {
                tests.entry(shard.role.clone()).or_default().push((test.clone(), *outcome));
                machines.insert(shard.role.clone(), shard.machine.clone());
            }
            EventKind::Log { message, .. } => logs.push(message.clone()),
            _ => {}
        }
    }
    for list in tests.values_mut() {
        list.sort();
    }
    Seen { tests, machines, logs }
}

/// Each client passed its three tests and the server heard both languages.
fn assert_polyglot_passed(events: &[Event]) -> BTreeMap<String, String> {
    let Seen { tests, machines, logs } = outcomes(events);
    let client: Vec<(String, Outcome)> =
        ["client::reports_verdict", "client::verifies_snapshot", "client::waits_for_server"]
            .iter()
            .map(|t| (t.to_string(), Outcome::Passed))
            .collect();
    assert_eq!(tests["py-client"], client, "{tests:?}");
    assert_eq!(tests["js-client"], client, "{tests:?}");
    assert_eq!(tests["server"].len(), 3, "{tests:?}");
    assert!(tests["server"].iter().all(|(_, o)| *o == Outcome::Passed), "{tests:?}");
    for language in ["(python)", "(javascript)"] {
        assert!(
            logs.iter().any(|l| l.starts_with("client verdict: ok") && l.contains(language)),
            "the server saw the {language} client's verdict: {logs:?}"
        );
    }
    machines
}

#[test]
fn the_polyglot_plan_passes_standalone() {
    let dir = tempfile::tempdir().unwrap();
    build_examples(dir.path());
    let json = dir.path().join("out.jsonl");
    let out = ensemble(&["run", "suites/plans/polyglot.toml", "--json", json.to_str().unwrap()], dir.path());
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("PASSED: 9 test(s)"), "{shown}");
    // Built once: the run found both components up to date.
    assert!(
        shown.contains("(Python) is up to date") && shown.contains("(JavaScript) is up to date"),
        "{shown}"
    );
    let machines = assert_polyglot_passed(&events_of(&json));
    assert_eq!(machines["server"], "server-box");
    assert_eq!(machines["py-client"], "python-box");
    assert_eq!(machines["js-client"], "js-box");
    // New large suites start on the baseline tier, and the run finishes
    // their optimized code before it exits (if the run took longer, it
    // was ready before): the next run starts there.
    let again = ensemble(&["run", "suites/plans/polyglot.toml"], dir.path());
    let shown = text(&again);
    assert_eq!(again.status.code(), Some(0), "{shown}");
    assert!(!shown.contains("finishing the optimized code"), "the cache held the optimized code: {shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_polyglot_plan_passes_across_runner_processes() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    build_examples(&cache);
    // One compiled-artifact cache for all: the coordinator compiles each
    // suite when it is uploaded (to list its tests and params), the
    // runners then load it.
    let shared = ["--cache-dir", cache.to_str().unwrap()];
    let server = start_server(
        dir.path(),
        &dir.path().join("data"),
        TOKEN,
        &[&["--no-local-machine"][..], &shared].concat(),
    );
    let one = [&["--slots", "1"][..], &shared].concat();
    let _rust = start_runner_with(dir.path(), &server, "rust-box", &["tier=server"], None, &shared);
    let _py = start_runner_with(dir.path(), &server, "client-a", &["tier=client"], None, &one);
    let _js = start_runner_with(dir.path(), &server, "client-b", &["tier=client"], None, &one);
    server.wait_online(3).await;
    let json = dir.path().join("out.jsonl");
    let out = ensemble_async(
        &[
            "run",
            "suites/plans/polyglot.toml",
            "--server",
            &server.url,
            "--token",
            TOKEN,
            "--json",
            json.to_str().unwrap(),
        ],
        &cache,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}\nserver log:\n{}", text(&out), server.proc.log());
    let machines = assert_polyglot_passed(&events_of(&json));
    assert_eq!(machines["server"], "rust-box");
    let mut clients = [machines["py-client"].as_str(), machines["js-client"].as_str()];
    clients.sort();
    assert_eq!(clients, ["client-a", "client-b"], "each client on a machine of its own: {machines:?}");
    // The server knows what each uploaded suite declares.
    let suites = server.client().suites().await.unwrap();
    for name in ["py-kv-client", "js-kv-client", "kv-server"] {
        let suite = suites.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("{name} in {suites:?}"));
        let params: Vec<&str> = suite.params.iter().flatten().map(|p| p.name.as_str()).collect();
        assert!(params.contains(&"keys") && params.contains(&"timeout_ms"), "{name}: {params:?}");
        assert_eq!(suite.abi.as_deref(), Some("0.3"), "{name}");
    }
}

#[test]
fn new_python_and_javascript_suites_build_and_pass() {
    let dir = tempfile::tempdir().unwrap();
    let _one_at_a_time = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    for lang in ["python", "js"] {
        let project = dir.path().join(format!("hello-{lang}"));
        let out = ensemble(&["suite", "new", project.to_str().unwrap(), "--lang", lang], dir.path());
        assert_eq!(out.status.code(), Some(0), "{lang}: {}", text(&out));
        let plan = project.join("plan.toml");
        let out = ensemble(&["run", plan.to_str().unwrap()], dir.path());
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(0), "{lang}: {shown}");
        assert!(shown.contains("PASSED: 1 test(s)") && shown.contains("greets"), "{lang}: {shown}");
    }
    // A mistake in the code: the build fails and says where.
    let module = dir.path().join("hello-python/hello_python.py");
    std::fs::write(&module, "from ensemble_suite import Tests, test\n\n@test\ndef broken(:\n    pass\n")
        .unwrap();
    let out = ensemble(&["suite", "build", dir.path().join("hello-python").to_str().unwrap()], dir.path());
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(shown.contains("componentize-py said") && shown.contains("SyntaxError"), "{shown}");
    let script = dir.path().join("hello-js/suite.js");
    std::fs::write(&script, "import { test } from '@ensemble/suite';\ntest('x', () => {\n").unwrap();
    let out = ensemble(&["suite", "build", dir.path().join("hello-js").to_str().unwrap()], dir.path());
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(shown.contains("esbuild said") && shown.contains("suite.js:3"), "{shown}");
    // Without the tool, the error names it and how to install it.
    let out = std::process::Command::new(ensemble_tests::ensemble_bin())
        .args(["suite", "build", dir.path().join("hello-python").to_str().unwrap()])
        .env("PATH", dir.path())
        .output()
        .unwrap();
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(
        shown.contains("needs `componentize-py`") && shown.contains("pip install componentize-py=="),
        "{shown}"
    );
}

#[test]
fn the_python_and_javascript_sdks_report_each_outcome_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let suites = repo_root().join("tests/suites");
    let plan = dir.path().join("plan.toml");
    std::fs::write(
        &plan,
        format!(
            "name = \"sdk-outcomes\"\ntype = \"cross-platform\"\n[[profiles]]\nname = \"here\"\n\
             [[entries]]\nsuite = {:?}\nrole = \"py\"\nparams = {{ word = \"ensemble\" }}\n\
             [[entries]]\nsuite = {:?}\nrole = \"js\"\nparams = {{ word = \"ensemble\" }}\n",
            suites.join("py-outcomes").display().to_string(),
            suites.join("js-outcomes").display().to_string(),
        ),
    )
    .unwrap();
    // On each compiler tier (a cache of its own each): the same outcomes
    // and messages, to the letter.
    let on = |tier: &str| {
        let json = dir.path().join(format!("{tier}.jsonl"));
        let out = {
            let _one_at_a_time = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
            let plan = plan.to_str().unwrap();
            let cache = dir.path().join(tier);
            ensemble(&["run", plan, "--json", json.to_str().unwrap(), "--compile-tiers", tier], &cache)
        };
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(1), "{tier}: {shown}");
        let mut seen = BTreeMap::new();
        for e in events_of(&json) {
            if let EventKind::TestFinished { shard, test, outcome, message, .. } = e.kind {
                seen.insert(format!("{} {test}", shard.role), (outcome, message.unwrap_or_default()));
            }
        }
        (seen, shown)
    };
    let (seen, shown) = on("baseline");
    assert_eq!(on("optimized").0, seen, "the tiers differ");
    let expect = |key: &str, outcome: Outcome, starts: &[&str]| {
        let (got, message) = seen.get(key).unwrap_or_else(|| panic!("{key} did not run: {seen:?}"));
        assert_eq!(*got, outcome, "{key}: {message}");
        for s in starts {
            assert!(message.contains(s), "{key}: {s:?} not in {message:?}");
        }
    };
    // Declared params read typed (a duration default, a float), both SDKs.
    for role in ["py", "js"] {
        expect(&format!("{role} passes"), Outcome::Passed, &[]);
        expect(&format!("{role} logs_and_attaches"), Outcome::Passed, &[]);
        expect(&format!("{role} fails"), Outcome::Failed, &["failed on purpose"]);
        expect(&format!("{role} skips"), Outcome::Skipped, &["skipped on purpose"]);
        expect(&format!("{role} ignored"), Outcome::Skipped, &["ignored"]);
        expect(
            &format!("{role} sync_times_out"),
            Outcome::Failed,
            &["sync timeout: barrier \"never\" to reach 2: timed out after 100 ms"],
        );
    }
    // Python: an assert fails with its message, a bare one with its
    // expression and values, an exception with its type and traceback.
    expect("py assert_with_message", Outcome::Failed, &["x should be 3"]);
    expect("py bare_assert", Outcome::Failed, &["assertion failed: len(items) == 4", "items = [1, 2, 3]"]);
    expect("py raises", Outcome::Failed, &["KeyError: 'missing'", "line 15, in lookup"]);
    // JavaScript: checks with their values, thrown errors, async tests.
    expect("js check_fails", Outcome::Failed, &["x should be 3"]);
    expect("js check_eq_fails", Outcome::Failed, &["lists: checkEq failed", "expected: [1,2,4]"]);
    expect("js throws", Outcome::Failed, &["TypeError:", "o is null"]);
    expect("js async_fails", Outcome::Failed, &["the answer: checkEq failed", "actual:   41"]);
    assert!(
        shown.contains("FAILED: 19 test(s)") && shown.contains("4 passed, 11 failed, 4 skipped"),
        "{shown}"
    );
}
