//! `ensemble runner --join URL`: a machine joined to a coordinator.
//!
//! Dials the coordinator's machine WebSocket, says hello, and runs assigned
//! shards in the local sandbox. It reconnects with backoff; its [`Link`]
//! keeps every event, unanswered sync call and shard-done until the
//! coordinator acknowledges it and resends the rest after a reconnect (the
//! coordinator drops duplicates). Suites are fetched by sha256 through the
//! REST API, checked against their hash, and cached on disk.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use async_trait::async_trait;
use ensemble_client::{Client, ClientError, Tls};
use ensemble_protocol::PROTOCOL_VERSION;
use ensemble_protocol::api::{ErrorKind, routes};
use ensemble_protocol::wire::{FromMachine, MAX_FRAME, MachineInfo, Parts, ToMachine, split_frame};
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::link::Link;
use super::{Agent, SuiteSource};
use crate::sandbox::{HostPolicy, Sandbox, sha256_hex};
use crate::time::now_us;
use ensemble_protocol::grant::{HostPattern, NetGrant};

/// Suites fetched from the coordinator by sha256, cached on disk in
/// `suites/` of the cache directory, which is kept within its bound.
pub struct RemoteSuites {
    client: Client,
    cache_dir: PathBuf,
    dir: PathBuf,
    max_size: u64,
}

impl RemoteSuites {
    /// Suites from `client`, kept in the cache directory `cache_dir` of at
    /// most `max_size` bytes (see [`crate::sandbox::cache::trim`]).
    pub fn new(client: Client, cache_dir: PathBuf, max_size: u64) -> Self {
        Self { client, dir: cache_dir.join("suites"), cache_dir, max_size }
    }
}

#[async_trait]
impl SuiteSource for RemoteSuites {
    async fn fetch(&self, sha256: &str) -> anyhow::Result<Arc<Vec<u8>>> {
        let path = self.dir.join(format!("{sha256}.wasm"));
        if let Ok(bytes) = tokio::fs::read(&path).await
            && sha256_hex(&bytes) == sha256
        {
            crate::sandbox::cache::touch(&path);
            return Ok(Arc::new(bytes));
        }
        let bytes = self.client.suite_bytes(sha256).await?;
        if sha256_hex(&bytes) != sha256 {
            bail!("the server sent bytes that do not hash to {sha256}");
        }
        tokio::fs::create_dir_all(&self.dir).await.ok();
        let tmp = self.dir.join(format!(".{sha256}.{}", std::process::id()));
        if tokio::fs::write(&tmp, &bytes).await.is_ok() && tokio::fs::rename(&tmp, &path).await.is_ok() {
            let (root, max) = (self.cache_dir.clone(), self.max_size);
            let _ = tokio::task::spawn_blocking(move || crate::sandbox::cache::trim(&root, max, Some(&path)))
                .await;
        }
        Ok(Arc::new(bytes))
    }
}

/// Why a machine stopped for good: retrying would not help.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl Refused {
    /// The coordinator itself said no (a wrong token, a name taken).
    fn by_coordinator(reason: impl std::fmt::Display) -> Refused {
        Refused(format!("the coordinator refused this machine: {reason}"))
    }
}

/// The secret this machine keeps in `file` for its name `name` at the
/// coordinator `url` (none before its first join). A file that cannot be
/// read, or does not hold a secret, stops the runner, saying how to recover:
/// guessing would only be refused, again and again.
fn kept_secret(file: &std::path::Path, name: &str, url: &str) -> Result<Option<String>, Refused> {
    let recover = format!(
        "restore the file from a backup; or start this runner with another --name; or remove the file and \
         release the name at the coordinator (POST {url}/api/machines/{name}/forget with the API token) so \
         this runner takes it again"
    );
    match std::fs::read(file) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let secret = text.trim();
            if secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(Some(secret.to_string()))
            } else {
                Err(Refused(format!(
                    "this machine's identity file {} is damaged (it does not hold the secret the coordinator \
                     gave the name {name:?} at its first join), so it cannot prove its name. To recover: {recover}",
                    file.display()
                )))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Refused(format!(
            "this machine's identity file {} cannot be read ({e}), so it cannot prove its name {name:?}. \
             To recover: {recover}",
            file.display()
        ))),
    }
}

/// Options of `ensemble runner`.
pub struct JoinOptions {
    pub url: String,
    pub token: Option<String>,
    pub info: MachineInfo,
    pub cache_dir: PathBuf,
    /// The most the cache directory holds.
    pub cache_max_size: u64,
    pub heartbeat: Duration,
    pub tls: Tls,
    /// What plans may grant on this machine.
    pub policy: HostPolicy,
    /// What services may start here, and the address they are reached at.
    pub services: crate::services::Host,
    /// Whether it compiles suites ahead of their runs when told to.
    pub precompile: bool,
}

/// Where the secret that proves this machine's name to this coordinator is
/// kept: one file per (name, coordinator URL) under the cache dir.
fn identity_file(opts: &JoinOptions) -> PathBuf {
    let url = sha256_hex(opts.url.trim_end_matches('/').as_bytes());
    opts.cache_dir.join("identities").join(format!("{}@{}", opts.info.name, &url[..16]))
}

/// The coordinator's addresses (from its URL), for suites never to reach.
pub async fn coordinator_addresses(url: &str) -> Vec<NetGrant> {
    let parsed = reqwest::Url::parse(url).ok();
    let (Some(host), Some(port)) = (
        parsed
            .as_ref()
            .and_then(|u| u.host_str())
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string()),
        parsed.as_ref().and_then(|u| u.port_or_known_default()),
    ) else {
        tracing::warn!("cannot tell the coordinator's address from {url:?}");
        return Vec::new();
    };
    match tokio::net::lookup_host((host.as_str(), port)).await {
        Ok(addrs) => {
            addrs.map(|a| NetGrant { host: HostPattern::Ip(a.ip()), port: Some(a.port()) }).collect()
        }
        Err(e) => {
            tracing::warn!("cannot resolve the coordinator's address {host}:{port}: {e}");
            Vec::new()
        }
    }
}

/// How a joined machine ended, when it was not refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// `shutdown` fired.
    Stopped,
    /// It was drained (asked by `drain`, or through the API), and the
    /// coordinator said it may go: its shards are done.
    Drained,
}

/// Runs a machine joined to a coordinator until `shutdown`, a refusal, or
/// the end of a drain. Once `drain` fires, the machine asks the coordinator
/// to drain it (again after every reconnect) and keeps running its shards.
pub async fn join(
    opts: JoinOptions,
    sandbox: Arc<Sandbox>,
    drain: CancellationToken,
    shutdown: CancellationToken,
) -> anyhow::Result<Ended> {
    let client = Client::new(&opts.url, opts.token.clone(), opts.tls.clone())?;
    let suites = Arc::new(RemoteSuites::new(client.clone(), opts.cache_dir.clone(), opts.cache_max_size));
    let agent = Arc::new(
        Agent::new(opts.info.clone(), sandbox, suites, opts.policy.clone())
            .with_services(opts.services.clone())
            .with_precompile(opts.precompile),
    );
    let (inbox_tx, inbox_rx) = mpsc::unbounded_channel();
    let (outbox_tx, mut outbox_rx) = mpsc::unbounded_channel();
    let agent_task = tokio::spawn(agent.clone().serve(inbox_rx, outbox_tx, shutdown.child_token()));
    let mut link = Link::counting(agent.backlog());
    let mut retry =
        Retry { backoff: Duration::from_millis(100), joined: false, failed: false, failed_since: None };
    let result = loop {
        if shutdown.is_cancelled() {
            break Ok(Ended::Stopped);
        }
        // Draining while the coordinator cannot be reached: no work can
        // come, so once the shards here are done there is nothing to wait
        // for. Services wait for their run's end, which only the
        // coordinator tells: once it has been out of reach long enough to
        // have counted this machine lost (and failed the runs it served),
        // they are ended too.
        let unreachable_for = retry.failed_since.map_or(Duration::ZERO, |t| t.elapsed());
        if drain.is_cancelled()
            && retry.failed
            && (agent.active_shards() == 0
                || (agent.active_test_shards() == 0 && unreachable_for >= SERVICES_OFFLINE_GRACE))
        {
            break Ok(Ended::Drained);
        }
        let ends = Ends { drain: &drain, shutdown: &shutdown };
        match session(&opts, &client, &inbox_tx, &mut outbox_rx, &mut link, &mut retry, ends).await {
            Ok(ended) => break Ok(ended),
            Err(e) if e.downcast_ref::<Refused>().is_some() => break Err(e),
            Err(e) => {
                // Never joined: the address (or the network) is the question,
                // not a connection that dropped.
                let what = if retry.joined { "connection to {url} lost" } else { "cannot reach {url}" }
                    .replace("{url}", &opts.url);
                tracing::debug!("{what}: {e:#}; trying again in {:?}", retry.backoff);
                eprintln!("ensemble runner: {what}: {e:#}; trying again");
                retry.failed = true;
                retry.failed_since.get_or_insert_with(std::time::Instant::now);
                tokio::select! {
                    _ = tokio::time::sleep(retry.backoff) => {}
                    _ = drain.cancelled(), if agent.active_shards() == 0 => {}
                    _ = shutdown.cancelled() => break Ok(Ended::Stopped),
                }
                retry.backoff = (retry.backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    shutdown.cancel();
    drop(inbox_tx);
    let _ = agent_task.await;
    result
}

/// How the next connection attempt goes: after how long, and whether this
/// runner was ever welcomed (if not, the address is in question rather
/// than a dropped connection).
struct Retry {
    backoff: Duration,
    joined: bool,
    /// The last connection attempt (or connection) failed.
    failed: bool,
    /// Since when the coordinator has been out of reach (the first failure
    /// since the last welcome).
    failed_since: Option<std::time::Instant>,
}

/// How long a draining runner that cannot reach its coordinator keeps the
/// services it runs: past the coordinator's heartbeat timeout (10 s by
/// default), after which it has counted the machine lost and failed the
/// runs those services served.
pub const SERVICES_OFFLINE_GRACE: Duration = Duration::from_secs(30);

/// What ends a machine besides the coordinator: a drain, or a stop.
#[derive(Clone, Copy)]
struct Ends<'a> {
    drain: &'a CancellationToken,
    shutdown: &'a CancellationToken,
}

/// One connection: hello, resend what is unacknowledged, then pump. Once
/// welcomed, the next reconnect starts again from the shortest backoff.
async fn session(
    opts: &JoinOptions,
    client: &Client,
    inbox: &mpsc::UnboundedSender<ToMachine>,
    outbox: &mut mpsc::UnboundedReceiver<FromMachine>,
    link: &mut Link,
    retry: &mut Retry,
    ends: Ends<'_>,
) -> anyhow::Result<Ended> {
    let Ends { drain, shutdown } = ends;
    let connected = tokio::time::timeout(HANDSHAKE, client.websocket(routes::MACHINE_JOIN)).await;
    let connected = connected.map_err(|_| anyhow::anyhow!("no answer within {} s", HANDSHAKE.as_secs()))?;
    let ws = match connected {
        Ok(ws) => ws,
        // An untrusted certificate, or a scheme that does not match the
        // server's, will not fix itself by retrying.
        Err(e @ (ClientError::Untrusted { .. } | ClientError::BadUrl(_))) => {
            return Err(Refused(e.to_string()).into());
        }
        // A wrong token will not fix itself by retrying either.
        Err(ClientError::Api { error, .. }) if error.kind() == ErrorKind::Unauthorized => {
            return Err(Refused::by_coordinator(error.message()).into());
        }
        // Nor an address where something else answers, unless this runner
        // has been welcomed there before (then it is, say, a proxy in front
        // of a coordinator that restarts) or the answer may mend itself.
        Err(e @ ClientError::NotEnsemble { transient: false, .. }) if !retry.joined => {
            return Err(Refused(e.to_string()).into());
        }
        Err(e) => return Err(e.into()),
    };
    let (mut tx, mut rx) = ws.split();
    let send = messages;
    let identity = identity_file(opts);
    let hello = FromMachine::Hello {
        protocol: PROTOCOL_VERSION,
        token: None,
        machine: opts.info.clone(),
        secret: kept_secret(&identity, &opts.info.name, &opts.url)?,
        holding: link.holding(),
        instance: Some(this_process().to_string()),
    };
    within(HANDSHAKE, crate::burst::write(&mut tx, send(&hello), || None)).await?;
    let welcome = tokio::time::timeout(HANDSHAKE, rx.next()).await;
    let welcome =
        welcome.map_err(|_| anyhow::anyhow!("no welcome within {} s of the hello", HANDSHAKE.as_secs()))?;
    let mut silence = DEFAULT_SILENCE;
    match welcome {
        Some(Ok(Message::Text(t))) => match serde_json::from_str::<ToMachine>(&t)? {
            ToMachine::Welcome { coordinator, machine_secret, heartbeat_timeout_ms, .. } => {
                if let Some(ms) = heartbeat_timeout_ms {
                    silence = Duration::from_millis(ms).max(MIN_SILENCE);
                }
                if let Some(secret) = machine_secret {
                    // This name's identity with this coordinator, from now on.
                    // Not kept, this name could not join again: stop here.
                    let kept = identity
                        .parent()
                        .map_or(Ok(()), |dir| std::fs::create_dir_all(dir).map_err(anyhow::Error::from))
                        .and_then(|()| crate::secret::write_private(&identity, &secret));
                    if let Err(e) = kept {
                        let file = identity.display();
                        return Err(
                            Refused(format!("cannot keep this machine's identity in {file}: {e:#}")).into()
                        );
                    }
                }
                tracing::info!(%coordinator, machine = %opts.info.name, "joined");
                *retry = Retry {
                    backoff: Duration::from_millis(100),
                    joined: true,
                    failed: false,
                    failed_since: None,
                };
                eprintln!("ensemble runner: {} joined {} ({coordinator})", opts.info.name, opts.url);
            }
            ToMachine::Rejected { reason, retry: false } => {
                return Err(Refused::by_coordinator(reason).into());
            }
            ToMachine::Rejected { reason, retry: true } => bail!("the coordinator asked to retry: {reason}"),
            other => bail!("expected a welcome, got {other:?}"),
        },
        other => bail!("the coordinator closed the connection before welcoming us ({other:?})"),
    }
    let patience = silence.max(WRITE_PATIENCE);
    for msg in link.replay() {
        within(patience, crate::burst::write(&mut tx, send(&msg), || None)).await?;
    }
    let mut heartbeat = tokio::time::interval(opts.heartbeat);
    // The coordinator pings more often than its heartbeat timeout: a link
    // that carries nothing from it that long is silent (half-open, or a
    // NAT that dropped it) and is given up, as the coordinator gives up
    // this machine.
    let mut heard = tokio::time::Instant::now();
    // Asked (again, on this connection) once `drain` fires.
    let mut drain_asked = false;
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = tx.close().await;
                return Ok(Ended::Stopped);
            }
            _ = drain.cancelled(), if !drain_asked => {
                drain_asked = true;
                within(patience, crate::burst::write(&mut tx, send(&FromMachine::Drain), || None)).await?;
                continue;
            }
            _ = tokio::time::sleep_until(heard + silence) => match rx.next().now_or_never() {
                // It spoke as the time ran out (this loop was writing).
                Some(incoming) => incoming,
                None => bail!("the coordinator was silent for {} s (its heartbeat timeout)", silence.as_secs_f32()),
            },
            _ = heartbeat.tick() => {
                within(patience, crate::burst::write(&mut tx, send(&FromMachine::Heartbeat), || None)).await?;
                continue;
            }
            out = outbox.recv() => {
                let Some(msg) = out else { return Ok(Ended::Stopped) };
                // What else is queued goes in the same write.
                link.outgoing(&msg);
                let more = || {
                    let msg = outbox.try_recv().ok()?;
                    link.outgoing(&msg);
                    Some(send(&msg))
                };
                within(patience, crate::burst::write(&mut tx, send(&msg), more)).await?;
                continue;
            }
            incoming = rx.next() => incoming,
        };
        heard = tokio::time::Instant::now();
        match incoming {
            Some(Ok(Message::Text(t))) => {
                let msg = match serde_json::from_str::<ToMachine>(&t) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!("skipping a frame that is not a valid message: {e}");
                        continue;
                    }
                };
                match link.incoming(msg) {
                    Some(ToMachine::Ping { id, coordinator_us }) => {
                        let pong = FromMachine::Pong { id, coordinator_us, machine_us: now_us() };
                        within(patience, crate::burst::write(&mut tx, send(&pong), || None)).await?;
                    }
                    Some(ToMachine::Rejected { reason, retry: false }) => {
                        return Err(Refused::by_coordinator(reason).into());
                    }
                    Some(ToMachine::Drained) => {
                        let _ = tx.close().await;
                        return Ok(Ended::Drained);
                    }
                    Some(ToMachine::Rejected { reason, retry: true }) => {
                        bail!("the coordinator asked to retry: {reason}")
                    }
                    Some(other) => {
                        let _ = inbox.send(other);
                    }
                    None => {}
                }
            }
            Some(Ok(Message::Close(_))) | None => bail!("the coordinator closed the connection"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

/// How long one write to the coordinator may take (at least): a frame may
/// be large (64 MiB) and the link slow, and a coordinator waiting for its
/// store reads nothing meanwhile. A link that is silent is found out by what
/// it does not say (the heartbeat timeout), between writes.
const WRITE_PATIENCE: Duration = Duration::from_secs(120);

/// How long connecting, the hello and the welcome may take.
const HANDSHAKE: Duration = Duration::from_secs(15);

/// How long a link may carry nothing from a coordinator that does not say
/// its heartbeat timeout (an older one), and the least any may set.
const DEFAULT_SILENCE: Duration = Duration::from_secs(30);
const MIN_SILENCE: Duration = Duration::from_secs(1);

/// A write to the coordinator, given up when it does not finish within
/// `limit` (a link that takes nothing more is as silent as one that says
/// nothing).
async fn within<E: Into<anyhow::Error>>(
    limit: Duration,
    write: impl std::future::Future<Output = Result<(), E>>,
) -> anyhow::Result<()> {
    match tokio::time::timeout(limit, write).await {
        Ok(done) => done.map_err(Into::into),
        Err(_) => bail!("a write to the coordinator did not finish within {} s", limit.as_secs_f32()),
    }
}

/// A message as the WebSocket messages that carry it: its frame whole, or
/// in parts when it is larger than one (`wire::split_frame`).
fn messages(msg: &FromMachine) -> Vec<Message> {
    match split_frame(frame(msg)) {
        Parts::Whole(text) => vec![Message::text(text)],
        Parts::Split(parts) => parts.into_iter().map(Message::binary).collect(),
    }
}

/// A message as the frame that carries it: never over the frame limit the
/// coordinator enforces (a refused frame would be resent at every
/// reconnect, forever). An event too large is sent shrunk, saying so.
fn frame(msg: &FromMachine) -> String {
    let text = serde_json::to_string(msg).expect("wire messages serialize");
    if text.len() <= MAX_FRAME {
        return text;
    }
    let FromMachine::Event { run, shard, seq, at_us, event } = msg else {
        tracing::error!(bytes = text.len(), "a message over the frame limit is sent as it is");
        return text;
    };
    tracing::warn!(run, shard, seq, bytes = text.len(), "an event over the frame limit is sent shrunk");
    let shrunk = FromMachine::Event {
        run: run.clone(),
        shard: *shard,
        seq: *seq,
        at_us: *at_us,
        event: event.clone().too_large(text.len()),
    };
    serde_json::to_string(&shrunk).expect("wire messages serialize")
}

/// This runner process, for the coordinator to tell it from the next one
/// under the same name: 16 random hex digits, drawn once.
fn this_process() -> &'static str {
    static INSTANCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INSTANCE.get_or_init(|| {
        let mut bytes = [0u8; 8];
        if getrandom::fill(&mut bytes).is_err() {
            // No randomness: the process id and the start time tell it apart.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            bytes = (u64::from(std::process::id()) << 32 | u64::from(nanos)).to_be_bytes();
        }
        hex::encode(bytes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_over_the_frame_limit_is_sent_shrunk_and_still_ends_its_test() {
        use ensemble_protocol::event::{EventKind, Outcome, ShardRef};
        let shard =
            ShardRef { shard: 1, machine: "m".into(), role: "r".into(), suite: "s".into(), instance: 0 };
        let finished = FromMachine::Event {
            run: "run-1".into(),
            shard: 1,
            seq: 9,
            at_us: 5,
            event: EventKind::TestFinished {
                shard: shard.clone(),
                test: "t".into(),
                outcome: Outcome::Passed,
                duration_ms: 3,
                attempt: 1,
                message: None,
                // Control characters are escaped six bytes each.
                output: "\u{1}".repeat(MAX_FRAME / 4),
            },
        };
        let text = frame(&finished);
        assert!(text.len() < 4096, "{} bytes", text.len());
        let FromMachine::Event { seq: 9, event: EventKind::TestFinished { outcome, message, .. }, .. } =
            serde_json::from_str(&text).unwrap()
        else {
            panic!("{text}")
        };
        assert_eq!(outcome, Outcome::Failed);
        assert!(message.unwrap().contains("over the limit of 67108864 a frame may carry"));
        // Small ones go as they are, in one text message; large ones in
        // binary parts of at most one part's size.
        assert_eq!(frame(&FromMachine::Heartbeat), serde_json::to_string(&FromMachine::Heartbeat).unwrap());
        assert!(matches!(&messages(&FromMachine::Heartbeat)[..], [Message::Text(_)]));
        let large = FromMachine::Event {
            run: "run-1".into(),
            shard: 1,
            seq: 10,
            at_us: 5,
            event: EventKind::Log {
                shard,
                test: "t".into(),
                level: "info".into(),
                message: "m".repeat(3 << 20),
            },
        };
        let parts = messages(&large);
        assert_eq!(parts.len(), 13, "3 MiB and a little in parts of 256 KiB");
        assert!(
            parts
                .iter()
                .all(|m| matches!(m, Message::Binary(b) if b.len() <= ensemble_protocol::wire::MAX_PART))
        );
    }

    #[tokio::test]
    async fn the_coordinators_address_comes_from_its_url() {
        let grant = |s: &str| NetGrant::parse(s).unwrap();
        assert_eq!(coordinator_addresses("http://127.0.0.1:7878/").await, [grant("127.0.0.1:7878")]);
        assert_eq!(coordinator_addresses("https://[::1]/base").await, [grant("[::1]:443")]);
        assert!(coordinator_addresses("no url").await.is_empty());
    }
}
