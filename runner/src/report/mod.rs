//! Reporters: consumers of a run's event stream.
//!
//! The terminal, JUnit XML, JSON lines, the static HTML page and (for servers) the store with its
//! live broadcast to WebSocket watchers are all just reporters: the
//! dispatcher hands each one every event in order and calls
//! [`Reporter::finish`] once after `run-finished`. None decides whether a run
//! passed: `run-finished` carries the verdict.

mod html;
mod json;
mod junit;
mod merge;
pub mod store;
mod terminal;

use ensemble_protocol::Event;

pub use html::HtmlReport;
pub use json::JsonLines;
pub use junit::JunitReporter;
pub use merge::{merge, read_json_lines};
pub use terminal::TerminalReporter;

/// A consumer of a run's events.
pub trait Reporter: Send {
    fn event(&mut self, event: &Event) -> anyhow::Result<()>;
    /// Called once, after the last event.
    fn finish(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}
