//! The coordinator's REST API (`/api/...`), as typed async calls.

use std::fmt;

use ensemble_protocol::Plan;
use ensemble_protocol::api::{ApiError, MachineStatus, RunMeta, RunRequest, StoredPlan, SuiteMeta};
use gloo_net::http::{Request, RequestBuilder, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Why a call failed.
#[derive(Clone, Debug, PartialEq)]
pub enum ApiFailure {
    /// 401: the server wants a (different) token.
    Unauthorized,
    /// The server answered with an error body.
    Server { status: u16, error: ApiError },
    /// The request never got an answer (server down, network).
    Network(String),
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiFailure::Unauthorized => f.write_str("the server refused the access token"),
            ApiFailure::Server { status, error } => write!(f, "{} (HTTP {status})", error.error),
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

#[derive(Deserialize)]
struct Created {
    id: String,
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

    /// `path` with the token as a query parameter: for links the browser
    /// follows itself (downloads) and for WebSockets, which take no headers.
    pub fn url_with_token(&self, path: &str) -> String {
        match &self.token {
            Some(t) => {
                let sep = if path.contains('?') { '&' } else { '?' };
                format!("{path}{sep}token={}", String::from(js_sys::encode_uri_component(t)))
            }
            None => path.to_string(),
        }
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

    pub async fn machines(&self) -> ApiResult<Vec<MachineStatus>> {
        self.json(Request::get("/api/machines"), None).await
    }

    pub async fn suites(&self) -> ApiResult<Vec<SuiteMeta>> {
        self.json(Request::get("/api/suites"), None).await
    }

    /// Uploads a suite component (a `File` or any blob) under a display name.
    pub async fn upload_suite(&self, name: &str, bytes: wasm_bindgen::JsValue) -> ApiResult<SuiteMeta> {
        let url = format!("/api/suites?name={}", String::from(js_sys::encode_uri_component(name)));
        self.json(Request::post(&url), Some(Body::Raw(bytes, "application/wasm"))).await
    }

    pub async fn plans(&self) -> ApiResult<Vec<StoredPlan>> {
        self.json(Request::get("/api/plans"), None).await
    }

    pub async fn plan(&self, id: &str) -> ApiResult<StoredPlan> {
        self.json(Request::get(&format!("/api/plans/{id}")), None).await
    }

    /// Creates (`id == None`) or replaces a plan.
    pub async fn save_plan(&self, id: Option<&str>, plan: &Plan) -> ApiResult<StoredPlan> {
        let body = Body::json(plan)?;
        match id {
            None => self.json(Request::post("/api/plans"), Some(body)).await,
            Some(id) => self.json(Request::put(&format!("/api/plans/{id}")), Some(body)).await,
        }
    }

    pub async fn import_plan(&self, toml: String) -> ApiResult<StoredPlan> {
        self.json(Request::post("/api/plans/import"), Some(Body::Raw(toml.into(), "application/toml"))).await
    }

    pub async fn delete_plan(&self, id: &str) -> ApiResult<()> {
        self.send(Request::delete(&format!("/api/plans/{id}")), None).await.map(drop)
    }

    pub async fn runs(&self) -> ApiResult<Vec<RunMeta>> {
        self.json(Request::get("/api/runs"), None).await
    }

    pub async fn run(&self, id: &str) -> ApiResult<RunMeta> {
        self.json(Request::get(&format!("/api/runs/{id}")), None).await
    }

    /// Starts a stored plan; returns the run id.
    pub async fn start_run(&self, plan_id: &str) -> ApiResult<String> {
        let req = RunRequest { plan: None, plan_id: Some(plan_id.to_string()) };
        let created: Created = self.json(Request::post("/api/runs"), Some(Body::json(&req)?)).await?;
        Ok(created.id)
    }

    pub async fn cancel_run(&self, id: &str) -> ApiResult<()> {
        self.send(Request::post(&format!("/api/runs/{id}/cancel")), None).await.map(drop)
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
    let error = serde_json::from_str::<ApiError>(&text).unwrap_or_else(|_| ApiError {
        error: if text.trim().is_empty() { resp.status_text() } else { text },
        problems: Vec::new(),
    });
    Err(ApiFailure::Server { status, error })
}
