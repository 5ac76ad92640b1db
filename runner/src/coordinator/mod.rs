//! The coordinator: Ensemble's service core. The HTTP server (`server/`) is a
//! thin skin over [`Coordinator`]; `ensemble run` drives the same
//! [`Dispatcher`] with in-process machines.
//!
//! - [`machines`]: the machine registry, clocks, and who is offline.
//! - [`matching`]: placement, plan → shards (run once per run).
//! - [`dispatcher`]: one run's state and rules, one input at a time.
//! - [`sync`]: a run's barriers, signals and topics.
//! - [`intake`]: how much machines may have said that is not yet stored.
//! - [`queue`]: runs waiting for busy machines, first come first served.
//! - [`Coordinator`]: plans, suites, runs and their lifecycle, the watchdog.
//!
//! Every operation the API offers is a method here that takes and returns
//! `protocol::api` types, and fails with a typed [`ApiError`]. Store work runs
//! on the blocking pool. Every task the coordinator spawns (the watchdog, each
//! run, each run's store writer) is tracked and ends on [`Coordinator::shutdown`]:
//! running runs are cancelled (`shutting-down`), and a run whose machines do
//! not answer within the grace period has its unfinished shards lost.

pub mod attached;
pub mod dispatcher;
pub mod intake;
pub mod machines;
pub mod matching;
pub mod notify;
pub mod queue;
pub mod rerun;
pub mod schedule;

/// A `test-finished` event for unit tests: `outcome`, after 1 ms, at the first attempt.
#[cfg(test)]
pub(crate) fn test_finished(
    shard: ensemble_protocol::ShardRef,
    test: &str,
    outcome: ensemble_protocol::Outcome,
) -> EventKind {
    EventKind::TestFinished {
        shard,
        test: test.into(),
        outcome,
        duration_ms: 1,
        attempt: 1,
        message: None,
        output: String::new(),
    }
}
pub mod sync;

/// A coordinator's settings for unit tests: short waits, loopback, tokens `t` and no join token.
#[cfg(test)]
pub(crate) fn test_config(name: &str) -> CoordinatorConfig {
    CoordinatorConfig {
        name: name.into(),
        token: Some("t".into()),
        join_token: None,
        heartbeat_timeout: Duration::from_secs(10),
        restart_grace: Duration::from_secs(10),
        offline_retention: Duration::from_secs(10),
        max_suite_bytes: 1 << 20,
        suite_budget: 1 << 30,
        shutdown_grace: Duration::from_secs(1),
        loopback_only: true,
        metrics_token: None,
        webhook_secret: "s".into(),
        webhook_allow: Vec::new(),
        min_schedule_interval: Duration::from_secs(60),
        public_url: "http://127.0.0.1".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::SandboxOptions;

    /// Requests that come while a probe is under way take its finding: a
    /// flood of `/readyz` costs the store one probe, not one each.
    #[tokio::test(flavor = "current_thread")]
    async fn readiness_probes_the_store_once_for_requests_that_wait_together() {
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let options = SandboxOptions { cache_dir: None, max_instances: 1, ..SandboxOptions::default() };
        let core = Coordinator::new(store, Arc::new(Sandbox::new(options).unwrap()), test_config("ready"));
        assert!(core.readiness().await.ready);
        assert_eq!(core.ready_probes.load(Ordering::Acquire), 1);

        // A probe is under way (its lock held) while 64 requests come.
        let probing = core.ready_probe.lock().await;
        let waiting: Vec<_> = (0..64)
            .map(|_| {
                let core = core.clone();
                tokio::spawn(async move { core.readiness().await })
            })
            .collect();
        // A few turns of this single-threaded runtime (it polls its driver
        // every 61 tasks): each request reads the probe count and waits
        // for the lock.
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        core.ready_probes.fetch_add(1, Ordering::Release);
        drop(probing);
        for request in waiting {
            assert!(request.await.unwrap().ready);
        }
        assert_eq!(core.ready_probes.load(Ordering::Acquire), 2, "the waiting requests probed again");
        // A request alone probes afresh.
        assert!(core.readiness().await.ready);
        assert_eq!(core.ready_probes.load(Ordering::Acquire), 3);
        core.shutdown().await;
    }

    /// Plans are kept to a count: a new one past it is refused, saying
    /// how to make room; saving one of them again still works.
    #[tokio::test]
    async fn a_new_plan_past_the_count_the_server_keeps_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let text = format!(
            "name = \"p\"\n[[profiles]]\nname = \"a\"\n[[entries]]\nsuite = \"sha256:{}\"\nprofile = \"a\"\n",
            "a".repeat(64)
        );
        let plan: Plan = toml::from_str(&text).unwrap();
        for i in 0..MAX_PLANS {
            let stored = ensemble_protocol::api::StoredPlan {
                id: format!("plan-{i}"),
                plan: plan.clone(),
                created_us: 0,
                updated_us: 0,
                schedules: Vec::new(),
            };
            store.put_plan(&stored).unwrap();
        }
        let options = SandboxOptions { cache_dir: None, max_instances: 1, ..SandboxOptions::default() };
        let core = Coordinator::new(store, Arc::new(Sandbox::new(options).unwrap()), test_config("plans"));
        let err = core.save_plan(None, plan.clone()).await.unwrap_err();
        assert!(err.message().contains("at most 10000 plans: delete one"), "{}", err.message());
        assert!(core.save_plan(Some("plan-7".into()), plan).await.is_ok(), "an existing plan is saved again");
        core.shutdown().await;
    }

    /// Uploads are held to the suite budget as they come, not an hour
    /// later: suites nothing names go first, oldest first, and an upload
    /// that still finds no room is refused, saying what to do.
    #[tokio::test]
    async fn an_upload_past_the_suite_budget_makes_room_or_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let basics = std::fs::read(ensemble_artifacts::BASICS).unwrap();
        // Distinct suites: the same component with a custom section of its own.
        let variant = |n: u8| [basics.as_slice(), &[0, 3, 1, b'x', n]].concat();
        let size = basics.len() as u64 + 5;
        let mut config = test_config("uploads");
        config.suite_budget = 2 * size + size / 2;
        let options = SandboxOptions { cache_dir: None, max_instances: 1, ..SandboxOptions::default() };
        let core = Coordinator::new(store.clone(), Arc::new(Sandbox::new(options).unwrap()), config);
        let (a, new) = core.add_suite(Some("a".into()), variant(1)).await.unwrap();
        assert!(new);
        core.add_suite(Some("b".into()), variant(2)).await.unwrap();
        // Both are recent: nothing may go, and the third is refused.
        let err = core.add_suite(Some("c".into()), variant(3)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::StoreUnavailable);
        assert!(
            err.message().contains("past its budget") && err.message().contains("--suite-budget"),
            "{}",
            err.message()
        );
        assert_eq!(store.suites().unwrap().len(), 2, "nothing of the refused upload is kept");
        // A suite the server has is no new upload.
        assert!(!core.add_suite(Some("a".into()), variant(1)).await.unwrap().1);
        // Once the first is an hour old (and nothing names it), it makes
        // room — but not within a minute of the last upload that looked.
        let old = SuiteMeta { uploaded_us: a.uploaded_us - 3_600_000_000, ..a.clone() };
        store.put_suite(&old, &variant(1)).unwrap();
        assert!(core.add_suite(Some("c".into()), variant(3)).await.is_err(), "swept again at once");
        *core.storing_suite.lock().await = None;
        let (c, new) = core.add_suite(Some("c".into()), variant(3)).await.unwrap();
        assert!(new);
        let kept: Vec<String> = store.suites().unwrap().into_iter().map(|s| s.sha256).collect();
        assert!(!kept.contains(&a.sha256) && kept.contains(&c.sha256) && kept.len() == 2, "{kept:?}");
        assert!(store.suites_size().unwrap() <= 2 * size + size / 2);
        core.shutdown().await;
    }
}

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ensemble_protocol::api::{
    ApiError, Delivery, ErrorKind, HistoryQuery, ListQuery, MachineDisconnected, MachineDraining,
    MachineForgotten, MachineState, MachineStatus, MachineUndrained, PlanDeleted, PlansQuery, Readiness,
    RerunPreview, RunCancelling, RunCreated, RunMeta, RunRequest, RunState, RunsQuery, StoredPlan, SuiteMeta,
    SuiteSummary, TestHistory, suite_sha,
};
use ensemble_protocol::wire::{FromMachine, MAX_PRECOMPILE, MachineInfo, SyncFailure, SyncReply, ToMachine};
use ensemble_protocol::{CancelReason, EventKind, Plan, Schedule};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use dispatcher::{Dispatcher, Inbound, MachineLink, MachinePort, RunResult, Stream, SuiteRef};
use machines::Machines;
use matching::Unplaced;

use crate::report::Reporter;
use crate::report::store::{Live, RunRecorder, write_events};
use crate::sandbox::{Sandbox, sha256_hex};
use crate::store::{Binding, Store};
use crate::time::now_us;

/// Settings of a coordinator.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    pub name: String,
    /// The API token: people and CI.
    pub token: Option<String>,
    /// The join token: machines. It opens the machine WebSocket only.
    pub join_token: Option<String>,
    pub heartbeat_timeout: Duration,
    /// How long a run taken up after a restart waits for its machines.
    pub restart_grace: Duration,
    /// How long an offline machine stays listed before it is forgotten.
    pub offline_retention: Duration,
    pub max_suite_bytes: usize,
    /// The most bytes of suites the server keeps (`serve --suite-budget`):
    /// an upload past it first removes suites nothing names, then is
    /// refused.
    pub suite_budget: u64,
    /// How long a shutdown waits for cancelled runs to wind down.
    pub shutdown_grace: Duration,
    /// The server listens on loopback only: it answers only to loopback names.
    pub loopback_only: bool,
    /// The bearer token `/metrics` needs, if any.
    pub metrics_token: Option<String>,
    /// What webhook calls are signed with.
    pub webhook_secret: String,
    /// Where people reach the server (links in webhook calls).
    pub public_url: String,
    /// Addresses webhooks may call besides public ones (loopback,
    /// private, link-local and the like are refused unless listed here).
    pub webhook_allow: Vec<ensemble_protocol::grant::HostPattern>,
    /// The shortest time between two runs of one schedule.
    pub min_schedule_interval: Duration,
}

/// The plans saved last whose suites a machine that joins precompiles.
pub const PRECOMPILE_PLANS: u32 = 100;
/// The most results the flaky tests of a plan are found in
/// ([`Coordinator::flaky_tests`]): those of its last runs whose results
/// fit (~200 bytes each in memory, and more in the answer).
pub const MAX_RECENT_RESULTS: u64 = 200_000;
/// How often an upload past the suite budget may remove suites to make
/// room: finding what no plan or run names reads every stored one.
const UPLOAD_SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The most plans the server keeps (a new one past it is refused).
pub const MAX_PLANS: u64 = 10_000;
/// The most bytes of recorded durations a split plan's run is balanced by
/// (its shards share them): past it, its parts are dealt by count.
pub const MAX_DURATION_BYTES: usize = 64 << 20;
/// The most machine names the server keeps an identity for (~150 bytes
/// each): a new name past it is refused until names are released.
pub const MAX_MACHINE_NAMES: u64 = 100_000;

struct ActiveRun {
    inbound: mpsc::UnboundedSender<Inbound>,
    /// Each machine's index in the run, by name (looked up for every
    /// message a machine sends).
    machines: HashMap<String, usize>,
    /// The machines its shards are placed on.
    placed: Vec<String>,
    /// While it waits for machines: its shards, by (plan, profile).
    pending: Vec<((String, String), i64)>,
    events: broadcast::Sender<Live>,
}

/// Each name's (first) index.
fn index_by_name(names: Vec<String>) -> HashMap<String, usize> {
    let mut index = HashMap::with_capacity(names.len());
    for (i, name) in names.into_iter().enumerate() {
        index.entry(name).or_insert(i);
    }
    index
}

/// A fresh run id: time-ordered and unique within a coordinator.
pub fn new_run_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("run-{:x}-{}", now_us(), N.fetch_add(1, Ordering::Relaxed))
}

/// A failure of the server as an API error: a store that cannot take
/// writes (a full disk) says so (507, nothing was changed), anything
/// else is internal.
fn internal(e: impl Into<anyhow::Error>) -> ApiError {
    let e: anyhow::Error = e.into();
    if crate::store::cannot_write(&e) {
        crate::throttled!(error, 30, "the store cannot take writes: {e:#}");
        return ApiError::new(
            ErrorKind::StoreUnavailable,
            format!(
                "the coordinator's store cannot take writes ({e:#}); nothing was changed: \
                 free room on its disk, or remove old runs (`ensemble gc`)"
            ),
        );
    }
    tracing::error!("internal error: {e:#}");
    ApiError::new(ErrorKind::Internal, format!("internal error: {e:#}"))
}

fn not_found(what: &str, id: &str) -> ApiError {
    ApiError::new(ErrorKind::NotFound, format!("no {what} {id:?}"))
}

/// [`Plan::param_problems`] with the params the entries' stored suites declare.
fn param_problems<'a>(
    plan: &Plan,
    metas: impl IntoIterator<Item = Option<&'a SuiteMeta>>,
) -> Vec<ensemble_protocol::Problem> {
    let declared: Vec<Option<&[ensemble_protocol::api::ParamMeta]>> =
        metas.into_iter().map(|m| m.and_then(|m| m.params.as_deref())).collect();
    plan.param_problems(&declared)
}

/// How a run refers to a stored suite.
fn suite_ref(meta: &SuiteMeta) -> SuiteRef {
    SuiteRef { uses_sync: meta.uses_sync(), name: meta.name.clone(), sha256: meta.sha256.clone() }
}

/// The most runs a coordinator holds at once, running or waiting for
/// machines: each holds tasks, channels and its plan until it ends.
pub const MAX_ACTIVE_RUNS: usize = 1000;

/// The coordinator's shared state.
pub struct Coordinator {
    /// Held from an upload's budget check to its suite stored; holds when
    /// an upload last removed suites to make room (a sweep reads every
    /// stored plan and run: at most once a minute this way).
    storing_suite: tokio::sync::Mutex<Option<std::time::Instant>>,
    store: Store,
    sandbox: Arc<Sandbox>,
    pub config: CoordinatorConfig,
    machines: Arc<Machines>,
    runs: Mutex<HashMap<String, ActiveRun>>,
    /// Each run's dispatcher and store writer; closed when shutting down.
    run_tasks: TaskTracker,
    /// The watchdog.
    tasks: TaskTracker,
    /// Fires once the runs are over: connections and the watchdog end.
    shutdown: CancellationToken,
    /// Room for what machines said that is not yet handled and stored.
    intake: intake::Budget,
    /// Runs waiting for their machines' slots. Placement and the first
    /// assignments happen under its lock, so two runs never count on the
    /// same free slots.
    queue: Mutex<queue::Queue>,
    /// Bumped when a run leaves the queue or ends: waiting runs look again.
    queue_moved: watch::Sender<u64>,
    /// Wakes the scheduler when plans change.
    schedules_changed: Arc<tokio::sync::Notify>,
    /// The schedules (plan, key) whose run is still waiting to start: at
    /// most one task each.
    schedules_waiting: Mutex<std::collections::HashSet<(String, String)>>,
    /// `/readyz`'s store probe: one at a time, and a request that waited
    /// for another's probe takes its finding (so a flood of probes costs
    /// the store one write at a time, never a queue of them).
    ready_probe: tokio::sync::Mutex<String>,
    ready_probes: std::sync::atomic::AtomicU64,
    /// What browsers open run event WebSockets with instead of the token.
    pub tickets: crate::secret::Tickets,
}

/// A run's plumbing, before it starts or waits: its event stream (into the
/// store and the live broadcast), its input and the store's progress.
struct Opened {
    stream: Stream,
    inbound: mpsc::UnboundedReceiver<Inbound>,
    committed: watch::Receiver<u64>,
    writer: tokio::task::JoinHandle<()>,
}

/// A run's plan with its suites resolved, ready to place.
struct Job {
    ticket: u64,
    plan: Plan,
    suites: Vec<SuiteRef>,
    /// Recorded durations of the plan's tests, for `duration:K/N` and
    /// `split`: each role's once.
    durations: ensemble_protocol::filter::SharedDurations,
}

impl Job {
    fn names(&self) -> Vec<String> {
        self.suites.iter().map(|s| s.name.clone()).collect()
    }

    fn uses_sync(&self) -> Vec<bool> {
        self.suites.iter().map(|s| s.uses_sync).collect()
    }
}

impl Coordinator {
    /// A coordinator over `store`; its watchdog runs until [`Coordinator::shutdown`].
    pub fn new(store: Store, sandbox: Arc<Sandbox>, config: CoordinatorConfig) -> Arc<Coordinator> {
        let core = Arc::new(Coordinator {
            store,
            sandbox,
            config,
            machines: Arc::default(),
            runs: Mutex::default(),
            run_tasks: TaskTracker::new(),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            intake: intake::Budget::default(),
            queue: Mutex::default(),
            queue_moved: watch::channel(0).0,
            schedules_changed: Arc::default(),
            schedules_waiting: Mutex::default(),
            ready_probe: tokio::sync::Mutex::default(),
            storing_suite: tokio::sync::Mutex::default(),
            ready_probes: std::sync::atomic::AtomicU64::new(0),
            tickets: crate::secret::Tickets::default(),
        });
        core.tasks.spawn(Self::watchdog(Arc::downgrade(&core), core.shutdown.clone()));
        core.tasks.spawn(Self::drainer(Arc::downgrade(&core), core.shutdown.clone()));
        core.tasks.spawn(Self::scheduler(Arc::downgrade(&core), core.shutdown.clone()));
        core
    }

    /// Fires when the coordinator shuts down; connections end on it.
    pub fn stopping(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Refuses new runs, cancels the running ones and waits (up to the grace
    /// period) for their machines to wind them down, ends what is left, then
    /// closes every connection and task.
    pub async fn shutdown(&self) {
        self.run_tasks.close();
        for run in self.runs.lock().expect("runs lock").values() {
            let _ = run.inbound.send(Inbound::Cancel { reason: CancelReason::ShuttingDown });
        }
        if tokio::time::timeout(self.config.shutdown_grace, self.run_tasks.wait()).await.is_err() {
            // Machines that did not answer in time: closing a run's input ends
            // it, and what did not finish is lost.
            tracing::warn!("runs did not wind down in time; ending them");
            self.runs.lock().expect("runs lock").clear();
            self.run_tasks.wait().await;
        }
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Whether the server can do its work: the store takes writes, and
    /// machines can join (it is not shutting down).
    pub async fn readiness(&self) -> Readiness {
        use std::sync::atomic::Ordering;
        let mut checks = std::collections::BTreeMap::new();
        let arrived = self.ready_probes.load(Ordering::Acquire);
        let mut last = self.ready_probe.lock().await;
        // A probe finished while this request waited for the lock: its
        // finding is fresh enough to answer this request too.
        if self.ready_probes.load(Ordering::Acquire) == arrived {
            *last = match self.store.call(|s| s.probe_write(now_us())).await {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("the store takes no writes: {e:#}"),
            };
            self.ready_probes.fetch_add(1, Ordering::Release);
        }
        checks.insert("store".to_string(), last.clone());
        drop(last);
        let machines = if self.run_tasks.is_closed() { "shutting down" } else { "ok" };
        checks.insert("machines".to_string(), machines.to_string());
        Readiness { ready: checks.values().all(|v| v == "ok"), checks }
    }

    // ---- machines ----

    pub fn machine_statuses(&self) -> Vec<MachineStatus> {
        let timeout = i64::try_from(self.config.heartbeat_timeout.as_micros()).unwrap_or(i64::MAX);
        let mut statuses = self.machines.statuses();
        for m in &mut statuses {
            if m.state == MachineState::Disconnected {
                m.lost_at_us = Some(m.last_seen_us.saturating_add(timeout));
            }
        }
        statuses
    }

    /// The machines, once at least `min_online` are online or `wait` passed.
    pub async fn wait_machines(&self, min_online: usize, wait: Duration) -> Vec<MachineStatus> {
        let mut changes = self.machines.subscribe();
        let _ = tokio::time::timeout(wait, async {
            while self.machines.online() < min_online {
                if changes.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
        self.machine_statuses()
    }

    /// Closes a remote machine's connection (it reconnects).
    pub fn disconnect_machine(&self, name: &str) -> Result<MachineDisconnected, ApiError> {
        if self.machines.kick(name) {
            Ok(MachineDisconnected { disconnected: name.to_string() })
        } else {
            Err(ApiError::new(ErrorKind::NotFound, format!("no remote machine named {name:?}")))
        }
    }

    /// Releases machine name `name` from the secret it was bound to (its
    /// identity file was lost or damaged): the next machine joining under
    /// it takes it. Refused while a machine of that name is connected.
    pub async fn forget_machine(&self, name: &str) -> Result<MachineForgotten, ApiError> {
        if self.machines.connected(name) {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                format!(
                    "machine {name:?} is connected: stop it (or disconnect it) before forgetting its name"
                ),
            ));
        }
        let key = name.to_string();
        if !self.store.call(move |s| s.forget_machine(&key)).await.map_err(internal)? {
            return Err(not_found("machine name", name));
        }
        tracing::warn!(machine = %name, "the machine name is released from its secret");
        Ok(MachineForgotten { forgotten: name.to_string() })
    }

    /// Drains machine `name`: no new shards; told to stop once its shards
    /// are done and no run it is part of goes on.
    pub fn drain_machine(&self, name: &str) -> Result<MachineDraining, ApiError> {
        // Under the queue's lock, which placement holds: a run placed on the
        // machine before is counted, none placed after uses it.
        let running = {
            let _placing = self.queue.lock().expect("queue lock");
            self.machines.drain(name)
        };
        let Some(running) = running else {
            return Err(ApiError::new(
                ErrorKind::NotFound,
                format!(
                    "no connected remote machine named {name:?} (the server's own machine is not drained: \
                     start serve with --no-local-machine to run no tests on it)"
                ),
            ));
        };
        tracing::info!(machine = %name, running, "draining");
        self.tell_drained();
        Ok(MachineDraining { draining: name.to_string(), running })
    }

    /// Takes machine `name` off draining: it gets shards again (its runner,
    /// if it already stopped, at its next start).
    pub fn undrain_machine(&self, name: &str) -> Result<MachineUndrained, ApiError> {
        if !self.machines.undrain(name) {
            return Err(ApiError::new(ErrorKind::Conflict, format!("no machine named {name:?} is draining")));
        }
        tracing::info!(machine = %name, "undrained: it takes shards again");
        Ok(MachineUndrained { undrained: name.to_string() })
    }

    /// Tells drained machines that are idle, and that no active run counts
    /// on, that they may stop.
    fn tell_drained(&self) {
        // Runs on every change of the machines (each shard's end): cheap
        // when no machine drains.
        if !self.machines.any_draining() {
            return;
        }
        let counted: std::collections::HashSet<String> =
            self.runs.lock().expect("runs lock").values().flat_map(|r| r.placed.iter().cloned()).collect();
        self.machines.tell_drained(|name| !counted.contains(name));
    }

    /// Tells drained machines they may stop as soon as they may: whenever
    /// machines change (a shard ends) or a run ends.
    async fn drainer(core: std::sync::Weak<Coordinator>, shutdown: CancellationToken) {
        let (mut machines, mut moved) = {
            let Some(c) = core.upgrade() else { return };
            (c.machines.subscribe(), c.queue_moved.subscribe())
        };
        loop {
            tokio::select! {
                changed = machines.changed() => if changed.is_err() { return },
                changed = moved.changed() => if changed.is_err() { return },
                _ = shutdown.cancelled() => return,
            }
            let Some(c) = core.upgrade() else { return };
            c.tell_drained();
        }
    }

    /// Checks a joining machine's identity (at most [`MAX_MACHINE_NAMES`]
    /// names are kept): a name that joined before must
    /// bring the secret it was given then; a new name is bound to a fresh
    /// secret, returned to hand over in the welcome. A refusal says whether
    /// trying again may help (the store failed, rather than the identity).
    pub async fn admit(&self, name: &str, secret: Option<String>) -> Result<Option<String>, (String, bool)> {
        use sha2::{Digest, Sha256};
        let hash = |s: &str| hex::encode(Sha256::digest(s.as_bytes()));
        let store_failed = |e: anyhow::Error| (format!("the coordinator's store failed: {e:#}"), true);
        let key = name.to_string();
        let known = self.store.call(move |s| s.machine_secret(&key)).await.map_err(store_failed)?;
        match (known, secret) {
            (Some(expected), Some(given)) if crate::secret::token_ok(&expected, &hash(&given)) => Ok(None),
            (Some(_), _) => Err((
                format!(
                    "the machine name {name:?} belongs to another machine (it brought no secret, or the wrong one); \
                     start this runner with another --name, or with the cache dir it joined from before"
                ),
                false,
            )),
            (None, _) => {
                let fresh = crate::secret::random_secret().map_err(|e| (e.to_string(), true))?;
                let (key, digest) = (name.to_string(), hash(&fresh));
                let bound = self
                    .store
                    .call(move |s| s.bind_machine(&key, &digest, MAX_MACHINE_NAMES))
                    .await
                    .map_err(store_failed)?;
                match bound {
                    Binding::Bound => Ok(Some(fresh)),
                    Binding::Taken => Err((format!("the machine name {name:?} was just taken"), true)),
                    Binding::Full => Err((
                        format!(
                            "the coordinator holds the identities of {MAX_MACHINE_NAMES} machine names, the most it \
                             keeps: release names no longer used (POST /api/machines/NAME/forget) before a new one \
                             joins"
                        ),
                        false,
                    )),
                }
            }
        }
    }

    /// Counts what is queued for connection `generation` of machine `name`
    /// (see [`machines::Machines::count_queue`]).
    pub fn count_queue(&self, name: &str, generation: u64) -> Option<Arc<std::sync::atomic::AtomicU64>> {
        self.machines.count_queue(name, generation)
    }

    /// Registers a connection of a machine; see [`Machines::connect`].
    /// A machine connected, holding the shards `holding` says (by run), if
    /// it says: its runs tell it again what it may have missed while away,
    /// and lose at once what a restarted runner no longer holds.
    pub fn connect(
        &self,
        info: MachineInfo,
        tx: mpsc::UnboundedSender<ToMachine>,
        local: bool,
        holding: Option<&std::collections::BTreeMap<String, Vec<u32>>>,
        instance: Option<&str>,
    ) -> Result<u64, String> {
        let name = info.name.clone();
        let generation = self.machines.connect(info, tx, local, instance)?;
        let runs = self.runs.lock().expect("runs lock");
        for (id, run) in runs.iter() {
            if let Some(&machine) = run.machines.get(&name) {
                let holding = holding.map(|h| h.get(id).cloned().unwrap_or_default());
                let _ = run.inbound.send(Inbound::Connected { machine, holding });
            }
        }
        // Shards of runs that are over here (they ended while the machine
        // was away, or before a restart of this coordinator): it stops them.
        for (run, shards) in holding.into_iter().flatten().filter(|(run, _)| !runs.contains_key(*run)) {
            for &shard in shards {
                let reason = format!("run {run} is over");
                self.machines.send(&name, ToMachine::Lost { run: run.clone(), shard, reason });
            }
        }
        Ok(generation)
    }

    /// Tells machine `name` (just joined) to compile the suites that the
    /// plans saved last ([`PRECOMPILE_PLANS`]) could place on it, before their
    /// runs: a machine new to the fleet, or with an emptied cache, is then
    /// ready by the time they run. Once per runner process: the same
    /// process back after a blip has them. See [`ToMachine::Precompile`].
    pub async fn precompile_machine(&self, name: &str) {
        if !self.machines.first_hint(name) {
            return;
        }
        let Some(info) = self.machines.links().into_iter().map(|l| l.info).find(|i| i.name == name) else {
            return;
        };
        let plans = match self.store.call(|s| s.recent_plans(PRECOMPILE_PLANS)).await {
            Ok(plans) => plans,
            Err(e) => {
                tracing::debug!("reading the plans a joined machine could precompile: {e:#}");
                return;
            }
        };
        let mut suites: Vec<String> = Vec::new();
        for stored in &plans {
            for sha in matching::suites_for(&stored.plan, &info) {
                if suites.len() < MAX_PRECOMPILE && !suites.iter().any(|s| s == sha) {
                    suites.push(sha.to_string());
                }
            }
        }
        let stored = self.store.call(move |s| {
            let mut kept = Vec::with_capacity(suites.len());
            for sha in suites {
                if s.suite(&sha)?.is_some() {
                    kept.push(sha);
                }
            }
            Ok(kept)
        });
        match stored.await {
            Ok(suites) if !suites.is_empty() => {
                self.machines.send(name, ToMachine::Precompile { suites });
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("reading the suites a joined machine could precompile: {e:#}"),
        }
    }

    /// Tells each machine that can take work now and that `plan` could
    /// place entries on to compile those entries' suites (the ones stored,
    /// `stored[i]` being entry `i`'s), before the plan runs.
    fn precompile_plan(&self, plan: &Plan, stored: &[Option<SuiteMeta>]) {
        let uploaded = |sha: &str| stored.iter().flatten().any(|m| m.sha256 == sha);
        for link in self.machines.links() {
            let suites: Vec<String> = matching::suites_for(plan, &link.info)
                .into_iter()
                .filter(|sha| uploaded(sha))
                .take(MAX_PRECOMPILE)
                .map(str::to_string)
                .collect();
            if !suites.is_empty() {
                self.machines.send(&link.info.name, ToMachine::Precompile { suites });
            }
        }
    }

    /// The connection `generation` of `name` closed.
    pub fn disconnected(&self, name: &str, generation: u64) {
        self.machines.disconnect(name, generation);
    }

    pub fn clock_sample(&self, name: &str, t0: i64, t1: i64, t2: i64) {
        self.machines.clock_sample(name, t0, t1, t2);
    }

    /// The intake gate of a new machine connection.
    pub fn intake_gate(&self) -> intake::Gate {
        self.intake.gate()
    }

    /// A message of machine `name`, with the room it takes from the
    /// machine's budget (none for the server's own machine).
    pub fn on_message(&self, name: &str, msg: FromMachine, intake: Option<intake::Intake>) {
        let Some(offset) = self.machines.heard(name, &msg) else { return };
        let run = match &msg {
            FromMachine::Event { run, .. }
            | FromMachine::Sync { run, .. }
            | FromMachine::ShardDone { run, .. } => run,
            FromMachine::Drain => {
                if let Err(e) = self.drain_machine(name) {
                    tracing::warn!(machine = %name, "a machine asked to be drained: {}", e.message());
                }
                return;
            }
            FromMachine::Pong { .. } | FromMachine::Heartbeat | FromMachine::Hello { .. } => return,
        };
        let runs = self.runs.lock().expect("runs lock");
        let Some(active) = runs.get(run) else {
            // The run is over (or unknown here): tell the machine to forget
            // the message, so it stops resending it.
            tracing::debug!(%run, machine = ?name, "message for a run that is not active");
            let forget = match msg {
                FromMachine::Event { run, shard, seq, .. } => ToMachine::Ack { run, shard, seq },
                FromMachine::ShardDone { run, shard } => ToMachine::AckShardDone { run, shard },
                FromMachine::Sync { id, run, .. } => ToMachine::SyncReply {
                    id,
                    reply: SyncReply::Error {
                        kind: SyncFailure::Cancelled,
                        message: format!("run {run} is not running"),
                    },
                },
                _ => return,
            };
            self.machines.send(name, forget);
            return;
        };
        if let Some(&index) = active.machines.get(name) {
            let _ = active.inbound.send(Inbound::Message {
                machine: index,
                msg,
                clock_offset_us: offset,
                intake,
            });
        }
    }

    async fn watchdog(core: std::sync::Weak<Coordinator>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let Some(core) = core.upgrade() else { return };
            let lost = core.machines.expire(core.config.heartbeat_timeout, core.config.offline_retention);
            if lost.is_empty() {
                continue;
            }
            let runs = core.runs.lock().expect("runs lock");
            for (name, reason) in lost {
                for active in runs.values() {
                    if let Some(&index) = active.machines.get(&name) {
                        let _ = active.inbound.send(Inbound::Lost { machine: index, reason: reason.clone() });
                    }
                }
            }
        }
    }

    // ---- suites ----

    /// A page of the suites (see [`ListQuery`]).
    pub async fn suites(&self, query: ListQuery) -> Result<Vec<SuiteSummary>, ApiError> {
        let (limit, offset) = query.page();
        self.store.call(move |s| s.suites_page(limit, offset)).await.map_err(internal)
    }

    pub async fn suite(&self, sha256: &str) -> Result<SuiteMeta, ApiError> {
        let sha = sha256.to_string();
        self.store
            .call(move |s| s.suite(&sha))
            .await
            .map_err(internal)?
            .ok_or_else(|| not_found("suite", sha256))
    }

    /// The file a suite's bytes are kept in: read as it is sent, never whole.
    pub fn suite_file(&self, sha256: &str) -> Result<std::path::PathBuf, ApiError> {
        self.store.suite_path(sha256).filter(|p| p.is_file()).ok_or_else(|| not_found("suite", sha256))
    }

    /// A file a test of run `id` attached: its name there and the file its
    /// bytes are kept in (read as they are sent, never whole).
    pub async fn attachment(&self, id: &str, sha256: &str) -> Result<(String, std::path::PathBuf), ApiError> {
        self.run(id).await?;
        let (run, sha) = (id.to_string(), sha256.to_string());
        let found = self
            .store
            .call(move |s| {
                let Some(name) = s.attachment_name(&run, &sha)? else { return Ok(None) };
                Ok(Some((name, s.attachment_path(&sha).filter(|p| p.is_file()))))
            })
            .await
            .map_err(internal)?;
        match found {
            Some((name, Some(path))) => Ok((name, path)),
            Some((name, None)) => Err(ApiError::new(
                ErrorKind::NotFound,
                format!(
                    "the bytes of {name:?} (run {id:?}) are no longer kept: the server removes attached files \
                     past its --attachment-retention or --attachment-budget"
                ),
            )),
            None => Err(ApiError::new(
                ErrorKind::NotFound,
                format!("run {id:?} has no attachment with sha256 {sha256:?}"),
            )),
        }
    }

    /// Stores an uploaded suite after inspecting it; returns its metadata and
    /// whether it is new.
    pub async fn add_suite(
        &self,
        name: Option<String>,
        bytes: Vec<u8>,
    ) -> Result<(SuiteMeta, bool), ApiError> {
        let sha = sha256_hex(&bytes);
        let known = sha.clone();
        if let Some(meta) = self.store.call(move |s| s.suite(&known)).await.map_err(internal)? {
            return Ok((meta, false));
        }
        let name = name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| sha[..12].to_string());
        let bytes = Arc::new(bytes);
        let meta = self.sandbox.inspect(bytes.clone(), &name).await.map_err(|e| {
            ApiError::new(ErrorKind::InvalidSuite, format!("the upload {name:?} is not a usable suite: {e}"))
        })?;
        self.store_has_room().await?;
        // One upload at a time from the budget check to the suite stored:
        // two at once would both find room for one.
        let mut last_sweep = self.storing_suite.lock().await;
        let (size, budget) = (bytes.len() as u64, self.config.suite_budget);
        let room = budget.saturating_sub(size);
        let mut kept = self.store.call(|s| s.suites_size()).await.map_err(internal)?;
        if kept > room && last_sweep.is_none_or(|t| t.elapsed() >= UPLOAD_SWEEP_EVERY) {
            // Suites no plan or run names go first, oldest first (the hourly
            // sweep's rule, at once).
            *last_sweep = Some(std::time::Instant::now());
            let swept = self.store.call(move |s| s.sweep_suites(i64::MIN, room)).await.map_err(internal)?;
            kept = swept.kept_bytes;
        }
        if kept > room {
            use ensemble_protocol::units::ByteSize;
            return Err(ApiError::new(
                ErrorKind::StoreUnavailable,
                format!(
                    "the server keeps {} of suites, and {name:?} ({}) would take them past its budget of {} \
                     (`serve --suite-budget`); the suites that stored plans or kept runs name stay, and so do \
                     those uploaded in the last {} minutes (the others are removed to make room, once a minute at \
                     most): delete plans or runs that name others, or raise the budget",
                    ByteSize(kept),
                    ByteSize(size),
                    ByteSize(budget),
                    crate::store::SWEEP_SPARES.as_secs() / 60,
                ),
            ));
        }
        let stored = meta.clone();
        self.store.call(move |s| s.put_suite(&stored, &bytes)).await.map_err(internal)?;
        Ok((meta, true))
    }

    // ---- plans ----

    /// A page of the plans (see [`ListQuery`]).
    pub async fn plans(&self, query: PlansQuery) -> Result<Vec<StoredPlan>, ApiError> {
        let (limit, offset) = query.page();
        let plans = self
            .store
            .call(move |s| s.plans_page(limit, offset, query.name.as_deref()))
            .await
            .map_err(internal)?;
        self.with_schedules(plans).await
    }

    /// A stored plan, with where its schedules stand.
    pub async fn plan(&self, id: &str) -> Result<StoredPlan, ApiError> {
        let key = id.to_string();
        let plan = self
            .store
            .call(move |s| s.plan(&key))
            .await
            .map_err(internal)?
            .ok_or_else(|| not_found("plan", id))?;
        Ok(self.with_schedules(vec![plan]).await?.remove(0))
    }

    /// Creates (`id == None`) or replaces a plan; returns it and whether it is new.
    /// Stored plan `id` as TOML, each param written as the type its suite
    /// declares (`nap_ms = 4000`).
    pub async fn plan_toml(&self, id: &str) -> Result<String, ApiError> {
        let stored = self.plan(id).await?;
        let metas = self.entry_suites(&stored.plan).await?;
        let declared: Vec<Option<&[ensemble_protocol::api::ParamMeta]>> =
            metas.iter().map(|m| m.as_ref().and_then(|m| m.params.as_deref())).collect();
        Ok(stored.plan.to_toml_typed(&declared))
    }

    pub async fn save_plan(
        &self,
        id: Option<String>,
        mut plan: Plan,
    ) -> Result<(StoredPlan, bool), ApiError> {
        self.name_roles(&mut plan).await?;
        plan.validate().map_err(ApiError::from)?;
        // What the editor shows at the execution setting, the server keeps
        // out too (suites not uploaded yet are checked when the plan runs).
        let metas = self.entry_suites(&plan).await?;
        let uses_sync: Vec<bool> =
            metas.iter().map(|m| m.as_ref().is_some_and(SuiteMeta::uses_sync)).collect();
        let mut problems = param_problems(&plan, metas.iter().map(Option::as_ref));
        problems.extend(plan.sync_problems(&uses_sync));
        problems.extend(schedule::problems(&plan));
        problems.extend(schedule::interval_problems(&plan, self.config.min_schedule_interval));
        if !problems.is_empty() {
            return Err(ApiError::from(ensemble_protocol::PlanError { file: None, problems }));
        }
        self.store_has_room().await?;
        let now = now_us();
        let (id, created, new) = match id {
            Some(id) => {
                let created = self.plan(&id).await?.created_us;
                (id, created, false)
            }
            None => {
                let plans = self.store.call(|s| s.plan_count()).await.map_err(internal)?;
                if plans >= MAX_PLANS {
                    return Err(ApiError::new(
                        ErrorKind::Conflict,
                        format!("the server keeps at most {MAX_PLANS} plans: delete one to save another"),
                    ));
                }
                (format!("plan-{now:x}"), now, true)
            }
        };
        let stored = StoredPlan { id, plan, created_us: created, updated_us: now, schedules: Vec::new() };
        let row = stored.clone();
        // Its schedules count from now: a time before the save is not missed.
        let keys: Vec<String> = stored.plan.schedule.iter().map(Schedule::key).collect();
        self.store
            .call(move |s| {
                s.put_plan(&row)?;
                s.start_schedule_records(&row.id, &keys, now)
            })
            .await
            .map_err(internal)?;
        self.schedules_changed();
        self.precompile_plan(&stored.plan, &metas);
        let stored = self.with_schedules(vec![stored]).await?.remove(0);
        Ok((stored, new))
    }

    pub async fn delete_plan(&self, id: &str) -> Result<PlanDeleted, ApiError> {
        let key = id.to_string();
        if self.store.call(move |s| s.delete_plan(&key)).await.map_err(internal)? {
            self.schedules_changed();
            Ok(PlanDeleted { deleted: id.to_string() })
        } else {
            Err(not_found("plan", id))
        }
    }

    /// Gives entries naming a stored suite by hash the suite's name as their role.
    async fn name_roles(&self, plan: &mut Plan) -> Result<(), ApiError> {
        for e in &mut plan.entries {
            if e.role.is_none()
                && let Some(sha) = suite_sha(&e.suite)
            {
                let sha = sha.to_string();
                if let Some(meta) = self.store.call(move |s| s.suite(&sha)).await.map_err(internal)? {
                    e.role = Some(meta.name);
                }
            }
        }
        Ok(())
    }

    // ---- runs ----

    /// A page of the runs, of one plan or of all (see [`RunsQuery`]).
    pub async fn runs(&self, query: RunsQuery) -> Result<Vec<RunMeta>, ApiError> {
        let (limit, offset) = query.page();
        self.store.call(move |s| s.runs_page(limit, offset, query.plan.as_deref())).await.map_err(internal)
    }

    pub async fn run(&self, id: &str) -> Result<RunMeta, ApiError> {
        let key = id.to_string();
        self.store.call(move |s| s.run(&key)).await.map_err(internal)?.ok_or_else(|| not_found("run", id))
    }

    /// At most `limit` events of `run` from `from`, as stored: numbers and
    /// JSON (see [`Store::event_bodies`]).
    pub async fn event_bodies(
        &self,
        run: &str,
        from: u64,
        limit: u32,
    ) -> Result<Vec<(u64, String)>, ApiError> {
        let key = run.to_string();
        self.store.call(move |s| s.event_bodies(&key, from, limit)).await.map_err(internal)
    }

    /// The numbers and sizes of at most `limit` stored events of `run` from
    /// `from` (see [`Store::event_sizes`]).
    pub async fn event_sizes(&self, run: &str, from: u64, limit: u32) -> Result<Vec<(u64, usize)>, ApiError> {
        let key = run.to_string();
        self.store.call(move |s| s.event_sizes(&key, from, limit)).await.map_err(internal)
    }

    /// Live events of an active run (None when it is not running). Every
    /// event sent here is already stored, so subscribe, then replay.
    pub fn subscribe_run(&self, id: &str) -> Option<broadcast::Receiver<Live>> {
        self.runs.lock().expect("runs lock").get(id).map(|r| r.events.subscribe())
    }

    /// Asks a running (or queued) run to stop, for `reason`: the cancel is
    /// stored before it is acknowledged, so a coordinator restarted after
    /// this finishes cancelling the run (see [`Coordinator::resume_runs`]).
    pub async fn cancel_run(&self, id: &str, reason: CancelReason) -> Result<RunCancelling, ApiError> {
        let not_running = || ApiError::new(ErrorKind::Conflict, format!("run {id:?} is not running"));
        if !self.runs.lock().expect("runs lock").contains_key(id) {
            return Err(not_running());
        }
        let (key, kept) = (id.to_string(), reason.clone());
        self.store.call(move |s| s.put_cancel(&key, now_us(), &kept)).await.map_err(internal)?;
        let runs = self.runs.lock().expect("runs lock");
        match runs.get(id) {
            Some(r) if r.inbound.send(Inbound::Cancel { reason }).is_ok() => {
                Ok(RunCancelling { cancelling: id.to_string() })
            }
            // It ended meanwhile: the kept cancel is no longer read.
            _ => Err(not_running()),
        }
    }

    /// Starts a run of a stored or inline plan whose entries name stored
    /// suites as `sha256:<hex>`. Refuses, before anything runs, a plan whose
    /// coordinating entries could never meet: in sequence
    /// ([`Plan::sync_problems`]), or on the machines online now (too few of
    /// them, or too few slots; see [`matching`]). A run whose machines are
    /// busy with other runs waits for them (`run-queued`), up to its plan's
    /// `queue_timeout`.
    pub async fn start_run(self: &Arc<Self>, req: RunRequest) -> Result<RunCreated, ApiError> {
        self.start_run_scheduled(req, None).await
    }

    /// Refuses (507) a write to a store that lately found no room for one
    /// (a full disk, the quota), unless a probe finds room now: a small
    /// write might still fit where the next event would not.
    async fn store_has_room(&self) -> Result<(), ApiError> {
        if self.store.fault().is_none() {
            return Ok(());
        }
        self.store.call(|s| s.probe_write(now_us())).await.map_err(internal)
    }

    /// [`Coordinator::start_run`], for the schedule `scheduled` when one
    /// starts it.
    async fn start_run_scheduled(
        self: &Arc<Self>,
        req: RunRequest,
        scheduled: Option<String>,
    ) -> Result<RunCreated, ApiError> {
        if self.run_tasks.is_closed() {
            return Err(ApiError::new(ErrorKind::Conflict, "the coordinator is shutting down"));
        }
        self.store_has_room().await?;
        let active = self.runs.lock().expect("runs lock").len();
        if active >= MAX_ACTIVE_RUNS {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                format!(
                    "{active} runs are running or waiting for machines, the most one coordinator takes at once ({MAX_ACTIVE_RUNS}); start this one when some have ended"
                ),
            ));
        }
        let (mut plan, reruns) = match (req.plan, req.plan_id, req.rerun_failed) {
            (Some(plan), None, None) => (plan, None),
            (None, Some(id), None) => (self.plan(&id).await?.plan, None),
            (None, None, Some(of)) => (self.failures_of(&of).await?, Some(of)),
            _ => {
                return Err(ApiError::new(
                    ErrorKind::BadRequest,
                    "send exactly one of `plan`, `plan_id` and `rerun_failed`",
                ));
            }
        };
        self.name_roles(&mut plan).await?;
        plan.validate().map_err(ApiError::from)?;
        let metas = self.resolve_metas(&plan).await?;
        let suites = metas.iter().map(suite_ref).collect();
        let started_us = now_us();
        let durations = self.durations_for(&plan, started_us).await?;
        let mut problems = param_problems(&plan, metas.iter().map(Some));
        let job = Job { ticket: 0, plan, suites, durations };
        problems.extend(job.plan.sync_problems(&job.uses_sync()));
        if !problems.is_empty() {
            return Err(ApiError::from(ensemble_protocol::PlanError { file: None, problems }));
        }
        let infos: Vec<MachineInfo> = self.machines.links().iter().map(|l| l.info.clone()).collect();
        if let Err(Unplaced::Never(mut why)) =
            matching::place(&job.plan, &job.names(), &job.uses_sync(), &infos, &[])
        {
            let draining: Vec<String> = self
                .machines
                .statuses()
                .into_iter()
                .filter(|m| {
                    m.state == MachineState::Draining && job.plan.profiles.iter().any(|p| p.matches(&m.info))
                })
                .map(|m| m.info.name)
                .collect();
            if !draining.is_empty() {
                why.push_str(&format!("; draining, so taking no new shards: {}", draining.join(", ")));
            }
            return Err(ApiError::new(ErrorKind::Unsatisfiable, why));
        }

        let id = new_run_id();
        let meta = RunMeta {
            id: id.clone(),
            plan: job.plan.clone(),
            state: RunState::Running,
            started_us,
            finished_us: None,
            summary: None,
            reruns,
            scheduled,
        };
        let row = meta.clone();
        self.store.call(move |s| s.put_run(&row)).await.map_err(internal)?;
        let job = Job { ticket: self.queue.lock().expect("queue lock").ticket(), ..job };
        let deadline = tokio::time::Instant::now() + job.plan.settings.queue_timeout.0;
        self.launch_queued(meta, 0, job, deadline, None);
        Ok(RunCreated { id })
    }

    /// One test's results across its plan's runs (`role` and `test` needed).
    pub async fn test_history(&self, query: HistoryQuery) -> Result<TestHistory, ApiError> {
        let (Some(role), Some(test)) = (query.role.clone(), query.test.clone()) else {
            return Err(ApiError::new(ErrorKind::BadRequest, "name the test: ?plan=…&role=…&test=…"));
        };
        let (plan, limit) = (query.plan.clone(), query.limit());
        let (r, t) = (role.clone(), test.clone());
        let results = self.store.call(move |s| s.results_of(&plan, &r, &t, limit)).await.map_err(internal)?;
        Ok(TestHistory::of(&query.plan, &role, &test, results))
    }

    /// The tests of plan `query.plan` that were flaky in its last
    /// `query.limit()` runs (see [`TestHistory::is_flaky`]), most flips first.
    pub async fn flaky_tests(&self, query: HistoryQuery) -> Result<Vec<TestHistory>, ApiError> {
        let (plan, runs) = (query.plan.clone(), query.limit());
        let results = self
            .store
            .call(move |s| s.recent_results(&plan, runs, MAX_RECENT_RESULTS))
            .await
            .map_err(internal)?;
        let mut by_test: std::collections::BTreeMap<(String, String), Vec<_>> = Default::default();
        for (role, test, result) in results {
            by_test.entry((role, test)).or_default().push(result);
        }
        let mut flaky: Vec<TestHistory> = by_test
            .into_iter()
            .map(|((role, test), results)| TestHistory::of(&query.plan, &role, &test, results))
            .filter(TestHistory::is_flaky)
            .collect();
        flaky.sort_by_key(|t| std::cmp::Reverse(t.flips + t.flaky));
        Ok(flaky)
    }

    /// The recorded durations a `duration:K/N` partition of `plan`, or an
    /// entry's `split`, needs (none for other plans).
    async fn durations_for(
        &self,
        plan: &Plan,
        before_us: i64,
    ) -> Result<ensemble_protocol::filter::SharedDurations, ApiError> {
        use ensemble_protocol::filter::PartitionKind;
        // A duration partition splits every role; `split` only its entries'.
        let roles: Option<std::collections::BTreeSet<String>> = if plan
            .settings
            .partition
            .is_some_and(|p| p.kind == PartitionKind::Duration)
        {
            None
        } else {
            Some(plan.entries.iter().filter(|e| e.split.is_some()).filter_map(|e| e.role.clone()).collect())
        };
        if roles.as_ref().is_some_and(|r| r.is_empty()) {
            return Ok(Default::default());
        }
        let name = plan.name.clone();
        let read = move |s: &Store| s.durations(&name, before_us, roles.as_ref(), MAX_DURATION_BYTES);
        self.store.call(read).await.map(ensemble_protocol::filter::shared).map_err(internal)
    }

    /// What rerunning finished run `id`'s failures would run.
    pub async fn rerun_preview(&self, id: &str) -> Result<RerunPreview, ApiError> {
        let (plan, events) = self.failures_with_events(id).await?;
        let failed = events
            .iter()
            .filter_map(|e| match &e.kind {
                ensemble_protocol::EventKind::TestFinished { shard, test, outcome, .. }
                    if outcome.is_failure() =>
                {
                    Some((shard.role.as_str(), test.as_str()))
                }
                _ => None,
            })
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let tests = rerun::tests_of(&plan, &events);
        Ok(RerunPreview { failed: u32::try_from(failed).unwrap_or(u32::MAX), tests: tests.max(1) })
    }

    /// The plan that runs again what did not pass in finished run `id`
    /// (see [`rerun::failures_plan`]).
    async fn failures_of(&self, id: &str) -> Result<Plan, ApiError> {
        self.failures_with_events(id).await.map(|(plan, _)| plan)
    }

    /// [`Coordinator::failures_of`], with the run's event outline it read.
    async fn failures_with_events(
        &self,
        id: &str,
    ) -> Result<(Plan, Vec<ensemble_protocol::Event>), ApiError> {
        let meta = self.run(id).await?;
        if matches!(meta.state, RunState::Queued | RunState::Running) {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                format!("run {id:?} has not finished: rerun its failures once it has"),
            ));
        }
        let key = id.to_string();
        let events = self.store.call(move |s| s.events_outline(&key)).await.map_err(internal)?;
        let uses_sync: Vec<bool> =
            self.resolve_suites(&meta.plan).await?.iter().map(|s| s.uses_sync).collect();
        let plan = rerun::failures_plan(&meta.plan, &events, &uses_sync).map_err(|why| {
            ApiError::new(ErrorKind::Conflict, format!("run {id:?} has nothing to rerun: {why}"))
        })?;
        Ok((plan, events))
    }

    /// Opens a run's plumbing (see [`Opened`]) and lists it as active.
    fn open(&self, meta: RunMeta, committed: u64) -> Opened {
        let id = meta.id.clone();
        let (inbound_tx, inbound) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(4096);
        let (records_tx, records_rx) = mpsc::unbounded_channel();
        let reporters: Vec<Box<dyn Reporter>> = vec![Box::new(RunRecorder::new(meta, records_tx))];
        let (committed_tx, committed_rx) = watch::channel(committed);
        self.runs.lock().expect("runs lock").insert(
            id.clone(),
            ActiveRun {
                inbound: inbound_tx.clone(),
                machines: HashMap::new(),
                placed: Vec::new(),
                pending: Vec::new(),
                events: events.clone(),
            },
        );
        // A store that cannot record the run fails it (and stops its
        // machines); the writer does not keep the run's input open.
        let cancel = inbound_tx.downgrade();
        let fail = move |message: String| {
            if let Some(run) = cancel.upgrade() {
                let _ = run.send(Inbound::Cancel { reason: CancelReason::StoreFailed { message } });
            }
        };
        let (store, stop) = (self.store.clone(), self.shutdown.clone());
        let writer = self.run_tasks.spawn(write_events(store, records_rx, events, committed_tx, fail, stop));
        Opened { stream: Stream::new(id, committed, reporters), inbound, committed: committed_rx, writer }
    }

    /// Runs `dispatcher` (started, or to be taken up again when `resumed`)
    /// to the end on `opened`'s input; then the run is over here.
    fn drive(
        self: &Arc<Self>,
        id: String,
        dispatcher: Option<Dispatcher>,
        resumed: bool,
        mut opened: Opened,
    ) {
        let core = self.clone();
        self.run_tasks.spawn(async move {
            if let Some(mut dispatcher) = dispatcher {
                if resumed {
                    dispatcher.resume_start();
                }
                let result = dispatcher.drive(&mut opened.inbound).await;
                tracing::info!(run = %id, verdict = %result.verdict, "run over");
            }
            // Nobody reads the run's input any more: what comes for it now
            // is dropped (its room freed) while its end is being stored.
            let Opened { inbound, writer, .. } = opened;
            drop(inbound);
            core.close_run(&id, writer).await;
        });
    }

    /// A run is over: once all it said is stored it leaves the active list
    /// (a watcher that finds it inactive replays it whole), and its slots
    /// are free for the runs waiting.
    async fn close_run(&self, id: &str, writer: tokio::task::JoinHandle<()>) {
        let _ = writer.await;
        self.runs.lock().expect("runs lock").remove(id);
        self.machines.forget_run(id);
        self.queue_moved.send_modify(|n| *n += 1);
        // Its end is stored: tell the plan's webhooks.
        let key = id.to_string();
        if let Ok(Some(meta)) = self.store.call(move |s| s.run(&key)).await
            && !meta.plan.notify.is_empty()
            && !matches!(meta.state, RunState::Running | RunState::Queued)
        {
            let (secret, url) = (self.config.webhook_secret.clone(), self.config.public_url.clone());
            let to = notify::Destinations::new(self.config.webhook_allow.clone());
            self.tasks.spawn(notify::deliver(
                self.store.clone(),
                meta,
                secret,
                url,
                to,
                self.shutdown.clone(),
            ));
        }
    }

    /// The attempts to call run `id`'s webhooks.
    pub async fn deliveries(&self, id: &str) -> Result<Vec<Delivery>, ApiError> {
        self.run(id).await?;
        let key = id.to_string();
        self.store.call(move |s| s.deliveries(&key)).await.map_err(internal)
    }

    /// A new (or restarted) run that starts as soon as its machines have
    /// room, and fails when they have none by `deadline`.
    fn launch_queued(
        self: &Arc<Self>,
        meta: RunMeta,
        committed: u64,
        job: Job,
        deadline: tokio::time::Instant,
        cancelled: Option<CancelReason>,
    ) {
        let id = meta.id.clone();
        let mut opened = self.open(meta, committed);
        let stream = std::mem::replace(&mut opened.stream, Stream::new(id.clone(), 0, Vec::new()));
        let started = match cancelled {
            // A cancelled run never starts.
            Some(reason) => Err((stream, Err(reason))),
            None => self.try_start(&id, &job, stream, &opened.committed).map_err(|(s, why)| (s, Ok(why))),
        };
        match started {
            Ok(dispatcher) => self.drive(id, Some(dispatcher), false, opened),
            Err((stream, why)) => {
                let core = self.clone();
                self.run_tasks.spawn(async move {
                    let dispatcher =
                        core.wait_for_machines(&id, &job, stream, why, deadline, &mut opened).await;
                    core.queue.lock().expect("queue lock").leave(job.ticket);
                    core.queue_moved.send_modify(|n| *n += 1);
                    core.drive(id, dispatcher, false, opened);
                });
            }
        }
    }

    /// Places and starts `job` if its machines have room now and no run
    /// that came before it waits for them; else gives `stream` back with
    /// what it waits for.
    fn try_start(
        &self,
        id: &str,
        job: &Job,
        stream: Stream,
        committed: &watch::Receiver<u64>,
    ) -> Result<Dispatcher, (Stream, Unplaced)> {
        let mut queue = self.queue.lock().expect("queue lock");
        let links = self.machines.links();
        let infos: Vec<MachineInfo> = links.iter().map(|l| l.info.clone()).collect();
        let names: Vec<&str> = infos.iter().map(|i| i.name.as_str()).collect();
        let busy = self.machines.busy(&names);
        let shards = match matching::place(&job.plan, &job.names(), &job.uses_sync(), &infos, &busy) {
            Ok(shards) => shards,
            Err(why) => return Err((stream, why)),
        };
        if let Some(first) = queue.ahead(job.ticket, shards.iter().map(|s| s.shard.machine.as_str())) {
            let why = format!("run {first} came first and waits for the same machines");
            return Err((stream, Unplaced::Busy(why)));
        }
        queue.leave(job.ticket);
        let mut dispatcher =
            Dispatcher::new(id.to_string(), &job.plan, job.suites.clone(), links, shards, Vec::new())
                .with_durations(&job.durations)
                .after(stream)
                .durable(committed.clone());
        if let Some(run) = self.runs.lock().expect("runs lock").get_mut(id) {
            run.machines = index_by_name(dispatcher.machine_names());
            run.placed = dispatcher.placed_machines();
            run.pending.clear();
        }
        // Assigned under the queue's lock: the next run counts these slots.
        dispatcher.start();
        Ok(dispatcher)
    }

    /// Waits, saying for what (`why`), until [`Coordinator::try_start`]
    /// starts the run; or ends it unstarted (`run-finished`, no dispatcher)
    /// when it is cancelled (`why` may already say so) or waited past
    /// `deadline`.
    async fn wait_for_machines(
        &self,
        id: &str,
        job: &Job,
        mut stream: Stream,
        why: Result<Unplaced, CancelReason>,
        deadline: tokio::time::Instant,
        opened: &mut Opened,
    ) -> Option<Dispatcher> {
        let waited_from = tokio::time::Instant::now();
        let mut machines = self.machines.subscribe();
        let mut moved = self.queue_moved.subscribe();
        let mut said = String::new();
        let (mut why, cancelled) = match why {
            Ok(why) => (why, None),
            Err(cancelled) => (Unplaced::Busy(String::new()), Some(cancelled)),
        };
        let ended = if let Some(reason) = cancelled {
            reason
        } else {
            loop {
                if why.message() != said {
                    said = why.message().to_string();
                    tracing::info!(run = %id, "the run waits: {said}");
                    stream.emit(EventKind::RunQueued { waiting_for: said.clone() });
                    self.wants(id, job);
                }
                tokio::select! {
                    // A cancel that came before the machines freed up wins:
                    // a run cancelled while queued never starts.
                    biased;
                    input = opened.inbound.recv() => match input {
                        Some(Inbound::Cancel { reason }) => break reason,
                        Some(_) => continue,
                        None => break CancelReason::ShuttingDown,
                    },
                    _ = machines.changed() => {}
                    _ = moved.changed() => {}
                    _ = tokio::time::sleep_until(deadline) => {
                        let waited_ms = u64::try_from((tokio::time::Instant::now() - waited_from).as_millis()).unwrap_or(u64::MAX);
                        break CancelReason::QueueTimeout { waited_ms, waiting_for: said };
                    }
                }
                machines.borrow_and_update();
                moved.borrow_and_update();
                match self.try_start(id, job, stream, &opened.committed) {
                    Ok(dispatcher) => return Some(dispatcher),
                    Err((back, now)) => (stream, why) = (back, now),
                }
            }
        };
        tracing::info!(run = %id, "the run ends before it started: {ended}");
        let summary = Default::default();
        let verdict = ensemble_protocol::Verdict::decide(&summary, 0, Some(&ended));
        let duration_ms = u64::try_from(waited_from.elapsed().as_millis()).unwrap_or(u64::MAX);
        stream.emit(EventKind::RunFinished {
            summary,
            duration_ms,
            shard_errors: 0,
            cancelled: Some(ended),
            verdict,
        });
        None
    }

    /// Job `job` (run `id`) waits: the runs after it keep off the machines
    /// its profiles match.
    fn wants(&self, id: &str, job: &Job) {
        let infos: Vec<MachineInfo> = self.machines.links().iter().map(|l| l.info.clone()).collect();
        let wanted = infos
            .iter()
            .filter(|m| job.plan.profiles.iter().any(|p| p.matches(m)))
            .map(|m| m.name.clone())
            .collect();
        self.queue.lock().expect("queue lock").wait(job.ticket, id, wanted);
        let mut pending: std::collections::BTreeMap<(String, String), i64> = Default::default();
        for entry in &job.plan.entries {
            for profile in matching::entry_profiles(&job.plan, entry) {
                *pending.entry((job.plan.name.clone(), profile.name.clone())).or_default() +=
                    i64::from(profile.count);
            }
        }
        if let Some(run) = self.runs.lock().expect("runs lock").get_mut(id) {
            run.pending = pending.into_iter().collect();
        }
    }

    /// The state `/metrics` reports: machines and runs by state, and the
    /// shards queued runs wait to place, by plan and profile.
    pub fn metrics_scrape(&self) -> crate::metrics::Scrape {
        let statuses = self.machines.statuses();
        let count = |state: MachineState| statuses.iter().filter(|m| m.state == state).count() as i64;
        let machines = vec![
            ("online", count(MachineState::Online)),
            ("busy", count(MachineState::Busy)),
            ("draining", count(MachineState::Draining)),
            ("disconnected", count(MachineState::Disconnected)),
            ("offline", count(MachineState::Offline)),
        ];
        let runs = self.runs.lock().expect("runs lock");
        let queued = runs.values().filter(|r| !r.pending.is_empty()).count() as i64;
        let mut shards_pending = std::collections::BTreeMap::new();
        for (key, n) in runs.values().flat_map(|r| r.pending.iter()) {
            *shards_pending.entry(key.clone()).or_default() += n;
        }
        crate::metrics::Scrape {
            machines,
            runs: vec![("running", runs.len() as i64 - queued), ("queued", queued)],
            shards_pending,
            intake_bytes: i64::try_from(self.intake.in_use()).unwrap_or(i64::MAX),
        }
    }

    /// Takes up the runs that were running when the coordinator stopped
    /// (see [`Dispatcher::resume`]): their machines reconnect and resend
    /// what was not acknowledged, and the runs go on. A machine not back
    /// within the restart grace period is lost, as is at once `local`, the
    /// coordinator's own machine, which restarted with it. A run that cannot
    /// be taken up (its start was never stored) is marked interrupted.
    pub async fn resume_runs(self: &Arc<Self>, local: Option<&str>) -> anyhow::Result<()> {
        let mut runs = self.store.call(|s| s.running_runs()).await?;
        // Started runs first: the slots they hold are counted before a
        // queued run looks for free ones.
        runs.sort_by_key(|r| (r.state == RunState::Queued, r.started_us));
        for meta in runs {
            let id = meta.id.clone();
            match self.resume_run(meta.clone(), local).await {
                Ok(()) => tracing::info!(run = %id, "taking the run up again after a restart"),
                Err(why) => {
                    tracing::warn!(run = %id, "the run is interrupted: it cannot be taken up again: {why}");
                    let mut meta = meta;
                    meta.state = RunState::Interrupted;
                    meta.finished_us = Some(now_us());
                    self.store.call(move |s| s.put_run(&meta)).await?;
                }
            }
        }
        Ok(())
    }

    async fn resume_run(self: &Arc<Self>, meta: RunMeta, local: Option<&str>) -> Result<(), String> {
        let key = meta.id.clone();
        let run = key.clone();
        let events = self.store.call(move |s| s.events_outline(&run)).await.map_err(|e| format!("{e:#}"))?;
        // Asked to stop before the restart: it finishes cancelling.
        let run = key.clone();
        let cancelled = self.store.call(move |s| s.cancel_of(&run)).await.map_err(|e| format!("{e:#}"))?;
        if let Some(reason) = &cancelled {
            tracing::info!(run = %key, %reason, "the run was cancelled before the restart");
        }
        let suites = self.resolve_suites(&meta.plan).await.map_err(|e| e.error.message)?;
        let last = events.last().map_or(0, |e| e.seq);
        let started = events.iter().find_map(|e| match &e.kind {
            EventKind::RunStarted { shards, .. } => Some(shards),
            _ => None,
        });
        let Some(shards) = started else {
            if !events.iter().all(|e| matches!(e.kind, EventKind::RunQueued { .. })) {
                return Err("its run-started event was not stored".into());
            }
            // It was waiting for its machines: it waits again, as long as
            // its plan allows from when it was submitted.
            let waited = Duration::from_micros(u64::try_from(now_us() - meta.started_us).unwrap_or(0));
            let deadline =
                tokio::time::Instant::now() + meta.plan.settings.queue_timeout.0.saturating_sub(waited);
            let ticket = self.queue.lock().expect("queue lock").ticket();
            let durations = self.durations_for(&meta.plan, meta.started_us).await.unwrap_or_default();
            let job = Job { ticket, plan: meta.plan.clone(), suites, durations };
            self.launch_queued(meta, last, job, deadline, cancelled);
            return Ok(());
        };
        let mut names: Vec<String> = Vec::new();
        for s in shards {
            if !names.contains(&s.shard.machine) {
                names.push(s.shard.machine.clone());
            }
        }
        let links = names.iter().map(|n| self.machines.link(n)).collect();
        let durations = self.durations_for(&meta.plan, meta.started_us).await.unwrap_or_default();
        let resumed = Dispatcher::resume(key.clone(), &meta.plan, suites, links, &events, Vec::new())?
            .with_durations(&durations);
        let mut opened = self.open(meta, last);
        let stream = std::mem::replace(&mut opened.stream, Stream::new(key.clone(), 0, Vec::new()));
        let dispatcher = resumed.after(stream).durable(opened.committed.clone());
        for (machine, shard) in dispatcher.holding() {
            self.machines.expect(&machine, &key, &shard);
        }
        if let Some(run) = self.runs.lock().expect("runs lock").get_mut(&key) {
            run.machines = index_by_name(dispatcher.machine_names());
            run.placed = dispatcher.placed_machines();
            run.pending.clear();
        }
        let Some(inbound) = self.runs.lock().expect("runs lock").get(&key).map(|r| r.inbound.clone()) else {
            return Ok(());
        };
        if let Some(reason) = cancelled {
            // Before anything else the run hears.
            let _ = inbound.send(Inbound::Cancel { reason });
        }
        self.drive(key.clone(), Some(dispatcher), true, opened);
        if let Some(i) = local.and_then(|l| names.iter().position(|n| n == l)) {
            let reason = "it is the coordinator's own machine, which restarted with it".to_string();
            let _ = inbound.send(Inbound::Lost { machine: i, reason });
        }
        let grace = self.config.restart_grace;
        let (machines, stop) = (self.machines.clone(), self.shutdown.clone());
        self.tasks.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(grace) => {}
                _ = stop.cancelled() => return,
            }
            for (i, name) in names.iter().enumerate() {
                if !machines.connected(name) {
                    machines.forget_awaited(name);
                    let reason = format!(
                        "it did not come back within {} of the coordinator's restart",
                        humantime::format_duration(grace)
                    );
                    let _ = inbound.send(Inbound::Lost { machine: i, reason });
                }
            }
        });
        Ok(())
    }

    /// The suites a plan's entries name (`sha256:<hex>`, uploaded before).
    /// The stored suite of each entry, where it names one that is stored
    /// (suites not uploaded yet are checked when the plan runs).
    async fn entry_suites(&self, plan: &Plan) -> Result<Vec<Option<SuiteMeta>>, ApiError> {
        let mut metas = Vec::with_capacity(plan.entries.len());
        for e in &plan.entries {
            metas.push(match suite_sha(&e.suite).map(str::to_string) {
                Some(sha) => self.store.call(move |s| s.suite(&sha)).await.map_err(internal)?,
                None => None,
            });
        }
        Ok(metas)
    }

    async fn resolve_suites(&self, plan: &Plan) -> Result<Vec<SuiteRef>, ApiError> {
        Ok(self.resolve_metas(plan).await?.iter().map(suite_ref).collect())
    }

    /// Every entry's stored suite; an entry not naming one, or naming one
    /// not uploaded, is an error at its field.
    async fn resolve_metas(&self, plan: &Plan) -> Result<Vec<SuiteMeta>, ApiError> {
        let metas = self.entry_suites(plan).await?;
        let mut resolved = Vec::with_capacity(metas.len());
        for (i, (e, meta)) in plan.entries.iter().zip(metas).enumerate() {
            let invalid = |message: String| {
                ApiError::from(ensemble_protocol::PlanError {
                    file: None,
                    problems: vec![ensemble_protocol::Problem {
                        path: format!("entries[{i}].suite"),
                        message,
                    }],
                })
            };
            let Some(sha) = suite_sha(&e.suite) else {
                return Err(invalid(format!(
                    "{:?} is not a suite reference (sha256:<hex>); upload the suite first",
                    e.suite
                )));
            };
            let Some(meta) = meta else {
                return Err(invalid(format!("no suite with sha256 {sha} was uploaded")));
            };
            resolved.push(meta);
        }
        Ok(resolved)
    }
}
