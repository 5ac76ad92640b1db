//! A run as the run view shows it, rebuilt from its event stream: lanes per
//! machine, one row per test, sync events and counts. The same fold serves a
//! live run, a run opened mid-way (the server replays from the start) and a
//! finished one. Rows are `Rc`s so each batch of events copies pointers, not
//! tests: a 10,000-test run stays cheap to update.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use ensemble_protocol::api::RunState;
use ensemble_protocol::event::{ShardInfo, SyncOp};
use ensemble_protocol::matrix::Matrix;
use ensemble_protocol::service::ServiceState;
use ensemble_protocol::{CancelReason, Event, EventKind, Outcome, ShardRef, Summary, Verdict};
use yew::Reducible;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Listed by its suite, not started.
    Pending,
    Running,
    Done(Outcome),
}

impl Status {
    /// The CSS class and filter name.
    pub fn class(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Done(o) => o.as_str(),
        }
    }

    /// Higher is more worth seeing (a bucket of bars shows its worst).
    fn severity(self) -> u8 {
        match self {
            Status::Pending => 0,
            Status::Done(Outcome::Skipped | Outcome::Cancelled) => 1,
            Status::Done(Outcome::Passed) => 2,
            Status::Running => 3,
            Status::Done(Outcome::Flaky) => 4,
            Status::Done(_) => 5,
        }
    }
}

/// What a running test waits on.
#[derive(Clone, Debug, PartialEq)]
pub enum Wait {
    Barrier { state: String, target: u64, arrived: u64 },
    Topic { topic: String, message_seq: u64 },
}

/// A shard's running test waiting, since when (coordinator time).
#[derive(Clone, Debug, PartialEq)]
pub struct Blocked {
    pub on: Wait,
    pub since_us: i64,
}

impl Blocked {
    /// `barrier client-done (1 of 2 arrived)`, `message 3 on kv/verdict`.
    pub fn what(&self) -> String {
        match &self.on {
            Wait::Barrier { state, target, arrived } => {
                format!("barrier {state} ({arrived} of {target} arrived)")
            }
            Wait::Topic { topic, message_seq } => format!("message {message_seq} on {topic}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TestRow {
    pub shard: ShardRef,
    pub test: String,
    pub status: Status,
    pub attempt: u32,
    pub started_us: Option<i64>,
    pub finished_us: Option<i64>,
    pub duration_ms: Option<u64>,
    pub message: Option<String>,
    pub output: String,
    pub logs: Vec<String>,
    /// Files the test attached, in order, with the attempt that made each.
    pub attachments: Vec<Attachment>,
}

/// A file a test attached: its bytes download from the run by sha256.
#[derive(Clone, Debug, PartialEq)]
pub struct Attachment {
    pub name: String,
    pub sha256: String,
    pub size: u64,
    pub attempt: u32,
}

/// A sync event on the timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncRow {
    pub seq: u64,
    pub shard: u32,
    pub at_us: i64,
    pub machine: String,
    pub role: String,
    pub text: String,
    /// Barrier failures are worth a colour.
    pub failed: bool,
    /// A fault into a service (asked, done or failed): a mark of its own.
    pub fault: bool,
}

/// One machine's lane.
#[derive(Clone, Debug, PartialEq)]
pub struct Lane {
    pub machine: String,
    pub shards: Vec<ShardRef>,
    pub rows: Vec<usize>,
    /// Shards that could not run, with why.
    pub errors: Vec<String>,
    /// Indices into `RunView::sync`.
    pub marks: Vec<usize>,
}

/// How the run ended, as its `run-finished` event says.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    pub summary: Summary,
    pub duration_ms: u64,
    /// Shards that could not run their tests (their lanes say why).
    pub shard_errors: u32,
    /// Why the run stopped early, if it did.
    pub cancelled: Option<CancelReason>,
    /// The run's final state, decided by the coordinator: the view shows it
    /// rather than deciding again from the counts.
    pub verdict: Verdict,
    pub at_us: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stream {
    Connecting,
    Live,
    Ended,
    Failed(String),
}

/// What a filter keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Show {
    All,
    Failures,
    Passed,
    Skipped,
    Cancelled,
    Running,
    Pending,
}

impl Show {
    pub const ALL: [Show; 7] = [
        Show::All,
        Show::Failures,
        Show::Passed,
        Show::Skipped,
        Show::Cancelled,
        Show::Running,
        Show::Pending,
    ];

    /// The filter a summary count stands for: clicking it shows those tests.
    pub fn of_count(class: &str) -> Option<Show> {
        match class {
            "failed" | "timed-out" | "crashed" | "lost" => Some(Show::Failures),
            "passed" | "flaky" => Some(Show::Passed),
            "skipped" => Some(Show::Skipped),
            "cancelled" => Some(Show::Cancelled),
            "running" => Some(Show::Running),
            "pending" => Some(Show::Pending),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Show::All => "all",
            Show::Failures => "failures",
            Show::Passed => "passed",
            Show::Skipped => "skipped",
            Show::Cancelled => "cancelled",
            Show::Running => "running",
            Show::Pending => "pending",
        }
    }

    pub fn from_name(n: &str) -> Show {
        Show::ALL.into_iter().find(|s| s.name() == n).unwrap_or(Show::All)
    }

    /// Whether a finished test with outcome `o` is one of these.
    pub fn keeps_outcome(self, o: Outcome) -> bool {
        self.keeps(Status::Done(o))
    }

    fn keeps(self, s: Status) -> bool {
        match self {
            Show::All => true,
            Show::Failures => matches!(s, Status::Done(o) if o.is_failure()),
            Show::Passed => matches!(s, Status::Done(Outcome::Passed | Outcome::Flaky)),
            Show::Skipped => s == Status::Done(Outcome::Skipped),
            Show::Cancelled => s == Status::Done(Outcome::Cancelled),
            Show::Running => s == Status::Running,
            Show::Pending => s == Status::Pending,
        }
    }
}

/// A bar on a lane, positioned as fractions of the run's span.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    pub from: f64,
    pub to: f64,
    pub class: &'static str,
    pub title: String,
    /// The test, when the bar is one test (not a bucket of many).
    pub row: Option<usize>,
    /// A bucket's tests (empty for a bar of one test).
    pub rows: Vec<usize>,
}

/// Lanes with more tests than this are drawn as buckets.
pub const MAX_BARS: usize = 300;
/// Buckets per lane when bucketing.
pub const BUCKETS: usize = 150;

#[derive(Clone, Debug, PartialEq)]
pub struct RunView {
    pub run: String,
    pub plan: Option<String>,
    pub last_seq: u64,
    pub started_us: Option<i64>,
    pub last_at_us: i64,
    pub finished: Option<Finished>,
    pub lanes: Vec<Lane>,
    pub rows: Vec<Rc<TestRow>>,
    index: HashMap<(u32, String), usize>,
    pub sync: Vec<SyncRow>,
    pub counts: BTreeMap<Outcome, u32>,
    pub running: u32,
    /// Tests the shards' selections left out (not reported one by one).
    pub filtered_out: u32,
    /// What the run waits for before it starts (its latest `run-queued`).
    pub waiting: Option<String>,
    /// When each shard listed its tests (it was placed, fetched and
    /// compiled its suite) and when it finished, by shard: the shards of
    /// `run-started` not here are queued on their machines.
    pub shard_times: HashMap<u32, (i64, Option<i64>)>,
    /// The shards as `run-started` announced them (profile, os/arch).
    pub shard_infos: Vec<ShardInfo>,
    /// What each shard's running test waits on now, by shard.
    pub blocked: HashMap<u32, Blocked>,
    pub stream: Stream,
    /// Counts reductions: components compare this instead of the whole view.
    pub version: u64,
    /// The coordinator's clock, advanced between events while the run goes.
    pub now_us: i64,
    /// Browser clock minus coordinator clock, as low as seen on arrival.
    skew_us: Option<i64>,
    /// The skew came from the server's clock, not from when events arrived
    /// (a replay after a reload arrives long after its events happened).
    clock_known: bool,
}

pub enum RunAction {
    /// Events as they arrived, with the browser's clock at arrival.
    Events {
        events: Vec<Event>,
        received_us: i64,
    },
    /// The browser's clock now: moves a live run's timeline between events.
    Tick(i64),
    Stream(Stream),
    /// The browser's clock minus the server's (µs), measured against the
    /// server's own (`GET /api/health`), which beats a guess from arrivals;
    /// and the browser's clock now.
    Clock {
        skew_us: i64,
        now_us: i64,
    },
}

const MAX_LOGS_PER_TEST: usize = 500;

impl RunView {
    pub fn new(run: &str) -> Self {
        Self {
            run: run.to_string(),
            plan: None,
            last_seq: 0,
            started_us: None,
            last_at_us: 0,
            finished: None,
            lanes: Vec::new(),
            rows: Vec::new(),
            index: HashMap::new(),
            sync: Vec::new(),
            counts: BTreeMap::new(),
            running: 0,
            filtered_out: 0,
            waiting: None,
            shard_times: HashMap::new(),
            shard_infos: Vec::new(),
            blocked: HashMap::new(),
            stream: Stream::Connecting,
            version: 0,
            now_us: 0,
            skew_us: None,
            clock_known: false,
        }
    }

    pub fn count(&self, o: Outcome) -> u32 {
        self.counts.get(&o).copied().unwrap_or(0)
    }

    pub fn failures(&self) -> u32 {
        self.counts.iter().filter(|(o, _)| o.is_failure()).map(|(_, n)| n).sum()
    }

    /// The run's state: the stored run's (`listed`) once it is final — the
    /// server's record is the truth, and it is committed with `run-finished`;
    /// until the page has it, the streamed verdict; before either, queued
    /// or running as the events say, else the listed state (a run the
    /// coordinator lost ends without a `run-finished`), else running.
    pub fn state(&self, listed: Option<RunState>) -> RunState {
        match (listed, &self.finished) {
            (Some(s), _) if !matches!(s, RunState::Running | RunState::Queued) => s,
            (_, Some(f)) => f.verdict.into(),
            _ if self.waiting.is_some() => RunState::Queued,
            _ if self.started_us.is_some() => RunState::Running,
            (listed, None) => listed.unwrap_or(RunState::Running),
        }
    }

    /// Where shard `shard` is: queued (assigned, waiting for a slot or its
    /// suite), running, or finished.
    pub fn shard_state(&self, shard: u32) -> &'static str {
        match self.shard_times.get(&shard) {
            Some((_, Some(_))) => "finished",
            Some((_, None)) => "running",
            None => "queued",
        }
    }

    /// Whether the browser's clock is lined up with the server's.
    pub fn clock_known(&self) -> bool {
        self.clock_known
    }

    /// Keeps what each shard waits on up to date with a sync operation.
    fn track_waits(&mut self, shard: u32, op: &SyncOp, at_us: i64) {
        match op {
            SyncOp::BarrierWaiting { state, target, arrived } => {
                let on = Wait::Barrier { state: state.clone(), target: *target, arrived: *arrived };
                self.blocked.insert(shard, Blocked { on, since_us: at_us });
            }
            SyncOp::TopicWaiting { topic, message_seq } => {
                let on = Wait::Topic { topic: topic.clone(), message_seq: *message_seq };
                self.blocked.insert(shard, Blocked { on, since_us: at_us });
            }
            SyncOp::Signal { state, value } => {
                for b in self.blocked.values_mut() {
                    if let Wait::Barrier { state: s, arrived, .. } = &mut b.on
                        && s == state
                    {
                        *arrived = (*arrived).max(*value);
                    }
                }
            }
            SyncOp::BarrierReleased { .. } | SyncOp::BarrierFailed { .. } => {
                self.blocked.remove(&shard);
            }
            SyncOp::Publish { topic, message_seq, .. } => self.blocked.retain(|_, b| {
                !matches!(&b.on, Wait::Topic { topic: t, message_seq: wanted } if t == topic && wanted <= message_seq)
            }),
        }
    }

    pub fn pending(&self) -> usize {
        self.rows.iter().filter(|r| r.status == Status::Pending).count()
    }

    /// The timeline's span: run start to its end, or to now (the latest
    /// event, or the clock between events).
    pub fn span(&self) -> (i64, i64) {
        let t0 = self.started_us.unwrap_or(self.last_at_us);
        let end = match &self.finished {
            Some(f) => f.at_us,
            None => self.last_at_us.max(self.now_us),
        };
        (t0, end.max(t0 + 1_000))
    }

    /// Whether some role runs on more than one profile (a cross-platform
    /// plan): then the run has a matrix of outcomes across profiles.
    pub fn compares_profiles(&self) -> bool {
        ensemble_protocol::matrix::compares_profiles(&self.shard_infos)
    }

    /// The finished tests' outcomes across profiles.
    pub fn matrix(&self) -> Matrix {
        let done = self.rows.iter().filter_map(|r| match r.status {
            Status::Done(o) => Some((r.shard.shard, r.test.as_str(), o)),
            _ => None,
        });
        Matrix::build(&self.shard_infos, done, |s| {
            self.finished.is_some() || self.shard_times.get(&s).is_some_and(|(_, done)| done.is_some())
        })
    }

    /// The row of test `test` of role `role` on a shard of profile
    /// `profile`: of several instances, the one the matrix's cell shows
    /// (the worst).
    pub fn row_on_profile(&self, role: &str, test: &str, profile: &str) -> Option<usize> {
        self.shard_infos
            .iter()
            .filter(|s| s.shard.role == role && s.profile == profile)
            .filter_map(|s| self.index.get(&(s.shard.shard, test.to_string())).copied())
            .max_by_key(|&i| self.rows[i].status.severity())
    }

    /// Rows of one shard of a lane, in order.
    pub fn shard_rows(&self, lane: &Lane, shard: u32) -> Vec<usize> {
        lane.rows.iter().copied().filter(|&i| self.rows[i].shard.shard == shard).collect()
    }

    fn lane_mut(&mut self, machine: &str) -> &mut Lane {
        let i = match self.lanes.iter().position(|l| l.machine == machine) {
            Some(i) => i,
            None => {
                self.lanes.push(Lane {
                    machine: machine.to_string(),
                    shards: Vec::new(),
                    rows: Vec::new(),
                    errors: Vec::new(),
                    marks: Vec::new(),
                });
                self.lanes.len() - 1
            }
        };
        &mut self.lanes[i]
    }

    fn add_shard(&mut self, shard: &ShardRef) {
        let lane = self.lane_mut(&shard.machine);
        if !lane.shards.iter().any(|s| s.shard == shard.shard) {
            lane.shards.push(shard.clone());
        }
    }

    /// The row of a test, made (pending) if new.
    fn row(&mut self, shard: &ShardRef, test: &str) -> usize {
        let key = (shard.shard, test.to_string());
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        self.add_shard(shard);
        let i = self.rows.len();
        self.rows.push(Rc::new(TestRow {
            shard: shard.clone(),
            test: test.to_string(),
            status: Status::Pending,
            attempt: 0,
            started_us: None,
            finished_us: None,
            duration_ms: None,
            message: None,
            output: String::new(),
            logs: Vec::new(),
            attachments: Vec::new(),
        }));
        self.index.insert(key, i);
        self.lane_mut(&shard.machine).rows.push(i);
        i
    }

    fn set_status(&mut self, i: usize, status: Status) {
        let old = self.rows[i].status;
        match old {
            Status::Running => self.running -= 1,
            Status::Done(o) => *self.counts.entry(o).or_default() -= 1,
            Status::Pending => {}
        }
        match status {
            Status::Running => self.running += 1,
            Status::Done(o) => *self.counts.entry(o).or_default() += 1,
            Status::Pending => {}
        }
        Rc::make_mut(&mut self.rows[i]).status = status;
    }

    pub fn apply(&mut self, ev: Event) {
        if ev.seq <= self.last_seq {
            return; // seen already (a reconnect replays from where it asked)
        }
        self.last_seq = ev.seq;
        self.last_at_us = self.last_at_us.max(ev.at_us);
        match ev.kind {
            EventKind::RunQueued { waiting_for } => self.waiting = Some(waiting_for),
            EventKind::RunStarted { plan, shards } => {
                self.waiting = None;
                self.plan = Some(plan);
                self.started_us = Some(ev.at_us);
                for s in &shards {
                    self.add_shard(&s.shard);
                }
                self.shard_infos = shards;
            }
            EventKind::ShardStarted { shard, tests, filtered_out } => {
                if let std::collections::hash_map::Entry::Vacant(slot) = self.shard_times.entry(shard.shard) {
                    slot.insert((ev.at_us, None));
                    self.filtered_out += filtered_out;
                }
                self.add_shard(&shard);
                for t in &tests {
                    self.row(&shard, t);
                }
            }
            EventKind::TestStarted { shard, test, attempt } => {
                let i = self.row(&shard, &test);
                self.set_status(i, Status::Running);
                let row = Rc::make_mut(&mut self.rows[i]);
                row.attempt = attempt;
                if row.started_us.is_none() {
                    row.started_us = Some(ev.at_us);
                }
            }
            EventKind::TestFinished { shard, test, outcome, duration_ms, attempt, message, output } => {
                // A test that ran out of time or lost its party while it
                // waited says on what.
                let blocked = self.blocked.remove(&shard.shard);
                let message = match (blocked, outcome) {
                    (Some(b), Outcome::TimedOut | Outcome::Lost | Outcome::Failed) => {
                        let m = message.unwrap_or_default();
                        Some(format!(
                            "{m}{}(while waiting for {})",
                            if m.is_empty() { "" } else { " " },
                            b.what()
                        ))
                    }
                    (_, _) => message,
                };
                let i = self.row(&shard, &test);
                self.set_status(i, Status::Done(outcome));
                let row = Rc::make_mut(&mut self.rows[i]);
                row.attempt = attempt;
                row.duration_ms = Some(duration_ms);
                row.finished_us = Some(ev.at_us);
                row.started_us.get_or_insert(ev.at_us - (duration_ms as i64) * 1000);
                row.message = message;
                row.output = output;
            }
            EventKind::Log { shard, test, level, message } => {
                let i = self.row(&shard, &test);
                let row = Rc::make_mut(&mut self.rows[i]);
                if row.logs.len() < MAX_LOGS_PER_TEST {
                    row.logs.push(format!("[{level}] {message}"));
                }
            }
            EventKind::Attachment { shard, test, name, sha256, size, .. } => {
                let i = self.row(&shard, &test);
                let row = Rc::make_mut(&mut self.rows[i]);
                let attempt = row.attempt.max(1);
                row.attachments.push(Attachment { name, sha256, size, attempt });
            }
            EventKind::Sync { shard, op, .. } => {
                self.add_shard(&shard);
                self.track_waits(shard.shard, &op, ev.at_us);
                let (text, failed) = match op {
                    SyncOp::BarrierWaiting { state, target, arrived } => {
                        (format!("waits at barrier {state} ({arrived} of {target} arrived)"), false)
                    }
                    SyncOp::TopicWaiting { topic, message_seq } => {
                        (format!("waits for message {message_seq} on {topic}"), false)
                    }
                    SyncOp::Signal { state, value } => (format!("signal {state} = {value}"), false),
                    SyncOp::BarrierReleased { state, target, .. } => {
                        (format!("barrier {state} released ({target} parties)"), false)
                    }
                    SyncOp::BarrierFailed { state, target, reason, .. } => {
                        (format!("barrier {state} ({target} parties) failed: {reason}"), true)
                    }
                    SyncOp::Publish { topic, message_seq, .. } => {
                        (format!("publish on {topic} (message {message_seq})"), false)
                    }
                };
                self.mark(SyncRow {
                    seq: ev.seq,
                    shard: shard.shard,
                    at_us: ev.at_us,
                    machine: shard.machine.clone(),
                    role: shard.role.clone(),
                    text,
                    failed,
                    fault: false,
                });
            }
            EventKind::Service { shard, service, state } => {
                self.service(ev.seq, ev.at_us, shard, &service, state)
            }
            EventKind::Fault { shard, service, service_instance, action, test, step, .. } => {
                use ensemble_protocol::fault::FaultStep;
                let what = action.describe();
                let (text, failed) = match &step {
                    FaultStep::Asked { .. } => {
                        (format!("fault: {} ({test}) asks to {what} service {service}", shard.role), false)
                    }
                    FaultStep::Done { took_ms } => {
                        (format!("fault: {what} of service {service} done in {took_ms} ms"), false)
                    }
                    FaultStep::Failed { message } => {
                        (format!("fault: {what} of service {service} failed: {message}"), true)
                    }
                };
                // On the track that asked (or did it), and, for an ask, on
                // each service track it goes to: the fault where it happened.
                let mut tracks = vec![(shard.machine.clone(), shard.shard, shard.role.clone())];
                if matches!(step, FaultStep::Asked { .. }) {
                    let lane_of = format!("{}{service}", ensemble_protocol::service::GRANT_PREFIX);
                    for lane in &self.lanes {
                        for s in &lane.shards {
                            if s.role == lane_of && service_instance.is_none_or(|n| n == s.instance) {
                                tracks.push((lane.machine.clone(), s.shard, s.role.clone()));
                            }
                        }
                    }
                }
                for (machine, on, role) in tracks {
                    self.mark(SyncRow {
                        seq: ev.seq,
                        shard: on,
                        at_us: ev.at_us,
                        machine,
                        role,
                        text: text.clone(),
                        failed,
                        fault: true,
                    });
                }
                // The service's own row keeps the fault in its log.
                if !matches!(step, FaultStep::Asked { .. }) {
                    let i = self.row(&shard, &format!("service:{service}"));
                    let row = Rc::make_mut(&mut self.rows[i]);
                    if row.logs.len() < MAX_LOGS_PER_TEST {
                        row.logs.push(format!("[fault] {text}"));
                    }
                }
            }
            EventKind::ShardFinished { shard, error, .. } => {
                self.shard_times.entry(shard.shard).or_insert((ev.at_us, None)).1 = Some(ev.at_us);
                if let Some(e) = error {
                    self.lane_mut(&shard.machine)
                        .errors
                        .push(format!("{} ({}): {e}", shard.role, shard.suite));
                }
            }
            EventKind::RunFinished { summary, duration_ms, shard_errors, cancelled, verdict } => {
                self.waiting = None;
                self.finished = Some(Finished {
                    summary,
                    duration_ms,
                    shard_errors,
                    cancelled,
                    verdict,
                    at_us: ev.at_us,
                });
            }
        }
    }

    /// A service instance's news: its row (lane `service:NAME` on its
    /// machine, holding its output) shows its state, and the machine's
    /// timeline marks it. Service rows are not tests: they stay out of the
    /// counts.
    fn service(&mut self, seq: u64, at_us: i64, shard: ShardRef, service: &str, state: ServiceState) {
        let i = self.row(&shard, &format!("service:{service}"));
        let (text, failed, status) = match state {
            ServiceState::Started { pid, .. } => {
                (format!("service {service} started (pid {pid})"), false, None)
            }
            ServiceState::Ready { address, after_ms } => {
                let at = address
                    .port
                    .map(|p| ensemble_protocol::service::join_host_port(&address.host, p))
                    .unwrap_or(address.host);
                (format!("service {service} ready at {at} after {after_ms} ms"), false, Some(Status::Running))
            }
            ServiceState::Stopping => (format!("service {service} stopping"), false, None),
            ServiceState::Exited { status, expected: true, .. } => {
                (format!("service {service} stopped ({status})"), false, Some(Status::Done(Outcome::Passed)))
            }
            ServiceState::Exited { status, expected: false, .. } => (
                format!("service {service} exited ({status}) while the run went on"),
                true,
                Some(Status::Done(Outcome::Failed)),
            ),
            ServiceState::Failed { message } => (message, true, Some(Status::Done(Outcome::Failed))),
            ServiceState::Paused => (format!("service {service} paused"), false, None),
            ServiceState::Resumed => (format!("service {service} resumed"), false, None),
            ServiceState::Signalled { signal } => (format!("service {service} sent {signal}"), false, None),
        };
        let row = Rc::make_mut(&mut self.rows[i]);
        row.started_us.get_or_insert(at_us);
        if status == Some(Status::Running) {
            // Back after a fault stopped it: running again.
            row.finished_us = None;
        }
        if let Some(status) = status {
            row.status = status;
            if matches!(status, Status::Done(_)) {
                row.finished_us = Some(at_us);
            }
        }
        if failed {
            row.message = Some(text.clone());
        }
        if row.logs.len() < MAX_LOGS_PER_TEST {
            row.logs.push(format!("[service] {text}"));
        }
        self.mark(SyncRow {
            seq,
            shard: shard.shard,
            at_us,
            machine: shard.machine.clone(),
            role: shard.role.clone(),
            text,
            failed,
            fault: false,
        });
    }

    /// A mark on the timeline: kept, and shown on its machine's lane.
    fn mark(&mut self, row: SyncRow) {
        let machine = row.machine.clone();
        self.sync.push(row);
        let k = self.sync.len() - 1;
        self.lane_mut(&machine).marks.push(k);
    }

    /// Rows the filter keeps, in arrival order.
    /// The rows `text` and `show` keep, in run order, or with the failures
    /// first (then the running tests, then the rest, each in run order).
    pub fn filtered(&self, text: &str, show: Show, failures_first: bool) -> Vec<usize> {
        let needle = text.trim().to_lowercase();
        let mut rows: Vec<usize> = (0..self.rows.len())
            .filter(|&i| {
                let r = &self.rows[i];
                show.keeps(r.status)
                    && (needle.is_empty()
                        || [&r.test, &r.shard.role, &r.shard.machine, &r.shard.suite]
                            .iter()
                            .any(|f| f.to_lowercase().contains(&needle)))
            })
            .collect();
        if failures_first {
            rows.sort_by_key(|&i| match self.rows[i].status {
                Status::Done(o) if o.is_failure() => 0,
                Status::Running => 1,
                _ => 2,
            });
        }
        rows
    }

    /// The bars of a track (some rows): one per test while few, else
    /// buckets of time that show their worst status — a track never draws
    /// more than `MAX_BARS`. Worse bars come last, to be drawn on top.
    pub fn bars(&self, rows: &[usize]) -> Vec<Bar> {
        let (t0, t1) = self.span();
        let width = (t1 - t0) as f64;
        let frac = |t: i64| ((t - t0) as f64 / width).clamp(0.0, 1.0);
        let mut placed: Vec<(usize, f64, f64)> = rows
            .iter()
            .filter_map(|&i| {
                let r = &self.rows[i];
                let start = r.started_us?;
                let end = r.finished_us.unwrap_or(t1);
                Some((i, frac(start), frac(end)))
            })
            .collect();
        if placed.len() <= MAX_BARS {
            placed.sort_by_key(|&(i, ..)| self.rows[i].status.severity());
            return placed
                .into_iter()
                .map(|(i, from, to)| {
                    let r = &self.rows[i];
                    Bar {
                        from,
                        to,
                        class: r.status.class(),
                        title: format!("{} · {} · {}", r.test, r.shard.role, r.status.class()),
                        row: Some(i),
                        rows: Vec::new(),
                    }
                })
                .collect();
        }
        let mut buckets: Vec<(Option<Status>, Vec<usize>)> = vec![(None, Vec::new()); BUCKETS];
        for &(i, from, to) in &placed {
            let a = ((from * BUCKETS as f64) as usize).min(BUCKETS - 1);
            let b = ((to * BUCKETS as f64) as usize).min(BUCKETS - 1);
            let st = self.rows[i].status;
            for slot in &mut buckets[a..=b] {
                slot.1.push(i);
                if slot.0.is_none_or(|s| st.severity() > s.severity()) {
                    slot.0 = Some(st);
                }
            }
        }
        let mut bars: Vec<(u8, Bar)> = buckets
            .into_iter()
            .enumerate()
            .filter_map(|(k, (st, rows))| {
                let st = st?;
                let bar = Bar {
                    from: k as f64 / BUCKETS as f64,
                    to: (k + 1) as f64 / BUCKETS as f64,
                    class: st.class(),
                    title: format!("{} tests, the worst {}", rows.len(), st.class()),
                    row: None,
                    rows,
                };
                Some((st.severity(), bar))
            })
            .collect();
        bars.sort_by_key(|(severity, _)| *severity);
        bars.into_iter().map(|(_, bar)| bar).collect()
    }
}

impl Reducible for RunView {
    type Action = RunAction;

    fn reduce(self: Rc<Self>, action: RunAction) -> Rc<Self> {
        let mut s = Rc::unwrap_or_clone(self);
        s.version += 1;
        match action {
            RunAction::Events { events, received_us } => {
                if let Some(newest) = events.iter().map(|e| e.at_us).max().filter(|_| !s.clock_known) {
                    let skew = received_us - newest;
                    s.skew_us = Some(s.skew_us.map_or(skew, |k| k.min(skew)));
                }
                for ev in events {
                    s.apply(ev);
                }
                if s.stream == Stream::Connecting {
                    s.stream = Stream::Live;
                }
                if let (true, None, Some(skew)) = (s.clock_known, &s.finished, s.skew_us) {
                    s.now_us = s.now_us.max(received_us - skew);
                }
            }
            RunAction::Tick(now) => {
                if let (None, Some(skew)) = (&s.finished, s.skew_us) {
                    s.now_us = now - skew;
                }
            }
            RunAction::Stream(st) => s.stream = st,
            RunAction::Clock { skew_us, now_us } => {
                s.skew_us = Some(skew_us);
                s.clock_known = true;
                if s.finished.is_none() {
                    s.now_us = now_us - skew_us;
                }
            }
        }
        Rc::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ensemble_protocol::event::ShardInfo;

    fn shard(n: u32, machine: &str, role: &str) -> ShardRef {
        ShardRef { shard: n, machine: machine.into(), role: role.into(), suite: role.into(), instance: 0 }
    }

    fn ev(seq: u64, at_ms: i64, kind: EventKind) -> Event {
        Event { run: "r".into(), seq, at_us: at_ms * 1000, machine_at_us: None, kind }
    }

    fn finished(s: &ShardRef, test: &str, outcome: Outcome, message: Option<&str>) -> EventKind {
        EventKind::TestFinished {
            shard: s.clone(),
            test: test.into(),
            outcome,
            duration_ms: 10,
            attempt: 1,
            message: message.map(Into::into),
            output: "out\n".into(),
        }
    }

    fn two_machine_run() -> Vec<Event> {
        let server = shard(0, "box-a", "kv-server");
        let client = shard(1, "box-b", "kv-client");
        vec![
            ev(
                1,
                0,
                EventKind::RunStarted {
                    plan: "kv".into(),
                    shards: [&server, &client]
                        .iter()
                        .map(|s| ShardInfo {
                            shard: (*s).clone(),
                            profile: "p".into(),
                            suite_sha256: "x".into(),
                            entry: 0,
                            instance_count: 1,
                            split: false,
                            os: "linux".into(),
                            arch: "x86_64".into(),
                            service: None,
                        })
                        .collect(),
                },
            ),
            ev(
                2,
                1,
                EventKind::ShardStarted {
                    shard: server.clone(),
                    tests: vec!["serves".into()],
                    filtered_out: 0,
                },
            ),
            ev(
                3,
                1,
                EventKind::ShardStarted {
                    shard: client.clone(),
                    tests: vec!["reads".into(), "writes".into()],
                    filtered_out: 0,
                },
            ),
            ev(4, 2, EventKind::TestStarted { shard: server.clone(), test: "serves".into(), attempt: 1 }),
            ev(5, 2, EventKind::TestStarted { shard: client.clone(), test: "reads".into(), attempt: 1 }),
            ev(
                6,
                3,
                EventKind::Sync {
                    shard: server.clone(),
                    op: SyncOp::BarrierReleased { state: "ready".into(), target: 2, signalled: None },
                    call: None,
                },
            ),
            ev(7, 20, finished(&client, "reads", Outcome::Passed, None)),
            ev(8, 21, EventKind::TestStarted { shard: client.clone(), test: "writes".into(), attempt: 1 }),
            ev(9, 30, finished(&client, "writes", Outcome::Failed, Some("expected 2, got 3"))),
            ev(10, 40, finished(&server, "serves", Outcome::Passed, None)),
            ev(
                11,
                41,
                EventKind::RunFinished {
                    summary: Summary { passed: 2, failed: 1, ..Default::default() },
                    duration_ms: 41,
                    shard_errors: 0,
                    cancelled: None,
                    verdict: Verdict::Failed,
                },
            ),
        ]
    }

    fn fold(events: Vec<Event>) -> RunView {
        let mut v = RunView::new("r");
        for e in events {
            v.apply(e);
        }
        v
    }

    #[test]
    fn a_service_is_a_row_of_its_machine_with_its_life_and_output_and_no_test_count() {
        use ensemble_protocol::service::{ServiceAddr, ServiceState};
        let s = shard(3, "db-box", "service:db");
        let state = |seq, state| {
            ev(seq, seq as i64, EventKind::Service { shard: s.clone(), service: "db".into(), state })
        };
        let address = ServiceAddr {
            machine: "db-box".into(),
            host: "10.0.0.2".into(),
            port: Some(6379),
            ports: Default::default(),
        };
        let v = fold(vec![
            state(1, ServiceState::Started { pid: 42, command: vec!["redis-server".into()] }),
            ev(
                2,
                2,
                EventKind::Log {
                    shard: s.clone(),
                    test: "service:db".into(),
                    level: "stdout".into(),
                    message: "Ready to accept connections".into(),
                },
            ),
            state(3, ServiceState::Ready { address, after_ms: 80 }),
            state(
                4,
                ServiceState::Exited {
                    status: "exit code 1".into(),
                    expected: false,
                    last_output: "oops".into(),
                },
            ),
        ]);
        assert_eq!(v.rows.len(), 1);
        let row = &v.rows[0];
        assert_eq!(row.test, "service:db");
        assert_eq!(row.status, Status::Done(Outcome::Failed));
        assert!(row.logs.iter().any(|l| l.contains("Ready to accept connections")), "{:?}", row.logs);
        assert!(row.logs.iter().any(|l| l.contains("ready at 10.0.0.2:6379 after 80 ms")), "{:?}", row.logs);
        assert!(row.message.as_deref().is_some_and(|m| m.contains("exited (exit code 1)")));
        // On the machine's timeline, and not counted as a test.
        assert_eq!(v.lanes[0].marks.len(), 3);
        assert!(v.counts.is_empty(), "{:?}", v.counts);
    }

    #[test]
    fn attachments_stay_with_their_test_and_attempt() {
        let s = shard(0, "box-a", "kv-server");
        let attach = |seq, name: &str| {
            ev(
                seq,
                seq as i64,
                EventKind::Attachment {
                    shard: s.clone(),
                    test: "serves".into(),
                    name: name.into(),
                    sha256: format!("{seq:064}"),
                    size: seq,
                    data: None,
                },
            )
        };
        let v = fold(vec![
            ev(1, 1, EventKind::TestStarted { shard: s.clone(), test: "serves".into(), attempt: 1 }),
            attach(2, "first.log"),
            ev(3, 3, EventKind::TestStarted { shard: s.clone(), test: "serves".into(), attempt: 2 }),
            attach(4, "second.log"),
        ]);
        let row = &v.rows[0];
        let got: Vec<(&str, u32, u64)> =
            row.attachments.iter().map(|a| (a.name.as_str(), a.attempt, a.size)).collect();
        assert_eq!(got, [("first.log", 1, 2), ("second.log", 2, 4)]);
    }

    #[test]
    fn a_run_folds_into_lanes_rows_sync_and_counts() {
        let v = fold(two_machine_run());
        assert_eq!(v.lanes.iter().map(|l| l.machine.as_str()).collect::<Vec<_>>(), ["box-a", "box-b"]);
        assert_eq!(v.rows.len(), 3);
        assert_eq!((v.count(Outcome::Passed), v.count(Outcome::Failed), v.running), (2, 1, 0));
        assert_eq!(v.state(None), RunState::Failed);
        let failed = &v.rows[v.filtered("", Show::Failures, false)[0]];
        assert_eq!(failed.test, "writes");
        assert_eq!(failed.message.as_deref(), Some("expected 2, got 3"));
        assert_eq!(v.sync[0].text, "barrier ready released (2 parties)");
        assert_eq!(v.lanes[0].marks, [0]);
        assert_eq!(v.span(), (0, 41_000));
        let client = &v.lanes[1];
        let bars = v.bars(&v.shard_rows(client, 1));
        assert_eq!(bars.len(), 2);
        assert!((bars[1].from - 21.0 / 41.0).abs() < 1e-9 && bars[1].class == "failed", "failures on top");
        assert_eq!(v.shard_rows(client, 0), Vec::<usize>::new());
    }

    #[test]
    fn failures_come_first_unless_the_run_order_is_asked_for() {
        let v = fold(two_machine_run());
        let names = |rows: Vec<usize>| rows.iter().map(|&i| v.rows[i].test.clone()).collect::<Vec<_>>();
        let in_order = names(v.filtered("", Show::All, false));
        let first = names(v.filtered("", Show::All, true));
        assert_eq!(first[0], "writes", "{first:?}");
        assert_ne!(in_order[0], "writes", "{in_order:?}");
        let mut rest = in_order.clone();
        rest.retain(|t| t != "writes");
        assert_eq!(first[1..], rest[..], "the others keep the run's order");
    }

    #[test]
    fn mid_run_state_shows_running_and_pending_tests() {
        let v = fold(two_machine_run().into_iter().take(5).collect());
        assert_eq!(v.running, 2);
        assert_eq!(v.pending(), 1);
        assert_eq!(v.filtered("", Show::Running, false).len(), 2);
        assert_eq!(v.filtered("WRITES", Show::All, true).len(), 1, "the filter ignores case");
        assert!(v.finished.is_none());
        assert_eq!(v.state(None), RunState::Running);
        assert_eq!(v.state(Some(RunState::Interrupted)), RunState::Interrupted, "the server lost it");
        // A running bar reaches the latest event.
        assert_eq!(v.bars(&v.lanes[0].rows)[0].to, 1.0);
    }

    #[test]
    fn a_live_timeline_moves_on_between_events() {
        let events: Vec<Event> = two_machine_run().into_iter().take(5).collect();
        // The browser's clock is 7 s ahead; the batch arrived 1 ms after its newest event.
        let v = Rc::new(RunView::new("r")).reduce(RunAction::Events { events, received_us: 7_003_000 });
        assert_eq!(v.span(), (0, 2_000));
        let v = v.reduce(RunAction::Tick(7_501_000));
        assert_eq!(v.span(), (0, 500_000), "half a second later");
        // A finished run keeps its end.
        let v =
            v.reduce(RunAction::Events { events: two_machine_run()[5..].to_vec(), received_us: 7_600_000 });
        let v = v.reduce(RunAction::Tick(9_000_000));
        assert_eq!(v.span(), (0, 41_000));
    }

    #[test]
    fn the_final_state_is_the_verdict_not_the_counts() {
        let s = shard(0, "box-a", "kv");
        let ran = vec![
            ev(1, 0, EventKind::ShardStarted { shard: s.clone(), tests: vec!["t".into()], filtered_out: 0 }),
            ev(2, 1, EventKind::TestStarted { shard: s.clone(), test: "t".into(), attempt: 1 }),
            ev(3, 2, finished(&s, "t", Outcome::Passed, None)),
        ];
        let end = |shard_errors, cancelled, verdict| {
            let kind = EventKind::RunFinished {
                summary: Summary { passed: 1, ..Default::default() },
                duration_ms: 5,
                shard_errors,
                cancelled,
                verdict,
            };
            fold([ran.clone(), vec![ev(4, 5, kind)]].concat())
        };
        // Every test passed, but a shard could not run its tests.
        let v = end(1, None, Verdict::Failed);
        assert_eq!((v.failures(), v.state(None)), (0, RunState::Failed));
        assert_eq!(v.finished.as_ref().map(|f| f.shard_errors), Some(1));
        // Stopped from outside before a failure: cancelled, and why in words.
        let v = end(0, Some(CancelReason::user()), Verdict::Cancelled);
        assert_eq!(v.state(Some(RunState::Running)), RunState::Cancelled);
        let why = v.finished.and_then(|f| f.cancelled).map(|r| r.to_string());
        assert_eq!(why.as_deref(), Some("cancelled by a user"));
        // Fail-fast stops a run for a failure: it failed, it was not cancelled.
        let ff = CancelReason::FailFast { test: "t".into(), role: "kv".into(), outcome: Outcome::Failed };
        let v = end(0, Some(ff), Verdict::Failed);
        assert_eq!(v.state(None), RunState::Failed);
        let why = v.finished.and_then(|f| f.cancelled).map(|r| r.to_string());
        assert_eq!(why.as_deref(), Some("fail-fast: t (kv) failed"));
        // A run that passed.
        assert_eq!(end(0, None, Verdict::Passed).state(None), RunState::Passed);
        // Once the page has the stored run, its final state is the truth.
        assert_eq!(end(0, None, Verdict::Passed).state(Some(RunState::Failed)), RunState::Failed);
    }

    #[test]
    fn replays_and_reconnects_do_not_count_twice() {
        let events = two_machine_run();
        let mut v = fold(events[..8].to_vec());
        // A reconnect asks from last_seq + 1, but a server may resend more.
        for e in events[5..].iter().cloned() {
            v.apply(e);
        }
        assert_eq!(v, fold(events));
    }

    #[test]
    fn ten_thousand_tests_draw_a_bounded_number_of_bars() {
        let s = shard(0, "box-a", "big");
        let mut events =
            vec![ev(1, 0, EventKind::ShardStarted { shard: s.clone(), tests: vec![], filtered_out: 0 })];
        let mut seq = 1;
        for t in 0..10_000 {
            seq += 1;
            events.push(ev(
                seq,
                t,
                EventKind::TestStarted { shard: s.clone(), test: format!("t{t}"), attempt: 1 },
            ));
            seq += 1;
            let outcome = if t == 5_000 { Outcome::Failed } else { Outcome::Passed };
            events.push(ev(seq, t + 1, finished(&s, &format!("t{t}"), outcome, None)));
        }
        let v = fold(events);
        assert_eq!(v.rows.len(), 10_000);
        let bars = v.bars(&v.lanes[0].rows);
        assert!(bars.len() <= BUCKETS, "{}", bars.len());
        assert_eq!(bars.last().unwrap().class, "failed", "a failure is never hidden in a bucket");
        assert_eq!(v.filtered("", Show::Failures, true).len(), 1);
        // A bucket knows its tests: the failure's holds the failure.
        let failed = bars.last().unwrap();
        assert!(failed.rows.iter().any(|&i| v.rows[i].test == "t5000"), "{:?}", failed.rows);
        let listed: std::collections::HashSet<usize> =
            bars.iter().flat_map(|b| b.rows.iter().copied()).collect();
        assert_eq!(listed.len(), 10_000, "every test is in some bucket");
        // The shard's time before its first test and after its last are known.
        assert_eq!(v.shard_times.get(&s.shard), Some(&(0, None)));
    }

    #[test]
    fn a_queued_run_says_what_it_waits_for_and_its_shards_queue_until_they_start() {
        let waiting = "slots busy with other runs: box-a needs 2 free slot(s) and has 0 of 2";
        let mut v = fold(vec![ev(1, 0, EventKind::RunQueued { waiting_for: waiting.into() })]);
        assert_eq!(v.waiting.as_deref(), Some(waiting));
        assert_eq!(
            v.state(Some(RunState::Running)),
            RunState::Queued,
            "the events know better than a stale list"
        );
        let events = two_machine_run();
        let EventKind::RunStarted { .. } = &events[0].kind else { panic!("run-started first") };
        let started: Vec<Event> =
            events.iter().take(1).map(|e| Event { seq: e.seq + 1, ..e.clone() }).collect();
        v.apply(started[0].clone());
        assert_eq!(v.waiting, None);
        assert_eq!(v.state(Some(RunState::Queued)), RunState::Running);
        let shard = v.lanes[0].shards[0].shard;
        assert_eq!(v.shard_state(shard), "queued", "assigned, no slot yet");
        let sref = v.lanes[0].shards[0].clone();
        let mut seq = v.last_seq;
        for e in events.into_iter().skip(1) {
            seq = e.seq + 1;
            v.apply(Event { seq, ..e });
        }
        assert_eq!(v.shard_state(shard), "running");
        let done = EventKind::ShardFinished { shard: sref, summary: Default::default(), error: None };
        v.apply(ev(seq + 1, 9, done));
        assert_eq!(v.shard_state(shard), "finished");
    }
}
