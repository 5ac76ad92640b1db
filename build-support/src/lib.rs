//! Running a nested cargo for another target (the example suites for
//! `wasm32-wasip2`, the browser app for `wasm32-unknown-unknown`) from a
//! build script or from the runner, without the outer build's host settings.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Settings of an enclosing cargo meant for the host: leaked into a nested
/// build for wasm they break the link, and a wrapper (clippy-driver) would
/// lint the nested crates.
pub const HOST_ONLY_VARS: [&str; 7] = [
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_WRAPPER",
];

/// What cargo tells the package it builds or tests (`CARGO_PKG_NAME`,
/// `CARGO_MANIFEST_DIR`, a build script's `OUT_DIR` and `TARGET`, …): a
/// nested cargo must not inherit it, or the build scripts it reruns see
/// another package's values and rebuild what the outer build had built.
const PACKAGE_VAR_PREFIXES: [&str; 5] =
    ["CARGO_PKG_", "CARGO_CFG_", "CARGO_FEATURE_", "CARGO_MANIFEST_", "DEP_"];
const PACKAGE_VARS: [&str; 14] = [
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
    "TARGET",
    "HOST",
    "NUM_JOBS",
    "OPT_LEVEL",
    "DEBUG",
    "PROFILE",
    "RUSTC_LINKER",
    "CARGO_MAKEFLAGS",
];

/// Clears from `command` what a nested cargo must not inherit: the
/// host-only build settings ([`HOST_ONLY_VARS`]) and every variable cargo
/// sets for the package it is building or testing.
pub fn clean_cargo_env(command: &mut Command) {
    for var in HOST_ONLY_VARS.iter().chain(&PACKAGE_VARS) {
        command.env_remove(var);
    }
    for (key, _) in env::vars_os() {
        if key.to_str().is_some_and(|k| PACKAGE_VAR_PREFIXES.iter().any(|p| k.starts_with(p))) {
            command.env_remove(key);
        }
    }
}

/// Fails with the command to run when the standard library of `target` is
/// missing (rustup does not add targets on its own on every machine).
pub fn check_target_installed(target: &str) {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", target])
        .output()
        .expect("run rustc --print target-libdir");
    let libdir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let has_std = fs::read_dir(&libdir)
        .map(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with("libstd-")))
        .unwrap_or(false);
    if !output.status.success() || !has_std {
        panic!(
            "the Rust target {target} is not installed (no std in {}); run `rustup target add {target}`",
            libdir.display()
        );
    }
}

/// A target directory for nested builds shared by every build of this
/// workspace (check, clippy and test builds have different `OUT_DIR`s, and
/// building the nested crates once is enough): `<target dir>/nested/<name>`.
pub fn shared_target_dir(out_dir: &Path, name: &str) -> PathBuf {
    nested_dir(out_dir, env::var("TARGET").ok().as_deref(), name)
}

/// [`shared_target_dir`] for a build for `triple`: OUT_DIR is
/// `<target>/<profile>/build/<pkg>-<hash>/out`, or with `--target <triple>`,
/// `<target>/<triple>/<profile>/build/<pkg>-<hash>/out`. Builds for other
/// machines share the native build's nested builds.
fn nested_dir(out_dir: &Path, triple: Option<&str>, name: &str) -> PathBuf {
    let build = out_dir.ancestors().find(|p| p.file_name().is_some_and(|n| n == "build"));
    match build.and_then(Path::parent).and_then(Path::parent) {
        Some(dir) if triple.is_some_and(|t| dir.file_name().is_some_and(|n| n == t)) => {
            dir.parent().unwrap_or(dir).join("nested").join(name)
        }
        Some(target) => target.join("nested").join(name),
        None => out_dir.join(name),
    }
}

/// Runs `cargo <args> --release --locked --target <target>` on `manifest`
/// with JSON messages, and returns its stdout. Panics with cargo's stderr
/// when it fails. `env` adds variables (e.g. profile settings).
pub fn nested_cargo(
    manifest: &Path,
    target_dir: &Path,
    target: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> String {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(args)
        .args(["--release", "--locked", "--target", target, "--message-format=json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir);
    clean_cargo_env(&mut command);
    for (k, v) in env {
        command.env(k, v);
    }
    let started = std::time::Instant::now();
    let output = command.output().unwrap_or_else(|error| panic!("failed to run {command:?}: {error}"));
    if !output.status.success() {
        panic!(
            "a nested build failed ({}):\n{command:?}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8(output.stdout).expect("cargo's JSON messages are UTF-8");
    // Cargo shows a build script's output only when it ends: say then what
    // was built and how long it took, when anything was (not on no-ops).
    let built = stdout
        .lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\"") && l.contains("\"fresh\":false"))
        .count();
    if built > 0 {
        println!(
            "cargo:warning=built {built} crate(s) of {} for {target} in {:.0} s (into {})",
            manifest.display(),
            started.elapsed().as_secs_f64(),
            target_dir.display()
        );
    }
    stdout
}

/// Tells cargo to re-run the build script when anything under `dir` changes,
/// skipping `target` and hidden directories (they change on every build).
pub fn watch_dir(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        println!("cargo:rerun-if-changed={}", dir.display());
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "target" || name.starts_with('.') {
            continue;
        }
        println!("cargo:rerun-if-changed={}", entry.path().display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_builds_share_one_dir_per_workspace_target() {
        let a = shared_target_dir(Path::new("/w/target/debug/build/x-1/out"), "ui");
        let b = shared_target_dir(Path::new("/w/target/debug/build/x-2/out"), "ui");
        assert_eq!(a, PathBuf::from("/w/target/nested/ui"));
        assert_eq!(a, b);
        let cross = Path::new("/w/target/aarch64-unknown-linux-gnu/cross/build/x-1/out");
        assert_eq!(nested_dir(cross, Some("aarch64-unknown-linux-gnu"), "ui"), a);
        assert_eq!(
            nested_dir(cross, Some("x86_64-unknown-linux-gnu"), "ui"),
            PathBuf::from("/w/target/aarch64-unknown-linux-gnu/nested/ui")
        );
    }
}
