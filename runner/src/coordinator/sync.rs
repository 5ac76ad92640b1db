//! The sync service of one run: signals, barriers and topics.
//!
//! Semantics follow Testground's sync service: a state is a counter that
//! `signal` increments and `barrier` waits on; a topic is an append-only list
//! of messages that every subscriber replays from the first. Waits have
//! timeouts, and when a party of the run is lost (or the run is cancelled)
//! every wait still pending fails at once with the reason — no hang.
//!
//! The service is per run and in memory: one `Mutex` for the state, and
//! each pending wait registered under its state or topic with the count it
//! waits for. A signal or a publish wakes only the waits it satisfies (and
//! a broken run every one): a barrier of N parties costs N wake-ups, not
//! one per party per signal (N²/2). A woken wait checks again under the
//! lock.
//!
//! Bounds (per run; a call over one fails `invalid`, naming the limit):
//! names of states and topics at most [`MAX_NAME`] bytes, at most
//! [`MAX_NAMES`] states and as many topics, a message at most
//! [`MAX_PAYLOAD`] bytes, all of a run's messages at most
//! [`MAX_TOPIC_BYTES`] and [`MAX_MESSAGES`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ensemble_protocol::event::SyncOp;
use ensemble_protocol::wire::{SyncCall, SyncFailure, SyncReply, sync_name_problem, sync_payload_problem};
use tokio::sync::Notify;

#[derive(Default)]
struct State {
    counters: HashMap<String, u64>,
    topics: HashMap<String, Vec<Arc<str>>>,
    /// Bytes and count of every message of every topic.
    topic_bytes: usize,
    messages: usize,
    /// Set when a party is lost or the run is cancelled: every wait fails.
    broken: Option<(SyncFailure, String)>,
    /// The pending waits, by what they wait on.
    waits: HashMap<On, Vec<Wait>>,
}

/// What a wait waits on: a state's count, or a topic's number of messages.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum On {
    State(String),
    Topic(String),
}

/// A pending wait: woken once its count reaches `at`.
struct Wait {
    at: u64,
    wake: Arc<Notify>,
}

impl State {
    /// Wakes the waits on `on` that a count of `now` satisfies, and forgets them.
    fn reached(&mut self, on: On, now: u64) {
        if let std::collections::hash_map::Entry::Occupied(mut list) = self.waits.entry(on) {
            list.get_mut().retain(|w| {
                let done = w.at <= now;
                if done {
                    w.wake.notify_one();
                }
                !done
            });
            if list.get().is_empty() {
                list.remove();
            }
        }
    }
}

/// Coordination state of one run.
#[derive(Default)]
pub struct SyncService {
    state: Mutex<State>,
}

pub use ensemble_protocol::wire::{MAX_SYNC_NAME as MAX_NAME, MAX_SYNC_PAYLOAD as MAX_PAYLOAD};
/// The most states, and the most topics, one run may use.
pub const MAX_NAMES: usize = 10_000;
/// The most bytes all of a run's topic messages may hold (they are kept in
/// memory for replay, and stored).
pub const MAX_TOPIC_BYTES: usize = 64 << 20;
/// The most messages all of a run's topics may hold.
pub const MAX_MESSAGES: usize = 1_000_000;

/// Why a name cannot be used in this run, if it cannot: too long, or new
/// when the run already has [`MAX_NAMES`] of its kind.
fn check_name<T>(kind: &str, name: &str, known: &HashMap<String, T>) -> Result<(), String> {
    if let Some(why) = sync_name_problem(kind, name) {
        return Err(why);
    }
    if known.len() >= MAX_NAMES && !known.contains_key(name) {
        return Err(format!("the run already uses {MAX_NAMES} {kind}s, the most one run may use"));
    }
    Ok(())
}

impl SyncService {
    pub fn new() -> Self {
        Self::default()
    }

    /// Fails every pending and future wait of the run with `reason`.
    pub fn break_run(&self, kind: SyncFailure, reason: String) {
        let mut st = self.state.lock().expect("sync lock");
        if st.broken.is_none() {
            st.broken = Some((kind, reason));
        }
        for wait in st.waits.drain().flat_map(|(_, list)| list) {
            wait.wake.notify_one();
        }
    }

    fn err(kind: SyncFailure, message: String) -> SyncReply {
        SyncReply::Error { kind, message }
    }

    /// The service as the stored operations `ops` left it (after a
    /// restart): a state counts every signal recorded on it (a
    /// signal-and-wait records its signal as a `signal` at once), a topic
    /// holds the recorded messages in order. The dispatcher performs signals
    /// and publishes one at a time and records each as it happens, so the
    /// record has no holes: a call whose operation was not recorded had not
    /// happened, and is performed when its machine resends it.
    pub fn restore<'a>(ops: impl IntoIterator<Item = &'a SyncOp>) -> SyncService {
        let mut st = State::default();
        let mut messages: HashMap<String, Vec<(u64, String)>> = HashMap::new();
        for op in ops {
            match op {
                SyncOp::Signal { state, .. } => {
                    *st.counters.entry(state.clone()).or_default() += 1;
                }
                SyncOp::Publish { topic, message_seq, payload } => {
                    messages.entry(topic.clone()).or_default().push((*message_seq, payload.clone()));
                }
                SyncOp::BarrierReleased { .. }
                | SyncOp::BarrierFailed { .. }
                | SyncOp::BarrierWaiting { .. }
                | SyncOp::TopicWaiting { .. } => {}
            }
        }
        for (topic, mut list) in messages {
            list.sort_by_key(|(seq, _)| *seq);
            st.messages += list.len();
            st.topic_bytes += list.iter().map(|(_, p)| p.len()).sum::<usize>();
            st.topics.insert(topic, list.into_iter().map(|(_, payload)| Arc::from(payload)).collect());
        }
        SyncService { state: Mutex::new(st) }
    }

    /// The answer a call got, from the operation it left (none from one
    /// that only says the call waits).
    pub fn reply_of(op: &SyncOp) -> Option<SyncReply> {
        Some(match op {
            SyncOp::Signal { value, .. } => SyncReply::Value { value: *value },
            SyncOp::BarrierReleased { signalled: Some(value), .. } => SyncReply::Value { value: *value },
            SyncOp::BarrierReleased { signalled: None, .. } => SyncReply::Released,
            SyncOp::BarrierFailed { reason, kind, .. } => {
                SyncReply::Error { kind: *kind, message: reason.clone() }
            }
            SyncOp::Publish { message_seq, .. } => SyncReply::Value { value: *message_seq },
            SyncOp::BarrierWaiting { .. } | SyncOp::TopicWaiting { .. } => return None,
        })
    }

    /// Handles one call; returns the reply and the operation to show on the
    /// run's timeline, if any.
    pub async fn handle(&self, call: SyncCall) -> (SyncReply, Option<SyncOp>) {
        match call {
            SyncCall::Signal { state } => match self.signal(&state) {
                Ok(value) => (SyncReply::Value { value }, Some(SyncOp::Signal { state, value })),
                Err(e) => (e, None),
            },
            SyncCall::Barrier { state, target, timeout_ms } => {
                self.barrier(state, target, timeout_ms, None).await
            }
            SyncCall::SignalAndWait { state, target, timeout_ms } => match self.signal(&state) {
                Ok(value) => self.barrier(state, target, timeout_ms, Some(value)).await,
                Err(e) => (e, None),
            },
            SyncCall::Publish { topic, payload } => self.publish(topic, payload),
            // Faults are routed by the dispatcher, which knows the services.
            SyncCall::Fault { service, .. } => {
                (Self::err(SyncFailure::Invalid, format!("a fault into {service} is not a sync call")), None)
            }
            SyncCall::Next { topic, index, timeout_ms } => {
                if let Some(why) = sync_name_problem("topic", &topic) {
                    return (Self::err(SyncFailure::Invalid, why), None);
                }
                let what = format!("message {} of topic {}", index.saturating_add(1), shown(&topic));
                let on = (On::Topic(topic.clone()), index.saturating_add(1));
                let got = self
                    .wait(timeout_ms, &what, on, |st| {
                        st.topics.get(&topic).and_then(|l| l.get(usize::try_from(index).ok()?)).cloned()
                    })
                    .await;
                (got.map_or_else(|e| e, |payload| SyncReply::Message { payload }), None)
            }
        }
    }

    /// Appends `payload` to `topic`: the reply and the operation.
    pub fn publish(&self, topic: String, payload: String) -> (SyncReply, Option<SyncOp>) {
        if let Some(why) = sync_payload_problem(&payload) {
            return (Self::err(SyncFailure::Invalid, why), None);
        }
        let seq = {
            let mut st = self.state.lock().expect("sync lock");
            if let Err(why) = check_name("topic", &topic, &st.topics) {
                return (Self::err(SyncFailure::Invalid, why), None);
            }
            if st.topic_bytes + payload.len() > MAX_TOPIC_BYTES || st.messages >= MAX_MESSAGES {
                let why = format!(
                    "the run's topics hold {} messages of {} bytes in all: one more of {} bytes is over the limit of {MAX_MESSAGES} messages or {MAX_TOPIC_BYTES} bytes a run may publish",
                    st.messages,
                    st.topic_bytes,
                    payload.len()
                );
                return (Self::err(SyncFailure::Invalid, why), None);
            }
            st.topic_bytes += payload.len();
            st.messages += 1;
            let list = st.topics.entry(topic.clone()).or_default();
            list.push(Arc::from(payload.as_str()));
            let seq = list.len() as u64;
            st.reached(On::Topic(topic.clone()), seq);
            seq
        };
        (SyncReply::Value { value: seq }, Some(SyncOp::Publish { topic, message_seq: seq, payload }))
    }

    /// How many have signalled `state` so far.
    pub fn count(&self, state: &str) -> u64 {
        self.state.lock().expect("sync lock").counters.get(state).copied().unwrap_or(0)
    }

    /// How many messages `topic` has.
    pub fn messages(&self, topic: &str) -> u64 {
        self.state.lock().expect("sync lock").topics.get(topic).map_or(0, |l| l.len() as u64)
    }

    /// Message `index` (from 0) of `topic`, if it was published: what a
    /// call that read it is answered again with.
    pub fn message(&self, topic: &str, index: u64) -> Option<Arc<str>> {
        let st = self.state.lock().expect("sync lock");
        st.topics.get(topic).and_then(|l| l.get(usize::try_from(index).ok()?)).cloned()
    }

    /// Counts one more signal on `state`: its number, or the error reply
    /// when the name is over a bound.
    pub fn signal(&self, state: &str) -> Result<u64, SyncReply> {
        let value = {
            let mut st = self.state.lock().expect("sync lock");
            check_name("state", state, &st.counters).map_err(|why| Self::err(SyncFailure::Invalid, why))?;
            let c = st.counters.entry(state.to_string()).or_default();
            *c += 1;
            let value = *c;
            st.reached(On::State(state.to_string()), value);
            value
        };
        Ok(value)
    }

    /// Waits for `state` to reach `target`; `signalled` is the value of the
    /// caller's own signal (signal-and-wait), which the reply carries.
    pub async fn barrier(
        &self,
        state: String,
        target: u64,
        timeout_ms: u64,
        signalled: Option<u64>,
    ) -> (SyncReply, Option<SyncOp>) {
        if let Some(why) = sync_name_problem("state", &state) {
            return (Self::err(SyncFailure::Invalid, why), None);
        }
        let what = format!("barrier {} to reach {target}", shown(&state));
        let res = self
            .wait(timeout_ms, &what, (On::State(state.clone()), target), |st| {
                (st.counters.get(&state).copied().unwrap_or(0) >= target).then_some(())
            })
            .await;
        match res {
            Ok(()) => {
                let reply = match signalled {
                    Some(value) => SyncReply::Value { value },
                    None => SyncReply::Released,
                };
                (reply, Some(SyncOp::BarrierReleased { state, target, signalled }))
            }
            Err(reply) => {
                let (kind, reason) = match &reply {
                    SyncReply::Error { kind, message } => (*kind, message.clone()),
                    _ => (SyncFailure::Timeout, String::new()),
                };
                (reply, Some(SyncOp::BarrierFailed { state, target, reason, kind, signalled }))
            }
        }
    }

    /// Waits until `ready` yields a value, the run breaks, or the timeout;
    /// `on` is what `ready` reads and the count that satisfies it, under
    /// which the wait is woken.
    async fn wait<T>(
        &self,
        timeout_ms: u64,
        what: &str,
        (on, at): (On, u64),
        ready: impl Fn(&State) -> Option<T>,
    ) -> Result<T, SyncReply> {
        // A peer's number, not checked elsewhere: past a year is "never".
        let now = tokio::time::Instant::now();
        let deadline = now
            .checked_add(Duration::from_millis(timeout_ms))
            .unwrap_or_else(|| now + Duration::from_secs(366 * 24 * 3600));
        let wake = Arc::new(Notify::new());
        loop {
            {
                let mut st = self.state.lock().expect("sync lock");
                if let Some(v) = ready(&st) {
                    return Ok(v);
                }
                if let Some((kind, reason)) = &st.broken {
                    return Err(Self::err(*kind, format!("{what}: {reason}")));
                }
                // Registered under the lock that changes the count: a wake-up
                // between here and the await below is kept (`notify_one`).
                st.waits.entry(on.clone()).or_default().push(Wait { at, wake: wake.clone() });
            }
            if tokio::time::timeout_at(deadline, wake.notified()).await.is_err() {
                let mut st = self.state.lock().expect("sync lock");
                if let Some(list) = st.waits.get_mut(&on) {
                    list.retain(|w| !Arc::ptr_eq(&w.wake, &wake));
                    if list.is_empty() {
                        st.waits.remove(&on);
                    }
                }
                return ready(&st).ok_or_else(|| {
                    Self::err(SyncFailure::Timeout, format!("{what}: timed out after {timeout_ms} ms"))
                });
            }
        }
    }
}

/// A sync name as an answer shows it: quoted, its first 64 characters. A
/// name may be 1 KiB of characters that quoting makes six times as long,
/// and the answers of waits are kept until their shards are done.
fn shown(name: &str) -> String {
    let head: String = name.chars().take(64).collect();
    if head.len() < name.len() { format!("{head:?}…") } else { format!("{head:?}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn barrier(state: &str, target: u64, timeout_ms: u64) -> SyncCall {
        SyncCall::Barrier { state: state.into(), target, timeout_ms }
    }

    #[tokio::test]
    async fn barrier_releases_when_the_count_is_reached() {
        let s = Arc::new(SyncService::new());
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.handle(barrier("ready", 2, 60_000)).await }
        });
        assert_eq!(
            s.handle(SyncCall::Signal { state: "ready".into() }).await.0,
            SyncReply::Value { value: 1 }
        );
        assert_eq!(
            s.handle(SyncCall::Signal { state: "ready".into() }).await.0,
            SyncReply::Value { value: 2 }
        );
        let (reply, op) = waiter.await.unwrap();
        assert_eq!(reply, SyncReply::Released);
        assert_eq!(op, Some(SyncOp::BarrierReleased { state: "ready".into(), target: 2, signalled: None }));
    }

    /// The waits still registered.
    fn pending(s: &SyncService) -> Vec<u64> {
        let st = s.state.lock().unwrap();
        let mut at: Vec<u64> = st.waits.values().flatten().map(|w| w.at).collect();
        at.sort();
        at
    }

    /// Yields until `n` waits are registered.
    async fn registered(s: &SyncService, n: usize) {
        while pending(s).len() < n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_signal_wakes_only_the_waits_it_satisfies_and_none_is_left_behind() {
        let s = Arc::new(SyncService::new());
        let waiters: Vec<_> = (1..=3)
            .map(|target| {
                let s = s.clone();
                tokio::spawn(async move { s.handle(barrier("round", target, 60_000)).await })
            })
            .collect();
        let reader = tokio::spawn({
            let s = s.clone();
            async move { s.handle(SyncCall::Next { topic: "t".into(), index: 1, timeout_ms: 60_000 }).await }
        });
        registered(&s, 4).await;
        assert_eq!(pending(&s), [1, 2, 2, 3], "barriers to 1, 2, 3 and the second message");
        s.signal("round").unwrap();
        assert_eq!(pending(&s), [2, 2, 3], "the first signal woke the barrier to 1 only");
        s.publish("t".into(), "a".into());
        assert_eq!(pending(&s), [2, 2, 3], "one message is not the second");
        s.publish("t".into(), "b".into());
        s.signal("round").unwrap();
        s.signal("round").unwrap();
        assert_eq!(pending(&s), Vec::<u64>::new());
        for w in waiters {
            assert_eq!(w.await.unwrap().0, SyncReply::Released);
        }
        assert_eq!(reader.await.unwrap().0, SyncReply::Message { payload: "b".into() });
        // A wait that times out takes its registration with it.
        s.handle(barrier("never", 1, 10)).await;
        assert_eq!(pending(&s), Vec::<u64>::new());
    }

    #[tokio::test]
    async fn names_counts_and_bytes_are_bounded_per_run() {
        let s = SyncService::new();
        let invalid = |reply: SyncReply, want: &str| match reply {
            SyncReply::Error { kind: SyncFailure::Invalid, message } => {
                assert!(message.contains(want), "{message}");
                assert!(message.len() < 400, "the message does not echo the name");
            }
            other => panic!("{other:?}"),
        };
        let long = "n".repeat(MAX_NAME + 1);
        invalid(s.handle(SyncCall::Signal { state: long.clone() }).await.0, "over the limit of 1024");
        invalid(s.handle(barrier(&long, 1, 10)).await.0, "over the limit of 1024");
        invalid(s.publish(long.clone(), "x".into()).0, "over the limit of 1024");
        let next = SyncCall::Next { topic: long, index: 0, timeout_ms: 10 };
        invalid(s.handle(next).await.0, "over the limit of 1024");
        // New names past the count; known ones still work.
        for i in 0..MAX_NAMES {
            s.signal(&format!("s{i}")).unwrap();
        }
        invalid(s.handle(SyncCall::Signal { state: "one-more".into() }).await.0, "already uses 10000 states");
        assert_eq!(s.signal("s0"), Ok(2));
        // Bytes: 64 messages of 1 MiB fill a run's topics; the next is refused.
        let mib = "m".repeat(MAX_PAYLOAD);
        for i in 0..64 {
            assert!(
                matches!(s.publish("big".into(), mib.clone()).0, SyncReply::Value { value } if value == i + 1)
            );
        }
        invalid(
            s.publish("big".into(), "x".into()).0,
            "over the limit of 1000000 messages or 67108864 bytes",
        );
        assert_eq!(s.message("big", 63).map(|m| m.len()), Some(MAX_PAYLOAD));
        assert_eq!(s.message("big", 64), None);
    }

    #[tokio::test]
    async fn topics_replay_from_the_first_message() {
        let s = SyncService::new();
        for p in ["a", "b"] {
            s.handle(SyncCall::Publish { topic: "t".into(), payload: p.into() }).await;
        }
        for (i, want) in ["a", "b"].iter().enumerate() {
            let call = SyncCall::Next { topic: "t".into(), index: i as u64, timeout_ms: 10 };
            assert_eq!(s.handle(call).await.0, SyncReply::Message { payload: (*want).into() });
        }
    }

    #[tokio::test]
    async fn waits_time_out_with_a_message() {
        let s = SyncService::new();
        let (reply, _) = s.handle(barrier("never", 1, 50)).await;
        let SyncReply::Error { kind, message } = reply else { panic!("{reply:?}") };
        assert_eq!(kind, SyncFailure::Timeout);
        assert!(message.contains("barrier \"never\" to reach 1: timed out"), "{message}");
    }

    #[tokio::test]
    async fn an_answer_shows_a_long_name_by_its_start() {
        // 1 KiB of control characters: quoted whole, six times as long.
        let name = "\u{1}".repeat(MAX_NAME);
        let s = SyncService::new();
        let (reply, _) = s.handle(barrier(&name, 1, 1)).await;
        let SyncReply::Error { message, .. } = reply else { panic!("{reply:?}") };
        assert!(
            message.starts_with(&format!("barrier \"{}\"… to reach 1: timed out", "\\u{1}".repeat(64))),
            "{message}"
        );
        assert!(message.len() < 600, "{} bytes", message.len());
    }

    #[tokio::test]
    async fn a_lost_party_fails_every_wait_at_once() {
        let s = Arc::new(SyncService::new());
        let waiter = tokio::spawn({
            let s = s.clone();
            async move {
                s.handle(SyncCall::Next { topic: "never".into(), index: 0, timeout_ms: 3_600_000 }).await
            }
        });
        tokio::task::yield_now().await;
        s.break_run(SyncFailure::Lost, "role server on machine box-1 was lost".into());
        let (reply, _) = waiter.await.unwrap();
        assert_eq!(
            reply,
            SyncReply::Error {
                kind: SyncFailure::Lost,
                message: "message 1 of topic \"never\": role server on machine box-1 was lost".into()
            }
        );
    }

    #[tokio::test]
    async fn a_restored_service_counts_what_was_recorded_and_answers_as_before() {
        let s = SyncService::new();
        let mut done = vec![s.handle(SyncCall::Signal { state: "ready".into() }).await];
        // A signal-and-wait: its signal is recorded when it is taken, then its wait.
        let value = s.signal("ready").unwrap();
        let mut ops = vec![SyncOp::Signal { state: "ready".into(), value }];
        done.push(s.barrier("ready".into(), 2, 1000, Some(value)).await);
        done.push(s.handle(SyncCall::Publish { topic: "t".into(), payload: "one".into() }).await);
        done.push(s.handle(SyncCall::Publish { topic: "t".into(), payload: "two".into() }).await);
        done.push(s.handle(barrier("never", 1, 1)).await);
        for (reply, op) in done {
            let op = op.expect("recorded");
            assert_eq!(SyncService::reply_of(&op), Some(reply), "the record gives the same answer");
            ops.push(op);
        }
        // That a call waits is no answer, and counts nothing when restored.
        for waiting in [
            SyncOp::BarrierWaiting { state: "ready".into(), target: 2, arrived: 1 },
            SyncOp::TopicWaiting { topic: "t".into(), message_seq: 1 },
        ] {
            assert_eq!(SyncService::reply_of(&waiting), None);
            ops.push(waiting);
        }
        // Recorded out of order, as calls may finish.
        ops.reverse();
        let restored = SyncService::restore(&ops);
        let (reply, _) = restored.handle(SyncCall::Signal { state: "ready".into() }).await;
        assert_eq!(reply, SyncReply::Value { value: 3 }, "both signals counted, and the next is third");
        for (i, want) in ["one", "two"].iter().enumerate() {
            let call = SyncCall::Next { topic: "t".into(), index: i as u64, timeout_ms: 10 };
            assert_eq!(restored.handle(call).await.0, SyncReply::Message { payload: (*want).into() });
        }
    }
}
