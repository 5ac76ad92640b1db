//! The REST API's resources, as the server returns them and clients send them.

use serde::{Deserialize, Serialize};

use crate::event::{ShardRef, Summary};
use crate::plan::{Plan, Problem};
use crate::wire::MachineInfo;

/// Whether a machine can take work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MachineState {
    Online,
    Busy,
    Offline,
}

/// A machine as the coordinator knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineStatus {
    #[serde(flatten)]
    pub info: MachineInfo,
    pub state: MachineState,
    /// The machine's clock minus the coordinator's, in microseconds.
    pub clock_offset_us: i64,
    /// Half the round trip of the best clock sample: the offset is right to ± this.
    pub clock_uncertainty_us: i64,
    /// Shards it is running now.
    pub running: Vec<ShardRef>,
    /// Coordinator time of the last message from it.
    pub last_seen_us: i64,
}

/// A test as listed by a stored suite.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestMeta {
    pub name: String,
    pub tags: Vec<String>,
    pub ignored: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// A stored suite (its bytes live content-addressed beside the database).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuiteMeta {
    pub sha256: String,
    pub name: String,
    pub size: u64,
    pub kind: String,
    pub tests: Vec<TestMeta>,
    pub imports: Vec<String>,
    pub uploaded_us: i64,
}

/// A stored plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredPlan {
    pub id: String,
    pub plan: Plan,
    pub created_us: i64,
    pub updated_us: i64,
}

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    Running,
    Passed,
    Failed,
    Cancelled,
    /// The coordinator stopped while the run was going.
    Interrupted,
}

/// A run, as listed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    pub id: String,
    pub plan: Plan,
    pub state: RunState,
    pub started_us: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_us: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
}

/// `POST /api/runs`: a plan to run, inline or by id. Inline plans name their
/// suites as `sha256:<hex>` (uploaded beforehand).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
}

/// The body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
    /// Field-level problems, for plan validation errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
}

/// The `sha256:` prefix of a suite reference inside a plan.
pub const SHA_PREFIX: &str = "sha256:";

/// The sha256 a plan entry's suite names, if it names one.
pub fn suite_sha(suite: &str) -> Option<&str> {
    suite.strip_prefix(SHA_PREFIX).filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}
