//! The `ensemble` command line.
//!
//! Every command returns an exit code from [`ensemble_protocol::exit`]:
//! 0 all passed, 1 a test failed (or timed out, crashed, was lost), 2 bad
//! plan/suite/usage, 3 internal error.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use ensemble_protocol::exit;
use ensemble_protocol::plan::{Plan, PlanError};

use crate::report::{JsonLines, JunitReporter, Reporter, TerminalReporter};
use crate::sandbox::{ArtifactCache, Sandbox, SandboxOptions, TestEnv};
use crate::suites;

const EXIT_CODES: &str = "Exit codes:
  0  every test passed (skipped and ignored tests do not count against a run)
  1  a test failed, timed out, crashed or was lost
  2  the plan, a suite or the command line is invalid; nothing ran
  3  ensemble itself failed (I/O, internal error)";

#[derive(Parser, Debug)]
#[command(name = "ensemble", version, about = "A distributed test runner for WebAssembly test suites", after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a test plan (standalone: every profile gets an in-process machine).
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),
    /// Work with plan files.
    #[command(subcommand)]
    Plan(PlanCommand),
    /// Work with suites.
    #[command(subcommand)]
    Suite(SuiteCommand),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The plan file (TOML).
    plan: PathBuf,
    /// Write a JUnit XML report (a testsuite per shard).
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Write every event as a JSON line.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Never draw a progress bar (it is drawn only on a terminal anyway).
    #[arg(long)]
    no_progress: bool,
    #[command(flatten)]
    cache: CacheArgs,
}

#[derive(Args, Debug)]
struct CacheArgs {
    /// Where compiled suites are cached [default: ~/.cache/ensemble/compiled].
    #[arg(long, value_name = "DIR", env = "ENSEMBLE_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
}

impl CacheArgs {
    fn sandbox(&self) -> anyhow::Result<Arc<Sandbox>> {
        let dir = self.cache_dir.clone().unwrap_or_else(ArtifactCache::default_dir);
        Ok(Arc::new(Sandbox::new(SandboxOptions { cache_dir: Some(dir), ..SandboxOptions::default() })?))
    }
}

#[derive(Subcommand, Debug)]
enum PlanCommand {
    /// Validate a plan without running it (also builds and loads its suites).
    Check {
        file: PathBuf,
        /// Only check the plan file itself, not its suites.
        #[arg(long)]
        no_suites: bool,
        #[command(flatten)]
        cache: CacheArgs,
    },
}

#[derive(Subcommand, Debug)]
enum SuiteCommand {
    /// Show a suite's kind, tests and imports.
    Inspect {
        /// A .wasm component or a suite crate directory.
        file: PathBuf,
        #[command(flatten)]
        cache: CacheArgs,
    },
}

/// An error with the exit code it maps to.
struct Failure {
    code: i32,
    error: anyhow::Error,
}

fn bad(error: impl Into<anyhow::Error>) -> Failure {
    Failure { code: exit::BAD_INPUT, error: error.into() }
}

fn internal(error: impl Into<anyhow::Error>) -> Failure {
    Failure { code: exit::INTERNAL, error: error.into() }
}

/// Parses the command line, runs the command, returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { exit::BAD_INPUT } else { exit::SUCCESS };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ENSEMBLE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return exit::INTERNAL;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(Failure { code, error }) => {
            eprintln!("error: {error:#}");
            code
        }
    }
}

async fn dispatch(cli: Cli) -> Result<i32, Failure> {
    match cli.command {
        Command::Run(args) => run(args).await,
        Command::Plan(PlanCommand::Check { file, no_suites, cache }) => check(&file, no_suites, &cache).await,
        Command::Suite(SuiteCommand::Inspect { file, cache }) => inspect(&file, &cache).await,
    }
}

/// Reads and validates a plan file.
pub fn load_plan(path: &Path) -> Result<Plan, PlanError> {
    let text = std::fs::read_to_string(path).map_err(|e| PlanError {
        file: Some(path.to_path_buf()),
        problems: vec![ensemble_protocol::Problem {
            path: String::new(),
            message: format!("cannot read it: {e}"),
        }],
    })?;
    Plan::from_toml(&text).map_err(|e| e.in_file(path))
}

fn plan_dir(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).filter(|p| !p.as_os_str().is_empty()).unwrap_or_else(|| ".".into())
}

/// Loads every suite of the plan into the sandbox, so a bad suite is
/// reported (exit 2) before anything runs.
async fn load_suites(
    plan: &Plan,
    file: &Path,
    sandbox: &Arc<Sandbox>,
) -> Result<Vec<suites::LocalSuite>, Failure> {
    let dir = plan_dir(file);
    let plan2 = plan.clone();
    let resolved = tokio::task::spawn_blocking(move || suites::resolve_all(&plan2, &dir))
        .await
        .map_err(internal)?
        .map_err(|e| bad(anyhow::anyhow!("invalid plan {}\n  {}", file.display(), e.problem)))?;
    for (i, s) in resolved.iter().enumerate() {
        sandbox.load(s.bytes.clone()).await.map_err(|e| {
            bad(anyhow::anyhow!(
                "invalid plan {}\n  entries[{i}].suite: {}: {e}",
                file.display(),
                s.path.display()
            ))
        })?;
    }
    Ok(resolved)
}

async fn run(args: RunArgs) -> Result<i32, Failure> {
    let plan = load_plan(&args.plan).map_err(bad)?;
    let sandbox = args.cache.sandbox().map_err(internal)?;
    let suites = load_suites(&plan, &args.plan, &sandbox).await?;
    let stdout = std::io::stdout();
    let progress = !args.no_progress && std::io::stderr().is_terminal();
    let mut reporters: Vec<Box<dyn Reporter>> =
        vec![Box::new(TerminalReporter::new(Box::new(stdout), progress))];
    if let Some(path) = &args.junit {
        reporters.push(Box::new(JunitReporter::new(path.clone())));
    }
    if let Some(path) = &args.json {
        reporters.push(Box::new(JsonLines::create(path).map_err(bad)?));
    }
    let result = crate::standalone::run(&plan, &suites, sandbox, &mut reporters).await.map_err(|e| {
        if e.downcast_ref::<crate::coordinator::matching::Unsatisfiable>().is_some() {
            bad(e)
        } else {
            internal(e)
        }
    })?;
    Ok(if result.success() { exit::SUCCESS } else { exit::TESTS_FAILED })
}

async fn check(file: &Path, no_suites: bool, cache: &CacheArgs) -> Result<i32, Failure> {
    let plan = load_plan(file).map_err(bad)?;
    if !no_suites {
        let sandbox = cache.sandbox().map_err(internal)?;
        load_suites(&plan, file, &sandbox).await?;
    }
    println!(
        "{}: plan {:?} is valid ({}, {} profile(s), {} entr{})",
        file.display(),
        plan.name,
        plan.kind,
        plan.profiles.len(),
        plan.entries.len(),
        if plan.entries.len() == 1 { "y" } else { "ies" }
    );
    Ok(exit::SUCCESS)
}

async fn inspect(file: &Path, cache: &CacheArgs) -> Result<i32, Failure> {
    let path = file.to_path_buf();
    let local = tokio::task::spawn_blocking(move || suites::resolve(&path))
        .await
        .map_err(internal)?
        .map_err(|e| bad(anyhow::anyhow!(e)))?;
    let sandbox = cache.sandbox().map_err(internal)?;
    let suite = sandbox
        .load(local.bytes.clone())
        .await
        .map_err(|e| bad(anyhow::Error::new(e).context(format!("{}", local.path.display()))))?;
    let env = Arc::new(TestEnv::inspection(&local.name));
    let tests = suite
        .list(&env)
        .await
        .map_err(|e| bad(anyhow::Error::new(e).context(local.path.display().to_string())))?;
    println!("suite:   {}", local.name);
    println!("file:    {}", local.path.display());
    println!("kind:    {}", suite.kind().as_str());
    println!("size:    {} bytes", suite.size);
    println!("sha256:  {}", suite.sha256);
    println!("tests:   {}", tests.len());
    for t in &tests {
        let mut notes = Vec::new();
        if t.ignored {
            notes.push("ignored".to_string());
        }
        if !t.tags.is_empty() {
            notes.push(format!("tags: {}", t.tags.join(", ")));
        }
        if let Some(d) = t.timeout {
            notes.push(format!("timeout: {}", humantime::format_duration(d)));
        }
        let notes = if notes.is_empty() { String::new() } else { format!("  ({})", notes.join("; ")) };
        println!("  {}{notes}", t.name);
    }
    println!("imports:");
    for i in &suite.imports {
        println!("  {i}");
    }
    println!("exports:");
    for e in &suite.exports {
        println!("  {e}");
    }
    Ok(exit::SUCCESS)
}
