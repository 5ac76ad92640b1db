//! The system under test on this machine: a plan's services, started
//! natively by the runner, watched and stopped by it.
//!
//! One service shard runs one instance ([`run`]): the program is checked
//! against what the operator allows ([`AllowExec`], `--allow-exec`), its
//! placeholders filled in (free ports, this machine's advertised host, a
//! fresh scratch directory, the run), and it is started under a keeper
//! ([`keeper`]) in a process group of its own, with only the environment the
//! plan sets and a few basics. Its output becomes log events (lane
//! `service:NAME`, bounded); the runner checks readiness (a TCP port, an HTTP
//! path, a line of output) within the plan's `ready_timeout`, reports the
//! address, and then waits: for the run's end (stop: SIGTERM to the group,
//! SIGKILL after `stop_timeout`), for faults (stop, start, restart, signals,
//! pause, resume: each a new life on the same ports and `{dir}`, or a
//! signal the keeper sends the group), or for the program to exit on its
//! own, which fails the run with its status and last output. A keeper that
//! does not end the instance in time (a service stopped it) is killed, and
//! every process carrying the instance's mark with it.

#[cfg(windows)]
pub mod job;
pub mod keeper;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ensemble_protocol::event::{EventKind, ShardRef};
use ensemble_protocol::fault::{FaultAction, FaultId, FaultStep, Signal};
use ensemble_protocol::service::{
    MAX_SERVICE_OUTPUT, Readiness, Service, ServiceAddr, ServiceState, Values, expand,
};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The longest line of a service's output kept as one log event.
const MAX_LINE: usize = 16 << 10;
/// How much of its last output a failure message quotes.
const TAIL_LINES: usize = 20;
const TAIL_BYTES: usize = 4 << 10;
/// How often readiness is probed.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// Variables of the runner's environment every service sees.
const BASIC_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "SYSTEMROOT",
    "SYSTEMDRIVE",
    "WINDIR",
    "TEMP",
    "TMP",
];

/// Which programs services may start on this machine (`--allow-exec`).
#[derive(Clone, Debug, Default)]
pub struct AllowExec {
    /// What the operator wrote, as the machine reports it.
    pub entries: Vec<String>,
    /// Whatever a plan says (`ensemble run`: the plan is the operator's own).
    pub open: bool,
    /// The flag's command, for messages.
    pub command: String,
}

impl AllowExec {
    /// Anything: a standalone run's plan.
    pub fn open() -> AllowExec {
        AllowExec { entries: vec!["*".into()], open: true, command: "ensemble run".into() }
    }

    /// What `command --allow-exec` allows.
    pub fn allowing(command: &str, entries: Vec<String>) -> AllowExec {
        AllowExec { entries, open: false, command: command.into() }
    }

    /// The program to start for `program` (a name found on PATH, or an
    /// absolute path), if this machine allows it.
    pub fn check(&self, service: &str, program: &str) -> Result<PathBuf, String> {
        let path = if program.contains('/') || program.contains('\\') {
            let p = PathBuf::from(program);
            if !p.is_absolute() {
                return Err(format!("service {service}: {program:?} is a relative path"));
            }
            p
        } else {
            which(program)
                .ok_or_else(|| format!("service {service}: no program {program:?} on this machine's PATH"))?
        };
        let real = std::fs::canonicalize(&path)
            .map_err(|e| format!("service {service}: program {}: {e}", path.display()))?;
        // The path checked is the path started: a link swapped in between
        // changes nothing.
        if self.open || self.entries.iter().any(|a| allows(a, &real)) {
            return Ok(real);
        }
        Err(format!(
            "service {service}: this machine does not allow starting {program} (its operator can allow it \
             with `{} --allow-exec {program}`)",
            self.command
        ))
    }
}

/// Whether one `--allow-exec` entry allows the program at `real` (a
/// canonical path).
fn allows(entry: &str, real: &Path) -> bool {
    if entry == "*" {
        return true;
    }
    if let Some(dir) = entry.strip_suffix("/*") {
        return std::fs::canonicalize(dir).is_ok_and(|d| real.parent() == Some(d.as_path()));
    }
    let target =
        if entry.contains('/') || entry.contains('\\') { Some(PathBuf::from(entry)) } else { which(entry) };
    target.and_then(|t| std::fs::canonicalize(t).ok()).is_some_and(|t| t == real)
}

/// Whether a plan may set variable `name` for a service: never the
/// dynamic loader's (`LD_PRELOAD`, `DYLD_INSERT_LIBRARIES`, …), which would
/// start code the operator did not allow, unless the plan is the
/// operator's own (`open`).
fn env_allowed(allow: &AllowExec, name: &str) -> bool {
    allow.open || !(name.starts_with("LD_") || name.starts_with("DYLD_"))
}

/// `name` looked up on PATH: the first executable file of that name.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| is_executable(p)).or_else(|| {
        cfg!(windows)
            .then(|| {
                std::env::split_paths(&path).map(|dir| dir.join(format!("{name}.exe"))).find(|p| p.is_file())
            })
            .flatten()
    })
}

fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        p.is_file()
    }
}

/// What a service instance needs from its machine.
#[derive(Clone, Debug)]
pub struct Host {
    pub allow_exec: AllowExec,
    /// The address other machines reach this one at (`{host}`).
    pub advertise: String,
    /// Marks this runner's services ([`OWNER_VAR`]), so that the next
    /// runner of the same machine ends what a dead one left ([`end_leftovers`]).
    pub owner: Option<String>,
}

impl Default for Host {
    fn default() -> Self {
        Host { allow_exec: AllowExec::default(), advertise: "127.0.0.1".into(), owner: None }
    }
}

/// The variable that marks a service's processes with the runner that
/// started them (a machine's name and cache directory, hashed).
pub const OWNER_VAR: &str = "ENSEMBLE_SERVICE_OWNER";

/// The owner mark of the runner named `machine` whose cache is `cache_dir`:
/// the same for its next life on this host.
pub fn owner_of(machine: &str, cache_dir: &Path) -> String {
    let id = crate::sandbox::sha256_hex(format!("{machine}\n{}", cache_dir.display()).as_bytes());
    id[..24].to_string()
}

/// Makes every process this one starts from now on end with it, however it
/// ends (Windows: a job object; on Unix each service's keeper already
/// watches its runner, and its group dies with it).
pub fn die_together() {
    #[cfg(windows)]
    if let Err(e) = job::hold_descendants() {
        tracing::warn!("services may outlive this process: no job object holds them: {e}");
    }
}

/// Ends what a previous life of this runner left running: every process
/// whose environment carries its mark (a service whose keeper was killed
/// with the runner), with its process group, and removes the services'
/// `{dir}`s it left. Returns how many processes it found.
/// Linux reads `/proc`; elsewhere there is nothing to read, and 0.
pub fn end_leftovers(owner: &str) -> usize {
    let found = end_marked(OWNER_VAR, owner);
    if found > 0 {
        tracing::warn!(found, "ended processes of services a previous run of this runner left behind");
    }
    let removed = remove_scratch_of(owner);
    if removed > 0 {
        tracing::warn!(removed, "removed service directories a previous run of this runner left behind");
    }
    found
}

/// The variable that marks the processes of one service instance (its
/// runner, run and shard), so that a keeper that had to be killed leaves
/// nothing behind: the runner ends what carries the mark.
const INSTANCE_VAR: &str = "ENSEMBLE_SERVICE_INSTANCE";

/// SIGKILLs every process (other than this one) whose environment holds
/// `var=value`, with its process group. Returns how many it found. Linux
/// reads `/proc`; elsewhere there is nothing to read, and 0.
fn end_marked(var: &str, value: &str) -> usize {
    #[cfg(target_os = "linux")]
    {
        let mark = format!("{var}={value}");
        let me = std::process::id();
        let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
        let mut found = 0;
        for pid in dir.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()) {
            if pid == me {
                continue;
            }
            let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else { continue };
            if !env.split(|&b| b == 0).any(|v| v == mark.as_bytes()) {
                continue;
            }
            found += 1;
            let Some(p) = rustix::process::Pid::from_raw(pid as i32) else { continue };
            if let Ok(group) = rustix::process::getpgid(Some(p)) {
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            }
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
        found
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (var, value);
        0
    }
}

/// One line of output, from stdout (`false`) or stderr.
type Line = (bool, String);

/// A fault for this instance, ordered by the coordinator.
#[derive(Clone, Copy, Debug)]
pub struct Order {
    pub id: FaultId,
    pub action: FaultAction,
}

/// Everything an instance's lives share: what was worked out once, at its
/// first start (the program, its arguments, ports and `{dir}`), so that a
/// restart comes back on the same address with the same data.
struct Prepared<'a> {
    spec: &'a Service,
    shard: &'a ShardRef,
    program: &'a str,
    path: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    dir: PathBuf,
    values: Values,
    readiness: Readiness,
    address: ServiceAddr,
    /// This instance's mark ([`INSTANCE_VAR`]).
    mark: String,
}

/// One life of the instance's process: from a start to its exit.
struct Life {
    child: tokio::process::Child,
    /// Its instance's mark: what a killed keeper leaves is ended by it.
    mark: String,
    /// The keeper's command pipe (Unix): signals for the group.
    control: Option<tokio::process::ChildStdin>,
    lines: mpsc::Receiver<Line>,
    lines_open: bool,
    began: Instant,
    ready: bool,
    ready_by: tokio::time::Instant,
    paused: bool,
    /// A fault signalled it: the exit that follows fails nothing.
    exit_expected: bool,
    /// Windows: the job its processes run in, ended whole when it stops.
    #[cfg(windows)]
    job: Option<job::Job>,
}

/// What happened to a life while the instance waited.
enum Happening {
    Line(Option<Line>),
    Exited(std::io::Result<std::process::ExitStatus>),
    Probe,
    NotReadyInTime,
}

type Emit<'a> = &'a (dyn Fn(EventKind) + Send + Sync);

impl Prepared<'_> {
    fn state(&self, emit: Emit<'_>, state: ServiceState) {
        emit(EventKind::Service { shard: self.shard.clone(), service: self.spec.name.clone(), state });
    }

    /// Starts a life of the process (its `Started` event said).
    fn start(&self, host: &Host, emit: Emit<'_>) -> Result<Life, String> {
        let mut env = self.env.clone();
        if let Some(owner) = &host.owner {
            env.push((OWNER_VAR.to_string(), owner.clone()));
        }
        env.push((INSTANCE_VAR.to_string(), self.mark.clone()));
        // The resolved path is started (what was checked), under the name
        // the plan wrote: multi-call programs (redis-server, busybox) read it.
        let mut child =
            spawn(&self.path, self.program, &self.args, &env, &self.dir, self.spec.stop_timeout.0)
                .map_err(|e| format!("service {}: starting {}: {e}", self.spec.name, self.path.display()))?;
        let pid = child.id().unwrap_or(0);
        let mut shown = vec![self.path.display().to_string()];
        shown.extend(self.args.iter().cloned());
        self.state(emit, ServiceState::Started { pid, command: shown });
        let (tx, lines) = mpsc::channel::<Line>(1024);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(read_lines(out, false, tx.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(read_lines(err, true, tx));
        }
        let control = child.stdin.take();
        let mut life = Life {
            child,
            mark: self.mark.clone(),
            control,
            lines,
            lines_open: true,
            began: Instant::now(),
            ready: false,
            ready_by: tokio::time::Instant::now() + self.spec.ready_timeout.0,
            paused: false,
            exit_expected: false,
            #[cfg(windows)]
            job: None,
        };
        // Windows: the service and what it starts go in a job of its own
        // (the runner's own job holds them meanwhile: see `job`).
        #[cfg(windows)]
        match job::Job::new().and_then(|j| j.assign_child(&life.child).map(|()| j)) {
            Ok(j) => life.job = Some(j),
            Err(e) => tracing::warn!(service = %self.spec.name, "no job object for the service: {e}"),
        }
        if self.readiness == Readiness::Started {
            self.mark_ready(&mut life, emit);
        }
        Ok(life)
    }

    fn mark_ready(&self, life: &mut Life, emit: Emit<'_>) {
        life.ready = true;
        let after_ms = u64::try_from(life.began.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.state(emit, ServiceState::Ready { address: self.address.clone(), after_ms });
    }

    /// The next thing that happens to `life`.
    async fn next(&self, life: &mut Life, probe: &mut tokio::time::Interval) -> Happening {
        let probes = matches!(self.readiness, Readiness::Tcp(_) | Readiness::Http(_));
        tokio::select! {
            line = life.lines.recv(), if life.lines_open => Happening::Line(line),
            status = life.child.wait() => Happening::Exited(status),
            _ = probe.tick(), if !life.ready && probes => Happening::Probe,
            () = tokio::time::sleep_until(life.ready_by), if !life.ready => Happening::NotReadyInTime,
        }
    }

    /// Stops a life as the run's end does: SIGTERM, SIGKILL after the
    /// grace; its output read meanwhile. Returns how it ended.
    async fn stop(&self, life: &mut Life, out: &mut Output, emit: Emit<'_>) -> String {
        self.state(emit, ServiceState::Stopping);
        let status = stop_child(life, self.spec.stop_timeout.0, out, emit).await;
        drain(&mut life.lines, out, emit).await;
        status
    }
}

/// Runs one instance of `spec` for shard `shard` of `run` until `stop`
/// fires (the run's end or a cancel), reporting through `emit` and doing
/// the faults of `orders` (each answered by a `fault` event). `Err` says
/// why the service failed the run.
pub async fn run(
    spec: &Service,
    run: &str,
    shard: &ShardRef,
    host: &Host,
    emit: Emit<'_>,
    stop: CancellationToken,
    mut orders: mpsc::UnboundedReceiver<Order>,
) -> Result<(), String> {
    let state =
        |state: ServiceState| EventKind::Service { shard: shard.clone(), service: spec.name.clone(), state };
    let failed = |message: String| {
        emit(state(ServiceState::Failed { message: message.clone() }));
        Err(message)
    };
    // `{dir}`: a fresh directory only this user can enter (mkdtemp),
    // removed when the instance ends (restarts keep it).
    let prefix = scratch_prefix(host.owner.as_deref(), run, shard.shard);
    let scratch = match tempfile::Builder::new().prefix(&prefix).tempdir() {
        Ok(d) => d,
        Err(e) => return failed(format!("service {}: making its directory: {e}", spec.name)),
    };
    let prepared = match prepare(spec, run, shard, host, scratch.path()) {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    let mut out = Output::new(spec, shard);
    let mut life = match prepared.start(host, emit) {
        Ok(l) => Some(l),
        Err(e) => return failed(e),
    };
    let mut probe = tokio::time::interval(PROBE_EVERY);
    // Faults that answer once the service is ready (start, restart).
    let mut waiting: Vec<(Order, Instant)> = Vec::new();
    let mut taken: std::collections::HashSet<FaultId> = Default::default();
    let mut orders_open = true;
    let answer = |order: &Order, began: Instant, outcome: Result<(), String>| {
        let step = match outcome {
            Ok(()) => {
                FaultStep::Done { took_ms: u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX) }
            }
            Err(message) => FaultStep::Failed { message },
        };
        emit(EventKind::Fault {
            shard: shard.clone(),
            service: spec.name.clone(),
            service_instance: Some(shard.instance),
            action: order.action,
            id: order.id,
            test: String::new(),
            step,
        });
    };
    loop {
        enum Next {
            Stop,
            Order(Option<Order>),
            Life(Happening),
        }
        let next = tokio::select! {
            // A stop asked for wins over an exit seen at the same time.
            biased;
            () = stop.cancelled() => Next::Stop,
            order = orders.recv(), if orders_open => Next::Order(order),
            h = async {
                match life.as_mut() {
                    Some(l) => prepared.next(l, &mut probe).await,
                    None => std::future::pending().await,
                }
            } => Next::Life(h),
        };
        match next {
            Next::Stop => {
                for (order, began) in waiting.drain(..) {
                    answer(&order, began, Err("the run's services are stopping".into()));
                }
                if let Some(mut l) = life.take() {
                    let status = prepared.stop(&mut l, &mut out, emit).await;
                    emit(state(ServiceState::Exited { status, expected: true, last_output: String::new() }));
                }
                return Ok(());
            }
            Next::Order(None) => orders_open = false,
            Next::Order(Some(order)) => {
                // A fault resent after a reconnect is done once.
                if !taken.insert(order.id) {
                    continue;
                }
                let began = Instant::now();
                match do_fault(&prepared, host, &mut life, &mut out, emit, order.action).await {
                    Err(why) => answer(&order, began, Err(why)),
                    Ok(()) if life.as_ref().is_some_and(|l| !l.ready) => waiting.push((order, began)),
                    Ok(()) => answer(&order, began, Ok(())),
                }
            }
            Next::Life(Happening::Line(Some((err, text)))) => {
                let l = life.as_mut().expect("a life is running");
                let ready_line =
                    !l.ready && matches!(&prepared.readiness, Readiness::Log(m) if text.contains(m.as_str()));
                out.line(emit, err, text);
                if ready_line {
                    prepared.mark_ready(l, emit);
                }
            }
            Next::Life(Happening::Line(None)) => {
                if let Some(l) = life.as_mut() {
                    l.lines_open = false;
                }
            }
            Next::Life(Happening::Probe) => {
                if probe_ready(&prepared.readiness, &prepared.values).await
                    && let Some(l) = life.as_mut()
                {
                    prepared.mark_ready(l, emit);
                }
            }
            Next::Life(Happening::NotReadyInTime) => {
                let message = format!(
                    "service {} on {} was not ready within {} ({}){}",
                    spec.name,
                    shard.machine,
                    spec.ready_timeout,
                    describe(&prepared.readiness),
                    out.tail_note()
                );
                for (order, began) in waiting.drain(..) {
                    answer(&order, began, Err(message.clone()));
                }
                emit(state(ServiceState::Failed { message: message.clone() }));
                if let Some(mut l) = life.take() {
                    stop_child(&mut l, spec.stop_timeout.0, &mut out, emit).await;
                }
                return Err(message);
            }
            Next::Life(Happening::Exited(status)) => {
                let mut l = life.take().expect("a life is running");
                drain(&mut l.lines, &mut out, emit).await;
                let status = describe_status(status);
                let was_ready = l.ready;
                if l.exit_expected {
                    // A fault's signal ended it: it is stopped, as asked.
                    emit(state(ServiceState::Exited { status, expected: true, last_output: String::new() }));
                    for (order, began) in waiting.drain(..) {
                        answer(
                            &order,
                            began,
                            Err("it exited (a signal a fault sent) before it was ready".into()),
                        );
                    }
                    continue;
                }
                let when = if was_ready { "while the run went on" } else { "before it was ready" };
                let message = format!(
                    "service {} on {} exited ({status}) {when}{}",
                    spec.name,
                    shard.machine,
                    out.tail_note()
                );
                for (order, began) in waiting.drain(..) {
                    answer(&order, began, Err(message.clone()));
                }
                emit(state(ServiceState::Exited { status, expected: false, last_output: out.tail() }));
                return Err(message);
            }
        }
        // Faults waiting for readiness are done once it is back.
        if life.as_ref().is_some_and(|l| l.ready) {
            for (order, began) in waiting.drain(..) {
                answer(&order, began, Ok(()));
            }
        }
    }
}

/// What an instance's lives share, worked out once: the program checked
/// against `--allow-exec`, free ports, the command and environment filled in.
fn prepare<'a>(
    spec: &'a Service,
    run: &str,
    shard: &'a ShardRef,
    host: &Host,
    dir: &Path,
) -> Result<Prepared<'a>, String> {
    let program = spec.command.first().ok_or_else(|| format!("service {} has no command", spec.name))?;
    let path = host.allow_exec.check(&spec.name, program)?;
    // Each port's listener is held until all are picked: no two alike.
    let mut ports = BTreeMap::new();
    let mut held = Vec::new();
    for name in spec.port_names() {
        let (p, l) = std::net::TcpListener::bind(("0.0.0.0", 0))
            .and_then(|l| Ok((l.local_addr()?.port(), l)))
            .map_err(|e| format!("service {}: finding a free port: {e}", spec.name))?;
        ports.insert(name, p);
        held.push(l);
    }
    drop(held);
    let values =
        Values { ports, host: host.advertise.clone(), dir: dir.display().to_string(), run: run.to_string() };
    let filled = |t: &str| expand(t, &values).map_err(|e| format!("service {}: {e}", spec.name));
    let args = spec.command[1..].iter().map(|a| filled(a)).collect::<Result<Vec<_>, _>>()?;
    if let Some(name) = spec.env.keys().find(|k| !env_allowed(&host.allow_exec, k)) {
        return Err(format!(
            "service {}: the plan sets {name}, a variable of the dynamic loader, which a runner sets for no \
             plan (it would start code its operator did not allow)",
            spec.name
        ));
    }
    let env =
        spec.env.iter().map(|(k, v)| Ok((k.clone(), filled(v)?))).collect::<Result<Vec<_>, String>>()?;
    let readiness = match spec.readiness() {
        Readiness::Tcp(t) => Readiness::Tcp(filled(&t).unwrap_or(t)),
        Readiness::Http(h) => Readiness::Http(filled(&h).unwrap_or(h)),
        Readiness::Log(l) => Readiness::Log(filled(&l).unwrap_or(l)),
        Readiness::Started => Readiness::Started,
    };
    let address = ServiceAddr {
        machine: shard.machine.clone(),
        host: host.advertise.clone(),
        port: values.ports.get("").copied(),
        ports: values.ports.iter().filter(|(k, _)| !k.is_empty()).map(|(k, v)| (k.clone(), *v)).collect(),
    };
    // Unique on this host: this runner's pid, the run and the shard.
    let mark = format!("{}/{run}/{}", std::process::id(), shard.shard);
    Ok(Prepared {
        spec,
        shard,
        program,
        path,
        args,
        env,
        dir: dir.to_path_buf(),
        values,
        readiness,
        address,
        mark,
    })
}

/// Does `action` to the instance. `Ok` with a life not yet ready: the
/// fault is done once it is (start, restart).
async fn do_fault(
    p: &Prepared<'_>,
    host: &Host,
    life: &mut Option<Life>,
    out: &mut Output,
    emit: Emit<'_>,
    action: FaultAction,
) -> Result<(), String> {
    let name = &p.spec.name;
    let not_running = || format!("service {name} on {} is not running (a fault stopped it)", p.shard.machine);
    match action {
        FaultAction::Stop | FaultAction::Restart => {
            if let Some(mut l) = life.take() {
                let status = p.stop(&mut l, out, emit).await;
                p.state(emit, ServiceState::Exited { status, expected: true, last_output: String::new() });
            }
            if action == FaultAction::Restart {
                *life = Some(p.start(host, emit)?);
            }
            Ok(())
        }
        FaultAction::Start => {
            if life.is_none() {
                *life = Some(p.start(host, emit)?);
            }
            Ok(())
        }
        FaultAction::Kill { signal } => {
            let l = life.as_mut().ok_or_else(not_running)?;
            send_signal(l, signal_name(signal)).await.map_err(|e| format!("service {name}: {e}"))?;
            l.exit_expected = true;
            p.state(emit, ServiceState::Signalled { signal });
            if signal == Signal::Kill {
                // Done once it is gone: a start right after finds it stopped.
                let mut l = life.take().expect("checked above");
                let status = wait_exit(&mut l, p.spec.stop_timeout.0, out, emit).await;
                drain(&mut l.lines, out, emit).await;
                p.state(emit, ServiceState::Exited { status, expected: true, last_output: String::new() });
            }
            Ok(())
        }
        FaultAction::Pause | FaultAction::Resume => {
            let l = life.as_mut().ok_or_else(not_running)?;
            let pause = action == FaultAction::Pause;
            if l.paused != pause {
                send_signal(l, if pause { "STOP" } else { "CONT" })
                    .await
                    .map_err(|e| format!("service {name}: {e}"))?;
                l.paused = pause;
                p.state(emit, if pause { ServiceState::Paused } else { ServiceState::Resumed });
            }
            Ok(())
        }
    }
}

/// The keeper's name of `signal`.
fn signal_name(signal: Signal) -> &'static str {
    &signal.name()[3..]
}

/// Has the keeper send `signal` (`TERM`, `STOP`, …) to the service's group.
/// Without a keeper (Windows) only `KILL` can be sent.
async fn send_signal(life: &mut Life, signal: &str) -> Result<(), String> {
    match life.control.as_mut() {
        Some(control) => {
            use tokio::io::AsyncWriteExt;
            let line = keeper::signal_command(signal);
            control.write_all(line.as_bytes()).await.map_err(|e| format!("signalling it: {e}"))?;
            control.flush().await.map_err(|e| format!("signalling it: {e}"))
        }
        None if signal == "KILL" => life.child.start_kill().map_err(|e| format!("killing it: {e}")),
        None => Err(format!("SIG{signal} needs a Unix machine; this one can only kill a service")),
    }
}

/// The instance's output as log events, within [`MAX_SERVICE_OUTPUT`],
/// and its last lines for failure messages.
struct Output {
    lane: String,
    shard: ShardRef,
    spent: u64,
    dropped: u64,
    tail: VecDeque<String>,
}

impl Output {
    fn new(spec: &Service, shard: &ShardRef) -> Output {
        Output {
            lane: format!("service:{}", spec.name),
            shard: shard.clone(),
            spent: 0,
            dropped: 0,
            tail: VecDeque::new(),
        }
    }

    fn line(&mut self, emit: &(dyn Fn(EventKind) + Send + Sync), err: bool, text: String) {
        self.tail.push_back(text.clone());
        while self.tail.len() > TAIL_LINES || self.tail.iter().map(String::len).sum::<usize>() > TAIL_BYTES {
            if self.tail.pop_front().is_none() {
                break;
            }
        }
        let size = text.len() as u64 + ensemble_protocol::service::SERVICE_LINE_COST;
        if self.spent.saturating_add(size) > MAX_SERVICE_OUTPUT {
            if self.dropped == 0 {
                emit(EventKind::Log {
                    shard: self.shard.clone(),
                    test: self.lane.clone(),
                    level: "warn".into(),
                    message: format!(
                        "the service's output went over {} (the most one service instance may put on \
                         the timeline); later lines are not kept",
                        ensemble_protocol::units::ByteSize(MAX_SERVICE_OUTPUT)
                    ),
                });
            }
            self.dropped += 1;
            return;
        }
        self.spent += size;
        emit(EventKind::Log {
            shard: self.shard.clone(),
            test: self.lane.clone(),
            level: if err { "stderr" } else { "stdout" }.into(),
            message: text,
        });
    }

    fn tail(&self) -> String {
        self.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn tail_note(&self) -> String {
        if self.tail.is_empty() {
            "; it wrote no output".into()
        } else {
            format!("; its last output:\n{}", self.tail())
        }
    }
}

/// Reads `from` line by line (lines cut at [`MAX_LINE`]) into `to`.
async fn read_lines(mut from: impl AsyncRead + Unpin, err: bool, to: mpsc::Sender<Line>) {
    let mut buf = vec![0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    let mut cut = false;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                let text = String::from_utf8_lossy(&line).trim_end_matches('\r').to_string();
                let text = if cut { format!("{text} … (line cut)") } else { text };
                if to.send((err, text)).await.is_err() {
                    return;
                }
                line.clear();
                cut = false;
            } else if line.len() < MAX_LINE {
                line.push(b);
            } else {
                cut = true;
            }
        }
    }
    if !line.is_empty() {
        let _ = to.send((err, String::from_utf8_lossy(&line).into_owned())).await;
    }
}

/// The lines still buffered once the process ended (a short wait for the
/// pipes to close).
async fn drain(lines: &mut mpsc::Receiver<Line>, out: &mut Output, emit: Emit<'_>) {
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some((err, text))) = tokio::time::timeout_at(until, lines.recv()).await {
        out.line(emit, err, text);
    }
}

/// Starts the program under a keeper (Unix) in a group of its own.
fn spawn(
    program: &Path,
    arg0: &str,
    args: &[String],
    env: &[(String, String)],
    dir: &Path,
    grace: Duration,
) -> std::io::Result<tokio::process::Child> {
    #[cfg(unix)]
    let mut cmd = {
        let exe = std::env::current_exe()?;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg(keeper::COMMAND)
            .arg(std::process::id().to_string())
            .arg(grace.as_millis().to_string())
            .arg(arg0)
            .arg("--")
            .arg(program)
            .args(args);
        cmd.process_group(0);
        cmd
    };
    #[cfg(not(unix))]
    let mut cmd = {
        let _ = (grace, arg0);
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args);
        cmd
    };
    cmd.env_clear();
    for name in BASIC_ENV {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    // The keeper takes its commands (signals for faults) on stdin.
    cmd.current_dir(dir)
        .stdin(if cfg!(unix) { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd.spawn()
}

/// Stops the instance: SIGTERM to its keeper (which passes it to the group
/// and kills it after the grace); the keeper itself is killed if it does
/// not end a little after that. Its output is read meanwhile, so a service
/// that writes while it shuts down is not blocked on a full pipe. Returns
/// how it ended.
async fn stop_child(life: &mut Life, grace: Duration, out: &mut Output, emit: Emit<'_>) -> String {
    // Our own child, not yet reaped (id() is Some), so the pid is still its.
    #[cfg(unix)]
    if let Some(pid) = life.child.id().and_then(|id| rustix::process::Pid::from_raw(id as i32)) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    #[cfg(windows)]
    if let Some(job) = &life.job {
        let _ = job.kill();
    }
    #[cfg(not(unix))]
    let _ = life.child.start_kill();
    wait_exit(life, grace, out, emit).await
}

/// Waits for the life's end, reading its output; kills the keeper if it
/// has not ended a little after `grace`. Returns how it ended.
async fn wait_exit(life: &mut Life, grace: Duration, out: &mut Output, emit: Emit<'_>) -> String {
    let Life { child, lines, lines_open, mark, .. } = life;
    let give_up = tokio::time::Instant::now() + grace + Duration::from_secs(5);
    let open = lines_open;
    loop {
        tokio::select! {
            status = child.wait() => return describe_status(status),
            line = lines.recv(), if *open => match line {
                Some((err, text)) => out.line(emit, err, text),
                None => *open = false,
            },
            () = tokio::time::sleep_until(give_up) => {
                // The keeper did not end it (someone stopped the keeper):
                // the keeper goes, and so does everything of the instance.
                let _ = child.start_kill();
                let status = describe_status(child.wait().await);
                let ended = end_marked(INSTANCE_VAR, mark);
                tracing::warn!(ended, "a service's keeper did not stop it in time: killed it and its processes");
                return status;
            }
        }
    }
}

fn describe_status(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => match s.code() {
            Some(c) if c > 128 && cfg!(unix) => format!("killed by signal {}", c - 128),
            Some(c) => format!("exit code {c}"),
            None => format!("{s}"),
        },
        Err(e) => format!("unknown: {e}"),
    }
}

fn describe(r: &Readiness) -> String {
    match r {
        Readiness::Tcp(t) => format!("ready = tcp port {t}"),
        Readiness::Http(h) => format!("ready = http {h}"),
        Readiness::Log(l) => format!("ready = a line with {l:?}"),
        Readiness::Started => "started".into(),
    }
}

/// Whether the readiness check passes now. The service is probed on this
/// machine's loopback address, then its advertised one.
async fn probe_ready(r: &Readiness, values: &Values) -> bool {
    let hosts = ["127.0.0.1".to_string(), values.host.clone()];
    match r {
        Readiness::Tcp(port) => {
            let Ok(port) = port.parse::<u16>() else { return false };
            for h in &hosts {
                let connect = tokio::net::TcpStream::connect((h.as_str(), port));
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), connect).await {
                    return true;
                }
            }
            false
        }
        Readiness::Http(path) => {
            let Some(&port) = values.ports.get("") else { return false };
            for h in &hosts {
                if let Ok(true) = tokio::time::timeout(Duration::from_secs(2), http_ok(h, port, path)).await {
                    return true;
                }
            }
            false
        }
        _ => false,
    }
}

/// A GET of `path` answered with a 2xx status.
async fn http_ok(host: &str, port: u16, path: &str) -> bool {
    use tokio::io::AsyncWriteExt;
    let Ok(mut s) = tokio::net::TcpStream::connect((host, port)).await else { return false };
    let host_header = ensemble_protocol::service::join_host_port(host, port);
    let req = format!("GET {path} HTTP/1.0\r\nHost: {host_header}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    let mut got = 0;
    while got < head.len() {
        match s.read(&mut head[got..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    let text = String::from_utf8_lossy(&head[..got]);
    let mut parts = text.split_whitespace();
    parts.next().is_some_and(|v| v.starts_with("HTTP/")) && parts.next().is_some_and(|c| c.starts_with('2'))
}

/// What the name of every service's `{dir}` starts with.
pub(crate) const SCRATCH: &str = "ensemble-service-";

/// The name `{dir}` starts with: the runner's owner mark (so that its next
/// life finds what a dead one left), the run and the shard, readable in `ls`.
fn scratch_prefix(owner: Option<&str>, run: &str, shard: u32) -> String {
    let safe: String =
        run.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).take(64).collect();
    match owner {
        Some(owner) => format!("{SCRATCH}{owner}-{safe}-{shard}-"),
        None => format!("{SCRATCH}{safe}-{shard}-"),
    }
}

/// Removes the `{dir}`s a previous life of the runner `owner` left in the
/// temporary directory (its keepers were killed with it). Returns how many.
fn remove_scratch_of(owner: &str) -> usize {
    let prefix = format!("{SCRATCH}{owner}-");
    let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) else { return 0 };
    dir.flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)))
        .filter(|e| std::fs::remove_dir_all(e.path()).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_machine_starts_only_what_its_operator_allows_by_its_real_path() {
        let sh = which("sh").expect("sh is on PATH");
        let allow = AllowExec::allowing("ensemble runner", vec!["sh".into()]);
        // The checked path is the started one: the link resolved.
        assert_eq!(allow.check("db", "sh").unwrap(), std::fs::canonicalize(&sh).unwrap());
        let why = allow.check("db", "true").unwrap_err();
        assert!(why.contains("--allow-exec true"), "{why}");
        assert!(allow.check("db", "bin/sh").unwrap_err().contains("relative path"));
        assert!(allow.check("db", "no-such-program-here").unwrap_err().contains("no program"));
        // The dynamic loader's variables are no plan's to set, unless the
        // plan is the operator's own.
        assert!(!env_allowed(&allow, "LD_PRELOAD") && !env_allowed(&allow, "DYLD_INSERT_LIBRARIES"));
        assert!(env_allowed(&allow, "MODE") && env_allowed(&AllowExec::open(), "LD_LIBRARY_PATH"));
    }

    #[test]
    fn empty_lines_count_against_a_services_output_too() {
        let spec: Service =
            serde_json::from_value(serde_json::json!({ "name": "db", "profile": "p", "command": ["db"] }))
                .unwrap();
        let shard = ShardRef {
            shard: 1,
            machine: "m".into(),
            role: "service:db".into(),
            suite: "db".into(),
            instance: 0,
        };
        let mut out = Output::new(&spec, &shard);
        let events = std::sync::Mutex::new(Vec::new());
        let emit = |e: EventKind| events.lock().unwrap().push(e);
        let lines = MAX_SERVICE_OUTPUT / ensemble_protocol::service::SERVICE_LINE_COST;
        for _ in 0..lines + 10 {
            out.line(&emit, false, String::new());
        }
        let events = events.into_inner().unwrap();
        assert_eq!(events.len() as u64, lines + 1, "the lines within the bound, then one note");
        let Some(EventKind::Log { level, message, .. }) = events.last() else {
            panic!("{:?}", events.last())
        };
        assert_eq!(level, "warn");
        assert!(message.contains("later lines are not kept"), "{message}");
        assert_eq!(out.dropped, 10);
    }
}
