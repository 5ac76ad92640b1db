//! Compiling a suite within a budget of time and memory.
//!
//! Cranelift cannot be interrupted, and a hostile component (one huge
//! function) can keep it busy for minutes and take gigabytes. So the
//! processes that take suites from outside (`serve`, `runner`, `run`)
//! compile each new suite in a child process of their own binary
//! (`ensemble __compile-suite`, hidden), which the parent kills when the
//! budget's time is up or when nobody waits for the result any more (an
//! upload whose client left: the waiting future is dropped, and the child
//! with it). The child's memory is capped by the operating system (its
//! data segment, on Unix); past it, its allocations fail and it dies.
//!
//! The child writes the compiled artifact (`Component::serialize`) to a
//! file the parent names; the parent loads it, with the same engine
//! configuration ([`super::engine_config`] of the same [`Tier`]), as it
//! loads its disk cache. A compile in the background (the optimized tier of
//! a suite already running on the baseline one) runs at the lowest CPU
//! priority: the tests come first, idle cores optimize.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use ensemble_protocol::units::{ByteSize, HumanDuration};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::{SuiteError, Tier};

/// The hidden command the child runs.
pub const COMMAND: &str = "__compile-suite";

/// How long compiling one suite may take by default: a 19 MB Python suite
/// compiles in ~5 s here, the slowest seen in ~10 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// How much memory compiling one suite may take by default.
pub const DEFAULT_MEMORY: u64 = 2 << 30;

/// Where and within what a suite is compiled.
#[derive(Clone, Debug)]
pub struct CompileBudget {
    /// This program (its `__compile-suite` command compiles).
    pub exe: PathBuf,
    pub timeout: Duration,
    pub memory: u64,
}

impl CompileBudget {
    /// The budget of this process's own binary, with the defaults.
    pub fn of_this_binary() -> Option<CompileBudget> {
        let exe = std::env::current_exe().ok()?;
        Some(CompileBudget { exe, timeout: DEFAULT_TIMEOUT, memory: DEFAULT_MEMORY })
    }

    /// The CPU time the child may use at most: its time on every core, and
    /// some (the kernel's stop if nobody else stops it).
    fn cpu_seconds(&self) -> u64 {
        let cores = crate::cores() as u64;
        self.timeout.as_secs().saturating_add(1).saturating_mul(cores).saturating_add(10)
    }

    /// Compiles `bytes` for `tier` in a child process into the artifact
    /// file `out` (at the lowest CPU priority when `idle`). The child is
    /// killed when the time is up or when this future is dropped.
    /// `Ok(false)` when no child can be started here (say, a runner under
    /// an emulator that cannot start its own binary again): the caller
    /// compiles in its own process instead.
    pub async fn compile(
        &self,
        bytes: &[u8],
        out: &Path,
        tier: Tier,
        idle: bool,
    ) -> Result<bool, SuiteError> {
        let dir = out.parent().unwrap_or(Path::new("."));
        let input = tempfile::Builder::new().prefix(".suite-").tempfile_in(dir).map_err(|e| {
            SuiteError::Internal(format!("staging the suite to compile in {}: {e}", dir.display()))
        })?;
        std::fs::write(input.path(), bytes)
            .map_err(|e| SuiteError::Internal(format!("staging the suite to compile: {e}")))?;
        let started = tokio::process::Command::new(&self.exe)
            .arg(COMMAND)
            .arg(input.path())
            .arg(out)
            .arg(self.memory.to_string())
            .arg(std::process::id().to_string())
            .arg(self.cpu_seconds().to_string())
            .arg(tier.as_str())
            .arg(if idle { "idle" } else { "now" })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match started {
            Ok(child) => child,
            Err(e) => {
                crate::throttled!(warn, 1, exe = %self.exe.display(), "cannot start a process to compile suites in ({e}); compiling in this one, without a budget");
                return Ok(false);
            }
        };
        let mut stderr = child.stderr.take().expect("piped");
        let mut said = Vec::new();
        let waited = tokio::time::timeout(self.timeout, async {
            // What it says is short (one error); read at most 64 KiB of it.
            use tokio::io::AsyncReadExt;
            let _ = (&mut stderr).take(64 << 10).read_to_end(&mut said).await;
            child.wait().await
        })
        .await;
        let said = String::from_utf8_lossy(&said).trim().to_string();
        match waited {
            Err(_) => {
                let _ = child.kill().await;
                Err(SuiteError::Invalid(format!(
                    "compiling the suite took longer than its budget of {} (the runner's --compile-timeout raises it)",
                    HumanDuration(self.timeout)
                )))
            }
            Ok(Err(e)) => Err(SuiteError::Internal(format!("waiting for the compiler: {e}"))),
            Ok(Ok(status)) if status.success() => Ok(true),
            // The shell's codes for a program that cannot run: what a
            // spawn under an emulator reports when the kernel cannot start
            // this binary again.
            Ok(Ok(status)) if matches!(status.code(), Some(126 | 127)) => {
                crate::throttled!(warn, 1, exe = %self.exe.display(), %status, "cannot start a process to compile suites in; compiling in this one, without a budget");
                Ok(false)
            }
            Ok(Ok(status)) if status.code() == Some(INVALID) => Err(SuiteError::Invalid(said)),
            Ok(Ok(status)) => Err(SuiteError::Invalid(format!(
                "compiling the suite failed ({status}), most likely over its memory budget of {} \
                 (the runner's --compile-memory raises it){}",
                ByteSize(self.memory),
                if said.is_empty() { String::new() } else { format!(": {}", first_line(&said)) }
            ))),
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// The child's exit code when the input is not a valid component.
const INVALID: i32 = 2;

/// The child: `__compile-suite INPUT OUTPUT MEMORY_BYTES PARENT_PID
/// CPU_SECONDS TIER PRIORITY` (`baseline` or `optimized`; `now` or
/// `idle`). Returns its exit code: 0 with the artifact written,
/// [`INVALID`] with the reason on stderr. It dies with its parent (Linux),
/// and the kernel stops it past its memory and CPU time (Unix), so no
/// compile outlives the process that asked for it, even one SIGKILLed.
pub fn child_main(args: &[String]) -> i32 {
    let [input, output, memory, parent, cpu, tier, priority] = args else {
        eprintln!("usage: ensemble {COMMAND} INPUT OUTPUT MEMORY_BYTES PARENT_PID CPU_SECONDS TIER PRIORITY");
        return 64;
    };
    let Some(tier) = Tier::parse(tier) else {
        eprintln!("unknown tier {tier} (baseline or optimized)");
        return 64;
    };
    #[cfg(unix)]
    if priority == "idle" {
        // Best effort: at worst the optimized tier competes with the tests.
        let _ = rustix::process::nice(19);
    }
    #[cfg(windows)]
    if priority == "idle" {
        use windows_sys::Win32::System::Threading::{
            GetCurrentProcess, IDLE_PRIORITY_CLASS, SetPriorityClass,
        };
        // SAFETY: the pseudo-handle of this process, always valid.
        #[allow(unsafe_code)]
        unsafe {
            SetPriorityClass(GetCurrentProcess(), IDLE_PRIORITY_CLASS);
        }
    }
    #[cfg(not(any(unix, windows)))]
    let _ = priority;
    let memory: u64 = memory.parse().unwrap_or(DEFAULT_MEMORY);
    #[cfg(target_os = "linux")]
    {
        let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
        // The parent may have gone before that took effect.
        let alive =
            rustix::process::getppid().is_some_and(|p| p.as_raw_nonzero().get().to_string() == *parent);
        if !alive {
            return 1;
        }
    }
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, setrlimit};
        let cpu: u64 = cpu.parse().unwrap_or(3600);
        for (resource, limit) in [(Resource::Data, memory), (Resource::Cpu, cpu)] {
            if let Err(e) = setrlimit(resource, Rlimit { current: Some(limit), maximum: Some(limit) }) {
                eprintln!("cannot limit the compiler ({resource:?}): {e}");
                return 1;
            }
        }
    }
    #[cfg(all(unix, not(target_os = "linux")))]
    let _ = parent;
    #[cfg(not(unix))]
    let _ = (memory, parent, cpu);
    let engine = match Engine::new(&super::engine_config(tier)) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot set up the compiler: {e:#}");
            return 1;
        }
    };
    let bytes = match std::fs::read(input) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("reading {input}: {e}");
            return 1;
        }
    };
    let component = match Component::new(&engine, &bytes) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("not a valid WebAssembly component: {e:#}");
            return INVALID;
        }
    };
    let written = component
        .serialize()
        .map_err(|e| format!("{e:#}"))
        .and_then(|artifact| std::fs::write(output, artifact).map_err(|e| format!("writing {output}: {e}")));
    match written {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}
