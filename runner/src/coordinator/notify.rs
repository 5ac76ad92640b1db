//! Webhooks: telling a plan's `notify` URLs that a run finished.
//!
//! Once a run's end is stored, each webhook whose `on` matches the run's
//! state gets one `POST`: Ensemble's JSON ([`Message`]) or a Slack-style
//! `{"text": …}`, signed with the server's webhook secret
//! (`X-Ensemble-Signature: sha256=HEX`, an HMAC-SHA256 of the exact body,
//! which the receiver recomputes to know the call is ours and unaltered).
//! A receiver that fails (no answer, or not 2xx) is tried again after 1, 2,
//! 4 and 8 s; every attempt is stored and listed by the API.
//!
//! A plan names the URLs, so a webhook is a request a plan author makes
//! from the server's network: only public addresses are called, unless
//! the operator allows more (`--allow-webhook-to`). Names are resolved by
//! [`Destinations`] and only allowed addresses are connected to, so a name
//! cannot point elsewhere between the check and the call.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ensemble_protocol::api::{Delivery, RunMeta, RunState};
use ensemble_protocol::grant::{HostPattern, NetGrant};
use ensemble_protocol::plan::{Notify, NotifyFormat, NotifyOn};
use ensemble_protocol::{Summary, Verdict};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::store::Store;
use crate::time::now_us;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "X-Ensemble-Signature";
/// Attempts per webhook and run.
const ATTEMPTS: u32 = 5;
/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The JSON body of a webhook call.
#[derive(Debug, Serialize)]
pub struct Message<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub run: &'a str,
    pub plan: &'a str,
    pub verdict: Verdict,
    pub summary: Summary,
    pub duration_ms: u64,
    /// The run in the browser app.
    pub url: String,
}

/// `sha256=HEX` of `body` with `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `ip` is outside the public internet: loopback, unspecified,
/// private, shared (CGNAT), link-local, unique-local, multicast,
/// broadcast, documentation or benchmarking ranges (IPv4-mapped IPv6 as
/// its IPv4).
pub fn internal_address(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
        }
    }
}

/// Where webhooks may go: public addresses, and those the operator allows.
/// Also the resolver of the client that calls them.
#[derive(Clone, Debug, Default)]
pub struct Destinations {
    allow: Arc<Vec<HostPattern>>,
}

impl Destinations {
    pub fn new(allow: Vec<HostPattern>) -> Self {
        Self { allow: Arc::new(allow) }
    }

    /// Whether a webhook may connect to `ip`.
    pub fn admits(&self, ip: IpAddr) -> bool {
        let at = SocketAddr::new(ip, 0);
        !internal_address(ip)
            || self.allow.iter().any(|h| NetGrant { host: h.clone(), port: None }.allows(at))
    }

    /// Why `url` may not be called, when its host is an address that is
    /// not admitted (names are checked as they are resolved).
    pub fn refuses(&self, url: &str) -> Option<String> {
        let host = host_of(url);
        let ip: IpAddr = host.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
        (!self.admits(ip)).then(|| refusal(&host))
    }
}

/// A destination [`Destinations`] refused, as the resolver's error (so a
/// failed call can tell it from an unreachable receiver).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

fn refusal(host: &str) -> String {
    format!(
        "refused: {host} is not a public address; the server's operator may allow it with --allow-webhook-to"
    )
}

impl reqwest::dns::Resolve for Destinations {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let to = self.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let admitted: Vec<SocketAddr> = found.into_iter().filter(|a| to.admits(a.ip())).collect();
            if admitted.is_empty() {
                return Err(Box::new(Refused(refusal(&host))) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(admitted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The verdict a finished run's stored state stands for.
fn verdict(state: RunState) -> Verdict {
    match state {
        RunState::Passed => Verdict::Passed,
        RunState::Cancelled => Verdict::Cancelled,
        _ => Verdict::Failed,
    }
}

/// Whether webhook `n` hears of a run that ended `verdict`.
fn wants(n: &Notify, verdict: Verdict) -> bool {
    match n.on {
        NotifyOn::Finished => true,
        NotifyOn::Failed => verdict != Verdict::Passed,
    }
}

/// The body webhook `n` gets about `run`.
pub fn body(n: &Notify, run: &RunMeta, public_url: &str) -> Vec<u8> {
    let verdict = verdict(run.state);
    let summary = run.summary.unwrap_or_default();
    let duration_ms = run.finished_us.map_or(0, |f| u64::try_from((f - run.started_us) / 1000).unwrap_or(0));
    let url =
        format!("{}/runs/{}", public_url.trim_end_matches('/'), ensemble_protocol::api::encode(&run.id));
    match n.format {
        NotifyFormat::Json => serde_json::to_vec(&Message {
            kind: "run-finished",
            run: &run.id,
            plan: &run.plan.name,
            verdict,
            summary,
            duration_ms,
            url,
        })
        .expect("a message serializes"),
        NotifyFormat::Slack => {
            let counts = summary.describe();
            let text = format!("Run of plan {} {verdict}: {counts}. <{url}|Open the run>", run.plan.name);
            serde_json::to_vec(&serde_json::json!({ "text": text })).expect("a message serializes")
        }
    }
}

/// The client webhooks are called with: it connects only where `to` admits
/// (names resolved through it), follows no redirect, waits
/// [`ATTEMPT_TIMEOUT`] at most.
fn client(to: &Destinations) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .use_preconfigured_tls((*ensemble_client::tls_config(None).expect("the public roots load")).clone())
        .dns_resolver(to.clone())
        .no_proxy()
        .timeout(ATTEMPT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// Calls the webhooks of `run` (finished and stored) that want to hear of
/// it, retrying each until it answers 2xx or runs out of attempts; stops
/// early on `stop`.
pub async fn deliver(
    store: Store,
    run: RunMeta,
    secret: String,
    public_url: String,
    to: Destinations,
    stop: CancellationToken,
) {
    let verdict = verdict(run.state);
    let http = match client(&to) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("cannot set up webhook calls: {e}");
            return;
        }
    };
    // Refused destinations are recorded first, before any call is made:
    // one record each, no retries.
    let mut allowed = Vec::new();
    for n in run.plan.notify.iter().filter(|n| wants(n, verdict)) {
        let Some(why) = to.refuses(&n.url) else {
            allowed.push(n);
            continue;
        };
        let delivery = Delivery {
            url: n.url.clone(),
            attempt: 1,
            at_us: now_us(),
            status: None,
            error: Some(why),
            delivered: false,
        };
        let id = run.id.clone();
        if let Err(e) = store.call(move |s| s.put_delivery(&id, &delivery)).await {
            tracing::warn!(run = %run.id, "cannot record a webhook delivery: {e:#}");
        }
    }
    let calls = allowed.into_iter().map(|n| {
        let (http, store, run, secret, stop) = (http.clone(), store.clone(), &run, &secret, stop.clone());
        let body = body(n, run, &public_url);
        async move {
            let mut backoff = Duration::from_secs(1);
            for attempt in 1..=ATTEMPTS {
                let sent = http
                    .post(&n.url)
                    .header("content-type", "application/json")
                    .header(SIGNATURE_HEADER, signature(secret, &body))
                    .header("user-agent", concat!("ensemble/", env!("CARGO_PKG_VERSION")))
                    .body(body.clone())
                    .send()
                    .await;
                let (status, error) = match &sent {
                    Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), None),
                    Ok(r) => (Some(r.status().as_u16()), Some(format!("the receiver answered {}", r.status()))),
                    // What went wrong, not how: a refused connection and a
                    // timeout read the same to whoever reads the deliveries.
                    Err(e) if is_refusal(e) => (None, Some(refusal(&host_of(&n.url)))),
                    Err(_) => (None, Some("no answer (the receiver could not be reached)".into())),
                };
                let delivered = error.is_none();
                let delivery =
                    Delivery { url: n.url.clone(), attempt, at_us: now_us(), status, error: error.clone(), delivered };
                let (id, record) = (run.id.clone(), delivery.clone());
                if let Err(e) = store.call(move |s| s.put_delivery(&id, &record)).await {
                    tracing::warn!(run = %run.id, "cannot record a webhook delivery: {e:#}");
                }
                if delivered {
                    tracing::info!(run = %run.id, url = %n.url, attempt, "webhook delivered");
                    return;
                }
                if sent.as_ref().err().is_some_and(is_refusal) {
                    return; // refused by policy: no retry changes that
                }
                tracing::warn!(run = %run.id, url = %n.url, attempt, "webhook not delivered: {}", error.unwrap_or_default());
                if attempt < ATTEMPTS {
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => return,
                    }
                    backoff *= 2;
                }
            }
        }
    });
    futures::future::join_all(calls).await;
}

/// Whether a call failed because [`Destinations`] refused its address.
fn is_refusal(e: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<Refused>().is_some() {
            return true;
        }
        source = s.source();
    }
    false
}

fn host_of(url: &str) -> String {
    reqwest::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_unless_allowed() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            assert!(internal_address(internal.parse().unwrap()), "{internal}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(!internal_address(public.parse().unwrap()), "{public}");
        }
        let none = Destinations::default();
        assert!(none.refuses("http://127.0.0.1:9/hook").unwrap().contains("--allow-webhook-to"));
        assert!(none.refuses("http://[::1]:9/hook").is_some());
        assert_eq!(none.refuses("https://hooks.example.com/x"), None, "names are checked as resolved");
        let loopback = Destinations::new(vec![HostPattern::Localhost]);
        assert_eq!(loopback.refuses("http://127.0.0.1:9/hook"), None);
        assert!(loopback.refuses("http://10.0.0.1/hook").is_some());
        assert!(Destinations::new(vec![HostPattern::Any]).admits("10.0.0.1".parse().unwrap()));
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_as_resolved() {
        use reqwest::dns::Resolve;
        let err = Destinations::default().resolve("localhost".parse().unwrap()).await.err().unwrap();
        assert!(err.to_string().contains("localhost is not a public address"), "{err}");
        let allowed = Destinations::new(vec![HostPattern::Localhost]);
        let addrs: Vec<SocketAddr> = allowed.resolve("localhost".parse().unwrap()).await.unwrap().collect();
        assert!(!addrs.is_empty());
        // Through a client: the call fails before any connection, as a refusal.
        let http = client(&Destinations::default()).unwrap();
        let err = http.post("http://localhost:1/hook").send().await.unwrap_err();
        assert!(is_refusal(&err), "{err:?}");
    }

    #[test]
    fn the_signature_is_the_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn failed_only_webhooks_hear_of_runs_that_did_not_pass() {
        let n = |on| Notify { url: "http://x".into(), on, format: NotifyFormat::Json };
        assert!(wants(&n(NotifyOn::Finished), Verdict::Passed));
        assert!(!wants(&n(NotifyOn::Failed), Verdict::Passed));
        assert!(wants(&n(NotifyOn::Failed), Verdict::Failed));
        assert!(wants(&n(NotifyOn::Failed), Verdict::Cancelled));
    }
}
