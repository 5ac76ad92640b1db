//! The store and the live broadcast, as one reporter: [`RunRecorder`].
//!
//! The dispatcher hands the recorder each event; a writer task
//! ([`write_events`]) commits them to the store in batches, one transaction
//! per batch, and only then fans them out to live watchers. So whatever a
//! watcher (the browser, `ensemble run --server`) sees is already on disk,
//! and a watcher that subscribes, then replays the store, misses nothing.
//! `run-finished` is committed in the same transaction as the run's final
//! state, which comes from the event's verdict.

use ensemble_protocol::api::{RunMeta, RunState};
use ensemble_protocol::{Event, EventKind, Summary};
use tokio::sync::{broadcast, mpsc, watch};

use super::Reporter;
use crate::store::Store;
use crate::time::now_us;

/// What live watchers get once it is stored.
#[derive(Clone, Debug)]
pub enum Live {
    /// Shared by every watcher.
    Event(std::sync::Arc<Stored>),
    /// An event too large to keep for every watcher (it may wait in the
    /// broadcast for a slow one): only its number; read it from the store.
    Stored(u64),
}

/// An event as stored: the event, and its JSON (serialized once, for the
/// store, and sent as it is to every watcher).
#[derive(Debug)]
pub struct Stored {
    pub event: Event,
    pub json: String,
}

impl Live {
    pub fn seq(&self) -> u64 {
        match self {
            Live::Event(e) => e.event.seq,
            Live::Stored(seq) => *seq,
        }
    }
}

/// Events larger than this (as JSON) go to live watchers as [`Live::Stored`].
pub const LIVE_MAX_BYTES: usize = 16 << 10;

/// What the writer commits.
#[derive(Debug)]
pub enum Record {
    Event(Event),
    /// An event with the run's new state (queued, running, or its final
    /// state with its summary), in one transaction.
    WithState(Event, Box<RunMeta>),
}

/// Records a run: its events, then its final state.
pub struct RunRecorder {
    tx: mpsc::UnboundedSender<Record>,
    meta: RunMeta,
}

impl RunRecorder {
    /// A recorder of the run `meta` (stored as running beforehand), feeding
    /// the writer behind `tx`.
    pub fn new(meta: RunMeta, tx: mpsc::UnboundedSender<Record>) -> RunRecorder {
        RunRecorder { tx, meta }
    }
}

impl Reporter for RunRecorder {
    fn event(&mut self, event: &Event) -> anyhow::Result<()> {
        let record = match &event.kind {
            // A run that waits for its machines is queued until it starts.
            EventKind::RunQueued { .. } if self.meta.state != RunState::Queued => {
                self.meta.state = RunState::Queued;
                Record::WithState(event.clone(), Box::new(self.meta.clone()))
            }
            EventKind::RunStarted { .. } if self.meta.state == RunState::Queued => {
                self.meta.state = RunState::Running;
                Record::WithState(event.clone(), Box::new(self.meta.clone()))
            }
            EventKind::RunFinished { summary, verdict, .. } => {
                let mut meta = self.meta.clone();
                meta.state = RunState::from(*verdict);
                meta.summary = Some(*summary);
                meta.finished_us = Some(now_us());
                Record::WithState(event.clone(), Box::new(meta))
            }
            _ => Record::Event(event.clone()),
        };
        self.tx.send(record).map_err(|_| anyhow::anyhow!("the store writer stopped"))
    }
}

/// Most records committed in one transaction.
const BATCH: usize = 4096;

/// Commits records in batches, then says how far it got (`committed`, the
/// last seq on disk) and broadcasts their events; returns when every sender
/// is gone and everything is written.
///
/// A batch the store cannot take for want of room is stored one record at
/// a time, as far as it fits. A record the store cannot take (its disk is
/// full, or fails) fails the run: `fail` is told why (once; the run stops
/// its machines), what was not stored is dropped — none of it was
/// acknowledged, so nothing acknowledged is lost — and only the run's end
/// is kept, numbered after the last event stored and saying the store
/// failed. It is tried again every second until the store takes it (an
/// operator made room) or `stop` fires.
pub async fn write_events(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<Record>,
    live: broadcast::Sender<Live>,
    committed: watch::Sender<u64>,
    fail: impl Fn(String) + Send,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut stored = *committed.borrow();
    // Why the store could not record this run, and what it holds of it.
    let mut failed: Option<(String, Summary)> = None;
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut pending: std::collections::VecDeque<Rec> = batch
            .drain(..)
            .map(|r| match r {
                Record::Event(e) => (e, None),
                Record::WithState(e, meta) => (e, Some(meta)),
            })
            .collect();
        let mut size = BATCH;
        while !pending.is_empty() {
            if let Some((why, summary)) = &failed {
                only_the_end(&mut pending, stored, why, summary);
                if pending.is_empty() {
                    break;
                }
            }
            let recs: Vec<Rec> = pending.drain(..size.min(pending.len())).collect();
            let tried = recs.len();
            let (back, result) = commit(&store, recs).await;
            match result {
                Ok(bodies) => publish(back, bodies, &live, &committed, &mut stored),
                Err(e) => {
                    store.note(&e);
                    for r in back.into_iter().rev() {
                        pending.push_front(r);
                    }
                    if tried > 1 {
                        // Near full (or one record the store refuses): what
                        // fits is stored, one by one.
                        size = 1;
                        continue;
                    }
                    if failed.is_none() {
                        let why = format!("{e:#}");
                        tracing::error!("could not store an event; the run fails: {why}");
                        fail(why.clone());
                        // What the run's end counts: the tests stored.
                        let run = pending.front().map(|(e, _)| e.run.clone()).unwrap_or_default();
                        let summary = store.call(move |s| s.stored_summary(&run)).await.unwrap_or_default();
                        failed = Some((why, summary));
                        continue;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                        _ = stop.cancelled() => return,
                    }
                }
            }
        }
    }
}

/// A record as the writer keeps it: the event, with the run's new state.
type Rec = (Event, Option<Box<RunMeta>>);

/// Writes `recs` in one transaction; gives them back with the outcome.
async fn commit(store: &Store, recs: Vec<Rec>) -> (Vec<Rec>, anyhow::Result<Vec<String>>) {
    let written = store
        .call(move |s| {
            let (mut events, metas): (Vec<Event>, Vec<Option<Box<RunMeta>>>) = recs.into_iter().unzip();
            let runs: Vec<RunMeta> = metas.iter().flatten().map(|m| (**m).clone()).collect();
            let result = s.write_batch(&mut events, &runs);
            Ok((events.into_iter().zip(metas).collect(), result))
        })
        .await;
    written.unwrap_or_else(|e| (Vec::new(), Err(e)))
}

/// Keeps of `pending` only the run's end, numbered after the last stored
/// event, saying the store failed (`why`) and counting the tests stored
/// (`summary`).
fn only_the_end(pending: &mut std::collections::VecDeque<Rec>, stored: u64, why: &str, summary: &Summary) {
    use ensemble_protocol::{CancelReason, Verdict};
    pending.retain(|(e, _)| matches!(e.kind, EventKind::RunFinished { .. }));
    pending.truncate(1);
    for (e, meta) in pending.iter_mut() {
        e.seq = stored + 1;
        if let EventKind::RunFinished { cancelled, verdict, summary: counted, .. } = &mut e.kind {
            if !matches!(cancelled, Some(CancelReason::StoreFailed { .. })) {
                *cancelled = Some(CancelReason::StoreFailed { message: why.to_string() });
            }
            *verdict = Verdict::Failed;
            *counted = *summary;
        }
        if let Some(meta) = meta {
            meta.state = RunState::Failed;
            meta.summary = Some(*summary);
        }
    }
}

/// Says how far the store got, and sends what it took to live watchers.
fn publish(
    recs: Vec<Rec>,
    bodies: Vec<String>,
    live: &broadcast::Sender<Live>,
    committed: &watch::Sender<u64>,
    stored: &mut u64,
) {
    let events: Vec<Event> = recs.into_iter().map(|(e, _)| e).collect();
    if let Some(last) = events.last() {
        committed.send_replace(last.seq);
        *stored = last.seq;
    }
    crate::metrics::metrics().events_stored.inc_by(events.len() as u64);
    for (e, json) in events.into_iter().zip(bodies) {
        if matches!(e.kind, EventKind::RunFinished { .. }) {
            tracing::info!(run = %e.run, "run finished");
        }
        let live_event = if json.len() > LIVE_MAX_BYTES {
            Live::Stored(e.seq)
        } else {
            Live::Event(std::sync::Arc::new(Stored { event: e, json }))
        };
        // No watcher is fine: they replay from the store when they come.
        let _ = live.send(live_event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ensemble_protocol::{Plan, Summary, Verdict};

    #[tokio::test]
    async fn watchers_see_only_what_is_on_disk_and_the_end_with_its_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let plan = Plan::from_toml(
            "name = \"p\"\n[[profiles]]\nname = \"a\"\n[[entries]]\nsuite = \"x.wasm\"\nprofile = \"a\"\n",
        )
        .unwrap();
        let meta = RunMeta {
            id: "r".into(),
            plan,
            state: RunState::Running,
            started_us: 1,
            finished_us: None,
            summary: None,
            reruns: None,
            scheduled: None,
        };
        store.put_run(&meta).unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let (live, mut watch) = broadcast::channel(16);
        let (committed, _) = watch::channel(0);
        let writer =
            tokio::spawn(write_events(store.clone(), rx, live, committed, |_| {}, Default::default()));
        let mut rec = RunRecorder::new(meta, tx);
        let ev = |seq, kind| Event { run: "r".into(), seq, at_us: 0, machine_at_us: None, kind };
        rec.event(&ev(1, EventKind::RunStarted { plan: "p".into(), shards: vec![] })).unwrap();
        let end = EventKind::RunFinished {
            summary: Summary::default(),
            duration_ms: 1,
            shard_errors: 0,
            cancelled: None,
            verdict: Verdict::Passed,
        };
        rec.event(&ev(2, end)).unwrap();
        for seq in 1..=2 {
            let got = watch.recv().await.unwrap();
            assert_eq!(got.seq(), seq);
            assert!(matches!(got, Live::Event(_)), "small events go out whole");
            assert!(store.events("r", seq).unwrap().iter().any(|e| e.seq == seq), "event {seq} is stored");
        }
        assert_eq!(store.run("r").unwrap().unwrap().state, RunState::Passed, "the state came with the end");
        drop(rec);
        writer.await.unwrap();
    }
}
