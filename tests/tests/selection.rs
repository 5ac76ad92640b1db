//! Test selection (`-E`, a plan entry's `filter`, `--run-ignored`,
//! `--show-filtered`) over the example suites: a table of expressions and
//! the tests each one runs, from the run's own JSON-lines events.

use std::collections::BTreeSet;

use ensemble_protocol::{Event, EventKind};
use ensemble_tests::{ensemble, repo_root};

/// A plan with an SDK suite (tags, an ignored test) and a libtest harness
/// (an ignored test), on one profile.
fn plan(dir: &std::path::Path, basics_filter: Option<&str>) -> std::path::PathBuf {
    let examples = repo_root().join("suites/examples");
    let filter = basics_filter.map(|f| format!("filter = {f:?}\n")).unwrap_or_default();
    let text = format!(
        "name = \"selection\"\ntype = \"cross-platform\"\n[settings]\ntest_timeout = \"20s\"\n\
         [[profiles]]\nname = \"here\"\n\
         [[entries]]\nsuite = {:?}\nparams = {{ greeting = \"hi\" }}\n{filter}\
         [[entries]]\nsuite = {:?}\nrole = \"lt\"\n",
        examples.join("basics").display().to_string(),
        ensemble_artifacts::LIBTEST_DEMO,
    );
    let path = dir.join(format!("plan-{}.toml", basics_filter.map_or(0, |f| f.len())));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the plan with `args`; the (role, test, outcome, message) of every
/// test reported, and what the command printed.
fn run(dir: &std::path::Path, plan: &std::path::Path, args: &[&str]) -> (i32, BTreeSet<String>, String) {
    let json = dir.join("events.jsonl");
    let mut all = vec!["run", plan.to_str().unwrap(), "--json", json.to_str().unwrap()];
    all.extend(args);
    let out = ensemble(&all, &dir.join("cache"));
    let shown = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let code = out.status.code().unwrap();
    let mut tests = BTreeSet::new();
    for line in std::fs::read_to_string(&json).unwrap_or_default().lines() {
        let e: Event = serde_json::from_str(line).unwrap();
        if let EventKind::TestFinished { shard, test, outcome, message, .. } = e.kind {
            let why = match message.as_deref() {
                Some("filtered out") => " (filtered out)",
                Some("ignored") => " (ignored)",
                _ => "",
            };
            tests.insert(format!("{} {test} {outcome}{why}", shard.role));
        }
    }
    (code, tests, shown)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn expressions_select_exactly_what_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(dir.path(), None);
    for (args, want) in [
        (vec!["-E", "test(=adds)"], set(&["basics adds passed"])),
        (
            vec!["-E", "test(con)"],
            // A part of the name; nothing in the libtest harness's names.
            set(&["basics concatenates passed", "basics reads_context passed"]),
        ),
        (vec!["-E", "tag(demo)"], set(&["basics tagged_with_timeout passed"])),
        (
            vec!["-E", "role(lt) and not test(/fail|panic|ignored/)"],
            set(&["lt tests::adds passed", "lt tests::greets passed"]),
        ),
        (
            vec!["-E", "test(/^(adds|skips)$/) or test(=tests::adds)"],
            set(&["basics adds passed", "basics skips skipped", "lt tests::adds passed"]),
        ),
        // Two -E are either one.
        (vec!["-E", "test(=adds)", "-E", "test(=naps)"], set(&["basics adds passed", "basics naps passed"])),
        // Ignored tests are skipped when selected, run with --run-ignored.
        (
            vec!["-E", "test(ignored)"],
            set(&["basics ignored skipped (ignored)", "lt tests::ignored skipped (ignored)"]),
        ),
        (
            vec!["-E", "test(ignored)", "--run-ignored", "all"],
            set(&["basics ignored passed", "lt tests::ignored passed"]),
        ),
        (vec!["--run-ignored", "only"], set(&["basics ignored passed", "lt tests::ignored passed"])),
        (
            vec!["-E", "suite(basics) and test(=adds)", "--run-ignored", "only"],
            // Only ignored tests run; adds is not one: all is filtered out.
            BTreeSet::new(),
        ),
        (vec!["-E", "none()"], BTreeSet::new()),
    ] {
        let (code, got, shown) = run(dir.path(), &plan, &args);
        assert_eq!(got, want, "{args:?}:\n{shown}");
        if want.is_empty() {
            assert!(shown.contains("No test was selected: check the filter"), "{args:?}:\n{shown}");
        }
        let failing = got.iter().any(|t| t.ends_with(" failed"));
        assert_eq!(code, if failing { 1 } else { 0 }, "{args:?}:\n{shown}");
    }
}

#[test]
fn filtered_tests_are_shown_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    // The plan entry's own filter, and -E on top: both must hold.
    let plan = plan(dir.path(), Some("not test(/fail|panic/)"));
    let (code, got, shown) = run(dir.path(), &plan, &["-E", "suite(basics) and test(s)"]);
    assert_eq!(code, 0, "{shown}");
    assert!(got.contains("basics adds passed") && got.contains("basics naps passed"), "{got:?}");
    assert!(!got.iter().any(|t| t.contains("fails_check_eq") || t.starts_with("lt ")), "{got:?}");
    assert!(shown.contains("filtered out"), "the summary counts what was left out:\n{shown}");

    let (_, shown_too, _) = run(dir.path(), &plan, &["-E", "suite(basics) and test(s)", "--show-filtered"]);
    assert!(shown_too.contains("basics fails_check_eq skipped (filtered out)"), "{shown_too:?}");
    assert!(shown_too.contains("lt tests::adds skipped (filtered out)"), "{shown_too:?}");
    assert!(shown_too.is_superset(&got), "{shown_too:?}");
}

#[test]
fn a_bad_expression_is_exit_2_with_where_it_goes_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let plan_path = plan(dir.path(), None);
    let out =
        ensemble(&["run", plan_path.to_str().unwrap(), "-E", "test(a) an tag(b)"], &dir.path().join("cache"));
    let shown = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(shown.contains("-E: at column 9: expected `and`, `or` or the end of the expression"), "{shown}");
    assert!(shown.contains("  test(a) an tag(b)\n          ^"), "{shown}");
    assert!(!shown.contains("Building suite crate"), "refused before any build:\n{shown}");

    // In a plan, the field is named.
    let bad = plan(dir.path(), Some("tag(x"));
    for args in [vec!["plan", "check", bad.to_str().unwrap()], vec!["run", bad.to_str().unwrap()]] {
        let out = ensemble(&args, &dir.path().join("cache"));
        let shown =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(2), "{shown}");
        assert!(shown.contains("entries[0].filter: at column 6: expected `)`"), "{shown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_on_a_server_selects_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let server = ensemble_tests::start_server(dir.path(), &dir.path().join("data"), "selection-token", &[]);
    let plan = plan(dir.path(), None);
    let json = dir.path().join("remote.jsonl");
    let out = ensemble_tests::ensemble_async(
        &[
            "run",
            plan.to_str().unwrap(),
            "--server",
            &server.url,
            "--token",
            "selection-token",
            "-E",
            "tag(demo) or test(=tests::ignored)",
            "--run-ignored",
            "all",
            "--json",
            json.to_str().unwrap(),
        ],
        &dir.path().join("cache"),
    )
    .await;
    let shown = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{shown}");
    let mut ran = BTreeSet::new();
    for line in std::fs::read_to_string(&json).unwrap().lines() {
        let e: Event = serde_json::from_str(line).unwrap();
        if let EventKind::TestFinished { shard, test, outcome, .. } = e.kind {
            ran.insert(format!("{} {test} {outcome}", shard.role));
        }
    }
    assert_eq!(ran, set(&["basics tagged_with_timeout passed", "lt tests::ignored passed"]), "{shown}");
    assert!(shown.contains("14 filtered out"), "{shown}");
}

/// The tests a run took, without outcomes: (role, test).
fn names(tests: &BTreeSet<String>) -> BTreeSet<String> {
    tests.iter().map(|t| t.split(' ').take(2).collect::<Vec<_>>().join(" ")).collect()
}

#[test]
fn partitions_are_disjoint_and_cover_every_test_for_both_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan(dir.path(), None);
    let (_, whole, _) = run(dir.path(), &plan, &[]);
    let whole = names(&whole);
    assert_eq!(whole.len(), 16, "{whole:?}");
    for kind in ["count", "hash"] {
        let mut seen = BTreeSet::new();
        for k in 1..=3 {
            let part = format!("{kind}:{k}/3");
            let (_, got, shown) = run(dir.path(), &plan, &["--partition", &part]);
            let got = names(&got);
            assert!(seen.is_disjoint(&got), "{part} repeats tests: {got:?}");
            assert!(shown.contains("filtered out"), "{part}:\n{shown}");
            if kind == "count" {
                // Round-robin per role: 11 of basics and 4 of the harness.
                assert!((4..=6).contains(&got.len()), "{part}: {got:?}");
            }
            seen.extend(got);
        }
        assert_eq!(seen, whole, "the {kind} parts together are the whole run");
    }
    let out =
        ensemble(&["run", plan.to_str().unwrap(), "--partition", "hash:4/3"], &dir.path().join("cache"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("part 4 of 3 does not exist"));
}

/// Suites that wait for each other are not split: the whole demo runs in
/// one part, and the other part runs none of it (and waits for nothing).
#[test]
fn coordinating_suites_stay_whole_in_one_part() {
    let dir = tempfile::tempdir().unwrap();
    let demo = repo_root().join("suites/plans/demo.toml");
    let mut sizes = Vec::new();
    for k in 1..=2 {
        let part = format!("count:{k}/2");
        let (code, got, shown) = run(dir.path(), &demo, &["--partition", &part]);
        assert_eq!(code, 0, "{part}:\n{shown}");
        assert!(got.iter().all(|t| t.ends_with(" passed")), "{part}: {got:?}");
        sizes.push(got.len());
    }
    sizes.sort();
    assert_eq!(sizes, [0, 6], "all six demo tests in one part");
}

/// `duration:K/N` balances by the plan's latest whole run on a server, and
/// by the same run's durations written to a file for standalone jobs: the
/// long test gets a part of its own, and both ways agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_parts_balance_by_recorded_durations() {
    let dir = tempfile::tempdir().unwrap();
    let server = ensemble_tests::start_server(dir.path(), &dir.path().join("data"), "durations-token", &[]);
    let plan = dir.path().join("skewed.toml");
    std::fs::write(
        &plan,
        format!(
            "name = \"skewed\"\n[[profiles]]\nname = \"here\"\n[[entries]]\nsuite = {:?}\nprofile = \"here\"\n\
             filter = \"not test(/fails|panics/)\"\nparams = {{ nap_ms = 5000, greeting = \"hi\", expected = \"hi\" }}\n",
            repo_root().join("suites/examples/basics").display().to_string()
        ),
    )
    .unwrap();
    let plan = plan.to_str().unwrap();
    let remote = ["--server", server.url.as_str(), "--token", "durations-token"];
    let (code, whole, shown) = run(dir.path(), plan.as_ref(), &remote);
    assert_eq!(code, 0, "{shown}");
    let whole = names(&whole);
    let first_run = server.client().runs().await.unwrap()[0].id.clone();

    let parts = |extra: &[&str]| -> Vec<BTreeSet<String>> {
        (1..=2)
            .map(|k| {
                let part = format!("duration:{k}/2");
                let mut args = vec!["--partition", part.as_str()];
                args.extend(extra);
                let (code, got, shown) = run(dir.path(), plan.as_ref(), &args);
                assert_eq!(code, 0, "{part}:\n{shown}");
                names(&got)
            })
            .collect()
    };
    let served = parts(&remote);
    assert!(served[0].is_disjoint(&served[1]));
    assert_eq!(served[0].union(&served[1]).cloned().collect::<BTreeSet<_>>(), whole);
    let alone = served.iter().find(|p| p.contains("basics naps")).unwrap();
    assert_eq!(alone.len(), 1, "the 5 s test has a part of its own: {served:?}");

    // The same run's durations, to a file, split a standalone run the same way.
    let file = dir.path().join("durations.json");
    let out = ensemble_tests::ensemble_async(
        &[
            "durations",
            &first_run,
            "--server",
            &server.url,
            "--token",
            "durations-token",
            "--out",
            file.to_str().unwrap(),
        ],
        &dir.path().join("cache"),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let standalone = parts(&["--durations", file.to_str().unwrap()]);
    assert_eq!(standalone, served, "a file of the same run splits the same way");
}

/// `split = "tests"`: an entry's machines divide its tests, each test runs
/// once; the first run deals them by count, the next balances them by the
/// first's durations (the assignment `balance` gives, whatever the load).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_entry_runs_each_test_once_and_balances_by_history() {
    use std::collections::BTreeMap;
    let dir = tempfile::tempdir().unwrap();
    let server = ensemble_tests::start_server(dir.path(), &dir.path().join("data"), "split-token", &[]);
    let _a = ensemble_tests::start_runner(dir.path(), &server, "split-a", &["pool=split"], None);
    let _b = ensemble_tests::start_runner(dir.path(), &server, "split-b", &["pool=split"], None);
    server.wait_online(3).await;
    let plan = dir.path().join("split.toml");
    std::fs::write(
        &plan,
        format!(
            "name = \"split\"\n[[profiles]]\nname = \"pool\"\nlabels = {{ pool = \"split\" }}\ncount = 2\n\
             [[entries]]\nsuite = {:?}\nprofile = \"pool\"\nsplit = \"tests\"\nparams = {{ scale_ms = 5 }}\n",
            ensemble_artifacts::SKEWED
        ),
    )
    .unwrap();
    let remote = ["--server", server.url.as_str(), "--token", "split-token"];
    // Which machine ran which test, and how long each took.
    let placed = |json: &std::path::Path| {
        let mut by_machine: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut took = BTreeMap::new();
        for line in std::fs::read_to_string(json).unwrap().lines() {
            let e: Event = serde_json::from_str(line).unwrap();
            if let EventKind::TestFinished { shard, test, duration_ms, .. } = e.kind {
                assert!(took.insert(test.clone(), duration_ms).is_none(), "{test} ran twice");
                by_machine.entry(shard.machine).or_default().insert(test);
            }
        }
        (by_machine, took)
    };
    let (code, tests, shown) = run(dir.path(), &plan, &remote);
    assert_eq!(code, 0, "{shown}");
    assert_eq!(tests.len(), 24, "each of the 24 tests once: {tests:?}");
    assert!(shown.contains("Split skewed over 2 machines: the busiest ran tests for"), "{shown}");
    let (first, took) = placed(&dir.path().join("events.jsonl"));
    assert_eq!(first.len(), 2, "both machines took a share: {first:?}");

    let (code, _, shown) = run(dir.path(), &plan, &remote);
    assert_eq!(code, 0, "{shown}");
    let (second, _) = placed(&dir.path().join("events.jsonl"));
    // The second run's shares are the balance of the first run's durations.
    let names: Vec<String> = (0..24).map(|i| format!("s{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let parts = ensemble_protocol::filter::balance(&refs, &took, 2);
    let mut expected: Vec<BTreeSet<String>> = vec![BTreeSet::new(), BTreeSet::new()];
    for (name, part) in names.iter().zip(parts) {
        expected[part as usize - 1].insert(name.clone());
    }
    let mut got: Vec<BTreeSet<String>> = second.into_values().collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "balanced by the first run's durations");
    // Dealt by count (as without history), the shares would alternate.
    let mut by_count: Vec<BTreeSet<String>> =
        (0..2).map(|k| names.iter().skip(k).step_by(2).cloned().collect()).collect();
    by_count.sort();
    assert_ne!(got, by_count, "not dealt by count");

    // A suite whose machines wait for each other cannot be split.
    let kv = dir.path().join("kv.toml");
    std::fs::write(
        &kv,
        format!(
            "name = \"kv\"\n[[profiles]]\nname = \"any\"\ncount = 2\n[[entries]]\nsuite = {:?}\nprofile = \"any\"\nsplit = \"tests\"\n",
            repo_root().join("suites/examples/kv-server").display().to_string()
        ),
    )
    .unwrap();
    let out = ensemble(&["run", kv.to_str().unwrap()], &dir.path().join("cache"));
    let shown = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(shown.contains("entries[0].split: the suite of kv-server uses sync"), "{shown}");
}
