//! Coordination between the parts of one run, across machines: states
//! (counters with barriers) and topics (append-only message logs).
//!
//! State is scoped to the run. A state counts the signals it received; a
//! barrier waits until that count reaches a target. A topic keeps every
//! message, and each [`Subscription`] replays it from the first message, so a
//! late subscriber misses nothing. Every wait takes a timeout, and a barrier
//! fails at once with [`SyncError::Lost`] when a party of the run is lost.
//!
//! Since every test runs in a fresh instance, topics are also how tests of the
//! same suite pass data to each other.

use std::fmt;
use std::time::Duration;

use crate::bindings::ensemble::suite::sync as host;

/// Why a sync call failed. Converts into [`Failure`](crate::Failure) with `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncError {
    /// The wait ran past its timeout.
    Timeout(String),
    /// A party of the run was lost (its machine went away or its shard ended
    /// abnormally); the message names the role and the machine.
    Lost(String),
    /// The run was cancelled.
    Cancelled(String),
    /// The request itself was invalid.
    Invalid(String),
}

impl SyncError {
    /// The host's message.
    pub fn message(&self) -> &str {
        match self {
            Self::Timeout(message)
            | Self::Lost(message)
            | Self::Cancelled(message)
            | Self::Invalid(message) => message,
        }
    }
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout(message) => write!(f, "sync timed out: {message}"),
            Self::Lost(message) => write!(f, "a party of the run was lost: {message}"),
            Self::Cancelled(message) => write!(f, "the run was cancelled: {message}"),
            Self::Invalid(message) => write!(f, "invalid sync request: {message}"),
        }
    }
}

impl std::error::Error for SyncError {}

impl From<host::SyncError> for SyncError {
    fn from(error: host::SyncError) -> Self {
        match error {
            host::SyncError::Timeout(message) => Self::Timeout(message),
            host::SyncError::Lost(message) => Self::Lost(message),
            host::SyncError::Cancelled(message) => Self::Cancelled(message),
            host::SyncError::Invalid(message) => Self::Invalid(message),
        }
    }
}

/// Increments the counter of `state`; returns its new value (1 for the first
/// signal).
pub fn signal(state: &str) -> Result<u64, SyncError> {
    Ok(host::signal(state)?)
}

/// Waits until the counter of `state` reaches `target`, at most `timeout`.
pub fn barrier(state: &str, target: u64, timeout: Duration) -> Result<(), SyncError> {
    Ok(host::barrier(state, target, millis(timeout))?)
}

/// Signals `state`, then waits until its counter reaches `target`, at most
/// `timeout`; returns the counter's value after this signal.
pub fn signal_and_wait(state: &str, target: u64, timeout: Duration) -> Result<u64, SyncError> {
    Ok(host::signal_and_wait(state, target, millis(timeout))?)
}

/// Appends `payload` to `topic`; returns its sequence number (1 for the
/// first message).
pub fn publish(topic: &str, payload: &str) -> Result<u64, SyncError> {
    Ok(host::publish(topic, payload)?)
}

/// Opens a cursor over `topic`, starting at its first message.
pub fn subscribe(topic: &str) -> Subscription {
    Subscription { inner: host::subscribe(topic) }
}

/// A cursor over one topic, from its first message; see [`subscribe`].
#[derive(Debug)]
pub struct Subscription {
    inner: host::Subscription,
}

impl Subscription {
    /// The next message, waiting at most `timeout` for one to be published.
    pub fn next(&mut self, timeout: Duration) -> Result<String, SyncError> {
        Ok(self.inner.next(millis(timeout))?)
    }
}

/// A timeout in whole milliseconds, rounded up so that a short but non-zero
/// timeout still waits, and saturating at `u64::MAX`.
fn millis(timeout: Duration) -> u64 {
    let whole = timeout.as_millis() + u128::from(!timeout.subsec_nanos().is_multiple_of(1_000_000));
    u64::try_from(whole).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_to_milliseconds() {
        assert_eq!(millis(Duration::ZERO), 0);
        assert_eq!(millis(Duration::from_micros(1)), 1);
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::from_secs(30)), 30_000);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }

    #[test]
    fn errors_convert_and_display() {
        let error = SyncError::from(host::SyncError::Lost("role server on m1".into()));
        assert_eq!(error.message(), "role server on m1");
        assert_eq!(error.to_string(), "a party of the run was lost: role server on m1");
        let failure = crate::Failure::from(SyncError::Timeout("barrier ready".into()));
        assert_eq!(failure.message(), "sync timed out: barrier ready");
    }
}
