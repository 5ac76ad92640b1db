//! The one typed client of Ensemble's REST API and WebSockets, used by the
//! CLI (`ensemble run --server`), `ensemble demo`, runners (suite fetches and
//! the machine WebSocket) and the end-to-end tests.
//!
//! Every call takes and returns `protocol::api` types at the paths of
//! `protocol::api::routes`. A failed call is a [`ClientError`]: either the
//! server's typed [`ApiError`] with its HTTP status, or a transport failure;
//! callers decide by [`ErrorKind`], never by the text.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ensemble_protocol::api::{
    ApiError, CancelRequest, Delivery, ErrorKind, Health, HistoryQuery, MachineDisconnected, MachineDraining,
    MachineForgotten, MachineStatus, MachineUndrained, PlanDeleted, PlansQuery, RerunPreview, RunCancelling,
    RunCreated, RunMeta, RunRequest, StoredPlan, SuiteMeta, SuiteSummary, TestHistory, routes,
};
use ensemble_protocol::{Event, EventKind, Plan};
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Client-side TLS for `https://` and `wss://` URLs.
pub type Tls = Arc<rustls::ClientConfig>;

/// A WebSocket to the coordinator.
pub type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{what}: the server answered {status}: {error}")]
    Api { what: String, status: u16, error: ApiError },
    /// No answer, or one that could not be read.
    #[error("{what}: {message}")]
    Transport { what: String, message: String },
    /// The server's TLS certificate is not trusted.
    #[error("TLS with {url} failed: {message}; pass the server's CA with --ca-file")]
    Untrusted { url: String, message: String },
    /// What was given as the server's address is not one (see [`server_url`]).
    #[error("{0}")]
    BadUrl(String),
    /// Something answered, but not as Ensemble does (a web server, a proxy,
    /// another service on that port). `transient` when it is a proxy saying
    /// its upstream is down (HTTP 502, 503, 504), which may mend itself.
    #[error("{what}: {message}")]
    NotEnsemble { what: String, message: String, transient: bool },
}

impl ClientError {
    /// The server's error kind, when the server answered.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            ClientError::Api { error, .. } => Some(error.kind()),
            _ => None,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the caller's input was at fault (a bad plan, suite or request,
    /// a token the server refuses, an address that is not a server's).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, ClientError::BadUrl(_) | ClientError::NotEnsemble { transient: false, .. })
            || self.kind().is_some_and(|k| k.is_bad_input() || k == ErrorKind::Unauthorized)
    }

    /// Whether no answer came: nothing listens at the address, or the
    /// network failed (as opposed to an answer that refused).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Transport { .. })
    }

    /// Whether the server refused the token.
    pub fn is_unauthorized(&self) -> bool {
        self.kind() == Some(ErrorKind::Unauthorized)
    }

    /// An HTTP answer that is not Ensemble's: its status, its content type
    /// and the start of its body, and the question to ask.
    fn not_ensemble(
        what: &str,
        base: &str,
        status: u16,
        content_type: Option<&str>,
        body: &str,
    ) -> ClientError {
        let kind = content_type
            .map(|t| format!(", {}", t.split(';').next().unwrap_or(t).trim()))
            .unwrap_or_default();
        let said = gist(body).map(|g| format!(" saying {g:?}")).unwrap_or_default();
        let transient = matches!(status, 502..=504);
        let question = if transient {
            "a proxy whose upstream is down? trying again may help"
        } else {
            "is `ensemble serve` what listens there, and is this its address?"
        };
        ClientError::NotEnsemble {
            what: what.to_string(),
            message: format!(
                "something other than Ensemble answers at {base}: HTTP {status}{kind}{said} ({question})"
            ),
            transient,
        }
    }

    fn transport(what: &str, e: impl std::fmt::Display) -> ClientError {
        ClientError::Transport { what: what.to_string(), message: format!("{e:#}") }
    }

    /// A connection that failed, explained ([`explain`]). A scheme that
    /// does not match the server (TLS to a plain one, or the reverse) is the
    /// address's fault, not the network's: [`ClientError::BadUrl`].
    fn unreachable(what: &str, e: &(dyn std::error::Error + 'static)) -> ClientError {
        match explain(e) {
            (message, true) => ClientError::BadUrl(format!("{what}: {message}")),
            (message, false) => ClientError::Transport { what: what.to_string(), message },
        }
    }
}

/// Whether a handshake failed because the answer was HTTP but no WebSocket
/// handshake (as opposed to a connection cut short, or TLS spoken to).
fn not_a_handshake(e: &tokio_tungstenite::tungstenite::error::ProtocolError) -> bool {
    use tokio_tungstenite::tungstenite::error::ProtocolError as P;
    matches!(
        e,
        P::WrongHttpVersion
            | P::MissingConnectionUpgradeHeader
            | P::MissingUpgradeWebSocketHeader
            | P::SecWebSocketAcceptKeyMismatch
            | P::SecWebSocketSubProtocolError(_)
            | P::InvalidHeader(_)
    )
}

fn content_type(resp: &reqwest::Response) -> Option<String> {
    resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// A few words that say what an answer is: an HTML page's title, else the
/// body's first line, cut short.
fn gist(body: &str) -> Option<String> {
    let lower = body.to_ascii_lowercase();
    let title = lower.find("<title>").and_then(|start| {
        let from = start + "<title>".len();
        lower[from..].find("</title>").map(|len| body[from..from + len].trim())
    });
    let text = title.or_else(|| body.lines().map(str::trim).find(|l| !l.is_empty()))?;
    let mut short: String = text.chars().take(80).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    (!short.is_empty()).then_some(short)
}

/// An error's whole chain, with what to do about the mistakes people make
/// most: TLS to a plain server and plain HTTP to a TLS one, nobody
/// listening, a name that does not resolve; and whether the scheme is wrong.
fn explain(e: &(dyn std::error::Error + 'static)) -> (String, bool) {
    let mut chain = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !chain.contains(&text) {
            chain.push_str(": ");
            chain.push_str(&text);
        }
        source = s.source();
    }
    let lower = chain.to_ascii_lowercase();
    let scheme = if lower.contains("invalidcontenttype") || lower.contains("corrupt message") {
        Some("the server does not speak TLS there: use http:// instead of https://")
    } else if lower.contains("invalid http version")
        || lower.contains("http/0.9")
        || lower.contains("invalid status")
        || lower.contains("httparse")
    {
        Some("that does not look like plain HTTP (a TLS server?): use https:// instead of http://")
    } else {
        None
    };
    if let Some(hint) = scheme {
        return (format!("{chain} ({hint})"), true);
    }
    let hint = if lower.contains("connection refused") {
        Some("nothing listens at that address: is `ensemble serve` running, and is the port right?")
    } else if lower.contains("dns error")
        || lower.contains("failed to lookup")
        || lower.contains("name or service")
    {
        Some("the host name does not resolve")
    } else {
        None
    };
    match hint {
        Some(h) => (format!("{chain} ({h})"), false),
        None => (chain, false),
    }
}

/// Checks that `input` is a server's base URL — `http://HOST:PORT` or
/// `https://HOST:PORT`, without a path — and returns it without a trailing
/// slash; else says what is wrong and the expected form.
pub fn server_url(input: &str) -> std::result::Result<String, String> {
    let expected = "write it as http://HOST:PORT (or https://HOST:PORT for a server with TLS)";
    let url = match reqwest::Url::parse(input) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => url,
        Ok(url) if !matches!(url.scheme(), "http" | "https") && input.contains("://") => {
            return Err(format!(
                "{input:?} is not a server URL: the scheme must be http or https; {expected}"
            ));
        }
        _ => return Err(format!("{input:?} is not a server URL (no http:// or https://); {expected}")),
    };
    let host = url.host().map(|h| h.to_string()).unwrap_or_default();
    // A port is written out: without one, http:// would quietly mean 80,
    // where no `ensemble serve` listens unless told to.
    let authority =
        input.split_once("://").map_or("", |(_, rest)| rest).split(['/', '?', '#']).next().unwrap_or("");
    let port_written = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !port_written {
        let default = url.port_or_known_default().unwrap_or(80);
        return Err(format!(
            "{input:?} has no port: write it as {}://{host}:PORT (`ensemble serve` listens on 7878 unless told \
             otherwise; {}://{host}:{default} if the server is on the scheme's default port)",
            url.scheme(),
            url.scheme()
        ));
    }
    // The port as written, the scheme's default too (a base URL read
    // back reads the same).
    let base = match url.port_or_known_default() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    };
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{input:?} is not a server URL: it has more than a scheme, host and port; give the server's base URL, {base}"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{input:?} carries a user name or password: pass the token with --token instead"
        ));
    }
    Ok(base)
}

pub type Result<T> = std::result::Result<T, ClientError>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Client TLS trusting `roots`.
pub fn tls_with_roots(roots: rustls::RootCertStore) -> Tls {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Client TLS trusting the CA certificates (PEM) in `ca_file`, or the public
/// web roots without one.
pub fn tls_config(ca_file: Option<&Path>) -> anyhow::Result<Tls> {
    use anyhow::Context;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading certificates from {}", path.display()))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .with_context(|| format!("{} holds a malformed certificate", path.display()))?;
            if certs.is_empty() {
                anyhow::bail!("{} holds no PEM certificate", path.display());
            }
            for cert in certs {
                roots
                    .add(cert)
                    .with_context(|| format!("{} is not a usable CA certificate", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(tls_with_roots(roots))
}

/// An HTTP(S) base URL and a path turned into the matching WebSocket URL.
pub fn ws_url(base: &str, path: &str) -> String {
    let base = base.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    format!("{base}{path}")
}

/// Whether a WebSocket connect failed because the certificate is not trusted.
fn is_trust_error(e: &tokio_tungstenite::tungstenite::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Tls(_) => true,
        Error::Io(io) => {
            io.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()).is_some_and(|r| {
                matches!(r, rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
            })
        }
        _ => false,
    }
}

/// A coordinator's API at one base URL, with one token (or none).
#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    tls: Tls,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the server at `base` (checked by [`server_url`]).
    pub fn new(base: &str, token: Option<String>, tls: Tls) -> Result<Client> {
        let base = server_url(base).map_err(ClientError::BadUrl)?;
        let mut config = (*tls).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .build()
            .map_err(|e| ClientError::transport("setting up HTTP", e))?;
        Ok(Client { base, token, http, tls })
    }

    /// The same server with another token (or none).
    pub fn with_token(&self, token: Option<String>) -> Client {
        Client { token, ..self.clone() }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `path` with the token, for calls this client has no
    /// method for (tests that send what a well-behaved client never would).
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends a request; a non-success answer becomes [`ClientError::Api`].
    pub async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| ClientError::unreachable(what, &e))?;
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return Ok(resp);
        }
        let content_type = content_type(&resp);
        let body = resp.text().await.unwrap_or_default();
        let json = content_type.as_deref().is_some_and(|t| t.starts_with("application/json"));
        match serde_json::from_str::<ApiError>(&body) {
            Ok(error) => Err(ClientError::Api { what: what.to_string(), status, error }),
            // The answer to a HEAD has no body to read: its status says it.
            Err(_) if json && body.is_empty() => {
                let error = ApiError::new(ErrorKind::of_status(status), format!("HTTP {status}"));
                Err(ClientError::Api { what: what.to_string(), status, error })
            }
            Err(_) => {
                Err(ClientError::not_ensemble(what, &self.base, status, content_type.as_deref(), &body))
            }
        }
    }

    async fn json<T: DeserializeOwned>(&self, what: &str, req: reqwest::RequestBuilder) -> Result<T> {
        let resp = self.send(what, req).await?;
        let (status, content_type) = (resp.status().as_u16(), content_type(&resp));
        let bytes = resp.bytes().await.map_err(|e| ClientError::transport(what, e))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            if content_type.as_deref().is_some_and(|t| t.starts_with("application/json")) {
                ClientError::transport(what, format!("an unreadable answer: {e}"))
            } else {
                let body = String::from_utf8_lossy(&bytes);
                ClientError::not_ensemble(what, &self.base, status, content_type.as_deref(), &body)
            }
        })
    }

    async fn get<T: DeserializeOwned>(&self, what: &str, path: &str) -> Result<T> {
        self.json(what, self.request(reqwest::Method::GET, path)).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, what: &str, path: &str, body: &B) -> Result<T> {
        self.json(what, self.request(reqwest::Method::POST, path).json(body)).await
    }

    // ---- health and machines ----

    pub async fn health(&self) -> Result<Health> {
        self.get("checking the server's health", routes::HEALTH).await
    }

    pub async fn machines(&self) -> Result<Vec<MachineStatus>> {
        self.get("listing machines", routes::MACHINES).await
    }

    /// The machines once `min_online` are online, or after `wait` (the
    /// server long-polls: no polling here).
    pub async fn wait_machines(&self, min_online: usize, wait: Duration) -> Result<Vec<MachineStatus>> {
        let path = format!("{}?min_online={min_online}&wait_ms={}", routes::MACHINES, wait.as_millis());
        self.get("waiting for machines", &path).await
    }

    /// Releases machine name `name` from its secret (see the API's
    /// `/api/machines/{name}/forget`).
    pub async fn forget_machine(&self, name: &str) -> Result<MachineForgotten> {
        self.json(
            &format!("forgetting machine {name}"),
            self.request(reqwest::Method::POST, &routes::machine_forget(name)),
        )
        .await
    }

    /// Drains a machine: it finishes its shards, takes no new ones, then stops.
    pub async fn drain_machine(&self, name: &str) -> Result<MachineDraining> {
        self.json(
            &format!("draining machine {name}"),
            self.request(reqwest::Method::POST, &routes::machine_drain(name)),
        )
        .await
    }

    /// What rerunning run `id`'s failures would run.
    pub async fn rerun_preview(&self, id: &str) -> Result<RerunPreview> {
        self.json(
            &format!("asking what a rerun of run {id} runs"),
            self.request(reqwest::Method::GET, &routes::run_rerun(id)),
        )
        .await
    }

    /// Takes a machine off draining: it gets shards again.
    pub async fn undrain_machine(&self, name: &str) -> Result<MachineUndrained> {
        self.json(
            &format!("undraining machine {name}"),
            self.request(reqwest::Method::POST, &routes::machine_undrain(name)),
        )
        .await
    }

    pub async fn disconnect_machine(&self, name: &str) -> Result<MachineDisconnected> {
        self.json(
            &format!("disconnecting machine {name}"),
            self.request(reqwest::Method::POST, &routes::machine_disconnect(name)),
        )
        .await
    }

    // ---- suites ----

    /// The stored suites, each with its number of tests ([`Client::suite`]
    /// lists them).
    pub async fn suites(&self) -> Result<Vec<SuiteSummary>> {
        self.get("listing suites", routes::SUITES).await
    }

    pub async fn suite(&self, sha256: &str) -> Result<SuiteMeta> {
        self.get("reading a suite", &routes::suite_inspect(sha256)).await
    }

    pub async fn suite_bytes(&self, sha256: &str) -> Result<Vec<u8>> {
        let what = format!("fetching suite {sha256}");
        let resp = self.send(&what, self.request(reqwest::Method::GET, &routes::suite(sha256))).await?;
        Ok(resp.bytes().await.map_err(|e| ClientError::transport(&what, e))?.to_vec())
    }

    /// The attempts to call run `run`'s webhooks, oldest first.
    pub async fn deliveries(&self, run: &str) -> Result<Vec<Delivery>> {
        self.get("reading a run's webhook deliveries", &routes::run_deliveries(run)).await
    }

    /// The bytes of a file a test of run `run` attached.
    pub async fn attachment(&self, run: &str, sha256: &str) -> Result<Vec<u8>> {
        let what = format!("fetching attachment {sha256} of run {run}");
        let resp = self
            .send(&what, self.request(reqwest::Method::GET, &routes::run_attachment(run, sha256)))
            .await?;
        Ok(resp.bytes().await.map_err(|e| ClientError::transport(&what, e))?.to_vec())
    }

    /// Whether the server has the suite (`HEAD`).
    pub async fn has_suite(&self, sha256: &str) -> Result<bool> {
        let what = "looking up a suite";
        match self.send(what, self.request(reqwest::Method::HEAD, &routes::suite(sha256))).await {
            Ok(_) => Ok(true),
            Err(e) if e.status() == Some(404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn upload_suite(&self, name: &str, bytes: Vec<u8>) -> Result<SuiteMeta> {
        let req = self
            .request(reqwest::Method::POST, &routes::suite_upload(name))
            .header("content-type", "application/wasm")
            .body(bytes);
        self.json(&format!("uploading suite {name}"), req).await
    }

    /// Uploads a suite unless the server has it already; returns its metadata.
    pub async fn ensure_suite(&self, name: &str, sha256: &str, bytes: &[u8]) -> Result<SuiteMeta> {
        if self.has_suite(sha256).await? {
            return self.suite(sha256).await;
        }
        self.upload_suite(name, bytes.to_vec()).await
    }

    // ---- plans ----

    pub async fn plans(&self) -> Result<Vec<StoredPlan>> {
        self.get("listing plans", routes::PLANS).await
    }

    /// A page of the plans, oldest first, as `query` asks: all, or those of
    /// one name (fewer than its limit when their bodies reach the server's
    /// page budget; none past the last).
    pub async fn plans_page(&self, query: &PlansQuery) -> Result<Vec<StoredPlan>> {
        self.get("listing plans", &query.url()).await
    }

    pub async fn plan(&self, id: &str) -> Result<StoredPlan> {
        self.get(&format!("reading plan {id}"), &routes::plan(id)).await
    }

    pub async fn create_plan(&self, plan: &Plan) -> Result<StoredPlan> {
        self.post(&format!("saving plan {:?}", plan.name), routes::PLANS, plan).await
    }

    pub async fn update_plan(&self, id: &str, plan: &Plan) -> Result<StoredPlan> {
        let req = self.request(reqwest::Method::PUT, &routes::plan(id)).json(plan);
        self.json(&format!("saving plan {id}"), req).await
    }

    pub async fn import_plan(&self, toml: &str) -> Result<StoredPlan> {
        let req = self
            .request(reqwest::Method::POST, routes::PLAN_IMPORT)
            .header("content-type", "application/toml")
            .body(toml.to_string());
        self.json("importing a plan", req).await
    }

    pub async fn plan_toml(&self, id: &str) -> Result<String> {
        let what = format!("exporting plan {id}");
        let resp = self.send(&what, self.request(reqwest::Method::GET, &routes::plan_toml(id))).await?;
        resp.text().await.map_err(|e| ClientError::transport(&what, e))
    }

    pub async fn delete_plan(&self, id: &str) -> Result<PlanDeleted> {
        self.json(&format!("deleting plan {id}"), self.request(reqwest::Method::DELETE, &routes::plan(id)))
            .await
    }

    // ---- runs ----

    pub async fn runs(&self) -> Result<Vec<RunMeta>> {
        self.get("listing runs", routes::RUNS).await
    }

    pub async fn run(&self, id: &str) -> Result<RunMeta> {
        self.get(&format!("reading run {id}"), &routes::run(id)).await
    }

    pub async fn start_run(&self, req: &RunRequest) -> Result<RunCreated> {
        self.post("starting the run", routes::RUNS, req).await
    }

    /// Starts a run of an inline plan whose suites are uploaded.
    pub async fn start_plan(&self, plan: &Plan) -> Result<RunCreated> {
        self.start_run(&RunRequest { plan: Some(plan.clone()), ..RunRequest::default() }).await
    }

    // ---- tests across runs ----

    /// Test `test` of role `role` in plan `plan`: its recent results.
    pub async fn test_history(&self, plan: &str, role: &str, test: &str) -> Result<TestHistory> {
        let query = HistoryQuery {
            plan: plan.into(),
            role: Some(role.into()),
            test: Some(test.into()),
            ..HistoryQuery::default()
        };
        self.get(&format!("reading the history of {role} {test}"), &query.url(routes::TEST_HISTORY)).await
    }

    /// The tests of plan `plan` that were flaky in its recent runs.
    pub async fn flaky_tests(&self, plan: &str) -> Result<Vec<TestHistory>> {
        let query = HistoryQuery { plan: plan.into(), ..HistoryQuery::default() };
        self.get(&format!("listing the flaky tests of plan {plan:?}"), &query.url(routes::FLAKY_TESTS)).await
    }

    pub async fn cancel_run(&self, id: &str) -> Result<RunCancelling> {
        self.cancel_run_saying(id, &CancelRequest::default()).await
    }

    /// Cancels run `id`, saying who asks and why (kept with the run).
    pub async fn cancel_run_saying(&self, id: &str, req: &CancelRequest) -> Result<RunCancelling> {
        self.json(
            &format!("cancelling run {id}"),
            self.request(reqwest::Method::POST, &routes::run_cancel(id)).json(req),
        )
        .await
    }

    // ---- WebSockets ----

    /// Opens a WebSocket at `path` (token in the Authorization header).
    pub async fn websocket(&self, path: &str) -> Result<WebSocket> {
        let url = ws_url(&self.base, path);
        let what = format!("connecting to {url}");
        let mut request = url.as_str().into_client_request().map_err(|e| ClientError::transport(&what, e))?;
        if let Some(t) = &self.token {
            let value = format!("Bearer {t}")
                .parse::<tokio_tungstenite::tungstenite::http::HeaderValue>()
                .map_err(|e| ClientError::transport(&what, e))?;
            request.headers_mut().insert("authorization", value);
        }
        let connector = tokio_tungstenite::Connector::Rustls(self.tls.clone());
        // No Nagle delay: sync calls and events are small frames that must
        // leave at once.
        let disable_nagle = true;
        match tokio_tungstenite::connect_async_tls_with_config(request, None, disable_nagle, Some(connector))
            .await
        {
            Ok((ws, _)) => Ok(ws),
            Err(e) if is_trust_error(&e) => Err(ClientError::Untrusted { url, message: e.to_string() }),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let status = resp.status().as_u16();
                let body =
                    resp.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default().to_string();
                match serde_json::from_str::<ApiError>(&body) {
                    Ok(error) => Err(ClientError::Api { what, status, error }),
                    Err(_) => {
                        let content_type = resp
                            .headers()
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        Err(ClientError::not_ensemble(
                            &what,
                            &self.base,
                            status,
                            content_type.as_deref(),
                            &body,
                        ))
                    }
                }
            }
            // An HTTP answer that is no WebSocket handshake (an HTTP/1.0
            // server, a 200 page): not Ensemble either.
            Err(tokio_tungstenite::tungstenite::Error::Protocol(e)) if not_a_handshake(&e) => {
                Err(ClientError::NotEnsemble {
                    message: format!(
                        "something other than Ensemble answers at {}: {e} (is `ensemble serve` what listens \
                     there, and is this its address?)",
                        self.base
                    ),
                    what,
                    transient: false,
                })
            }
            Err(e) => Err(ClientError::unreachable(&what, &e)),
        }
    }

    /// [`Client::watch`], with each attachment's bytes fetched into its
    /// event before `each` sees it (the stream carries only their sha256):
    /// for reporters that write the files.
    pub async fn watch_with_attachments(
        &self,
        run: &str,
        from: u64,
        mut each: impl FnMut(Event),
    ) -> Result<()> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // The closure owns `tx`: once the watch ends, so does the loop below.
        let watching = self.watch(run, from, move |ev| drop(tx.send(ev)));
        let feeding = async {
            while let Some(mut ev) = rx.recv().await {
                if let EventKind::Attachment { sha256, data: data @ None, .. } = &mut ev.kind {
                    *data = Some(ensemble_protocol::attachment::Blob(self.attachment(run, sha256).await?));
                }
                each(ev);
            }
            Ok(())
        };
        let (watched, fed) = tokio::join!(watching, feeding);
        watched.and(fed)
    }

    /// Follows a run's events from `from` until `run-finished`, calling
    /// `each`; resumes where it stopped if the stream breaks.
    pub async fn watch(&self, run: &str, from: u64, mut each: impl FnMut(Event)) -> Result<()> {
        let mut next = from.max(1);
        // A server that restarts is waited for: up to this long without a
        // connection, retrying with backoff.
        const PATIENCE: Duration = Duration::from_secs(120);
        let mut unreachable_since: Option<std::time::Instant> = None;
        let mut backoff = Duration::from_millis(100);
        // A stream that ends with nothing new (the server dropped a slow
        // watcher, say) is resumed after a growing pause, not at once.
        let mut idle_backoff = Duration::ZERO;
        loop {
            let mut ws = match self.websocket(&routes::run_events(run, next)).await {
                Ok(ws) => ws,
                Err(e @ ClientError::Transport { .. }) => {
                    let since = *unreachable_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() > PATIENCE {
                        return Err(e);
                    }
                    tracing::info!(run, "the server cannot be reached ({e}); retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
                Err(e) => return Err(e),
            };
            (unreachable_since, backoff) = (None, Duration::from_millis(100));
            let before = next;
            while let Some(frame) = ws.next().await {
                let text = match frame {
                    Ok(Message::Text(text)) => text,
                    // Pings (answered by the socket) and the like.
                    Ok(Message::Ping(_) | Message::Pong(_) | Message::Binary(_) | Message::Frame(_)) => {
                        continue;
                    }
                    Ok(Message::Close(_)) | Err(_) => break,
                };
                let ev: Event = serde_json::from_str(&text)
                    .map_err(|e| ClientError::transport("reading the run's events", e))?;
                next = ev.seq + 1;
                let done = matches!(ev.kind, EventKind::RunFinished { .. });
                each(ev);
                if done {
                    return Ok(());
                }
            }
            // The stream broke before the end: resume where it stopped.
            tracing::info!(run, next, "event stream closed early; resuming");
            idle_backoff = if next > before {
                Duration::ZERO
            } else {
                (idle_backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(5))
            };
            tokio::time::sleep(idle_backoff).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_urls_follow_the_scheme() {
        assert_eq!(ws_url("http://h:1/", "/api/x"), "ws://h:1/api/x");
        assert_eq!(ws_url("https://h", "/api/x"), "wss://h/api/x");
    }

    #[test]
    fn a_server_url_is_a_scheme_a_host_and_a_port_and_nothing_else() {
        assert_eq!(server_url("http://127.0.0.1:7878").unwrap(), "http://127.0.0.1:7878");
        assert_eq!(server_url("https://ci.example:443/").unwrap(), "https://ci.example:443");
        assert_eq!(server_url("http://[::1]:80/").unwrap(), "http://[::1]:80");
        for (input, says) in [
            ("127.0.0.1:7981", "no http:// or https://"),
            ("localhost:7878", "no http:// or https://"),
            ("ftp://h:1", "the scheme must be http or https"),
            ("http://h:1/api", "give the server's base URL, http://h:1"),
            ("http://h:1/?token=x", "more than a scheme, host and port"),
            ("http://me:pw@h:1", "pass the token with --token"),
            ("", "no http:// or https://"),
            ("http://127.0.0.1", "has no port: write it as http://127.0.0.1:PORT"),
            ("https://[::1]/", "has no port"),
        ] {
            let err = server_url(input).unwrap_err();
            assert!(err.contains(says), "{input:?}: {err}");
            assert!(err.contains(&format!("{input:?}")), "names what was given: {err}");
        }
    }
}
