//! How tests end, and their counts. A leaf module: events, verdicts and the
//! API all build on it.

use serde::{Deserialize, Serialize};

/// How a test (or a shard) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Passed,
    Failed,
    Skipped,
    TimedOut,
    /// The instance trapped without a test failure of its own (out of
    /// memory, stack overflow, a bad instruction).
    Crashed,
    /// Failed at first, passed on a retry.
    Flaky,
    /// The machine running it went away.
    Lost,
    /// The run was cancelled (by a person, fail-fast, a lost machine)
    /// before the test finished: stopped while running, or never started.
    Cancelled,
}

impl Outcome {
    /// Whether this outcome makes the run fail.
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::TimedOut | Outcome::Crashed | Outcome::Lost)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::TimedOut => "timed-out",
            Outcome::Crashed => "crashed",
            Outcome::Flaky => "flaky",
            Outcome::Lost => "lost",
            Outcome::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counts of test outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Summary {
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
    pub timed_out: u32,
    pub crashed: u32,
    pub flaky: u32,
    pub lost: u32,
    #[serde(default)]
    pub cancelled: u32,
}

impl Summary {
    pub fn add(&mut self, outcome: Outcome) {
        let slot = match outcome {
            Outcome::Passed => &mut self.passed,
            Outcome::Failed => &mut self.failed,
            Outcome::Skipped => &mut self.skipped,
            Outcome::TimedOut => &mut self.timed_out,
            Outcome::Crashed => &mut self.crashed,
            Outcome::Flaky => &mut self.flaky,
            Outcome::Lost => &mut self.lost,
            Outcome::Cancelled => &mut self.cancelled,
        };
        *slot = slot.saturating_add(1);
    }
    /// Counts saturate: a summary read from outside (a merged log) may
    /// claim anything, and a count never wraps.
    pub fn total(&self) -> u32 {
        self.counts().iter().fold(0u32, |sum, (n, _)| sum.saturating_add(*n))
    }
    /// Each outcome's count with its name, in the order people read them.
    pub fn counts(&self) -> [(u32, &'static str); 8] {
        [
            (self.passed, "passed"),
            (self.failed, "failed"),
            (self.timed_out, "timed out"),
            (self.crashed, "crashed"),
            (self.lost, "lost"),
            (self.flaky, "flaky"),
            (self.skipped, "skipped"),
            (self.cancelled, "cancelled"),
        ]
    }
    /// `3 passed, 1 timed out, 2 cancelled`: the passes, then each other
    /// outcome that occurred (a timed-out or lost test is not "failed").
    pub fn describe(&self) -> String {
        let shown = self.counts().into_iter().enumerate().filter(|(i, (n, _))| *i == 0 || *n > 0);
        shown.map(|(_, (n, what))| format!("{n} {what}")).collect::<Vec<_>>().join(", ")
    }
    pub fn failures(&self) -> u32 {
        self.failed.saturating_add(self.timed_out).saturating_add(self.crashed).saturating_add(self.lost)
    }
    pub fn success(&self) -> bool {
        self.failures() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_failures() {
        let mut s = Summary::default();
        for o in [Outcome::Passed, Outcome::Flaky, Outcome::Skipped] {
            s.add(o);
        }
        assert!(s.success());
        s.add(Outcome::Lost);
        assert!(!s.success());
        assert_eq!(s.total(), 4);
        s.add(Outcome::Cancelled);
        assert_eq!(s.describe(), "1 passed, 1 lost, 1 flaky, 1 skipped, 1 cancelled");
        assert_eq!(Summary::default().describe(), "0 passed");
    }
}
