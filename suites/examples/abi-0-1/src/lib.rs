//! A suite as it was built for suite ABI 0.1: its bindings come from the
//! kept copy of that ABI (`suites/wit-0.1`), not from the SDK (which follows
//! the current ABI). A runner must keep running it; it cannot declare its
//! params (0.1 has no `describe`), so its entries' params go unchecked.
//!
//! | test | outcome |
//! |---|---|
//! | `reads_param` | passes when param `word` is `ensemble` (fails naming it otherwise) |
//! | `signals` | passes: signals state `abi-0-1` through the run's sync service |
//! | `fails` | fails on purpose |

#[allow(unsafe_code, missing_docs)]
mod bindings {
    wit_bindgen::generate!({ world: "suite", path: "../../wit-0.1" });
}

use bindings::ensemble::suite::{context, sync};
use bindings::exports::ensemble::suite::tests::{Guest, TestInfo, TestResult};

struct Abi01;

fn test(name: &str) -> TestInfo {
    TestInfo { name: name.into(), tags: vec!["abi-0.1".into()], ignored: false, timeout_ms: None }
}

impl Guest for Abi01 {
    fn list() -> Vec<TestInfo> {
        vec![test("reads_param"), test("signals"), test("fails")]
    }

    fn run(name: String) -> TestResult {
        match name.as_str() {
            "reads_param" => match context::param("word") {
                Some(word) if word == "ensemble" => TestResult::Pass,
                other => TestResult::Fail(format!("param `word` should be \"ensemble\", got {other:?}")),
            },
            "signals" => match sync::signal("abi-0-1") {
                Ok(_) => TestResult::Pass,
                Err(e) => TestResult::Fail(format!("signal failed: {e:?}")),
            },
            "fails" => TestResult::Fail("fails on purpose".into()),
            _ => TestResult::Fail(format!("no test named `{name}`")),
        }
    }
}

bindings::export!(Abi01 with_types_in bindings);
