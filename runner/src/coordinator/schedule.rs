//! Schedules: the coordinator runs a stored plan by itself at the times of
//! its `[[schedule]]`s (cron expressions read in a timezone).
//!
//! One rule fires them, at start and while running: a schedule's record
//! holds the last fire time it ran for (a new schedule starts from the time
//! its plan was saved); when the latest fire time at or before now is later
//! than that, the plan runs once and the record moves to it. So a schedule
//! fires on time while the server is up, and times missed while it was down
//! run once — not once each — when it starts. A run that cannot start
//! because its machines are not there (yet: after a restart they reconnect)
//! is tried again until the plan's queue timeout; then the schedule's
//! status says why.
//!
//! The plan format (`Plan::problems`) checks a schedule's shape; the cron
//! syntax and the timezone name are checked here, where the cron parser
//! and the timezone database are (the browser build does without them), when
//! a plan is saved or run.

use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use ensemble_protocol::api::{ErrorKind, RunRequest, ScheduleStatus, StoredPlan};
use ensemble_protocol::{Plan, Problem, Schedule};
use tokio_util::sync::CancellationToken;

use super::{Coordinator, internal};
use crate::store::ScheduleRecord;
use crate::time::now_us;

/// The longest the scheduler sleeps before it looks again (a wall clock
/// that jumps is noticed within this).
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// A schedule, parsed.
#[derive(Debug)]
pub struct Parsed {
    cron: Cron,
    tz: Tz,
}

/// How far ahead a schedule must fire at least once: past this it is
/// taken for one that never fires (`0 0 30 2 *`), which a cron library
/// searches for long before it gives up. Eight years hold every 29th of
/// February and every weekday of every date.
const MUST_FIRE_WITHIN_YEARS: i32 = 8;

fn parse_cron(s: &Schedule) -> Result<Cron, String> {
    let parser = CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed).build();
    let cron = parser.parse(s.cron.trim()).map_err(|e| {
        format!("{:?} is not a cron expression ({e}); e.g. \"0 2 * * *\" is 02:00 every day", s.cron)
    })?;
    // Searched once here, bounded, so that no later evaluation spins.
    let from = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single().expect("a valid date");
    let until = from + chrono::Duration::days(366 * i64::from(MUST_FIRE_WITHIN_YEARS));
    match cron.find_next_occurrence(&from, false) {
        Ok(t) if t <= until => Ok(cron),
        _ => Err(format!(
            "{:?} never fires (no time matches it in {MUST_FIRE_WITHIN_YEARS} years); e.g. \"0 2 * * *\" is 02:00 every day",
            s.cron
        )),
    }
}

fn parse_timezone(s: &Schedule) -> Result<Tz, String> {
    Tz::from_str(s.timezone.trim()).map_err(|_| {
        format!("{:?} is not a timezone; write an IANA name such as \"UTC\" or \"Europe/Berlin\"", s.timezone)
    })
}

/// Parses a schedule.
pub fn parse(s: &Schedule) -> Result<Parsed, String> {
    Ok(Parsed { cron: parse_cron(s)?, tz: parse_timezone(s)? })
}

/// How many fire times of an expression are looked at for the shortest
/// gap between two: a cron's fields are independent lists, so its closest
/// pair of times shows within its first few dozen.
const GAPS_LOOKED_AT: usize = 64;

/// The schedules of `plan` that would fire more often than once every
/// `min` (the server's `--min-schedule-interval`), at their field paths.
pub fn interval_problems(plan: &Plan, min: Duration) -> Vec<Problem> {
    let mut out = Vec::new();
    let from = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single().expect("a valid date").timestamp_micros();
    for (i, s) in plan.schedule.iter().enumerate() {
        let Ok(parsed) = parse(s) else { continue };
        let mut times = Vec::with_capacity(GAPS_LOOKED_AT);
        let mut t = from;
        while times.len() < GAPS_LOOKED_AT {
            let Some(next) = parsed.next_after(t) else { break };
            times.push(next);
            t = next;
        }
        let gap = times.windows(2).map(|w| w[1] - w[0]).min();
        let min_us = i64::try_from(min.as_micros()).unwrap_or(i64::MAX);
        if let Some(gap) = gap.filter(|g| *g < min_us) {
            out.push(Problem {
                path: format!("schedule[{i}].cron"),
                message: format!(
                    "{:?} fires {} apart, more often than once every {} (the server's --min-schedule-interval)",
                    s.cron,
                    humantime::format_duration(Duration::from_micros(u64::try_from(gap).unwrap_or(0))),
                    humantime::format_duration(min)
                ),
            });
        }
    }
    out
}

/// The plan's schedules' expressions and timezones that do not parse, at
/// their field paths.
pub fn problems(plan: &Plan) -> Vec<Problem> {
    let mut out = Vec::new();
    for (i, s) in plan.schedule.iter().enumerate() {
        if let Err(message) = parse_cron(s) {
            out.push(Problem { path: format!("schedule[{i}].cron"), message });
        }
        if let Err(message) = parse_timezone(s) {
            out.push(Problem { path: format!("schedule[{i}].timezone"), message });
        }
    }
    out
}

fn at(us: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(us.div_euclid(1_000_000), 0).single().unwrap_or_default()
}

impl Parsed {
    /// The first fire time strictly after `us`.
    pub fn next_after(&self, us: i64) -> Option<i64> {
        let from = at(us).with_timezone(&self.tz);
        self.cron.find_next_occurrence(&from, false).ok().map(|t| t.timestamp_micros())
    }

    /// The latest fire time in `(after_us, now_us]`, if any.
    pub fn latest_in(&self, after_us: i64, now_us: i64) -> Option<i64> {
        let now = at(now_us).with_timezone(&self.tz);
        let t = self.cron.find_previous_occurrence(&now, true).ok()?.timestamp_micros();
        (t > after_us).then_some(t)
    }
}

/// Where `s` stands, from its record.
fn status(s: &Schedule, record: Option<&ScheduleRecord>, now: i64) -> ScheduleStatus {
    let parsed = parse(s);
    let last = record.map(|r| r.last_fired_us);
    ScheduleStatus {
        schedule: s.key(),
        next_us: parsed.as_ref().ok().and_then(|p| p.next_after(now.max(last.unwrap_or(now)))),
        last_fired_us: last.filter(|_| record.is_some_and(|r| r.fired)),
        last_run: record.and_then(|r| r.run.clone()),
        error: match parsed {
            Err(e) => Some(e),
            Ok(_) => record.and_then(|r| r.error.clone()),
        },
    }
}

impl Coordinator {
    /// Fills in where each of the plans' schedules stands.
    pub(super) async fn with_schedules(
        &self,
        mut plans: Vec<StoredPlan>,
    ) -> Result<Vec<StoredPlan>, ensemble_protocol::api::ApiError> {
        if plans.iter().all(|p| p.plan.schedule.is_empty()) {
            return Ok(plans);
        }
        let records = self.store.call(|s| s.schedule_records()).await.map_err(internal)?;
        let now = now_us();
        for p in &mut plans {
            p.schedules = p
                .plan
                .schedule
                .iter()
                .map(|s| status(s, records.get(&(p.id.clone(), s.key())), now))
                .collect();
        }
        Ok(plans)
    }

    /// Wakes the scheduler: a plan was saved or deleted.
    pub(super) fn schedules_changed(&self) {
        self.schedules_changed.notify_one();
    }

    /// Runs the plans' schedules until the coordinator shuts down.
    pub(super) async fn scheduler(core: Weak<Coordinator>, shutdown: CancellationToken) {
        loop {
            let Some(strong) = core.upgrade() else { return };
            let next = match strong.fire_due().await {
                Ok(next) => next,
                Err(e) => {
                    tracing::error!("schedules: {e:#}");
                    None
                }
            };
            let changed = strong.schedules_changed.clone();
            drop(strong);
            let wait = next
                .map(|t| Duration::from_micros(u64::try_from(t - now_us()).unwrap_or(0)))
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = changed.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Starts a run of each schedule that is due (once, however many of
    /// its times passed), and answers when the next one is.
    async fn fire_due(self: &Arc<Self>) -> anyhow::Result<Option<i64>> {
        let (plans, records) = self.store.call(|s| Ok((s.plans()?, s.schedule_records()?))).await?;
        let now = now_us();
        let mut next: Option<i64> = None;
        let mut keep = Vec::new();
        for stored in plans {
            for s in &stored.plan.schedule {
                let key = (stored.id.clone(), s.key());
                keep.push(key.clone());
                let Ok(parsed) = parse(s) else { continue };
                // A schedule first seen counts from when its plan was saved.
                let last = records.get(&key).map_or(stored.updated_us.min(now), |r| r.last_fired_us);
                if !records.contains_key(&key) {
                    let (plan, k) = (key.0.clone(), vec![key.1.clone()]);
                    self.store.call(move |st| st.start_schedule_records(&plan, &k, last)).await?;
                }
                // Never more often than the server allows, whatever was stored.
                let min_us = i64::try_from(self.config.min_schedule_interval.as_micros()).unwrap_or(i64::MAX);
                let fired = records.get(&key).is_some_and(|r| r.fired);
                let too_soon = |due: i64| fired && due - last < min_us;
                // Its next time counts whatever happens to this one (a
                // skipped firing must not put the scheduler to sleep).
                if let Some(t) = parsed.next_after(now) {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
                if let Some(due) = parsed.latest_in(last, now).filter(|&due| !too_soon(due)) {
                    let k = key.clone();
                    if !self.schedules_waiting.lock().expect("schedules lock").insert(key.clone()) {
                        // Its last run still waits for its machines: this
                        // time is skipped, and said so.
                        let why =
                            "skipped: the schedule's previous run was still waiting to start".to_string();
                        tracing::warn!(plan = %stored.id, schedule = %key.1, "{why}");
                        self.store
                            .call(move |st| {
                                st.mark_schedule_fired(&k.0, &k.1, due)?;
                                st.set_schedule_outcome(&k.0, &k.1, due, None, Some(why))
                            })
                            .await?;
                        continue;
                    }
                    self.store.call(move |st| st.mark_schedule_fired(&k.0, &k.1, due)).await?;
                    tracing::info!(plan = %stored.id, schedule = %key.1, "schedule fired");
                    let core = self.clone();
                    let limit = stored.plan.settings.queue_timeout.0;
                    self.tasks.spawn(async move {
                        let waiting = key.clone();
                        core.clone().start_scheduled(key.0, key.1, due, limit).await;
                        core.schedules_waiting.lock().expect("schedules lock").remove(&waiting);
                    });
                }
            }
        }
        self.store.call(move |st| st.keep_schedule_records(&keep)).await?;
        Ok(next)
    }

    /// Starts the run of a schedule's fire time; while its machines cannot
    /// take it, tries again each time the machines change (one joins,
    /// leaves, is drained or takes work), up to `limit` — never on a timer,
    /// so a schedule whose plan cannot be placed costs nothing while it
    /// waits; records the run or why none.
    async fn start_scheduled(self: Arc<Self>, plan: String, key: String, due: i64, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let mut machines = self.machines.subscribe();
        let outcome = loop {
            machines.borrow_and_update();
            let req = RunRequest { plan_id: Some(plan.clone()), ..RunRequest::default() };
            match self.start_run_scheduled(req, Some(key.clone())).await {
                Ok(created) => break Ok(created.id),
                Err(e) if e.kind() == ErrorKind::Unsatisfiable && tokio::time::Instant::now() < deadline => {
                    tokio::select! {
                        _ = self.shutdown.cancelled() => break Err(e.message().to_string()),
                        changed = machines.changed() => if changed.is_err() {
                            break Err(e.message().to_string());
                        },
                        () = tokio::time::sleep_until(deadline) => break Err(e.message().to_string()),
                    }
                }
                Err(e) => break Err(e.message().to_string()),
            }
        };
        let (run, error) = match outcome {
            Ok(run) => {
                tracing::info!(plan = %plan, schedule = %key, run = %run, "scheduled run started");
                (Some(run), None)
            }
            Err(why) => {
                tracing::warn!(plan = %plan, schedule = %key, "scheduled run did not start: {why}");
                (None, Some(why))
            }
        };
        // Only onto the record of this fire time: a later one may have
        // fired meanwhile.
        let _ = self.store.call(move |st| st.set_schedule_outcome(&plan, &key, due, run, error)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(cron: &str, tz: &str) -> Parsed {
        parse(&Schedule { cron: cron.into(), timezone: tz.into() }).unwrap()
    }

    fn us(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp_micros()
    }

    #[test]
    fn fire_times_are_read_in_the_schedules_timezone() {
        let daily = sched("0 2 * * *", "Europe/Berlin");
        // 02:00 in Berlin in winter is 01:00 UTC.
        assert_eq!(daily.next_after(us("2026-01-10T12:00:00Z")), Some(us("2026-01-11T01:00:00Z")));
        // And in summer 00:00 UTC.
        assert_eq!(daily.next_after(us("2026-07-10T12:00:00Z")), Some(us("2026-07-11T00:00:00Z")));
        let utc = sched("0 2 * * *", "UTC");
        assert_eq!(utc.next_after(us("2026-01-10T12:00:00Z")), Some(us("2026-01-11T02:00:00Z")));
        // Seconds, when given.
        let every2 = sched("*/2 * * * * *", "UTC");
        assert_eq!(every2.next_after(us("2026-01-10T12:00:00.500Z")), Some(us("2026-01-10T12:00:02Z")));
    }

    #[test]
    fn missed_times_fire_once_at_the_latest() {
        let daily = sched("0 2 * * *", "UTC");
        let last = us("2026-01-01T02:00:00Z");
        // Three days missed: one firing, for the latest.
        assert_eq!(daily.latest_in(last, us("2026-01-04T09:00:00Z")), Some(us("2026-01-04T02:00:00Z")));
        // Nothing missed.
        assert_eq!(daily.latest_in(last, us("2026-01-02T01:59:59Z")), None);
        // On the dot counts.
        assert_eq!(daily.latest_in(last, us("2026-01-02T02:00:00Z")), Some(us("2026-01-02T02:00:00Z")));
    }

    #[test]
    fn bad_expressions_and_zones_are_named() {
        let plan: Plan = serde_json::from_value(serde_json::json!({
            "name": "p",
            "schedule": [{"cron": "61 * * * *"}, {"cron": "0 2 * * *", "timezone": "Mars/Olympus"}],
        }))
        .unwrap();
        let problems = problems(&plan);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].path, "schedule[0].cron");
        assert!(problems[0].message.contains("61 * * * *"), "{}", problems[0].message);
        assert_eq!(problems[1].path, "schedule[1].timezone");
        assert!(problems[1].message.contains("Mars/Olympus"), "{}", problems[1].message);
    }

    #[test]
    fn schedules_that_fire_too_often_are_refused_at_their_field() {
        let plan: Plan = serde_json::from_value(serde_json::json!({
            "name": "p",
            "schedule": [{"cron": "* * * * * *"}, {"cron": "0 0,1 * * * *"}, {"cron": "0 2 * * *"}, {"cron": "0 */5 * * * *"}],
        }))
        .unwrap();
        let problems = interval_problems(&plan, Duration::from_secs(60));
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["schedule[0].cron"], "{problems:?}");
        assert!(
            problems[0].message.contains("fires 1s apart")
                && problems[0].message.contains("--min-schedule-interval")
        );
        let problems = interval_problems(&plan, Duration::from_secs(120));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(interval_problems(&plan, Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn schedules_that_never_fire_are_refused_at_once() {
        for never in ["0 0 30 2 *", "0 0 31 4 *", "0 0 31 2,4,6 *"] {
            let started = std::time::Instant::now();
            let err = parse(&Schedule { cron: never.into(), timezone: "UTC".into() }).unwrap_err();
            assert!(err.contains("never fires"), "{err}");
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "{never}: {:?}",
                started.elapsed()
            );
        }
        // Rare is not never: the 29th of February, Friday the 13th.
        sched("0 0 29 2 *", "UTC");
        sched("0 0 13 * 5", "UTC");
    }
}
