//! Every page of the app passes axe-core's automated accessibility checks
//! (from npm, installed by `.ci/run` into `target/ci-node`, injected into the
//! page) with no serious or critical violation.

use ensemble_tests::browser::{Browser, app_pages};
use ensemble_tests::{repo_root, start_server};

const TOKEN: &str = "a11y-token";

/// axe-core's script, as `.ci/run` installs it.
fn axe() -> String {
    let path = repo_root().join("target/ci-node/node_modules/axe-core/axe.min.js");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; .ci/run installs it (npm install --prefix target/ci-node axe-core@4.10.3)",
            path.display()
        )
    })
}

/// Runs axe on the page; the serious and critical violations, each with
/// the elements it found them on.
const RUN: &str = r#"
const done = arguments[arguments.length - 1];
axe.run(document, { resultTypes: ['violations'] }).then((r) => {
  done(r.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.impact} ${v.id}: ${v.help} — ` + v.nodes.slice(0, 4).map((n) => n.target.join(' ')).join(', ')));
}, (e) => done([`axe failed: ${e}`]));
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_passes_axe_without_serious_violations() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    let pages = app_pages(&server, ensemble_artifacts::BASICS).await;
    let axe = axe();
    let browser = Browser::start().await.unwrap();
    let b = &browser;
    let mut found = Vec::new();
    for (path, ready) in &pages {
        let steps = async {
            let sep = if path.contains('?') { '&' } else { '?' };
            b.goto(&format!("{}{path}{sep}token={TOKEN}", server.url)).await?;
            b.wait_css(ready).await?;
            b.execute(&axe, vec![]).await?;
            b.execute_async(RUN, vec![]).await
        };
        let violations = match steps.await {
            Ok(v) => v,
            Err(e) => panic!("{path}: {e:#}\n{}", browser.diagnostics().await),
        };
        for v in violations.as_array().unwrap() {
            found.push(format!("{path}: {}", v.as_str().unwrap()));
        }
    }
    browser.close().await.unwrap();
    assert!(found.is_empty(), "accessibility violations:\n{}", found.join("\n"));
}
