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

use ensemble_protocol::event::{Event, EventKind, ShardInfo, Summary};
use ensemble_protocol::plan::{Execution, Plan};
use ensemble_protocol::wire::{Assignment, FromMachine, Limits, MachineInfo, SyncFailure, ToMachine};
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

/// A machine as the coordinator sees it: who it is and how to reach it.
pub struct MachineLink {
    pub info: MachineInfo,
    pub tx: mpsc::UnboundedSender<ToMachine>,
}

/// The result of a finished run.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub run: String,
    pub summary: Summary,
    /// Shards that could not run their tests, with why.
    pub shard_errors: Vec<String>,
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
    fn emit(&mut self, kind: EventKind, machine_at_us: Option<i64>) {
        self.seq += 1;
        // In-process machines share our clock; remote machines' offsets are
        // applied by their transport before events reach the run.
        let ev = Event {
            run: self.run.clone(),
            seq: self.seq,
            at_us: machine_at_us.unwrap_or_else(now_us),
            machine_at_us,
            kind,
        };
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
    inbound: &mut mpsc::UnboundedReceiver<(usize, FromMachine)>,
    reporters: &mut [Box<dyn Reporter>],
) -> Result<RunResult, matching::Unsatisfiable> {
    let infos: Vec<MachineInfo> = machines.iter().map(|m| m.info.clone()).collect();
    let names: Vec<String> = suites.iter().map(|s| s.name.clone()).collect();
    let shards = matching::place(plan, &names, &infos)?;
    let started = Instant::now();
    let mut stream = Stream { run: run.clone(), seq: 0, reporters };
    stream.emit(
        EventKind::RunStarted {
            plan: plan.name.clone(),
            shards: shards
                .iter()
                .map(|s| ShardInfo {
                    shard: s.shard.clone(),
                    profile: s.profile.clone(),
                    suite_sha256: suites[s.entry].sha256.clone(),
                })
                .collect(),
        },
        None,
    );

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
            let _ = machines[s.machine_index].tx.send(ToMachine::Assign { assignment });
        }
    };

    let sync = Arc::new(SyncService::new());
    let (ops_tx, mut ops_rx) = mpsc::unbounded_channel();
    let mut summary = Summary::default();
    let mut shard_errors = Vec::new();
    let mut last_seq: HashMap<u32, u64> = HashMap::new();
    let mut done: HashSet<u32> = HashSet::new();
    let mut cancelled: Option<String> = None;
    let mut group = 0;
    if let Some(g) = groups.first() {
        assign(g);
    }
    while done.len() < shards.len() {
        let (m, msg) = tokio::select! {
            Some(x) = inbound.recv() => x,
            Some((shard, op)) = ops_rx.recv() => {
                if let Some(s) = by_no.get(&shard) {
                    stream.emit(EventKind::Sync { shard: s.shard.clone(), op }, None);
                }
                continue;
            }
            else => break,
        };
        match msg {
            FromMachine::Event { run: r, shard, seq, at_us, event } if r == run => {
                let last = last_seq.entry(shard).or_default();
                if seq <= *last {
                    continue; // a resent duplicate
                }
                *last = seq;
                match &event {
                    EventKind::TestFinished { outcome, test, shard: sref, .. } => {
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
                stream.emit(event, Some(at_us));
            }
            FromMachine::Sync { id, run: r, shard, call } if r == run => {
                let (sync, ops, tx) = (sync.clone(), ops_tx.clone(), machines[m].tx.clone());
                tokio::spawn(async move {
                    let (reply, op) = sync.handle(call).await;
                    if let Some(op) = op {
                        let _ = ops.send((shard, op));
                    }
                    let _ = tx.send(ToMachine::SyncReply { id, reply });
                });
            }
            FromMachine::ShardDone { run: r, shard } if r == run => {
                done.insert(shard);
                let current_done =
                    groups.get(group).is_some_and(|g| g.iter().all(|s| done.contains(&s.shard.shard)));
                if current_done && group + 1 < groups.len() {
                    group += 1;
                    assign(&groups[group]);
                }
            }
            other => tracing::debug!("ignoring a message of another run: {other:?}"),
        }
    }
    // Let the last sync operations reach the timeline before closing it.
    while let Ok((shard, op)) = ops_rx.try_recv() {
        if let Some(s) = by_no.get(&shard) {
            stream.emit(EventKind::Sync { shard: s.shard.clone(), op }, None);
        }
    }
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    stream.emit(EventKind::RunFinished { summary, duration_ms, cancelled }, None);
    for r in stream.reporters.iter_mut() {
        if let Err(e) = r.finish() {
            tracing::warn!("a reporter failed to finish: {e:#}");
        }
    }
    Ok(RunResult { run, summary, shard_errors })
}

fn cancel_run(machines: &[MachineLink], run: &str, sync: &SyncService, reason: &str) {
    sync.break_run(SyncFailure::Cancelled, reason.to_string());
    for m in machines {
        let _ = m.tx.send(ToMachine::Cancel { run: run.to_string(), reason: reason.to_string() });
    }
}
