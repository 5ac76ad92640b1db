//! Ensemble's runner: the `ensemble` binary's logic (`main.rs` only calls
//! [`cli::main`]).
//!
//! - [`sandbox`]: the wasmtime sandbox that inspects suites and runs tests,
//!   each in a fresh instance, with limits and granted capabilities only.
//! - [`agent`]: a machine executing the shards assigned to it; its [`agent::link`]
//!   (resend buffer, acknowledgements) is used by every wiring, and
//!   [`agent::join`] is the remote one (`ensemble runner --join`).
//! - [`coordinator`]: the service core — machines and clocks, placement, the
//!   run [`coordinator::Dispatcher`], sync, and plans/suites/runs with their
//!   lifecycle.
//! - [`server`]: `ensemble serve`'s HTTP skin over the coordinator.
//! - [`store`]: SQLite (WAL) under `--data-dir`, suite bytes by sha256.
//! - [`report`]: reporters fed by a run's event stream: terminal, JUnit,
//!   JSON lines, and the store with the live broadcast.
//! - [`prepare`]: the one path from a plan file to a runnable plan (resolve,
//!   build, load or upload suites).
//! - [`suites`]: resolving an entry's suite to bytes (building crates).
//! - [`standalone`]: `ensemble run` on one host: the dispatcher with
//!   in-process machines.
//! - [`demo`]: `ensemble demo`, a whole local setup.
//! - [`scaffold`]: `ensemble suite new`, a suite crate to start from.
//! - [`tls`]: the server side of TLS.
//! - [`secret`]: kept tokens, machine identities, constant-time compares.
//! - [`signals`]: stopping cleanly on Ctrl-C and SIGTERM.
//! - [`time`]: the wall clock every part stamps events with.
//! - [`throttle`]: log lines a peer can cause, at a bounded rate.
//! - [`metrics`]: the process's Prometheus metrics (`/metrics`).
//! - [`cli`]: the command line and its exit codes.
//! - [`config`]: the optional config file of `serve` and `runner`.
//! - [`fuzzing`]: entry points of the fuzz targets (`fuzz/`) and their corpora.
//!
//! - [`listen`]: the accept loop of the server and of a runner's metrics.
//!
//! The modules of the coordinator, its store, the browser app and the
//! reports (and the commands that use them) are built with the
//! `coordinator` feature, on by default. Without it (`cargo build -p
//! ensemble-runner --no-default-features`), the binary is a runner only:
//! `ensemble runner --join`, for the machines of a fleet.
//!
//! The REST client is its own crate, `ensemble-client`.

// The API's warp filter chain is deep; release builds need more room to
// prove its futures `Unpin`.
#![recursion_limit = "512"]

pub mod agent;
pub mod burst;
pub mod cli;
pub mod config;
#[cfg(feature = "coordinator")]
pub mod coordinator;
#[cfg(feature = "coordinator")]
pub mod demo;
#[cfg(feature = "coordinator")]
pub mod fuzzing;
pub mod listen;
pub mod metrics;
#[cfg(feature = "coordinator")]
pub mod prepare;
#[cfg(feature = "coordinator")]
pub mod report;
pub mod sandbox;
#[cfg(feature = "coordinator")]
pub mod scaffold;
pub mod secret;
#[cfg(feature = "coordinator")]
pub mod server;
pub mod services;
pub mod signals;
#[cfg(feature = "coordinator")]
pub mod standalone;
#[cfg(feature = "coordinator")]
pub mod store;
#[cfg(feature = "coordinator")]
pub mod suites;
pub mod throttle;
pub mod time;
#[cfg(feature = "coordinator")]
pub mod tls;

/// The cores this process may use (its CPU quota and affinity), read once:
/// the standard library reads the cgroup files again at every call.
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
