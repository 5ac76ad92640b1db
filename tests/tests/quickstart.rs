//! The README's quickstart, run as written: its section is read from the
//! README, each `sh` block's commands run in order (the install from the
//! checkout, the rest in a fresh directory with only what the install put
//! on the PATH), and each code block whose
//! first line names a file (`// my-suite/src/lib.rs`, `# my-suite/plan.toml`)
//! is written to that file. So the README and the tool cannot drift.

use std::path::Path;
use std::process::Command;

use ensemble_tests::{ensemble_bin, repo_root};

/// A fenced block of the README: its language and its lines.
struct Block {
    lang: String,
    lines: Vec<String>,
}

/// The fenced blocks of the README section whose heading starts with `title`.
fn section_blocks(readme: &str, title: &str) -> Vec<Block> {
    let start = readme.find(&format!("\n## {title}")).unwrap_or_else(|| panic!("no section {title:?}"));
    let body = &readme[start + 1..];
    let end = body[3..].find("\n## ").map_or(body.len(), |i| i + 3);
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for line in body[..end].lines() {
        match (line.strip_prefix("```"), open.take()) {
            (Some(lang), None) => open = Some(Block { lang: lang.trim().to_string(), lines: Vec::new() }),
            (Some(_), Some(block)) => blocks.push(block),
            (None, Some(mut block)) => {
                block.lines.push(line.to_string());
                open = Some(block);
            }
            (None, None) => {}
        }
    }
    blocks
}

/// The file a block's first line names, if it names one.
fn names_file(block: &Block) -> Option<&str> {
    let first = block.lines.first()?;
    let name = first.strip_prefix("// ").or_else(|| first.strip_prefix("# "))?;
    (name.contains('/') && !name.contains(' ')).then_some(name)
}

/// The toolchain the repository pins (its wasm targets are the ones CI adds).
fn pinned_toolchain() -> String {
    let text = std::fs::read_to_string(repo_root().join("rust-toolchain.toml")).unwrap();
    let table: toml::Table = text.parse().unwrap();
    table["toolchain"]["channel"].as_str().unwrap().to_string()
}

/// Runs the README's install command from the checkout, as written but for
/// three additions: `--root` (into the test's directory, not
/// `~/.cargo/bin`), `--debug` and this build's target directory, so it
/// reuses the build the tests run on instead of a release build of many
/// minutes, and `--offline` (everything it needs is here already). Then
/// checks that what it installed is the `ensemble` of this checkout.
fn install(command: &str, root: &Path) {
    let target_dir = ensemble_bin().parent().and_then(Path::parent).unwrap().to_path_buf();
    let mut args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let root_arg = root.display().to_string();
    args.extend(["--root", &root_arg, "--debug", "--offline"]);
    let mut cargo = Command::new("cargo");
    // Not as the test package (its variables would make build scripts
    // rerun here, and the demo's build after the tests rebuild them).
    ensemble_build_support::clean_cargo_env(&mut cargo);
    let out = cargo
        .args(&args)
        .current_dir(repo_root())
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTUP_TOOLCHAIN", pinned_toolchain())
        .output()
        .unwrap();
    let shown = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "`{command}` failed:\n{shown}");
    let installed = root.join("bin/ensemble");
    let version = Command::new(&installed).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout).to_string();
    assert!(version.starts_with("ensemble "), "{} --version: {version}", installed.display());
}

#[test]
fn the_readme_quickstart_works_as_written() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let blocks = section_blocks(&readme, "Quickstart");
    assert!(blocks.len() >= 4, "the quickstart has its commands and files");

    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    // The documented install puts `ensemble` here (see `install`).
    let bin = dir.path().join("installed/bin");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());

    let mut runs = Vec::new();
    for block in &blocks {
        if let Some(file) = names_file(block) {
            let target = work.join(file);
            assert!(target.exists(), "the quickstart edits {file}, which an earlier step made");
            std::fs::write(&target, block.lines[1..].join("\n") + "\n").unwrap();
            continue;
        }
        if block.lang != "sh" {
            continue;
        }
        for command in block.lines.iter().map(|l| l.trim()).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            if command.starts_with("cargo install ") {
                install(command, &dir.path().join("installed"));
                continue;
            }
            let out = Command::new("sh")
                .args(["-c", command])
                .current_dir(&work)
                .env("PATH", &path)
                .env("RUSTUP_TOOLCHAIN", pinned_toolchain())
                .env("ENSEMBLE_CACHE_DIR", dir.path().join("cache"))
                .output()
                .unwrap();
            let shown =
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success(), "`{command}` failed:\n{shown}");
            runs.push((command.to_string(), shown));
        }
    }
    let last_runs: Vec<&String> =
        runs.iter().filter(|(c, _)| c.starts_with("ensemble run")).map(|(_, out)| out).collect();
    assert_eq!(last_runs.len(), 2, "step 1 and step 2 each run the plan");
    assert!(last_runs[0].contains("PASSED: 2 test(s)"), "{}", last_runs[0]);
    assert!(last_runs[1].contains("PASSED: 4 test(s)"), "{}", last_runs[1]);
    for role in ["left", "right"] {
        assert!(last_runs[1].contains(&format!("{role}@any meets_its_partner")), "{}", last_runs[1]);
    }
    assert!(Path::new(&work.join("my-suite/target")).is_dir(), "built where the README says");
}
