//! Runs' JSON-lines logs merged into one run, for one report over the
//! parts of a plan that CI jobs ran apart (`--partition`).

use std::path::Path;

use anyhow::{Context, bail};
use ensemble_protocol::{CancelReason, Event, EventKind, Summary, Verdict};

/// The events of a JSON-lines log (`ensemble run --json`), in order. A line
/// that is not an event is named with its file and number.
pub fn read_json_lines(path: &Path) -> anyhow::Result<(String, Vec<Event>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let event = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not an Ensemble event", path.display(), i + 1))?;
        events.push(event);
    }
    Ok((path.display().to_string(), events))
}

/// One run of several: every shard renumbered after the ones before it,
/// the counts added up, the verdict decided again over the whole. Each log
/// must be a whole run (from `run-started` to `run-finished`).
pub fn merge(logs: Vec<(String, Vec<Event>)>) -> anyhow::Result<Vec<Event>> {
    let mut runs = Vec::new();
    let mut plans: Vec<String> = Vec::new();
    let mut shards = Vec::new();
    let mut body = Vec::new();
    let mut summary = Summary::default();
    let (mut started_us, mut finished_us, mut duration_ms) = (i64::MAX, i64::MIN, 0u64);
    let (mut shard_errors, mut cancelled): (u32, Option<CancelReason>) = (0, None);
    let mut offset = 0u32;
    for (name, events) in logs {
        let (mut began, mut finished) = (false, false);
        let mut highest = 0;
        // The outcomes its events show, which its run-finished must claim.
        let mut counted = Summary::default();
        let renumber = |n: u32| {
            n.checked_add(offset)
                .with_context(|| format!("{name}: shard {n} cannot be renumbered after {offset}"))
        };
        for mut e in events {
            if let Some(shard) = e.kind.shard_mut() {
                shard.shard = renumber(shard.shard)?;
                highest = highest.max(shard.shard);
            }
            if let EventKind::TestFinished { outcome, .. } = &e.kind {
                counted.add(*outcome);
            }
            match e.kind {
                EventKind::RunQueued { .. } => {}
                EventKind::RunStarted { plan, shards: these } => {
                    began = true;
                    runs.push(e.run.clone());
                    if !plans.contains(&plan) {
                        plans.push(plan);
                    }
                    started_us = started_us.min(e.at_us);
                    for mut s in these {
                        s.shard.shard = renumber(s.shard.shard)?;
                        highest = highest.max(s.shard.shard);
                        shards.push(s);
                    }
                }
                EventKind::RunFinished {
                    summary: s,
                    duration_ms: d,
                    shard_errors: errors,
                    cancelled: c,
                    ..
                } => {
                    finished = true;
                    if s != counted {
                        bail!(
                            "{name} is inconsistent: its run-finished claims {}, but its test-finished events show {}",
                            s.describe(),
                            counted.describe()
                        );
                    }
                    add(&mut summary, &s);
                    duration_ms = duration_ms.max(d);
                    finished_us = finished_us.max(e.at_us);
                    shard_errors = shard_errors.saturating_add(errors);
                    cancelled = cancelled.or(c);
                }
                _ => body.push(e),
            }
        }
        if !began || !finished {
            let missing = if began { "run-finished" } else { "run-started" };
            bail!("{name} is not a whole run: it has no {missing} (did its job stop early?)");
        }
        offset = highest;
    }
    if runs.is_empty() {
        bail!("no run to merge");
    }
    let run = runs.join("+");
    let verdict = Verdict::decide(&summary, shard_errors, cancelled.as_ref());
    let mut out = Vec::with_capacity(body.len() + 2);
    out.push(Event {
        run: run.clone(),
        seq: 0,
        at_us: started_us,
        machine_at_us: None,
        kind: EventKind::RunStarted { plan: plans.join(" + "), shards },
    });
    out.extend(body);
    out.push(Event {
        run: run.clone(),
        seq: 0,
        at_us: finished_us,
        machine_at_us: None,
        kind: EventKind::RunFinished { summary, duration_ms, shard_errors, cancelled, verdict },
    });
    for (i, e) in out.iter_mut().enumerate() {
        e.run = run.clone();
        e.seq = i as u64 + 1;
    }
    count_filtered_once(&mut out);
    Ok(out)
}

/// The parts of a partitioned plan each filtered out what the others ran:
/// for each role's instance, what none of its parts ran is filtered out,
/// counted once (on its first shard), not once per part.
fn count_filtered_once(events: &mut [Event]) {
    use std::collections::{BTreeMap, BTreeSet};
    // (role, instance) -> (tests it had in all, tests any part ran)
    let mut groups: BTreeMap<(String, u32), (u32, BTreeSet<String>)> = BTreeMap::new();
    for e in events.iter() {
        if let EventKind::ShardStarted { shard, tests, filtered_out } = &e.kind {
            let had = u32::try_from(tests.len()).unwrap_or(u32::MAX).saturating_add(*filtered_out);
            let group = groups.entry((shard.role.clone(), shard.instance)).or_default();
            group.0 = group.0.max(had);
            group.1.extend(tests.iter().cloned());
        }
    }
    let mut counted = BTreeSet::new();
    for e in events.iter_mut() {
        if let EventKind::ShardStarted { shard, filtered_out, .. } = &mut e.kind {
            let key = (shard.role.clone(), shard.instance);
            let (had, ran) = &groups[&key];
            *filtered_out = if counted.insert(key) {
                had.saturating_sub(u32::try_from(ran.len()).unwrap_or(u32::MAX))
            } else {
                0
            };
        }
    }
}

fn add(total: &mut Summary, s: &Summary) {
    for (sum, n) in [
        (&mut total.passed, s.passed),
        (&mut total.failed, s.failed),
        (&mut total.skipped, s.skipped),
        (&mut total.timed_out, s.timed_out),
        (&mut total.crashed, s.crashed),
        (&mut total.flaky, s.flaky),
        (&mut total.lost, s.lost),
        (&mut total.cancelled, s.cancelled),
    ] {
        *sum = sum.saturating_add(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ensemble_protocol::Outcome;
    use ensemble_protocol::event::{ShardInfo, ShardRef};

    fn log(shard: u32, claims: Summary) -> (String, Vec<Event>) {
        let sref = ShardRef { shard, machine: "m".into(), role: "r".into(), suite: "s".into(), instance: 0 };
        let info = ShardInfo {
            shard: sref.clone(),
            profile: "p".into(),
            suite_sha256: "x".into(),
            entry: 0,
            instance_count: 1,
            split: false,
            os: String::new(),
            arch: String::new(),
            service: None,
        };
        let kinds = [
            EventKind::RunStarted { plan: "p".into(), shards: vec![info] },
            EventKind::TestFinished {
                shard: sref,
                test: "t".into(),
                outcome: Outcome::Failed,
                duration_ms: 1,
                attempt: 1,
                message: None,
                output: String::new(),
            },
            EventKind::RunFinished {
                summary: claims,
                duration_ms: 1,
                shard_errors: 0,
                cancelled: None,
                verdict: Verdict::Failed,
            },
        ];
        let events = kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| Event {
                run: "r".into(),
                seq: i as u64 + 1,
                at_us: 0,
                machine_at_us: None,
                kind,
            })
            .collect();
        ("part.jsonl".into(), events)
    }

    #[test]
    fn what_no_part_ran_is_filtered_out_once() {
        let started = |tests: &[&str], filtered_out: u32| {
            let sref =
                ShardRef { shard: 1, machine: "m".into(), role: "r".into(), suite: "s".into(), instance: 0 };
            EventKind::ShardStarted {
                shard: sref,
                tests: tests.iter().map(|t| t.to_string()).collect(),
                filtered_out,
            }
        };
        let mut a = log(1, Summary { failed: 1, ..Summary::default() });
        a.1.insert(
            1,
            Event { run: "r".into(), seq: 0, at_us: 0, machine_at_us: None, kind: started(&["t", "u"], 3) },
        );
        let mut b = log(1, Summary { failed: 1, ..Summary::default() });
        b.1.insert(
            1,
            Event { run: "r".into(), seq: 0, at_us: 0, machine_at_us: None, kind: started(&["v", "w"], 3) },
        );
        let merged = merge(vec![a, b]).unwrap();
        let filtered: Vec<u32> = merged
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::ShardStarted { filtered_out, .. } => Some(*filtered_out),
                _ => None,
            })
            .collect();
        // Five tests in all, four ran across the two parts: one filtered out.
        assert_eq!(filtered, [1, 0]);
    }

    #[test]
    fn inconsistent_or_overflowing_logs_are_refused_never_wrapped() {
        let honest = Summary { failed: 1, ..Summary::default() };
        let merged = merge(vec![log(1, honest), log(1, honest)]).unwrap();
        let Some(EventKind::RunFinished { summary, verdict, .. }) = merged.last().map(|e| &e.kind) else {
            panic!()
        };
        assert_eq!((summary.failed, *verdict), (2, Verdict::Failed));
        // A log claiming counts its events do not show.
        let forged = Summary { failed: u32::MAX - 4, ..Summary::default() };
        let err = merge(vec![log(1, honest), log(1, forged)]).unwrap_err().to_string();
        assert!(err.contains("part.jsonl is inconsistent") && err.contains("4294967291 failed"), "{err}");
        // Shard numbers that would wrap.
        let err = merge(vec![log(u32::MAX, honest), log(2, honest)]).unwrap_err().to_string();
        assert!(err.contains("cannot be renumbered"), "{err}");
    }
}
