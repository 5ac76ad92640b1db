//! The client role of the kv demo: it waits for the server, verifies the
//! snapshot the server published against its own copy of the generator, and
//! reports a verdict back.
//!
//! Every test runs in a fresh instance, so each one reads what it needs from
//! the sync topics again (subscriptions replay a topic from its first message).
//!
//! Parameters: `keys` (entries the client expects, default 100; must match
//! the server's), `timeout_ms` (for every wait, default 30000).
//!
//! | test | expected |
//! |---|---|
//! | `client::waits_for_server` | passes once the server signalled `server-ready` |
//! | `client::verifies_snapshot` | passes when the snapshot on `kv/state` matches `keys` entries |
//! | `client::reports_verdict` | publishes its verdict to `kv/verdict`, signals `client-done`; passes when the verdict is ok |

use std::time::Duration;

use ensemble_sdk::prelude::*;
use kv_model::Snapshot;

const KEYS: Param<u64> = Param::new("keys", "entries the client expects (the server's keys)").default("100");
const TIMEOUT_MS: Param<u64> =
    Param::new("timeout_ms", "how long every wait may take, in milliseconds").default("30000");

/// Parameters shared by the client's tests.
struct Params {
    keys: u64,
    timeout: Duration,
}

impl Params {
    fn read() -> Result<Self, Failure> {
        Ok(Self { keys: KEYS.get()?, timeout: Duration::from_millis(TIMEOUT_MS.get()?) })
    }
}

/// Reads the server's snapshot from `kv/state` and checks it.
fn check_snapshot(params: &Params) -> Result<Snapshot, Failure> {
    let mut state = sync::subscribe(kv_model::STATE_TOPIC);
    let text = state.next(params.timeout)?;
    let snapshot = Snapshot::decode(&text).map_err(|e| fail(format!("unreadable snapshot: {e}")))?;
    snapshot.verify(params.keys).map_err(|e| fail(format!("wrong snapshot: {e}")))?;
    Ok(snapshot)
}

mod client {
    use ensemble_sdk::prelude::*;
    use kv_model::{CLIENT_DONE, SERVER_READY, VERDICT_OK, VERDICT_TOPIC};

    use super::{Params, check_snapshot};

    /// Waits until the server signalled `server-ready`.
    pub fn waits_for_server() -> TestResult {
        let params = Params::read()?;
        sync::barrier(SERVER_READY, 1, params.timeout)?;
        Ok(())
    }

    /// The snapshot on `kv/state` matches this client's generator.
    pub fn verifies_snapshot() -> TestResult {
        let params = Params::read()?;
        let snapshot = check_snapshot(&params)?;
        log::info(format!("snapshot ok: {} entries, checksum {:016x}", snapshot.count, snapshot.checksum));
        Ok(())
    }

    /// Publishes this client's verdict and signals `client-done`, whatever
    /// the verdict, so that the server never waits for a client that gave up.
    pub fn reports_verdict() -> TestResult {
        let who = format!("instance {} on {}", instance_index(), machine());
        let outcome = Params::read().and_then(|params| check_snapshot(&params));
        let verdict = match &outcome {
            Ok(snapshot) => {
                format!("{VERDICT_OK} {who}: {} entries, checksum {:016x}", snapshot.count, snapshot.checksum)
            }
            Err(failure) => format!("rejected by {who}: {}", failure.message()),
        };
        sync::publish(VERDICT_TOPIC, &verdict)?;
        sync::signal(CLIENT_DONE)?;
        log::info(format!("reported: {verdict}"));
        outcome.map(drop)
    }
}

ensemble_sdk::suite! {
    params(KEYS, TIMEOUT_MS),
    #[tags("sync")] client::waits_for_server,
    #[tags("sync")] client::verifies_snapshot,
    #[tags("sync")] client::reports_verdict,
}
