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

use ensemble_protocol::wire::{FromMachine, ToMachine};
use tokio::sync::mpsc;

/// Messages kept until acknowledged.
#[derive(Default)]
pub struct Link {
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
                    while q.front().is_some_and(|(s, _)| *s <= seq) {
                        q.pop_front();
                    }
                }
                None
            }
            ToMachine::AckShardDone { run, shard } => {
                let key = (run, shard);
                self.done.remove(&key);
                self.events.remove(&key);
                self.held.remove(&key);
                None
            }
            // Counted lost: nothing more of it is taken, so nothing is kept;
            // the agent stops it.
            ToMachine::Lost { run, shard, reason } => {
                let key = (run, shard);
                self.done.remove(&key);
                self.events.remove(&key);
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
    deliver: impl Fn(FromMachine) -> bool,
) {
    let mut link = Link::default();
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
        let pump = tokio::spawn(pump_in_process(agent_out_rx, to_agent_tx, coord_rx, move |m| {
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
