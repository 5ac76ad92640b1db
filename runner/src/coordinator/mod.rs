//! The coordinator: runs a plan across machines.
//!
//! [`run_plan`] places the plan's entries on machines ([`matching`]), sends
//! each machine its assignments, serves the run's [`sync`] calls and merges
//! every machine's events into one stream: deduplicated by (shard, seq),
//! numbered run-wide without gaps, stamped with coordinator time, and handed
//! to every [`Reporter`]. It talks to machines only through message channels,
//! so in-process machines and remote ones look the same.
//!
//! Invariants: each run emits `run-started` first and `run-finished` last;
//! a shard that ends abnormally breaks the run's sync so no party waits
//! forever on it.

pub mod matching;
pub mod sync;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use ensemble_protocol::event::{Event, EventKind, Outcome, ShardInfo, Summary};
use ensemble_protocol::plan::{Execution, Plan};
use ensemble_protocol::wire::{
    Assignment, FromMachine, Limits, MachineInfo, SyncFailure, SyncReply, ToMachine,
};
use tokio::sync::mpsc;

use crate::agent::now_us;
use crate::report::Reporter;
use matching::ShardPlan;
use sync::SyncService;

/// A plan entry's suite, resolved to content.
#[derive(Clone, Debug)]
pub struct SuiteRef {
    pub name: String,
    pub sha256: String,
}

/// How the coordinator reaches a machine. In-process machines are a channel;
/// remote ones resolve to their current connection at each send, so a machine
/// that reconnected mid-run keeps receiving its replies.
pub trait MachinePort: Send + Sync {
    /// Sends a message; false when the machine cannot be reached now.
    fn send(&self, msg: ToMachine) -> bool;
}

impl MachinePort for mpsc::UnboundedSender<ToMachine> {
    fn send(&self, msg: ToMachine) -> bool {
        mpsc::UnboundedSender::send(self, msg).is_ok()
    }
}

/// A machine as the coordinator sees it: who it is and how to reach it.
pub struct MachineLink {
    pub info: MachineInfo,
    pub port: Arc<dyn MachinePort>,
}

/// What reaches a run from outside.
#[derive(Debug)]
pub enum Inbound {
    /// A message of machine `machine` (an index into the run's machines),
    /// whose clock runs `clock_offset_us` ahead of the coordinator's.
    Message { machine: usize, msg: FromMachine, clock_offset_us: i64 },
    /// The machine is gone (connection lost past the heartbeat timeout).
    Lost { machine: usize, reason: String },
    /// Stop the run (a user asked).
    Cancel { reason: String },
}

/// The result of a finished run.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub run: String,
    pub summary: Summary,
    /// Shards that could not run their tests, with why.
    pub shard_errors: Vec<String>,
    /// Why the run stopped early, if it did.
    pub cancelled: Option<String>,
}

impl RunResult {
    pub fn success(&self) -> bool {
        self.summary.success() && self.shard_errors.is_empty()
    }
}

/// A fresh run id: time-ordered and unique within a coordinator.
pub fn new_run_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("run-{:x}-{}", now_us(), N.fetch_add(1, Ordering::Relaxed))
}

/// Numbers, stamps and fans out events.
struct Stream<'a> {
    run: String,
    seq: u64,
    reporters: &'a mut [Box<dyn Reporter>],
}

impl Stream<'_> {
    /// An event of the coordinator's own, at its current time.
    fn emit(&mut self, kind: EventKind) {
        self.push(Event {
            run: self.run.clone(),
            seq: self.seq + 1,
            at_us: now_us(),
            machine_at_us: None,
            kind,
        });
    }

    /// A machine's event: `at_us` on the coordinator's clock, `machine_at_us` on its own.
    fn emit_at(&mut self, kind: EventKind, at_us: i64, machine_at_us: i64) {
        let seq = self.seq + 1;
        self.push(Event { run: self.run.clone(), seq, at_us, machine_at_us: Some(machine_at_us), kind });
    }

    fn push(&mut self, ev: Event) {
        self.seq = ev.seq;
        for r in self.reporters.iter_mut() {
            if let Err(e) = r.event(&ev) {
                tracing::warn!("a reporter failed: {e:#}");
            }
        }
    }
}

fn limits(plan: &Plan) -> Limits {
    let s = &plan.settings;
    Limits {
        test_timeout_ms: s.test_timeout.as_millis_u64(),
        memory_limit_bytes: s.memory_limit.0,
        output_limit_bytes: s.output_limit.0,
        retries: s.retries,
        fail_fast: s.fail_fast,
        barrier_timeout_ms: s.barrier_timeout.as_millis_u64(),
    }
}

/// Runs `plan` on `machines`, whose messages arrive on `inbound` tagged with
/// their index. Returns when every shard is done.
pub async fn run_plan(
    run: String,
    plan: &Plan,
    suites: &[SuiteRef],
    machines: &[MachineLink],
    inbound: &mut mpsc::UnboundedReceiver<Inbound>,
    reporters: &mut [Box<dyn Reporter>],
) -> Result<RunResult, matching::Unsatisfiable> {
    let infos: Vec<MachineInfo> = machines.iter().map(|m| m.info.clone()).collect();
    let names: Vec<String> = suites.iter().map(|s| s.name.clone()).collect();
    let shards = matching::place(plan, &names, &infos)?;
    let started = Instant::now();
    let mut stream = Stream { run: run.clone(), seq: 0, reporters };
    stream.emit(EventKind::RunStarted {
        plan: plan.name.clone(),
        shards: shards
            .iter()
            .map(|s| ShardInfo {
                shard: s.shard.clone(),
                profile: s.profile.clone(),
                suite_sha256: suites[s.entry].sha256.clone(),
            })
            .collect(),
    });

    // Sequential plans run entry after entry; parallel ones all at once.
    let groups: Vec<Vec<&ShardPlan>> = match plan.settings.execution {
        Execution::Parallel => vec![shards.iter().collect()],
        Execution::Sequential => {
            let mut by_entry: BTreeMap<usize, Vec<&ShardPlan>> = BTreeMap::new();
            for s in &shards {
                by_entry.entry(s.entry).or_default().push(s);
            }
            by_entry.into_values().collect()
        }
    };
    let by_no: HashMap<u32, &ShardPlan> = shards.iter().map(|s| (s.shard.shard, s)).collect();
    let limits = limits(plan);
    let assign = |group: &[&ShardPlan]| {
        for s in group {
            let entry = &plan.entries[s.entry];
            let assignment = Assignment {
                run: run.clone(),
                shard: s.shard.clone(),
                instance_count: s.instance_count,
                suite_sha256: suites[s.entry].sha256.clone(),
                params: entry.params.clone(),
                capabilities: entry.capabilities.clone(),
                limits: limits.clone(),
            };
            if !machines[s.machine_index].port.send(ToMachine::Assign { assignment }) {
                tracing::warn!(machine = %s.shard.machine, "could not reach the machine to assign a shard");
            }
        }
    };

    let sync = Arc::new(SyncService::new());
    let (ops_tx, mut ops_rx) = mpsc::unbounded_channel::<SyncDone>();
    let mut summary = Summary::default();
    let mut shard_errors = Vec::new();
    let mut last_seq: HashMap<u32, u64> = HashMap::new();
    // The test each shard is running, to report it lost with its machine.
    let mut running_test: HashMap<u32, String> = HashMap::new();
    // Sync calls by (shard, call id): a machine that reconnects resends the
    // calls it has no answer for; each is performed once and answered again.
    let mut sync_calls: HashMap<(u32, u64), Option<SyncReply>> = HashMap::new();
    let mut done: HashSet<u32> = HashSet::new();
    let mut cancelled: Option<String> = None;
    let mut group = 0;
    if let Some(g) = groups.first() {
        assign(g);
    }
    while done.len() < shards.len() {
        let input = tokio::select! {
            Some(x) = inbound.recv() => x,
            Some(d) = ops_rx.recv() => {
                if let (Some(op), Some(s)) = (d.op, by_no.get(&d.shard)) {
                    stream.emit(EventKind::Sync { shard: s.shard.clone(), op });
                }
                sync_calls.insert((d.shard, d.id), Some(d.reply.clone()));
                if let Some(s) = by_no.get(&d.shard) {
                    machines[s.machine_index].port.send(ToMachine::SyncReply { id: d.id, reply: d.reply });
                }
                continue;
            }
            else => break,
        };
        let (m, msg, offset) = match input {
            Inbound::Message { machine, msg, clock_offset_us } => (machine, msg, clock_offset_us),
            Inbound::Cancel { reason } => {
                if cancelled.is_none() {
                    cancel_run(machines, &run, &sync, &reason);
                    cancelled = Some(reason);
                }
                continue;
            }
            Inbound::Lost { machine, reason } => {
                let name = &machines[machine].info.name;
                let gone: Vec<&ShardPlan> = shards
                    .iter()
                    .filter(|s| s.machine_index == machine && !done.contains(&s.shard.shard))
                    .collect();
                for s in gone {
                    let sref = &s.shard;
                    let why = format!("machine {name} was lost: {reason}");
                    let test = running_test.remove(&sref.shard).unwrap_or_else(|| "(shard)".to_string());
                    summary.add(Outcome::Lost);
                    stream.emit(EventKind::TestFinished {
                        shard: sref.clone(),
                        test,
                        outcome: Outcome::Lost,
                        duration_ms: 0,
                        attempt: 1,
                        message: Some(why.clone()),
                        output: String::new(),
                    });
                    let mut lost = Summary::default();
                    lost.add(Outcome::Lost);
                    stream.emit(EventKind::ShardFinished {
                        shard: sref.clone(),
                        summary: lost,
                        error: Some(why),
                    });
                    sync.break_run(
                        SyncFailure::Lost,
                        format!("role {} on machine {name} was lost ({reason})", sref.role),
                    );
                    done.insert(sref.shard);
                }
                advance(&groups, &mut group, &done, &assign);
                continue;
            }
        };
        match msg {
            FromMachine::Event { run: r, shard, seq, at_us, event } if r == run => {
                let last = last_seq.entry(shard).or_default();
                if seq <= *last || done.contains(&shard) {
                    // A resent duplicate, or news from a shard already given up as lost.
                    machines[m].port.send(ToMachine::Ack { run: run.clone(), shard, seq: *last });
                    continue;
                }
                *last = seq;
                match &event {
                    EventKind::TestStarted { test, .. } => {
                        running_test.insert(shard, test.clone());
                    }
                    EventKind::TestFinished { outcome, test, shard: sref, .. } => {
                        running_test.remove(&shard);
                        summary.add(*outcome);
                        if outcome.is_failure() && plan.settings.fail_fast && cancelled.is_none() {
                            let reason = format!("fail-fast: {test} ({}) {outcome}", sref.role);
                            cancel_run(machines, &run, &sync, &reason);
                            cancelled = Some(reason);
                        }
                    }
                    EventKind::ShardFinished { error: Some(e), shard: sref, .. } => {
                        shard_errors
                            .push(format!("shard {} ({} on {}): {e}", sref.shard, sref.role, sref.machine));
                        sync.break_run(
                            SyncFailure::Lost,
                            format!("role {} on machine {} could not run: {e}", sref.role, sref.machine),
                        );
                    }
                    _ => {}
                }
                // The machine's clock, corrected onto the coordinator's timeline.
                stream.emit_at(event, at_us - offset, at_us);
                machines[m].port.send(ToMachine::Ack { run: run.clone(), shard, seq });
            }
            FromMachine::Sync { id, run: r, shard, call } if r == run => match sync_calls.get(&(shard, id)) {
                Some(Some(reply)) => {
                    machines[m].port.send(ToMachine::SyncReply { id, reply: reply.clone() });
                }
                Some(None) => {} // still waiting; the answer goes to the current connection
                None => {
                    sync_calls.insert((shard, id), None);
                    let (sync, ops) = (sync.clone(), ops_tx.clone());
                    tokio::spawn(async move {
                        let (reply, op) = sync.handle(call).await;
                        let _ = ops.send(SyncDone { shard, id, reply, op });
                    });
                }
            },
            FromMachine::ShardDone { run: r, shard } if r == run => {
                machines[m].port.send(ToMachine::Ack { run: run.clone(), shard, seq: SHARD_DONE_ACK });
                if done.insert(shard) {
                    advance(&groups, &mut group, &done, &assign);
                }
            }
            other => tracing::debug!("ignoring a message of another run: {other:?}"),
        }
    }
    // Let the last sync operations reach the timeline before closing it.
    while let Ok(d) = ops_rx.try_recv() {
        if let (Some(op), Some(s)) = (d.op, by_no.get(&d.shard)) {
            stream.emit(EventKind::Sync { shard: s.shard.clone(), op });
        }
    }
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    stream.emit(EventKind::RunFinished { summary, duration_ms, cancelled: cancelled.clone() });
    for r in stream.reporters.iter_mut() {
        if let Err(e) = r.finish() {
            tracing::warn!("a reporter failed to finish: {e:#}");
        }
    }
    Ok(RunResult { run, summary, shard_errors, cancelled })
}

/// The `seq` of the [`ToMachine::Ack`] that acknowledges a `shard-done`.
pub const SHARD_DONE_ACK: u64 = u64::MAX;

/// A finished sync call, back on the run's loop.
struct SyncDone {
    shard: u32,
    id: u64,
    reply: SyncReply,
    op: Option<ensemble_protocol::event::SyncOp>,
}

/// Starts the next sequential group once the current one is done.
fn advance(
    groups: &[Vec<&ShardPlan>],
    group: &mut usize,
    done: &HashSet<u32>,
    assign: &impl Fn(&[&ShardPlan]),
) {
    while groups.get(*group).is_some_and(|g| g.iter().all(|s| done.contains(&s.shard.shard)))
        && *group + 1 < groups.len()
    {
        *group += 1;
        assign(&groups[*group]);
    }
}

fn cancel_run(machines: &[MachineLink], run: &str, sync: &SyncService, reason: &str) {
    sync.break_run(SyncFailure::Cancelled, reason.to_string());
    for m in machines {
        m.port.send(ToMachine::Cancel { run: run.to_string(), reason: reason.to_string() });
    }
}
