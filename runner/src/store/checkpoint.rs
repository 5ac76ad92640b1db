//! WAL checkpoints off the write path.
//!
//! SQLite's own policy runs a checkpoint inside the commit that grows the
//! write-ahead log past 1,000 pages: that commit copies the log into the
//! database and syncs both files, a stall of milliseconds for whatever
//! waits on it — a barrier's release waits for its record to commit. Here
//! the store's connection never checkpoints; a thread of its own, with its
//! own connection, runs a passive checkpoint (it waits for no reader or
//! writer) once [`WAL_PAGES`] pages were added to the log since the last
//! one. Commits then only append to the log.
//!
//! A checkpoint that could not copy the whole log (rows were committed
//! while it ran) goes again once the writes pause for [`RETRY`], so the log
//! starts over at the next commit instead of growing for another
//! [`WAL_PAGES`].
//!
//! The log's length is read from its file (a header, then frames of a page
//! and a header each). With `journal_size_limit = 0` SQLite truncates the
//! file whenever it starts the log over after a complete checkpoint, so a
//! file shorter than at the last checkpoint has started over.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use rusqlite::Connection;

/// Pages added to the log between two checkpoints (SQLite's own default).
pub const WAL_PAGES: u64 = 1000;

/// The log file's header, and each frame's.
const WAL_HEADER: u64 = 32;
const FRAME_HEADER: u64 = 24;

/// Rows written between two looks at the log's size.
const ROWS_PER_LOOK: u64 = 512;

/// How long writes must pause before a checkpoint that left part of the
/// log goes again (doubled after each that still leaves part: a reader
/// holds it), and how many times it goes again.
const RETRY: std::time::Duration = std::time::Duration::from_millis(100);
const RETRIES: u32 = 6;

#[derive(Default)]
struct Pending {
    rows: u64,
    closed: bool,
    /// Checkpoints that copied the whole log.
    complete: u64,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    ran: Condvar,
}

/// The checkpoint thread of one database; it ends when this is dropped,
/// and its connection, closing after the store's, checkpoints the rest.
pub struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path` (already in WAL mode).
    pub fn start(path: &Path) -> anyhow::Result<Checkpointer> {
        let db = Connection::open(path)?;
        let wal = PathBuf::from(format!("{}-wal", path.display()));
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ensemble-checkpoint".into())
            .spawn(move || run(&db, &wal, &state))?;
        Ok(Checkpointer { shared, thread: Some(thread) })
    }

    /// `rows` more rows were written (inserted, changed or deleted).
    pub fn wrote(&self, rows: u64) {
        if rows == 0 {
            return;
        }
        let mut pending = self.shared.pending.lock().expect("checkpoint lock");
        let before = pending.rows;
        pending.rows += rows;
        if before < ROWS_PER_LOOK && pending.rows >= ROWS_PER_LOOK {
            self.shared.wake.notify_one();
        }
    }
}

#[cfg(test)]
impl Checkpointer {
    /// Checkpoints that copied the whole log so far.
    pub fn complete(&self) -> u64 {
        self.shared.pending.lock().expect("checkpoint lock").complete
    }

    /// Waits until `n` checkpoints have copied the whole log (false: not
    /// within `within`).
    pub fn wait_for_complete(&self, n: u64, within: std::time::Duration) -> bool {
        let pending = self.shared.pending.lock().expect("checkpoint lock");
        let (pending, _) =
            self.shared.ran.wait_timeout_while(pending, within, |p| p.complete < n).expect("checkpoint lock");
        pending.complete >= n
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.shared.pending.lock().expect("checkpoint lock").closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(db: &Connection, wal: &Path, shared: &Shared) {
    let page: u64 = db.pragma_query_value(None, "page_size", |r| r.get(0)).unwrap_or(4096);
    let frames =
        || std::fs::metadata(wal).map_or(0, |m| m.len().saturating_sub(WAL_HEADER) / (page + FRAME_HEADER));
    // Frames in the log at the last checkpoint.
    let mut checkpointed = 0;
    // The last checkpoint left part of the log, and how many times it went
    // again since.
    let mut behind = false;
    let mut retried = 0;
    loop {
        let (closed, quiet) = {
            let mut pending = shared.pending.lock().expect("checkpoint lock");
            let mut quiet = false;
            if behind {
                let (p, waited) = shared
                    .wake
                    .wait_timeout_while(pending, RETRY * (1 << retried), |p| {
                        p.rows < ROWS_PER_LOOK && !p.closed
                    })
                    .expect("checkpoint lock");
                pending = p;
                quiet = waited.timed_out();
            } else {
                while pending.rows < ROWS_PER_LOOK && !pending.closed {
                    pending = shared.wake.wait(pending).expect("checkpoint lock");
                }
            }
            pending.rows = 0;
            (pending.closed, quiet)
        };
        if closed {
            // The store's connection is gone: this one closes last, and
            // SQLite's close checkpoints the rest and removes the log.
            return;
        }
        let now = frames();
        let added = if now >= checkpointed { now - checkpointed } else { now };
        if added >= WAL_PAGES || quiet {
            behind = !checkpoint(db);
            retried = if quiet && behind { retried + 1 } else { 0 };
            if retried == RETRIES {
                // Left to the next checkpoint the log's growth calls for.
                (behind, retried) = (false, 0);
            }
            checkpointed = frames();
            let mut pending = shared.pending.lock().expect("checkpoint lock");
            pending.complete += u64::from(!behind);
            shared.ran.notify_all();
        }
    }
}

/// A passive checkpoint: copies what it can without waiting on anyone.
/// Whether it copied the whole log.
fn checkpoint(db: &Connection) -> bool {
    let done = db.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    });
    match done {
        Ok((busy, log, copied)) => {
            tracing::trace!(log, copied, "checkpointed the store's write-ahead log");
            busy == 0 && copied >= log
        }
        Err(e) => {
            tracing::warn!("could not checkpoint the store's write-ahead log: {e}");
            // Not again at once: at the next look, as before.
            true
        }
    }
}
