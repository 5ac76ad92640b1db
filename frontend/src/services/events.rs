//! A run's event stream over a WebSocket: `GET /api/events/{id}?from=SEQ`
//! (`routes::events`: the same stream as `/api/runs/{id}/events`, at a
//! prefix a dev proxy can route). The server replays from `from`, then sends
//! live events until the run ends.

use ensemble_protocol::Event;
use futures::StreamExt;
use futures::future::{AbortHandle, Abortable, Either, select};
use gloo_net::websocket::Message;
use gloo_net::websocket::futures::WebSocket;
use yew::Callback;

use super::Api;

/// How a stream ended.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEnd {
    /// The server closed it (after the run finished, or it went away).
    Closed,
    /// It could not be opened or broke.
    Failed(String),
}

/// Stops the stream when dropped.
#[derive(Debug)]
pub struct Watch(AbortHandle);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The WebSocket URL for a path on this page's server.
fn ws_url(path: &str) -> String {
    let loc = web_sys::window().map(|w| w.location());
    let host = loc.as_ref().and_then(|l| l.host().ok()).unwrap_or_default();
    let secure = loc.and_then(|l| l.protocol().ok()).is_some_and(|p| p == "https:");
    format!("{}://{host}{path}", if secure { "wss" } else { "ws" })
}

/// Events are handed on at most this often (a replay of thousands of
/// events re-renders the page a few times, not once per event)...
const FLUSH_MS: u32 = 60;
/// ...or when this many have arrived.
const MAX_BATCH: usize = 5_000;

/// Streams events from `from` on, in batches.
pub fn watch(
    api: &Api,
    run: &str,
    from: u64,
    on_events: Callback<Vec<Event>>,
    on_end: Callback<StreamEnd>,
) -> Watch {
    let (api, run) = (api.clone(), run.to_string());
    let (handle, registration) = AbortHandle::new_pair();
    let task = async move {
        let url = match api.events_path(&run, from).await {
            Ok(path) => ws_url(&path),
            Err(e) => return on_end.emit(StreamEnd::Failed(e.to_string())),
        };
        let mut socket = match WebSocket::open(&url) {
            Ok(s) => s,
            Err(e) => return on_end.emit(StreamEnd::Failed(e.to_string())),
        };
        let mut ended = false;
        while !ended {
            // Wait for one message, then gather what comes in the next FLUSH_MS.
            let Some(first) = socket.next().await else { break };
            let mut batch = vec![first];
            let mut deadline = gloo_timers::future::TimeoutFuture::new(FLUSH_MS);
            while batch.len() < MAX_BATCH {
                match select(socket.next(), &mut deadline).await {
                    Either::Left((Some(msg), _)) => batch.push(msg),
                    Either::Left((None, _)) => {
                        ended = true;
                        break;
                    }
                    Either::Right(_) => break,
                }
            }
            let mut events = Vec::with_capacity(batch.len());
            let mut failure = None;
            for msg in batch {
                match msg {
                    Ok(Message::Text(text)) => match serde_json::from_str::<Event>(&text) {
                        Ok(ev) => events.push(ev),
                        Err(e) => failure = Some(format!("an event the app cannot read: {e}")),
                    },
                    Ok(Message::Bytes(_)) => {}
                    Err(gloo_net::websocket::WebSocketError::ConnectionClose(_)) => ended = true,
                    Err(e) => failure = Some(e.to_string()),
                }
            }
            if !events.is_empty() {
                on_events.emit(events);
            }
            if let Some(f) = failure {
                return on_end.emit(StreamEnd::Failed(f));
            }
        }
        on_end.emit(StreamEnd::Closed);
    };
    wasm_bindgen_futures::spawn_local(async move {
        let _ = Abortable::new(task, registration).await;
    });
    Watch(handle)
}
