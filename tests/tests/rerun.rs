//! `ensemble run --rerun-failed RUN_ID`: exactly the tests that did not pass
//! run again, on the same plan, and the new run names the one it reruns.

use std::collections::BTreeSet;

use ensemble_protocol::{Event, EventKind};
use ensemble_tests::{ensemble_async, repo_root, start_server};

const TOKEN: &str = "rerun-token";

/// The run id and the (role, test, outcome) of every test a JSON-lines
/// report holds.
fn read(json: &std::path::Path) -> (String, BTreeSet<String>) {
    let mut run = String::new();
    let mut tests = BTreeSet::new();
    for line in std::fs::read_to_string(json).unwrap().lines() {
        let e: Event = serde_json::from_str(line).unwrap();
        run = e.run.clone();
        if let EventKind::TestFinished { shard, test, outcome, .. } = e.kind {
            tests.insert(format!("{} {test} {outcome}", shard.role));
        }
    }
    (run, tests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_runs_exactly_the_failures_and_links_to_its_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    let plan = dir.path().join("plan.toml");
    std::fs::write(
        &plan,
        format!(
            "name = \"rerun\"\ntype = \"cross-platform\"\n[settings]\ntest_timeout = \"20s\"\n\
             [[profiles]]\nname = \"here\"\n[[entries]]\nsuite = {:?}\nparams = {{ greeting = \"hi\" }}\n\
             [[entries]]\nsuite = {:?}\nrole = \"lt\"\n",
            repo_root().join("suites/examples/basics").display().to_string(),
            ensemble_artifacts::LIBTEST_DEMO,
        ),
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let run = |args: Vec<String>| {
        let cache = cache.clone();
        let url = server.url.clone();
        async move {
            let mut all: Vec<String> = args;
            all.extend(["--server".into(), url, "--token".into(), TOKEN.into()]);
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            let out = ensemble_async(&all, &cache).await;
            let shown =
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            (out.status.code(), shown)
        }
    };
    let json = |name: &str| dir.path().join(name).display().to_string();

    let (code, shown) =
        run(vec!["run".into(), plan.display().to_string(), "--json".into(), json("1.jsonl")]).await;
    assert_eq!(code, Some(1), "{shown}");
    let (first, all) = read(&dir.path().join("1.jsonl"));
    assert_eq!(all.len(), 16, "{all:?}");

    let (code, shown) =
        run(vec!["run".into(), "--rerun-failed".into(), first.clone(), "--json".into(), json("2.jsonl")])
            .await;
    assert_eq!(code, Some(1), "they fail again:\n{shown}");
    let (second, again) = read(&dir.path().join("2.jsonl"));
    let failed: BTreeSet<String> = all.iter().filter(|t| t.ends_with(" failed")).cloned().collect();
    assert_eq!(
        failed,
        [
            "basics fails_check_eq failed",
            // "hi" is not the expected "hello": greeting_param fails too.
            "basics greeting_param failed",
            "basics panics failed",
            "lt tests::fails_assert_eq failed"
        ]
        .map(String::from)
        .into()
    );
    assert_eq!(again, failed, "exactly the failures ran again:\n{shown}");
    assert!(shown.contains(&format!("Run {second} reruns the failures of run {first}.")), "{shown}");
    let meta = server.client().run(&second).await.unwrap();
    assert_eq!(meta.reruns.as_deref(), Some(first.as_str()));
    assert_eq!(meta.plan.name, "rerun");
    assert!(meta.plan.entries.iter().all(|e| e.tests.is_some()), "{:?}", meta.plan.entries);

    // A run that passed has nothing to rerun; a run id the server does not
    // know is a mistake too; and standalone runs keep no runs.
    let (code, _) = run(vec![
        "run".into(),
        plan.display().to_string(),
        "-E".into(),
        "test(=adds)".into(),
        "--json".into(),
        json("3.jsonl"),
    ])
    .await;
    assert_eq!(code, Some(0));
    let (passed, _) = read(&dir.path().join("3.jsonl"));
    let (code, shown) = run(vec!["run".into(), "--rerun-failed".into(), passed.clone()]).await;
    assert_eq!(code, Some(2), "{shown}");
    assert!(shown.contains(&format!("run \"{passed}\" has nothing to rerun")), "{shown}");
    let (code, shown) = run(vec!["run".into(), "--rerun-failed".into(), "run-nope".into()]).await;
    assert_eq!(code, Some(2), "{shown}");
    assert!(shown.contains("run-nope"), "{shown}");
    let out = ensemble_async(&["run", "--rerun-failed", &first], &cache).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--server"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
