//! The machine link: how an agent's messages reach the coordinator, in every
//! wiring (a standalone run's in-process machines, `serve`'s own machine, a
//! remote runner's WebSocket).
//!
//! [`Link`] keeps every event, unanswered sync call and shard-done until the
//! coordinator acknowledges it, and hands back what to resend after a
//! reconnect, in an order the coordinator accepts (each shard's events in
//! sequence, then sync calls, then shard-dones). Acknowledgements are the
//! link's business: the agent sees only what it must act on.
//!
//! Invariant: a message leaves the buffer only on its acknowledgement
//! (`ack` up to a seq, `ack-shard-done`, or the sync call's reply).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ensemble_protocol::event::EventKind;
use ensemble_protocol::wire::{FromMachine, ToMachine};
use tokio::sync::{Notify, mpsc};

/// The bytes of events a machine's shards made that the coordinator has not
/// acknowledged yet (it acknowledges once they are stored). A lane starts
/// its next test only while they are within [`MAX_BACKLOG`]: a machine
/// whose tests make events faster than the coordinator stores them slows
/// down, rather than holding them all in memory.
#[derive(Default)]
pub struct Backlog {
    bytes: AtomicU64,
    drained: Notify,
}

/// The most bytes of unacknowledged events before lanes wait to start
/// tests (then each running test adds at most its own bounded output).
pub const MAX_BACKLOG: u64 = 64 << 20;

impl Backlog {
    /// What holding `event` until its acknowledgement costs.
    fn cost(event: &EventKind) -> u64 {
        256u64.saturating_add(event.text_bytes())
    }

    /// An event made, to keep until acknowledged.
    pub fn add(&self, event: &EventKind) {
        let cost = Self::cost(event);
        self.bytes.fetch_add(cost, Ordering::SeqCst);
        crate::metrics::metrics().unacknowledged.inc_by(i64::try_from(cost).unwrap_or(i64::MAX));
    }

    /// An event let go (acknowledged, or its shard's end or loss).
    fn remove(&self, msg: &FromMachine) {
        if let FromMachine::Event { event, .. } = msg {
            let cost = Self::cost(event);
            let _ =
                self.bytes.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| Some(b.saturating_sub(cost)));
            crate::metrics::metrics().unacknowledged.dec_by(i64::try_from(cost).unwrap_or(i64::MAX));
            self.drained.notify_waiters();
        }
    }

    /// The bytes held now.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }

    /// Returns once the bytes held are within `limit`.
    pub async fn within(&self, limit: u64) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            // Registered before the count is read: a removal in between wakes it.
            drained.as_mut().enable();
            if self.bytes() <= limit {
                return;
            }
            drained.await;
        }
    }
}

/// Messages kept until acknowledged.
#[derive(Default)]
pub struct Link {
    /// Where the events' bytes are counted, if anywhere.
    backlog: Option<Arc<Backlog>>,
    events: BTreeMap<(String, u32), VecDeque<(u64, FromMachine)>>,
    syncs: BTreeMap<u64, FromMachine>,
    done: BTreeMap<(String, u32), FromMachine>,
    /// The shards assigned here and not yet acknowledged done: what this
    /// process holds, as its hello says.
    held: BTreeSet<(String, u32)>,
}

/// The most shards a hello lists; a machine holding more does not say.
const MAX_HELD: usize = 8_192;

impl Link {
    /// A link that gives the bytes of the events it lets go back to `backlog`.
    pub fn counting(backlog: Arc<Backlog>) -> Link {
        Link { backlog: Some(backlog), ..Link::default() }
    }

    /// `events`, let go.
    fn let_go<'a>(&self, events: impl IntoIterator<Item = &'a (u64, FromMachine)>) {
        if let Some(backlog) = &self.backlog {
            events.into_iter().for_each(|(_, m)| backlog.remove(m));
        }
    }

    /// Keeps an outgoing message until it is acknowledged.
    pub fn outgoing(&mut self, msg: &FromMachine) {
        match msg {
            FromMachine::Event { run, shard, seq, .. } => {
                self.events.entry((run.clone(), *shard)).or_default().push_back((*seq, msg.clone()))
            }
            FromMachine::Sync { id, .. } => {
                self.syncs.insert(*id, msg.clone());
            }
            FromMachine::ShardDone { run, shard } => {
                self.done.insert((run.clone(), *shard), msg.clone());
            }
            // A drain request is asked again on each connection by `join`.
            FromMachine::Hello { .. }
            | FromMachine::Pong { .. }
            | FromMachine::Heartbeat
            | FromMachine::Drain => {}
        }
    }

    /// Takes an incoming message: acknowledgements clear the buffer; what the
    /// agent must act on is returned.
    pub fn incoming(&mut self, msg: ToMachine) -> Option<ToMachine> {
        match msg {
            ToMachine::Ack { run, shard, seq } => {
                if let Some(q) = self.events.get_mut(&(run, shard)) {
                    let acked = q.iter().take_while(|(s, _)| *s <= seq).count();
                    let gone: Vec<_> = q.drain(..acked).collect();
                    self.let_go(&gone);
                }
                None
            }
            ToMachine::AckShardDone { run, shard } => {
                let key = (run, shard);
                self.done.remove(&key);
                if let Some(gone) = self.events.remove(&key) {
                    self.let_go(&gone);
                }
                self.held.remove(&key);
                None
            }
            // Counted lost: nothing more of it is taken, so nothing is kept;
            // the agent stops it.
            ToMachine::Lost { run, shard, reason } => {
                let key = (run, shard);
                self.done.remove(&key);
                if let Some(gone) = self.events.remove(&key) {
                    self.let_go(&gone);
                }
                self.held.remove(&key);
                self.syncs.retain(|_, m| {
                    !matches!(m, FromMachine::Sync { run, shard, .. } if *run == key.0 && *shard == key.1)
                });
                Some(ToMachine::Lost { run: key.0, shard: key.1, reason })
            }
            ToMachine::Assign { assignment } => {
                self.held.insert((assignment.run.clone(), assignment.shard.shard));
                Some(ToMachine::Assign { assignment })
            }
            ToMachine::SyncReply { id, reply } => {
                self.syncs.remove(&id);
                Some(ToMachine::SyncReply { id, reply })
            }
            other => Some(other),
        }
    }

    /// Everything to resend after a reconnect, in an order the coordinator accepts.
    pub fn replay(&self) -> Vec<FromMachine> {
        let mut out: Vec<FromMachine> = self.events.values().flatten().map(|(_, m)| m.clone()).collect();
        out.extend(self.syncs.values().cloned());
        out.extend(self.done.values().cloned());
        out
    }

    /// The shards this process holds, by run (for its hello); `None` when
    /// there are too many to list.
    pub fn holding(&self) -> Option<BTreeMap<String, Vec<u32>>> {
        if self.held.len() > MAX_HELD {
            return None;
        }
        let mut by_run: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (run, shard) in &self.held {
            by_run.entry(run.clone()).or_default().push(*shard);
        }
        Some(by_run)
    }

    /// How many messages wait for an acknowledgement.
    pub fn unacknowledged(&self) -> usize {
        self.events.values().map(VecDeque::len).sum::<usize>() + self.syncs.len() + self.done.len()
    }
}

/// Wires an agent to a coordinator in this process through a [`Link`]:
/// the agent's messages go to `deliver`, the coordinator's come from
/// `from_coordinator`. Ends when the agent has stopped; once the coordinator
/// side closes, the agent's inbox is closed so it winds down.
pub async fn pump_in_process(
    mut from_agent: mpsc::UnboundedReceiver<FromMachine>,
    to_agent: mpsc::UnboundedSender<ToMachine>,
    mut from_coordinator: mpsc::UnboundedReceiver<ToMachine>,
    backlog: Arc<Backlog>,
    deliver: impl Fn(FromMachine) -> bool,
) {
    let mut link = Link::counting(backlog);
    let mut to_agent = Some(to_agent);
    loop {
        tokio::select! {
            out = from_agent.recv() => match out {
                Some(msg) => {
                    link.outgoing(&msg);
                    if !deliver(msg) {
                        to_agent = None;
                    }
                }
                None => break,
            },
            incoming = from_coordinator.recv(), if to_agent.is_some() => match incoming {
                Some(msg) => {
                    if let (Some(msg), Some(tx)) = (link.incoming(msg), &to_agent) {
                        let _ = tx.send(msg);
                    }
                }
                None => to_agent = None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ensemble_protocol::event::ShardRef;
    use ensemble_protocol::event::{EventKind, Summary};
    use ensemble_protocol::wire::{SyncCall, SyncReply};

    /// A log event of `bytes` of text, numbered `seq` of `shard`.
    fn log(shard: u32, seq: u64, bytes: usize) -> FromMachine {
        let sref = ShardRef { shard, machine: "m".into(), role: "r".into(), suite: "s".into(), instance: 0 };
        let event = EventKind::Log {
            shard: sref,
            test: "t".into(),
            level: "info".into(),
            message: "x".repeat(bytes),
        };
        FromMachine::Event { run: "r".into(), shard, seq, at_us: 0, event }
    }

    /// Events count as held from when they are made until the coordinator
    /// acknowledges them, or their shard ends or is lost; a wait for room
    /// ends when they are let go.
    #[tokio::test]
    async fn a_backlog_holds_events_until_they_are_acknowledged_or_let_go() {
        let backlog = Arc::new(Backlog::default());
        let mut link = Link::counting(backlog.clone());
        let sent = [log(1, 1, 1_000), log(1, 2, 2_000), log(1, 3, 3_000), log(2, 1, 4_000)];
        for msg in &sent {
            let FromMachine::Event { event, .. } = msg else { unreachable!() };
            backlog.add(event);
            link.outgoing(msg);
        }
        let cost = |bytes: u64| 256 + 1 + 4 + bytes; // fixed part, test name, level, text
        assert_eq!(backlog.bytes(), cost(1_000) + cost(2_000) + cost(3_000) + cost(4_000));
        // Waiting for room: it comes once enough is let go.
        let room = tokio::spawn({
            let backlog = backlog.clone();
            async move { backlog.within(cost(4_000)).await }
        });
        link.incoming(ToMachine::Ack { run: "r".into(), shard: 1, seq: 2 });
        assert_eq!(backlog.bytes(), cost(3_000) + cost(4_000));
        assert!(!room.is_finished());
        link.incoming(ToMachine::AckShardDone { run: "r".into(), shard: 1 });
        assert_eq!(backlog.bytes(), cost(4_000));
        room.await.unwrap();
        link.incoming(ToMachine::Lost { run: "r".into(), shard: 2, reason: "gone".into() });
        assert_eq!(backlog.bytes(), 0);
        assert_eq!(link.unacknowledged(), 0);
    }

    fn event(shard: u32, seq: u64) -> FromMachine {
        let sref = ShardRef { shard, machine: "m".into(), role: "r".into(), suite: "s".into(), instance: 0 };
        FromMachine::Event {
            run: "r".into(),
            shard,
            seq,
            at_us: 0,
            event: EventKind::ShardFinished { shard: sref, summary: Summary::default(), error: None },
        }
    }

    #[test]
    fn only_acknowledged_messages_leave_and_the_rest_replay_in_order() {
        let mut link = Link::default();
        for seq in 1..=3 {
            link.outgoing(&event(1, seq));
        }
        link.outgoing(&FromMachine::Sync {
            id: 5,
            run: "r".into(),
            shard: 1,
            call: SyncCall::Signal { state: "s".into() },
        });
        link.outgoing(&FromMachine::ShardDone { run: "r".into(), shard: 1 });
        assert!(link.incoming(ToMachine::Ack { run: "r".into(), shard: 1, seq: 2 }).is_none());
        let replay = link.replay();
        assert_eq!(replay.len(), 3);
        assert_eq!(replay[0], event(1, 3));
        assert!(matches!(replay[1], FromMachine::Sync { id: 5, .. }));
        assert!(matches!(replay[2], FromMachine::ShardDone { .. }));
        // A reply reaches the agent and clears the call.
        let reply = ToMachine::SyncReply { id: 5, reply: SyncReply::Value { value: 1 } };
        assert_eq!(link.incoming(reply.clone()), Some(reply));
        assert!(link.incoming(ToMachine::AckShardDone { run: "r".into(), shard: 1 }).is_none());
        assert_eq!(link.unacknowledged(), 0);
    }

    #[tokio::test]
    async fn the_in_process_pump_delivers_both_ways_and_ends_with_the_agent() {
        let (agent_out_tx, agent_out_rx) = mpsc::unbounded_channel();
        let (to_agent_tx, mut to_agent_rx) = mpsc::unbounded_channel();
        let (coord_tx, coord_rx) = mpsc::unbounded_channel();
        let (delivered_tx, mut delivered) = mpsc::unbounded_channel();
        let pump =
            tokio::spawn(pump_in_process(agent_out_rx, to_agent_tx, coord_rx, Arc::default(), move |m| {
                delivered_tx.send(m).is_ok()
            }));
        agent_out_tx.send(event(1, 1)).unwrap();
        assert_eq!(delivered.recv().await.unwrap(), event(1, 1));
        coord_tx.send(ToMachine::Ack { run: "r".into(), shard: 1, seq: 1 }).unwrap();
        let cancel = ToMachine::Cancel { run: "r".into(), reason: ensemble_protocol::CancelReason::user() };
        coord_tx.send(cancel.clone()).unwrap();
        assert_eq!(to_agent_rx.recv().await.unwrap(), cancel, "the ack stays in the link");
        drop(coord_tx);
        assert!(to_agent_rx.recv().await.is_none(), "the agent's inbox closes with the coordinator");
        drop(agent_out_tx);
        pump.await.unwrap();
    }
}
