//! Resolving a plan entry's `suite` to bytes.
//!
//! An entry names a `.wasm` component or a suite project's directory,
//! relative to the plan file. A project is built first — a Rust crate for
//! `wasm32-wasip2` with cargo, incrementally, the way `cargo test` builds
//! tests; a Python or JavaScript project with its component tooling (see
//! [`lang`]) — so a plan over source works on a fresh clone with no manual
//! step. Errors name the entry field and the path.

pub mod lang;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use ensemble_protocol::plan::{Plan, Problem};

use crate::sandbox::sha256_hex;

/// A suite read (or built) from disk.
#[derive(Clone, Debug)]
pub struct LocalSuite {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
    pub bytes: Arc<Vec<u8>>,
}

/// A suite that could not be resolved, at its plan field.
#[derive(Debug, thiserror::Error)]
#[error("{problem}")]
pub struct SuiteLoadError {
    pub problem: Problem,
}

/// Reads or builds every entry's suite, in entry order.
pub fn resolve_all(plan: &Plan, plan_dir: &Path) -> Result<Vec<LocalSuite>, SuiteLoadError> {
    plan.entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            resolve(&plan_dir.join(&e.suite)).map_err(|message| SuiteLoadError {
                problem: Problem { path: format!("entries[{i}].suite"), message },
            })
        })
        .collect()
}

/// Reads a `.wasm` file, or builds a crate directory and reads its output.
pub fn resolve(path: &Path) -> Result<LocalSuite, String> {
    let shown = path.display().to_string();
    let wasm = if path.is_dir() {
        lang::build(path)?
    } else if path.is_file() {
        path.to_path_buf()
    } else {
        return Err(format!("{shown}: no such file or directory"));
    };
    let bytes = std::fs::read(&wasm).map_err(|e| format!("{}: {e}", wasm.display()))?;
    let name = if path.is_dir() { lang::project_name(path) } else { file_stem(&wasm) };
    Ok(LocalSuite { name, sha256: sha256_hex(&bytes), path: wasm, bytes: Arc::new(bytes) })
}

fn file_stem(path: &Path) -> String {
    path.file_stem().and_then(|s| s.to_str()).unwrap_or("suite").replace('_', "-")
}

/// Builds the crate at `dir` for wasm32-wasip2 (release) and returns the
/// component it produced.
pub fn build_crate(dir: &Path) -> Result<PathBuf, String> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(format!(
            "{} is a directory without a Cargo.toml; name a .wasm file or a suite crate",
            dir.display()
        ));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--target", "wasm32-wasip2", "--message-format=json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(&manifest);
    ensemble_build_support::clean_cargo_env(&mut cmd);
    cmd.stderr(std::process::Stdio::inherit());
    eprintln!("Building suite crate {} for wasm32-wasip2…", dir.display());
    let out = cmd.output().map_err(|e| format!("could not run cargo to build {}: {e}", dir.display()))?;
    if !out.status.success() {
        return Err(format!(
            "building {} failed (see cargo's output above); if the target is missing, run \
             `rustup target add wasm32-wasip2`",
            dir.display()
        ));
    }
    let want = manifest.canonicalize().unwrap_or(manifest);
    let mut found = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let same = msg["manifest_path"].as_str().is_some_and(|p| Path::new(p) == want);
        if !same {
            continue;
        }
        let mut files = msg["filenames"].as_array().into_iter().flatten().filter_map(|f| f.as_str());
        if let Some(f) = files.rfind(|f| f.ends_with(".wasm")) {
            found = Some(PathBuf::from(f));
        }
    }
    found.ok_or_else(|| {
        format!("building {} produced no .wasm component; a suite crate is a cdylib or a bin", dir.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crate_is_named_by_its_package_even_as_dot() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"my-suite\"\nversion = \"0.1.0\"\n",
        )
        .unwrap();
        assert_eq!(lang::project_name(dir.path()), "my-suite");
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(lang::project_name(&cwd.join(dir.path()).join(".")), "my-suite");
        // No package name to read: the directory's name.
        let bare = tempfile::tempdir().unwrap();
        let name = bare.path().file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(lang::project_name(bare.path()), name);
    }
}
