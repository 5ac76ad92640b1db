//! The `ensemble` command line.
//!
//! Every command returns an exit code from [`ensemble_protocol::exit`]:
//! 0 all passed, 1 a test failed (or timed out, crashed, was lost), 2 bad
//! plan/suite/usage, 3 internal error, 4 the server unreachable, 141 the
//! output closed by its reader.

#[cfg(feature = "coordinator")]
mod coordinated;
#[cfg(feature = "coordinator")]
pub use coordinated::invocation;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, CommandFactory, Parser, Subcommand};
use ensemble_protocol::exit;
use ensemble_protocol::grant::{HostPattern, NetGrant};

use crate::sandbox::{ArtifactCache, HostPolicy, Sandbox, SandboxOptions};

/// The commands only the full binary has, named when a runner-only build
/// is asked for one.
#[cfg_attr(feature = "coordinator", allow(dead_code))]
const COORDINATOR_COMMANDS: &[&str] = &["run", "serve", "demo", "plan", "suite", "report", "durations", "gc"];

const EXIT_CODES: &str = "Exit codes:
  0  every test passed (skipped and ignored tests do not count against a run)
  1  a test failed, timed out, crashed or was lost
  2  the plan, a suite or the command line is invalid; nothing ran
  3  ensemble itself failed (I/O, internal error)
  4  the server could not be reached; nothing ran
  141  the output was closed by its reader (piped into `head`, say): it stopped there";

#[derive(Parser, Debug)]
#[command(name = "ensemble", version, about = "A distributed test runner for WebAssembly test suites", after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written to stderr: `text` for people, `json` (one
    /// object per line, with fields such as `run` and `machine`) for log
    /// collectors. `ENSEMBLE_LOG` picks what is logged (default `warn`).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "ENSEMBLE_LOG_FORMAT",
        hide_env_values = true
    )]
    log_format: LogFormat,
    /// A TOML file of settings for `serve` and `runner` (a `[serve]` and a
    /// `[runner]` table, keys named as the flags); flags and `ENSEMBLE_*`
    /// variables win over it [default: ~/.config/ensemble/config.toml when
    /// it exists].
    #[arg(long, global = true, value_name = "FILE", env = "ENSEMBLE_CONFIG", hide_env_values = true)]
    config: Option<PathBuf>,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The commands of a coordinator and of people: a build without the
    /// `coordinator` feature is a runner only.
    #[cfg(feature = "coordinator")]
    #[command(flatten)]
    Coordinated(Box<coordinated::Command>),
    /// Join a coordinator as a machine and run the shards it assigns.
    Runner(Box<RunnerArgs>),
    /// Print the shell completion script for SHELL (e.g. `ensemble
    /// completions bash > /etc/bash_completion.d/ensemble`).
    Completions { shell: clap_complete::Shell },
    /// Print the man page ensemble(1), or with `--out-dir` write it and one
    /// page per command (ensemble-serve.1, …) into that directory.
    Man {
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

/// The token given with `--token` (or its variable), or read from
/// `--token-file` (trimmed); `flag` names the file flag in errors.
fn token_from(token: &Option<String>, file: &Option<PathBuf>, flag: &str) -> Result<Option<String>, Failure> {
    match (token, file) {
        (Some(t), _) => Ok(Some(t.clone())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| bad(anyhow::anyhow!("{flag} {}: {e}", path.display())))?;
            let token = text.trim();
            if token.is_empty() {
                return Err(bad(anyhow::anyhow!("{flag} {}: the file is empty", path.display())));
            }
            Ok(Some(token.to_string()))
        }
        (None, None) => Ok(None),
    }
}

#[derive(Args, Debug)]
struct RunnerArgs {
    /// The coordinator's URL, e.g. http://10.0.0.5:7878.
    #[arg(long, value_name = "URL")]
    join: String,
    /// The coordinator's join token. Prefer ENSEMBLE_JOIN_TOKEN or
    /// --token-file: what is on a command line, every local user can read.
    #[arg(long, env = "ENSEMBLE_JOIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Read the join token from this file (`ensemble serve` keeps it in
    /// DATA_DIR/join-token).
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// This machine's name [default: the host name].
    #[arg(long)]
    name: Option<String>,
    /// Labels profiles select by (besides the built-in `os` and `arch`).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Shards run at once [default: the number of CPUs].
    #[arg(long)]
    slots: Option<u32>,
    /// How often to tell the coordinator this machine is alive.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    heartbeat: std::time::Duration,
    /// Trust this CA (PEM) for an https:// coordinator.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Serve this machine's Prometheus metrics at http://ADDR/metrics
    /// (sandbox instantiation and test durations; port 0 picks one, printed).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Do not compile the suites of the coordinator's saved plans before
    /// their runs (by default they are fetched and compiled into the cache
    /// in the background, at the lowest priority, one at a time).
    #[arg(long)]
    no_precompile: bool,
    #[command(flatten)]
    policy: PolicyArgs,
    #[command(flatten)]
    cache: CacheArgs,
}

/// What plans may grant the suites this machine runs. Nothing by default:
/// a plan's `env` and `net` grants must be within these, or its shard fails
/// with a message naming the flag. `ENSEMBLE_*` variables and the
/// coordinator's own address are never reachable.
#[derive(Args, Debug)]
struct PolicyArgs {
    /// Host environment variables plans may grant (comma-separated or
    /// repeated; a trailing `*` matches a prefix).
    #[arg(long = "allow-env", value_name = "NAME", value_delimiter = ',')]
    allow_env: Vec<String>,
    /// Addresses plans may let suites connect to (`host:port`, `*` for any
    /// host or port; `service:NAME` or `service:*` for the run's own
    /// services; comma-separated or repeated).
    #[arg(long = "allow-net", value_name = "HOST:PORT", value_delimiter = ',', value_parser = parse_net)]
    allow_net: Vec<String>,
    /// Resolve host name NAME to ADDRESS for suites on this machine rather
    /// than with its resolver (repeat for more addresses or names): for
    /// names plans grant (`api.test:443`) that no DNS server here knows.
    #[arg(long = "add-host", value_name = "NAME=ADDRESS", value_parser = parse_add_host)]
    add_host: Vec<(String, std::net::IpAddr)>,
    /// Programs a plan's services may start on this machine: names looked
    /// up on PATH, absolute paths, `DIR/*` for a directory's programs, or
    /// `*` for any (comma-separated or repeated). None by default.
    #[arg(long = "allow-exec", value_name = "PROGRAM", value_delimiter = ',')]
    allow_exec: Vec<String>,
    /// The address other machines reach this one's services at (`{host}`
    /// in a service's command): by default the local address of this
    /// machine's link to the coordinator.
    #[arg(long, value_name = "HOST")]
    advertise: Option<String>,
}

impl PolicyArgs {
    fn policy(&self, command: &str, deny_net: Vec<NetGrant>) -> HostPolicy {
        let (services, net): (Vec<&String>, Vec<&String>) =
            self.allow_net.iter().partition(|g| ensemble_protocol::service::granted_service(g).is_some());
        let net = net.iter().filter_map(|g| NetGrant::parse(g).ok()).collect();
        let services = services
            .iter()
            .filter_map(|g| ensemble_protocol::service::granted_service(g))
            .map(str::to_string)
            .collect();
        HostPolicy::allowing(command, self.allow_env.clone(), net, deny_net)
            .with_services(services)
            .with_hosts(self.add_host.clone())
    }

    /// What services may start here, reached at `advertise` (or
    /// `default_host`); the machine `name` with its cache at `cache_dir`
    /// first ends what its previous life left running.
    fn services(
        &self,
        command: &str,
        default_host: String,
        name: &str,
        cache_dir: &Path,
    ) -> crate::services::Host {
        crate::services::die_together();
        let owner = crate::services::owner_of(name, cache_dir);
        let ended = crate::services::end_leftovers(&owner);
        if ended > 0 {
            eprintln!("{command}: ended {ended} process(es) of services its previous run left behind");
        }
        crate::services::Host {
            allow_exec: crate::services::AllowExec::allowing(command, self.allow_exec.clone()),
            advertise: self.advertise.clone().unwrap_or(default_host),
            owner: Some(owner),
        }
    }
}

fn parse_net(s: &str) -> Result<String, String> {
    match ensemble_protocol::service::granted_service(s) {
        Some(name) if name == "*" || ensemble_protocol::service::check_name(name).is_ok() => {
            Ok(s.to_string())
        }
        Some(name) => ensemble_protocol::service::check_name(name).map(|_| s.to_string()),
        None => NetGrant::parse(s).map(|_| s.to_string()),
    }
}

fn parse_add_host(s: &str) -> Result<(String, std::net::IpAddr), String> {
    let (name, address) = s.split_once('=').ok_or_else(|| format!("{s:?} is not NAME=ADDRESS"))?;
    let name =
        ensemble_protocol::grant::host_name(name).ok_or_else(|| format!("{name:?} is not a host name"))?;
    let bare = address.trim_start_matches('[').trim_end_matches(']');
    let ip = bare.parse().map_err(|_| format!("{address:?} is not an IP address"))?;
    Ok((name, ip))
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    s.parse::<ensemble_protocol::units::HumanDuration>().map(|d| d.0)
}

#[derive(Args, Clone, Debug)]
struct CacheArgs {
    /// Where compiled suites are cached [default: ~/.cache/ensemble/compiled].
    #[arg(long, value_name = "DIR", env = "ENSEMBLE_CACHE_DIR", hide_env_values = true)]
    cache_dir: Option<PathBuf>,
    /// The most the cache directory holds: compiled suites and the suites
    /// fetched from a coordinator. Past it the least recently used are
    /// removed (compiled or fetched again when a run needs them).
    #[arg(long, default_value = "4GiB", env = "ENSEMBLE_CACHE_MAX_SIZE", hide_env_values = true)]
    cache_max_size: ensemble_protocol::units::ByteSize,
    /// The longest compiling one suite may take (in a process of its own,
    /// ended at the limit or when nobody waits for it any more).
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    compile_timeout: std::time::Duration,
    /// The most memory compiling one suite may take.
    #[arg(long, default_value = "2GiB")]
    compile_memory: ensemble_protocol::units::ByteSize,
    /// Which compilers make a new suite's code: `tiered` starts a large
    /// suite on the baseline compiler (seconds sooner) and swaps in the
    /// optimized code when the background compile ends.
    #[arg(long, value_enum, default_value_t, env = "ENSEMBLE_COMPILE_TIERS", hide_env_values = true)]
    compile_tiers: crate::sandbox::Tiers,
}

impl CacheArgs {
    #[cfg(feature = "coordinator")]
    fn sandbox(&self) -> Result<Arc<Sandbox>, Failure> {
        self.sandbox_for(0)
    }

    /// The cache directory, made if missing. One that cannot be made or
    /// written is the caller's to fix, named with the flag that sets it.
    fn dir(&self) -> Result<PathBuf, Failure> {
        let dir = self.cache_dir.clone().unwrap_or_else(ArtifactCache::default_dir);
        let probe = dir.join(format!(".write-check-{}", std::process::id()));
        let usable = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&probe, b""))
            .and_then(|()| std::fs::remove_file(&probe));
        usable.map_err(|e| {
            bad(anyhow::anyhow!(
                "the cache directory {} cannot be used: {e} (point --cache-dir or ENSEMBLE_CACHE_DIR at a \
                 directory this user can write)",
                dir.display()
            ))
        })?;
        Ok(dir)
    }

    /// Brings the cache directory within its bound in the background: what
    /// a long-lived process does at its start, since the bound may have
    /// been lowered since the cache filled (later, each store trims it).
    fn trim_later(&self) -> Result<(), Failure> {
        let (dir, max) = (self.dir()?, self.cache_max_size.0);
        std::thread::Builder::new()
            .name("ensemble-trim".into())
            .spawn(move || crate::sandbox::cache::trim(&dir, max, None))
            .map_err(internal)?;
        Ok(())
    }

    /// A sandbox whose instance pool holds `parallel` shards' tests at
    /// once (each shard runs one test instance at a time), and never fewer
    /// than the default.
    fn sandbox_for(&self, parallel: usize) -> Result<Arc<Sandbox>, Failure> {
        let dir = self.dir()?;
        let defaults = SandboxOptions::default();
        let max_instances = defaults.max_instances.max(u32::try_from(parallel).unwrap_or(u32::MAX));
        // Compiled within the budget by this binary in a child process (when
        // it can tell where it is).
        let compile = crate::sandbox::compile::CompileBudget::of_this_binary().map(|b| {
            crate::sandbox::compile::CompileBudget {
                timeout: self.compile_timeout,
                memory: self.compile_memory.0,
                ..b
            }
        });
        let sandbox = Sandbox::new(SandboxOptions {
            cache_dir: Some(dir),
            cache_max_size: self.cache_max_size.0,
            max_instances,
            compile,
            tiers: self.compile_tiers,
            ..defaults
        });
        Ok(Arc::new(sandbox.map_err(internal)?))
    }
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

/// A print to a standard output or error that the reader closed
/// (`ensemble suite inspect S | head`) ends the process quietly with
/// [`exit::CLOSED_OUTPUT`], as the closed pipe ends `ls`, instead of
/// panicking with a backtrace. Rust ignores SIGPIPE, so `println!` panics
/// on the error; restoring the signal instead would let a closed socket or
/// a service keeper's pipe end a runner. On Windows, where there is no
/// SIGPIPE, the print fails the same way with the pipe's own error codes.
fn end_quietly_on_closed_output() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if is_closed_output(message, CLOSED_PIPE_ERRORS) {
            std::process::exit(exit::CLOSED_OUTPUT);
        }
        report(info);
    }));
}

/// The OS errors of a write to a pipe whose reader is gone: EPIPE; on
/// Windows ERROR_BROKEN_PIPE and ERROR_NO_DATA ("the pipe is being closed").
#[cfg(unix)]
const CLOSED_PIPE_ERRORS: &[i32] = &[rustix::io::Errno::PIPE.raw_os_error()];
#[cfg(windows)]
const CLOSED_PIPE_ERRORS: &[i32] = &[109, 232];

/// Whether a panic's message is the standard library's for a print to a
/// closed pipe ("failed printing to stdout: Broken pipe (os error 32)"),
/// one of `errors` being the pipe's.
fn is_closed_output(message: &str, errors: &[i32]) -> bool {
    (message.starts_with("failed printing to stdout") || message.starts_with("failed printing to stderr"))
        && errors.iter().any(|code| message.ends_with(&format!("(os error {code})")))
}

/// Sets the process up (its heap, its limit of open files), parses the
/// command line, runs the command, returns the exit code.
pub fn main() -> i32 {
    end_quietly_on_closed_output();
    bounded_heap();
    #[cfg(unix)]
    raise_open_files();
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The child that compiles a suite within its budget (not a command for
    // people: it is not in the help).
    if args.get(1).is_some_and(|a| a == crate::sandbox::compile::COMMAND) {
        let rest: Vec<String> = args[2..].iter().map(|a| a.to_string_lossy().into_owned()).collect();
        return crate::sandbox::compile::child_main(&rest);
    }
    // The keeper between a runner and a service it started (hidden too).
    if args.get(1).is_some_and(|a| a == crate::services::keeper::COMMAND) {
        let rest: Vec<String> = args[2..].iter().map(|a| a.to_string_lossy().into_owned()).collect();
        return crate::services::keeper::keeper_main(&rest);
    }
    if let Some(file) = crate::config::path(&args) {
        args = match crate::config::apply(args, &file, &Cli::command()) {
            Ok(args) => args,
            Err(e) => {
                eprintln!("error: {e:#}");
                return exit::BAD_INPUT;
            }
        };
    }
    #[cfg(not(feature = "coordinator"))]
    if let Some((_, command)) = crate::config::command(&args)
        && COORDINATOR_COMMANDS.contains(&command.as_str())
    {
        eprintln!(
            "error: `ensemble {command}` is not in this runner-only build (built without the `coordinator` \
             feature): it has `runner`, `completions` and `man`; use the full ensemble binary for `{command}`"
        );
        return exit::BAD_INPUT;
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { exit::BAD_INPUT } else { exit::SUCCESS };
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ENSEMBLE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).init(),
    }
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
        #[cfg(feature = "coordinator")]
        Command::Coordinated(command) => coordinated::dispatch(*command).await,
        Command::Runner(args) => runner(*args).await,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "ensemble", &mut std::io::stdout());
            Ok(exit::SUCCESS)
        }
        Command::Man { out_dir } => {
            use anyhow::Context;
            let written = match &out_dir {
                Some(dir) => std::fs::create_dir_all(dir)
                    .and_then(|()| clap_mangen::generate_to(Cli::command(), dir))
                    .with_context(|| format!("writing the man pages into {}", dir.display())),
                None => clap_mangen::Man::new(Cli::command())
                    .render(&mut std::io::stdout())
                    .context("writing the man page"),
            };
            written.map_err(bad)?;
            Ok(exit::SUCCESS)
        }
    }
}

fn machine_info(
    name: String,
    labels: Vec<(String, String)>,
    slots: Option<u32>,
) -> ensemble_protocol::wire::MachineInfo {
    let facts = crate::agent::local_facts();
    let mut all: std::collections::BTreeMap<String, String> =
        [("os".to_string(), facts.os.clone()), ("arch".to_string(), facts.arch.clone())].into();
    all.extend(labels);
    ensemble_protocol::wire::MachineInfo {
        name,
        labels: all,
        slots: slots.unwrap_or(facts.cpus.max(2)),
        facts,
        allow_exec: Vec::new(),
    }
}

async fn runner(args: RunnerArgs) -> Result<i32, Failure> {
    // A mistyped address will not fix itself by retrying: refuse it now.
    ensemble_client::server_url(&args.join).map_err(|e| bad(anyhow::anyhow!("--join: {e}")))?;
    let name = args.name.clone().unwrap_or_else(hostname);
    let info = ensemble_protocol::wire::MachineInfo {
        allow_exec: args.policy.allow_exec.clone(),
        ..machine_info(name, args.labels.clone(), args.slots)
    };
    let sandbox = args.cache.sandbox_for(info.slots as usize)?;
    let cache_dir = args.cache.dir()?;
    args.cache.trim_later()?;
    let (drain, shutdown) = crate::signals::drain_then_stop();
    let told = drain.clone();
    tokio::spawn(async move {
        told.cancelled().await;
        eprintln!(
            "ensemble runner: draining: finishing the shards here, taking no new ones \
             (SIGTERM again or Ctrl-C stops now)"
        );
    });
    // Suites never reach the coordinator, nor this runner's own metrics.
    let mut deny = crate::agent::join::coordinator_addresses(&args.join).await;
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| bad(anyhow::anyhow!("--metrics-listen {addr}: {e}")))?;
        let bound = listener.local_addr().map_err(internal)?;
        eprintln!("ensemble runner: metrics at http://{bound}/metrics");
        deny.push(listen_grant(bound));
        use warp::Filter;
        let route = warp::path!("metrics").and(warp::get()).map(|| crate::metrics::reply(None));
        tokio::spawn(crate::listen::serve(listener, None, warp::service(route), shutdown.clone()));
    }
    let toward = local_address_toward(&deny).unwrap_or_else(|| "127.0.0.1".to_string());
    let opts = crate::agent::join::JoinOptions {
        services: args.policy.services("ensemble runner", toward, &info.name, &cache_dir),
        policy: args.policy.policy("ensemble runner", deny),
        url: args.join.clone(),
        token: token_from(&args.token, &args.token_file, "--token-file")?,
        info,
        cache_dir,
        cache_max_size: args.cache.cache_max_size.0,
        heartbeat: args.heartbeat,
        tls: ensemble_client::tls_config(args.ca_file.as_deref()).map_err(bad)?,
        precompile: !args.no_precompile,
    };
    match crate::agent::join::join(opts, sandbox, drain, shutdown).await {
        Ok(crate::agent::join::Ended::Stopped) => {
            eprintln!("ensemble runner: stopped");
            Ok(exit::SUCCESS)
        }
        Ok(crate::agent::join::Ended::Drained) => {
            eprintln!("ensemble runner: stopped (drained: its shards are done)");
            Ok(exit::SUCCESS)
        }
        Err(e) if e.downcast_ref::<crate::agent::join::Refused>().is_some() => Err(bad(e)),
        Err(e) => Err(internal(e)),
    }
}

/// This machine's address on its route to the first of `coordinator`'s
/// addresses (no packet is sent: a UDP socket is only connected).
fn local_address_toward(coordinator: &[NetGrant]) -> Option<String> {
    let (ip, port) = coordinator.iter().find_map(|g| match (&g.host, g.port) {
        (ensemble_protocol::grant::HostPattern::Ip(ip), Some(port)) => Some((*ip, port)),
        _ => None,
    })?;
    let any: std::net::IpAddr = if ip.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let socket = std::net::UdpSocket::bind((any, 0)).ok()?;
    socket.connect((ip, port)).ok()?;
    Some(socket.local_addr().ok()?.ip().to_string())
}

/// The address a server listens on, as a grant that matches it.
fn listen_grant(addr: std::net::SocketAddr) -> NetGrant {
    let host = if addr.ip().is_unspecified() { HostPattern::Any } else { HostPattern::Ip(addr.ip()) };
    NetGrant { host, port: Some(addr.port()) }
}

/// This host's name as a machine name (letters, digits, `.`, `_`, `-`; at
/// most 64): the default name of a runner.
fn hostname() -> String {
    let raw = gethostname::gethostname().to_string_lossy().into_owned();
    ensemble_protocol::machine::name_from_host(&raw)
}

/// glibc's malloc raises its mmap threshold to the size of any large block
/// freed (up to 32 MiB), after which large blocks (a test's output, an event
/// replayed to many watchers) come from the heap arenas and stay resident
/// after they are freed. A fixed threshold keeps them mapped and returned to
/// the system when freed, so the server's memory follows what it holds.
#[allow(unsafe_code)] // the one call below, into the C library
fn bounded_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator setting; it is called first
    // thing in `main`, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}

/// A server holds up to 1,024 connections besides its files: the soft limit
/// of open files (often 1,024) is raised to the hard one.
#[cfg(unix)]
fn raise_open_files() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            eprintln!("ensemble: could not raise the limit of open files: {e}");
        }
    }
}

#[cfg(all(test, feature = "coordinator"))]
mod tests {
    use super::*;

    /// The commands a runner-only build names as missing are the ones the
    /// `coordinator` feature adds.
    #[test]
    fn the_coordinators_commands_are_the_ones_a_runner_only_build_names() {
        let runner_only = ["runner", "completions", "man"];
        let full: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .filter(|n| !runner_only.contains(&n.as_str()))
            .collect();
        assert_eq!(full, COORDINATOR_COMMANDS);
    }

    /// The standard library's message for a print to a closed pipe, on
    /// Linux and on Windows (whose codes are checked here on any system).
    #[test]
    fn a_print_to_a_closed_pipe_is_told_from_other_failures() {
        let linux = "failed printing to stdout: Broken pipe (os error 32)";
        let windows = "failed printing to stdout: The pipe is being closed. (os error 232)";
        let windows_broken = "failed printing to stderr: The pipe has been ended. (os error 109)";
        assert!(is_closed_output(linux, &[32]));
        assert!(is_closed_output(windows, &[109, 232]) && is_closed_output(windows_broken, &[109, 232]));
        assert!(!is_closed_output(linux, &[109, 232]), "another system's code");
        assert!(!is_closed_output("failed printing to stdout: No space left on device (os error 28)", &[32]));
        assert!(!is_closed_output("index out of bounds (os error 32)", &[32]), "not a print");
        #[cfg(unix)]
        assert!(is_closed_output(linux, CLOSED_PIPE_ERRORS));
    }
}
