//! Plain WASI command components as suites.
//!
//! A Rust libtest harness (what `cargo test --target wasm32-wasip2 --no-run`
//! builds) is listed with `--list --format terse` (and `--ignored` to learn
//! which tests are ignored) and each test runs alone, in its own instance, with
//! `--exact NAME`. Any other command is one test whose exit code 0 passes.

use std::sync::Arc;

use ensemble_protocol::Outcome;

use super::output::Capture;
use super::{Finished, KindPre, LoadedSuite, SuiteError, SuiteKind, TestCase, TestEnv};

/// The name of the single test of a plain command suite.
pub const COMMAND_TEST: &str = "main";

/// Strings every libtest harness carries (its option parser's names).
pub fn looks_like_libtest(bytes: &[u8]) -> bool {
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    has(b"RUST_TEST_THREADS") && has(b"include-ignored")
}

/// argv for running `test` (argv[0] is a name, as a shell would pass); a
/// test marked ignored runs only when asked for, so it is asked for.
pub fn args_for(kind: SuiteKind, test: &TestCase) -> Vec<String> {
    match kind {
        SuiteKind::Libtest => {
            let mut args = ["suite.wasm", "--exact", &test.name, "--nocapture", "--test-threads=1"]
                .map(String::from)
                .to_vec();
            if test.ignored {
                args.push("--include-ignored".into());
            }
            args
        }
        _ => vec!["suite.wasm".to_string()],
    }
}

/// Outcome of a command that exited with `code`.
pub fn judge_exit(kind: SuiteKind, code: i32, capture: &Capture) -> (Outcome, Option<String>) {
    if code != 0 {
        let msg = capture.panic_message().unwrap_or_else(|| format!("exited with code {code}"));
        return (Outcome::Failed, Some(msg));
    }
    if kind == SuiteKind::Libtest && capture.text().contains(" 0 passed; 0 failed") {
        return (Outcome::Failed, Some("the harness ran no test of that name".into()));
    }
    (Outcome::Passed, None)
}

/// Runs the harness with listing arguments; returns its stdout.
async fn run_listing(suite: &LoadedSuite, env: &Arc<TestEnv>, ignored: bool) -> Result<String, SuiteError> {
    let KindPre::Libtest(pre) = &suite.pre else {
        return Err(SuiteError::Internal("not a libtest harness".into()));
    };
    let mut args: Vec<String> = ["suite.wasm", "--list", "--format", "terse"].map(String::from).to_vec();
    if ignored {
        args.push("--ignored".into());
    }
    let timeout = env.test_timeout;
    let (mut store, capture) = suite.store(env, "", &args, timeout);
    let done = LoadedSuite::within(&mut store, timeout, async |store| {
        let cmd = pre.instantiate_async(&mut *store).await?;
        cmd.wasi_cli_run().call_run(&mut *store).await
    })
    .await;
    match done {
        Finished::Returned(Ok(())) => Ok(capture.text()),
        Finished::Returned(Err(())) => Err(SuiteError::List(format!("`--list` failed:\n{}", capture.text()))),
        Finished::Trapped(e) => Err(SuiteError::List(format!("`--list` trapped: {e:#}\n{}", capture.text()))),
        Finished::TimedOut => Err(SuiteError::List(format!("`--list` timed out after {timeout:?}"))),
    }
}

fn parse_terse(out: &str) -> Vec<String> {
    out.lines().filter_map(|l| l.strip_suffix(": test")).map(str::to_string).collect()
}

pub async fn list_libtest(suite: &LoadedSuite, env: &Arc<TestEnv>) -> Result<Vec<TestCase>, SuiteError> {
    let all = parse_terse(&run_listing(suite, env, false).await?);
    let ignored = parse_terse(&run_listing(suite, env, true).await?);
    Ok(all
        .into_iter()
        .map(|name| TestCase { ignored: ignored.contains(&name), name, tags: vec![], timeout: None })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_terse_listings() {
        let out = "tests::adds: test\ntests::slow: test\nbench_x: bench\n\n";
        assert_eq!(parse_terse(out), ["tests::adds", "tests::slow"]);
    }

    #[test]
    fn exit_codes_judge_commands() {
        let c = Capture::new(1024);
        assert_eq!(judge_exit(SuiteKind::Command, 0, &c).0, Outcome::Passed);
        let (o, m) = judge_exit(SuiteKind::Command, 3, &c);
        assert_eq!((o, m.as_deref()), (Outcome::Failed, Some("exited with code 3")));
    }
}
