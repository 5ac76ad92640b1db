//! The `ensemble` binary: all logic lives in the `ensemble_runner` library.

fn main() {
    std::process::exit(ensemble_runner::cli::main());
}
