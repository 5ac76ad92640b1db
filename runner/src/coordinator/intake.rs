//! How much a machine may have said that is not yet handled and stored.
//!
//! Each frame a machine sends takes room from its connection's budget and
//! from the coordinator's: the room is given back when the message is
//! handled and, for an event, once the store has committed it (the room
//! travels with the event's acknowledgement). A machine that sends faster
//! than the store writes is not read until there is room again, so TCP slows
//! it down; the coordinator's memory for what machines said stays bounded
//! whatever they send.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Budget unit: permits are kibibytes.
const UNIT: usize = 1024;
/// What one machine may have in flight.
pub const PER_MACHINE: usize = 16 << 20;
/// What all machines together may have in flight.
pub const TOTAL: usize = 128 << 20;

/// Room taken by one message; given back when dropped.
#[derive(Debug)]
pub struct Intake {
    _machine: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

/// One connection's gate: [`Gate::admit`] waits for room.
pub struct Gate {
    machine: Arc<Semaphore>,
    total: Arc<Semaphore>,
}

/// The coordinator's budget, shared by every connection's [`Gate`].
pub struct Budget(Arc<Semaphore>);

impl Default for Budget {
    fn default() -> Self {
        Budget(Arc::new(Semaphore::new(TOTAL / UNIT)))
    }
}

impl Budget {
    /// Bytes of the budget in use (in whole kibibytes).
    pub fn in_use(&self) -> usize {
        (TOTAL / UNIT).saturating_sub(self.0.available_permits()) * UNIT
    }

    /// The gate of a new connection.
    pub fn gate(&self) -> Gate {
        Gate { machine: Arc::new(Semaphore::new(PER_MACHINE / UNIT)), total: self.0.clone() }
    }
}

impl Gate {
    /// Room for a frame of `bytes` (a frame over a budget takes all of it).
    pub async fn admit(&self, bytes: usize) -> Intake {
        let units =
            |budget: usize| u32::try_from(bytes.div_ceil(UNIT).clamp(1, budget / UNIT)).unwrap_or(u32::MAX);
        // Never closed, so acquiring cannot fail.
        let machine =
            self.machine.clone().acquire_many_owned(units(PER_MACHINE)).await.expect("never closed");
        let total = self.total.clone().acquire_many_owned(units(TOTAL)).await.expect("never closed");
        Intake { _machine: machine, _total: total }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_machine_waits_once_its_budget_is_in_flight_and_goes_on_when_it_is_given_back() {
        let budget = Budget::default();
        let gate = budget.gate();
        let held = gate.admit(PER_MACHINE - UNIT).await;
        let small = gate.admit(1).await;
        let next = gate.admit(10 * UNIT);
        tokio::pin!(next);
        assert!(futures::poll!(next.as_mut()).is_pending(), "the machine's budget is taken");
        // Another machine is not held up by this one.
        let _other = budget.gate().admit(PER_MACHINE).await;
        drop(held);
        drop(next.await);
        drop(small);
        // A frame larger than the budget still gets in, taking all of it.
        let big = gate.admit(4 * PER_MACHINE).await;
        let after = gate.admit(1);
        tokio::pin!(after);
        assert!(futures::poll!(after.as_mut()).is_pending());
        drop(big);
        after.await;
    }
}
