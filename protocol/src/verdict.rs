//! How a run ended, decided in one place.
//!
//! The coordinator's dispatcher calls [`Verdict::decide`] once, when a run
//! ends, and sends the result in the `run-finished` event. Everything else —
//! the CLI's exit code (standalone and `--server`), the stored run state, the
//! terminal and JUnit reporters, the browser — reads that verdict instead of
//! deriving its own. Why a run stopped early is a typed [`CancelReason`],
//! never a string to parse.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::exit;
use crate::outcome::{Outcome, Summary};

/// Why a run stopped before all its tests ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum CancelReason {
    /// Somebody asked (the API, the browser's Cancel button): `by` says
    /// who (as they named themselves), `why` what they said.
    User {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        why: Option<String>,
    },
    /// `fail_fast` is set and this test did not pass.
    FailFast { test: String, role: String, outcome: Outcome },
    /// `fail_fast` is set and a machine of the run was lost.
    MachineLost { machine: String, reason: String },
    /// The coordinator is shutting down (SIGTERM, Ctrl-C).
    ShuttingDown,
    /// The run waited its plan's `queue_timeout` for busy machines and
    /// never started.
    QueueTimeout { waited_ms: u64, waiting_for: String },
    /// The run went over a bound of what one run may make the coordinator
    /// keep (`limit` says which, and how much).
    OverLimit { limit: String },
    /// A service of the run failed: it never became ready, or it exited
    /// while the run went on.
    ServiceFailed { service: String, machine: String, message: String },
    /// The coordinator's store could not record the run (its disk is full,
    /// or fails): what was not stored is not counted, and the run stops.
    StoreFailed { message: String },
}

impl CancelReason {
    /// A cancel by somebody who did not say who or why.
    pub fn user() -> CancelReason {
        CancelReason::User { by: None, why: None }
    }

    /// Whether the run stopped because of its own tests (a failure), rather
    /// than from outside.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            CancelReason::FailFast { .. }
                | CancelReason::MachineLost { .. }
                | CancelReason::QueueTimeout { .. }
                | CancelReason::OverLimit { .. }
                | CancelReason::ServiceFailed { .. }
                | CancelReason::StoreFailed { .. }
        )
    }
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CancelReason::User { by, why } => {
                write!(f, "cancelled by {}", by.as_deref().unwrap_or("a user"))?;
                match why {
                    Some(why) => write!(f, ": {why}"),
                    None => Ok(()),
                }
            }
            CancelReason::FailFast { test, role, outcome } => {
                write!(f, "fail-fast: {test} ({role}) {outcome}")
            }
            CancelReason::MachineLost { machine, reason } => {
                write!(f, "fail-fast: machine {machine} was lost ({reason})")
            }
            CancelReason::ShuttingDown => f.write_str("the coordinator is shutting down"),
            CancelReason::QueueTimeout { waited_ms, waiting_for } => write!(
                f,
                "it waited {}s (the plan's queue_timeout) and never started: {waiting_for}",
                waited_ms / 1000
            ),
            CancelReason::OverLimit { limit } => write!(f, "the run went over a limit: {limit}"),
            CancelReason::ServiceFailed { service, machine, message } => {
                write!(f, "service {service} on {machine} failed: {message}")
            }
            CancelReason::StoreFailed { message } => {
                write!(f, "the coordinator's store could not record the run: {message}")
            }
        }
    }
}

/// The final state of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every test passed (or was skipped, or was flaky) and every shard ran.
    Passed,
    /// A test failed, timed out, crashed or was lost, or a shard could not
    /// run its tests, or fail-fast stopped the run.
    Failed,
    /// Stopped from outside (a user, a shutdown) before it finished.
    Cancelled,
}

impl Verdict {
    /// The one rule: a run stopped from outside (a user, a shutdown) did not
    /// finish, so it is cancelled whatever ran before; otherwise it passes when
    /// no test failed and every shard ran, and fails else (a fail-fast stop
    /// is a failure).
    pub fn decide(summary: &Summary, shard_errors: u32, cancelled: Option<&CancelReason>) -> Verdict {
        match cancelled {
            Some(reason) if !reason.is_failure() => Verdict::Cancelled,
            Some(_) => Verdict::Failed,
            None if summary.success() && shard_errors == 0 => Verdict::Passed,
            None => Verdict::Failed,
        }
    }

    /// The process exit code for a run with this verdict.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Passed => exit::SUCCESS,
            Verdict::Failed | Verdict::Cancelled => exit::TESTS_FAILED,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
            Verdict::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(outcomes: &[Outcome]) -> Summary {
        let mut s = Summary::default();
        for o in outcomes {
            s.add(*o);
        }
        s
    }

    #[test]
    fn one_rule_decides_every_run() {
        let green = summary(&[Outcome::Passed, Outcome::Flaky, Outcome::Skipped]);
        let red = summary(&[Outcome::Passed, Outcome::Lost]);
        let ff = CancelReason::FailFast { test: "t".into(), role: "r".into(), outcome: Outcome::Failed };
        assert_eq!(Verdict::decide(&green, 0, None), Verdict::Passed);
        assert_eq!(Verdict::decide(&red, 0, None), Verdict::Failed);
        assert_eq!(Verdict::decide(&green, 1, None), Verdict::Failed, "a shard that could not run fails");
        assert_eq!(Verdict::decide(&green, 0, Some(&CancelReason::user())), Verdict::Cancelled);
        assert_eq!(Verdict::decide(&green, 0, Some(&CancelReason::ShuttingDown)), Verdict::Cancelled);
        assert_eq!(
            Verdict::decide(&red, 0, Some(&CancelReason::user())),
            Verdict::Cancelled,
            "it did not finish"
        );
        assert_eq!(Verdict::decide(&green, 0, Some(&ff)), Verdict::Failed);
        assert_eq!(Verdict::Passed.exit_code(), exit::SUCCESS);
        assert_eq!(Verdict::Failed.exit_code(), exit::TESTS_FAILED);
        assert_eq!(Verdict::Cancelled.exit_code(), exit::TESTS_FAILED);
    }

    #[test]
    fn reasons_round_trip_and_read_well() {
        let reasons = [
            CancelReason::user(),
            CancelReason::FailFast { test: "t".into(), role: "r".into(), outcome: Outcome::TimedOut },
            CancelReason::MachineLost { machine: "m".into(), reason: "silent".into() },
            CancelReason::ShuttingDown,
            CancelReason::OverLimit { limit: "2GiB of events".into() },
        ];
        for r in reasons {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<CancelReason>(&json).unwrap(), r, "{json}");
        }
        let ff = CancelReason::FailFast { test: "t".into(), role: "r".into(), outcome: Outcome::TimedOut };
        assert_eq!(ff.to_string(), "fail-fast: t (r) timed-out");
    }
}
