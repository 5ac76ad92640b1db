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

/// The faults of a run's events, summed up for people: how many were
/// asked, done and failed, then one line per service (each action's
/// count), then each failure. Empty when the run had none.
pub fn fault_summary(events: &[Event]) -> Vec<String> {
    use ensemble_protocol::EventKind;
    use ensemble_protocol::fault::FaultStep;
    use std::collections::BTreeMap;

    let (mut asked, mut done, mut failed) = (0usize, 0usize, Vec::new());
    let mut per_service: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    for e in events {
        let EventKind::Fault { shard, service, action, step, .. } = &e.kind else { continue };
        match step {
            FaultStep::Asked { .. } => {
                asked += 1;
                *per_service.entry(service).or_default().entry(action.describe()).or_default() += 1;
            }
            FaultStep::Done { .. } => done += 1,
            FaultStep::Failed { message } => failed.push(format!(
                "  {} of {service} on {} failed: {message}",
                action.describe(),
                shard.machine
            )),
        }
    }
    if asked == 0 && failed.is_empty() {
        return Vec::new();
    }
    let mut out = vec![format!("Faults: {asked} asked, {done} done by instances, {} failed", failed.len())];
    for (service, actions) in per_service {
        let each: Vec<String> = actions.iter().map(|(a, n)| format!("{a} ×{n}")).collect();
        out.push(format!("  service {service}: {}", each.join(", ")));
    }
    out.extend(failed);
    out
}
