//! Ten thousand tests, `t00000` to `t09999`, listed at run time: each passes
//! at once except `t05000`, which fails. The browser test of a big run
//! (`tests/tests/browser.rs`) uses it to check the run view stays usable.
//!
//! A hand-written implementation of the suite ABI (`ensemble_sdk::export!`):
//! `suite!` takes a fixed list of functions.

use ensemble_sdk::bindings::exports::ensemble::suite::tests::{Guest, SuiteInfo, TestInfo, TestResult};

/// How many tests the suite lists.
const COUNT: u32 = 10_000;
/// The one that fails.
const FAILING: u32 = 5_000;

struct ManyTests;

impl Guest for ManyTests {
    fn list() -> Vec<TestInfo> {
        (0..COUNT)
            .map(|i| TestInfo { name: format!("t{i:05}"), tags: vec![], ignored: false, timeout_ms: None })
            .collect()
    }

    fn describe() -> SuiteInfo {
        SuiteInfo { tests: Self::list(), params: vec![] }
    }

    fn run(name: String) -> TestResult {
        match name.strip_prefix('t').and_then(|n| n.parse::<u32>().ok()) {
            Some(FAILING) => TestResult::Fail(format!("{name} fails on purpose")),
            Some(i) if i < COUNT => TestResult::Pass,
            _ => TestResult::Fail(format!("no test named `{name}`")),
        }
    }
}

ensemble_sdk::export!(ManyTests);
