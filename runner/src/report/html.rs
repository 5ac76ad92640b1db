//! The static HTML report: one self-contained file (no network, opens from
//! disk) with the run's counts, a timeline per machine, the test table with
//! a filter, and each test's message, output, log lines and attachments
//! (embedded as `data:` links, so they download from the file alone).
//!
//! The results go into the page as JSON; a small script draws the table a
//! page of rows at a time, so it stays usable at tens of thousands of tests.
//! Every text from a suite is set as text, never as markup.

use std::collections::HashMap;
use std::path::PathBuf;

use ensemble_protocol::{Event, EventKind, Summary, Verdict};
use serde::Serialize;

use super::Reporter;

pub struct HtmlReport {
    path: PathBuf,
    report: Report,
    /// (shard, test) → its row, and when its last attempt started.
    rows: HashMap<(u32, String), usize>,
    started: HashMap<(u32, String), i64>,
}

/// What the page shows, as it reads it.
#[derive(Default, Serialize)]
struct Report {
    run: String,
    plan: String,
    verdict: Option<Verdict>,
    summary: Summary,
    duration_ms: u64,
    filtered_out: u64,
    cancelled: Option<String>,
    /// The run's first event, microseconds: the timeline's zero.
    t0_us: i64,
    shard_errors: Vec<ShardError>,
    tests: Vec<Row>,
    /// What happened to the run's services, faults among it, in order.
    services: Vec<ServiceMark>,
}

/// One moment of a service's life on the timeline: a state it reported or
/// a fault step.
#[derive(Serialize)]
struct ServiceMark {
    /// Microseconds from `t0_us`.
    at_us: i64,
    service: String,
    /// The instance's machine (the caller's for a fault's ask).
    machine: String,
    /// `state` or `fault`.
    kind: &'static str,
    text: String,
    /// A failure: a fault that failed, a service that failed or exited.
    bad: bool,
}

#[derive(Serialize)]
struct ShardError {
    role: String,
    machine: String,
    error: String,
}

#[derive(Serialize)]
struct Row {
    role: String,
    machine: String,
    suite: String,
    test: String,
    outcome: Option<&'static str>,
    duration_ms: u64,
    attempt: u32,
    /// Start and end on the run's timeline, microseconds from `t0_us`.
    start_us: Option<i64>,
    end_us: Option<i64>,
    message: Option<String>,
    output: String,
    logs: Vec<(String, String)>,
    attachments: Vec<Attachment>,
}

#[derive(Serialize)]
struct Attachment {
    name: String,
    size: u64,
    /// The bytes (base64); none when the events came without them.
    data: Option<ensemble_protocol::attachment::Blob>,
}

impl HtmlReport {
    pub fn new(path: PathBuf) -> Self {
        Self { path, report: Report::default(), rows: HashMap::new(), started: HashMap::new() }
    }

    fn row(&mut self, shard: &ensemble_protocol::ShardRef, test: &str) -> &mut Row {
        let key = (shard.shard, test.to_string());
        let tests = &mut self.report.tests;
        let i = *self.rows.entry(key).or_insert_with(|| {
            tests.push(Row {
                role: shard.role.clone(),
                machine: shard.machine.clone(),
                suite: shard.suite.clone(),
                test: test.to_string(),
                outcome: None,
                duration_ms: 0,
                attempt: 0,
                start_us: None,
                end_us: None,
                message: None,
                output: String::new(),
                logs: Vec::new(),
                attachments: Vec::new(),
            });
            tests.len() - 1
        });
        &mut self.report.tests[i]
    }

    /// The page, with `report` in it.
    fn page(report: &Report) -> String {
        // `<` only occurs inside JSON strings, where `\u003c` means the
        // same: no text of a test can close the script element.
        let data = serde_json::to_string(report).expect("a report serializes").replace('<', "\\u003c");
        let title = html_escape(&format!("{} · run {}", report.plan, report.run));
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{BODY}\n\
             <script id=\"data\" type=\"application/json\">{data}</script>\n<script>{SCRIPT}</script>\n\
             </body>\n</html>\n"
        )
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

impl Reporter for HtmlReport {
    fn event(&mut self, event: &Event) -> anyhow::Result<()> {
        if self.report.run.is_empty() {
            self.report.run = event.run.clone();
            self.report.t0_us = event.at_us;
        }
        let at = event.at_us - self.report.t0_us;
        match &event.kind {
            EventKind::RunStarted { plan, .. } => self.report.plan = plan.clone(),
            EventKind::ShardStarted { shard, tests, filtered_out } => {
                self.report.filtered_out += u64::from(*filtered_out);
                for t in tests {
                    self.row(shard, t);
                }
            }
            EventKind::TestStarted { shard, test, .. } => {
                self.started.insert((shard.shard, test.clone()), at);
                self.row(shard, test);
            }
            EventKind::TestFinished { shard, test, outcome, duration_ms, attempt, message, output } => {
                let start = self.started.get(&(shard.shard, test.clone())).copied();
                let row = self.row(shard, test);
                row.outcome = Some(outcome.as_str());
                row.duration_ms = *duration_ms;
                row.attempt = *attempt;
                // A log may claim any duration: it is checked, never wrapped.
                let took_us = i64::try_from(*duration_ms).unwrap_or(i64::MAX).saturating_mul(1000);
                row.start_us = start.or(Some(at.saturating_sub(took_us)));
                row.end_us = Some(at);
                row.message = message.clone();
                row.output = output.clone();
            }
            EventKind::Log { shard, test, level, message } => {
                self.row(shard, test).logs.push((level.clone(), message.clone()));
            }
            EventKind::Attachment { shard, test, name, size, data, .. } => {
                let attachment = Attachment { name: name.clone(), size: *size, data: data.clone() };
                self.row(shard, test).attachments.push(attachment);
            }
            EventKind::Service { shard, service, state } => {
                use ensemble_protocol::service::ServiceState as S;
                let (text, bad) = match state {
                    S::Started { pid, .. } => (format!("started (pid {pid})"), false),
                    S::Ready { after_ms, .. } => (format!("ready after {after_ms} ms"), false),
                    S::Stopping => ("stopping".to_string(), false),
                    S::Exited { status, expected, .. } => (format!("exited ({status})"), !*expected),
                    S::Failed { message } => (format!("failed: {message}"), true),
                    S::Paused => ("paused".to_string(), false),
                    S::Resumed => ("resumed".to_string(), false),
                    S::Signalled { signal } => (format!("sent {signal}"), false),
                };
                self.report.services.push(ServiceMark {
                    at_us: at,
                    service: service.clone(),
                    machine: shard.machine.clone(),
                    kind: "state",
                    text,
                    bad,
                });
            }
            EventKind::Fault { shard, service, action, test, step, .. } => {
                use ensemble_protocol::fault::FaultStep;
                let what = action.describe();
                let (text, bad) = match step {
                    FaultStep::Asked { .. } => (format!("{what} asked by {} ({test})", shard.role), false),
                    FaultStep::Done { took_ms } => (format!("{what} done in {took_ms} ms"), false),
                    FaultStep::Failed { message } => (format!("{what} failed: {message}"), true),
                };
                self.report.services.push(ServiceMark {
                    at_us: at,
                    service: service.clone(),
                    machine: shard.machine.clone(),
                    kind: "fault",
                    text,
                    bad,
                });
            }
            EventKind::ShardFinished { shard, error: Some(error), .. } => {
                self.report.shard_errors.push(ShardError {
                    role: shard.role.clone(),
                    machine: shard.machine.clone(),
                    error: error.clone(),
                });
            }
            EventKind::RunFinished { summary, duration_ms, cancelled, verdict, .. } => {
                self.report.summary = *summary;
                self.report.duration_ms = *duration_ms;
                self.report.cancelled = cancelled.as_ref().map(|c| c.to_string());
                self.report.verdict = Some(*verdict);
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        std::fs::write(&self.path, Self::page(&self.report))
            .map_err(|e| anyhow::anyhow!("writing the HTML report {}: {e}", self.path.display()))
    }
}

const STYLE: &str = r#"
:root { font-family: system-ui, sans-serif; color: #1b2330; background: #f7f8fa; }
body { margin: 0; padding: 1rem 1.5rem 3rem; }
h1 { font-size: 1.4rem; margin: 0 0 .25rem; }
.muted { color: #5b6577; }
.verdict { display: inline-block; padding: .1rem .6rem; border-radius: 1rem; font-weight: 600; }
.verdict.passed { background: #d9f2e1; color: #14532d; }
.verdict.failed { background: #fde2e2; color: #7f1d1d; }
.verdict.cancelled { background: #eceff3; }
#counts { display: flex; flex-wrap: wrap; gap: .5rem; list-style: none; padding: 0; }
#counts li { background: #fff; border: 1px solid #dde1e8; border-radius: .4rem; padding: .3rem .7rem; }
#timeline { background: #fff; border: 1px solid #dde1e8; border-radius: .4rem; padding: .5rem; overflow-x: auto; }
.lane { display: flex; align-items: center; gap: .5rem; height: 22px; }
.lane-name { width: 12rem; flex: none; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; font-size: .85rem; }
.lane-track { position: relative; flex: 1; height: 14px; background: #f0f2f5; min-width: 300px; }
.bar { position: absolute; top: 0; height: 14px; min-width: 1px; background: #16a34a; }
.bar.failed, .bar.timed-out, .bar.crashed, .bar.lost { background: #dc2626; }
.bar.skipped, .bar.cancelled { background: #9ca3af; }
.bar.flaky { background: #d97706; }
.mark { position: absolute; top: -2px; width: 3px; height: 18px; background: #2563eb; }
.mark.fault { background: #7c3aed; width: 5px; }
.mark.bad { background: #dc2626; }
#faults td.bad { color: #b91c1c; font-weight: 600; }
#controls { display: flex; flex-wrap: wrap; gap: .5rem; margin: 1rem 0 .5rem; }
#controls input { flex: 1; min-width: 12rem; padding: .4rem; }
table { width: 100%; border-collapse: collapse; background: #fff; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #eceff3; font-size: .9rem; }
tbody tr { cursor: pointer; }
tbody tr:hover, tbody tr.selected { background: #eef4ff; }
td.outcome.failed, td.outcome.timed-out, td.outcome.crashed, td.outcome.lost { color: #b91c1c; font-weight: 600; }
td.outcome.passed { color: #15803d; }
#detail { background: #fff; border: 1px solid #dde1e8; border-radius: .4rem; padding: .5rem 1rem; margin-top: 1rem; }
pre { white-space: pre-wrap; word-break: break-word; background: #f3f4f6; padding: .5rem; border-radius: .3rem; }
button { padding: .4rem .8rem; }
@media (max-width: 600px) { .lane-name { width: 6rem; } td:nth-child(3), th:nth-child(3) { display: none; } }
"#;

const BODY: &str = r#"<header>
<h1 id="title"></h1>
<p class="muted" id="about"></p>
</header>
<ul id="counts" aria-label="counts"></ul>
<div id="errors"></div>
<h2>Timeline</h2>
<div id="timeline" aria-label="timeline, a lane per machine and per service"></div>
<section id="services-section" hidden>
<h2>Services and faults</h2>
<table id="faults"><thead><tr><th>time</th><th>service</th><th>machine</th><th>what</th></tr></thead><tbody></tbody></table>
</section>
<h2>Tests</h2>
<div id="controls">
<input id="filter" type="search" placeholder="filter: test, role, machine or message" aria-label="filter the tests">
<select id="show" aria-label="which outcomes">
<option value="all">every outcome</option>
<option value="problems">failed, timed out, crashed, lost</option>
<option value="passed">passed</option>
<option value="skipped">skipped</option>
<option value="cancelled">cancelled</option>
</select>
</div>
<p class="muted" id="shown"></p>
<table id="tests"><thead><tr><th>outcome</th><th>test</th><th>role @ machine</th><th>time</th></tr></thead><tbody></tbody></table>
<p><button type="button" id="more" hidden>Show more</button></p>
<section id="detail" hidden aria-live="polite"></section>"#;

const SCRIPT: &str = r#"
(function () {
  const data = JSON.parse(document.getElementById('data').textContent);
  const $ = (id) => document.getElementById(id);
  const el = (tag, text, cls) => { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; };
  const secs = (ms) => (ms / 1000).toFixed(3) + ' s';
  const problem = (o) => o === 'failed' || o === 'timed-out' || o === 'crashed' || o === 'lost';
  $('title').textContent = 'Plan ' + data.plan + ' ';
  const v = el('span', data.verdict || 'unfinished', 'verdict ' + (data.verdict || ''));
  v.id = 'verdict';
  $('title').appendChild(v);
  $('about').textContent = 'Run ' + data.run + ' · ' + secs(data.duration_ms) + ' · ' + new Date(data.t0_us / 1000).toISOString();
  const s = data.summary;
  const counts = [['passed', s.passed], ['failed', s.failed], ['timed out', s.timed_out], ['crashed', s.crashed],
    ['lost', s.lost], ['flaky', s.flaky], ['skipped', s.skipped], ['cancelled', s.cancelled], ['filtered out', data.filtered_out]];
  for (const [label, n] of counts) {
    if (!n && label !== 'passed' && label !== 'failed') continue;
    const li = el('li'); li.dataset.count = label; li.appendChild(el('strong', String(n || 0))); li.appendChild(document.createTextNode(' ' + label));
    $('counts').appendChild(li);
  }
  if (data.cancelled) $('errors').appendChild(el('p', 'Stopped early: ' + data.cancelled));
  for (const e of data.shard_errors) $('errors').appendChild(el('p', 'Shard of ' + e.role + ' on ' + e.machine + ' failed: ' + e.error));

  // The timeline: a lane per machine, a bar per test.
  const lanes = new Map();
  let end = 1;
  for (const t of data.tests) { if (t.end_us) end = Math.max(end, t.end_us); }
  for (const m of data.services) end = Math.max(end, m.at_us);
  for (const t of data.tests) {
    if (t.start_us == null || t.end_us == null) continue;
    if (!lanes.has(t.machine)) {
      const lane = el('div', undefined, 'lane'); lane.dataset.machine = t.machine;
      lane.appendChild(el('span', t.machine, 'lane-name'));
      const track = el('div', undefined, 'lane-track'); lane.appendChild(track);
      $('timeline').appendChild(lane); lanes.set(t.machine, track);
    }
    const bar = el('div', undefined, 'bar ' + t.outcome);
    bar.style.left = (100 * Math.max(0, t.start_us) / end) + '%';
    bar.style.width = (100 * Math.max(0, t.end_us - t.start_us) / end) + '%';
    bar.title = t.role + ' ' + t.test + ': ' + t.outcome + ' in ' + secs(t.duration_ms);
    lanes.get(t.machine).appendChild(bar);
  }
  // A lane per service, a mark per state and fault; and the list of them.
  const serviceLanes = new Map();
  for (const m of data.services) {
    if (!serviceLanes.has(m.service)) {
      const lane = el('div', undefined, 'lane'); lane.dataset.service = m.service;
      lane.appendChild(el('span', 'service ' + m.service, 'lane-name'));
      const track = el('div', undefined, 'lane-track'); lane.appendChild(track);
      $('timeline').appendChild(lane); serviceLanes.set(m.service, track);
    }
    const mark = el('div', undefined, 'mark ' + m.kind + (m.bad ? ' bad' : ''));
    mark.style.left = (100 * Math.max(0, m.at_us) / end) + '%';
    mark.title = secs(m.at_us / 1000) + ' ' + m.service + ' on ' + m.machine + ': ' + m.text;
    serviceLanes.get(m.service).appendChild(mark);
    const tr = el('tr'); tr.dataset.kind = m.kind;
    tr.appendChild(el('td', secs(m.at_us / 1000)));
    tr.appendChild(el('td', m.service));
    tr.appendChild(el('td', m.machine));
    tr.appendChild(el('td', (m.kind === 'fault' ? 'fault: ' : '') + m.text, m.bad ? 'bad' : ''));
    document.querySelector('#faults tbody').appendChild(tr);
  }
  $('services-section').hidden = data.services.length === 0;

  // The table, a page at a time.
  const PAGE = 500;
  let shown = PAGE, rows = [];
  const matches = (t, q, show) => {
    if (show === 'problems' && !problem(t.outcome)) return false;
    if (show === 'passed' && t.outcome !== 'passed' && t.outcome !== 'flaky') return false;
    if (show === 'skipped' && t.outcome !== 'skipped') return false;
    if (show === 'cancelled' && t.outcome !== 'cancelled') return false;
    if (!q) return true;
    return [t.test, t.role, t.machine, t.suite, t.message || ''].some((x) => x.toLowerCase().includes(q));
  };
  const detail = (t, tr) => {
    for (const r of document.querySelectorAll('tbody tr.selected')) r.classList.remove('selected');
    tr.classList.add('selected');
    const d = $('detail'); d.hidden = false; d.replaceChildren();
    d.appendChild(el('h3', t.test));
    d.appendChild(el('p', (t.outcome || 'not finished') + ' · ' + t.role + ' on ' + t.machine + ' · suite ' + t.suite + ' · ' + secs(t.duration_ms) + (t.attempt > 1 ? ' · attempt ' + t.attempt : ''), 'muted'));
    if (t.message) { d.appendChild(el('h4', 'Message')); d.appendChild(el('pre', t.message, 'message')); }
    if (t.output) { d.appendChild(el('h4', 'Output')); d.appendChild(el('pre', t.output, 'output')); }
    if (t.logs.length) { d.appendChild(el('h4', 'Log')); d.appendChild(el('pre', t.logs.map(([l, m]) => l + ' ' + m).join('\n'), 'logs')); }
    if (t.attachments.length) {
      d.appendChild(el('h4', 'Attachments'));
      const list = el('ul', undefined, 'attachments');
      for (const a of t.attachments) {
        const li = el('li');
        if (a.data != null) {
          // Always a download: the bytes come from a suite.
          const link = el('a', a.name); link.href = 'data:application/octet-stream;base64,' + a.data; link.download = a.name;
          li.appendChild(link);
        } else {
          li.appendChild(el('span', a.name));
        }
        li.appendChild(document.createTextNode(' (' + a.size + ' bytes' + (a.data == null ? ', not in this report' : '') + ')'));
        list.appendChild(li);
      }
      d.appendChild(list);
    }
  };
  const draw = () => {
    const q = $('filter').value.trim().toLowerCase(), show = $('show').value;
    rows = data.tests.filter((t) => matches(t, q, show));
    const body = document.querySelector('#tests tbody');
    body.replaceChildren();
    for (const t of rows.slice(0, shown)) {
      const tr = el('tr'); tr.dataset.test = t.test; tr.dataset.role = t.role;
      tr.appendChild(el('td', t.outcome || 'not finished', 'outcome ' + (t.outcome || '')));
      tr.appendChild(el('td', t.test));
      tr.appendChild(el('td', t.role + ' @ ' + t.machine));
      tr.appendChild(el('td', secs(t.duration_ms)));
      tr.addEventListener('click', () => detail(t, tr));
      body.appendChild(tr);
    }
    $('shown').textContent = Math.min(shown, rows.length) + ' of ' + rows.length + ' tests shown (' + data.tests.length + ' in the run)';
    $('more').hidden = rows.length <= shown;
  };
  $('filter').addEventListener('input', () => { shown = PAGE; draw(); });
  $('show').addEventListener('change', () => { shown = PAGE; draw(); });
  $('more').addEventListener('click', () => { shown += PAGE; draw(); });
  if (data.tests.some((t) => problem(t.outcome))) $('show').value = 'problems';
  draw();
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_text_of_a_test_can_close_the_data_script() {
        let mut report = Report { plan: "<b>p</b>".into(), ..Report::default() };
        report.tests.push(Row {
            role: "r".into(),
            machine: "m".into(),
            suite: "s".into(),
            test: "</script><script>alert(1)</script>".into(),
            outcome: Some("failed"),
            duration_ms: 1,
            attempt: 1,
            start_us: Some(0),
            end_us: Some(1),
            message: Some("<!-- x".into()),
            output: String::new(),
            logs: vec![],
            attachments: vec![Attachment {
                name: "</script>.txt".into(),
                size: 1,
                data: Some(ensemble_protocol::attachment::Blob(b"<".to_vec())),
            }],
        });
        let page = HtmlReport::page(&report);
        assert_eq!(page.matches("</script>").count(), 2, "only the page's own two scripts close");
        assert!(!page.contains("<!-- x") && !page.contains("<b>p</b>"), "{page}");
        assert!(!page.contains("http://") && !page.contains("https://"), "nothing to fetch");
    }

    #[test]
    fn a_claimed_duration_of_any_size_is_drawn_without_overflow() {
        let mut html = HtmlReport::new(PathBuf::from("unused.html"));
        let shard = ensemble_protocol::ShardRef {
            shard: 1,
            machine: "m".into(),
            role: "r".into(),
            suite: "s".into(),
            instance: 0,
        };
        let kind = EventKind::TestFinished {
            shard,
            test: "t".into(),
            outcome: ensemble_protocol::Outcome::Passed,
            duration_ms: u64::MAX,
            attempt: 1,
            message: None,
            output: String::new(),
        };
        html.event(&Event { run: "r".into(), seq: 1, at_us: 5, machine_at_us: None, kind }).unwrap();
        let row = &html.report.tests[0];
        assert!(row.start_us.unwrap() < row.end_us.unwrap(), "{:?}..{:?}", row.start_us, row.end_us);
    }
}
