//! Static reports: `--html` opens from disk with no network and shows a
//! failure's message, stays usable at 10,000 tests, and `ensemble report`
//! merges the logs of a plan split across CI jobs into one report (and
//! writes a server's stored run the same way).

use ensemble_tests::browser::Browser;
use ensemble_tests::{ensemble, ensemble_async, start_server};

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The report's data: the JSON the page carries.
fn data(html: &std::path::Path) -> serde_json::Value {
    let page = std::fs::read_to_string(html).unwrap();
    let json = page
        .split("<script id=\"data\" type=\"application/json\">")
        .nth(1)
        .and_then(|rest| rest.split("</script>").next())
        .expect("the page carries its data");
    serde_json::from_str(json).unwrap()
}

fn plan_with(dir: &std::path::Path, suite: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{}.toml", suite.replace(['/', '.'], "_")));
    std::fs::write(
        &path,
        format!("name = \"report\"\n[[profiles]]\nname = \"here\"\n[[entries]]\nsuite = {suite:?}\nprofile = \"here\"\n"),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_opens_offline_shows_a_failure_and_stays_usable_at_ten_thousand_tests() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let basics = dir.path().join("basics.html");
    let out =
        ensemble_async(&["run", "suites/plans/basics.toml", "--html", basics.to_str().unwrap()], &cache)
            .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let many = dir.path().join("many.html");
    let many_plan = plan_with(dir.path(), ensemble_artifacts::MANY_TESTS);
    let out =
        ensemble_async(&["run", many_plan.to_str().unwrap(), "--html", many.to_str().unwrap()], &cache).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(data(&many)["tests"].as_array().unwrap().len(), 10_000);

    let browser = Browser::start_offline().await.unwrap();
    let b = &browser;
    let steps = async {
        b.goto(&format!("file://{}", basics.display())).await?;
        b.wait_text("#verdict", "failed").await?;
        b.wait_text("#counts [data-count='failed']", "2 failed").await?;
        // The failures come first; one click shows the message.
        b.click("tr[data-test='fails_check_eq']").await?;
        b.wait_text("#detail pre.message", "arithmetic is broken on purpose").await?;
        b.wait_css("#timeline .lane[data-machine='this-host'] .bar.failed").await?;
        // Every outcome, filtered by text.
        b.select_by_value("#show", "all").await?;
        b.fill("#filter", "logs_and").await?;
        b.wait_text("#shown", "1 of 1 tests shown (11 in the run)").await?;
        b.click("tr[data-test='logs_and_prints']").await?;
        b.wait_css("#detail pre.output").await?;
        // It fetched nothing.
        let fetched = b.execute("return performance.getEntriesByType('resource').length", vec![]).await?;
        anyhow::ensure!(fetched == serde_json::json!(0), "the page fetched {fetched} resources");

        // Ten thousand: a page of rows, the failure found by its name.
        b.goto(&format!("file://{}", many.display())).await?;
        b.wait_text("#shown", "1 of 1 tests shown (10000 in the run)").await?;
        b.select_by_value("#show", "all").await?;
        b.wait_text("#shown", "500 of 10000 tests shown").await?;
        b.click("#more").await?;
        b.wait_text("#shown", "1000 of 10000 tests shown").await?;
        b.fill("#filter", "t05000").await?;
        b.wait_text("#shown", "1 of 1 tests shown").await?;
        b.click("tr[data-test='t05000']").await?;
        b.wait_text("#detail pre.message", "t05000 fails on purpose").await?;
        anyhow::Ok(())
    };
    let outcome = steps.await;
    if let Err(e) = &outcome {
        panic!("{e:#}\n{}", browser.diagnostics().await);
    }
    browser.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parts_of_a_split_plan_merge_into_one_report_as_a_stored_run_does() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let part = |k: u32| dir.path().join(format!("part-{k}.jsonl"));
    for k in 1..=2 {
        let out = ensemble(
            &[
                "run",
                "suites/plans/basics.toml",
                "--partition",
                &format!("hash:{k}/2"),
                "--json",
                part(k).to_str().unwrap(),
            ],
            &cache,
        );
        assert!(matches!(out.status.code(), Some(0 | 1)), "{}", text(&out));
    }
    let (junit, html) = (dir.path().join("merged.xml"), dir.path().join("merged.html"));
    let out = ensemble(
        &[
            "report",
            "--merge",
            part(1).to_str().unwrap(),
            part(2).to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
        ],
        &cache,
    );
    assert_eq!(out.status.code(), Some(1), "the merged run failed as basics does: {}", text(&out));
    // It says the counts, not only the verdict.
    assert!(
        text(&out).contains("Merged run: failed (") && text(&out).contains(" passed, 2 failed"),
        "{}",
        text(&out)
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("tests=\"11\" failures=\"2\""), "{xml}");
    let merged = data(&html);
    assert_eq!(merged["tests"].as_array().unwrap().len(), 11);
    assert_eq!(merged["summary"]["failed"], 2);
    assert_eq!(merged["verdict"], "failed");
    // The parts together ran every test: none is filtered out (each part
    // filtered out what the other ran).
    assert_eq!(merged["filtered_out"], 0, "{merged}");

    // A log cut short is refused, named.
    let cut = dir.path().join("cut.jsonl");
    let whole = std::fs::read_to_string(part(1)).unwrap();
    std::fs::write(&cut, whole.lines().take(3).collect::<Vec<_>>().join("\n")).unwrap();
    let out =
        ensemble(&["report", "--merge", cut.to_str().unwrap(), "--html", html.to_str().unwrap()], &cache);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("cut.jsonl is not a whole run: it has no run-finished"), "{}", text(&out));

    // A stored run reports the same as its own log.
    let server = start_server(dir.path(), &dir.path().join("data"), "report-token", &[]);
    let served = |args: Vec<String>| {
        let mut all = args;
        all.extend([
            "--server".to_string(),
            server.url.clone(),
            "--token".to_string(),
            "report-token".to_string(),
        ]);
        let cache = cache.clone();
        async move {
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            let out = ensemble_async(&all, &cache).await;
            assert_eq!(out.status.code(), Some(1), "{all:?}: {}", text(&out));
        }
    };
    let (log, stored) = (dir.path().join("served.jsonl"), dir.path().join("stored.html"));
    served(vec!["run".into(), "suites/plans/basics.toml".into(), "--json".into(), log.display().to_string()])
        .await;
    let first = std::fs::read_to_string(&log).unwrap().lines().next().unwrap().to_string();
    let run = serde_json::from_str::<ensemble_protocol::Event>(&first).unwrap().run;
    served(vec!["report".into(), run, "--html".into(), stored.display().to_string()]).await;
    let stored = data(&stored);
    assert_eq!(stored["tests"].as_array().unwrap().len(), 11);
    assert_eq!(stored["summary"], merged["summary"]);
}

/// A cross-platform plan's summary compares each test's outcome across the
/// profiles, and its JUnit file says where each testsuite ran.
#[test]
fn a_cross_platform_run_compares_its_profiles_in_the_summary_and_junit() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let plan = dir.path().join("two.toml");
    std::fs::write(
        &plan,
        format!(
            "name = \"two\"\ntype = \"cross-platform\"\n[[profiles]]\nname = \"first\"\n[[profiles]]\nname = \"second\"\n\
             [[entries]]\nsuite = {:?}\nparams = {{ greeting = \"hello\", expected = \"hello\" }}\n",
            ensemble_artifacts::BASICS
        ),
    )
    .unwrap();
    let junit = dir.path().join("two.xml");
    let out = ensemble(&["run", plan.to_str().unwrap(), "--junit", junit.to_str().unwrap()], &cache);
    let shown = text(&out);
    let platform = format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH);
    assert!(
        shown.contains(&format!("Across 2 profiles: first ({platform}) · second ({platform})")),
        "{shown}"
    );
    assert!(shown.contains("tests have the same outcome on every profile"), "{shown}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    for (name, value) in [("profile", "first"), ("profile", "second"), ("arch", std::env::consts::ARCH)] {
        assert!(xml.contains(&format!("<property name=\"{name}\" value=\"{value}\"/>")), "{xml}");
    }
}
