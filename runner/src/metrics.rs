//! Prometheus metrics of this process (`GET /metrics`, text format).
//!
//! One registry per process: what the coordinator sees (events taken in and
//! stored, tests and runs by how they ended, watchers, barrier waits) and
//! what this process's machine does (sandbox instantiation and test
//! durations: `serve`'s own machine, or a runner with `--metrics-listen`).
//! Counters and histograms are updated where things happen; the gauges of
//! state (machines by state, runs by state, shards waiting per profile) are
//! set from the coordinator when scraped ([`Scrape`]).
//!
//! The names are a contract with dashboards and autoscalers (the Kubernetes
//! example scales runners on `ensemble_shards_pending`): tests check them.

use std::sync::{LazyLock, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label pairs, as the families take them.
type Labels = Vec<(String, String)>;

/// Every metric of the process.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Events numbered by a run's dispatcher (from machines, and its own).
    pub events: Counter,
    /// Events committed to the store.
    pub events_stored: Counter,
    /// Finished tests, by outcome.
    tests: Family<Labels, Counter>,
    /// Finished runs, by verdict.
    runs_finished: Family<Labels, Counter>,
    /// Watchers of runs' event streams (WebSockets) now.
    pub watchers: Gauge,
    /// How long barrier (and signal-and-wait) calls waited, seconds.
    pub barrier_wait: Histogram,
    /// Creating a test's instance in the sandbox, seconds.
    pub instantiate: Histogram,
    /// Running one test attempt on this machine, seconds.
    pub test_duration: Histogram,
    /// Suites this machine was asked to precompile ahead of their runs, by
    /// what came of it.
    precompiled: Family<Labels, Counter>,
    machines: Family<Labels, Gauge>,
    runs: Family<Labels, Gauge>,
    shards_pending: Family<Labels, Gauge>,
    /// What machines said that is not yet handled and stored, bytes.
    intake: Gauge,
    /// Events this process's machines made that their coordinator has not
    /// acknowledged yet (`agent::link::Backlog`), bytes.
    pub unacknowledged: Gauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

fn label(key: &str, value: &str) -> Labels {
    vec![(key.to_string(), value.to_string())]
}

impl Metrics {
    fn new() -> Metrics {
        let seconds = |start: f64, count: u16| Histogram::new(exponential_buckets(start, 2.0, count));
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            events: Counter::default(),
            events_stored: Counter::default(),
            tests: Family::default(),
            runs_finished: Family::default(),
            watchers: Gauge::default(),
            // 100 µs to ~ 27 min.
            barrier_wait: seconds(0.0001, 24),
            // 10 µs to ~ 10 s.
            instantiate: seconds(0.00001, 20),
            // 100 µs to ~ 27 min.
            test_duration: seconds(0.0001, 24),
            precompiled: Family::default(),
            machines: Family::default(),
            runs: Family::default(),
            shards_pending: Family::default(),
            intake: Gauge::default(),
            unacknowledged: Gauge::default(),
        };
        {
            let mut r = m.registry.lock().expect("metrics lock");
            r.register("ensemble_events", "Events numbered by runs' dispatchers", m.events.clone());
            r.register("ensemble_events_stored", "Events committed to the store", m.events_stored.clone());
            r.register("ensemble_tests", "Finished tests, by outcome", m.tests.clone());
            r.register("ensemble_runs_finished", "Finished runs, by verdict", m.runs_finished.clone());
            r.register("ensemble_watchers", "Watchers of runs' event streams now", m.watchers.clone());
            r.register(
                "ensemble_barrier_wait_seconds",
                "How long barrier and signal-and-wait calls waited",
                m.barrier_wait.clone(),
            );
            r.register(
                "ensemble_instantiate_seconds",
                "Creating a test's sandbox instance on this process's machine",
                m.instantiate.clone(),
            );
            r.register(
                "ensemble_test_duration_seconds",
                "One test attempt on this process's machine",
                m.test_duration.clone(),
            );
            r.register(
                "ensemble_suites_precompiled",
                "Suites this process's machine was asked to compile ahead of their runs, by result",
                m.precompiled.clone(),
            );
            r.register(
                "ensemble_machines",
                "Machines known to the coordinator, by state",
                m.machines.clone(),
            );
            r.register("ensemble_runs", "Runs not finished, by state", m.runs.clone());
            r.register(
                "ensemble_shards_pending",
                "Shards of queued runs waiting for machines, by plan and profile (what an autoscaler scales on)",
                m.shards_pending.clone(),
            );
            r.register(
                "ensemble_intake_bytes",
                "What machines sent that is not yet handled and stored, in the intake's room (128 MiB at most)",
                m.intake.clone(),
            );
            r.register(
                "ensemble_unacknowledged_event_bytes",
                "Events this machine's shards made that the coordinator has not stored yet (its tests start while under 64 MiB)",
                m.unacknowledged.clone(),
            );
        }
        m
    }

    /// A test finished with `outcome`.
    pub fn test_finished(&self, outcome: &str) {
        self.tests.get_or_create(&label("outcome", outcome)).inc();
    }

    /// A suite asked to be precompiled ahead of its runs was `result`
    /// (`compiled`, `cached`, `skipped` or `failed`).
    pub fn suite_precompiled(&self, result: &str) {
        self.precompiled.get_or_create(&label("result", result)).inc();
    }

    /// A run finished with `verdict`.
    pub fn run_finished(&self, verdict: &str) {
        self.runs_finished.get_or_create(&label("verdict", verdict)).inc();
    }

    /// The text format of every metric, with the coordinator's state as
    /// `scrape` says (none in a runner).
    pub fn text(&self, scrape: Option<Scrape>) -> String {
        // One scrape at a time: the state gauges are cleared and set anew.
        let registry = self.registry.lock().expect("metrics lock");
        if let Some(s) = scrape {
            self.machines.clear();
            for (state, n) in s.machines {
                self.machines.get_or_create(&label("state", state)).set(n);
            }
            self.runs.clear();
            for (state, n) in s.runs {
                self.runs.get_or_create(&label("state", state)).set(n);
            }
            self.shards_pending.clear();
            for ((plan, profile), n) in s.shards_pending {
                let labels = vec![("plan".to_string(), plan), ("profile".to_string(), profile)];
                self.shards_pending.get_or_create(&labels).set(n);
            }
            self.intake.set(s.intake_bytes);
        }
        let mut out = String::new();
        encode(&mut out, &registry).expect("writing to a String");
        out
    }
}

/// The answer to `GET /metrics`: the process's metrics in the OpenMetrics
/// text format (which Prometheus reads), with the coordinator's state
/// when there is one.
pub fn reply(scrape: Option<Scrape>) -> warp::reply::Response {
    use warp::Reply;
    let text = metrics().text(scrape);
    warp::reply::with_header(
        text,
        "content-type",
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
    )
    .into_response()
}

/// The coordinator's state at a scrape.
#[derive(Debug, Default)]
pub struct Scrape {
    /// Machines by state (every state, zeros too).
    pub machines: Vec<(&'static str, i64)>,
    /// Runs not finished, by state (`running`, `queued`).
    pub runs: Vec<(&'static str, i64)>,
    /// Shards of queued runs, by (plan, profile).
    pub shards_pending: std::collections::BTreeMap<(String, String), i64>,
    /// Room of the intake in use (`coordinator::intake`), bytes.
    pub intake_bytes: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_names_every_metric_and_the_scraped_state() {
        let m = Metrics::new();
        m.test_finished("passed");
        m.test_finished("passed");
        m.run_finished("failed");
        m.suite_precompiled("compiled");
        m.barrier_wait.observe(0.003);
        let mut scrape = Scrape {
            machines: vec![("online", 2), ("offline", 0)],
            runs: vec![("queued", 1)],
            intake_bytes: 4096,
            ..Scrape::default()
        };
        scrape.shards_pending.insert(("kv".into(), "client-box".into()), 3);
        let text = m.text(Some(scrape));
        for line in [
            "ensemble_tests_total{outcome=\"passed\"} 2",
            "ensemble_runs_finished_total{verdict=\"failed\"} 1",
            "ensemble_suites_precompiled_total{result=\"compiled\"} 1",
            "ensemble_machines{state=\"online\"} 2",
            "ensemble_machines{state=\"offline\"} 0",
            "ensemble_runs{state=\"queued\"} 1",
            "ensemble_shards_pending{plan=\"kv\",profile=\"client-box\"} 3",
            "ensemble_barrier_wait_seconds_count 1",
            "ensemble_events_total 0",
            "ensemble_watchers 0",
            "ensemble_intake_bytes 4096",
            "# TYPE ensemble_instantiate_seconds histogram",
        ] {
            assert!(text.contains(line), "{line} is not in\n{text}");
        }
        // A state gone since the last scrape is gone from the text.
        let text = m.text(Some(Scrape::default()));
        assert!(!text.contains("client-box"), "{text}");
    }
}
