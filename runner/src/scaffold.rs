//! `ensemble suite new DIR`: a Rust suite crate that builds and passes as
//! it is — a `Cargo.toml` depending on the Rust SDK, two tests, and a plan
//! that runs the crate (`suite = "."`) — the first step of the quickstart.
//!
//! The SDK is not published to a registry: the crate depends on it by path,
//! the checkout this binary was built from unless `--sdk` names another.

use std::path::{Path, PathBuf};

const CARGO_TOML: &str = include_str!("scaffold/Cargo.toml.in");
const LIB_RS: &str = include_str!("scaffold/lib.rs.in");
const PLAN_TOML: &str = include_str!("scaffold/plan.toml.in");
const GITIGNORE: &str = include_str!("scaffold/gitignore.in");

/// Where the SDK was when this binary was built.
fn built_with_sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../suites/sdk")
}

/// A crate name from `dir`'s last component: lowercase letters, digits, `-`
/// and `_`, starting with a letter.
fn crate_name(dir: &Path) -> Result<String, String> {
    let last = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let valid = last.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && last.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(last.to_ascii_lowercase())
    } else {
        Err(format!(
            "{last:?} is not a crate name (a letter, then letters, digits, `-` or `_`): pick another directory \
             name, or pass --name"
        ))
    }
}

/// Writes a new suite crate into `dir` (which must not exist or be empty),
/// named `name` (default: the directory's name), depending on the SDK at
/// `sdk` (default: the one this binary was built with). Returns the files
/// written.
pub fn new_suite(dir: &Path, name: Option<&str>, sdk: Option<&Path>) -> Result<Vec<PathBuf>, String> {
    let name = match name {
        Some(n) => crate_name(Path::new(n))?,
        None => crate_name(dir)?,
    };
    if dir.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        return Err(format!("{} is not empty: give a new directory", dir.display()));
    }
    let sdk = sdk.map(Path::to_path_buf).unwrap_or_else(built_with_sdk);
    let sdk = sdk.canonicalize().ok().filter(|p| p.join("Cargo.toml").is_file()).ok_or_else(|| {
        format!(
            "the Rust SDK is not at {}: pass --sdk PATH, the suites/sdk directory of an Ensemble checkout",
            sdk.display()
        )
    })?;
    // TOML basic strings take forward slashes on every OS.
    let sdk = sdk.display().to_string().replace('\\', "/");
    let files = [
        ("Cargo.toml", CARGO_TOML.replace("{name}", &name).replace("{sdk}", &sdk)),
        ("src/lib.rs", LIB_RS.replace("{name}", &name)),
        ("plan.toml", PLAN_TOML.replace("{name}", &name)),
        (".gitignore", GITIGNORE.to_string()),
    ];
    let mut written = Vec::new();
    for (rel, text) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_suite_is_a_crate_a_test_file_and_a_plan() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("my-suite");
        let files = new_suite(&target, None, None).unwrap();
        assert_eq!(files.len(), 4);
        let manifest = std::fs::read_to_string(target.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"my-suite\""), "{manifest}");
        let table: toml::Table = manifest.parse().unwrap();
        let sdk = table["dependencies"]["ensemble-sdk"]["path"].as_str().unwrap();
        assert!(Path::new(sdk).join("Cargo.toml").is_file(), "{sdk}");
        let plan = std::fs::read_to_string(target.join("plan.toml")).unwrap();
        ensemble_protocol::Plan::from_toml(&plan).unwrap().validate().unwrap();
        // Not over what is there, and not with a name cargo refuses.
        assert!(new_suite(&target, None, None).unwrap_err().contains("is not empty"));
        let err = new_suite(&dir.path().join("9 lives"), None, None).unwrap_err();
        assert!(err.contains("is not a crate name"), "{err}");
        let err = new_suite(&dir.path().join("x"), None, Some(&dir.path().join("nowhere"))).unwrap_err();
        assert!(err.contains("pass --sdk PATH"), "{err}");
    }
}
