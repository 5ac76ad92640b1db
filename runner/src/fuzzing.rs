//! Entry points for the fuzz targets in `fuzz/` and for their saved corpora,
//! which `runner/tests/fuzz_corpus.rs` replays on stable in `cargo test`.
//! Each takes arbitrary bytes and must never panic, hang or grow without
//! bound, whatever the bytes say.
//!
//! - [`plan`]: a plan as TOML and as JSON, parsed and validated.
//! - [`wire`]: machine messages (one JSON document per line) decoded and
//!   handed to a live run's [`Dispatcher`], as a hostile machine would send.
//! - [`inspect`]: a suite component inspected by the sandbox.
//! - [`replay`]: the event replay query with arbitrary run, start and limit.
//! - [`depth`]: filters and plans built deep from a short recipe (a fuzzer
//!   rarely writes 10,000 nested brackets by itself): the parsers refuse
//!   what is too deep, and nothing recurses without bound.

use std::sync::{Arc, OnceLock};

use ensemble_protocol::event::{Event, EventKind, Summary};
use ensemble_protocol::wire::{Facts, FromMachine, MachineInfo};
use ensemble_protocol::{Plan, Verdict};
use tokio::sync::mpsc;

use crate::coordinator::matching;
use crate::coordinator::{Dispatcher, Inbound, MachineLink, SuiteRef};
use crate::sandbox::{Sandbox, SandboxOptions};
use crate::store::Store;

/// One runtime for every input: the dispatcher spawns its sync calls on it.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime"))
}

/// A plan as TOML and as JSON.
pub fn plan(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for plan in [Plan::from_toml(text), Plan::from_json(text)].into_iter().flatten() {
        let _ = plan.problems();
        let _ = Plan::from_toml(&plan.to_toml()).expect("a valid plan exports to TOML it reads back");
    }
}

/// Pieces a [`depth`] recipe repeats.
const DEPTH_PIECES: [&str; 12] =
    ["(", ")", "!", "not ", "test(a)", " and ", " or ", "all()", "[", "]", "{a=", "}"];

/// A filter and a plan built from a recipe: pairs of bytes, each a piece
/// of [`DEPTH_PIECES`] and how many times (×4) it repeats.
pub fn depth(data: &[u8]) {
    let mut text = String::new();
    for pair in data.chunks(2) {
        let piece = DEPTH_PIECES[usize::from(pair[0]) % DEPTH_PIECES.len()];
        let times = usize::from(pair.get(1).copied().unwrap_or(1)) * 4 + 1;
        text.push_str(&piece.repeat(times));
        if text.len() > 1 << 20 {
            break;
        }
    }
    if let Ok(filter) = ensemble_protocol::filter::Filter::parse(&text) {
        let tags = ["a".to_string()];
        let facts = ensemble_protocol::filter::TestFacts {
            test: "a",
            tags: &tags,
            role: "r",
            suite: "s",
            profile: "p",
        };
        let _ = filter.matches(&facts);
    }
    // As a filter in a plan, and as a value nested in one.
    let entry = format!(
        "name = \"p\"\n[[profiles]]\nname = \"a\"\n[[entries]]\nsuite = \"x.wasm\"\nprofile = \"a\"\nfilter = {text:?}\n"
    );
    plan(entry.as_bytes());
    plan(format!("name = \"p\"\nx = {text}\n").as_bytes());
    plan(format!("{{\"name\": \"p\", \"entries\": [{{\"params\": {text}}}]}}").as_bytes());
}

/// Machines `m-<tier>` labelled `tier=<tier>`, as the fuzz plan and the
/// dispatcher's unit tests place them.
pub fn tier_machines(tiers: &[&str]) -> Vec<MachineInfo> {
    tiers
        .iter()
        .map(|t| MachineInfo {
            name: format!("m-{t}"),
            labels: [("tier".to_string(), t.to_string())].into(),
            slots: 2,
            facts: Facts::default(),
            allow_exec: Vec::new(),
        })
        .collect()
}

const WIRE_PLAN: &str = r#"
name = "fuzz"
[settings]
fail_fast = true
[[profiles]]
name = "a"
labels = { tier = "a" }
[[profiles]]
name = "b"
labels = { tier = "b" }
[[entries]]
suite = "server.wasm"
profile = "a"
[[entries]]
suite = "client.wasm"
profile = "b"
"#;

/// Machine messages, one per line, from machine 0 or 1 (the line's first
/// byte picks), into a running dispatcher; then the run is ended.
pub fn wire(data: &[u8]) {
    let rt = runtime();
    let _guard = rt.enter();
    let plan = Plan::from_toml(WIRE_PLAN).expect("the fuzz plan is valid");
    let infos = tier_machines(&["a", "b"]);
    let names = vec!["server".to_string(), "client".to_string()];
    let shards = matching::place(&plan, &names, &[], &infos, &[]).expect("the fuzz plan places");
    let links = infos
        .into_iter()
        .map(|info| {
            // What the dispatcher sends is dropped: only its handling counts.
            let (tx, _rx) = mpsc::unbounded_channel();
            MachineLink { info, port: Arc::new(tx) }
        })
        .collect();
    let suites =
        names.iter().map(|n| SuiteRef { name: n.clone(), sha256: n.clone(), uses_sync: false }).collect();
    let mut d = Dispatcher::new("run-fuzz".into(), &plan, suites, links, shards, Vec::new());
    d.start();
    for line in data.split(|b| *b == b'\n') {
        let Some((&who, json)) = line.split_first() else { continue };
        let Ok(msg) = serde_json::from_slice::<FromMachine>(json) else { continue };
        if let FromMachine::Hello { machine, .. } = &msg {
            let _ = machine.check();
        }
        let machine = usize::from(who % 3); // 2 is a machine the run does not have
        let offset = i64::from(who) << 40;
        d.handle(Inbound::Message { machine, msg, clock_offset_us: offset, intake: None });
    }
    d.handle(Inbound::Lost { machine: 0, reason: "fuzz".into() });
    d.handle(Inbound::Lost { machine: 1, reason: "fuzz".into() });
    let result = rt.block_on(d.finish());
    assert!(matches!(result.verdict, Verdict::Passed | Verdict::Failed | Verdict::Cancelled));
}

fn sandbox() -> &'static Arc<Sandbox> {
    static SANDBOX: OnceLock<Arc<Sandbox>> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        let options = SandboxOptions { cache_dir: None, max_instances: 4, ..SandboxOptions::default() };
        Arc::new(Sandbox::new(options).expect("a sandbox"))
    })
}

/// A suite component, inspected (loaded, its tests listed).
pub fn inspect(data: &[u8]) {
    let rt = runtime();
    let _ = rt.block_on(sandbox().inspect(Arc::new(data.to_vec()), "fuzz"));
}

/// The replay target's store, in a temporary directory of its own, made
/// at the first input and removed by [`finish`].
/// (The store first: it closes before its directory goes.)
static REPLAY: std::sync::Mutex<Option<(Store, tempfile::TempDir)>> = std::sync::Mutex::new(None);

fn with_replay_store<T>(f: impl FnOnce(&Store) -> T) -> T {
    let mut held = REPLAY.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (store, _) = held.get_or_insert_with(|| {
        let dir = tempfile::Builder::new()
            .prefix("ensemble-fuzz-replay-")
            .tempdir()
            .expect("a temporary directory");
        let store = Store::open(dir.path()).expect("a store");
        let mut events: Vec<Event> = (1..=50)
            .map(|seq| Event {
                run: "r".into(),
                seq,
                at_us: 0,
                machine_at_us: None,
                kind: EventKind::RunFinished {
                    summary: Summary::default(),
                    duration_ms: seq,
                    shard_errors: 0,
                    cancelled: None,
                    verdict: Verdict::Passed,
                },
            })
            .collect();
        store.write_batch(&mut events, &[]).expect("events stored");
        (store, dir)
    });
    f(store)
}

/// Closes the replay target's store and removes its directory (a corpus
/// replay calls it when done; a fuzzing process that never does leaves it).
pub fn finish() {
    REPLAY.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
}

/// The replay query: run id, first seq and page size from the bytes.
pub fn replay(data: &[u8]) {
    if data.len() < 12 {
        return;
    }
    let from = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    let limit = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
    let run = String::from_utf8_lossy(&data[12..]);
    let page = with_replay_store(|store| store.events_page(&run, from, limit)).expect("the query runs");
    assert!(page.len() <= limit as usize);
    assert!(page.windows(2).all(|w| w[0].seq < w[1].seq), "in order");
}
