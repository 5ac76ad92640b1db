//! JUnit XML: one `<testsuite>` per shard (named role@machine), one
//! `<testcase>` per test with its outcome, time, message and output.
//!
//! Attachments are written beside the XML, under `<stem>-attachments/`, one
//! directory per content (the sha256's first 16 digits) holding the file by
//! its own name, and listed in the test's `system-out` as
//! `[[ATTACHMENT|path]]` lines, the form CI systems (Jenkins, GitLab) read.
//! The path is the XML's own path (as given) with that tail, so a relative
//! `--junit` gives paths relative to where the job runs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use ensemble_protocol::attachment::{is_sha256, name_problem};
use ensemble_protocol::{Event, EventKind, Outcome};
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::Reporter;

pub struct JunitReporter {
    path: PathBuf,
    plan: String,
    suites: BTreeMap<u32, TestSuite>,
    time: Duration,
    /// Where attachments go, and those of tests not finished yet.
    attachments_dir: PathBuf,
    attached: HashMap<(u32, String), Vec<PathBuf>>,
}

/// `<dir>/<stem>-attachments` for `<dir>/<stem>.xml`.
fn attachments_dir(junit: &Path) -> PathBuf {
    let stem = junit.file_stem().map_or("junit".into(), |s| s.to_string_lossy().into_owned());
    junit.with_file_name(format!("{stem}-attachments"))
}

impl JunitReporter {
    pub fn new(path: PathBuf) -> Self {
        Self {
            attachments_dir: attachments_dir(&path),
            path,
            plan: String::new(),
            suites: BTreeMap::new(),
            time: Duration::ZERO,
            attached: HashMap::new(),
        }
    }

    /// Writes an attachment's bytes; returns the path the XML names.
    fn write_attachment(&self, name: &str, sha256: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
        // The events may come from a server: nothing in them names a path
        // outside the attachments directory.
        anyhow::ensure!(is_sha256(sha256), "the attachment {name:?} has no valid sha256");
        if let Some(problem) = name_problem(name) {
            anyhow::bail!(problem);
        }
        let dir = self.attachments_dir.join(&sha256[..16]);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
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
                    let mut suite = TestSuite::new(name);
                    // Where it ran: a cross-platform run's suites differ in these.
                    for (key, value) in [
                        ("profile", &s.profile),
                        ("machine", &s.shard.machine),
                        ("os", &s.os),
                        ("arch", &s.arch),
                    ] {
                        if !value.is_empty() {
                            suite.add_property(Property::new(key, value.as_str()));
                        }
                    }
                    self.suites.insert(s.shard.shard, suite);
                }
            }
            EventKind::TestFinished { shard, test, outcome, duration_ms, attempt, message, output } => {
                let mut status = match outcome {
                    Outcome::Passed | Outcome::Flaky => TestCaseStatus::success(),
                    Outcome::Skipped | Outcome::Cancelled => TestCaseStatus::skipped(),
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
                let mut out = output.clone();
                for path in self.attached.remove(&(shard.shard, test.clone())).unwrap_or_default() {
                    if !out.is_empty() && !out.ends_with('\n') {
                        out.push('\n');
                    }
                    out.push_str(&format!("[[ATTACHMENT|{}]]\n", path.display()));
                }
                if !out.is_empty() {
                    case.set_system_out(out);
                }
                self.suites
                    .entry(shard.shard)
                    .or_insert_with(|| TestSuite::new(format!("{}@{}", shard.role, shard.machine)))
                    .add_test_case(case);
            }
            EventKind::Attachment { shard, test, name, sha256, data, .. } => match data {
                Some(data) => {
                    let path = self.write_attachment(name, sha256, &data.0)?;
                    self.attached.entry((shard.shard, test.clone())).or_default().push(path);
                }
                None => tracing::warn!(
                    "the attachment {name:?} of {test:?} came without its bytes; not in the JUnit file"
                ),
            },
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

#[cfg(test)]
mod tests {
    use super::*;
    use ensemble_protocol::ShardRef;
    use ensemble_protocol::attachment::Blob;

    fn ev(seq: u64, kind: EventKind) -> Event {
        Event { run: "r".into(), seq, at_us: 0, machine_at_us: None, kind }
    }

    #[test]
    fn attachments_are_written_beside_the_xml_and_listed_in_system_out() {
        let dir = tempfile::tempdir().unwrap();
        let xml = dir.path().join("report.xml");
        let mut junit = JunitReporter::new(xml.clone());
        let shard =
            ShardRef { shard: 1, machine: "m".into(), role: "r".into(), suite: "s".into(), instance: 0 };
        let bytes: Vec<u8> = (0..=255).collect();
        let sha = crate::sandbox::sha256_hex(&bytes);
        let attach = |name: &str, sha256: &str| EventKind::Attachment {
            shard: shard.clone(),
            test: "t".into(),
            name: name.into(),
            sha256: sha256.into(),
            size: bytes.len() as u64,
            data: Some(Blob(bytes.clone())),
        };
        junit.event(&ev(1, attach("all.bin", &sha))).unwrap();
        // A hostile server cannot make it write elsewhere.
        assert!(junit.event(&ev(2, attach("../x.bin", &sha))).is_err());
        assert!(junit.event(&ev(3, attach("y.bin", "../../etc"))).is_err());
        junit
            .event(&ev(
                4,
                EventKind::TestFinished {
                    shard: shard.clone(),
                    test: "t".into(),
                    outcome: Outcome::Failed,
                    duration_ms: 1,
                    attempt: 1,
                    message: Some("m".into()),
                    output: "out".into(),
                },
            ))
            .unwrap();
        junit.finish().unwrap();
        let path = dir.path().join("report-attachments").join(&sha[..16]).join("all.bin");
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        let text = std::fs::read_to_string(&xml).unwrap();
        assert!(text.contains(&format!("out\n[[ATTACHMENT|{}]]", path.display())), "{text}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "the XML and the attachments only");
    }
}
