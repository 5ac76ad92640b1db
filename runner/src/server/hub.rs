//! The coordinator's live state: connected machines, their clocks, and the
//! runs in progress, plus the routing of machine messages to runs.
//!
//! Every machine — remote over a WebSocket or the server's own in-process
//! one — is registered here by name and reached through [`HubPort`], which
//! resolves to the machine's *current* connection at each send, so a machine
//! that reconnects mid-run keeps its shards. A watchdog marks machines whose
//! connection is gone past the heartbeat timeout offline and tells their runs
//! they are lost.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ensemble_protocol::api::{MachineState, MachineStatus, RunMeta, RunState};
use ensemble_protocol::event::ShardRef;
use ensemble_protocol::wire::{FromMachine, MachineInfo, ToMachine};
use ensemble_protocol::{Event, EventKind, Plan};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::agent::now_us;
use crate::coordinator::{self, Inbound, MachineLink, MachinePort, SuiteRef, matching};
use crate::report::Reporter;
use crate::sandbox::Sandbox;
use crate::store::Store;

/// Clock samples kept per machine; the best (lowest round trip) wins.
const CLOCK_SAMPLES: usize = 16;

/// A machine's clock relative to the coordinator's, from ping exchanges.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    samples: VecDeque<(i64, i64)>,
    pub offset_us: i64,
    pub uncertainty_us: i64,
}

impl Clock {
    /// Adds one exchange: sent at `t0` (coordinator), stamped `t1` by the
    /// machine, received at `t2` (coordinator). The machine stamped somewhere
    /// in [t0, t2], so assuming the middle is right to ± rtt/2.
    pub fn add(&mut self, t0: i64, t1: i64, t2: i64) {
        let rtt = (t2 - t0).max(0);
        let offset = t1 - (t0 + t2) / 2;
        self.samples.push_back((rtt, offset));
        if self.samples.len() > CLOCK_SAMPLES {
            self.samples.pop_front();
        }
        if let Some(&(rtt, offset)) = self.samples.iter().min_by_key(|(rtt, _)| *rtt) {
            self.offset_us = offset;
            self.uncertainty_us = rtt / 2 + 1;
        }
    }
}

struct Conn {
    generation: u64,
    tx: mpsc::UnboundedSender<ToMachine>,
}

struct MachineEntry {
    info: MachineInfo,
    conn: Option<Conn>,
    clock: Clock,
    last_seen: Instant,
    last_seen_us: i64,
    offline: bool,
    /// The server's own machine: never times out.
    local: bool,
    running: BTreeMap<(String, u32), ShardRef>,
}

impl MachineEntry {
    fn status(&self) -> MachineStatus {
        let state = if self.offline {
            MachineState::Offline
        } else if self.running.is_empty() {
            MachineState::Online
        } else {
            MachineState::Busy
        };
        MachineStatus {
            info: self.info.clone(),
            state,
            clock_offset_us: self.clock.offset_us,
            clock_uncertainty_us: self.clock.uncertainty_us,
            running: self.running.values().cloned().collect(),
            last_seen_us: self.last_seen_us,
        }
    }
}

struct ActiveRun {
    inbound: mpsc::UnboundedSender<Inbound>,
    /// Machine names by their index in the run.
    machines: Vec<String>,
    events: broadcast::Sender<Event>,
}

/// Settings of a coordinator.
#[derive(Clone, Debug)]
pub struct HubConfig {
    pub name: String,
    pub token: Option<String>,
    pub heartbeat_timeout: Duration,
    pub max_suite_bytes: usize,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    BadPlan(String),
    #[error("{0}")]
    Unsatisfiable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The coordinator's shared state.
pub struct Hub {
    pub store: Store,
    pub sandbox: Arc<Sandbox>,
    pub config: HubConfig,
    machines: Mutex<BTreeMap<String, MachineEntry>>,
    changed: watch::Sender<u64>,
    runs: Mutex<HashMap<String, ActiveRun>>,
    generation: std::sync::atomic::AtomicU64,
    pub shutdown: CancellationToken,
}

impl Hub {
    pub fn new(
        store: Store,
        sandbox: Arc<Sandbox>,
        config: HubConfig,
        shutdown: CancellationToken,
    ) -> Arc<Hub> {
        let (changed, _) = watch::channel(0);
        let hub = Arc::new(Hub {
            store,
            sandbox,
            config,
            machines: Mutex::default(),
            changed,
            runs: Mutex::default(),
            generation: Default::default(),
            shutdown,
        });
        tokio::spawn(Self::watchdog(Arc::downgrade(&hub), hub.shutdown.clone()));
        hub
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Resolves when machines change (join, leave, busy, idle).
    pub fn machines_changed(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn machine_statuses(&self) -> Vec<MachineStatus> {
        self.machines.lock().expect("machines lock").values().map(MachineEntry::status).collect()
    }

    /// Registers a connection of machine `info`; returns its generation, or
    /// why it is refused (a live machine of that name is connected).
    pub fn connect(
        &self,
        info: MachineInfo,
        tx: mpsc::UnboundedSender<ToMachine>,
        local: bool,
    ) -> Result<u64, String> {
        let generation = self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let mut machines = self.machines.lock().expect("machines lock");
        if let Some(old) = machines.get(&info.name)
            && old.conn.as_ref().is_some_and(|c| !c.tx.is_closed())
            && !old.offline
        {
            return Err(format!("a machine named {:?} is already connected", info.name));
        }
        let entry = machines.entry(info.name.clone()).or_insert_with(|| MachineEntry {
            info: info.clone(),
            conn: None,
            clock: Clock::default(),
            last_seen: Instant::now(),
            last_seen_us: now_us(),
            offline: false,
            local,
            running: BTreeMap::new(),
        });
        if entry.offline {
            // A machine given up as lost starts afresh: its old shards are over.
            entry.running.clear();
            entry.clock = Clock::default();
        }
        entry.info = info;
        entry.conn = Some(Conn { generation, tx });
        entry.offline = false;
        entry.local = local;
        entry.last_seen = Instant::now();
        entry.last_seen_us = now_us();
        drop(machines);
        self.bump();
        Ok(generation)
    }

    /// The connection `generation` of `name` closed.
    pub fn disconnect(&self, name: &str, generation: u64) {
        let mut machines = self.machines.lock().expect("machines lock");
        if let Some(e) = machines.get_mut(name)
            && e.conn.as_ref().is_some_and(|c| c.generation == generation)
        {
            e.conn = None;
        }
    }

    /// Closes a machine's connection now (it will reconnect); false if unknown.
    pub fn kick(&self, name: &str) -> bool {
        let mut machines = self.machines.lock().expect("machines lock");
        match machines.get_mut(name) {
            Some(e) if !e.local => {
                e.conn = None;
                true
            }
            _ => false,
        }
    }

    fn send_to(&self, name: &str, msg: ToMachine) -> bool {
        let mut machines = self.machines.lock().expect("machines lock");
        let Some(e) = machines.get_mut(name) else { return false };
        if let ToMachine::Assign { assignment } = &msg {
            e.running.insert((assignment.run.clone(), assignment.shard.shard), assignment.shard.clone());
            self.bump();
        }
        e.conn.as_ref().is_some_and(|c| c.tx.send(msg).is_ok())
    }

    /// Records a clock sample for `name`.
    pub fn clock_sample(&self, name: &str, t0: i64, t1: i64, t2: i64) {
        if let Some(e) = self.machines.lock().expect("machines lock").get_mut(name) {
            e.clock.add(t0, t1, t2);
        }
    }

    /// Routes a message of machine `name` (after the hello).
    pub fn on_message(&self, name: &str, msg: FromMachine) {
        let offset = {
            let mut machines = self.machines.lock().expect("machines lock");
            let Some(e) = machines.get_mut(name) else { return };
            e.last_seen = Instant::now();
            e.last_seen_us = now_us();
            if let FromMachine::ShardDone { run, shard } = &msg
                && e.running.remove(&(run.clone(), *shard)).is_some()
            {
                self.bump();
            }
            e.clock.offset_us
        };
        let run = match &msg {
            FromMachine::Event { run, .. }
            | FromMachine::Sync { run, .. }
            | FromMachine::ShardDone { run, .. } => run.clone(),
            FromMachine::Pong { .. } | FromMachine::Heartbeat | FromMachine::Hello { .. } => return,
        };
        let runs = self.runs.lock().expect("runs lock");
        let Some(active) = runs.get(&run) else {
            tracing::debug!(%run, machine = name, "message for a run that is not active");
            return;
        };
        if let Some(index) = active.machines.iter().position(|m| m == name) {
            let _ = active.inbound.send(Inbound::Message { machine: index, msg, clock_offset_us: offset });
        }
    }

    async fn watchdog(hub: Weak<Hub>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let Some(hub) = hub.upgrade() else { return };
            let timeout = hub.config.heartbeat_timeout;
            let mut lost = Vec::new();
            {
                let mut machines = hub.machines.lock().expect("machines lock");
                for (name, e) in machines.iter_mut() {
                    if e.local || e.offline {
                        continue;
                    }
                    let silent = e.last_seen.elapsed();
                    if silent > timeout {
                        let how = if e.conn.is_none() { "disconnected" } else { "silent" };
                        let reason =
                            format!("{how} for {} (heartbeat timeout {})", fmt_ms(silent), fmt_ms(timeout));
                        tracing::warn!(machine = %name, "{reason}; marking it offline");
                        e.offline = true;
                        e.conn = None;
                        e.running.clear();
                        lost.push((name.clone(), reason));
                    }
                }
            }
            if !lost.is_empty() {
                hub.bump();
                let runs = hub.runs.lock().expect("runs lock");
                for (name, reason) in lost {
                    for active in runs.values() {
                        if let Some(index) = active.machines.iter().position(|m| *m == name) {
                            let _ =
                                active.inbound.send(Inbound::Lost { machine: index, reason: reason.clone() });
                        }
                    }
                }
            }
        }
    }

    /// Starts a run of `plan`, whose entries name stored suites as
    /// `sha256:<hex>`. Refuses plans that cannot be placed on the machines
    /// online now, before anything runs.
    pub fn start_run(self: &Arc<Self>, plan: Plan) -> Result<String, StartError> {
        plan.validate().map_err(|e| StartError::BadPlan(e.to_string()))?;
        let mut suites = Vec::new();
        for (i, e) in plan.entries.iter().enumerate() {
            let Some(sha) = ensemble_protocol::api::suite_sha(&e.suite) else {
                return Err(StartError::BadPlan(format!(
                    "entries[{i}].suite: {:?} is not a suite reference (sha256:<hex>); upload the suite first",
                    e.suite
                )));
            };
            let meta = self.store.suite(sha)?.ok_or_else(|| {
                StartError::BadPlan(format!("entries[{i}].suite: no suite with sha256 {sha} was uploaded"))
            })?;
            suites.push(SuiteRef { name: meta.name, sha256: meta.sha256 });
        }
        let links: Vec<MachineLink> = {
            let machines = self.machines.lock().expect("machines lock");
            machines
                .values()
                .filter(|e| !e.offline && e.conn.is_some())
                .map(|e| MachineLink {
                    info: e.info.clone(),
                    port: Arc::new(HubPort { hub: Arc::downgrade(self), name: e.info.name.clone() }),
                })
                .collect()
        };
        let infos: Vec<MachineInfo> = links.iter().map(|l| l.info.clone()).collect();
        let names: Vec<String> = suites.iter().map(|s| s.name.clone()).collect();
        matching::place(&plan, &names, &infos).map_err(|e| StartError::Unsatisfiable(e.0))?;

        let run = coordinator::new_run_id();
        let (inbound_tx, mut inbound_rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(4096);
        self.runs.lock().expect("runs lock").insert(
            run.clone(),
            ActiveRun {
                inbound: inbound_tx,
                machines: infos.iter().map(|m| m.name.clone()).collect(),
                events: events.clone(),
            },
        );
        let meta = RunMeta {
            id: run.clone(),
            plan: plan.clone(),
            state: RunState::Running,
            started_us: now_us(),
            finished_us: None,
            summary: None,
        };
        self.store.put_run(&meta)?;
        let hub = self.clone();
        let id = run.clone();
        tokio::spawn(async move {
            let mut reporters: Vec<Box<dyn Reporter>> =
                vec![Box::new(StoreReporter(hub.store.clone())), Box::new(BroadcastReporter(events))];
            let result =
                coordinator::run_plan(id.clone(), &plan, &suites, &links, &mut inbound_rx, &mut reporters)
                    .await;
            let mut meta = meta;
            meta.finished_us = Some(now_us());
            match result {
                Ok(r) => {
                    meta.summary = Some(r.summary);
                    // Fail-fast stops a failed run; any other stop is a cancel.
                    let user_cancel = r.cancelled.as_deref().is_some_and(|c| !c.starts_with("fail-fast"));
                    meta.state = if user_cancel {
                        RunState::Cancelled
                    } else if r.success() {
                        RunState::Passed
                    } else {
                        RunState::Failed
                    };
                }
                Err(e) => {
                    tracing::warn!(run = %id, "run could not be placed: {e}");
                    meta.state = RunState::Failed;
                }
            }
            if let Err(e) = hub.store.put_run(&meta) {
                tracing::error!(run = %id, "could not store the finished run: {e:#}");
            }
            hub.runs.lock().expect("runs lock").remove(&id);
        });
        Ok(run)
    }

    /// Asks a running run to stop; false when it is not running.
    pub fn cancel_run(&self, id: &str, reason: String) -> bool {
        let runs = self.runs.lock().expect("runs lock");
        runs.get(id).is_some_and(|r| r.inbound.send(Inbound::Cancel { reason }).is_ok())
    }

    /// Live events of an active run (None when it is not running).
    pub fn subscribe_run(&self, id: &str) -> Option<broadcast::Receiver<Event>> {
        self.runs.lock().expect("runs lock").get(id).map(|r| r.events.subscribe())
    }
}

fn fmt_ms(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

/// Reaches a registered machine through its current connection.
struct HubPort {
    hub: Weak<Hub>,
    name: String,
}

impl MachinePort for HubPort {
    fn send(&self, msg: ToMachine) -> bool {
        self.hub.upgrade().is_some_and(|hub| hub.send_to(&self.name, msg))
    }
}

/// Persists every event of a run.
struct StoreReporter(Store);

impl Reporter for StoreReporter {
    fn event(&mut self, event: &Event) -> anyhow::Result<()> {
        self.0.put_event(event)
    }
}

/// Fans events out to live watchers.
struct BroadcastReporter(broadcast::Sender<Event>);

impl Reporter for BroadcastReporter {
    fn event(&mut self, event: &Event) -> anyhow::Result<()> {
        // No watcher is fine: they replay from the store when they come.
        let _ = self.0.send(event.clone());
        if matches!(event.kind, EventKind::RunFinished { .. }) {
            tracing::info!(run = %event.run, "run finished");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Clock;

    #[test]
    fn the_lowest_round_trip_sample_wins() {
        let mut c = Clock::default();
        // Machine 5_000 µs ahead; a slow exchange, then a fast one.
        c.add(0, 5_000 + 400, 1_000);
        c.add(10_000, 15_000 + 50, 10_100);
        assert_eq!(c.offset_us, 5_000);
        assert_eq!(c.uncertainty_us, 51);
        c.add(20_000, 25_000 + 900, 22_000);
        assert_eq!(c.offset_us, 5_000, "a worse sample does not replace a better one");
    }
}
