//! The machine side of the WebSocket: `GET /api/machines/join`.
//!
//! A machine sends `hello` first (with the token unless its Authorization
//! header carried it); the server answers `welcome` or `rejected` and closes.
//! Then both sides exchange one JSON message per text frame; a machine's
//! frame larger than one WebSocket message (256 KiB) comes in binary parts
//! (`wire::split_frame`), and room for all of it is taken from the intake
//! before its second part is read, so what machines can make the server
//! hold while frames are put together is bounded in total. The server
//! probes the machine's clock with pings — a burst at join, then periodically
//! — and keeps the lowest-round-trip estimate. A frame that is not a valid
//! message is logged with what was wrong and skipped; the link stays up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ensemble_protocol::PROTOCOL_VERSION;
use ensemble_protocol::wire::{Assembly, FromMachine, ToMachine, declared_length};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use warp::ws::{Message, WebSocket};

use crate::coordinator::Coordinator;
use crate::coordinator::intake::{Gate, Intake};
use crate::time::now_us;

/// A machine that does not take a message within this long is disconnected.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest hello accepted (it lists the shards a machine holds, 8,192
/// at most).
const MAX_HELLO: usize = 128 << 10;
/// The longest runner process id a hello may carry.
const MAX_INSTANCE: usize = 64;
/// How long a machine has to send every part of a split frame (64 MiB
/// at 1 MiB/s, with room): its room in the intake is not held longer.
const ASSEMBLY_TIME: Duration = Duration::from_secs(120);
/// Pings sent right after a machine joins, to estimate its clock quickly.
const JOIN_PINGS: u64 = 8;
/// How often the clock estimate is refreshed afterwards.
const PING_EVERY: Duration = Duration::from_secs(5);

fn text(msg: &ToMachine) -> Message {
    Message::text(serde_json::to_string(msg).expect("wire messages serialize"))
}

/// A split frame being put together, in the room its intake gave it.
struct Assembling {
    frame: Assembly,
    intake: Intake,
    deadline: tokio::time::Instant,
}

/// Fires at `deadline`; never without one.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits for room for `bytes` a machine sent; `None` when the coordinator
/// stops first. Waiting for the store is not the machine's silence.
async fn admit(
    gate: &Gate,
    bytes: usize,
    stop: &tokio_util::sync::CancellationToken,
    core: &Coordinator,
    name: &str,
    tx: &mut futures::stream::SplitSink<WebSocket, Message>,
) -> Option<Intake> {
    let admit = gate.admit(bytes);
    tokio::pin!(admit);
    loop {
        tokio::select! {
            intake = &mut admit => return Some(intake),
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                core.on_message(name, FromMachine::Heartbeat, None);
                // The machine hears from a coordinator that waits for its
                // store too: the link is slow, not silent.
                if !matches!(tokio::time::timeout(SEND_TIMEOUT, tx.send(Message::ping(Vec::new()))).await, Ok(Ok(()))) {
                    return None;
                }
            }
        }
    }
}

/// Handles one frame a machine sent, in the room `intake` holds for it.
fn take(core: &Coordinator, name: &str, body: &str, intake: Intake) {
    match serde_json::from_str::<FromMachine>(body) {
        Ok(FromMachine::Pong { coordinator_us, machine_us, .. }) => {
            core.clock_sample(name, coordinator_us, machine_us, now_us());
            core.on_message(name, FromMachine::Heartbeat, None);
        }
        Ok(msg) => core.on_message(name, msg, Some(intake)),
        Err(e) => {
            crate::throttled!(warn, 30, machine = ?name, "skipping a frame that is not a valid message: {e}: {:?}",
            body.chars().take(200).collect::<String>())
        }
    }
}

/// Serves one machine's connection until it closes or the coordinator stops.
pub async fn serve_machine(socket: WebSocket, peer: Option<SocketAddr>, core: Arc<Coordinator>) {
    let (mut tx, mut rx) = socket.split();
    let reject = |reason: String, retry: bool| ToMachine::Rejected { reason, retry };

    // The hello, small and within a few seconds. (The token was checked
    // before the upgrade.)
    let hello = tokio::time::timeout(Duration::from_secs(10), rx.next()).await;
    let Ok(Some(Ok(first))) = hello else {
        crate::throttled!(warn, 30, ?peer, "a machine connected but sent no hello");
        return;
    };
    if first.as_bytes().len() > MAX_HELLO {
        let why = format!("the hello is over the limit of {MAX_HELLO} bytes");
        crate::throttled!(warn, 30, ?peer, "{why}");
        let _ = tx.send(text(&reject(why, false))).await;
        return;
    }
    let hello = first.to_str().ok().map(serde_json::from_str::<FromMachine>);
    let (protocol, info, secret, holding, instance) = match hello {
        Some(Ok(FromMachine::Hello { protocol, machine, secret, holding, instance, .. })) => {
            (protocol, machine, secret, holding, instance)
        }
        other => {
            let why = match other {
                Some(Err(e)) => format!("the first frame is not a hello message: {e}"),
                _ => "the first frame must be a hello message (text)".to_string(),
            };
            crate::throttled!(warn, 30, ?peer, "{why}");
            let _ = tx.send(text(&reject(why, false))).await;
            return;
        }
    };
    if protocol != PROTOCOL_VERSION {
        let why =
            format!("protocol version {protocol} is not supported; this server speaks {PROTOCOL_VERSION}");
        let _ = tx.send(text(&reject(why, false))).await;
        return;
    }
    if let Some(long) = instance.as_ref().filter(|i| i.len() > MAX_INSTANCE) {
        let why =
            format!("the hello's instance is {} bytes long, over the limit of {MAX_INSTANCE}", long.len());
        crate::throttled!(warn, 30, ?peer, "{why}");
        let _ = tx.send(text(&reject(why, false))).await;
        return;
    }
    if let Err(why) = info.check() {
        crate::throttled!(warn, 30, ?peer, "refused a machine: {why}");
        let _ = tx.send(text(&reject(why, false))).await;
        return;
    }
    let machine_secret = match core.admit(&info.name, secret).await {
        Ok(fresh) => fresh,
        Err((why, retry)) => {
            crate::throttled!(warn, 30, ?peer, machine = ?info.name, "refused a machine: {why}");
            let _ = tx.send(text(&reject(why, retry))).await;
            return;
        }
    };
    let name = info.name.clone();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    let generation = match core.connect(info, out_tx, false, holding.as_ref(), instance.as_deref()) {
        Ok(g) => g,
        Err(why) => {
            // Its old connection may still be closing: the machine retries.
            crate::throttled!(warn, 30, ?peer, machine = ?name, "{why}");
            let _ = tx.send(text(&reject(why, true))).await;
            return;
        }
    };
    crate::throttled!(info, 600, ?peer, machine = ?name, "machine joined");
    // What is queued for this machine counts until written here.
    let queued = core.count_queue(&name, generation).unwrap_or_default();
    let took = |msg: ToMachine| {
        use std::sync::atomic::Ordering::SeqCst;
        let size = crate::coordinator::machines::queued_bytes(&msg);
        let _ = queued.fetch_update(SeqCst, SeqCst, |q| Some(q.saturating_sub(size)));
        text(&msg)
    };
    let welcome = ToMachine::Welcome {
        protocol: PROTOCOL_VERSION,
        coordinator: core.config.name.clone(),
        machine_secret,
        heartbeat_timeout_ms: Some(
            u64::try_from(core.config.heartbeat_timeout.as_millis()).unwrap_or(u64::MAX),
        ),
    };
    if tx.send(text(&welcome)).await.is_err() {
        core.disconnected(&name, generation);
        return;
    }
    tokio::spawn({
        let (core, name) = (core.clone(), name.clone());
        async move { core.precompile_machine(&name).await }
    });

    let gate = core.intake_gate();
    let mut assembling: Option<Assembling> = None;
    let mut ping_id = 0u64;
    let mut pings = tokio::time::interval(Duration::from_millis(20));
    let stop = core.stopping();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = pings.tick() => {
                ping_id += 1;
                if ping_id == JOIN_PINGS {
                    // Often enough that a machine hearing nothing for the
                    // heartbeat timeout knows the link is silent.
                    let every = PING_EVERY.min(core.config.heartbeat_timeout / 3).max(Duration::from_millis(100));
                    pings = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                }
                let ping = text(&ToMachine::Ping { id: ping_id, coordinator_us: now_us() });
                if !matches!(tokio::time::timeout(SEND_TIMEOUT, tx.send(ping)).await, Ok(Ok(()))) {
                    break;
                }
            }
            out = out_rx.recv() => match out {
                // A machine that does not read is let go (it reconnects).
                Some(msg) => {
                    // What else is queued goes in the same write.
                    let burst = crate::burst::write(&mut tx, [took(msg)], || out_rx.try_recv().ok().map(|m| [took(m)]));
                    if !matches!(tokio::time::timeout(SEND_TIMEOUT, burst).await, Ok(Ok(()))) {
                        break
                    }
                }
                // The registry dropped this connection (kicked, lost or replaced).
                None => break,
            },
            _ = until(assembling.as_ref().map(|a| a.deadline)) => {
                crate::throttled!(warn, 30, machine = ?name,
                    "a split frame did not arrive whole within {} s; disconnecting", ASSEMBLY_TIME.as_secs());
                break;
            }
            incoming = rx.next() => match incoming {
                Some(Ok(frame)) if frame.is_text() => {
                    // Nothing more is read from the machine until what it
                    // said before is stored (see `coordinator::intake`).
                    let Some(intake) = admit(&gate, frame.as_bytes().len(), &stop, &core, &name, &mut tx).await else { break };
                    let Ok(body) = frame.to_str() else { continue };
                    take(&core, &name, body, intake);
                }
                // A frame larger than one message, in parts: room for all
                // of it is taken before the rest is read.
                Some(Ok(frame)) if frame.is_binary() => {
                    // A machine sending a large frame slowly is not silent.
                    core.on_message(&name, FromMachine::Heartbeat, None);
                    let part = frame.as_bytes();
                    let whole = match assembling.as_mut() {
                        Some(a) => a.frame.push(part),
                        None => match declared_length(part) {
                            Ok(total) => {
                                let Some(intake) = admit(&gate, total, &stop, &core, &name, &mut tx).await else { break };
                                let frame = Assembly::start(part).expect("its length was checked");
                                let deadline = tokio::time::Instant::now() + ASSEMBLY_TIME;
                                assembling = Some(Assembling { frame, intake, deadline });
                                Ok(None)
                            }
                            Err(why) => Err(why),
                        },
                    };
                    match whole {
                        Ok(None) => {}
                        Ok(Some(body)) => {
                            let done = assembling.take().expect("a frame was being put together");
                            take(&core, &name, &body, done.intake);
                        }
                        Err(why) => {
                            crate::throttled!(warn, 30, machine = ?name, "disconnecting: {why}");
                            break;
                        }
                    }
                }
                Some(Ok(frame)) if frame.is_close() => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    crate::throttled!(info, 120, machine = ?name, "connection error: {e}");
                    break;
                }
                None => break,
            },
        }
    }
    core.disconnected(&name, generation);
    // A machine that does not read is just dropped.
    let _ = tokio::time::timeout(Duration::from_secs(5), tx.close()).await;
    crate::throttled!(info, 600, machine = ?name, "machine disconnected");
}
