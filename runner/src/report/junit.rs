//! JUnit XML: one `<testsuite>` per shard (named role@machine), one
//! `<testcase>` per test with its outcome, time, message and output.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use ensemble_protocol::{Event, EventKind, Outcome};
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::Reporter;

pub struct JunitReporter {
    path: PathBuf,
    plan: String,
    suites: BTreeMap<u32, TestSuite>,
    time: Duration,
}

impl JunitReporter {
    pub fn new(path: PathBuf) -> Self {
        Self { path, plan: String::new(), suites: BTreeMap::new(), time: Duration::ZERO }
    }

    /// The XML for what was seen so far.
    pub fn xml(&self) -> anyhow::Result<String> {
        let mut report = Report::new(if self.plan.is_empty() { "ensemble" } else { &self.plan });
        report.set_time(self.time);
        report.add_test_suites(self.suites.values().cloned());
        Ok(report.to_string()?)
    }
}

impl Reporter for JunitReporter {
    fn event(&mut self, event: &Event) -> anyhow::Result<()> {
        match &event.kind {
            EventKind::RunStarted { plan, shards } => {
                self.plan = plan.clone();
                for s in shards {
                    let name = format!("{}@{} ({})", s.shard.role, s.shard.machine, s.shard.suite);
                    self.suites.insert(s.shard.shard, TestSuite::new(name));
                }
            }
            EventKind::TestFinished { shard, test, outcome, duration_ms, attempt, message, output } => {
                let mut status = match outcome {
                    Outcome::Passed | Outcome::Flaky => TestCaseStatus::success(),
                    Outcome::Skipped => TestCaseStatus::skipped(),
                    Outcome::Failed => TestCaseStatus::non_success(NonSuccessKind::Failure),
                    Outcome::TimedOut | Outcome::Crashed | Outcome::Lost => {
                        TestCaseStatus::non_success(NonSuccessKind::Error)
                    }
                };
                if let Some(m) = message {
                    status.set_message(m.lines().next().unwrap_or_default());
                    status.set_description(m.as_str());
                }
                if outcome.is_failure() || *outcome == Outcome::Flaky {
                    status.set_type(format!("{outcome} (attempt {attempt})"));
                }
                let mut case = TestCase::new(test.as_str(), status);
                case.set_classname(format!("{}.{}", shard.role, shard.suite));
                case.set_time(Duration::from_millis(*duration_ms));
                if !output.is_empty() {
                    case.set_system_out(output.as_str());
                }
                self.suites
                    .entry(shard.shard)
                    .or_insert_with(|| TestSuite::new(format!("{}@{}", shard.role, shard.machine)))
                    .add_test_case(case);
            }
            EventKind::RunFinished { duration_ms, .. } => self.time = Duration::from_millis(*duration_ms),
            _ => {}
        }
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        let xml = self.xml()?;
        std::fs::write(&self.path, xml).with_context(|| format!("writing {}", self.path.display()))
    }
}
