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
    /// A topic message (next). Shared, not copied, between the answers to
    /// every call that reads it: a message of 1 MiB read by a thousand
    /// waiting calls is one 1 MiB in the coordinator.
    Message {
        #[serde(with = "shared_text")]
        payload: std::sync::Arc<str>,
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
        /// The coordinator's heartbeat timeout: it pings more often than
        /// this, so a machine that hears nothing for this long knows the
        /// link went silent (a half-open connection) and reconnects.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        heartbeat_timeout_ms: Option<u64>,
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
    /// The coordinator counts this shard lost (the machine was silent past
    /// its heartbeat timeout, or its run is over): stop it at once and
    /// forget it — nothing more of it is taken. Sent when a machine comes
    /// back holding such a shard.
    Lost { run: String, shard: u32, reason: String },
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
    /// Suites (by sha256, at most [`MAX_PRECOMPILE`]) that saved plans place
    /// on this machine: it may fetch and compile them now, in the
    /// background, so that their runs start on compiled code. A hint: the
    /// machine answers nothing, and a run never waits for it.
    Precompile { suites: Vec<String> },
}

/// The most suites one [`ToMachine::Precompile`] names.
pub const MAX_PRECOMPILE: usize = 64;

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
        /// The shards this process holds, by run (8,192 at most): assigned to it and not yet
        /// acknowledged done. A started shard of this machine that is not
        /// here was lost with a previous process (a restarted runner).
        /// `None`: it does not say (then nothing is lost for it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        holding: Option<std::collections::BTreeMap<String, Vec<u32>>>,
        /// Drawn at random when the runner process starts: a hello with
        /// another one is a new process (a drain of the old one is over).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<String>,
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

/// The largest WebSocket message a machine sends. A larger frame goes as
/// binary parts ([`split_frame`]), so what the coordinator holds for a
/// connection before it has counted it is one part, and a whole frame is
/// put together only in room its intake budget gave it first.
pub const MAX_PART: usize = 256 << 10;

/// Bytes before the first part's share of the frame: its length, big-endian.
const PART_HEADER: usize = 8;

/// How a frame travels: whole, as one text message, or in binary parts.
#[derive(Debug, PartialEq, Eq)]
pub enum Parts {
    Whole(String),
    /// Every part [`MAX_PART`] bytes but the last; the first starts with
    /// the frame's length (8 bytes, big-endian).
    Split(Vec<Vec<u8>>),
}

/// `text` as the messages that carry it (see [`Parts`]).
pub fn split_frame(text: String) -> Parts {
    if text.len() <= MAX_PART {
        return Parts::Whole(text);
    }
    let mut bytes = Vec::with_capacity(PART_HEADER + text.len());
    bytes.extend_from_slice(&(text.len() as u64).to_be_bytes());
    bytes.extend_from_slice(text.as_bytes());
    Parts::Split(bytes.chunks(MAX_PART).map(<[u8]>::to_vec).collect())
}

/// The length a frame's first part declares, checked: over
/// [`MAX_FRAME`], or a part that is not the first of a split frame, is
/// refused with what was wrong.
pub fn declared_length(first: &[u8]) -> Result<usize, String> {
    if first.len() != MAX_PART {
        return Err(format!(
            "a frame's first part is {} bytes; parts are {MAX_PART} bytes but the last",
            first.len()
        ));
    }
    let mut header = [0u8; PART_HEADER];
    header.copy_from_slice(&first[..PART_HEADER]);
    let total = u64::from_be_bytes(header);
    match usize::try_from(total) {
        Ok(n) if n > MAX_PART && n <= MAX_FRAME => Ok(n),
        _ => Err(format!(
            "a split frame declares {total} bytes; split frames are {} to {MAX_FRAME} bytes",
            MAX_PART + 1
        )),
    }
}

/// A split frame being put together, in room for its declared length.
#[derive(Debug)]
pub struct Assembly {
    total: usize,
    bytes: Vec<u8>,
}

impl Assembly {
    /// Starts from the first part (whose length [`declared_length`] checked).
    pub fn start(first: &[u8]) -> Result<Assembly, String> {
        let total = declared_length(first)?;
        let mut bytes = Vec::with_capacity(total);
        bytes.extend_from_slice(&first[PART_HEADER..]);
        Ok(Assembly { total, bytes })
    }

    /// Takes the next part: the frame once it is whole (it must be UTF-8
    /// text), or an error naming what broke the rule.
    pub fn push(&mut self, part: &[u8]) -> Result<Option<String>, String> {
        let left = self.total - self.bytes.len();
        if part.len() > left || (part.len() < left && part.len() != MAX_PART) {
            return Err(format!(
                "a part of {} bytes, with {left} bytes of the frame left (parts are {MAX_PART} bytes but the last)",
                part.len()
            ));
        }
        self.bytes.extend_from_slice(part);
        if self.bytes.len() < self.total {
            return Ok(None);
        }
        String::from_utf8(std::mem::take(&mut self.bytes))
            .map(Some)
            .map_err(|_| "a split frame is not UTF-8 text".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_over_a_part_go_in_parts_and_come_back_whole() {
        assert_eq!(split_frame("small".into()), Parts::Whole("small".into()));
        let edge = "e".repeat(MAX_PART);
        assert_eq!(split_frame(edge.clone()), Parts::Whole(edge));
        for len in [MAX_PART + 1, 3 * MAX_PART - PART_HEADER, 3 * MAX_PART + 17] {
            let text: String = (0..len).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            let Parts::Split(parts) = split_frame(text.clone()) else { panic!("{len} bytes went whole") };
            assert!(parts.iter().all(|p| p.len() <= MAX_PART));
            assert_eq!(declared_length(&parts[0]), Ok(len));
            let mut assembly = Assembly::start(&parts[0]).unwrap();
            let (last, middle) = parts[1..].split_last().unwrap();
            for part in middle {
                assert_eq!(assembly.push(part), Ok(None));
            }
            assert_eq!(assembly.push(last), Ok(Some(text)));
        }
    }

    #[test]
    fn parts_that_break_the_rule_are_refused_saying_how() {
        let part = |total: u64, len: usize| {
            let mut p = total.to_be_bytes().to_vec();
            p.resize(len, b'x');
            p
        };
        assert!(declared_length(&part(1 << 20, 100)).unwrap_err().contains("first part is 100 bytes"));
        let too_big = declared_length(&part(MAX_FRAME as u64 + 1, MAX_PART)).unwrap_err();
        assert!(too_big.contains("declares 67108865 bytes"), "{too_big}");
        assert!(declared_length(&part(u64::MAX, MAX_PART)).is_err());
        assert!(declared_length(&part(10, MAX_PART)).is_err(), "a small frame goes whole");

        let total = 2 * MAX_PART as u64;
        let mut short = Assembly::start(&part(total, MAX_PART)).unwrap();
        assert!(short.push(&[b'x'; 10]).unwrap_err().contains("a part of 10 bytes"));
        let mut long = Assembly::start(&part(total, MAX_PART)).unwrap();
        assert!(long.push(&vec![b'x'; MAX_PART + 9]).is_err(), "more than the frame has left");
        let mut binary = Assembly::start(&part(total, MAX_PART)).unwrap();
        assert_eq!(binary.push(&vec![0xff; MAX_PART]), Ok(None));
        assert!(binary.push(&[0xff; PART_HEADER]).unwrap_err().contains("not UTF-8"));
    }
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
                        durations: Some(std::sync::Arc::new([("a".to_string(), 5)].into())),
                        split: Some("duration:1/2".parse().unwrap()),
                    },
                    services: Default::default(),
                    service: None,
                }),
            },
            ToMachine::StopServices { run: "r".into() },
            ToMachine::Cancel { run: "r".into(), reason: CancelReason::user() },
            ToMachine::AckShardDone { run: "r".into(), shard: 1 },
            ToMachine::Drained,
            ToMachine::Precompile { suites: vec!["ab".repeat(32)] },
            ToMachine::SyncReply {
                id: 3,
                reply: SyncReply::Error { kind: SyncFailure::Lost, message: "role server on m".into() },
            },
            ToMachine::Ack { run: "r".into(), shard: 1, seq: 9 },
            ToMachine::Welcome {
                protocol: 1,
                coordinator: "c".into(),
                machine_secret: Some("s".into()),
                heartbeat_timeout_ms: Some(10_000),
            },
            ToMachine::Lost { run: "r".into(), shard: 2, reason: "the run is over".into() },
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
                holding: None,
                instance: Some("7f3a".into()),
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

/// A shared text as a JSON string (serde's own impl for `Arc<str>` is
/// behind a feature every crate of the build would then be rebuilt with).
mod shared_text {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(text: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
        String::deserialize(d).map(Arc::from)
    }
}
