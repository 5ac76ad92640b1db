//! The terminal reporter: a line per finished test, failures with their
//! message and output, a progress bar while the run goes (only on a terminal),
//! and a readable summary at the end.

use std::io::Write;
use std::time::Duration;

use ensemble_protocol::event::ShardInfo;
use ensemble_protocol::matrix::Matrix;
use ensemble_protocol::{Event, EventKind, Outcome};
use indicatif::{ProgressBar, ProgressStyle};

use super::Reporter;

pub struct TerminalReporter {
    out: Box<dyn Write + Send>,
    bar: ProgressBar,
    /// (label, message) of every failed test, repeated in the summary.
    failures: Vec<(String, String)>,
    /// Print captured output of failing tests.
    show_output: bool,
    /// Tests the selection left out, unreported, over every shard.
    filtered_out: u64,
    /// Entries whose machines divide their tests, by role.
    splits: std::collections::BTreeMap<String, Split>,
    /// The shards of split entries: shard → role.
    split_shards: std::collections::HashMap<u32, String>,
    /// What running tests attached: (shard, test) → "name (size)".
    attached: std::collections::HashMap<(u32, String), Vec<String>>,
    /// The run's shards, and, when a role runs on several profiles (a
    /// cross-platform plan), every test's outcome: the summary compares them.
    shards: Vec<ShardInfo>,
    compared: Option<Vec<(u32, String, Outcome)>>,
}

/// Tests that differ between profiles listed in the summary at most.
const DIFFERENCES_SHOWN: usize = 50;

/// How a split entry's tests fell on its machines.
#[derive(Default)]
struct Split {
    /// Test time per shard, ms.
    per_shard: std::collections::BTreeMap<u32, u64>,
    longest: u64,
    total: u64,
}

impl Split {
    /// The busiest machine's test time against the least it could be
    /// (the longest test, or the total shared evenly, whichever is more).
    fn line(&self, role: &str) -> String {
        let machines = self.per_shard.len().max(1) as u64;
        let busiest = self.per_shard.values().copied().max().unwrap_or(0);
        let bound = self.longest.max(self.total.div_ceil(machines));
        let over = if bound == 0 { 0.0 } else { (busiest as f64 / bound as f64 - 1.0) * 100.0 };
        format!(
            "Split {role} over {machines} machines: the busiest ran tests for {:.3}s, the lower bound is {:.3}s (+{over:.0}%)",
            busiest as f64 / 1000.0,
            bound as f64 / 1000.0
        )
    }
}

impl TerminalReporter {
    pub fn new(out: Box<dyn Write + Send>, progress: bool) -> Self {
        let bar = if progress { ProgressBar::new(0) } else { ProgressBar::hidden() };
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
                .expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Self {
            out,
            bar,
            failures: Vec::new(),
            show_output: true,
            filtered_out: 0,
            splits: Default::default(),
            split_shards: Default::default(),
            attached: Default::default(),
            shards: Vec::new(),
            compared: None,
        }
    }

    /// The lines comparing the run's outcomes across profiles (none when
    /// no role ran on more than one).
    fn matrix_lines(&self) -> Vec<String> {
        let Some(results) = &self.compared else { return Vec::new() };
        // Called at the run's end: every shard has finished.
        let m = Matrix::build(&self.shards, results.iter().map(|(s, t, o)| (*s, t.as_str(), *o)), |_| true);
        if m.columns.is_empty() {
            return Vec::new();
        }
        let columns: Vec<String> =
            m.columns.iter().map(|c| format!("{} ({})", c.profile, c.platform)).collect();
        let mut lines = vec![format!("Across {} profiles: {}", m.columns.len(), columns.join(" · "))];
        let differing = m.differing();
        if differing == 0 {
            lines.push(format!("  all {} tests have the same outcome on every profile", m.rows.len()));
            return lines;
        }
        lines.push(format!("  {differing} of {} tests differ:", m.rows.len()));
        for row in m.rows.iter().filter(|r| r.differs).take(DIFFERENCES_SHOWN) {
            let cells: Vec<String> = m
                .columns
                .iter()
                .zip(&row.cells)
                .map(|(c, o)| format!("{} {}", c.profile, o.map_or("not run", |o| o.as_str())))
                .collect();
            lines.push(format!("    {} {}: {}", row.role, row.test, cells.join(" · ")));
        }
        if differing > DIFFERENCES_SHOWN {
            lines.push(format!("    … and {} more", differing - DIFFERENCES_SHOWN));
        }
        lines
    }

    fn line(&mut self, text: &str) {
        self.bar.suspend(|| {
            let _ = writeln!(self.out, "{text}");
            let _ = self.out.flush();
        });
    }
}

fn tag(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Passed => "    PASS",
        Outcome::Failed => "    FAIL",
        Outcome::Skipped => "    SKIP",
        Outcome::TimedOut => " TIMEOUT",
        Outcome::Crashed => "   CRASH",
        Outcome::Flaky => "   FLAKY",
        Outcome::Lost => "    LOST",
        Outcome::Cancelled => "  CANCEL",
    }
}

impl Reporter for TerminalReporter {
    fn event(&mut self, event: &Event) -> anyhow::Result<()> {
        match &event.kind {
            EventKind::RunQueued { waiting_for } => {
                self.line(&format!("Queued: run {} waits: {waiting_for}", event.run));
            }
            EventKind::RunStarted { plan, shards } => {
                self.line(&format!("Running plan {plan:?}: {} shard(s), run {}", shards.len(), event.run));
                self.shards = shards.clone();
                self.compared = ensemble_protocol::matrix::compares_profiles(shards).then(Vec::new);
                for s in shards {
                    let sh = &s.shard;
                    if s.split {
                        self.split_shards.insert(sh.shard, sh.role.clone());
                        self.splits.entry(sh.role.clone()).or_default().per_shard.insert(sh.shard, 0);
                    }
                    self.line(&format!(
                        "  shard {}: {} ({}) on {} [profile {}]",
                        sh.shard, sh.role, sh.suite, sh.machine, s.profile
                    ));
                }
            }
            EventKind::ShardStarted { tests, filtered_out, .. } => {
                self.bar.inc_length(tests.len() as u64);
                self.filtered_out += u64::from(*filtered_out);
            }
            EventKind::TestStarted { shard, test, .. } => {
                self.bar.set_message(format!("{}::{test}", shard.role))
            }
            EventKind::Attachment { shard, test, name, size, .. } => {
                let file = format!("{name} ({})", ensemble_protocol::units::ByteSize(*size));
                self.attached.entry((shard.shard, test.clone())).or_default().push(file);
            }
            EventKind::TestFinished { shard, test, outcome, duration_ms, attempt, message, output } => {
                self.bar.inc(1);
                if let Some(results) = &mut self.compared {
                    results.push((shard.shard, test.clone(), *outcome));
                }
                if let Some(split) = self.split_shards.get(&shard.shard).and_then(|r| self.splits.get_mut(r))
                {
                    *split.per_shard.entry(shard.shard).or_default() += duration_ms;
                    split.longest = split.longest.max(*duration_ms);
                    split.total += duration_ms;
                }
                let label = format!("{}@{} {test}", shard.role, shard.machine);
                let retry = if *attempt > 1 { format!(" (attempt {attempt})") } else { String::new() };
                let mut text =
                    format!("{} [{:>7.3}s] {label}{retry}", tag(*outcome), *duration_ms as f64 / 1000.0);
                if let Some(m) =
                    message.as_deref().filter(|_| matches!(outcome, Outcome::Skipped | Outcome::Cancelled))
                {
                    text.push_str(&format!(" — {m}"));
                }
                self.line(&text);
                if outcome.is_failure() {
                    let msg = message.clone().unwrap_or_else(|| outcome.to_string());
                    let mut detail = indent(&msg);
                    if self.show_output && !output.trim().is_empty() {
                        detail.push_str(&format!("\n      --- output ---\n{}", indent(output.trim_end())));
                    }
                    if let Some(files) = self.attached.get(&(shard.shard, test.clone())) {
                        detail.push_str(&format!("\n      attached: {}", files.join(", ")));
                    }
                    self.line(&detail);
                    self.failures.push((label, msg.lines().next().unwrap_or_default().to_string()));
                }
                self.attached.remove(&(shard.shard, test.clone()));
            }
            EventKind::Service { shard, service, state } => {
                use ensemble_protocol::service::{ServiceState, join_host_port};
                let text = match state {
                    ServiceState::Started { pid, .. } => {
                        format!("service {service} started on {} (pid {pid})", shard.machine)
                    }
                    ServiceState::Ready { address, after_ms } => match address.port {
                        Some(p) => format!(
                            "service {service} ready at {} after {after_ms} ms",
                            join_host_port(&address.host, p)
                        ),
                        None => format!("service {service} ready on {} after {after_ms} ms", shard.machine),
                    },
                    ServiceState::Stopping => return Ok(()),
                    ServiceState::Exited { status, expected: true, .. } => {
                        format!("service {service} stopped ({status})")
                    }
                    ServiceState::Exited { status, expected: false, .. } => {
                        format!(
                            "service {service} on {} exited ({status}) while the run went on",
                            shard.machine
                        )
                    }
                    ServiceState::Failed { message } => message.clone(),
                    ServiceState::Paused => format!("service {service} on {} paused", shard.machine),
                    ServiceState::Resumed => format!("service {service} on {} resumed", shard.machine),
                    ServiceState::Signalled { signal } => {
                        format!("service {service} on {} sent {signal}", shard.machine)
                    }
                };
                self.line(&format!("  {text}"));
            }
            EventKind::Fault { shard, service, action, test, step, .. } => {
                use ensemble_protocol::fault::FaultStep;
                let what = action.describe();
                let text = match step {
                    FaultStep::Asked { .. } => {
                        format!(
                            "fault: {}@{} {test} asks to {what} service {service}",
                            shard.role, shard.machine
                        )
                    }
                    FaultStep::Done { took_ms } => {
                        format!(
                            "fault: {what} of service {service} on {} done in {took_ms} ms",
                            shard.machine
                        )
                    }
                    FaultStep::Failed { message } => {
                        format!("fault: {what} of service {service} on {} failed: {message}", shard.machine)
                    }
                };
                self.line(&format!("  {text}"));
            }
            EventKind::ShardFinished { shard, error: Some(e), .. } => {
                self.line(&format!("   ERROR shard {} ({}@{}): {e}", shard.shard, shard.role, shard.machine));
                self.failures.push((format!("{}@{} (shard)", shard.role, shard.machine), e.clone()));
            }
            EventKind::RunFinished { summary: s, duration_ms, cancelled, verdict, .. } => {
                self.bar.finish_and_clear();
                let mut parts = vec![s.describe()];
                if self.filtered_out > 0 {
                    parts.push(format!("{} filtered out", self.filtered_out));
                }
                self.line("────────────");
                if let Some(reason) = cancelled {
                    self.line(&format!("Run stopped early: {reason}"));
                }
                if !self.failures.is_empty() {
                    self.line("Failures:");
                    for (label, msg) in self.failures.clone() {
                        self.line(&format!("  {label}: {msg}"));
                    }
                }
                let mut splits: Vec<String> =
                    self.splits.iter().map(|(role, split)| split.line(role)).collect();
                splits.extend(self.matrix_lines());
                for line in splits {
                    self.line(&line);
                }
                if s.total() == 0 && self.filtered_out > 0 {
                    self.line("No test was selected: check the filter (-E, or the entries' `filter`).");
                }
                let verdict = verdict.as_str().to_uppercase();
                self.line(&format!(
                    "{verdict}: {} test(s) in {:.2}s: {}",
                    s.total(),
                    *duration_ms as f64 / 1000.0,
                    parts.join(", ")
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("      {l}")).collect::<Vec<_>>().join("\n")
}
