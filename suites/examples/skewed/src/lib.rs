//! Twenty-four tests, `s00` to `s23`, whose durations are skewed: test `sNN`
//! sleeps `scale_ms × 24 / (NN + 1)` milliseconds (param `scale_ms`, 10 by
//! default), so `s00` takes 24 units, `s01` 12, `s02` 8, … `s23` one. Every
//! test passes. Splitting the suite's tests across machines (`split =
//! "tests"`) by count puts several long tests on one machine; balancing by
//! recorded durations does not.

use std::time::Duration;

use ensemble_sdk::bindings::ensemble::suite::types::{ParamInfo, ParamType};
use ensemble_sdk::bindings::exports::ensemble::suite::tests::{Guest, SuiteInfo, TestInfo, TestResult};

/// How many tests the suite lists.
pub const COUNT: u64 = 24;

struct Skewed;

impl Guest for Skewed {
    fn list() -> Vec<TestInfo> {
        (0..COUNT)
            .map(|i| TestInfo { name: format!("s{i:02}"), tags: vec![], ignored: false, timeout_ms: None })
            .collect()
    }

    fn describe() -> SuiteInfo {
        let scale = ParamInfo {
            name: "scale_ms".into(),
            type_: ParamType::Integer,
            required: false,
            default: Some("10".into()),
            help: "the unit of every test's sleep, in milliseconds".into(),
        };
        SuiteInfo { tests: Self::list(), params: vec![scale] }
    }

    fn run(name: String) -> TestResult {
        let Some(i) = name.strip_prefix('s').and_then(|n| n.parse::<u64>().ok()).filter(|i| *i < COUNT)
        else {
            return TestResult::Fail(format!("no test named `{name}`"));
        };
        let scale = match ensemble_sdk::param("scale_ms").map(|v| v.parse::<u64>()) {
            None => 10,
            Some(Ok(ms)) => ms,
            Some(Err(e)) => return TestResult::Fail(format!("param scale_ms: {e}")),
        };
        std::thread::sleep(Duration::from_millis(scale * COUNT / (i + 1)));
        TestResult::Pass
    }
}

ensemble_sdk::export!(Skewed);
