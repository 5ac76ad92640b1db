//! Faults into the run's services: stop, start, restart, signal, pause and
//! resume a program under test on whatever machine runs it (suite ABI 0.3).
//!
//! The coordinator routes each fault to the service's machine, and every
//! call answers once the fault is done: [`restart`] once the service is
//! ready again, [`stop`] once it exited. Every fault is an event on the
//! run's timeline. Only services the plan entry is granted may be faulted:
//!
//! ```toml
//! [[entries]]
//! suite = "my-client"
//! capabilities = { net = ["service:db"], faults = ["db"] }
//! ```
//!
//! ```no_run
//! use ensemble_sdk::prelude::*;
//!
//! fn survives_a_restart() -> TestResult {
//!     // … write through the service …
//!     fault::restart("db")?;
//!     // … read back what survived …
//!     Ok(())
//! }
//! # fn main() {}
//! ```
//!
//! The free functions act on every instance of the service; [`on`] picks
//! one: `fault::on("db").instance(1).kill(Signal::Kill)`.

use std::fmt;

use crate::bindings::ensemble::suite::services as host;

/// A signal [`kill`] sends to the service's process group.
pub use host::Signal;

/// Why a fault was not done. Converts into [`Failure`](crate::Failure) with `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultError {
    /// The plan entry is not granted faults into this service; the message
    /// names the grant to add.
    Denied(String),
    /// The run has no such service or instance.
    Unknown(String),
    /// The fault was tried and did not work (the service did not become
    /// ready again in time, its machine was lost, …).
    Failed(String),
    /// The run was cancelled, or is over.
    Cancelled(String),
}

impl FaultError {
    /// The host's message.
    pub fn message(&self) -> &str {
        match self {
            Self::Denied(m) | Self::Unknown(m) | Self::Failed(m) | Self::Cancelled(m) => m,
        }
    }
}

impl fmt::Display for FaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied(m) => write!(f, "fault refused: {m}"),
            Self::Unknown(m) => write!(f, "no such service: {m}"),
            Self::Failed(m) => write!(f, "fault failed: {m}"),
            Self::Cancelled(m) => write!(f, "the run was cancelled: {m}"),
        }
    }
}

impl std::error::Error for FaultError {}

impl From<host::FaultError> for FaultError {
    fn from(error: host::FaultError) -> Self {
        match error {
            host::FaultError::Denied(m) => Self::Denied(m),
            host::FaultError::Unknown(m) => Self::Unknown(m),
            host::FaultError::Failed(m) => Self::Failed(m),
            host::FaultError::Cancelled(m) => Self::Cancelled(m),
        }
    }
}

/// A service of the run, or one instance of it: what a fault acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    service: String,
    instance: Option<u32>,
}

/// Every instance of service `service`; [`Target::instance`] picks one.
pub fn on(service: &str) -> Target {
    Target { service: service.to_string(), instance: None }
}

impl Target {
    /// Only instance `index` (0-based, in the order of `service_addrs`).
    pub fn instance(mut self, index: u32) -> Target {
        self.instance = Some(index);
        self
    }

    /// SIGTERM, SIGKILL after its `stop_timeout`; returns once it exited.
    pub fn stop(&self) -> Result<(), FaultError> {
        host::stop(&self.service, self.instance).map_err(Into::into)
    }

    /// Starts it again if it is stopped (same ports, same `{dir}`);
    /// returns once it is ready.
    pub fn start(&self) -> Result<(), FaultError> {
        host::start(&self.service, self.instance).map_err(Into::into)
    }

    /// Stops and starts it; returns once it is ready again.
    pub fn restart(&self) -> Result<(), FaultError> {
        host::restart(&self.service, self.instance).map_err(Into::into)
    }

    /// Sends `signal`; returns once it is sent (for `Signal::Kill`, once it
    /// exited). An exit it causes fails nothing: the service is stopped.
    pub fn kill(&self, signal: Signal) -> Result<(), FaultError> {
        host::kill(&self.service, self.instance, signal).map_err(Into::into)
    }

    /// SIGSTOP: it holds still, its connections open, until [`Target::resume`].
    pub fn pause(&self) -> Result<(), FaultError> {
        host::pause(&self.service, self.instance).map_err(Into::into)
    }

    /// SIGCONT after a pause.
    pub fn resume(&self) -> Result<(), FaultError> {
        host::resume(&self.service, self.instance).map_err(Into::into)
    }
}

/// Stops every instance of `service`; see [`Target::stop`].
pub fn stop(service: &str) -> Result<(), FaultError> {
    on(service).stop()
}

/// Starts every stopped instance of `service`; see [`Target::start`].
pub fn start(service: &str) -> Result<(), FaultError> {
    on(service).start()
}

/// Restarts every instance of `service`; see [`Target::restart`].
pub fn restart(service: &str) -> Result<(), FaultError> {
    on(service).restart()
}

/// Sends `signal` to every instance of `service`; see [`Target::kill`].
pub fn kill(service: &str, signal: Signal) -> Result<(), FaultError> {
    on(service).kill(signal)
}

/// Pauses every instance of `service`; see [`Target::pause`].
pub fn pause(service: &str) -> Result<(), FaultError> {
    on(service).pause()
}

/// Resumes every instance of `service`; see [`Target::resume`].
pub fn resume(service: &str) -> Result<(), FaultError> {
    on(service).resume()
}
