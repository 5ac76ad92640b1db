//! A sandboxed suite talking to a service, against a native Rust client
//! doing the same, to the same server on loopback, in one process:
//!
//! - **TCP**: round trips of a line (`PING` → `PONG`) on one connection,
//!   one after another: the `pings` test of `kv-tcp-client` (`std::net`
//!   over `wasi:sockets`) against a `std::net` client;
//! - **HTTP**: `GET /` one after another, a connection each: the `gets`
//!   test of `http-probe` (`wstd` over `wasi:http`, which opens a
//!   connection per request) against a `reqwest` client that keeps no
//!   idle connection.
//!
//! The servers are this process's own (TCP: a thread per connection;
//! HTTP: hyper on the process's tokio runtime), so both clients meet the
//! same one; each figure is the best of three. The `row`
//! lines give the suite's requests per second against the native client's
//! (goal: at least half).
//!
//! `cargo bench -p ensemble-runner --bench service_io`

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ensemble_protocol::Capabilities;
use ensemble_protocol::Outcome;
use ensemble_protocol::service::{Addresses, ServiceAddr};
use ensemble_protocol::wire::{SyncCall, SyncFailure, SyncReply};
use ensemble_runner::sandbox::{Grants, HostPolicy, Sandbox, SandboxOptions, SyncPort, TestEnv};

const PINGS: u32 = 20_000;
const GETS: u32 = 1_000;
const TRIES: usize = 3;

struct NoSync;

#[async_trait]
impl SyncPort for NoSync {
    async fn call(&self, _: SyncCall) -> SyncReply {
        SyncReply::Error { kind: SyncFailure::Invalid, message: "no sync in this bench".into() }
    }
    fn log(&self, _: &str, _: &str, _: &str) {}
    fn attach(&self, _: &str, _: &str, _: Vec<u8>) {}
}

/// Serves `each` on a loopback port, a thread per connection.
fn serve(each: fn(TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let _ = conn.set_nodelay(true);
            std::thread::spawn(move || each(conn));
        }
    });
    addr
}

/// Answers each line `PING` with `PONG`.
fn pong(conn: TcpStream) {
    let mut out = conn.try_clone().unwrap();
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        let answer = if line.trim() == "PING" { "PONG\n" } else { "ERR\n" };
        if out.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// Serves `GET /` with `ok` over HTTP/1.1 (hyper) on a loopback port.
async fn serve_http() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let ok = hyper::service::service_fn(|_| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"ok"),
                    )))
                });
                let builder =
                    hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(tcp), ok).await;
            });
        }
    });
    addr
}

fn native_pings(addr: SocketAddr) -> Duration {
    let began = Instant::now();
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut out = stream.try_clone().unwrap();
    let mut lines = BufReader::new(stream).lines();
    for _ in 0..PINGS {
        out.write_all(b"PING\n").unwrap();
        assert_eq!(lines.next().unwrap().unwrap(), "PONG");
    }
    began.elapsed()
}

async fn native_gets(addr: SocketAddr) -> Duration {
    // Plain HTTP; the builder still wants a TLS provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let url = format!("http://{addr}/");
    let began = Instant::now();
    for _ in 0..GETS {
        let response = client.get(&url).send().await.unwrap();
        assert!(response.status().is_success());
        response.bytes().await.unwrap();
    }
    began.elapsed()
}

/// The test `test` of the suite at `path`, reaching service `name` at
/// `addr`: how long it took (it must pass).
async fn in_sandbox(
    sandbox: &Arc<Sandbox>,
    path: &str,
    test: &str,
    name: &str,
    addr: SocketAddr,
    params: &[(&str, String)],
) -> Duration {
    let suite = sandbox.load(Arc::new(std::fs::read(path).unwrap())).await.unwrap();
    let services: Addresses = BTreeMap::from([(
        name.to_string(),
        vec![ServiceAddr {
            machine: "here".into(),
            host: "127.0.0.1".into(),
            port: Some(addr.port()),
            ports: BTreeMap::new(),
        }],
    )]);
    let caps = Capabilities { net: vec![format!("service:{name}")], ..Capabilities::default() };
    let mut all: BTreeMap<String, String> = params.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    all.insert("service".into(), name.into());
    let env = Arc::new(TestEnv {
        run_id: "bench".into(),
        role: "client".into(),
        instance: 0,
        instance_count: 1,
        machine: "here".into(),
        params: all,
        grants: Grants::within(&caps, &HostPolicy::open(), &services).unwrap(),
        memory_limit: 256 << 20,
        output_limit: 1 << 20,
        attachment_limit: 0,
        test_timeout: Duration::from_secs(600),
        barrier_timeout_ms: 1000,
        sync: Arc::new(NoSync),
    });
    let tests = suite.list(&env).await.unwrap();
    let case = tests.iter().find(|t| t.name == test).unwrap();
    let began = Instant::now();
    let r = suite.run(case, &env).await;
    assert_eq!(r.outcome, Outcome::Passed, "{test}: {r:?}");
    began.elapsed()
}

fn best(mut each: impl FnMut() -> Duration) -> Duration {
    (0..TRIES).map(|_| each()).min().unwrap()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let sandbox =
        Arc::new(Sandbox::new(SandboxOptions { cache_dir: None, ..SandboxOptions::default() }).unwrap());
    let (tcp, http) = (serve(pong), rt.block_on(serve_http()));

    let native = best(|| native_pings(tcp));
    let params = [("pings", PINGS.to_string())];
    let suite = best(|| {
        rt.block_on(in_sandbox(&sandbox, ensemble_artifacts::KV_TCP_CLIENT, "pings", "kv", tcp, &params))
    });
    let rate = |d: Duration, n: u32| f64::from(n) / d.as_secs_f64();
    let (s, n) = (rate(suite, PINGS), rate(native, PINGS));
    println!(
        "row TCP from a suite: {s:.0} round trips/s against a native client's {n:.0}/s = {:.0}% (goal ≥ 50%: {})",
        100.0 * s / n,
        if s >= 0.5 * n { "met" } else { "not met" }
    );

    let native = best(|| rt.block_on(native_gets(http)));
    let params = [("gets", GETS.to_string())];
    let suite = best(|| {
        rt.block_on(in_sandbox(&sandbox, ensemble_artifacts::HTTP_PROBE, "gets", "web", http, &params))
    });
    let (s, n) = (rate(suite, GETS), rate(native, GETS));
    println!(
        "row HTTP from a suite: {s:.0} requests/s against a native client's {n:.0}/s = {:.0}% (goal ≥ 50%: {})",
        100.0 * s / n,
        if s >= 0.5 * n { "met" } else { "not met" }
    );
}
