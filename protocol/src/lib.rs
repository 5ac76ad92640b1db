//! Ensemble's shared models: test plans, machines, runs, events and the wire
//! messages between the coordinator and the machines.
//!
//! This crate is the one definition of every contract outside the suite ABI
//! (which lives in `suites/wit`). It depends on serde only, so it builds for
//! native targets and for `wasm32-unknown-unknown` (the browser app).
//! Every wire type is owned, tagged with `type` in kebab-case, and round-trips
//! through JSON (see the tests beside each type).

pub mod api;
pub mod event;
pub mod exit;
pub mod plan;
pub mod units;
pub mod wire;

pub use event::{Event, EventKind, Outcome, ShardRef, Summary};
pub use plan::{Capabilities, Entry, Execution, Plan, PlanError, PlanType, Problem, Profile, Settings};

/// Version of the wire protocol spoken between coordinator, machines and watchers.
/// Bumped on every incompatible change of a type in this crate.
pub const PROTOCOL_VERSION: u32 = 1;
