//! Operating Ensemble: health and readiness probes, Prometheus metrics (the
//! server's, behind their token, and a runner's own) that parse and move
//! during runs, and structured JSON logs.

use std::collections::BTreeMap;

use ensemble_protocol::EventKind;
use ensemble_tests::{Server, ensemble_async, start_runner_with, start_server};

const TOKEN: &str = "ops-token";
const METRICS_TOKEN: &str = "scrape-me";

/// Samples of an OpenMetrics text page, by name with labels
/// (`name{a="b"}`), checked line by line: every line is a comment or a
/// sample with a number, and the page ends with `# EOF`.
fn samples(text: &str) -> BTreeMap<String, f64> {
    assert!(text.ends_with("# EOF\n"), "no # EOF at the end:\n{text}");
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            let kind = line.split_whitespace().nth(1).unwrap_or_default();
            assert!(["TYPE", "HELP", "UNIT", "EOF"].contains(&kind), "a comment of no known kind: {line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.starts_with("ensemble_") && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "a bad metric name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')), "{line}");
        }
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
        out.insert(series.to_string(), value);
    }
    out
}

/// `GET url`, where `url` is `http://host:port/path`.
async fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let slash = url["http://".len()..].find('/').map_or(url.len(), |i| i + "http://".len());
    let (base, path) = url.split_at(slash);
    let client = ensemble_client::Client::new(
        base,
        token.map(str::to_string),
        ensemble_client::tls_with_roots(rustls::RootCertStore::empty()),
    )
    .unwrap();
    let resp = client.request(reqwest::Method::GET, path).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn scrape(server: &Server) -> BTreeMap<String, f64> {
    let (status, text) = get(&format!("{}/metrics", server.url), Some(METRICS_TOKEN)).await;
    assert_eq!(status, 200, "{text}");
    samples(&text)
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples.get(series).unwrap_or_else(|| panic!("no {series} in {samples:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_and_metrics_parse_and_move_during_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let server = start_server(
        dir.path(),
        &dir.path().join("data"),
        TOKEN,
        &["--metrics-token", METRICS_TOKEN, "--no-local-machine", "--log-format", "json"],
    );
    let runner = start_runner_with(
        dir.path(),
        &server,
        "worker",
        &["pool=ops"],
        None,
        &["--metrics-listen", "127.0.0.1:0", "--slots", "1"],
    );
    server.wait_online(1).await;

    assert_eq!(get(&format!("{}/healthz", server.url), None).await, (200, "ok\n".to_string()));
    let (status, body) = get(&format!("{}/readyz", server.url), None).await;
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready, serde_json::json!({ "ready": true, "checks": { "machines": "ok", "store": "ok" } }));
    let (status, body) = get(&format!("{}/metrics", server.url), None).await;
    assert_eq!(status, 401, "the metrics token is needed: {body}");

    let before = scrape(&server).await;
    assert_eq!(value(&before, "ensemble_machines{state=\"online\"}"), 1.0);
    assert_eq!(value(&before, "ensemble_runs{state=\"queued\"}"), 0.0);

    // A run through the server: its tests, events and verdict are counted.
    let out = ensemble_async(
        &["run", "suites/plans/basics.toml", "--server", &server.url, "--token", TOKEN],
        &cache,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "basics fails on purpose");
    let after = scrape(&server).await;
    assert!(value(&after, "ensemble_tests_total{outcome=\"passed\"}") >= 5.0, "{after:#?}");
    assert_eq!(value(&after, "ensemble_tests_total{outcome=\"failed\"}"), 2.0);
    assert_eq!(value(&after, "ensemble_runs_finished_total{verdict=\"failed\"}"), 1.0);
    let events = value(&after, "ensemble_events_total");
    assert!(events > value(&before, "ensemble_events_total") + 20.0, "{after:#?}");
    assert_eq!(value(&after, "ensemble_events_stored_total"), events, "every event stored");

    // A run that waits for the busy machine shows as shards pending on its
    // profile: the first holds the only slot, waiting at a barrier for a
    // party that never comes, until it is cancelled.
    let suite = format!("sha256:{}", server.upload(ensemble_artifacts::BENCH_PARTIES, "parties").await);
    let plan = |name: &str, parties: &str| {
        serde_json::json!({
            "name": name,
            "profiles": [{ "name": "workers", "labels": { "pool": "ops" } }],
            "entries": [{
                "suite": suite, "profile": "workers", "tests": ["barriers"],
                "params": { "parties": parties, "rounds": "1" },
            }],
        })
    };
    let client = server.client();
    let long = server.start_run(plan("long", "2")).await;
    server.watch(&long, 1, |e| !matches!(e.kind, EventKind::Sync { .. })).await;
    let waiting = server.start_run(plan("waiting", "1")).await;
    server.watch(&waiting, 1, |e| !matches!(e.kind, EventKind::RunQueued { .. })).await;
    let queued = scrape(&server).await;
    assert_eq!(value(&queued, "ensemble_runs{state=\"queued\"}"), 1.0, "{queued:#?}");
    assert_eq!(value(&queued, "ensemble_runs{state=\"running\"}"), 1.0, "{queued:#?}");
    assert_eq!(value(&queued, "ensemble_shards_pending{plan=\"waiting\",profile=\"workers\"}"), 1.0);
    assert_eq!(value(&queued, "ensemble_machines{state=\"busy\"}"), 1.0);
    // Every metric the deployment files use (the autoscaler's query) is served.
    let mut used = Vec::new();
    for dir in ["deploy/kubernetes", "deploy/systemd"] {
        for file in std::fs::read_dir(ensemble_tests::repo_root().join(dir)).unwrap() {
            let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
            used.extend(
                text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| w.starts_with("ensemble_"))
                    .map(str::to_string),
            );
        }
    }
    assert!(used.iter().any(|m| m == "ensemble_shards_pending"), "{used:?}");
    for name in used {
        assert!(
            queued.keys().any(|k| k.starts_with(&format!("{name}{{"))),
            "{name} is not served: {queued:#?}"
        );
    }
    client.cancel_run(&long).await.unwrap();
    server.events(&waiting).await;
    let done = scrape(&server).await;
    assert!(!done.keys().any(|k| k.starts_with("ensemble_shards_pending")), "{done:#?}");
    assert!(value(&done, "ensemble_barrier_wait_seconds_count") >= 1.0, "{done:#?}");

    // The runner's own metrics: its sandbox's instances and tests.
    let log = runner.log();
    let url = log
        .lines()
        .find_map(|l| l.strip_prefix("ensemble runner: metrics at "))
        .unwrap_or_else(|| panic!("the runner names its metrics address: {log}"))
        .to_string();
    let (status, text) = get(&url, None).await;
    assert_eq!(status, 200, "{text}");
    let own = samples(&text);
    let tests = value(&own, "ensemble_test_duration_seconds_count");
    assert!(tests >= 6.0, "the tests it ran: {tests}");
    assert!(value(&own, "ensemble_instantiate_seconds_count") >= tests - 1.0);

    // JSON logs: one object per line, with the run's id as a field.
    let log = server.proc.log();
    let lines: Vec<serde_json::Value> =
        log.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!lines.is_empty(), "{log}");
    assert!(
        lines.iter().any(|l| l["message"] == "run finished" && l["run"] == serde_json::json!(long)),
        "{log}"
    );
}
