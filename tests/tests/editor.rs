//! The plan editor does not drop unsaved edits without a word: following a
//! link away asks first (and stays when told to), the browser is asked to
//! prompt before the page unloads, and once saved nothing asks. Focus
//! follows: to a new page's heading, to a newly added suite's first field.

use ensemble_tests::browser::Browser;
use ensemble_tests::start_server;

const TOKEN: &str = "editor-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsaved_changes_ask_before_they_are_left() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    let sha = &server.upload(ensemble_artifacts::HELLO_COMMAND, "hello").await;
    let suite = format!("sha256:{sha}");
    let plan = serde_json::json!({
        "name": "guarded",
        "profiles": [{ "name": "here" }],
        "entries": [{ "suite": suite, "profile": "here" }],
    });
    let stored = server.client().create_plan(&serde_json::from_value(plan).unwrap()).await.unwrap();

    let browser = Browser::start().await.unwrap();
    let b = &browser;
    let unload_is_stopped = "const e = new Event('beforeunload', { cancelable: true }); \
                             window.dispatchEvent(e); return e.defaultPrevented;";
    let steps = async {
        let page = format!("{}/plans/{}", server.url, stored.id);
        b.goto(&format!("{page}?token={TOKEN}")).await?;
        b.wait_css("#plan-name").await?;
        // Nothing edited: leaving is free.
        anyhow::ensure!(
            b.execute(unload_is_stopped, vec![]).await? == false,
            "an unedited plan stops unloading"
        );

        b.fill("#plan-name", "guarded, renamed").await?;
        b.wait_text("#unsaved", "Unsaved changes").await?;
        anyhow::ensure!(b.execute(unload_is_stopped, vec![]).await? == true, "unloading is not stopped");
        // A link away asks; told no, the editor stays with the edit.
        b.execute("window.confirm = (q) => { window.asked = q; return false; }", vec![]).await?;
        b.click("nav a[href='/runs']").await?;
        let asked = b.execute("return window.asked", vec![]).await?;
        anyhow::ensure!(asked.as_str().is_some_and(|q| q.starts_with("Leave this plan?")), "{asked}");
        anyhow::ensure!(b.current_url().await?.starts_with(&page), "left the editor");
        let name = b.execute("return document.querySelector('#plan-name').value", vec![]).await?;
        anyhow::ensure!(name == "guarded, renamed", "{name}");

        // Saved: nothing asks any more.
        b.click("#save").await?;
        b.wait_text("#editor-banner", "Saved.").await?;
        b.wait_absent("#unsaved").await?;
        b.execute("window.asked = null", vec![]).await?;
        anyhow::ensure!(b.execute(unload_is_stopped, vec![]).await? == false, "a saved plan stops unloading");
        b.click("nav a[href='/runs']").await?;
        b.wait_text("h1", "Runs").await?;
        let asked = b.execute("return window.asked", vec![]).await?;
        anyhow::ensure!(asked.is_null(), "asked after saving: {asked}");
        // Focus moved to the new page's heading.
        let focused =
            "const e = document.activeElement; return e ? e.tagName + ' ' + (e.id || e.textContent) : ''";
        b.wait_until("focus on the heading", async |c| {
            let f = c.execute(focused, vec![]).await?;
            Ok(f.as_str().filter(|f| *f == "H1 Runs").map(str::to_string))
        })
        .await?;

        // A suite added from the catalog: focus goes to its first field.
        b.click("nav a[href='/']").await?;
        b.click("main a[href='/plans/new']").await?;
        b.wait_css("#plan-name").await?;
        b.select_by_value("#add-suite-select", sha).await?;
        b.click("#add-suite").await?;
        b.wait_until("focus on the new suite", async |c| {
            let f = c.execute(focused, vec![]).await?;
            Ok(f.as_str().filter(|f| *f == "INPUT entry-0-role").map(str::to_string))
        })
        .await?;
        // The catalog's choice goes back: a second click adds no copy.
        let choice = b.execute("return document.querySelector('#add-suite-select').value", vec![]).await?;
        anyhow::ensure!(choice == "", "the catalog still has {choice} chosen");
        b.wait_css("#add-suite:disabled").await?;
        // Enter in a field does not save: the plan stays new and unsaved.
        b.fill("#plan-name", "not yet").await?;
        b.send_keys("#plan-name", "\u{E007}").await?;
        b.click("#add-profile").await?;
        b.wait_css("#profile-0-name").await?;
        anyhow::ensure!(b.current_url().await?.ends_with("/plans/new"), "Enter saved the plan");
        b.wait_absent("#editor-banner").await?;
        // (A save tried would list the plan's problems: a suite has no profile.)
        b.wait_absent("#editor-problems").await?;
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        panic!("{e:#}\n{}", browser.diagnostics().await);
    }
    browser.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_platform_plan_is_built_saved_run_and_come_back_to() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    server.wait_online(1).await;
    let sha = &server.upload(ensemble_artifacts::HELLO_COMMAND, "hello").await;
    let value = |selector: &str| format!("return document.querySelector({selector:?}).value");

    let browser = Browser::start().await.unwrap();
    let b = &browser;
    let steps = async {
        b.goto(&format!("{}/plans/new?token={TOKEN}", server.url)).await?;
        b.fill("#plan-name", "everywhere").await?;
        b.fill("#plan-description", "Hello on every kind of machine.").await?;
        b.click("input[name='plan-type'][value='cross-platform']").await?;
        b.select_by_value("#add-suite-select", sha).await?;
        b.click("#add-suite").await?;
        b.wait_css("fieldset.entry[data-index='0']").await?;
        // Every suite runs on every profile: no profile of its own to make,
        // no role to name.
        b.wait_absent("#entry-0-new-profile").await?;
        b.wait_absent("#entry-0-role").await?;
        b.click("#add-profile").await?;
        b.wait_text("#profile-0-users", "Used by: hello").await?;
        // The labels of the machines online are one click away.
        let os = b.wait_css("#profile-0-suggestions button[data-label^='os=']").await?;
        let label = os.attr("data-label").await?.unwrap_or_default();
        b.click("#profile-0-suggestions button[data-label^='os=']").await?;
        b.wait_until("the label in the field", async |c| {
            let v = c.execute(&value("#profile-0-labels"), vec![]).await?;
            Ok(v.as_str().filter(|v| *v == label).map(str::to_string))
        })
        .await?;
        b.wait_absent(&format!("#profile-0-suggestions button[data-label='{label}']")).await?;

        // Save and run, then Back: the saved plan, not an empty form.
        b.click("#run").await?;
        b.wait_text("#run-state", "passed").await?;
        b.execute("window.history.back()", vec![]).await?;
        b.wait_until("the saved plan's page", async |c| {
            let url = c.current_url().await?.to_string();
            Ok(url.contains("/plans/").then_some(url).filter(|u| !u.ends_with("/plans/new")))
        })
        .await?;
        b.wait_until("the plan loaded", async |c| {
            let v = c.execute(&value("#plan-description"), vec![]).await?;
            Ok(v.as_str().filter(|v| *v == "Hello on every kind of machine.").map(str::to_string))
        })
        .await?;
        let name = b.execute(&value("#plan-name"), vec![]).await?;
        anyhow::ensure!(name == "everywhere", "{name}");
        b.wait_css("#plan-runs li[data-run]").await?;

        // Saving says so where Save is, in view however long the form.
        b.fill("#plan-name", "everywhere, renamed").await?;
        b.click("#save").await?;
        b.wait_text("#editor-banner", "Saved.").await?;
        let seen = "const r = document.querySelector('#editor-banner').getBoundingClientRect(); \
                    return r.top >= 0 && r.bottom <= window.innerHeight && r.height > 0;";
        anyhow::ensure!(b.execute(seen, vec![]).await? == true, "the Saved banner is out of view");
        // The next edit makes that message stale: it goes.
        b.fill("#plan-description", "Hello everywhere.").await?;
        b.wait_absent("#editor-banner").await?;

        // The plans page shows the description under the name.
        b.click("#save").await?;
        b.wait_text("#editor-banner", "Saved.").await?;
        b.click("nav a[href='/']").await?;
        b.wait_text("tr[data-plan='everywhere, renamed'] .plan-description", "Hello everywhere.").await?;
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        panic!("{e:#}\n{}", browser.diagnostics().await);
    }
    browser.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suites_declared_params_show_and_are_checked_as_they_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    // basics declares greeting (required), expected (default hello), nap_ms.
    let sha = &server.upload(ensemble_artifacts::BASICS, "basics").await;

    let browser = Browser::start().await.unwrap();
    let b = &browser;
    let steps = async {
        b.goto(&format!("{}/plans/new?token={TOKEN}", server.url)).await?;
        b.wait_css("#plan-name").await?;
        b.fill("#plan-name", "greetings").await?;
        b.select_by_value("#add-suite-select", sha).await?;
        b.click("#add-suite").await?;
        // What the suite reads, under the params field: types, required or
        // default, help; the required one not set yet.
        b.wait_text("#entry-0-declared li[data-param='greeting'][data-state='missing']", "string · required")
            .await?;
        b.wait_text("#entry-0-declared li[data-param='greeting']", "the greeting greeting_param checks")
            .await?;
        b.wait_text(
            "#entry-0-declared li[data-param='expected'][data-state='unset']",
            "string · default hello",
        )
        .await?;
        b.wait_text("#entry-0-declared li[data-param='nap_ms']", "integer · default 0").await?;
        // A misspelt param and a mistyped value are named at the field.
        b.fill("#entry-0-params", "greting=hi\nnap_ms=soon").await?;
        b.wait_text("#entry-0-params-error", "requires the param `greeting`").await?;
        b.wait_text("#entry-0-params-error", "did you mean `greeting`?").await?;
        b.wait_text("#entry-0-params-error", "\"soon\" is not an integer").await?;
        // Set right, the problems go and the param shows as set.
        b.fill("#entry-0-params", "greeting=hi\nexpected=hi\nnap_ms=5").await?;
        b.wait_absent("#entry-0-params-error").await?;
        b.wait_css("#entry-0-declared li[data-param='greeting'][data-state='set']").await?;
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        panic!("{e:#}\n{}", browser.diagnostics().await);
    }
    browser.close().await.unwrap();
}
