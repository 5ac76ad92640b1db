//! The machine registry: who is connected, their clocks, what they run.
//!
//! Every machine — remote over a WebSocket or the server's own in-process
//! one — is registered here by name and reached through a [`RegistryPort`],
//! which resolves to the machine's *current* connection at each send, so a
//! machine that reconnects mid-run keeps its shards. [`Machines::expire`]
//! marks machines whose connection is gone past the heartbeat timeout
//! offline; the coordinator's watchdog calls it and tells their runs.
//!
//! Invariants: at most one live connection per name (a second is refused
//! while the first is connected and not offline); a connection's close only
//! clears the registry if it is still the current one (its generation).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ensemble_protocol::api::{MachineState, MachineStatus, RunningShard};
use ensemble_protocol::event::ShardRef;
use ensemble_protocol::wire::{FromMachine, MachineInfo, ToMachine};
use tokio::sync::{mpsc, watch};

use super::dispatcher::{MachineLink, MachinePort};
use crate::time::now_us;

/// Offline machines listed at most; past it the longest offline are
/// forgotten first, so names made up by the thousand cannot grow the list.
const MAX_OFFLINE: usize = 1000;

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
        // A machine's reading is its own to say: saturate, never overflow.
        let rtt = t2.saturating_sub(t0).max(0);
        let offset = t1.saturating_sub(t0 / 2 + t2 / 2);
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
    /// The bytes of messages queued on it and not yet taken by the
    /// connection's writer ([`Machines::count_queue`]); none for the
    /// server's own machine.
    queued: Option<Arc<AtomicU64>>,
}

impl Conn {
    /// Queues `msg`, counted when the connection counts; false when the
    /// connection is closed. Every message to a machine goes this way.
    fn send(&self, msg: ToMachine) -> bool {
        if let Some(queued) = &self.queued {
            queued.fetch_add(queued_bytes(&msg), Ordering::SeqCst);
        }
        self.tx.send(msg).is_ok()
    }
}

/// The most bytes of messages queued for one machine's connection (see
/// [`queued_bytes`]): a machine that reads slower than its answers come —
/// a topic's message of up to 1 MiB is sent again for each call that asks
/// for it, and a call costs the machine ~100 bytes — is disconnected past
/// it, and reconnects to ask again.
pub const MAX_QUEUED: u64 = 256 << 20;

/// What a message queued for a machine holds, about: its text, and a fixed
/// part for the rest.
pub fn queued_bytes(msg: &ToMachine) -> u64 {
    use ensemble_protocol::wire::SyncReply;
    let text = match msg {
        ToMachine::SyncReply { reply: SyncReply::Message { payload }, .. } => payload.len(),
        ToMachine::SyncReply { reply: SyncReply::Error { message, .. }, .. } => message.len(),
        ToMachine::Lost { reason, .. } => reason.len(),
        ToMachine::Precompile { suites } => suites.iter().map(String::len).sum(),
        ToMachine::Assign { .. } => 4096,
        _ => 0,
    };
    256u64.saturating_add(text as u64)
}

struct Entry {
    info: MachineInfo,
    conn: Option<Conn>,
    clock: Clock,
    last_seen: Instant,
    last_seen_us: i64,
    offline: bool,
    /// When it went offline; it is forgotten after the retention period.
    offline_since: Option<Instant>,
    /// The server's own machine: never times out, cannot be kicked.
    local: bool,
    /// Known only from a run taken up after a restart, not connected since:
    /// the run's restart grace, not the heartbeat timeout, decides when it
    /// is lost ([`Machines::forget_awaited`]).
    awaited: bool,
    running: BTreeMap<(String, u32), ShardRef>,
    /// Drained: placed on no more; told [`ToMachine::Drained`] once idle
    /// (`told`, per connection).
    draining: bool,
    told: bool,
    /// The runner process behind the connection (its hello's `instance`).
    instance: Option<String>,
    /// That process was told the suites to precompile
    /// ([`Machines::first_hint`]).
    hinted: bool,
}

impl Entry {
    /// A machine just heard of, not connected yet.
    fn new(info: MachineInfo, local: bool) -> Entry {
        Entry {
            info,
            conn: None,
            clock: Clock::default(),
            last_seen: Instant::now(),
            last_seen_us: now_us(),
            offline: false,
            offline_since: None,
            local,
            awaited: false,
            running: BTreeMap::new(),
            draining: false,
            told: false,
            instance: None,
            hinted: false,
        }
    }

    fn status(&self) -> MachineStatus {
        let state = if self.draining && self.told && self.conn.is_none() && !self.local {
            MachineState::Drained
        } else if self.offline || self.awaited {
            MachineState::Offline
        } else if self.conn.is_none() && !self.local {
            MachineState::Disconnected
        } else if self.draining {
            MachineState::Draining
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
            running: self
                .running
                .iter()
                .map(|((run, _), shard)| RunningShard { run: run.clone(), shard: shard.clone() })
                .collect(),
            last_seen_us: self.last_seen_us,
            local: self.local,
            lost_at_us: None,
        }
    }

    fn touch(&mut self) {
        self.last_seen = Instant::now();
        self.last_seen_us = now_us();
    }
}

/// What is known of a machine by its name alone.
fn unknown(name: &str) -> MachineInfo {
    MachineInfo {
        name: name.to_string(),
        labels: Default::default(),
        slots: 1,
        facts: Default::default(),
        allow_exec: Vec::new(),
    }
}

/// The registry; shared as `Arc<Machines>`.
pub struct Machines {
    entries: Mutex<BTreeMap<String, Entry>>,
    changed: watch::Sender<u64>,
    generation: AtomicU64,
    /// [`MAX_QUEUED`], unless a test says otherwise.
    max_queued: u64,
}

impl Default for Machines {
    fn default() -> Self {
        Machines {
            entries: Mutex::default(),
            changed: watch::channel(0).0,
            generation: AtomicU64::new(0),
            max_queued: MAX_QUEUED,
        }
    }
}

impl Machines {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().expect("machines lock")
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Resolves when machines change (join, leave, busy, idle).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn statuses(&self) -> Vec<MachineStatus> {
        self.lock().values().map(Entry::status).collect()
    }

    /// How many machines are connected now (and so can take work).
    pub fn online(&self) -> usize {
        self.lock().values().filter(|e| !e.offline && e.conn.is_some()).count()
    }

    /// Registers a connection of machine `info` (from runner process
    /// `instance`, when it says); returns its generation, or why it is
    /// refused. A remote machine that proved its identity replaces its own
    /// stale connection; the server's own machine is never replaced, and
    /// never replaces a live one.
    pub fn connect(
        &self,
        info: MachineInfo,
        tx: mpsc::UnboundedSender<ToMachine>,
        local: bool,
        instance: Option<&str>,
    ) -> Result<u64, String> {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let mut entries = self.lock();
        if let Some(old) = entries.get(&info.name)
            && old.conn.as_ref().is_some_and(|c| !c.tx.is_closed())
            && !old.offline
            && (old.local || local)
        {
            return Err(format!("a machine named {:?} is already connected", info.name));
        }
        let entry = entries.entry(info.name.clone()).or_insert_with(|| Entry::new(info.clone(), local));
        if entry.offline {
            // A machine given up as lost starts afresh: its old shards are
            // over, and so is a drain (a new process took the name).
            entry.running.clear();
            entry.clock = Clock::default();
            entry.draining = false;
        }
        // A drain ends when the machine leaves: a new runner process under
        // the name (another instance; or, from a runner that does not say,
        // one back after it was told it is drained) takes work again. The
        // same process back after a blip is still draining, and is told
        // again once idle.
        let new_process = match (instance, entry.instance.as_deref()) {
            (Some(new), Some(old)) => new != old,
            _ => entry.told,
        };
        if entry.draining && new_process {
            tracing::info!(machine = %info.name, "a new runner process joined: its drain is over");
            entry.draining = false;
        }
        // The same process back after a blip holds the hints it had; any
        // other connection (another process, or one that does not say)
        // is told them again.
        if !matches!((instance, entry.instance.as_deref()), (Some(new), Some(old)) if new == old) {
            entry.hinted = false;
        }
        entry.instance = instance.map(str::to_string);
        entry.told = false;
        entry.info = info;
        // A remote connection's queue counts from its first message; the
        // server's own machine's is never cut.
        entry.conn = Some(Conn { generation, tx, queued: (!local).then(Arc::default) });
        entry.offline = false;
        entry.offline_since = None;
        entry.local = local;
        entry.awaited = false;
        entry.touch();
        drop(entries);
        self.bump();
        Ok(generation)
    }

    /// The bytes queued on remote connection `generation` of `name`, for
    /// its writer to take off as it writes them ([`queued_bytes`]); past
    /// [`MAX_QUEUED`] the connection is closed. None when that connection
    /// is gone.
    pub fn count_queue(&self, name: &str, generation: u64) -> Option<Arc<AtomicU64>> {
        let entries = self.lock();
        entries.get(name)?.conn.as_ref().filter(|c| c.generation == generation)?.queued.clone()
    }

    /// Whether machine `name` is to be told now which suites to
    /// precompile: once per runner process, so a link that comes and goes
    /// does not make the coordinator work them out again each time.
    pub fn first_hint(&self, name: &str) -> bool {
        match self.lock().get_mut(name) {
            Some(e) if !e.hinted => {
                e.hinted = true;
                true
            }
            _ => false,
        }
    }

    /// The connection `generation` of `name` closed.
    pub fn disconnect(&self, name: &str, generation: u64) {
        if let Some(e) = self.lock().get_mut(name)
            && e.conn.as_ref().is_some_and(|c| c.generation == generation)
        {
            e.conn = None;
            self.bump();
        }
    }

    /// Closes a remote machine's connection now (it will reconnect); false
    /// if there is no such remote machine.
    pub fn kick(&self, name: &str) -> bool {
        let kicked = match self.lock().get_mut(name) {
            Some(e) if !e.local => {
                e.conn = None;
                true
            }
            _ => false,
        };
        if kicked {
            self.bump();
        }
        kicked
    }

    /// Places no more shards on remote machine `name`; returns how many it
    /// runs now, or None when there is no such connected remote machine.
    /// (Called under the coordinator's queue lock, which placement holds:
    /// no run placed before it is missed, none after it uses the machine.)
    pub fn drain(&self, name: &str) -> Option<u32> {
        let running = match self.lock().get_mut(name) {
            Some(e) if !e.local && !e.offline && e.conn.is_some() => {
                e.draining = true;
                e.running.len() as u32
            }
            _ => return None,
        };
        self.bump();
        Some(running)
    }

    /// Takes remote machine `name` off draining: it gets shards again (if
    /// its runner already stopped, its next start does). False when it is
    /// not draining (or there is no such machine).
    pub fn undrain(&self, name: &str) -> bool {
        let undrained = match self.lock().get_mut(name) {
            Some(e) if e.draining => {
                e.draining = false;
                e.told = false;
                true
            }
            _ => false,
        };
        if undrained {
            self.bump();
        }
        undrained
    }

    /// Whether a draining machine is still to be told it is drained.
    pub fn any_draining(&self) -> bool {
        self.lock().values().any(|e| e.draining && !e.told)
    }

    /// Tells each draining machine that is idle, and that `idle` says no
    /// run counts on, that it is drained (once per connection).
    pub fn tell_drained(&self, idle: impl Fn(&str) -> bool) {
        for (name, e) in self.lock().iter_mut() {
            if e.draining
                && !e.told
                && !e.offline
                && e.running.is_empty()
                && idle(name)
                && let Some(conn) = &e.conn
            {
                e.told = conn.send(ToMachine::Drained);
                if e.told {
                    tracing::info!(machine = %name, "drained: told the machine it may stop");
                }
            }
        }
    }

    /// Sends to `name`'s current connection; records assignments as running.
    pub fn send(&self, name: &str, msg: ToMachine) -> bool {
        let mut entries = self.lock();
        let Some(e) = entries.get_mut(name) else { return false };
        let assigned = if let ToMachine::Assign { assignment } = &msg {
            e.running.insert((assignment.run.clone(), assignment.shard.shard), assignment.shard.clone());
            true
        } else {
            false
        };
        let mut closed = false;
        let sent = match &e.conn {
            Some(Conn { queued: Some(queued), .. })
                if queued.load(Ordering::SeqCst).saturating_add(queued_bytes(&msg)) > self.max_queued =>
            {
                crate::throttled!(warn, 30, machine = %name, queued = queued.load(Ordering::SeqCst),
                    "a machine reads its messages slower than they come: disconnecting it (it reconnects)");
                e.conn = None;
                closed = true;
                false
            }
            Some(c) => c.send(msg),
            None => false,
        };
        drop(entries);
        if assigned || closed {
            self.bump();
        }
        sent
    }

    /// Records a clock sample for `name`.
    pub fn clock_sample(&self, name: &str, t0: i64, t1: i64, t2: i64) {
        if let Some(e) = self.lock().get_mut(name) {
            e.clock.add(t0, t1, t2);
        }
    }

    /// Notes that `name` spoke (and what it finished); returns its clock
    /// offset, or None for an unknown machine.
    pub fn heard(&self, name: &str, msg: &FromMachine) -> Option<i64> {
        let mut entries = self.lock();
        let e = entries.get_mut(name)?;
        e.touch();
        let finished = match msg {
            FromMachine::ShardDone { run, shard } => e.running.remove(&(run.clone(), *shard)).is_some(),
            _ => false,
        };
        let offset = e.clock.offset_us;
        drop(entries);
        if finished {
            self.bump();
        }
        Some(offset)
    }

    /// What each of `names` does now (shards assigned and not done, and
    /// their runs): the slots a new run cannot count on.
    pub fn busy(&self, names: &[&str]) -> Vec<super::matching::Busy> {
        let entries = self.lock();
        names
            .iter()
            .map(|n| {
                let mut b = super::matching::Busy::default();
                if let Some(e) = entries.get(*n) {
                    b.shards = e.running.len() as u32;
                    b.runs = e.running.keys().map(|(run, _)| run.clone()).collect();
                }
                b
            })
            .collect()
    }

    /// After a restart: `shard` of `run` holds a slot of machine `name`,
    /// which is expected back (listed, not connected, until it reconnects or
    /// its heartbeat timeout passes). Runs waiting for slots count it busy
    /// meanwhile, instead of starting on slots it will not have.
    pub fn expect(&self, name: &str, run: &str, shard: &ShardRef) {
        let mut entries = self.lock();
        let entry = entries
            .entry(name.to_string())
            .or_insert_with(|| Entry { awaited: true, ..Entry::new(unknown(name), false) });
        entry.running.insert((run.to_string(), shard.shard), shard.clone());
    }

    /// `name` did not come back after the restart: forgets it if it is still
    /// only awaited ([`Machines::expect`]).
    pub fn forget_awaited(&self, name: &str) {
        let mut entries = self.lock();
        if entries.get(name).is_some_and(|e| e.awaited) {
            entries.remove(name);
            drop(entries);
            self.bump();
        }
    }

    /// Notes that `shard` of `run` holds one of `name`'s slots, or no longer.
    pub fn hold(&self, name: &str, run: &str, shard: &ShardRef, holds: bool) {
        let changed = match self.lock().get_mut(name) {
            Some(e) if holds => e.running.insert((run.to_string(), shard.shard), shard.clone()).is_none(),
            Some(e) => e.running.remove(&(run.to_string(), shard.shard)).is_some(),
            None => false,
        };
        if changed {
            self.bump();
        }
    }

    /// A run is over: whatever of it a machine did not report done (lost,
    /// never reached) no longer holds a slot there.
    pub fn forget_run(&self, run: &str) {
        let mut forgot = false;
        for e in self.lock().values_mut() {
            let before = e.running.len();
            e.running.retain(|(r, _), _| r != run);
            forgot |= e.running.len() != before;
        }
        if forgot {
            self.bump();
        }
    }

    /// Whether `name` is connected now.
    pub fn connected(&self, name: &str) -> bool {
        self.lock().get(name).is_some_and(|e| !e.offline && e.conn.is_some())
    }

    /// A link to `name` through the registry, connected or not (a run taken
    /// up after a restart reaches its machines once they are back).
    pub fn link(self: &Arc<Self>, name: &str) -> MachineLink {
        let info = self.lock().get(name).map(|e| e.info.clone()).unwrap_or_else(|| unknown(name));
        self.link_to(info)
    }

    fn link_to(self: &Arc<Self>, info: MachineInfo) -> MachineLink {
        let name = info.name.clone();
        MachineLink { info, port: Arc::new(RegistryPort { machines: Arc::downgrade(self), name }) }
    }

    /// The machines that can take work now (connected, not draining), each
    /// reached through the registry.
    pub fn links(self: &Arc<Self>) -> Vec<MachineLink> {
        let infos: Vec<MachineInfo> = self
            .lock()
            .values()
            .filter(|e| !e.offline && e.conn.is_some() && !e.draining)
            .map(|e| e.info.clone())
            .collect();
        infos.into_iter().map(|info| self.link_to(info)).collect()
    }

    /// Marks remote machines silent for longer than `timeout` offline and
    /// forgets those offline for longer than `retention`; returns the names
    /// of the machines just marked offline, with why.
    pub fn expire(&self, timeout: Duration, retention: Duration) -> Vec<(String, String)> {
        let mut lost = Vec::new();
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|_, e| e.offline_since.is_none_or(|t| t.elapsed() < retention));
        for (name, e) in entries.iter_mut() {
            if e.local || e.offline || e.awaited {
                continue;
            }
            let silent = e.last_seen.elapsed();
            if silent > timeout {
                let how = if e.conn.is_none() { "disconnected" } else { "silent" };
                let reason = format!("{how} for {} (heartbeat timeout {})", fmt_ms(silent), fmt_ms(timeout));
                crate::throttled!(warn, 600, machine = %name, "{reason}; marking it offline");
                e.offline = true;
                e.offline_since = Some(Instant::now());
                e.conn = None;
                e.running.clear();
                lost.push((name.clone(), reason));
            }
        }
        let mut offline: Vec<(Instant, String)> =
            entries.iter().filter_map(|(n, e)| Some((e.offline_since?, n.clone()))).collect();
        if offline.len() > MAX_OFFLINE {
            offline.sort();
            for (_, name) in &offline[..offline.len() - MAX_OFFLINE] {
                entries.remove(name);
            }
        }
        let forgotten = entries.len() < before;
        drop(entries);
        if !lost.is_empty() || forgotten {
            self.bump();
        }
        lost
    }
}

fn fmt_ms(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
        .to_string()
}

/// Reaches a registered machine through its current connection.
struct RegistryPort {
    machines: Weak<Machines>,
    name: String,
}

impl MachinePort for RegistryPort {
    fn send(&self, msg: ToMachine) -> bool {
        self.machines.upgrade().is_some_and(|m| m.send(&self.name, msg))
    }

    fn hold(&self, run: &str, shard: &ShardRef, holds: bool) {
        if let Some(m) = self.machines.upgrade() {
            m.hold(&self.name, run, shard, holds);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ensemble_protocol::wire::Facts;

    fn info(name: &str) -> MachineInfo {
        MachineInfo {
            name: name.into(),
            labels: Default::default(),
            slots: 1,
            facts: Facts::default(),
            allow_exec: Vec::new(),
        }
    }

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
        let mut wild = Clock::default();
        wild.add(i64::MAX, i64::MIN, i64::MIN);
        wild.add(i64::MIN, i64::MAX, i64::MAX);
        assert!(wild.uncertainty_us >= 0);
    }

    /// A connection whose writer counts its queue is closed once more is
    /// queued than a machine may leave unread; one that reads keeps going.
    #[test]
    fn a_machine_that_does_not_read_what_it_asked_for_is_disconnected() {
        use ensemble_protocol::wire::SyncReply;
        let m = Arc::new(Machines { max_queued: 10_000, ..Machines::default() });
        let (tx, mut rx) = mpsc::unbounded_channel();
        let g = m.connect(info("a"), tx, false, None).unwrap();
        let queued = m.count_queue("a", g).unwrap();
        let message = |n: u64| ToMachine::SyncReply {
            id: n,
            reply: SyncReply::Message { payload: "x".repeat(3_000).into() },
        };
        for n in 0..3 {
            assert!(m.send("a", message(n)));
        }
        assert_eq!(queued.load(Ordering::SeqCst), 3 * 3_256);
        // Its writer takes one off: there is room for one more.
        let taken = rx.try_recv().unwrap();
        queued.fetch_sub(queued_bytes(&taken), Ordering::SeqCst);
        assert!(m.send("a", message(3)));
        // The next is over the bound: not sent, and the connection is closed.
        assert!(!m.send("a", message(4)));
        assert_eq!(m.links().len(), 0, "disconnected");
        let mut left = 0;
        while let Ok(ToMachine::SyncReply { .. }) = rx.try_recv() {
            left += 1;
        }
        assert_eq!(left, 3, "what was queued stays for the writer; then the channel ends");
        assert!(rx.try_recv().is_err());
        // It reconnects; a connection that does not count (the server's
        // own machine's) is never cut.
        let (tx, _rx) = mpsc::unbounded_channel();
        m.connect(info("a"), tx, false, None).unwrap();
        let (local, _local_rx) = mpsc::unbounded_channel();
        m.connect(info("local"), local, true, None).unwrap();
        for n in 0..10 {
            assert!(m.send("local", message(n)));
        }
    }

    #[test]
    fn a_machine_replaces_its_stale_connection_and_never_the_local_one() {
        let m = Arc::new(Machines::default());
        let (tx1, _rx1) = mpsc::unbounded_channel();
        let g1 = m.connect(info("a"), tx1, false, None).unwrap();
        let (tx2, _rx2) = mpsc::unbounded_channel();
        // The same (proven) machine again replaces its stale connection.
        let g2 = m.connect(info("a"), tx2.clone(), false, None).unwrap();
        m.disconnect("a", g1); // the old connection's late close
        assert_eq!(m.links().len(), 1);
        m.disconnect("a", g2);
        assert_eq!(m.links().len(), 0);
        let (tx3, _rx3) = mpsc::unbounded_channel();
        m.connect(info("local"), tx3.clone(), true, None).unwrap();
        assert!(m.connect(info("local"), tx3, false, None).unwrap_err().contains("already connected"));
    }

    #[test]
    fn a_runner_process_is_told_what_to_precompile_once() {
        let m = Machines::default();
        let join = |instance: Option<&str>| {
            let (tx, _rx) = mpsc::unbounded_channel();
            let g = m.connect(info("a"), tx, false, instance).unwrap();
            let first = m.first_hint("a");
            m.disconnect("a", g);
            first
        };
        assert!(join(Some("p1")));
        assert!(!join(Some("p1")), "the same process, back after a blip, holds its hints");
        assert!(join(Some("p2")), "a new process is told");
        assert!(join(None), "one that does not say which process it is, every time");
        assert!(join(None));
        assert!(!m.first_hint("nobody"));
    }

    #[test]
    fn a_drained_machine_gets_no_work_and_is_told_once_idle_once_per_connection() {
        let m = Arc::new(Machines::default());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let g1 = m.connect(info("a"), tx, false, Some("p1")).unwrap();
        let (local_tx, _local_rx) = mpsc::unbounded_channel();
        m.connect(info("local"), local_tx, true, None).unwrap();
        let shard =
            ShardRef { shard: 1, machine: "a".into(), role: "r".into(), suite: "s".into(), instance: 0 };
        m.hold("a", "run", &shard, true);
        assert_eq!(m.drain("a"), Some(1));
        assert_eq!(m.drain("local"), None, "the server's own machine is not drained");
        assert_eq!(m.drain("nobody"), None);
        let names: Vec<String> = m.links().iter().map(|l| l.info.name.clone()).collect();
        assert_eq!(names, ["local"], "no new work for a draining machine");
        assert_eq!(m.statuses().iter().find(|s| s.info.name == "a").unwrap().state, MachineState::Draining);
        m.tell_drained(|_| true);
        assert!(rx.try_recv().is_err(), "not while it runs a shard");
        m.hold("a", "run", &shard, false);
        m.tell_drained(|_| false);
        assert!(rx.try_recv().is_err(), "not while a run counts on it");
        m.tell_drained(|_| true);
        m.tell_drained(|_| true);
        assert_eq!(rx.try_recv().ok(), Some(ToMachine::Drained));
        assert!(rx.try_recv().is_err(), "told once");
        // Back on a new connection of the same process (a blip), it is
        // still draining and told again.
        m.disconnect("a", g1);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let g2 = m.connect(info("a"), tx, false, Some("p1")).unwrap();
        m.tell_drained(|_| true);
        assert_eq!(rx.try_recv().ok(), Some(ToMachine::Drained));
        // Its runner stopped as told: drained, not disconnected.
        m.disconnect("a", g2);
        let state = |m: &Machines| m.statuses().iter().find(|s| s.info.name == "a").unwrap().state;
        assert_eq!(state(&m), MachineState::Drained);
        // A new process under the name takes work again.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let g3 = m.connect(info("a"), tx, false, Some("p2")).unwrap();
        assert_eq!(state(&m), MachineState::Online);
        assert_eq!(m.links().len(), 2, "the drain is over");
        m.tell_drained(|_| true);
        assert!(rx.try_recv().is_err());
        // A runner that does not say which process it is: back after it
        // was told it is drained, it is a new one.
        assert_eq!(m.drain("a"), Some(0));
        m.tell_drained(|_| true);
        assert_eq!(rx.try_recv().ok(), Some(ToMachine::Drained));
        m.disconnect("a", g3);
        let (tx, _rx) = mpsc::unbounded_channel();
        m.connect(info("a"), tx, false, None).unwrap();
        assert_eq!(state(&m), MachineState::Online);
        // Undrain: shards again, and only for a draining machine.
        assert_eq!(m.drain("a"), Some(0));
        assert_eq!(m.links().len(), 1);
        assert!(m.undrain("a"));
        assert_eq!(m.links().len(), 2);
        assert!(!m.undrain("a"), "not draining");
        assert!(!m.undrain("nobody"));
    }

    #[test]
    fn silent_remote_machines_expire_and_local_ones_never() {
        let m = Machines::default();
        let (tx, _rx) = mpsc::unbounded_channel();
        m.connect(info("remote"), tx.clone(), false, None).unwrap();
        m.connect(info("local"), tx, true, None).unwrap();
        let lost = m.expire(Duration::ZERO, Duration::from_secs(3600));
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].0, "remote");
        assert!(lost[0].1.starts_with("silent for"), "{}", lost[0].1);
        assert_eq!(m.online(), 1);
        assert!(m.expire(Duration::ZERO, Duration::from_secs(3600)).is_empty(), "already offline");
    }

    #[test]
    fn offline_machines_are_forgotten_after_the_retention_period() {
        let m = Machines::default();
        let (tx, _rx) = mpsc::unbounded_channel();
        m.connect(info("gone"), tx, false, None).unwrap();
        assert_eq!(m.expire(Duration::ZERO, Duration::from_secs(3600)).len(), 1);
        assert_eq!(m.lock().len(), 1, "listed while within the retention period");
        m.expire(Duration::ZERO, Duration::ZERO);
        assert!(m.lock().is_empty(), "forgotten after it");

        let (tx, _rx) = mpsc::unbounded_channel();
        for i in 0..MAX_OFFLINE + 5 {
            m.connect(info(&format!("m{i}")), tx.clone(), false, None).unwrap();
            m.expire(Duration::ZERO, Duration::from_secs(3600));
        }
        let listed = m.lock();
        assert_eq!(listed.len(), MAX_OFFLINE, "the longest offline go first");
        assert!(!listed.contains_key("m0") && listed.contains_key(&format!("m{}", MAX_OFFLINE + 4)));
    }
}
