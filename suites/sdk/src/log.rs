//! Structured log lines, attached to the running test and streamed live.
//!
//! Unlike stdout and stderr, which the runner captures as the test's output,
//! these carry a level. They call the host's `log` import, so they only work
//! inside a suite run by Ensemble.

use crate::bindings::ensemble::suite::log::{Level, log};

/// Logs `message` at trace level.
pub fn trace(message: impl AsRef<str>) {
    log(Level::Trace, message.as_ref());
}

/// Logs `message` at debug level.
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message.as_ref());
}

/// Logs `message` at info level.
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message.as_ref());
}

/// Logs `message` at warn level.
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message.as_ref());
}

/// Logs `message` at error level.
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message.as_ref());
}
