//! Builds the browser app (`frontend/`) for `wasm32-unknown-unknown` with a
//! nested cargo, runs wasm-bindgen on it (the library, same exact version as
//! the app's wasm-bindgen), and leaves in `OUT_DIR/ui/` the files
//! `src/server/ui.rs` embeds: `index.html`, `style.css`,
//! `ensemble_frontend.js` and `ensemble_frontend_bg.wasm`.

use std::env;
use std::fs;
use std::path::PathBuf;

use ensemble_build_support::{check_target_installed, nested_cargo, shared_target_dir, watch_dir};

const TARGET: &str = "wasm32-unknown-unknown";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("runner/ has a parent").to_path_buf();
    let frontend = root.join("frontend");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let ui = out_dir.join("ui");

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", root.join("Cargo.lock").display());
    watch_dir(&frontend);
    watch_dir(&root.join("protocol"));
    // Fuzz builds (cargo-fuzz sets `--cfg fuzzing`) exercise the core, not
    // the app: they embed empty assets instead of building it.
    if env::var_os("CARGO_CFG_FUZZING").is_some() {
        std::fs::create_dir_all(&ui).expect("OUT_DIR/ui");
        for file in ["index.html", "ensemble_frontend.js", "ensemble_frontend_bg.wasm", "style.css"] {
            std::fs::write(ui.join(file), b"").expect("an empty asset");
        }
        return;
    }
    check_target_installed(TARGET);

    // Small and quick to load; the app's speed is not bound by codegen.
    let profile = [
        ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s"),
        ("CARGO_PROFILE_RELEASE_DEBUG", "false"),
        ("CARGO_PROFILE_RELEASE_STRIP", "debuginfo"),
    ];
    let messages = nested_cargo(
        &root.join("Cargo.toml"),
        &shared_target_dir(&out_dir, "frontend"),
        TARGET,
        &["build", "-p", "ensemble-frontend", "--bin", "ensemble-frontend"],
        &profile,
    );
    let wasm = app_wasm(&messages);

    fs::create_dir_all(&ui).expect("create OUT_DIR/ui");
    wasm_bindgen_cli_support::Bindgen::new()
        .input_path(&wasm)
        .web(true)
        .expect("the web target is valid")
        .out_name("ensemble_frontend")
        .typescript(false)
        // The library's default differs from the CLI's: without this, the
        // generated `init()` cannot find the wasm on its own.
        .omit_default_module_path(false)
        .generate(&ui)
        .unwrap_or_else(|e| panic!("wasm-bindgen failed on {}: {e:#}", wasm.display()));

    fs::copy(frontend.join("style.css"), ui.join("style.css")).expect("copy style.css");
    let index = fs::read_to_string(frontend.join("index.html")).expect("read frontend/index.html");
    fs::write(ui.join("index.html"), embedded_index(&index)).expect("write index.html");
}

/// The `.wasm` the nested build produced for the app's binary.
fn app_wasm(messages: &str) -> PathBuf {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "ensemble-frontend")
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .find(|p| p.extension().is_some_and(|e| e == "wasm"))
        .expect("the nested build names the app's .wasm")
}

/// `frontend/index.html` is Trunk's page (its `data-trunk` links are what
/// Trunk builds); for embedding, those links become the files we serve.
fn embedded_index(trunk_index: &str) -> String {
    let mut out = String::new();
    for line in trunk_index.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        if line.contains("data-trunk") && line.contains("rel=\"rust\"") {
            out.push_str(&format!(
                "{indent}<script type=\"module\">import init from \"/assets/ensemble_frontend.js\"; init();</script>\n"
            ));
        } else if line.contains("data-trunk") && line.contains("rel=\"css\"") {
            out.push_str(&format!("{indent}<link rel=\"stylesheet\" href=\"/assets/style.css\">\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(
        out.contains("/assets/ensemble_frontend.js") && out.contains("/assets/style.css"),
        "frontend/index.html lost its data-trunk links for the app and style.css"
    );
    out
}
