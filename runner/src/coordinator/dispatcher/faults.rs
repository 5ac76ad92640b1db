//! Faults: a test's ask to stop, start, restart, signal, pause or resume a
//! service of its run, routed to the machines of the service's instances.
//!
//! Rules kept here:
//! - Only an entry granted the service (`faults = ["db"]`) may fault it,
//!   and only a service of this run: the routing is by name among the
//!   run's own service shards, so another run's service cannot be named.
//! - The ask is an event (`asked`, on the caller's shard) before any
//!   machine hears of it, so a restarted coordinator knows every fault a
//!   machine may be doing; orders are sent again on a reconnect and a
//!   machine does each once (by [`FaultId`]).
//! - Each instance answers with its own `fault` event (`done` or
//!   `failed`); the caller's call is answered once every instance did,
//!   with the first failure if any. An instance that ends, or whose
//!   machine is lost, fails the faults it had not done.

use std::collections::{BTreeMap, BTreeSet};

use ensemble_protocol::event::{EventKind, ShardRef};
use ensemble_protocol::fault::{FaultAction, FaultId, FaultStep, MAX_FAULTS};
use ensemble_protocol::wire::{SyncFailure, SyncReply, ToMachine};

use super::{Dispatcher, SyncDone};

/// A fault some instances have not answered yet.
#[derive(Clone, Debug)]
pub(super) struct PendingFault {
    pub service: String,
    pub action: FaultAction,
    pub test: String,
    /// Shard numbers of the instances still to answer.
    pub waiting: BTreeSet<u32>,
    /// The first failure an instance reported.
    pub failure: Option<String>,
}

/// The faults of a run: those in progress, and how many were asked.
#[derive(Default)]
pub(super) struct Faults {
    pub pending: BTreeMap<FaultId, PendingFault>,
    pub asked: usize,
}

impl Dispatcher {
    /// Shard `caller`'s sync call `call`: a fault into `service`.
    pub(super) fn handle_fault(
        &mut self,
        caller: u32,
        call: u64,
        service: String,
        instance: Option<u32>,
        action: FaultAction,
        test: String,
    ) {
        let Some(&index) = self.by_no.get(&caller) else { return };
        let id = FaultId { caller, call };
        match self.route_fault(index, &service, instance, action) {
            Err((kind, message)) => {
                let reply = SyncReply::Error { kind, message };
                self.handle_sync_done(SyncDone { shard: caller, id: call, reply, op: None, read: None });
            }
            Ok(targets) => {
                self.faults.asked += 1;
                self.sync_calls.insert((caller, call), None);
                let sref = self.shards[index].shard.clone();
                let instances = u32::try_from(targets.len()).unwrap_or(u32::MAX);
                let test: String = test.chars().take(1024).collect();
                self.stream.emit(EventKind::Fault {
                    shard: sref,
                    service: service.clone(),
                    service_instance: instance,
                    action,
                    id,
                    test: test.clone(),
                    step: FaultStep::Asked { instances },
                });
                let waiting: BTreeSet<u32> = targets.iter().map(|&i| self.shards[i].shard.shard).collect();
                self.faults
                    .pending
                    .insert(id, PendingFault { service, action, test, waiting, failure: None });
                // Ordered once the ask is stored: a restarted coordinator
                // knows of every fault a machine may be doing.
                for i in targets {
                    let (m, shard) = (self.shards[i].machine_index, self.shards[i].shard.shard);
                    self.send_durable(m, ToMachine::Fault { run: self.run.clone(), shard, id, action });
                }
            }
        }
    }

    /// The service shards a fault goes to, or why it cannot be done.
    fn route_fault(
        &self,
        caller: usize,
        service: &str,
        instance: Option<u32>,
        action: FaultAction,
    ) -> Result<Vec<usize>, (SyncFailure, String)> {
        let role = &self.shards[caller].shard.role;
        if !self.assignments[caller].capabilities.may_fault(service) {
            return Err((
                SyncFailure::Denied,
                format!(
                    "role {role} may not {} service {service}: its plan entry is not granted faults into it \
                     (add `faults = [\"{service}\"]` to the entry's capabilities)",
                    action.describe()
                ),
            ));
        }
        if let Some(reason) = &self.cancelled {
            return Err((SyncFailure::Cancelled, format!("the run was cancelled: {reason}")));
        }
        if self.services_stopped {
            return Err((SyncFailure::Cancelled, "the run is over: its services are stopping".into()));
        }
        if self.faults.asked >= MAX_FAULTS {
            return Err((
                SyncFailure::Invalid,
                format!("the run asked for {MAX_FAULTS} faults, the most one run may"),
            ));
        }
        let of_service: Vec<usize> = self
            .service_shards
            .iter()
            .copied()
            .filter(|&i| self.assignments[i].service.as_ref().is_some_and(|s| s.name == service))
            .collect();
        if of_service.is_empty() {
            let mut names: Vec<&str> = self
                .service_shards
                .iter()
                .filter_map(|&i| self.assignments[i].service.as_deref())
                .map(|s| s.name.as_str())
                .collect();
            names.dedup();
            let known = if names.is_empty() { "it has none".to_string() } else { names.join(", ") };
            // A machine's word, echoed: at most a line of it.
            let shown: String = service.chars().take(64).collect();
            return Err((SyncFailure::Invalid, format!("the run has no service {shown:?} ({known})")));
        }
        let targets: Vec<usize> = match instance {
            None => of_service,
            Some(n) => {
                let one: Vec<usize> =
                    of_service.iter().copied().filter(|&i| self.shards[i].shard.instance == n).collect();
                if one.is_empty() {
                    return Err((
                        SyncFailure::Invalid,
                        format!(
                            "service {service} has {} instance(s) (0 to {}); there is no instance {n}",
                            of_service.len(),
                            of_service.len() - 1
                        ),
                    ));
                }
                one
            }
        };
        if let Some(&gone) = targets.iter().find(|&&i| self.done.contains(&self.shards[i].shard.shard)) {
            let s = &self.shards[gone].shard;
            return Err((SyncFailure::Failed, format!("service {service} on {} has ended", s.machine)));
        }
        Ok(targets)
    }

    /// A `fault` event from shard `index`: kept (its test filled in from
    /// the ask) when that shard runs the service and owes that fault; a
    /// warning in its place otherwise. Returns the event to store.
    pub(super) fn fault_event(&mut self, index: usize, event: EventKind) -> EventKind {
        let sref = self.shards[index].shard.clone();
        let EventKind::Fault { service, action, id, step, .. } = event else { return event };
        let owed = self.faults.pending.get(&id).filter(|p| {
            p.waiting.contains(&sref.shard)
                && p.service == service
                && p.action == action
                && self.assignments[index].service.as_ref().is_some_and(|s| s.name == service)
        });
        let (Some(pending), false) = (owed, matches!(step, FaultStep::Asked { .. })) else {
            crate::throttled!(warn, 30, run = %self.run, shard = sref.shard, "refusing a fault event this shard does not owe");
            return EventKind::Log {
                shard: sref,
                test: String::new(),
                level: "warn".into(),
                message: "the coordinator refused a fault event from a shard that does not owe it".into(),
            };
        };
        EventKind::Fault {
            test: pending.test.clone(),
            service_instance: Some(sref.instance),
            shard: sref,
            service,
            action,
            id,
            step,
        }
    }

    /// Instance shard `shard` answered fault `id` (its event is stored):
    /// once every instance did, the caller is answered.
    pub(super) fn fault_answered(&mut self, shard: u32, id: FaultId, failure: Option<String>) {
        if let Some(reply) = self.fault_settled(shard, id, failure)
            && !self.done.contains(&id.caller)
        {
            self.handle_sync_done(SyncDone { shard: id.caller, id: id.call, reply, op: None, read: None });
        }
    }

    /// Notes an instance's answer; the caller's reply once all answered.
    fn fault_settled(&mut self, shard: u32, id: FaultId, failure: Option<String>) -> Option<SyncReply> {
        let p = self.faults.pending.get_mut(&id)?;
        if !p.waiting.remove(&shard) {
            return None;
        }
        if p.failure.is_none() {
            p.failure = failure;
        }
        if !p.waiting.is_empty() {
            return None;
        }
        let p = self.faults.pending.remove(&id)?;
        Some(match p.failure {
            None => SyncReply::Done,
            Some(message) => SyncReply::Error { kind: SyncFailure::Failed, message },
        })
    }

    /// Instance shard `sref` ended (or was lost): the faults it owed fail,
    /// told on its lane by the coordinator.
    pub(super) fn faults_end_with(&mut self, sref: &ShardRef, why: &str) {
        let owed: Vec<(FaultId, PendingFault)> = self
            .faults
            .pending
            .iter()
            .filter(|(_, p)| p.waiting.contains(&sref.shard))
            .map(|(id, p)| (*id, p.clone()))
            .collect();
        for (id, p) in owed {
            let message =
                format!("service {} on {} ended before the fault was done: {why}", p.service, sref.machine);
            self.stream.emit(EventKind::Fault {
                shard: sref.clone(),
                service: p.service.clone(),
                service_instance: Some(sref.instance),
                action: p.action,
                id,
                test: p.test.clone(),
                step: FaultStep::Failed { message: message.clone() },
            });
            self.fault_answered(sref.shard, id, Some(message));
        }
    }

    /// The fault orders machine `m` has not answered: sent again.
    pub(super) fn resend_faults(&self, m: usize) {
        for (id, p) in &self.faults.pending {
            for shard in &p.waiting {
                let Some(&i) = self.by_no.get(shard) else { continue };
                if self.shards[i].machine_index == m {
                    let msg =
                        ToMachine::Fault { run: self.run.clone(), shard: *shard, id: *id, action: p.action };
                    self.send(m, msg);
                }
            }
        }
    }

    /// Whether shard `shard` owes some fault (a stop it reports is then the
    /// fault's, not the run's end).
    pub(super) fn owes_fault(&self, shard: u32) -> bool {
        self.faults.pending.values().any(|p| p.waiting.contains(&shard))
    }

    /// Rebuilds the faults of a resumed run from one stored event.
    pub(super) fn resume_fault(&mut self, sref: &ShardRef, event: &EventKind) {
        let EventKind::Fault { service, service_instance, action, id, test, step, .. } = event else {
            return;
        };
        match step {
            FaultStep::Asked { .. } => {
                self.faults.asked += 1;
                let waiting: BTreeSet<u32> = self
                    .service_shards
                    .iter()
                    .filter(|&&i| self.assignments[i].service.as_ref().is_some_and(|s| &s.name == service))
                    .filter(|&&i| service_instance.is_none_or(|n| self.shards[i].shard.instance == n))
                    .map(|&i| self.shards[i].shard.shard)
                    .collect();
                self.sync_calls.insert((id.caller, id.call), None);
                self.faults.pending.insert(
                    *id,
                    PendingFault {
                        service: service.clone(),
                        action: *action,
                        test: test.clone(),
                        waiting,
                        failure: None,
                    },
                );
            }
            FaultStep::Done { .. } | FaultStep::Failed { .. } => {
                let failure = match step {
                    FaultStep::Failed { message } => Some(message.clone()),
                    _ => None,
                };
                // Kept as the answer to the call, sent when it is resent.
                if let Some(reply) = self.fault_settled(sref.shard, *id, failure) {
                    self.sync_calls.insert((id.caller, id.call), Some(super::Kept::Reply(reply)));
                }
            }
        }
    }
}
