//! Files attached to the running test: kept with its result, listed in the
//! run view and the reports (JUnit, HTML), downloadable by people.
//!
//! Attach what helps someone understand a result after the fact: a server's
//! log, a captured response, a screenshot. A name is a plain file name
//! (`"server.log"`); its extension decides how a browser shows it. The
//! plan's `attachment_limit` (4 MiB by default) caps the bytes one test
//! attempt attaches, and an attempt attaches at most 64 files.
//!
//! Attaching can fail (a bad or reused name, the limit): the error says why
//! and the test goes on. Return it with `?` to fail the test, or ignore it.
//!
//! ```no_run
//! use ensemble_sdk::prelude::*;
//!
//! fn serves() -> TestResult {
//!     let log = "GET / 200\n";
//!     attach::text("server.log", log)?;
//!     Ok(())
//! }
//! # fn main() {}
//! ```

use std::fmt;

/// Why an attachment was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachError(pub String);

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AttachError {}

/// Attaches `content` to the running test as `name`.
pub fn bytes(name: &str, content: &[u8]) -> Result<(), AttachError> {
    crate::bindings::ensemble::suite::attach::attach(name, content).map_err(AttachError)
}

/// Attaches `content` (UTF-8 text) to the running test as `name`.
pub fn text(name: &str, content: &str) -> Result<(), AttachError> {
    bytes(name, content.as_bytes())
}
