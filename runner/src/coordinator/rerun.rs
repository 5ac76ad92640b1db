//! A run's failures, run again: the plan of a rerun, from the plan of a
//! finished run and its events.

use std::collections::{BTreeMap, BTreeSet};

use ensemble_protocol::{Event, EventKind, Plan};

/// The most bytes of failed tests' names a rerun's plan lists.
pub const MAX_NAMED: usize = 1 << 20;

/// How many tests the rerun `rerun` (from [`failures_plan`] of `events`)
/// runs: the tests it names, and for a part it runs whole, the tests its
/// role ran in `events`.
pub fn tests_of(rerun: &Plan, events: &[Event]) -> u32 {
    let mut by_role: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in events {
        if let EventKind::TestFinished { shard, test, .. } = &e.kind {
            by_role.entry(shard.role.as_str()).or_default().insert(test.as_str());
        }
    }
    let count = |entry: &ensemble_protocol::plan::Entry| match &entry.tests {
        Some(named) => named.len(),
        None => by_role.get(entry.role_name().as_str()).map_or(0, BTreeSet::len),
    };
    u32::try_from(rerun.entries.iter().map(count).sum::<usize>()).unwrap_or(u32::MAX)
}

/// `plan` narrowed to what did not pass in `events`: each entry to the
/// tests of its role that failed, timed out, crashed or were lost; an
/// entry whose shard failed before its tests could report runs whole; the
/// entries whose suites use sync (`uses_sync`) run whole together when
/// any of them did not pass, since their tests wait for each other; the
/// other entries are left out. The failed tests' names a rerun lists weigh
/// at most [`MAX_NAMED`] in all: an entry whose names would go past it runs
/// whole, so a rerun's plan is never much larger than its run's. Err when
/// everything passed.
pub fn failures_plan(plan: &Plan, events: &[Event], uses_sync: &[bool]) -> Result<Plan, String> {
    let mut failed: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut whole: BTreeSet<&str> = BTreeSet::new();
    for e in events {
        match &e.kind {
            EventKind::TestFinished { shard, test, outcome, .. } if outcome.is_failure() => {
                failed.entry(shard.role.as_str()).or_default().insert(test.clone());
            }
            EventKind::ShardFinished { shard, error: Some(_), .. } => {
                whole.insert(shard.role.as_str());
            }
            _ => {}
        }
    }
    let missed = |role: &str| whole.contains(role) || failed.contains_key(role);
    let coordinating_missed =
        plan.entries.iter().zip(uses_sync).any(|(e, &sync)| sync && missed(&e.role_name()));
    let mut rerun = plan.clone();
    rerun.entries.clear();
    let mut named = 0usize;
    for (entry, &sync) in plan.entries.iter().zip(uses_sync) {
        let role = entry.role_name();
        let weight = failed.get(role.as_str()).map_or(0, |t| t.iter().map(|n| n.len() + 4).sum::<usize>());
        let too_many = named + weight > MAX_NAMED;
        if (sync && coordinating_missed) || whole.contains(role.as_str()) || (weight > 0 && too_many) {
            rerun.entries.push(entry.clone());
        } else if let Some(tests) = failed.get(role.as_str()) {
            named += weight;
            let mut narrowed = entry.clone();
            narrowed.tests = Some(tests.iter().cloned().collect());
            rerun.entries.push(narrowed);
        }
    }
    if rerun.entries.is_empty() {
        return Err("it has no failed, timed-out, crashed or lost tests to run again".into());
    }
    // The failures are the whole selection now, wherever their part was.
    rerun.settings.partition = None;
    Ok(rerun)
}

#[cfg(test)]
mod tests {
    use ensemble_protocol::{Outcome, ShardRef, Summary};

    use super::*;

    fn plan() -> Plan {
        Plan::from_toml(
            "name = \"p\"\ntype = \"cross-platform\"\n[[profiles]]\nname = \"any\"\n\
             [[entries]]\nsuite = \"a.wasm\"\n[[entries]]\nsuite = \"b.wasm\"\n\
             [[entries]]\nsuite = \"server.wasm\"\n[[entries]]\nsuite = \"client.wasm\"\n",
        )
        .unwrap()
    }

    fn shard(role: &str) -> ShardRef {
        ShardRef { shard: 1, machine: "m".into(), role: role.into(), suite: role.into(), instance: 0 }
    }

    fn finished(role: &str, test: &str, outcome: Outcome) -> Event {
        let kind = crate::coordinator::test_finished(shard(role), test, outcome);
        Event { run: "r".into(), seq: 1, at_us: 1, machine_at_us: None, kind }
    }

    fn tests_of(plan: &Plan) -> Vec<(String, Option<Vec<String>>)> {
        plan.entries.iter().map(|e| (e.role_name(), e.tests.clone())).collect()
    }

    #[test]
    fn a_rerun_takes_exactly_what_did_not_pass() {
        let sync = [false, false, true, true];
        let events = vec![
            finished("a", "ok", Outcome::Passed),
            finished("a", "bad", Outcome::Failed),
            finished("a", "slow", Outcome::TimedOut),
            finished("a", "flaky", Outcome::Flaky),
            finished("a", "skipped", Outcome::Skipped),
            finished("b", "fine", Outcome::Passed),
            finished("server", "serves", Outcome::Passed),
            finished("client", "reads", Outcome::Passed),
        ];
        let rerun = failures_plan(&plan(), &events, &sync).unwrap();
        assert_eq!(tests_of(&rerun), [("a".to_string(), Some(vec!["bad".to_string(), "slow".to_string()]))]);

        // A coordinating side that failed brings its partners, whole.
        let mut with_client = events.clone();
        with_client.push(finished("client", "verifies", Outcome::Lost));
        let rerun = failures_plan(&plan(), &with_client, &sync).unwrap();
        let roles: Vec<_> = tests_of(&rerun);
        assert_eq!(roles[1..], [("server".to_string(), None), ("client".to_string(), None)]);

        // A shard that failed before its tests reported runs whole.
        let mut errored = vec![finished("a", "ok", Outcome::Passed)];
        errored.push(Event {
            run: "r".into(),
            seq: 2,
            at_us: 2,
            machine_at_us: None,
            kind: EventKind::ShardFinished {
                shard: shard("b"),
                summary: Summary::default(),
                error: Some("fetching the suite: gone".into()),
            },
        });
        assert_eq!(tests_of(&failures_plan(&plan(), &errored, &sync).unwrap()), [("b".to_string(), None)]);

        let all_passed = vec![finished("a", "ok", Outcome::Passed)];
        assert!(failures_plan(&plan(), &all_passed, &sync).unwrap_err().contains("no failed"));
    }

    #[test]
    fn a_rerun_names_a_bounded_weight_of_tests_and_runs_the_rest_whole() {
        let sync = [false, false, true, true];
        // Entry a: 20 failures of 1,000 bytes; entry b: 2,000 of 1,000 (2 MB).
        let mut events: Vec<Event> =
            (0..20).map(|i| finished("a", &format!("{i:01000}"), Outcome::Failed)).collect();
        events.extend((0..2000).map(|i| finished("b", &format!("{i:01000}"), Outcome::Failed)));
        let rerun = failures_plan(&plan(), &events, &sync).unwrap();
        let tests = tests_of(&rerun);
        assert_eq!(tests[0].1.as_ref().map(Vec::len), Some(20), "a's failures are named");
        assert_eq!(tests[1], ("b".to_string(), None), "b's would weigh too much: it runs whole");
    }
}
