//! What a test returns: [`TestResult`], and [`Failure`] for a failed or
//! skipped test.
//!
//! `Failure` converts from every `Display` type so that `?` works on I/O
//! errors, sync errors, parse errors and plain strings alike. For that blanket
//! conversion to stay coherent, `Failure` itself must never implement
//! `Display` (nor `std::error::Error`).

use std::fmt::Display;

/// The result of one test: `Ok(())` passes, `Err(Failure)` fails or skips.
pub type TestResult = Result<(), Failure>;

/// Whether a [`Failure`] fails or skips its test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The test failed.
    Fail,
    /// The test did not apply here and was skipped.
    Skip,
}

/// Why a test did not pass: a failure or a skip, with a message.
///
/// Made by [`fail`], [`skip`], the `check…!` macros, or `?` on any error
/// type implementing `Display` (the error's text becomes the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    kind: FailureKind,
    message: String,
}

impl Failure {
    /// A failure of the test, with a message saying what went wrong.
    pub fn fail(message: impl Into<String>) -> Self {
        Self { kind: FailureKind::Fail, message: message.into() }
    }

    /// A skip of the test, with the reason it does not apply.
    pub fn skip(reason: impl Into<String>) -> Self {
        Self { kind: FailureKind::Skip, message: reason.into() }
    }

    /// Whether this fails or skips the test.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    /// True for a skip, false for a failure.
    pub fn is_skip(&self) -> bool {
        self.kind == FailureKind::Skip
    }

    /// The failure message or skip reason.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Consumes the failure, returning its message.
    pub fn into_message(self) -> String {
        self.message
    }

    /// Prefixes the message with `context` (`"{context}: {message}"`).
    pub fn context(mut self, context: impl Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl<E: Display> From<E> for Failure {
    fn from(error: E) -> Self {
        Self::fail(error.to_string())
    }
}

/// Fails the test with `message`: `return Err(fail("…"))`.
pub fn fail(message: impl Into<String>) -> Failure {
    Failure::fail(message)
}

/// Skips the test with `reason`: `return Err(skip("…"))`.
pub fn skip(reason: impl Into<String>) -> Failure {
    Failure::skip(reason)
}

/// What a test function may return: `()` or `Result<(), E>` with `E`
/// convertible into [`Failure`] (e.g. [`TestResult`], `Result<(), io::Error>`).
pub trait IntoTestResult {
    /// Converts the test function's return value into a [`TestResult`].
    fn into_test_result(self) -> TestResult;
}

impl IntoTestResult for () {
    fn into_test_result(self) -> TestResult {
        Ok(())
    }
}

impl<E> IntoTestResult for Result<(), E>
where
    Failure: From<E>,
{
    fn into_test_result(self) -> TestResult {
        self.map_err(Failure::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_display_errors_into_failures() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let failure = Failure::from(io);
        assert_eq!(failure.kind(), FailureKind::Fail);
        assert_eq!(failure.message(), "no such file");

        let failure: Failure = "plain text".into();
        assert_eq!(failure, fail("plain text"));
    }

    #[test]
    fn question_mark_converts() {
        fn parses() -> TestResult {
            let _: u32 = "12x".parse()?;
            Ok(())
        }
        let failure = parses().unwrap_err();
        assert!(!failure.is_skip());
        assert_eq!(failure.message(), "invalid digit found in string");
    }

    #[test]
    fn question_mark_keeps_skips() {
        fn inner() -> TestResult {
            Err(skip("needs a GPU"))
        }
        fn outer() -> TestResult {
            inner()?;
            Ok(())
        }
        let failure = outer().unwrap_err();
        assert!(failure.is_skip());
        assert_eq!(failure.into_message(), "needs a GPU");
    }

    #[test]
    fn context_prefixes_the_message() {
        let failure = skip("offline").context("fetching");
        assert!(failure.is_skip());
        assert_eq!(failure.message(), "fetching: offline");
    }

    #[test]
    fn into_test_result_accepts_unit_and_results() {
        assert_eq!(().into_test_result(), Ok(()));
        assert_eq!(Ok::<(), Failure>(()).into_test_result(), Ok(()));
        assert_eq!(
            Err::<(), _>(std::fmt::Error).into_test_result(),
            Err(fail("an error occurred when formatting an argument"))
        );
        assert_eq!(Err::<(), _>(skip("later")).into_test_result(), Err(skip("later")));
    }
}
