//! A suite whose *listing* is hostile, chosen by the plan entry's param
//! `listing` (read when a runner lists the tests; an upload, which has no
//! params, sees one harmless test):
//!
//! | `listing` | what `list` returns |
//! |---|---|
//! | `huge-name` | one test whose name is 70 MiB long |
//! | `many` | 450,000 tests |
//! | `long-timeout` | one test asking for a timeout of `u64::MAX` ms |
//! | `twice` | the tests `fine`, `other` and `fine` again |
//! | unset | one test, `fine`, which passes |
//!
//! A hand-written implementation of the suite ABI: `suite!` lists a fixed
//! set of tests.

use ensemble_sdk::bindings::ensemble::suite::types::{ParamInfo, ParamType};
use ensemble_sdk::bindings::exports::ensemble::suite::tests::{Guest, SuiteInfo, TestInfo, TestResult};

struct HostileListing;

fn test(name: String) -> TestInfo {
    TestInfo { name, tags: vec![], ignored: false, timeout_ms: None }
}

impl Guest for HostileListing {
    fn list() -> Vec<TestInfo> {
        match ensemble_sdk::param("listing").as_deref() {
            Some("huge-name") => vec![test("n".repeat(70 << 20))],
            Some("many") => (0..450_000).map(|i| test(format!("t{i:06}"))).collect(),
            Some("long-timeout") => vec![TestInfo { timeout_ms: Some(u64::MAX), ..test("fine".into()) }],
            Some("twice") => vec![test("fine".into()), test("other".into()), test("fine".into())],
            _ => vec![test("fine".into())],
        }
    }

    fn describe() -> SuiteInfo {
        let listing = ParamInfo {
            name: "listing".into(),
            type_: ParamType::String,
            required: false,
            default: None,
            help: "which hostile listing to return: huge-name, many, long-timeout or twice".into(),
        };
        SuiteInfo { tests: Self::list(), params: vec![listing] }
    }

    fn run(name: String) -> TestResult {
        if name == "fine" { TestResult::Pass } else { TestResult::Fail(format!("no test named `{name}`")) }
    }
}

ensemble_sdk::export!(HostileListing);
