//! Webhooks: telling a plan's `notify` URLs that a run finished.
//!
//! Once a run's end is stored, each webhook whose `on` matches the run's
//! state gets one `POST`: Ensemble's JSON ([`Message`]) or a Slack-style
//! `{"text": …}`, signed with the server's webhook secret
//! (`X-Ensemble-Signature: sha256=HEX`, an HMAC-SHA256 of the exact body,
//! which the receiver recomputes to know the call is ours and unaltered).
//! A receiver that fails (no answer, or not 2xx) is tried again after 1, 2,
//! 4 and 8 s; every attempt is stored and listed by the API.

use std::time::Duration;

use ensemble_protocol::api::{Delivery, RunMeta, RunState};
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

/// Calls the webhooks of `run` (finished and stored) that want to hear of
/// it, retrying each until it answers 2xx or runs out of attempts; stops
/// early on `stop`.
pub async fn deliver(
    store: Store,
    run: RunMeta,
    secret: String,
    public_url: String,
    stop: CancellationToken,
) {
    let verdict = verdict(run.state);
    let http = match reqwest::Client::builder()
        .use_preconfigured_tls((*ensemble_client::tls_config(None).expect("the public roots load")).clone())
        .timeout(ATTEMPT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("cannot set up webhook calls: {e}");
            return;
        }
    };
    let calls = run.plan.notify.iter().filter(|n| wants(n, verdict)).map(|n| {
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
                    Err(e) => (None, Some(format!("no answer: {e}"))),
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

#[cfg(test)]
mod tests {
    use super::*;

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
