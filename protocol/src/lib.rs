//! Ensemble's shared models: test plans, machines, runs, events, verdicts,
//! the wire messages between the coordinator and its machines, and the REST
//! API.
//!
//! This crate is the one definition of every contract outside the suite ABI
//! (which lives in `suites/wit`). It does no I/O and depends on serde (and a
//! small regex engine for filters, and base64 for attachment bytes) only, so it builds for native targets and
//! for `wasm32-unknown-unknown` (the browser app). Every wire type is owned, tagged with `type` in kebab-case, and
//! round-trips through JSON (see the tests beside each type).
//!
//! Modules, each depending only on those listed before it:
//!
//! - [`units`]: durations and byte sizes as people write them (`30s`, `128MiB`).
//! - [`exit`]: the `ensemble` process's documented exit codes.
//! - [`machine`]: a machine's name, labels, slots and facts.
//! - [`grant`]: the one parser and matcher of `net` and `env` grants.
//! - [`filter`]: test selection: filter expressions, `run_ignored`, and
//!   what a shard runs of its suite's tests.
//! - [`fault`]: faults tests inject into services (stop, restart, kill, pause).
//! - [`attachment`]: the names, sizes and wire form of files tests attach.
//! - [`outcome`]: how a test ended, and counts of outcomes.
//! - [`verdict`]: a run's final state and why it stopped, decided once.
//! - [`event`]: a run's events.
//! - [`matrix`]: a run's outcomes across profiles (test × profile).
//! - [`plan`]: test plans, their parsing and validation (`Plan::problems`).
//! - [`wire`]: coordinator ⇄ machine messages.
//! - [`api`]: the REST routes, their types and the typed error body.

pub mod api;
pub mod attachment;
pub mod event;
pub mod exit;
pub mod fault;
pub mod filter;
pub mod grant;
pub mod machine;
pub mod matrix;
#[cfg(feature = "openapi")]
mod openapi;
pub mod outcome;
pub mod plan;
pub mod service;
pub mod units;
pub mod verdict;
pub mod wire;

pub use event::{Event, EventKind, Outcome, ShardRef, Summary};
pub use plan::{
    Capabilities, Entry, Execution, Notify, NotifyFormat, NotifyOn, Plan, PlanError, PlanType, Problem,
    Profile, Schedule, Settings,
};
pub use verdict::{CancelReason, Verdict};

/// Version of the wire protocol spoken between coordinator, machines and watchers.
/// Bumped on every incompatible change of a type in this crate.
pub const PROTOCOL_VERSION: u32 = 8;
