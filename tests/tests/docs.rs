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

/// The Markdown files a reader follows links through: the README and every
/// page of the book in `docs/`.
fn markdown_files() -> Vec<std::path::PathBuf> {
    let mut files = vec![repo_root().join("README.md")];
    let mut book: Vec<_> = std::fs::read_dir(repo_root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    book.sort();
    files.extend(book);
    files
}

/// The link targets of a Markdown text (`[text](target)`, `![alt](target)`
/// and `src="target"`), outside code blocks and code spans.
fn link_targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Outside code spans: the even pieces between backticks.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        for (open, close) in [("](", ')'), ("src=\"", '"')] {
            let mut rest = prose.as_str();
            while let Some(i) = rest.find(open) {
                rest = &rest[i + open.len()..];
                if let Some(end) = rest.find(close) {
                    out.push(rest[..end].to_string());
                    rest = &rest[end..];
                }
            }
        }
    }
    out
}

/// A heading's anchor, as GitHub and mdBook make it: lower case, letters,
/// digits, `-` and `_` kept, spaces to `-`, everything else dropped.
fn anchor_of(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            ' ' => Some('-'),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            out.insert(anchor_of(line.trim_start_matches('#')));
        }
    }
    out
}

#[test]
fn every_link_of_the_readme_and_the_book_leads_somewhere() {
    let mut checked = 0;
    let mut broken = Vec::new();
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(repo_root()).unwrap().display().to_string();
        for target in link_targets(&text) {
            if target.starts_with("https://")
                || target.starts_with("http://")
                || target.starts_with("mailto:")
            {
                continue;
            }
            checked += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let resolved = if path.is_empty() { file.clone() } else { file.parent().unwrap().join(path) };
            if !resolved.exists() {
                broken.push(format!("{name}: {target}: no such file"));
                continue;
            }
            // The book is built from `docs/` alone: its pages link within it.
            let docs = repo_root().join("docs").canonicalize().unwrap();
            if file.starts_with(repo_root().join("docs"))
                && !resolved.canonicalize().unwrap().starts_with(&docs)
            {
                broken.push(format!(
                    "{name}: {target}: outside docs/, so not in the book (name the file in code)"
                ));
                continue;
            }
            if !anchor.is_empty() && resolved.extension().is_some_and(|e| e == "md") {
                let heads = anchors(&std::fs::read_to_string(&resolved).unwrap());
                if !heads.contains(anchor) {
                    broken.push(format!("{name}: {target}: no heading #{anchor} there"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked >= 40, "the README and the book link to each other: {checked} links");
}

#[test]
fn the_book_has_every_page_of_docs_in_its_summary() {
    let summary = read("docs/SUMMARY.md");
    let listed: BTreeSet<String> = link_targets(&summary).into_iter().collect();
    for file in markdown_files().into_iter().skip(1) {
        let page = file.file_name().unwrap().to_str().unwrap().to_string();
        if page != "SUMMARY.md" {
            assert!(
                listed.contains(&page),
                "docs/{page} is not in docs/SUMMARY.md, so the book leaves it out"
            );
        }
    }
}

#[test]
fn the_readme_is_short() {
    let lines = read("README.md").lines().count();
    assert!(lines <= 250, "README.md has {lines} lines; the rest belongs in the book (docs/)");
}

/// `mdbook build` (the pinned mdbook `cargo xtask test` installs) builds the
/// book without a warning, and every link between its pages lands on a page
/// and an id that exist.
#[test]
fn the_book_builds_and_its_pages_link_to_what_exists() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("mdbook")
        .args(["build", "docs", "--dest-dir"])
        .arg(out_dir.path())
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("mdbook: {e} (`cargo xtask test` installs it into target/ci-tools)"));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mdbook build docs failed:\n{said}");
    assert!(!said.contains("WARN") && !said.contains("ERROR"), "mdbook build docs warned:\n{said}");

    let mut pages = Vec::new();
    let mut stack = vec![out_dir.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "html") {
                pages.push(path);
            }
        }
    }
    let ids = |html: &str| -> BTreeSet<String> {
        html.split(" id=\"").skip(1).filter_map(|s| s.split('"').next()).map(str::to_string).collect()
    };
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in &pages {
        let html = std::fs::read_to_string(page).unwrap();
        for href in html.split(" href=\"").skip(1).filter_map(|s| s.split('"').next()) {
            if href.contains("://") || href.starts_with("mailto:") || href.starts_with("javascript:") {
                continue;
            }
            let (path, anchor) = href.split_once('#').unwrap_or((href, ""));
            let target = if path.is_empty() { page.clone() } else { page.parent().unwrap().join(path) };
            checked += 1;
            if !target.exists() {
                broken.push(format!("{}: {href}", page.strip_prefix(out_dir.path()).unwrap().display()));
            } else if !anchor.is_empty()
                && target.extension().is_some_and(|e| e == "html")
                && !ids(&std::fs::read_to_string(&target).unwrap()).contains(anchor)
            {
                broken.push(format!(
                    "{}: {href} (no such id)",
                    page.strip_prefix(out_dir.path()).unwrap().display()
                ));
            }
        }
    }
    assert!(broken.is_empty(), "the built book's broken links:\n{}", broken.join("\n"));
    assert!(pages.len() >= 17 && checked >= 100, "{} pages, {checked} links", pages.len());
}
