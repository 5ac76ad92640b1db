//! Helpers for Ensemble's end-to-end tests: real `ensemble` processes.
//!
//! The tests run the binary the workspace built (`cargo test --workspace`
//! builds it next to the test executables) as separate processes talking over
//! loopback: a server bound to port 0 (its first line of output names the
//! address), runners joining it, and the CLI. Nothing sleeps to wait: tests
//! long-poll the API or follow the run's event stream, through the one typed
//! client (`ensemble-client`) the CLI uses too.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub use ensemble_client::{Client, ClientError, tls_with_roots};
use ensemble_protocol::api::{MachineStatus, routes};
use ensemble_protocol::wire::{Facts, FromMachine, MachineInfo, Parts, ToMachine, split_frame};
use ensemble_protocol::{Event, PROTOCOL_VERSION, Plan};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

pub mod browser;
pub mod proxy;
pub mod soak;

/// A plan named `name` that runs test `test` of the `hostile` example suite
/// (stored as `suite`, `sha256:…`) on a machine labelled `tier=a`, with an
/// hour for it.
pub fn hostile_test_plan(name: &str, suite: &str, test: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name, "settings": { "test_timeout": "1h" },
        "profiles": [{ "name": "a", "labels": { "tier": "a" } }],
        "entries": [{ "suite": suite, "profile": "a", "tests": [test], "params": { "only": test } }]
    })
}

/// splitmix64: small, seeded, reproducible.
pub struct Rng(pub u64);

impl Rng {
    pub fn draw(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo { lo } else { lo + self.draw() % (hi - lo) }
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the repository").to_path_buf()
}

/// Set by a caller that knows the binary (a bench: `CARGO_BIN_EXE_ensemble`).
pub static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The `ensemble` binary of this build (target/<profile>/ensemble).
pub fn ensemble_bin() -> PathBuf {
    if let Some(bin) = BIN.get() {
        return bin.clone();
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/ensemble
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    let bin = profile_dir.join(format!("ensemble{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` so the binary is built",
        bin.display()
    );
    bin
}

/// Runs `ensemble` with `args` in the repository root, with a private cache.
pub fn ensemble(args: &[&str], cache: &Path) -> Output {
    Command::new(ensemble_bin())
        .args(args)
        .current_dir(repo_root())
        .env("ENSEMBLE_CACHE_DIR", cache)
        .output()
        .expect("ensemble runs")
}

/// [`ensemble`] from async code: the command runs on a blocking thread.
pub async fn ensemble_async(args: &[&str], cache: &Path) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let cache = cache.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ensemble(&args, &cache)
    })
    .await
    .expect("the ensemble command thread")
}

/// A child process, killed (SIGKILL) when dropped. Its stderr goes to a log
/// file that [`Proc::log`] reads, for assertion messages.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process's peak resident memory in bytes (`VmHWM`; Linux only).
    pub fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// The process's resident memory now in bytes (`VmRSS`; Linux only).
    pub fn rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// How many threads the process has now (Linux only).
    pub fn threads(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status.lines().find(|l| l.starts_with("Threads:"))?.split_whitespace().nth(1)?.parse().ok()
    }

    /// How many files (sockets included) the process has open (Linux only).
    pub fn open_files(&self) -> Option<usize> {
        Some(std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).ok()?.count())
    }

    /// SIGKILL, as a crashed machine would die.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    /// The process and everything it started go, however the test ends
    /// (a panic too).
    fn drop(&mut self) {
        kill_tree(&mut self.child);
    }
}

/// The processes `pid` started, and theirs, from `/proc` (Linux; empty
/// elsewhere).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut next = vec![pid];
    while let Some(p) = next.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else { continue };
        for task in tasks.flatten() {
            let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
                if !found.contains(&child) {
                    found.push(child);
                    next.push(child);
                }
            }
        }
    }
    found
}

/// SIGKILLs `child` and every process under it, then reaps `child`.
pub fn kill_tree(child: &mut Child) {
    let under = descendants(child.id());
    let _ = child.kill();
    for pid in under {
        if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
    let _ = child.wait();
}

/// A child process a test owns: it and every process under it are killed
/// when the guard drops, however the test ends.
pub struct Owned(pub Child);

impl Drop for Owned {
    fn drop(&mut self) {
        kill_tree(&mut self.0);
    }
}

impl std::ops::Deref for Owned {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Owned {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// A tool the tests use: from the virtual environment the test command (`cargo xtask test`) makes for
/// Python tools (`target/ci-venv`), or else from the PATH.
pub fn ci_tool(name: &str) -> PathBuf {
    let venv = repo_root().join("target/ci-venv/bin").join(name);
    if venv.is_file() {
        return venv;
    }
    let on_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()));
    on_path.unwrap_or_else(|| {
        panic!(
            "{name} is needed: `cargo xtask test` installs it (Python tools into target/ci-venv with the versions \
             it pins; chromium, systemd and buildah with apt-get)"
        )
    })
}

/// A request a receiver got: its headers (lowercase names) and body.
#[derive(Debug)]
pub struct WebhookCall {
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: Vec<u8>,
}

/// A local webhook receiver (for notify and schedule tests): answers its calls with `statuses` in turn (then
/// 200) and reports each call. Returns its URL.
pub async fn webhook_receiver(
    statuses: Vec<u16>,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<WebhookCall>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    tokio::spawn(async move {
        let statuses = std::sync::Arc::new(std::sync::Mutex::new(statuses.into_iter()));
        loop {
            let Ok((socket, _)) = listener.accept().await else { return };
            let (tx, statuses) = (tx.clone(), statuses.clone());
            tokio::spawn(async move {
                let mut socket = tokio::io::BufReader::new(socket);
                loop {
                    let mut headers = std::collections::BTreeMap::new();
                    let mut line = String::new();
                    if socket.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        line.clear();
                        socket.read_line(&mut line).await.unwrap();
                        let Some((k, v)) = line.trim_end().split_once(": ") else { break };
                        headers.insert(k.to_ascii_lowercase(), v.to_string());
                    }
                    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                    let mut body = vec![0; len];
                    socket.read_exact(&mut body).await.unwrap();
                    let status = statuses.lock().unwrap().next().unwrap_or(200);
                    let _ = tx.send(WebhookCall { headers, body });
                    let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                    socket.get_mut().write_all(answer.as_bytes()).await.unwrap();
                }
            });
        }
    });
    (url, rx)
}

/// A running `ensemble serve`.
pub struct Server {
    pub proc: Proc,
    pub url: String,
    /// The API token.
    pub token: String,
    /// The token machines join with.
    pub join_token: String,
}

/// The join token the test servers use beside API token `token`.
pub fn join_token(token: &str) -> String {
    format!("{token}-join")
}

/// Starts `ensemble serve` on a free loopback port with `extra` arguments.
/// The flags of a server whose schedules' tests run here: its webhooks may
/// call receivers on this machine (loopback, refused by default), and its
/// schedules may fire every second (once a minute at most by default).
pub const SCHEDULE_FLAGS: &[&str] = &["--allow-webhook-to", "127.0.0.1", "--min-schedule-interval", "1s"];

pub fn start_server(dir: &Path, data_dir: &Path, token: &str, extra: &[&str]) -> Server {
    start_server_on(dir, data_dir, token, "127.0.0.1:0", extra)
}

/// A server for benchmarks, of the binary `bin` (the bench's
/// `CARGO_BIN_EXE_ensemble`, a release build), in `dir`: without a machine of
/// its own, and patient with machines too busy to send heartbeats (2 min).
pub fn start_bench_server(bin: PathBuf, dir: &Path) -> Server {
    let _ = BIN.set(bin);
    start_server(dir, &dir.join("data"), "bench", &["--no-local-machine", "--heartbeat-timeout", "120s"])
}

/// Starts `ensemble serve` again where `server` listened (after it died),
/// on the same data dir, so its machines and watchers find it.
pub fn restart_server(dir: &Path, data_dir: &Path, server: &Server, extra: &[&str]) -> Server {
    let listen = server.url.strip_prefix("http://").expect("an http:// server");
    start_server_on(dir, data_dir, &server.token, listen, extra)
}

fn start_server_on(dir: &Path, data_dir: &Path, token: &str, listen: &str, extra: &[&str]) -> Server {
    let log = dir.join(format!("serve-{}.log", unique()));
    let mut child = Command::new(ensemble_bin())
        .args([
            "serve",
            "--listen",
            listen,
            "--token",
            token,
            "--join-token",
            &join_token(token),
            "--data-dir",
        ])
        .arg(data_dir)
        .args(extra)
        .env("ENSEMBLE_CACHE_DIR", dir.join("cache-server"))
        .env("ENSEMBLE_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(File::create(&log).expect("log file"))
        .spawn()
        .expect("ensemble serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("serve prints its address");
    let proc = Proc { child, log };
    let url = line
        .trim()
        .strip_prefix("ensemble serve: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}; log:\n{}", proc.log()))
        .to_string();
    Server { proc, url, token: token.to_string(), join_token: join_token(token) }
}

/// Starts `ensemble runner` joining `server` as `name` with `labels`.
pub fn start_runner(dir: &Path, server: &Server, name: &str, labels: &[&str], token: Option<&str>) -> Proc {
    start_runner_with(dir, server, name, labels, token, &[])
}

/// [`start_runner`] with extra arguments (e.g. `--slots 32`).
pub fn start_runner_with(
    dir: &Path,
    server: &Server,
    name: &str,
    labels: &[&str],
    token: Option<&str>,
    extra: &[&str],
) -> Proc {
    start_runner_at(dir, server, &server.url, name, labels, token, extra)
}

/// [`start_runner_with`] joining `server` at `url` (a proxy in front of it).
pub fn start_runner_at(
    dir: &Path,
    server: &Server,
    url: &str,
    name: &str,
    labels: &[&str],
    token: Option<&str>,
    extra: &[&str],
) -> Proc {
    start_runner_of(&ensemble_bin(), dir, server, url, name, labels, token, extra)
}

/// [`start_runner_at`] with the binary `bin` (e.g. [`build_runner_only`]'s).
#[allow(clippy::too_many_arguments)]
pub fn start_runner_of(
    bin: &Path,
    dir: &Path,
    server: &Server,
    url: &str,
    name: &str,
    labels: &[&str],
    token: Option<&str>,
    extra: &[&str],
) -> Proc {
    let id = unique();
    let log = dir.join(format!("runner-{name}-{id}.log"));
    // The token from a file, as the README says to pass it (not on the
    // command line, where every local user can read it).
    let token_file = dir.join(format!("join-token-{name}-{id}"));
    std::fs::write(&token_file, token.unwrap_or(&server.join_token)).expect("token file");
    let mut cmd = Command::new(bin);
    cmd.args(["runner", "--join", url, "--name", name, "--token-file"]).arg(&token_file);
    for l in labels {
        cmd.args(["--label", l]);
    }
    cmd.args(extra);
    let child = cmd
        .env("ENSEMBLE_CACHE_DIR", dir.join(format!("cache-{name}")))
        .env("ENSEMBLE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(File::create(&log).expect("log file"))
        .spawn()
        .expect("ensemble runner starts");
    Proc { child, log }
}

/// A kind of machine other than this one that the tests start runners of:
/// the runner built for its Rust target, started here through an emulator
/// or a compatibility layer. The tools are Debian packages (`cargo xtask test`
/// installs them).
#[derive(Debug)]
pub struct Foreign {
    pub triple: &'static str,
    /// The program that starts the target's binaries here, and its arguments.
    pub launcher: &'static [&'static str],
    /// Files the build and the launch need: (path or command, Debian package).
    pub needs: &'static [(&'static str, &'static str)],
}

/// 64-bit Arm Linux, emulated by qemu-user with Debian's arm64 libraries.
pub const AARCH64: Foreign = Foreign {
    triple: "aarch64-unknown-linux-gnu",
    launcher: &["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"],
    needs: &[
        ("qemu-aarch64", "qemu-user"),
        ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
        ("/usr/aarch64-linux-gnu/lib/libc.so.6", "libc6-dev-arm64-cross"),
    ],
};

/// 64-bit Windows, run by Wine.
pub const WINDOWS: Foreign = Foreign {
    triple: "x86_64-pc-windows-gnu",
    launcher: &["/usr/lib/wine/wine64"],
    needs: &[("x86_64-w64-mingw32-gcc", "gcc-mingw-w64-x86-64"), ("/usr/lib/wine/wine64", "wine64")],
};

/// Builds the runner for each of `kinds` in the `cross` profile (one cargo
/// run for all, with the workspace's `.cargo/config.toml` linkers; quick
/// when nothing changed) and returns their binaries, in order. Panics
/// naming what to install when a tool or a Rust target is missing.
pub fn build_foreign_runners(kinds: &[&Foreign]) -> Vec<PathBuf> {
    let sysroot = Command::new("rustc").args(["--print", "sysroot"]).current_dir(repo_root()).output();
    let sysroot = sysroot.map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let mut missing = Vec::new();
    for kind in kinds {
        for (file, package) in kind.needs {
            if !on_path_or_file(file) {
                missing.push(format!("{file} (Debian: apt-get install {package})"));
            }
        }
        if !sysroot.as_ref().is_ok_and(|s| s.join("lib/rustlib").join(kind.triple).is_dir()) {
            missing.push(format!("Rust's {0} target (rustup target add {0})", kind.triple));
        }
    }
    assert!(
        missing.is_empty(),
        "runners for other machines need: {} (`cargo xtask test` installs them)",
        missing.join("; ")
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    ensemble_build_support::clean_cargo_env(&mut cmd);
    cmd.args(["build", "--locked", "-p", "ensemble-runner", "--bin", "ensemble", "--profile", "cross"]);
    for kind in kinds {
        cmd.args(["--target", kind.triple]);
    }
    // MinGW's dlltool (Windows imports) leaves empty files in the temporary
    // directory: a scratch one, removed after the build.
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let out = cmd.current_dir(repo_root()).env("TMPDIR", scratch.path()).output().expect("cargo runs");
    assert!(
        out.status.success(),
        "building the runners for other machines failed: {cmd:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let target_dir =
        ensemble_bin().parent().and_then(Path::parent).expect("target/<profile>/ensemble").to_path_buf();
    kinds
        .iter()
        .map(|kind| {
            let dir = target_dir.join(kind.triple).join("cross");
            if kind.triple.contains("windows") {
                wine_support(&dir);
                dir.join("ensemble.exe")
            } else {
                dir.join("ensemble")
            }
        })
        .collect()
}

/// The demo's key/value server, built with the workspace.
pub fn kv_server() -> PathBuf {
    let bin = ensemble_bin().with_file_name(format!("ensemble-kv{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.is_file(), "{} is missing: `cargo test --workspace` builds it", bin.display());
    bin
}

/// A plan around the kv service (`ensemble-kv` at `kv`) on the machine
/// labelled role=db: kv-tcp-client (`client`, a suite reference) on
/// role=chaos restarts and pauses it, and one on role=reader checks what
/// survived and that faults need a grant.
pub fn kv_fault_plan(client: &str, kv: &Path) -> serde_json::Value {
    serde_json::json!({
        "name": "faults",
        "settings": { "test_timeout": "60s", "barrier_timeout": "60s" },
        "profiles": [
            { "name": "db-box", "labels": { "role": "db" } },
            { "name": "chaos-box", "labels": { "role": "chaos" } },
            { "name": "reader-box", "labels": { "role": "reader" } },
        ],
        "services": [{
            "name": "kv", "profile": "db-box",
            "command": [kv.display().to_string(), "--port", "{port}", "--bind", "{host}", "--data", "{dir}"],
            "ready": { "tcp": "{port}" },
        }],
        "entries": [
            {
                "suite": client, "profile": "chaos-box", "role": "chaos",
                "tests": ["survives_a_restart", "holds_still_while_paused"],
                "params": { "peers": "1", "keys": "30" },
                "capabilities": { "net": ["service:kv"], "faults": ["kv"] },
            },
            {
                "suite": client, "profile": "reader-box", "role": "reader",
                "tests": ["reads_back_after_a_restart", "faults_need_a_grant"],
                "params": { "keys": "30" },
                "capabilities": { "net": ["service:kv"] },
            },
        ],
    })
}

/// Builds the runner-only binary (the runner crate without its
/// `coordinator` feature: no coordinator, store, app or reports) in this
/// target directory, as the `runner-only` example (the full binary's
/// entry point under another name, so the two do not replace each other),
/// and returns its path. Built once per test process: a second build,
/// even a fresh one, links the file again under a runner starting from it.
pub fn build_runner_only() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_runner_only_now).clone()
}

fn build_runner_only_now() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    ensemble_build_support::clean_cargo_env(&mut cmd);
    cmd.args([
        "build",
        "--locked",
        "-p",
        "ensemble-runner",
        "--no-default-features",
        "--example",
        "runner-only",
    ]);
    // In the profile of the binary beside this test (a bench's is release),
    // and its target directory: the clean environment leaves out a
    // CARGO_TARGET_DIR the run was given, and the binary is looked for here.
    let dir = ensemble_bin().parent().expect("target/<profile>/ensemble").to_path_buf();
    cmd.arg("--target-dir").arg(dir.parent().expect("target/<profile>"));
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some(profile) => {
            cmd.args(["--profile", profile]);
        }
    }
    let out = cmd.current_dir(repo_root()).output().expect("cargo runs");
    assert!(
        out.status.success(),
        "building the runner-only binary failed: {cmd:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("examples").join(format!("runner-only{}", std::env::consts::EXE_SUFFIX))
}

/// Puts beside the Windows binaries in `dir` what Wine 8 (Debian 12's)
/// lacks to start them: `bcryptprimitives.dll`, whose `ProcessPrng` Rust's
/// standard library imports (see `tests/wine/bcryptprimitives.c`).
fn wine_support(dir: &Path) {
    let source = repo_root().join("tests/wine/bcryptprimitives.c");
    let dll = dir.join("bcryptprimitives.dll");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&dll).is_some_and(|built| modified(&source).is_some_and(|written| built >= written)) {
        return;
    }
    // Built aside and renamed: a runner starting meanwhile sees the whole file.
    let fresh = dir.join(format!("bcryptprimitives.{}-{}.tmp", std::process::id(), unique()));
    let out = Command::new("x86_64-w64-mingw32-gcc")
        .args(["-O2", "-shared", "-o"])
        .arg(&fresh)
        .arg(&source)
        .arg("-ladvapi32")
        .output()
        .expect("x86_64-w64-mingw32-gcc runs");
    assert!(out.status.success(), "building {}: {}", dll.display(), String::from_utf8_lossy(&out.stderr));
    std::fs::rename(&fresh, &dll).expect("rename the built DLL into place");
}

fn on_path_or_file(name: &str) -> bool {
    if name.contains('/') {
        return Path::new(name).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
}

/// Starts the runner binary `bin` built for `kind` through its launcher,
/// joining `server` as `name` with `labels`. Under Wine, each runner gets a
/// Wine prefix of its own in `dir`.
pub fn start_foreign_runner(
    dir: &Path,
    server: &Server,
    name: &str,
    kind: &Foreign,
    bin: &Path,
    labels: &[&str],
) -> Proc {
    start_foreign_runner_with(dir, server, name, kind, bin, labels, &[])
}

/// [`start_foreign_runner`] with more flags for `ensemble runner`.
pub fn start_foreign_runner_with(
    dir: &Path,
    server: &Server,
    name: &str,
    kind: &Foreign,
    bin: &Path,
    labels: &[&str],
    extra: &[&str],
) -> Proc {
    let log = dir.join(format!("runner-{name}-{}.log", unique()));
    let (launcher, launcher_args) = kind.launcher.split_first().expect("a launcher");
    let mut cmd = Command::new(launcher);
    cmd.args(launcher_args).arg(bin);
    cmd.args(["runner", "--join", &server.url, "--name", name, "--token", &server.join_token]);
    for l in labels {
        cmd.args(["--label", l]);
    }
    cmd.args(extra);
    let child = cmd
        .current_dir(dir)
        .env("ENSEMBLE_CACHE_DIR", dir.join(format!("cache-{name}")))
        .env("ENSEMBLE_LOG", "info")
        .env("WINEPREFIX", dir.join(format!("wine-{name}")))
        // Wine keeps its server's directory (`wine-XXXXXX`, which outlives
        // the server) in the temporary directory: the test's, removed with it.
        .env("TMPDIR", dir)
        .env("WINEDEBUG", "-all")
        // No Mono or Gecko installer dialogs in a new prefix.
        .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
        .stdout(Stdio::null())
        .stderr(File::create(&log).expect("log file"))
        .spawn()
        .unwrap_or_else(|e| panic!("{launcher} starts: {e}"));
    Proc { child, log }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Samples of an OpenMetrics text page, by name with labels
/// (`name{a="b"}`), checked line by line: every line is a comment or a
/// sample with a number, and the page ends with `# EOF`.
pub fn metric_samples(text: &str) -> std::collections::BTreeMap<String, f64> {
    assert!(text.ends_with("# EOF\n"), "no # EOF at the end:\n{text}");
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            let kind = line.split_whitespace().nth(1).unwrap_or_default();
            assert!(["TYPE", "HELP", "UNIT", "EOF"].contains(&kind), "a comment of no known kind: {line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.starts_with("ensemble_") && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "a bad metric name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')), "{line}");
        }
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
        out.insert(series.to_string(), value);
    }
    out
}

/// `GET url`, where `url` is `http://host:port/path`.
pub async fn http_get(url: &str, token: Option<&str>) -> (u16, String) {
    let slash = url["http://".len()..].find('/').map_or(url.len(), |i| i + "http://".len());
    let (base, path) = url.split_at(slash);
    let client = ensemble_client::Client::new(
        base,
        token.map(str::to_string),
        ensemble_client::tls_with_roots(rustls::RootCertStore::empty()),
    )
    .unwrap();
    let resp = client.request(reqwest::Method::GET, path).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// The metrics page of a runner started with `--metrics-listen`, as
/// [`metric_samples`]; the address is the one its log names.
pub async fn runner_metrics(runner: &Proc) -> std::collections::BTreeMap<String, f64> {
    let log = runner.log();
    let url = log
        .lines()
        .find_map(|l| l.strip_prefix("ensemble runner: metrics at "))
        .unwrap_or_else(|| panic!("the runner names its metrics address: {log}"))
        .to_string();
    let (status, text) = http_get(&url, None).await;
    assert_eq!(status, 200, "{text}");
    metric_samples(&text)
}

impl Server {
    /// A client with the join token, for tests that act as a machine.
    pub fn machine_client(&self) -> Client {
        self.client().with_token(Some(self.join_token.clone()))
    }

    /// The typed API client, with the server's token.
    pub fn client(&self) -> Client {
        Client::new(&self.url, Some(self.token.clone()), tls_with_roots(rustls::RootCertStore::empty()))
            .expect("an API client")
    }

    /// Waits (long-poll, no sleeping) until `n` machines are online.
    pub async fn wait_online(&self, n: usize) -> Vec<MachineStatus> {
        let machines = self.client().wait_machines(n, std::time::Duration::from_secs(60)).await.unwrap();
        let online = machines.iter().filter(|m| m.state.is_connected()).count();
        assert!(online >= n, "only {online} machines online: {machines:?}");
        machines
    }

    /// Uploads a suite file; returns its sha256.
    pub async fn upload(&self, path: &str, name: &str) -> String {
        let bytes = std::fs::read(path).unwrap();
        let meta =
            self.client().upload_suite(name, bytes).await.unwrap_or_else(|e| panic!("upload {name}: {e}"));
        meta.sha256
    }

    /// Starts a run of an inline plan (JSON, checked as the server would);
    /// returns its id.
    pub async fn start_run(&self, plan: serde_json::Value) -> String {
        let plan = Plan::from_json(&plan.to_string()).unwrap_or_else(|e| panic!("{e}"));
        self.client().start_plan(&plan).await.unwrap_or_else(|e| panic!("{e}")).id
    }

    /// Starts a run that waits at a barrier for a party that never comes
    /// (the `parties` suite at path `parties`: its `barriers` test, two
    /// parties, one instance) on the machines `profile` (a plan profile
    /// without its name) picks, with the plan `settings`: it runs until it
    /// is cancelled or its test times out — after an hour unless `settings`
    /// say otherwise, so a loaded machine never sees it end early. Returns
    /// its id.
    pub async fn start_stuck_run(
        &self,
        parties: &str,
        mut profile: serde_json::Value,
        mut settings: serde_json::Value,
    ) -> String {
        for limit in ["test_timeout", "barrier_timeout"] {
            if settings.get(limit).is_none() {
                settings[limit] = "1h".into();
            }
        }
        let suite = format!("sha256:{}", self.upload(parties, "parties").await);
        profile["name"] = "p".into();
        self.start_run(serde_json::json!({
            "name": "waits",
            "settings": settings,
            "profiles": [profile],
            "entries": [{
                "suite": suite, "profile": "p", "tests": ["barriers"],
                "params": { "parties": "2", "rounds": "1" },
            }],
        }))
        .await
    }

    /// Every event of a run, from the first until `run-finished`.
    pub async fn events(&self, run: &str) -> Vec<Event> {
        let mut events = Vec::new();
        self.watch(run, 1, |e| {
            events.push(e.clone());
            true
        })
        .await;
        events
    }

    /// Follows a run's event stream from `from`, calling `each` for every
    /// event until `run-finished` (or until `each` returns false).
    pub async fn watch(&self, run: &str, from: u64, mut each: impl FnMut(&Event) -> bool) {
        let mut ws = self.client().websocket(&routes::run_events(run, from)).await.expect("event stream");
        while let Some(Ok(msg)) = ws.next().await {
            let Message::Text(text) = msg else { continue };
            let ev: Event = serde_json::from_str(&text).unwrap();
            let done = matches!(ev.kind, ensemble_protocol::EventKind::RunFinished { .. });
            if !each(&ev) || done {
                return;
            }
        }
    }
}

/// A machine that joins with the token and speaks the wire protocol itself.
pub struct FakeMachine {
    pub ws: ensemble_client::WebSocket,
}

impl FakeMachine {
    pub async fn join(server: &Server, name: &str, labels: &[(&str, &str)]) -> FakeMachine {
        FakeMachine::try_join(server, name, labels, None)
            .await
            .unwrap_or_else(|why| panic!("not welcomed: {why}"))
    }

    /// Joins as `name` with `secret`; the refusal's reason if refused.
    pub async fn try_join(
        server: &Server,
        name: &str,
        labels: &[(&str, &str)],
        secret: Option<String>,
    ) -> Result<FakeMachine, String> {
        let ws = server.machine_client().websocket(routes::MACHINE_JOIN).await.unwrap();
        let hello = FromMachine::Hello {
            protocol: PROTOCOL_VERSION,
            token: None,
            secret,
            holding: None,
            instance: None,
            machine: MachineInfo {
                name: name.into(),
                labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                slots: 4,
                facts: Facts::default(),
                allow_exec: Vec::new(),
            },
        };
        let mut m = FakeMachine { ws };
        m.send(&hello).await;
        match m.recv().await {
            ToMachine::Welcome { .. } => Ok(m),
            ToMachine::Rejected { reason, retry } => {
                assert!(!retry, "a refusal of identity is final");
                Err(reason)
            }
            other => panic!("neither welcomed nor refused: {other:?}"),
        }
    }

    /// Sends `msg` as a machine does: one text message, or binary parts
    /// when it is larger than one (`wire::split_frame`).
    pub async fn send(&mut self, msg: &FromMachine) {
        match split_frame(serde_json::to_string(msg).unwrap()) {
            Parts::Whole(text) => self.ws.send(Message::text(text)).await.unwrap(),
            Parts::Split(parts) => {
                for part in parts {
                    self.ws.send(Message::binary(part)).await.unwrap();
                }
            }
        }
    }

    /// The next message that is not a ping (pings are answered).
    pub async fn recv(&mut self) -> ToMachine {
        loop {
            let Some(Ok(Message::Text(text))) = self.ws.next().await else { panic!("the connection closed") };
            match serde_json::from_str::<ToMachine>(&text).unwrap() {
                ToMachine::Ping { id, coordinator_us } => {
                    self.send(&FromMachine::Pong { id, coordinator_us, machine_us: coordinator_us }).await;
                }
                other => return other,
            }
        }
    }
}
