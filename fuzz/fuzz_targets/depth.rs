//! Fuzz target: see `ensemble_runner::fuzzing::depth`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ensemble_runner::fuzzing::depth(data));
