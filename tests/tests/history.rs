//! Test history across runs: a test's recent results, pass rate, flips and
//! durations (`GET /api/tests/history`), and a plan's flaky tests
//! (`GET /api/tests/flaky`), from real runs on a real server; and the
//! history survives a restart.

use ensemble_protocol::Outcome;
use ensemble_tests::browser::Browser;
use ensemble_tests::{ensemble_async, repo_root, restart_server, start_server};

const TOKEN: &str = "history-token";

/// The same plan (by name) with basics expecting `expected`: `greeting_param`
/// passes when it is "hello".
fn plan(dir: &std::path::Path, expected: &str) -> std::path::PathBuf {
    let path = dir.join(format!("plan-{expected}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = \"history\"\n[[profiles]]\nname = \"here\"\n[[entries]]\nsuite = {:?}\nprofile = \"here\"\n\
             filter = \"test(=greeting_param) or test(=adds)\"\nparams = {{ greeting = \"hello\", expected = {expected:?} }}\n",
            repo_root().join("suites/examples/basics").display().to_string()
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_that_flips_is_flaky_and_its_history_says_how() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start_server(dir.path(), &data, TOKEN, &[]);
    let cache = dir.path().join("cache");
    let mut runs = Vec::new();
    for (expected, code) in [("hello", 0), ("hello", 0), ("bye", 1)] {
        let plan = plan(dir.path(), expected);
        let out = ensemble_async(
            &["run", plan.to_str().unwrap(), "--server", &server.url, "--token", TOKEN],
            &cache,
        )
        .await;
        assert_eq!(out.status.code(), Some(code), "{}", String::from_utf8_lossy(&out.stdout));
        runs.push(server.client().runs().await.unwrap()[0].id.clone());
    }
    let client = server.client();
    let h = client.test_history("history", "basics", "greeting_param").await.unwrap();
    let outcomes: Vec<Outcome> = h.results.iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, [Outcome::Failed, Outcome::Passed, Outcome::Passed], "newest first");
    assert_eq!(h.flips, 1);
    assert!((h.pass_rate.unwrap() - 2.0 / 3.0).abs() < 1e-9, "{h:?}");
    assert!(h.duration_p50_ms.is_some() && h.duration_p90_ms >= h.duration_p50_ms, "{h:?}");
    assert!(h.is_flaky());

    let flaky = client.flaky_tests("history").await.unwrap();
    let names: Vec<(&str, &str)> = flaky.iter().map(|t| (t.role.as_str(), t.test.as_str())).collect();
    assert_eq!(names, [("basics", "greeting_param")], "adds never flipped");
    let steady = client.test_history("history", "basics", "adds").await.unwrap();
    assert_eq!((steady.results.len(), steady.flips, steady.pass_rate), (3, 0, Some(1.0)));

    // A test nobody ran has no history, and the query must name a test.
    let none = client.test_history("history", "basics", "nope").await.unwrap();
    assert!(none.results.is_empty() && none.pass_rate.is_none());
    let bad = client.request(reqwest::Method::GET, "/api/tests/history?plan=history").send().await.unwrap();
    assert_eq!(bad.status().as_u16(), 400);

    // In the browser, the test is marked flaky even in a run where it
    // passed, and its history is one click away.
    let browser = Browser::start().await.unwrap();
    let b = &browser;
    let steps = async {
        b.goto(&format!("{}/runs/{}?token={TOKEN}", server.url, runs[1])).await?;
        b.wait_text("#run-state", "passed").await?;
        b.wait_text("tr[data-test='greeting_param'][data-flaky='true']", "flaky").await?;
        b.wait_absent("tr[data-test='adds'][data-flaky]").await?;
        b.click("tr[data-test='greeting_param'] button").await?;
        b.wait_text("#test-history", "3 results in this plan's runs").await?;
        b.wait_text("#test-history", "passed 67%").await?;
        b.wait_text("#test-history", "flaky: 1 flip").await?;
        // And the plan's flaky tests, listed under the run.
        b.wait_text("#flaky-tests tr[data-test='greeting_param']", "basics").await?;
        b.wait_absent("#flaky-tests tr[data-test='adds']").await?;
        anyhow::Ok(())
    };
    let outcome = steps.await;
    if let Err(e) = &outcome {
        panic!("{e:#}\n{}", browser.diagnostics().await);
    }
    browser.close().await.unwrap();

    // The history is kept: a restarted server has it.
    let mut server = server;
    server.proc.kill();
    let server = restart_server(dir.path(), &data, &server, &[]);
    let again = server.client().test_history("history", "basics", "greeting_param").await.unwrap();
    assert_eq!(again.results, h.results);
}
