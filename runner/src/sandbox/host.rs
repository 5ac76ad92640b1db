//! The host side of the suite world: `context`, `sync`, `log`, `attach` and
//! `services` imports.
//!
//! The bindings are generated from `suites/wit` — the single definition of the
//! ABI. Sync calls are forwarded, unchanged in meaning, to the run's sync
//! service through the [`SyncPort`] of the test environment; the guest's
//! subscription resource is only a topic name plus a cursor, so the service
//! keeps no per-subscriber state. Faults (`services`, ABI 0.3) are sync
//! calls too: the coordinator routes them to the machine of the service.

use std::sync::Arc;

use async_trait::async_trait;
use ensemble_protocol::wire::{SyncCall, SyncFailure, SyncReply, sync_name_problem, sync_payload_problem};
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::TestEnv;
use super::limits::MemoryLimiter;

/// The bindings of the suite world as it is now (`suites/wit`).
pub mod v03 {
    wasmtime::component::bindgen!({
        world: "suite",
        path: "../suites/wit",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "ensemble:suite/sync.subscription": super::Subscription,
        },
    });
}

/// The bindings of suite ABI 0.2 (`suites/wit-0.2`, kept as it shipped):
/// the world of 0.3 without `services`.
pub mod v02 {
    wasmtime::component::bindgen!({
        world: "suite",
        path: "../suites/wit-0.2",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "ensemble:suite/sync.subscription": super::Subscription,
        },
    });
}

/// The bindings of suite ABI 0.1 (`suites/wit-0.1`, kept as it shipped):
/// the same imports, and `tests` without `describe`. Suites built for it
/// keep running; the host side is the one below, instantiated for both.
pub mod v01 {
    wasmtime::component::bindgen!({
        world: "suite",
        path: "../suites/wit-0.1",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "ensemble:suite/sync.subscription": super::Subscription,
        },
    });
}

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

/// A guest's cursor over one topic; or why the subscription was refused
/// (its `next` says so: `subscribe` cannot fail in the ABI).
pub struct Subscription {
    topic: String,
    next_index: u64,
    refused: Option<String>,
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
    /// What this instance logged and called, against its budgets.
    pub(super) spent: Spent,
    /// `wasi:http`: its context, and the gate its requests pass.
    pub(super) http: wasmtime_wasi_http::WasiHttpCtx,
    pub(super) http_gate: super::caps::HttpGate,
    /// TCP sockets the test holds now (see `net::MAX_SOCKETS`).
    pub(super) sockets: u32,
}

/// The most sync calls one test attempt may make: each is an event on the
/// run's timeline, stored.
pub const MAX_SYNC_CALLS: u64 = 100_000;
/// What a log line costs besides its text: the event around it.
const LOG_LINE_COST: u64 = 64;

/// What one test attempt has spent of its per-test budgets.
#[derive(Default)]
pub(super) struct Spent {
    /// Bytes of log lines (text plus [`LOG_LINE_COST`] each).
    log_bytes: u64,
    /// Lines dropped past the budget.
    log_dropped: u64,
    sync_calls: u64,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl wasmtime_wasi_http::WasiHttpView for HostState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_gate,
        }
    }
}

/// A failed sync call, before it becomes the `sync-error` of the suite's
/// ABI version.
struct SyncFault(SyncFailure, String);

type SyncResult<T> = Result<T, SyncFault>;

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
        SyncReply::Error { kind, message } => Err(SyncFault(kind, message)),
        other => {
            Err(SyncFault(SyncFailure::Invalid, format!("unexpected reply from the sync service: {other:?}")))
        }
    }
}

/// The imports' meaning, written once for every ABI version.
impl HostState {
    /// Refuses a name or payload over the bounds here, before the call
    /// leaves the machine (the coordinator checks again).
    fn check_call(kind: &str, name: &str, payload: Option<&str>) -> SyncResult<()> {
        let why = sync_name_problem(kind, name).or_else(|| payload.and_then(sync_payload_problem));
        why.map_or(Ok(()), |why| Err(SyncFault(SyncFailure::Invalid, why)))
    }

    /// A new cursor over `topic`, counted as a sync call; refused (its
    /// `next` fails) past the bounds.
    fn subscription(&mut self, topic: String) -> Subscription {
        let refused = self.count_call().and_then(|()| Self::check_call("topic", &topic, None)).err();
        match refused {
            None => Subscription { topic, next_index: 0, refused: None },
            Some(SyncFault(_, why)) => {
                Subscription { topic: String::new(), next_index: 0, refused: Some(why) }
            }
        }
    }

    /// Counts one sync call against [`MAX_SYNC_CALLS`].
    fn count_call(&mut self) -> SyncResult<()> {
        self.spent.sync_calls += 1;
        if self.spent.sync_calls > MAX_SYNC_CALLS {
            return Err(SyncFault(
                SyncFailure::Invalid,
                format!("this test made {MAX_SYNC_CALLS} sync calls, the most one test may make"),
            ));
        }
        Ok(())
    }

    /// A log line, within the test's budget: log lines share the plan's
    /// `output_limit` (per test), counted apart from stdout and stderr.
    /// Past it, one line says so and the rest are dropped.
    fn log_line(&mut self, level: &str, message: &str) {
        let cost = message.len() as u64 + LOG_LINE_COST;
        if self.spent.log_dropped == 0 && self.spent.log_bytes + cost <= self.env.output_limit {
            self.spent.log_bytes += cost;
            self.env.sync.log(&self.test, level, message);
            return;
        }
        if self.spent.log_dropped == 0 {
            let note = format!(
                "[ensemble: log cut at {} (the plan's output_limit, per test); later lines are dropped]",
                ensemble_protocol::units::ByteSize(self.env.output_limit)
            );
            self.env.sync.log(&self.test, "warn", &note);
        }
        self.spent.log_dropped += 1;
    }

    async fn signal(&mut self, state: String) -> SyncResult<u64> {
        self.count_call()?;
        Self::check_call("state", &state, None)?;
        match self.port().call(SyncCall::Signal { state }).await {
            SyncReply::Value { value } => Ok(value),
            other => unexpected(other),
        }
    }

    async fn barrier(&mut self, state: String, target: u64, timeout_ms: u64) -> SyncResult<()> {
        self.count_call()?;
        Self::check_call("state", &state, None)?;
        let (requested, timeout_ms) = (timeout_ms, self.timeout_ms(timeout_ms));
        match self.wait(SyncCall::Barrier { state, target, timeout_ms }, requested).await {
            SyncReply::Released => Ok(()),
            other => unexpected(other),
        }
    }

    async fn signal_and_wait(&mut self, state: String, target: u64, timeout_ms: u64) -> SyncResult<u64> {
        self.count_call()?;
        Self::check_call("state", &state, None)?;
        let (requested, timeout_ms) = (timeout_ms, self.timeout_ms(timeout_ms));
        match self.wait(SyncCall::SignalAndWait { state, target, timeout_ms }, requested).await {
            SyncReply::Value { value } => Ok(value),
            other => unexpected(other),
        }
    }

    async fn publish(&mut self, topic: String, payload: String) -> SyncResult<u64> {
        self.count_call()?;
        Self::check_call("topic", &topic, Some(&payload))?;
        match self.port().call(SyncCall::Publish { topic, payload }).await {
            SyncReply::Value { value } => Ok(value),
            other => unexpected(other),
        }
    }

    async fn next(
        &mut self,
        sub: &Resource<Subscription>,
        timeout_ms: u64,
    ) -> wasmtime::Result<SyncResult<String>> {
        if let Err(fault) = self.count_call() {
            return Ok(Err(fault));
        }
        let (requested, timeout_ms) = (timeout_ms, self.timeout_ms(timeout_ms));
        let (topic, index) = {
            let s = self.table.get(sub)?;
            if let Some(why) = &s.refused {
                return Ok(Err(SyncFault(SyncFailure::Invalid, why.clone())));
            }
            (s.topic.clone(), s.next_index)
        };
        let reply = self.wait(SyncCall::Next { topic, index, timeout_ms }, requested).await;
        Ok(match reply {
            SyncReply::Message { payload } => {
                self.table.get_mut(sub)?.next_index += 1;
                Ok(payload.to_string())
            }
            other => unexpected(other),
        })
    }

    /// A fault into `service`: refused here when the entry is not granted
    /// it (the coordinator refuses it again), else routed by the
    /// coordinator to the service's machine; answers once it is done.
    async fn fault(
        &mut self,
        service: String,
        instance: Option<u32>,
        action: ensemble_protocol::fault::FaultAction,
    ) -> SyncResult<()> {
        self.count_call()?;
        if self.test.is_empty() {
            return Err(SyncFault(
                SyncFailure::Invalid,
                "faults belong to a test; none runs while the suite lists its tests".into(),
            ));
        }
        if let Err(why) = ensemble_protocol::service::check_name(&service) {
            return Err(SyncFault(SyncFailure::Invalid, format!("no service {service:?}: {why}")));
        }
        if !self.env.grants.may_fault(&service) {
            return Err(SyncFault(
                SyncFailure::Denied,
                format!(
                    "role {} may not {} service {service}: the plan entry is not granted faults into it \
                     (add `faults = [\"{service}\"]` to the entry's capabilities)",
                    self.env.role,
                    action.describe()
                ),
            ));
        }
        let call = SyncCall::Fault { service, instance, action, test: self.test.clone() };
        match self.port().call(call).await {
            SyncReply::Done => Ok(()),
            other => unexpected(other),
        }
    }

    fn attach(&mut self, name: String, content: Vec<u8>) -> Result<(), String> {
        if self.test.is_empty() {
            return Err("attachments belong to a test; none runs while the suite lists its tests".into());
        }
        self.attached.admit(&name, content.len() as u64, self.env.attachment_limit)?;
        self.env.sync.attach(&self.test, &name, content);
        Ok(())
    }
}

/// Implements one ABI version's import traits with the methods above: the
/// versions differ in their generated types only.
macro_rules! suite_host {
    ($abi:ident) => {
        impl From<SyncFault> for $abi::ensemble::suite::sync::SyncError {
            fn from(SyncFault(kind, message): SyncFault) -> Self {
                match kind {
                    SyncFailure::Timeout => Self::Timeout(message),
                    SyncFailure::Lost => Self::Lost(message),
                    SyncFailure::Cancelled => Self::Cancelled(message),
                    SyncFailure::Invalid | SyncFailure::Denied | SyncFailure::Failed => {
                        Self::Invalid(message)
                    }
                }
            }
        }

        impl $abi::ensemble::suite::types::Host for HostState {}

        impl $abi::ensemble::suite::context::Host for HostState {
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

        impl $abi::ensemble::suite::sync::Host for HostState {
            async fn signal(
                &mut self,
                state: String,
            ) -> wasmtime::Result<Result<u64, $abi::ensemble::suite::sync::SyncError>> {
                Ok(HostState::signal(self, state).await.map_err(Into::into))
            }
            async fn barrier(
                &mut self,
                state: String,
                target: u64,
                timeout_ms: u64,
            ) -> wasmtime::Result<Result<(), $abi::ensemble::suite::sync::SyncError>> {
                Ok(HostState::barrier(self, state, target, timeout_ms).await.map_err(Into::into))
            }
            async fn signal_and_wait(
                &mut self,
                state: String,
                target: u64,
                timeout_ms: u64,
            ) -> wasmtime::Result<Result<u64, $abi::ensemble::suite::sync::SyncError>> {
                Ok(HostState::signal_and_wait(self, state, target, timeout_ms).await.map_err(Into::into))
            }
            async fn publish(
                &mut self,
                topic: String,
                payload: String,
            ) -> wasmtime::Result<Result<u64, $abi::ensemble::suite::sync::SyncError>> {
                Ok(HostState::publish(self, topic, payload).await.map_err(Into::into))
            }
            async fn subscribe(&mut self, topic: String) -> wasmtime::Result<Resource<Subscription>> {
                let sub = self.subscription(topic);
                Ok(self.table.push(sub)?)
            }
        }

        impl $abi::ensemble::suite::sync::HostSubscription for HostState {
            async fn next(
                &mut self,
                sub: Resource<Subscription>,
                timeout_ms: u64,
            ) -> wasmtime::Result<Result<String, $abi::ensemble::suite::sync::SyncError>> {
                Ok(HostState::next(self, &sub, timeout_ms).await?.map_err(Into::into))
            }
            async fn drop(&mut self, sub: Resource<Subscription>) -> wasmtime::Result<()> {
                self.table.delete(sub)?;
                Ok(())
            }
        }

        impl $abi::ensemble::suite::log::Host for HostState {
            async fn log(
                &mut self,
                level: $abi::ensemble::suite::log::Level,
                message: String,
            ) -> wasmtime::Result<()> {
                use $abi::ensemble::suite::log::Level;
                let level = match level {
                    Level::Trace => "trace",
                    Level::Debug => "debug",
                    Level::Info => "info",
                    Level::Warn => "warn",
                    Level::Error => "error",
                };
                self.log_line(level, &message);
                Ok(())
            }
        }

        impl $abi::ensemble::suite::attach::Host for HostState {
            async fn attach(
                &mut self,
                name: String,
                content: Vec<u8>,
            ) -> wasmtime::Result<Result<(), String>> {
                Ok(HostState::attach(self, name, content))
            }
        }
    };
}

suite_host!(v01);
suite_host!(v02);
suite_host!(v03);

/// `services` (ABI 0.3): faults, each one sync call.
mod faults {
    use ensemble_protocol::fault::{FaultAction, Signal};
    use ensemble_protocol::wire::SyncFailure;

    use super::v03::ensemble::suite::services::{Address, FaultError, Host, Signal as WitSignal};
    use super::{HostState, SyncFault};

    impl From<SyncFault> for FaultError {
        fn from(SyncFault(kind, message): SyncFault) -> Self {
            match kind {
                SyncFailure::Denied => Self::Denied(message),
                SyncFailure::Invalid => Self::Unknown(message),
                SyncFailure::Cancelled => Self::Cancelled(message),
                SyncFailure::Failed | SyncFailure::Lost | SyncFailure::Timeout => Self::Failed(message),
            }
        }
    }

    type Answer = wasmtime::Result<Result<(), FaultError>>;

    impl HostState {
        async fn fault_call(
            &mut self,
            service: String,
            instance: Option<u32>,
            action: FaultAction,
        ) -> Answer {
            Ok(self.fault(service, instance, action).await.map_err(Into::into))
        }
    }

    impl Host for HostState {
        async fn addresses(&mut self, service: String) -> wasmtime::Result<Vec<Address>> {
            Ok(self
                .env
                .grants
                .service_addresses(&service)
                .iter()
                .map(|a| Address {
                    machine: a.machine.clone(),
                    host: a.host.clone(),
                    port: a.port,
                    ports: a.ports.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                })
                .collect())
        }
        async fn stop(&mut self, service: String, instance: Option<u32>) -> Answer {
            self.fault_call(service, instance, FaultAction::Stop).await
        }
        async fn start(&mut self, service: String, instance: Option<u32>) -> Answer {
            self.fault_call(service, instance, FaultAction::Start).await
        }
        async fn restart(&mut self, service: String, instance: Option<u32>) -> Answer {
            self.fault_call(service, instance, FaultAction::Restart).await
        }
        async fn kill(&mut self, service: String, instance: Option<u32>, signal: WitSignal) -> Answer {
            let signal = match signal {
                WitSignal::Term => Signal::Term,
                WitSignal::Kill => Signal::Kill,
                WitSignal::Int => Signal::Int,
                WitSignal::Hup => Signal::Hup,
                WitSignal::Quit => Signal::Quit,
                WitSignal::Usr1 => Signal::Usr1,
                WitSignal::Usr2 => Signal::Usr2,
            };
            self.fault_call(service, instance, FaultAction::Kill { signal }).await
        }
        async fn pause(&mut self, service: String, instance: Option<u32>) -> Answer {
            self.fault_call(service, instance, FaultAction::Pause).await
        }
        async fn resume(&mut self, service: String, instance: Option<u32>) -> Answer {
            self.fault_call(service, instance, FaultAction::Resume).await
        }
    }
}
