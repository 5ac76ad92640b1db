//! The dispatcher's rules, driven by scripted machine messages: no sockets,
//! no wasm. Each machine is a channel the test reads what was sent to.

use std::sync::{Arc, Mutex};

use ensemble_protocol::event::{Event, EventKind, Outcome, ShardRef, Summary, SyncOp};
use ensemble_protocol::plan::Plan;
use ensemble_protocol::verdict::{CancelReason, Verdict};
use ensemble_protocol::wire::{FromMachine, SyncCall, SyncReply, ToMachine};
use tokio::sync::{mpsc, watch};

use super::{Dispatcher, Inbound, MAX_WAITING_CALLS, MachineLink, RunResult, SuiteRef};
use crate::coordinator::matching;
use crate::report::Reporter;

const RUN: &str = "run-1";

/// Two entries on two machines: `server` on m0, `client` on m1.
fn plan(settings: &str) -> Plan {
    Plan::from_toml(&format!(
        r#"
name = "p"
[settings]
{settings}
[[profiles]]
name = "a"
labels = {{ tier = "a" }}
[[profiles]]
name = "b"
labels = {{ tier = "b" }}
[[entries]]
suite = "server.wasm"
profile = "a"
role = "server"
[[entries]]
suite = "client.wasm"
profile = "b"
role = "client"
"#
    ))
    .unwrap()
}

struct Collect(Arc<Mutex<Vec<Event>>>);

impl Reporter for Collect {
    fn event(&mut self, event: &Event) -> anyhow::Result<()> {
        self.0.lock().unwrap().push(event.clone());
        Ok(())
    }
}

struct Harness {
    d: Dispatcher,
    to: Vec<mpsc::UnboundedReceiver<ToMachine>>,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Harness {
    fn new(settings: &str) -> Harness {
        Harness::with_store(settings, None)
    }

    /// A harness whose store commits what `committed` says.
    fn with_store(settings: &str, committed: Option<watch::Receiver<u64>>) -> Harness {
        let plan = plan(settings);
        let infos = crate::fuzzing::tier_machines(&["a", "b"]);
        let names = vec!["server".to_string(), "client".to_string()];
        let shards = matching::place(&plan, &names, &[], &infos, &[]).unwrap();
        let (suites, links, to, events, reporters) = Harness::parts();
        let d = Dispatcher::new(RUN.into(), &plan, suites, links, shards, reporters);
        let mut d = match committed {
            Some(c) => d.durable(c),
            None => d,
        };
        d.start();
        Harness { d, to, events }
    }

    /// The same run taken up again from the events `stored` (a restarted
    /// coordinator's view).
    fn resume(settings: &str, stored: &[Event]) -> Harness {
        let (suites, links, to, events, reporters) = Harness::parts();
        let mut d =
            Dispatcher::resume(RUN.into(), &plan(settings), suites, links, stored, reporters).unwrap();
        d.resume_start();
        Harness { d, to, events }
    }

    #[allow(clippy::type_complexity)]
    fn parts() -> (
        Vec<SuiteRef>,
        Vec<MachineLink>,
        Vec<mpsc::UnboundedReceiver<ToMachine>>,
        Arc<Mutex<Vec<Event>>>,
        Vec<Box<dyn Reporter>>,
    ) {
        let mut to = Vec::new();
        let mut links = Vec::new();
        for info in crate::fuzzing::tier_machines(&["a", "b"]) {
            let (tx, rx) = mpsc::unbounded_channel();
            to.push(rx);
            links.push(MachineLink { info, port: Arc::new(tx) });
        }
        let suites = ["server", "client"]
            .iter()
            .map(|n| SuiteRef { name: n.to_string(), sha256: format!("sha-{n}"), uses_sync: false })
            .collect();
        let events = Arc::new(Mutex::new(Vec::new()));
        let reporters: Vec<Box<dyn Reporter>> = vec![Box::new(Collect(events.clone()))];
        (suites, links, to, events, reporters)
    }

    fn sync(&mut self, m: usize, shard: u32, id: u64, call: SyncCall) {
        let msg = FromMachine::Sync { id, run: RUN.into(), shard, call };
        self.d.handle(Inbound::Message { machine: m, msg, clock_offset_us: 0, intake: None });
    }

    /// The replies machine `m` was sent since the last look, by call id.
    fn replies(&mut self, m: usize) -> Vec<(u64, SyncReply)> {
        self.sent(m)
            .into_iter()
            .filter_map(|msg| match msg {
                ToMachine::SyncReply { id, reply } => Some((id, reply)),
                _ => None,
            })
            .collect()
    }

    /// What machine `m` was sent since the last look.
    fn sent(&mut self, m: usize) -> Vec<ToMachine> {
        let mut out = Vec::new();
        while let Ok(msg) = self.to[m].try_recv() {
            out.push(msg);
        }
        out
    }

    fn assigned(&mut self, m: usize) -> Vec<u32> {
        self.sent(m)
            .into_iter()
            .filter_map(|msg| match msg {
                ToMachine::Assign { assignment } => Some(assignment.shard.shard),
                _ => None,
            })
            .collect()
    }

    fn event(&mut self, m: usize, shard: u32, seq: u64, event: EventKind) {
        let msg = FromMachine::Event { run: RUN.into(), shard, seq, at_us: 1_000, event };
        self.d.handle(Inbound::Message { machine: m, msg, clock_offset_us: 0, intake: None });
    }

    fn done(&mut self, m: usize, shard: u32) {
        let msg = FromMachine::ShardDone { run: RUN.into(), shard };
        self.d.handle(Inbound::Message { machine: m, msg, clock_offset_us: 0, intake: None });
    }

    /// A whole shard: one test with `outcome`, then shard-finished and done.
    fn finish_shard(&mut self, m: usize, shard: u32, outcome: Outcome) {
        self.event(m, shard, 1, finished(shard, "t", outcome));
        let mut summary = Summary::default();
        summary.add(outcome);
        self.event(m, shard, 2, EventKind::ShardFinished { shard: sref(shard), summary, error: None });
        self.done(m, shard);
    }

    fn kinds(&self) -> Vec<EventKind> {
        self.events.lock().unwrap().iter().map(|e| e.kind.clone()).collect()
    }

    async fn end(self) -> (RunResult, Vec<Event>) {
        assert!(self.d.is_finished(), "every shard should be done");
        let events = self.events.clone();
        let result = self.d.finish().await;
        let all = events.lock().unwrap().clone();
        (result, all)
    }
}

/// A shard reference as a machine might send it (the dispatcher overwrites it).
fn sref(shard: u32) -> ShardRef {
    ShardRef { shard, machine: "anything".into(), role: "r".into(), suite: "s".into(), instance: 0 }
}

fn finished(shard: u32, test: &str, outcome: Outcome) -> EventKind {
    crate::coordinator::test_finished(sref(shard), test, outcome)
}

fn verdict_of(events: &[Event]) -> Verdict {
    match &events.last().unwrap().kind {
        EventKind::RunFinished { verdict, .. } => *verdict,
        other => panic!("the last event is {other:?}"),
    }
}

#[tokio::test]
async fn a_parallel_plan_assigns_every_shard_at_once_and_numbers_events_without_gaps() {
    let mut h = Harness::new("");
    assert_eq!(h.assigned(0), [1]);
    assert_eq!(h.assigned(1), [2]);
    h.finish_shard(0, 1, Outcome::Passed);
    h.finish_shard(1, 2, Outcome::Passed);
    let (result, events) = h.end().await;
    assert_eq!(result.verdict, Verdict::Passed);
    assert!(matches!(events[0].kind, EventKind::RunStarted { .. }));
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    assert_eq!(verdict_of(&events), Verdict::Passed);
    // Machine events carry the coordinator's record of the shard.
    let EventKind::TestFinished { shard, .. } = &events[1].kind else { panic!() };
    assert_eq!((shard.machine.as_str(), shard.role.as_str()), ("m-a", "server"));
}

#[tokio::test]
async fn a_sequential_plan_assigns_entry_after_entry() {
    let mut h = Harness::new("execution = \"sequential\"");
    assert_eq!(h.assigned(0), [1]);
    assert_eq!(h.assigned(1), Vec::<u32>::new(), "the second entry waits for the first");
    h.finish_shard(0, 1, Outcome::Passed);
    assert_eq!(h.assigned(1), [2]);
    h.finish_shard(1, 2, Outcome::Passed);
    let (result, _) = h.end().await;
    assert_eq!(result.verdict, Verdict::Passed);
}

#[tokio::test]
async fn duplicates_are_acknowledged_and_dropped_and_gaps_refused() {
    let mut h = Harness::new("");
    h.sent(0);
    h.event(0, 1, 1, finished(1, "a", Outcome::Passed));
    h.event(0, 1, 1, finished(1, "a", Outcome::Passed)); // resent after a reconnect
    h.event(0, 1, 9, finished(1, "b", Outcome::Failed)); // a jump: refused
    let acks: Vec<u64> = h
        .sent(0)
        .into_iter()
        .filter_map(|m| match m {
            ToMachine::Ack { seq, .. } => Some(seq),
            _ => None,
        })
        .collect();
    assert_eq!(acks, [1, 1], "the duplicate is acknowledged again, the jump not at all");
    let finished_tests = h.kinds().iter().filter(|k| matches!(k, EventKind::TestFinished { .. })).count();
    assert_eq!(finished_tests, 1);
}

#[tokio::test]
async fn a_machine_speaks_only_for_its_own_shards() {
    let mut h = Harness::new("");
    // m-b forges a pass and a shard-done for m-a's shard, and news of a shard
    // that does not exist.
    h.event(1, 1, 1, finished(1, "t", Outcome::Passed));
    h.done(1, 1);
    h.event(1, 99, 1, finished(99, "t", Outcome::Passed));
    // A run-level event is never a machine's to send.
    h.event(
        1,
        2,
        1,
        EventKind::RunFinished {
            summary: Summary::default(),
            duration_ms: 0,
            shard_errors: 0,
            cancelled: None,
            verdict: Verdict::Passed,
        },
    );
    assert_eq!(h.kinds().len(), 1, "only run-started: {:?}", h.kinds());
    assert!(!h.d.is_finished());
    h.finish_shard(0, 1, Outcome::Failed);
    h.finish_shard(1, 2, Outcome::Passed);
    let (result, _) = h.end().await;
    assert_eq!(result.summary.failed, 1);
    assert_eq!(result.summary.passed, 1);
    assert_eq!(result.verdict, Verdict::Failed);
}

#[tokio::test]
async fn a_pass_on_retry_is_flaky_and_the_run_passes() {
    let mut h = Harness::new("retries = 2");
    h.finish_shard(0, 1, Outcome::Flaky);
    h.finish_shard(1, 2, Outcome::Passed);
    let (result, events) = h.end().await;
    assert_eq!(result.summary.flaky, 1);
    assert_eq!(result.verdict, Verdict::Passed);
    assert_eq!(verdict_of(&events), Verdict::Passed);
}

#[tokio::test]
async fn fail_fast_cancels_every_machine_and_fails_the_run() {
    let mut h = Harness::new("fail_fast = true");
    h.sent(0);
    h.sent(1);
    h.event(0, 1, 1, finished(1, "breaks", Outcome::TimedOut));
    let expected =
        CancelReason::FailFast { test: "breaks".into(), role: "server".into(), outcome: Outcome::TimedOut };
    for m in 0..2 {
        let cancels: Vec<CancelReason> = h
            .sent(m)
            .into_iter()
            .filter_map(|msg| match msg {
                ToMachine::Cancel { reason, .. } => Some(reason),
                _ => None,
            })
            .collect();
        assert_eq!(cancels, std::slice::from_ref(&expected), "machine {m}");
    }
    // A second failure does not cancel again.
    h.event(1, 2, 1, finished(2, "also", Outcome::Failed));
    assert!(h.sent(1).iter().all(|m| !matches!(m, ToMachine::Cancel { .. })));
    h.event(0, 1, 2, EventKind::ShardFinished { shard: sref(1), summary: Summary::default(), error: None });
    h.done(0, 1);
    h.event(1, 2, 2, EventKind::ShardFinished { shard: sref(2), summary: Summary::default(), error: None });
    h.done(1, 2);
    let (result, events) = h.end().await;
    assert_eq!(result.cancelled, Some(expected));
    assert_eq!(result.verdict, Verdict::Failed);
    assert_eq!(verdict_of(&events), Verdict::Failed);
}

#[tokio::test]
async fn a_cancelled_sequential_run_still_lists_the_later_shards_as_cancelled() {
    let mut h = Harness::new("execution = \"sequential\"");
    h.d.handle(Inbound::Cancel { reason: CancelReason::user() });
    h.finish_shard(0, 1, Outcome::Cancelled);
    let sent = h.sent(1);
    assert!(
        matches!(
            sent.as_slice(),
            [ToMachine::Cancel { .. }, ToMachine::Assign { .. }, ToMachine::Cancel { .. }]
        ),
        "{sent:?}"
    );
    h.finish_shard(1, 2, Outcome::Cancelled);
    let (result, _) = h.end().await;
    assert_eq!(result.verdict, Verdict::Cancelled);
    assert_eq!(result.summary.cancelled, 2);
}

#[tokio::test]
async fn a_lost_machine_loses_its_running_test_and_fails_waits_at_once() {
    let mut h = Harness::new("");
    h.event(1, 2, 1, EventKind::TestStarted { shard: sref(2), test: "waits".into(), attempt: 1 });
    // The server's shard waits at a barrier for the client.
    let call = SyncCall::Barrier { state: "ready".into(), target: 2, timeout_ms: 60_000 };
    h.d.handle(Inbound::Message {
        machine: 0,
        msg: FromMachine::Sync { id: 7, run: RUN.into(), shard: 1, call },
        clock_offset_us: 0,
        intake: None,
    });
    h.d.handle(Inbound::Lost { machine: 1, reason: "silent for 10s".into() });
    // The barrier fails at once, naming the lost role.
    let done = h.d.ops_rx.recv().await.unwrap();
    h.d.handle_sync_done(done);
    let reply = h.sent(0).into_iter().find_map(|m| match m {
        ToMachine::SyncReply { id: 7, reply } => Some(reply),
        _ => None,
    });
    match reply {
        Some(SyncReply::Error { message, .. }) => assert!(message.contains("role client"), "{message}"),
        other => panic!("expected a failed barrier, got {other:?}"),
    }
    let lost = h.kinds().into_iter().find_map(|k| match k {
        EventKind::TestFinished { test, outcome: Outcome::Lost, message, .. } => Some((test, message)),
        _ => None,
    });
    let (test, message) = lost.expect("the running test is reported lost");
    assert_eq!(test, "waits");
    assert!(message.unwrap().contains("machine m-b was lost: silent for 10s"));
    h.finish_shard(0, 1, Outcome::Failed);
    let (result, _) = h.end().await;
    assert_eq!(result.summary.lost, 1);
    assert_eq!(result.verdict, Verdict::Failed);
    assert_eq!(result.cancelled, None, "without fail-fast a loss does not stop the run");
}

#[tokio::test]
async fn a_test_lost_with_its_machine_lasted_from_its_start_to_its_loss() {
    let mut h = Harness::new("");
    // It started half a minute ago (as a restarted coordinator reads it).
    let started = crate::time::now_us() - 30_000_000;
    h.d.test_started(2, "waits", started);
    h.d.handle(Inbound::Lost { machine: 1, reason: "silent for 10s".into() });
    let lasted = h.kinds().into_iter().find_map(|k| match k {
        EventKind::TestFinished { test, outcome: Outcome::Lost, duration_ms, .. } if test == "waits" => {
            Some(duration_ms)
        }
        _ => None,
    });
    let lasted = lasted.expect("the running test is reported lost");
    assert!((30_000..60_000).contains(&lasted), "{lasted} ms");
}

#[tokio::test]
async fn with_fail_fast_a_lost_machine_stops_the_run() {
    let mut h = Harness::new("fail_fast = true");
    h.d.handle(Inbound::Lost { machine: 1, reason: "gone".into() });
    h.finish_shard(0, 1, Outcome::Skipped);
    let (result, _) = h.end().await;
    assert_eq!(
        result.cancelled,
        Some(CancelReason::MachineLost { machine: "m-b".into(), reason: "gone".into() })
    );
    assert_eq!(result.verdict, Verdict::Failed);
}

#[tokio::test]
async fn sync_calls_are_performed_once_and_answered_again_when_resent() {
    let mut h = Harness::new("");
    h.sent(0);
    let signal = |h: &mut Harness| {
        let call = SyncCall::Signal { state: "ready".into() };
        h.d.handle(Inbound::Message {
            machine: 0,
            msg: FromMachine::Sync { id: 1, run: RUN.into(), shard: 1, call },
            clock_offset_us: 0,
            intake: None,
        });
    };
    // A signal is taken and recorded at once.
    signal(&mut h);
    signal(&mut h); // resent after a reconnect
    let replies: Vec<SyncReply> = h
        .sent(0)
        .into_iter()
        .filter_map(|m| match m {
            ToMachine::SyncReply { id: 1, reply } => Some(reply),
            _ => None,
        })
        .collect();
    assert_eq!(replies, [SyncReply::Value { value: 1 }, SyncReply::Value { value: 1 }]);
    let signals = h.kinds().iter().filter(|k| matches!(k, EventKind::Sync { .. })).count();
    assert_eq!(signals, 1, "performed and shown once");
    // Another machine cannot call sync for this shard.
    let call = SyncCall::Signal { state: "ready".into() };
    h.d.handle(Inbound::Message {
        machine: 1,
        msg: FromMachine::Sync { id: 2, run: RUN.into(), shard: 1, call },
        clock_offset_us: 0,
        intake: None,
    });
    assert!(!h.d.sync_calls.contains_key(&(1, 2)));
}

#[tokio::test]
async fn a_shard_that_could_not_run_fails_the_run() {
    let mut h = Harness::new("");
    h.event(
        0,
        1,
        1,
        EventKind::ShardFinished {
            shard: sref(1),
            summary: Summary::default(),
            error: Some("fetching the suite: gone".into()),
        },
    );
    h.done(0, 1);
    h.finish_shard(1, 2, Outcome::Passed);
    let (result, events) = h.end().await;
    assert_eq!(result.shard_errors.len(), 1);
    assert_eq!(result.verdict, Verdict::Failed);
    let EventKind::RunFinished { shard_errors, .. } = &events.last().unwrap().kind else { panic!() };
    assert_eq!(*shard_errors, 1);
}

#[tokio::test]
async fn the_loop_ends_when_the_inputs_end() {
    let h = Harness::new("");
    let (tx, mut rx) = mpsc::unbounded_channel::<Inbound>();
    tx.send(Inbound::Cancel { reason: CancelReason::ShuttingDown }).unwrap();
    drop(tx);
    // No machine answers any more: everything left is lost, and the run ends.
    let result = h.d.drive(&mut rx).await;
    assert_eq!(result.summary.lost, 2);
    assert_eq!(result.cancelled, Some(CancelReason::ShuttingDown));
    assert_eq!(result.verdict, Verdict::Cancelled, "stopped from outside");
}

#[tokio::test]
async fn acknowledgements_and_sync_replies_wait_for_the_commit() {
    let (commit, committed) = watch::channel(0);
    let mut h = Harness::with_store("", Some(committed));
    h.sent(0);
    // run-started is seq 1; this test result becomes seq 2.
    h.event(0, 1, 1, finished(1, "a", Outcome::Passed));
    let call = SyncCall::Signal { state: "ready".into() };
    h.d.handle(Inbound::Message {
        machine: 0,
        msg: FromMachine::Sync { id: 4, run: RUN.into(), shard: 1, call },
        clock_offset_us: 0,
        intake: None,
    });
    // The signal is seq 3.
    assert!(h.sent(0).is_empty(), "nothing is settled before it is on disk");
    commit.send_replace(2);
    h.d.handle_committed();
    assert!(matches!(h.sent(0).as_slice(), [ToMachine::Ack { seq: 1, .. }]), "the ack of seq 2 only");
    commit.send_replace(3);
    h.d.handle_committed();
    let sent = h.sent(0);
    assert!(matches!(sent.as_slice(), [ToMachine::SyncReply { id: 4, .. }]), "{sent:?}");
}

#[tokio::test]
async fn news_from_a_shard_given_up_as_lost_is_acknowledged_and_dropped() {
    let mut h = Harness::new("");
    h.d.handle(Inbound::Lost { machine: 1, reason: "gone".into() });
    h.sent(1);
    let before = h.kinds().len();
    // The machine comes back and resends what it had: forget it, record nothing.
    h.event(1, 2, 1, finished(2, "late", Outcome::Passed));
    h.event(1, 2, 2, finished(2, "later", Outcome::Passed));
    let acks: Vec<u64> = h
        .sent(1)
        .into_iter()
        .filter_map(|m| match m {
            ToMachine::Ack { seq, .. } => Some(seq),
            _ => None,
        })
        .collect();
    assert_eq!(acks, [1, 2]);
    assert_eq!(h.kinds().len(), before);
}

#[tokio::test]
async fn a_resumed_run_takes_up_where_the_store_left_it() {
    let mut h = Harness::new("");
    h.event(0, 1, 1, EventKind::TestStarted { shard: sref(1), test: "t".into(), attempt: 1 });
    h.sync(0, 1, 7, SyncCall::Signal { state: "ready".into() });
    h.event(0, 1, 2, finished(1, "t", Outcome::Passed));
    // The coordinator dies before the last event is stored: the machine was
    // never told it is settled, so it still holds it.
    let all = h.events.lock().unwrap().clone();
    let stored = &all[..all.len() - 1];

    let mut r = Harness::resume("", stored);
    assert_eq!(r.assigned(1), [2], "the shard whose machine said nothing is assigned again");
    assert_eq!(r.assigned(0), Vec::<u32>::new(), "the shard that reported is not");
    // The machine resends what was not acknowledged, and its sync call.
    r.event(0, 1, 1, EventKind::TestStarted { shard: sref(1), test: "t".into(), attempt: 1 });
    r.event(0, 1, 2, finished(1, "t", Outcome::Passed));
    r.sync(0, 1, 7, SyncCall::Signal { state: "ready".into() });
    assert_eq!(r.replies(0), [(7, SyncReply::Value { value: 1 })], "answered from the record");
    // A new signal counts on top of the recorded one.
    r.sync(1, 2, 1, SyncCall::Signal { state: "ready".into() });
    assert_eq!(r.replies(1), [(1, SyncReply::Value { value: 2 })]);
    let mut summary = Summary::default();
    summary.add(Outcome::Passed);
    r.event(0, 1, 3, EventKind::ShardFinished { shard: sref(1), summary, error: None });
    r.done(0, 1);
    r.finish_shard(1, 2, Outcome::Passed);
    let (result, events) = r.end().await;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let first = stored.len() as u64 + 1;
    assert_eq!(seqs, (first..first + events.len() as u64).collect::<Vec<_>>(), "numbering goes on, no gaps");
    let started = events.iter().filter(|e| matches!(e.kind, EventKind::TestStarted { .. })).count();
    assert_eq!(started, 0, "the duplicate was dropped");
    assert_eq!(result.summary.passed, 2);
    assert_eq!(result.verdict, Verdict::Passed);
}

#[test]
fn a_run_without_its_start_or_already_finished_is_not_taken_up() {
    let (suites, links, _to, _events, reporters) = Harness::parts();
    let err = Dispatcher::resume(RUN.into(), &plan(""), suites, links, &[], reporters).err().unwrap();
    assert!(err.contains("run-started"), "{err}");
}

#[tokio::test]
async fn a_signal_and_wait_resent_after_a_restart_waits_again_without_signalling_twice() {
    let mut h = Harness::new("");
    let wait = || SyncCall::SignalAndWait { state: "ready".into(), target: 2, timeout_ms: 60_000 };
    h.sync(0, 1, 3, wait());
    // Its signal is on the record at once; its wait is still going when the
    // coordinator dies.
    let stored = h.events.lock().unwrap().clone();
    assert!(stored.iter().any(|e| matches!(
        &e.kind,
        EventKind::Sync { op: SyncOp::Signal { value: 1, .. }, call: Some(3), .. }
    )));
    let mut r = Harness::resume("", &stored);
    r.sync(0, 1, 3, wait()); // resent: it waits again, without a second signal
    r.sync(1, 2, 1, SyncCall::Signal { state: "ready".into() });
    assert_eq!(r.replies(1), [(1, SyncReply::Value { value: 2 })], "the count went on from the record");
    let done = r.d.ops_rx.recv().await.unwrap();
    r.d.handle_sync_done(done);
    assert_eq!(r.replies(0), [(3, SyncReply::Value { value: 1 })], "released, with its own signal's number");
}

#[test]
fn shards_that_wait_for_each_other_are_assigned_before_those_that_do_not() {
    let plan = Plan::from_toml(
        r#"
name = "p"
[[profiles]]
name = "a"
labels = { tier = "a" }
[[entries]]
suite = "plain.wasm"
profile = "a"
[[entries]]
suite = "party.wasm"
profile = "a"
"#,
    )
    .unwrap();
    let (_, links, mut to, _events, reporters) = Harness::parts();
    let infos: Vec<_> = links.iter().map(|l| l.info.clone()).collect();
    let names = vec!["plain".to_string(), "party".to_string()];
    let shards = matching::place(&plan, &names, &[false, true], &infos, &[]).unwrap();
    let suites = vec![
        SuiteRef { name: "plain".into(), sha256: "sha-plain".into(), uses_sync: false },
        SuiteRef { name: "party".into(), sha256: "sha-party".into(), uses_sync: true },
    ];
    let mut d = Dispatcher::new(RUN.into(), &plan, suites, links, shards, reporters);
    d.start();
    let mut order = Vec::new();
    while let Ok(msg) = to[0].try_recv() {
        if let ToMachine::Assign { assignment } = msg {
            order.push(assignment.shard.role);
        }
    }
    // The machine fills its slots in this order: the party never queues
    // behind the plain shard.
    assert_eq!(order, ["party", "plain"]);
}

#[test]
fn a_machine_attachment_that_breaks_the_rules_becomes_a_warning_in_the_tests_log() {
    let mut h = Harness::new("attachment_limit = \"4B\"");
    let attach = |name: &str, bytes: &[u8], sha256: String| EventKind::Attachment {
        shard: sref(1),
        test: "t".into(),
        name: name.into(),
        sha256,
        size: bytes.len() as u64,
        data: Some(ensemble_protocol::attachment::Blob(bytes.to_vec())),
    };
    let sha = crate::sandbox::sha256_hex;
    h.event(0, 1, 1, EventKind::TestStarted { shard: sref(1), test: "t".into(), attempt: 1 });
    h.event(0, 1, 2, attach("ok.txt", b"1234", sha(b"1234")));
    h.event(0, 1, 3, attach("lie.txt", b"1", sha(b"2")));
    h.event(0, 1, 4, attach("over.txt", b"1", sha(b"1")));
    // The next attempt has a budget of its own.
    h.event(0, 1, 5, EventKind::TestStarted { shard: sref(1), test: "t".into(), attempt: 2 });
    h.event(0, 1, 6, attach("ok.txt", b"1234", sha(b"1234")));
    let seen: Vec<String> = h
        .kinds()
        .into_iter()
        .filter_map(|k| match k {
            EventKind::Attachment { name, .. } => Some(format!("attached {name}")),
            EventKind::Log { level, message, test, .. } => Some(format!("{test} {level}: {message}")),
            _ => None,
        })
        .collect();
    assert_eq!(
        seen,
        [
            "attached ok.txt".to_string(),
            "t warn: the coordinator refused an attachment: the attachment \"lie.txt\" does not match its sha256"
                .into(),
            "t warn: the coordinator refused an attachment: the attachment \"over.txt\" (1B) would bring this attempt's attachments to 5B, over the plan's attachment_limit of 4B".into(),
            "attached ok.txt".into(),
        ]
    );
    let acks = h.sent(0).into_iter().filter(|m| matches!(m, ToMachine::Ack { .. })).count();
    assert_eq!(acks, 6, "refused or not, every event is acknowledged: the shard goes on");
}

#[tokio::test]
async fn answers_kept_for_resends_hold_no_copy_of_a_message_and_go_with_their_shard() {
    let mut h = Harness::new("");
    h.sent(0);
    let mib = "m".repeat(1 << 20);
    h.sync(0, 1, 1, SyncCall::Publish { topic: "t".into(), payload: mib.clone() });
    // A suite opening fresh subscriptions to re-read the message, many times.
    for id in 2..=200 {
        h.sync(0, 1, id, SyncCall::Next { topic: "t".into(), index: 0, timeout_ms: 1_000 });
        let done = h.d.ops_rx.recv().await.unwrap();
        h.d.handle_sync_done(done);
    }
    let read = h.replies(0).into_iter().filter(|(_, r)| matches!(r, SyncReply::Message { .. })).count();
    assert_eq!(read, 199);
    let kept_bytes: usize =
        h.d.sync_calls
            .values()
            .map(|k| match k {
                Some(super::Kept::Reply(SyncReply::Message { payload })) => payload.len(),
                _ => 0,
            })
            .sum();
    assert_eq!(kept_bytes, 0, "no answer keeps a copy of the message");
    // Resent after a reconnect: answered again, with the message.
    h.sync(0, 1, 7, SyncCall::Next { topic: "t".into(), index: 0, timeout_ms: 1_000 });
    assert_eq!(h.replies(0), [(7, SyncReply::Message { payload: mib.into() })]);
    // The shard is done: its answers go.
    h.d.handle(Inbound::Message {
        machine: 0,
        msg: FromMachine::ShardDone { run: RUN.into(), shard: 1 },
        clock_offset_us: 0,
        intake: None,
    });
    assert!(h.d.sync_calls.keys().all(|(s, _)| *s != 1), "{} answers kept", h.d.sync_calls.len());
}

#[tokio::test]
async fn a_run_whose_events_weigh_too_much_is_cancelled_failed_saying_which_limit() {
    let mut h = Harness::new("");
    h.d.max_spent = 10_000;
    for seq in 1..=5 {
        let log = EventKind::Log {
            shard: sref(1),
            test: "t".into(),
            level: "info".into(),
            message: "x".repeat(3_000),
        };
        h.event(0, 1, seq, log);
    }
    let cancels: Vec<CancelReason> = h
        .sent(0)
        .into_iter()
        .filter_map(|m| match m {
            ToMachine::Cancel { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(cancels.len(), 1, "{cancels:?}");
    let CancelReason::OverLimit { limit } = &cancels[0] else { panic!("{cancels:?}") };
    assert!(limit.contains("more than 10000B"), "{limit}");
    assert!(cancels[0].is_failure());
    // A machine that goes on after the cancel adds no more text.
    let log =
        EventKind::Log { shard: sref(1), test: "t".into(), level: "info".into(), message: "x".repeat(3_000) };
    h.event(0, 1, 6, log);
    let kinds = h.kinds();
    let Some(EventKind::Log { message, .. }) = kinds.last() else { panic!("{:?}", kinds.last()) };
    assert!(message.starts_with("(left out: the run went over"), "{message}");
}

#[tokio::test]
async fn sync_operations_count_against_the_bytes_a_run_may_keep() {
    let mut h = Harness::new("");
    h.d.max_spent = 10_000;
    h.sent(0);
    let publish = |h: &mut Harness, id| {
        h.sync(0, 1, id, SyncCall::Publish { topic: "t".into(), payload: "x".repeat(3_000) });
    };
    for id in 1..=5 {
        publish(&mut h, id);
    }
    let sent = h.sent(0);
    let cancels: Vec<&CancelReason> = sent
        .iter()
        .filter_map(|m| match m {
            ToMachine::Cancel { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(cancels.len(), 1, "{sent:?}");
    let CancelReason::OverLimit { limit } = cancels[0] else { panic!("{cancels:?}") };
    assert!(limit.contains("sync operations"), "{limit}");
    // Later operations are answered, and no longer shown or kept.
    let shown = |h: &Harness| h.kinds().iter().filter(|k| matches!(k, EventKind::Sync { .. })).count();
    let before = shown(&h);
    assert_eq!(before, 4, "shown until the bound was crossed");
    publish(&mut h, 6);
    h.sync(0, 1, 7, SyncCall::Signal { state: "s".into() });
    assert_eq!(h.replies(0).len(), 2);
    assert_eq!(shown(&h), before);
}

#[tokio::test]
async fn a_shard_has_no_more_sync_calls_waiting_than_it_may_run_tests() {
    let mut h = Harness::new("");
    h.sent(0);
    let wait = || SyncCall::Barrier { state: "all".into(), target: 2, timeout_ms: 600_000 };
    let max = MAX_WAITING_CALLS as u64;
    for id in 1..=max {
        h.sync(0, 1, id, wait());
    }
    assert!(h.replies(0).is_empty(), "{max} waits wait");
    // One more wait is refused at once, naming the bound; a signal is not
    // a wait, and a call resent is not a new one.
    h.sync(0, 1, max + 1, wait());
    h.sync(0, 1, max + 2, SyncCall::Signal { state: "other".into() });
    h.sync(0, 1, 1, wait());
    let replies = h.replies(0);
    assert_eq!(replies.len(), 2, "{replies:?}");
    match &replies[0] {
        (id, SyncReply::Error { message, .. }) if *id == max + 1 => {
            assert!(message.contains("1024 sync calls waiting"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(replies[1], (max + 2, SyncReply::Value { value: 1 }));
    assert_eq!(h.d.waiting[&1], MAX_WAITING_CALLS);
    // Released, they make room again.
    h.sync(1, 2, 1, SyncCall::Signal { state: "all".into() });
    h.sync(1, 2, 2, SyncCall::Signal { state: "all".into() });
    for _ in 0..max {
        let done = h.d.ops_rx.recv().await.unwrap();
        h.d.handle_sync_done(done);
    }
    assert_eq!(h.d.waiting[&1], 0);
    assert_eq!(h.replies(0).len(), MAX_WAITING_CALLS);
    h.sync(0, 1, max + 3, SyncCall::Barrier { state: "later".into(), target: 2, timeout_ms: 600_000 });
    assert!(h.replies(0).is_empty());
    assert_eq!(h.d.waiting[&1], 1);
}

#[test]
fn the_shards_of_a_split_role_share_its_recorded_durations() {
    let plan = Plan::from_toml(
        "name = \"p\"\n[[profiles]]\nname = \"a\"\nlabels = { tier = \"a\" }\ncount = 2\n\
         [[entries]]\nsuite = \"s.wasm\"\nprofile = \"a\"\nrole = \"r\"\nsplit = \"tests\"\n",
    )
    .unwrap();
    let infos: Vec<_> = ["m1", "m2"]
        .iter()
        .map(|n| {
            let mut info = crate::fuzzing::tier_machines(&["a"]).remove(0);
            info.name = n.to_string();
            info
        })
        .collect();
    let shards = matching::place(&plan, &["s".to_string()], &[], &infos, &[]).unwrap();
    let links = infos
        .into_iter()
        .map(|info| MachineLink { info, port: Arc::new(mpsc::unbounded_channel::<ToMachine>().0) })
        .collect();
    let suites = vec![SuiteRef { name: "s".into(), sha256: "sha-s".into(), uses_sync: false }];
    let durations = [("r".to_string(), Arc::new([("t".to_string(), 5u64)].into()))].into();
    let d = Dispatcher::new(RUN.into(), &plan, suites, links, shards, Vec::new()).with_durations(&durations);
    let got: Vec<_> =
        d.assignments.iter().map(|a| a.selection.durations.clone().expect("its durations")).collect();
    assert_eq!(got.len(), 2, "a shard on each machine");
    assert!(Arc::ptr_eq(&got[0], &got[1]), "one copy for the role");
    assert_eq!(got[0]["t"], 5);
}

#[tokio::test]
async fn a_message_read_by_many_waiting_calls_is_held_once() {
    let mut h = Harness::new("");
    h.sent(0);
    let readers = MAX_WAITING_CALLS as u64;
    for id in 1..=readers {
        h.sync(0, 1, id, SyncCall::Next { topic: "t".into(), index: 0, timeout_ms: 600_000 });
    }
    let mib = "m".repeat(1 << 20);
    h.sync(1, 2, 1, SyncCall::Publish { topic: "t".into(), payload: mib.clone() });
    // Every waiting read is answered before any answer is sent: what they
    // hold together is what one reply would.
    let mut done = Vec::new();
    for _ in 0..readers {
        done.push(h.d.ops_rx.recv().await.unwrap());
    }
    let payloads: Vec<_> = done
        .iter()
        .map(|d| match &d.reply {
            SyncReply::Message { payload } => payload.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(payloads.iter().all(|p| std::sync::Arc::ptr_eq(p, &payloads[0])), "each reader got a copy");
    assert_eq!(&*payloads[0], mib);
    for d in done {
        h.d.handle_sync_done(d);
    }
    let sent = h.replies(0);
    assert_eq!(sent.len(), MAX_WAITING_CALLS);
    assert!(sent.iter().all(
        |(_, r)| matches!(r, SyncReply::Message { payload } if std::sync::Arc::ptr_eq(payload, &payloads[0]))
    ));
}

#[tokio::test]
async fn a_cancel_always_ends_the_run_even_when_a_machine_stays_silent() {
    let Harness { mut d, mut to, events } = Harness::new("");
    d.cancel_grace = std::time::Duration::from_millis(200);
    // The client's machine (m1) winds its shard down; the server's (m0)
    // never says a word again.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let run = tokio::spawn(async move { d.drive(&mut rx).await });
    tx.send(Inbound::Cancel { reason: CancelReason::user() }).unwrap();
    while !to[1].try_recv().is_ok_and(|m| matches!(m, ToMachine::Cancel { .. })) {
        tokio::task::yield_now().await;
    }
    let done = ensemble_protocol::event::EventKind::ShardFinished {
        shard: sref(2),
        summary: Summary::default(),
        error: None,
    };
    let msg = FromMachine::Event { run: RUN.into(), shard: 2, seq: 1, at_us: 1, event: done };
    tx.send(Inbound::Message { machine: 1, msg, clock_offset_us: 0, intake: None }).unwrap();
    let msg = FromMachine::ShardDone { run: RUN.into(), shard: 2 };
    tx.send(Inbound::Message { machine: 1, msg, clock_offset_us: 0, intake: None }).unwrap();
    // The grace passes: the silent machine's shard is lost and the run
    // ends, cancelled.
    let result: RunResult = run.await.unwrap();
    assert_eq!(result.verdict, Verdict::Cancelled);
    assert_eq!(result.cancelled, Some(CancelReason::user()));
    let events = events.lock().unwrap();
    let lost = events.iter().find_map(|e| match &e.kind {
        EventKind::ShardFinished { shard, error: Some(why), .. } if shard.shard == 1 => Some(why.clone()),
        _ => None,
    });
    let why = lost.expect("the silent machine's shard was lost");
    assert!(why.contains("did not wind the cancelled run down within 200ms"), "{why}");
}

/// The two-entry plan with a service `db` on profile `a`.
fn service_plan() -> Plan {
    let mut plan = plan("");
    plan.services.push(
        toml::from_str(
            r#"name = "db"
profile = "a"
command = ["db-server", "--port", "{port}"]"#,
        )
        .unwrap(),
    );
    plan
}

/// [`service_plan`]'s run (`db` is shard 3, on m0).
fn with_service() -> Harness {
    harness_of(&service_plan())
}

/// A started run of `plan` (with a service `db` on profile `a`).
fn harness_of(plan: &Plan) -> Harness {
    let mut infos = crate::fuzzing::tier_machines(&["a", "b"]);
    for m in &mut infos {
        m.allow_exec = vec!["db-server".into()];
    }
    let names = vec!["server".to_string(), "client".to_string()];
    let shards = matching::place(plan, &names, &[], &infos, &[]).unwrap();
    let (suites, links, to, events, reporters) = Harness::parts();
    let mut d = Dispatcher::new(RUN.into(), plan, suites, links, shards, reporters);
    d.start();
    Harness { d, to, events }
}

fn service_state(state: ensemble_protocol::service::ServiceState) -> EventKind {
    EventKind::Service { shard: sref(3), service: "db".into(), state }
}

fn ready_at(port: u16) -> EventKind {
    service_state(ensemble_protocol::service::ServiceState::Ready {
        address: ensemble_protocol::service::ServiceAddr {
            machine: "anything".into(),
            host: "10.0.0.1".into(),
            port: Some(port),
            ports: Default::default(),
        },
        after_ms: 5,
    })
}

#[tokio::test]
async fn entries_start_once_every_service_is_ready_and_services_stop_once_entries_are_done() {
    let mut h = with_service();
    // Only the service is assigned at first.
    assert_eq!(h.assigned(0), [3]);
    assert!(h.assigned(1).is_empty());
    h.event(0, 3, 1, ready_at(7000));
    // Now the entries, each with the service's address.
    let sent: Vec<ToMachine> = h.sent(0).into_iter().chain(h.sent(1)).collect();
    let entries: Vec<_> = sent
        .iter()
        .filter_map(|m| match m {
            ToMachine::Assign { assignment } => Some(assignment),
            _ => None,
        })
        .collect();
    assert_eq!(entries.len(), 2, "{sent:?}");
    for a in entries {
        let db = &a.services["db"][0];
        assert_eq!((db.host.as_str(), db.port, db.machine.as_str()), ("10.0.0.1", Some(7000), "m-a"));
    }
    h.finish_shard(0, 1, Outcome::Passed);
    assert!(!h.sent(0).iter().any(|m| matches!(m, ToMachine::StopServices { .. })), "one entry still runs");
    h.finish_shard(1, 2, Outcome::Passed);
    assert!(h.sent(0).iter().any(|m| matches!(m, ToMachine::StopServices { .. })));
    // Stopped on purpose: the run passes.
    h.event(
        0,
        3,
        2,
        service_state(ensemble_protocol::service::ServiceState::Exited {
            status: "exit code 0".into(),
            expected: true,
            last_output: String::new(),
        }),
    );
    h.event(0, 3, 3, EventKind::ShardFinished { shard: sref(3), summary: Summary::default(), error: None });
    h.done(0, 3);
    let (result, events) = h.end().await;
    assert_eq!(result.verdict, Verdict::Passed);
    assert_eq!(verdict_of(&events), Verdict::Passed);
}

#[tokio::test]
async fn a_service_that_fails_fails_the_run_and_its_entries_end_cancelled() {
    let mut h = with_service();
    h.sent(0);
    h.event(
        0,
        3,
        1,
        service_state(ensemble_protocol::service::ServiceState::Failed {
            message: "service db on m-a was not ready within 30s".into(),
        }),
    );
    // The entries are assigned, and cancelled at once.
    for m in 0..2 {
        let sent = h.sent(m);
        assert!(sent.iter().any(|x| matches!(x, ToMachine::Assign { .. })), "{sent:?}");
        assert!(
            sent.iter()
                .any(|x| matches!(x, ToMachine::Cancel { reason: CancelReason::ServiceFailed { .. }, .. })),
            "{sent:?}"
        );
    }
    h.event(
        0,
        3,
        2,
        EventKind::ShardFinished {
            shard: sref(3),
            summary: Summary::default(),
            error: Some("not ready".into()),
        },
    );
    h.done(0, 3);
    h.finish_shard(0, 1, Outcome::Cancelled);
    h.finish_shard(1, 2, Outcome::Cancelled);
    let (result, _) = h.end().await;
    assert_eq!(result.verdict, Verdict::Failed);
    assert!(
        matches!(result.cancelled, Some(CancelReason::ServiceFailed { ref service, .. }) if service == "db")
    );
}

#[tokio::test]
async fn a_run_cancelled_while_its_services_start_ends_without_waiting() {
    let mut h = with_service();
    h.sent(0);
    h.d.handle(Inbound::Cancel { reason: CancelReason::user() });
    // The entries never started: they are assigned to report their tests
    // cancelled, rather than waiting to be lost.
    assert!(h.sent(1).iter().any(|x| matches!(x, ToMachine::Assign { .. })));
    h.event(0, 3, 1, EventKind::ShardFinished { shard: sref(3), summary: Summary::default(), error: None });
    h.done(0, 3);
    h.finish_shard(0, 1, Outcome::Cancelled);
    h.finish_shard(1, 2, Outcome::Cancelled);
    let (result, _) = h.end().await;
    assert_eq!(result.verdict, Verdict::Cancelled);
}

#[tokio::test]
async fn a_machine_that_repeats_a_shard_error_is_counted_once() {
    let mut h = Harness::new("");
    h.sent(0);
    h.sent(1);
    for seq in 1..=50 {
        let error = Some(format!("could not run ({seq})"));
        h.event(0, 1, seq, EventKind::ShardFinished { shard: sref(1), summary: Summary::default(), error });
    }
    h.done(0, 1);
    h.finish_shard(1, 2, Outcome::Passed);
    let (result, _) = h.end().await;
    assert_eq!(result.shard_errors.len(), 1, "{:?}", result.shard_errors);
    assert!(result.shard_errors[0].contains("could not run (1)"));
}

#[tokio::test]
async fn only_a_services_own_shard_speaks_for_it() {
    let mut h = with_service();
    h.sent(0);
    // m0 also runs entry shard 1 (not yet assigned, but its machine owns
    // the number): its claim that db is ready at its own address is refused.
    h.event(0, 1, 1, ready_at(22));
    assert!(h.assigned(1).is_empty(), "the entries still wait for db");
    assert!(
        h.kinds().iter().any(
            |k| matches!(k, EventKind::Log { message, .. } if message.contains("refused a service event"))
        )
    );
    // Its real shard, under another name: refused too.
    h.event(
        0,
        3,
        1,
        EventKind::Service {
            shard: sref(3),
            service: "cache".into(),
            state: ensemble_protocol::service::ServiceState::Failed { message: "forged".into() },
        },
    );
    assert!(h.d.cancelled.is_none());
    h.event(0, 3, 2, ready_at(7000));
    assert_eq!(h.assigned(1), [2]);
}

/// [`service_plan`], the client granted faults into `db`.
fn fault_plan() -> Plan {
    let mut plan = service_plan();
    plan.entries[1].capabilities.faults = vec!["db".into()];
    plan
}

/// [`fault_plan`]'s run, `db` ready.
fn with_faults() -> Harness {
    let mut h = harness_of(&fault_plan());
    h.event(0, 3, 1, ready_at(7000));
    h.sent(0);
    h.sent(1);
    h
}

fn restart_of_db() -> SyncCall {
    SyncCall::Fault {
        service: "db".into(),
        instance: None,
        action: ensemble_protocol::fault::FaultAction::Restart,
        test: "survives".into(),
    }
}

fn fault_orders(sent: &[ToMachine]) -> Vec<(u32, ensemble_protocol::fault::FaultId)> {
    sent.iter()
        .filter_map(|m| match m {
            ToMachine::Fault { shard, id, .. } => Some((*shard, *id)),
            _ => None,
        })
        .collect()
}

fn fault_step(id: ensemble_protocol::fault::FaultId, step: ensemble_protocol::fault::FaultStep) -> EventKind {
    EventKind::Fault {
        shard: sref(3),
        service: "db".into(),
        service_instance: None,
        action: ensemble_protocol::fault::FaultAction::Restart,
        id,
        test: String::new(),
        step,
    }
}

#[tokio::test]
async fn a_fault_goes_to_the_services_machine_and_is_answered_once_done() {
    use ensemble_protocol::fault::{FaultId, FaultStep};
    let mut h = with_faults();
    h.sync(1, 2, 5, restart_of_db());
    let id = FaultId { caller: 2, call: 5 };
    assert_eq!(fault_orders(&h.sent(0)), [(3, id)], "the order goes to the machine of db");
    assert!(h.replies(1).is_empty(), "answered once done, not before");
    assert!(h.kinds().iter().any(|k| matches!(
        k,
        EventKind::Fault { shard, step: FaultStep::Asked { instances: 1 }, test, .. }
            if shard.shard == 2 && test == "survives"
    )));
    // Asked again after a reconnect: it is the same fault, still going.
    h.sync(1, 2, 5, restart_of_db());
    assert!(fault_orders(&h.sent(0)).is_empty() && h.replies(1).is_empty());
    // The service's machine reconnects: the order is sent again (it does it once).
    h.d.handle(Inbound::Connected { machine: 0, holding: None });
    assert_eq!(fault_orders(&h.sent(0)), [(3, id)]);
    // Another shard of that machine cannot answer for db.
    h.event(0, 1, 1, fault_step(id, FaultStep::Done { took_ms: 1 }));
    assert!(h.replies(1).is_empty());
    assert!(
        h.kinds().iter().any(
            |k| matches!(k, EventKind::Log { message, .. } if message.contains("refused a fault event"))
        )
    );
    // db's own shard says it is done: the caller hears it.
    h.event(0, 3, 2, fault_step(id, FaultStep::Done { took_ms: 12 }));
    assert_eq!(h.replies(1), [(5, SyncReply::Done)]);
    let stored = h.kinds();
    assert!(stored.iter().any(|k| matches!(
        k,
        EventKind::Fault { shard, step: FaultStep::Done { took_ms: 12 }, test, service_instance: Some(0), .. }
            if shard.shard == 3 && test == "survives"
    )), "the instance's event carries the test that asked: {stored:?}");
    // The call resent after that gets the same answer; nothing is done again.
    h.sync(1, 2, 5, restart_of_db());
    assert_eq!(h.replies(1), [(5, SyncReply::Done)]);
    assert!(fault_orders(&h.sent(0)).is_empty());
    // A restart's stop is not the run's end: db is still wanted.
    assert!(!h.d.services_stopped);
}

#[tokio::test]
async fn a_fault_without_the_grant_or_into_no_such_service_is_refused_naming_why() {
    use ensemble_protocol::event::SyncFailure;
    let mut h = with_faults();
    // The server's entry is granted nothing.
    h.sync(0, 1, 1, restart_of_db());
    let replies = h.replies(0);
    assert!(
        matches!(&replies[..], [(1, SyncReply::Error { kind: SyncFailure::Denied, message })]
            if message.contains("faults = [\"db\"]") && message.contains("role server")),
        "{replies:?}"
    );
    // The client may fault db, and only db: no other service of this run
    // (nor any other run's) can be named.
    let SyncCall::Fault { action, test, .. } = restart_of_db() else { unreachable!() };
    h.d.assignments[1].capabilities.faults = vec!["*".into()];
    h.sync(1, 2, 2, SyncCall::Fault { service: "cache".into(), instance: None, action, test: test.clone() });
    h.sync(1, 2, 3, SyncCall::Fault { service: "db".into(), instance: Some(4), action, test });
    let replies = h.replies(1);
    assert!(
        matches!(&replies[..], [
            (2, SyncReply::Error { kind: SyncFailure::Invalid, message: a }),
            (3, SyncReply::Error { kind: SyncFailure::Invalid, message: b }),
        ] if a.contains("no service \"cache\" (db)") && b.contains("no instance 4")),
        "{replies:?}"
    );
    assert!(fault_orders(&h.sent(0)).is_empty());
}

#[tokio::test]
async fn a_fault_whose_service_ends_first_fails_and_a_resumed_coordinator_finishes_one() {
    use ensemble_protocol::fault::{FaultId, FaultStep};
    let mut h = with_faults();
    h.sync(1, 2, 7, restart_of_db());
    let id = FaultId { caller: 2, call: 7 };
    assert_eq!(fault_orders(&h.sent(0)), [(3, id)]);
    // A restarted coordinator takes the run up from what was stored: the
    // fault is still owed, and ordered again once db's machine is back.
    let stored = h.events.lock().unwrap().clone();
    let (suites, links, to, events, reporters) = Harness::parts();
    let mut d = Dispatcher::resume(RUN.into(), &fault_plan(), suites, links, &stored, reporters).unwrap();
    d.resume_start();
    let mut again = Harness { d, to, events };
    assert_eq!(fault_orders(&again.sent(0)), [(3, id)]);
    again.event(0, 3, 2, fault_step(id, FaultStep::Done { took_ms: 3 }));
    assert_eq!(again.replies(1), [(7, SyncReply::Done)]);
    // In the first life, db ends before it answers: the caller hears why.
    h.event(0, 3, 2, EventKind::ShardFinished { shard: sref(3), summary: Summary::default(), error: None });
    let replies = h.replies(1);
    assert!(
        matches!(&replies[..], [(7, SyncReply::Error { message, .. })] if message.contains("ended before the fault was done")),
        "{replies:?}"
    );
}
