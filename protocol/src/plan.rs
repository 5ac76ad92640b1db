//! Test plans: what runs where, and how.
//!
//! A plan is parsed from TOML (or JSON, from the browser) into these types and
//! then validated as a whole. Every error names the field path it is about
//! (`entries[1].profile`) and, for files, the file, so that the CLI and the
//! browser can show it next to what is wrong. Parsing and validation live here,
//! in one place, so every front end accepts and rejects exactly the same plans.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::api::ParamMeta;
use crate::filter::{Filter, Partition, RunIgnored};
use crate::grant::{NetGrant, check_env_name};
use crate::machine::MachineInfo;
use crate::service::{Service, granted_service};
use crate::units::{ByteSize, HumanDuration};

/// A named, typed set of entries plus the settings of its runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub name: String,
    /// What the plan tests and why, for the people who run it (plain text).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(rename = "type", default)]
    pub kind: PlanType,
    #[serde(default)]
    pub settings: Settings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<Profile>,
    #[serde(default)]
    pub entries: Vec<Entry>,
    /// The programs under test, started natively by the runners of their
    /// profiles' machines (see [`crate::service`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// Webhooks told when a run of the plan finishes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<Notify>,
    /// When the coordinator runs the plan by itself (`[[schedule]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<Schedule>,
}

/// A time the coordinator runs a stored plan by itself: a cron expression
/// (`minute hour day-of-month month day-of-week`, with an optional leading
/// seconds field, or `@daily`-style names) read in a timezone (an IANA
/// name such as `Europe/Berlin`; `UTC` unless given). The server checks
/// the expression and the zone when the plan is saved; a time missed while
/// the server was down runs once when it starts.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub cron: String,
    #[serde(default = "utc")]
    pub timezone: String,
}

fn utc() -> String {
    "UTC".to_string()
}

impl Schedule {
    /// The schedule as people read it, and as the coordinator keys its
    /// record of firings: `0 2 * * * (Europe/Berlin)`.
    pub fn key(&self) -> String {
        format!("{} ({})", self.cron.split_whitespace().collect::<Vec<_>>().join(" "), self.timezone.trim())
    }
}

/// The most schedules a plan may have.
pub const MAX_SCHEDULES: usize = 16;
/// The most entries, and the most profiles, a plan may have.
pub const MAX_ENTRIES: usize = 10_000;
pub const MAX_PROFILES: usize = 10_000;
/// The most shards one run of a plan may have (each entry on each of its
/// profiles' machines): each is assigned, announced and stored.
pub const MAX_SHARDS: u64 = 10_000;
/// The longest profile or role name, in bytes.
pub const MAX_NAME: usize = 128;
/// Characters of a plan's description at most.
pub const MAX_DESCRIPTION: usize = 4000;

/// A webhook the coordinator calls when a run of the plan finishes: a
/// `POST` with a JSON body, signed (`X-Ensemble-Signature: sha256=HEX`, an
/// HMAC-SHA256 of the body with the server's webhook secret), retried with
/// backoff while the receiver fails.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// Where to post: an `http://` or `https://` URL.
    pub url: String,
    /// Which runs: every finished one, or only those that did not pass.
    #[serde(default)]
    pub on: NotifyOn,
    /// The body: Ensemble's JSON, or a Slack-compatible message (`text`).
    #[serde(default)]
    pub format: NotifyFormat,
}

/// Which finished runs a webhook hears of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum NotifyOn {
    #[default]
    Finished,
    /// Runs whose verdict is not `passed` (failed or cancelled).
    Failed,
}

/// The body of a webhook call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum NotifyFormat {
    #[default]
    Json,
    /// `{"text": "…"}`, as Slack's (and Mattermost's, and Teams') incoming
    /// webhooks take it.
    Slack,
}

/// The most webhooks a plan may have.
pub const MAX_NOTIFY: usize = 10;

/// How entries map onto machine profiles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum PlanType {
    /// Each entry runs on its own profile; the parts coordinate.
    #[default]
    Distributed,
    /// Every entry runs on every profile (or on the entry's own, if it names one).
    CrossPlatform,
}

impl fmt::Display for PlanType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PlanType::Distributed => "distributed",
            PlanType::CrossPlatform => "cross-platform",
        })
    }
}

/// Whether entries start together or one after another.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Execution {
    /// All entries start at once (needed when parts coordinate).
    #[default]
    Parallel,
    /// Entries run one after another, in plan order.
    Sequential,
}

/// Settings that apply to every test of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub execution: Execution,
    /// Per-test limit unless a test declares its own.
    pub test_timeout: HumanDuration,
    /// Extra attempts for a failed test; a test that passes on retry is flaky.
    pub retries: u32,
    /// How many of an entry's tests a machine runs at once when its suite
    /// does not use sync (each in its own instance): 0 for as many as the
    /// machine has cores, 1 for one at a time. Tests of a suite that uses
    /// sync always run one at a time.
    #[serde(skip_serializing_if = "is_zero")]
    pub test_threads: u32,
    /// Linear memory a test instance may grow to.
    pub memory_limit: ByteSize,
    /// Stop scheduling tests after the first failure.
    pub fail_fast: bool,
    /// Default wait limit for a barrier whose caller passes no timeout.
    pub barrier_timeout: HumanDuration,
    /// Captured stdout+stderr kept per test; the rest is counted and dropped.
    pub output_limit: ByteSize,
    /// Bytes a test attempt may attach (files kept with its result, see
    /// `attachment`); zero refuses attachments.
    pub attachment_limit: ByteSize,
    /// How long a run may wait for its machines' slots (busy with other
    /// runs) before it fails without starting; zero waits not at all.
    pub queue_timeout: HumanDuration,
    /// Tests marked ignored: `default` reports them skipped, `only` runs
    /// them alone, `all` runs them with the others.
    pub run_ignored: RunIgnored,
    /// Report the tests an entry's `filter` leaves out, as skipped with the
    /// reason "filtered out" (by default they are only counted).
    pub show_filtered: bool,
    /// Run one part of the tests, for CI jobs that split a plan:
    /// `count:K/N` or `hash:K/N` (see `docs/filters.md`). None: every test.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<Partition>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            execution: Execution::Parallel,
            test_timeout: HumanDuration::from_secs(60),
            retries: 0,
            test_threads: 0,
            memory_limit: ByteSize::mib(256),
            fail_fast: false,
            barrier_timeout: HumanDuration::from_secs(60),
            output_limit: ByteSize::mib(1),
            attachment_limit: ByteSize::mib(4),
            queue_timeout: HumanDuration::from_secs(600),
            run_ignored: RunIgnored::Default,
            show_filtered: false,
            partition: None,
        }
    }
}

/// A saved selector of machines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    /// Labels a machine must carry (all of them). Empty: any machine.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Pin the profile to one machine by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// How many machines (instances) the profile takes.
    #[serde(default = "one")]
    pub count: u32,
}

impl Profile {
    /// Whether a machine is one this profile selects: the named machine, or
    /// one carrying every label. Placement and the plan editor's live
    /// "machines matching now" count both use this.
    pub fn matches(&self, m: &MachineInfo) -> bool {
        match &self.machine {
            Some(name) => &m.name == name,
            None => self.labels.iter().all(|(k, v)| m.labels.get(k) == Some(v)),
        }
    }

    /// What the profile asks for, in words: `machine = "box-1"`, `tier=server`, `any machine`.
    pub fn describe(&self) -> String {
        match &self.machine {
            Some(name) => format!("machine = {name:?}"),
            None if self.labels.is_empty() => "any machine".to_string(),
            None => self.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "),
        }
    }
}

fn one() -> u32 {
    1
}

/// One suite placed in the plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// A path (relative to the plan file) to a `.wasm` suite or a suite crate
    /// directory, or `sha256:<hex>` for a suite already known to the server.
    pub suite: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Defaults to the suite's file stem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, deserialize_with = "scalar_map", skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Capabilities::is_empty")]
    pub capabilities: Capabilities,
    /// Which of the suite's tests run: a filter expression (see
    /// `docs/filters.md`), e.g. `not tag(slow)`. None: every test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Exactly these of the suite's tests, by name (with `filter`, both
    /// must select a test). A rerun of a run's failures lists them here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<Vec<String>>,
    /// `"tests"`: the machines of the entry (its profile's `count`) divide
    /// its tests among them, balanced by recorded durations (by count
    /// without), instead of each running every test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
}

/// How an entry's machines share its tests (see [`Entry::split`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// Each test runs once, on one of the entry's machines.
    Tests,
}

impl Entry {
    /// The role name: explicit, or the stem of the suite path.
    pub fn role_name(&self) -> String {
        if let Some(role) = &self.role {
            return role.clone();
        }
        if let Some(hex) = suite_sha(&self.suite) {
            // A stored suite named by hash; servers fill in the suite's name.
            return format!("suite-{}", &hex[..12]);
        }
        let trimmed = self.suite.trim_end_matches(['/', '\\']);
        let stem = Path::new(trimmed).file_stem().and_then(|s| s.to_str()).unwrap_or(trimmed);
        stem.replace('_', "-")
    }
}

/// Host access granted to an entry's sandbox. Nothing is granted by default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// `host:port` patterns the suite may connect to; `*` matches any host or port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net: Vec<String>,
    /// Names of host environment variables the suite may read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Services of the plan the suite may inject faults into (stop,
    /// restart, kill, pause; see [`crate::fault`]); `*`: every one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<String>,
}

impl Capabilities {
    pub fn is_empty(&self) -> bool {
        self.net.is_empty() && self.env.is_empty() && self.faults.is_empty()
    }

    /// Whether the entry may inject faults into service `service`.
    pub fn may_fault(&self, service: &str) -> bool {
        faults_granted(&self.faults, service)
    }
}

/// Whether a `faults` grant list lets an entry fault `service`.
pub fn faults_granted(faults: &[String], service: &str) -> bool {
    faults.iter().any(|f| f == "*" || f == service)
}

/// A param's value as the TOML type its suite declares, when the text is
/// exactly how [`scalar_map`] reads that type back.
fn typed_param(kind: crate::api::ParamType, text: &str) -> Option<toml::Value> {
    use crate::api::ParamType;
    match kind {
        ParamType::Integer => {
            text.parse::<i64>().ok().filter(|n| n.to_string() == text).map(toml::Value::Integer)
        }
        ParamType::Float => text
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && f.to_string() == text)
            .map(toml::Value::Float),
        ParamType::Boolean => {
            text.parse::<bool>().ok().filter(|b| b.to_string() == text).map(toml::Value::Boolean)
        }
        ParamType::String | ParamType::Duration => None,
    }
}

/// Params are strings to the suite, but people write `keys = 100` in TOML.
fn scalar_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        I(i64),
        F(f64),
        B(bool),
    }
    let raw: BTreeMap<String, Scalar> = BTreeMap::deserialize(d)
        .map_err(|e| serde::de::Error::custom(format!("{e}; params are strings, numbers or booleans")))?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Scalar::S(s) => s,
                Scalar::I(i) => i.to_string(),
                Scalar::F(f) => f.to_string(),
                Scalar::B(b) => b.to_string(),
            };
            (k, v)
        })
        .collect())
}

/// Whether `typed` is one slip from `known`: a letter left out, added,
/// changed or two swapped, or a case or `-`/`_` difference.
fn near_miss(typed: &str, known: &str) -> bool {
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let (a, b): (Vec<char>, Vec<char>) = (norm(typed).chars().collect(), norm(known).chars().collect());
    if a == b {
        return true;
    }
    let (short, long) = if a.len() <= b.len() { (&a, &b) } else { (&b, &a) };
    match long.len() - short.len() {
        0 => {
            let diff: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
            diff.len() == 1
                || (diff.len() == 2
                    && diff[1] == diff[0] + 1
                    && a[diff[0]] == b[diff[1]]
                    && a[diff[1]] == b[diff[0]])
        }
        1 => {
            let first = (0..short.len()).find(|&i| short[i] != long[i]).unwrap_or(short.len());
            short[first..] == long[first + 1..]
        }
        _ => false,
    }
}

/// One thing wrong with a plan, at a field path such as `entries[0].profile`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() || self.path == "." {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A plan that could not be read or is not valid; lists every problem found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct PlanError {
    pub file: Option<PathBuf>,
    pub problems: Vec<Problem>,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "invalid plan {}", file.display())?,
            None => f.write_str("invalid plan")?,
        }
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl PlanError {
    fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { file: None, problems: vec![Problem { path: path.into(), message: message.into() }] }
    }
    /// Attaches the file the plan came from.
    pub fn in_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.file = Some(file.into());
        self
    }
}

impl Plan {
    /// How many shards a run of the plan has when every profile gets its
    /// `count` machines: each entry on each machine of its profiles (an
    /// entry of a cross-platform plan without a profile: on every one),
    /// and each service instance.
    /// Computed without listing them (a plan may ask for millions).
    pub fn shard_count(&self) -> u64 {
        let counts: BTreeMap<&str, u64> =
            self.profiles.iter().map(|p| (p.name.as_str(), u64::from(p.count))).collect();
        let every: u64 = counts.values().fold(0, |sum, c| sum.saturating_add(*c));
        let services = self
            .services
            .iter()
            .fold(0u64, |sum, s| sum.saturating_add(counts.get(s.profile.as_str()).copied().unwrap_or(0)));
        self.entries.iter().fold(services, |sum, e| {
            let here = match (&e.profile, self.kind) {
                (Some(p), _) => counts.get(p.as_str()).copied().unwrap_or(0),
                (None, PlanType::CrossPlatform) => every,
                (None, PlanType::Distributed) => 0,
            };
            sum.saturating_add(here)
        })
    }

    /// Parses and validates a plan written in TOML.
    pub fn from_toml(text: &str) -> Result<Plan, PlanError> {
        let de = toml::Deserializer::parse(text).map_err(|e| PlanError::one("", e.to_string()))?;
        let plan: Plan = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            PlanError::one(path, inner.to_string().trim_end().to_string())
        })?;
        plan.validate()?;
        Ok(plan)
    }

    /// Parses and validates a plan sent as JSON (the REST API and the browser).
    pub fn from_json(text: &str) -> Result<Plan, PlanError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let plan: Plan = serde_path_to_error::deserialize(de)
            .map_err(|e| PlanError::one(e.path().to_string(), e.inner().to_string()))?;
        plan.validate()?;
        Ok(plan)
    }

    /// Writes the plan back as TOML (export); `from_toml` reads it unchanged.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("plans always serialize to TOML")
    }

    /// [`Plan::to_toml`] with each param its suite declares an integer,
    /// float or boolean (`declared[i]` for entry `i`, as
    /// [`Plan::param_problems`] takes) written as that TOML type —
    /// `nap_ms = 4000`, not `"4000"` — when its value is exactly how that
    /// type reads back; `from_toml` reads the same plan either way.
    pub fn to_toml_typed(&self, declared: &[Option<&[ParamMeta]>]) -> String {
        let Ok(mut table) = toml::Table::try_from(self) else { return self.to_toml() };
        let entries = table.get_mut("entries").and_then(toml::Value::as_array_mut);
        for (i, entry) in entries.into_iter().flatten().enumerate() {
            let Some(Some(metas)) = declared.get(i) else { continue };
            let Some(params) = entry.get_mut("params").and_then(toml::Value::as_table_mut) else { continue };
            for (key, value) in params.iter_mut() {
                let (Some(meta), Some(text)) = (metas.iter().find(|m| m.name == *key), value.as_str()) else {
                    continue;
                };
                if let Some(typed) = typed_param(meta.kind, text) {
                    *value = typed;
                }
            }
        }
        toml::to_string_pretty(&table).unwrap_or_else(|_| self.to_toml())
    }

    /// The profile an entry runs on, by name.
    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.name == name)
    }

    /// Checks the plan as a whole; returns every problem found, each at its path.
    pub fn validate(&self) -> Result<(), PlanError> {
        let problems = self.problems();
        if problems.is_empty() { Ok(()) } else { Err(PlanError { file: None, problems }) }
    }

    /// Every problem of the plan (empty when valid), at most
    /// [`MAX_PROBLEMS`] of them (the last one says how many more). Used for
    /// inline errors.
    pub fn problems(&self) -> Vec<Problem> {
        let mut all = self.all_problems();
        if all.len() > MAX_PROBLEMS {
            let more = all.len() - (MAX_PROBLEMS - 1);
            all.truncate(MAX_PROBLEMS - 1);
            all.push(Problem { path: String::new(), message: format!("… and {more} more problems") });
        }
        all
    }

    /// What is wrong with running this plan given which entries' suites
    /// import the `sync` interface (`uses_sync[i]` for entry `i`; the
    /// server reads it from the suites' imports, the editor from the suite
    /// list). A sequential plan runs an entry only once the one before it
    /// has ended, so two entries that coordinate can never meet: the first
    /// waits for a part that starts only after it gives up. Entries that
    /// coordinate only among their own instances would still share the
    /// run's one set of states, each seeing the signals of those before it.
    /// So a sequential plan may have at most one entry whose suite uses sync.
    pub fn sync_problems(&self, uses_sync: &[bool]) -> Vec<Problem> {
        // The instances of a suite that uses sync wait for each other: each
        // must run every test.
        let mut problems: Vec<Problem> = self
            .entries
            .iter()
            .enumerate()
            .filter(|(i, e)| e.split.is_some() && uses_sync.get(*i).copied().unwrap_or(false))
            .map(|(i, e)| Problem {
                path: format!("entries[{i}].split"),
                message: format!(
                    "the suite of {} uses sync (signals, barriers, topics): its machines wait for each other \
                     in every test, so they cannot divide its tests; remove split",
                    e.role_name()
                ),
            })
            .collect();
        problems.extend(self.execution_problems(uses_sync));
        problems
    }

    /// What is wrong with the entries' params given the params their suites
    /// declare (`declared[i]` for entry `i`; `None` where the suite cannot
    /// say, as ABI 0.1 suites and WASI commands): a required param not set,
    /// a param the suite does not read (a typo, or one meant for another
    /// entry), a value that does not read as the declared type. The server
    /// and `ensemble run` read the declarations from the suites, the editor
    /// from the suite catalog, so a plan is told before anything runs.
    pub fn param_problems(&self, declared: &[Option<&[ParamMeta]>]) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (i, entry) in self.entries.iter().enumerate() {
            let Some(Some(params)) = declared.get(i) else { continue };
            let role = entry.role_name();
            for p in params.iter().filter(|p| p.required && !entry.params.contains_key(&p.name)) {
                let help = if p.help.is_empty() { String::new() } else { format!(": {}", p.help) };
                problems.push(Problem {
                    path: format!("entries[{i}].params"),
                    message: format!(
                        "the suite of {role} requires the param `{}` ({}{help}), and it is not set",
                        p.name, p.kind
                    ),
                });
            }
            for (key, value) in &entry.params {
                let path = format!("entries[{i}].params.{key}");
                match params.iter().find(|p| &p.name == key) {
                    Some(p) => {
                        if let Err(why) = p.kind.check(value) {
                            problems.push(Problem { path, message: why });
                        }
                    }
                    None => {
                        let mut known: Vec<String> =
                            params.iter().take(KNOWN_SHOWN).map(|p| format!("`{}`", p.name)).collect();
                        if params.len() > KNOWN_SHOWN {
                            known.push(format!("and {} more", params.len() - KNOWN_SHOWN));
                        }
                        let near = params.iter().map(|p| p.name.as_str()).find(|n| near_miss(key, n));
                        let known = match (known.is_empty(), near) {
                            (true, _) => "it declares that it reads none; a suite lists every param it reads \
                                          (Rust: `suite! { params(...) }`, Python and JavaScript: `param(...)`)"
                                .to_string(),
                            (false, Some(near)) => {
                                format!("did you mean `{near}`? it reads {}", known.join(", "))
                            }
                            (false, None) => format!("it reads {}", known.join(", ")),
                        };
                        problems.push(Problem {
                            path,
                            message: format!("the suite of {role} has no param `{key}` ({known})"),
                        });
                    }
                }
            }
        }
        problems
    }

    fn execution_problems(&self, uses_sync: &[bool]) -> Vec<Problem> {
        let syncing: Vec<String> = self
            .entries
            .iter()
            .enumerate()
            .filter(|(i, _)| uses_sync.get(*i).copied().unwrap_or(false))
            .map(|(i, e)| format!("{i} ({})", e.role_name()))
            .collect();
        if self.settings.execution != Execution::Sequential || syncing.len() < 2 {
            return Vec::new();
        }
        vec![Problem {
            path: "settings.execution".into(),
            message: format!(
                "entries {} use sync (signals, barriers, topics), but sequential execution starts an entry \
                 only after the one before it has ended, so parts that wait for each other never meet \
                 (and later entries would see the signals of earlier ones); set execution = \"parallel\", \
                 or split the plan into one plan per coordinating entry",
                syncing.join(", ")
            ),
        }]
    }

    fn all_problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |path: String, message: String| out.push(Problem { path, message });
        if self.name.trim().is_empty() {
            bad("name".into(), "a plan needs a name".into());
        }
        if self.description.chars().count() > MAX_DESCRIPTION {
            bad(
                "description".into(),
                format!(
                    "{} characters; a description may have {MAX_DESCRIPTION}",
                    self.description.chars().count()
                ),
            );
        }
        if self.notify.len() > MAX_NOTIFY {
            bad("notify".into(), format!("{} webhooks; a plan may have {MAX_NOTIFY}", self.notify.len()));
        }
        for (i, n) in self.notify.iter().enumerate() {
            let rest = n.url.strip_prefix("https://").or_else(|| n.url.strip_prefix("http://"));
            let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or_default());
            if host.is_none_or(|h| h.is_empty() || h.contains(char::is_whitespace)) || n.url.len() > 2048 {
                bad(
                    format!("notify[{i}].url"),
                    format!("{:?} is not an http:// or https:// URL with a host", n.url),
                );
            }
        }
        if self.schedule.len() > MAX_SCHEDULES {
            bad(
                "schedule".into(),
                format!("{} schedules; a plan may have {MAX_SCHEDULES}", self.schedule.len()),
            );
        }
        let mut keys = BTreeSet::new();
        for (i, s) in self.schedule.iter().enumerate() {
            let fields = s.cron.split_whitespace().count();
            if s.cron.trim().is_empty() {
                bad(
                    format!("schedule[{i}].cron"),
                    "a schedule needs a cron expression, e.g. \"0 2 * * *\"".into(),
                );
            } else if !s.cron.trim().starts_with('@') && !(5..=6).contains(&fields) {
                bad(
                    format!("schedule[{i}].cron"),
                    format!(
                        "{:?} has {fields} fields; write minute hour day-of-month month day-of-week \
                         (e.g. \"0 2 * * *\"), with an optional leading seconds field",
                        s.cron
                    ),
                );
            } else if s.cron.len() > 256 {
                bad(format!("schedule[{i}].cron"), "is longer than 256 characters".into());
            }
            if s.timezone.trim().is_empty() || s.timezone.len() > 64 {
                bad(
                    format!("schedule[{i}].timezone"),
                    "a timezone is an IANA name such as \"UTC\" or \"Europe/Berlin\"".into(),
                );
            }
            if !keys.insert(s.key()) {
                bad(format!("schedule[{i}]"), format!("{} is listed twice", s.key()));
            }
        }
        let s = &self.settings;
        if s.test_timeout.0.is_zero() {
            bad("settings.test_timeout".into(), "must be longer than zero".into());
        }
        if s.barrier_timeout.0.is_zero() {
            bad("settings.barrier_timeout".into(), "must be longer than zero".into());
        }
        if s.memory_limit.0 < (1 << 20) || s.memory_limit.0 > (4 << 30) {
            bad(
                "settings.memory_limit".into(),
                format!("{} is out of range; a wasm32 instance takes from 1MiB to 4GiB", s.memory_limit),
            );
        }
        if s.output_limit.0 > MAX_OUTPUT_LIMIT {
            bad(
                "settings.output_limit".into(),
                format!("{} is over the limit of 8MiB of output kept per test", s.output_limit),
            );
        }
        if s.attachment_limit.0 > crate::attachment::MAX_LIMIT {
            bad(
                "settings.attachment_limit".into(),
                format!(
                    "{} is over the limit of {} of attachments kept per test",
                    s.attachment_limit,
                    ByteSize(crate::attachment::MAX_LIMIT)
                ),
            );
        }
        if s.test_threads > MAX_TEST_THREADS {
            bad(
                "settings.test_threads".into(),
                format!("{} is more than the limit of {MAX_TEST_THREADS}", s.test_threads),
            );
        }
        if s.retries > 100 {
            bad("settings.retries".into(), format!("{} retries is more than the limit of 100", s.retries));
        }
        if self.profiles.len() > MAX_PROFILES {
            bad(
                "profiles".into(),
                format!("{} profiles; a plan may have {MAX_PROFILES}", self.profiles.len()),
            );
        }
        if self.entries.len() > MAX_ENTRIES {
            bad("entries".into(), format!("{} entries; a plan may have {MAX_ENTRIES}", self.entries.len()));
        }
        let shards = self.shard_count();
        if shards > MAX_SHARDS {
            bad(
                "entries".into(),
                format!(
                    "a run would have {shards} shards (each entry on each machine of its profiles), more than the {MAX_SHARDS} a run may have"
                ),
            );
        }
        let mut names = BTreeSet::new();
        for (i, p) in self.profiles.iter().enumerate() {
            if p.name.len() > MAX_NAME {
                bad(
                    format!("profiles[{i}].name"),
                    format!("is {} bytes long; a profile name may have {MAX_NAME}", p.name.len()),
                );
            } else if p.name.trim().is_empty() {
                bad(format!("profiles[{i}].name"), "a profile needs a name".into());
            } else if !names.insert(p.name.as_str()) {
                bad(format!("profiles[{i}].name"), format!("another profile is already named {:?}", p.name));
            }
            if p.count == 0 {
                bad(format!("profiles[{i}].count"), "must be at least 1".into());
            }
            if let Err(m) = check_map(&p.labels, MAX_LABELS, MAX_KEY, MAX_LABEL_VALUE) {
                bad(format!("profiles[{i}].labels"), m);
            }
            if p.machine.is_some() && p.count > 1 {
                bad(format!("profiles[{i}].count"), "a profile pinned to one machine takes exactly 1".into());
            }
        }
        if self.entries.is_empty() {
            bad("entries".into(), "a plan needs at least one entry (a suite to run)".into());
        }
        if self.kind == PlanType::CrossPlatform && self.profiles.is_empty() {
            bad("profiles".into(), "a cross-platform plan needs at least one profile".into());
        }
        // Computed once and bounded: a plan with thousands of profiles must not
        // repeat all their names in every problem.
        let known = if names.is_empty() {
            "the plan has no profiles".to_string()
        } else {
            let shown: Vec<&str> = names.iter().copied().take(KNOWN_SHOWN).collect();
            let more = names.len().saturating_sub(KNOWN_SHOWN);
            let tail = if more > 0 { format!(" and {more} more") } else { String::new() };
            format!("profiles: {}{tail}", shown.join(", "))
        };
        let known = || known.as_str();
        if self.services.len() > crate::service::MAX_SERVICES {
            bad(
                "services".into(),
                format!("{} services; a plan may have {}", self.services.len(), crate::service::MAX_SERVICES),
            );
        }
        let mut services = BTreeSet::new();
        for (i, s) in self.services.iter().enumerate() {
            for (path, message) in s.problems(i, &names) {
                bad(path, message);
            }
            if !services.insert(s.name.as_str()) {
                bad(format!("services[{i}].name"), format!("another service is already named {:?}", s.name));
            }
        }
        let no_such_service = |name: &str| {
            format!(
                "{name:?} names no service of the plan ({})",
                if services.is_empty() {
                    "it has none".to_string()
                } else {
                    services.iter().copied().collect::<Vec<_>>().join(", ")
                }
            )
        };
        let mut roles = BTreeMap::new();
        for (i, e) in self.entries.iter().enumerate() {
            if e.suite.trim().is_empty() {
                bad(format!("entries[{i}].suite"), "names no suite".into());
            }
            if let Some(Err(e)) = e.filter.as_deref().map(Filter::parse) {
                bad(format!("entries[{i}].filter"), format!("at column {}: {}", e.column, e.message));
            }
            if e.tests.as_ref().is_some_and(Vec::is_empty) {
                bad(
                    format!("entries[{i}].tests"),
                    "lists no test: name at least one, or leave it out to run every test".into(),
                );
            }
            match (&e.profile, self.kind) {
                (None, PlanType::Distributed) => bad(
                    format!("entries[{i}].profile"),
                    format!("a distributed plan links every entry to a profile ({})", known()),
                ),
                (Some(p), _) if !names.contains(p.as_str()) => {
                    bad(format!("entries[{i}].profile"), format!("no profile named {p:?} ({})", known()))
                }
                _ => {}
            }
            if let Err(m) = check_map(&e.params, MAX_PARAMS, MAX_KEY, MAX_PARAM_VALUE) {
                bad(format!("entries[{i}].params"), m);
            }
            let role = e.role_name();
            if role.len() > MAX_NAME {
                bad(
                    format!("entries[{i}].role"),
                    format!("is {} bytes long; a role may have {MAX_NAME}", role.len()),
                );
            } else if role.is_empty() || !role.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                bad(
                    format!("entries[{i}].role"),
                    format!("{role:?} is not a valid role: use letters, digits, '-', '_' or '.'"),
                );
            }
            if let Some(prev) = roles.insert(role.clone(), i) {
                bad(
                    format!("entries[{i}].role"),
                    format!(
                        "role {role:?} is already taken by entries[{prev}]; give one of them `role = \"…\"`"
                    ),
                );
            }
            for (j, pat) in e.capabilities.net.iter().enumerate() {
                let problem = match granted_service(pat) {
                    Some(name) if name == "*" || services.contains(name) => None,
                    Some(_) => Some(no_such_service(pat)),
                    None => NetGrant::parse(pat).err(),
                };
                if let Some(m) = problem {
                    bad(format!("entries[{i}].capabilities.net[{j}]"), m);
                }
            }
            for (j, var) in e.capabilities.env.iter().enumerate() {
                if let Err(m) = check_env_name(var) {
                    bad(format!("entries[{i}].capabilities.env[{j}]"), m);
                }
            }
            for (j, name) in e.capabilities.faults.iter().enumerate() {
                if name != "*" && !services.contains(name.as_str()) {
                    bad(format!("entries[{i}].capabilities.faults[{j}]"), no_such_service(name));
                }
            }
        }
        out
    }
}

/// Bounds on what a plan may carry to every machine of a run.
const MAX_LABELS: usize = 32;
pub const MAX_PARAMS: usize = 256;
pub const MAX_KEY: usize = 64;
const MAX_LABEL_VALUE: usize = 256;
pub const MAX_PARAM_VALUE: usize = 64 << 10;

/// Checks a map's size and its keys' and values' lengths.
fn check_map(map: &BTreeMap<String, String>, most: usize, key: usize, value: usize) -> Result<(), String> {
    if map.len() > most {
        return Err(format!("{} entries is more than the limit of {most}", map.len()));
    }
    if let Some((k, _)) = map.iter().find(|(k, v)| k.is_empty() || k.len() > key || v.len() > value) {
        let shown: String = k.chars().take(key).collect();
        return Err(format!("{shown:?}: keys take 1 to {key} characters and values up to {value} bytes"));
    }
    Ok(())
}

/// Most problems one validation reports.
pub const MAX_PROBLEMS: usize = 100;
/// Profile names listed in a problem about an unknown profile.
const KNOWN_SHOWN: usize = 10;
/// The most output kept per test: it travels in one event.
pub const MAX_OUTPUT_LIMIT: u64 = 8 << 20;
/// The most tests of one entry a machine may be asked to run at once.
pub const MAX_TEST_THREADS: u32 = 1024;

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The `sha256:` prefix of a suite reference inside a plan.
pub const SHA_PREFIX: &str = "sha256:";

/// The sha256 a plan entry's suite names, if it names one (`sha256:<hex>`).
pub fn suite_sha(suite: &str) -> Option<&str> {
    suite.strip_prefix(SHA_PREFIX).filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = r#"
name = "demo"
type = "distributed"
[settings]
execution = "parallel"
test_timeout = "30s"
retries = 1
memory_limit = "128MiB"
fail_fast = false
[[profiles]]
name = "server-box"
labels = { os = "linux" }
[[profiles]]
name = "client-box"
count = 2
[[entries]]
suite = "kv_server.wasm"
profile = "server-box"
params = { keys = 100, verbose = true, greeting = "hi" }
capabilities = { net = ["127.0.0.1:8080"], env = ["TOKEN"] }
[[entries]]
suite = "../examples/kv-client/"
profile = "client-box"
"#;

    fn declared(name: &str, kind: crate::api::ParamType, required: bool) -> ParamMeta {
        ParamMeta { name: name.into(), kind, required, default: None, help: format!("what {name} is") }
    }

    #[test]
    fn an_export_writes_params_as_the_types_their_suites_declare() {
        use crate::api::ParamType as T;
        let mut plan = Plan::from_toml(DEMO).unwrap();
        plan.entries[0].params = [
            ("keys", "100"),
            ("verbose", "true"),
            ("ratio", "0.5"),
            ("greeting", "42"),
            ("padded", "007"),
            ("wait", "30s"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let declared = [
            declared("keys", T::Integer, false),
            declared("verbose", T::Boolean, false),
            declared("ratio", T::Float, false),
            declared("greeting", T::String, false),
            declared("padded", T::Integer, false),
            declared("wait", T::Duration, false),
        ];
        // Nothing declared: as the plain export, key for key and line for line.
        assert_eq!(plan.to_toml_typed(&[]), plan.to_toml());
        let text = plan.to_toml_typed(&[Some(&declared), None]);
        for line in [
            "keys = 100",
            "verbose = true",
            "ratio = 0.5",
            "greeting = \"42\"",
            "padded = \"007\"",
            "wait = \"30s\"",
        ] {
            assert!(text.lines().any(|l| l.trim() == line), "{line} in\n{text}");
        }
        assert!(text.starts_with("name = \"demo\""), "the plan's own order:\n{text}");
        assert_eq!(Plan::from_toml(&text).unwrap(), plan, "it reads back the same");
    }

    #[test]
    fn params_are_checked_against_what_each_suite_declares() {
        use crate::api::ParamType as T;
        let plan = Plan::from_toml(DEMO).unwrap();
        let server = [
            declared("keys", T::Integer, false),
            declared("verbose", T::Boolean, false),
            declared("greeting", T::String, false),
        ];
        assert_eq!(
            plan.param_problems(&[Some(&server), None]),
            vec![],
            "every param declared and well typed"
        );
        // A suite that cannot say (ABI 0.1) is not checked.
        assert_eq!(plan.param_problems(&[None, None]), vec![]);
        assert_eq!(plan.param_problems(&[]), vec![]);

        let server = [
            declared("keys", T::Duration, false),
            declared("verbose", T::Boolean, false),
            declared("token", T::String, true),
        ];
        let client: [ParamMeta; 0] = [];
        let mut problems = plan.param_problems(&[Some(&server), Some(&client)]);
        problems.sort_by(|a, b| a.path.cmp(&b.path));
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "entries[0].params: the suite of kv-server requires the param `token` (string: what token is), and it is not set",
                "entries[0].params.greeting: the suite of kv-server has no param `greeting` (it reads `keys`, `verbose`, `token`)",
                "entries[0].params.keys: \"100\" is not a duration (whole numbers with units ns, us, ms, s, m, h or d, such as \"30s\", \"2m\" or \"1h 30m\")",
            ]
        );
    }

    #[test]
    fn a_misspelt_param_is_pointed_at_its_declaration() {
        assert!(
            near_miss("greting", "greeting")
                && near_miss("grxeting", "greeting")
                && near_miss("gerting", "greting")
        );
        assert!(near_miss("Nap-MS", "nap_ms") && !near_miss("keys", "clients") && !near_miss("k", "keys"));
        let plan = Plan::from_toml(&DEMO.replace("greeting = \"hi\"", "timout = \"1s\"")).unwrap();
        let declared = [
            declared("keys", crate::api::ParamType::Integer, false),
            declared("verbose", crate::api::ParamType::Boolean, false),
            declared("timeout", crate::api::ParamType::Duration, false),
        ];
        let problems = plan.param_problems(&[Some(&declared), None]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            problems[0].message,
            "the suite of kv-server has no param `timout` (did you mean `timeout`? it reads `keys`, `verbose`, `timeout`)"
        );
    }

    #[test]
    fn param_types_read_their_text() {
        use crate::api::ParamType as T;
        assert!(
            T::Integer.check("-3").is_ok()
                && T::Integer.check("1.5").is_err()
                && T::Integer.check("x").is_err()
        );
        assert!(
            T::Float.check("0.5").is_ok() && T::Float.check("2").is_ok() && T::Float.check("NaN").is_err()
        );
        assert!(T::Boolean.check("true").is_ok() && T::Boolean.check("yes").is_err());
        assert!(
            T::Duration.check("250ms").is_ok()
                && T::Duration.check("1m 30s").is_ok()
                && T::Duration.check("30").is_err()
        );
        assert!(T::String.check("").is_ok());
        assert_eq!(T::Boolean.check("1").unwrap_err(), "\"1\" is not a boolean (true or false)");
    }

    #[test]
    fn parses_the_documented_shape() {
        let plan = Plan::from_toml(DEMO).unwrap();
        assert_eq!(plan.kind, PlanType::Distributed);
        assert_eq!(plan.settings.test_timeout.0.as_secs(), 30);
        assert_eq!(plan.settings.memory_limit, ByteSize::mib(128));
        assert_eq!(plan.profiles[1].count, 2);
        assert_eq!(plan.entries[0].params["keys"], "100");
        assert_eq!(plan.entries[0].params["verbose"], "true");
        assert_eq!(plan.entries[0].role_name(), "kv-server");
        assert_eq!(plan.entries[1].role_name(), "kv-client");
        assert_eq!(plan.entries[0].capabilities.env, ["TOKEN"]);
    }

    #[test]
    fn toml_round_trips() {
        let plan = Plan::from_toml(DEMO).unwrap();
        let again = Plan::from_toml(&plan.to_toml()).unwrap();
        assert_eq!(plan, again);
        let json = serde_json::to_string(&plan).unwrap();
        assert_eq!(Plan::from_json(&json).unwrap(), plan);
    }

    #[test]
    fn type_errors_name_the_field_path() {
        let text = DEMO.replace("test_timeout = \"30s\"", "test_timeout = \"30 parsecs\"");
        let err = Plan::from_toml(&text).unwrap_err();
        assert_eq!(err.problems[0].path, "settings.test_timeout");
        assert!(err.problems[0].message.contains("30 parsecs"), "{err}");
        let err = Plan::from_toml(&DEMO.replace("count = 2", "count = \"two\"")).unwrap_err();
        assert_eq!(err.problems[0].path, "profiles[1].count");
        let err = Plan::from_toml(&DEMO.replace("retries = 1", "retries = 1\ncolour = \"red\"")).unwrap_err();
        assert_eq!(err.problems[0].path, "settings.colour");
        assert!(err.to_string().contains("colour"), "{err}");
        let err = Plan::from_toml("name = [").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn validation_lists_every_problem_at_its_path() {
        let text = DEMO
            .replace("profile = \"client-box\"", "profile = \"nowhere\"")
            .replace("127.0.0.1:8080", "localhost")
            .replace("memory_limit = \"128MiB\"", "memory_limit = \"8GiB\"");
        let err = Plan::from_toml(&text).unwrap_err().in_file("plans/demo.toml");
        let paths: Vec<_> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["settings.memory_limit", "entries[0].capabilities.net[0]", "entries[1].profile"]);
        let shown = err.to_string();
        assert!(shown.contains("plans/demo.toml"), "{shown}");
        assert!(shown.contains("no profile named \"nowhere\" (profiles: client-box, server-box)"), "{shown}");
    }

    #[test]
    fn distributed_entries_need_a_profile_and_unique_roles() {
        let text = "name = \"x\"\n[[entries]]\nsuite = \"a.wasm\"\n[[entries]]\nsuite = \"dir/a\"\n";
        let err = Plan::from_toml(text).unwrap_err();
        let paths: Vec<_> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["entries[0].profile", "entries[1].profile", "entries[1].role"]);
    }

    #[test]
    fn cross_platform_entries_may_omit_the_profile() {
        let text = "name = \"x\"\ntype = \"cross-platform\"\n[[profiles]]\nname = \"linux\"\nlabels = { os = \"linux\" }\n[[entries]]\nsuite = \"a.wasm\"\n";
        let plan = Plan::from_toml(text).unwrap();
        assert_eq!(plan.kind, PlanType::CrossPlatform);
        assert_eq!(plan.profiles[0].count, 1);
    }

    #[test]
    fn net_grants_follow_the_sandbox_rule() {
        let with = |grant: &str| DEMO.replace("127.0.0.1:8080", grant);
        for ok in ["127.0.0.1:8080", "*:443", "localhost:*", "[::1]:9000", "*:*", "example.com:80"] {
            assert!(Plan::from_toml(&with(ok)).is_ok(), "{ok} should be accepted");
        }
        let err = Plan::from_toml(&with("exa_mple.com:80")).unwrap_err();
        assert_eq!(err.problems[0].path, "entries[0].capabilities.net[0]");
        assert!(err.problems[0].message.contains("host name"), "{err}");
    }

    #[test]
    fn validation_stays_small_for_huge_plans() {
        let mut text = String::from("name = \"big\"\n");
        for i in 0..5_000 {
            text.push_str(&format!("[[profiles]]\nname = \"p{i}\"\n"));
        }
        for i in 0..1_000 {
            text.push_str(&format!("[[entries]]\nsuite = \"s{i}.wasm\"\nprofile = \"nowhere\"\n"));
        }
        let err = Plan::from_toml(&text).unwrap_err();
        assert_eq!(err.problems.len(), MAX_PROBLEMS);
        assert!(err.problems.last().unwrap().message.contains("more problems"), "{err}");
        let shown = err.to_string();
        assert!(shown.len() < 64 << 10, "the error stays small: {} bytes", shown.len());
        assert!(shown.contains("and 4990 more"), "{}", &shown[..500]);
    }

    #[test]
    fn labels_and_params_are_bounded() {
        let big = DEMO.replace("greeting = \"hi\"", &format!("greeting = \"{}\"", "x".repeat(70_000)));
        let err = Plan::from_toml(&big).unwrap_err();
        assert_eq!(err.problems[0].path, "entries[0].params");
        let many: String = (0..40).map(|i| format!("k{i} = \"v\", ")).collect();
        let labels =
            DEMO.replace("labels = { os = \"linux\" }", &format!("labels = {{ {many}os = \"linux\" }}"));
        let err = Plan::from_toml(&labels).unwrap_err();
        assert_eq!(err.problems[0].path, "profiles[0].labels");
        assert!(err.problems[0].message.contains("limit of 32"), "{err}");
    }

    #[test]
    fn a_sequential_plan_may_have_one_coordinating_entry() {
        let plan = Plan::from_toml(DEMO).unwrap();
        // Parallel: coordinating entries meet.
        assert!(plan.sync_problems(&[true, true]).is_empty());
        let mut seq = plan.clone();
        seq.settings.execution = Execution::Sequential;
        assert!(seq.sync_problems(&[true, false]).is_empty());
        assert!(seq.sync_problems(&[]).is_empty());
        let problems = seq.sync_problems(&[true, true]);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "settings.execution");
        assert!(
            problems[0].message.starts_with("entries 0 (kv-server), 1 (kv-client) use sync"),
            "{}",
            problems[0].message
        );
        assert!(problems[0].message.contains("execution = \"parallel\""));
    }
}

#[cfg(test)]
mod depth {
    use super::Plan;

    /// Nesting in a plan is bounded by the parsers (TOML: ~80 levels,
    /// JSON: 128): deeper input is refused with where it went wrong, at
    /// any depth, never a stack overflow.
    #[test]
    fn deep_plans_are_refused_with_a_place_never_a_crash() {
        for n in [200usize, 100_000] {
            for toml in [
                format!("name = \"p\"\nx = {}1{}\n", "[".repeat(n), "]".repeat(n)),
                format!("name = \"p\"\nx = {}1{}\n", "{a=".repeat(n), "}".repeat(n)),
            ] {
                let err = Plan::from_toml(&toml).unwrap_err().to_string();
                assert!(err.contains("line 2, column"), "{}", &err[..err.len().min(300)]);
            }
            let json = format!("{{\"name\":\"p\",\"x\":{}1{}}}", "[".repeat(n), "]".repeat(n));
            let err = Plan::from_json(&json).unwrap_err().to_string();
            assert!(err.contains("line 1 column"), "{}", &err[..err.len().min(300)]);
        }
    }
}

#[cfg(test)]
mod size {
    use super::*;

    fn problems(plan: serde_json::Value) -> Vec<Problem> {
        serde_json::from_value::<Plan>(plan).unwrap().problems()
    }

    #[test]
    fn runs_counts_and_names_are_bounded_and_refused_small() {
        // 200 cross-platform entries on 100 profiles of 1 machine: 20,000 shards.
        let profiles: Vec<_> = (0..100).map(|i| serde_json::json!({ "name": format!("p{i}") })).collect();
        let entries: Vec<_> =
            (0..200).map(|i| serde_json::json!({ "suite": format!("s{i}.wasm") })).collect();
        let plan = serde_json::json!({ "name": "wide", "type": "cross-platform", "profiles": profiles, "entries": entries });
        let found = problems(plan);
        assert!(found.iter().any(|p| p.path == "entries" && p.message.contains("20000 shards")), "{found:?}");
        // Long names are refused at their field, not repeated in every problem.
        let long = "p".repeat(200_000);
        let entries: Vec<_> = (0..1_000)
            .map(|i| serde_json::json!({ "suite": format!("s{i}.wasm"), "profile": "missing" }))
            .collect();
        let plan = serde_json::json!({ "name": "long", "profiles": [{ "name": long }], "entries": entries });
        let found = problems(plan);
        assert!(
            found.iter().any(|p| p.path == "profiles[0].name" && p.message.contains("200000 bytes long"))
        );
        let bytes: usize = found.iter().map(|p| p.message.len()).sum();
        assert!(bytes < 1 << 20, "{bytes} bytes of problems");
        let role = serde_json::json!({ "name": "r", "profiles": [{ "name": "a" }],
            "entries": [{ "suite": "x.wasm", "profile": "a", "role": "r".repeat(129) }] });
        assert!(
            problems(role).iter().any(|p| p.path == "entries[0].role" && p.message.contains("129 bytes"))
        );
    }
}
