//! The server role of the kv demo: it builds a key/value store, publishes a
//! snapshot of it for the clients, and checks the verdicts they send back.
//!
//! Every test runs in a fresh instance, so nothing is kept in memory between
//! tests: the store is regenerated from the `keys` parameter, and everything
//! the roles exchange goes through sync topics and states (see `kv-model`).
//!
//! Parameters: `keys` (entries in the store, default 100), `clients` (client
//! instances to wait for, default 1), `timeout_ms` (for every wait, default
//! 30000).
//!
//! | test | expected |
//! |---|---|
//! | `server::builds_store` | passes (local only) |
//! | `server::publishes_state` | passes: publishes to `kv/state`, signals `server-ready` |
//! | `server::sees_client_verdict` | passes once `clients` clients signalled `client-done` and every verdict on `kv/verdict` is ok |

use std::time::Duration;

use ensemble_sdk::prelude::*;

const KEYS: Param<u64> = Param::new("keys", "entries in the store").default("100");
const CLIENTS: Param<u64> = Param::new("clients", "client instances to wait for").default("1");
const TIMEOUT_MS: Param<u64> =
    Param::new("timeout_ms", "how long every wait may take, in milliseconds").default("30000");

/// Parameters shared by the server's tests.
struct Params {
    keys: u64,
    clients: u64,
    timeout: Duration,
}

impl Params {
    fn read() -> Result<Self, Failure> {
        Ok(Self {
            keys: KEYS.get()?,
            clients: CLIENTS.get()?,
            timeout: Duration::from_millis(TIMEOUT_MS.get()?),
        })
    }
}

mod server {
    use ensemble_sdk::prelude::*;
    use kv_model::{CLIENT_DONE, SERVER_READY, STATE_TOPIC, Store, VERDICT_OK, VERDICT_TOPIC};

    use super::Params;

    /// The store behaves like a map: a purely local warm-up.
    pub fn builds_store() -> TestResult {
        let params = Params::read()?;
        let mut store = Store::generate(params.keys);
        check_eq!(store.len(), params.keys);
        check_eq!(store.checksum(), Store::generate(params.keys).checksum());

        let previous = store.put("extra".into(), "value".into());
        check_eq!(previous, None);
        check_eq!(store.get("extra"), Some("value"));
        check_eq!(store.delete("extra").as_deref(), Some("value"));
        check_eq!(store.len(), params.keys);
        Ok(())
    }

    /// Publishes the snapshot to `kv/state` and signals `server-ready`.
    pub fn publishes_state() -> TestResult {
        let params = Params::read()?;
        let store = Store::generate(params.keys);
        let snapshot = store.snapshot();
        let seq = sync::publish(STATE_TOPIC, &snapshot.encode())?;
        log::info(format!(
            "published snapshot #{seq}: {} entries, checksum {:016x}",
            snapshot.count, snapshot.checksum
        ));
        let ready = sync::signal(SERVER_READY)?;
        log::info(format!("signalled {SERVER_READY} ({ready})"));
        Ok(())
    }

    /// Waits for every client's `client-done`, then checks their verdicts.
    pub fn sees_client_verdict() -> TestResult {
        let params = Params::read()?;
        sync::barrier(CLIENT_DONE, params.clients, params.timeout)?;
        let mut verdicts = sync::subscribe(VERDICT_TOPIC);
        let mut bad = Vec::new();
        for _ in 0..params.clients {
            let verdict = verdicts.next(params.timeout)?;
            log::info(format!("client verdict: {verdict}"));
            if !verdict.starts_with(VERDICT_OK) {
                bad.push(verdict);
            }
        }
        check!(
            bad.is_empty(),
            "{} of {} clients rejected the snapshot: {}",
            bad.len(),
            params.clients,
            bad.join(" | ")
        );
        Ok(())
    }
}

ensemble_sdk::suite! {
    params(KEYS, CLIENTS, TIMEOUT_MS),
    server::builds_store,
    #[tags("sync")] server::publishes_state,
    #[tags("sync")] server::sees_client_verdict,
}
