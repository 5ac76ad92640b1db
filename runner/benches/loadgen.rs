//! ensemble-loadgen: many simulated machines against one real coordinator.
//!
//! Starts `ensemble serve` (this build's binary, its own process), then N
//! simulated machines in this process, each a real WebSocket speaking the
//! machine protocol (hello, pongs, its assigned shard's events with their
//! sequence numbers, shard-done), plus W watchers following the run's event
//! stream. One distributed run gives every machine one shard; each machine
//! streams E log events for it, at R events/s (0: as fast as the
//! coordinator takes them). Prints the ingest rate (events stored and
//! received by every watcher per second, first to last; and the rate the
//! coordinator accepted them, by its own stamps), the fan-out latency to the
//! watchers (coordinator stamp to watcher receipt, p50/p99; one clock, one
//! host) and the coordinator's peak RSS.
//!
//! ```sh
//! cargo bench -p ensemble-runner --bench loadgen -- --machines 1000 --events 200 --watchers 2
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ensemble_protocol::api::routes;
use ensemble_protocol::wire::{Assignment, Facts, FromMachine, MachineInfo, ToMachine};
use ensemble_protocol::{Event, EventKind, PROTOCOL_VERSION, Summary};
use ensemble_tests::{Client, start_bench_server};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug)]
struct Args {
    machines: usize,
    events: u64,
    /// Events per second per machine; 0 for unpaced.
    rate: f64,
    watchers: usize,
}

impl Args {
    fn parse() -> Args {
        // The defaults are the ingest goal's case: 100,000 events from 1,000
        // machines, fanned out to a watcher.
        let mut a = Args { machines: 1000, events: 100, rate: 0.0, watchers: 1 };
        let argv: Vec<String> = std::env::args().skip(1).collect();
        let mut i = 0;
        while i < argv.len() {
            let value = || argv.get(i + 1).unwrap_or_else(|| panic!("{} needs a value", argv[i])).as_str();
            match argv[i].as_str() {
                "--machines" => a.machines = value().parse().expect("--machines N"),
                "--events" => a.events = value().parse().expect("--events N"),
                "--rate" => a.rate = value().parse().expect("--rate EVENTS_PER_S"),
                "--watchers" => a.watchers = value().parse().expect("--watchers N"),
                // `cargo bench` passes --bench; nothing else is ours.
                _ => {
                    i += 1;
                    continue;
                }
            }
            i += 2;
        }
        a
    }
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

fn text(msg: &FromMachine) -> Message {
    Message::text(serde_json::to_string(msg).unwrap())
}

/// One simulated machine: joins, waits for its shard, streams `events` log
/// events for it (paced at `rate`), ends the shard, and returns once the
/// coordinator acknowledged the end.
async fn machine(client: Client, name: String, events: u64, rate: f64, joined: mpsc::Sender<()>) {
    let ws = client.websocket(routes::MACHINE_JOIN).await.expect("the machine socket");
    let (mut sink, mut stream) = ws.split();
    let hello = FromMachine::Hello {
        protocol: PROTOCOL_VERSION,
        token: None,
        secret: None,
        holding: None,
        instance: None,
        machine: MachineInfo {
            name: name.clone(),
            labels: BTreeMap::new(),
            slots: 4,
            facts: Facts::default(),
            allow_exec: Vec::new(),
        },
    };
    sink.send(text(&hello)).await.unwrap();
    // The writer owns the sink: events come through a bounded channel (the
    // machine waits when the coordinator reads slower), pongs through their
    // own, so the reader never waits behind events.
    let (events_out, mut events_in) = mpsc::channel::<Message>(256);
    let (pong, mut pongs) = mpsc::unbounded_channel::<Message>();
    let writer = tokio::spawn(async move {
        loop {
            let m = tokio::select! {
                biased;
                Some(m) = pongs.recv() => m,
                m = events_in.recv() => match m { Some(m) => m, None => break },
            };
            if sink.send(m).await.is_err() {
                break;
            }
        }
    });
    let (assigned, mut assignment) = mpsc::unbounded_channel::<Assignment>();
    let (done_tx, mut done) = mpsc::unbounded_channel::<()>();
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            let Message::Text(t) = msg else { continue };
            match serde_json::from_str::<ToMachine>(&t).expect("a coordinator message") {
                ToMachine::Welcome { .. } => {
                    let _ = joined.send(()).await;
                }
                ToMachine::Rejected { reason, .. } => panic!("{name} refused: {reason}"),
                ToMachine::Ping { id, coordinator_us } => {
                    let _ = pong.send(text(&FromMachine::Pong { id, coordinator_us, machine_us: now_us() }));
                }
                ToMachine::Assign { assignment } => {
                    let _ = assigned.send(*assignment);
                }
                ToMachine::AckShardDone { .. } => {
                    let _ = done_tx.send(());
                }
                _ => {}
            }
        }
    });
    let a = assignment.recv().await.expect("an assignment");
    let mut out = Emitter { out: events_out, run: a.run.clone(), shard: a.shard.shard, seq: 0 };
    let shard = a.shard;
    out.emit(EventKind::ShardStarted { shard: shard.clone(), tests: vec!["load".into()], filtered_out: 0 })
        .await;
    let started = Instant::now();
    for i in 0..events {
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        out.emit(EventKind::Log {
            shard: shard.clone(),
            test: "load".into(),
            level: "info".into(),
            message: format!("event {i} from {}", shard.machine),
        })
        .await;
    }
    out.emit(EventKind::ShardFinished { shard: shard.clone(), summary: Summary::default(), error: None })
        .await;
    out.out.send(text(&FromMachine::ShardDone { run: a.run.clone(), shard: shard.shard })).await.unwrap();
    done.recv().await.expect("the coordinator acknowledges the shard's end");
    drop(out);
    reader.abort();
    let _ = writer.await;
}

/// A shard's events, numbered from 1 as the protocol wants.
struct Emitter {
    out: mpsc::Sender<Message>,
    run: String,
    shard: u32,
    seq: u64,
}

impl Emitter {
    async fn emit(&mut self, event: EventKind) {
        self.seq += 1;
        let msg = FromMachine::Event {
            run: self.run.clone(),
            shard: self.shard,
            seq: self.seq,
            at_us: now_us(),
            event,
        };
        self.out.send(text(&msg)).await.expect("the writer runs");
    }
}

/// What one watcher saw: log events received, and their latencies (µs).
struct Seen {
    logs: u64,
    latency_us: Vec<i64>,
    first_log_at: i64,
    last_log_at: i64,
    /// This watcher's clock when the first and the last log event came.
    first_received: i64,
    last_received: i64,
}

async fn watcher(client: Client, run: String) -> Seen {
    let mut ws = client.websocket(&routes::run_events(&run, 1)).await.expect("event stream");
    let mut seen = Seen {
        logs: 0,
        latency_us: Vec::new(),
        first_log_at: i64::MAX,
        last_log_at: 0,
        first_received: i64::MAX,
        last_received: 0,
    };
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(t) = msg else { continue };
        let received = now_us();
        let e: Event = serde_json::from_str(&t).unwrap();
        match e.kind {
            EventKind::Log { .. } => {
                seen.logs += 1;
                seen.latency_us.push(received - e.at_us);
                seen.first_log_at = seen.first_log_at.min(e.at_us);
                seen.last_log_at = seen.last_log_at.max(e.at_us);
                seen.first_received = seen.first_received.min(received);
                seen.last_received = received;
            }
            EventKind::RunFinished { .. } => break,
            _ => {}
        }
    }
    seen
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let server = start_bench_server(PathBuf::from(env!("CARGO_BIN_EXE_ensemble")), dir.path());
        let sha = server.upload(ensemble_artifacts::BASICS, "basics").await;
        let (joined_tx, mut joined) = mpsc::channel(args.machines.max(1));
        let mut machines = Vec::new();
        for i in 0..args.machines {
            let (client, tx) = (server.machine_client(), joined_tx.clone());
            machines.push(tokio::spawn(machine(client, format!("sim-{i}"), args.events, args.rate, tx)));
        }
        for _ in 0..args.machines {
            joined.recv().await.expect("every machine is welcomed");
        }
        // One shard per machine: a profile pinned to each.
        let profiles: Vec<_> = (0..args.machines).map(|i| json!({ "name": format!("p{i}"), "machine": format!("sim-{i}") })).collect();
        let entries: Vec<_> = (0..args.machines)
            .map(|i| json!({ "suite": format!("sha256:{sha}"), "profile": format!("p{i}"), "role": format!("r{i}"),
                             "params": { "greeting": "hello" } }))
            .collect();
        let plan = json!({ "name": "loadgen", "type": "distributed", "settings": { "test_timeout": "10m" },
                           "profiles": profiles, "entries": entries });
        let started = Instant::now();
        let run = server.start_run(plan).await;
        let watchers: Vec<_> =
            (0..args.watchers).map(|_| tokio::spawn(watcher(server.client(), run.clone()))).collect();
        for m in machines {
            m.await.expect("a simulated machine");
        }
        let mut seen = Vec::new();
        for w in watchers {
            seen.push(w.await.expect("a watcher"));
        }
        let wall = started.elapsed().as_secs_f64();
        let expected = args.machines as u64 * args.events;
        let mut lat: Vec<i64> = seen.iter().flat_map(|s| s.latency_us.iter().copied()).collect();
        lat.sort_unstable();
        for s in &seen {
            assert_eq!(s.logs, expected, "a watcher missed events");
        }
        // Accepted: by the coordinator's stamps; delivered: stored and
        // received by every watcher, from the first log event to the last.
        let accepted = (seen[0].last_log_at - seen[0].first_log_at).max(1) as f64 / 1e6;
        let first = seen.iter().map(|s| s.first_received).min().unwrap_or(0);
        let last = seen.iter().map(|s| s.last_received).max().unwrap_or(0);
        let delivered = (last - first).max(1) as f64 / 1e6;
        let rss = server.proc.peak_rss().unwrap_or(0) as f64 / (1 << 20) as f64;
        let pace = if args.rate > 0.0 { format!("{} events/s each", args.rate) } else { "unpaced".into() };
        println!(
            "loadgen: {} machines × {} events ({pace}), {} watcher(s): ingest {:.0} events/s \
             ({expected} events stored and at every watcher in {delivered:.2} s; accepted at {:.0} events/s); \
             run start to last event at the watchers {wall:.2} s; fan-out latency p50 {:.2} ms, p99 {:.2} ms; \
             coordinator peak RSS {rss:.0} MB",
            args.machines,
            args.events,
            args.watchers,
            expected as f64 / delivered,
            expected as f64 / accepted,
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
        );
        let rate = expected as f64 / delivered;
        println!(
            "row ingest: {rate:.0} events/s = {:.2}× the 100k events/s goal, RSS {rss:.0} MB = {:.2}× the 500 MB \
             ceiling ({})",
            rate / 100_000.0,
            rss / 500.0,
            if rate >= 100_000.0 && rss < 500.0 { "met" } else { "not met" }
        );
    });
}
