//! Isolation against none: 1,000 trivial tests of one libtest harness
//! (`suites/examples/libtest-thousand`), each in a fresh wasm instance, as
//! `ensemble run PLAN` runs them, against the same tests run natively by
//! `cargo test --release` (threads in one process, no isolation) and by
//! `cargo nextest run --release` (a process per test). Whole commands, as a
//! user types them, each already built (their build is not timed); rounds
//! interleave the three and the medians are compared.
//!
//! cargo-nextest is installed from crates.io (`cargo install --locked`) when
//! it is absent.
//!
//! `cargo bench -p ensemble-runner --bench vs_cargo [-- --rounds N]`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ensemble_tests::repo_root;

/// The nextest release installed when there is none.
const NEXTEST: &str = "0.9.111";

/// A command, built once before any round.
struct Contender {
    label: &'static str,
    cmd: Box<dyn Fn() -> Command>,
    times: Vec<f64>,
}

/// `cargo` for the native baselines: the example suites' workspace, its own
/// target dir, without what the outer `cargo bench` set for itself.
fn cargo(target_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if (k.starts_with("CARGO_") && k != "CARGO_HOME") || k == "RUSTFLAGS" || k == "RUSTC_WRAPPER" {
            cmd.env_remove(&*k);
        }
    }
    cmd.args(args)
        .arg("--manifest-path")
        .arg(repo_root().join("suites/examples/Cargo.toml"))
        .args(["-p", "libtest-thousand", "--release", "--locked"])
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(repo_root());
    cmd
}

fn has_nextest() -> bool {
    Command::new("cargo").args(["nextest", "--version"]).output().is_ok_and(|o| o.status.success())
}

fn run(cmd: &mut Command, what: &str) -> f64 {
    let started = Instant::now();
    let out = cmd.output().unwrap_or_else(|e| panic!("{what} did not start: {e}"));
    let secs = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    secs
}

fn median(times: &[f64]) -> f64 {
    let mut t = times.to_vec();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn rounds() -> usize {
    let argv: Vec<String> = std::env::args().collect();
    argv.iter()
        .position(|a| a == "--rounds")
        .map_or(10, |i| argv.get(i + 1).and_then(|n| n.parse().ok()).expect("--rounds N"))
}

fn main() {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_ensemble"));
    let dir = tempfile::tempdir().unwrap();
    let native = repo_root().join("target/bench-native");
    // One entry of `suite` on this machine, with `extra` lines.
    let plan_of = |name: &str, suite: &str, extra: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        let text = format!(
            "name = {name:?}\n[[profiles]]\nname = \"here\"\n[[entries]]\nsuite = {suite:?}\nprofile = \"here\"\n{extra}"
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let plan = plan_of("thousand", ensemble_artifacts::LIBTEST_THOUSAND, "");
    // The same 1,000 trivial tests written with the Rust SDK (`sdk-thousand`).
    let sdk_plan = plan_of("sdk", ensemble_artifacts::SDK_THOUSAND, "");

    if !has_nextest() {
        eprintln!("installing cargo-nextest {NEXTEST} from crates.io (once)…");
        let status = Command::new("cargo")
            .args(["install", "--locked", "cargo-nextest", "--version", NEXTEST])
            .status()
            .expect("cargo install runs");
        assert!(status.success(), "cargo install cargo-nextest failed");
    }

    let cache = dir.path().join("cache");
    let ensemble_cmd = |plan: &Path| {
        let (bin, plan, cache) = (bin.clone(), plan.to_path_buf(), cache.clone());
        move || {
            let mut c = Command::new(&bin);
            c.arg("run").arg(&plan).arg("--no-progress").env("ENSEMBLE_CACHE_DIR", &cache);
            c
        }
    };
    let mut contenders = vec![
        Contender {
            label: "ensemble run (a fresh wasm instance per test)",
            cmd: Box::new(ensemble_cmd(&plan)),
            times: vec![],
        },
        Contender {
            label: "cargo test --release (threads, one process)",
            cmd: Box::new({
                let native = native.clone();
                move || cargo(&native, &["test"])
            }),
            times: vec![],
        },
        Contender {
            label: "cargo nextest run --release (a process per test)",
            cmd: Box::new({
                let native = native.clone();
                move || cargo(&native, &["nextest", "run"])
            }),
            times: vec![],
        },
        Contender {
            label: "ensemble run, the same tests as a Rust SDK suite",
            cmd: Box::new(ensemble_cmd(&sdk_plan)),
            times: vec![],
        },
    ];
    // Untimed: builds, and the compiled-suite cache filled.
    for c in &contenders {
        run(&mut (c.cmd)(), c.label);
    }
    let rounds = rounds();
    for _ in 0..rounds {
        for c in &mut contenders {
            let t = run(&mut (c.cmd)(), c.label);
            c.times.push(t);
        }
    }
    let ours = median(&contenders[0].times);
    println!(
        "1,000 trivial tests of one libtest harness, median of {rounds} rounds (wall time of the whole command):"
    );
    for c in &contenders {
        let m = median(&c.times);
        println!("  {:<52} {:>8.3} s   {:>6.2}× the time of the first", c.label, m, m / ours);
    }
    let vs_test = median(&contenders[1].times) / ours;
    let vs_nextest = median(&contenders[2].times) / ours;
    let sdk_time = median(&contenders[3].times);
    let (sdk, sdk_nextest) =
        (median(&contenders[1].times) / sdk_time, median(&contenders[2].times) / sdk_time);
    println!(
        "row isolation: vs cargo test {vs_test:.2}× (target ≥ 1×: {}), vs nextest {vs_nextest:.1}× (target ≥ 50×: {})",
        met(vs_test >= 1.0),
        met(vs_nextest >= 50.0)
    );
    println!(
        "row isolation, the same tests written with the SDK: vs cargo test {sdk:.2}× (target ≥ 4×: {}), \
         vs nextest {sdk_nextest:.1}× (target ≥ 50×: {})",
        met(sdk >= 4.0),
        met(sdk_nextest >= 50.0)
    );
}

fn met(yes: bool) -> &'static str {
    if yes { "met" } else { "not met" }
}
