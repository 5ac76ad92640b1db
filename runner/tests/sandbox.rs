//! The sandbox against real suites: every example suite, every hostile case,
//! and bad components. Each hostile case must end as a clear test outcome
//! while the same sandbox (the runner process) keeps working.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ensemble_artifacts as artifacts;
use ensemble_protocol::Capabilities;
use ensemble_protocol::Outcome;
use ensemble_protocol::wire::{SyncCall, SyncFailure, SyncReply};
use ensemble_runner::sandbox::{
    Grants, LoadedSuite, MAX_LOADED, Sandbox, SandboxOptions, SuiteKind, SyncPort, TestCase, TestEnv,
    TestRun, Tier, Tiers,
};

/// Records log lines; refuses sync (these suites run alone).
#[derive(Default)]
struct Port {
    logs: Mutex<Vec<String>>,
    /// (test, name, bytes) of every attachment.
    attached: Mutex<Vec<(String, String, Vec<u8>)>>,
}

#[async_trait]
impl SyncPort for Port {
    async fn call(&self, _: SyncCall) -> SyncReply {
        SyncReply::Error { kind: SyncFailure::Invalid, message: "no sync in this test".into() }
    }
    fn log(&self, test: &str, level: &str, message: &str) {
        self.logs.lock().unwrap().push(format!("{test} {level} {message}"));
    }
    fn attach(&self, test: &str, name: &str, content: Vec<u8>) {
        self.attached.lock().unwrap().push((test.into(), name.into(), content));
    }
}

/// A sandbox compiling in memory (the test of the on-disk cache makes its
/// own): nothing is left on disk.
fn sandbox() -> Arc<Sandbox> {
    Arc::new(
        Sandbox::new(SandboxOptions { cache_dir: None, max_instances: 16, ..SandboxOptions::default() })
            .unwrap(),
    )
}

/// A test's environment with a time limit no test that ends reaches, however
/// loaded the machine: the tests of time limits set their own.
fn env(params: &[(&str, &str)], caps: Capabilities, port: Arc<Port>) -> Arc<TestEnv> {
    env_with_timeout(params, caps, port, Duration::from_secs(300))
}

fn env_with_timeout(
    params: &[(&str, &str)],
    caps: Capabilities,
    port: Arc<Port>,
    timeout: Duration,
) -> Arc<TestEnv> {
    env_with_grants(params, Grants::new(&caps).unwrap(), port, timeout)
}

fn env_with_grants(
    params: &[(&str, &str)],
    grants: Grants,
    port: Arc<Port>,
    timeout: Duration,
) -> Arc<TestEnv> {
    Arc::new(TestEnv {
        run_id: "run-test".into(),
        role: "hostile".into(),
        instance: 0,
        instance_count: 1,
        machine: "local".into(),
        params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
        grants,
        memory_limit: 64 << 20,
        output_limit: 64 << 10,
        attachment_limit: 64 << 10,
        test_timeout: timeout,
        barrier_timeout_ms: 100,
        sync: port,
    })
}

async fn load(sb: &Arc<Sandbox>, path: &str) -> Arc<LoadedSuite> {
    let bytes = Arc::new(std::fs::read(path).unwrap());
    sb.load(bytes).await.unwrap_or_else(|e| panic!("{path}: {e}"))
}

async fn run(suite: &LoadedSuite, name: &str, env: &Arc<TestEnv>) -> TestRun {
    let tests = suite.list(env).await.unwrap();
    let case = tests.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no test {name} in {tests:?}"));
    suite.run(case, env).await
}

fn msg(r: &TestRun) -> &str {
    r.message.as_deref().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basics_reports_every_kind_of_outcome() {
    let sb = sandbox();
    let suite = load(&sb, artifacts::BASICS).await;
    assert_eq!(suite.kind(), SuiteKind::Suite);
    let port = Arc::new(Port::default());
    let env = env(&[("greeting", "hello"), ("expected", "hello")], Capabilities::default(), port.clone());
    let tests = suite.list(&env).await.unwrap();
    let tagged = tests.iter().find(|t| t.name == "tagged_with_timeout").unwrap();
    assert_eq!(tagged.tags, ["demo", "tags"]);
    assert_eq!(tagged.timeout, Some(Duration::from_secs(5)));
    assert!(tests.iter().find(|t| t.name == "ignored").unwrap().ignored);
    let mut got = BTreeMap::new();
    for t in tests.iter().filter(|t| !t.ignored) {
        got.insert(t.name.clone(), suite.run(t, &env).await);
    }
    for name in
        ["adds", "concatenates", "reads_context", "greeting_param", "logs_and_prints", "tagged_with_timeout"]
    {
        assert_eq!(got[name].outcome, Outcome::Passed, "{name}: {:?}", got[name]);
    }
    assert_eq!(got["fails_check_eq"].outcome, Outcome::Failed);
    assert!(msg(&got["fails_check_eq"]).contains("left: 4"), "{:?}", got["fails_check_eq"]);
    assert_eq!(got["skips"].outcome, Outcome::Skipped);
    // A panic fails only its own test, with the panic's message.
    assert_eq!(got["panics"].outcome, Outcome::Failed);
    assert!(msg(&got["panics"]).starts_with("boom: the answer was 42 (panicked at"), "{:?}", got["panics"]);
    assert!(!got["logs_and_prints"].output.is_empty());
    assert!(
        port.logs.lock().unwrap().iter().any(|l| l.starts_with("logs_and_prints ")),
        "log lines reach the port"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_loop_and_an_hour_long_sleep_time_out() {
    let sb = sandbox();
    let suite = load(&sb, artifacts::HOSTILE).await;
    let short = env_with_timeout(&[], Capabilities::default(), Arc::default(), Duration::from_millis(1500));
    let env = env(&[], Capabilities::default(), Arc::default());
    let tests = suite.list(&env).await.unwrap();
    for name in ["busy_loop", "long_sleep"] {
        let case = tests.iter().find(|t| t.name == name).unwrap();
        let r = suite.run(case, &short).await;
        assert_eq!(r.outcome, Outcome::TimedOut, "{name}: {r:?}");
        assert!(msg(&r).starts_with("timed out after 1s 500ms"), "{name}: {r:?}");
        assert!(r.duration < Duration::from_secs(10), "{name} was not stopped: {r:?}");
    }
    assert_eq!(run(&suite, "passes", &env).await.outcome, Outcome::Passed, "the sandbox still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hog_and_unbounded_recursion_fail_clearly() {
    let sb = sandbox();
    let suite = load(&sb, artifacts::HOSTILE).await;
    let env = env(&[], Capabilities::default(), Arc::default());
    let hog = run(&suite, "memory_hog", &env).await;
    assert_eq!(hog.outcome, Outcome::Crashed, "{hog:?}");
    assert!(msg(&hog).starts_with("memory limit of 64MiB exceeded"), "{hog:?}");
    let deep = run(&suite, "deep_recursion", &env).await;
    assert_eq!(deep.outcome, Outcome::Crashed, "{deep:?}");
    assert!(msg(&deep).starts_with("stack overflow"), "{deep:?}");
    assert_eq!(run(&suite, "passes", &env).await.outcome, Outcome::Passed, "the sandbox still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_never_visible() {
    let sb = sandbox();
    let suite = load(&sb, artifacts::HOSTILE).await;
    let env = env(&[("path", "/etc/passwd")], Capabilities::default(), Arc::default());
    let r = run(&suite, "read_file", &env).await;
    assert_eq!(r.outcome, Outcome::Failed, "{r:?}");
    assert!(msg(&r).contains("/etc/passwd"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_access_needs_a_grant() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let sb = sandbox();
    let suite = load(&sb, artifacts::HOSTILE).await;
    let denied =
        run(&suite, "connect", &env(&[("addr", &addr)], Capabilities::default(), Arc::default())).await;
    assert_eq!(denied.outcome, Outcome::Failed, "{denied:?}");
    let other_port = Capabilities { net: vec!["127.0.0.1:1".into()], ..Default::default() };
    let denied = run(&suite, "connect", &env(&[("addr", &addr)], other_port, Arc::default())).await;
    assert_eq!(
        denied.outcome,
        Outcome::Failed,
        "a grant for another port does not open this one: {denied:?}"
    );
    let granted = Capabilities { net: vec![addr.clone()], ..Default::default() };
    let ok = run(&suite, "connect", &env(&[("addr", &addr)], granted, Arc::default())).await;
    assert_eq!(ok.outcome, Outcome::Passed, "{ok:?}");
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_variables_need_a_grant() {
    // cargo sets CARGO_MANIFEST_DIR for every test process.
    let var = "CARGO_MANIFEST_DIR";
    assert!(std::env::var(var).is_ok());
    let sb = sandbox();
    let suite = load(&sb, artifacts::HOSTILE).await;
    let denied =
        run(&suite, "read_env", &env(&[("name", var)], Capabilities::default(), Arc::default())).await;
    assert_eq!(denied.outcome, Outcome::Failed, "{denied:?}");
    let caps = Capabilities { env: vec![var.into()], ..Default::default() };
    let ok = run(&suite, "read_env", &env(&[("name", var)], caps, Arc::default())).await;
    assert_eq!(ok.outcome, Outcome::Passed, "{ok:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_output_is_capped() {
    let sb = sandbox();
    let suite = load(&sb, artifacts::HOSTILE).await;
    let r = run(&suite, "output_flood", &env(&[], Capabilities::default(), Arc::default())).await;
    assert_eq!(r.outcome, Outcome::Passed, "{}", msg(&r));
    assert!(r.output.len() < (64 << 10) + 200, "kept {} bytes", r.output.len());
    assert!(
        r.output.contains("[ensemble: output truncated at 65536 bytes;"),
        "{}",
        &r.output[r.output.len() - 200..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_components_get_clear_errors_and_the_sandbox_survives() {
    let sb = sandbox();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("garbage", b"this is not wasm".to_vec(), "not a WebAssembly file"),
        ("core module", wat("(module)"), "core WebAssembly module, not a component"),
        ("truncated", artifacts_prefix(), "not a valid WebAssembly component"),
        ("wrong world", wat("(component)"), "is not a suite: it exports neither"),
    ];
    for (what, bytes, want) in cases {
        let err = match sb.load(Arc::new(bytes)).await {
            Ok(_) => panic!("{what} loaded"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(want), "{what}: {err}");
    }
    let unknown_import =
        wat(r#"(component (import "acme:secret/door@1.0.0" (instance (export "open" (func)))))"#);
    let err = match sb.load(Arc::new(unknown_import)).await {
        Ok(s) => panic!("loaded a component importing an unknown interface as {:?}", s.kind()),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("needs imports that Ensemble does not provide") && err.contains("acme:secret/door"),
        "{err}"
    );
    let suite = load(&sb, artifacts::HOSTILE).await;
    let r = run(&suite, "passes", &env(&[], Capabilities::default(), Arc::default())).await;
    assert_eq!(r.outcome, Outcome::Passed);
}

fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).unwrap()
}

fn artifacts_prefix() -> Vec<u8> {
    let bytes = std::fs::read(artifacts::BASICS).unwrap();
    bytes[..bytes.len() / 2].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libtest_harnesses_run_each_test_alone() {
    let sb = sandbox();
    let suite = load(&sb, artifacts::LIBTEST_DEMO).await;
    assert_eq!(suite.kind(), SuiteKind::Libtest);
    let env = env(&[], Capabilities::default(), Arc::default());
    let tests = suite.list(&env).await.unwrap();
    let names: Vec<(&str, bool)> = tests.iter().map(|t| (t.name.as_str(), t.ignored)).collect();
    assert_eq!(
        names,
        [
            ("tests::adds", false),
            ("tests::fails_assert_eq", false),
            ("tests::greets", false),
            ("tests::ignored", true),
            ("tests::panics_as_expected", false)
        ]
    );
    let by_name = |n: &str| tests.iter().find(|t| t.name == n).unwrap().clone();
    assert_eq!(suite.run(&by_name("tests::adds"), &env).await.outcome, Outcome::Passed);
    let failed = suite.run(&by_name("tests::fails_assert_eq"), &env).await;
    assert_eq!(failed.outcome, Outcome::Failed, "{failed:?}");
    assert!(msg(&failed).contains("fails on purpose"), "{failed:?}");
    let missing = TestCase { name: "tests::nope".into(), tags: vec![], ignored: false, timeout: None };
    assert_eq!(suite.run(&missing, &env).await.outcome, Outcome::Failed);
    // What libtest itself says of a test run alone: asked for, an ignored
    // test passes; a #[should_panic] test, which libtest cannot run on wasm,
    // is ignored by libtest when it runs, so it is skipped, saying why.
    assert_eq!(suite.run(&by_name("tests::ignored"), &env).await.outcome, Outcome::Passed);
    let should_panic = suite.run(&by_name("tests::panics_as_expected"), &env).await;
    assert_eq!(should_panic.outcome, Outcome::Skipped, "{should_panic:?}");
    assert!(msg(&should_panic).contains("libtest ignored it"), "{should_panic:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_commands_are_one_test() {
    let sb = sandbox();
    let suite = load(&sb, artifacts::HELLO_COMMAND).await;
    assert_eq!(suite.kind(), SuiteKind::Command);
    let env = env(&[], Capabilities::default(), Arc::default());
    let r = run(&suite, "main", &env).await;
    assert_eq!(r.outcome, Outcome::Passed, "{r:?}");
    assert!(r.output.contains("hello from a WASI command suite"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_suites_are_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || SandboxOptions {
        cache_dir: Some(dir.path().to_path_buf()),
        max_instances: 4,
        ..SandboxOptions::default()
    };
    let first = Arc::new(Sandbox::new(opts()).unwrap());
    let suite = load(&first, artifacts::HELLO_COMMAND).await;
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].to_string_lossy().starts_with(&suite.sha256));
    // A second process (here: a second engine) loads the artifact instead of compiling.
    let second = Arc::new(Sandbox::new(opts()).unwrap());
    let again = load(&second, artifacts::HELLO_COMMAND).await;
    assert_eq!(again.sha256, suite.sha256);
}

/// The example tests that never end on their own (the hostile suite's): only
/// they run under a short time limit when outcomes are compared, so that
/// whether a test ends never depends on how loaded the machine is.
const NEVER_END: [&str; 2] = ["busy_loop", "long_sleep"];

/// The limits `outcomes` runs tests under: `ends` for tests that end, ample
/// on a loaded machine; `never_ends` for those in [`NEVER_END`].
struct Limits {
    ends: Arc<TestEnv>,
    never_ends: Arc<TestEnv>,
}

impl Limits {
    fn new(params: &[(&str, &str)]) -> Self {
        let with = |timeout| env_with_timeout(params, Capabilities::default(), Arc::default(), timeout);
        Limits { ends: with(Duration::from_secs(300)), never_ends: with(Duration::from_secs(3)) }
    }

    fn for_test(&self, name: &str) -> &Arc<TestEnv> {
        if NEVER_END.contains(&name) { &self.never_ends } else { &self.ends }
    }
}

/// Every outcome of `suite`'s tests (at most ~200 of them, evenly spread),
/// by name, with the messages of those that did not crash (a crash's
/// backtrace names code addresses, which differ between compilers).
async fn outcomes(suite: &LoadedSuite, limits: &Limits) -> BTreeMap<String, (Outcome, Option<String>)> {
    use futures::StreamExt;
    let tests = suite.list(&limits.ends).await.unwrap();
    let stride = tests.len().div_ceil(200).max(1);
    // Two at a time: the hostile suite's tests that time out overlap.
    futures::stream::iter(tests.iter().step_by(stride).filter(|t| !t.ignored))
        .map(async |t| {
            let r = suite.run(t, limits.for_test(&t.name)).await;
            let message = if r.outcome == Outcome::Crashed { None } else { r.message };
            (t.name.clone(), (r.outcome, message))
        })
        .buffer_unordered(2)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_suite_has_the_same_outcomes_on_both_tiers() {
    let on = |tiers| {
        Arc::new(
            Sandbox::new(SandboxOptions { cache_dir: None, max_instances: 4, tiers, ..Default::default() })
                .unwrap(),
        )
    };
    let (baseline, optimized) = (on(Tiers::Baseline), on(Tiers::Optimized));
    // Small suites, tiered: one engine, never the baseline compiler's.
    let tiered = on(Tiers::Tiered);
    assert_eq!(load(&tiered, artifacts::BASICS).await.tier(), Tier::Optimized);
    assert_eq!(tiered.engines_made(), 1, "a small suite made the baseline engine");
    // The params some suites read; sync is refused alike on both tiers.
    let params = [("greeting", "hello"), ("expected", "hello"), ("scale_ms", "1")];
    let limits = Limits::new(&params);
    for (name, path) in artifacts::ALL {
        let bytes = Arc::new(std::fs::read(path).unwrap());
        let (b, o) = (baseline.load(bytes.clone()).await.unwrap(), optimized.load(bytes).await.unwrap());
        assert_eq!((b.tier(), o.tier()), (Tier::Baseline, Tier::Optimized), "{name}");
        assert_eq!((b.settled().await, o.settled().await), (Tier::Baseline, Tier::Optimized), "{name}");
        let (on_baseline, on_optimized) = tokio::join!(outcomes(&b, &limits), outcomes(&o, &limits));
        assert!(!on_baseline.is_empty(), "{name} ran no test");
        assert_eq!(on_baseline, on_optimized, "{name}: the tiers differ");
    }
    assert_eq!((baseline.engines_made(), optimized.engines_made()), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_suite_starts_on_the_baseline_tier_and_switches_to_optimized_code() {
    let dir = tempfile::tempdir().unwrap();
    let budget = ensemble_runner::sandbox::compile::CompileBudget {
        exe: env!("CARGO_BIN_EXE_ensemble").into(),
        timeout: Duration::from_secs(120),
        memory: 2 << 30,
    };
    let opts = || SandboxOptions {
        cache_dir: Some(dir.path().to_path_buf()),
        max_instances: 4,
        compile: Some(budget.clone()),
        // Every suite is "large" here: the examples are small.
        tier_above: 0,
        ..SandboxOptions::default()
    };
    let limits = Limits::new(&[("greeting", "hello"), ("expected", "hello")]);
    let sb = Arc::new(Sandbox::new(opts()).unwrap());
    let suite = load(&sb, artifacts::BASICS).await;
    assert_eq!(suite.loaded_on(), Tier::Baseline, "compiled in a child on the baseline tier first");
    let first = outcomes(&suite, &limits).await;
    assert_eq!(first["adds"].0, Outcome::Passed);
    assert_eq!(suite.settled().await, Tier::Optimized, "the background compile swapped its code in");
    assert_eq!(outcomes(&suite, &limits).await, first, "the same outcomes on the optimized code");
    // The cache keeps the optimized artifact only; the next process loads it.
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let again = load(&Arc::new(Sandbox::new(opts()).unwrap()), artifacts::BASICS).await;
    assert_eq!(again.tier(), Tier::Optimized);
}

#[tokio::test]
async fn a_long_lived_sandbox_keeps_a_bounded_number_of_suites_and_those_in_use() {
    let sb = sandbox();
    let held = sb.load(Arc::new(std::fs::read(artifacts::HELLO_COMMAND).unwrap())).await.unwrap();
    // Many more suites than it keeps, valid or not (a fuzzer found the growth).
    for i in 0..(3 * MAX_LOADED) {
        let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
        bytes.extend_from_slice(&i.to_le_bytes());
        assert!(sb.load(Arc::new(bytes)).await.is_err());
        assert!(sb.loaded_count() <= MAX_LOADED + 1, "{} suites loaded", sb.loaded_count());
    }
    let again = sb.load(Arc::new(std::fs::read(artifacts::HELLO_COMMAND).unwrap())).await.unwrap();
    assert!(Arc::ptr_eq(&held, &again), "a suite in use stays loaded");
}

/// A component of the suite world as `wit` (one WIT file) defines it, with
/// a body that traps: enough to load, link and be told apart by version.
fn component_of(wit: &str) -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    let pkg = resolve.push_str("suite.wit", wit).unwrap();
    let world = resolve.select_world(&[pkg], Some("suite")).unwrap();
    let mut module = wit_component::dummy_module(&resolve, world, wit_parser::ManglingAndAbi::Standard32);
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
        false,
    )
    .unwrap();
    wit_component::ComponentEncoder::default().module(&module).unwrap().validate(true).encode().unwrap()
}

fn suite_wit(version: &str) -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../suites/wit/suite.wit");
    let text = std::fs::read_to_string(dir).unwrap();
    text.replace("package ensemble:suite@0.3.0;", &format!("package ensemble:suite@{version};"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suites_of_abi_0_1_0_2_and_0_3_run_and_an_unknown_version_is_named() {
    let sb = sandbox();
    // 0.1, built from the kept copy of its WIT: it runs, it declares nothing.
    let old = load(&sb, artifacts::ABI_0_1).await;
    assert_eq!((old.kind(), old.abi()), (SuiteKind::Suite, Some("0.1")));
    let port = Arc::new(Port::default());
    let env_ = env(&[("word", "ensemble")], Capabilities::default(), port.clone());
    assert_eq!(run(&old, "reads_param", &env_).await.outcome, Outcome::Passed);
    let refused = run(&old, "signals", &env_).await;
    assert_eq!(refused.outcome, Outcome::Failed, "sync answers a 0.1 suite in its own terms");
    assert!(msg(&refused).contains("no sync in this test"), "{}", msg(&refused));
    let described = old.describe(&env_).await.unwrap();
    assert_eq!((described.tests.len(), described.params), (3, None));

    // 0.2, built from the kept copy of its WIT: it runs and declares its params.
    let kept = load(&sb, artifacts::ABI_0_2).await;
    assert_eq!(kept.abi(), Some("0.2"));
    let word = [("word", "ensemble")];
    let env_02 = env(&word, Capabilities::default(), port.clone());
    assert_eq!(run(&kept, "reads_param", &env_02).await.outcome, Outcome::Passed);
    let refused = run(&kept, "signals", &env_02).await;
    assert!(msg(&refused).contains("no sync in this test"), "sync answers a 0.2 suite in its own terms");
    let declared = kept.describe(&env_02).await.unwrap().params.expect("0.2 suites declare their params");
    assert_eq!(declared.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["word"]);

    // 0.3 (the SDK's): its params, as declared.
    let new = load(&sb, artifacts::BASICS).await;
    assert_eq!(new.abi(), Some("0.3"));
    let params = new.describe(&env_).await.unwrap().params.expect("0.2 suites declare their params");
    let shown: Vec<(&str, &str, bool, Option<&str>)> =
        params.iter().map(|p| (p.name.as_str(), p.kind.as_str(), p.required, p.default.as_deref())).collect();
    assert_eq!(
        shown,
        [
            ("greeting", "string", true, None),
            ("expected", "string", false, Some("hello")),
            ("nap_ms", "integer", false, Some("0"))
        ]
    );
    assert!(params.iter().all(|p| !p.help.is_empty()));

    // A later patch release of a known ABI links (semver); another minor
    // version, or a major one, is refused naming both sides.
    let patch = sb.load(Arc::new(component_of(&suite_wit("0.3.7")))).await;
    assert!(patch.is_ok_and(|s| s.abi() == Some("0.3")), "0.3.7 is 0.3");
    for version in ["0.4.0", "1.0.0"] {
        let err = match sb.load(Arc::new(component_of(&suite_wit(version)))).await {
            Ok(_) => panic!("a suite of ABI {version} loaded"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(&format!("built for suite ABI {version}"))
                && err.contains("runs suite ABI 0.1, 0.2 and 0.3"),
            "{err}"
        );
    }
}

/// A server that answers every request at once, without reading its body,
/// and closes: what many servers do for a `GET`.
async fn answering_at_once() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let ok = hyper::service::service_fn(|_| async {
                    let body = http_body_util::Full::new(bytes::Bytes::from_static(b"ok"));
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(body))
                });
                let mut conn = hyper::server::conn::http1::Builder::new();
                let _ = conn.keep_alive(false).serve_connection(hyper_util::rt::TokioIo::new(tcp), ok).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_succeed_when_the_server_answers_before_the_body_ends() {
    use ensemble_protocol::service::ServiceAddr;
    let addr = answering_at_once().await;
    let services = BTreeMap::from([(
        "web".to_string(),
        vec![ServiceAddr {
            machine: "here".into(),
            host: "127.0.0.1".into(),
            port: Some(addr.port()),
            ports: BTreeMap::new(),
        }],
    )]);
    let caps = Capabilities { net: vec!["service:web".into()], ..Capabilities::default() };
    let grants = Grants::within(&caps, &ensemble_runner::sandbox::HostPolicy::open(), &services).unwrap();
    let env = env_with_grants(&[("gets", "500")], grants, Arc::default(), Duration::from_secs(120));
    let suite = load(&sandbox(), artifacts::HTTP_PROBE).await;
    // The guest finishes each request's empty body while the answer comes
    // and the connection closes: every one of 500 GETs must still pass.
    let r = run(&suite, "gets", &env).await;
    assert_eq!(r.outcome, Outcome::Passed, "{r:?}");
}
