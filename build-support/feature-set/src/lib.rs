//! No code: this crate exists for its dependencies' features (see its
//! `Cargo.toml`), so that building the runner alone and building the whole
//! workspace with its tests produce the same artifacts.
