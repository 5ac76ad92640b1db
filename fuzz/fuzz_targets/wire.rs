//! Fuzz target: see `ensemble_runner::fuzzing::wire`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ensemble_runner::fuzzing::wire(data));
