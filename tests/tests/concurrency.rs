//! Tests of one shard in fresh instances at once: a suite that does not use
//! sync runs its tests on every core (each still in its own instance, with
//! the same outcomes), `settings.test_threads = 1` runs them one at a time,
//! and a suite that uses sync always runs one at a time. Real `ensemble run`
//! processes; what ran at once is read from the events (a test that starts
//! while another of its shard has not finished).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ensemble_protocol::{Event, EventKind, Outcome};
use ensemble_tests::ensemble_async;

fn events_of(path: &Path) -> Vec<Event> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// What a run's events say: each (role, test)'s outcome, and the tests that
/// started while another test of their shard was running.
struct Seen {
    outcomes: BTreeMap<(String, String), Outcome>,
    overlapped: BTreeSet<String>,
}

fn seen(events: &[Event]) -> Seen {
    let mut running: BTreeMap<u32, BTreeSet<String>> = BTreeMap::new();
    let mut seen = Seen { outcomes: BTreeMap::new(), overlapped: BTreeSet::new() };
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "one sequence without gaps");
        match &e.kind {
            EventKind::TestStarted { shard, test, .. } => {
                let now = running.entry(shard.shard).or_default();
                if !now.is_empty() {
                    seen.overlapped.insert(test.clone());
                }
                assert!(now.insert(test.clone()), "{test} started twice at once");
            }
            EventKind::TestFinished { shard, test, outcome, .. } => {
                running.entry(shard.shard).or_default().remove(test);
                let first = seen.outcomes.insert((shard.role.clone(), test.clone()), *outcome);
                assert!(first.is_none(), "{test} finished twice");
            }
            _ => {}
        }
    }
    assert!(running.values().all(BTreeSet::is_empty), "every test that started finished: {running:?}");
    seen
}

async fn run(dir: &Path, name: &str, plan: &str) -> Vec<Event> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, plan).unwrap();
    let json = dir.join(format!("{name}.jsonl"));
    let out = ensemble_async(
        &["run", path.to_str().unwrap(), "--no-progress", "--json", json.to_str().unwrap()],
        &dir.join("cache"),
    )
    .await;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // basics fails on purpose (fails_check_eq, panics): exit code 1.
    assert!(matches!(out.status.code(), Some(0 | 1)), "{text}");
    events_of(&json)
}

/// `basics` whose `naps` test sleeps 300 ms, with `settings`.
fn basics(settings: &str) -> String {
    format!(
        "name = \"lanes\"\n[settings]\n{settings}\n[[profiles]]\nname = \"here\"\n[[entries]]\nsuite = {:?}\n\
         profile = \"here\"\nparams = {{ greeting = \"hello\", expected = \"hello\", nap_ms = 300 }}\n",
        ensemble_artifacts::BASICS
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_tests_run_at_once_with_the_same_outcomes_and_one_at_a_time_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    let one = seen(&run(dir.path(), "one", &basics("test_threads = 1")).await);
    assert!(one.overlapped.is_empty(), "test_threads = 1 runs one test at a time: {:?}", one.overlapped);
    assert!(
        one.outcomes.iter().any(|((_, test), o)| test == "naps" && *o == Outcome::Passed),
        "{:?}",
        one.outcomes
    );

    let auto = seen(&run(dir.path(), "auto", &basics("")).await);
    assert_eq!(auto.outcomes, one.outcomes, "the same outcome for every test, at once or not");
    if cores > 1 {
        // While `naps` sleeps, the tests after it run on another lane.
        assert!(!auto.overlapped.is_empty(), "{cores} cores, yet no test ran beside another");
    } else {
        assert!(auto.overlapped.is_empty(), "one core: one lane");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tests_of_a_suite_that_uses_sync_run_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let plan = std::fs::read_to_string(ensemble_tests::repo_root().join("suites/plans/kv-sync.toml"))
        .unwrap()
        .replace("\"../examples/kv-server\"", &format!("{:?}", ensemble_artifacts::KV_SERVER))
        .replace("\"../examples/kv-client\"", &format!("{:?}", ensemble_artifacts::KV_CLIENT));
    assert!(!plan.contains("../examples"), "the plan names the built suites:\n{plan}");
    let seen = seen(&run(dir.path(), "kv", &plan).await);
    assert!(seen.outcomes.values().all(|o| *o == Outcome::Passed), "{:?}", seen.outcomes);
    assert!(seen.outcomes.len() > 2, "{:?}", seen.outcomes);
    assert!(
        seen.overlapped.is_empty(),
        "a suite that uses sync runs its tests in order: {:?}",
        seen.overlapped
    );
}
