//! A machine: executes the shards assigned to it.
//!
//! The agent reads [`ToMachine`] messages and writes [`FromMachine`] messages;
//! it does not know whether they cross a process boundary. Each assignment
//! becomes a tracked task that fetches the suite by sha256, loads it into the
//! sandbox, lists its tests and runs each in a fresh instance — retrying
//! failures as the plan allows — while streaming numbered events. Guest sync
//! calls leave as [`FromMachine::Sync`] and wait for the matching reply.
//!
//! Invariants: every assignment ends with exactly one `shard-finished` event
//! followed by [`FromMachine::ShardDone`], whatever the suite does; a run's
//! state on this machine (its cancellation) lives while it has shards here
//! and is dropped with the last one.
//!
//! [`link`] carries these messages to the coordinator in every wiring, and
//! [`join`] is the remote one (`ensemble runner --join`).

pub mod join;
pub mod link;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ensemble_protocol::api::imports_sync;
use ensemble_protocol::attachment::is_sha256;
use ensemble_protocol::event::{EventKind, Outcome, ShardRef, Summary};
use ensemble_protocol::filter::{Decision, Listed, Selector, TestFacts};
use ensemble_protocol::wire::{
    Assignment, Facts, FromMachine, MAX_PRECOMPILE, MachineInfo, SyncCall, SyncFailure, SyncReply, ToMachine,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::sandbox::{Grants, HostPolicy, LoadedSuite, Sandbox, SyncPort, TestCase, TestEnv, TestRun};
use crate::time::now_us;

/// Where an agent gets suite bytes by sha256 (a local map in standalone runs,
/// the coordinator's HTTP API when joined to a server).
#[async_trait]
pub trait SuiteSource: Send + Sync {
    async fn fetch(&self, sha256: &str) -> anyhow::Result<Arc<Vec<u8>>>;
}

/// Suites held in memory, by sha256.
#[derive(Default)]
pub struct MemorySuites(Mutex<HashMap<String, Arc<Vec<u8>>>>);

impl MemorySuites {
    pub fn insert(&self, sha256: String, bytes: Arc<Vec<u8>>) {
        self.0.lock().expect("suites lock").insert(sha256, bytes);
    }
}

#[async_trait]
impl SuiteSource for MemorySuites {
    async fn fetch(&self, sha256: &str) -> anyhow::Result<Arc<Vec<u8>>> {
        self.0
            .lock()
            .expect("suites lock")
            .get(sha256)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no suite with sha256 {sha256}"))
    }
}

/// This host's facts and built-in labels.
pub fn local_facts() -> Facts {
    Facts {
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
        cpus: u32::try_from(crate::cores()).unwrap_or(u32::MAX),
        memory_bytes: total_memory(),
        ensemble_version: env!("CARGO_PKG_VERSION").to_string(),
        wasmtime_version: crate::sandbox::WASMTIME_VERSION.to_string(),
    }
}

/// The machine's RAM in bytes (0 when the OS does not say).
fn total_memory() -> u64 {
    use sysinfo::{MemoryRefreshKind, RefreshKind, System};
    System::new_with_specifics(RefreshKind::nothing().with_memory(MemoryRefreshKind::nothing().with_ram()))
        .total_memory()
}

/// The longest test message or log line sent; a suite decides their size,
/// and an event must always fit the link.
pub const MAX_MESSAGE: usize = 64 << 10;
/// The most output sent per test (the most a plan may keep).
pub const MAX_OUTPUT: usize = ensemble_protocol::plan::MAX_OUTPUT_LIMIT as usize;

/// `text` cut to at most `max` bytes (at a character boundary), saying how
/// much was cut: too much is shortened, never refused.
pub fn cut(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let note_room = 64;
    let mut end = max.saturating_sub(note_room);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let dropped = text.len() - end;
    text.truncate(end);
    text.push_str(&format!("\n… ({dropped} more bytes cut)"));
    text
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<SyncReply>>>>;

/// A machine executing shards in the process-wide sandbox.
pub struct Agent {
    pub info: MachineInfo,
    sandbox: Arc<Sandbox>,
    suites: Arc<dyn SuiteSource>,
    /// What plans may grant on this machine.
    policy: HostPolicy,
    /// Shards assigned here and not finished.
    active: std::sync::atomic::AtomicUsize,
    /// Of those, services.
    active_services: std::sync::atomic::AtomicUsize,
    /// What services may start here, and this machine's address for them.
    services: crate::services::Host,
    /// Whether it compiles suites ahead of their runs when the coordinator
    /// names them ([`ToMachine::Precompile`]).
    precompile: bool,
    /// Its shards' events not yet acknowledged ([`link::Backlog`]).
    backlog: Arc<link::Backlog>,
}

/// Suites waiting to be precompiled, at most; more are dropped (the hint
/// comes again with the next plan saved, and a run compiles what it needs).
const PRECOMPILE_QUEUE: usize = 256;

impl Agent {
    pub fn new(
        info: MachineInfo,
        sandbox: Arc<Sandbox>,
        suites: Arc<dyn SuiteSource>,
        policy: HostPolicy,
    ) -> Self {
        Self {
            info,
            sandbox,
            suites,
            policy,
            active: Default::default(),
            active_services: Default::default(),
            services: Default::default(),
            precompile: true,
            backlog: Arc::default(),
        }
    }

    /// Where its shards' unacknowledged events are counted: the link
    /// that carries them gives their bytes back ([`link::Link::counting`]).
    pub fn backlog(&self) -> Arc<link::Backlog> {
        self.backlog.clone()
    }

    /// Whether it compiles the suites the coordinator names ahead of
    /// their runs (on by default).
    pub fn with_precompile(mut self, precompile: bool) -> Self {
        self.precompile = precompile;
        self
    }

    /// Lets this machine start services as `host` says.
    pub fn with_services(mut self, host: crate::services::Host) -> Self {
        self.services = host;
        self
    }

    /// How many shards assigned here have not finished.
    pub fn active_shards(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// The shards running here that are not services (which live as long
    /// as their run, until the coordinator says it is over).
    pub fn active_test_shards(&self) -> usize {
        self.active_shards().saturating_sub(self.active_services.load(Ordering::SeqCst))
    }

    /// Serves assignments until `inbox` closes or `shutdown` fires; waits for
    /// its shard tasks before returning.
    pub async fn serve(
        self: Arc<Self>,
        mut inbox: mpsc::UnboundedReceiver<ToMachine>,
        outbox: mpsc::UnboundedSender<FromMachine>,
        shutdown: CancellationToken,
    ) {
        let pending: Pending = Arc::default();
        let next_id = Arc::new(AtomicU64::new(1));
        // Per run: its cancellation and how many of its shards are here.
        let mut runs: HashMap<String, (Arc<RunCancel>, usize)> = HashMap::new();
        // Every shard ever assigned here: a coordinator that restarted
        // assigns again the shards it heard nothing of, and one held is
        // not run twice.
        let mut assigned: std::collections::HashSet<(String, u32)> = Default::default();
        let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<String>();
        // The service instances running here, by run and shard: where
        // their faults go.
        let mut faults: HashMap<(String, u32), mpsc::UnboundedSender<crate::services::Order>> =
            HashMap::new();
        // The shards running here, by run and shard: what a `lost` stops.
        let mut links: HashMap<(String, u32), std::sync::Weak<ShardLink>> = HashMap::new();
        let tasks = TaskTracker::new();
        // Shards take this machine's slots strictly in the order assigned:
        // the coordinator assigns shards that wait for each other first, and
        // counts on them not queueing behind others.
        let (queue_tx, queue_rx) = mpsc::unbounded_channel::<(Assignment, Arc<ShardLink>)>();
        tasks.spawn(self.clone().start_in_order(queue_rx, ended_tx.clone(), tasks.clone(), shutdown.clone()));
        let (precompile_tx, precompile_rx) = mpsc::channel::<String>(PRECOMPILE_QUEUE);
        if self.precompile {
            tasks.spawn(self.clone().precompile_ahead(precompile_rx, shutdown.clone()));
        }
        loop {
            let msg = tokio::select! {
                m = inbox.recv() => m,
                Some(run) = ended_rx.recv() => {
                    if let Some((_, shards)) = runs.get_mut(&run) {
                        *shards -= 1;
                        if *shards == 0 {
                            runs.remove(&run);
                            faults.retain(|(r, _), _| r != &run);
                            links.retain(|(r, _), _| r != &run);
                        }
                    }
                    continue;
                }
                _ = shutdown.cancelled() => None,
            };
            let Some(msg) = msg else { break };
            match msg {
                ToMachine::Assign { assignment } => {
                    if !assigned.insert((assignment.run.clone(), assignment.shard.shard)) {
                        tracing::debug!(run = %assignment.run, shard = assignment.shard.shard, "already assigned here");
                        continue;
                    }
                    let (cancel, count) = runs.entry(assignment.run.clone()).or_insert_with(|| {
                        let token = shutdown.child_token();
                        let services = token.child_token();
                        (Arc::new(RunCancel { token, services, why: Mutex::default() }), 0)
                    });
                    *count += 1;
                    self.active.fetch_add(1, Ordering::SeqCst);
                    let cancel = cancel.clone();
                    let link = Arc::new(ShardLink {
                        run: assignment.run.clone(),
                        shard: assignment.shard.clone(),
                        outbox: outbox.clone(),
                        seq: Mutex::new(0),
                        pending: pending.clone(),
                        next_id: next_id.clone(),
                        stop: cancel.token.child_token(),
                        services_stop: cancel.services.child_token(),
                        lost: Mutex::default(),
                        backlog: self.backlog.clone(),
                        cancel,
                    });
                    links.insert((assignment.run.clone(), assignment.shard.shard), Arc::downgrade(&link));
                    if assignment.service.is_some() {
                        // A service holds no slot: it lives as long as the
                        // run, beside the shards that test it.
                        let (this, ended) = (self.clone(), ended_tx.clone());
                        self.active_services.fetch_add(1, Ordering::SeqCst);
                        let (orders_tx, orders) = mpsc::unbounded_channel();
                        faults.insert((assignment.run.clone(), assignment.shard.shard), orders_tx);
                        tasks.spawn(async move {
                            let run = assignment.run.clone();
                            this.run_service(*assignment, link, orders).await;
                            this.active_services.fetch_sub(1, Ordering::SeqCst);
                            this.active.fetch_sub(1, Ordering::SeqCst);
                            let _ = ended.send(run);
                        });
                    } else {
                        let _ = queue_tx.send((*assignment, link));
                    }
                }
                ToMachine::Fault { run, shard, id, action } => {
                    // Only a service of this run, running here: the shard
                    // names it. One that ended is answered by its end.
                    if let Some(orders) = faults.get(&(run, shard)) {
                        let _ = orders.send(crate::services::Order { id, action });
                    }
                }
                ToMachine::Precompile { suites } if self.precompile => {
                    let named = suites.into_iter().take(MAX_PRECOMPILE).filter(|s| is_sha256(s));
                    for sha in named.filter(|sha| !self.sandbox.is_precompiled(sha)) {
                        if precompile_tx.try_send(sha).is_err() {
                            tracing::debug!(
                                "{PRECOMPILE_QUEUE} suites wait to be precompiled already; dropping the rest"
                            );
                            break;
                        }
                    }
                }
                ToMachine::StopServices { run } => {
                    if let Some((c, _)) = runs.get(&run) {
                        c.services.cancel();
                    }
                }
                ToMachine::Cancel { run, reason } => {
                    tracing::info!(%run, %reason, "cancelling run");
                    if let Some((c, _)) = runs.get(&run) {
                        c.cancel(reason.to_string());
                    }
                }
                ToMachine::Lost { run, shard, reason } => {
                    if let Some(link) = links.get(&(run.clone(), shard)).and_then(std::sync::Weak::upgrade) {
                        tracing::warn!(%run, shard, "the coordinator counts this shard lost ({reason}); stopping it");
                        link.lose(reason);
                    }
                }
                ToMachine::SyncReply { id, reply } => {
                    if let Some(tx) = pending.lock().expect("pending lock").remove(&id) {
                        let _ = tx.send(reply);
                    }
                }
                // Acks and the link-level messages are the transport's
                // business, and so is being drained (`join` stops).
                ToMachine::Ack { .. }
                | ToMachine::AckShardDone { .. }
                | ToMachine::Drained
                | ToMachine::Precompile { .. }
                | ToMachine::Welcome { .. }
                | ToMachine::Rejected { .. }
                | ToMachine::Ping { .. } => {}
            }
        }
        shutdown.cancel();
        drop(queue_tx);
        tasks.close();
        tasks.wait().await;
    }

    /// Precompiles the suites of `queue` one by one (see [`Sandbox::precompile`]):
    /// fetched, then compiled at the lowest priority into the cache, so
    /// that the runs the coordinator's saved plans place here start on
    /// compiled code. A failure only costs the run that comes a compile.
    async fn precompile_ahead(
        self: Arc<Self>,
        mut queue: mpsc::Receiver<String>,
        shutdown: CancellationToken,
    ) {
        loop {
            let next = tokio::select! {
                next = queue.recv() => next,
                _ = shutdown.cancelled() => None,
            };
            let Some(sha) = next else { return };
            if self.sandbox.is_precompiled(&sha) {
                crate::metrics::metrics().suite_precompiled(crate::sandbox::Precompiled::Cached.as_str());
                continue;
            }
            let began = Instant::now();
            let precompiled = async {
                let bytes = self.suites.fetch(&sha).await.map_err(|e| format!("fetching it: {e:#}"))?;
                self.sandbox.precompile(bytes).await.map_err(|e| e.to_string())
            };
            // Stopping ends a compile under way (its process is killed).
            let precompiled = tokio::select! {
                precompiled = precompiled => precompiled,
                _ = shutdown.cancelled() => return,
            };
            match precompiled {
                Ok(done) => {
                    crate::metrics::metrics().suite_precompiled(done.as_str());
                    tracing::info!(suite = %sha, took = ?began.elapsed(), "precompiled ahead of its runs: {}", done.as_str());
                }
                Err(e) => {
                    crate::metrics::metrics().suite_precompiled("failed");
                    tracing::warn!(suite = %sha, "could not precompile the suite ahead of its runs (a run compiles it): {e}");
                }
            }
        }
    }

    /// Starts the shards of `queue` one by one as slots free up, each
    /// reporting its run on `ended` when done.
    async fn start_in_order(
        self: Arc<Self>,
        mut queue: mpsc::UnboundedReceiver<(Assignment, Arc<ShardLink>)>,
        ended: mpsc::UnboundedSender<String>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) {
        let slots = Arc::new(tokio::sync::Semaphore::new(self.info.slots.max(1) as usize));
        loop {
            let next = tokio::select! {
                next = queue.recv() => next,
                _ = shutdown.cancelled() => None,
            };
            let Some((assignment, link)) = next else { return };
            let slot = tokio::select! {
                slot = slots.clone().acquire_owned() => slot,
                _ = shutdown.cancelled() => return,
            };
            let (this, ended) = (self.clone(), ended.clone());
            tasks.spawn(async move {
                let _slot = slot;
                let run = assignment.run.clone();
                this.run_shard(assignment, link).await;
                this.active.fetch_sub(1, Ordering::SeqCst);
                let _ = ended.send(run);
            });
        }
    }

    async fn run_shard(&self, a: Assignment, link: Arc<ShardLink>) {
        let mut summary = Summary::default();
        let error = self.run_tests(&a, &link, &mut summary).await.err();
        if let Some(e) = &error {
            tracing::warn!(shard = a.shard.shard, suite = %a.shard.suite, "shard failed: {e}");
        }
        link.emit(EventKind::ShardFinished { shard: a.shard.clone(), summary, error });
        link.done();
    }

    /// A service shard: the instance runs until the run ends here.
    async fn run_service(
        &self,
        a: Assignment,
        link: Arc<ShardLink>,
        orders: mpsc::UnboundedReceiver<crate::services::Order>,
    ) {
        let Some(spec) = a.service.as_deref() else { return };
        let emit = |event: EventKind| link.emit(event);
        let stop = link.services_stop.clone();
        let error =
            crate::services::run(spec, &a.run, &a.shard, &self.services, &emit, stop, orders).await.err();
        if let Some(e) = &error {
            tracing::warn!(shard = a.shard.shard, service = %spec.name, "service failed: {e}");
        }
        link.emit(EventKind::ShardFinished { shard: a.shard.clone(), summary: Summary::default(), error });
        link.done();
    }

    async fn run_tests(
        &self,
        a: &Assignment,
        link: &Arc<ShardLink>,
        summary: &mut Summary,
    ) -> Result<(), String> {
        // Grants first: a plan this machine does not allow fails before any download.
        let grants = Grants::within(&a.capabilities, &self.policy, &a.services)?;
        let bytes =
            self.suites.fetch(&a.suite_sha256).await.map_err(|e| format!("fetching the suite: {e:#}"))?;
        let suite =
            self.sandbox.load(bytes).await.map_err(|e| format!("loading suite {}: {e}", a.shard.suite))?;
        let env = Arc::new(TestEnv {
            run_id: a.run.clone(),
            role: a.shard.role.clone(),
            instance: a.shard.instance,
            instance_count: a.instance_count,
            machine: a.shard.machine.clone(),
            params: a.params.clone(),
            grants,
            memory_limit: a.limits.memory_limit_bytes,
            output_limit: a.limits.output_limit_bytes,
            attachment_limit: a.limits.attachment_limit_bytes,
            test_timeout: Duration::from_millis(a.limits.test_timeout_ms),
            barrier_timeout_ms: a.limits.barrier_timeout_ms,
            sync: link.clone(),
        });
        let selector =
            a.selection.selector().map_err(|e| format!("the filter {:?}: {e}", a.selection.filter))?;
        let listed = suite.list(&env).await.map_err(|e| format!("suite {}: {e}", a.shard.suite))?;
        let (tests, filtered_out) = select(&listed, &selector, &a.shard, a.selection.show_filtered);
        link.emit(EventKind::ShardStarted {
            shard: a.shard.clone(),
            tests: tests.iter().map(|(t, _)| t.name.clone()).collect(),
            filtered_out,
        });
        // Tests of a suite that does not use sync are independent: beyond
        // the shard's own lane, they take the process's spare lanes as they
        // free up (at most `test_threads` at once when the plan sets it).
        // A suite that uses sync runs its tests one at a time, in order.
        let spare =
            (!imports_sync(&suite.imports) && a.limits.test_threads != 1).then(|| self.sandbox.spare_lanes());
        let most = match a.limits.test_threads {
            0 => usize::MAX,
            n => n as usize,
        };
        let lanes = Arc::new(Lanes {
            queue: Mutex::new(tests.into_iter().map(|(t, d)| (t.clone(), d)).collect::<Vec<_>>().into_iter()),
            summary: Mutex::new(*summary),
            suite,
            env,
            link: link.clone(),
            retries: a.limits.retries,
            fail_fast: a.limits.fail_fast,
        });
        // The shard's own lane runs here; each spare lane it gets runs a
        // lane of its own, taking the next test as it ends one (no task per
        // test: a trivial test took longer to hand over than to run).
        let own = lanes.clone().run(None);
        tokio::pin!(own);
        let mut helpers: JoinSet<()> = JoinSet::new();
        loop {
            let spare = spare.as_ref().filter(|_| helpers.len() + 1 < most && lanes.left());
            tokio::select! {
                () = &mut own => break,
                Ok(lane) = async { spare.expect("only with spare lanes").clone().acquire_owned().await },
                    if spare.is_some() => {
                    helpers.spawn(lanes.clone().run(Some(lane)));
                }
            }
        }
        while let Some(done) = helpers.join_next().await {
            done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        }
        *summary = *lanes.summary.lock().expect("summary lock");
        Ok(())
    }

    /// Runs a test, retrying failures; a pass after a failure is flaky.
    async fn run_with_retries(
        suite: &LoadedSuite,
        test: &TestCase,
        env: &Arc<TestEnv>,
        link: &Arc<ShardLink>,
        retries: u32,
    ) -> (Outcome, TestRun, u32) {
        let mut attempt = 1;
        loop {
            link.emit(EventKind::TestStarted { shard: link.shard.clone(), test: test.name.clone(), attempt });
            let began = std::time::Instant::now();
            let run = tokio::select! {
                // A cancel that came while the test ended decides: the test
                // may have ended because of it (a wait it broke).
                biased;
                // It lasted from its start to the stop, whatever its end.
                _ = link.stop.cancelled() => TestRun { duration: began.elapsed(), ..link.stopped() },
                r = suite.run(test, env) => r,
            };
            if run.outcome.is_failure() && attempt <= retries && !link.stop.is_cancelled() {
                attempt += 1;
                continue;
            }
            let outcome =
                if run.outcome == Outcome::Passed && attempt > 1 { Outcome::Flaky } else { run.outcome };
            return (outcome, run, attempt);
        }
    }
}

/// What the lanes of one shard share: the tests not started yet, in order,
/// and the shard's summary.
struct Lanes {
    queue: Mutex<std::vec::IntoIter<(TestCase, Decision)>>,
    summary: Mutex<Summary>,
    suite: Arc<LoadedSuite>,
    env: Arc<TestEnv>,
    link: Arc<ShardLink>,
    retries: u32,
    fail_fast: bool,
}

impl Lanes {
    /// Whether tests are left to start.
    fn left(&self) -> bool {
        self.queue.lock().expect("queue lock").len() > 0
    }

    /// One lane: the next test, until none is left. A spare lane is held
    /// until then (`lane`).
    async fn run(self: Arc<Self>, lane: Option<tokio::sync::OwnedSemaphorePermit>) {
        loop {
            // A test starts once the machine's unacknowledged events are
            // within their bound (or the shard is stopped: it reports the
            // rest cancelled).
            tokio::select! {
                _ = self.link.backlog.within(link::MAX_BACKLOG) => {}
                _ = self.link.stop.cancelled() => {}
            }
            let next = self.queue.lock().expect("queue lock").next();
            let Some((test, decision)) = next else { break };
            let link = &self.link;
            let (outcome, run, attempt) = if decision == Decision::FilteredOut {
                (Outcome::Skipped, skipped(FILTERED_OUT.into()), 1)
            } else if link.stop.is_cancelled() {
                (Outcome::Cancelled, link.stopped(), 1)
            } else if decision == Decision::Ignored {
                (Outcome::Skipped, skipped("ignored".into()), 1)
            } else {
                Agent::run_with_retries(&self.suite, &test, &self.env, link, self.retries).await
            };
            self.summary.lock().expect("summary lock").add(outcome);
            if outcome.is_failure() && self.fail_fast {
                // At once: no test of the shard starts after this one ended;
                // the coordinator stops the other machines.
                link.cancel.cancel(format!("fail-fast: {} ({}) {outcome}", test.name, link.shard.role));
            }
            link.emit(EventKind::TestFinished {
                shard: link.shard.clone(),
                test: test.name,
                outcome,
                duration_ms: u64::try_from(run.duration.as_millis()).unwrap_or(u64::MAX),
                attempt,
                message: run.message.map(|m| cut(m, MAX_MESSAGE)),
                output: cut(run.output, MAX_OUTPUT),
            });
        }
        drop(lane);
    }
}

/// The reason a test left out by the selection is reported with.
pub const FILTERED_OUT: &str = "filtered out";

/// The tests a shard reports, each with what becomes of it, and how many
/// it leaves out unreported (all are reported when `show_filtered`).
fn select<'a>(
    listed: &'a [TestCase],
    selector: &Selector,
    shard: &ShardRef,
    show_filtered: bool,
) -> (Vec<(&'a TestCase, Decision)>, u32) {
    let facts: Vec<Listed> = listed
        .iter()
        .map(|test| Listed {
            facts: TestFacts {
                test: &test.name,
                tags: &test.tags,
                role: &shard.role,
                suite: &shard.suite,
                profile: &selector.profile,
            },
            ignored: test.ignored,
        })
        .collect();
    let mut reported = Vec::new();
    let mut left_out = 0u32;
    for (test, decision) in listed.iter().zip(selector.decide_all(&facts)) {
        match decision {
            Decision::FilteredOut if !show_filtered => left_out += 1,
            decision => reported.push((test, decision)),
        }
    }
    (reported, left_out)
}

/// Cancellation of one run on this machine, with the coordinator's reason.
#[derive(Default)]
struct RunCancel {
    token: CancellationToken,
    /// Stops the run's services here: the run's end, or (a child of
    /// `token`) a cancel.
    services: CancellationToken,
    why: Mutex<Option<String>>,
}

impl RunCancel {
    fn cancel(&self, reason: String) {
        self.why.lock().expect("reason lock").get_or_insert(reason);
        self.token.cancel();
    }

    fn reason(&self) -> String {
        let why = self.why.lock().expect("reason lock").clone();
        format!("cancelled: {}", why.unwrap_or_else(|| "the run was cancelled".into()))
    }

    /// A test the cancellation stopped, or kept from starting.
    fn stopped(&self) -> TestRun {
        TestRun {
            outcome: Outcome::Cancelled,
            message: Some(self.reason()),
            output: String::new(),
            duration: Duration::ZERO,
        }
    }
}

fn skipped(message: String) -> TestRun {
    TestRun {
        outcome: Outcome::Skipped,
        message: Some(message),
        output: String::new(),
        duration: Duration::ZERO,
    }
}

/// One shard's link to the coordinator: numbered events out, sync calls out
/// and their replies back.
struct ShardLink {
    run: String,
    shard: ShardRef,
    outbox: mpsc::UnboundedSender<FromMachine>,
    /// The last event's number. Held while an event is numbered and sent,
    /// so events leave in their order whichever of the shard's tests emits.
    seq: Mutex<u64>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
    cancel: Arc<RunCancel>,
    /// Stops this shard: the run's cancel (a child of its token), or the
    /// coordinator counting the shard lost.
    stop: CancellationToken,
    /// Stops this shard's service: the run's end or cancel, or the loss.
    services_stop: CancellationToken,
    /// Why the coordinator counts this shard lost: then it says no more.
    lost: Mutex<Option<String>>,
    /// The machine's unacknowledged events, which this shard's add to.
    backlog: Arc<link::Backlog>,
}

impl ShardLink {
    /// The coordinator counts this shard lost: it stops at once, and
    /// nothing more of it is sent (it would be refused).
    fn lose(&self, reason: String) {
        self.lost.lock().expect("lost lock").get_or_insert(reason);
        self.stop.cancel();
        self.services_stop.cancel();
    }

    fn is_lost(&self) -> bool {
        self.lost.lock().expect("lost lock").is_some()
    }

    /// A test the stop ended, or kept from starting.
    fn stopped(&self) -> TestRun {
        match self.lost.lock().expect("lost lock").clone() {
            Some(why) => TestRun {
                outcome: Outcome::Lost,
                message: Some(format!("the coordinator counts this shard lost: {why}")),
                output: String::new(),
                duration: Duration::ZERO,
            },
            None => self.cancel.stopped(),
        }
    }

    /// Says the shard is done (unless it was lost).
    fn done(&self) {
        if !self.is_lost() {
            let _ =
                self.outbox.send(FromMachine::ShardDone { run: self.run.clone(), shard: self.shard.shard });
        }
    }

    fn emit(&self, event: EventKind) {
        if self.is_lost() {
            return;
        }
        let mut seq = self.seq.lock().expect("seq lock");
        *seq += 1;
        self.backlog.add(&event);
        let msg = FromMachine::Event {
            run: self.run.clone(),
            shard: self.shard.shard,
            seq: *seq,
            at_us: now_us(),
            event,
        };
        // A closed outbox means the coordinator is gone; the shard winds down.
        let _ = self.outbox.send(msg);
    }
}

#[async_trait]
impl SyncPort for ShardLink {
    async fn call(&self, call: SyncCall) -> SyncReply {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(id, tx);
        let sent =
            self.outbox.send(FromMachine::Sync { id, run: self.run.clone(), shard: self.shard.shard, call });
        let gone =
            || SyncReply::Error { kind: SyncFailure::Cancelled, message: "the coordinator is gone".into() };
        if sent.is_err() {
            return gone();
        }
        tokio::select! {
            r = rx => r.unwrap_or_else(|_| gone()),
            _ = self.stop.cancelled() => {
                self.pending.lock().expect("pending lock").remove(&id);
                SyncReply::Error { kind: SyncFailure::Cancelled, message: self.stopped().message.unwrap_or_default() }
            }
        }
    }

    fn log(&self, test: &str, level: &str, message: &str) {
        self.emit(EventKind::Log {
            shard: self.shard.clone(),
            test: test.to_string(),
            level: level.to_string(),
            message: cut(message.to_string(), MAX_MESSAGE),
        });
    }

    fn attach(&self, test: &str, name: &str, content: Vec<u8>) {
        self.emit(EventKind::Attachment {
            shard: self.shard.clone(),
            test: test.to_string(),
            name: name.to_string(),
            sha256: crate::sandbox::sha256_hex(&content),
            size: content.len() as u64,
            data: Some(ensemble_protocol::attachment::Blob(content)),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::cut;

    #[test]
    fn long_text_is_cut_with_a_note_never_refused() {
        assert_eq!(cut("short".into(), 100), "short");
        let long = "é".repeat(100_000);
        let shown = cut(long, 1_000);
        assert!(shown.len() <= 1_000, "{}", shown.len());
        assert!(shown.ends_with("more bytes cut)"), "{shown}");
    }
}
