//! A suite as it was built for suite ABI 0.2: its bindings come from the
//! kept copy of that ABI (`suites/wit-0.2`), not from the SDK (which follows
//! the current ABI). A runner must keep running it: it declares its params
//! (0.2 has `describe`) but cannot fault services (`services` is 0.3's).
//!
//! | test | outcome |
//! |---|---|
//! | `reads_param` | passes when param `word` is `ensemble` (fails naming it otherwise) |
//! | `signals` | passes: signals state `abi-0-2` through the run's sync service |

#[allow(unsafe_code, missing_docs)]
mod bindings {
    wit_bindgen::generate!({ world: "suite", path: "../../wit-0.2" });
}

use bindings::ensemble::suite::types::{ParamInfo, ParamType, SuiteInfo};
use bindings::ensemble::suite::{context, sync};
use bindings::exports::ensemble::suite::tests::{Guest, TestInfo, TestResult};

struct Abi02;

fn test(name: &str) -> TestInfo {
    TestInfo { name: name.into(), tags: vec!["abi-0.2".into()], ignored: false, timeout_ms: None }
}

impl Guest for Abi02 {
    fn list() -> Vec<TestInfo> {
        vec![test("reads_param"), test("signals")]
    }

    fn describe() -> SuiteInfo {
        SuiteInfo {
            tests: Self::list(),
            params: vec![ParamInfo {
                name: "word".into(),
                type_: ParamType::String,
                required: true,
                default: None,
                help: "the word reads_param expects".into(),
            }],
        }
    }

    fn run(name: String) -> TestResult {
        match name.as_str() {
            "reads_param" => match context::param("word") {
                Some(word) if word == "ensemble" => TestResult::Pass,
                other => TestResult::Fail(format!("param `word` should be \"ensemble\", got {other:?}")),
            },
            "signals" => match sync::signal("abi-0-2") {
                Ok(_) => TestResult::Pass,
                Err(e) => TestResult::Fail(format!("signal failed: {e:?}")),
            },
            _ => TestResult::Fail(format!("no test named `{name}`")),
        }
    }
}

bindings::export!(Abi02 with_types_in bindings);
