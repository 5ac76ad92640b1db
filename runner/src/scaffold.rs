//! `ensemble suite new DIR [--lang rust|python|js]`: a suite project that
//! builds and passes as it is — a Rust crate depending on the Rust SDK, a
//! Python project (`pyproject.toml` naming its module) or a JavaScript
//! package, each with a test reading a declared param, and a plan that runs
//! the directory (`suite = "."`) — the first step of the quickstart.
//!
//! The Rust SDK is not published to a registry: the crate depends on it by
//! path, the checkout this binary was built from unless `--sdk` names
//! another. The Python and JavaScript SDKs come with `ensemble suite build`.

use std::path::{Path, PathBuf};

use crate::suites::lang::Lang;

const CARGO_TOML: &str = include_str!("scaffold/Cargo.toml.in");
const LIB_RS: &str = include_str!("scaffold/lib.rs.in");
const PLAN_TOML: &str = include_str!("scaffold/plan.toml.in");
const GITIGNORE: &str = include_str!("scaffold/gitignore.in");
const PYPROJECT_TOML: &str = include_str!("scaffold/pyproject.toml.in");
const SUITE_PY: &str = include_str!("scaffold/suite.py.in");
const GITIGNORE_PYTHON: &str = include_str!("scaffold/gitignore-python.in");
const PACKAGE_JSON: &str = include_str!("scaffold/package.json.in");
const SUITE_JS: &str = include_str!("scaffold/suite.js.in");
const GITIGNORE_JS: &str = include_str!("scaffold/gitignore-js.in");

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

/// Writes a new suite project in `lang` into `dir` (which must not exist or
/// be empty), named `name` (default: the directory's name); a Rust crate
/// depends on the SDK at `sdk` (default: the one this binary was built
/// with). Returns the files written.
pub fn new_suite(
    dir: &Path,
    lang: Lang,
    name: Option<&str>,
    sdk: Option<&Path>,
) -> Result<Vec<PathBuf>, String> {
    let name = match name {
        Some(n) => crate_name(Path::new(n))?,
        None => crate_name(dir)?,
    };
    if dir.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        return Err(format!("{} is not empty: give a new directory", dir.display()));
    }
    let plan = ("plan.toml", PLAN_TOML.replace("{name}", &name));
    let files = match lang {
        Lang::Rust => rust_files(&name, sdk)?,
        Lang::Python => {
            let module = name.replace('-', "_");
            vec![
                (
                    "pyproject.toml".to_string(),
                    PYPROJECT_TOML.replace("{name}", &name).replace("{module}", &module),
                ),
                (format!("{module}.py"), SUITE_PY.replace("{name}", &name)),
                (".gitignore".into(), GITIGNORE_PYTHON.to_string()),
            ]
        }
        Lang::JavaScript => vec![
            ("package.json".into(), PACKAGE_JSON.replace("{name}", &name)),
            ("suite.js".into(), SUITE_JS.replace("{name}", &name)),
            (".gitignore".into(), GITIGNORE_JS.to_string()),
        ],
    };
    let mut written = Vec::new();
    for (rel, text) in files.into_iter().chain([(plan.0.to_string(), plan.1)]) {
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

/// A Rust crate's files: its manifest (depending on the SDK by path), its
/// tests and its `.gitignore`.
fn rust_files(name: &str, sdk: Option<&Path>) -> Result<Vec<(String, String)>, String> {
    let sdk = sdk.map(Path::to_path_buf).unwrap_or_else(built_with_sdk);
    let sdk = sdk.canonicalize().ok().filter(|p| p.join("Cargo.toml").is_file()).ok_or_else(|| {
        format!(
            "the Rust SDK is not at {}: pass --sdk PATH, the suites/sdk directory of an Ensemble checkout",
            sdk.display()
        )
    })?;
    // TOML basic strings take forward slashes on every OS.
    let sdk = sdk.display().to_string().replace('\\', "/");
    Ok(vec![
        ("Cargo.toml".into(), CARGO_TOML.replace("{name}", name).replace("{sdk}", &sdk)),
        ("src/lib.rs".into(), LIB_RS.replace("{name}", name)),
        (".gitignore".into(), GITIGNORE.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_suite_is_a_crate_a_test_file_and_a_plan() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("my-suite");
        let files = new_suite(&target, Lang::Rust, None, None).unwrap();
        assert_eq!(files.len(), 4);
        let manifest = std::fs::read_to_string(target.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"my-suite\""), "{manifest}");
        let table: toml::Table = manifest.parse().unwrap();
        let sdk = table["dependencies"]["ensemble-sdk"]["path"].as_str().unwrap();
        assert!(Path::new(sdk).join("Cargo.toml").is_file(), "{sdk}");
        let plan = std::fs::read_to_string(target.join("plan.toml")).unwrap();
        ensemble_protocol::Plan::from_toml(&plan).unwrap().validate().unwrap();
        // Not over what is there, and not with a name cargo refuses.
        assert!(new_suite(&target, Lang::Rust, None, None).unwrap_err().contains("is not empty"));
        let err = new_suite(&dir.path().join("9 lives"), Lang::Rust, None, None).unwrap_err();
        assert!(err.contains("is not a crate name"), "{err}");
        let err = new_suite(&dir.path().join("x"), Lang::Rust, None, Some(&dir.path().join("nowhere")))
            .unwrap_err();
        assert!(err.contains("pass --sdk PATH"), "{err}");
    }

    #[test]
    fn python_and_js_suites_are_projects_their_builder_recognises() {
        let dir = tempfile::tempdir().unwrap();
        for (lang, project) in [(Lang::Python, "pyproject.toml"), (Lang::JavaScript, "package.json")] {
            let target = dir.path().join(format!("checks-{}", lang.name().to_lowercase()));
            let files = new_suite(&target, lang, None, None).unwrap();
            assert_eq!(files.len(), 4, "{files:?}");
            assert!(target.join(project).is_file());
            assert_eq!(crate::suites::lang::detect(&target), Ok(lang));
            let plan = std::fs::read_to_string(target.join("plan.toml")).unwrap();
            ensemble_protocol::Plan::from_toml(&plan).unwrap().validate().unwrap();
        }
        let py = dir.path().join("checks-python");
        assert!(
            std::fs::read_to_string(py.join("pyproject.toml")).unwrap().contains("app = \"checks_python\"")
        );
        assert!(py.join("checks_python.py").is_file());
    }
}
