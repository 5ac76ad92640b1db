//! Every page of the app passes axe-core's automated accessibility checks
//! (from npm, installed by the test command, `cargo xtask test`, into `target/ci-node`, injected into the
//! page) with no serious or critical violation, and everything the keyboard
//! reaches shows that it has the focus.

use ensemble_tests::browser::{Browser, app_pages};
use ensemble_tests::{repo_root, start_server};

const TOKEN: &str = "a11y-token";

/// axe-core's script, as `cargo xtask test` installs it.
fn axe() -> String {
    let path = repo_root().join("target/ci-node/node_modules/axe-core/axe.min.js");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{}: {e}; the test command (`cargo xtask test`) installs it", path.display())
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

/// The focused element: what it is, and whether it shows its focus (an
/// outline or a ring; a control hidden behind its label, on the label).
const FOCUSED: &str = r#"
const el = document.activeElement;
if (!el || el === document.body || el === document.documentElement) return null;
const shows = (e) => {
  const s = getComputedStyle(e);
  return (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0) || s.boxShadow !== 'none';
};
const r = el.getBoundingClientRect();
const hidden = r.width <= 1 || r.height <= 1;
const ok = hidden ? [...(el.labels || [])].some(shows) : shows(el);
const what = el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
  + (el.className && typeof el.className === 'string' ? '.' + el.className.trim().split(/\s+/).join('.') : '')
  + ' "' + (el.innerText || el.value || el.getAttribute('aria-label') || '').trim().slice(0, 40) + '"';
return { what, ok };
"#;

/// Tab presses per page at most (the pages' focusable things and more).
const TABS: usize = 80;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_the_keyboard_reaches_shows_its_focus() {
    use fantoccini::actions::{InputSource, KeyAction, KeyActions};
    use fantoccini::key::Key;
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    let pages = app_pages(&server, ensemble_artifacts::BASICS).await;
    let browser = Browser::start().await.unwrap();
    let b = &browser;
    let mut unseen = std::collections::BTreeSet::new();
    let mut reached = 0;
    for (path, ready) in &pages {
        let steps = async {
            let sep = if path.contains('?') { '&' } else { '?' };
            b.goto(&format!("{}{path}{sep}token={TOKEN}", server.url)).await?;
            b.wait_css(ready).await?;
            let mut seen = std::collections::HashSet::new();
            for _ in 0..TABS {
                let tab = char::from(Key::Tab);
                let press = KeyActions::new("keyboard".into())
                    .then(KeyAction::Down { value: tab })
                    .then(KeyAction::Up { value: tab });
                b.client.perform_actions(press).await?;
                let focused = b.execute(FOCUSED, vec![]).await?;
                let Some(what) = focused["what"].as_str() else { continue };
                if !seen.insert(what.to_string()) {
                    break; // around once
                }
                reached += 1;
                if focused["ok"] != true {
                    unseen.insert(format!("{path}: {what}"));
                }
            }
            anyhow::Ok(())
        };
        if let Err(e) = steps.await {
            panic!("{path}: {e:#}\n{}", browser.diagnostics().await);
        }
    }
    browser.close().await.unwrap();
    assert!(reached > 20, "the keyboard reached only {reached} things");
    assert!(unseen.is_empty(), "focus not shown on:\n{}", unseen.into_iter().collect::<Vec<_>>().join("\n"));
}
