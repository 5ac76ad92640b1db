//! Tests that misbehave on purpose, for the runner's sandbox tests: each one
//! probes a limit (timeout, memory, stack, output) or a capability (files,
//! sockets, environment) that the sandbox must enforce.
//!
//! The capability probes pass only when the access SUCCEEDED, so a sandbox
//! test expects them to fail unless the plan entry granted the capability.
//!
//! | test | behaviour | params |
//! |---|---|---|
//! | `busy_loop` | spins forever (needs the epoch timeout) | |
//! | `long_sleep` | sleeps one hour in a host call | |
//! | `memory_hog` | allocates and touches 16 MiB chunks forever | |
//! | `deep_recursion` | recurses without bound (stack overflow trap) | |
//! | `read_file` | passes iff reading the file succeeds | `path`, default `/etc/hostname` |
//! | `connect` | passes iff a TCP connection is established | `addr` (required) |
//! | `read_env` | passes iff the variable is visible | `name`, default `HOME` |
//! | `output_flood` | writes `mib` MiB of lines to stdout, then passes | `mib`, default 64 |
//! | `log_flood` | logs `times` lines of 64 KiB, then passes (the log budget drops most) | `times`, default 20000 |
//! | `attach_flood` | attaches `files` files of `mib` MiB, each different, then passes | `files`, default 8; `mib` |
//! | `socket_flood` | opens `times` connections to `addr` and holds them; passes iff the runner refuses one first (its bound held) | `addr`, `times` |
//! | `passes` | passes at once (per-test overhead benchmark) | |
//!
//! With param `only` set to a test's name, every other test skips at once:
//! a plan can run one behaviour of this suite.

use std::hint::black_box;
use std::io::Write as _;

use ensemble_sdk::prelude::*;

const ONLY: Param<String> = Param::new("only", "run only the test of this name; the others skip at once");
const PATH: Param<String> = Param::new("path", "the file read_file tries to read").default("/etc/hostname");
const ADDR: Param<String> = Param::new("addr", "the host:port connect tries to reach (connect needs it)");
const NAME: Param<String> = Param::new("name", "the environment variable read_env reads").default("HOME");
const MIB: Param<u32> = Param::new("mib", "MiB memory_hog and output_flood try to use").default("64");
const TIMES: Param<u32> = Param::new("times", "how many lines log_flood logs").default("20000");
const FILES: Param<u32> = Param::new("files", "how many files attach_flood attaches").default("8");

/// Skips the test unless param `only` is unset or names it.
fn only(test: &str) -> TestResult {
    match ONLY.get_opt()? {
        Some(only) if only != test => Err(skip(format!("only {only} runs"))),
        _ => Ok(()),
    }
}

fn busy_loop() -> TestResult {
    only("busy_loop")?;
    let mut counter = 0u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

fn long_sleep() -> TestResult {
    only("long_sleep")?;
    std::thread::sleep(std::time::Duration::from_secs(60 * 60));
    Ok(())
}

fn memory_hog() -> TestResult {
    only("memory_hog")?;
    const CHUNK: usize = 16 << 20;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; CHUNK];
        // Touch every page so the memory is really used, not just reserved.
        for (i, byte) in chunk.iter_mut().step_by(4096).enumerate() {
            *byte = black_box(i as u8 | 1);
        }
        chunks.push(black_box(chunk));
        log::debug(format!("holding {} MiB", chunks.len() * 16));
    }
}

fn deep_recursion() -> TestResult {
    only("deep_recursion")?;
    let depth = recurse(black_box(0));
    Err(fail(format!("recursion ended at depth {depth}")))
}

/// Never returns in practice (the stack runs out long before `u64::MAX`):
/// the frame buffer and the use of the result after the call keep it from
/// becoming a loop or a tail call.
fn recurse(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return depth;
    }
    let frame = black_box([depth as u8; 256]);
    let below = recurse(black_box(depth + 1));
    below + u64::from(frame[(depth % 256) as usize])
}

fn read_file() -> TestResult {
    only("read_file")?;
    let path = PATH.get()?;
    let text = std::fs::read_to_string(&path).map_err(|e| fail(format!("reading {path}: {e}")))?;
    println!("read {} bytes from {path}", text.len());
    Ok(())
}

fn connect() -> TestResult {
    only("connect")?;
    let addr = ADDR.get()?;
    let stream =
        std::net::TcpStream::connect(&addr).map_err(|e| fail(format!("connecting to {addr}: {e}")))?;
    println!("connected to {addr} from {:?}", stream.local_addr());
    Ok(())
}

fn read_env() -> TestResult {
    only("read_env")?;
    let name = NAME.get()?;
    let value = std::env::var(&name).map_err(|e| fail(format!("reading ${name}: {e}")))?;
    println!("${name} is {} bytes long", value.len());
    Ok(())
}

fn output_flood() -> TestResult {
    only("output_flood")?;
    // 16 Ki lines of 64 bytes a MiB, written in large blocks (stdout alone
    // would flush at every newline).
    let mib = MIB.get()?;
    let mut out = std::io::BufWriter::with_capacity(64 << 10, std::io::stdout().lock());
    for i in 0..mib.saturating_mul(1 << 14) {
        // "flood line " + 8 digits + " " + 43 x's + "\n" = 64 bytes.
        writeln!(out, "flood line {i:08} {:x<43}", "")?;
    }
    out.flush()?;
    Ok(())
}

fn log_flood() -> TestResult {
    only("log_flood")?;
    let line = "l".repeat(64 << 10);
    for _ in 0..TIMES.get()? {
        log::info(&line);
    }
    Ok(())
}

fn attach_flood() -> TestResult {
    only("attach_flood")?;
    let size = (MIB.get()? as usize) << 20;
    let seed = format!("{}/{}/{}", run_id(), role(), instance_index());
    for file in 0..FILES.get()? {
        // Each file's bytes differ (attachments are kept by their sha256).
        let head = format!("{seed}/{file}\n");
        let mut bytes = vec![0u8; size];
        bytes[..head.len().min(size)].copy_from_slice(&head.as_bytes()[..head.len().min(size)]);
        attach::bytes(&format!("part-{file}.bin"), &bytes)
            .map_err(|e| fail(format!("attaching part {file}: {e}")))?;
    }
    Ok(())
}

fn socket_flood() -> TestResult {
    only("socket_flood")?;
    let addr = ADDR.get()?;
    let times = TIMES.get()?;
    let mut held = Vec::new();
    for _ in 0..times {
        match std::net::TcpStream::connect(&addr) {
            Ok(stream) => held.push(stream),
            Err(e) => {
                println!("held {} connections to {addr}, then: {e}", held.len());
                return Ok(());
            }
        }
    }
    Err(fail(format!("held {} connections to {addr}: nothing bounded them", held.len())))
}

fn passes() -> TestResult {
    only("passes")?;
    Ok(())
}

ensemble_sdk::suite! {
    params(ONLY, PATH, ADDR, NAME, MIB, TIMES, FILES),
    busy_loop,
    long_sleep,
    memory_hog,
    deep_recursion,
    read_file,
    connect,
    read_env,
    output_flood,
    log_flood,
    attach_flood,
    socket_flood,
    passes,
}
