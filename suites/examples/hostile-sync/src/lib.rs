//! Sync calls that probe the run's bounds (kept apart from `hostile`, whose
//! tests do not use sync and so run side by side).
//!
//! | test | behaviour | params |
//! |---|---|---|
//! | `sync_reread` | publishes one 1 MiB message, then opens `times` fresh subscriptions that each read it; passes | `times`, default 1500 |
//! | `publish_flood` | publishes 1 MiB messages until the run's topics refuse one; passes iff refused as invalid | |
//! | `long_names` | signals and publishes on 2 KiB names; passes iff both are refused as invalid | |
//!
//! With param `only` set to a test's name, every other test skips at once.

use std::time::Duration;

use ensemble_sdk::prelude::*;

const ONLY: Param<String> = Param::new("only", "run only the test of this name; the others skip at once");
const TIMES: Param<u32> =
    Param::new("times", "how many fresh subscriptions sync_reread reads through").default("1500");

/// Skips the test unless param `only` is unset or names it.
fn only(test: &str) -> TestResult {
    match ONLY.get_opt()? {
        Some(only) if only != test => Err(skip(format!("only {only} runs"))),
        _ => Ok(()),
    }
}

fn sync_reread() -> TestResult {
    only("sync_reread")?;
    let payload = "p".repeat(1 << 20);
    sync::publish("big", &payload)?;
    for i in 0..TIMES.get()? {
        let got = sync::subscribe("big").next(Duration::from_secs(10));
        let got = got.map_err(|e| fail(format!("re-read {i}: {e}")))?;
        check!(got.len() == payload.len(), "re-read {i} got {} bytes", got.len());
    }
    Ok(())
}

fn publish_flood() -> TestResult {
    only("publish_flood")?;
    let payload = "p".repeat(1 << 20);
    for i in 0..100_000u32 {
        match sync::publish(&format!("flood-{}", i % 8), &payload) {
            Ok(_) => {}
            Err(e @ SyncError::Invalid(_)) => {
                println!("refused after {i} messages: {e}");
                return Ok(());
            }
            Err(e) => return Err(fail(format!("message {i}: {e}"))),
        }
    }
    Err(fail("100,000 messages of 1 MiB were all taken"))
}

fn long_names() -> TestResult {
    only("long_names")?;
    let name = "n".repeat(2048);
    check!(matches!(sync::signal(&name), Err(SyncError::Invalid(_))), "a 2 KiB state name was taken");
    check!(matches!(sync::publish(&name, "x"), Err(SyncError::Invalid(_))), "a 2 KiB topic name was taken");
    Ok(())
}

ensemble_sdk::suite! {
    params(ONLY, TIMES),
    sync_reread,
    publish_flood,
    long_names,
}
