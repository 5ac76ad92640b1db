//! The REST API, whole: its routes, the request, query and response types of
//! each, and the one error body.
//!
//! The server's handlers return these types and the clients (the CLI's
//! `Client`, the tests, the browser's `services::api`) read them; no side
//! builds or parses JSON by hand. Paths come from [`routes`], which encodes
//! every path segment. An error is always [`ApiError`]: a typed
//! [`ErrorKind`] that fixes the HTTP status, a message for people, and
//! field-level details for plan problems.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::event::{Outcome, ShardRef, Summary};
use crate::machine::MachineInfo;
use crate::plan::{Plan, Problem};
pub use crate::plan::{SHA_PREFIX, suite_sha};
use crate::verdict::Verdict;

/// Whether a machine can take work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum MachineState {
    Online,
    Busy,
    /// Finishing its shards, taking no new ones; it stops once it is idle
    /// and no run it is part of goes on.
    Draining,
    /// Its connection closed: it is lost at `lost_at_us` unless it
    /// reconnects first (its shards then go on).
    Disconnected,
    Offline,
    /// Drained and gone as asked: it finished its shards and its runner
    /// stopped. The drain ends there: the next process under its name (or
    /// an undrain) starts afresh.
    Drained,
}

impl MachineState {
    /// Connected and usable (running, idle or finishing its shards).
    pub fn is_connected(self) -> bool {
        matches!(self, MachineState::Online | MachineState::Busy | MachineState::Draining)
    }
}

/// A machine as the coordinator knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MachineStatus {
    #[serde(flatten)]
    pub info: MachineInfo,
    pub state: MachineState,
    /// The machine's clock minus the coordinator's, in microseconds.
    pub clock_offset_us: i64,
    /// Half the round trip of the best clock sample: the offset is right to ± this.
    pub clock_uncertainty_us: i64,
    /// Shards it is running now, with their runs.
    pub running: Vec<RunningShard>,
    /// Coordinator time of the last message from it.
    pub last_seen_us: i64,
    /// The server's own machine (it cannot be disconnected or drained).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local: bool,
    /// When a disconnected machine is given up as lost (coordinator time,
    /// µs), unless it reconnects first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_at_us: Option<i64>,
}

/// A shard a machine is running, and the run it is part of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunningShard {
    pub run: String,
    #[serde(flatten)]
    pub shard: ShardRef,
}

/// A test as listed by a stored suite.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TestMeta {
    pub name: String,
    pub tags: Vec<String>,
    pub ignored: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// How a declared param's text is read: the suite ABI's `param-type`
/// (0.2). Plans write params as TOML strings, numbers or booleans; suites
/// receive text, checked against this before anything runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Integer,
    Float,
    Boolean,
    Duration,
}

impl ParamType {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Float => "float",
            ParamType::Boolean => "boolean",
            ParamType::Duration => "duration",
        }
    }

    /// Whether `value` reads as this type; the error says what was expected.
    pub fn check(self, value: &str) -> Result<(), String> {
        let fits = match self {
            ParamType::String => true,
            ParamType::Integer => value.trim().parse::<i64>().is_ok(),
            ParamType::Float => value.trim().parse::<f64>().is_ok_and(f64::is_finite),
            ParamType::Boolean => matches!(value.trim(), "true" | "false"),
            ParamType::Duration => crate::units::param_duration(value).is_some(),
        };
        if fits {
            return Ok(());
        }
        let expected = match self {
            ParamType::String => "text",
            ParamType::Integer => "a whole number such as 100",
            ParamType::Float => "a number such as 0.5",
            ParamType::Boolean => "true or false",
            ParamType::Duration => {
                "whole numbers with units ns, us, ms, s, m, h or d, such as \"30s\", \"2m\" or \"1h 30m\""
            }
        };
        Err(format!("{value:?} is not {} ({expected})", self.article()))
    }

    fn article(self) -> &'static str {
        match self {
            ParamType::Integer => "an integer",
            ParamType::Float => "a float",
            ParamType::Boolean => "a boolean",
            ParamType::Duration => "a duration",
            ParamType::String => "a string",
        }
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parameter a suite declares it reads (suite ABI 0.2 `describe`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ParamMeta {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ParamType,
    /// A plan entry must set it.
    #[serde(default)]
    pub required: bool,
    /// What the suite uses when the entry does not set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// One line for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub help: String,
}

/// A stored suite (its bytes live content-addressed beside the database).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SuiteMeta {
    pub sha256: String,
    pub name: String,
    pub size: u64,
    pub kind: String,
    pub tests: Vec<TestMeta>,
    pub imports: Vec<String>,
    #[serde(default)]
    pub exports: Vec<String>,
    pub uploaded_us: i64,
    /// The params the suite declares (suite ABI 0.2); `None` when it
    /// cannot say (ABI 0.1 suites, WASI commands): its entries' params are
    /// then not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Vec<ParamMeta>>,
    /// The suite ABI (`major.minor`, e.g. `0.2`) a suite-world component
    /// was built for; `None` for WASI commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abi: Option<String>,
}

/// The suite ABI's interface for coordination, as a component imports it
/// (`ensemble:suite/sync@<version>`).
pub const SYNC_INTERFACE: &str = "ensemble:suite/sync@";

/// Whether a component with these imports uses sync: its instances may wait
/// for each other, so they must run at the same time.
pub fn imports_sync(imports: &[String]) -> bool {
    imports.iter().any(|i| i.starts_with(SYNC_INTERFACE))
}

/// A suite's kind as people read it: `ensemble suite (ABI 0.2)`, or the
/// kind alone when it has no suite ABI (a WASI command).
pub fn kind_shown(kind: &str, abi: Option<&str>) -> String {
    match abi {
        Some(abi) => format!("{kind} (ABI {abi})"),
        None => kind.to_string(),
    }
}

impl SuiteMeta {
    /// See [`imports_sync`].
    pub fn uses_sync(&self) -> bool {
        imports_sync(&self.imports)
    }

    /// See [`kind_shown`].
    pub fn kind_shown(&self) -> String {
        kind_shown(&self.kind, self.abi.as_deref())
    }

    /// What the suite list says of this suite.
    pub fn summary(&self) -> SuiteSummary {
        SuiteSummary {
            sha256: self.sha256.clone(),
            name: self.name.clone(),
            size: self.size,
            kind: self.kind.clone(),
            test_count: self.tests.len() as u64,
            imports: self.imports.clone(),
            exports: self.exports.clone(),
            uploaded_us: self.uploaded_us,
            params: self.params.clone(),
            abi: self.abi.clone(),
        }
    }
}

/// A stored suite as the suite list (`GET /api/suites`) gives it: all of
/// [`SuiteMeta`] but its tests, which it counts. A suite may have thousands
/// of tests, and a catalog needs only their number; one suite's tests are at
/// `GET /api/suites/{sha256}/inspect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SuiteSummary {
    pub sha256: String,
    pub name: String,
    pub size: u64,
    pub kind: String,
    pub test_count: u64,
    pub imports: Vec<String>,
    #[serde(default)]
    pub exports: Vec<String>,
    pub uploaded_us: i64,
    /// See [`SuiteMeta::params`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Vec<ParamMeta>>,
    /// See [`SuiteMeta::abi`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abi: Option<String>,
}

impl SuiteSummary {
    /// See [`imports_sync`].
    pub fn uses_sync(&self) -> bool {
        imports_sync(&self.imports)
    }

    /// See [`kind_shown`].
    pub fn kind_shown(&self) -> String {
        kind_shown(&self.kind, self.abi.as_deref())
    }
}

/// A stored plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StoredPlan {
    pub id: String,
    pub plan: Plan,
    pub created_us: i64,
    pub updated_us: i64,
    /// Where each of the plan's schedules stands, in the plan's order
    /// (filled in by the server when it answers; not stored).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ScheduleStatus>,
}

/// Where one of a plan's schedules stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleStatus {
    /// The schedule, as [`crate::Schedule::key`] writes it.
    pub schedule: String,
    /// When it fires next (µs since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_us: Option<i64>,
    /// The fire time it last ran for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fired_us: Option<i64>,
    /// The run it last started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// Why its last firing started no run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// Waiting for its machines' slots (its events say for what).
    Queued,
    Running,
    Passed,
    Failed,
    Cancelled,
    /// The coordinator stopped while the run was going.
    Interrupted,
}

impl From<Verdict> for RunState {
    fn from(v: Verdict) -> RunState {
        match v {
            Verdict::Passed => RunState::Passed,
            Verdict::Failed => RunState::Failed,
            Verdict::Cancelled => RunState::Cancelled,
        }
    }
}

/// A run, as listed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunMeta {
    pub id: String,
    pub plan: Plan,
    pub state: RunState,
    pub started_us: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_us: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// The run whose failures this run runs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reruns: Option<String>,
    /// The schedule that started the run (`0 2 * * * (UTC)`), if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<String>,
}

/// One past result of a test (`GET /api/tests/history`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PastResult {
    pub run: String,
    pub outcome: Outcome,
    pub duration_ms: u64,
    pub attempt: u32,
    pub at_us: i64,
}

/// A test's history across runs of its plan: a test is its plan's name,
/// its role and its name (whatever the suite's build).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TestHistory {
    pub plan: String,
    pub role: String,
    pub test: String,
    /// Newest first.
    pub results: Vec<PastResult>,
    /// Passed (a flaky pass included) of the results that passed or failed.
    pub pass_rate: Option<f64>,
    /// Results that passed only on a retry.
    pub flaky: u32,
    /// Times the outcome turned from passing to failing or back, oldest to
    /// newest (skipped, cancelled and lost results ignored: they say
    /// nothing of the test — a lost one went with its machine).
    pub flips: u32,
    pub duration_p50_ms: Option<u64>,
    pub duration_p90_ms: Option<u64>,
}

impl TestHistory {
    /// The history of `results` (newest first).
    pub fn of(plan: &str, role: &str, test: &str, results: Vec<PastResult>) -> TestHistory {
        let says =
            |r: &&PastResult| !matches!(r.outcome, Outcome::Skipped | Outcome::Cancelled | Outcome::Lost);
        let decided: Vec<bool> = results.iter().rev().filter(says).map(|r| !r.outcome.is_failure()).collect();
        let passed = decided.iter().filter(|p| **p).count();
        let flips = decided.windows(2).filter(|w| w[0] != w[1]).count() as u32;
        let mut durations: Vec<u64> = results.iter().filter(says).map(|r| r.duration_ms).collect();
        durations.sort_unstable();
        let percentile =
            |p: usize| (!durations.is_empty()).then(|| durations[(durations.len() - 1) * p / 100]);
        TestHistory {
            plan: plan.to_string(),
            role: role.to_string(),
            test: test.to_string(),
            pass_rate: (!decided.is_empty()).then(|| passed as f64 / decided.len() as f64),
            flaky: results.iter().filter(|r| r.outcome == Outcome::Flaky).count() as u32,
            flips,
            duration_p50_ms: percentile(50),
            duration_p90_ms: percentile(90),
            results,
        }
    }

    /// Flaky: it passed on a retry, or it flipped between passing and
    /// failing, in the results it has.
    pub fn is_flaky(&self) -> bool {
        self.flaky > 0 || self.flips > 0
    }
}

/// `GET /api/tests/history` (one test: `plan`, `role` and `test`) and
/// `GET /api/tests/flaky` (a plan's flaky tests: `plan`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    pub plan: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
    /// How many results (one test) or runs (a plan's flaky tests) to read;
    /// 20 unless given, at most 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl HistoryQuery {
    pub const DEFAULT_LIMIT: u32 = 20;
    pub const MAX_LIMIT: u32 = 1000;

    pub fn limit(&self) -> u32 {
        self.limit.unwrap_or(Self::DEFAULT_LIMIT).clamp(1, Self::MAX_LIMIT)
    }

    /// `path?plan=…&role=…` with every value percent-encoded.
    pub fn url(&self, path: &str) -> String {
        with_query(
            path,
            &[
                ("plan", Some(self.plan.clone())),
                ("role", self.role.clone()),
                ("test", self.test.clone()),
                ("limit", self.limit.map(|n| n.to_string())),
            ],
        )
    }
}

/// `path` with the given parameters as its query (encoded), in order.
fn with_query(path: &str, params: &[(&str, Option<String>)]) -> String {
    let query: Vec<String> =
        params.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v)))).collect();
    if query.is_empty() { path.to_string() } else { format!("{path}?{}", query.join("&")) }
}

/// `POST /api/runs`: a plan to run, inline or by id, or the failures of a
/// finished run (its failed, timed-out, crashed and lost tests, on its
/// plan). Inline plans name their suites as `sha256:<hex>` (uploaded
/// beforehand). Exactly one of the three.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_failed: Option<String>,
}

/// What kind of error an API call met; it fixes the HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The request is malformed (a query, a JSON body, an encoding).
    BadRequest,
    /// No token, or a wrong one.
    Unauthorized,
    /// The request came from a place this server does not answer (another
    /// origin, a foreign host name).
    Forbidden,
    NotFound,
    MethodNotAllowed,
    /// The resource is not in a state that allows this (a run not running).
    Conflict,
    /// The body is over the route's limit.
    PayloadTooLarge,
    /// The body's content type is not the route's.
    UnsupportedMediaType,
    /// The plan is invalid; `details` lists each problem at its field path.
    InvalidPlan,
    /// The upload is not a usable suite.
    InvalidSuite,
    /// The plan is valid but the machines online now cannot run it.
    Unsatisfiable,
    /// The server's store cannot take writes (its disk is full, or fails):
    /// nothing was changed; try again once an operator made room.
    StoreUnavailable,
    /// The server failed (I/O, a bug).
    Internal,
}

impl ErrorKind {
    /// The kind an error sent with `status` has, for an answer with no body
    /// to read it from (a HEAD): the first kind sent with that status, else
    /// a bad request (4xx) or an internal error (5xx).
    pub fn of_status(status: u16) -> ErrorKind {
        use ErrorKind::*;
        [
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            MethodNotAllowed,
            Conflict,
            PayloadTooLarge,
            UnsupportedMediaType,
            StoreUnavailable,
        ]
        .into_iter()
        .find(|k| k.status() == status)
        .unwrap_or(if status >= 500 { Internal } else { BadRequest })
    }

    /// The HTTP status an error of this kind is sent with.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::Conflict | ErrorKind::Unsatisfiable => 409,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::InvalidPlan | ErrorKind::InvalidSuite => 422,
            ErrorKind::StoreUnavailable => 507,
            ErrorKind::Internal => 500,
        }
    }

    /// Whether the caller's input was at fault (the CLI exits 2 for these).
    pub fn is_bad_input(self) -> bool {
        matches!(
            self,
            ErrorKind::BadRequest
                | ErrorKind::InvalidPlan
                | ErrorKind::InvalidSuite
                | ErrorKind::Unsatisfiable
                | ErrorKind::PayloadTooLarge
        )
    }
}

/// The body of every error response: `{ "error": { "kind", "message", "details" } }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiError {
    pub error: ErrorBody,
}

/// What went wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub kind: ErrorKind,
    pub message: String,
    /// Field-level problems (for [`ErrorKind::InvalidPlan`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Problem>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError { error: ErrorBody { kind, message: message.into(), details: Vec::new() } }
    }

    pub fn with_details(mut self, details: Vec<Problem>) -> ApiError {
        self.error.details = details;
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.error.kind
    }

    pub fn message(&self) -> &str {
        &self.error.message
    }

    pub fn details(&self) -> &[Problem] {
        &self.error.details
    }

    pub fn status(&self) -> u16 {
        self.error.kind.status()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.error.message)?;
        // Details the message already names are not repeated.
        for p in self.error.details.iter().filter(|p| !self.error.message.contains(&p.to_string())) {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

impl From<crate::plan::PlanError> for ApiError {
    fn from(e: crate::plan::PlanError) -> ApiError {
        let message = match e.problems.as_slice() {
            [one] => format!("invalid plan: {one}"),
            many => format!("invalid plan: {} problems", many.len()),
        };
        ApiError::new(ErrorKind::InvalidPlan, message).with_details(e.problems)
    }
}

/// `GET /api/health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    pub ok: bool,
    pub version: String,
    pub protocol: u32,
    /// The server's clock (µs since the Unix epoch), which run events are
    /// timed by: a client lines up its own with it (the browser's elapsed
    /// time of a run).
    #[serde(default)]
    pub now_us: i64,
}

/// `GET /readyz`: whether the server can do its work now (200 when
/// `ready`, 503 when not), with each check's finding (`"ok"` or why not).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Readiness {
    pub ready: bool,
    pub checks: BTreeMap<String, String>,
}

/// One attempt to call a plan's webhook about a finished run
/// (`GET /api/runs/{id}/deliveries`, oldest first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Delivery {
    pub url: String,
    /// From 1; a failed attempt is retried with backoff, a few times.
    pub attempt: u32,
    pub at_us: i64,
    /// The receiver's HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why the attempt failed (no answer, or not a 2xx one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub delivered: bool,
}

/// `POST /api/runs` answers with the new run's id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunCreated {
    pub id: String,
}

/// The body of `POST /api/runs/{id}/cancel` (optional, every field too):
/// who asks and why, kept with the run and shown with its verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Who asks (at most [`CancelRequest::MAX_BY`] bytes); without it, the
    /// run says "cancelled by a user".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Why (at most [`CancelRequest::MAX_WHY`] bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl CancelRequest {
    pub const MAX_BY: usize = 200;
    pub const MAX_WHY: usize = 2000;

    /// The request's fields, or what is wrong with one (named).
    pub fn check(&self) -> Result<(), String> {
        for (field, value, most) in [("by", &self.by, Self::MAX_BY), ("why", &self.why, Self::MAX_WHY)] {
            if let Some(v) = value {
                if v.len() > most {
                    return Err(format!(
                        "the cancel's {field} is {} bytes; at most {most} are kept",
                        v.len()
                    ));
                }
                if v.chars().any(char::is_control) {
                    return Err(format!("the cancel's {field} has a control character"));
                }
            }
        }
        Ok(())
    }
}

/// `POST /api/runs/{id}/cancel`: the run was asked to stop, and the cancel
/// is stored (a coordinator restarted after this finishes cancelling).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunCancelling {
    pub cancelling: String,
}

/// `DELETE /api/plans/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlanDeleted {
    pub deleted: String,
}

/// `POST /api/machines/{name}/disconnect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MachineDisconnected {
    pub disconnected: String,
}

/// `POST /api/machines/{name}/forget`: the name is no longer bound to the
/// secret its machine was given at its first join; the next machine that
/// joins under it takes it (a machine whose identity file was lost).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MachineForgotten {
    pub forgotten: String,
}

/// `POST /api/machines/{name}/drain`: the machine takes no new shards; it
/// is told to stop once `running` (its shards now) are done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MachineDraining {
    pub draining: String,
    pub running: u32,
}

/// `POST /api/machines/{name}/undrain`: the machine takes shards again (a
/// drained machine that left is shown as it is: disconnected or offline).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MachineUndrained {
    pub undrained: String,
}

/// `GET /api/machines` query: `min_online=N` waits (up to `wait_ms`, default
/// 10 s) until N machines are online, so clients wait for an event instead of
/// polling.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
pub struct MachinesQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_online: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// A page of a list (`GET /api/runs`, `/api/suites`, `/api/plans`):
/// `?limit=N&offset=K`. Runs come newest first, suites by sha256, plans
/// oldest first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
pub struct ListQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u32>,
}

impl ListQuery {
    /// Items per page when the query does not say.
    pub const DEFAULT_LIMIT: u32 = 200;
    /// The most items one page holds.
    pub const MAX_LIMIT: u32 = 1000;

    /// `(limit, offset)`, the limit clamped to 1..=[`Self::MAX_LIMIT`].
    pub fn page(self) -> (u32, u32) {
        (self.limit.unwrap_or(Self::DEFAULT_LIMIT).clamp(1, Self::MAX_LIMIT), self.offset.unwrap_or(0))
    }
}

/// `GET /api/runs` query: a page of the runs, newest first, of one plan
/// (by its name) or of all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
pub struct RunsQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u32>,
    /// Only the runs of the plan of this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
}

impl RunsQuery {
    /// `(limit, offset)` as [`ListQuery::page`] has them.
    pub fn page(&self) -> (u32, u32) {
        ListQuery { limit: self.limit, offset: self.offset }.page()
    }

    /// `GET /api/runs` with this query.
    pub fn url(&self) -> String {
        with_query(
            routes::RUNS,
            &[
                ("limit", self.limit.map(|n| n.to_string())),
                ("offset", self.offset.map(|n| n.to_string())),
                ("plan", self.plan.clone()),
            ],
        )
    }
}

/// `GET /api/plans` query: a page of the plans, oldest first, of one name
/// or of all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
pub struct PlansQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u32>,
    /// Only the plans of this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl PlansQuery {
    /// `(limit, offset)` as [`ListQuery::page`] has them.
    pub fn page(&self) -> (u32, u32) {
        ListQuery { limit: self.limit, offset: self.offset }.page()
    }

    /// `GET /api/plans` with this query.
    pub fn url(&self) -> String {
        with_query(
            routes::PLANS,
            &[
                ("limit", self.limit.map(|n| n.to_string())),
                ("offset", self.offset.map(|n| n.to_string())),
                ("name", self.name.clone()),
            ],
        )
    }
}

/// `POST /api/suites` query: the suite's display name (default: the start of
/// its sha256).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
pub struct UploadQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `GET /api/runs/{id}/rerun`: what `rerun_failed` of the run would run:
/// `failed` tests did not pass, and the rerun runs `tests` in all (the
/// failed ones, the tests of suites that coordinate with them, and whole
/// parts whose shard failed before its tests could report).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RerunPreview {
    pub failed: u32,
    pub tests: u32,
}

/// `POST /api/tickets`: a single-use ticket that opens one run event
/// WebSocket (`?ticket=T`) within `expires_in_ms`, in place of the token:
/// what a browser uses, so no address it builds carries the token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Ticket {
    pub ticket: String,
    pub expires_in_ms: u64,
}

/// The run event WebSocket's query: replay from this sequence number (default 1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
pub struct EventsQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
}

/// The API's paths. Functions encode their parameters as path segments.
pub mod routes {
    use super::encode;

    pub const HEALTH: &str = "/api/health";
    /// `POST`: a ticket for one run event WebSocket.
    pub const TICKETS: &str = "/api/tickets";
    /// Liveness for probes: 200 while the process serves.
    pub const HEALTHZ: &str = "/healthz";
    /// Readiness for probes: the store takes writes and machines can join.
    pub const READYZ: &str = "/readyz";
    /// Prometheus metrics (OpenMetrics text), behind the metrics token if set.
    pub const METRICS: &str = "/metrics";
    pub const MACHINES: &str = "/api/machines";
    /// The machines' WebSocket.
    pub const MACHINE_JOIN: &str = "/api/machines/join";
    pub const SUITES: &str = "/api/suites";
    pub const PLANS: &str = "/api/plans";
    /// `POST` a plan as TOML.
    pub const PLAN_IMPORT: &str = "/api/plans/import";
    pub const RUNS: &str = "/api/runs";
    /// `GET ?plan=&role=&test=`: a test's history.
    pub const TEST_HISTORY: &str = "/api/tests/history";
    /// `GET ?plan=`: the histories of the plan's flaky tests in its recent runs.
    pub const FLAKY_TESTS: &str = "/api/tests/flaky";

    pub fn machine_disconnect(name: &str) -> String {
        format!("{MACHINES}/{}/disconnect", encode(name))
    }
    /// `POST`: the machine finishes its shards, takes no new ones, then stops.
    pub fn machine_drain(name: &str) -> String {
        format!("{MACHINES}/{}/drain", encode(name))
    }
    /// `POST`: the machine takes shards again.
    pub fn machine_undrain(name: &str) -> String {
        format!("{MACHINES}/{}/undrain", encode(name))
    }
    /// Releases the machine's name from its secret (`POST`).
    pub fn machine_forget(name: &str) -> String {
        format!("{MACHINES}/{}/forget", encode(name))
    }
    /// The suite's bytes (`GET`, `HEAD`).
    pub fn suite(sha256: &str) -> String {
        format!("{SUITES}/{}", encode(sha256))
    }
    /// The suite's metadata.
    pub fn suite_inspect(sha256: &str) -> String {
        format!("{SUITES}/{}/inspect", encode(sha256))
    }
    /// Upload with a display name.
    pub fn suite_upload(name: &str) -> String {
        format!("{SUITES}?name={}", encode(name))
    }
    pub fn plan(id: &str) -> String {
        format!("{PLANS}/{}", encode(id))
    }
    pub fn plan_toml(id: &str) -> String {
        format!("{PLANS}/{}/toml", encode(id))
    }
    pub fn run(id: &str) -> String {
        format!("{RUNS}/{}", encode(id))
    }
    /// `GET`: what rerunning the run's failures would run.
    pub fn run_rerun(id: &str) -> String {
        format!("{RUNS}/{}/rerun", encode(id))
    }
    pub fn run_cancel(id: &str) -> String {
        format!("{RUNS}/{}/cancel", encode(id))
    }
    /// The attempts to call the plan's webhooks about the run.
    pub fn run_deliveries(id: &str) -> String {
        format!("{RUNS}/{}/deliveries", encode(id))
    }
    /// The bytes of a file a test of the run attached, by sha256.
    pub fn run_attachment(id: &str, sha256: &str) -> String {
        format!("{RUNS}/{}/attachments/{}", encode(id), encode(sha256))
    }
    /// The run's event WebSocket, replaying from `from`.
    pub fn run_events(id: &str, from: u64) -> String {
        format!("{RUNS}/{}/events?from={from}", encode(id))
    }
    /// The same stream under a WebSocket-only prefix, which a dev proxy
    /// (Trunk's) can route apart from the REST API.
    pub fn events(id: &str, from: u64) -> String {
        format!("/api/events/{}?from={from}", encode(id))
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so a
/// value is one path segment or one query value whatever it holds. (Written
/// here because this crate stays dependency-light for the browser build.)
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a percent-encoded path segment; None when it is not valid
/// percent-encoding of UTF-8.
pub fn decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_counts_flips_passes_and_durations_skips_aside() {
        let r =
            |outcome, duration_ms| PastResult { run: "r".into(), outcome, duration_ms, attempt: 1, at_us: 0 };
        // Newest first: failed, skipped, flaky, lost, passed, failed (oldest).
        let h = TestHistory::of(
            "p",
            "role",
            "t",
            vec![
                r(Outcome::Failed, 50),
                r(Outcome::Skipped, 0),
                r(Outcome::Flaky, 30),
                r(Outcome::Lost, 30_000),
                r(Outcome::Passed, 10),
                r(Outcome::Failed, 20),
            ],
        );
        // Oldest to newest, skips and losses aside: fail, pass, pass, fail: 2 flips.
        assert_eq!(h.flips, 2);
        assert_eq!(h.flaky, 1);
        assert_eq!(h.pass_rate, Some(0.5));
        assert_eq!((h.duration_p50_ms, h.duration_p90_ms), (Some(20), Some(30)));
        assert!(h.is_flaky());
        let empty = TestHistory::of("p", "role", "t", vec![]);
        assert_eq!((empty.pass_rate, empty.duration_p50_ms, empty.is_flaky()), (None, None, false));
        let q = HistoryQuery {
            plan: "a b".into(),
            test: Some("x/y".into()),
            limit: Some(5),
            ..HistoryQuery::default()
        };
        assert_eq!(q.url(routes::TEST_HISTORY), "/api/tests/history?plan=a%20b&test=x%2Fy&limit=5");
    }

    #[test]
    fn decoding_inverts_encoding() {
        for s in ["plan-1", "my suite/ä?&=%", ""] {
            assert_eq!(decode(&encode(s)).as_deref(), Some(s));
        }
        assert_eq!(decode("%zz"), None);
        assert_eq!(decode("%4"), None);
        assert_eq!(decode("%FF"), None, "not UTF-8");
    }

    #[test]
    fn errors_have_one_shape_and_a_status_per_kind() {
        let e = ApiError::new(ErrorKind::InvalidPlan, "invalid plan")
            .with_details(vec![Problem { path: "entries[0].profile".into(), message: "m".into() }]);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["error"]["kind"], "invalid-plan");
        assert_eq!(v["error"]["details"][0]["path"], "entries[0].profile");
        assert_eq!(serde_json::from_value::<ApiError>(v).unwrap(), e);
        assert_eq!(e.status(), 422);
        assert_eq!(ErrorKind::Unsatisfiable.status(), 409);
        assert!(ErrorKind::Unsatisfiable.is_bad_input());
        assert!(!ErrorKind::Internal.is_bad_input());
    }

    #[test]
    fn list_pages_are_bounded() {
        assert_eq!(ListQuery::default().page(), (200, 0));
        assert_eq!(ListQuery { limit: Some(1_000_000), offset: Some(5) }.page(), (1000, 5));
        assert_eq!(ListQuery { limit: Some(0), offset: None }.page(), (1, 0));
    }

    #[test]
    fn routes_encode_their_segments() {
        assert_eq!(routes::plan("plan-1"), "/api/plans/plan-1");
        assert_eq!(routes::suite_upload("my suite/ä"), "/api/suites?name=my%20suite%2F%C3%A4");
        assert_eq!(routes::machine_disconnect("a/b?c"), "/api/machines/a%2Fb%3Fc/disconnect");
        assert_eq!(routes::run_events("r", 3), "/api/runs/r/events?from=3");
    }
}
