//! The browser app end to end: real headless Chromium (through chromedriver)
//! against `ensemble serve` with two runner processes. A person's path:
//! give the token, build a distributed plan in the editor (suites from an
//! upload and from the catalog, each linked to its own machine profile),
//! see why the coordinating pair cannot run in sequence, run it, watch both machines' lanes, reload mid-run, open a failure.
//!
//! With `ENSEMBLE_UPDATE_SCREENSHOTS=1` the test also writes the book's
//! screenshots to `docs/screenshots/`.

use ensemble_tests::browser::{Browser, screenshot};
use ensemble_tests::{Server, start_runner_with, start_server};

const TOKEN: &str = "browser-token";

/// The sha256 of the stored suite named `name`.
async fn stored_sha(server: &Server, name: &str) -> String {
    let suites = server.client().suites().await.unwrap();
    let suite = suites.iter().find(|s| s.name == name);
    suite.map(|s| s.sha256.clone()).unwrap_or_else(|| panic!("no suite {name}: {suites:?}"))
}

async fn fail_with_logs<T>(r: anyhow::Result<T>, browser: &Browser, server: &Server) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!(
            "{e:#}\n--- page ---\n{}\n--- server log ---\n{}",
            browser.diagnostics().await,
            server.proc.log()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_builds_and_runs_a_distributed_plan_in_the_browser() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--no-local-machine"]);
    let _a = start_runner_with(dir.path(), &server, "box-server", &["tier=server"], None, &["--slots", "4"]);
    let _b = start_runner_with(dir.path(), &server, "box-client", &["tier=client"], None, &["--slots", "4"]);
    server.wait_online(2).await;
    // Two suites are in the catalog already; the third is uploaded in the editor.
    server.upload(ensemble_artifacts::KV_CLIENT, "kv-client").await;
    server.upload(ensemble_artifacts::BASICS, "basics").await;

    // The app's pages are the app (deep links work); the API stays the API.
    let client = server.client();
    let page = client.request(reqwest::Method::GET, "/").send().await.unwrap().text().await.unwrap();
    let css =
        page.split("/assets/").find_map(|r| r.split('"').next().filter(|n| n.ends_with(".css"))).unwrap();
    let css = format!("/assets/{css}");
    for (path, status, body) in [
        ("/runs/some-run", 200, "/assets/ensemble_frontend-"),
        (css.as_str(), 200, ".topbar"),
        ("/assets/nope.js", 404, ""),
        ("/api/nope", 404, "no such endpoint"),
    ] {
        let resp = client.request(reqwest::Method::GET, path).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "GET {path}");
        assert!(resp.text().await.unwrap().contains(body), "GET {path}");
    }

    let mut browser = Browser::start().await.expect("headless Chromium starts");
    browser.set_timeout(std::time::Duration::from_secs(60)).await.unwrap();
    let b = &browser;
    let steps = async {
        // The token: asked once, a wrong one is named as such.
        b.goto(&server.url).await?;
        b.fill("#token", "not-the-token").await?;
        b.click("#token-submit").await?;
        b.wait_text("#token-refused", "refused that token").await?;
        b.fill("#token", TOKEN).await?;
        b.click("#token-submit").await?;
        b.wait_text("h1", "Test plans").await?;
        b.wait_text("#machines-online", "2 machines online").await?;

        // Machines: both runners, live, with the join hint.
        b.click("a[href='/machines']").await?;
        b.wait_text("tr[data-machine='box-server']", "online").await?;
        b.wait_text("tr[data-machine='box-client']", "tier=client").await?;
        b.wait_text("#join-command", "ensemble runner --join").await?;

        // Suites: the list counts each suite's tests; opening them fetches them.
        b.click("a[href='/suites']").await?;
        b.wait_text("article[data-suite='basics'] .meta", "11 tests").await?;
        b.wait_absent("article[data-suite='basics'] .test-list").await?;
        b.click("article[data-suite='basics'] details > summary").await?;
        b.wait_text("article[data-suite='basics'] .test-list", "fails_check_eq").await?;

        // A new distributed plan.
        b.click("nav a[href='/']").await?;
        b.click("a[href='/plans/new']").await?;
        b.fill("#plan-name", "kv across two machines").await?;
        // Suite 1, uploaded with the file picker.
        b.wait_css("#editor-upload").await?.send_keys(ensemble_artifacts::KV_SERVER).await?;
        b.wait_css(".entry[data-index='0']").await?;
        // Suites 2 and 3 from the catalog.
        for suite in ["kv-client", "basics"] {
            let sha = stored_sha(&server, suite).await;
            b.select_by_value("#add-suite-select", &sha).await?;
            b.click("#add-suite").await?;
        }
        b.wait_css(".entry[data-index='2']").await?;
        // Saving before linking profiles shows the problem next to the field.
        b.click("#save").await?;
        b.wait_text("#entry-0-profile-error", "links every entry to a profile").await?;
        // Three entries without a profile, and basics without the param it
        // requires (it declares `greeting`).
        b.wait_text("#editor-problems", "4 problems to fix").await?;
        b.wait_text("#entry-2-params-error", "requires the param `greeting`").await?;
        // Each kv role gets a profile of its own; basics shares the client's.
        b.click("#entry-0-new-profile").await?;
        b.fill("#profile-0-labels", "tier=server").await?;
        b.wait_text("#profile-0-matches", "1 online machine matches now: box-server").await?;
        b.click("#entry-1-new-profile").await?;
        b.fill("#profile-1-labels", "tier=client").await?;
        b.wait_text("#entry-1-matches", "1 machine online matches now").await?;
        let client_profile = b.wait_css("#profile-1-name").await?.prop("value").await?.unwrap_or_default();
        b.select_by_value("#entry-2-profile", &client_profile).await?;
        b.fill("#entry-2-params", "greeting=hello\nnap_ms=20000").await?;
        // Which of basics' tests run: a filter, checked as it is typed.
        b.fill("#entry-2-filter", "tag(").await?;
        b.wait_text("#entry-2-filter-error", "at column 5: expected `)`").await?;
        b.fill("#entry-2-filter", "not test(=ignored)").await?;
        b.wait_absent("#entry-2-filter-error").await?;
        b.fill("#test_timeout", "soon").await?;
        b.wait_text("#test_timeout-error", "invalid duration").await?;
        b.fill("#test_timeout", "45s").await?;
        b.wait_absent("#test_timeout-error").await?;
        b.wait_absent(".field-error").await?;
        b.wait_absent("#editor-problems").await?;
        // The kv pair waits for each other: run in sequence they never meet,
        // and the execution setting says so at once, before any save.
        b.select_by_value("#execution", "sequential").await?;
        b.wait_text("#execution-error", "entries 0 (kv-server), 1 (kv-client) use sync").await?;
        b.wait_text("#execution-error", "set execution = \"parallel\"").await?;
        b.select_by_value("#execution", "parallel").await?;
        b.wait_absent("#execution-error").await?;
        // The whole editor in one picture.
        b.client.set_window_size(1400, 2000).await?;
        b.execute("window.scrollTo(0, 0)", vec![]).await?;
        b.screenshot_to(screenshot(dir.path(), "plan-editor.png")).await?;
        b.client.set_window_size(1400, 1000).await?;

        // Save and run: the run view, live.
        b.click("#run").await?;
        b.wait_css(".lane[data-machine='box-server']").await?;
        b.wait_css(".lane[data-machine='box-client']").await?;
        b.wait_text("tr[data-test='naps']", "running").await?;
        // Each shard's lane says where it is: basics naps, so its shard runs.
        b.wait_css(".track-row[data-role='basics'] [data-shard-state='running']").await?;
        // Reload mid-run: the view is rebuilt from the replayed events.
        b.client.refresh().await?;
        b.wait_text("tr[data-test='naps']", "running").await?;
        b.wait_text("#run-state", "running").await?;
        b.wait_text("tr[data-test='adds']", "passed").await?;
        b.wait_css(".lane[data-machine='box-server'] .bar").await?;
        b.wait_text("#sync-events", "barrier server-ready released").await?;
        b.execute("window.scrollTo(0, 0)", vec![]).await?;
        b.screenshot_to(screenshot(dir.path(), "run-live.png")).await?;

        // The end: every result, and a failure's message.
        b.wait_text("#run-state", "failed").await?;
        b.wait_absent("#tests tr.running, #tests tr.pending").await?;
        let rows = b.client.find_all(fantoccini::Locator::Css("#tests tbody tr[data-test]")).await?;
        // Every test of the three suites but the one the filter leaves out.
        let total = server.client().suites().await?.iter().map(|s| s.test_count as usize).sum::<usize>() - 1;
        anyhow::ensure!(rows.len() == total, "{} rows for {total} tests", rows.len());
        b.wait_text("#summary [data-count='filtered-out']", "1 filtered out").await?;
        let runs = server.client().runs().await?;
        let failed = runs[0].summary.map(|s| s.failed).unwrap_or_default();
        anyhow::ensure!(failed >= 1, "basics fails on purpose: {runs:?}");
        b.wait_text("#summary [data-count='failed']", &format!("{failed} failed")).await?;
        b.click("tr[data-test='fails_check_eq'] button").await?;
        b.wait_text("#test-detail pre.message", "arithmetic is broken on purpose").await?;
        b.wait_text("#test-detail", "on box-client").await?;
        b.screenshot_to(screenshot(dir.path(), "run-finished.png")).await?;

        // Rerun the failures: a new run of exactly those tests, which says
        // what it reruns.
        let first = b.client.current_url().await?.path().to_string();
        b.wait_text("#rerun-failed", &format!("Rerun {failed} failed")).await?;
        b.click("#rerun-failed").await?;
        b.wait_text("#reruns", "Reruns the failures of run").await?;
        b.wait_text("#run-state", "failed").await?;
        b.wait_absent("#tests tr.running, #tests tr.pending").await?;
        let rows = b.client.find_all(fantoccini::Locator::Css("#tests tbody tr[data-test]")).await?;
        anyhow::ensure!(
            rows.len() == failed as usize,
            "the rerun shows {} rows for {failed} failures",
            rows.len()
        );
        b.wait_css("tr[data-test='fails_check_eq']").await?;
        b.click("#reruns a").await?;
        b.wait_css("#rerun-failed").await?;
        anyhow::ensure!(b.client.current_url().await?.path() == first, "the link leads back to {first}");

        // The run is in the history, and the plan in the list.
        b.click("a[href='/runs']").await?;
        b.wait_text("#runs", "kv across two machines").await?;
        b.click("nav a[href='/']").await?;
        b.wait_text("#plans", "kv across two machines").await?;
        // Its page lists its flaky tests: none, the failures failed twice.
        b.click("tr[data-plan='kv across two machines'] td a").await?;
        b.wait_text("#flaky-tests", "No test of this plan flipped").await?;
        b.click("nav a[href='/']").await?;
        b.wait_text("#plans", "kv across two machines").await?;

        // Plans: duplicate, export, import, delete.
        b.click("tr[data-plan='kv across two machines'] button[aria-label^='Duplicate']").await?;
        b.wait_css("tr[data-plan='kv across two machines (copy)']").await?;
        let export = b
            .wait_css("tr[data-plan='kv across two machines'] a[download]")
            .await?
            .attr("href")
            .await?
            .unwrap_or_default();
        // A bare API path: the download is fetched with the token in a header.
        anyhow::ensure!(export.ends_with("/toml") && !export.contains("token"), "export link {export}");
        let kv_client = stored_sha(&server, "kv-client").await;
        let toml = dir.path().join("imported.toml");
        std::fs::write(
            &toml,
            format!(
                "name = \"imported\"\ntype = \"cross-platform\"\n[[profiles]]\nname = \"any\"\n[[entries]]\nsuite = \"sha256:{kv_client}\"\n"
            ),
        )?;
        b.wait_css("#import-toml").await?.send_keys(&toml.display().to_string()).await?;
        b.wait_text(".banner.ok", "Imported imported.toml as plan \"imported\"").await?;
        b.wait_css("tr[data-plan='imported']").await?;
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "name = \"bad\"\n[[entries]]\nsuite = \"sha256:00\"\nprofile = \"nowhere\"\n")?;
        b.wait_css("#import-toml").await?.send_keys(&bad.display().to_string()).await?;
        b.wait_text(".banner.error", "bad.toml").await?;
        b.wait_text(".banner.error", "no profile named \"nowhere\"").await?;
        b.click("tr[data-plan='imported'] button[aria-label^='Delete']").await?;
        b.client.accept_alert().await?;
        b.wait_absent("tr[data-plan='imported']").await?;
        anyhow::Ok(())
    };
    let outcome = steps.await;
    fail_with_logs(outcome, &browser, &server).await;
    browser.close().await.unwrap();
}

/// Records the run header (state, time, tests title) at every change of
/// the page, into `window.headers`.
const RECORD_HEADER: &str = r#"
window.headers = [];
const text = (id) => (document.getElementById(id) || {}).textContent || '';
const note = () => {
  const now = [text('run-state'), text('run-elapsed'), text('tests-title')];
  const last = window.headers[window.headers.length - 1];
  if (now[0] && (!last || last.join('|') !== now.join('|'))) window.headers.push(now);
};
new MutationObserver(note).observe(document.documentElement, { subtree: true, childList: true, characterData: true });
note();
"#;

/// Ten thousand tests: the run view renders a window of the table and a
/// bounded number of bars, so the page stays usable while the whole run
/// streams in and after. The time to show every result is printed (speed is
/// measured, not asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_thousand_test_run_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--no-local-machine"]);
    let _a = start_runner_with(dir.path(), &server, "box-a", &["tier=a"], None, &[]);
    server.wait_online(1).await;
    let sha = server.upload(ensemble_artifacts::MANY_TESTS, "many-tests").await;
    let run = server
        .start_run(serde_json::json!({
            "name": "ten thousand",
            "type": "distributed",
            "profiles": [{ "name": "a", "labels": { "tier": "a" } }],
            "entries": [{ "suite": format!("sha256:{sha}"), "profile": "a", "role": "many" }]
        }))
        .await;

    let mut browser = Browser::start().await.expect("headless Chromium starts");
    browser.set_timeout(std::time::Duration::from_secs(120)).await.unwrap();
    let b = &browser;
    let steps = async {
        // The link `ensemble serve` prints hands the token over: no prompt,
        // and the token leaves the address bar.
        b.goto(&format!("{}/?token={TOKEN}", server.url)).await?;
        b.wait_text("#machines-online", "1 machine online").await?;
        let address = b.current_url().await?;
        anyhow::ensure!(!address.contains("token="), "the token stays in the address bar: {address}");
        // Opened while the run goes: replay, then live.
        b.goto(&format!("{}/runs/{run}", server.url)).await?;
        let started = std::time::Instant::now();
        b.wait_text("#run-state", "failed").await?;
        b.wait_text("#tests-title", "Tests (10000 of 10000)").await?;
        let loaded = started.elapsed();
        let rendered = b.client.find_all(fantoccini::Locator::Css("#tests tr[data-test]")).await?.len();
        anyhow::ensure!(rendered <= 40, "{rendered} table rows in the page for 10000 tests");
        let bars = b.client.find_all(fantoccini::Locator::Css(".bar")).await?.len();
        anyhow::ensure!(bars <= 150, "{bars} bars drawn for 10000 tests");
        // The filter finds the failure; its message is one click away.
        b.fill("#test-filter", "t05000").await?;
        b.wait_text("#tests-title", "Tests (1 of 10000)").await?;
        // By keyboard: Enter on the test opens it.
        b.wait_css("tr[data-test='t05000'] button").await?.send_keys("\u{E007}").await?;
        b.wait_text("#test-detail pre.message", "t05000 fails on purpose").await?;
        // Emptied as a person would: select all, delete.
        b.wait_css("#test-filter").await?.send_keys("\u{E009}a\u{E000}\u{E003}").await?;
        b.wait_text("#tests-title", "Tests (10000 of 10000)").await?;
        b.select_by_value("#test-show", "failures").await?;
        b.wait_text("#tests-title", "Tests (1 of 10000)").await?;
        b.select_by_value("#test-show", "all").await?;
        // Scrolling to the end brings the last rows in.
        b.wait_text("#tests-title", "Tests (10000 of 10000)").await?;
        b.execute("document.getElementById('tests-scroll').scrollTop = 1e9;", vec![]).await?;
        b.wait_css("tr[data-test='t09999']").await?;
        // A block of the timeline opens the table narrowed to its tests:
        // the failure's block, with the failure in it.
        let block = b.wait_css(".lane .bar.bucket.failed").await?;
        let what = block.attr("aria-label").await?.unwrap_or_default();
        let n: usize = what.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        anyhow::ensure!(n > 0 && what.contains(" tests on box-a, "), "{what}");
        b.click(".lane .bar.bucket.failed").await?;
        b.wait_text("#block-filter", &format!("Only the {what} (from the timeline)")).await?;
        b.wait_text("#tests-title", &format!("Tests ({n} of 10000)")).await?;
        b.wait_css("tr[data-test='t05000']").await?;
        b.click("#clear-block").await?;
        b.wait_text("#tests-title", "Tests (10000 of 10000)").await?;
        b.wait_absent("#block-filter").await?;
        // Opened again once over: the header shows the run's end and its own
        // time while the page still takes in the backlog of events, and
        // never another time or state after.
        b.goto(&format!("{}/runs/{run}", server.url)).await?;
        b.execute(RECORD_HEADER, vec![]).await?;
        b.wait_text("#tests-title", "Tests (10000 of 10000)").await?;
        let seen = b.execute("return window.headers", vec![]).await?;
        let seen: Vec<(String, String, String)> = serde_json::from_value(seen)?;
        let finals: Vec<&(String, String, String)> =
            seen.iter().filter(|(s, _, _)| s.contains("failed")).collect();
        let early = finals.iter().any(|(_, _, title)| !title.contains("10000 of 10000"));
        anyhow::ensure!(early, "the end shown only with the last events: {seen:?}");
        let first_final = seen.iter().position(|(s, _, _)| s.contains("failed")).unwrap_or(0);
        let times: std::collections::BTreeSet<&str> =
            seen[first_final..].iter().map(|(_, t, _)| t.as_str()).collect();
        anyhow::ensure!(times.len() == 1, "the header's time changed after the end: {times:?}");
        anyhow::ensure!(
            seen[first_final..].iter().all(|(s, _, _)| s.contains("failed")),
            "the state went back after the end: {seen:?}"
        );
        eprintln!("10000-test run view: all 10000 results shown {loaded:?} after the page opened");
        anyhow::Ok(())
    };
    let outcome = steps.await;
    fail_with_logs(outcome, &browser, &server).await;
    browser.close().await.unwrap();
}
