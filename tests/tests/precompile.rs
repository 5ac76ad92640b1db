//! Suites compiled before their runs: a plan saved on the server has its
//! suites fetched and compiled by the machines it could run on (and by a
//! machine that joins later), in the background, so that its run loads
//! compiled code instead of compiling it. A machine the plan cannot place
//! on, and one started with `--no-precompile`, compile nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ensemble_protocol::Plan;
use ensemble_protocol::api::{PlansQuery, RunRequest, RunState};
use ensemble_tests::{Proc, Server, ensemble_async, runner_metrics, start_runner_with, start_server};
use serde_json::json;

const TOKEN: &str = "precompile-token";
const COMPILED: &str = "ensemble_suites_precompiled_total{result=\"compiled\"}";

/// The compiled artifact of suite `sha` in the cache of runner `name`, if
/// there is one (`start_runner_with` gives each runner `cache-NAME`).
fn artifact(dir: &Path, name: &str, sha: &str) -> Option<PathBuf> {
    let cache = dir.join(format!("cache-{name}"));
    std::fs::read_dir(cache).into_iter().flatten().flatten().map(|e| e.path()).find(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(sha) && n.to_string_lossy().ends_with(".cwasm"))
    })
}

/// Waits until `runner` says it compiled `n` suites ahead of their runs
/// (its metrics, read until they say so or two minutes pass).
async fn precompiled(runner: &Proc, n: f64) {
    let waited = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let metrics = runner_metrics(runner).await;
            if metrics.get(COMPILED).copied().unwrap_or(0.0) >= n {
                return metrics;
            }
            let failed = metrics.get("ensemble_suites_precompiled_total{result=\"failed\"}");
            assert!(failed.is_none(), "precompiling failed: {metrics:#?}\n{}", runner.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let metrics = waited.unwrap_or_else(|_| panic!("no suite precompiled:\n{}", runner.log()));
    assert_eq!(metrics.get(COMPILED).copied(), Some(n), "{metrics:#?}");
}

/// The inode of `path`: a suite compiled again is stored as a new file.
fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().ino()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plans_suites_are_compiled_on_its_machines_before_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let server: Server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--no-local-machine"]);
    let metrics = ["--metrics-listen", "127.0.0.1:0"];
    let a = start_runner_with(dir.path(), &server, "box-a", &["tier=a"], None, &metrics);
    let other = start_runner_with(dir.path(), &server, "box-b", &["tier=b"], None, &metrics);
    server.wait_online(2).await;
    let hello = server.upload(ensemble_artifacts::HELLO_COMMAND, "hello").await;
    let plan = Plan::from_json(
        &json!({
            "name": "ahead",
            "profiles": [{ "name": "a", "labels": { "tier": "a" } }],
            "entries": [{ "suite": format!("sha256:{hello}"), "profile": "a", "role": "hello" }],
        })
        .to_string(),
    )
    .unwrap();
    let client = server.client();

    // Saving the plan: box-a, which its profile picks, compiles the suite.
    let saved = client.create_plan(&plan).await.unwrap();
    precompiled(&a, 1.0).await;
    let compiled = artifact(dir.path(), "box-a", &hello).expect("box-a holds the compiled suite");
    let before = inode(&compiled);

    // Its run loads that artifact: nothing is compiled again.
    let run = client
        .start_run(&RunRequest { plan_id: Some(saved.id.clone()), ..Default::default() })
        .await
        .unwrap()
        .id;
    let events =
        tokio::time::timeout(Duration::from_secs(120), server.events(&run)).await.expect("the run ended");
    assert_eq!(client.run(&run).await.unwrap().state, RunState::Passed, "{events:#?}");
    assert_eq!(inode(&compiled), before, "the run compiled the suite again:\n{}", a.log());

    // Machines that join after the save precompile it too, but not one that
    // says not to.
    let late = start_runner_with(dir.path(), &server, "late-a", &["tier=a"], None, &metrics);
    let refuses =
        start_runner_with(dir.path(), &server, "refuses-a", &["tier=a"], None, &["--no-precompile"]);
    server.wait_online(4).await;
    precompiled(&late, 1.0).await;
    assert!(artifact(dir.path(), "late-a", &hello).is_some());

    // Saved again: box-a holds the suite already and compiles nothing
    // more; the hint reaches it before the next run's assignment (one
    // connection, in order), and that run loads the same artifact.
    client.update_plan(&saved.id, &plan).await.unwrap();
    let late_b = start_runner_with(dir.path(), &server, "late-b", &["tier=b"], None, &metrics);
    server.wait_online(5).await;
    let run = client.start_run(&RunRequest { plan_id: Some(saved.id.clone()), ..Default::default() }).await;
    let run = run.unwrap().id;
    tokio::time::timeout(Duration::from_secs(120), server.events(&run)).await.expect("the run ended");
    assert_eq!(client.run(&run).await.unwrap().state, RunState::Passed);
    assert_eq!(inode(&compiled), before, "compiled again:\n{}", a.log());
    let again = runner_metrics(&a).await;
    assert_eq!(again.get(COMPILED).copied(), Some(1.0), "{again:#?}");
    // Machines the plan does not pick, or that refuse, compiled nothing.
    for (runner, name) in [(&other, "box-b"), (&late_b, "late-b"), (&refuses, "refuses-a")] {
        assert!(artifact(dir.path(), name, &hello).is_none(), "{name} compiled the suite:\n{}", runner.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_saved_from_the_command_line_is_compiled_before_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--no-local-machine"]);
    let metrics = ["--metrics-listen", "127.0.0.1:0"];
    let a = start_runner_with(dir.path(), &server, "cli-a", &["tier=a"], None, &metrics);
    server.wait_online(1).await;
    let plan = dir.path().join("plan.toml");
    let toml = format!(
        "name = \"from-cli\"\n[[profiles]]\nname = \"a\"\nlabels = {{ tier = \"a\" }}\n\
         [[entries]]\nsuite = {:?}\nprofile = \"a\"\n",
        ensemble_artifacts::HELLO_COMMAND
    );
    std::fs::write(&plan, toml).unwrap();
    let token = dir.path().join("api-token");
    std::fs::write(&token, &server.token).unwrap();
    let (plan, token) = (plan.to_str().unwrap(), token.to_str().unwrap());
    let cache = dir.path().join("cli-cache");
    let args = ["plan", "save", plan, "--server", &server.url, "--token-file", token];
    let save = || ensemble_async(&args, &cache);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();

    // Saved: the suite uploaded, the plan stored naming it by sha256, and
    // the machine the plan picks compiles it.
    let out = save().await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Saved plan \"from-cli\"") && text(&out.stdout).contains("a new plan")
    );
    let client = server.client();
    let plans = client.plans().await.unwrap();
    assert_eq!(plans.len(), 1, "{plans:#?}");
    let hello = plans[0].plan.entries[0].suite.strip_prefix("sha256:").expect("named by sha256").to_string();
    assert_eq!(client.suite(&hello).await.unwrap().name, "hello-command");
    precompiled(&a, 1.0).await;
    assert!(artifact(dir.path(), "cli-a", &hello).is_some());

    // Saved again: the same plan replaced, not a second one.
    let out = save().await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("replacing the plan of that name"), "{}", text(&out.stdout));
    let again = client.plans().await.unwrap();
    assert_eq!((again.len(), &again[0].id), (1, &plans[0].id));

    // Two plans of that name on the server (and one of another): the server
    // lists those of the name, and which one is meant is the user's to say.
    let other = client.create_plan(&plans[0].plan).await.unwrap();
    let renamed = Plan { name: "another".into(), ..plans[0].plan.clone() };
    client.create_plan(&renamed).await.unwrap();
    let query = PlansQuery { name: Some("from-cli".into()), ..Default::default() };
    let mut named: Vec<String> = client.plans_page(&query).await.unwrap().into_iter().map(|p| p.id).collect();
    let mut both = [plans[0].id.clone(), other.id.clone()];
    named.sort();
    both.sort();
    assert_eq!(named, both);
    let out = save().await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let said = text(&out.stderr);
    assert!(said.contains("2 plans") && said.contains(&plans[0].id) && said.contains(&other.id), "{said}");
    // Without a server there is nowhere to save it.
    let out = ensemble_async(&["plan", "save", plan], &cache).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--server"), "{}", text(&out.stderr));
}
