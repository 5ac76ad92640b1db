//! Plain WASI command components as suites.
//!
//! A Rust libtest harness (what `cargo test --target wasm32-wasip2 --no-run`
//! builds) is listed with `--list --format terse` (and `--ignored` to learn
//! which tests are ignored) and each test runs alone, in its own instance, with
//! `--exact NAME`. Any other command is one test whose exit code 0 passes.

use std::collections::HashSet;
use std::sync::Arc;

use ensemble_protocol::Outcome;

use super::output::Capture;
use super::{Code, Finished, LoadedSuite, SuiteError, SuiteKind, TestCase, TestEnv};
use wasmtime_wasi::p2::bindings::CommandPre;

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

/// Outcome of a command that exited with `code`; for a libtest harness,
/// what libtest itself reported of the one test it ran (a test it ignores
/// when it runs is skipped, with libtest's reason).
pub fn judge_exit(kind: SuiteKind, code: i32, capture: &Capture) -> (Outcome, Option<String>) {
    if code != 0 {
        let msg = capture.panic_message().unwrap_or_else(|| format!("exited with code {code}"));
        return (Outcome::Failed, Some(msg));
    }
    if kind == SuiteKind::Libtest {
        return judge_libtest(&capture.text());
    }
    (Outcome::Passed, None)
}

/// What libtest's output (of a run that exited 0) says of its one test.
/// Without its `test result:` line (cut off with too much output) the
/// exit code stands: the test passed.
fn judge_libtest(text: &str) -> (Outcome, Option<String>) {
    match libtest_counts(text) {
        Some(c) if c.passed == 0 && c.failed == 0 && c.ignored > 0 => {
            let why = ignored_reason(text).map_or_else(
                || "libtest ignored it when it ran".to_string(),
                |r| format!("libtest ignored it: {r}"),
            );
            (Outcome::Skipped, Some(why))
        }
        Some(c) if c.passed == 0 && c.failed == 0 => {
            (Outcome::Failed, Some("the harness ran no test of that name".into()))
        }
        _ => (Outcome::Passed, None),
    }
}

/// The counts of libtest's `test result: ok. 1 passed; 0 failed; 0 ignored; …` line.
#[derive(Debug, PartialEq)]
struct Counts {
    passed: u32,
    failed: u32,
    ignored: u32,
}

fn libtest_counts(text: &str) -> Option<Counts> {
    let line = text.lines().rev().find_map(|l| l.trim().strip_prefix("test result: "))?;
    let count = |what: &str| {
        line.split(';')
            .find_map(|part| part.trim().strip_suffix(what)?.trim().rsplit(' ').next()?.parse().ok())
    };
    Some(Counts { passed: count(" passed")?, failed: count(" failed")?, ignored: count(" ignored")? })
}

/// Why libtest ignored a test: its `test NAME ... ignored, REASON` line
/// (or, for a `#[should_panic]` test on wasm, which needs unwinding, the
/// `- should panic ... ignored` mark).
fn ignored_reason(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("test ") && l.contains(" ... ignored"))?;
    let after = line.split(" ... ignored").nth(1).unwrap_or_default();
    if let Some(reason) = after.strip_prefix(", ").filter(|r| !r.trim().is_empty()) {
        return Some(reason.trim().to_string());
    }
    line.contains(" - should panic ")
        .then(|| "a #[should_panic] test cannot run on wasm (it needs unwinding)".to_string())
}

/// Runs the harness with listing arguments; returns its stdout.
async fn run_listing(
    code: &Code,
    pre: &CommandPre<super::HostState>,
    env: &Arc<TestEnv>,
    ignored: bool,
) -> Result<String, SuiteError> {
    let mut args: Vec<String> = ["suite.wasm", "--list", "--format", "terse"].map(String::from).to_vec();
    if ignored {
        args.push("--ignored".into());
    }
    let timeout = env.test_timeout;
    let (mut store, capture) = LoadedSuite::store(code, env, "", &args, timeout);
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

pub async fn list_libtest(
    code: &Code,
    pre: &CommandPre<super::HostState>,
    env: &Arc<TestEnv>,
) -> Result<Vec<TestCase>, SuiteError> {
    let all = parse_terse(&run_listing(code, pre, env, false).await?);
    let ignored: HashSet<String> =
        parse_terse(&run_listing(code, pre, env, true).await?).into_iter().collect();
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
    fn libtest_says_how_its_test_went() {
        let ran = |out: &str| judge_libtest(out);
        let summary = |p, f, i| {
            format!(
                "test result: ok. {p} passed; {f} failed; {i} ignored; 0 measured; 4 filtered out; finished in 0.00s\n"
            )
        };
        assert_eq!(
            ran(&format!("running 1 test\ntest a ... ok\n\n{}", summary(1, 0, 0))),
            (Outcome::Passed, None)
        );
        let (o, m) = ran(&format!("test t::p - should panic ... ignored\n\n{}", summary(0, 0, 1)));
        assert_eq!(o, Outcome::Skipped);
        assert!(m.unwrap().contains("#[should_panic]"));
        let (o, m) = ran(&format!("test t::slow ... ignored, takes a minute\n{}", summary(0, 0, 1)));
        assert_eq!((o, m.as_deref()), (Outcome::Skipped, Some("libtest ignored it: takes a minute")));
        assert_eq!(ran(&summary(0, 0, 0)).0, Outcome::Failed);
        assert_eq!(ran("output cut before the summary").0, Outcome::Passed, "the exit code stands");
    }

    #[test]
    fn exit_codes_judge_commands() {
        let c = Capture::new(1024);
        assert_eq!(judge_exit(SuiteKind::Command, 0, &c).0, Outcome::Passed);
        let (o, m) = judge_exit(SuiteKind::Command, 3, &c);
        assert_eq!((o, m.as_deref()), (Outcome::Failed, Some("exited with code 3")));
    }
}
