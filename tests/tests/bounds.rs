//! What a hostile suite, plan or peer can make Ensemble spend is bounded,
//! against real processes: each attack of the bounds round, with the
//! figure that shows the bound (peak RSS, bytes kept, the refusal and its
//! place), and the machine or server still usable after it.

use std::path::Path;

use ensemble_protocol::EventKind;
use ensemble_protocol::api::{RunState, routes};
use ensemble_protocol::event::Outcome;
use ensemble_tests::{FakeMachine, ensemble, start_runner_with, start_server};
use serde_json::json;

const TOKEN: &str = "bounds-token";

/// The outcome and message of `test` in role `role`.
fn finished<'a>(
    events: &'a [ensemble_protocol::Event],
    role: &str,
    test: &str,
) -> Option<(Outcome, &'a str)> {
    events.iter().find_map(|e| match &e.kind {
        EventKind::TestFinished { shard, test: t, outcome, message, .. }
            if shard.role == role && t == test =>
        {
            Some((*outcome, message.as_deref().unwrap_or_default()))
        }
        _ => None,
    })
}

/// Why role `role`'s shard could not run, if it could not.
fn shard_error(events: &[ensemble_protocol::Event], role: &str) -> Option<String> {
    events.iter().find_map(|e| match &e.kind {
        EventKind::ShardFinished { shard, error, .. } if shard.role == role => error.clone(),
        _ => None,
    })
}

/// A plan file in `dir` that runs the suite at `suite` on one profile.
fn plan_of(dir: &Path, suite: &str) -> std::path::PathBuf {
    let file = dir.join("plan.toml");
    let text = format!(
        "name = \"p\"\n[[profiles]]\nname = \"a\"\n[[entries]]\nsuite = {suite:?}\nprofile = \"a\"\n"
    );
    std::fs::write(&file, text).unwrap();
    file
}

/// Bytes of the files under `dir`.
fn disk_use(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => disk_use(&e.path()),
                    _ => e.metadata().map_or(0, |m| m.len()),
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_suites_are_bounded_and_the_machine_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start_server(dir.path(), &data, TOKEN, &["--no-local-machine"]);
    let runner = start_runner_with(dir.path(), &server, "box", &["tier=a"], None, &["--slots", "4"]);
    server.wait_online(1).await;
    let hostile = format!("sha256:{}", server.upload(ensemble_artifacts::HOSTILE, "hostile").await);
    let listing = format!("sha256:{}", server.upload(ensemble_artifacts::HOSTILE_LISTING, "listing").await);
    let syncing = format!("sha256:{}", server.upload(ensemble_artifacts::HOSTILE_SYNC, "syncing").await);
    let disk_before = disk_use(&data);
    let profiles = json!([{ "name": "a", "labels": { "tier": "a" } }]);

    // Listings over the bounds: the shard fails saying which, and nothing
    // it listed travels (a 70 MiB name would not fit in a frame).
    let run = server
        .start_run(json!({
            "name": "listings", "profiles": profiles, "settings": { "test_timeout": "30m" },
            "entries": [
                { "suite": listing, "profile": "a", "role": "huge-name", "params": { "listing": "huge-name" } },
                { "suite": listing, "profile": "a", "role": "many", "params": { "listing": "many" } },
                { "suite": listing, "profile": "a", "role": "long-timeout", "params": { "listing": "long-timeout" } },
                { "suite": listing, "profile": "a", "role": "twice", "params": { "listing": "twice" } },
            ]
        }))
        .await;
    let events = server.events(&run).await;
    let why = shard_error(&events, "huge-name").expect("the huge name is refused");
    assert!(
        why.contains("whose name is 73400320 bytes long") && why.contains("over the limit of 1024"),
        "{why}"
    );
    assert!(why.len() < 400, "the refusal does not carry the name: {} bytes", why.len());
    let why = shard_error(&events, "many").expect("450,000 tests are refused");
    assert!(why.contains("450000 tests, more than the 100000 a suite may list"), "{why}");
    assert_eq!(finished(&events, "long-timeout", "fine").map(|f| f.0), Some(Outcome::Passed));
    // A name is a test's identity: a listing that repeats one is refused.
    let why = shard_error(&events, "twice").expect("a name listed twice is refused");
    assert!(why.contains("the suite lists the test `fine` twice"), "{why}");
    let largest = events.iter().map(|e| serde_json::to_string(e).unwrap().len()).max().unwrap();
    assert!(largest < 64 << 10, "the largest event is {largest} bytes");
    assert_eq!(server.client().run(&run).await.unwrap().state, RunState::Failed);

    // Sync and logs: re-reading a 1 MiB message 1,500 times, 20,000 log
    // lines of 64 KiB, publishing until the run's topics are full, names
    // over the bound. Each test passes only when its bound held.
    let entry = |test: &str| {
        let suite = if test == "log_flood" { &hostile } else { &syncing };
        json!({ "suite": suite, "profile": "a", "role": test, "tests": [test], "params": { "only": test } })
    };
    let run = server
        .start_run(json!({
            "name": "floods", "profiles": profiles, "settings": { "test_timeout": "30m" },
            "entries": [entry("sync_reread"), entry("log_flood"), entry("publish_flood"), entry("long_names")]
        }))
        .await;
    let events = server.events(&run).await;
    for test in ["sync_reread", "log_flood", "publish_flood", "long_names"] {
        let (outcome, message) = finished(&events, test, test).unwrap_or_else(|| panic!("{test} finished"));
        assert_eq!(outcome, Outcome::Passed, "{test}: {message}");
    }
    // The logs kept are the plan's output_limit (1 MiB) and one note.
    let logs: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Log { shard, message, .. } if shard.role == "log_flood" => Some(message.as_str()),
            _ => None,
        })
        .collect();
    let logged: usize = logs.iter().map(|m| m.len()).sum();
    assert!(logged <= 1 << 20, "{logged} bytes of log lines kept");
    assert!(logs.last().unwrap().contains("log cut at 1MiB (the plan's output_limit, per test)"), "{logs:?}");
    let server_peak = server.proc.peak_rss().unwrap_or(0);
    let runner_peak = runner.peak_rss().unwrap_or(0);
    let grown = disk_use(&data).saturating_sub(disk_before);
    eprintln!(
        "server peak RSS {} MB, runner peak RSS {} MB, store grew {} MB",
        server_peak >> 20,
        runner_peak >> 20,
        grown >> 20
    );
    assert!(server_peak < 400 << 20, "the server's peak RSS was {} MB", server_peak >> 20);
    assert!(runner_peak < 700 << 20, "the runner's peak RSS was {} MB", runner_peak >> 20);
    // 64 MiB of topics (the run's bound), ~1 MiB of logs, and the rest small.
    assert!(grown < 200 << 20, "the store grew by {} MB", grown >> 20);

    // The machine is usable after all of it.
    let run = server
        .start_run(json!({
            "name": "after", "profiles": profiles,
            "entries": [{ "suite": hostile, "profile": "a", "tests": ["passes"], "params": { "only": "passes" } }]
        }))
        .await;
    server.events(&run).await;
    assert_eq!(server.client().run(&run).await.unwrap().state, RunState::Passed);

    // A watcher has nothing to say: a large message ends its connection
    // (it took up to 64 MiB a connection before), and others go on.
    use futures::{SinkExt, StreamExt};
    let mut loud = server.client().websocket(&routes::run_events(&run, 1)).await.unwrap();
    let _ = loud.send(tokio_tungstenite::tungstenite::Message::binary(vec![0u8; 1 << 20])).await;
    let ended = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            match loud.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {} // the run's events, replayed
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection of a loud watcher was not ended");
    assert_eq!(server.events(&run).await.len(), server.events(&run).await.len(), "others still watch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plans_are_refused_at_their_field_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start_server(dir.path(), &data, TOKEN, &["--no-local-machine"]);
    let client = server.client();
    let post = |path: &'static str, content_type: &'static str, body: String| {
        let client = client.clone();
        async move {
            let resp = client
                .request(reqwest::Method::POST, path)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let plan = |entry: serde_json::Value, settings: serde_json::Value, schedule: serde_json::Value| {
        json!({
            "name": "hostile", "profiles": [{ "name": "a" }], "settings": settings, "schedule": schedule,
            "entries": [entry]
        })
        .to_string()
    };
    let entry = |filter: &str| json!({ "suite": "x.wasm", "profile": "a", "filter": filter });
    // Filters that overflowed the stack: refused at their field.
    for filter in ["(".repeat(1_500), "!".repeat(10_000), "not ".repeat(3_000)] {
        let body = plan(entry(&filter), json!({}), json!([]));
        for path in [routes::PLANS, routes::RUNS] {
            let body = if path == routes::RUNS {
                json!({ "plan": serde_json::from_str::<serde_json::Value>(&body).unwrap() }).to_string()
            } else {
                body.clone()
            };
            let (status, text) = post(path, "application/json", body).await;
            assert_eq!(status, 422, "{path}: {text}");
            assert!(text.contains("entries[0].filter") && text.contains("nest more than 32 deep"), "{text}");
        }
    }
    let toml = format!(
        "name = \"hostile\"\n[[profiles]]\nname = \"a\"\n[[entries]]\nsuite = \"x.wasm\"\nprofile = \"a\"\nfilter = {:?}\n",
        "(".repeat(1_500)
    );
    let (status, text) = post(routes::PLAN_IMPORT, "application/toml", toml).await;
    assert_eq!(status, 422, "{text}");
    assert!(text.contains("nest more than 32 deep"), "{text}");
    // A duration that overflowed a deadline, a cron that never fires, a
    // schedule firing every second (the server's minimum is a minute).
    for (settings, schedule, says) in [
        (json!({ "queue_timeout": "300000000000y" }), json!([]), &["settings.queue_timeout"][..]),
        (json!({}), json!([{ "cron": "0 0 30 2 *" }]), &["schedule[0].cron", "never fires"]),
        (json!({}), json!([{ "cron": "* * * * * *" }]), &["schedule[0].cron", "--min-schedule-interval"]),
    ] {
        let (status, text) =
            post(routes::PLANS, "application/json", plan(entry("all()"), settings, schedule)).await;
        assert_eq!(status, 422, "{text}");
        assert!(says.iter().all(|s| text.contains(s)), "{says:?}: {text}");
    }
    // No run was stored for any of them, and the server is up.
    assert!(client.runs().await.unwrap().is_empty());
    client.health().await.expect("the server is up");

    // No other site may frame the app or the API's answers.
    for path in ["/", routes::PLANS] {
        let resp = client.request(reqwest::Method::GET, path).send().await.unwrap();
        let header = |name: &str| {
            resp.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
        };
        assert_eq!(header("x-frame-options"), "SAMEORIGIN", "{path}");
        assert!(header("content-security-policy").contains("frame-ancestors 'self'"), "{path}");
    }
    // The store is the owner's alone.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("ensemble.db")), 0o600);
    }

    // The same filters given to `ensemble run -E`: a located error, exit 2.
    let plan_file = plan_of(dir.path(), ensemble_artifacts::BASICS);
    let deep = "!".repeat(10_000);
    let out = ensemble(&["run", plan_file.to_str().unwrap(), "-E", &deep], &dir.path().join("cache"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nest more than 32 deep"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_log_that_claims_more_than_its_events_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let plan_file = plan_of(dir.path(), ensemble_artifacts::HELLO_COMMAND);
    let log = dir.path().join("run.jsonl");
    let out = ensemble(&["run", plan_file.to_str().unwrap(), "--json", log.to_str().unwrap()], &cache);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // The same log, its run-finished claiming 2^32-5 failures.
    let forged: String = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|line| {
            let mut event: serde_json::Value = serde_json::from_str(line).unwrap();
            if event["type"] == "run-finished" {
                event["summary"]["failed"] = json!(u32::MAX - 4);
            }
            format!("{event}\n")
        })
        .collect();
    let forged_file = dir.path().join("forged.jsonl");
    std::fs::write(&forged_file, forged).unwrap();
    let junit = dir.path().join("merged.xml");
    let out = ensemble(
        &[
            "report",
            "--merge",
            log.to_str().unwrap(),
            forged_file.to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
        ],
        &cache,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("forged.jsonl is inconsistent") && stderr.contains("4294967291 failed"),
        "{stderr}"
    );
    assert!(!junit.exists(), "no report from an inconsistent log");
}

/// A component whose one function takes Cranelift long and much memory:
/// 2,000,000 additions in a row (6 MB of code, under wasm's limit for one
/// function).
fn huge_function_component() -> Vec<u8> {
    let mut body = String::with_capacity(2_000_000 * 24);
    for _ in 0..2_000_000 {
        body.push_str("i32.const 1 i32.add\n");
    }
    let text = format!("(component (core module (func (param i32) (result i32) local.get 0\n{body})))");
    wat::parse_str(&text).unwrap()
}

/// The processes compiling a suite for `server` (its children running
/// `__compile-suite`).
fn compilers(server: &ensemble_tests::Server) -> Vec<u32> {
    let parent = server.proc.child.id();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // `pid (comm) state ppid …`: the ppid follows the comm's ")".
            let ppid =
                stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok());
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == Some(parent) && String::from_utf8_lossy(&cmdline).contains("__compile-suite")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiling_a_suite_has_a_time_and_memory_budget_and_stops_when_its_client_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let huge = huge_function_component();
    let upload_error = |server: &ensemble_tests::Server| {
        let client = server.client();
        let huge = huge.clone();
        async move { client.upload_suite("huge", huge).await.unwrap_err().to_string() }
    };
    // Cranelift, the compiler one huge function keeps busy for minutes
    // (the baseline compiler makes it in one pass, within any budget).
    let optimized = ["--no-local-machine", "--compile-tiers", "optimized"];
    // Over the time budget: refused, naming the budget and its flag.
    let timed = start_server(
        dir.path(),
        &dir.path().join("timed"),
        TOKEN,
        &[&optimized[..], &["--compile-timeout", "1s"]].concat(),
    );
    let why = upload_error(&timed).await;
    assert!(why.contains("took longer than its budget of 1s") && why.contains("--compile-timeout"), "{why}");
    // Over the memory budget: refused, naming the budget and its flag.
    let small = start_server(
        dir.path(),
        &dir.path().join("small"),
        TOKEN,
        &[&optimized[..], &["--compile-memory", "96MiB", "--compile-timeout", "10m"]].concat(),
    );
    let why = upload_error(&small).await;
    assert!(why.contains("memory budget of 96MiB") && why.contains("--compile-memory"), "{why}");
    // Both servers answer after it, and honest suites still compile (where
    // the budget leaves time to: a compile of one second is tight on a
    // loaded machine).
    timed.client().health().await.expect("the server whose compile ran out of time answers");
    small.upload(ensemble_artifacts::BASICS, "basics").await;

    // An upload whose client gives up: its compiler is stopped.
    let patient = start_server(
        dir.path(),
        &dir.path().join("patient"),
        TOKEN,
        &[&optimized[..], &["--compile-timeout", "10m"]].concat(),
    );
    let upload = tokio::spawn({
        let client = patient.client();
        async move { client.upload_suite("huge", huge).await }
    });
    // Wait for its compiler to start, then leave.
    let started = std::time::Instant::now();
    while compilers(&patient).is_empty() {
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "no compiler started");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    upload.abort();
    let left = std::time::Instant::now();
    while !compilers(&patient).is_empty() {
        assert!(left.elapsed() < std::time::Duration::from_secs(30), "the compiler outlived its client");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    patient.upload(ensemble_artifacts::BASICS, "basics").await;

    // A server killed while it compiles leaves no compiler behind.
    let mut patient = patient;
    let upload = tokio::spawn({
        let client = patient.client();
        let huge = huge_function_component();
        async move { client.upload_suite("huge", huge).await }
    });
    let started = std::time::Instant::now();
    let orphans = loop {
        let found = compilers(&patient);
        if !found.is_empty() {
            break found;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "no compiler started");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    patient.proc.kill();
    let _ = upload.await;
    let killed = std::time::Instant::now();
    while orphans.iter().any(|pid| running(*pid)) {
        assert!(killed.elapsed() < std::time::Duration::from_secs(30), "a compiler outlived its server");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Whether process `pid` runs (exists and is not a zombie).
fn running(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_are_bounded_per_run_and_swept_past_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start_server(dir.path(), &data, TOKEN, &["--no-local-machine"]);
    let _runner = start_runner_with(dir.path(), &server, "box", &["tier=a"], None, &["--slots", "4"]);
    server.wait_online(1).await;
    let hostile = format!("sha256:{}", server.upload(ensemble_artifacts::HOSTILE, "hostile").await);
    // Ten tests attach 32 MiB each: 320 MiB, over the 256 MiB a run may keep.
    let entries: Vec<_> = (0..10)
        .map(|i| {
            json!({ "suite": hostile, "profile": "a", "role": format!("flood-{i}"), "tests": ["attach_flood"],
                    "params": { "only": "attach_flood", "files": "8", "mib": "4" } })
        })
        .collect();
    let run = server
        .start_run(json!({
            "name": "attachments", "settings": { "attachment_limit": "32MiB" },
            "profiles": [{ "name": "a", "labels": { "tier": "a" } }], "entries": entries,
        }))
        .await;
    let events = server.events(&run).await;
    let kept: u64 = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Attachment { size, .. } => Some(*size),
            _ => None,
        })
        .sum();
    let refused = events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Log { message, .. } if message.contains("refused an attachment")))
        .count();
    let on_disk = disk_use(&data.join("attachments"));
    eprintln!(
        "attachments kept: {} MiB in events, {} MiB on disk, {refused} refused",
        kept >> 20,
        on_disk >> 20
    );
    assert!(kept <= 256 << 20 && refused > 0, "kept {kept} bytes, refused {refused}");
    assert!(on_disk <= (256 << 20) + (1 << 20), "{on_disk} bytes on disk");

    // `ensemble gc` holds them to a budget, oldest first, and the API says
    // what became of the bytes. (A sweep spares files of the last minutes,
    // whose events may be on their way: these are made an hour old.)
    let out =
        ensemble(&["gc", "--data-dir", data.to_str().unwrap(), "--attachment-budget", "1MiB"], dir.path());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("removed 0 attachment file(s)"),
        "recent files are spared"
    );
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for e in std::fs::read_dir(data.join("attachments")).unwrap().flatten() {
        std::fs::File::options().write(true).open(e.path()).unwrap().set_modified(hour_ago).unwrap();
    }
    let data_dir = data.to_str().unwrap();
    let out = ensemble(&["gc", "--data-dir", data_dir, "--attachment-budget", "64MiB"], dir.path());
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && said.contains("removed"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left = disk_use(&data.join("attachments"));
    assert!(left <= 64 << 20, "{left} bytes left after gc: {said}");
    let gone = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Attachment { sha256, .. } if !data.join("attachments").join(sha256).exists() => {
                Some(sha256.clone())
            }
            _ => None,
        })
        .expect("some attachment was swept");
    let err = server.client().attachment(&run, &gone).await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert!(err.to_string().contains("no longer kept"), "{err}");
    let out = ensemble(&["gc", "--data-dir", dir.path().to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2), "a directory that is not a data dir is refused");

    // Runs are kept to a count (and an age), the oldest first, with their
    // events and the files only they referred to.
    let later = server
        .start_run(json!({
            "name": "later", "profiles": [{ "name": "a", "labels": { "tier": "a" } }],
            "entries": [{ "suite": hostile, "profile": "a", "tests": ["passes"], "params": { "only": "passes" } }]
        }))
        .await;
    server.events(&later).await;
    let out = ensemble(&["gc", "--data-dir", data_dir, "--max-runs", "1"], dir.path());
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && said.contains("removed 1 run(s) and their"), "{said}");
    assert!(said.contains("kept 1;"), "{said}");
    let err = server.client().run(&run).await.unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    assert_eq!(server.client().run(&later).await.unwrap().state, RunState::Passed);
    assert_eq!(disk_use(&data.join("attachments")), 0, "the removed run's files are gone too");

    // Suites no plan or kept run names go too, past their age or the
    // budget (this one is made older than the minutes a sweep spares).
    let unnamed = server.upload(ensemble_artifacts::BASICS, "basics").await;
    let db = rusqlite::Connection::open(data.join("ensemble.db")).unwrap();
    db.execute("UPDATE suites SET body = json_set(body, '$.uploaded_us', 1) WHERE sha256 = ?1", [&unnamed])
        .unwrap();
    drop(db);
    let out = ensemble(&["gc", "--data-dir", data_dir, "--suite-budget", "1KiB"], dir.path());
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && said.contains("removed 1 suite(s)"), "{said}");
    assert_eq!(server.client().suite(&unnamed).await.unwrap_err().status(), Some(404));
    let named = hostile.strip_prefix("sha256:").unwrap();
    assert!(server.client().suite(named).await.is_ok(), "the kept run's suite stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_that_cannot_start_do_not_pile_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = vec!["--no-local-machine"];
    flags.extend_from_slice(ensemble_tests::SCHEDULE_FLAGS);
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &flags);
    let _runner = start_runner_with(dir.path(), &server, "box", &["tier=a"], None, &[]);
    server.wait_online(1).await;
    let hostile = format!("sha256:{}", server.upload(ensemble_artifacts::HOSTILE, "hostile").await);
    // 5 plans × 16 schedules, every second, on a profile no machine matches.
    let client = server.client();
    let mut ids = Vec::new();
    for p in 0..5 {
        let plan: ensemble_protocol::Plan = serde_json::from_value(json!({
            "name": format!("never-{p}"),
            "profiles": [{ "name": "nowhere", "labels": { "tier": "nowhere" } }],
            "entries": [{ "suite": hostile, "profile": "nowhere", "tests": ["passes"], "params": { "only": "passes" } }],
            "schedule": zones().iter().map(|z| json!({ "cron": "* * * * * *", "timezone": z })).collect::<Vec<_>>(),
        }))
        .unwrap();
        ids.push(client.create_plan(&plan).await.unwrap().id);
    }
    // Every schedule fires at least three times (each firing is recorded).
    let mut firsts = std::collections::BTreeMap::new();
    // (Each look is an event the server recorded; bounded: 60 s at most.)
    for _ in 0..600 {
        if settled_all(&client, &ids, &mut firsts).await == 80 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(settled_all(&client, &ids, &mut firsts).await, 80, "every schedule went on firing");
    let threads = server.proc.threads().unwrap();
    let runs = client.runs().await.unwrap();
    eprintln!("after 80 schedules fired 3+ times each: {threads} server threads, {} runs", runs.len());
    // At most one waiting run per schedule, and no task per firing.
    assert!(runs.len() <= 80, "{} runs", runs.len());
    assert!(threads < 64, "{threads} threads");
    assert!(client.health().await.is_ok());
}

/// How many of the plans' schedules fired at least 2 s after they were
/// first seen firing (`firsts` keeps those first times).
async fn settled_all(
    client: &ensemble_client::Client,
    ids: &[String],
    firsts: &mut std::collections::BTreeMap<(String, String), i64>,
) -> usize {
    let mut settled = 0;
    for id in ids {
        for s in client.plan(id).await.unwrap().schedules {
            let Some(at) = s.last_fired_us else { continue };
            let first = *firsts.entry((id.clone(), s.schedule.clone())).or_insert(at);
            if at >= first + 2_000_000 {
                settled += 1;
            }
        }
    }
    settled
}

/// 16 distinct time zones, so that 16 every-second schedules are 16 schedules.
fn zones() -> [&'static str; 16] {
    [
        "UTC",
        "Europe/Berlin",
        "Asia/Tokyo",
        "America/New_York",
        "Europe/London",
        "Asia/Kolkata",
        "Australia/Sydney",
        "America/Chicago",
        "Europe/Paris",
        "Asia/Shanghai",
        "America/Denver",
        "Africa/Cairo",
        "Europe/Madrid",
        "Asia/Dubai",
        "America/Sao_Paulo",
        "Pacific/Auckland",
    ]
}

/// Machines' large frames are put together only in the room of the
/// coordinator's intake (128 MiB for all machines): 16 machines sending a
/// 40 MiB frame each at once took 40 MiB a connection before (and 64 MiB
/// × 1,024 connections was the only bound). A message over one part is
/// refused whole: the machine is disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_sending_large_frames_together_are_bounded_in_total() {
    use ensemble_protocol::wire::{FromMachine, MAX_PART, ToMachine};
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    async fn intake_bytes(server: &ensemble_tests::Server) -> u64 {
        let resp = server.client().request(reqwest::Method::GET, "/metrics").send().await.unwrap();
        resp.text()
            .await
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("ensemble_intake_bytes "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
    const MACHINES: usize = 16;
    const FRAME: usize = 40 << 20;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start_server(dir.path(), &data, TOKEN, &["--no-local-machine"]);
    let before = server.proc.peak_rss().unwrap_or(0);
    // Each sends a frame of 40 MiB (not a message: skipped once whole),
    // part by part but the last; then, told to go on, the last part, and
    // asks to be drained: the answer comes once the coordinator has read
    // the frame.
    let (sent_tx, mut sent) = tokio::sync::mpsc::unbounded_channel();
    let go = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut machines = Vec::new();
    for i in 0..MACHINES {
        let mut m = FakeMachine::join(&server, &format!("big-{i}"), &[]).await;
        let (sent_tx, go) = (sent_tx.clone(), go.clone());
        let told = go.notified_owned();
        machines.push(tokio::spawn(async move {
            let mut first = (FRAME as u64).to_be_bytes().to_vec();
            first.resize(MAX_PART, b'x');
            m.ws.send(Message::binary(first)).await.unwrap();
            let mut left = FRAME - (MAX_PART - 8);
            while left > MAX_PART {
                m.ws.send(Message::binary(vec![b'x'; MAX_PART])).await.unwrap();
                left -= MAX_PART;
            }
            let _ = sent_tx.send(i);
            told.await;
            m.ws.send(Message::binary(vec![b'x'; left])).await.unwrap();
            m.send(&FromMachine::Drain).await;
            while !matches!(m.recv().await, ToMachine::Drained) {}
        }));
    }
    // Every machine has sent all but its last part, or the intake is full
    // and the machines it admitted have (the others are not read: TCP
    // holds them back).
    let (mut done, full) = (0, 3 * FRAME as u64);
    while done < MACHINES {
        tokio::select! {
            _ = sent.recv() => done += 1,
            _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
        }
        if done >= 3 && intake_bytes(&server).await >= full {
            break;
        }
    }
    let held = intake_bytes(&server).await;
    go.notify_waiters();
    let all = futures::future::join_all(machines);
    tokio::time::timeout(std::time::Duration::from_secs(300), all).await.expect("every frame was read");
    eprintln!("{done} machines had sent their frames but the last part; the intake held {} MiB", held >> 20);
    let peak = server.proc.peak_rss().unwrap_or(0);
    eprintln!(
        "{MACHINES} machines x {} MiB: server peak RSS {} MB (before them {} MB)",
        FRAME >> 20,
        peak >> 20,
        before >> 20
    );
    assert!(
        peak.saturating_sub(before) < 300 << 20,
        "the server grew by {} MB for frames it should hold at most 128 MiB of",
        peak.saturating_sub(before) >> 20
    );

    // A message over one part, whole, is not read: the connection ends.
    let mut loud = FakeMachine::join(&server, "loud", &[]).await;
    let _ = loud.ws.send(Message::text("x".repeat(MAX_PART + 1))).await;
    let ended = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            match loud.ws.next().await {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "a machine sending an oversized message was not disconnected");
}

/// A test holds at most 1,024 TCP sockets at once (each is a descriptor of
/// its runner's): one that opens 3,000 connections to a granted address is
/// refused past the bound, the runner saying why, and the machine goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_holds_a_bounded_number_of_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--no-local-machine"]);
    let _runner =
        start_runner_with(dir.path(), &server, "box", &["tier=a"], None, &["--allow-net", "127.0.0.1:*"]);
    server.wait_online(1).await;
    // A listener that takes every connection and holds it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten().take(10_000) {
            held.push(stream);
        }
    });
    let hostile = format!("sha256:{}", server.upload(ensemble_artifacts::HOSTILE, "hostile").await);
    let run = server
        .start_run(json!({
            "name": "sockets", "profiles": [{ "name": "a", "labels": { "tier": "a" } }],
            "entries": [{ "suite": hostile, "profile": "a", "tests": ["socket_flood"],
                          "params": { "only": "socket_flood", "addr": addr, "times": "3000" },
                          "capabilities": { "net": [addr] } }]
        }))
        .await;
    let events = server.events(&run).await;
    let output = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::TestFinished { test, outcome, output, message, .. } if test == "socket_flood" => {
                Some((*outcome, format!("{} {output}", message.clone().unwrap_or_default())))
            }
            _ => None,
        })
        .expect("socket_flood finished");
    assert_eq!(output.0, Outcome::Passed, "{}", output.1);
    assert!(output.1.contains("held 1024 connections"), "{}", output.1);
    assert!(output.1.contains("the test holds 1024 already, the most a test may hold"), "{}", output.1);
}

/// Downloads of suites (and attachments) are read from disk as they are
/// sent: 16 clients fetching a 48 MiB suite at once, reading nothing, cost
/// the server little (before, each download held the whole file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_are_sent_from_disk_not_held_whole() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--no-local-machine"]);
    // A valid component made large by a custom section (ignored when run).
    let mut bytes = std::fs::read(ensemble_artifacts::BASICS).unwrap();
    let payload = 48usize << 20;
    let name = b"padding";
    let mut section = Vec::new();
    let leb = |mut n: usize, out: &mut Vec<u8>| loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    };
    leb(name.len(), &mut section);
    section.extend_from_slice(name);
    section.resize(section.len() + payload, 0);
    bytes.push(0);
    leb(section.len(), &mut bytes);
    bytes.extend_from_slice(&section);
    let meta = server.client().upload_suite("padded", bytes.clone()).await.unwrap();
    let before = server.proc.peak_rss().unwrap_or(0);
    let client = server.client();
    let path = format!("/api/suites/{}", meta.sha256);
    let mut held = Vec::new();
    for _ in 0..16 {
        let resp = client.request(reqwest::Method::GET, &path).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        held.push(resp);
    }
    // One of them read to the end: the bytes are the suite's.
    let whole = held.pop().unwrap().bytes().await.unwrap();
    assert_eq!(whole.len(), bytes.len());
    assert!(whole[..] == bytes[..], "the download is the upload");
    let peak = server.proc.peak_rss().unwrap_or(0);
    eprintln!(
        "16 downloads of a 48 MiB suite: server peak RSS {} MB (before them {} MB)",
        peak >> 20,
        before >> 20
    );
    assert!(
        peak.saturating_sub(before) < 200 << 20,
        "the server grew by {} MB for downloads it should stream",
        peak.saturating_sub(before) >> 20
    );
    drop(held);
}
