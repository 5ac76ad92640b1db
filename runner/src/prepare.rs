//! Preparing a plan file to run, the one path for `ensemble run`, `run
//! --server`, `plan check` and `demo`: read and validate the plan, resolve
//! each entry's suite (building crates), then either load every suite into
//! the local sandbox or upload the ones the server lacks.
//!
//! Every error names the plan file and the entry field it is about; errors
//! of the input ([`Prepared::Invalid`]) are told apart from failures of
//! Ensemble itself, so the CLI can map them to exit 2 and 3.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ensemble_client::Client;
use ensemble_protocol::api::{ParamMeta, SHA_PREFIX};
use ensemble_protocol::plan::{Plan, PlanError, Problem};

use crate::sandbox::Sandbox;
use crate::suites::{self, LocalSuite};

/// Why a plan could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum Prepared {
    /// The plan, a suite or the server's verdict on them is at fault.
    #[error("{0}")]
    Invalid(String),
    /// Ensemble failed (I/O, the server unreachable).
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// A plan file and its suites, resolved.
pub struct PlanFile {
    pub path: PathBuf,
    pub plan: Plan,
    pub suites: Vec<LocalSuite>,
}

/// Reads and validates a plan file.
pub fn read_plan(path: &Path) -> Result<Plan, PlanError> {
    let text = std::fs::read_to_string(path).map_err(|e| PlanError {
        file: Some(path.to_path_buf()),
        problems: vec![Problem { path: String::new(), message: format!("cannot read it: {e}") }],
    })?;
    let plan = Plan::from_toml(&text).map_err(|e| e.in_file(path))?;
    // What only this side can check: cron syntax and timezone names.
    let problems = crate::coordinator::schedule::problems(&plan);
    if !problems.is_empty() {
        return Err(PlanError { file: Some(path.to_path_buf()), problems });
    }
    Ok(plan)
}

/// The directory entries' suite paths are relative to.
fn plan_dir(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).filter(|p| !p.as_os_str().is_empty()).unwrap_or_else(|| ".".into())
}

fn invalid(path: &Path, problem: impl std::fmt::Display) -> Prepared {
    Prepared::Invalid(format!("invalid plan {}\n  {problem}", path.display()))
}

/// Reads the plan at `path` and resolves (builds) its suites.
pub async fn resolve(path: &Path) -> Result<PlanFile, Prepared> {
    let plan = read_plan(path).map_err(|e| Prepared::Invalid(e.to_string()))?;
    let (dir, for_build) = (plan_dir(path), plan.clone());
    let suites = tokio::task::spawn_blocking(move || suites::resolve_all(&for_build, &dir))
        .await
        .map_err(|e| Prepared::Internal(e.into()))?
        .map_err(|e| {
            // The plan is fine: this machine lacks a tool to build its suite.
            if e.problem.message.contains(suites::lang::MISSING_TOOL) {
                Prepared::Invalid(format!(
                    "a tool is missing to build a suite of {}\n  {}",
                    path.display(),
                    e.problem
                ))
            } else {
                invalid(path, e.problem)
            }
        })?;
    // An entry without a role takes its suite's name: the crate's for a
    // crate directory (even `suite = "."`), the file's stem for a .wasm.
    let mut plan = plan;
    for (entry, suite) in plan.entries.iter_mut().zip(&suites) {
        entry.role.get_or_insert_with(|| suite.name.replace('_', "-"));
    }
    Ok(PlanFile { path: path.to_path_buf(), plan, suites })
}

impl PlanFile {
    /// Loads every suite into the sandbox, so a bad suite is reported before
    /// anything runs, as are params the suites do not declare or need and
    /// do not get ([`Plan::param_problems`]) and a plan whose coordinating
    /// entries can never meet ([`Plan::sync_problems`]). Returns which
    /// entries' suites use sync.
    ///
    /// [`Plan::param_problems`]: ensemble_protocol::plan::Plan::param_problems
    ///
    /// [`Plan::sync_problems`]: ensemble_protocol::plan::Plan::sync_problems
    pub async fn load(&self, sandbox: &Arc<Sandbox>) -> Result<Vec<bool>, Prepared> {
        let mut uses_sync = Vec::with_capacity(self.suites.len());
        let mut declared = Vec::with_capacity(self.suites.len());
        for (i, s) in self.suites.iter().enumerate() {
            let failed = |e: crate::sandbox::SuiteError| {
                invalid(&self.path, format!("entries[{i}].suite: {}: {e}", s.path.display()))
            };
            let loaded = sandbox.load(s.bytes.clone()).await.map_err(failed)?;
            uses_sync.push(ensemble_protocol::api::imports_sync(&loaded.imports));
            // Only suites that can declare their params are asked.
            declared.push(match loaded.abi() {
                Some(abi) if abi != "0.1" => {
                    let env = Arc::new(crate::sandbox::TestEnv::inspection(&s.name));
                    loaded.describe(&env).await.map_err(failed)?.params
                }
                _ => None,
            });
        }
        let declared: Vec<Option<&[ParamMeta]>> = declared.iter().map(Option::as_deref).collect();
        let mut problems = self.plan.param_problems(&declared);
        problems.extend(self.plan.sync_problems(&uses_sync));
        if !problems.is_empty() {
            let all: Vec<String> = problems.iter().map(ToString::to_string).collect();
            return Err(invalid(&self.path, all.join("\n  ")));
        }
        Ok(uses_sync)
    }

    /// Uploads the suites the server lacks; returns the plan with every
    /// entry naming its suite by sha256 (and its role defaulting to the
    /// suite's name), ready to send.
    pub async fn upload(&self, client: &Client) -> Result<Plan, Prepared> {
        let mut plan = self.plan.clone();
        for (i, (entry, suite)) in plan.entries.iter_mut().zip(&self.suites).enumerate() {
            let meta = client.ensure_suite(&suite.name, &suite.sha256, &suite.bytes).await.map_err(|e| {
                if e.is_bad_input() {
                    invalid(&self.path, format!("entries[{i}].suite: {}: {e}", suite.path.display()))
                } else {
                    Prepared::Internal(e.into())
                }
            })?;
            entry.suite = format!("{SHA_PREFIX}{}", meta.sha256);
            entry.role.get_or_insert_with(|| suite.name.clone());
        }
        Ok(plan)
    }
}
