//! Nothing to build: the `[build-dependencies]` are here for their
//! features on the host (see `Cargo.toml`).

fn main() {}
