//! Paths to the example suites, compiled for `wasm32-wasip2` by this crate's
//! build script, so that tests never depend on a manual build.
//!
//! Each constant is the absolute path of a WebAssembly component under the
//! target directory (`target/nested/example-suites`, shared by every build of
//! the workspace). Editing a suite, the SDK or the WIT re-runs the build
//! script, which rebuilds what changed. Only tests should depend on this
//! crate: whatever depends on it rebuilds whenever a suite changes.
//!
//! ```
//! let bytes = std::fs::read(ensemble_artifacts::BASICS).unwrap();
//! assert!(bytes.starts_with(b"\0asm"));
//! ```

include!(concat!(env!("OUT_DIR"), "/paths.rs"));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_suite_is_a_component() {
        assert_eq!(
            ALL.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
            [
                "BASICS",
                "ATTACHMENTS",
                "KV_SERVER",
                "KV_CLIENT",
                "HOSTILE",
                "HOSTILE_LISTING",
                "HOSTILE_SYNC",
                "HTTP_PROBE",
                "LIBTEST_DEMO",
                "LIBTEST_THOUSAND",
                "HELLO_COMMAND",
                "MANY_TESTS",
                "SDK_THOUSAND",
                "RESP_CLIENT",
                "KV_TCP_CLIENT",
                "SKEWED",
                "BENCH_PARTIES",
                "ABI_0_1",
                "ABI_0_2"
            ]
        );
        for (name, path) in ALL {
            let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{name}: {path}: {e}"));
            assert!(bytes.starts_with(b"\0asm"), "{name}: {path} is not wasm");
            // Version 0x0d, layer 1: a component, not a core module.
            assert_eq!(bytes[4..8], [0x0d, 0x00, 0x01, 0x00], "{name}: {path} is not a component");
        }
    }
}
