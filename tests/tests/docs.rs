//! The documentation cannot drift from what it documents: the plan reference
//! lists exactly the fields a plan has, with the defaults the plan types
//! give, and its example is a valid plan; the README's tour shows the demo
//! plan as it is on disk, and `plan check` accepts it.

use std::collections::BTreeSet;

use ensemble_protocol::Plan;
use ensemble_tests::{ensemble, repo_root};

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The reference's table rows: (field path, its cells).
fn rows(reference: &str) -> Vec<(String, Vec<String>)> {
    reference
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| {
            let cells: Vec<String> = l.split(" | ").map(|c| c.trim_matches(['|', ' ']).to_string()).collect();
            let path = cells.first()?.strip_prefix('`')?.strip_suffix('`')?.to_string();
            Some((path, cells))
        })
        .collect()
}

/// Every field path of a plan, as serialized with every optional field set.
fn plan_fields() -> BTreeSet<String> {
    let plan = Plan::from_toml(
        r#"
name = "all"
description = "every field"
[settings]
partition = "hash:1/2"
test_threads = 2
[[profiles]]
name = "p"
labels = { tier = "a" }
machine = "m"
[[entries]]
suite = "s.wasm"
profile = "p"
role = "r"
params = { k = 1 }
capabilities = { net = ["127.0.0.1:1"], env = ["E"], faults = ["db"] }
filter = "not tag(slow)"
tests = ["a"]
split = "tests"
[[services]]
name = "db"
profile = "p"
command = ["db-server", "--port", "{port}"]
ready = { tcp = "{port}" }
ready_timeout = "20s"
stop_timeout = "5s"
env = { MODE = "test" }
[[notify]]
url = "https://hooks.example/ci"
on = "failed"
format = "slack"
[[schedule]]
cron = "0 2 * * *"
timezone = "Europe/Berlin"
"#,
    )
    .unwrap();
    let value = serde_json::to_value(&plan).unwrap();
    let mut out = BTreeSet::new();
    for (key, v) in value.as_object().unwrap() {
        out.insert(key.clone());
        let (prefix, inner) = match v {
            serde_json::Value::Object(o) => (key.clone(), o.clone()),
            serde_json::Value::Array(a) => (format!("{key}[]"), a[0].as_object().unwrap().clone()),
            _ => continue,
        };
        for (k, v) in inner {
            out.insert(format!("{prefix}.{k}"));
            if k == "capabilities" {
                for k2 in v.as_object().unwrap().keys() {
                    out.insert(format!("{prefix}.capabilities.{k2}"));
                }
            }
            if k == "ready" {
                // One check is set at a time: every one a service may set.
                let every = ensemble_protocol::service::Ready {
                    tcp: Some("{port}".into()),
                    http: Some("/".into()),
                    log: Some("up".into()),
                };
                for k2 in serde_json::to_value(every).unwrap().as_object().unwrap().keys() {
                    out.insert(format!("{prefix}.ready.{k2}"));
                }
            }
        }
    }
    out
}

#[test]
fn the_plan_reference_lists_every_field_with_its_default() {
    let reference = read("docs/plan-reference.md");
    let rows = rows(&reference);
    let documented: BTreeSet<String> = rows.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(documented, plan_fields(), "docs/plan-reference.md and the plan types differ");

    // Each setting's default, as a plan with none written serializes it.
    let defaults = Plan::from_toml(
        "name = \"d\"\n[[profiles]]\nname = \"p\"\n[[entries]]\nsuite = \"s.wasm\"\nprofile = \"p\"\n",
    )
    .unwrap()
    .to_toml();
    let table: toml::Table = defaults.parse().unwrap();
    let mut checked = 0;
    for (key, value) in table["settings"].as_table().unwrap() {
        let (_, cells) = rows.iter().find(|(p, _)| *p == format!("settings.{key}")).unwrap();
        let shown = format!("`{value}`");
        assert_eq!(
            cells[2], shown,
            "settings.{key}: the reference says {} but the default is {shown}",
            cells[2]
        );
        checked += 1;
    }
    assert_eq!(checked, 11);
    let count = &rows.iter().find(|(p, _)| p == "profiles[].count").unwrap().1;
    assert_eq!(count[2], format!("`{}`", table["profiles"][0]["count"]));

    // The whole plan it shows is a valid plan.
    let example = reference.split("```toml\n").nth(1).unwrap().split("```").next().unwrap();
    Plan::from_toml(example).unwrap().validate().unwrap();
}

#[test]
fn the_tour_shows_the_demo_plan_as_it_is_and_it_checks() {
    let readme = read("README.md");
    let tour = readme.split("## A five-minute tour").nth(1).unwrap();
    let block = tour.split("```toml\n").nth(1).unwrap().split("   ```").next().unwrap();
    let shown: String = block.lines().map(|l| format!("{}\n", l.strip_prefix("   ").unwrap_or(l))).collect();
    assert_eq!(
        shown,
        read("suites/plans/demo.toml"),
        "the README's tour differs from suites/plans/demo.toml"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = ensemble(&["plan", "check", "suites/plans/demo.toml"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn every_filter_the_filter_guide_shows_parses() {
    let guide = read("docs/filters.md");
    let mut shown = 0;
    for line in guide.lines().filter(|l| l.starts_with("| `")) {
        let cell = line.trim_start_matches("| `").split("` |").next().unwrap();
        // A table cell writes `|` as `\|`.
        let expr = cell.replace("\\|", "|");
        ensemble_protocol::filter::Filter::parse(&expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        shown += 1;
    }
    assert!(shown >= 10, "the guide's tables of expressions: {shown}");
}
