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

const PARTIES: Param<u64> = Param::new("parties", "instances meeting at each barrier").default("1");
const ROUNDS: Param<u64> = Param::new("rounds", "barriers `barriers` passes").default("0");
const EVENTS: Param<u64> = Param::new("events", "log lines `events` writes").default("0");

fn barriers() -> TestResult {
    let parties = PARTIES.get()?;
    let rounds = ROUNDS.get()?;
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
    let n = EVENTS.get()?;
    for i in 0..n {
        log::debug(format!("event {i}"));
    }
    Ok(())
}

ensemble_sdk::suite! {
    params(PARTIES, ROUNDS, EVENTS),
    barriers,
    events,
}
