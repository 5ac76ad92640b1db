//! The coordinator's REST API (`/api/...`), as typed async calls. Paths come
//! from `ensemble_protocol::api::routes` (which encodes their parameters),
//! bodies are the protocol's types, and every error is its `ApiError`.

use std::fmt;

use ensemble_protocol::Plan;
use ensemble_protocol::api::{
    self, ApiError, ErrorKind, HistoryQuery, MachineDraining, MachineStatus, MachineUndrained, RerunPreview,
    RunCreated, RunMeta, RunRequest, RunsQuery, StoredPlan, SuiteMeta, SuiteSummary, TestHistory, Ticket,
    routes,
};
use gloo_net::http::{Request, RequestBuilder, Response};
use serde::de::DeserializeOwned;

/// Why a call failed.
#[derive(Clone, Debug, PartialEq)]
pub enum ApiFailure {
    /// 401: the server wants a (different) token.
    Unauthorized,
    /// The server answered with an error: its `ApiError` body, or one made
    /// from an unreadable body (`error_from_body`). `status` is the HTTP
    /// status it came with.
    Server { status: u16, error: ApiError },
    /// The request never got an answer (server down, network).
    Network(String),
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiFailure::Unauthorized => f.write_str("the server refused the access token"),
            // The message, then each field-level detail it does not already state.
            ApiFailure::Server { status, error } => write!(f, "{error} (HTTP {status})"),
            ApiFailure::Network(e) => write!(f, "could not reach the server: {e}"),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiFailure>;

/// A client bound to one access token (or none).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Api {
    pub token: Option<String>,
}

impl Api {
    pub fn new(token: Option<String>) -> Self {
        Self { token }
    }

    fn authorized(&self, req: RequestBuilder) -> RequestBuilder {
        match &self.token {
            Some(t) => req.header("Authorization", &format!("Bearer {t}")),
            None => req,
        }
    }

    /// The WebSocket path of run `id`'s events from `from`: with a
    /// single-use ticket when the server wants a token (a WebSocket takes
    /// no header, and the token itself goes in no address the app builds).
    pub async fn events_path(&self, id: &str, from: u64) -> ApiResult<String> {
        let path = routes::events(id, from);
        if self.token.is_none() {
            return Ok(path);
        }
        let ticket: Ticket = self.json(Request::post(routes::TICKETS), None).await?;
        let sep = if path.contains('?') { '&' } else { '?' };
        Ok(format!("{path}{sep}ticket={}", api::encode(&ticket.ticket)))
    }

    /// Downloads `path` (a plan's TOML, an attachment) as the file `name`:
    /// fetched with the token in its header, then saved from memory.
    pub async fn download(&self, path: &str, name: &str) -> ApiResult<()> {
        let resp = self.send(Request::get(path), None).await?;
        let blob = resp.binary().await.map_err(|e| ApiFailure::Network(format!("unreadable answer: {e}")))?;
        crate::dom::save_file(&blob, name).map_err(ApiFailure::Network)
    }

    async fn send(&self, req: RequestBuilder, body: Option<Body>) -> ApiResult<Response> {
        let req = self.authorized(req);
        let req = match body {
            None => req.build(),
            Some(Body::Json(v)) => req.header("Content-Type", "application/json").body(v),
            Some(Body::Raw(v, ty)) => req.header("Content-Type", ty).body(v),
        }
        .map_err(|e| ApiFailure::Network(e.to_string()))?;
        let resp = req.send().await.map_err(|e| ApiFailure::Network(e.to_string()))?;
        check(resp).await
    }

    async fn json<T: DeserializeOwned>(&self, req: RequestBuilder, body: Option<Body>) -> ApiResult<T> {
        let resp = self.send(req, body).await?;
        resp.json().await.map_err(|e| ApiFailure::Network(format!("unreadable answer: {e}")))
    }

    pub async fn health(&self) -> ApiResult<ensemble_protocol::api::Health> {
        self.json(Request::get(routes::HEALTH), None).await
    }

    pub async fn machines(&self) -> ApiResult<Vec<MachineStatus>> {
        self.json(Request::get(routes::MACHINES), None).await
    }

    pub async fn suites(&self) -> ApiResult<Vec<SuiteSummary>> {
        self.json(Request::get(routes::SUITES), None).await
    }

    /// One stored suite with its tests.
    pub async fn suite(&self, sha256: &str) -> ApiResult<SuiteMeta> {
        self.json(Request::get(&routes::suite_inspect(sha256)), None).await
    }

    /// Uploads a suite component (a `File` or any blob) under a display name.
    pub async fn upload_suite(&self, name: &str, bytes: wasm_bindgen::JsValue) -> ApiResult<SuiteMeta> {
        self.json(Request::post(&routes::suite_upload(name)), Some(Body::Raw(bytes, "application/wasm")))
            .await
    }

    pub async fn plans(&self) -> ApiResult<Vec<StoredPlan>> {
        self.json(Request::get(routes::PLANS), None).await
    }

    pub async fn plan(&self, id: &str) -> ApiResult<StoredPlan> {
        self.json(Request::get(&routes::plan(id)), None).await
    }

    /// Creates (`id == None`) or replaces a plan.
    pub async fn save_plan(&self, id: Option<&str>, plan: &Plan) -> ApiResult<StoredPlan> {
        let body = Body::json(plan)?;
        match id {
            None => self.json(Request::post(routes::PLANS), Some(body)).await,
            Some(id) => self.json(Request::put(&routes::plan(id)), Some(body)).await,
        }
    }

    pub async fn import_plan(&self, toml: String) -> ApiResult<StoredPlan> {
        self.json(Request::post(routes::PLAN_IMPORT), Some(Body::Raw(toml.into(), "application/toml"))).await
    }

    pub async fn delete_plan(&self, id: &str) -> ApiResult<()> {
        self.send(Request::delete(&routes::plan(id)), None).await.map(drop)
    }

    /// The newest runs, of the plan named `plan` or of all.
    pub async fn runs(&self, plan: Option<&str>) -> ApiResult<Vec<RunMeta>> {
        let query = RunsQuery { plan: plan.map(str::to_string), ..RunsQuery::default() };
        self.json(Request::get(&query.url()), None).await
    }

    pub async fn run(&self, id: &str) -> ApiResult<RunMeta> {
        self.json(Request::get(&routes::run(id)), None).await
    }

    /// A test's recent results in its plan's runs.
    pub async fn test_history(&self, plan: &str, role: &str, test: &str) -> ApiResult<TestHistory> {
        let query = HistoryQuery {
            plan: plan.into(),
            role: Some(role.into()),
            test: Some(test.into()),
            ..HistoryQuery::default()
        };
        self.json(Request::get(&query.url(routes::TEST_HISTORY)), None).await
    }

    /// The plan's tests that flipped or passed on a retry in its recent runs.
    pub async fn flaky_tests(&self, plan: &str) -> ApiResult<Vec<TestHistory>> {
        let query = HistoryQuery { plan: plan.into(), ..HistoryQuery::default() };
        self.json(Request::get(&query.url(routes::FLAKY_TESTS)), None).await
    }

    /// Starts a stored plan; returns the run id.
    pub async fn start_run(&self, plan_id: &str) -> ApiResult<String> {
        let req = RunRequest { plan_id: Some(plan_id.to_string()), ..RunRequest::default() };
        let created: RunCreated = self.json(Request::post(routes::RUNS), Some(Body::json(&req)?)).await?;
        Ok(created.id)
    }

    /// Runs `plan` (its suites named by sha256, as a run's plan is): a run
    /// again, the same as it was; returns the new run's id.
    pub async fn run_plan(&self, plan: &Plan) -> ApiResult<String> {
        let req = RunRequest { plan: Some(plan.clone()), ..RunRequest::default() };
        let created: RunCreated = self.json(Request::post(routes::RUNS), Some(Body::json(&req)?)).await?;
        Ok(created.id)
    }

    /// Runs again what did not pass in finished run `id`; returns the new run's id.
    pub async fn rerun_failed(&self, id: &str) -> ApiResult<String> {
        let req = RunRequest { rerun_failed: Some(id.to_string()), ..RunRequest::default() };
        let created: RunCreated = self.json(Request::post(routes::RUNS), Some(Body::json(&req)?)).await?;
        Ok(created.id)
    }

    pub async fn cancel_run(&self, id: &str) -> ApiResult<()> {
        self.send(Request::post(&routes::run_cancel(id)), None).await.map(drop)
    }

    /// Drains a machine: it finishes its shards, takes no new ones, then stops.
    pub async fn drain_machine(&self, name: &str) -> ApiResult<MachineDraining> {
        self.json(Request::post(&routes::machine_drain(name)), None).await
    }

    /// What rerunning run `id`'s failures would run.
    pub async fn rerun_preview(&self, id: &str) -> ApiResult<RerunPreview> {
        self.json(Request::get(&routes::run_rerun(id)), None).await
    }

    /// Takes a machine off draining: it gets shards again.
    pub async fn undrain_machine(&self, name: &str) -> ApiResult<MachineUndrained> {
        self.json(Request::post(&routes::machine_undrain(name)), None).await
    }
}

enum Body {
    Json(wasm_bindgen::JsValue),
    Raw(wasm_bindgen::JsValue, &'static str),
}

impl Body {
    fn json<T: serde::Serialize>(v: &T) -> ApiResult<Body> {
        let text = serde_json::to_string(v).map_err(|e| ApiFailure::Network(e.to_string()))?;
        Ok(Body::Json(text.into()))
    }
}

async fn check(resp: Response) -> ApiResult<Response> {
    if resp.ok() {
        return Ok(resp);
    }
    let status = resp.status();
    if status == 401 {
        return Err(ApiFailure::Unauthorized);
    }
    let text = resp.text().await.unwrap_or_default();
    Err(ApiFailure::Server { status, error: error_from_body(status, &resp.status_text(), text) })
}

/// The error an error response carries: its `ApiError` body, or (from
/// something other than the coordinator, such as a proxy) one made of the
/// body's text, or of the status text when the body is empty.
fn error_from_body(status: u16, status_text: &str, text: String) -> ApiError {
    serde_json::from_str::<ApiError>(&text).unwrap_or_else(|_| {
        let kind = if (400..500).contains(&status) { ErrorKind::BadRequest } else { ErrorKind::Internal };
        ApiError::new(kind, if text.trim().is_empty() { status_text.to_string() } else { text })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ensemble_protocol::Problem;

    #[test]
    fn error_bodies_are_read_typed_or_made_from_their_text() {
        let sent = ApiError::new(ErrorKind::InvalidPlan, "invalid plan: name: taken")
            .with_details(vec![Problem { path: "name".into(), message: "taken".into() }]);
        let read = error_from_body(422, "Unprocessable Entity", serde_json::to_string(&sent).unwrap());
        assert_eq!(read, sent);
        assert_eq!(read.details()[0].path, "name");
        // Not the coordinator's body (a proxy's page, an empty answer).
        let e = error_from_body(502, "Bad Gateway", "upstream down".into());
        assert_eq!((e.kind(), e.message()), (ErrorKind::Internal, "upstream down"));
        let e = error_from_body(404, "Not Found", " ".into());
        assert_eq!((e.kind(), e.message()), (ErrorKind::BadRequest, "Not Found"));
        assert!(e.details().is_empty());
    }

    #[test]
    fn failures_read_as_their_message_and_status() {
        let e = ApiError::new(ErrorKind::Conflict, "run r1 is not running");
        let failure = ApiFailure::Server { status: 409, error: e };
        assert_eq!(failure.to_string(), "run r1 is not running (HTTP 409)");
        // Plan problems: each once, whether the message states it or not.
        let problem = |path: &str| Problem { path: path.into(), message: "bad".into() };
        let one = ApiError::new(ErrorKind::InvalidPlan, "invalid plan: name: bad")
            .with_details(vec![problem("name")]);
        let failure = ApiFailure::Server { status: 422, error: one };
        assert_eq!(failure.to_string(), "invalid plan: name: bad (HTTP 422)");
        let two = ApiError::new(ErrorKind::InvalidPlan, "invalid plan: 2 problems")
            .with_details(vec![problem("name"), problem("entries[0].role")]);
        let failure = ApiFailure::Server { status: 422, error: two };
        assert_eq!(
            failure.to_string(),
            "invalid plan: 2 problems\n  name: bad\n  entries[0].role: bad (HTTP 422)"
        );
    }
}
