//! Ensemble's runner: the `ensemble` binary's logic.
//!
//! - [`sandbox`]: the wasmtime sandbox that lists and runs tests.
//! - [`agent`]: a machine executing the shards assigned to it.
//! - [`coordinator`]: turns a plan into shards, dispatches them, serves sync
//!   and merges every machine's events into one numbered stream.
//! - [`report`]: reporters fed by that stream (terminal, JUnit, JSON lines).
//! - [`standalone`]: `ensemble run` on one host.
//! - [`cli`]: the command line.

// The API's warp filter chain is deep; release builds need more room to
// prove its futures `Unpin`.
#![recursion_limit = "512"]

pub mod agent;
pub mod cli;
pub mod coordinator;
pub mod demo;
pub mod remote;
pub mod report;
pub mod sandbox;
pub mod server;
pub mod standalone;
pub mod store;
pub mod suites;
pub mod tls;
