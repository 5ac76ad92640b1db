//! `cargo xtask test`: the README's test command. It prepares what the
//! tests need on this machine — Debian packages (the browser, the other
//! CPUs and OSes, systemd, buildah, Redis), the Rust targets, and pinned
//! Python and npm tools installed into `target/` — then runs every test
//! binary (`cargo test --workspace --no-fail-fast`) with those tools on
//! `PATH`, and ends with one summary line. Each step says what it did and
//! how long it took; with everything in place the set-up takes well under
//! a second.
//!
//! Where it cannot install a missing Debian package (not root, no `sudo`),
//! it stops before building, printing the `apt-get install` line to run
//! (exit 2). On a machine without `apt-get` it says which tests it cannot
//! prepare, runs every test anyway, and exits non-zero naming what was
//! missing — never a silent pass.
//!
//! `cargo xtask setup` does the set-up alone; `cargo xtask test -- ARGS`
//! passes ARGS to `cargo test` (e.g. `-p ensemble-tests --test browser`).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// A Debian package the tests need, how to tell it is there, and for what.
struct Package {
    name: &'static str,
    /// A command on `PATH`, or an absolute path to a file.
    present: &'static str,
    for_what: &'static str,
}

const PACKAGES: &[Package] = &[
    Package { name: "chromium", present: "chromium", for_what: "the browser tests" },
    Package { name: "chromium-driver", present: "chromedriver", for_what: "the browser tests" },
    Package { name: "systemd", present: "systemd-analyze", for_what: "the deployment tests" },
    Package { name: "buildah", present: "buildah", for_what: "the deployment tests (the container image)" },
    Package { name: "qemu-user", present: "qemu-aarch64", for_what: "the heterogeneous tests (aarch64)" },
    Package {
        name: "gcc-aarch64-linux-gnu",
        present: "aarch64-linux-gnu-gcc",
        for_what: "the heterogeneous tests (aarch64)",
    },
    Package {
        name: "libc6-dev-arm64-cross",
        present: "/usr/aarch64-linux-gnu/lib/libc.so.6",
        for_what: "the heterogeneous tests (aarch64)",
    },
    Package {
        name: "gcc-mingw-w64-x86-64",
        present: "x86_64-w64-mingw32-gcc",
        for_what: "the heterogeneous tests (Windows)",
    },
    Package {
        name: "wine64",
        present: "/usr/lib/wine/wine64",
        for_what: "the heterogeneous tests (Windows)",
    },
    Package { name: "redis-server", present: "redis-server", for_what: "the services tests" },
    VENV,
    Package {
        name: "ca-certificates",
        present: "/etc/ssl/certs/ca-certificates.crt",
        for_what: "installing the pinned tools",
    },
];

/// Python with `venv` (Debian splits it off; it brings python3).
const VENV: Package = Package {
    name: "python3-venv",
    present: "python3",
    for_what: "the Python tools (polyglot, deployment and API tests)",
};

/// npm, unless one is there already (a Node.js from elsewhere brings its
/// own, and conflicts with Debian's package).
const NPM: &[Package] = &[
    Package { name: "nodejs", present: "npm", for_what: "the accessibility and JavaScript suite tests" },
    Package { name: "npm", present: "npm", for_what: "the accessibility and JavaScript suite tests" },
];

/// The Rust targets beyond the host's: suites, the browser app, and the
/// runners for the other machines.
const TARGETS: &[&str] =
    &["wasm32-wasip2", "wasm32-unknown-unknown", "aarch64-unknown-linux-gnu", "x86_64-pc-windows-gnu"];

/// Python tools, each virtual environment with its pins.
const VENVS: &[(&str, &[&str])] = &[
    // The deployment tests validate the Kubernetes manifests; the API
    // document test validates /api/openapi.json.
    ("target/ci-venv", &["kubernetes-validate==1.37.0", "openapi-spec-validator==0.9.0"]),
    // Python suites (`ensemble suite build`).
    ("target/ci-py", &["componentize-py==0.25.1"]),
];

/// The Node.js the JavaScript suite tools need at least (their native
/// parser's `engines`; npm leaves it out on an older Node, and
/// componentize-js then cannot load), and the one installed from the npm
/// registry into `target/ci-nodejs` where the machine's is older (Debian
/// 12's is 18).
const NODE_MAJOR: u32 = 20;
const NODE: &str = "20.20.2";

/// axe-core, injected into every page by the accessibility test.
const AXE: &str = "axe-core@4.10.3";

/// mdBook, which builds the book in `docs/` (its test checks the links),
/// from crates.io without its server and file watcher.
const MDBOOK: &str = "0.5.4";

/// The tools the tests find on `PATH`, linked into `target/ci-tools`.
const TOOLS: &[(&str, &str)] = &[
    ("mdbook", "target/ci-mdbook/bin/mdbook"),
    ("componentize-py", "target/ci-py/bin/componentize-py"),
    ("esbuild", "target/ci-js/node_modules/.bin/esbuild"),
    ("componentize-js", "target/ci-js/node_modules/.bin/componentize-js"),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root =
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_path_buf();
    let (command, rest) = match args.split_first() {
        Some((c, rest)) => (c.as_str(), rest),
        None => ("help", &[][..]),
    };
    let result = match command {
        "test" => setup(&root).and_then(|missing| test(&root, rest, &missing)),
        "setup" => setup(&root).and_then(|missing| {
            if missing.is_empty() { Ok(ExitCode::SUCCESS) } else { Err(Stop::Unprepared(missing)) }
        }),
        _ => {
            println!(
                "usage: cargo xtask test [-- CARGO-TEST-ARGS]   prepare what the tests need, then run them all\n       \
                 cargo xtask setup                         only prepare"
            );
            return if command == "help" || command == "--help" {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    match result {
        Ok(code) => code,
        Err(Stop::CannotInstall(line)) => {
            eprintln!(
                "xtask: some Debian packages the tests need are missing, and this user can install none \
                 (not root, no sudo). Run, as root:\n\n  {line}\n\nthen `cargo xtask test` again."
            );
            ExitCode::from(2)
        }
        Err(Stop::Unprepared(missing)) => {
            eprintln!("xtask: not prepared on this machine: {}", missing.join("; "));
            ExitCode::from(3)
        }
        Err(Stop::Failed(why)) => {
            eprintln!("xtask: {why}");
            ExitCode::FAILURE
        }
    }
}

enum Stop {
    /// Missing packages this user cannot install: the line that would.
    CannotInstall(String),
    /// What could not be prepared here (no package manager it knows).
    Unprepared(Vec<String>),
    Failed(String),
}

/// Runs `what`, saying what it did and how long it took.
fn step<T>(what: &str, f: impl FnOnce() -> Result<(T, String), Stop>) -> Result<T, Stop> {
    let started = Instant::now();
    let (value, said) = f()?;
    println!("xtask: {what}: {said} ({})", took(started.elapsed()));
    Ok(value)
}

fn took(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Prepares everything; returns what could not be prepared (on a machine
/// without apt-get), for the tests that will fail for it.
fn setup(root: &Path) -> Result<Vec<String>, Stop> {
    let missing = step("Debian packages", debian)?;
    step("Rust targets", rust_targets)?;
    let have_python = found("python3");
    let have_npm = found("npm");
    for (dir, pins) in VENVS {
        if !have_python {
            continue;
        }
        step(&format!("Python tools in {dir}"), || venv(root, dir, pins))?;
    }
    if have_npm {
        step(&format!("Node.js {NODE_MAJOR} or later"), || nodejs(root))?;
        step("axe-core in target/ci-node", || axe(root))?;
        step("JavaScript suite tools in target/ci-js", || js_tools(root))?;
    }
    step("mdbook in target/ci-mdbook", || mdbook(root))?;
    step("tools on PATH in target/ci-tools", || tool_links(root))?;
    Ok(missing)
}

/// Whether `present` (a command on PATH, or an absolute path) is there.
fn found(present: &str) -> bool {
    if present.starts_with('/') {
        return Path::new(present).exists();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| is_executable(&dir.join(present))))
        .unwrap_or(false)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Whether this process runs as root.
fn root_user() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn debian() -> Result<(Vec<String>, String), Stop> {
    let mut wanted: Vec<&Package> = PACKAGES.iter().filter(|p| !found(p.present)).collect();
    if !found("npm") {
        wanted.extend(NPM);
    }
    if found("python3") && !python_venv_works() {
        wanted.push(&VENV);
    }
    wanted.dedup_by_key(|p| p.name);
    if wanted.is_empty() {
        return Ok((Vec::new(), "all there".into()));
    }
    let names: Vec<&str> = wanted.iter().map(|p| p.name).collect();
    let line = format!("apt-get install -y --no-install-recommends {}", names.join(" "));
    if !found("apt-get") {
        // Not Debian or Ubuntu: say what will not be ready, and go on.
        let missing: Vec<String> = wanted.iter().map(|p| format!("{} ({})", p.name, p.for_what)).collect();
        println!(
            "xtask: no apt-get here: these tests cannot be prepared and will fail: {}",
            missing.join(", ")
        );
        return Ok((missing, "none installed (no apt-get)".into()));
    }
    let sudo = if root_user() {
        None
    } else if found("sudo") && Command::new("sudo").args(["-n", "true"]).status().is_ok_and(|s| s.success()) {
        Some("sudo")
    } else {
        return Err(Stop::CannotInstall(line));
    };
    println!("xtask: installing {}", names.join(" "));
    let apt = |args: &[&str]| {
        let mut c = Command::new(sudo.unwrap_or("apt-get"));
        if sudo.is_some() {
            c.arg("apt-get");
        }
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        match c.status() {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(Stop::Failed(format!("apt-get {} failed ({s})", args.join(" ")))),
            Err(e) => Err(Stop::Failed(format!("apt-get: {e}"))),
        }
    };
    apt(&["update"])?;
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(&names);
    apt(&install)?;
    Ok((Vec::new(), format!("installed {}", names.join(" "))))
}

/// Whether `python3 -m venv` can make an environment with pip (Debian
/// splits that into python3-venv).
fn python_venv_works() -> bool {
    Command::new("python3")
        .args(["-c", "import ensurepip, venv"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn rust_targets() -> Result<((), String), Stop> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| Stop::Failed(format!("rustup: {e}")))?;
    let installed = String::from_utf8_lossy(&installed.stdout).to_string();
    let missing: Vec<&str> =
        TARGETS.iter().copied().filter(|t| !installed.lines().any(|l| l.trim() == *t)).collect();
    if missing.is_empty() {
        return Ok(((), "all there".into()));
    }
    let status = Command::new("rustup").args(["target", "add"]).args(&missing).status();
    match status {
        Ok(s) if s.success() => Ok(((), format!("added {}", missing.join(" ")))),
        _ => Err(Stop::Failed(format!("rustup target add {} failed", missing.join(" ")))),
    }
}

/// A stamp file that records what was installed, so a change of pins
/// installs again and no change costs nothing.
fn stamped(dir: &Path, want: &str) -> bool {
    std::fs::read_to_string(dir.join(".xtask-pins")).is_ok_and(|had| had == want)
}

fn stamp(dir: &Path, pins: &str) -> Result<(), Stop> {
    std::fs::write(dir.join(".xtask-pins"), pins).map_err(|e| Stop::Failed(format!("{}: {e}", dir.display())))
}

fn run(what: &str, command: &mut Command) -> Result<(), Stop> {
    match command.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(Stop::Failed(format!("{what} failed ({s})"))),
        Err(e) => Err(Stop::Failed(format!("{what}: {e}"))),
    }
}

fn venv(root: &Path, dir: &str, pins: &[&str]) -> Result<((), String), Stop> {
    let path = root.join(dir);
    let want = pins.join(" ");
    if stamped(&path, &want) {
        return Ok(((), format!("{want}: there")));
    }
    run("python3 -m venv", Command::new("python3").args(["-m", "venv", "--clear"]).arg(&path))?;
    run(
        &format!("pip install {want}"),
        Command::new(path.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(pins),
    )?;
    stamp(&path, &want)?;
    Ok(((), format!("installed {want}")))
}

fn axe(root: &Path) -> Result<((), String), Stop> {
    let path = root.join("target/ci-node");
    if stamped(&path, AXE) && path.join("node_modules/axe-core/axe.min.js").is_file() {
        return Ok(((), format!("{AXE}: there")));
    }
    std::fs::create_dir_all(&path).map_err(|e| Stop::Failed(format!("{}: {e}", path.display())))?;
    run(
        &format!("npm install {AXE}"),
        Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&path)
            .arg(AXE),
    )?;
    stamp(&path, AXE)?;
    Ok(((), format!("installed {AXE}")))
}

/// The JavaScript suite tools, pinned by `build-support/js-tools`'s lockfile.
/// The major version of the `node` first on `path`'s PATH, if it runs.
fn node_major(path: &std::ffi::OsStr) -> Option<u32> {
    let out = Command::new("node").arg("--version").env("PATH", path).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().strip_prefix('v')?.split('.').next()?.parse().ok()
}

/// PATH with `target/ci-tools` first, as the tests and the installs see it.
fn tools_path(root: &Path) -> std::ffi::OsString {
    let mut dirs = vec![root.join("target/ci-tools")];
    dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    std::env::join_paths(dirs).unwrap_or_default()
}

/// A Node.js new enough for the JavaScript suite tools: the machine's, or
/// the pinned one from the npm registry, linked into `target/ci-tools`
/// (first on the tests' PATH, and on npm's below).
fn nodejs(root: &Path) -> Result<((), String), Stop> {
    let tools = root.join("target/ci-tools");
    let link = tools.join("node");
    if std::fs::symlink_metadata(&link).is_err()
        && let Some(major) = node_major(&std::env::var_os("PATH").unwrap_or_default())
        && major >= NODE_MAJOR
    {
        return Ok(((), format!("the machine's, {major}")));
    }
    let platform = match std::env::consts::ARCH {
        "x86_64" => "linux-x64",
        "aarch64" => "linux-arm64",
        other => return Err(Stop::Failed(format!("no Node.js package for {other}"))),
    };
    let package = format!("node-{platform}@{NODE}");
    let path = root.join("target/ci-nodejs");
    let binary = path.join(format!("node_modules/node-{platform}/bin/node"));
    if !(stamped(&path, &package) && binary.is_file()) {
        std::fs::create_dir_all(&path).map_err(|e| Stop::Failed(format!("{}: {e}", path.display())))?;
        run(
            &format!("npm install {package}"),
            Command::new("npm")
                .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
                .arg(&path)
                .arg(&package),
        )?;
        stamp(&path, &package)?;
    }
    std::fs::create_dir_all(&tools).map_err(|e| Stop::Failed(format!("{}: {e}", tools.display())))?;
    if std::fs::read_link(&link).ok().as_deref() != Some(binary.as_path()) {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&binary, &link)
            .map_err(|e| Stop::Failed(format!("{}: {e}", link.display())))?;
    }
    Ok(((), format!("{package} in target/ci-nodejs (the machine's is older)")))
}

fn js_tools(root: &Path) -> Result<((), String), Stop> {
    let path = root.join("target/ci-js");
    let source = root.join("build-support/js-tools");
    let lock = std::fs::read(source.join("package-lock.json"))
        .map_err(|e| Stop::Failed(format!("the lockfile: {e}")))?;
    // npm leaves out what the Node it runs on is too old for: installed
    // again when that Node changes.
    let node = node_major(&tools_path(root)).map(|m| format!("node {m}")).unwrap_or_default();
    let same = std::fs::read(path.join("package-lock.json")).is_ok_and(|had| had == lock);
    if same && stamped(&path, &node) && path.join("node_modules/.bin/componentize-js").exists() {
        return Ok(((), "the lockfile's versions: there".into()));
    }
    std::fs::create_dir_all(&path).map_err(|e| Stop::Failed(format!("{}: {e}", path.display())))?;
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(source.join(file), path.join(file))
            .map_err(|e| Stop::Failed(format!("{file}: {e}")))?;
    }
    run(
        "npm ci",
        Command::new("npm")
            .args(["ci", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&path)
            .env("PATH", tools_path(root)),
    )?;
    stamp(&path, &node)?;
    Ok(((), format!("installed the lockfile's versions ({node})")))
}

fn mdbook(root: &Path) -> Result<((), String), Stop> {
    let path = root.join("target/ci-mdbook");
    let want = format!("mdbook {MDBOOK}");
    if stamped(&path, &want) && path.join("bin/mdbook").is_file() {
        return Ok(((), format!("{want}: there")));
    }
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    without_package_env(&mut cargo);
    run(
        &format!("cargo install {want}"),
        cargo
            .args(["install", "--quiet", "--locked", "mdbook", "--version", MDBOOK])
            .args(["--no-default-features", "--features", "search", "--root"])
            .arg(&path)
            .current_dir(root),
    )?;
    stamp(&path, &want)?;
    Ok(((), format!("installed {want}")))
}

/// Leaves out of `command`'s environment the variables cargo set for this
/// xtask as a package: nested builds are not this package's.
fn without_package_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| {
            k.starts_with("CARGO_PKG_")
                || k == "CARGO_MANIFEST_DIR"
                || k == "CARGO_CRATE_NAME"
                || k == "CARGO_BIN_NAME"
                || k == "CARGO_PRIMARY_PACKAGE"
                || k == "CARGO_MANIFEST_PATH"
        }) {
            command.env_remove(key);
        }
    }
}

fn tool_links(root: &Path) -> Result<((), String), Stop> {
    let dir = root.join("target/ci-tools");
    std::fs::create_dir_all(&dir).map_err(|e| Stop::Failed(format!("{}: {e}", dir.display())))?;
    let mut linked = 0;
    for (name, target) in TOOLS {
        let target = root.join(target);
        let link = dir.join(name);
        if !target.exists() || std::fs::read_link(&link).is_ok_and(|t| t == target) {
            continue;
        }
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link)
            .map_err(|e| Stop::Failed(format!("{}: {e}", link.display())))?;
        linked += 1;
    }
    Ok(((), if linked == 0 { "there".into() } else { format!("linked {linked}") }))
}

/// The runners for the other machines build in the background at the
/// lowest CPU priority, in the cycles the tests' build and the tests leave
/// idle; the heterogeneous tests wait for it (cargo's lock).
fn cross_build(root: &Path) -> Option<std::process::Child> {
    if !found("aarch64-linux-gnu-gcc") || !found("x86_64-w64-mingw32-gcc") {
        return None;
    }
    let log = std::fs::File::create(root.join("target/cross-build.log")).ok()?;
    let err = log.try_clone().ok()?;
    // MinGW's dlltool leaves empty files in the temporary directory: this
    // one, removed once the build ends.
    let scratch = root.join(CROSS_TMP);
    std::fs::create_dir_all(&scratch).ok()?;
    Command::new("nice")
        .args(["-n", "19", "cargo", "build", "--locked", "-p", "ensemble-runner", "--bin", "ensemble"])
        .args([
            "--profile",
            "cross",
            "--target",
            "aarch64-unknown-linux-gnu",
            "--target",
            "x86_64-pc-windows-gnu",
        ])
        .current_dir(root)
        .env("TMPDIR", &scratch)
        .stdout(log)
        .stderr(err)
        .spawn()
        .ok()
}

/// The cross build's temporary directory.
const CROSS_TMP: &str = "target/cross-build-tmp";

/// Runs every test binary; one summary line at the end.
fn test(root: &Path, args: &[String], missing: &[String]) -> Result<ExitCode, Stop> {
    let started = Instant::now();
    let path = tools_path(root);
    let args: Vec<&str> = args.iter().map(String::as_str).skip_while(|a| *a == "--").collect();
    let mut cross = if args.is_empty() { cross_build(root) } else { None };
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo.arg("test");
    if args.is_empty() {
        cargo.args(["--workspace", "--no-fail-fast"]);
    } else {
        cargo.arg("--no-fail-fast").args(&args);
    }
    // The test binaries start nested cargo builds: none of this xtask's
    // own package variables go to them.
    without_package_env(&mut cargo);
    println!(
        "xtask: cargo test {}",
        if args.is_empty() { "--workspace --no-fail-fast".to_string() } else { args.join(" ") }
    );
    let temp_before = temp_entries();
    let mut child = cargo
        .current_dir(root)
        .env("PATH", path)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Stop::Failed(format!("cargo test: {e}")))?;
    let mut totals = Totals::default();
    let out = std::io::stdout();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let Ok(line) = line else { break };
        totals.read(&line);
        let mut out = out.lock();
        let _ = writeln!(out, "{line}");
    }
    let status = child.wait().map_err(|e| Stop::Failed(format!("cargo test: {e}")))?;
    let mut cross_failed = false;
    if let Some(c) = cross.as_mut() {
        cross_failed = !c.wait().is_ok_and(|s| s.success());
        let _ = std::fs::remove_dir_all(root.join(CROSS_TMP));
        if cross_failed {
            eprintln!("xtask: the runners for the other machines did not build: target/cross-build.log");
        }
    }
    println!(
        "xtask: {} passed, {} failed, {} ignored, in {} test binaries ({})",
        totals.passed,
        totals.failed,
        totals.ignored,
        totals.binaries,
        took(started.elapsed())
    );
    // What the run left in the temporary directory (other programs on this
    // machine may have written there too: said, not failed on).
    let left: Vec<String> = temp_entries().difference(&temp_before).cloned().collect();
    if !left.is_empty() {
        let shown: Vec<&str> = left.iter().take(8).map(String::as_str).collect();
        println!(
            "xtask: {} new entries in {} since the tests started: {}{}",
            left.len(),
            std::env::temp_dir().display(),
            shown.join(", "),
            if left.len() > shown.len() { ", …" } else { "" }
        );
    }
    if !missing.is_empty() {
        return Err(Stop::Unprepared(missing.to_vec()));
    }
    Ok(if status.success() && !cross_failed && totals.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The names in the temporary directory.
fn temp_entries() -> std::collections::BTreeSet<String> {
    std::fs::read_dir(std::env::temp_dir())
        .map(|dir| dir.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// The counts of every `test result:` line.
#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
    binaries: u64,
}

impl Totals {
    fn read(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else { return };
        self.binaries += 1;
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else { continue };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_add_up() {
        let mut t = Totals::default();
        t.read(
            "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 3 filtered out; finished in 0.2s",
        );
        t.read(
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1s",
        );
        t.read("running 5 tests");
        assert_eq!((t.passed, t.failed, t.ignored, t.binaries), (15, 2, 1, 2));
    }

    #[test]
    fn commands_and_files_are_found() {
        assert!(found("sh"));
        assert!(!found("surely-no-such-command-here"));
        assert!(found("/"));
        assert!(!found("/surely/no/such/file"));
    }
}
