//! The basics demo suite: one test of each outcome an SDK suite can have.
//!
//! | test | outcome |
//! |---|---|
//! | `adds` | passes |
//! | `concatenates` | passes (returns `()`) |
//! | `reads_context` | passes; logs the run, role, instance and machine |
//! | `greeting_param` | passes when param `greeting` equals param `expected` (default `"hello"`) |
//! | `logs_and_prints` | passes; writes log lines, stdout and stderr |
//! | `tagged_with_timeout` | passes; tags `demo`, `tags`, timeout 5 s |
//! | `naps` | passes after sleeping param `nap_ms` (default 0): a slow test for demos and tests |
//! | `fails_check_eq` | fails: `check_eq!(2 + 2, 5)` |
//! | `skips` | skipped |
//! | `panics` | fails by panicking with `boom: …` |
//! | `ignored` | ignored (passes when run explicitly) |

use ensemble_sdk::prelude::*;

const GREETING: Param<String> = Param::new("greeting", "the greeting greeting_param checks").required();
const EXPECTED: Param<String> = Param::new("expected", "what the greeting must be").default("hello");
const NAP_MS: Param<u64> = Param::new("nap_ms", "how long `naps` sleeps, in milliseconds").default("0");

fn adds() -> TestResult {
    check_eq!(1 + 1, 2);
    check_ne!(2 * 2, 5);
    Ok(())
}

fn concatenates() {
    let joined = ["en", "sem", "ble"].concat();
    assert_eq!(joined, "ensemble");
}

fn reads_context() -> TestResult {
    let (index, count) = (instance_index(), instance_count());
    log::info(format!(
        "run {} role {:?} instance {index}/{count} on machine {:?}",
        run_id(),
        role(),
        machine()
    ));
    check!(index < count, "instance index {index} out of {count} instances");
    check!(!machine().is_empty(), "the machine has no name");
    Ok(())
}

fn greeting_param() -> TestResult {
    let greeting = GREETING.get()?;
    let expected = EXPECTED.get()?;
    check_eq!(greeting, expected, "param `greeting` should equal param `expected`");
    Ok(())
}

fn logs_and_prints() -> TestResult {
    log::trace("a trace line");
    log::debug("a debug line");
    log::info("an info line");
    log::warn("a warn line");
    log::error("an error line (the test still passes)");
    println!("hello from basics on stdout");
    eprintln!("hello from basics on stderr");
    Ok(())
}

fn tagged_with_timeout() -> TestResult {
    std::thread::sleep(std::time::Duration::from_millis(10));
    Ok(())
}

fn naps() -> TestResult {
    let nap_ms = NAP_MS.get()?;
    std::thread::sleep(std::time::Duration::from_millis(nap_ms));
    Ok(())
}

fn fails_check_eq() -> TestResult {
    check_eq!(2 + 2, 5, "arithmetic is broken on purpose");
    Ok(())
}

fn skips() -> TestResult {
    Err(skip("skipped on purpose: this test only demonstrates a skip"))
}

fn panics() -> TestResult {
    let answer = std::hint::black_box(42);
    panic!("boom: the answer was {answer}");
}

fn ignored() -> TestResult {
    Ok(())
}

ensemble_sdk::suite! {
    params(GREETING, EXPECTED, NAP_MS),
    adds,
    concatenates,
    reads_context,
    greeting_param,
    logs_and_prints,
    #[tags("demo", "tags")] #[timeout_ms(5000)] tagged_with_timeout,
    naps,
    fails_check_eq,
    skips,
    panics,
    #[ignore] ignored,
}
