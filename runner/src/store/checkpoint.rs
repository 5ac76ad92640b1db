//! WAL checkpoints off the write path.
//!
//! SQLite's own policy runs a checkpoint inside the commit that grows the
//! write-ahead log past 1,000 pages: that commit copies the log into the
//! database and syncs both files, a stall of milliseconds for whatever
//! waits on it — a barrier's release waits for its record to commit. Here
//! the store's connection never checkpoints; a thread of its own, with its
//! own connection, runs a passive checkpoint (it waits for no reader or
//! writer) once the log has grown past [`WAL_BYTES`]. Commits then only
//! append to the log.
//!
//! The log's size is read from its file: with `journal_size_limit = 0`
//! SQLite truncates it whenever it starts the log over after a complete
//! checkpoint, so the file's size is what the checkpoints have not caught
//! up with (plus what they copied and the log has not yet restarted over).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use rusqlite::Connection;

/// The log's size past which a checkpoint runs (SQLite's own default is
/// 1,000 pages of 4 KiB).
pub const WAL_BYTES: u64 = 4 << 20;

/// Rows written between two looks at the log's size.
const ROWS_PER_LOOK: u64 = 512;

#[derive(Default)]
struct Pending {
    rows: u64,
    closed: bool,
    /// Checkpoints run so far.
    runs: u64,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    ran: Condvar,
}

/// The checkpoint thread of one database; it ends, after a last
/// checkpoint, when this is dropped.
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
    /// Waits until `n` checkpoints have run (false: not within `within`).
    pub fn wait_for_runs(&self, n: u64, within: std::time::Duration) -> bool {
        let pending = self.shared.pending.lock().expect("checkpoint lock");
        let (pending, _) =
            self.shared.ran.wait_timeout_while(pending, within, |p| p.runs < n).expect("checkpoint lock");
        pending.runs >= n
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
    loop {
        let closed = {
            let mut pending = shared.pending.lock().expect("checkpoint lock");
            while pending.rows < ROWS_PER_LOOK && !pending.closed {
                pending = shared.wake.wait(pending).expect("checkpoint lock");
            }
            pending.rows = 0;
            pending.closed
        };
        if closed {
            // The store's connection is gone: this one closes last, and
            // SQLite's close checkpoints the rest and removes the log.
            return;
        }
        if std::fs::metadata(wal).is_ok_and(|m| m.len() >= WAL_BYTES) {
            checkpoint(db);
            shared.pending.lock().expect("checkpoint lock").runs += 1;
            shared.ran.notify_all();
        }
    }
}

/// A passive checkpoint: copies what it can without waiting on anyone.
pub fn checkpoint(db: &Connection) {
    let done = db.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    });
    match done {
        Ok((_, log, copied)) => tracing::trace!(log, copied, "checkpointed the store's write-ahead log"),
        Err(e) => tracing::warn!("could not checkpoint the store's write-ahead log: {e}"),
    }
}
