//! The browser app's editor and views, round two: an imported plan whose
//! suites are paths is flagged at import and each path is swapped for a
//! catalog suite in the editor; webhooks are shown and edited; a schedule
//! shows its next time in its own zone and a bad zone is said as it is
//! typed; "New profile for this suite" moves focus to the new profile and
//! says when it matches any machine; a big suite's tests are searched and
//! paged; the token prompt says where `serve` keeps the token; on a
//! cross-platform run the chips filter the matrix and the table comes into
//! view, and the selected test's detail stays in view.

use ensemble_protocol::plan::{NotifyFormat, NotifyOn};
use ensemble_tests::browser::Browser;
use ensemble_tests::{repo_root, start_runner, start_server};
use fantoccini::Locator;

const TOKEN: &str = "editing-token";

/// Whether the element is within the window (top and bottom).
const IN_VIEW: &str = r#"
const r = document.querySelector(arguments[0]).getBoundingClientRect();
return r.top >= -1 && r.top < window.innerHeight && r.height > 0;
"#;

/// Picks option `arguments[1]` of the select `arguments[0]`, as a person does.
const PICK: &str = r#"
const s = document.querySelector(arguments[0]);
s.value = arguments[1];
s.dispatchEvent(new Event('change', { bubbles: true }));
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_webhooks_schedules_and_new_profiles_in_the_editor() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    let _box = start_runner(dir.path(), &server, "box-b", &["tier=server"], None);
    server.wait_online(2).await;
    let kv_server = server.upload(ensemble_artifacts::KV_SERVER, "kv_server").await;
    let kv_client = server.upload(ensemble_artifacts::KV_CLIENT, "kv_client").await;
    let demo = repo_root().join("suites/plans/demo.toml");
    let client = server.client();

    let browser = Browser::start().await.unwrap();
    let b = &browser;
    let steps = async {
        // Import: the paths are flagged at once.
        b.goto(&format!("{}/?token={TOKEN}", server.url)).await?;
        b.wait_css("#import-toml").await?;
        b.client.find(Locator::Css("#import-toml")).await?.send_keys(&demo.display().to_string()).await?;
        b.wait_text(".banner", "names 2 suites by path (../examples/kv-server, ../examples/kv-client)")
            .await?;
        b.click("tr[data-plan='demo'] a").await?;
        // The editor offers the catalog in place of each path, its own name first.
        b.wait_text("#entry-0-swap", "A path names a suite on the machine that wrote the plan").await?;
        // (The choice ends the offer: the select goes as it is picked.)
        b.execute(PICK, vec!["#entry-0-swap-suite".into(), kv_server.clone().into()]).await?;
        b.wait_absent("#entry-0-swap").await?;
        b.execute(PICK, vec!["#entry-1-swap-suite".into(), kv_client.clone().into()]).await?;
        b.wait_absent("#entry-1-swap").await?;
        // Webhooks: added, edited.
        b.click("#add-notify").await?;
        b.fill("#notify-0-url", "https://hooks.example.com/ensemble").await?;
        b.select_by_value("#notify-0-on", "failed").await?;
        b.select_by_value("#notify-0-format", "slack").await?;
        // A schedule: a zone that is not one is said as it is typed.
        b.click("#add-schedule").await?;
        b.fill("#schedule-0-timezone", "Mars/Olympus").await?;
        b.wait_text("#schedule-0-timezone-error", "\"Mars/Olympus\" is not a timezone this browser knows")
            .await?;
        b.fill("#schedule-0-timezone", "Asia/Tokyo").await?;
        b.wait_absent("#schedule-0-timezone-error").await?;
        b.click("#save").await?;
        b.wait_text("#editor-banner", "Saved.").await?;
        // The next run in the schedule's own zone.
        b.wait_text("#schedule-0-status", "Asia/Tokyo").await?;
        // Reloaded, the webhook is there to see.
        b.execute("location.reload()", vec![]).await?;
        b.wait_css("#notify-0-url").await?;
        let url = b.execute("return document.querySelector('#notify-0-url').value", vec![]).await?;
        anyhow::ensure!(url == "https://hooks.example.com/ensemble", "{url}");
        // A new profile for a suite: focus goes to its labels, and it says
        // it matches any machine, the server's own too.
        let before = b.client.find_all(Locator::Css("fieldset.profile")).await?.len();
        b.click("#entry-0-new-profile").await?;
        let labels = format!("#profile-{before}-labels");
        b.wait_until("focus on the new profile's labels", async |c| {
            let id = c.execute("return document.activeElement && document.activeElement.id", vec![]).await?;
            Ok((id == labels.trim_start_matches('#')).then_some(()))
        })
        .await?;
        b.wait_text(&format!("#profile-{before}-any"), "any machine matches, the server's own too").await?;
        b.click(&format!("#profile-{before}-suggestions button[data-label='tier=server']")).await?;
        b.wait_absent(&format!("#profile-{before}-any")).await?;
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        panic!("{e:#}\n{}", browser.diagnostics().await);
    }
    browser.close().await.unwrap();
    let stored = client.plans().await.unwrap().into_iter().find(|p| p.plan.name == "demo").unwrap();
    let suites: Vec<&str> = stored.plan.entries.iter().map(|e| e.suite.as_str()).collect();
    assert_eq!(suites, [format!("sha256:{kv_server}"), format!("sha256:{kv_client}")]);
    let roles: Vec<String> = stored.plan.entries.iter().map(|e| e.role_name()).collect();
    assert_eq!(roles, ["server", "client"], "the roles stay");
    let hook = &stored.plan.notify[0];
    assert_eq!(
        (hook.url.as_str(), hook.on, hook.format),
        ("https://hooks.example.com/ensemble", NotifyOn::Failed, NotifyFormat::Slack)
    );
    assert_eq!(stored.plan.schedule[0].timezone, "Asia/Tokyo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_suites_search_the_token_prompt_and_the_matrix_keep_things_in_view() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    server.wait_online(1).await;
    server.upload(ensemble_artifacts::MANY_TESTS, "many-tests").await;
    let basics = format!("sha256:{}", server.upload(ensemble_artifacts::BASICS, "basics").await);
    let here = serde_json::json!({ "os": std::env::consts::OS });
    let across = server
        .start_run(serde_json::json!({
            "name": "across",
            "type": "cross-platform",
            "profiles": [{ "name": "one", "labels": here }, { "name": "two", "labels": here }],
            "entries": [{ "suite": basics, "params": { "greeting": "hi" } }],
        }))
        .await;
    server.events(&across).await;

    let browser = Browser::start().await.unwrap();
    let b = &browser;
    let steps = async {
        // No token yet: the prompt says where the server keeps it.
        b.goto(&format!("{}/suites", server.url)).await?;
        b.wait_text("#token-where", "DATA_DIR/token").await?;
        b.fill("#token", TOKEN).await?;
        b.click("#token-submit").await?;
        // A big suite's tests: paged, and searched.
        b.click("article[data-suite='many-tests'] details summary").await?;
        b.wait_text("article[data-suite='many-tests'] .tests-shown", "1–200 of 10000 tests").await?;
        b.click("article[data-suite='many-tests'] .pager .next").await?;
        b.wait_text("article[data-suite='many-tests'] .pager", "page 2 of 50").await?;
        b.wait_text("article[data-suite='many-tests'] .test-list", "t00200").await?;
        b.fill("article[data-suite='many-tests'] .suite-test-search", "t0999").await?;
        b.wait_text("article[data-suite='many-tests'] .tests-shown", "matching \"t0999\"").await?;
        let listed =
            b.client.find_all(Locator::Css("article[data-suite='many-tests'] .test-list li")).await?.len();
        anyhow::ensure!(listed == 10, "{listed} tests listed for t0999");

        // A cross-platform run: a chip filters the matrix too, and brings
        // the table into view.
        b.goto(&format!("{}/runs/{across}", server.url)).await?;
        b.wait_css("#matrix").await?;
        b.wait_text("#run-state", "failed").await?;
        b.click("li[data-count='failed'] button").await?;
        b.wait_css("#matrix-filtered").await?;
        let rows = b.client.find_all(Locator::Css("#matrix tbody tr")).await?;
        for row in &rows {
            anyhow::ensure!(
                row.text().await?.contains("failed"),
                "a matrix row without a failure: {}",
                row.text().await?
            );
        }
        let shown = b.execute(IN_VIEW, vec!["#tests-panel".into()]).await?;
        anyhow::ensure!(shown == true, "the table is out of view after the chip");
        // The selected test's detail stays in view as the page scrolls.
        b.click("#tests tr[data-test] button").await?;
        b.wait_css("#test-detail .detail-name").await?;
        b.execute("window.scrollTo(0, document.body.scrollHeight)", vec![]).await?;
        let shown = b.execute(IN_VIEW, vec!["#test-detail".into()]).await?;
        anyhow::ensure!(shown == true, "the detail scrolled away");
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        panic!("{e:#}\n{}", browser.diagnostics().await);
    }
    browser.close().await.unwrap();
}
