//! The API document: OpenAPI 3.1, built from the typed API
//! (`protocol::api`, whose types derive their schemas) and served at
//! `/api/openapi.json`. Each function below describes one route as
//! `server::route` mounts it; a test holds the mounted routes and the
//! document's operations to each other, both ways.
//!
//! Security: the API takes the server's token as `Authorization: Bearer T`
//! or `?token=T` (for links and WebSockets); machines join with the join
//! token; `/metrics` takes the metrics token when one is set; the probes,
//! the app and this document need none.

#![allow(dead_code)] // the functions exist for their `#[utoipa::path]` descriptions

use std::sync::OnceLock;

use ensemble_protocol::Event;
use ensemble_protocol::Plan;
use ensemble_protocol::api::{
    ApiError, CancelRequest, Delivery, EventsQuery, Health, HistoryQuery, ListQuery, MachineDisconnected,
    MachineDraining, MachineForgotten, MachineStatus, MachineUndrained, MachinesQuery, PlanDeleted,
    PlansQuery, Readiness, RerunPreview, RunCancelling, RunCreated, RunMeta, RunRequest, RunsQuery,
    StoredPlan, SuiteMeta, SuiteSummary, TestHistory, Ticket, UploadQuery,
};
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

/// The document as JSON, built once.
pub fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| document().to_pretty_json().expect("the API document serializes"))
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = Document::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ensemble",
        description = "The coordinator's API: machines, suites, plans, runs and their live events, \
                       test histories, and the probes. Every error is an `ApiError` whose \
                       `error.kind` fixes the HTTP status.",
        license(name = "MIT OR Apache-2.0"),
    ),
    paths(
        health, document_route, healthz, readyz, metrics,
        machines, machine_disconnect, machine_drain, machine_undrain, machine_forget, machine_join,
        suites, suite_upload, suite_inspect, suite_bytes, suite_head,
        plans, plan_create, plan_import, plan_get, plan_toml, plan_put, plan_delete,
        runs, run_start, run_get, run_cancel, run_events, events, ticket, run_rerun, run_deliveries, run_attachment,
        test_history, flaky_tests,
        app_asset, app_page,
    ),
    components(schemas(Event)),
    modifiers(&Security),
    security(("token" = []), ("token_query" = [])),
    tags(
        (name = "machines", description = "Machines that run suites, and the WebSocket they join by."),
        (name = "suites", description = "Suite components, stored by sha256."),
        (name = "plans", description = "Stored test plans."),
        (name = "runs", description = "Runs of plans, their events, webhook deliveries and attachments."),
        (name = "tests", description = "Tests across runs: histories and flakiness."),
        (name = "service", description = "Health, readiness, metrics and this document."),
        (name = "app", description = "The browser app."),
    ),
)]
struct Document;

/// Bytes of a body that is not JSON (a suite, an attachment).
struct Binary;

impl utoipa::PartialSchema for Binary {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Binary)))
            .into()
    }
}

impl utoipa::ToSchema for Binary {}

/// The security schemes the operations name.
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = |what: &str| {
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some(what)).build(),
            )
        };
        components.add_security_scheme("token", bearer("The server's API token (`ensemble serve --token`)."));
        components.add_security_scheme(
            "token_query",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "token",
                "The API token as a query parameter, for links and WebSockets.",
            ))),
        );
        components.add_security_scheme(
            "ticket_query",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "ticket",
                "A single-use ticket from `POST /api/tickets`, for a run's event WebSocket: what the \
                 browser app uses, so that no address it builds carries the token.",
            ))),
        );
        components.add_security_scheme("join_token", bearer("The join token machines present."));
        components
            .add_security_scheme("metrics_token", bearer("The metrics token (`--metrics-token`), if set."));
    }
}

/// The server's version and protocol.
#[utoipa::path(get, path = "/api/health", tag = "service", security(()),
    responses((status = 200, body = Health)))]
fn health() {}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "service", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
fn document_route() {}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "service", security(()),
    responses((status = 200, description = "`ok`", body = String, content_type = "text/plain")))]
fn healthz() {}

/// Readiness: the store takes writes and machines can join.
#[utoipa::path(get, path = "/readyz", tag = "service", security(()),
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: `checks` says which check failed and why", body = Readiness),
    ))]
fn readyz() {}

/// Prometheus metrics in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", tag = "service", security(("metrics_token" = []), ()),
    responses(
        (status = 200, description = "The metrics", body = String,
            content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
        (status = 401, description = "The metrics token is missing or wrong", body = ApiError),
    ))]
fn metrics() {}

/// The machines and their state; with `min_online`, waits (up to `wait_ms`)
/// until that many are online.
#[utoipa::path(get, path = "/api/machines", tag = "machines", params(MachinesQuery),
    responses((status = 200, body = Vec<MachineStatus>), (status = "4XX", body = ApiError)))]
fn machines() {}

/// Closes a machine's connection (its running shards are lost).
#[utoipa::path(post, path = "/api/machines/{name}/disconnect", tag = "machines",
    params(("name" = String, Path, description = "The machine's name")),
    responses((status = 200, body = MachineDisconnected), (status = "4XX", body = ApiError)))]
fn machine_disconnect() {}

/// Drains a machine: it finishes its shards, takes no new ones, then stops.
#[utoipa::path(post, path = "/api/machines/{name}/drain", tag = "machines",
    params(("name" = String, Path, description = "The machine's name")),
    responses((status = 200, body = MachineDraining), (status = "4XX", body = ApiError)))]
fn machine_drain() {}

/// Takes a machine off draining: it gets shards again (a drained machine
/// whose runner already stopped, at its next start). 409 when it is not
/// draining.
#[utoipa::path(post, path = "/api/machines/{name}/undrain", tag = "machines",
    params(("name" = String, Path, description = "The machine's name")),
    responses((status = 200, body = MachineUndrained), (status = "4XX", body = ApiError)))]
fn machine_undrain() {}

/// Releases a machine name from the secret its machine was given at its
/// first join (its identity file was lost or damaged): the next machine
/// that joins under the name takes it. Refused (409) while it is connected.
#[utoipa::path(post, path = "/api/machines/{name}/forget", tag = "machines",
    params(("name" = String, Path, description = "The machine's name")),
    responses((status = 200, body = MachineForgotten), (status = "4XX", body = ApiError)))]
fn machine_forget() {}

/// The machines' WebSocket (`ensemble runner --join`): a machine says
/// hello, takes shards and reports events (`protocol::wire`).
#[utoipa::path(get, path = "/api/machines/join", tag = "machines", security(("join_token" = [])),
    responses(
        (status = 101, description = "Upgraded to a WebSocket of `protocol::wire` messages"),
        (status = "4XX", body = ApiError),
    ))]
fn machine_join() {}

/// The stored suites, by sha256, as summaries: each counts its tests
/// (`/api/suites/{sha256}/inspect` lists them).
#[utoipa::path(get, path = "/api/suites", tag = "suites", params(ListQuery),
    responses((status = 200, body = Vec<SuiteSummary>), (status = "4XX", body = ApiError)))]
fn suites() {}

/// Uploads a suite (a WebAssembly component or WASI command), inspected
/// before it is stored.
#[utoipa::path(post, path = "/api/suites", tag = "suites", params(UploadQuery),
    request_body(content = inline(Binary), content_type = "application/wasm"),
    responses(
        (status = 201, description = "Stored", body = SuiteMeta),
        (status = 200, description = "Already stored", body = SuiteMeta),
        (status = "4XX", description = "Not a usable suite (`invalid-suite`), or too large", body = ApiError),
        (status = 507, description = "No room: the suites kept would go past the server's suite budget \
            once those nothing names were removed, or its store cannot take writes", body = ApiError),
    ))]
fn suite_upload() {}

/// A stored suite's metadata: its tests, imports and exports.
#[utoipa::path(get, path = "/api/suites/{sha256}/inspect", tag = "suites",
    params(("sha256" = String, Path, description = "The suite's sha256, hex")),
    responses((status = 200, body = SuiteMeta), (status = "4XX", body = ApiError)))]
fn suite_inspect() {}

/// A stored suite's bytes (the API token or the join token).
#[utoipa::path(get, path = "/api/suites/{sha256}", tag = "suites",
    security(("token" = []), ("token_query" = []), ("join_token" = [])),
    params(("sha256" = String, Path, description = "The suite's sha256, hex")),
    responses(
        (status = 200, body = inline(Binary), content_type = "application/wasm"),
        (status = "4XX", body = ApiError),
    ))]
fn suite_bytes() {}

/// Whether a suite is stored.
#[utoipa::path(head, path = "/api/suites/{sha256}", tag = "suites",
    security(("token" = []), ("token_query" = []), ("join_token" = [])),
    params(("sha256" = String, Path, description = "The suite's sha256, hex")),
    responses((status = 200, description = "Stored"), (status = 404, description = "Not stored")))]
fn suite_head() {}

/// The stored plans, oldest first: all, or those of one name.
#[utoipa::path(get, path = "/api/plans", tag = "plans", params(PlansQuery),
    responses((status = 200, body = Vec<StoredPlan>), (status = "4XX", body = ApiError)))]
fn plans() {}

/// Stores a new plan (validated: an `invalid-plan` error lists each
/// problem at its field path).
#[utoipa::path(post, path = "/api/plans", tag = "plans", request_body = Plan,
    responses((status = 201, body = StoredPlan), (status = "4XX", body = ApiError)))]
fn plan_create() {}

/// Stores a new plan written in TOML.
#[utoipa::path(post, path = "/api/plans/import", tag = "plans",
    request_body(content = String, content_type = "application/toml"),
    responses((status = 201, body = StoredPlan), (status = "4XX", body = ApiError)))]
fn plan_import() {}

/// A stored plan.
#[utoipa::path(get, path = "/api/plans/{id}", tag = "plans",
    params(("id" = String, Path, description = "The plan's id")),
    responses((status = 200, body = StoredPlan), (status = "4XX", body = ApiError)))]
fn plan_get() {}

/// A stored plan as TOML.
#[utoipa::path(get, path = "/api/plans/{id}/toml", tag = "plans",
    params(("id" = String, Path, description = "The plan's id")),
    responses(
        (status = 200, body = String, content_type = "application/toml"),
        (status = "4XX", body = ApiError),
    ))]
fn plan_toml() {}

/// Replaces a stored plan, or stores one under this id.
#[utoipa::path(put, path = "/api/plans/{id}", tag = "plans", request_body = Plan,
    params(("id" = String, Path, description = "The plan's id")),
    responses(
        (status = 200, description = "Replaced", body = StoredPlan),
        (status = 201, description = "Stored under this id", body = StoredPlan),
        (status = "4XX", body = ApiError),
    ))]
fn plan_put() {}

/// Deletes a stored plan (its runs stay).
#[utoipa::path(delete, path = "/api/plans/{id}", tag = "plans",
    params(("id" = String, Path, description = "The plan's id")),
    responses((status = 200, body = PlanDeleted), (status = "4XX", body = ApiError)))]
fn plan_delete() {}

/// The runs, newest first (of one plan, with `plan`).
#[utoipa::path(get, path = "/api/runs", tag = "runs", params(RunsQuery),
    responses((status = 200, body = Vec<RunMeta>), (status = "4XX", body = ApiError)))]
fn runs() {}

/// Starts a run: of a plan given inline, of a stored plan, or of a
/// finished run's failures.
#[utoipa::path(post, path = "/api/runs", tag = "runs", request_body = RunRequest,
    responses(
        (status = 201, body = RunCreated),
        (status = "4XX", description = "Bad request, invalid plan, or no machines can run it", body = ApiError),
    ))]
fn run_start() {}

/// A run.
#[utoipa::path(get, path = "/api/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses((status = 200, body = RunMeta), (status = "4XX", body = ApiError)))]
fn run_get() {}

/// Asks a running or queued run to stop. The cancel is stored (with who
/// asks and why, when the optional body says) before it is acknowledged: a
/// coordinator restarted after it finishes cancelling the run.
#[utoipa::path(post, path = "/api/runs/{id}/cancel", tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    request_body(content = Option<CancelRequest>, content_type = "application/json"),
    responses((status = 200, body = RunCancelling), (status = "4XX", body = ApiError),
        (status = 507, description = "The store cannot take writes (its disk is full)", body = ApiError)))]
fn run_cancel() {}

/// What rerunning the run's failures (`rerun_failed`) would run: how
/// many tests failed and how many the rerun runs in all. 409 while the run
/// goes on, or when nothing failed.
#[utoipa::path(get, path = "/api/runs/{id}/rerun", tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses((status = 200, body = RerunPreview), (status = "4XX", body = ApiError)))]
fn run_rerun() {}

/// A single-use ticket that opens one run event WebSocket (`?ticket=T`)
/// within `expires_in_ms`, in place of the token in its address.
#[utoipa::path(post, path = "/api/tickets", tag = "runs",
    responses((status = 201, body = Ticket), (status = "4XX", body = ApiError)))]
fn ticket() {}

/// The run's events as a WebSocket: the stored ones from `from`, then live
/// until the run finishes; each text frame is one `Event` as JSON.
#[utoipa::path(get, path = "/api/runs/{id}/events", tag = "runs",
    security(("token" = []), ("token_query" = []), ("ticket_query" = [])),
    params(("id" = String, Path, description = "The run's id"), EventsQuery),
    responses(
        (status = 101, description = "Upgraded to a WebSocket of `Event` frames"),
        (status = "4XX", body = ApiError),
    ))]
fn run_events() {}

/// The same stream under a WebSocket-only prefix, which a dev proxy can
/// route apart from the REST API.
#[utoipa::path(get, path = "/api/events/{id}", tag = "runs",
    security(("token" = []), ("token_query" = []), ("ticket_query" = [])),
    params(("id" = String, Path, description = "The run's id"), EventsQuery),
    responses(
        (status = 101, description = "Upgraded to a WebSocket of `Event` frames"),
        (status = "4XX", body = ApiError),
    ))]
fn events() {}

/// The attempts to call the plan's webhooks about the run, oldest first.
#[utoipa::path(get, path = "/api/runs/{id}/deliveries", tag = "runs",
    params(("id" = String, Path, description = "The run's id")),
    responses((status = 200, body = Vec<Delivery>), (status = "4XX", body = ApiError)))]
fn run_deliveries() {}

/// A file a test of the run attached, as a download.
#[utoipa::path(get, path = "/api/runs/{id}/attachments/{sha256}", tag = "runs",
    params(
        ("id" = String, Path, description = "The run's id"),
        ("sha256" = String, Path, description = "The attachment's sha256, hex"),
    ),
    responses(
        (status = 200, description = "The bytes; shown inline only for text, JSON and raster images",
            body = inline(Binary), content_type = "application/octet-stream"),
        (status = "4XX", body = ApiError),
    ))]
fn run_attachment() {}

/// One test's results across its plan's runs (`plan`, `role` and `test`).
#[utoipa::path(get, path = "/api/tests/history", tag = "tests", params(HistoryQuery),
    responses((status = 200, body = TestHistory), (status = "4XX", body = ApiError)))]
fn test_history() {}

/// The histories of a plan's flaky tests in its recent runs (`plan`):
/// its last `limit` runs, or fewer when those hold more than 200,000
/// results (the newest runs whose results fit).
#[utoipa::path(get, path = "/api/tests/flaky", tag = "tests", params(HistoryQuery),
    responses((status = 200, body = Vec<TestHistory>), (status = "4XX", body = ApiError)))]
fn flaky_tests() {}

/// A file of the browser app (content-hashed, cached for good).
#[utoipa::path(get, path = "/assets/{file}", tag = "app", security(()),
    params(("file" = String, Path, description = "The asset's hashed name")),
    responses((status = 200, description = "The file, compressed as the client accepts"),
        (status = 304, description = "Not modified"), (status = 404, body = ApiError)))]
fn app_asset() {}

/// The browser app; every other path outside `/api` and `/assets` serves
/// it too (its router picks the page).
#[utoipa::path(get, path = "/", tag = "app", security(()),
    responses((status = 200, description = "The app's page", content_type = "text/html"),
        (status = 304, description = "Not modified")))]
fn app_page() {}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use crate::coordinator::Coordinator;
    use crate::sandbox::{Sandbox, SandboxOptions};
    use crate::store::Store;

    /// The routes the server mounts are the operations the document
    /// describes: none missing, none described that is not there.
    #[tokio::test]
    async fn every_mounted_route_is_documented_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let options = SandboxOptions { cache_dir: None, max_instances: 1, ..SandboxOptions::default() };
        let sandbox = Arc::new(Sandbox::new(options).unwrap());
        let config = crate::coordinator::test_config("openapi");
        let core = Coordinator::new(store, sandbox, config);
        let _filter = crate::server::routes(&core);
        let mounted = crate::server::route::mounted();
        let doc: serde_json::Value = serde_json::from_str(super::document_json()).unwrap();
        let methods = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                let item = item.as_object().unwrap();
                methods.iter().filter(|m| item.contains_key(**m)).map(|m| (m.to_string(), path.clone()))
            })
            .collect();
        let undocumented: Vec<_> = mounted.difference(&documented).collect();
        let unmounted: Vec<_> = documented.difference(&mounted).collect();
        assert!(undocumented.is_empty(), "mounted but not in the API document: {undocumented:?}");
        assert!(unmounted.is_empty(), "in the API document but not mounted: {unmounted:?}");
        assert!(mounted.len() >= 30, "{mounted:?}");
        core.shutdown().await;
    }

    #[test]
    fn the_document_is_openapi_3_1_and_names_its_schemas() {
        let doc: serde_json::Value = serde_json::from_str(super::document_json()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for name in ["Plan", "RunMeta", "ApiError", "Event", "HumanDuration", "ByteSize"] {
            assert!(schemas.contains_key(name), "no schema {name}");
        }
        // Every $ref points at a schema the document has.
        let text = super::document_json();
        let refs: BTreeSet<&str> = text
            .match_indices("\"#/components/schemas/")
            .map(|(i, _)| {
                let rest = &text[i + 22..];
                &rest[..rest.find('"').unwrap()]
            })
            .collect();
        for r in refs {
            assert!(schemas.contains_key(r), "$ref to a missing schema {r}");
        }
    }
}
