//! Attacks on a real `ensemble serve`, each refused or bounded, with honest
//! work beside them unaffected: a machine that forges another's results, web
//! pages that try to drive a loopback server, secrets a plan asks for, and
//! inputs built to be huge.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use ensemble_protocol::api::{ErrorKind, RunState, routes};
use ensemble_protocol::event::{EventKind, Outcome, ShardRef, Summary};
use ensemble_protocol::wire::{FromMachine, ToMachine};
use ensemble_protocol::{PROTOCOL_VERSION, Verdict};
use ensemble_tests::{FakeMachine, Proc, ensemble_bin, start_runner, start_server};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "trust-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_a_token_makes_one_keeps_it_and_requires_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let start = || {
        let mut child = Command::new(ensemble_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--no-local-machine", "--data-dir"])
            .arg(&data)
            .env_remove("ENSEMBLE_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut next = || lines.next().unwrap().unwrap();
        let url = next().strip_prefix("ensemble serve: listening on ").unwrap().to_string();
        let join = next();
        assert!(join.contains(&data.join("join-token").display().to_string()), "{join}");
        let file = next();
        let open = next();
        let token = std::fs::read_to_string(data.join("token")).unwrap();
        assert!(file.contains(&data.join("token").display().to_string()), "{file}");
        assert_eq!(open, format!("ensemble serve: open {url}/?token={token}"));
        (Proc { child, log: dir.path().join("none") }, url, token)
    };
    let (mut first, url, token) = start();
    assert_eq!(token.len(), 64, "32 random bytes, hex");
    let join_token = std::fs::read_to_string(data.join("join-token")).unwrap();
    assert_ne!(join_token, token, "machines get a token of their own");
    let tls = ensemble_tests::tls_with_roots(rustls::RootCertStore::empty());
    let anonymous = ensemble_tests::Client::new(&url, None, tls.clone()).unwrap();
    assert_eq!(anonymous.plans().await.unwrap_err().status(), Some(401));
    let client = anonymous.with_token(Some(token.clone()));
    assert!(client.plans().await.unwrap().is_empty());
    first.kill();
    let (_second, _, again) = start();
    assert_eq!(again, token, "a restart keeps the token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_pages_cannot_drive_a_loopback_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--no-local-machine"]);
    let client = server.client();
    let status = |resp: reqwest::Response| resp.status().as_u16();
    // Another origin, even with the token (say, leaked into a page).
    let foreign = client
        .request(reqwest::Method::GET, routes::PLANS)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(status(foreign), 403);
    // A foreign name that resolves to loopback (DNS rebinding).
    let rebound = client
        .request(reqwest::Method::GET, routes::PLANS)
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(status(rebound), 403);
    // A simple request (text/plain) a page may send without a preflight.
    let simple = client
        .request(reqwest::Method::POST, routes::RUNS)
        .header("content-type", "text/plain")
        .body(r#"{"plan_id":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(status(simple), 415);
    let upload = client
        .request(reqwest::Method::POST, &routes::suite_upload("x"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("x=1")
        .send()
        .await
        .unwrap();
    assert_eq!(status(upload), 415);
    // A WebSocket handshake from a page: joining as a machine, watching a run.
    for path in [routes::MACHINE_JOIN.to_string(), routes::run_events("any", 1)] {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = ensemble_client::ws_url(&server.url, &path).into_client_request().unwrap();
        req.headers_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        req.headers_mut().insert("origin", "https://evil.example".parse().unwrap());
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 403),
            other => panic!("{path}: the handshake should be refused, got {other:?}"),
        }
    }
    // The same-origin page (the app itself) and plain clients still work.
    let own = client
        .request(reqwest::Method::GET, routes::PLANS)
        .header("origin", server.url.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(status(own), 200);
    assert!(client.plans().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_cannot_forge_results_for_another_machines_shard() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--no-local-machine"]);
    let _honest = start_runner(dir.path(), &server, "honest", &["tier=a"], None);
    server.wait_online(1).await;
    let mut forger = FakeMachine::join(&server, "forger", &[("tier", "b")]).await;
    let basics = server.upload(ensemble_artifacts::BASICS, "basics").await;
    let hello = server.upload(ensemble_artifacts::HELLO_COMMAND, "hello").await;
    // basics fails on purpose on the honest machine; the forger runs `hello`.
    let run = server
        .start_run(json!({
            "name": "forged", "type": "distributed",
            "profiles": [{ "name": "a", "labels": { "tier": "a" } }, { "name": "b", "labels": { "tier": "b" } }],
            "entries": [
                { "suite": format!("sha256:{basics}"), "profile": "a", "role": "victim",
                  "params": { "greeting": "hello" } },
                { "suite": format!("sha256:{hello}"), "profile": "b", "role": "forger" }
            ]
        }))
        .await;
    let ToMachine::Assign { assignment } = forger.recv().await else { panic!("no assignment") };
    let own = assignment.shard.shard;
    let victim = if own == 1 { 2 } else { 1 };
    let sref = |shard: u32| ShardRef {
        shard,
        machine: "honest".into(),
        role: "victim".into(),
        suite: "basics".into(),
        instance: 0,
    };
    let event = |shard: u32, seq: u64, event: EventKind| FromMachine::Event {
        run: run.clone(),
        shard,
        seq,
        at_us: 0,
        event,
    };
    let forged_pass = EventKind::TestFinished {
        shard: sref(victim),
        test: "fails_check_eq".into(),
        outcome: Outcome::Passed,
        duration_ms: 1,
        attempt: 1,
        message: None,
        output: String::new(),
    };
    // Results for the victim's shard, a jump to the end of the sequence, an
    // invented shard, a run-level event, and the victim's shard-done.
    forger.send(&event(victim, 1, forged_pass.clone())).await;
    forger.send(&event(victim, u64::MAX - 1, forged_pass.clone())).await;
    forger.send(&event(99, 1, forged_pass.clone())).await;
    forger.send(&FromMachine::ShardDone { run: run.clone(), shard: 99 }).await;
    forger.send(&FromMachine::ShardDone { run: run.clone(), shard: victim }).await;
    let end = EventKind::RunFinished {
        summary: Summary::default(),
        duration_ms: 1,
        shard_errors: 0,
        cancelled: None,
        verdict: Verdict::Passed,
    };
    forger.send(&event(own, 1, end)).await;
    // Then it finishes its own shard honestly.
    let mut done = Summary::default();
    done.add(Outcome::Passed);
    let mut own_ref = assignment.shard.clone();
    own_ref.machine = "forger".into();
    forger
        .send(&event(
            own,
            1,
            EventKind::TestFinished {
                shard: own_ref.clone(),
                test: "hello".into(),
                outcome: Outcome::Passed,
                duration_ms: 1,
                attempt: 1,
                message: None,
                output: String::new(),
            },
        ))
        .await;
    forger
        .send(&event(own, 2, EventKind::ShardFinished { shard: own_ref, summary: done, error: None }))
        .await;
    forger.send(&FromMachine::ShardDone { run: run.clone(), shard: own }).await;

    let events = server.events(&run).await;
    let victim_results: Vec<(String, Outcome)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::TestFinished { shard, test, outcome, .. } if shard.shard == victim => {
                Some((test.clone(), *outcome))
            }
            _ => None,
        })
        .collect();
    let fails = victim_results.iter().filter(|(t, _)| t == "fails_check_eq").collect::<Vec<_>>();
    assert_eq!(
        fails,
        [&("fails_check_eq".to_string(), Outcome::Failed)],
        "only the honest result: {victim_results:?}"
    );
    assert!(victim_results.len() > 5, "the honest shard ran whole: {victim_results:?}");
    let finished = events.iter().filter(|e| matches!(e.kind, EventKind::RunFinished { .. })).count();
    assert_eq!(finished, 1, "only the coordinator ends a run");
    let EventKind::RunFinished { verdict, .. } = &events.last().unwrap().kind else { panic!() };
    assert_eq!(*verdict, Verdict::Failed);
    assert_eq!(server.client().run(&run).await.unwrap().state, RunState::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_and_secret_seeking_plans_are_refused_small() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--no-local-machine"]);
    let client = server.client();
    // 20,000 profiles and 1,000 entries naming a missing one.
    let profiles: Vec<_> = (0..20_000).map(|i| json!({ "name": format!("p{i}") })).collect();
    let entries: Vec<_> =
        (0..1_000).map(|i| json!({ "suite": format!("s{i}.wasm"), "profile": "nowhere" })).collect();
    let plan = json!({ "name": "huge", "profiles": profiles, "entries": entries });
    let resp = client
        .request(reqwest::Method::POST, routes::PLANS)
        .header("content-type", "application/json")
        .body(plan.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    let body = resp.bytes().await.unwrap();
    assert!(body.len() < 256 << 10, "the refusal stays small: {} bytes", body.len());
    // A grant of Ensemble's own variables, and an output limit past the cap.
    let greedy = json!({
        "name": "greedy", "type": "cross-platform", "profiles": [{ "name": "any" }],
        "settings": { "output_limit": "1GiB" },
        "entries": [{ "suite": "x.wasm", "capabilities": { "env": ["ENSEMBLE_TOKEN"] } }]
    });
    let err = client.create_plan(&serde_json::from_value(greedy).unwrap()).await.expect_err("refused");
    assert_eq!(err.kind(), Some(ErrorKind::InvalidPlan));
    let shown = err.to_string();
    assert!(shown.contains("settings.output_limit") && shown.contains("reserved"), "{shown}");
    // A machine whose name would forge log lines.
    let mut ws = server.machine_client().websocket(routes::MACHINE_JOIN).await.unwrap();
    let hello = json!({ "type": "hello", "protocol": PROTOCOL_VERSION,
        "machine": { "name": "evil\nERROR forged line", "labels": {}, "slots": 1, "facts": {
            "os": "", "arch": "", "cpus": 1, "memory_bytes": 0, "ensemble_version": "", "wasmtime_version": "" } } });
    ws.send(Message::text(hello.to_string())).await.unwrap();
    let Some(Ok(Message::Text(reply))) = ws.next().await else { panic!("no answer") };
    let ToMachine::Rejected { reason, retry } = serde_json::from_str(&reply).unwrap() else {
        panic!("{reply}")
    };
    assert!(reason.contains("not a valid machine name") && !retry, "{reason}");
    assert!(!server.proc.log().contains("\nERROR forged line"), "names are logged escaped");
    assert!(client.machines().await.unwrap().is_empty());
    // A hello over 128 KiB is refused unread.
    let mut ws = server.machine_client().websocket(routes::MACHINE_JOIN).await.unwrap();
    ws.send(Message::text(format!("{{\"type\": \"hello\", \"pad\": \"{}\"}}", "x".repeat(140 << 10))))
        .await
        .unwrap();
    let Some(Ok(Message::Text(reply))) = ws.next().await else { panic!("no answer") };
    let ToMachine::Rejected { reason, .. } = serde_json::from_str(&reply).unwrap() else { panic!("{reply}") };
    assert!(reason.contains("over the limit"), "{reason}");
    // News of a run that is over (or never was) is acknowledged, so a
    // machine stops resending it.
    let mut late = FakeMachine::join(&server, "late", &[]).await;
    let shard =
        ShardRef { shard: 1, machine: "late".into(), role: "r".into(), suite: "s".into(), instance: 0 };
    let event = EventKind::ShardFinished { shard, summary: Summary::default(), error: None };
    late.send(&FromMachine::Event { run: "run-over".into(), shard: 1, seq: 7, at_us: 0, event }).await;
    let ToMachine::Ack { run, seq, .. } = late.recv().await else { panic!("no ack") };
    assert_eq!((run.as_str(), seq), ("run-over", 7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_and_people_hold_different_tokens_and_a_name_cannot_be_taken() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &["--no-local-machine"]);
    // The API token does not open the machine socket, nor the join token the API.
    let mut with_api_token = start_runner(dir.path(), &server, "misled", &[], Some(TOKEN));
    let status = with_api_token.child.wait().unwrap();
    assert_eq!(status.code(), Some(2), "{}", with_api_token.log());
    assert!(with_api_token.log().contains("wrong token"), "{}", with_api_token.log());
    let refused = server.machine_client().plans().await.unwrap_err();
    assert_eq!(refused.status(), Some(401));
    // A runner's name is bound to it at its first join.
    let real = start_runner(dir.path(), &server, "box", &["tier=a"], None);
    server.wait_online(1).await;
    for secret in [None, Some("guessed".to_string())] {
        let why =
            FakeMachine::try_join(&server, "box", &[("tier", "a")], secret).await.err().expect("refused");
        assert!(why.contains("belongs to another machine"), "{why}");
    }
    // The real one reconnects with its secret and keeps its name.
    server.client().disconnect_machine("box").await.unwrap();
    server.wait_online(1).await;
    let run = server
        .start_run(json!({
            "name": "after", "type": "cross-platform", "profiles": [{ "name": "any", "machine": "box" }],
            "entries": [{ "suite": format!("sha256:{}", server.upload(ensemble_artifacts::HELLO_COMMAND, "hello").await) }]
        }))
        .await;
    let events = server.events(&run).await;
    let EventKind::RunFinished { verdict, .. } = &events.last().unwrap().kind else { panic!() };
    assert_eq!(*verdict, Verdict::Passed, "{}", real.log());
    assert!(real.log().matches("box joined").count() >= 2, "{}", real.log());
}
