//! A client of a server that speaks the Redis protocol (RESP), run as one of
//! the plan's services: it finds the server through `DB_SERVICE_HOST` and
//! `DB_SERVICE_PORT` (the SDK's `service("db")`) and talks to it over a
//! real TCP connection, which the plan grants with `service:db`.
//!
//! | test | what it does | params |
//! |---|---|---|
//! | `ping` | `PING` answers `+PONG` | `service`, default `db` |
//! | `set_then_get` | writes a key of its own, reads it back | |
//! | `counts_together` | `INCR` on a key every instance shares; sees at least its own increments | `times`, default 10 |
//! | `hold` | waits `hold_ms`, then pings (a test running while the service goes away) | `hold_ms`, default 0 |
//! | `outside_is_refused` | passes iff connecting to `outside` (not granted) fails | `outside`, default `127.0.0.1:9` |

use std::io::{Read, Write};
use std::net::TcpStream;

use ensemble_sdk::prelude::*;

const SERVICE: Param<String> = Param::new("service", "the plan's service to reach").default("db");
const TIMES: Param<u32> = Param::new("times", "how many increments counts_together makes").default("10");
const HOLD_MS: Param<u32> = Param::new("hold_ms", "how long hold waits before it pings").default("0");
const OUTSIDE: Param<String> =
    Param::new("outside", "an address the plan does not grant, for outside_is_refused")
        .default("127.0.0.1:9");

/// A connection to the service.
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

    /// Sends one command and reads its reply as text: `+OK`, `:3`, a bulk
    /// string's contents, or `(nil)`.
    fn call(&mut self, args: &[&str]) -> Result<String, Failure> {
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.stream.write_all(req.as_bytes()).map_err(|e| fail(format!("sending {}: {e}", args[0])))?;
        let line = self.line()?;
        match line.as_bytes().first() {
            Some(b'$') => {
                let len: i64 = line[1..].parse().map_err(|_| fail(format!("bad bulk header {line:?}")))?;
                if len < 0 {
                    return Ok("(nil)".into());
                }
                self.line()
            }
            Some(b'-') => Err(fail(format!("{} answered an error: {line}", args[0]))),
            _ => Ok(line),
        }
    }

    /// The next line of the server's answer, without its CRLF.
    fn line(&mut self) -> Result<String, Failure> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 2);
                return Ok(line);
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).map_err(|e| fail(format!("reading a reply: {e}")))?;
            if n == 0 {
                return Err(fail("the server closed the connection"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn ping() -> TestResult {
    let mut c = Conn::open()?;
    check_eq!(c.call(&["PING"])?, "+PONG");
    Ok(())
}

fn set_then_get() -> TestResult {
    let mut c = Conn::open()?;
    let key = format!("{}:{}:{}", run_id(), role(), instance_index());
    let value = format!("written by {} on {}", role(), machine());
    check_eq!(c.call(&["SET", &key, &value])?, "+OK");
    check_eq!(c.call(&["GET", &key])?, value);
    Ok(())
}

fn counts_together() -> TestResult {
    let mut c = Conn::open()?;
    let key = format!("{}:shared-counter", run_id());
    let times = TIMES.get()?;
    let mut last = 0i64;
    for _ in 0..times {
        let reply = c.call(&["INCR", &key])?;
        last = reply.trim_start_matches(':').parse().map_err(|_| fail(format!("INCR answered {reply:?}")))?;
    }
    check!(last >= i64::from(times), "the counter is {last} after {times} increments of this instance alone");
    log::info(&format!("the shared counter is at {last}"));
    Ok(())
}

fn hold() -> TestResult {
    std::thread::sleep(std::time::Duration::from_millis(u64::from(HOLD_MS.get()?)));
    ping()
}

fn outside_is_refused() -> TestResult {
    let outside = OUTSIDE.get()?;
    match TcpStream::connect(&outside) {
        Ok(_) => Err(fail(format!("connected to {outside}, which the plan does not grant"))),
        Err(e) => {
            println!("connecting to {outside} failed as it should: {e}");
            Ok(())
        }
    }
}

ensemble_sdk::suite! {
    params(SERVICE, TIMES, HOLD_MS, OUTSIDE),
    ping,
    set_then_get,
    counts_together,
    hold,
    outside_is_refused,
}
