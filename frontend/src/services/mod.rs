//! The only code that touches the network: the REST API over HTTP and a run's
//! event stream over a WebSocket (both gloo-net). Components call these and
//! turn the results into actions.

pub mod api;
pub mod events;
pub mod storage;

pub use api::{Api, ApiFailure};
