//! The commands of a coordinator and of the people who use one: `run`,
//! `serve`, `demo`, `plan`, `suite`, `report`, `durations` and `gc`. They
//! are built with the `coordinator` feature (on by default); a runner-only
//! build has `runner`, `completions` and `man`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use ensemble_client::Client;
use ensemble_protocol::Verdict;
use ensemble_protocol::api::{PlansQuery, RunRequest, RunState};
use ensemble_protocol::exit;
use ensemble_protocol::filter::Filter;
use ensemble_protocol::grant::{HostPattern, NetGrant};
use ensemble_protocol::plan::Plan;

use super::{
    CacheArgs, EXIT_CODES, Failure, PolicyArgs, bad, internal, listen_grant, machine_info, parse_duration,
    parse_label, token_from,
};
use crate::prepare::{self, Prepared};
use crate::report::{HtmlReport, JsonLines, JunitReporter, Reporter, TerminalReporter};
use crate::signals::stop_on_signal;
use crate::suites;

#[derive(Subcommand, Debug)]
pub(super) enum Command {
    /// Run a test plan (standalone: every profile gets an in-process machine).
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),
    /// Serve the coordinator: REST API, WebSockets, and a machine of its own.
    Serve(Box<ServeArgs>),
    /// Start a whole local setup: a server, two runner processes with different
    /// labels, the example suites and a distributed demo plan.
    Demo(DemoArgs),
    /// Work with plan files.
    #[command(subcommand)]
    Plan(PlanCommand),
    /// Work with suites.
    #[command(subcommand)]
    Suite(SuiteCommand),
    /// Write the reports of a run the server keeps, or of runs' JSON-lines
    /// logs merged into one (e.g. the parts of a plan split across CI jobs).
    #[command(after_help = EXIT_CODES)]
    Report(ReportArgs),
    /// Write the durations of a stored run's tests (JSON), for
    /// `ensemble run --partition duration:K/N --durations FILE`.
    Durations(DurationsArgs),
    /// Remove the attached files of a data directory past their retention
    /// or budget now (the server does it every hour by itself).
    Gc(GcArgs),
}

pub(super) async fn dispatch(command: Command) -> Result<i32, Failure> {
    match command {
        Command::Run(args) => run(args).await,
        Command::Serve(args) => serve(*args).await,
        Command::Demo(args) => crate::demo::demo(args.listen, args.data_dir).await.map_err(internal),
        Command::Plan(PlanCommand::Check { file, no_suites, cache }) => check(&file, no_suites, &cache).await,
        Command::Plan(PlanCommand::Save { file, remote }) => save(&file, &remote).await,
        Command::Suite(SuiteCommand::Inspect { file, cache }) => inspect(&file, &cache).await,
        Command::Report(args) => report(args).await,
        Command::Durations(args) => durations(args).await,
        Command::Gc(args) => gc(args).await,
        Command::Suite(SuiteCommand::Build { dir, out }) => {
            let wasm = tokio::task::spawn_blocking(move || suites::lang::build(&dir))
                .await
                .map_err(internal)?
                .map_err(|e| bad(anyhow::anyhow!(e)))?;
            if let Some(out) = out {
                std::fs::copy(&wasm, &out).map_err(|e| {
                    bad(anyhow::anyhow!("cannot copy {} to {}: {e}", wasm.display(), out.display()))
                })?;
                println!("{}", out.display());
            } else {
                println!("{}", wasm.display());
            }
            Ok(exit::SUCCESS)
        }
        Command::Suite(SuiteCommand::New { dir, lang, name, sdk }) => {
            let files = crate::scaffold::new_suite(&dir, lang, name.as_deref(), sdk.as_deref())
                .map_err(|e| bad(anyhow::anyhow!(e)))?;
            for f in files {
                println!("created {}", f.display());
            }
            println!("Run it: {} run {}", invocation(), dir.join("plan.toml").display());
            Ok(exit::SUCCESS)
        }
    }
}

#[derive(Args, Debug)]
pub(super) struct DurationsArgs {
    /// The id of a finished run the server keeps.
    #[arg(required_unless_present = "log", conflicts_with = "log", requires = "server")]
    run: Option<String>,
    /// A run's JSON-lines log (`ensemble run --json`) instead.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Write them here instead of to stdout.
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(flatten)]
    remote: ServerArgs,
}

/// The report files a run writes.
#[derive(Args, Debug)]
struct ReportFiles {
    /// Write a JUnit XML report (a testsuite per shard); the tests'
    /// attachments go beside it, in FILE's stem + `-attachments/`.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Write every event as a JSON line.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write one self-contained HTML page: counts, a timeline per machine,
    /// the tests with a filter, each test's message, output, log and
    /// attachments (it opens from disk, with no network).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

impl ReportFiles {
    /// Whether any report file is asked for.
    fn any(&self) -> bool {
        self.junit.is_some() || self.json.is_some() || self.html.is_some()
    }

    fn reporters(&self) -> Result<Vec<Box<dyn Reporter>>, Failure> {
        let mut reporters: Vec<Box<dyn Reporter>> = Vec::new();
        if let Some(path) = &self.junit {
            reporters.push(Box::new(JunitReporter::new(path.clone())));
        }
        if let Some(path) = &self.json {
            reporters.push(Box::new(JsonLines::create(path).map_err(bad)?));
        }
        if let Some(path) = &self.html {
            reporters.push(Box::new(HtmlReport::new(path.clone())));
        }
        Ok(reporters)
    }
}

#[derive(Args, Debug)]
pub(super) struct ReportArgs {
    /// The id of a finished run the server keeps.
    #[arg(required_unless_present = "merge", conflicts_with = "merge", requires = "server")]
    run: Option<String>,
    /// JSON-lines logs of runs (`ensemble run --json`) to merge into one run.
    #[arg(long, num_args = 1.., value_name = "FILE")]
    merge: Vec<PathBuf>,
    #[command(flatten)]
    remote: ServerArgs,
    #[command(flatten)]
    files: ReportFiles,
}

/// Where a coordinator is, and how to talk to it.
#[derive(Args, Debug)]
pub(super) struct ServerArgs {
    /// The coordinator (`ensemble serve`) to talk to: http(s)://HOST:PORT.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// The server's token. Prefer ENSEMBLE_TOKEN or --token-file: what is
    /// on a command line, every local user can read.
    #[arg(long, env = "ENSEMBLE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Read the server's token from this file (`serve` keeps it in
    /// DATA_DIR/token).
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// Trust this CA (PEM) for an https:// server.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
}

impl ServerArgs {
    /// A client of `--server`, when given; an address that is not a
    /// server's is refused at once.
    fn client(&self) -> Result<Option<Client>, Failure> {
        let Some(server) = &self.server else { return Ok(None) };
        ensemble_client::server_url(server).map_err(|e| bad(anyhow::anyhow!("--server: {e}")))?;
        let tls = ensemble_client::tls_config(self.ca_file.as_deref()).map_err(bad)?;
        let token = token_from(&self.token, &self.token_file, "--token-file")?;
        Client::new(server, token, tls).map(Some).map_err(bad)
    }
}

#[derive(Args, Debug)]
pub(super) struct RunArgs {
    /// The plan file (TOML).
    #[arg(required_unless_present = "rerun_failed")]
    plan: Option<PathBuf>,
    /// Run again the failed, timed-out, crashed and lost tests of a finished
    /// run of the server, on that run's plan (needs --server).
    #[arg(long, value_name = "RUN_ID", requires = "server", conflicts_with_all = ["plan", "filters", "partition"])]
    rerun_failed: Option<String>,
    #[command(flatten)]
    files: ReportFiles,
    /// Never draw a progress bar (it is drawn only on a terminal anyway).
    #[arg(long)]
    no_progress: bool,
    /// Run on this coordinator instead of in this process (suites are
    /// uploaded first when the server lacks them).
    #[command(flatten)]
    remote: ServerArgs,
    /// Run only the tests this expression selects, e.g. `test(put) and not
    /// tag(slow)` (docs/filters.md); with several, a test any one selects.
    /// An entry's own `filter` must select it too.
    #[arg(short = 'E', long = "filter", value_name = "EXPR")]
    filters: Vec<String>,
    /// Tests marked ignored: default (skipped), only, or all.
    #[arg(long, value_name = "WHICH")]
    run_ignored: Option<ensemble_protocol::filter::RunIgnored>,
    /// Report the tests the filters leave out, as skipped ("filtered out").
    #[arg(long)]
    show_filtered: bool,
    /// Run part K of N of the selected tests, for N CI jobs: count:K/N
    /// (round-robin), hash:K/N (by name) or duration:K/N (balanced by
    /// recorded durations: the server's, or --durations FILE). Suites that
    /// use sync stay whole.
    #[arg(long, value_name = "KIND:K/N")]
    partition: Option<ensemble_protocol::filter::Partition>,
    /// Recorded test durations for a standalone duration:K/N partition, as
    /// `ensemble durations RUN_ID --server URL` writes them.
    #[arg(long, value_name = "FILE", conflicts_with = "server")]
    durations: Option<PathBuf>,
    #[command(flatten)]
    cache: CacheArgs,
}

impl RunArgs {
    /// The `-E` expressions as one filter (any of them); a bad one is the
    /// caller's to fix, with where it goes wrong.
    fn filter(&self) -> Result<Option<Filter>, Failure> {
        let mut combined: Option<Filter> = None;
        for source in &self.filters {
            let f = Filter::parse(source).map_err(|e| bad(anyhow::anyhow!("-E: {e}")))?;
            combined = Some(match combined {
                None => f,
                Some(c) => c.or(&f),
            });
        }
        Ok(combined)
    }

    /// Applies the selection flags to the plan: `-E` narrows every entry
    /// (with its own filter, both must select a test).
    fn select(&self, plan: &mut Plan, filter: Option<&Filter>) {
        if let Some(f) = filter {
            for e in &mut plan.entries {
                e.filter = Some(match e.filter.as_deref().map(Filter::parse) {
                    Some(Ok(own)) => own.and(f).source().to_string(),
                    // Reported by the plan's validation.
                    Some(Err(_)) => e.filter.clone().unwrap_or_default(),
                    None => f.source().to_string(),
                });
            }
        }
        if let Some(r) = self.run_ignored {
            plan.settings.run_ignored = r;
        }
        plan.settings.show_filtered |= self.show_filtered;
        if let Some(p) = self.partition {
            plan.settings.partition = Some(p);
        }
    }
}

#[derive(Args, Debug)]
pub(super) struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the URL is printed).
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: std::net::SocketAddr,
    /// Where plans, suites, runs and events are stored.
    #[arg(long, default_value = "ensemble-data")]
    data_dir: PathBuf,
    /// The API token people and CI use [default: made on first start and
    /// kept in DATA_DIR/token].
    #[arg(long, env = "ENSEMBLE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The token machines join with; it opens nothing else [default: made on
    /// first start and kept in DATA_DIR/join-token].
    #[arg(long, env = "ENSEMBLE_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// The name of the server's own machine.
    #[arg(long, default_value = "local")]
    name: String,
    /// Do not run tests on the server's own machine.
    #[arg(long)]
    no_local_machine: bool,
    /// Labels of the server's own machine (besides `os` and `arch`).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Shards the server's own machine runs at once.
    #[arg(long)]
    slots: Option<u32>,
    /// A machine silent this long is offline and its shards lost.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    heartbeat_timeout: std::time::Duration,
    /// How long a run taken up after a restart waits for its machines to
    /// come back before their unfinished shards are lost.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    restart_grace: std::time::Duration,
    /// How long an offline machine stays listed before it is forgotten.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    forget_offline_after: std::time::Duration,
    /// The largest suite upload accepted.
    #[arg(long, default_value = "64MiB")]
    max_suite_size: ensemble_protocol::units::ByteSize,
    /// The most the store's database may grow to (none: its disk is the
    /// bound). Past it, writes fail as on a full disk: runs that cannot
    /// record fail, new runs and uploads are refused (507) and /readyz is
    /// unready until runs are removed (`ensemble gc`) or retention frees room.
    #[arg(long)]
    store_max_size: Option<ensemble_protocol::units::ByteSize>,
    #[command(flatten)]
    retention: RetentionArgs,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Serve HTTPS/WSS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require this bearer token for `GET /metrics` (Prometheus); without
    /// it, /metrics is open like /healthz and /readyz.
    #[arg(long, env = "ENSEMBLE_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// The secret webhook calls are signed with (`X-Ensemble-Signature`)
    /// [default: made on first start and kept in DATA_DIR/webhook-secret].
    #[arg(long, env = "ENSEMBLE_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// The URL people reach this server at, for links in webhook calls
    /// [default: the address it listens on].
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// Non-public addresses plans' webhooks may call (an IP address,
    /// `localhost` or `*`; comma-separated or repeated). Webhooks call only
    /// public addresses otherwise: loopback, private, link-local and the
    /// like are refused.
    #[arg(long = "allow-webhook-to", value_name = "HOST", value_delimiter = ',', value_parser = parse_webhook_host)]
    allow_webhook_to: Vec<HostPattern>,
    /// The shortest time between two runs of one schedule: a plan whose
    /// schedule fires more often is refused, and a stored one fires no more
    /// often than this.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    min_schedule_interval: std::time::Duration,
    #[command(flatten)]
    cache: CacheArgs,
}

/// How long the server keeps runs and the files tests attach (swept at
/// start and every hour; `ensemble gc` sweeps at once).
#[derive(Args, Debug)]
struct RetentionArgs {
    /// Finished runs that started longer ago than this are removed, with
    /// their events and results.
    #[arg(long, default_value = "365d", value_parser = parse_duration)]
    run_retention: std::time::Duration,
    /// The most finished runs kept: past it, the oldest are removed first.
    #[arg(long, default_value_t = 100_000)]
    max_runs: u64,
    /// The most uploaded suites may weigh in all: past it, suites no stored
    /// plan or kept run names go, oldest first (they also go once older
    /// than --run-retention).
    #[arg(long, default_value = "20GiB")]
    suite_budget: ensemble_protocol::units::ByteSize,
    /// Files attached by runs that started longer ago than this are removed
    /// (their names and sizes stay in the run's events).
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    attachment_retention: std::time::Duration,
    /// The most attached files may weigh in all: past it, the oldest runs'
    /// files are removed first.
    #[arg(long, default_value = "10GiB")]
    attachment_budget: ensemble_protocol::units::ByteSize,
}

impl RetentionArgs {
    fn policy(&self) -> crate::server::Retention {
        crate::server::Retention {
            runs: self.run_retention,
            max_runs: self.max_runs,
            suite_budget: self.suite_budget.0,
            attachments: self.attachment_retention,
            attachment_budget: self.attachment_budget.0,
            store_max_bytes: None,
        }
    }
}

/// `ensemble gc`: sweep a data directory's runs and attachments now.
#[derive(Args, Debug)]
pub(super) struct GcArgs {
    /// The server's data directory.
    #[arg(long, default_value = "ensemble-data")]
    data_dir: PathBuf,
    #[command(flatten)]
    retention: RetentionArgs,
}

fn parse_webhook_host(s: &str) -> Result<HostPattern, String> {
    match NetGrant::parse(&format!("{s}:*")).map(|g| g.host) {
        Ok(HostPattern::Name(_)) | Err(_) => {
            Err(format!("{s:?} is not an IP address, \"localhost\" or \"*\""))
        }
        Ok(host) => Ok(host),
    }
}

#[derive(Args, Debug)]
pub(super) struct DemoArgs {
    /// Address for the demo server.
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: std::net::SocketAddr,
    /// Where the demo server keeps its data [default: a temporary directory].
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub(super) enum PlanCommand {
    /// Validate a plan without running it (also builds and loads its suites).
    Check {
        file: PathBuf,
        /// Only check the plan file itself, not its suites.
        #[arg(long)]
        no_suites: bool,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Save a plan on the server (`--server`), its suites uploaded: the
    /// server's plan of the same name is replaced, or a new one made. The
    /// machines that could run it compile its suites now, so that its runs
    /// (`ensemble run PLAN --server URL`, the app) start on compiled code.
    Save {
        file: PathBuf,
        #[command(flatten)]
        remote: ServerArgs,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum SuiteCommand {
    /// Create a suite project that builds and passes as it is, with a plan
    /// that runs it: `ensemble run DIR/plan.toml`.
    New {
        /// The new project's directory (must not exist, or be empty).
        dir: PathBuf,
        /// The suite's language: rust, python or js.
        #[arg(long, default_value = "rust", value_parser = parse_lang)]
        lang: crate::suites::lang::Lang,
        /// The suite's name [default: the directory's name].
        #[arg(long)]
        name: Option<String>,
        /// The Rust SDK (`suites/sdk` of an Ensemble checkout) [default: the
        /// one this binary was built from].
        #[arg(long, value_name = "PATH")]
        sdk: Option<PathBuf>,
    },
    /// Build a suite project (Rust, Python or JavaScript, told by its
    /// Cargo.toml, pyproject.toml or package.json) into a component; prints
    /// the component's path.
    Build {
        /// The project's directory.
        dir: PathBuf,
        /// Also copy the component here.
        #[arg(long, short = 'o', value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Show a suite's kind, tests, declared params and imports.
    Inspect {
        /// A .wasm component or a suite crate directory.
        file: PathBuf,
        #[command(flatten)]
        cache: CacheArgs,
    },
}

fn parse_lang(text: &str) -> Result<crate::suites::lang::Lang, String> {
    crate::suites::lang::Lang::parse(text)
}

/// A client call's failure: bad input (an address that is no server's, a
/// refused token) is the user's to fix (2), as is a server out of reach
/// (4); anything else is ensemble's (3).
fn client_failure(e: ensemble_client::ClientError) -> Failure {
    if e.is_bad_input() {
        bad(e)
    } else if e.is_unreachable() {
        Failure { code: exit::UNREACHABLE, error: e.into() }
    } else {
        internal(e)
    }
}

/// The exit code for a plan that could not be prepared.
fn prepared(e: Prepared) -> Failure {
    match e {
        Prepared::Invalid(message) => bad(anyhow::anyhow!(message)),
        Prepared::Internal(e) => internal(e),
    }
}

async fn run(args: RunArgs) -> Result<i32, Failure> {
    let filter = args.filter()?;
    // Before any suite is built (minutes, the first time): a mistyped
    // address, something else listening there or a wrong token is refused
    // at once.
    if let Some(client) = args.remote.client()? {
        client.machines().await.map_err(client_failure)?;
        let request = match (&args.rerun_failed, &args.plan) {
            (Some(run), _) => RunRequest { rerun_failed: Some(run.clone()), ..RunRequest::default() },
            (None, Some(path)) => {
                let mut file = prepare::resolve(path).await.map_err(prepared)?;
                args.select(&mut file.plan, filter.as_ref());
                let plan = file.upload(&client).await.map_err(prepared)?;
                RunRequest { plan: Some(plan), ..RunRequest::default() }
            }
            (None, None) => unreachable!("clap requires a plan or --rerun-failed"),
        };
        return run_remote(&args, &request, &client).await;
    }
    let Some(path) = &args.plan else {
        return Err(bad(anyhow::anyhow!("--rerun-failed needs --server: the server keeps the runs")));
    };
    let mut file = prepare::resolve(path).await.map_err(prepared)?;
    args.select(&mut file.plan, filter.as_ref());
    // Every shard of a standalone run may run at once, in this process.
    let shards = file.plan.entries.len() * file.plan.profiles.iter().map(|p| p.count as usize).sum::<usize>();
    let sandbox = args.cache.sandbox_for(shards)?;
    let uses_sync = file.load(&sandbox).await.map_err(prepared)?;
    let reporters = reporters(&args)?;
    let durations = match &args.durations {
        Some(path) => ensemble_protocol::filter::shared(read_durations(path)?),
        None => Default::default(),
    };
    let result =
        crate::standalone::run(&file.plan, &file.suites, &uses_sync, &durations, sandbox.clone(), reporters)
            .await
            .map_err(bad)?;
    // A large suite ran on the baseline tier: finish its optimized code,
    // which the cache then keeps, or every later run would start there again.
    let optimizing = sandbox.optimizing();
    if optimizing > 0 {
        eprintln!(
            "ensemble: finishing the optimized code of {optimizing} suite(s) for the next runs (it is cached; \
             --compile-tiers baseline skips it)"
        );
        sandbox.optimized().await;
    }
    Ok(result.verdict.exit_code())
}

async fn save(path: &Path, remote: &ServerArgs) -> Result<i32, Failure> {
    let Some(client) = remote.client()? else {
        return Err(bad(anyhow::anyhow!("plan save needs --server URL: the server keeps the plans")));
    };
    // A mistyped address or a wrong token is refused before suites are built.
    client.machines().await.map_err(client_failure)?;
    let file = prepare::resolve(path).await.map_err(prepared)?;
    let plan = file.upload(&client).await.map_err(prepared)?;
    let same: Vec<String> = plans_named(&client, &plan.name).await?.into_iter().map(|p| p.id).collect();
    let (saved, how) = match same.as_slice() {
        [] => (client.create_plan(&plan).await, "a new plan"),
        [id] => (client.update_plan(id, &plan).await, "replacing the plan of that name"),
        ids => {
            return Err(bad(anyhow::anyhow!(
                "{}: {} plans on the server are named {:?} (ids {}): delete or rename all but one, or rename this one",
                path.display(),
                ids.len(),
                plan.name,
                ids.join(", ")
            )));
        }
    };
    let saved = saved.map_err(|e| {
        if e.is_bad_input() { bad(anyhow::anyhow!("{}: {e}", path.display())) } else { client_failure(e) }
    })?;
    println!(
        "Saved plan {:?} as {} ({how}): the machines that could run it compile its suites now.",
        saved.plan.name, saved.id
    );
    Ok(exit::SUCCESS)
}

/// The server's plans named `name` (`GET /api/plans?name=`), page by page.
async fn plans_named(
    client: &Client,
    name: &str,
) -> Result<Vec<ensemble_protocol::api::StoredPlan>, Failure> {
    // Plans kept on a server: 10,000; a page holds one at least.
    const PAGES: usize = 10_001;
    let (mut found, mut offset) = (Vec::new(), 0u32);
    for _ in 0..PAGES {
        let query = PlansQuery { limit: Some(1000), offset: Some(offset), name: Some(name.to_string()) };
        let page = client.plans_page(&query).await.map_err(client_failure)?;
        if page.is_empty() {
            return Ok(found);
        }
        offset = offset.saturating_add(u32::try_from(page.len()).unwrap_or(u32::MAX));
        // The server filters by name; an older one that does not sends them all.
        found.extend(page.into_iter().filter(|p| p.plan.name == name));
    }
    Err(internal(anyhow::anyhow!("the server's list of plans did not end after {PAGES} pages")))
}

async fn check(path: &Path, no_suites: bool, cache: &CacheArgs) -> Result<i32, Failure> {
    let plan = if no_suites {
        prepare::read_plan(path).map_err(bad)?
    } else {
        let file = prepare::resolve(path).await.map_err(prepared)?;
        let sandbox = cache.sandbox()?;
        file.load(&sandbox).await.map_err(prepared)?;
        file.plan
    };
    println!(
        "{}: plan {:?} is valid ({}, {} profile(s), {} entr{})",
        path.display(),
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
    let sandbox = cache.sandbox()?;
    let meta = sandbox
        .inspect(local.bytes.clone(), &local.name)
        .await
        .map_err(|e| bad(anyhow::Error::new(e).context(local.path.display().to_string())))?;
    println!("suite:   {}", meta.name);
    println!("file:    {}", local.path.display());
    println!("kind:    {}", meta.kind_shown());
    println!("size:    {} bytes", meta.size);
    println!("sha256:  {}", meta.sha256);
    println!("tests:   {}", meta.tests.len());
    for t in &meta.tests {
        let mut notes = Vec::new();
        if t.ignored {
            notes.push("ignored".to_string());
        }
        if !t.tags.is_empty() {
            notes.push(format!("tags: {}", t.tags.join(", ")));
        }
        if let Some(ms) = t.timeout_ms {
            notes.push(format!(
                "timeout: {}",
                humantime::format_duration(std::time::Duration::from_millis(ms))
            ));
        }
        let notes = if notes.is_empty() { String::new() } else { format!("  ({})", notes.join("; ")) };
        println!("  {}{notes}", t.name);
    }
    match &meta.params {
        None => println!("params:  not declared (only suites of suite ABI 0.2 and later declare theirs)"),
        Some(params) => {
            println!("params:  {}", params.len());
            for p in params {
                let mut what = vec![p.kind.to_string()];
                if p.required {
                    what.push("required".into());
                }
                if let Some(d) = &p.default {
                    what.push(format!("default {d}"));
                }
                let help = if p.help.is_empty() { String::new() } else { format!("  {}", p.help) };
                println!("  {} ({}){help}", p.name, what.join(", "));
            }
        }
    }
    println!("imports:");
    for i in &meta.imports {
        println!("  {i}");
    }
    println!("exports:");
    for e in &meta.exports {
        println!("  {e}");
    }
    Ok(exit::SUCCESS)
}

fn reporters(args: &RunArgs) -> Result<Vec<Box<dyn Reporter>>, Failure> {
    let progress = !args.no_progress && std::io::stderr().is_terminal();
    let mut reporters: Vec<Box<dyn Reporter>> =
        vec![Box::new(TerminalReporter::new(Box::new(std::io::stdout()), progress))];
    reporters.extend(args.files.reporters()?);
    Ok(reporters)
}

/// Recorded durations (`ensemble durations`): role → test → milliseconds.
fn read_durations(path: &Path) -> Result<ensemble_protocol::filter::Durations, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(anyhow::anyhow!("--durations: reading {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| {
        bad(anyhow::anyhow!(
            "--durations: {} is not a durations file ({{\"role\": {{\"test\": milliseconds}}}}, as `ensemble \
             durations` writes): {e}",
            path.display()
        ))
    })
}

/// `ensemble durations RUN_ID --server URL` (or `--log FILE`): the
/// durations of a finished run's tests, for `--partition duration:K/N
/// --durations FILE`.
async fn durations(args: DurationsArgs) -> Result<i32, Failure> {
    let events = match (&args.run, &args.log) {
        (Some(run), _) => {
            let client = args
                .remote
                .client()?
                .ok_or_else(|| bad(anyhow::anyhow!("--server is needed: it keeps the runs")))?;
            let mut events = Vec::new();
            client.watch(run, 1, |e| events.push(e)).await.map_err(|e| {
                if e.kind() == Some(ensemble_protocol::api::ErrorKind::NotFound) {
                    bad(e)
                } else {
                    internal(e)
                }
            })?;
            events
        }
        (None, Some(log)) => crate::report::read_json_lines(log).map_err(bad)?.1,
        (None, None) => unreachable!("clap requires a run or --log"),
    };
    let mut out = ensemble_protocol::filter::Durations::new();
    let mut finished = false;
    for e in events {
        match e.kind {
            ensemble_protocol::EventKind::TestFinished { shard, test, duration_ms, outcome, .. }
                if !matches!(
                    outcome,
                    ensemble_protocol::Outcome::Skipped
                        | ensemble_protocol::Outcome::Lost
                        | ensemble_protocol::Outcome::Cancelled
                ) =>
            {
                let slot = out.entry(shard.role).or_default().entry(test).or_insert(0);
                *slot = (*slot).max(duration_ms);
            }
            ensemble_protocol::EventKind::RunFinished { .. } => finished = true,
            _ => {}
        }
    }
    if !finished {
        return Err(bad(anyhow::anyhow!("the run has not finished (its events have no run-finished)")));
    }
    let text = serde_json::to_string_pretty(&out).map_err(internal)?;
    match &args.out {
        Some(path) => std::fs::write(path, text + "\n")
            .map_err(|e| internal(anyhow::anyhow!("writing {}: {e}", path.display())))?,
        None => println!("{text}"),
    }
    Ok(exit::SUCCESS)
}

/// `ensemble report`: a stored run's events, or JSON-lines logs merged,
/// through the report files asked for; the exit code is the run's verdict's.
async fn report(args: ReportArgs) -> Result<i32, Failure> {
    if !args.files.any() {
        return Err(bad(anyhow::anyhow!("name a report to write: --html FILE, --junit FILE or --json FILE")));
    }
    let events = match (&args.run, args.remote.client()?) {
        (Some(run), Some(client)) => {
            let meta = client.run(run).await.map_err(|e| {
                if e.is_bad_input() || e.kind() == Some(ensemble_protocol::api::ErrorKind::NotFound) {
                    bad(e)
                } else {
                    internal(e)
                }
            })?;
            if matches!(meta.state, RunState::Running | RunState::Queued) {
                return Err(bad(anyhow::anyhow!("run {run} has not finished: report it once it has")));
            }
            let mut events = Vec::new();
            client.watch_with_attachments(run, 1, |e| events.push(e)).await.map_err(internal)?;
            events
        }
        _ => {
            let mut logs = Vec::new();
            for path in &args.merge {
                logs.push(crate::report::read_json_lines(path).map_err(bad)?);
            }
            crate::report::merge(logs).map_err(bad)?
        }
    };
    let mut reporters = args.files.reporters()?;
    let mut verdict = None;
    for e in &events {
        if let ensemble_protocol::EventKind::RunFinished { verdict: v, .. } = &e.kind {
            verdict = Some(*v);
        }
        for r in reporters.iter_mut() {
            r.event(e).map_err(internal)?;
        }
    }
    for r in reporters.iter_mut() {
        r.finish().map_err(internal)?;
    }
    let verdict = verdict
        .ok_or_else(|| bad(anyhow::anyhow!("the run has no end (run-finished): is the log whole?")))?;
    for line in crate::report::fault_summary(&events) {
        println!("{line}");
    }
    let counts = events.iter().rev().find_map(|e| match &e.kind {
        ensemble_protocol::EventKind::RunFinished { summary, .. } => Some(summary.describe()),
        _ => None,
    });
    println!(
        "{} run: {verdict} ({})",
        if args.merge.len() > 1 { "Merged" } else { "The" },
        counts.unwrap_or_default()
    );
    Ok(verdict.exit_code())
}

/// `ensemble run PLAN --server URL`: upload suites, start, watch. The exit
/// code comes from the run's verdict, as in a standalone run.
async fn run_remote(args: &RunArgs, request: &RunRequest, client: &Client) -> Result<i32, Failure> {
    use ensemble_protocol::api::ErrorKind;
    // A run id that is not the server's, or a run with nothing to rerun, is
    // the caller's to fix.
    let rerun_mistake = |e: &ensemble_client::ClientError| {
        request.rerun_failed.is_some() && matches!(e.kind(), Some(ErrorKind::NotFound | ErrorKind::Conflict))
    };
    let run = client
        .start_run(request)
        .await
        .map_err(|e| if rerun_mistake(&e) { bad(e) } else { client_failure(e) })?;
    if let Some(of) = &request.rerun_failed {
        println!("Run {} reruns the failures of run {of}.", run.id);
    }
    let mut reporters = reporters(args)?;
    // Attachment bytes only for the reporters that write them to files.
    let feed = |ev: ensemble_protocol::Event| {
        for r in reporters.iter_mut() {
            if let Err(e) = r.event(&ev) {
                tracing::warn!("a reporter failed: {e:#}");
            }
        }
    };
    let watched = if args.files.any() {
        client.watch_with_attachments(&run.id, 1, feed).await
    } else {
        client.watch(&run.id, 1, feed).await
    };
    watched.map_err(internal)?;
    for r in reporters.iter_mut() {
        r.finish().map_err(internal)?;
    }
    // The stored run is the truth, not what came over the stream: it is
    // committed before `run-finished` is sent.
    let meta = client.run(&run.id).await.map_err(internal)?;
    let verdict = match meta.state {
        RunState::Passed => Verdict::Passed,
        RunState::Cancelled => Verdict::Cancelled,
        RunState::Failed | RunState::Interrupted => Verdict::Failed,
        RunState::Running | RunState::Queued => {
            return Err(internal(anyhow::anyhow!("run {} is still running", run.id)));
        }
    };
    Ok(verdict.exit_code())
}

async fn gc(args: GcArgs) -> Result<i32, Failure> {
    if !args.data_dir.join("ensemble.db").is_file() {
        return Err(bad(anyhow::anyhow!(
            "{} holds no ensemble.db: is it a server's --data-dir?",
            args.data_dir.display()
        )));
    }
    let store = crate::store::Store::open(&args.data_dir).map_err(internal)?;
    let swept = crate::server::sweep(&store, args.retention.policy()).await.map_err(internal)?;
    println!("ensemble gc: {}; {}; {}", swept.0, swept.1, swept.2);
    Ok(exit::SUCCESS)
}

async fn serve(args: ServeArgs) -> Result<i32, Failure> {
    // Always a token: without --token, the one kept in the data dir (made on
    // first start), so a web page the user visits cannot drive the server.
    let (token, token_file) = match &args.token {
        Some(t) => (t.clone(), None),
        None => {
            let (token, path) = crate::secret::kept_secret(&args.data_dir, "token").map_err(internal)?;
            (token, Some(path))
        }
    };
    // Machines get a token of their own, which opens nothing but the machine
    // WebSocket.
    let join_token = match &args.join_token {
        Some(t) => t.clone(),
        None => crate::secret::kept_secret(&args.data_dir, "join-token").map_err(internal)?.0,
    };
    let webhook_secret = match &args.webhook_secret {
        Some(t) => t.clone(),
        None => crate::secret::kept_secret(&args.data_dir, "webhook-secret").map_err(internal)?.0,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| bad(anyhow::anyhow!("cannot listen on {}: {e}{}", args.listen, listen_hint(&e))))?;
    let addr = listener.local_addr().map_err(internal)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key).map_err(bad)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let local = (!args.no_local_machine).then(|| ensemble_protocol::wire::MachineInfo {
        allow_exec: args.policy.allow_exec.clone(),
        ..machine_info(args.name.clone(), args.labels.clone(), args.slots)
    });
    let mut cache = args.cache.clone();
    if local.is_none() && cache.compile_tiers == crate::sandbox::Tiers::Tiered {
        // It only inspects uploads (lists their tests): the baseline code
        // does that, and optimizing in the background would be for nobody.
        cache.compile_tiers = crate::sandbox::Tiers::Baseline;
    }
    let sandbox = cache.sandbox_for(local.as_ref().map_or(0, |m| m.slots as usize))?;
    cache.trim_later()?;
    let opts = crate::server::ServeOptions {
        listener,
        data_dir: args.data_dir.clone(),
        config: crate::coordinator::CoordinatorConfig {
            name: args.name.clone(),
            token: Some(token.clone()),
            join_token: Some(join_token.clone()),
            heartbeat_timeout: args.heartbeat_timeout,
            offline_retention: args.forget_offline_after,
            restart_grace: args.restart_grace,
            max_suite_bytes: usize::try_from(args.max_suite_size.0).unwrap_or(usize::MAX),
            suite_budget: args.retention.suite_budget.0,
            shutdown_grace: SHUTDOWN_GRACE,
            loopback_only: addr.ip().is_loopback(),
            metrics_token: args.metrics_token.clone(),
            webhook_secret,
            public_url: args.public_url.clone().unwrap_or_else(|| format!("{scheme}://{addr}")),
            webhook_allow: args.allow_webhook_to.clone(),
            min_schedule_interval: args.min_schedule_interval,
        },
        retention: crate::server::Retention {
            store_max_bytes: args.store_max_size.map(|s| s.0),
            ..args.retention.policy()
        },
        local_machine: local,
        // Suites on the server's own machine never reach the server itself.
        policy: args.policy.policy("ensemble serve", vec![listen_grant(addr)]),
        services: args.policy.services(
            "ensemble serve",
            if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() },
            &args.name,
            &args.data_dir,
        ),
        tls,
    };
    // The first line names the address, so scripts (and tests) can find a port 0.
    println!("ensemble serve: listening on {scheme}://{addr}");
    if args.join_token.is_none() {
        let path = args.data_dir.join("join-token");
        println!(
            "ensemble serve: runners join with the token in {} (ensemble runner --join URL --token-file FILE)",
            path.display()
        );
    }
    if let Some(path) = token_file {
        println!(
            "ensemble serve: the token is in {} (pass it with --token or ENSEMBLE_TOKEN)",
            path.display()
        );
        println!("ensemble serve: open {scheme}://{addr}/?token={}", ensemble_protocol::api::encode(&token));
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let shutdown = stop_on_signal();
    crate::server::serve(opts, sandbox, shutdown).await.map_err(internal)?;
    eprintln!("ensemble serve: stopped");
    Ok(exit::SUCCESS)
}

/// What to do when the address to listen on is taken or not ours.
fn listen_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            " (another process listens there: pick another address with --listen HOST:PORT, or \
             --listen 127.0.0.1:0 for any free port; through cargo, put it after `--`: \
             cargo run -p ensemble-runner -- serve --listen 127.0.0.1:7979)"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            " (this machine has no such address: use one of its own, or 0.0.0.0 for all)"
        }
        std::io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges: use a higher port)",
        _ => "",
    }
}

/// How to call this binary in a command printed for a person to copy:
/// `ensemble` when that is what the PATH finds, else this binary's path
/// (relative to the current directory when it is under it).
pub fn invocation() -> String {
    let Ok(exe) = std::env::current_exe().and_then(|e| e.canonicalize()) else {
        return "ensemble".to_string();
    };
    let name = format!("ensemble{}", std::env::consts::EXE_SUFFIX);
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| dir.join(&name).canonicalize().is_ok_and(|p| p == exe))
    });
    if on_path {
        return "ensemble".to_string();
    }
    let cwd = std::env::current_dir().ok().and_then(|d| d.canonicalize().ok());
    match cwd.and_then(|d| exe.strip_prefix(d).ok().map(std::path::Path::to_path_buf)) {
        Some(rel) => rel.display().to_string(),
        None => exe.display().to_string(),
    }
}

/// How long `serve` waits, when stopping, for its runs' machines to wind
/// the runs down before it gives their unfinished shards up as lost.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
