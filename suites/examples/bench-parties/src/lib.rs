//! A benchmark suite for the coordinator, used by `runner/benches/distributed.rs`.
//!
//! | test | what it does | params |
//! |---|---|---|
//! | `barriers` | `rounds` times: signal, then wait at the barrier `round-N` until `parties` arrive, then log `released N` | `parties`, `rounds` |
//! | `events` | logs `events` lines as fast as it can | `events` |
//!
//! Each log line is an event stamped with the machine's clock (corrected onto
//! the coordinator's), so the bench reads release latencies and event rates
//! from the run's own event stream.

use std::time::Duration;

use ensemble_sdk::prelude::*;

fn barriers() -> TestResult {
    let parties: u64 = param_parse_or("parties", 1)?;
    let rounds: u64 = param_parse_or("rounds", 0)?;
    for round in 0..rounds {
        // Signal and barrier separately: the coordinator's timeline then shows
        // every signal, and the bench measures from the last one.
        let state = format!("round-{round}");
        sync::signal(&state)?;
        sync::barrier(&state, parties, Duration::from_secs(120))?;
        log::info(format!("released {round}"));
    }
    Ok(())
}

fn events() -> TestResult {
    let n: u64 = param_parse_or("events", 0)?;
    for i in 0..n {
        log::debug(format!("event {i}"));
    }
    Ok(())
}

ensemble_sdk::suite! {
    barriers,
    events,
}
