//! One component per route.

pub mod editor;
pub mod machines;
pub mod plans;
pub mod run;
pub mod runs;
pub mod suites;
