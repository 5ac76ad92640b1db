//! Building a suite directory of any language into a component: the one
//! path behind `ensemble suite build DIR` and plans naming directories.
//!
//! The language is told by the project file: `Cargo.toml` (Rust, built by
//! cargo), `pyproject.toml` (Python, built by componentize-py), or
//! `package.json` (JavaScript, bundled by esbuild and built by
//! componentize-js). The WIT of the suite world and the Python and
//! JavaScript SDKs are part of this binary and written out beside the
//! build's output, so a suite builds against exactly the ABI its runner
//! speaks, wherever the project lives.
//!
//! Interpreted suites take seconds to build (they carry their interpreter),
//! so a build is skipped when nothing it reads changed: the project's files
//! (not `dist/`, `node_modules/`, caches), the WIT, the SDK and this
//! binary's version, hashed into a stamp beside the component.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// The suite world's WIT, as this runner speaks it.
pub const SUITE_WIT: &str = include_str!("../../../suites/wit/suite.wit");
/// The Python SDK (`suites/sdk-python`): one module.
const PYTHON_SDK: &str = include_str!("../../../suites/sdk-python/ensemble_suite/__init__.py");
/// The JavaScript SDK (`suites/sdk-js`): one ES module.
const JS_SDK: &str = include_str!("../../../suites/sdk-js/index.js");

/// The pinned tool versions the test command (`cargo xtask test`) installs and errors suggest.
pub const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
pub const COMPONENTIZE_JS: &str = "@bytecodealliance/componentize-js@0.23.0";
pub const ESBUILD: &str = "esbuild@0.28.2";

/// A suite project's language, by its project file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Python,
    JavaScript,
}

impl Lang {
    pub fn name(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::JavaScript => "JavaScript",
        }
    }

    /// `rust`, `python` or `js`, as `suite new --lang` takes it.
    pub fn parse(text: &str) -> Result<Lang, String> {
        match text.to_ascii_lowercase().as_str() {
            "rust" | "rs" => Ok(Lang::Rust),
            "python" | "py" => Ok(Lang::Python),
            "js" | "javascript" => Ok(Lang::JavaScript),
            other => Err(format!("unknown language {other:?}: use rust, python or js")),
        }
    }
}

/// The language of the project at `dir`, by the project file it holds.
pub fn detect(dir: &Path) -> Result<Lang, String> {
    if dir.join("Cargo.toml").is_file() {
        Ok(Lang::Rust)
    } else if dir.join("pyproject.toml").is_file() {
        Ok(Lang::Python)
    } else if dir.join("package.json").is_file() {
        Ok(Lang::JavaScript)
    } else {
        Err(format!(
            "{} holds no suite project: a suite directory has a Cargo.toml (Rust), a pyproject.toml \
             (Python) or a package.json (JavaScript); or name a .wasm component",
            dir.display()
        ))
    }
}

/// The suite's name as its project file gives it (its directory's name
/// without one).
pub fn project_name(dir: &Path) -> String {
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
    let named = match detect(dir) {
        Ok(Lang::Rust) => read("Cargo.toml")
            .and_then(|t| t.parse::<toml::Table>().ok())
            .and_then(|t| t.get("package")?.get("name")?.as_str().map(str::to_string)),
        Ok(Lang::Python) => read("pyproject.toml")
            .and_then(|t| t.parse::<toml::Table>().ok())
            .and_then(|t| t.get("project")?.get("name")?.as_str().map(str::to_string)),
        Ok(Lang::JavaScript) => read("package.json")
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["name"].as_str().map(|n| n.rsplit('/').next().unwrap_or(n).to_string())),
        Err(_) => None,
    };
    named.filter(|n| !n.is_empty()).unwrap_or_else(|| {
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        dir.file_name().and_then(|s| s.to_str()).unwrap_or("suite").to_string()
    })
}

/// Builds the suite project at `dir`; returns its component.
pub fn build(dir: &Path) -> Result<PathBuf, String> {
    match detect(dir)? {
        Lang::Rust => super::build_crate(dir),
        Lang::Python => build_python(dir),
        Lang::JavaScript => build_js(dir),
    }
}

/// What a Python or JavaScript build writes: `DIR/dist/NAME.wasm`, and the
/// WIT and SDK it built against under `DIR/dist/.ensemble/`. A build writes
/// its component under a name of its own (`partial`) and renames it into
/// place, so two builds at once (two plans naming one project) never read a
/// half-written component.
struct Output {
    wasm: PathBuf,
    partial: PathBuf,
    stamp: PathBuf,
    support: PathBuf,
}

fn output(dir: &Path, lang: Lang) -> Result<Output, String> {
    let name = project_name(dir).replace(['-', '.', ' ', '@', '/'], "_");
    let dist = dir.join("dist");
    let support = dist.join(".ensemble");
    let wit = support.join("wit");
    std::fs::create_dir_all(&wit).map_err(|e| format!("cannot create {}: {e}", wit.display()))?;
    write_if_changed(&wit.join("suite.wit"), SUITE_WIT)?;
    match lang {
        Lang::Python => write_if_changed(&support.join("sdk-python/ensemble_suite/__init__.py"), PYTHON_SDK)?,
        Lang::JavaScript => write_if_changed(&support.join("sdk-js/index.js"), JS_SDK)?,
        Lang::Rust => {}
    }
    Ok(Output {
        wasm: dist.join(format!("{name}.wasm")),
        partial: support.join(format!("{name}.{}.wasm", std::process::id())),
        stamp: dist.join(format!("{name}.inputs")),
        support,
    })
}

/// Writes `text` to `path` unless it holds it already; through a file of
/// this call's own (named by the process and a count: two threads of one
/// process writing at once each rename their own), renamed into place.
fn write_if_changed(path: &Path, text: &str) -> Result<(), String> {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let own = path.with_extension(format!("{}-{n}.partial", std::process::id()));
    std::fs::write(&own, text).map_err(|e| format!("cannot write {}: {e}", own.display()))?;
    std::fs::rename(&own, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Directories a build never reads from the project (outputs, caches,
/// dependencies, virtual environments, version control); and any
/// `*.egg-info`.
const NOT_INPUTS: [&str; 12] = [
    "dist",
    "build",
    "node_modules",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".tox",
    "target",
    ".git",
    ".venv",
    "venv",
    ".ensemble",
];

/// How deep a project's directories are read: a symlink loop ends here.
const MAX_DEPTH: usize = 32;

/// A hash of everything a build of `dir` reads: its files (by relative
/// path and content), the embedded WIT and SDK, and this binary's version.
fn inputs_hash(dir: &Path, lang: Lang) -> Result<String, String> {
    let mut files = Vec::new();
    collect_files(dir, dir, 0, &mut files)?;
    files.sort();
    let mut hash = Sha256::new();
    hash.update(env!("CARGO_PKG_VERSION"));
    hash.update(lang.name());
    hash.update(SUITE_WIT);
    hash.update(if lang == Lang::Python { PYTHON_SDK } else { JS_SDK });
    for rel in files {
        let bytes =
            std::fs::read(dir.join(&rel)).map_err(|e| format!("cannot read {}: {e}", rel.display()))?;
        hash.update(rel.to_string_lossy().as_bytes());
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
    }
    Ok(hex::encode(hash.finalize()))
}

/// The project's files, relative to `root`; symlinks are followed (a
/// linked source is a source), to [`MAX_DEPTH`].
fn collect_files(root: &Path, dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "{} is nested more than {MAX_DEPTH} directories deep (a symlink loop?)",
            dir.display()
        ));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        if meta.is_dir() {
            let skipped =
                NOT_INPUTS.iter().any(|n| name == *n) || name.to_string_lossy().ends_with(".egg-info");
            if !skipped {
                collect_files(root, &path, depth + 1, out)?;
            }
        } else if meta.is_file()
            && let Ok(rel) = path.strip_prefix(root)
        {
            out.push(rel.to_path_buf());
        }
    }
    Ok(())
}

/// Runs `build` unless the component at `out.wasm` was built from the same
/// inputs. One build of a project at a time (a lock file): a second
/// `ensemble` building it waits, then finds it up to date — the component
/// and its stamp always belong together.
fn unless_fresh(
    dir: &Path,
    lang: Lang,
    out: &Output,
    build: impl FnOnce() -> Result<(), String>,
) -> Result<PathBuf, String> {
    let lock_path = out.support.join("build.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    lock.lock().map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    let inputs = inputs_hash(dir, lang)?;
    let fresh = out.wasm.is_file() && std::fs::read_to_string(&out.stamp).is_ok_and(|s| s.trim() == inputs);
    if fresh {
        eprintln!("Suite {} ({}) is up to date: {}", dir.display(), lang.name(), out.wasm.display());
        return Ok(out.wasm.clone());
    }
    eprintln!("Building {} suite {}…", lang.name(), dir.display());
    let built = build();
    if built.is_ok() && !out.partial.is_file() {
        return Err(format!("building {} produced no component", dir.display()));
    }
    built.inspect_err(|_| {
        let _ = std::fs::remove_file(&out.partial);
    })?;
    std::fs::rename(&out.partial, &out.wasm)
        .map_err(|e| format!("cannot write {}: {e}", out.wasm.display()))?;
    write_if_changed(&out.stamp, &inputs)?;
    Ok(out.wasm.clone())
}

/// Finds a build tool: in the project's `node_modules/.bin` (JavaScript),
/// else on PATH. The error says which tool, for what, and how to install it.
/// What the message of a missing tool says (callers tell it from a bad
/// suite by it: the plan is fine, the machine lacks a tool).
pub const MISSING_TOOL: &str = "which is not on PATH";

fn tool(name: &str, dir: &Path, lang: Lang, install: &str) -> Result<PathBuf, String> {
    let local = dir.join("node_modules/.bin").join(name);
    if local.is_file() {
        return Ok(local);
    }
    let exe = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|p| p.join(&exe))
        .find(|p| p.is_file());
    found.ok_or_else(|| {
        format!(
            "building the {} suite {} needs `{name}`, {MISSING_TOOL}; install it with `{install}` (`cargo xtask test` installs the pinned suite tools)",
            lang.name(),
            dir.display()
        )
    })
}

/// A directory removed when dropped, however the build ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a build step; a failure carries the tool's own output.
fn run(mut cmd: Command, what: &str, dir: &Path) -> Result<(), String> {
    // A tool's Rust backtrace would bury its message.
    cmd.env("RUST_BACKTRACE", "0");
    let out = cmd.output().map_err(|e| format!("could not run {what} to build {}: {e}", dir.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let mut said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.trim().is_empty() {
        said = format!("{}\n{said}", stdout.trim());
    }
    Err(format!("building {} failed: {what} said:\n{said}", dir.display()))
}

/// `[tool.ensemble] app` of a Python project: the module componentize-py
/// imports (it must define, or import, the SDK's `Tests`).
fn python_app(dir: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(dir.join("pyproject.toml"))
        .map_err(|e| format!("cannot read {}: {e}", dir.join("pyproject.toml").display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("{} is not valid TOML: {e}", dir.join("pyproject.toml").display()))?;
    let app =
        table.get("tool").and_then(|t| t.get("ensemble")).and_then(|t| t.get("app")).and_then(|a| a.as_str());
    match app {
        Some(app)
            if dir.join(format!("{}.py", app.replace('.', "/"))).is_file()
                || dir.join(app.replace('.', "/")).join("__init__.py").is_file() =>
        {
            Ok(app.to_string())
        }
        Some(app) => Err(format!(
            "{}: [tool.ensemble] app = {app:?}, but there is no module {app:?} in {} ({app}.py)",
            dir.join("pyproject.toml").display(),
            dir.display()
        )),
        None => Err(format!(
            "{} does not say which module is the suite: add\n  [tool.ensemble]\n  app = \"my_suite\"  # my_suite.py",
            dir.join("pyproject.toml").display()
        )),
    }
}

fn build_python(dir: &Path) -> Result<PathBuf, String> {
    let app = python_app(dir)?;
    let out = output(dir, Lang::Python)?;
    unless_fresh(dir, Lang::Python, &out, || {
        let tool = tool("componentize-py", dir, Lang::Python, &format!("pip install {COMPONENTIZE_PY}"))?;
        let mut cmd = Command::new(tool);
        cmd.arg("-q")
            .arg("-d")
            .arg(out.support.join("wit"))
            .args(["-w", "suite", "componentize", &app, "-p"])
            .arg(dir)
            .arg("-p")
            .arg(out.support.join("sdk-python"))
            .arg("-o")
            .arg(&out.partial);
        run(cmd, "componentize-py", dir)
    })
}

/// The app module of a JavaScript project: `ensemble.main` of its
/// package.json, else `main`, else `suite.js`.
fn js_main(dir: &Path) -> Result<PathBuf, String> {
    let file = dir.join("package.json");
    let text = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not valid JSON: {e}", file.display()))?;
    let main = json["ensemble"]["main"].as_str().or(json["main"].as_str()).unwrap_or("suite.js");
    let path = dir.join(main);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{}: the suite's module {main:?} is not there (set \"ensemble\": {{\"main\": \"suite.js\"}})",
            file.display()
        ))
    }
}

fn build_js(dir: &Path) -> Result<PathBuf, String> {
    let main = js_main(dir)?;
    let out = output(dir, Lang::JavaScript)?;
    unless_fresh(dir, Lang::JavaScript, &out, || {
        let esbuild = tool("esbuild", dir, Lang::JavaScript, &format!("npm install -g {ESBUILD}"))?;
        let componentize =
            tool("componentize-js", dir, Lang::JavaScript, &format!("npm install -g {COMPONENTIZE_JS}"))?;
        let stage = Scratch(out.support.join(format!("stage.{}", std::process::id())));
        let stage = &stage.0;
        std::fs::create_dir_all(stage).map_err(|e| format!("cannot create {}: {e}", stage.display()))?;
        // esbuild resolves an alias from its working directory: absolute.
        let sdk = std::path::absolute(out.support.join("sdk-js/index.js"))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        // One ES module of the app and the SDK: componentize-js resolves
        // only relative imports; the suite world's imports stay imports.
        let mut bundle = Command::new(esbuild);
        bundle
            .arg(&main)
            .args([
                "--bundle",
                "--format=esm",
                "--platform=neutral",
                "--main-fields=module,main",
                "--external:ensemble:*",
                "--log-level=warning",
            ])
            .arg(format!("--alias:@ensemble/suite={}", sdk.display()))
            .arg(format!("--outfile={}", stage.join("bundle.js").display()));
        run(bundle, "esbuild", dir)?;
        let wasm =
            std::path::absolute(&out.partial).map_err(|e| format!("{}: {e}", out.partial.display()))?;
        let wit =
            std::path::absolute(out.support.join("wit")).map_err(|e| format!("{}: {e}", dir.display()))?;
        // Suites make requests (`fetch`, over wasi:http, checked against
        // the entry's grants) but serve none; componentize-js maps its
        // working directory into the build, so run it in the stage.
        let mut cmd = Command::new(componentize);
        cmd.current_dir(stage)
            .arg("bundle.js")
            .arg("--wit")
            .arg(wit)
            .args(["--world-name", "suite", "--disable", "fetch-event", "-o"])
            .arg(wasm);
        run(cmd, "componentize-js", dir)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_project_file_names_the_language_and_the_suite() {
        let dir = tempfile::tempdir().unwrap();
        let err = detect(dir.path()).unwrap_err();
        assert!(err.contains("a Cargo.toml (Rust), a pyproject.toml (Python) or a package.json"), "{err}");
        std::fs::write(dir.path().join("package.json"), r#"{"name": "@acme/web-checks"}"#).unwrap();
        assert_eq!(
            (detect(dir.path()), project_name(dir.path())),
            (Ok(Lang::JavaScript), "web-checks".into())
        );
        std::fs::write(dir.path().join("pyproject.toml"), "[project]\nname = \"py-checks\"\n").unwrap();
        assert_eq!((detect(dir.path()), project_name(dir.path())), (Ok(Lang::Python), "py-checks".into()));
        let err = python_app(dir.path()).unwrap_err();
        assert!(err.contains("[tool.ensemble]") && err.contains("app = "), "{err}");
        std::fs::write(dir.path().join("pyproject.toml"), "[tool.ensemble]\napp = \"checks\"\n").unwrap();
        assert!(python_app(dir.path()).unwrap_err().contains("no module \"checks\""));
        std::fs::write(dir.path().join("checks.py"), "").unwrap();
        assert_eq!(python_app(dir.path()), Ok("checks".into()));
        assert_eq!(Lang::parse("PY"), Ok(Lang::Python));
        assert!(Lang::parse("cobol").unwrap_err().contains("rust, python or js"));
    }

    #[test]
    fn a_build_is_skipped_only_while_its_inputs_are_the_same() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.py"), "x = 1\n").unwrap();
        std::fs::create_dir_all(dir.path().join("dist/.ensemble")).unwrap();
        std::fs::write(dir.path().join("dist/out.wasm"), "old output").unwrap();
        std::fs::create_dir_all(dir.path().join("__pycache__")).unwrap();
        let first = inputs_hash(dir.path(), Lang::Python).unwrap();
        // Outputs and caches are not inputs.
        std::fs::write(dir.path().join("dist/out.wasm"), "new output").unwrap();
        std::fs::write(dir.path().join("__pycache__/app.pyc"), "bytecode").unwrap();
        assert_eq!(inputs_hash(dir.path(), Lang::Python).unwrap(), first);
        std::fs::write(dir.path().join("app.py"), "x = 2\n").unwrap();
        assert_ne!(inputs_hash(dir.path(), Lang::Python).unwrap(), first);
    }

    #[test]
    fn builds_of_one_project_at_once_build_it_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pyproject.toml"), "[project]\nname = \"once\"\n").unwrap();
        let builds = std::sync::atomic::AtomicUsize::new(0);
        let start = std::sync::Barrier::new(2);
        let built: Vec<PathBuf> = std::thread::scope(|s| {
            let each = || {
                start.wait();
                let out = output(dir.path(), Lang::Python).unwrap();
                unless_fresh(dir.path(), Lang::Python, &out, || {
                    builds.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    std::fs::write(&out.partial, b"\0asm").map_err(|e| e.to_string())
                })
                .unwrap()
            };
            let (a, b) = (s.spawn(each), s.spawn(each));
            vec![a.join().unwrap(), b.join().unwrap()]
        });
        assert_eq!(builds.into_inner(), 1, "the second found it built");
        assert_eq!(built[0], built[1]);
        assert_eq!(std::fs::read(&built[0]).unwrap(), b"\0asm");
    }

    #[test]
    fn the_pins_errors_suggest_are_the_ones_ci_installs() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let xtask = std::fs::read_to_string(root.join("xtask/src/main.rs")).unwrap();
        assert!(xtask.contains(&format!("\"{COMPONENTIZE_PY}\"")), "{COMPONENTIZE_PY} in xtask");
        let js = std::fs::read_to_string(root.join("build-support/js-tools/package.json")).unwrap();
        for pin in [COMPONENTIZE_JS, ESBUILD] {
            let (name, version) = pin.rsplit_once('@').unwrap();
            assert!(js.contains(&format!("\"{name}\": \"{version}\"")), "{pin} in build-support/js-tools");
        }
    }

    #[test]
    fn a_missing_tool_is_named_with_its_install_command() {
        let dir = tempfile::tempdir().unwrap();
        let err = tool("surely-not-a-tool-here", dir.path(), Lang::Python, "pip install x==1").unwrap_err();
        assert!(
            err.contains("needs `surely-not-a-tool-here`") && err.contains("`pip install x==1`"),
            "{err}"
        );
    }
}
