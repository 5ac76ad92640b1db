//! The plan editor does not drop unsaved edits without a word: following a
//! link away asks first (and stays when told to), the browser is asked to
//! prompt before the page unloads, and once saved nothing asks.

use ensemble_tests::browser::Browser;
use ensemble_tests::start_server;

const TOKEN: &str = "editor-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsaved_changes_ask_before_they_are_left() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    let suite = format!("sha256:{}", server.upload(ensemble_artifacts::HELLO_COMMAND, "hello").await);
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
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        panic!("{e:#}\n{}", browser.diagnostics().await);
    }
    browser.close().await.unwrap();
}
