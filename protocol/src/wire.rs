//! Messages between the coordinator and its machines.
//!
//! The coordinator and a machine exchange [`ToMachine`] and [`FromMachine`]
//! values over a message channel: an in-process channel when `ensemble run`
//! runs a plan alone, a WebSocket (one JSON text frame per message) when
//! machines join a server. Nothing in either side depends on which it is.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::event::SyncFailure;
use crate::event::{EventKind, ShardRef};
use crate::filter::Selection;
pub use crate::machine::{Facts, MachineInfo};
use crate::plan::Capabilities;
use crate::service::{Addresses, Service};
use crate::verdict::CancelReason;

/// Limits and policies a machine applies to every test of a shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub test_timeout_ms: u64,
    pub memory_limit_bytes: u64,
    pub output_limit_bytes: u64,
    pub retries: u32,
    pub fail_fast: bool,
    pub barrier_timeout_ms: u64,
    /// Bytes one test attempt may attach; zero refuses attachments.
    #[serde(default)]
    pub attachment_limit_bytes: u64,
    /// Tests of a suite without sync run at once: 0 as many as the machine
    /// has cores, 1 one at a time (the plan's `settings.test_threads`).
    #[serde(default)]
    pub test_threads: u32,
}

/// One shard handed to a machine: a suite instance to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub run: String,
    pub shard: ShardRef,
    /// How many instances the shard's role has in the run.
    pub instance_count: u32,
    pub suite_sha256: String,
    pub params: BTreeMap<String, String>,
    pub capabilities: Capabilities,
    pub limits: Limits,
    /// Which of the suite's tests to run.
    #[serde(default)]
    pub selection: Selection,
    /// Where the run's services are (all of them ready before any entry
    /// is assigned): the entry's variables and `service:NAME` grants.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: Addresses,
    /// Set for a shard that runs a service instead of a suite
    /// (`suite_sha256` is then empty): the machine starts it, reports it
    /// ready, and stops it on [`ToMachine::StopServices`] or a cancel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Box<Service>>,
}

/// A guest's coordination request, forwarded to the run's sync service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "kebab-case")]
pub enum SyncCall {
    Signal {
        state: String,
    },
    Barrier {
        state: String,
        target: u64,
        timeout_ms: u64,
    },
    SignalAndWait {
        state: String,
        target: u64,
        timeout_ms: u64,
    },
    Publish {
        topic: String,
        payload: String,
    },
    /// The message at `index` (0-based) of `topic`, waiting for it if needed.
    Next {
        topic: String,
        index: u64,
        timeout_ms: u64,
    },
    /// A fault into service `service` (instance `instance`, or every one)
    /// of the run, asked by `test`; answered [`SyncReply::Done`] once done.
    Fault {
        service: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<u32>,
        #[serde(flatten)]
        action: crate::fault::FaultAction,
        test: String,
    },
}

/// The answer to a [`SyncCall`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum SyncReply {
    /// A counter or sequence number (signal, publish, signal-and-wait).
    Value {
        value: u64,
    },
    /// A barrier was reached.
    Released,
    /// A topic message (next).
    Message {
        payload: String,
    },
    /// A fault was done.
    Done,
    Error {
        kind: SyncFailure,
        message: String,
    },
}

/// Coordinator → machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ToMachine {
    /// The join was accepted.
    Welcome {
        protocol: u32,
        coordinator: String,
        /// On a name's first join: the secret that proves this machine's
        /// identity from now on. The machine keeps it and sends it in every
        /// later hello; nobody else can take the name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        machine_secret: Option<String>,
    },
    /// The join was refused (name taken, protocol mismatch, a bad hello);
    /// the connection closes after this message. With `retry`, the machine
    /// may try again later (its own old connection is still closing).
    Rejected {
        reason: String,
        #[serde(default)]
        retry: bool,
    },
    /// A clock probe: answer with [`FromMachine::Pong`] at once.
    Ping { id: u64, coordinator_us: i64 },
    /// Run this shard.
    Assign { assignment: Box<Assignment> },
    /// Stop the run's shards on this machine: running tests end, the rest are skipped.
    Cancel { run: String, reason: CancelReason },
    /// The answer to the machine's sync call `id`.
    SyncReply { id: u64, reply: SyncReply },
    /// Events of `shard` up to `seq` are stored; the machine may forget them.
    Ack { run: String, shard: u32, seq: u64 },
    /// The shard's [`FromMachine::ShardDone`] arrived: the machine may forget
    /// everything of that shard.
    AckShardDone { run: String, shard: u32 },
    /// Do fault `id` to the service instance of shard `shard` (a service
    /// shard this machine runs); its runner answers with a
    /// [`crate::event::EventKind::Fault`] event of that shard. Sent again
    /// after a reconnect until that event arrives; done once.
    Fault {
        run: String,
        shard: u32,
        id: crate::fault::FaultId,
        #[serde(flatten)]
        action: crate::fault::FaultAction,
    },
    /// Every entry of the run is done: stop its services here (SIGTERM,
    /// then SIGKILL after their `stop_timeout`); each service shard then
    /// finishes.
    StopServices { run: String },
    /// The machine was drained: its shards are done and no run it is part
    /// of goes on; it gets no more work and may stop.
    Drained,
}

/// Machine → coordinator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum FromMachine {
    /// The first message on a connection.
    Hello {
        protocol: u32,
        /// The token, for transports that cannot send an Authorization header.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        machine: MachineInfo,
        /// The secret the coordinator issued at this name's first join.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<String>,
    },
    /// The answer to [`ToMachine::Ping`], with the machine's clock reading.
    Pong { id: u64, coordinator_us: i64, machine_us: i64 },
    /// Sent periodically so the coordinator knows the machine is alive.
    Heartbeat,
    /// Something happened in a shard. `seq` counts from 1 per shard, so the
    /// coordinator can drop duplicates after a reconnect.
    Event { run: String, shard: u32, seq: u64, at_us: i64, event: EventKind },
    /// A guest's sync call; answered with [`ToMachine::SyncReply`] with the same id.
    Sync { id: u64, run: String, shard: u32, call: SyncCall },
    /// The shard is finished and every event of it was sent.
    ShardDone { run: String, shard: u32 },
    /// Drain this machine (it is being stopped, e.g. by SIGTERM): it
    /// finishes its shards and takes no new ones; [`ToMachine::Drained`]
    /// says when it may go.
    Drain,
}

/// The longest state or topic name a sync call may use, in bytes.
pub const MAX_SYNC_NAME: usize = 1024;
/// The largest topic message, in bytes.
pub const MAX_SYNC_PAYLOAD: usize = 1 << 20;

/// Why a state or topic name (`kind`) cannot be used, if it cannot: the
/// one rule the sandbox applies before a call leaves the machine and the
/// coordinator applies again.
pub fn sync_name_problem(kind: &str, name: &str) -> Option<String> {
    (name.len() > MAX_SYNC_NAME).then(|| {
        let shown: String = name.chars().take(64).collect();
        format!("the {kind} name `{shown}…` is {} bytes long, over the limit of {MAX_SYNC_NAME}", name.len())
    })
}

/// Why a topic message cannot be published, if it cannot.
pub fn sync_payload_problem(payload: &str) -> Option<String> {
    (payload.len() > MAX_SYNC_PAYLOAD)
        .then(|| format!("payload of {} bytes is over the limit of {MAX_SYNC_PAYLOAD}", payload.len()))
}

/// The largest frame a machine may send: an event with the most output a
/// plan may keep (8 MiB), escaped, fits with room to spare. A machine
/// shrinks anything larger ([`crate::event::EventKind::too_large`]) rather
/// than send a frame the coordinator would refuse.
pub const MAX_FRAME: usize = 64 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Summary;

    #[test]
    fn messages_round_trip() {
        let shard = ShardRef {
            shard: 1,
            machine: "m".into(),
            role: "server".into(),
            suite: "kv-server".into(),
            instance: 0,
        };
        let to = vec![
            ToMachine::Assign {
                assignment: Box::new(Assignment {
                    run: "r".into(),
                    shard: shard.clone(),
                    instance_count: 1,
                    suite_sha256: "00".into(),
                    params: [("keys".to_string(), "10".to_string())].into(),
                    capabilities: Capabilities::default(),
                    limits: Limits {
                        test_timeout_ms: 1,
                        memory_limit_bytes: 2,
                        output_limit_bytes: 3,
                        retries: 0,
                        fail_fast: true,
                        barrier_timeout_ms: 4,
                        attachment_limit_bytes: 5,
                        test_threads: 6,
                    },
                    selection: Selection {
                        filter: Some("not tag(slow)".into()),
                        tests: Some(["a".to_string(), "b".to_string()].into()),
                        run_ignored: crate::filter::RunIgnored::All,
                        show_filtered: true,
                        profile: "p".into(),
                        partition: Some("hash:2/3".parse().unwrap()),
                        other_part: false,
                        durations: Some([("a".to_string(), 5)].into()),
                        split: Some("duration:1/2".parse().unwrap()),
                    },
                    services: Default::default(),
                    service: None,
                }),
            },
            ToMachine::StopServices { run: "r".into() },
            ToMachine::Cancel { run: "r".into(), reason: CancelReason::User },
            ToMachine::AckShardDone { run: "r".into(), shard: 1 },
            ToMachine::Drained,
            ToMachine::SyncReply {
                id: 3,
                reply: SyncReply::Error { kind: SyncFailure::Lost, message: "role server on m".into() },
            },
            ToMachine::Ack { run: "r".into(), shard: 1, seq: 9 },
            ToMachine::Welcome { protocol: 1, coordinator: "c".into(), machine_secret: Some("s".into()) },
            ToMachine::Rejected { reason: "bad token".into(), retry: true },
            ToMachine::Ping { id: 1, coordinator_us: 2 },
        ];
        for m in to {
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<ToMachine>(&json).unwrap(), m, "{json}");
        }
        let from = vec![
            FromMachine::Event {
                run: "r".into(),
                shard: 1,
                seq: 1,
                at_us: 5,
                event: EventKind::ShardFinished { shard, summary: Summary::default(), error: None },
            },
            FromMachine::Sync {
                id: 1,
                run: "r".into(),
                shard: 1,
                call: SyncCall::Next { topic: "t".into(), index: 0, timeout_ms: 10 },
            },
            FromMachine::ShardDone { run: "r".into(), shard: 1 },
            FromMachine::Drain,
            FromMachine::Hello {
                protocol: 1,
                token: Some("t".into()),
                secret: Some("s".into()),
                machine: MachineInfo {
                    name: "m".into(),
                    labels: [("os".to_string(), "linux".to_string())].into(),
                    slots: 2,
                    facts: Facts::default(),
                    allow_exec: Vec::new(),
                },
            },
            FromMachine::Pong { id: 1, coordinator_us: 2, machine_us: 3 },
            FromMachine::Heartbeat,
        ];
        for m in from {
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<FromMachine>(&json).unwrap(), m, "{json}");
        }
    }
}
