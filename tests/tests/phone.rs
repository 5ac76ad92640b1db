//! The app on phones (390×844 and 360×740 CSS pixels, Chromium's mobile
//! emulation), with what a day of use leaves on the server: a plan with a
//! schedule and webhooks, flaky tests, a rerun, a test lost with its
//! machine, a drained machine, a cross-platform matrix. On every page:
//! nothing scrolls sideways (the page, the matrix), every button, chip and
//! checkbox is a tap target of at least 40 px, the timeline's axis labels do
//! not collide and its lane names are not cut, the zero counts are one
//! line, and the tests table keeps the machine. With
//! `ENSEMBLE_UPDATE_SCREENSHOTS=1` it writes the README's and the book's screenshots of
//! the run page (a rerun whose test was lost) on a phone and on a desktop.

use ensemble_protocol::EventKind;
use ensemble_tests::browser::{Browser, app_pages, screenshot};
use ensemble_tests::{Server, start_runner, start_server};
use serde_json::json;

const TOKEN: &str = "phone-token";

/// What is wrong with the page on a phone, as a list of problems.
const CHECK: &str = r#"
const W = document.documentElement.clientWidth;
const problems = [];
// Hidden for the eye but kept for screen readers (clipped), or not there.
const clipped = (el) => {
  for (let a = el; a; a = a.parentElement) {
    const s = getComputedStyle(a);
    if ((s.clip && s.clip !== 'auto') || s.clipPath !== 'none') return true;
  }
  return false;
};
const shown = (el) => {
  const r = el.getBoundingClientRect();
  return r.width > 0 && r.height > 0 && getComputedStyle(el).visibility !== 'hidden' && !clipped(el);
};
const what = (el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
  + (typeof el.className === 'string' && el.className ? '.' + el.className.trim().split(/\s+/).join('.') : '')
  + ' "' + (el.innerText || el.getAttribute('aria-label') || '').trim().slice(0, 30) + '"';
if (document.documentElement.scrollWidth > W) problems.push('the page is ' + document.documentElement.scrollWidth + ' px wide');
for (const el of document.querySelectorAll('body *')) {
  if (!shown(el)) continue;
  const r = el.getBoundingClientRect();
  if (r.right > W + 0.5 && !(el.parentElement && el.parentElement.getBoundingClientRect().right > W + 0.5)) {
    problems.push('sticks out: ' + what(el) + ' to ' + Math.round(r.right));
  }
  const s = getComputedStyle(el);
  if ((s.overflowX === 'auto' || s.overflowX === 'scroll') && el.scrollWidth > el.clientWidth + 1) {
    problems.push('scrolls sideways inside: ' + what(el));
  }
}
for (const el of document.querySelectorAll('button, a.button, .count-filter')) {
  if (el.classList.contains('bar') || !shown(el)) continue;
  const h = el.getBoundingClientRect().height;
  if (h < 39.5) problems.push('a ' + Math.round(h) + ' px tap target: ' + what(el));
}
for (const el of document.querySelectorAll('input[type=checkbox], input[type=radio]')) {
  if (!shown(el)) continue;
  const box = el.closest('label, .field, .choice') || el;
  const h = box.getBoundingClientRect().height;
  if (h < 39.5) problems.push('a ' + Math.round(h) + ' px checkbox: ' + what(el));
}
const ticks = [...document.querySelectorAll('.axis .tick')].filter(shown).map((t) => t.getBoundingClientRect()).sort((a, b) => a.left - b.left);
for (let i = 1; i < ticks.length; i++) if (ticks[i].left < ticks[i - 1].right) problems.push('axis labels collide');
for (const el of document.querySelectorAll('.track-name')) {
  if (shown(el) && el.scrollWidth > el.clientWidth + 1) problems.push('a cut lane name: ' + el.textContent);
}
if ([...document.querySelectorAll('.summary .count.zero')].filter(shown).length > 0) problems.push('zero counts one by one');
const machine = document.querySelector('#tests thead th:nth-child(4)');
if (machine && !shown(machine)) problems.push('the tests table lost its machine column');
return problems;
"#;

/// A run of run `id`'s failures.
fn rerun_of(id: &str) -> ensemble_protocol::api::RunRequest {
    ensemble_protocol::api::RunRequest { rerun_failed: Some(id.to_string()), ..Default::default() }
}

/// The pages, with a day of use on the server: [`app_pages`] and a rerun
/// of its run, a flaky test (its plan ran again, passing), a stored plan
/// with a schedule and webhooks, a rerun whose test was lost with its
/// machine, and a drained machine. The rerun with the lost test comes first.
async fn a_day_of_use(dir: &std::path::Path, server: &Server) -> Vec<(String, &'static str)> {
    let client = server.client();
    let mut lost_box = start_runner(dir, server, "lost-box", &["site=far"], None);
    let _drained_box = start_runner(dir, server, "drained-box", &["site=near"], None);
    server.wait_online(3).await;
    // A test that times out at its barrier, rerun; the rerun's test is
    // lost with its machine (the server gives up on it after 10 s).
    let far = json!({ "labels": { "site": "far" } });
    let timed_out = server
        .start_stuck_run(ensemble_artifacts::BENCH_PARTIES, far, json!({ "test_timeout": "10s" }))
        .await;
    server.events(&timed_out).await;
    let lost = client.start_run(&rerun_of(&timed_out)).await.unwrap().id;
    server.watch(&lost, 1, |e| !matches!(e.kind, EventKind::TestStarted { .. })).await;
    lost_box.kill();
    server.events(&lost).await;
    // A drained machine, gone as asked.
    client.drain_machine("drained-box").await.unwrap();

    let mut pages = app_pages(server, ensemble_artifacts::BASICS).await;
    let first = pages.iter().find_map(|(p, _)| p.strip_prefix("/runs/")).unwrap().to_string();
    // Its failures again: a rerun.
    let rerun = client.start_run(&rerun_of(&first)).await.unwrap();
    server.events(&rerun.id).await;
    // The plan again, passing what failed: flaky tests.
    let stored = client.plans().await.unwrap().into_iter().next().unwrap();
    let mut again = serde_json::to_value(&stored.plan).unwrap();
    again["entries"][0]["params"]["greeting"] = "hello".into();
    let passing = server.start_run(again.clone()).await;
    server.events(&passing).await;
    // Schedules and webhooks on the stored plan.
    again["schedule"] = json!([{ "cron": "0 2 * * *", "timezone": "Europe/Berlin" }]);
    again["notify"] = json!([{ "url": "https://hooks.example.com/ensemble", "on": "failed" }]);
    client.update_plan(&stored.id, &serde_json::from_value(again).unwrap()).await.unwrap();
    pages.insert(0, (format!("/runs/{lost}"), "#run-state"));
    pages.push((format!("/runs/{}", rerun.id), "#reruns"));
    pages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_fits_a_phone_and_its_taps() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--heartbeat-timeout", "10s"];
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &args);
    let pages = a_day_of_use(dir.path(), &server).await;
    let mut found = Vec::new();
    for (width, height) in [(390, 844), (360, 740)] {
        let browser = Browser::start_phone(width, height).await.unwrap();
        let b = &browser;
        for (i, (path, ready)) in pages.iter().enumerate() {
            let steps = async {
                let sep = if path.contains('?') { '&' } else { '?' };
                b.goto(&format!("{}{path}{sep}token={}", server.url, server.token)).await?;
                b.wait_css(ready).await?;
                if path.starts_with("/runs/") {
                    // Once the run is all there (its counts are final).
                    b.wait_css("#run-state:not(.running)").await?;
                }
                let width_seen = b.execute("return document.documentElement.clientWidth", vec![]).await?;
                anyhow::ensure!(width_seen == width, "the phone's viewport is {width_seen}");
                if i == 0 && width == 390 {
                    b.wait_text("#summary", "lost").await?;
                    b.wait_css("#reruns").await?;
                    b.screenshot_to(screenshot(dir.path(), "phone-run.png")).await?;
                }
                b.execute(CHECK, vec![]).await
            };
            match steps.await {
                Ok(problems) => found.extend(
                    problems
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| format!("{width} px {path}: {}", p.as_str().unwrap_or_default())),
                ),
                Err(e) => panic!("{width} px {path}: {e:#}\n{}", browser.diagnostics().await),
            }
        }
        browser.close().await.unwrap();
    }
    // The desktop screenshot of the same run.
    let browser = Browser::start_sized(1366, 900).await.unwrap();
    let steps = async {
        browser.goto(&format!("{}{}?token={}", server.url, pages[0].0, server.token)).await?;
        browser.wait_text("#summary", "lost").await?;
        browser.wait_css("#reruns").await?;
        browser.screenshot_to(screenshot(dir.path(), "run-desktop.png")).await
    };
    if let Err(e) = steps.await {
        panic!("{e:#}\n{}", browser.diagnostics().await);
    }
    browser.close().await.unwrap();
    assert!(found.is_empty(), "on a phone:\n{}", found.join("\n"));
}
