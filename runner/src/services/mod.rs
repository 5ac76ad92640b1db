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
//! SIGKILL after `stop_timeout`), or for the program to exit on its own,
//! which fails the run with its status and last output.

pub mod keeper;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ensemble_protocol::event::{EventKind, ShardRef};
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

/// Ends what a previous life of this runner left running: every process
/// whose environment carries its mark (a service whose keeper was killed
/// with the runner), with its process group. Returns how many it found.
/// Linux reads `/proc`; elsewhere there is nothing to read, and 0.
pub fn end_leftovers(owner: &str) -> usize {
    #[cfg(target_os = "linux")]
    {
        let mark = format!("{OWNER_VAR}={owner}");
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
        if found > 0 {
            tracing::warn!(found, "ended processes of services a previous run of this runner left behind");
        }
        found
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = owner;
        0
    }
}

/// One line of output, from stdout (`false`) or stderr.
type Line = (bool, String);

/// Runs one instance of `spec` for shard `shard` of `run` until `stop`
/// fires (the run's end or a cancel), reporting through `emit`. `Err`
/// says why the service failed the run.
pub async fn run(
    spec: &Service,
    run: &str,
    shard: &ShardRef,
    host: &Host,
    emit: &(dyn Fn(EventKind) + Send + Sync),
    stop: CancellationToken,
) -> Result<(), String> {
    let state =
        |state: ServiceState| EventKind::Service { shard: shard.clone(), service: spec.name.clone(), state };
    let failed = |message: String| {
        emit(state(ServiceState::Failed { message: message.clone() }));
        Err(message)
    };
    let program = match spec.command.first() {
        Some(p) => p,
        None => return failed(format!("service {} has no command", spec.name)),
    };
    let path = match host.allow_exec.check(&spec.name, program) {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    // `{dir}`: a fresh directory only this user can enter (mkdtemp),
    // removed when the instance ends.
    let scratch = match tempfile::Builder::new().prefix(&scratch_prefix(run, shard.shard)).tempdir() {
        Ok(d) => d,
        Err(e) => return failed(format!("service {}: making its directory: {e}", spec.name)),
    };
    let dir = scratch.path().to_path_buf();
    // Each port's listener is held until all are picked: no two alike.
    let mut ports = BTreeMap::new();
    let mut held = Vec::new();
    for name in spec.port_names() {
        match std::net::TcpListener::bind(("0.0.0.0", 0)).and_then(|l| Ok((l.local_addr()?.port(), l))) {
            Ok((p, l)) => {
                ports.insert(name, p);
                held.push(l);
            }
            Err(e) => return failed(format!("service {}: finding a free port: {e}", spec.name)),
        }
    }
    drop(held);
    let values =
        Values { ports, host: host.advertise.clone(), dir: dir.display().to_string(), run: run.to_string() };
    let filled = |t: &str| expand(t, &values).map_err(|e| format!("service {}: {e}", spec.name));
    let args: Vec<String> = match spec.command[1..].iter().map(|a| filled(a)).collect() {
        Ok(a) => a,
        Err(e) => return failed(e),
    };
    if let Some(name) = spec.env.keys().find(|k| !env_allowed(&host.allow_exec, k)) {
        return failed(format!(
            "service {}: the plan sets {name}, a variable of the dynamic loader, which a runner sets for no \
             plan (it would start code its operator did not allow)",
            spec.name
        ));
    }
    let env: Vec<(String, String)> = match spec.env.iter().map(|(k, v)| Ok((k.clone(), filled(v)?))).collect()
    {
        Ok(e) => e,
        Err(e) => return failed(e),
    };
    let readiness = match spec.readiness() {
        Readiness::Tcp(t) => Readiness::Tcp(filled(&t).unwrap_or(t)),
        Readiness::Http(h) => Readiness::Http(filled(&h).unwrap_or(h)),
        Readiness::Log(l) => Readiness::Log(filled(&l).unwrap_or(l)),
        Readiness::Started => Readiness::Started,
    };
    let mut env = env;
    if let Some(owner) = &host.owner {
        env.push((OWNER_VAR.to_string(), owner.clone()));
    }
    // The resolved path is started (what was checked), under the name the
    // plan wrote: multi-call programs (redis-server, busybox) read it.
    let mut child = match spawn(&path, program, &args, &env, &dir, spec.stop_timeout.0) {
        Ok(c) => c,
        Err(e) => return failed(format!("service {}: starting {}: {e}", spec.name, path.display())),
    };
    let pid = child.id().unwrap_or(0);
    let mut shown = vec![path.display().to_string()];
    shown.extend(args.iter().cloned());
    emit(state(ServiceState::Started { pid, command: shown }));
    let (tx, mut lines) = mpsc::channel::<Line>(1024);
    if let Some(out) = child.stdout.take() {
        tokio::spawn(read_lines(out, false, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(read_lines(err, true, tx.clone()));
    }
    drop(tx);
    let mut out = Output::new(spec, shard);
    let address = ServiceAddr {
        machine: shard.machine.clone(),
        host: host.advertise.clone(),
        port: values.ports.get("").copied(),
        ports: values.ports.iter().filter(|(k, _)| !k.is_empty()).map(|(k, v)| (k.clone(), *v)).collect(),
    };
    let began = Instant::now();
    let deadline = tokio::time::sleep(spec.ready_timeout.0);
    tokio::pin!(deadline);
    let mut probe = tokio::time::interval(PROBE_EVERY);
    let mut ready = false;
    let mut lines_open = true;
    let mark_ready = |ready: &mut bool| {
        *ready = true;
        let after_ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
        emit(state(ServiceState::Ready { address: address.clone(), after_ms }));
    };
    if readiness == Readiness::Started {
        mark_ready(&mut ready);
    }
    let ended_by_itself = loop {
        tokio::select! {
            // A stop asked for wins over an exit seen at the same time.
            biased;
            () = stop.cancelled() => break None,
            line = lines.recv(), if lines_open => match line {
                Some((err, text)) => {
                    if !ready && matches!(&readiness, Readiness::Log(l) if text.contains(l.as_str())) {
                        out.line(emit, err, text);
                        mark_ready(&mut ready);
                    } else {
                        out.line(emit, err, text);
                    }
                }
                None => lines_open = false,
            },
            status = child.wait() => break Some(status),
            _ = probe.tick(), if !ready && matches!(readiness, Readiness::Tcp(_) | Readiness::Http(_)) => {
                if probe_ready(&readiness, &values).await {
                    mark_ready(&mut ready);
                }
            }
            () = &mut deadline, if !ready => {
                let message = format!(
                    "service {} on {} was not ready within {} ({}){}",
                    spec.name, shard.machine, spec.ready_timeout, describe(&readiness), out.tail_note()
                );
                emit(state(ServiceState::Failed { message: message.clone() }));
                stop_child(&mut child, spec.stop_timeout.0, &mut lines, &mut out, emit).await;
                return Err(message);
            }
        }
    };
    let status = match ended_by_itself {
        Some(status) if !stop.is_cancelled() => status,
        // It ended just as it was told to stop: as asked.
        other => {
            let status = match other {
                Some(status) => describe_status(status),
                None => {
                    emit(state(ServiceState::Stopping));
                    stop_child(&mut child, spec.stop_timeout.0, &mut lines, &mut out, emit).await
                }
            };
            drain(&mut lines, &mut out, emit).await;
            emit(state(ServiceState::Exited { status, expected: true, last_output: String::new() }));
            return Ok(());
        }
    };
    drain(&mut lines, &mut out, emit).await;
    let status = describe_status(status);
    let when = if ready { "while the run went on" } else { "before it was ready" };
    let message =
        format!("service {} on {} exited ({status}) {when}{}", spec.name, shard.machine, out.tail_note());
    emit(state(ServiceState::Exited { status, expected: false, last_output: out.tail() }));
    Err(message)
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
        let size = text.len() as u64;
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
async fn drain(lines: &mut mpsc::Receiver<Line>, out: &mut Output, emit: &(dyn Fn(EventKind) + Send + Sync)) {
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
    cmd.current_dir(dir)
        .stdin(Stdio::null())
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
async fn stop_child(
    child: &mut tokio::process::Child,
    grace: Duration,
    lines: &mut mpsc::Receiver<Line>,
    out: &mut Output,
    emit: &(dyn Fn(EventKind) + Send + Sync),
) -> String {
    // Our own child, not yet reaped (id() is Some), so the pid is still its.
    #[cfg(unix)]
    if let Some(pid) = child.id().and_then(|id| rustix::process::Pid::from_raw(id as i32)) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    #[cfg(not(unix))]
    let _ = child.start_kill();
    let give_up = tokio::time::Instant::now() + grace + Duration::from_secs(5);
    let mut open = true;
    loop {
        tokio::select! {
            status = child.wait() => return describe_status(status),
            line = lines.recv(), if open => match line {
                Some((err, text)) => out.line(emit, err, text),
                None => open = false,
            },
            () = tokio::time::sleep_until(give_up) => {
                let _ = child.start_kill();
                return describe_status(child.wait().await);
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

/// The name `{dir}` starts with: the run and the shard, readable in `ls`.
fn scratch_prefix(run: &str, shard: u32) -> String {
    let safe: String =
        run.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).take(64).collect();
    format!("ensemble-service-{safe}-{shard}-")
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
}
