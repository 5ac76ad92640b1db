//! A client of `ensemble-kv`, the demo's native key/value server, started
//! as the plan's service `kv` on another machine. It talks to it over a
//! real TCP connection (granted by `service:kv`) and, where the plan grants
//! it `faults = ["kv"]`, restarts and pauses it in the middle of its tests
//! and checks what survives.
//!
//! | test | what it does | params |
//! |---|---|---|
//! | `ping` | `PING` answers `PONG` | `service`, default `kv` |
//! | `writes_then_reads` | writes `keys` keys of its own, reads each back | `keys`, default 20 |
//! | `survives_a_restart` | writes, restarts the service (on its machine), reads every key back; with `peers` > 0, waits for that many other clients to have written (state `kv-written`), and tells them when it is back (state `kv-restarted`) | `keys`, `peers` (default 0) |
//! | `reads_back_after_a_restart` | the peer side: writes its keys, signals `kv-written`, waits for `kv-restarted`, reads every key back on a new connection | `keys` |
//! | `holds_still_while_paused` | pauses the service, sends a write it cannot answer, resumes it, then reads the answer and the value | |
//! | `faults_need_a_grant` | passes iff a restart is refused for want of the grant (run it where the plan grants no faults) | |
//! | `pings` | `pings` round trips of `PING` on one connection, one after another (the benchmark of TCP from a sandbox) | `pings`, default 1000 |

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ensemble_sdk::prelude::*;

const SERVICE: Param<String> = Param::new("service", "the plan's service to reach").default("kv");
const KEYS: Param<u32> = Param::new("keys", "how many keys a test writes").default("20");
const PINGS: Param<u32> = Param::new("pings", "how many PINGs the test pings sends").default("1000");
const PEERS: Param<u32> =
    Param::new("peers", "other clients survives_a_restart waits for (state kv-written)").default("0");

/// A connection to the service: a line out, a line back.
struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet taken as a line.
    buf: Vec<u8>,
}

impl Conn {
    fn open() -> Result<Conn, Failure> {
        let name = SERVICE.get()?;
        let at = service(&name)?;
        let stream = TcpStream::connect(at.addr())
            .map_err(|e| fail(format!("connecting to {name} at {}: {e}", at.addr())))?;
        Ok(Conn { stream, buf: Vec::new() })
    }

    /// Sends one request line, without waiting for its answer.
    fn send(&mut self, request: &str) -> Result<(), Failure> {
        self.stream
            .write_all(format!("{request}\n").as_bytes())
            .map_err(|e| fail(format!("sending {request:?}: {e}")))
    }

    /// The next answer line.
    fn answer(&mut self) -> Result<String, Failure> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&self.buf[..end]).trim_end().to_string();
                self.buf.drain(..=end);
                return Ok(line);
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).map_err(|e| fail(format!("reading an answer: {e}")))?;
            if n == 0 {
                return Err(fail("the server closed the connection"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn call(&mut self, request: &str) -> Result<String, Failure> {
        self.send(request)?;
        self.answer()
    }
}

/// This instance's keys: its run, role and instance in each.
fn key(i: u32) -> String {
    format!("{}:{}:{}:{i}", run_id(), role(), instance_index())
}

fn write_keys(c: &mut Conn) -> Result<u32, Failure> {
    let keys = KEYS.get()?;
    for i in 0..keys {
        check_eq!(c.call(&format!("SET {} value {i} from {}", key(i), machine()))?, "OK");
    }
    Ok(keys)
}

fn read_keys(c: &mut Conn, keys: u32) -> TestResult {
    for i in 0..keys {
        check_eq!(c.call(&format!("GET {}", key(i)))?, format!("VALUE value {i} from {}", machine()));
    }
    Ok(())
}

fn ping() -> TestResult {
    check_eq!(Conn::open()?.call("PING")?, "PONG");
    Ok(())
}

fn writes_then_reads() -> TestResult {
    let mut c = Conn::open()?;
    let keys = write_keys(&mut c)?;
    read_keys(&mut c, keys)
}

fn survives_a_restart() -> TestResult {
    let name = SERVICE.get()?;
    let mut c = Conn::open()?;
    let keys = write_keys(&mut c)?;
    let peers = PEERS.get()?;
    if peers > 0 {
        // The other clients have written too: restart under all of them.
        sync::barrier("kv-written", u64::from(peers), Duration::from_secs(60))?;
    }
    log::info(format!("{keys} keys written; restarting {name}"));
    fault::restart(&name)?;
    log::info(format!("{name} is ready again"));
    if peers > 0 {
        sync::signal("kv-restarted")?;
    }
    // The old connection died with the old process.
    check!(c.call("PING").is_err(), "the connection from before the restart still answers");
    let mut c = Conn::open()?;
    read_keys(&mut c, keys)
}

fn reads_back_after_a_restart() -> TestResult {
    let mut c = Conn::open()?;
    let keys = write_keys(&mut c)?;
    sync::signal("kv-written")?;
    sync::barrier("kv-restarted", 1, Duration::from_secs(60))?;
    let mut c = Conn::open()?;
    read_keys(&mut c, keys)
}

fn holds_still_while_paused() -> TestResult {
    let name = SERVICE.get()?;
    let mut c = Conn::open()?;
    check_eq!(c.call("PING")?, "PONG");
    fault::pause(&name)?;
    // Sent while it holds still: the bytes wait in its socket.
    let k = key(0);
    c.send(&format!("SET {k} written while paused"))?;
    fault::resume(&name)?;
    check_eq!(c.answer()?, "OK");
    check_eq!(c.call(&format!("GET {k}"))?, "VALUE written while paused");
    Ok(())
}

fn faults_need_a_grant() -> TestResult {
    let name = SERVICE.get()?;
    match fault::restart(&name) {
        Err(FaultError::Denied(why)) => {
            check!(
                why.contains(&format!("faults = [\"{name}\"]")),
                "the refusal does not name the grant: {why}"
            );
            Ok(())
        }
        other => Err(fail(format!("restart without a grant answered {other:?}"))),
    }
}

fn pings() -> TestResult {
    let mut c = Conn::open()?;
    for _ in 0..PINGS.get()? {
        check_eq!(c.call("PING")?, "PONG");
    }
    Ok(())
}

ensemble_sdk::suite! {
    params(SERVICE, KEYS, PEERS, PINGS),
    ping,
    writes_then_reads,
    survives_a_restart,
    reads_back_after_a_restart,
    holds_still_while_paused,
    faults_need_a_grant,
    pings,
}
