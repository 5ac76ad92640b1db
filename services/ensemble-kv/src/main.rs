//! `ensemble-kv`: a small key/value server, native, over TCP and HTTP — the
//! system under test of Ensemble's demo. A plan starts it as a service on
//! one machine; suites on others write and read through it, and restart,
//! pause and kill it in the middle.
//!
//! ```text
//! ensemble-kv --port 7000 [--http-port 7001] [--bind 0.0.0.0] [--data DIR] [--fsync]
//! ```
//!
//! The TCP protocol is one line a request and one line an answer:
//!
//! | request | answer |
//! |---|---|
//! | `PING` | `PONG` |
//! | `SET key value…` | `OK` (the value is the rest of the line) |
//! | `GET key` | `VALUE value…` or `NONE` |
//! | `DEL key` | `OK` or `NONE` |
//! | `INCR key` | `INT n` (a key that is not a number counts from 0) |
//! | `COUNT` | `INT n`, the number of keys |
//! | anything else | `ERR why` |
//!
//! HTTP (with `--http-port`): `GET /healthz`, `GET /kv/KEY` (200 or 404),
//! `PUT /kv/KEY` with the value as the body (204), `DELETE /kv/KEY`,
//! `POST /kv/KEY/incr` (200, the new count).
//!
//! With `--data DIR` every write is appended to `DIR/kv.log` before it is
//! answered (and synced to disk with `--fsync`), and the log is replayed at
//! start: what was acknowledged survives a restart (and, with `--fsync`, a
//! crash of the machine). Without it the data lives in memory only.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The longest request line (and HTTP body).
const MAX_LINE: usize = 64 << 10;
/// The longest key.
const MAX_KEY: usize = 1024;

struct Options {
    port: u16,
    http_port: Option<u16>,
    bind: String,
    data: Option<PathBuf>,
    fsync: bool,
}

fn usage() -> ! {
    eprintln!("usage: ensemble-kv --port PORT [--http-port PORT] [--bind ADDR] [--data DIR] [--fsync]");
    std::process::exit(64)
}

fn options() -> Options {
    let mut o = Options { port: 0, http_port: None, bind: "127.0.0.1".into(), data: None, fsync: false };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--port" => o.port = value().parse().unwrap_or_else(|_| usage()),
            "--http-port" => o.http_port = Some(value().parse().unwrap_or_else(|_| usage())),
            "--bind" => o.bind = value(),
            "--data" => o.data = Some(PathBuf::from(value())),
            "--fsync" => o.fsync = true,
            "--help" | "-h" => usage(),
            _ => {
                eprintln!("ensemble-kv: unknown argument {a:?}");
                usage()
            }
        }
    }
    o
}

/// The data and its log.
struct Store {
    map: HashMap<String, String>,
    log: Option<File>,
    fsync: bool,
}

/// A write, as the log keeps it.
enum Write1<'a> {
    Set(&'a str, &'a str),
    Del(&'a str),
}

impl Store {
    fn open(data: Option<&PathBuf>, fsync: bool) -> std::io::Result<Store> {
        let mut map = HashMap::new();
        let log = match data {
            None => None,
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                let path = dir.join("kv.log");
                if let Ok(f) = File::open(&path) {
                    let mut replayed = 0usize;
                    for line in BufReader::new(f).split(b'\n') {
                        let line = String::from_utf8_lossy(&line?).into_owned();
                        replayed += 1;
                        if let Some(rest) = line.strip_prefix("S ") {
                            if let Some((k, v)) = rest.split_once('\t') {
                                map.insert(k.to_string(), unescape(v));
                            }
                        } else if let Some(k) = line.strip_prefix("D ") {
                            map.remove(k);
                        }
                    }
                    println!(
                        "ensemble-kv: replayed {replayed} writes from {}: {} keys",
                        path.display(),
                        map.len()
                    );
                }
                Some(OpenOptions::new().create(true).append(true).open(&path)?)
            }
        };
        Ok(Store { map, log, fsync })
    }

    /// Logs a write before it is applied and answered.
    fn record(&mut self, w: Write1<'_>) -> std::io::Result<()> {
        let Some(log) = self.log.as_mut() else { return Ok(()) };
        let line = match w {
            Write1::Set(k, v) => format!("S {k}\t{}\n", escape(v)),
            Write1::Del(k) => format!("D {k}\n"),
        };
        log.write_all(line.as_bytes())?;
        if self.fsync {
            log.sync_data()?;
        }
        Ok(())
    }

    fn set(&mut self, k: &str, v: &str) -> std::io::Result<()> {
        self.record(Write1::Set(k, v))?;
        self.map.insert(k.to_string(), v.to_string());
        Ok(())
    }

    fn del(&mut self, k: &str) -> std::io::Result<bool> {
        if !self.map.contains_key(k) {
            return Ok(false);
        }
        self.record(Write1::Del(k))?;
        self.map.remove(k);
        Ok(true)
    }

    fn incr(&mut self, k: &str) -> std::io::Result<i64> {
        let n = self.map.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0).saturating_add(1);
        self.set(k, &n.to_string())?;
        Ok(n)
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n").replace('\t', "\\t")
}

fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

fn key_problem(k: &str) -> Option<String> {
    if k.is_empty() {
        Some("no key".into())
    } else if k.len() > MAX_KEY {
        Some(format!("the key is over {MAX_KEY} bytes"))
    } else if k.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("a key has no spaces or control characters".into())
    } else {
        None
    }
}

/// One request line's answer.
fn answer(store: &Mutex<Store>, line: &str) -> String {
    let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
    let mut s = store.lock().unwrap_or_else(|p| p.into_inner());
    let failed = |e: std::io::Error| format!("ERR writing the log: {e}");
    match cmd.to_ascii_uppercase().as_str() {
        "PING" => "PONG".into(),
        "COUNT" => format!("INT {}", s.map.len()),
        "SET" => {
            let (k, v) = rest.split_once(' ').unwrap_or((rest, ""));
            if let Some(why) = key_problem(k) {
                return format!("ERR {why}");
            }
            s.set(k, v).map_or_else(failed, |()| "OK".into())
        }
        "GET" | "DEL" | "INCR" if key_problem(rest).is_some() => {
            format!("ERR {}", key_problem(rest).unwrap_or_default())
        }
        "GET" => s.map.get(rest).map_or_else(|| "NONE".into(), |v| format!("VALUE {v}")),
        "DEL" => s.del(rest).map_or_else(failed, |had| if had { "OK" } else { "NONE" }.into()),
        "INCR" => s.incr(rest).map_or_else(failed, |n| format!("INT {n}")),
        "" => "ERR an empty request".into(),
        other => format!("ERR unknown request {other:?}; try PING, SET, GET, DEL, INCR or COUNT"),
    }
}

fn serve_tcp(stream: TcpStream, store: Arc<Mutex<Store>>) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.by_ref().take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE {
            out.write_all(format!("ERR a request is at most {MAX_LINE} bytes\n").as_bytes())?;
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        if text.eq_ignore_ascii_case("QUIT") {
            return Ok(());
        }
        let reply = answer(&store, text);
        out.write_all(format!("{reply}\n").as_bytes())?;
    }
}

/// One HTTP request (then the connection closes).
fn serve_http(stream: TcpStream, store: Arc<Mutex<Store>>) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream).take(MAX_LINE as u64 * 2);
    let mut head = String::new();
    reader.read_line(&mut head)?;
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let respond = |out: &mut TcpStream, status: &str, body: &str| {
        let text = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        out.write_all(text.as_bytes())
    };
    if length > MAX_LINE {
        return respond(&mut out, "413 Payload Too Large", "the value is too large\n");
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body).into_owned();
    if path == "/healthz" {
        return respond(&mut out, "200 OK", "ok\n");
    }
    let Some(key) = path.strip_prefix("/kv/") else {
        return respond(&mut out, "404 Not Found", "try /healthz or /kv/KEY\n");
    };
    let (key, incr) = match key.strip_suffix("/incr") {
        Some(k) => (k, true),
        None => (key, false),
    };
    if let Some(why) = key_problem(key) {
        return respond(&mut out, "400 Bad Request", &format!("{why}\n"));
    }
    let mut s = store.lock().unwrap_or_else(|p| p.into_inner());
    let (status, text) = match (method, incr) {
        ("GET", false) => match s.map.get(key) {
            Some(v) => ("200 OK", v.clone()),
            None => ("404 Not Found", String::new()),
        },
        ("PUT", false) => match s.set(key, &body) {
            Ok(()) => ("204 No Content", String::new()),
            Err(e) => ("500 Internal Server Error", format!("writing the log: {e}\n")),
        },
        ("DELETE", false) => match s.del(key) {
            Ok(true) => ("204 No Content", String::new()),
            Ok(false) => ("404 Not Found", String::new()),
            Err(e) => ("500 Internal Server Error", format!("writing the log: {e}\n")),
        },
        ("POST", true) => match s.incr(key) {
            Ok(n) => ("200 OK", n.to_string()),
            Err(e) => ("500 Internal Server Error", format!("writing the log: {e}\n")),
        },
        _ => ("405 Method Not Allowed", "GET, PUT or DELETE /kv/KEY; POST /kv/KEY/incr\n".into()),
    };
    drop(s);
    respond(&mut out, status, &text)
}

fn accept(listener: TcpListener, store: Arc<Mutex<Store>>, http: bool) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let store = store.clone();
        std::thread::spawn(move || {
            let _ = if http { serve_http(stream, store) } else { serve_tcp(stream, store) };
        });
    }
}

fn main() {
    let o = options();
    let store = match Store::open(o.data.as_ref(), o.fsync) {
        Ok(s) => Arc::new(Mutex::new(s)),
        Err(e) => {
            eprintln!("ensemble-kv: opening the data: {e}");
            std::process::exit(1);
        }
    };
    let bind = |port: u16| match TcpListener::bind((o.bind.as_str(), port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ensemble-kv: listening on {}:{port}: {e}", o.bind);
            std::process::exit(1);
        }
    };
    let tcp = bind(o.port);
    let http = o.http_port.map(bind);
    let shown = |l: &TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    match &http {
        Some(h) => println!("ensemble-kv: ready on {} (http {})", shown(&tcp), shown(h)),
        None => println!("ensemble-kv: ready on {}", shown(&tcp)),
    }
    let _ = std::io::stdout().flush();
    if let Some(h) = http {
        let store = store.clone();
        std::thread::spawn(move || accept(h, store, true));
    }
    accept(tcp, store, false);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_was_acknowledged_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("ensemble-kv-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let store = Mutex::new(Store::open(Some(&dir), true).unwrap());
            assert_eq!(answer(&store, "SET a one two\tthree"), "OK");
            assert_eq!(answer(&store, "SET b 2"), "OK");
            assert_eq!(answer(&store, "INCR n"), "INT 1");
            assert_eq!(answer(&store, "INCR n"), "INT 2");
            assert_eq!(answer(&store, "DEL b"), "OK");
            assert_eq!(answer(&store, "DEL b"), "NONE");
            assert!(answer(&store, "SET").starts_with("ERR"));
            assert!(answer(&store, "FLY").starts_with("ERR unknown"));
        }
        let store = Mutex::new(Store::open(Some(&dir), false).unwrap());
        assert_eq!(answer(&store, "GET a"), "VALUE one two\tthree");
        assert_eq!(answer(&store, "GET b"), "NONE");
        assert_eq!(answer(&store, "GET n"), "VALUE 2");
        assert_eq!(answer(&store, "COUNT"), "INT 2");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
