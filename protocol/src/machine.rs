//! Machines as they describe themselves: name, labels, slots and facts.
//!
//! A leaf module: plans select machines by these labels, the wire carries
//! them in `hello`, and the API lists them; none of those depend on each other
//! through it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A machine's self-description, sent when it joins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineInfo {
    pub name: String,
    /// Includes the built-in `os` and `arch` labels.
    pub labels: BTreeMap<String, String>,
    /// How many shards it runs at once.
    pub slots: u32,
    pub facts: Facts,
}

/// What a machine reports about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    pub os: String,
    pub arch: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub ensemble_version: String,
    pub wasmtime_version: String,
}
