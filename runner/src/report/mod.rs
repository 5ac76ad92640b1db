//! Reporters: consumers of a run's event stream.
//!
//! The terminal, JUnit XML, JSON lines and (for servers) the store with its
//! live broadcast to WebSocket watchers are all just reporters: the
//! dispatcher hands each one every event in order and calls
//! [`Reporter::finish`] once after `run-finished`. None decides whether a run
//! passed: `run-finished` carries the verdict.

mod json;
mod junit;
pub mod store;
mod terminal;

use ensemble_protocol::Event;

pub use json::JsonLines;
pub use junit::JunitReporter;
pub use terminal::TerminalReporter;

/// A consumer of a run's events.
pub trait Reporter: Send {
    fn event(&mut self, event: &Event) -> anyhow::Result<()>;
    /// Called once, after the last event.
    fn finish(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}
