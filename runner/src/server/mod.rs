//! `ensemble serve`: the coordinator's HTTP API and WebSocket endpoints (warp).
//!
//! - `GET  /api/health`
//! - `GET  /api/machines[?min_online=N&wait_ms=T]` (long-polls until N are online)
//! - `POST /api/machines/{name}/disconnect` (closes its connection; it reconnects)
//! - `GET  /api/machines/join` (WebSocket): machines dial in here
//! - `GET|POST /api/suites`, `GET|HEAD /api/suites/{sha256}`, `GET /api/suites/{sha256}/inspect`
//! - `GET|POST /api/plans`, `GET|PUT|DELETE /api/plans/{id}`, `GET /api/plans/{id}/toml`,
//!   `POST /api/plans/import` (TOML body)
//! - `GET|POST /api/runs`, `GET /api/runs/{id}`, `POST /api/runs/{id}/cancel`,
//!   `GET /api/runs/{id}/events?from=SEQ` (WebSocket: replay, then live)
//!
//! Every endpoint but health requires the token when the server has one, as
//! `Authorization: Bearer T` or `?token=T` (browsers cannot set headers on a
//! WebSocket). Errors are JSON [`ApiError`]s that say what was wrong.

mod hub;
mod join;
mod ui;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ensemble_protocol::Plan;
use ensemble_protocol::api::{ApiError, RunRequest, StoredPlan, SuiteMeta, TestMeta};
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

pub use hub::{Hub, HubConfig, StartError};

use crate::agent::now_us;
use crate::sandbox::{TestEnv, sha256_hex};

/// A rejection carrying an API error.
#[derive(Debug)]
struct Problem(StatusCode, ApiError);

impl warp::reject::Reject for Problem {}

fn problem(status: StatusCode, error: impl Into<String>) -> Rejection {
    warp::reject::custom(Problem(status, ApiError { error: error.into(), problems: vec![] }))
}

fn internal(e: impl std::fmt::Display) -> Rejection {
    tracing::error!("internal error: {e}");
    problem(StatusCode::INTERNAL_SERVER_ERROR, format!("internal error: {e}"))
}

fn json<T: Serialize>(v: &T) -> warp::reply::Json {
    warp::reply::json(v)
}

/// Constant-time token comparison.
fn token_ok(expected: &str, given: &str) -> bool {
    use subtle::ConstantTimeEq;
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

fn with_hub(hub: Arc<Hub>) -> impl Filter<Extract = (Arc<Hub>,), Error = Infallible> + Clone {
    warp::any().map(move || hub.clone())
}

/// Requires the server's token (bearer header or `token` query parameter).
fn auth(hub: Arc<Hub>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::addr::remote())
        .and_then(
            move |header: Option<String>,
                  query: HashMap<String, String>,
                  addr: Option<std::net::SocketAddr>| {
                let hub = hub.clone();
                async move {
                    let Some(expected) = &hub.config.token else { return Ok(()) };
                    let given = header
                        .as_deref()
                        .and_then(|h| h.strip_prefix("Bearer "))
                        .or(query.get("token").map(String::as_str));
                    match given {
                        Some(g) if token_ok(expected, g) => Ok(()),
                        Some(_) => {
                            tracing::warn!(peer = ?addr, "rejected a request with a wrong token");
                            Err(problem(StatusCode::UNAUTHORIZED, "wrong token"))
                        }
                        None => {
                            tracing::warn!(peer = ?addr, "rejected a request without a token");
                            Err(problem(
                                StatusCode::UNAUTHORIZED,
                                "this server needs a token: send `Authorization: Bearer <token>`",
                            ))
                        }
                    }
                }
            },
        )
        .untuple_one()
}

/// `/api/{name}` exactly (a collection).
fn collection(name: &'static str) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::path("api").and(warp::path(name)).and(warp::path::end())
}

/// A request body of at most `max` bytes.
fn body(max: u64) -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::body::content_length_limit(max).and(warp::body::bytes())
}

/// All routes of the API.
pub fn routes(hub: Arc<Hub>) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let api = warp::path("api");
    let h = || with_hub(hub.clone());
    let a = || auth(hub.clone());

    let health = api.and(warp::path("health")).and(warp::path::end()).and(warp::get()).map(|| {
        json(&serde_json::json!({ "ok": true, "version": env!("CARGO_PKG_VERSION"), "protocol": ensemble_protocol::PROTOCOL_VERSION }))
    });

    let machines = collection("machines")
        .and(warp::get())
        .and(a())
        .and(warp::query::<HashMap<String, String>>())
        .and(h())
        .and_then(list_machines);
    let kick = api
        .and(warp::path!("machines" / String / "disconnect"))
        .and(warp::post())
        .and(a())
        .and(h())
        .and_then(|name: String, hub: Arc<Hub>| async move {
            if hub.kick(&name) {
                Ok(json(&serde_json::json!({ "disconnected": name })))
            } else {
                Err(problem(StatusCode::NOT_FOUND, format!("no remote machine named {name:?}")))
            }
        });
    let join = api
        .and(warp::path!("machines" / "join"))
        .and(warp::ws())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::addr::remote())
        .and(h())
        .map(|ws: warp::ws::Ws, header: Option<String>, addr, hub: Arc<Hub>| {
            ws.max_message_size(16 << 20)
                .on_upgrade(move |socket| join::serve_machine(socket, header, addr, hub))
        });

    let suites_list = collection("suites")
        .and(warp::get())
        .and(a())
        .and(h())
        .and_then(|hub: Arc<Hub>| async move { hub.store.suites().map(|s| json(&s)).map_err(internal) });
    let max = hub.config.max_suite_bytes as u64;
    let suites_upload = collection("suites")
        .and(warp::post())
        .and(a())
        .and(warp::query::<HashMap<String, String>>())
        .and(body(max))
        .and(h())
        .and_then(upload_suite);
    let suite_get = api
        .and(warp::path!("suites" / String))
        .and(warp::get().or(warp::head()).unify())
        .and(a())
        .and(h())
        .and_then(|sha: String, hub: Arc<Hub>| async move {
            match hub.store.suite_bytes(&sha).map_err(internal)? {
                Some(bytes) => Ok(warp::reply::with_header(bytes, "content-type", "application/wasm")),
                None => Err(problem(StatusCode::NOT_FOUND, format!("no suite with sha256 {sha}"))),
            }
        });
    let suite_inspect =
        api.and(warp::path!("suites" / String / "inspect")).and(warp::get()).and(a()).and(h()).and_then(
            |sha: String, hub: Arc<Hub>| async move {
                match hub.store.suite(&sha).map_err(internal)? {
                    Some(meta) => Ok(json(&meta)),
                    None => Err(problem(StatusCode::NOT_FOUND, format!("no suite with sha256 {sha}"))),
                }
            },
        );

    let plans_list = collection("plans")
        .and(warp::get())
        .and(a())
        .and(h())
        .and_then(|hub: Arc<Hub>| async move { hub.store.plans().map(|p| json(&p)).map_err(internal) });
    let plans_create =
        collection("plans").and(warp::post()).and(a()).and(body(4 << 20)).and(h()).and_then(
            |body: Bytes, hub: Arc<Hub>| async move { save_plan(&hub, None, parse_json_plan(&body)?) },
        );
    let plans_import = api
        .and(warp::path!("plans" / "import"))
        .and(warp::post())
        .and(a())
        .and(body(4 << 20))
        .and(h())
        .and_then(|body: Bytes, hub: Arc<Hub>| async move {
            let text = std::str::from_utf8(&body)
                .map_err(|_| problem(StatusCode::BAD_REQUEST, "the TOML is not UTF-8"))?;
            let plan = Plan::from_toml(text).map_err(plan_problem)?;
            save_plan(&hub, None, plan)
        });
    let plan_get = api
        .and(warp::path!("plans" / String))
        .and(warp::get())
        .and(a())
        .and(h())
        .and_then(|id: String, hub: Arc<Hub>| async move { find_plan(&hub, &id).map(|p| json(&p)) });
    let plan_toml = api
        .and(warp::path!("plans" / String / "toml"))
        .and(warp::get())
        .and(a())
        .and(h())
        .and_then(|id: String, hub: Arc<Hub>| async move {
            let p = find_plan(&hub, &id)?;
            Ok::<_, Rejection>(warp::reply::with_header(p.plan.to_toml(), "content-type", "application/toml"))
        });
    let plan_put = api
        .and(warp::path!("plans" / String))
        .and(warp::put())
        .and(a())
        .and(body(4 << 20))
        .and(h())
        .and_then(|id: String, body: Bytes, hub: Arc<Hub>| async move {
            find_plan(&hub, &id)?;
            save_plan(&hub, Some(id), parse_json_plan(&body)?)
        });
    let plan_delete = api.and(warp::path!("plans" / String)).and(warp::delete()).and(a()).and(h()).and_then(
        |id: String, hub: Arc<Hub>| async move {
            if hub.store.delete_plan(&id).map_err(internal)? {
                Ok(warp::reply::with_status(json(&serde_json::json!({ "deleted": id })), StatusCode::OK))
            } else {
                Err(problem(StatusCode::NOT_FOUND, format!("no plan with id {id}")))
            }
        },
    );

    let runs_list = collection("runs")
        .and(warp::get())
        .and(a())
        .and(h())
        .and_then(|hub: Arc<Hub>| async move { hub.store.runs().map(|r| json(&r)).map_err(internal) });
    let runs_start =
        collection("runs").and(warp::post()).and(a()).and(body(4 << 20)).and(h()).and_then(start_run);
    let run_get = api.and(warp::path!("runs" / String)).and(warp::get()).and(a()).and(h()).and_then(
        |id: String, hub: Arc<Hub>| async move {
            match hub.store.run(&id).map_err(internal)? {
                Some(r) => Ok(json(&r)),
                None => Err(problem(StatusCode::NOT_FOUND, format!("no run with id {id}"))),
            }
        },
    );
    let run_cancel =
        api.and(warp::path!("runs" / String / "cancel")).and(warp::post()).and(a()).and(h()).and_then(
            |id: String, hub: Arc<Hub>| async move {
                if hub.cancel_run(&id, "cancelled by a user".into()) {
                    Ok(json(&serde_json::json!({ "cancelling": id })))
                } else {
                    Err(problem(StatusCode::CONFLICT, format!("run {id} is not running")))
                }
            },
        );
    // The same stream also at `/api/events/{id}`, a prefix of WebSockets
    // only, which a dev proxy (Trunk's) can route apart from the REST API.
    let run_events = api
        .and(warp::path!("runs" / String / "events").or(warp::path!("events" / String)).unify())
        .and(warp::ws())
        .and(a())
        .and(warp::query::<HashMap<String, String>>())
        .and(h())
        .and_then(|id: String, ws: warp::ws::Ws, query: HashMap<String, String>, hub: Arc<Hub>| async move {
            if hub.store.run(&id).map_err(internal)?.is_none() {
                return Err(problem(StatusCode::NOT_FOUND, format!("no run with id {id}")));
            }
            let from = match query.get("from") {
                Some(f) => f.parse::<u64>().map_err(|_| {
                    problem(StatusCode::BAD_REQUEST, format!("from={f:?} is not a sequence number"))
                })?,
                None => 1,
            };
            Ok(ws.on_upgrade(move |socket| watch_run(socket, hub, id, from)))
        });

    health
        .or(join)
        .or(kick)
        .or(machines)
        .or(suites_upload)
        .or(suites_list)
        .or(suite_inspect)
        .or(suite_get)
        .or(plans_import)
        .or(plan_toml)
        .or(plans_create)
        .or(plans_list)
        .or(plan_get)
        .or(plan_put)
        .or(plan_delete)
        .or(runs_start)
        .or(runs_list)
        .or(run_cancel)
        .or(run_events)
        .or(run_get)
        .or(ui::routes())
        .recover(recover)
}

async fn recover(err: Rejection) -> Result<impl Reply, Infallible> {
    let (status, body) = if let Some(Problem(status, body)) = err.find::<Problem>() {
        (*status, body.clone())
    } else if err.is_not_found() {
        (StatusCode::NOT_FOUND, ApiError { error: "no such endpoint".into(), problems: vec![] })
    } else if let Some(e) = err.find::<warp::reject::PayloadTooLarge>() {
        (StatusCode::PAYLOAD_TOO_LARGE, ApiError { error: format!("{e}"), problems: vec![] })
    } else if err.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            ApiError { error: "method not allowed here".into(), problems: vec![] },
        )
    } else {
        (StatusCode::BAD_REQUEST, ApiError { error: format!("bad request: {err:?}"), problems: vec![] })
    };
    Ok(warp::reply::with_status(json(&body), status))
}

fn plan_problem(e: ensemble_protocol::PlanError) -> Rejection {
    warp::reject::custom(Problem(
        StatusCode::UNPROCESSABLE_ENTITY,
        ApiError { error: e.to_string(), problems: e.problems },
    ))
}

fn parse_json_plan(body: &[u8]) -> Result<Plan, Rejection> {
    let text =
        std::str::from_utf8(body).map_err(|_| problem(StatusCode::BAD_REQUEST, "the body is not UTF-8"))?;
    Plan::from_json(text).map_err(plan_problem)
}

fn find_plan(hub: &Hub, id: &str) -> Result<StoredPlan, Rejection> {
    hub.store
        .plan(id)
        .map_err(internal)?
        .ok_or_else(|| problem(StatusCode::NOT_FOUND, format!("no plan with id {id}")))
}

/// Gives entries naming a stored suite by hash the suite's name as their role.
fn name_roles(hub: &Hub, plan: &mut Plan) {
    for e in &mut plan.entries {
        if e.role.is_none()
            && let Some(sha) = ensemble_protocol::api::suite_sha(&e.suite)
            && let Ok(Some(meta)) = hub.store.suite(sha)
        {
            e.role = Some(meta.name);
        }
    }
}

fn save_plan(
    hub: &Hub,
    id: Option<String>,
    mut plan: Plan,
) -> Result<warp::reply::WithStatus<warp::reply::Json>, Rejection> {
    name_roles(hub, &mut plan);
    plan.validate().map_err(plan_problem)?;
    let now = now_us();
    let (id, created, status) = match id {
        Some(id) => {
            let created = hub.store.plan(&id).map_err(internal)?.map_or(now, |p| p.created_us);
            (id, created, StatusCode::OK)
        }
        None => (format!("plan-{:x}", now), now, StatusCode::CREATED),
    };
    let stored = StoredPlan { id, plan, created_us: created, updated_us: now };
    hub.store.put_plan(&stored).map_err(internal)?;
    Ok(warp::reply::with_status(json(&stored), status))
}

async fn list_machines(
    query: HashMap<String, String>,
    hub: Arc<Hub>,
) -> Result<warp::reply::Json, Rejection> {
    // `min_online=N` waits (up to `wait_ms`, default 10 s) until N machines are
    // online: clients wait for an event instead of polling.
    if let Some(n) = query.get("min_online") {
        let n: usize =
            n.parse().map_err(|_| problem(StatusCode::BAD_REQUEST, "min_online is not a number"))?;
        let wait = query.get("wait_ms").and_then(|w| w.parse().ok()).unwrap_or(10_000);
        let mut changes = hub.machines_changed();
        let enough = |hub: &Hub| {
            hub.machine_statuses()
                .iter()
                .filter(|m| m.state != ensemble_protocol::api::MachineState::Offline)
                .count()
                >= n
        };
        let _ = tokio::time::timeout(Duration::from_millis(wait), async {
            while !enough(&hub) {
                if changes.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
    }
    Ok(json(&hub.machine_statuses()))
}

async fn upload_suite(
    query: HashMap<String, String>,
    body: Bytes,
    hub: Arc<Hub>,
) -> Result<warp::reply::WithStatus<warp::reply::Json>, Rejection> {
    let sha = sha256_hex(&body);
    if let Some(meta) = hub.store.suite(&sha).map_err(internal)? {
        return Ok(warp::reply::with_status(json(&meta), StatusCode::OK));
    }
    let bytes = Arc::new(body.to_vec());
    let suite = hub.sandbox.load(bytes.clone()).await.map_err(|e| {
        problem(StatusCode::UNPROCESSABLE_ENTITY, format!("the upload is not a usable suite: {e}"))
    })?;
    let name = query.get("name").cloned().unwrap_or_else(|| sha[..12].to_string());
    let env = Arc::new(TestEnv::inspection(&name));
    let tests = suite
        .list(&env)
        .await
        .map_err(|e| problem(StatusCode::UNPROCESSABLE_ENTITY, format!("suite {name}: {e}")))?;
    let meta = SuiteMeta {
        sha256: sha,
        name,
        size: bytes.len() as u64,
        kind: suite.kind().as_str().to_string(),
        tests: tests
            .into_iter()
            .map(|t| TestMeta {
                name: t.name,
                tags: t.tags,
                ignored: t.ignored,
                timeout_ms: t.timeout.map(|d| d.as_millis() as u64),
            })
            .collect(),
        imports: suite.imports.clone(),
        uploaded_us: now_us(),
    };
    hub.store.put_suite(&meta, &bytes).map_err(internal)?;
    Ok(warp::reply::with_status(json(&meta), StatusCode::CREATED))
}

async fn start_run(
    body: Bytes,
    hub: Arc<Hub>,
) -> Result<warp::reply::WithStatus<warp::reply::Json>, Rejection> {
    let req: RunRequest = serde_json::from_slice(&body)
        .map_err(|e| problem(StatusCode::BAD_REQUEST, format!("the run request is not valid JSON: {e}")))?;
    let mut plan = match (req.plan, req.plan_id) {
        (Some(plan), None) => plan,
        (None, Some(id)) => find_plan(&hub, &id)?.plan,
        _ => return Err(problem(StatusCode::BAD_REQUEST, "send exactly one of `plan` and `plan_id`")),
    };
    name_roles(&hub, &mut plan);
    match hub.start_run(plan) {
        Ok(id) => Ok(warp::reply::with_status(json(&serde_json::json!({ "id": id })), StatusCode::CREATED)),
        Err(StartError::BadPlan(e)) => Err(problem(StatusCode::UNPROCESSABLE_ENTITY, e)),
        Err(StartError::Unsatisfiable(e)) => Err(problem(StatusCode::CONFLICT, e)),
        Err(StartError::Internal(e)) => Err(internal(e)),
    }
}

/// Streams a run's events: replay from `from`, then live until it finishes.
async fn watch_run(socket: warp::ws::WebSocket, hub: Arc<Hub>, run: String, from: u64) {
    let (mut tx, mut rx) = socket.split();
    // Subscribe before replaying so nothing falls between the two.
    let mut live = hub.subscribe_run(&run);
    let mut next = from.max(1);
    let send_all = async |tx: &mut futures::stream::SplitSink<warp::ws::WebSocket, warp::ws::Message>,
                          next: &mut u64|
           -> Result<bool, ()> {
        let events = hub.store.events(&run, *next).map_err(|e| tracing::warn!("replay failed: {e:#}"))?;
        let mut finished = false;
        for ev in events {
            *next = ev.seq + 1;
            finished |= matches!(ev.kind, ensemble_protocol::EventKind::RunFinished { .. });
            let text = serde_json::to_string(&ev).expect("events serialize");
            tx.send(warp::ws::Message::text(text)).await.map_err(|_| ())?;
        }
        Ok(finished)
    };
    match send_all(&mut tx, &mut next).await {
        Ok(true) | Err(()) => {
            let _ = tx.close().await;
            return;
        }
        Ok(false) => {}
    }
    let Some(live_rx) = live.as_mut() else {
        let _ = tx.close().await;
        return;
    };
    loop {
        tokio::select! {
            ev = live_rx.recv() => match ev {
                Ok(ev) if ev.seq < next => {}
                Ok(ev) => {
                    next = ev.seq + 1;
                    let done = matches!(ev.kind, ensemble_protocol::EventKind::RunFinished { .. });
                    let text = serde_json::to_string(&ev).expect("events serialize");
                    if tx.send(warp::ws::Message::text(text)).await.is_err() || done {
                        break;
                    }
                }
                // Fell behind the live stream: catch up from the store.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => match send_all(&mut tx, &mut next).await {
                    Ok(false) => {}
                    _ => break,
                },
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    let _ = send_all(&mut tx, &mut next).await;
                    break;
                }
            },
            msg = rx.next() => if msg.is_none_or(|m| m.is_err()) { return },
        }
    }
    let _ = tx.close().await;
}

/// Suites for the server's own machine: straight from the store.
struct StoreSuites(crate::store::Store);

#[async_trait::async_trait]
impl crate::agent::SuiteSource for StoreSuites {
    async fn fetch(&self, sha256: &str) -> anyhow::Result<Arc<Vec<u8>>> {
        self.0
            .suite_bytes(sha256)?
            .map(Arc::new)
            .ok_or_else(|| anyhow::anyhow!("no suite with sha256 {sha256} in the store"))
    }
}

/// How `ensemble serve` runs.
pub struct ServeOptions {
    pub listener: tokio::net::TcpListener,
    pub data_dir: std::path::PathBuf,
    pub config: HubConfig,
    /// The server's own machine, unless `--no-local-machine`.
    pub local_machine: Option<ensemble_protocol::wire::MachineInfo>,
    /// Terminate TLS with this configuration (`--tls-cert`/`--tls-key`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Serves the API until `shutdown`.
pub async fn serve(
    opts: ServeOptions,
    sandbox: Arc<crate::sandbox::Sandbox>,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let store = crate::store::Store::open(&opts.data_dir)?;
    let hub = Hub::new(store.clone(), sandbox.clone(), opts.config, shutdown.clone());
    if let Some(info) = opts.local_machine {
        let (to_tx, to_rx) = tokio::sync::mpsc::unbounded_channel();
        let (from_tx, mut from_rx) = tokio::sync::mpsc::unbounded_channel();
        let name = info.name.clone();
        hub.connect(info.clone(), to_tx, true).map_err(anyhow::Error::msg)?;
        let agent = Arc::new(crate::agent::Agent::new(info, sandbox, Arc::new(StoreSuites(store))));
        tokio::spawn(agent.serve(to_rx, from_tx, shutdown.child_token()));
        let hub2 = hub.clone();
        tokio::spawn(async move {
            while let Some(msg) = from_rx.recv().await {
                hub2.on_message(&name, msg);
            }
        });
    }
    match opts.tls {
        Some(tls) => crate::tls::serve(opts.listener, tls, warp::service(routes(hub)), shutdown).await,
        None => {
            let server = warp::serve(routes(hub))
                .incoming(opts.listener)
                .graceful(async move { shutdown.cancelled().await });
            server.run().await;
        }
    }
    Ok(())
}
