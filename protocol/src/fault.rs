//! Faults: what a test does to a service of its run, on whatever machine
//! runs it — stop, start, restart, a signal, pause and resume.
//!
//! A suite asks through the suite ABI's `services` interface; its runner
//! forwards the ask as a sync call ([`crate::wire::SyncCall::Fault`]) and the
//! coordinator, which alone knows where each service instance runs, checks
//! the entry's `faults` grant and orders the runner of each instance
//! ([`crate::wire::ToMachine::Fault`]). Every step is an event on the run's
//! timeline ([`crate::event::EventKind::Fault`]): `asked` on the caller's
//! shard (the coordinator's record), then `done` or `failed` on each
//! instance's shard (its runner's record, on that machine's corrected clock).
//!
//! A fault is named by its caller's shard and sync call id ([`FaultId`]):
//! resent after a reconnect it is recognised, never done twice.

use serde::{Deserialize, Serialize};

/// A signal a test may send to a service (`kill`). The runner sends it to
/// the service's whole process group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Signal {
    Term,
    Kill,
    Int,
    Hup,
    Quit,
    Usr1,
    Usr2,
}

impl Signal {
    pub const ALL: [Signal; 7] =
        [Signal::Term, Signal::Kill, Signal::Int, Signal::Hup, Signal::Quit, Signal::Usr1, Signal::Usr2];

    /// `SIGTERM`, `SIGKILL`, …
    pub fn name(self) -> &'static str {
        match self {
            Signal::Term => "SIGTERM",
            Signal::Kill => "SIGKILL",
            Signal::Int => "SIGINT",
            Signal::Hup => "SIGHUP",
            Signal::Quit => "SIGQUIT",
            Signal::Usr1 => "SIGUSR1",
            Signal::Usr2 => "SIGUSR2",
        }
    }

    /// The signal named `name` (`SIGTERM`, `TERM` or `term`).
    pub fn parse(name: &str) -> Option<Signal> {
        let upper = name.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        Signal::ALL.into_iter().find(|s| &s.name()[3..] == bare)
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a fault does to a service instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum FaultAction {
    /// SIGTERM, SIGKILL after the service's `stop_timeout`; done once it
    /// exited. A stopped service stays stopped until `start`.
    Stop,
    /// Starts a stopped service again (same ports, same `{dir}`); done once
    /// it is ready again. A running one is left alone.
    Start,
    /// `stop`, then `start`: done once it is ready again.
    Restart,
    /// Sends a signal; done once it is sent (SIGKILL: once the service
    /// exited). An exit it causes is no failure: the service is stopped.
    Kill { signal: Signal },
    /// SIGSTOP: the service holds still, its connections open.
    Pause,
    /// SIGCONT after a pause.
    Resume,
}

impl FaultAction {
    /// `stop`, `kill SIGKILL`, …: for people.
    pub fn describe(&self) -> String {
        match self {
            FaultAction::Stop => "stop".into(),
            FaultAction::Start => "start".into(),
            FaultAction::Restart => "restart".into(),
            FaultAction::Kill { signal } => format!("kill {signal}"),
            FaultAction::Pause => "pause".into(),
            FaultAction::Resume => "resume".into(),
        }
    }
}

/// Which fault: the caller's shard and its sync call id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FaultId {
    /// The shard whose test asked.
    pub caller: u32,
    /// Its sync call id.
    pub call: u64,
}

/// Where a fault is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum FaultStep {
    /// The coordinator took the ask and ordered the instances (event of the
    /// caller's shard). `instances`: how many.
    Asked { instances: u32 },
    /// The instance did it (event of the instance's shard), in `took_ms`.
    Done { took_ms: u64 },
    /// It could not be done; `message` says why.
    Failed { message: String },
}

/// The most faults one run may ask for (each is a sync call and events).
pub const MAX_FAULTS: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_read_as_people_write_them() {
        for s in Signal::ALL {
            assert_eq!(Signal::parse(s.name()), Some(s));
            assert_eq!(Signal::parse(&s.name()[3..].to_lowercase()), Some(s));
        }
        assert_eq!(Signal::parse("SIGSTOP"), None, "pause is its own fault");
        let json = serde_json::to_string(&FaultAction::Kill { signal: Signal::Usr1 }).unwrap();
        assert_eq!(json, r#"{"action":"kill","signal":"usr1"}"#);
        assert_eq!(serde_json::from_str::<FaultAction>(&json).unwrap().describe(), "kill SIGUSR1");
        let step: FaultStep = serde_json::from_str(r#"{"step":"done","took_ms":3}"#).unwrap();
        assert_eq!(step, FaultStep::Done { took_ms: 3 });
    }
}
