//! The network side of machines and clients.
//!
//! - [`join`]: `ensemble runner --join URL`: dials the coordinator over a
//!   WebSocket, registers, and runs assigned shards in the local sandbox.
//!   It reconnects with backoff, and keeps every event (and every unanswered
//!   sync call, and every shard-done) until the coordinator acknowledges it,
//!   resending the rest after a reconnect; the coordinator drops duplicates.
//! - [`Client`]: the REST client used by `ensemble run --server` and the demo.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use ensemble_protocol::api::SuiteMeta;
use ensemble_protocol::wire::{FromMachine, MachineInfo, ToMachine};
use ensemble_protocol::{Event, PROTOCOL_VERSION};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, SuiteSource, now_us};
use crate::coordinator::SHARD_DONE_ACK;
use crate::sandbox::{Sandbox, sha256_hex};

/// An HTTP(S) base URL turned into the matching WebSocket URL.
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

/// The coordinator's REST API.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    tls: Tls,
}

/// Client-side TLS for `https://` and `wss://` URLs.
pub type Tls = Arc<rustls::ClientConfig>;

fn connector(tls: &Tls) -> tokio_tungstenite::Connector {
    tokio_tungstenite::Connector::Rustls(tls.clone())
}

impl Client {
    pub fn new(base: &str, token: Option<String>, tls: Tls) -> anyhow::Result<Client> {
        let mut config = (*tls).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let http =
            reqwest::Client::builder().use_preconfigured_tls(config).build().context("setting up HTTP")?;
        Ok(Client { base: base.trim_end_matches('/').to_string(), token, http, tls })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn check(resp: reqwest::Response, what: &str) -> anyhow::Result<reqwest::Response> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let msg =
            serde_json::from_str::<ensemble_protocol::api::ApiError>(&body).map(|e| e.error).unwrap_or(body);
        bail!("{what}: the server answered {status}: {msg}")
    }

    /// Uploads a suite unless the server has it already; returns its metadata.
    pub async fn ensure_suite(&self, name: &str, bytes: &[u8]) -> anyhow::Result<SuiteMeta> {
        let sha = sha256_hex(bytes);
        let head = self.req(reqwest::Method::HEAD, &format!("/api/suites/{sha}")).send().await?;
        if head.status().is_success() {
            let meta = self.req(reqwest::Method::GET, &format!("/api/suites/{sha}/inspect")).send().await?;
            return Ok(Self::check(meta, "reading a suite").await?.json().await?);
        }
        let resp = self
            .req(reqwest::Method::POST, &format!("/api/suites?name={name}"))
            .header("content-type", "application/wasm")
            .body(bytes.to_vec())
            .send()
            .await
            .with_context(|| format!("uploading suite {name}"))?;
        Ok(Self::check(resp, &format!("uploading suite {name}")).await?.json().await?)
    }

    pub async fn suite_bytes(&self, sha: &str) -> anyhow::Result<Vec<u8>> {
        let resp = self.req(reqwest::Method::GET, &format!("/api/suites/{sha}")).send().await?;
        Ok(Self::check(resp, &format!("fetching suite {sha}")).await?.bytes().await?.to_vec())
    }

    /// Starts a run of an inline plan; returns the run id.
    pub async fn start_run(&self, plan: &ensemble_protocol::Plan) -> anyhow::Result<String> {
        let body = ensemble_protocol::api::RunRequest { plan: Some(plan.clone()), plan_id: None };
        let resp = self
            .req(reqwest::Method::POST, "/api/runs")
            .json(&body)
            .send()
            .await
            .context("starting the run")?;
        let v: serde_json::Value = Self::check(resp, "starting the run").await?.json().await?;
        v["id"].as_str().map(str::to_string).context("the server sent no run id")
    }

    pub async fn get_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let resp = self.req(reqwest::Method::GET, path).send().await?;
        Ok(Self::check(resp, path).await?.json().await?)
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let resp = self.req(reqwest::Method::POST, path).json(body).send().await?;
        Ok(Self::check(resp, path).await?.json().await?)
    }

    /// Follows a run's events from `from` until `run-finished`, calling `each`.
    pub async fn watch(&self, run: &str, from: u64, mut each: impl FnMut(Event)) -> anyhow::Result<()> {
        let mut next = from;
        loop {
            let url = ws_url(&self.base, &format!("/api/runs/{run}/events?from={next}"));
            let mut request = url.into_client_request()?;
            if let Some(t) = &self.token {
                request.headers_mut().insert("authorization", format!("Bearer {t}").parse()?);
            }
            let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
                request,
                None,
                false,
                Some(connector(&self.tls)),
            )
            .await
            .context("watching the run")?;
            while let Some(frame) = ws.next().await {
                let Ok(Message::Text(text)) = frame else { break };
                let ev: Event = serde_json::from_str(&text).context("an event from the server")?;
                next = ev.seq + 1;
                let done = matches!(ev.kind, ensemble_protocol::EventKind::RunFinished { .. });
                each(ev);
                if done {
                    return Ok(());
                }
            }
            // The stream broke before the end: resume where it stopped.
            tracing::info!(run, next, "event stream closed early; resuming");
        }
    }
}

/// Suites fetched from the coordinator by sha256, cached on disk.
pub struct RemoteSuites {
    client: Client,
    dir: PathBuf,
}

impl RemoteSuites {
    pub fn new(client: Client, dir: PathBuf) -> Self {
        Self { client, dir }
    }
}

#[async_trait]
impl SuiteSource for RemoteSuites {
    async fn fetch(&self, sha256: &str) -> anyhow::Result<Arc<Vec<u8>>> {
        let path = self.dir.join(format!("{sha256}.wasm"));
        if let Ok(bytes) = tokio::fs::read(&path).await
            && sha256_hex(&bytes) == sha256
        {
            return Ok(Arc::new(bytes));
        }
        let bytes = self.client.suite_bytes(sha256).await?;
        if sha256_hex(&bytes) != sha256 {
            bail!("the server sent bytes that do not hash to {sha256}");
        }
        tokio::fs::create_dir_all(&self.dir).await.ok();
        let tmp = self.dir.join(format!(".{sha256}.{}", std::process::id()));
        if tokio::fs::write(&tmp, &bytes).await.is_ok() {
            let _ = tokio::fs::rename(&tmp, &path).await;
        }
        Ok(Arc::new(bytes))
    }
}

/// Why a machine stopped for good.
#[derive(Debug, thiserror::Error)]
#[error("the coordinator refused this machine: {0}")]
pub struct Refused(pub String);

/// Messages kept until acknowledged, to resend after a reconnect.
#[derive(Default)]
struct Unacked {
    events: BTreeMap<(String, u32), VecDeque<(u64, FromMachine)>>,
    syncs: BTreeMap<u64, FromMachine>,
    done: BTreeMap<(String, u32), FromMachine>,
}

impl Unacked {
    fn keep(&mut self, msg: &FromMachine) {
        match msg {
            FromMachine::Event { run, shard, seq, .. } => {
                self.events.entry((run.clone(), *shard)).or_default().push_back((*seq, msg.clone()))
            }
            FromMachine::Sync { id, .. } => {
                self.syncs.insert(*id, msg.clone());
            }
            FromMachine::ShardDone { run, shard } => {
                self.done.insert((run.clone(), *shard), msg.clone());
            }
            _ => {}
        }
    }

    fn ack(&mut self, run: &str, shard: u32, seq: u64) {
        let key = (run.to_string(), shard);
        if seq == SHARD_DONE_ACK {
            self.done.remove(&key);
            self.events.remove(&key);
            return;
        }
        if let Some(q) = self.events.get_mut(&key) {
            while q.front().is_some_and(|(s, _)| *s <= seq) {
                q.pop_front();
            }
        }
    }

    /// Everything to resend, in an order the coordinator accepts.
    fn replay(&self) -> Vec<FromMachine> {
        let mut out: Vec<FromMachine> = self.events.values().flatten().map(|(_, m)| m.clone()).collect();
        out.extend(self.syncs.values().cloned());
        out.extend(self.done.values().cloned());
        out
    }
}

/// Options of `ensemble runner`.
pub struct JoinOptions {
    pub url: String,
    pub token: Option<String>,
    pub info: MachineInfo,
    pub cache_dir: PathBuf,
    pub heartbeat: Duration,
    pub tls: Tls,
}

/// Runs a machine joined to a coordinator until `shutdown` or a refusal.
pub async fn join(
    opts: JoinOptions,
    sandbox: Arc<Sandbox>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let client = Client::new(&opts.url, opts.token.clone(), opts.tls.clone())?;
    let suites = Arc::new(RemoteSuites::new(client, opts.cache_dir.join("suites")));
    let agent = Arc::new(Agent::new(opts.info.clone(), sandbox, suites));
    let (inbox_tx, inbox_rx) = mpsc::unbounded_channel();
    let (outbox_tx, mut outbox_rx) = mpsc::unbounded_channel();
    let agent_task = tokio::spawn(agent.serve(inbox_rx, outbox_tx, shutdown.child_token()));
    let mut unacked = Unacked::default();
    let mut backoff = Duration::from_millis(100);
    let result = loop {
        if shutdown.is_cancelled() {
            break Ok(());
        }
        match session(&opts, &inbox_tx, &mut outbox_rx, &mut unacked, &shutdown).await {
            Ok(()) => break Ok(()),
            Err(e) if e.downcast_ref::<Refused>().is_some() => break Err(e),
            Err(e) => {
                tracing::warn!("connection to {} lost: {e:#}; reconnecting in {backoff:?}", opts.url);
                eprintln!("ensemble runner: connection to {} lost: {e:#}; reconnecting", opts.url);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => break Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    shutdown.cancel();
    drop(inbox_tx);
    let _ = agent_task.await;
    result
}

/// Whether connecting failed because the server's certificate is not trusted.
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

/// One connection: hello, resend what is unacknowledged, then pump.
async fn session(
    opts: &JoinOptions,
    inbox: &mpsc::UnboundedSender<ToMachine>,
    outbox: &mut mpsc::UnboundedReceiver<FromMachine>,
    unacked: &mut Unacked,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let url = ws_url(&opts.url, "/api/machines/join");
    let mut request = url.as_str().into_client_request().with_context(|| format!("bad URL {url}"))?;
    if let Some(t) = &opts.token {
        request.headers_mut().insert("authorization", format!("Bearer {t}").parse()?);
    }
    let connected =
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(connector(&opts.tls)))
            .await;
    let (ws, _) = match connected {
        Ok(ws) => ws,
        // An untrusted certificate will not fix itself by retrying.
        Err(e) if is_trust_error(&e) => {
            return Err(
                Refused(format!("TLS with {url} failed: {e}; pass the server's CA with --ca-file")).into()
            );
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("connecting to {url}"))),
    };
    let (mut tx, mut rx) = ws.split();
    let send =
        |msg: &FromMachine| Message::text(serde_json::to_string(msg).expect("wire messages serialize"));
    let hello = FromMachine::Hello {
        protocol: PROTOCOL_VERSION,
        token: opts.token.clone(),
        machine: opts.info.clone(),
    };
    tx.send(send(&hello)).await?;
    match rx.next().await {
        Some(Ok(Message::Text(t))) => match serde_json::from_str::<ToMachine>(&t)? {
            ToMachine::Welcome { coordinator, .. } => {
                tracing::info!(%coordinator, machine = %opts.info.name, "joined");
                eprintln!("ensemble runner: {} joined {} ({coordinator})", opts.info.name, opts.url);
            }
            ToMachine::Rejected { reason } => return Err(Refused(reason).into()),
            other => bail!("expected a welcome, got {other:?}"),
        },
        other => bail!("the coordinator closed the connection before welcoming us ({other:?})"),
    }
    for msg in unacked.replay() {
        tx.send(send(&msg)).await?;
    }
    let mut heartbeat = tokio::time::interval(opts.heartbeat);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = tx.close().await;
                return Ok(());
            }
            _ = heartbeat.tick() => tx.send(send(&FromMachine::Heartbeat)).await?,
            out = outbox.recv() => {
                let Some(msg) = out else { return Ok(()) };
                unacked.keep(&msg);
                tx.send(send(&msg)).await?;
            }
            incoming = rx.next() => match incoming {
                Some(Ok(Message::Text(t))) => {
                    let msg = match serde_json::from_str::<ToMachine>(&t) {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!("skipping a frame that is not a valid message: {e}");
                            continue;
                        }
                    };
                    match msg {
                        ToMachine::Ping { id, coordinator_us } => {
                            tx.send(send(&FromMachine::Pong { id, coordinator_us, machine_us: now_us() })).await?;
                        }
                        ToMachine::Ack { run, shard, seq } => unacked.ack(&run, shard, seq),
                        ToMachine::SyncReply { id, reply } => {
                            unacked.syncs.remove(&id);
                            let _ = inbox.send(ToMachine::SyncReply { id, reply });
                        }
                        ToMachine::Rejected { reason } => return Err(Refused(reason).into()),
                        other => {
                            let _ = inbox.send(other);
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None => bail!("the coordinator closed the connection"),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
            },
        }
    }
}
