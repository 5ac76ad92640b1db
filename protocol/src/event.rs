//! A run is a stream of events.
//!
//! Machines produce events about their shards; the coordinator gives each one
//! a run-wide sequence number and a coordinator timestamp, stores it and fans it
//! out to every reporter (terminal, JUnit, JSON lines, WebSocket watchers).
//! Test events carry run, machine, role, suite and test by name so that each
//! JSON line stands on its own.

use serde::{Deserialize, Serialize};

pub use crate::outcome::{Outcome, Summary};
use crate::verdict::{CancelReason, Verdict};

/// Which part of a run an event is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShardRef {
    /// Shard number, unique within the run.
    pub shard: u32,
    pub machine: String,
    pub role: String,
    /// The suite's display name (file stem or crate name).
    pub suite: String,
    /// Instance index within the role.
    pub instance: u32,
}

/// What a shard is, as announced at the start of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShardInfo {
    #[serde(flatten)]
    pub shard: ShardRef,
    pub profile: String,
    /// Hex sha256 of the suite component.
    pub suite_sha256: String,
    /// The plan entry it comes from (its index), and how many instances of
    /// its role run: with these the coordinator can take the run up again
    /// after a restart.
    #[serde(default)]
    pub entry: usize,
    #[serde(default = "one")]
    pub instance_count: u32,
    /// Its entry's machines divide its tests (`split = "tests"`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub split: bool,
    /// The OS and CPU kind of its machine (from the machine's own facts).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub arch: String,
    /// Set when the shard runs the plan's service of this name rather than
    /// an entry's suite (`entry` and `suite_sha256` then mean nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

fn one() -> u32 {
    1
}

/// Why a sync call failed; mirrors the suite ABI's `sync-error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum SyncFailure {
    Timeout,
    Lost,
    Cancelled,
    Invalid,
    /// A fault the entry is not granted (its `faults`).
    Denied,
    /// A fault that was ordered and could not be done.
    Failed,
}

/// A sync operation the coordinator performed, shown on the run's timeline.
/// Stored with the rest of the run, the operations are also the record the
/// sync service is rebuilt from after a restart: signal counts (signals, and
/// the signal of each signal-and-wait), topics (with their payloads), and
/// the answer to each call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum SyncOp {
    Signal {
        state: String,
        value: u64,
    },
    /// `signalled`: the value of the call's own signal (signal-and-wait).
    BarrierReleased {
        state: String,
        target: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signalled: Option<u64>,
    },
    BarrierFailed {
        state: String,
        target: u64,
        reason: String,
        #[serde(default = "timeout")]
        kind: SyncFailure,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signalled: Option<u64>,
    },
    /// A call began to wait at barrier `state`: `arrived` of `target`
    /// parties had signalled (shown while it waits; not an answer).
    BarrierWaiting {
        state: String,
        target: u64,
        arrived: u64,
    },
    /// A call began to wait for message `message_seq` of `topic` (shown
    /// while it waits; not an answer).
    TopicWaiting {
        topic: String,
        message_seq: u64,
    },
    /// `message_seq` is the message's number within its topic (from 1).
    Publish {
        topic: String,
        message_seq: u64,
        #[serde(default)]
        payload: String,
    },
}

fn timeout() -> SyncFailure {
    SyncFailure::Timeout
}

/// An event as stored and streamed: numbered and timed by the coordinator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    pub run: String,
    /// Run-wide sequence number, from 1, without gaps.
    pub seq: u64,
    /// Coordinator time, microseconds since the Unix epoch. For events from a
    /// machine this is the machine's time corrected by its clock offset.
    pub at_us: i64,
    /// The producing machine's own clock, when the event came from a machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_at_us: Option<i64>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Everything that can happen in a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum EventKind {
    /// The run waits before it starts: the slots it needs are busy (or an
    /// earlier run waits for the same machines). Sent again when what it
    /// waits for changes; `run-started` follows, or `run-finished` when the
    /// wait ends it.
    RunQueued {
        waiting_for: String,
    },
    RunStarted {
        plan: String,
        shards: Vec<ShardInfo>,
    },
    ShardStarted {
        #[serde(flatten)]
        shard: ShardRef,
        /// Tests the shard reports, in order: the ones it runs, and the
        /// ones it skips (ignored, or filtered out when those are shown).
        tests: Vec<String>,
        /// Tests the suite listed that its selection leaves out and that
        /// are not reported (counted only).
        #[serde(default, skip_serializing_if = "is_zero")]
        filtered_out: u32,
    },
    TestStarted {
        #[serde(flatten)]
        shard: ShardRef,
        test: String,
        attempt: u32,
    },
    TestFinished {
        #[serde(flatten)]
        shard: ShardRef,
        test: String,
        outcome: Outcome,
        duration_ms: u64,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// Captured stdout and stderr, capped by the plan's output limit.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        output: String,
    },
    Log {
        #[serde(flatten)]
        shard: ShardRef,
        test: String,
        level: String,
        message: String,
    },
    /// A file the running test attached (the suite ABI's `attach`). From a
    /// machine it carries the bytes; the coordinator stores them by
    /// `sha256` and keeps the event without them, so watchers and the
    /// store see only the metadata. Reporters that write files (JUnit,
    /// HTML) get the bytes: in-process runs hand them over, and a client of
    /// a server fetches them by sha256 first.
    Attachment {
        #[serde(flatten)]
        shard: ShardRef,
        test: String,
        /// A file name (see [`crate::attachment::name_problem`]).
        name: String,
        /// Hex sha256 of the bytes.
        sha256: String,
        size: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<crate::attachment::Blob>,
    },
    /// `call`: the id of the machine's sync call it answered, per shard.
    Sync {
        #[serde(flatten)]
        shard: ShardRef,
        #[serde(flatten)]
        op: SyncOp,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call: Option<u64>,
    },
    /// What happened to a service instance (the shard that runs it):
    /// started, ready (with its address), stopping, exited or failed.
    /// Its output comes as `log` events whose `test` is `service:NAME`.
    Service {
        #[serde(flatten)]
        shard: ShardRef,
        service: String,
        #[serde(flatten)]
        state: crate::service::ServiceState,
    },
    /// A fault a test asked for on a service of the run ([`crate::fault`]):
    /// `asked` on the caller's shard (by the coordinator), then `done` or
    /// `failed` on each instance's shard (by its runner).
    Fault {
        #[serde(flatten)]
        shard: ShardRef,
        service: String,
        /// The instance asked for; none: every instance.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service_instance: Option<u32>,
        #[serde(flatten)]
        action: crate::fault::FaultAction,
        id: crate::fault::FaultId,
        /// The test that asked.
        test: String,
        #[serde(flatten)]
        step: crate::fault::FaultStep,
    },
    ShardFinished {
        #[serde(flatten)]
        shard: ShardRef,
        summary: Summary,
        /// Why the shard could not run its tests, if it could not.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    RunFinished {
        summary: Summary,
        duration_ms: u64,
        /// Shards that could not run their tests (each said why in its
        /// `shard-finished`).
        #[serde(default, skip_serializing_if = "is_zero")]
        shard_errors: u32,
        /// Why the run stopped early, if it did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cancelled: Option<CancelReason>,
        /// The run's final state, from [`Verdict::decide`]: readers use it
        /// rather than deciding again.
        verdict: Verdict,
    },
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl EventKind {
    /// The bytes of text the event carries (output, messages, names and
    /// sync payloads): what keeping it costs, besides a small fixed part.
    pub fn text_bytes(&self) -> u64 {
        let text = match self {
            EventKind::TestFinished { output, message, test, .. } => {
                output.len() + message.as_ref().map_or(0, String::len) + test.len()
            }
            EventKind::Log { message, test, level, .. } => message.len() + test.len() + level.len(),
            EventKind::Attachment { name, test, .. } => name.len() + test.len(),
            EventKind::ShardStarted { tests, .. } => tests.iter().map(String::len).sum(),
            EventKind::TestStarted { test, .. } => test.len(),
            EventKind::ShardFinished { error, .. } => error.as_ref().map_or(0, String::len),
            EventKind::Sync { op, .. } => match op {
                SyncOp::Signal { state, .. }
                | SyncOp::BarrierReleased { state, .. }
                | SyncOp::BarrierWaiting { state, .. } => state.len(),
                SyncOp::BarrierFailed { state, reason, .. } => state.len() + reason.len(),
                SyncOp::TopicWaiting { topic, .. } => topic.len(),
                SyncOp::Publish { topic, payload, .. } => topic.len() + payload.len(),
            },
            _ => 0,
        };
        text as u64
    }

    /// What a machine sends instead of this event when the event, as
    /// written, is `bytes` long and over the frame limit
    /// ([`crate::wire::MAX_FRAME`]): the same event with its large parts
    /// left out and a note, so that it still says what happened (a test
    /// that finished still finishes, failed). An event the bounds at the
    /// sandbox let through never gets here; this is the rule for any that
    /// slips past them, so that a machine never resends a refused frame.
    pub fn too_large(self, bytes: usize) -> EventKind {
        let why = format!(
            "the runner could not send this event: it was {bytes} bytes long, over the limit of {} a frame may carry",
            crate::wire::MAX_FRAME
        );
        let short = |s: String| -> String { s.chars().take(1024).collect() };
        match self {
            EventKind::TestFinished { shard, test, outcome, duration_ms, attempt, .. } => {
                EventKind::TestFinished {
                    shard,
                    test: short(test),
                    outcome: if outcome == Outcome::Passed { Outcome::Failed } else { outcome },
                    duration_ms,
                    attempt,
                    message: Some(why),
                    output: String::new(),
                }
            }
            EventKind::ShardStarted { shard, tests, filtered_out } => EventKind::ShardStarted {
                shard,
                tests: Vec::new(),
                filtered_out: filtered_out.saturating_add(u32::try_from(tests.len()).unwrap_or(u32::MAX)),
            },
            other => match other.shard().cloned() {
                Some(shard) => {
                    EventKind::Log { shard, test: String::new(), level: "error".into(), message: why }
                }
                // Run-level events never come from a machine.
                None => other,
            },
        }
    }

    /// The shard this event is about; none for run-level events.
    pub fn shard(&self) -> Option<&ShardRef> {
        match self {
            EventKind::ShardStarted { shard, .. }
            | EventKind::TestStarted { shard, .. }
            | EventKind::TestFinished { shard, .. }
            | EventKind::Log { shard, .. }
            | EventKind::Attachment { shard, .. }
            | EventKind::Sync { shard, .. }
            | EventKind::Service { shard, .. }
            | EventKind::Fault { shard, .. }
            | EventKind::ShardFinished { shard, .. } => Some(shard),
            EventKind::RunQueued { .. } | EventKind::RunStarted { .. } | EventKind::RunFinished { .. } => {
                None
            }
        }
    }

    /// The shard this event is about, to overwrite with the coordinator's own
    /// record (a machine speaks for a shard by number only).
    pub fn shard_mut(&mut self) -> Option<&mut ShardRef> {
        match self {
            EventKind::ShardStarted { shard, .. }
            | EventKind::TestStarted { shard, .. }
            | EventKind::TestFinished { shard, .. }
            | EventKind::Log { shard, .. }
            | EventKind::Attachment { shard, .. }
            | EventKind::Sync { shard, .. }
            | EventKind::Service { shard, .. }
            | EventKind::Fault { shard, .. }
            | EventKind::ShardFinished { shard, .. } => Some(shard),
            EventKind::RunQueued { .. } | EventKind::RunStarted { .. } | EventKind::RunFinished { .. } => {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard() -> ShardRef {
        ShardRef {
            shard: 2,
            machine: "box-1".into(),
            role: "client".into(),
            suite: "kv-client".into(),
            instance: 0,
        }
    }

    #[test]
    fn events_round_trip_and_read_flat() {
        let events = vec![
            EventKind::RunStarted {
                plan: "demo".into(),
                shards: vec![ShardInfo {
                    shard: shard(),
                    profile: "p".into(),
                    suite_sha256: "ab".into(),
                    entry: 0,
                    instance_count: 1,
                    split: true,
                    os: "linux".into(),
                    arch: "aarch64".into(),
                    service: None,
                }],
            },
            EventKind::ShardStarted { shard: shard(), tests: vec!["a".into()], filtered_out: 0 },
            EventKind::TestStarted { shard: shard(), test: "a".into(), attempt: 1 },
            EventKind::TestFinished {
                shard: shard(),
                test: "a".into(),
                outcome: Outcome::TimedOut,
                duration_ms: 12,
                attempt: 1,
                message: Some("timed out after 1s".into()),
                output: "hello\n".into(),
            },
            EventKind::Log { shard: shard(), test: "a".into(), level: "info".into(), message: "m".into() },
            EventKind::Attachment {
                shard: shard(),
                test: "a".into(),
                name: "server.log".into(),
                sha256: "ab".repeat(32),
                size: 3,
                data: Some(crate::attachment::Blob(vec![0, 1, 255])),
            },
            EventKind::Attachment {
                shard: shard(),
                test: "a".into(),
                name: "shot.png".into(),
                sha256: "cd".repeat(32),
                size: 1 << 20,
                data: None,
            },
            EventKind::Sync {
                shard: shard(),
                op: SyncOp::Signal { state: "ready".into(), value: 1 },
                call: Some(4),
            },
            EventKind::Sync {
                shard: shard(),
                op: SyncOp::Publish { topic: "t".into(), message_seq: 3, payload: "{\"k\": 1}".into() },
                call: Some(5),
            },
            EventKind::Sync {
                shard: shard(),
                op: SyncOp::BarrierReleased { state: "s".into(), target: 2, signalled: Some(2) },
                call: None,
            },
            EventKind::Sync {
                shard: shard(),
                op: SyncOp::BarrierFailed {
                    state: "s".into(),
                    target: 2,
                    reason: "lost".into(),
                    kind: SyncFailure::Lost,
                    signalled: None,
                },
                call: Some(6),
            },
            EventKind::ShardFinished { shard: shard(), summary: Summary::default(), error: None },
            EventKind::RunFinished {
                summary: Summary::default(),
                duration_ms: 5,
                shard_errors: 0,
                cancelled: None,
                verdict: Verdict::Passed,
            },
            EventKind::RunFinished {
                summary: Summary::default(),
                duration_ms: 5,
                shard_errors: 1,
                cancelled: Some(CancelReason::user()),
                verdict: Verdict::Failed,
            },
        ];
        for (i, kind) in events.into_iter().enumerate() {
            let ev = Event { run: "r1".into(), seq: i as u64 + 1, at_us: 10, machine_at_us: Some(9), kind };
            let json = serde_json::to_string(&ev).unwrap();
            let back: Event = serde_json::from_str(&json).unwrap();
            assert_eq!(back, ev, "{json}");
        }
    }

    #[test]
    fn test_events_name_everything_on_one_line() {
        let ev = Event {
            run: "r1".into(),
            seq: 7,
            at_us: 1,
            machine_at_us: None,
            kind: EventKind::TestFinished {
                shard: shard(),
                test: "verifies".into(),
                outcome: Outcome::Passed,
                duration_ms: 3,
                attempt: 1,
                message: None,
                output: String::new(),
            },
        };
        let v: serde_json::Value = serde_json::to_value(&ev).unwrap();
        for key in ["run", "machine", "role", "suite", "test", "outcome", "duration_ms"] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        assert_eq!(v["type"], "test-finished");
        assert_eq!(v["outcome"], "passed");
    }
}
