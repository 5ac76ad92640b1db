//! Operating Ensemble: health and readiness probes, Prometheus metrics (the
//! server's, behind their token, and a runner's own) that parse and move
//! during runs, and structured JSON logs.

use std::collections::BTreeMap;

use ensemble_protocol::EventKind;
use ensemble_tests::{
    Server, ensemble_async, http_get as get, metric_samples as samples, start_runner_with, start_server,
};

const TOKEN: &str = "ops-token";
const METRICS_TOKEN: &str = "scrape-me";

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
    let own = ensemble_tests::runner_metrics(&runner).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_come_from_flags_then_the_environment_then_the_config_file() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ensemble.toml");
    std::fs::write(
        &config,
        "[serve]\nlisten = \"127.0.0.1:0\"\nname = \"from-file\"\ntoken = \"file-token\"\nlabel = [\"source=file\"]\n\
         join-token = \"file-join\"\n",
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut child = std::process::Command::new(ensemble_tests::ensemble_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--name", "from-flag"])
        .env("ENSEMBLE_TOKEN", "env-token")
        .env("ENSEMBLE_CACHE_DIR", dir.path().join("cache"))
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("ensemble serve: listening on ").expect(&line).to_string();
    let proc = ensemble_tests::Proc { child, log: dir.path().join("serve.log") };
    let client = |token: &str| {
        ensemble_client::Client::new(
            &url,
            Some(token.to_string()),
            ensemble_client::tls_with_roots(rustls::RootCertStore::empty()),
        )
        .unwrap()
    };
    // The environment's token, not the file's; the flag's name, not the
    // file's; the file's labels and listen address, not the defaults.
    assert!(client("file-token").machines().await.unwrap_err().is_unauthorized());
    let machines = client("env-token").machines().await.unwrap();
    assert_eq!(machines.len(), 1, "{machines:?}");
    assert_eq!(machines[0].info.name, "from-flag");
    assert_eq!(machines[0].info.labels.get("source").map(String::as_str), Some("file"));
    drop(proc);

    // A setting that is no flag is refused, naming the file and the key.
    std::fs::write(&config, "[serve]\nlisen = \"127.0.0.1:0\"\n").unwrap();
    let out =
        ensemble_async(&["serve", "--config", config.to_str().unwrap()], &dir.path().join("cache")).await;
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("ensemble.toml: [serve] has no setting \"lisen\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_and_man_pages_come_from_the_command_line_itself() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    for (shell, marker) in
        [("bash", "_ensemble()"), ("zsh", "#compdef ensemble"), ("fish", "complete -c ensemble")]
    {
        let out = ensemble_async(&["completions", shell], &cache).await;
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        assert!(text.contains(marker) && text.contains("serve") && text.contains("join"), "{shell}: {text}");
    }
    let out = ensemble_async(&["man"], &cache).await;
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains(".TH ensemble 1"), "{page}");
    let pages = dir.path().join("man");
    let out = ensemble_async(&["man", "--out-dir", pages.to_str().unwrap()], &cache).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let serve = std::fs::read_to_string(pages.join("ensemble-serve.1")).unwrap();
    assert!(serve.contains("metrics\\-token"), "{serve}");
}

/// `/readyz` says 503 while the store takes no writes (another process
/// holds the database's write lock), naming the check, and 200 again after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_the_store_takes_no_writes_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start_server(dir.path(), &data, TOKEN, &["--no-local-machine"]);
    let readyz = format!("{}/readyz", server.url);
    assert_eq!(get(&readyz, None).await.0, 200);

    let db = rusqlite::Connection::open(data.join("ensemble.db")).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let (status, body) = get(&readyz, None).await;
    assert_eq!(status, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], false, "{body}");
    assert_eq!(ready["checks"]["machines"], "ok", "{body}");
    let store = ready["checks"]["store"].as_str().unwrap();
    assert!(store.starts_with("the store takes no writes") && store.contains("locked"), "{body}");

    db.execute_batch("COMMIT").unwrap();
    let (status, body) = get(&readyz, None).await;
    assert_eq!(status, 200, "{body}");
}
