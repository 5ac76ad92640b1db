//! The host side of the suite world: `context`, `sync`, `log` and `attach`
//! imports.
//!
//! The bindings are generated from `suites/wit` — the single definition of the
//! ABI. Sync calls are forwarded, unchanged in meaning, to the run's sync
//! service through the [`SyncPort`] of the test environment; the guest's
//! subscription resource is only a topic name plus a cursor, so the service
//! keeps no per-subscriber state.

use std::sync::Arc;

use async_trait::async_trait;
use ensemble_protocol::wire::{SyncCall, SyncFailure, SyncReply};
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::TestEnv;
use super::limits::MemoryLimiter;

wasmtime::component::bindgen!({
    world: "suite",
    path: "../suites/wit",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "ensemble:suite/sync.subscription": Subscription,
    },
});

pub use ensemble::suite::log::Level;
pub use exports::ensemble::suite::tests::TestResult;

/// Where a test's sync calls and log lines go: the machine's link to the
/// coordinator's sync service and its event stream.
#[async_trait]
pub trait SyncPort: Send + Sync {
    /// Performs a sync call for the shard this port belongs to.
    async fn call(&self, call: SyncCall) -> SyncReply;
    /// Records a log line of the running test.
    fn log(&self, test: &str, level: &str, message: &str);
    /// Records a file the running test attached, already checked against
    /// the attempt's rules ([`HostState`] does that).
    fn attach(&self, test: &str, name: &str, content: Vec<u8>);
}

/// A guest's cursor over one topic.
pub struct Subscription {
    topic: String,
    next_index: u64,
}

/// The store data of one test instance.
pub struct HostState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limiter: MemoryLimiter,
    pub(super) env: Arc<TestEnv>,
    /// The test running in this instance ("" while listing).
    pub(super) test: String,
    /// What this instance (one test attempt) attached: names and bytes.
    pub(super) attached: ensemble_protocol::attachment::Budget,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

fn sync_error(kind: SyncFailure, message: String) -> ensemble::suite::sync::SyncError {
    use ensemble::suite::sync::SyncError as E;
    match kind {
        SyncFailure::Timeout => E::Timeout(message),
        SyncFailure::Lost => E::Lost(message),
        SyncFailure::Cancelled => E::Cancelled(message),
        SyncFailure::Invalid => E::Invalid(message),
    }
}

type SyncResult<T> = Result<T, ensemble::suite::sync::SyncError>;

impl HostState {
    /// The port, owned: a host future must not hold `&self` across an await
    /// (the WASI context is not `Sync`).
    fn port(&self) -> Arc<dyn SyncPort> {
        self.env.sync.clone()
    }

    /// The wait a call gets: the plan's `barrier_timeout` when the suite
    /// asks for none (0), and never more than it: the plan bounds every wait.
    fn timeout_ms(&self, requested: u64) -> u64 {
        let bound = self.env.barrier_timeout_ms;
        if requested == 0 { bound } else { requested.min(bound) }
    }

    /// A sync call's reply, its timeout saying when the plan cut the wait
    /// the suite asked for.
    fn wait(&self, call: SyncCall, requested: u64) -> impl Future<Output = SyncReply> + Send + 'static {
        let (port, bound) = (self.port(), self.env.barrier_timeout_ms);
        async move {
            match port.call(call).await {
                SyncReply::Error { kind: SyncFailure::Timeout, message } if requested > bound => {
                    SyncReply::Error {
                        kind: SyncFailure::Timeout,
                        message: format!(
                            "{message} (the plan's barrier_timeout, {bound} ms, bounds the {requested} ms the suite asked for)"
                        ),
                    }
                }
                other => other,
            }
        }
    }
}

fn unexpected<T>(reply: SyncReply) -> SyncResult<T> {
    match reply {
        SyncReply::Error { kind, message } => Err(sync_error(kind, message)),
        other => Err(sync_error(
            SyncFailure::Invalid,
            format!("unexpected reply from the sync service: {other:?}"),
        )),
    }
}

impl ensemble::suite::types::Host for HostState {}

impl ensemble::suite::context::Host for HostState {
    async fn run_id(&mut self) -> wasmtime::Result<String> {
        Ok(self.env.run_id.clone())
    }
    async fn role(&mut self) -> wasmtime::Result<String> {
        Ok(self.env.role.clone())
    }
    async fn instance_index(&mut self) -> wasmtime::Result<u32> {
        Ok(self.env.instance)
    }
    async fn instance_count(&mut self) -> wasmtime::Result<u32> {
        Ok(self.env.instance_count)
    }
    async fn machine(&mut self) -> wasmtime::Result<String> {
        Ok(self.env.machine.clone())
    }
    async fn param(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.env.params.get(&name).cloned())
    }
    async fn params(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.env.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

impl ensemble::suite::sync::Host for HostState {
    async fn signal(&mut self, state: String) -> wasmtime::Result<SyncResult<u64>> {
        Ok(match self.port().call(SyncCall::Signal { state }).await {
            SyncReply::Value { value } => Ok(value),
            other => unexpected(other),
        })
    }

    async fn barrier(
        &mut self,
        state: String,
        target: u64,
        timeout_ms: u64,
    ) -> wasmtime::Result<SyncResult<()>> {
        let (requested, timeout_ms) = (timeout_ms, self.timeout_ms(timeout_ms));
        Ok(match self.wait(SyncCall::Barrier { state, target, timeout_ms }, requested).await {
            SyncReply::Released => Ok(()),
            other => unexpected(other),
        })
    }

    async fn signal_and_wait(
        &mut self,
        state: String,
        target: u64,
        timeout_ms: u64,
    ) -> wasmtime::Result<SyncResult<u64>> {
        let (requested, timeout_ms) = (timeout_ms, self.timeout_ms(timeout_ms));
        Ok(match self.wait(SyncCall::SignalAndWait { state, target, timeout_ms }, requested).await {
            SyncReply::Value { value } => Ok(value),
            other => unexpected(other),
        })
    }

    async fn publish(&mut self, topic: String, payload: String) -> wasmtime::Result<SyncResult<u64>> {
        Ok(match self.port().call(SyncCall::Publish { topic, payload }).await {
            SyncReply::Value { value } => Ok(value),
            other => unexpected(other),
        })
    }

    async fn subscribe(&mut self, topic: String) -> wasmtime::Result<Resource<Subscription>> {
        Ok(self.table.push(Subscription { topic, next_index: 0 })?)
    }
}

impl ensemble::suite::sync::HostSubscription for HostState {
    async fn next(
        &mut self,
        sub: Resource<Subscription>,
        timeout_ms: u64,
    ) -> wasmtime::Result<SyncResult<String>> {
        let (requested, timeout_ms) = (timeout_ms, self.timeout_ms(timeout_ms));
        let (topic, index) = {
            let s = self.table.get(&sub)?;
            (s.topic.clone(), s.next_index)
        };
        let reply = self.wait(SyncCall::Next { topic, index, timeout_ms }, requested).await;
        Ok(match reply {
            SyncReply::Message { payload } => {
                self.table.get_mut(&sub)?.next_index += 1;
                Ok(payload)
            }
            other => unexpected(other),
        })
    }

    async fn drop(&mut self, sub: Resource<Subscription>) -> wasmtime::Result<()> {
        self.table.delete(sub)?;
        Ok(())
    }
}

impl ensemble::suite::log::Host for HostState {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        self.env.sync.log(&self.test, level, &message);
        Ok(())
    }
}

impl ensemble::suite::attach::Host for HostState {
    async fn attach(&mut self, name: String, content: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        if self.test.is_empty() {
            return Ok(Err("attachments belong to a test; none runs while the suite lists its tests".into()));
        }
        if let Err(problem) = self.attached.admit(&name, content.len() as u64, self.env.attachment_limit) {
            return Ok(Err(problem));
        }
        self.env.sync.attach(&self.test, &name, content);
        Ok(Ok(()))
    }
}
