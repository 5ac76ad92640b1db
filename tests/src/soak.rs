//! Churn, for as long as asked: a coordinator and several runners (each
//! behind its own [`Proxy`]), runners killed (SIGKILL and SIGTERM),
//! restarted under the same name and partitioned at random, the
//! coordinator itself killed and restarted now and then, and runs of a
//! coordinating plan submitted all the while. Seeded: the seed is printed,
//! and `ENSEMBLE_SOAK_SEED` replays the same draws.
//!
//! At the end, with every fault healed: every run finished with a verdict
//! that its stored events give, no run is left running or queued, every
//! stored event is there once and in order, no test is reported twice, no
//! process is left behind, and the coordinator's memory and open files
//! stayed flat (they are reported).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use ensemble_protocol::api::RunState;
use ensemble_protocol::event::{EventKind, Summary};
use ensemble_protocol::{Event, Verdict};
use serde_json::json;

use crate::proxy::{Fault, Proxy};
use crate::{Proc, Rng, Server, restart_server, start_runner_at, start_server};

const TOKEN: &str = "soak-token";
const SERVER_ARGS: &[&str] = &["--no-local-machine", "--heartbeat-timeout", "3s", "--restart-grace", "5s"];
/// Runs in flight at most (more are not submitted until some end).
const MAX_ACTIVE: usize = 6;

pub struct SoakOptions {
    /// The `bench-parties` example suite's file.
    pub parties: &'static str,
    pub seed: u64,
    pub duration: Duration,
    pub runners: usize,
}

impl SoakOptions {
    /// From `ENSEMBLE_SOAK_SEED` (else a fresh seed) and `duration`.
    pub fn from_env(parties: &'static str, duration: Duration) -> SoakOptions {
        let seed = std::env::var("ENSEMBLE_SOAK_SEED")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos() as u64
            });
        SoakOptions { parties, seed, duration, runners: 4 }
    }
}

/// What happened, for the summary table.
#[derive(Default, Debug)]
pub struct Tally {
    pub submitted: u64,
    pub refused: u64,
    pub verdicts: BTreeMap<String, u64>,
    pub sigkills: u64,
    pub sigterms: u64,
    pub partitions: u64,
    pub coordinator_restarts: u64,
    pub events: u64,
    /// (seconds since start, coordinator incarnation, RSS bytes, open files).
    pub samples: Vec<(u64, u64, u64, usize)>,
}

struct Machine {
    name: String,
    proxy: Proxy,
    proc: Option<Proc>,
    /// Down until then (killed or stopped), then started again.
    back_at: Option<Instant>,
    /// Partitioned until then.
    heal_at: Option<Instant>,
}

/// Runs the soak; panics, naming the seed, when a promise does not hold.
pub async fn soak(opts: SoakOptions) -> Tally {
    let SoakOptions { parties, seed, duration, runners } = opts;
    eprintln!("soak: ENSEMBLE_SOAK_SEED={seed} for {} s with {runners} runners", duration.as_secs());
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    let mut server = start_server(dir.path(), &data, TOKEN, SERVER_ARGS);
    let target: std::net::SocketAddr =
        server.url.trim_start_matches("http://").parse().expect("the server's address");
    let mut machines = Vec::new();
    for i in 0..runners {
        let proxy = Proxy::start(target).await;
        let name = format!("churn-{i}");
        let proc = start(dir.path(), &server, &proxy, &name);
        machines.push(Machine { name, proxy, proc: Some(proc), back_at: None, heal_at: None });
    }
    server.wait_online(runners).await;
    let parties = format!("sha256:{}", server.upload(parties, "parties").await);
    let mut tally = Tally::default();
    let mut runs: Vec<String> = Vec::new();
    // Of those, the ones not seen finished yet.
    let mut open: Vec<String> = Vec::new();
    let began = Instant::now();
    let mut incarnation = 0u64;
    let mut last_restart = Instant::now();
    let mut next_sample = Instant::now();
    let restart_every = (duration / 4).max(Duration::from_secs(25));
    while began.elapsed() < duration {
        let now = Instant::now();
        if now >= next_sample {
            if let (Some(rss), Some(fds)) = (server.proc.rss(), server.proc.open_files()) {
                tally.samples.push((began.elapsed().as_secs(), incarnation, rss, fds));
            }
            next_sample = now + Duration::from_secs(5);
        }
        for m in &mut machines {
            if m.back_at.is_some_and(|t| now >= t) {
                m.back_at = None;
                if let Some(mut old) = m.proc.take() {
                    // A SIGTERMed runner still winding down goes now.
                    old.kill();
                }
                m.proc = Some(start(dir.path(), &server, &m.proxy, &m.name));
            }
            if m.heal_at.is_some_and(|t| now >= t) {
                m.heal_at = None;
                m.proxy.set(Fault::Pass);
            }
        }
        let m = rng.range(0, machines.len() as u64) as usize;
        let roll = rng.range(0, 100);
        let room = roll < 45 && still_open(&server, &mut open).await < MAX_ACTIVE;
        match roll {
            0..45 if room => {
                let rounds = rng.range(3, 25);
                match server.client().start_plan(&plan(&parties, rounds)).await {
                    Ok(created) => {
                        tally.submitted += 1;
                        open.push(created.id.clone());
                        runs.push(created.id);
                    }
                    Err(_) => tally.refused += 1,
                }
            }
            45..60 if machines[m].back_at.is_none() => {
                if let Some(p) = machines[m].proc.as_mut() {
                    p.kill();
                }
                tally.sigkills += 1;
                machines[m].back_at = Some(now + Duration::from_millis(rng.range(0, 3000)));
            }
            60..68 if machines[m].back_at.is_none() => {
                if let Some(p) = machines[m].proc.as_ref() {
                    let pid = rustix::process::Pid::from_child(&p.child);
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                }
                tally.sigterms += 1;
                machines[m].back_at = Some(now + Duration::from_millis(rng.range(500, 4000)));
            }
            68..88 if machines[m].heal_at.is_none() => {
                machines[m].proxy.set(Fault::Blackhole);
                tally.partitions += 1;
                machines[m].heal_at = Some(now + Duration::from_millis(rng.range(300, 7000)));
            }
            88..91 if last_restart.elapsed() >= restart_every => {
                server.proc.kill();
                server = restart_server(dir.path(), &data, &server, SERVER_ARGS);
                tally.coordinator_restarts += 1;
                incarnation += 1;
                last_restart = Instant::now();
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(rng.range(100, 1200))).await;
    }
    // Every fault healed; every machine up.
    for m in &mut machines {
        m.proxy.set(Fault::Pass);
        if m.back_at.take().is_some()
            || m.proc.as_mut().is_none_or(|p| p.child.try_wait().ok().flatten().is_some())
        {
            if let Some(mut old) = m.proc.take() {
                old.kill();
            }
            m.proc = Some(start(dir.path(), &server, &m.proxy, &m.name));
        }
    }
    if let (Some(rss), Some(fds)) = (server.proc.rss(), server.proc.open_files()) {
        tally.samples.push((began.elapsed().as_secs(), incarnation, rss, fds));
    }
    let ended = tokio::time::timeout(Duration::from_secs(300), async {
        while still_open(&server, &mut open).await > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    assert!(ended.is_ok(), "seed {seed}: runs still running 5 minutes after the churn stopped");
    for run in &runs {
        check_run(&server, run, seed, &mut tally).await;
    }
    check_flat(&tally, seed);
    // Nothing is left behind once everything is stopped.
    for m in &mut machines {
        if let Some(mut p) = m.proc.take() {
            p.kill();
        }
    }
    server.proc.kill();
    let left = processes_under(dir.path());
    assert!(left.is_empty(), "seed {seed}: processes left behind: {left:?}");
    print_table(&tally, seed, duration, runners);
    tally
}

fn start(dir: &Path, server: &Server, proxy: &Proxy, name: &str) -> Proc {
    start_runner_at(dir, server, &proxy.url(), name, &["pool=churn"], None, &["--slots", "4"])
}

/// A coordinating plan: two machines meet at `rounds` barriers.
fn plan(parties: &str, rounds: u64) -> ensemble_protocol::Plan {
    let plan = json!({
        "name": "churn",
        "settings": { "test_timeout": "60s", "barrier_timeout": "20s", "queue_timeout": "30s" },
        "profiles": [{ "name": "pair", "labels": { "pool": "churn" }, "count": 2 }],
        "entries": [{ "suite": parties, "profile": "pair", "tests": ["barriers"],
                      "params": { "parties": "2", "rounds": rounds.to_string() } }]
    });
    ensemble_protocol::Plan::from_json(&plan.to_string()).expect("the soak's plan is valid")
}

/// Forgets the runs of `open` that finished; how many are left (those the
/// coordinator cannot be asked about now count as open).
async fn still_open(server: &Server, open: &mut Vec<String>) -> usize {
    let client = server.client();
    let mut left = Vec::new();
    for run in open.drain(..) {
        match client.run(&run).await {
            Ok(meta) if !matches!(meta.state, RunState::Running | RunState::Queued) => {}
            _ => left.push(run),
        }
    }
    *open = left;
    open.len()
}

/// The run's stored events are whole, in order, once each, and its verdict
/// and state are what they say.
async fn check_run(server: &Server, run: &str, seed: u64, tally: &mut Tally) {
    let mut events: Vec<Event> = Vec::new();
    server.client().watch(run, 1, |e| events.push(e)).await.expect("the run's events");
    tally.events += events.len() as u64;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let want: Vec<u64> = (1..=events.len() as u64).collect();
    assert_eq!(seqs, want, "seed {seed}: run {run}'s events are numbered 1.. without gaps or repeats");
    let finished: Vec<&Event> =
        events.iter().filter(|e| matches!(e.kind, EventKind::RunFinished { .. })).collect();
    assert_eq!(finished.len(), 1, "seed {seed}: run {run} finished once");
    let Some(EventKind::RunFinished { summary, shard_errors, cancelled, verdict, .. }) =
        events.last().map(|e| &e.kind)
    else {
        panic!("seed {seed}: run {run}'s last event is its end")
    };
    let mut tested = Summary::default();
    let mut reported: HashMap<(u32, &str), u32> = HashMap::new();
    let mut released: HashMap<(u32, &str), u32> = HashMap::new();
    for e in &events {
        match &e.kind {
            EventKind::TestFinished { shard, test, outcome, .. } => {
                tested.add(*outcome);
                *reported.entry((shard.shard, test.as_str())).or_default() += 1;
            }
            EventKind::Log { shard, message, .. } if message.starts_with("released ") => {
                *released.entry((shard.shard, message.as_str())).or_default() += 1;
            }
            _ => {}
        }
    }
    let twice: Vec<_> = reported.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "seed {seed}: run {run} reported tests twice: {twice:?}");
    let doubled: Vec<_> = released.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "seed {seed}: run {run} stored a line twice: {doubled:?}");
    assert_eq!(&tested, summary, "seed {seed}: run {run}'s summary is its tests' outcomes");
    assert_eq!(
        Verdict::decide(summary, *shard_errors, cancelled.as_ref()),
        *verdict,
        "seed {seed}: run {run}'s verdict follows from its events"
    );
    let meta = server.client().run(run).await.expect("the run");
    assert_eq!(meta.state, RunState::from(*verdict), "seed {seed}: run {run}'s state is its verdict");
    *tally.verdicts.entry(verdict.to_string()).or_default() += 1;
}

/// Within the coordinator's longest life, its memory and open files at
/// the end are about what they were early on.
fn check_flat(tally: &Tally, seed: u64) {
    let mut lives: BTreeMap<u64, Vec<(u64, usize)>> = BTreeMap::new();
    for &(_, life, rss, fds) in &tally.samples {
        lives.entry(life).or_default().push((rss, fds));
    }
    let Some(longest) = lives.values().max_by_key(|s| s.len()).filter(|s| s.len() >= 8) else { return };
    let quarter = longest.len() / 4;
    let median = |part: &[(u64, usize)], f: fn(&(u64, usize)) -> u64| {
        let mut v: Vec<u64> = part.iter().map(f).collect();
        v.sort_unstable();
        v[v.len() / 2]
    };
    let (early, late) = (&longest[quarter..2 * quarter], &longest[longest.len() - quarter..]);
    let (rss0, rss1) = (median(early, |s| s.0), median(late, |s| s.0));
    let (fds0, fds1) = (median(early, |s| s.1 as u64), median(late, |s| s.1 as u64));
    assert!(
        rss1 <= rss0 + rss0 / 2 + (64 << 20),
        "seed {seed}: coordinator RSS grew from {rss0} to {rss1} bytes"
    );
    assert!(fds1 <= fds0 + fds0 / 4 + 32, "seed {seed}: coordinator open files grew from {fds0} to {fds1}");
}

/// Processes whose command line names `dir` (this soak's servers and
/// runners name their files there).
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let line = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if line.contains(&needle) {
            found.push(format!("{}: {line}", entry.file_name().to_string_lossy()));
        }
    }
    found
}

fn print_table(tally: &Tally, seed: u64, duration: Duration, runners: usize) {
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    println!("\nsoak: seed {seed}, {} s, {runners} runners", duration.as_secs());
    println!("| runs submitted | refused | events checked | verdicts |");
    println!("|---|---|---|---|");
    let verdicts: Vec<String> = tally.verdicts.iter().map(|(v, n)| format!("{v} {n}")).collect();
    println!("| {} | {} | {} | {} |", tally.submitted, tally.refused, tally.events, verdicts.join(", "));
    println!("| runner SIGKILLs | runner SIGTERMs | partitions | coordinator restarts |");
    println!("|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} |",
        tally.sigkills, tally.sigterms, tally.partitions, tally.coordinator_restarts
    );
    println!("| coordinator life | samples | RSS first → last (MiB) | open files first → last |");
    println!("|---|---|---|---|");
    let mut lives: BTreeMap<u64, Vec<&(u64, u64, u64, usize)>> = BTreeMap::new();
    for s in &tally.samples {
        lives.entry(s.1).or_default().push(s);
    }
    for (life, samples) in lives {
        let (first, last) = (samples[0], samples[samples.len() - 1]);
        println!(
            "| {life} ({} s → {} s) | {} | {:.1} → {:.1} | {} → {} |",
            first.0,
            last.0,
            samples.len(),
            mb(first.2),
            mb(last.2),
            first.3,
            last.3
        );
    }
}
