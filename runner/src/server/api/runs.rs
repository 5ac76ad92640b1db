//! `/api/runs`: start, list, read and cancel runs, and the run event
//! WebSocket (`/api/runs/{id}/events?from=SEQ`, also at `/api/events/{id}`),
//! which replays the stored events from `SEQ` and then follows live.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ensemble_protocol::api::CancelRequest;
use ensemble_protocol::api::RunsQuery;
use ensemble_protocol::api::{ApiError, ErrorKind, EventsQuery, RunRequest, Ticket, routes};
use ensemble_protocol::{CancelReason, EventKind};
use futures::{SinkExt, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use warp::filters::BoxedFilter;
use warp::ws::{Message, WebSocket};
use warp::{Filter, Rejection, Reply};

use super::{BodyRoom, MAX_PLAN_BYTES, authorized, body, small_body};
use crate::coordinator::Coordinator;
use crate::report::store::{Live, Stored};
use crate::server::error::{fail, json, json_with, reject};
use crate::server::guard::{JSON, content_type};
use crate::server::route::{at, at1, at2};
use warp::http::Method;

/// The largest message a watcher of a run's events may send (it has
/// nothing to say; pings and closes are far smaller).
const MAX_WATCHER_MESSAGE: usize = 4 << 10;

pub fn routes(core: &Arc<Coordinator>) -> BoxedFilter<(warp::reply::Response,)> {
    let list = at(Method::GET, "/api/runs").and(authorized(core)).and(warp::query::<RunsQuery>()).and_then(
        |core: Arc<Coordinator>, query: RunsQuery| async move {
            core.runs(query).await.map(|r| json(&r)).map_err(fail)
        },
    );
    let start = at(Method::POST, "/api/runs")
        .and(authorized(core))
        .and(content_type(JSON))
        .and(body(MAX_PLAN_BYTES, &super::PLANS))
        .and_then(|core: Arc<Coordinator>, body: Bytes, room: BodyRoom| async move {
            let _held = room;
            let req: RunRequest = serde_json::from_slice(&body).map_err(|e| {
                reject(ErrorKind::BadRequest, format!("the run request is not valid JSON: {e}"))
            })?;
            core.start_run(req).await.map(|r| json_with(&r, 201)).map_err(fail)
        });
    let get =
        at1(&[Method::GET], "/api/runs/{id}").and(authorized(core)).and_then(
            |id: String, core: Arc<Coordinator>| async move {
                core.run(&id).await.map(|r| json(&r)).map_err(fail)
            },
        );
    let cancel = at1(&[Method::POST], "/api/runs/{id}/cancel")
        .and(authorized(core))
        .and(small_body(CANCEL_BODY))
        .and_then(|id: String, core: Arc<Coordinator>, body: Bytes| async move {
            let reason = cancel_reason(&body).map_err(|e| reject(ErrorKind::BadRequest, e))?;
            core.cancel_run(&id, reason).await.map(|r| json(&r)).map_err(fail)
        });
    // The same stream also under `/api/events/{id}`, a prefix of WebSockets
    // only, which a dev proxy (Trunk's) can route apart from the REST API.
    let under_runs = at1(&[Method::GET], "/api/runs/{id}/events");
    let under_events = at1(&[Method::GET], "/api/events/{id}");
    let events = under_runs
        .or(under_events)
        .unify()
        .and(warp::ws())
        .and(crate::server::auth::required_or_ticket(core.clone()))
        .and(warp::any().map({
            let core = core.clone();
            move || core.clone()
        }))
        .and(warp::query::<EventsQuery>())
        .and(crate::listen::connection())
        .and_then(
            |id: String, ws: warp::ws::Ws, core: Arc<Coordinator>, query: EventsQuery, held| async move {
                core.run(&id).await.map_err(fail)?;
                let from = query.from.unwrap_or(1);
                let stop = core.stopping();
                Ok::<_, Rejection>(
                    // A watcher sends nothing but control frames: anything
                    // larger than a small message ends its connection.
                    ws.max_message_size(MAX_WATCHER_MESSAGE)
                        .max_frame_size(MAX_WATCHER_MESSAGE)
                        .on_upgrade(move |socket| async move {
                            let _slot: Option<crate::listen::Held> = held;
                            tokio::select! {
                                _ = watch_run(socket, core, id, from) => {}
                                _ = stop.cancelled() => {}
                            }
                        })
                        .into_response(),
                )
            },
        );
    let ticket = at(Method::POST, routes::TICKETS).and(authorized(core)).and_then(
        |core: Arc<Coordinator>| async move {
            let ticket = core.tickets.issue().map_err(|e| reject(ErrorKind::Internal, format!("{e:#}")))?;
            let expires_in_ms = crate::secret::TICKET_LIFE.as_millis() as u64;
            Ok::<_, Rejection>(json_with(&Ticket { ticket, expires_in_ms }, 201))
        },
    );
    let rerun = at1(&[Method::GET], "/api/runs/{id}/rerun").and(authorized(core)).and_then(
        |id: String, core: Arc<Coordinator>| async move {
            core.rerun_preview(&id).await.map(|p| json(&p)).map_err(fail)
        },
    );
    let deliveries = at1(&[Method::GET], "/api/runs/{id}/deliveries").and(authorized(core)).and_then(
        |id: String, core: Arc<Coordinator>| async move {
            core.deliveries(&id).await.map(|d| json(&d)).map_err(fail)
        },
    );
    let attachment = at2(Method::GET, "/api/runs/{id}/attachments/{sha256}").and(authorized(core)).and_then(
        |id: String, sha: String, core: Arc<Coordinator>| async move {
            let (name, path) = core.attachment(&id, &sha).await.map_err(fail)?;
            Ok::<_, Rejection>(attachment_reply(&name, super::file_reply(path).await?))
        },
    );
    events
        .or(list)
        .unify()
        .or(start)
        .unify()
        .or(cancel)
        .unify()
        .or(get)
        .unify()
        .or(attachment)
        .unify()
        .or(deliveries)
        .unify()
        .or(ticket)
        .unify()
        .or(rerun)
        .unify()
        .boxed()
}

/// An attachment's bytes as a download: shown inline by a browser only for
/// the few kinds it shows safely (text, JSON, raster images), never sniffed,
/// and sandboxed even then — the bytes come from a suite, which is hostile.
fn attachment_reply(name: &str, mut reply: warp::reply::Response) -> warp::reply::Response {
    use warp::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE, HeaderValue};
    let kind = ensemble_protocol::attachment::content_type(name);
    let ascii: String =
        name.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '_' }).collect();
    let disposition = format!(
        "attachment; filename=\"{}\"; filename*=UTF-8''{}",
        ascii.replace('"', "_"),
        ensemble_protocol::api::encode(name)
    );
    let headers = reply.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(CONTENT_DISPOSITION, v);
    }
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("content-security-policy", HeaderValue::from_static("sandbox; default-src 'none'"));
    reply
}

/// Most events read from the store at once when replaying.
const REPLAY_PAGE: u32 = 1000;
/// Most bytes of events read at once when replaying (but always one event).
const PAGE_BYTES: usize = 4 << 20;
/// What all replays together may hold, in KiB: the pages read and the
/// frames being written. (Live events are small; larger ones reach watchers
/// through a replay.) A watcher that does not read keeps its share until it
/// is dropped; meanwhile others wait, so memory stays bounded however many
/// watchers there are.
const REPLAY_BUDGET_KIB: usize = 64 << 10;
/// The most bytes a cancel's body may have (who and why).
const CANCEL_BODY: usize = 8 << 10;

/// Who cancels and why, from a cancel's body (may be empty: nobody said).
fn cancel_reason(body: &[u8]) -> Result<CancelReason, String> {
    let req: CancelRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CancelRequest::default()
    } else {
        serde_json::from_slice(body).map_err(|e| format!("the cancel's body is not valid JSON: {e}"))?
    };
    req.check()?;
    let said = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    Ok(CancelReason::User { by: said(req.by), why: said(req.why) })
}

/// How often a watcher of a quiet run is pinged.
const PING_EVERY: Duration = Duration::from_secs(20);
/// A watcher that does not take an event within this long is dropped (it
/// resumes from where it was when it comes back).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// ... or within this long, when it holds room of the replay budget that
/// others wait for: under memory pressure the slowest go first.
const CONTENDED_SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// The replay budget: room and how many wait for it.
struct Budget {
    room: tokio::sync::Semaphore,
    waiting: std::sync::atomic::AtomicUsize,
}

static BUDGET: Budget = Budget {
    room: tokio::sync::Semaphore::const_new(REPLAY_BUDGET_KIB),
    waiting: std::sync::atomic::AtomicUsize::new(0),
};

/// Counts a waiter while it lives.
struct Waiting;

impl Waiting {
    fn new() -> Waiting {
        BUDGET.waiting.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        BUDGET.waiting.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Budget {
    /// Room for `bytes` (all of the budget at most), once there is.
    async fn take(&'static self, bytes: usize) -> tokio::sync::SemaphorePermit<'static> {
        let kib = bytes.div_ceil(1024).clamp(1, REPLAY_BUDGET_KIB) as u32;
        let _waiting = Waiting::new();
        self.room.acquire_many(kib).await.expect("never closed")
    }

    fn contended(&self) -> bool {
        self.waiting.load(std::sync::atomic::Ordering::SeqCst) > 0
    }
}

/// Closes a watcher's socket; one that does not read is just dropped.
async fn close(mut tx: futures::stream::SplitSink<WebSocket, Message>) {
    let _ = tokio::time::timeout(Duration::from_secs(5), tx.close()).await;
}

/// Within [`SEND_TIMEOUT`], or `Err`.
async fn timely<E>(io: impl std::future::Future<Output = Result<(), E>>) -> Result<(), ()> {
    match tokio::time::timeout(SEND_TIMEOUT, io).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Sends live event `first` and those queued behind it in one write (at
/// most [`BURST`](crate::burst::BURST)); one the live stream could not pass on (too large, or
/// this watcher fell behind) is caught up from the store. True when the
/// run finished.
async fn send_live(
    tx: &mut futures::stream::SplitSink<WebSocket, Message>,
    core: &Coordinator,
    run: &str,
    live: &mut tokio::sync::broadcast::Receiver<Live>,
    next: &mut u64,
    first: Arc<Stored>,
) -> Result<bool, ()> {
    use tokio::sync::broadcast::error::TryRecvError;
    let mut pending = Some(first);
    let mut fed = 0;
    let caught_up = loop {
        if let Some(ev) = pending.take() {
            *next = ev.event.seq + 1;
            timely(tx.feed(Message::text(ev.json.clone()))).await?;
            fed += 1;
            if matches!(ev.event.kind, EventKind::RunFinished { .. }) {
                timely(tx.flush()).await?;
                return Ok(true);
            }
        }
        if fed >= crate::burst::BURST {
            break false;
        }
        match live.try_recv() {
            Ok(Live::Event(ev)) if ev.event.seq >= *next => pending = Some(ev),
            Ok(Live::Event(_)) => {}
            Ok(Live::Stored(_)) | Err(TryRecvError::Lagged(_)) | Err(TryRecvError::Closed) => break true,
            Err(TryRecvError::Empty) => break false,
        }
    };
    timely(tx.flush()).await?;
    if caught_up { replay(tx, core, run, next).await } else { Ok(false) }
}

/// `io` (a page's writes) while holding room of the replay budget: given
/// up after [`SEND_TIMEOUT`], or sooner when others wait for the room
/// ([`CONTENDED_SEND_TIMEOUT`]).
async fn holding<E>(io: impl std::future::Future<Output = Result<(), E>>) -> Result<(), ()> {
    let started = tokio::time::Instant::now();
    tokio::pin!(io);
    let mut check = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            sent = &mut io => return sent.map_err(drop),
            _ = check.tick() => {
                let waited = started.elapsed();
                if waited >= SEND_TIMEOUT || (waited >= CONTENDED_SEND_TIMEOUT && BUDGET.contended()) {
                    return Err(());
                }
            }
        }
    }
}

/// Whether a stored event (its JSON) is the run's end: read from its tag
/// alone, the rest skipped unparsed.
fn ends_run(json: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Tag<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<&'a str>,
    }
    serde_json::from_str::<Tag>(json).is_ok_and(|t| t.kind == Some("run-finished"))
}

/// Sends the stored events from `*next` on, a page at a time, each page in
/// one write of the JSON as stored; true when `run-finished` was among
/// them.
async fn replay(
    tx: &mut futures::stream::SplitSink<WebSocket, Message>,
    core: &Coordinator,
    run: &str,
    next: &mut u64,
) -> Result<bool, ()> {
    loop {
        let failed = |e: ApiError| tracing::warn!("replay failed: {}", e.error.message);
        let sizes = core.event_sizes(run, *next, REPLAY_PAGE).await.map_err(failed)?;
        if sizes.is_empty() {
            return Ok(false);
        }
        // As many as fit in a page, at least one; room for the page and the
        // frames being written.
        let (mut take, mut bytes) = (0u32, 0usize);
        for (_, size) in &sizes {
            if take > 0 && bytes + size > PAGE_BYTES {
                break;
            }
            (take, bytes) = (take + 1, bytes + size);
        }
        let _room = BUDGET.take(2 * bytes).await;
        let page = core.event_bodies(run, *next, take).await.map_err(failed)?;
        let mut finished = false;
        holding(async {
            for (seq, json) in page {
                *next = seq + 1;
                finished = ends_run(&json);
                tx.feed(Message::text(json)).await?;
                if finished {
                    break;
                }
            }
            tx.flush().await
        })
        .await?;
        if finished {
            return Ok(true);
        }
    }
}

/// Streams a run's events: replay from `from`, then live until it finishes.
/// Live events are stored before they are sent, so subscribing first and
/// replaying second leaves no gap.
/// Counts a watcher while it lives.
struct Watching;

impl Watching {
    fn new() -> Watching {
        crate::metrics::metrics().watchers.inc();
        Watching
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        crate::metrics::metrics().watchers.dec();
    }
}

async fn watch_run(socket: WebSocket, core: Arc<Coordinator>, run: String, from: u64) {
    let _watching = Watching::new();
    let (mut tx, mut rx) = socket.split();
    let mut live = core.subscribe_run(&run);
    let mut next = from.max(1);
    match replay(&mut tx, &core, &run, &mut next).await {
        Ok(true) | Err(()) => {
            close(tx).await;
            return;
        }
        Ok(false) => {}
    }
    let Some(live_rx) = live.as_mut() else {
        // Not running any more: everything is stored; send what is left.
        let _ = replay(&mut tx, &core, &run, &mut next).await;
        close(tx).await;
        return;
    };
    // A quiet run still pings its watchers, so a dead one is noticed.
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        tokio::select! {
            _ = ping.tick() => {
                if !matches!(tokio::time::timeout(SEND_TIMEOUT, tx.send(Message::ping(Vec::new()))).await, Ok(Ok(()))) {
                    break;
                }
            }
            ev = live_rx.recv() => match ev {
                Ok(ev) if ev.seq() < next => {}
                // Too large to pass around: it is in the store.
                Ok(Live::Stored(_)) => match replay(&mut tx, &core, &run, &mut next).await {
                    Ok(false) => {}
                    _ => break,
                },
                Ok(Live::Event(ev)) => match send_live(&mut tx, &core, &run, live_rx, &mut next, ev).await {
                    Ok(false) => {}
                    _ => break,
                },
                // Fell behind the live stream: catch up from the store.
                Err(RecvError::Lagged(_)) => match replay(&mut tx, &core, &run, &mut next).await {
                    Ok(false) => {}
                    _ => break,
                },
                Err(RecvError::Closed) => {
                    let _ = replay(&mut tx, &core, &run, &mut next).await;
                    break;
                }
            },
            msg = rx.next() => if msg.is_none_or(|m| m.is_err()) { return },
        }
    }
    close(tx).await;
}

#[cfg(test)]
mod tests {
    use super::ends_run;
    use ensemble_protocol::event::ShardRef;
    use ensemble_protocol::{Event, EventKind, Summary, Verdict};

    #[test]
    fn the_run_end_is_told_by_its_tag_alone() {
        let event = |kind| {
            serde_json::to_string(&Event { run: "r".into(), seq: 1, at_us: 0, machine_at_us: None, kind })
                .unwrap()
        };
        let end = EventKind::RunFinished {
            summary: Summary::default(),
            duration_ms: 1,
            shard_errors: 0,
            cancelled: None,
            verdict: Verdict::Passed,
        };
        assert!(ends_run(&event(end)));
        let shard =
            ShardRef { shard: 1, machine: "m".into(), role: "r".into(), suite: "s".into(), instance: 0 };
        // The words inside a message are text, not the event's tag.
        let log = EventKind::Log {
            shard,
            test: "t".into(),
            level: "info".into(),
            message: r#"{"type":"run-finished"}"#.into(),
        };
        assert!(!ends_run(&event(log)));
        assert!(!ends_run("not json"));
    }
}
