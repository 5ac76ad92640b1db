//! One thousand trivial tests, `d0::d0::d0` to `d9::d9::d9`, each adding two
//! numbers: `libtest-thousand`'s tests written with the Rust SDK
//! (`ensemble_sdk::suite!`), so that `runner/benches/vs_cargo.rs` compares
//! the same tests as an SDK suite, as a libtest harness, and natively.

/// Adds two numbers (what every test checks).
pub fn add(a: u64, b: u64) -> u64 {
    a + b
}

include!(concat!(env!("OUT_DIR"), "/thousand.rs"));
