//! Runs waiting for their machines, first come first served.
//!
//! A run whose coordinating shards would find their slots busy with other
//! runs waits here instead of starting partially (see [`super::matching`]).
//! While it waits, it holds back the runs that came after it and want any of
//! the same machines, even those that could start now: otherwise a stream of
//! small runs could keep a large one waiting for ever. Each run takes a
//! ticket when it is submitted; a lower ticket came first.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default)]
pub struct Queue {
    next: u64,
    /// Ticket → the waiting run and the machines it may be placed on.
    waiting: BTreeMap<u64, (String, BTreeSet<String>)>,
}

impl Queue {
    /// A new run's place in line.
    pub fn ticket(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Run `run` (ticket `ticket`) waits for `machines`.
    pub fn wait(&mut self, ticket: u64, run: &str, machines: BTreeSet<String>) {
        self.waiting.insert(ticket, (run.to_string(), machines));
    }

    /// The first run that came before `ticket` and waits for any of
    /// `machines`.
    pub fn ahead<'a>(&self, ticket: u64, machines: impl IntoIterator<Item = &'a str>) -> Option<&str> {
        let wanted: BTreeSet<&str> = machines.into_iter().collect();
        self.waiting
            .range(..ticket)
            .find(|(_, (_, theirs))| theirs.iter().any(|m| wanted.contains(m.as_str())))
            .map(|(_, (run, _))| run.as_str())
    }

    /// The run started or ended: it waits no more.
    pub fn leave(&mut self, ticket: u64) {
        self.waiting.remove(&ticket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_run_holds_back_later_runs_on_its_machines_only() {
        let mut q = Queue::default();
        let (first, second) = (q.ticket(), q.ticket());
        q.wait(first, "run-1", ["a".to_string(), "b".to_string()].into());
        assert_eq!(q.ahead(second, ["b"]), Some("run-1"));
        assert_eq!(q.ahead(second, ["c"]), None, "other machines are free to use");
        assert_eq!(q.ahead(first, ["a"]), None, "nobody is ahead of the first");
        q.leave(first);
        assert_eq!(q.ahead(second, ["a", "b"]), None);
    }
}
