//! ensemble-kv as a process: it listens where it says, answers over TCP
//! and HTTP, and what it acknowledged is back after it is killed (SIGKILL)
//! and started again on the same data.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

/// A running server and its addresses (TCP, HTTP).
struct Kv {
    child: Child,
    tcp: String,
    http: String,
}

impl Drop for Kv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &std::path::Path) -> Kv {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ensemble-kv"))
        .args(["--port", "0", "--http-port", "0", "--fsync", "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // "ensemble-kv: ready on 127.0.0.1:P (http 127.0.0.1:Q)", after a replay line.
    let ready = loop {
        let line = lines.next().expect("it says it is ready").unwrap();
        if let Some(rest) = line.strip_prefix("ensemble-kv: ready on ") {
            break rest.to_string();
        }
    };
    let (tcp, http) = ready.split_once(" (http ").unwrap();
    Kv { child, tcp: tcp.to_string(), http: http.trim_end_matches(')').to_string() }
}

fn call(stream: &mut TcpStream, reader: &mut BufReader<TcpStream>, request: &str) -> String {
    stream.write_all(format!("{request}\n").as_bytes()).unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nhost: kv\r\ncontent-length: {}\r\n\r\n{body}", body.len())
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, text.split("\r\n\r\n").nth(1).unwrap_or_default().to_string())
}

#[test]
fn it_answers_over_tcp_and_http_and_keeps_what_it_acknowledged_across_a_kill() {
    let dir = std::env::temp_dir().join(format!("ensemble-kv-process-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    {
        let kv = start(&dir);
        let mut s = TcpStream::connect(&kv.tcp).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        assert_eq!(call(&mut s, &mut r, "PING"), "PONG");
        assert_eq!(call(&mut s, &mut r, "SET greeting hello there"), "OK");
        assert_eq!(call(&mut s, &mut r, "INCR hits"), "INT 1");
        assert_eq!(http(&kv.http, "PUT", "/kv/colour", "blue").0, 204);
        assert_eq!(http(&kv.http, "POST", "/kv/hits/incr", "").1, "2");
        assert_eq!(http(&kv.http, "GET", "/kv/greeting", ""), (200, "hello there".to_string()));
        assert_eq!(http(&kv.http, "GET", "/kv/none", "").0, 404);
        assert_eq!(http(&kv.http, "GET", "/healthz", "").0, 200);
        assert!(call(&mut s, &mut r, "NONSENSE").starts_with("ERR unknown request"));
        // Dropped: SIGKILL, no chance to flush anything more.
    }
    let kv = start(&dir);
    let mut s = TcpStream::connect(&kv.tcp).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    assert_eq!(call(&mut s, &mut r, "GET greeting"), "VALUE hello there");
    assert_eq!(call(&mut s, &mut r, "GET colour"), "VALUE blue");
    assert_eq!(call(&mut s, &mut r, "GET hits"), "VALUE 2");
    drop(kv);
    let _ = std::fs::remove_dir_all(&dir);
}
