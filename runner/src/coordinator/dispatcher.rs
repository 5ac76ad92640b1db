//! The dispatcher: one run's state, changed one input at a time.
//!
//! [`Dispatcher`] owns everything a run knows — its shards and where they
//! run, the sequential group in progress, each shard's last event number,
//! the outcome counts, pending sync calls, why it was cancelled — and
//! [`Dispatcher::run`]'s loop only maps inputs to `handle_*` calls. Machines
//! are reached through [`MachinePort`]s and events leave through reporters, so
//! unit tests drive a dispatcher with scripted machine messages, no sockets
//! and no wasm.
//!
//! Rules it keeps:
//! - `run-started` is the first event and `run-finished` (with the one
//!   [`Verdict`]) the last; events are numbered run-wide without gaps.
//! - A machine speaks only for the shards assigned to it, and a shard's
//!   events are taken strictly in order (`seq` = last + 1): duplicates after a
//!   reconnect are acknowledged and dropped, anything else is refused. The
//!   shard a machine event names is overwritten with the coordinator's record.
//! - A shard that ends abnormally (lost, could not run) breaks the run's sync,
//!   so no party waits forever on it.
//! - Sequential plans assign entry after entry; a cancelled run still assigns
//!   the rest, followed at once by the cancel, so their tests show as cancelled.
//! - With a store behind it ([`Dispatcher::durable`]), what tells a machine
//!   that something is settled — an ack (it may forget the event), a
//!   shard-done ack, a sync reply (a barrier released, a message published)
//!   — leaves only once the events before it are committed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ensemble_protocol::event::{Event, EventKind, Outcome, ShardInfo, ShardRef, Summary, SyncOp};
use ensemble_protocol::fault::FaultStep;
use ensemble_protocol::filter::{Partition, PartitionKind, Selection, SharedDurations};
use ensemble_protocol::plan::{Execution, Plan};
use ensemble_protocol::service::{Addresses, ServiceAddr, ServiceState};
use ensemble_protocol::verdict::{CancelReason, Verdict};
use ensemble_protocol::wire::{
    Assignment, FromMachine, Limits, MachineInfo, SyncCall, SyncFailure, SyncReply, ToMachine,
};
use tokio::sync::{mpsc, watch};
use tokio_util::task::TaskTracker;

use super::attached::Attached;
use super::intake::Intake;
use super::matching::ShardPlan;
use super::sync::SyncService;
use crate::report::Reporter;

mod faults;
use crate::time::now_us;

/// A plan entry's suite, resolved to content.
#[derive(Clone, Debug)]
pub struct SuiteRef {
    pub name: String,
    pub sha256: String,
    /// It imports the sync interface: its shards may wait for each other.
    pub uses_sync: bool,
}

/// How the coordinator reaches a machine. In-process machines are a channel;
/// remote ones resolve to their current connection at each send, so a machine
/// that reconnected mid-run keeps receiving its replies.
pub trait MachinePort: Send + Sync {
    /// Sends a message; false when the machine cannot be reached now.
    fn send(&self, msg: ToMachine) -> bool;

    /// Notes that `shard` of `run` holds (or no longer holds) one of the
    /// machine's slots, for placement's count of busy slots. Sending an
    /// assignment notes it too; this is for shards a machine took before
    /// the coordinator restarted, which are not assigned again.
    fn hold(&self, _run: &str, _shard: &ShardRef, _holds: bool) {}
}

impl MachinePort for mpsc::UnboundedSender<ToMachine> {
    fn send(&self, msg: ToMachine) -> bool {
        mpsc::UnboundedSender::send(self, msg).is_ok()
    }
}

/// A machine as a run sees it: who it is and how to reach it.
pub struct MachineLink {
    pub info: MachineInfo,
    pub port: Arc<dyn MachinePort>,
}

/// What reaches a run from outside.
#[derive(Debug)]
// Nearly every input is a message: boxing it would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub enum Inbound {
    /// A message of machine `machine` (an index into the run's machines),
    /// whose clock runs `clock_offset_us` ahead of the coordinator's, and
    /// the room it takes (given back once it is handled and stored).
    Message { machine: usize, msg: FromMachine, clock_offset_us: i64, intake: Option<Intake> },
    /// The machine is gone (connection lost past the heartbeat timeout).
    Lost { machine: usize, reason: String },
    /// The machine (re)connected: it is told again what it may have missed.
    /// With the shards of the run the machine says it holds, if it says.
    Connected { machine: usize, holding: Option<Vec<u32>> },
    /// Stop the run.
    Cancel { reason: CancelReason },
}

/// The result of a finished run.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub run: String,
    pub summary: Summary,
    /// Shards that could not run their tests, with why.
    pub shard_errors: Vec<String>,
    /// Why the run stopped early, if it did.
    pub cancelled: Option<CancelReason>,
    pub verdict: Verdict,
}

/// A finished sync call, back on the run's loop.
#[derive(Debug)]
pub struct SyncDone {
    shard: u32,
    id: u64,
    reply: SyncReply,
    op: Option<SyncOp>,
    /// The topic message a `next` read (topic, index): kept as this, not
    /// as its payload, for answering the call again.
    read: Option<(String, u64)>,
}

/// The answer to a sync call, kept for a machine that resends the call
/// after a reconnect. A message read from a topic is kept as where it is
/// (the topic keeps it anyway): a suite re-reading a large message many
/// times costs the run no more than the message.
#[derive(Clone, Debug)]
enum Kept {
    Reply(SyncReply),
    Message { topic: String, index: u64 },
}

/// Numbers, stamps and fans out events. A run waiting for its machines
/// speaks through one before its dispatcher exists ([`Dispatcher::after`]).
pub struct Stream {
    run: String,
    seq: u64,
    reporters: Vec<Box<dyn Reporter>>,
}

impl Stream {
    /// The stream of `run` whose last event was `seq`.
    pub fn new(run: String, seq: u64, reporters: Vec<Box<dyn Reporter>>) -> Stream {
        Stream { run, seq, reporters }
    }

    /// The number of the last event.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    fn push(&mut self, kind: EventKind, at_us: i64, machine_at_us: Option<i64>) {
        let metrics = crate::metrics::metrics();
        metrics.events.inc();
        match &kind {
            EventKind::TestFinished { outcome, .. } => metrics.test_finished(outcome.as_str()),
            EventKind::RunFinished { verdict, .. } => metrics.run_finished(verdict.as_str()),
            _ => {}
        }
        self.seq += 1;
        let ev = Event { run: self.run.clone(), seq: self.seq, at_us, machine_at_us, kind };
        for r in &mut self.reporters {
            if let Err(e) = r.event(&ev) {
                tracing::warn!("a reporter failed: {e:#}");
            }
        }
    }

    /// An event of the coordinator's own, at its current time.
    pub fn emit(&mut self, kind: EventKind) {
        self.push(kind, now_us(), None);
    }
}

/// The most tests of one shard the dispatcher remembers as running (to
/// report them lost with their machine).
const MAX_RUNNING_TESTS: usize = 4096;
/// The most sync calls whose answers a run keeps for resending (each until
/// its shard is done); a call past it is answered with an error.
const MAX_KEPT_CALLS: usize = 1_000_000;
/// The most sync calls of one shard that wait at once (barriers, topic
/// reads). A suite's instance makes one call at a time, and a shard runs
/// at most as many instances at once as a plan's test threads may be
/// (1,024): a machine that has more waiting is not an honest runner, and
/// each wait holds a task and its names on the coordinator.
pub const MAX_WAITING_CALLS: usize = 1024;

/// The most bytes of text (output, messages, log lines, attachments) one
/// run's events may make the coordinator keep: past it, the run is
/// cancelled, failed, saying so.
pub const MAX_RUN_BYTES: u64 = 2 << 30;

/// What an event from a machine costs the store: its text and bytes,
/// besides a small fixed part.
fn weight(event: &EventKind) -> u64 {
    let attached = match event {
        EventKind::Attachment { size, .. } => *size,
        _ => 0,
    };
    256u64.saturating_add(event.text_bytes()).saturating_add(attached)
}

/// What is kept of a machine's event once its run went over
/// [`MAX_RUN_BYTES`]: what happened, without its text (a machine that goes
/// on sending after the cancel adds no more than that).
fn lightened(event: EventKind) -> EventKind {
    let note = "(left out: the run went over the bytes of events one run may keep)".to_string();
    let short = |s: String| -> String { s.chars().take(256).collect() };
    match event {
        EventKind::TestFinished { shard, test, outcome, duration_ms, attempt, message, .. } => {
            EventKind::TestFinished {
                shard,
                test: short(test),
                outcome,
                duration_ms,
                attempt,
                message: message.map(|_| note),
                output: String::new(),
            }
        }
        EventKind::Log { shard, test, level, .. } => {
            EventKind::Log { shard, test: short(test), level: short(level), message: note }
        }
        EventKind::Attachment { shard, test, .. } => {
            EventKind::Log { shard, test: short(test), level: "warn".into(), message: note }
        }
        EventKind::TestStarted { shard, test, attempt } => {
            EventKind::TestStarted { shard, test: short(test), attempt }
        }
        EventKind::ShardStarted { shard, tests, filtered_out } => EventKind::ShardStarted {
            shard,
            tests: Vec::new(),
            filtered_out: filtered_out.saturating_add(u32::try_from(tests.len()).unwrap_or(u32::MAX)),
        },
        EventKind::ShardFinished { shard, summary, error } => {
            EventKind::ShardFinished { shard, summary, error: error.map(short) }
        }
        other => other,
    }
}

/// How long a cancelled run waits for word from its machines: shards on a
/// machine that stays silent this long after the cancel (or after its last
/// message since) are lost, so a cancel always ends the run.
pub const CANCEL_GRACE: Duration = Duration::from_secs(30);

/// Resolves at `deadline`; never without one.
async fn overdue(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// How long a finished run waits for its last events to be committed before
/// it stops waiting to acknowledge them.
const FINAL_COMMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Resolves when the committed seq changes; never without a store.
async fn changed(committed: &mut Option<watch::Receiver<u64>>) -> Result<(), watch::error::RecvError> {
    match committed {
        Some(c) => c.changed().await,
        None => std::future::pending().await,
    }
}

/// The limits every shard of `plan` runs under.
pub fn limits(plan: &Plan) -> Limits {
    let s = &plan.settings;
    Limits {
        test_timeout_ms: s.test_timeout.as_millis_u64(),
        memory_limit_bytes: s.memory_limit.0,
        output_limit_bytes: s.output_limit.0,
        retries: s.retries,
        fail_fast: s.fail_fast,
        barrier_timeout_ms: s.barrier_timeout.as_millis_u64(),
        attachment_limit_bytes: s.attachment_limit.0,
        test_threads: s.test_threads,
    }
}

impl Dispatcher {
    /// Hands each shard split by `duration:K/N` or by its entry's `split`
    /// its role's recorded durations (without them, its part is dealt by
    /// count): one copy a role, however many shards it is split into.
    pub fn with_durations(mut self, durations: &SharedDurations) -> Dispatcher {
        for a in &mut self.assignments {
            let by_duration = |p: Option<Partition>| p.is_some_and(|p| p.kind == PartitionKind::Duration);
            if by_duration(a.selection.partition) || by_duration(a.selection.split) {
                a.selection.durations = durations.get(&a.shard.role).cloned();
            }
        }
        self
    }
}

/// With a partition, the part that takes the tests of every suite that
/// uses sync: they wait for each other, so they are not split; the part
/// comes from a hash of their roles, so every job agrees on it.
fn coordinating_part(plan: &Plan, shards: &[ShardPlan]) -> Option<u32> {
    let p = plan.settings.partition?;
    let roles: std::collections::BTreeSet<&str> =
        shards.iter().filter(|s| s.coordinates).map(|s| s.shard.role.as_str()).collect();
    let roles: Vec<&str> = roles.into_iter().collect();
    (!roles.is_empty()).then(|| Partition::part_of(&roles, p.total))
}

/// One run's state; see the module docs for its rules.
pub struct Dispatcher {
    run: String,
    plan_name: String,
    fail_fast: bool,
    shards: Vec<ShardPlan>,
    assignments: Vec<Assignment>,
    suites: Vec<SuiteRef>,
    /// Shard indices per group: one group for parallel plans, one per entry
    /// for sequential ones.
    groups: Vec<Vec<usize>>,
    group: usize,
    machines: Vec<MachineLink>,
    /// Shard number → index into `shards`.
    by_no: HashMap<u32, usize>,
    stream: Stream,
    summary: Summary,
    shard_errors: Vec<String>,
    last_seq: HashMap<u32, u64>,
    /// The tests each shard is running (several at once when they are
    /// independent), to report them lost with their machine.
    running_test: HashMap<u32, Vec<String>>,
    /// When each of those started (the coordinator's clock): a test lost
    /// with its machine lasted from then to its loss.
    test_began: HashMap<(u32, String), i64>,
    /// What each shard's running attempt attached, checked again here.
    attached: Attached,
    /// Sync calls by (shard, call id): a machine that reconnects resends the
    /// calls it has no answer for; each is performed once and answered again.
    /// Dropped when the shard is done: its machine resends nothing of it.
    sync_calls: HashMap<(u32, u64), Option<Kept>>,
    /// The signal each signal-and-wait took (by shard and call id), taken
    /// and recorded at once: a call resent while it waits only waits again.
    signalled: HashMap<(u32, u64), u64>,
    /// How many sync calls of each shard wait ([`MAX_WAITING_CALLS`]).
    waiting: HashMap<u32, usize>,
    done: HashSet<u32>,
    /// Of those, the shards that ended lost, with why: a machine that comes
    /// back holding one is told to stop it ([`ToMachine::Lost`]).
    lost: HashMap<u32, String>,
    cancelled: Option<CancelReason>,
    sync: Arc<SyncService>,
    ops_tx: mpsc::UnboundedSender<SyncDone>,
    ops_rx: mpsc::UnboundedReceiver<SyncDone>,
    /// Sync calls in progress.
    tasks: TaskTracker,
    started: Instant,
    /// The last event sequence number the store has committed, when there is
    /// a store; messages wait in `held` (with the seq they depend on) for it.
    committed: Option<watch::Receiver<u64>>,
    held: VecDeque<(u64, usize, ToMachine, Option<Intake>)>,
    /// The room of the message being handled.
    intake: Option<Intake>,
    /// What the run's machine events weighed so far ([`weight`]), and the
    /// most they may ([`MAX_RUN_BYTES`]).
    spent: u64,
    max_spent: u64,
    /// Once cancelled: when machines still silent lose their shards
    /// ([`CANCEL_GRACE`] after the cancel or the last word since).
    cancel_deadline: Option<tokio::time::Instant>,
    cancel_grace: Duration,
    /// Indices of the shards that run the plan's services (in no group:
    /// they start first and stop once every group is done).
    service_shards: Vec<usize>,
    /// Where each service's ready instances are (name → instance → address).
    ready: BTreeMap<String, BTreeMap<u32, ServiceAddr>>,
    /// The entries were assigned (every service was ready, or the run was
    /// cancelled before they were).
    entries_started: bool,
    /// The machines were told to stop the run's services.
    services_stopped: bool,
    /// Faults in progress and how many were asked.
    faults: faults::Faults,
}

impl Dispatcher {
    /// A run of `plan` whose entries' suites are `suites`, placed as `shards`
    /// on `machines` (indices of [`ShardPlan::machine_index`]).
    pub fn new(
        run: String,
        plan: &Plan,
        suites: Vec<SuiteRef>,
        machines: Vec<MachineLink>,
        shards: Vec<ShardPlan>,
        reporters: Vec<Box<dyn Reporter>>,
    ) -> Dispatcher {
        let limits = limits(plan);
        let coordinating_part = coordinating_part(plan, &shards);
        let assignments = shards
            .iter()
            .map(|s| {
                if let Some(i) = s.service {
                    return Assignment {
                        run: run.clone(),
                        shard: s.shard.clone(),
                        instance_count: s.instance_count,
                        suite_sha256: String::new(),
                        params: Default::default(),
                        capabilities: Default::default(),
                        limits: limits.clone(),
                        selection: Selection::default(),
                        services: Default::default(),
                        service: Some(Box::new(plan.services[i].clone())),
                    };
                }
                let entry = &plan.entries[s.entry];
                // Tests that wait for other roles' stay whole, in one part.
                let (partition, other_part) = match (plan.settings.partition, coordinating_part) {
                    (Some(p), Some(part)) if s.coordinates => (None, part != p.index),
                    (partition, _) => (partition, false),
                };
                Assignment {
                    run: run.clone(),
                    shard: s.shard.clone(),
                    instance_count: s.instance_count,
                    suite_sha256: suites[s.entry].sha256.clone(),
                    params: entry.params.clone(),
                    capabilities: entry.capabilities.clone(),
                    limits: limits.clone(),
                    selection: Selection {
                        filter: entry.filter.clone(),
                        tests: entry.tests.as_ref().map(|t| t.iter().cloned().collect()),
                        run_ignored: plan.settings.run_ignored,
                        show_filtered: plan.settings.show_filtered,
                        profile: s.profile.clone(),
                        partition,
                        other_part,
                        durations: None,
                        split: entry.split.map(|_| Partition {
                            kind: PartitionKind::Duration,
                            index: s.shard.instance + 1,
                            total: s.instance_count.max(1),
                        }),
                    },
                    services: Default::default(),
                    service: None,
                }
            })
            .collect();
        let service_shards: Vec<usize> = (0..shards.len()).filter(|&i| shards[i].service.is_some()).collect();
        let mut groups: Vec<Vec<usize>> = match plan.settings.execution {
            Execution::Parallel => vec![(0..shards.len()).filter(|&i| shards[i].service.is_none()).collect()],
            Execution::Sequential => {
                let mut by_entry: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
                for (i, s) in shards.iter().enumerate().filter(|(_, s)| s.service.is_none()) {
                    by_entry.entry(s.entry).or_default().push(i);
                }
                by_entry.into_values().collect()
            }
        };
        // Shards that wait for each other are assigned first: a machine
        // takes shards into its slots in the order assigned, so they are
        // never queued behind shards that need no partner.
        for g in &mut groups {
            g.sort_by_key(|&i| !shards[i].coordinates);
        }
        let by_no = shards.iter().enumerate().map(|(i, s)| (s.shard.shard, i)).collect();
        let (ops_tx, ops_rx) = mpsc::unbounded_channel();
        Dispatcher {
            stream: Stream { run: run.clone(), seq: 0, reporters },
            run,
            plan_name: plan.name.clone(),
            fail_fast: plan.settings.fail_fast,
            shards,
            assignments,
            suites,
            groups,
            group: 0,
            machines,
            by_no,
            summary: Summary::default(),
            shard_errors: Vec::new(),
            last_seq: HashMap::new(),
            running_test: HashMap::new(),
            test_began: HashMap::new(),
            attached: Attached::new(plan.settings.attachment_limit.0),
            sync_calls: HashMap::new(),
            signalled: HashMap::new(),
            waiting: HashMap::new(),
            done: HashSet::new(),
            lost: HashMap::new(),
            cancelled: None,
            sync: Arc::new(SyncService::new()),
            ops_tx,
            ops_rx,
            tasks: TaskTracker::new(),
            started: Instant::now(),
            committed: None,
            held: VecDeque::new(),
            intake: None,
            spent: 0,
            max_spent: MAX_RUN_BYTES,
            cancel_deadline: None,
            cancel_grace: CANCEL_GRACE,
            service_shards,
            ready: BTreeMap::new(),
            entries_started: false,
            services_stopped: false,
            faults: Default::default(),
        }
    }

    /// Goes on from `stream`, which said what came before (a run that
    /// waited for its machines), instead of a new one.
    pub fn after(mut self, stream: Stream) -> Dispatcher {
        self.stream = stream;
        self
    }

    /// Holds acknowledgements and sync replies until the store has committed
    /// the events they follow (`committed` carries the last committed seq).
    pub fn durable(mut self, committed: watch::Receiver<u64>) -> Dispatcher {
        self.committed = Some(committed);
        self
    }

    /// Runs to the end: every shard done (or lost). Returns the result after
    /// `run-finished` went to every reporter.
    pub async fn run(mut self, inbound: &mut mpsc::UnboundedReceiver<Inbound>) -> RunResult {
        self.start();
        self.drive(inbound).await
    }

    /// [`Dispatcher::run`] after [`Dispatcher::start`].
    pub async fn drive(mut self, inbound: &mut mpsc::UnboundedReceiver<Inbound>) -> RunResult {
        while !self.is_finished() {
            tokio::select! {
                Ok(()) = changed(&mut self.committed) => self.handle_committed(),
                input = inbound.recv() => match input {
                    Some(input) => self.handle(input),
                    // Nobody can reach the run any more (the coordinator is
                    // gone): what did not finish is lost.
                    None => self.handle_all_lost("the coordinator stopped"),
                },
                Some(done) = self.ops_rx.recv() => self.handle_sync_done(done),
                () = overdue(self.cancel_deadline) => self.handle_cancel_overdue(),
            }
        }
        self.finish().await
    }

    /// Announces the run and assigns the first group.
    pub fn start(&mut self) {
        let shards = self
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| ShardInfo {
                shard: s.shard.clone(),
                profile: s.profile.clone(),
                suite_sha256: match s.service {
                    Some(_) => String::new(),
                    None => self.suites[s.entry].sha256.clone(),
                },
                entry: if s.service.is_some() { 0 } else { s.entry },
                instance_count: s.instance_count,
                split: self.assignments[i].selection.split.is_some(),
                os: self.machines[s.machine_index].info.facts.os.clone(),
                arch: self.machines[s.machine_index].info.facts.arch.clone(),
                service: self.assignments[i].service.as_ref().map(|svc| svc.name.clone()),
            })
            .collect();
        self.stream.emit(EventKind::RunStarted { plan: self.plan_name.clone(), shards });
        // Services first: the entries are assigned once every one is ready.
        for i in self.service_shards.clone() {
            let m = self.shards[i].machine_index;
            if !self.send(m, ToMachine::Assign { assignment: Box::new(self.assignments[i].clone()) }) {
                tracing::warn!(machine = %self.shards[i].shard.machine, "could not reach the machine to start a service");
            }
        }
        self.start_entries_when_ready();
    }

    /// Assigns the entries once every service instance is ready, with their
    /// addresses.
    fn start_entries_when_ready(&mut self) {
        let ready: usize = self.ready.values().map(BTreeMap::len).sum();
        if self.entries_started || ready < self.service_shards.len() {
            return;
        }
        self.start_entries();
    }

    fn start_entries(&mut self) {
        if self.entries_started {
            return;
        }
        self.start_entries_quietly();
        self.assign_group();
        self.advance();
    }

    /// Hands the entries the services' addresses, assigning nothing.
    fn start_entries_quietly(&mut self) {
        self.entries_started = true;
        let addresses: Addresses =
            self.ready.iter().map(|(name, by)| (name.clone(), by.values().cloned().collect())).collect();
        for (i, a) in self.assignments.iter_mut().enumerate() {
            if self.shards[i].service.is_none() {
                a.services = addresses.clone();
            }
        }
    }

    /// Every entry is done: the machines stop the run's services.
    fn stop_services_when_done(&mut self) {
        if self.services_stopped || !self.entries_started {
            return;
        }
        let entries_done =
            self.groups.iter().flatten().all(|&i| self.done.contains(&self.shards[i].shard.shard));
        if !entries_done {
            return;
        }
        self.services_stopped = true;
        let machines: BTreeSet<usize> = self
            .service_shards
            .iter()
            .filter(|&&i| !self.done.contains(&self.shards[i].shard.shard))
            .map(|&i| self.shards[i].machine_index)
            .collect();
        for m in machines {
            self.send(m, ToMachine::StopServices { run: self.run.clone() });
        }
    }

    /// A service instance said how it is: ready (its address), or failed or
    /// gone while the run needs it (which fails the run).
    fn service_event(&mut self, sref: &ShardRef, service: &str, state: &ServiceState) {
        let failed = match state {
            ServiceState::Ready { address, .. } => {
                let mut address = address.clone();
                address.machine = sref.machine.clone();
                self.ready.entry(service.to_string()).or_default().insert(sref.instance, address);
                self.start_entries_when_ready();
                None
            }
            ServiceState::Failed { message } => Some(message.clone()),
            ServiceState::Exited { expected: false, status, last_output } if !self.services_stopped => {
                Some(match last_output.is_empty() {
                    true => format!("it exited ({status}) while the run went on; it wrote no output"),
                    false => {
                        format!("it exited ({status}) while the run went on; its last output:\n{last_output}")
                    }
                })
            }
            _ => None,
        };
        if let Some(message) = failed {
            self.service_failed(service, &sref.machine, message);
        }
    }

    /// A service the run needs is gone: the run fails, and entries not yet
    /// started are assigned only to report their tests cancelled.
    fn service_failed(&mut self, service: &str, machine: &str, message: String) {
        let message: String = message.chars().take(4096).collect();
        self.handle_cancel(CancelReason::ServiceFailed {
            service: service.to_string(),
            machine: machine.to_string(),
            message,
        });
        self.start_entries();
    }

    /// Takes up a run this coordinator started before it restarted, from
    /// the run's stored `events` (all of them, in order): the machines are
    /// the run's, in the order they first appear in `run-started`. Each
    /// shard's last event number is the count of its machine's events
    /// stored (a machine's events are taken strictly in order, and one not
    /// stored was not acknowledged, so the machine resends it); a shard with
    /// `shard-finished` stored is done; the outcome counts, the sync service
    /// and the answers to sync calls are rebuilt from the stored events.
    /// Nothing is emitted; call [`Dispatcher::resume_start`] next.
    pub fn resume(
        run: String,
        plan: &Plan,
        suites: Vec<SuiteRef>,
        machines: Vec<MachineLink>,
        events: &[Event],
        reporters: Vec<Box<dyn Reporter>>,
    ) -> Result<Dispatcher, String> {
        // It may have waited for its machines first (run-queued events).
        let Some((started_at, infos)) = events.iter().find_map(|e| match &e.kind {
            EventKind::RunStarted { shards, .. } => Some((e.at_us, shards)),
            _ => None,
        }) else {
            return Err("its run-started event was not stored".into());
        };
        let parallel = plan.settings.execution == Execution::Parallel;
        if events.iter().any(|e| matches!(e.kind, EventKind::RunFinished { .. })) {
            return Err("it has finished".into());
        }
        let mut shards = Vec::with_capacity(infos.len());
        for info in infos {
            let machine_index =
                machines.iter().position(|l| l.info.name == info.shard.machine).ok_or_else(|| {
                    format!(
                        "machine {} of shard {} is not among its machines",
                        info.shard.machine, info.shard.shard
                    )
                })?;
            if let Some(name) = &info.service {
                let Some(index) = plan.services.iter().position(|s| &s.name == name) else {
                    return Err(format!(
                        "shard {} runs service {name}, which its plan lacks",
                        info.shard.shard
                    ));
                };
                shards.push(ShardPlan {
                    shard: info.shard.clone(),
                    entry: usize::MAX,
                    profile: info.profile.clone(),
                    machine_index,
                    instance_count: info.instance_count,
                    coordinates: false,
                    service: Some(index),
                });
                continue;
            }
            if info.entry >= plan.entries.len() || info.entry >= suites.len() {
                return Err(format!(
                    "shard {} names entry {}, which its plan lacks",
                    info.shard.shard, info.entry
                ));
            }
            shards.push(ShardPlan {
                shard: info.shard.clone(),
                entry: info.entry,
                profile: info.profile.clone(),
                machine_index,
                instance_count: info.instance_count,
                coordinates: parallel && suites[info.entry].uses_sync,
                service: None,
            });
        }
        let mut d = Dispatcher::new(run, plan, suites, machines, shards, reporters);
        // The sync service first: a shard that could not run breaks it below.
        d.sync = Arc::new(SyncService::restore(events.iter().filter_map(|e| match &e.kind {
            EventKind::Sync { op, .. } => Some(op),
            _ => None,
        })));
        for e in events {
            d.stream.seq = e.seq;
            let Some(sref) = e.kind.shard().cloned() else { continue };
            if e.machine_at_us.is_some() {
                *d.last_seq.entry(sref.shard).or_default() += 1;
            }
            match &e.kind {
                EventKind::TestStarted { test, .. } => d.test_started(sref.shard, test, e.at_us),
                EventKind::TestFinished { outcome, test, .. } => {
                    d.test_finished(sref.shard, test);
                    d.summary.add(*outcome);
                    if outcome.is_failure() && d.fail_fast && d.cancelled.is_none() {
                        // Cancelled again by resume_start, once machines can hear it.
                        d.cancelled = Some(CancelReason::FailFast {
                            test: test.clone(),
                            role: sref.role.clone(),
                            outcome: *outcome,
                        });
                    }
                }
                EventKind::ShardFinished { error, .. } => {
                    if let Some(why) = error {
                        d.could_not_run(&sref, why);
                        // Ended here, not by its machine: it was lost.
                        if e.machine_at_us.is_none() {
                            d.lost.insert(sref.shard, why.clone());
                        }
                    }
                    d.done.insert(sref.shard);
                }
                EventKind::Service { service, state, .. } => {
                    let Some(&i) = d.by_no.get(&sref.shard) else { continue };
                    if d.assignments[i].service.as_ref().is_none_or(|s| &s.name != service) {
                        continue;
                    }
                    match state {
                        ServiceState::Ready { address, .. } => {
                            d.ready
                                .entry(service.clone())
                                .or_default()
                                .insert(sref.instance, address.clone());
                        }
                        // A stop a fault asked for is not the run's end.
                        ServiceState::Stopping if !d.owes_fault(sref.shard) => d.services_stopped = true,
                        ServiceState::Failed { message } if d.cancelled.is_none() && !d.services_stopped => {
                            d.cancelled = Some(CancelReason::ServiceFailed {
                                service: service.clone(),
                                machine: sref.machine.clone(),
                                message: message.clone(),
                            });
                        }
                        ServiceState::Exited { expected: false, status, .. }
                            if d.cancelled.is_none() && !d.services_stopped =>
                        {
                            d.cancelled = Some(CancelReason::ServiceFailed {
                                service: service.clone(),
                                machine: sref.machine.clone(),
                                message: format!("it exited ({status}) while the run went on"),
                            });
                        }
                        _ => {}
                    }
                }
                EventKind::Fault { .. } => d.resume_fault(&sref, &e.kind),
                EventKind::Sync { op, call, .. } => {
                    match (op, call) {
                        // A plain signal's answer, or the signal a
                        // signal-and-wait took before it waited.
                        (SyncOp::Signal { value, .. }, Some(id)) => {
                            d.signalled.insert((sref.shard, *id), *value);
                        }
                        (_, Some(id)) => {
                            if let Some(reply) = SyncService::reply_of(op) {
                                d.sync_calls.insert((sref.shard, *id), Some(Kept::Reply(reply)));
                            }
                        }
                        (_, None) => {}
                    }
                }
                _ => {}
            }
        }
        // The entries had started if every service was ready, or if any of
        // them said a word (a run cancelled while its services started).
        let ready: usize = d.ready.values().map(BTreeMap::len).sum();
        let entry_heard =
            d.groups.iter().flatten().any(|&i| d.last_seq.contains_key(&d.shards[i].shard.shard));
        if ready >= d.service_shards.len() || entry_heard {
            d.start_entries_quietly();
        }
        let done = d.done.clone();
        d.sync_calls.retain(|(s, _), _| !done.contains(s));
        d.signalled.retain(|(s, _), _| !done.contains(s));
        d.group = d
            .groups
            .iter()
            .position(|g| g.iter().any(|&i| !d.done.contains(&d.shards[i].shard.shard)))
            .unwrap_or(d.groups.len().saturating_sub(1));
        // Its clock: the run started when run-started was stamped.
        let since = Duration::from_micros(u64::try_from(now_us() - started_at).unwrap_or(0));
        d.started = Instant::now().checked_sub(since).unwrap_or_else(Instant::now);
        Ok(d)
    }

    /// After [`Dispatcher::resume`]: a fail-fast run with a failure recorded
    /// is cancelled again, and the machines connected are told what they
    /// may have missed.
    pub fn resume_start(&mut self) {
        if let Some(reason) = self.cancelled.take() {
            self.handle_cancel(reason);
        }
        for m in 0..self.machines.len() {
            self.handle_connected(m, None);
        }
        self.stop_services_when_done();
    }

    /// Machine `m` (re)connected: the shards of the current group it has not
    /// said a word about are assigned again (a machine ignores an
    /// assignment it holds), and a cancelled run is cancelled again.
    /// Machine `m` (re)connected, holding the shards of this run in
    /// `holding` (when it says). A started shard it no longer holds — its
    /// runner restarted — is lost at once; one not started is assigned again.
    pub fn handle_connected(&mut self, m: usize, holding: Option<Vec<u32>>) {
        let mut group = self.service_shards.clone();
        if self.entries_started {
            group.extend(self.groups.get(self.group).cloned().unwrap_or_default());
        }
        let mut forgotten = Vec::new();
        for i in group {
            let no = self.shards[i].shard.shard;
            if self.shards[i].machine_index != m || self.done.contains(&no) {
                continue;
            }
            if self.last_seq.contains_key(&no) && holding.as_ref().is_some_and(|h| !h.contains(&no)) {
                forgotten.push(i);
                continue;
            }
            if self.last_seq.contains_key(&no) {
                // It has this shard: busy with it, not assigned it again.
                self.machines[m].port.hold(&self.run, &self.shards[i].shard, true);
                continue;
            }
            self.send(m, ToMachine::Assign { assignment: Box::new(self.assignments[i].clone()) });
        }
        if let Some(reason) = &self.cancelled {
            self.send(m, ToMachine::Cancel { run: self.run.clone(), reason: reason.clone() });
        }
        if self.services_stopped {
            self.send(m, ToMachine::StopServices { run: self.run.clone() });
        }
        self.resend_faults(m);
        self.lose(m, forgotten, "its runner restarted and no longer holds the shard");
        // Shards it still holds that ended lost while it was away: it stops
        // them now (nothing more of them is taken) and is free for new work.
        // (One it finished is not: its replayed end is acknowledged once
        // what it said is stored.)
        for &no in holding.iter().flatten() {
            let owned = self.by_no.get(&no).is_some_and(|&i| self.shards[i].machine_index == m);
            if let Some(why) = self.lost.get(&no).filter(|_| owned) {
                let (run, reason) = (self.run.clone(), why.clone());
                self.send(m, ToMachine::Lost { run, shard: no, reason });
            }
        }
    }

    /// The run's machines, by their index.
    /// The shards assigned and not done, with their machines' names: the
    /// slots this run holds.
    pub fn holding(&self) -> Vec<(String, ShardRef)> {
        let Some(group) = self.groups.get(self.group) else { return Vec::new() };
        group
            .iter()
            .map(|&i| &self.shards[i])
            .filter(|s| !self.done.contains(&s.shard.shard))
            .map(|s| (self.machines[s.machine_index].info.name.clone(), s.shard.clone()))
            .collect()
    }

    /// The names of the machines some shard of the run is placed on (in
    /// any group): a drained machine is not let go while the run goes on.
    pub fn placed_machines(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.shards.iter().map(|s| self.machines[s.machine_index].info.name.clone()).collect();
        names.sort();
        names.dedup();
        names
    }

    pub fn machine_names(&self) -> Vec<String> {
        self.machines.iter().map(|l| l.info.name.clone()).collect()
    }

    /// Whether every shard is done.
    pub fn is_finished(&self) -> bool {
        self.done.len() >= self.shards.len()
    }

    /// One input from outside.
    pub fn handle(&mut self, input: Inbound) {
        match input {
            Inbound::Message { machine, msg, clock_offset_us, intake } => {
                // An acknowledgement sent durably keeps the room until the
                // store commits; otherwise it is given back here.
                self.intake = intake;
                self.handle_message(machine, msg, clock_offset_us);
                self.intake = None;
            }
            Inbound::Lost { machine, reason } => self.handle_lost(machine, &reason),
            Inbound::Connected { machine, holding } => self.handle_connected(machine, holding),
            Inbound::Cancel { reason } => self.handle_cancel(reason),
        }
    }

    /// A message of machine index `m`.
    pub fn handle_message(&mut self, m: usize, msg: FromMachine, clock_offset_us: i64) {
        if self.cancel_deadline.is_some() {
            // Word from a machine winding the run down: more time.
            self.cancel_deadline = Some(tokio::time::Instant::now() + self.cancel_grace);
        }
        match msg {
            FromMachine::Event { run, shard, seq, at_us, event } if run == self.run => {
                self.handle_event(m, shard, seq, at_us, clock_offset_us, event)
            }
            FromMachine::Sync { id, run, shard, call } if run == self.run => {
                self.handle_sync(m, shard, id, call)
            }
            FromMachine::ShardDone { run, shard } if run == self.run => self.handle_shard_done(m, shard),
            other => tracing::debug!(run = %self.run, "ignoring a message not for this run: {other:?}"),
        }
    }

    fn test_started(&mut self, shard: u32, test: &str, at_us: i64) {
        let running = self.running_test.entry(shard).or_default();
        // A shard runs at most `test_threads` (≤ 1024) tests at once; a
        // machine that claims more is not believed past this.
        if running.len() < MAX_RUNNING_TESTS && !running.iter().any(|t| t == test) {
            running.push(test.to_string());
            self.test_began.insert((shard, test.to_string()), at_us);
        }
    }

    fn test_finished(&mut self, shard: u32, test: &str) {
        if let Some(running) = self.running_test.get_mut(&shard) {
            running.retain(|t| t != test);
        }
        self.test_began.remove(&(shard, test.to_string()));
    }

    /// The shard's index when machine `m` runs shard number `shard`.
    fn owned(&self, m: usize, shard: u32) -> Option<usize> {
        let index = self.by_no.get(&shard).copied();
        let owned = index.filter(|&i| self.shards[i].machine_index == m);
        if owned.is_none() {
            let name = self.machines.get(m).map_or("?", |l| l.info.name.as_str());
            crate::throttled!(warn, 30, run = %self.run, machine = name, shard, "refusing a message for a shard this machine does not run");
        }
        owned
    }

    fn handle_event(
        &mut self,
        m: usize,
        shard: u32,
        seq: u64,
        at_us: i64,
        offset: i64,
        mut event: EventKind,
    ) {
        let Some(index) = self.owned(m, shard) else { return };
        let last = self.last_seq.get(&shard).copied().unwrap_or(0);
        if seq <= last || self.done.contains(&shard) {
            // A resent duplicate, or news from a shard already given up as
            // lost (which the machine may forget too).
            let upto = if self.done.contains(&shard) { seq.max(last) } else { last };
            self.send_durable(m, ToMachine::Ack { run: self.run.clone(), shard, seq: upto });
            return;
        }
        if seq != last + 1 {
            crate::throttled!(warn, 30, run = %self.run, shard, seq, last, "refusing an event out of order");
            return;
        }
        let sref = self.shards[index].shard.clone();
        match event.shard_mut() {
            Some(s) => *s = sref.clone(),
            None => {
                crate::throttled!(warn, 30, run = %self.run, shard, "refusing a run-level event from a machine");
                return;
            }
        }
        self.last_seq.insert(shard, seq);
        if matches!(event, EventKind::Sync { .. }) {
            // Only the coordinator records what sync did (a restart rebuilds
            // the run's sync from that record); a machine's claim is kept as
            // a warning, so its shard's sequence goes on.
            crate::throttled!(warn, 30, run = %self.run, shard, "refusing a sync event from a machine");
            event = EventKind::Log {
                shard: sref.clone(),
                test: String::new(),
                level: "warn".into(),
                message: "the coordinator refused a sync event sent by a machine".into(),
            };
        }
        // Only a service's own shard speaks for it, and only by its name.
        if let EventKind::Service { service, .. } = &event
            && self.assignments[index].service.as_ref().is_none_or(|s| &s.name != service)
        {
            crate::throttled!(warn, 30, run = %self.run, shard, "refusing a service event from a shard that does not run that service");
            event = EventKind::Log {
                shard: sref.clone(),
                test: String::new(),
                level: "warn".into(),
                message:
                    "the coordinator refused a service event from a shard that does not run that service"
                        .into(),
            };
        }
        if matches!(event, EventKind::Fault { .. }) {
            event = self.fault_event(index, event);
        }
        let answered = match &event {
            EventKind::Fault { id, step: FaultStep::Done { .. }, .. } => Some((*id, None)),
            EventKind::Fault { id, step: FaultStep::Failed { message }, .. } => {
                Some((*id, Some(message.clone())))
            }
            _ => None,
        };
        let running = self.running_test.get(&shard).map_or(&[][..], Vec::as_slice);
        if let Err(why) = self.attached.check(shard, running, &event) {
            crate::throttled!(warn, 30, run = %self.run, shard, "refusing an attachment: {why}");
            let test = match &event {
                EventKind::Attachment { test, .. } => test.clone(),
                _ => String::new(),
            };
            event = EventKind::Log {
                shard: sref.clone(),
                test,
                level: "warn".into(),
                message: format!("the coordinator refused an attachment: {why}"),
            };
        }
        match &event {
            EventKind::TestStarted { test, .. } => {
                self.test_started(shard, test, now_us());
                self.attached.reset(shard, test);
            }
            EventKind::TestFinished { outcome, test, .. } => {
                self.test_finished(shard, test);
                self.attached.reset(shard, test);
                self.summary.add(*outcome);
                if outcome.is_failure() && self.fail_fast {
                    let reason = CancelReason::FailFast {
                        test: test.clone(),
                        role: sref.role.clone(),
                        outcome: *outcome,
                    };
                    self.handle_cancel(reason);
                }
            }
            // A service that ends once it was told to stop ends as asked.
            EventKind::ShardFinished { error: Some(_), .. }
                if self.services_stopped && self.shards[index].service.is_some() => {}
            EventKind::ShardFinished { error: Some(e), .. } => self.could_not_run(&sref, e),
            _ => {}
        }
        let service = match &event {
            EventKind::Service { service, state, .. } => Some((service.clone(), state.clone())),
            _ => None,
        };
        let finished = matches!(event, EventKind::ShardFinished { .. });
        if self.spent > self.max_spent {
            event = lightened(event);
        }
        self.spent = self.spent.saturating_add(weight(&event));
        let over = self.spent > self.max_spent;
        // The machine's clock, corrected onto the coordinator's timeline.
        self.stream.push(event, at_us.saturating_sub(offset), Some(at_us));
        if over {
            self.over_spent();
        }
        if let Some((service, state)) = service {
            self.service_event(&sref, &service, &state);
        }
        if let Some((id, failure)) = answered {
            self.fault_answered(shard, id, failure);
        }
        if finished && self.shards[index].service.is_some() {
            self.faults_end_with(&sref, "its service shard finished");
        }
        self.send_durable(m, ToMachine::Ack { run: self.run.clone(), shard, seq });
    }

    fn handle_sync(&mut self, m: usize, shard: u32, id: u64, call: SyncCall) {
        if self.owned(m, shard).is_none() {
            return;
        }
        let key = (shard, id);
        match self.sync_calls.get(&key) {
            Some(Some(kept)) => {
                let reply = match kept.clone() {
                    Kept::Reply(reply) => reply,
                    Kept::Message { topic, index } => match self.sync.message(&topic, index) {
                        Some(payload) => SyncReply::Message { payload },
                        None => SyncReply::Error {
                            kind: SyncFailure::Invalid,
                            message: format!(
                                "message {} of topic {topic:?} is gone",
                                index.saturating_add(1)
                            ),
                        },
                    },
                };
                self.send_durable(m, ToMachine::SyncReply { id, reply });
                return;
            }
            Some(None) => return, // still waiting; the answer goes to the current connection
            None => {}
        }
        // A bounded record: a call past it is refused before it does anything.
        if self.sync_calls.len().saturating_add(self.signalled.len()) >= MAX_KEPT_CALLS {
            let reply = SyncReply::Error {
                kind: SyncFailure::Invalid,
                message: format!(
                    "the run holds the answers of {MAX_KEPT_CALLS} sync calls of shards still running, the most it may"
                ),
            };
            self.send_durable(m, ToMachine::SyncReply { id, reply });
            return;
        }
        let waits =
            matches!(call, SyncCall::Barrier { .. } | SyncCall::SignalAndWait { .. } | SyncCall::Next { .. });
        if waits && self.waiting.get(&shard).is_some_and(|&n| n >= MAX_WAITING_CALLS) {
            let reply = SyncReply::Error {
                kind: SyncFailure::Invalid,
                message: format!(
                    "shard {shard} has {MAX_WAITING_CALLS} sync calls waiting, the most one shard may have at \
                     once (a running test makes one at a time)"
                ),
            };
            self.send_durable(m, ToMachine::SyncReply { id, reply });
            return;
        }
        // Signals and publishes happen here, one at a time, and are recorded
        // as they happen (a restart rebuilds the counts from that record);
        // only waits run apart.
        let wait = match call {
            SyncCall::Fault { service, instance, action, test } => {
                self.handle_fault(shard, id, service, instance, action, test);
                return;
            }
            SyncCall::Signal { state } => {
                let reply = self
                    .take_signal(shard, id, &state)
                    .map_or_else(|e| e, |value| SyncReply::Value { value });
                self.handle_sync_done(SyncDone { shard, id, reply, op: None, read: None });
                return;
            }
            SyncCall::Publish { topic, payload } => {
                let (reply, op) = self.sync.publish(topic, payload);
                self.handle_sync_done(SyncDone { shard, id, reply, op, read: None });
                return;
            }
            SyncCall::SignalAndWait { state, target, timeout_ms } => {
                match self.take_signal(shard, id, &state) {
                    Ok(value) => (SyncCall::Barrier { state, target, timeout_ms }, Some(value)),
                    Err(reply) => {
                        self.handle_sync_done(SyncDone { shard, id, reply, op: None, read: None });
                        return;
                    }
                }
            }
            wait => (wait, None),
        };
        self.sync_calls.insert(key, None);
        *self.waiting.entry(shard).or_default() += 1;
        // What it waits on, for people watching, unless it need not wait.
        let waiting = match &wait {
            (SyncCall::Barrier { state, target, .. }, _) => {
                let arrived = self.sync.count(state);
                (arrived < *target).then(|| SyncOp::BarrierWaiting {
                    state: state.clone(),
                    target: *target,
                    arrived,
                })
            }
            (SyncCall::Next { topic, index, .. }, _) => (self.sync.messages(topic) <= *index)
                .then(|| SyncOp::TopicWaiting { topic: topic.clone(), message_seq: index.saturating_add(1) }),
            _ => None,
        };
        if let (Some(op), Some(&index)) = (waiting, self.by_no.get(&shard)) {
            let sref = self.shards[index].shard.clone();
            self.emit_sync(sref, op, id);
        }
        let (sync, ops) = (self.sync.clone(), self.ops_tx.clone());
        let read = match &wait {
            (SyncCall::Next { topic, index, .. }, _) => Some((topic.clone(), *index)),
            _ => None,
        };
        self.tasks.spawn(async move {
            let (reply, op) = match wait {
                (SyncCall::Barrier { state, target, timeout_ms }, signalled) => {
                    let began = Instant::now();
                    let done = sync.barrier(state, target, timeout_ms, signalled).await;
                    crate::metrics::metrics().barrier_wait.observe(began.elapsed().as_secs_f64());
                    done
                }
                (other, _) => sync.handle(other).await,
            };
            let read = read.filter(|_| matches!(reply, SyncReply::Message { .. }));
            let _ = ops.send(SyncDone { shard, id, reply, op, read });
        });
    }

    /// The signal of call `id` on `state`: the one it already took (a
    /// resent call), or a new one, counted and recorded at once.
    fn take_signal(&mut self, shard: u32, id: u64, state: &str) -> Result<u64, SyncReply> {
        if let Some(&value) = self.signalled.get(&(shard, id)) {
            return Ok(value);
        }
        let value = self.sync.signal(state)?;
        self.signalled.insert((shard, id), value);
        if let Some(&index) = self.by_no.get(&shard) {
            let sref = self.shards[index].shard.clone();
            let op = SyncOp::Signal { state: state.to_string(), value };
            self.emit_sync(sref, op, id);
        }
        Ok(value)
    }

    /// Shard `sref` said it could not run (`why`): it counts against the run,
    /// and no party waits for it any more.
    fn could_not_run(&mut self, sref: &ShardRef, why: &str) {
        // One error a shard (a machine that says it again is not heard
        // again), a page at most: the machine's words, kept for the run's end.
        if self.shard_errors.len() >= self.shards.len()
            || self.shard_errors.iter().any(|e| e.starts_with(&format!("shard {} (", sref.shard)))
        {
            return;
        }
        let why: String = why.chars().take(4096).collect();
        let why = why.as_str();
        self.shard_errors.push(format!("shard {} ({} on {}): {why}", sref.shard, sref.role, sref.machine));
        self.sync.break_run(
            SyncFailure::Lost,
            format!("role {} on machine {} could not run: {why}", sref.role, sref.machine),
        );
    }

    /// A sync call finished: show it on the timeline and answer it.
    pub fn handle_sync_done(&mut self, d: SyncDone) {
        let Some(&index) = self.by_no.get(&d.shard) else { return };
        let kept = match d.read {
            Some((topic, index)) => Kept::Message { topic, index },
            None => Kept::Reply(d.reply.clone()),
        };
        if matches!(self.sync_calls.get(&(d.shard, d.id)), Some(None))
            && let Some(n) = self.waiting.get_mut(&d.shard)
        {
            *n = n.saturating_sub(1);
        }
        if !self.done.contains(&d.shard) {
            self.sync_calls.insert((d.shard, d.id), Some(kept));
        }
        let mut answer = Some(ToMachine::SyncReply { id: d.id, reply: d.reply });
        let machine = self.shards[index].machine_index;
        // A release is answered once what came before it is committed —
        // the signals that satisfied the barrier among it — not after its
        // own record: a restart recounts the committed signals, and a party
        // that asks again is released again, with the same answer. That
        // saves the parties of a round a commit each way.
        let released = matches!(d.op, Some(SyncOp::BarrierReleased { .. }));
        if released && let Some(answer) = answer.take() {
            self.send_durable(machine, answer);
        }
        if let Some(op) = d.op {
            let shard = self.shards[index].shard.clone();
            self.emit_sync(shard, op, d.id);
        }
        if let Some(answer) = answer {
            self.send_durable(machine, answer);
        }
    }

    fn handle_shard_done(&mut self, m: usize, shard: u32) {
        if self.owned(m, shard).is_none() {
            return;
        }
        self.send_durable(m, ToMachine::AckShardDone { run: self.run.clone(), shard });
        if let Some(i) = self.by_no.get(&shard) {
            self.machines[m].port.hold(&self.run, &self.shards[*i].shard, false);
        }
        if self.done.insert(shard) {
            self.forget_sync(shard);
            if let Some(&i) = self.by_no.get(&shard) {
                let sref = self.shards[i].shard.clone();
                self.faults_end_with(&sref, "it ended");
            }
            self.advance();
        }
    }

    /// A done shard's machine resends none of its sync calls: their
    /// answers are let go.
    fn forget_sync(&mut self, shard: u32) {
        self.sync_calls.retain(|(s, _), _| *s != shard);
        self.signalled.retain(|(s, _), _| *s != shard);
        self.waiting.remove(&shard);
    }

    /// Puts sync operation `op` of call `call` on the timeline, counted
    /// against the bytes one run's events may keep like a machine's events:
    /// signals, names and messages are the suites' own text. Past that
    /// bound the run is cancelled, and later operations are answered but
    /// no longer shown (nor stored).
    fn emit_sync(&mut self, shard: ShardRef, op: SyncOp, call: u64) {
        if self.spent > self.max_spent {
            return;
        }
        let kind = EventKind::Sync { shard, op, call: Some(call) };
        self.spent = self.spent.saturating_add(weight(&kind));
        self.stream.emit(kind);
        if self.spent > self.max_spent {
            self.over_spent();
        }
    }

    /// The run's events went over the bytes one run may keep: it is
    /// cancelled, saying so.
    fn over_spent(&mut self) {
        let limit = format!(
            "its events hold more than {} of output, messages, logs, attachments and sync operations, the most one run may keep",
            ensemble_protocol::units::ByteSize(self.max_spent)
        );
        self.handle_cancel(CancelReason::OverLimit { limit });
    }

    /// Machine `m` is gone: what it had not finished is lost.
    pub fn handle_lost(&mut self, m: usize, reason: &str) {
        let gone: Vec<usize> = (0..self.shards.len())
            .filter(|&i| {
                self.shards[i].machine_index == m && !self.done.contains(&self.shards[i].shard.shard)
            })
            .collect();
        self.lose(m, gone, reason);
    }

    /// The shards `gone` (by index) of machine `m` are lost, for `reason`.
    fn lose(&mut self, m: usize, gone: Vec<usize>, reason: &str) {
        let name = self.machines.get(m).map_or_else(|| "?".to_string(), |l| l.info.name.clone());
        if gone.is_empty() {
            return;
        }
        let lost_service = (!self.services_stopped)
            .then(|| gone.iter().find(|&&i| self.shards[i].service.is_some()))
            .flatten()
            .copied();
        for i in gone {
            let sref = self.shards[i].shard.clone();
            let why = format!("machine {name} was lost: {reason}");
            let mut tests = self.running_test.remove(&sref.shard).unwrap_or_default();
            // A service is not a test: its loss fails the run (below), not a count.
            if tests.is_empty() && self.shards[i].service.is_none() {
                tests.push("(shard)".to_string());
            }
            let mut lost = Summary::default();
            for test in tests {
                self.summary.add(Outcome::Lost);
                lost.add(Outcome::Lost);
                // It lasted from its start to its loss, whatever its end.
                let began = self.test_began.remove(&(sref.shard, test.clone()));
                let lasted = began.map_or(0, |t| now_us().saturating_sub(t).max(0) / 1000);
                self.stream.emit(EventKind::TestFinished {
                    shard: sref.clone(),
                    test,
                    outcome: Outcome::Lost,
                    duration_ms: u64::try_from(lasted).unwrap_or(0),
                    attempt: 1,
                    message: Some(why.clone()),
                    output: String::new(),
                });
            }
            self.lost.insert(sref.shard, why.clone());
            self.stream.emit(EventKind::ShardFinished {
                shard: sref.clone(),
                summary: lost,
                error: Some(why),
            });
            self.sync.break_run(
                SyncFailure::Lost,
                format!("role {} on machine {name} was lost ({reason})", sref.role),
            );
            self.done.insert(sref.shard);
            self.forget_sync(sref.shard);
            self.faults_end_with(&sref, &format!("machine {name} was lost"));
        }
        if lost_service.is_some() || self.fail_fast {
            self.handle_cancel(CancelReason::MachineLost { machine: name, reason: reason.to_string() });
        }
        if lost_service.is_some() {
            // The run cannot go on without it; entries not yet started
            // report their tests cancelled.
            self.start_entries();
        }
        self.advance();
    }

    fn handle_all_lost(&mut self, reason: &str) {
        for m in 0..self.machines.len() {
            self.handle_lost(m, reason);
        }
    }

    /// Stops the run: sync waits fail, every machine stops the run's shards.
    /// The first reason wins.
    pub fn handle_cancel(&mut self, reason: CancelReason) {
        if self.cancelled.is_some() {
            return;
        }
        tracing::info!(run = %self.run, %reason, "cancelling the run");
        // The machines hear of the cancel before any wait it breaks answers
        // them: a test stopped at a barrier ends cancelled, not failed.
        for m in 0..self.machines.len() {
            self.send(m, ToMachine::Cancel { run: self.run.clone(), reason: reason.clone() });
        }
        self.sync.break_run(SyncFailure::Cancelled, reason.to_string());
        self.cancelled = Some(reason);
        self.cancel_deadline = Some(tokio::time::Instant::now() + self.cancel_grace);
        // Entries still waiting for services are assigned now, to report
        // their tests cancelled (rather than wait to be lost).
        self.start_entries();
    }

    /// A cancelled run heard nothing from its machines for [`CANCEL_GRACE`]:
    /// the shards they have not finished are lost, and the run ends.
    pub fn handle_cancel_overdue(&mut self) {
        let silent: Vec<usize> = (0..self.machines.len())
            .filter(|&m| {
                self.shards.iter().any(|s| s.machine_index == m && !self.done.contains(&s.shard.shard))
            })
            .collect();
        for m in silent {
            let grace = humantime::format_duration(self.cancel_grace);
            self.handle_lost(m, &format!("it did not wind the cancelled run down within {grace}"));
        }
        self.cancel_deadline = (!self.is_finished()).then(|| tokio::time::Instant::now() + self.cancel_grace);
    }

    /// Starts the next sequential group once the current one is done.
    fn advance(&mut self) {
        while self.group + 1 < self.groups.len()
            && self.groups[self.group].iter().all(|&i| self.done.contains(&self.shards[i].shard.shard))
        {
            self.group += 1;
            self.assign_group();
        }
        self.stop_services_when_done();
    }

    fn assign_group(&mut self) {
        if !self.entries_started {
            return;
        }
        let Some(group) = self.groups.get(self.group).cloned() else { return };
        for i in group {
            let m = self.shards[i].machine_index;
            if !self.send(m, ToMachine::Assign { assignment: Box::new(self.assignments[i].clone()) }) {
                tracing::warn!(machine = %self.shards[i].shard.machine, "could not reach the machine to assign a shard");
            }
            if let Some(reason) = &self.cancelled {
                // A cancelled run's later shards list their tests as cancelled.
                let cancel = ToMachine::Cancel { run: self.run.clone(), reason: reason.clone() };
                self.send(m, cancel);
            }
        }
    }

    /// Sends once every event emitted so far is committed (at once without
    /// a store).
    fn send_durable(&mut self, m: usize, msg: ToMachine) {
        if self.committed.is_none() {
            self.send(m, msg);
            return;
        }
        let intake = self.intake.take();
        self.held.push_back((self.stream.seq, m, msg, intake));
        self.handle_committed();
    }

    /// The store committed more: send what waited for it.
    pub fn handle_committed(&mut self) {
        let Some(committed) = self.committed.as_ref().map(|c| *c.borrow()) else { return };
        while self.held.front().is_some_and(|(seq, ..)| *seq <= committed) {
            let (_, m, msg, _intake) = self.held.pop_front().expect("checked above");
            self.send(m, msg);
        }
    }

    fn send(&self, m: usize, msg: ToMachine) -> bool {
        self.machines.get(m).is_some_and(|l| l.port.send(msg))
    }

    /// Ends the run: waits for the sync calls still in flight (the run's
    /// sync is broken first, so they fail at once), puts their operations on
    /// the timeline, then emits `run-finished` with the verdict.
    pub async fn finish(mut self) -> RunResult {
        self.sync.break_run(SyncFailure::Cancelled, "the run is over".into());
        self.tasks.close();
        self.tasks.wait().await;
        while let Ok(d) = self.ops_rx.try_recv() {
            self.handle_sync_done(d);
        }
        let shard_errors = u32::try_from(self.shard_errors.len()).unwrap_or(u32::MAX);
        let verdict = Verdict::decide(&self.summary, shard_errors, self.cancelled.as_ref());
        let duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.stream.emit(EventKind::RunFinished {
            summary: self.summary,
            duration_ms,
            shard_errors,
            cancelled: self.cancelled.clone(),
            verdict,
        });
        for r in &mut self.stream.reporters {
            if let Err(e) = r.finish() {
                tracing::warn!("a reporter failed to finish: {e:#}");
            }
        }
        // The last acknowledgements, once the end is on disk (a store that
        // cannot commit leaves them unsent: the machines resend, and an
        // ended run acknowledges what it gets).
        if let Some(committed) = self.committed.as_mut() {
            let last = self.stream.seq;
            let _ = tokio::time::timeout(FINAL_COMMIT_WAIT, committed.wait_for(|c| *c >= last)).await;
            self.handle_committed();
        }
        RunResult {
            run: self.run,
            summary: self.summary,
            shard_errors: self.shard_errors,
            cancelled: self.cancelled,
            verdict,
        }
    }
}

#[cfg(test)]
mod tests;
