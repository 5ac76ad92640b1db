//! A run's failures, run again: the plan of a rerun, from the plan of a
//! finished run and its events.

use std::collections::{BTreeMap, BTreeSet};

use ensemble_protocol::{Event, EventKind, Plan};

/// `plan` narrowed to what did not pass in `events`: each entry to the
/// tests of its role that failed, timed out, crashed or were lost; an
/// entry whose shard failed before its tests could report runs whole; the
/// entries whose suites use sync (`uses_sync`) run whole together when
/// any of them did not pass, since their tests wait for each other; the
/// other entries are left out. Err when everything passed.
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
    for (entry, &sync) in plan.entries.iter().zip(uses_sync) {
        let role = entry.role_name();
        if (sync && coordinating_missed) || whole.contains(role.as_str()) {
            rerun.entries.push(entry.clone());
        } else if let Some(tests) = failed.get(role.as_str()) {
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
}
