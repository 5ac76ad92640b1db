//! `ensemble serve`'s HTTP skin over the [`Coordinator`] (warp): routes per
//! resource in [`api`], the token check in [`auth`], the typed error body in
//! [`error`], the machines' WebSocket in [`join`] and the embedded browser
//! app in [`ui`]. Nothing here decides anything about runs.
//!
//! The API (every route but health and its document needs the token, as
//! `Authorization: Bearer T` or `?token=T`): each route is mounted by its
//! path template ([`route`]) and described in the OpenAPI document
//! ([`openapi`], served at `/api/openapi.json`); `protocol::api` holds every
//! request, response and error type.
//!
//! Lifecycle: [`serve`] runs until its shutdown token fires, then stops
//! accepting, shuts the coordinator down (runs cancelled, machine and watcher
//! connections closed, every task awaited) and stops the server's own machine.

pub mod api;
pub mod auth;
pub mod error;
pub mod guard;
mod join;
use crate::listen;
pub mod openapi;
pub mod route;
mod ui;

use std::sync::Arc;

use warp::http::Method;
use warp::{Filter, Reply};

use crate::agent::link::pump_in_process;
use crate::agent::{Agent, SuiteSource};
use crate::coordinator::{Coordinator, CoordinatorConfig};
use crate::sandbox::Sandbox;
use crate::store::Store;

/// The largest message a machine may send: a frame larger than this comes
/// in parts (`wire::MAX_PART`), put together in the intake's room.
const MAX_MACHINE_MESSAGE: usize = ensemble_protocol::wire::MAX_PART;

/// Every route: the API, the machines' WebSocket, the app, and the error body.
pub fn routes(core: &Arc<Coordinator>) -> warp::filters::BoxedFilter<(warp::reply::Response,)> {
    let join_core = core.clone();
    // The token is checked before the upgrade: nothing unauthenticated gets
    // a socket.
    let join = route::at(Method::GET, "/api/machines/join")
        .and(auth::join_required(core.clone()))
        .and(warp::ws())
        .and(warp::addr::remote())
        .and(listen::connection())
        .map(move |ws: warp::ws::Ws, addr, held| {
            let core = join_core.clone();
            ws.max_message_size(MAX_MACHINE_MESSAGE).max_frame_size(MAX_MACHINE_MESSAGE).on_upgrade(
                move |socket| async move {
                    let _slot: Option<listen::Held> = held;
                    join::serve_machine(socket, addr, core).await
                },
            )
        });
    // Everything under /api answers only to its own origin (and, on
    // loopback, to loopback names).
    let api = guard::same_origin(core.config.loopback_only)
        .and(join.map(Reply::into_response).or(api::routes(core)).unify());
    api.or(probes(core))
        .unify()
        .or(ui::routes())
        .unify()
        .recover(error::recover)
        .unify()
        .map(not_framed)
        .boxed()
}

/// No other site may frame the app or any answer of ours (clickjacking):
/// `frame-ancestors 'self'` for browsers that read CSP, `X-Frame-Options`
/// for older ones. A response with a policy of its own keeps it.
fn not_framed(mut reply: warp::reply::Response) -> warp::reply::Response {
    use warp::http::header::{CONTENT_SECURITY_POLICY, HeaderValue, X_FRAME_OPTIONS};
    let headers = reply.headers_mut();
    headers.entry(X_FRAME_OPTIONS).or_insert(HeaderValue::from_static("SAMEORIGIN"));
    headers.entry(CONTENT_SECURITY_POLICY).or_insert(HeaderValue::from_static("frame-ancestors 'self'"));
    reply
}

/// The process's metrics in the OpenMetrics text format (which Prometheus
/// reads), with the coordinator's state when there is one.
pub fn metrics_reply(core: Option<&Coordinator>) -> warp::reply::Response {
    crate::metrics::reply(core.map(Coordinator::metrics_scrape))
}

/// `/healthz` (alive: it answers) and `/readyz` (ready: 200, or 503 with
/// the failed check), for service managers and Kubernetes probes: no token,
/// nothing told but the checks' findings; and `/metrics`, behind the
/// metrics token when there is one.
fn probes(core: &Arc<Coordinator>) -> warp::filters::BoxedFilter<(warp::reply::Response,)> {
    let healthz = route::at(Method::GET, "/healthz").map(|| "ok\n".into_response());
    let ready_core = core.clone();
    let readyz = route::at(Method::GET, "/readyz").then(move || {
        let core = ready_core.clone();
        async move {
            let readiness = core.readiness().await;
            let status = if readiness.ready { 200 } else { 503 };
            error::json_with(&readiness, status)
        }
    });
    let metrics_core = core.clone();
    let metrics = route::at(Method::GET, "/metrics")
        .and(auth::metrics_required(core.clone()))
        .map(move || metrics_reply(Some(&metrics_core)));
    healthz.or(readyz).unify().or(metrics).unify().boxed()
}

/// Suites for the server's own machine: straight from the store.
struct StoreSuites(Store);

#[async_trait::async_trait]
impl SuiteSource for StoreSuites {
    async fn fetch(&self, sha256: &str) -> anyhow::Result<Arc<Vec<u8>>> {
        let sha = sha256.to_string();
        self.0
            .call(move |s| s.suite_bytes(&sha))
            .await?
            .map(Arc::new)
            .ok_or_else(|| anyhow::anyhow!("no suite with sha256 {sha256} in the store"))
    }
}

/// How `ensemble serve` runs.
pub struct ServeOptions {
    pub listener: tokio::net::TcpListener,
    pub data_dir: std::path::PathBuf,
    pub config: CoordinatorConfig,
    /// The server's own machine, unless `--no-local-machine`.
    pub local_machine: Option<ensemble_protocol::wire::MachineInfo>,
    /// What plans may grant on the server's own machine.
    pub policy: crate::sandbox::HostPolicy,
    /// What services may start on the server's own machine.
    pub services: crate::services::Host,
    /// Terminate TLS with this configuration (`--tls-cert`/`--tls-key`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long runs and attached files are kept, and how many or how much.
    pub retention: Retention,
}

/// How long the server keeps runs and the files tests attach, and the
/// most it keeps (`serve --run-retention`, `--max-runs`,
/// `--attachment-retention`, `--attachment-budget`).
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub runs: std::time::Duration,
    pub max_runs: u64,
    pub suite_budget: u64,
    pub attachments: std::time::Duration,
    pub attachment_budget: u64,
    /// The most the store's database may grow to (`--store-max-size`).
    pub store_max_bytes: Option<u64>,
}

/// How often the server sweeps runs and attachments past their retention.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes what is past `policy` now: runs first, then the suites and
/// attachment files no kept run needs (those of the runs removed too).
pub async fn sweep(
    store: &Store,
    policy: Retention,
) -> anyhow::Result<(crate::store::SweptRuns, crate::store::SweptSuites, crate::store::Swept)> {
    let before = |age: std::time::Duration| {
        crate::time::now_us().saturating_sub(i64::try_from(age.as_micros()).unwrap_or(i64::MAX))
    };
    let (runs_cutoff, files_cutoff) = (before(policy.runs), before(policy.attachments));
    let runs = store.call(move |s| s.sweep_runs(runs_cutoff, policy.max_runs)).await?;
    let suites = store.call(move |s| s.sweep_suites(runs_cutoff, policy.suite_budget)).await?;
    let files = store.call(move |s| s.sweep_attachments(files_cutoff, policy.attachment_budget)).await?;
    Ok((runs, suites, files))
}

/// Sweeps the store now and every [`SWEEP_EVERY`] until `stop`.
async fn sweeper(store: Store, policy: Retention, stop: tokio_util::sync::CancellationToken) {
    loop {
        match sweep(&store, policy).await {
            Ok((runs, suites, files)) if runs.runs > 0 || suites.suites > 0 || files.files > 0 => {
                tracing::info!("retention: {runs}; {suites}; {files}")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("sweeping runs, suites and attachments: {e:#}"),
        }
        tokio::select! {
            () = tokio::time::sleep(SWEEP_EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Serves the API until `shutdown`, then winds everything down.
pub async fn serve(
    opts: ServeOptions,
    sandbox: Arc<Sandbox>,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let store = Store::open(&opts.data_dir)?;
    if let Some(bytes) = opts.retention.store_max_bytes {
        store.limit_size(bytes)?;
    }
    let sweeper = tokio::spawn(sweeper(store.clone(), opts.retention, shutdown.clone()));
    let core = Coordinator::new(store.clone(), sandbox.clone(), opts.config);
    core.resume_runs(opts.local_machine.as_ref().map(|m| m.name.as_str())).await?;
    let mut local = None;
    if let Some(info) = opts.local_machine {
        let (to_tx, to_rx) = tokio::sync::mpsc::unbounded_channel();
        let (agent_in_tx, agent_in_rx) = tokio::sync::mpsc::unbounded_channel();
        let (agent_out_tx, agent_out_rx) = tokio::sync::mpsc::unbounded_channel();
        let name = info.name.clone();
        core.connect(info.clone(), to_tx, true, None, None).map_err(anyhow::Error::msg)?;
        let agent = Arc::new(
            Agent::new(info, sandbox, Arc::new(StoreSuites(store)), opts.policy).with_services(opts.services),
        );
        let backlog = agent.backlog();
        let agent_task = tokio::spawn(agent.serve(agent_in_rx, agent_out_tx, shutdown.child_token()));
        let deliver_core = core.clone();
        let pump = tokio::spawn(pump_in_process(agent_out_rx, agent_in_tx, to_rx, backlog, move |msg| {
            deliver_core.on_message(&name, msg, None);
            true
        }));
        local = Some((agent_task, pump));
    }
    let stop = shutdown.clone();
    let server = listen::serve(opts.listener, opts.tls, warp::service(routes(&core)), stop);
    // Machines stay connected while the runs wind down, so their cancel
    // reaches them; the coordinator closes the connections after.
    let closing = async {
        shutdown.cancelled().await;
        core.shutdown().await;
    };
    tokio::join!(server, closing);
    if let Some((agent_task, pump)) = local {
        let _ = agent_task.await;
        let _ = pump.await;
    }
    let _ = sweeper.await;
    Ok(())
}
