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
