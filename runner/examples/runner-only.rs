//! The `ensemble` binary's entry point again, under another name: built
//! with `--no-default-features` (a runner-only build) beside the full
//! binary in one target directory, without replacing it
//! (`cargo build -p ensemble-runner --no-default-features --example runner-only`).
//! The tests and the footprint bench use it; people build the binary
//! itself: `cargo build --release -p ensemble-runner --no-default-features`.

fn main() {
    std::process::exit(ensemble_runner::cli::main());
}
