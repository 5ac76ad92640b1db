//! The coordinator's embedded store: SQLite (WAL) under `--data-dir`, plus
//! suite bytes stored content-addressed on disk (`suites/<sha256>.wasm`),
//! and so are the files tests attach (`attachments/<sha256>`): an attachment
//! event is stored without its bytes, which are on disk before it commits.
//!
//! Plans, suites, runs and every run event persist, so a restarted `serve`
//! loses nothing finished. Rows hold JSON of the `protocol` types, which are
//! the one definition of their shape. A run still `running` when the process
//! stopped is marked `interrupted` on the next open.
//!
//! Every method blocks on SQLite; async code calls them through
//! [`Store::call`], which runs the work on tokio's blocking pool, never on an
//! async worker. A run's events are written in batches, one transaction per
//! batch ([`Store::write_batch`]), together with the run's state when it
//! changes, so a run's end and its last events commit at once.
//!
//! `synchronous = NORMAL` with WAL: a commit survives a crash of the process
//! (the WAL is written before the commit returns); only a power loss can
//! lose the last commits, which keeps batches cheap. A commit never
//! checkpoints the log into the database: a thread of its own does
//! (`checkpoint`), so no commit stalls on copying and syncing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use ensemble_protocol::api::{Delivery, PastResult, RunMeta, StoredPlan, SuiteMeta, SuiteSummary};
use ensemble_protocol::{CancelReason, Event, EventKind, Outcome, attachment};
use rusqlite::{Connection, OptionalExtension, params};

mod checkpoint;
use checkpoint::Checkpointer;

/// What the coordinator keeps of one schedule of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleRecord {
    /// The fire time it last ran for (or, before it first fired, when it
    /// started counting: its plan's save).
    pub last_fired_us: i64,
    pub fired: bool,
    pub run: Option<String>,
    pub error: Option<String>,
}

/// How recent an attachment file a sweep leaves alone whatever the events
/// say: its run's events may still be on their way to the store.
pub(crate) const SWEEP_SPARES: std::time::Duration = std::time::Duration::from_secs(600);

/// What an attachment sweep removed and kept ([`Store::sweep_attachments`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub files: u64,
    pub bytes: u64,
    pub kept_files: u64,
    pub kept_bytes: u64,
}

impl std::fmt::Display for Swept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use ensemble_protocol::units::ByteSize;
        write!(
            f,
            "removed {} attachment file(s), {}; kept {}, {}",
            self.files,
            ByteSize(self.bytes),
            self.kept_files,
            ByteSize(self.kept_bytes)
        )
    }
}

/// What a run sweep removed and kept ([`Store::sweep_runs`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweptRuns {
    pub runs: u64,
    pub events: u64,
    pub kept_runs: u64,
}

impl std::fmt::Display for SweptRuns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "removed {} run(s) and their {} event(s); kept {}", self.runs, self.events, self.kept_runs)
    }
}

/// What a suite sweep removed and kept ([`Store::sweep_suites`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweptSuites {
    pub suites: u64,
    pub bytes: u64,
    pub kept: u64,
    pub kept_bytes: u64,
}

impl std::fmt::Display for SweptSuites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use ensemble_protocol::units::ByteSize;
        write!(
            f,
            "removed {} suite(s), {}; kept {}, {}",
            self.suites,
            ByteSize(self.bytes),
            self.kept,
            ByteSize(self.kept_bytes)
        )
    }
}

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    // Dropped before the checkpointer, whose connection then closes last.
    db: Arc<Mutex<Connection>>,
    suites_dir: PathBuf,
    attachments_dir: PathBuf,
    checkpoints: Arc<Checkpointer>,
    /// Why the last write failed for want of room (a full disk, or the
    /// quota), until a probe finds room again ([`Store::probe_write`]).
    fault: Arc<Mutex<Option<String>>>,
}

/// The room a readiness probe writes (and removes at once): a store that
/// cannot take this much is not ready.
const PROBE_ROOM: i64 = 64 << 10;

/// The store's connection, locked; the rows written while it is held count
/// towards the next checkpoint.
struct Db<'a> {
    conn: std::sync::MutexGuard<'a, Connection>,
    changes: u64,
    checkpoints: &'a Checkpointer,
}

impl std::ops::Deref for Db<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl std::ops::DerefMut for Db<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

impl Drop for Db<'_> {
    fn drop(&mut self) {
        self.checkpoints.wrote(self.conn.total_changes().saturating_sub(self.changes));
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS plans  (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS suites (sha256 TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs   (id TEXT PRIMARY KEY, started_us INTEGER NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (run TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL,
                                   PRIMARY KEY (run, seq));
CREATE TABLE IF NOT EXISTS machines (name TEXT PRIMARY KEY, secret_sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (run TEXT NOT NULL, seq INTEGER NOT NULL, plan TEXT NOT NULL,
                                    role TEXT NOT NULL, test TEXT NOT NULL, outcome TEXT NOT NULL,
                                    duration_ms INTEGER NOT NULL, attempt INTEGER NOT NULL,
                                    at_us INTEGER NOT NULL, PRIMARY KEY (run, seq));
CREATE INDEX IF NOT EXISTS results_by_test ON results (plan, role, test, at_us);
-- The orders the lists are read in: a page reads its rows only, not every
-- stored body (a run's holds its plan, up to 4 MiB) to sort them. A query
-- uses an expression's index only when it writes the expression the same.
CREATE INDEX IF NOT EXISTS runs_by_start ON runs (started_us DESC, id);
CREATE INDEX IF NOT EXISTS runs_by_plan ON runs (json_extract(body, '$.plan.name'), started_us DESC, id);
CREATE INDEX IF NOT EXISTS plans_by_created ON plans (json_extract(body, '$.created_us'), id);
CREATE INDEX IF NOT EXISTS plans_by_updated ON plans (json_extract(body, '$.updated_us') DESC, id);
CREATE INDEX IF NOT EXISTS plans_by_name ON plans (json_extract(body, '$.plan.name'), json_extract(body, '$.created_us'), id);
CREATE TABLE IF NOT EXISTS probes (name TEXT PRIMARY KEY, at_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (run TEXT NOT NULL, n INTEGER NOT NULL, body TEXT NOT NULL,
                                       PRIMARY KEY (run, n));
CREATE TABLE IF NOT EXISTS room (pad BLOB);
CREATE TABLE IF NOT EXISTS cancels (run TEXT PRIMARY KEY, at_us INTEGER NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS schedules (plan TEXT NOT NULL, schedule TEXT NOT NULL, last_us INTEGER NOT NULL,
                                      fired INTEGER NOT NULL, run TEXT, error TEXT,
                                      PRIMARY KEY (plan, schedule));
";

/// Every test result of the stored events, with its run's plan name: the
/// history of tests (`results`), filled as events are written, and once
/// from the events already stored (data dirs from before it existed).
const RESULTS_FROM_EVENTS: &str = "
INSERT OR IGNORE INTO results (run, seq, plan, role, test, outcome, duration_ms, attempt, at_us)
SELECT e.run, e.seq, json_extract(r.body, '$.plan.name'), json_extract(e.body, '$.role'),
       json_extract(e.body, '$.test'), json_extract(e.body, '$.outcome'),
       json_extract(e.body, '$.duration_ms'), json_extract(e.body, '$.attempt'), json_extract(e.body, '$.at_us')
FROM events e JOIN runs r ON r.id = e.run
WHERE json_extract(e.body, '$.type') = 'test-finished'";

// The lists, in the orders `SCHEMA`'s indexes keep (checked by the test
// `every_list_reads_its_page_from_an_index`).
const PLANS: &str = "SELECT body FROM plans ORDER BY json_extract(body, '$.created_us'), id";
const PLANS_PAGE: &str =
    "SELECT body FROM plans ORDER BY json_extract(body, '$.created_us'), id LIMIT ?1 OFFSET ?2";
const PLANS_PAGE_NAMED: &str = "SELECT body FROM plans WHERE json_extract(body, '$.plan.name') = ?3 \
                                ORDER BY json_extract(body, '$.created_us'), id LIMIT ?1 OFFSET ?2";
const RECENT_PLANS: &str =
    "SELECT body FROM plans ORDER BY json_extract(body, '$.updated_us') DESC, id LIMIT ?1";
const RUNS_PAGE: &str = "SELECT body FROM runs ORDER BY started_us DESC, id LIMIT ?1 OFFSET ?2";
const RUNS_PAGE_OF_PLAN: &str = "SELECT body FROM runs WHERE json_extract(body, '$.plan.name') = ?3 \
                                 ORDER BY started_us DESC, id LIMIT ?1 OFFSET ?2";
const DURATIONS: &str = "SELECT role, test, MAX(duration_ms) FROM results WHERE run = ( \
                             SELECT id FROM runs WHERE json_extract(body, '$.plan.name') = ?1 \
                             AND json_extract(body, '$.plan.settings.partition') IS NULL \
                             AND json_extract(body, '$.reruns') IS NULL \
                             AND json_extract(body, '$.finished_us') < ?2 \
                             ORDER BY started_us DESC LIMIT 1) \
                         AND outcome NOT IN ('skipped', 'lost', 'cancelled') GROUP BY role, test";

/// The schema's version (`PRAGMA user_version`): 1 once `results` holds
/// every stored result.
const SCHEMA_VERSION: i64 = 1;

/// The most bytes of stored bodies one page reads: of events
/// ([`Store::events_page`]) and of lists of plans and runs (`Store::page`).
pub const PAGE_BYTES: usize = 16 << 20;

/// Removes a stored file a sweep let go (`what` names it in an error); one
/// already gone is fine.
fn remove_stored(path: &Path, what: &str) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow::Error::from(e).context(format!("removing {what}"))),
    }
}

/// Whether `e` says the store cannot take writes now — its disk (or its
/// quota, `--store-max-size`) is full, fails or is read-only — rather than
/// a bug: the writes may work again once an operator makes room.
pub fn cannot_write(e: &anyhow::Error) -> bool {
    use rusqlite::ErrorCode;
    use std::io::ErrorKind;
    e.chain().any(|cause| {
        if let Some(rusqlite::Error::SqliteFailure(f, _)) = cause.downcast_ref::<rusqlite::Error>() {
            return matches!(
                f.code,
                ErrorCode::DiskFull
                    | ErrorCode::SystemIoFailure
                    | ErrorCode::ReadOnly
                    | ErrorCode::CannotOpen
            );
        }
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::ReadOnlyFilesystem
            )
        })
    })
}

fn outcome_of(s: String) -> Outcome {
    serde_json::from_value(serde_json::Value::String(s)).unwrap_or(Outcome::Lost)
}

fn past_result(r: &rusqlite::Row) -> rusqlite::Result<PastResult> {
    Ok(PastResult {
        run: r.get(0)?,
        outcome: outcome_of(r.get(1)?),
        duration_ms: r.get::<_, i64>(2)? as u64,
        attempt: r.get(3)?,
        at_us: r.get(4)?,
    })
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("protocol types serialize")
}

fn parse<T: serde::de::DeserializeOwned>(s: String) -> rusqlite::Result<T> {
    serde_json::from_str(&s)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    /// Opens (or creates) the store in `dir`: a new `dir` is made readable
    /// by its owner only, and the database (with its log, which SQLite
    /// creates with the database's mode) always is.
    pub fn open(dir: &Path) -> anyhow::Result<Store> {
        crate::secret::private_dir(dir)?;
        let suites_dir = dir.join("suites");
        let attachments_dir = dir.join("attachments");
        for d in [&suites_dir, &attachments_dir] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let path = dir.join("ensemble.db");
        crate::secret::private_file(&path)?;
        let db = Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        // Checkpoints run on a thread of their own (see `checkpoint`); the
        // log's file is cut back whenever it starts over.
        db.pragma_update(None, "wal_autocheckpoint", 0)?;
        db.pragma_update(None, "journal_size_limit", 0)?;
        db.execute_batch(SCHEMA)?;
        let version: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version < SCHEMA_VERSION {
            db.execute(RESULTS_FROM_EVENTS, [])?;
            db.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        let checkpoints = Arc::new(Checkpointer::start(&path)?);
        Ok(Store {
            db: Arc::new(Mutex::new(db)),
            suites_dir,
            attachments_dir,
            checkpoints,
            fault: Arc::default(),
        })
    }

    /// Commits a write that needs room — [`PROBE_ROOM`] bytes of new pages,
    /// removed in the same transaction — (readiness probes): fails when
    /// the store cannot take writes (a full or read-only disk, the quota
    /// reached, a locked database). Room found clears a fault noted before.
    pub fn probe_write(&self, at_us: i64) -> anyhow::Result<()> {
        let probed = (|| {
            let mut db = self.db();
            let tx = db.transaction()?;
            tx.execute("INSERT OR REPLACE INTO probes (name, at_us) VALUES ('ready', ?1)", params![at_us])?;
            tx.execute("INSERT INTO room (pad) VALUES (zeroblob(?1))", [PROBE_ROOM])?;
            tx.execute("DELETE FROM room", [])?;
            tx.commit()?;
            anyhow::Ok(())
        })();
        match &probed {
            Ok(()) => *self.fault.lock().expect("fault lock") = None,
            Err(e) => self.note(e),
        }
        probed
    }

    /// Notes a failed write: one for want of room (see [`cannot_write`])
    /// stands until a probe finds room again.
    pub fn note(&self, e: &anyhow::Error) {
        if cannot_write(e) {
            *self.fault.lock().expect("fault lock") = Some(format!("{e:#}"));
        }
    }

    /// Why the store takes no writes, if a write failed for want of room
    /// and no probe found room since.
    pub fn fault(&self) -> Option<String> {
        self.fault.lock().expect("fault lock").clone()
    }

    /// Keeps the database within `bytes` (`serve --store-max-size`): past
    /// it, writes fail as on a full disk.
    pub fn limit_size(&self, bytes: u64) -> anyhow::Result<()> {
        let db = self.db();
        let page: u64 = db.pragma_query_value(None, "page_size", |r| r.get(0))?;
        let pages = (bytes / page.max(1)).max(1);
        db.pragma_update(None, "max_page_count", pages)?;
        Ok(())
    }

    /// Runs blocking store work off the async workers.
    pub async fn call<T, F>(&self, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> anyhow::Result<T> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store)).await.context("a store task panicked")?
    }

    fn db(&self) -> Db<'_> {
        let conn = self.db.lock().expect("store lock");
        Db { changes: conn.total_changes(), conn, checkpoints: &self.checkpoints }
    }

    /// The JSON body of the one row `sql` selects, parsed.
    fn one<T: serde::de::DeserializeOwned>(&self, sql: &str, key: &str) -> anyhow::Result<Option<T>> {
        Ok(self.db().query_row(sql, [key], |r| parse(r.get(0)?)).optional()?)
    }

    /// The JSON bodies of every row `sql` selects, parsed, in order.
    fn all<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> anyhow::Result<Vec<T>> {
        let db = self.db();
        let mut stmt = db.prepare(sql)?;
        let rows = stmt.query_map(args, |r| parse(r.get(0)?))?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The runs stored as running or queued: after a restart, those the coordinator
    /// takes up again (or marks interrupted).
    pub fn running_runs(&self) -> anyhow::Result<Vec<RunMeta>> {
        self.all(
            "SELECT body FROM runs WHERE json_extract(body, '$.state') IN ('running', 'queued') \
             ORDER BY started_us DESC, id",
            [],
        )
    }

    /// Keeps the cancel of run `run` (the first one asked stays): a
    /// coordinator restarted after it finishes cancelling the run.
    pub fn put_cancel(&self, run: &str, at_us: i64, reason: &CancelReason) -> anyhow::Result<()> {
        self.db().execute(
            "INSERT OR IGNORE INTO cancels (run, at_us, body) VALUES (?1, ?2, ?3)",
            params![run, at_us, json(reason)],
        )?;
        Ok(())
    }

    /// The cancel kept for run `run`, if it was asked to stop.
    pub fn cancel_of(&self, run: &str) -> anyhow::Result<Option<CancelReason>> {
        let body: Option<String> =
            self.db().query_row("SELECT body FROM cancels WHERE run = ?1", [run], |r| r.get(0)).optional()?;
        body.map(|b| serde_json::from_str(&b).context("a stored cancel")).transpose()
    }

    /// Like [`Store::all`], for a page of a list: it ends early once the
    /// bodies read weigh more than [`PAGE_BYTES`] (one item at least), so a
    /// page is bounded in bytes as in items. The next page is at the
    /// offset plus the items this one has.
    fn page<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> anyhow::Result<Vec<T>> {
        let db = self.db();
        let mut stmt = db.prepare(sql)?;
        let mut rows = stmt.query(args)?;
        let (mut out, mut bytes) = (Vec::new(), 0usize);
        while bytes <= PAGE_BYTES
            && let Some(row) = rows.next()?
        {
            let body: String = row.get(0)?;
            bytes += body.len();
            out.push(parse(body)?);
        }
        Ok(out)
    }

    // ---- suites ----

    /// Where a suite's bytes live; None when `sha256` is not 64 hex digits
    /// (so it never names another path).
    pub fn suite_path(&self, sha256: &str) -> Option<PathBuf> {
        let valid = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
        valid.then(|| self.suites_dir.join(format!("{}.wasm", sha256.to_ascii_lowercase())))
    }

    /// Stores suite bytes (atomically) and their metadata.
    pub fn put_suite(&self, meta: &SuiteMeta, bytes: &[u8]) -> anyhow::Result<()> {
        let path = self.suite_path(&meta.sha256).context("a suite's sha256 is not 64 hex digits")?;
        if !path.is_file() {
            let tmp = self.suites_dir.join(format!(".upload-{}-{}", meta.sha256, std::process::id()));
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, &path)?;
        }
        self.db().execute(
            "INSERT OR REPLACE INTO suites (sha256, body) VALUES (?1, ?2)",
            params![meta.sha256, json(meta)],
        )?;
        Ok(())
    }

    pub fn suite(&self, sha256: &str) -> anyhow::Result<Option<SuiteMeta>> {
        self.one("SELECT body FROM suites WHERE sha256 = ?1", sha256)
    }

    /// The bytes of all suites kept, as uploaded.
    pub fn suites_size(&self) -> anyhow::Result<u64> {
        let size: i64 =
            self.db().query_row("SELECT coalesce(sum(body->>'size'), 0) FROM suites", [], |r| r.get(0))?;
        Ok(u64::try_from(size).unwrap_or(0))
    }

    pub fn suite_bytes(&self, sha256: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let Some(path) = self.suite_path(sha256) else { return Ok(None) };
        match std::fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes suites no stored plan and no kept run names: those uploaded
    /// before `cutoff_us`, then, oldest first, while all suites weigh more
    /// than `budget` bytes. A suite some plan or run names is kept, and so
    /// is one uploaded in the last minutes (the plan or run naming it may
    /// be on its way).
    pub fn sweep_suites(&self, cutoff_us: i64, budget: u64) -> anyhow::Result<SweptSuites> {
        let spared =
            crate::time::now_us().saturating_sub(i64::try_from(SWEEP_SPARES.as_micros()).unwrap_or(i64::MAX));
        let (named, suites) = {
            let db = self.db();
            let mut stmt = db.prepare(
                "SELECT json_extract(e.value, '$.suite') FROM plans, json_each(plans.body, '$.plan.entries') e \
                 UNION SELECT json_extract(e.value, '$.suite') FROM runs, json_each(runs.body, '$.plan.entries') e",
            )?;
            let named: std::collections::HashSet<String> = stmt
                .query_map([], |r| r.get::<_, Option<String>>(0))?
                .filter_map(|r| r.transpose())
                .map(|r| r.map(|s| s.strip_prefix("sha256:").unwrap_or(&s).to_string()))
                .collect::<Result<_, _>>()?;
            let mut stmt = db.prepare(
                "SELECT sha256, coalesce(body->>'uploaded_us', 0), coalesce(body->>'size', 0) FROM suites \
                 ORDER BY 2, 1",
            )?;
            let suites: Vec<(String, i64, u64)> =
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<_, _>>()?;
            (named, suites)
        };
        let mut swept = SweptSuites {
            kept: suites.len() as u64,
            kept_bytes: suites.iter().map(|s| s.2).sum(),
            ..SweptSuites::default()
        };
        for (sha, uploaded_us, size) in suites {
            if named.contains(&sha)
                || uploaded_us >= spared
                || (uploaded_us >= cutoff_us && swept.kept_bytes <= budget)
            {
                continue;
            }
            self.db().execute("DELETE FROM suites WHERE sha256 = ?1", [&sha])?;
            if let Some(path) = self.suite_path(&sha) {
                remove_stored(&path, &format!("suite {sha}"))?;
            }
            swept.suites += 1;
            swept.bytes += size;
            swept.kept -= 1;
            swept.kept_bytes -= size;
        }
        Ok(swept)
    }

    pub fn suites(&self) -> anyhow::Result<Vec<SuiteSummary>> {
        self.suites_page(u32::MAX, 0)
    }

    /// At most `limit` suites from `offset`, by sha256, as summaries: SQLite
    /// counts each suite's tests in place, so no test list is read, parsed
    /// or sent.
    pub fn suites_page(&self, limit: u32, offset: u32) -> anyhow::Result<Vec<SuiteSummary>> {
        self.all(
            "SELECT json_object('sha256', body->>'sha256', 'name', body->>'name', 'size', body->'size', \
             'kind', body->>'kind', 'test_count', json_array_length(body, '$.tests'), \
             'imports', json(body->'imports'), 'exports', json(coalesce(body->'exports', '[]')), \
             'uploaded_us', body->'uploaded_us', 'params', body->'params', 'abi', body->>'abi') \
             FROM suites ORDER BY sha256 LIMIT ?1 OFFSET ?2",
            params![limit, offset],
        )
    }

    // ---- webhook deliveries ----

    /// Records an attempt to call a webhook about `run`.
    pub fn put_delivery(&self, run: &str, delivery: &Delivery) -> anyhow::Result<()> {
        self.db().execute(
            "INSERT INTO deliveries (run, n, body) \
             SELECT ?1, COALESCE(MAX(n), 0) + 1, ?2 FROM deliveries WHERE run = ?1",
            params![run, json(delivery)],
        )?;
        Ok(())
    }

    /// The attempts to call webhooks about `run`, oldest first.
    pub fn deliveries(&self, run: &str) -> anyhow::Result<Vec<Delivery>> {
        self.all("SELECT body FROM deliveries WHERE run = ?1 ORDER BY n", [run])
    }

    // ---- schedules ----

    /// What the coordinator recorded of each plan's schedules, by (plan id,
    /// schedule key).
    pub fn schedule_records(&self) -> anyhow::Result<HashMap<(String, String), ScheduleRecord>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT plan, schedule, last_us, fired, run, error FROM schedules")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                ScheduleRecord {
                    last_fired_us: r.get(2)?,
                    fired: r.get::<_, i64>(3)? != 0,
                    run: r.get(4)?,
                    error: r.get(5)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Starts the records of schedules that have none, counting from `us`.
    pub fn start_schedule_records(&self, plan: &str, schedules: &[String], us: i64) -> anyhow::Result<()> {
        for schedule in schedules {
            self.db().execute(
                "INSERT OR IGNORE INTO schedules (plan, schedule, last_us, fired) VALUES (?1, ?2, ?3, 0)",
                params![plan, schedule, us],
            )?;
        }
        Ok(())
    }

    /// A schedule fired for `us`: its run (the last one's until then) is
    /// set once it starts.
    pub fn mark_schedule_fired(&self, plan: &str, schedule: &str, us: i64) -> anyhow::Result<()> {
        self.db().execute(
            "UPDATE schedules SET last_us = ?3, fired = 1 WHERE plan = ?1 AND schedule = ?2",
            params![plan, schedule, us],
        )?;
        Ok(())
    }

    /// The run a firing started (it becomes the last run), or why none (the
    /// last run stays): only while the record is
    /// still that firing's.
    pub fn set_schedule_outcome(
        &self,
        plan: &str,
        schedule: &str,
        fired_us: i64,
        run: Option<String>,
        error: Option<String>,
    ) -> anyhow::Result<()> {
        self.db().execute(
            "UPDATE schedules SET run = COALESCE(?4, run), error = ?5 \
             WHERE plan = ?1 AND schedule = ?2 AND last_us = ?3",
            params![plan, schedule, fired_us, run, error],
        )?;
        Ok(())
    }

    /// Forgets the records of schedules not in `keep` (edited or deleted).
    pub fn keep_schedule_records(&self, keep: &[(String, String)]) -> anyhow::Result<()> {
        let keep: std::collections::HashSet<&(String, String)> = keep.iter().collect();
        let stale: Vec<(String, String)> =
            self.schedule_records()?.into_keys().filter(|k| !keep.contains(k)).collect();
        for (plan, schedule) in stale {
            self.db().execute(
                "DELETE FROM schedules WHERE plan = ?1 AND schedule = ?2",
                params![plan, schedule],
            )?;
        }
        Ok(())
    }

    // ---- attachments ----

    /// Writes attachment bytes under their sha256 (atomically, once).
    fn put_attachment(&self, sha256: &str, bytes: &[u8]) -> anyhow::Result<()> {
        anyhow::ensure!(attachment::is_sha256(sha256), "an attachment's sha256 is not 64 hex digits");
        let path = self.attachments_dir.join(sha256);
        if path.is_file() {
            // Kept again: a sweep that read the events before this run's
            // were written must not take it (it spares recent files).
            let _ = std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        } else {
            let tmp = self.attachments_dir.join(format!(".upload-{sha256}-{}", std::process::id()));
            let written = std::fs::write(&tmp, bytes)
                .with_context(|| format!("writing {}", tmp.display()))
                .and_then(|()| std::fs::rename(&tmp, &path).map_err(anyhow::Error::from));
            if written.is_err() {
                // A part written to a full disk takes no room it cannot use.
                let _ = std::fs::remove_file(&tmp);
            }
            written?;
        }
        Ok(())
    }

    /// The name of the attachment `sha256` has in `run` (its first), when
    /// the run has one with those bytes.
    pub fn attachment_name(&self, run: &str, sha256: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .db()
            .query_row(
                "SELECT json_extract(body, '$.name') FROM events WHERE run = ?1 \
                 AND json_extract(body, '$.type') = 'attachment' AND json_extract(body, '$.sha256') = ?2 \
                 ORDER BY seq LIMIT 1",
                params![run, sha256],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Removes attachment files past their retention: those no run that
    /// started at `cutoff_us` or later refers to (and files no run refers
    /// to at all), then, while the files kept weigh more than `budget`
    /// bytes, those of the oldest runs first. Events keep their names and
    /// sizes; the API answers that the bytes expired.
    pub fn sweep_attachments(&self, cutoff_us: i64, budget: u64) -> anyhow::Result<Swept> {
        let newest: HashMap<String, i64> = {
            let db = self.db();
            let mut stmt = db.prepare(
                "SELECT json_extract(e.body, '$.sha256'), MAX(r.started_us) FROM events e \
                 JOIN runs r ON r.id = e.run WHERE json_extract(e.body, '$.type') = 'attachment' GROUP BY 1",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)?)))?;
            rows.filter_map(|r| match r {
                Ok((Some(sha), at)) => Some(Ok((sha, at))),
                Ok((None, _)) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<_, _>>()?
        };
        let mut files: Vec<(i64, String, u64)> = Vec::new();
        for entry in std::fs::read_dir(&self.attachments_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !attachment::is_sha256(&name) {
                continue; // an upload being written
            }
            let Ok(meta) = entry.metadata() else { continue };
            // Written (or kept again) in the last minutes: its event may not
            // be committed yet, so the query above cannot speak for it.
            if meta.modified().is_ok_and(|m| m.elapsed().map_or(true, |age| age < SWEEP_SPARES)) {
                continue;
            }
            files.push((newest.get(&name).copied().unwrap_or(i64::MIN), name, meta.len()));
        }
        files.sort();
        let mut swept = Swept {
            kept_files: files.len() as u64,
            kept_bytes: files.iter().map(|f| f.2).sum(),
            ..Swept::default()
        };
        for (newest, name, size) in files {
            if newest >= cutoff_us && swept.kept_bytes <= budget {
                break;
            }
            remove_stored(&self.attachments_dir.join(&name), &format!("attachment {name}"))?;
            swept.files += 1;
            swept.bytes += size;
            swept.kept_files -= 1;
            swept.kept_bytes -= size;
        }
        Ok(swept)
    }

    /// Removes finished runs past their retention: those that started
    /// before `cutoff_us`, then, while more than `max_runs` finished runs
    /// are kept, the oldest. A run goes whole (its events, results and
    /// deliveries with it), one transaction each, so the store takes other
    /// writes between them; the attachment sweep then removes the files no
    /// run refers to. Running and queued runs are never removed.
    pub fn sweep_runs(&self, cutoff_us: i64, max_runs: u64) -> anyhow::Result<SweptRuns> {
        let finished: Vec<(String, i64)> = {
            let db = self.db();
            let mut stmt = db.prepare(
                "SELECT id, started_us FROM runs WHERE json_extract(body, '$.state') NOT IN ('running', 'queued') \
                 ORDER BY started_us, id",
            )?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
        };
        let over = (finished.len() as u64).saturating_sub(max_runs);
        let mut swept = SweptRuns { kept_runs: finished.len() as u64, ..SweptRuns::default() };
        for (i, (run, started_us)) in finished.iter().enumerate() {
            if *started_us >= cutoff_us && i as u64 >= over {
                break;
            }
            let mut db = self.db();
            let tx = db.transaction()?;
            let events = tx.execute("DELETE FROM events WHERE run = ?1", [run])?;
            tx.execute("DELETE FROM results WHERE run = ?1", [run])?;
            tx.execute("DELETE FROM deliveries WHERE run = ?1", [run])?;
            tx.execute("DELETE FROM cancels WHERE run = ?1", [run])?;
            tx.execute("DELETE FROM runs WHERE id = ?1", [run])?;
            tx.commit()?;
            swept.runs += 1;
            swept.events += events as u64;
            swept.kept_runs -= 1;
        }
        Ok(swept)
    }

    /// Where the attachment bytes of `sha256` are kept (if it is a sha256).
    pub fn attachment_path(&self, sha256: &str) -> Option<PathBuf> {
        attachment::is_sha256(sha256).then(|| self.attachments_dir.join(sha256))
    }

    /// The bytes stored under `sha256`; None when there are none.
    pub fn attachment_bytes(&self, sha256: &str) -> anyhow::Result<Option<Vec<u8>>> {
        if !attachment::is_sha256(sha256) {
            return Ok(None);
        }
        match std::fs::read(self.attachments_dir.join(sha256)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    // ---- plans ----

    pub fn put_plan(&self, plan: &StoredPlan) -> anyhow::Result<()> {
        self.db().execute(
            "INSERT OR REPLACE INTO plans (id, body) VALUES (?1, ?2)",
            params![plan.id, json(plan)],
        )?;
        Ok(())
    }

    pub fn plan(&self, id: &str) -> anyhow::Result<Option<StoredPlan>> {
        self.one("SELECT body FROM plans WHERE id = ?1", id)
    }

    pub fn plans(&self) -> anyhow::Result<Vec<StoredPlan>> {
        self.all(PLANS, [])
    }

    /// At most `limit` plans from `offset`, oldest first: named `name`, or all.
    pub fn plans_page(&self, limit: u32, offset: u32, name: Option<&str>) -> anyhow::Result<Vec<StoredPlan>> {
        match name {
            None => self.page(PLANS_PAGE, params![limit, offset]),
            Some(name) => self.page(PLANS_PAGE_NAMED, params![limit, offset, name]),
        }
    }

    /// The `limit` plans saved last, newest first.
    pub fn recent_plans(&self, limit: u32) -> anyhow::Result<Vec<StoredPlan>> {
        self.page(RECENT_PLANS, params![limit])
    }

    /// How many plans are stored.
    pub fn plan_count(&self) -> anyhow::Result<u64> {
        Ok(self.db().query_row("SELECT COUNT(*) FROM plans", [], |r| r.get(0))?)
    }

    /// Deletes a plan; false when there was none.
    pub fn delete_plan(&self, id: &str) -> anyhow::Result<bool> {
        Ok(self.db().execute("DELETE FROM plans WHERE id = ?1", [id])? > 0)
    }

    // ---- runs and events ----

    pub fn put_run(&self, run: &RunMeta) -> anyhow::Result<()> {
        self.db().execute(
            "INSERT OR REPLACE INTO runs (id, started_us, body) VALUES (?1, ?2, ?3)",
            params![run.id, run.started_us, json(run)],
        )?;
        Ok(())
    }

    pub fn run(&self, id: &str) -> anyhow::Result<Option<RunMeta>> {
        self.one("SELECT body FROM runs WHERE id = ?1", id)
    }

    /// A page of the runs, newest first: of the plan named `plan`, or all.
    pub fn runs_page(&self, limit: u32, offset: u32, plan: Option<&str>) -> anyhow::Result<Vec<RunMeta>> {
        match plan {
            None => self.page(RUNS_PAGE, params![limit, offset]),
            Some(plan) => self.page(RUNS_PAGE_OF_PLAN, params![limit, offset, plan]),
        }
    }

    pub fn put_event(&self, event: &Event) -> anyhow::Result<()> {
        self.write_batch(&mut [event.clone()], &[]).map(drop)
    }

    // ---- machine identities ----

    /// The sha256 of the secret bound to machine `name`, if it ever joined.
    pub fn machine_secret(&self, name: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .db()
            .query_row("SELECT secret_sha256 FROM machines WHERE name = ?1", [name], |r| r.get(0))
            .optional()?)
    }

    /// Binds `name` to a secret (by its sha256), unless it is bound
    /// already or `max` names are.
    pub fn bind_machine(&self, name: &str, secret_sha256: &str, max: u64) -> anyhow::Result<Binding> {
        let db = self.db();
        let n = db.execute(
            "INSERT OR IGNORE INTO machines (name, secret_sha256) \
             SELECT ?1, ?2 WHERE (SELECT count(*) FROM machines) < ?3",
            params![name, secret_sha256, i64::try_from(max).unwrap_or(i64::MAX)],
        )?;
        if n == 1 {
            return Ok(Binding::Bound);
        }
        let taken = db.query_row("SELECT 1 FROM machines WHERE name = ?1", [name], |_| Ok(())).optional()?;
        Ok(if taken.is_some() { Binding::Taken } else { Binding::Full })
    }

    /// The outcomes of the tests of `run` stored so far, counted.
    pub fn stored_summary(&self, run: &str) -> anyhow::Result<ensemble_protocol::Summary> {
        let db = self.db();
        let mut stmt = db.prepare_cached("SELECT outcome FROM results WHERE run = ?1")?;
        let mut summary = ensemble_protocol::Summary::default();
        for outcome in stmt.query_map([run], |r| r.get::<_, String>(0))? {
            summary.add(outcome_of(outcome?));
        }
        Ok(summary)
    }

    /// Unbinds `name` from its secret; false if it was not bound.
    pub fn forget_machine(&self, name: &str) -> anyhow::Result<bool> {
        Ok(self.db().execute("DELETE FROM machines WHERE name = ?1", [name])? == 1)
    }

    /// Writes `events` and `runs` in one transaction.
    /// Returns each event as stored (its JSON, which is also what watchers
    /// are sent), in order.
    /// Attachment events lose their bytes here: the bytes go to disk first.
    pub fn write_batch(&self, events: &mut [Event], runs: &[RunMeta]) -> anyhow::Result<Vec<String>> {
        for e in events.iter_mut() {
            if let EventKind::Attachment { sha256, data, .. } = &mut e.kind
                && let Some(blob) = data.as_ref()
            {
                // The bytes stay with the event until they are on disk: a
                // batch tried again (a full disk) writes them again.
                self.put_attachment(sha256, &blob.0)?;
                *data = None;
            }
        }
        let mut db = self.db();
        let tx = db.transaction()?;
        let mut bodies = Vec::with_capacity(events.len());
        {
            let mut put =
                tx.prepare_cached("INSERT OR REPLACE INTO runs (id, started_us, body) VALUES (?1, ?2, ?3)")?;
            for r in runs {
                put.execute(params![r.id, r.started_us, json(r)])?;
            }
            let mut put =
                tx.prepare_cached("INSERT OR IGNORE INTO events (run, seq, body) VALUES (?1, ?2, ?3)")?;
            let mut result = tx.prepare_cached(
                "INSERT OR IGNORE INTO results (run, seq, plan, role, test, outcome, duration_ms, attempt, at_us) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            // Each run's plan name, read once a batch: the run's body holds
            // its whole plan, which reading the name parses.
            let mut plan_of =
                tx.prepare_cached("SELECT json_extract(body, '$.plan.name') FROM runs WHERE id = ?1")?;
            let mut plans: HashMap<String, Option<String>> = HashMap::new();
            for e in events {
                let body = json(e);
                put.execute(params![e.run, e.seq as i64, body])?;
                bodies.push(body);
                if let EventKind::TestFinished { shard, test, outcome, duration_ms, attempt, .. } = &e.kind {
                    let plan = match plans.get(&e.run) {
                        Some(plan) => plan.clone(),
                        None => {
                            let plan = plan_of.query_row([&e.run], |r| r.get(0)).optional()?.flatten();
                            plans.insert(e.run.clone(), plan.clone());
                            plan
                        }
                    };
                    // A result of a run not stored, or of no plan name, is not kept.
                    let Some(plan) = plan else { continue };
                    result.execute(params![
                        e.run,
                        e.seq as i64,
                        plan,
                        shard.role,
                        test,
                        outcome.as_str(),
                        *duration_ms as i64,
                        attempt,
                        e.at_us
                    ])?;
                }
            }
        }
        tx.commit()?;
        Ok(bodies)
    }

    /// The results of test `test` of role `role` in plan `plan`, newest
    /// first, at most `limit`.
    pub fn results_of(
        &self,
        plan: &str,
        role: &str,
        test: &str,
        limit: u32,
    ) -> anyhow::Result<Vec<PastResult>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(
            "SELECT run, outcome, duration_ms, attempt, at_us FROM results \
             WHERE plan = ?1 AND role = ?2 AND test = ?3 ORDER BY at_us DESC, seq DESC LIMIT ?4",
        )?;
        let rows = stmt.query_map(params![plan, role, test, limit], past_result)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The results of the last `runs` runs of plan `plan` that have
    /// results, as (role, test, result), newest first — of fewer runs when
    /// those hold more than `max` results (the newest runs whose results
    /// fit, or the newest `max` results of the newest run).
    pub fn recent_results(
        &self,
        plan: &str,
        runs: u32,
        max: u64,
    ) -> anyhow::Result<Vec<(String, String, PastResult)>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(
            "SELECT run, count(*) FROM results WHERE plan = ?1 GROUP BY run ORDER BY MAX(at_us) DESC LIMIT ?2",
        )?;
        let counts: Vec<(String, u64)> =
            stmt.query_map(params![plan, runs], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        let mut taken = Vec::new();
        let mut rows = 0u64;
        for (run, count) in counts {
            if !taken.is_empty() && rows.saturating_add(count) > max {
                break;
            }
            rows = rows.saturating_add(count);
            taken.push(run);
        }
        let mut stmt = db.prepare_cached(
            "SELECT role, test, run, outcome, duration_ms, attempt, at_us FROM results WHERE plan = ?1 AND run IN \
             (SELECT value FROM json_each(?2)) ORDER BY at_us DESC, seq DESC LIMIT ?3",
        )?;
        let taken = serde_json::to_string(&taken)?;
        let rows = stmt.query_map(params![plan, taken, max], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                PastResult {
                    run: r.get(2)?,
                    outcome: outcome_of(r.get::<_, String>(3)?),
                    duration_ms: r.get::<_, i64>(4)? as u64,
                    attempt: r.get(5)?,
                    at_us: r.get(6)?,
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The durations of the tests of plan `plan` in its latest whole run
    /// (neither a part of a split nor a rerun) that finished before
    /// `before_us`, skips and lost tests aside, by role and test (the
    /// longest of a test's instances). Every job of a split plan that
    /// starts after that run gets the same answer, and so the same parts,
    /// however the others' results come in; a coordinator taking a run up
    /// again after a restart asks with the run's start. Only the roles
    /// `roles` names (all when `None`); past `max_bytes` of their names (a
    /// run may hold millions of results), none: every part is then dealt by
    /// count, alike in every job.
    pub fn durations(
        &self,
        plan: &str,
        before_us: i64,
        roles: Option<&std::collections::BTreeSet<String>>,
        max_bytes: usize,
    ) -> anyhow::Result<ensemble_protocol::filter::Durations> {
        let db = self.db();
        let mut stmt = db.prepare_cached(DURATIONS)?;
        let mut out = ensemble_protocol::filter::Durations::new();
        let rows = stmt.query_map(params![plan, before_us], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
        })?;
        let mut bytes = 0usize;
        for row in rows {
            let (role, test, ms) = row?;
            if roles.is_some_and(|r| !r.contains(&role)) {
                continue;
            }
            // A map's entry costs about a pointer's words besides its name.
            bytes = bytes.saturating_add(test.len() + 32);
            if bytes > max_bytes {
                tracing::warn!(
                    plan,
                    "the recorded durations are over {max_bytes} bytes: parts are dealt by count"
                );
                return Ok(Default::default());
            }
            out.entry(role).or_default().insert(test, ms as u64);
        }
        Ok(out)
    }

    /// Every event of `run` with `seq >= from`, in order (page after page).
    pub fn events(&self, run: &str, from: u64) -> anyhow::Result<Vec<Event>> {
        let mut all: Vec<Event> = Vec::new();
        loop {
            let next = all.last().map_or(from, |e| e.seq + 1);
            let page = self.events_page(run, next, u32::MAX)?;
            if page.is_empty() {
                return Ok(all);
            }
            all.extend(page);
        }
    }

    /// The numbers and sizes (bytes of JSON) of at most `limit` events of
    /// `run` with `seq >= from`, in order, without reading their bodies.
    pub fn event_sizes(&self, run: &str, from: u64, limit: u32) -> anyhow::Result<Vec<(u64, usize)>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(
            "SELECT seq, octet_length(body) FROM events WHERE run = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![run, from as i64, limit], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as usize))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// At most `limit` events of `run` with `seq >= from`, in order, and no
    /// more than [`PAGE_BYTES`] of them (but always the first): a page of
    /// large events is short, and only an empty page means the end.
    pub fn events_page(&self, run: &str, from: u64, limit: u32) -> anyhow::Result<Vec<Event>> {
        self.event_bodies(run, from, limit)?.into_iter().map(|(_, body)| Ok(parse(body)?)).collect()
    }

    /// Every event of `run`, in order, without what its state is not
    /// rebuilt from: tests' output and messages, and log lines' text (a run
    /// keeps up to 2 GiB of those). What a resumed run or a rerun reads.
    pub fn events_outline(&self, run: &str) -> anyhow::Result<Vec<Event>> {
        self.all(
            "SELECT CASE body->>'type' \
               WHEN 'test-finished' THEN json_remove(body, '$.output', '$.message') \
               WHEN 'log' THEN json_set(body, '$.message', '') \
               ELSE body END \
             FROM events WHERE run = ?1 ORDER BY seq",
            [run],
        )
    }

    /// [`Store::events_page`] as stored: each event's number and JSON,
    /// which is what a watcher is sent, so a replay need not parse and
    /// print every event again.
    pub fn event_bodies(&self, run: &str, from: u64, limit: u32) -> anyhow::Result<Vec<(u64, String)>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(
            "SELECT seq, body FROM events WHERE run = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
        )?;
        let mut rows = stmt.query(params![run, from as i64, limit])?;
        let (mut page, mut bytes) = (Vec::new(), 0);
        while let Some(row) = rows.next()? {
            let body: String = row.get(1)?;
            bytes += body.len();
            page.push((row.get::<_, i64>(0)? as u64, body));
            if bytes >= PAGE_BYTES {
                break;
            }
        }
        Ok(page)
    }
}

/// What [`Store::bind_machine`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Binding {
    /// The name is bound to the secret.
    Bound,
    /// Another machine bound it first.
    Taken,
    /// As many names as may be are bound; none is added.
    Full,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ensemble_protocol::api::RunState;
    use ensemble_protocol::{EventKind, Plan, Summary};

    fn plan() -> Plan {
        Plan::from_toml(
            "name = \"p\"\n[[profiles]]\nname = \"a\"\n[[entries]]\nsuite = \"x.wasm\"\nprofile = \"a\"\n",
        )
        .unwrap()
    }

    #[test]
    fn machine_names_are_bound_once_and_up_to_a_bound() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        assert_eq!(store.bind_machine("a", "sa", 2).unwrap(), Binding::Bound);
        assert_eq!(store.bind_machine("a", "other", 2).unwrap(), Binding::Taken);
        assert_eq!(store.bind_machine("b", "sb", 2).unwrap(), Binding::Bound);
        assert_eq!(store.bind_machine("c", "sc", 2).unwrap(), Binding::Full);
        assert_eq!(store.bind_machine("a", "other", 2).unwrap(), Binding::Taken, "a known name is not new");
        assert_eq!(store.machine_secret("c").unwrap(), None);
        // A name released makes room for another.
        assert!(store.forget_machine("b").unwrap());
        assert_eq!(store.bind_machine("c", "sc", 2).unwrap(), Binding::Bound);
        assert_eq!(store.machine_secret("a").unwrap().as_deref(), Some("sa"));
    }

    #[cfg(unix)]
    #[test]
    fn the_store_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let store = Store::open(&data).unwrap();
        store.probe_write(1).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        for file in ["ensemble.db", "ensemble.db-wal", "ensemble.db-shm"] {
            assert_eq!(mode(&data.join(file)), 0o600, "{file}");
        }
        // A store made before, readable by all, is made private on open.
        drop(store);
        std::fs::set_permissions(data.join("ensemble.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let _again = Store::open(&data).unwrap();
        assert_eq!(mode(&data.join("ensemble.db")), 0o600);
    }

    /// Stores run `id` of plan `p`, started at `n` and finished at
    /// `finished_us`, with `results` passed tests `t1`, `t2`… of role `x`.
    fn store_passed_run(store: &Store, id: &str, n: i64, finished_us: Option<i64>, results: u64) {
        let shard = ensemble_protocol::ShardRef {
            shard: 1,
            machine: "m".into(),
            role: "x".into(),
            suite: "x".into(),
            instance: 0,
        };
        let run = RunMeta {
            id: id.into(),
            plan: plan(),
            state: RunState::Passed,
            started_us: n,
            finished_us,
            summary: None,
            reruns: None,
            scheduled: None,
        };
        let mut events: Vec<Event> = (1..=results)
            .map(|seq| Event {
                run: id.into(),
                seq,
                at_us: n * 1_000 + seq as i64,
                machine_at_us: None,
                kind: crate::coordinator::test_finished(shard.clone(), &format!("t{seq}"), Outcome::Passed),
            })
            .collect();
        store.write_batch(&mut events, &[run]).unwrap();
    }

    #[test]
    fn recorded_durations_past_their_bound_are_none_so_parts_are_dealt_by_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store_passed_run(&store, "r", 1, Some(10), 3);
        let all = store.durations("p", 100, None, 1 << 20).unwrap();
        assert_eq!(all["x"].keys().collect::<Vec<_>>(), ["t1", "t2", "t3"]);
        // Two names fit in 70 bytes (34 each), three do not: none are given.
        assert!(store.durations("p", 100, None, 70).unwrap().is_empty());
        assert_eq!(store.durations("p", 100, None, 102).unwrap()["x"].len(), 3);
        // Only the roles asked for are read, and count.
        let other: std::collections::BTreeSet<String> = ["y".to_string()].into();
        assert!(store.durations("p", 100, Some(&other), 70).unwrap().is_empty());
        let x: std::collections::BTreeSet<String> = ["x".to_string()].into();
        assert_eq!(store.durations("p", 100, Some(&x), 102).unwrap()["x"].len(), 3);
    }

    #[test]
    fn a_plans_recent_results_are_those_of_its_newest_runs_that_fit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Three runs, oldest first, of 3, 3 and 2 results.
        for (n, results) in [(1i64, 3u64), (2, 3), (3, 2)] {
            store_passed_run(&store, &format!("r{n}"), n, None, results);
        }
        let runs = |max| -> Vec<String> {
            let mut runs: Vec<String> =
                store.recent_results("p", 10, max).unwrap().into_iter().map(|(_, _, r)| r.run).collect();
            runs.dedup();
            runs
        };
        assert_eq!(store.recent_results("p", 10, 100).unwrap().len(), 8);
        assert_eq!(store.recent_results("p", 2, 100).unwrap().len(), 5, "the last two runs");
        assert_eq!(runs(5), ["r3", "r2"], "the newest runs whose results fit");
        assert_eq!(store.recent_results("p", 10, 5).unwrap().len(), 5);
        assert_eq!(runs(4), ["r3"]);
        // The newest run alone over the bound: its newest results.
        let newest = store.recent_results("p", 10, 1).unwrap();
        assert_eq!((newest.len(), newest[0].1.as_str()), (1, "t2"));
    }

    #[test]
    fn results_are_kept_as_written_and_filled_in_from_older_stores() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let run = RunMeta {
            id: "r1".into(),
            plan: plan(),
            state: RunState::Failed,
            started_us: 1,
            finished_us: None,
            summary: None,
            reruns: None,
            scheduled: None,
        };
        let shard = ensemble_protocol::ShardRef {
            shard: 1,
            machine: "m".into(),
            role: "x".into(),
            suite: "x".into(),
            instance: 0,
        };
        let event = |seq, outcome| Event {
            run: "r1".into(),
            seq,
            at_us: seq as i64 * 10,
            machine_at_us: None,
            kind: crate::coordinator::test_finished(shard.clone(), "t", outcome),
        };
        store.write_batch(&mut [event(1, Outcome::Passed), event(2, Outcome::Failed)], &[run]).unwrap();
        let outcomes = |s: &Store| -> Vec<Outcome> {
            s.results_of("p", "x", "t", 10).unwrap().iter().map(|r| r.outcome).collect()
        };
        assert_eq!(outcomes(&store), [Outcome::Failed, Outcome::Passed]);
        assert_eq!(store.recent_results("p", 5, 100).unwrap().len(), 2);
        // The result of a run not stored has no plan to be kept under.
        let stray = Event { run: "r2".into(), ..event(3, Outcome::Passed) };
        store.write_batch(&mut [stray], &[]).unwrap();
        let kept: i64 = store.db().query_row("SELECT COUNT(*) FROM results", [], |r| r.get(0)).unwrap();
        assert_eq!(kept, 2);
        // A store from before results were kept: they come from its events.
        store.db().execute_batch("DELETE FROM results; PRAGMA user_version = 0;").unwrap();
        drop(store);
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(outcomes(&reopened), [Outcome::Failed, Outcome::Passed]);
    }

    #[test]
    fn every_list_reads_its_page_from_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let db = store.db();
        for (sql, index) in [
            (PLANS, "plans_by_created"),
            (PLANS_PAGE, "plans_by_created"),
            (PLANS_PAGE_NAMED, "plans_by_name"),
            (RECENT_PLANS, "plans_by_updated"),
            (RUNS_PAGE, "runs_by_start"),
            (RUNS_PAGE_OF_PLAN, "runs_by_plan"),
            (DURATIONS, "runs_by_plan"),
        ] {
            let mut stmt = db.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let nulls = rusqlite::params_from_iter(vec![rusqlite::types::Null; stmt.parameter_count()]);
            let steps: Vec<String> =
                stmt.query_map(nulls, |r| r.get(3)).unwrap().map(Result::unwrap).collect();
            let plan = steps.join("; ");
            assert!(plan.contains(&format!("INDEX {index}")), "{sql}: {plan}");
            // Neither every stored body read, nor sorted.
            for step in &steps {
                let whole = (step.starts_with("SCAN runs") || step.starts_with("SCAN plans"))
                    && !step.contains("INDEX");
                assert!(!whole && !step.contains("FOR ORDER BY"), "{sql}: {plan}");
            }
        }
    }

    #[test]
    fn pages_stop_at_their_byte_budget_and_events_reads_them_all() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let shard = ensemble_protocol::event::ShardRef {
            shard: 1,
            machine: "m".into(),
            role: "r".into(),
            suite: "s".into(),
            instance: 0,
        };
        let big = |seq| Event {
            run: "r".into(),
            seq,
            at_us: 0,
            machine_at_us: None,
            kind: EventKind::Log {
                shard: shard.clone(),
                test: "t".into(),
                level: "info".into(),
                message: "x".repeat(6 << 20),
            },
        };
        let mut events: Vec<Event> = (1..=4).map(big).collect();
        s.write_batch(&mut events, &[]).unwrap();
        assert_eq!(s.events_page("r", 1, 1000).unwrap().len(), 3, "a page ends past its budget");
        assert_eq!(s.events("r", 1).unwrap().len(), 4, "every event, over several pages");
        let sizes = s.event_sizes("r", 2, 1000).unwrap();
        assert_eq!(sizes.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(), [2, 3, 4]);
        assert!(sizes.iter().all(|(_, size)| *size > 6 << 20));
        let bodies = s.event_bodies("r", 2, 1000).unwrap();
        assert_eq!(
            bodies.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            [2, 3, 4],
            "the same pages, as stored"
        );
        assert_eq!(bodies[0].1, json(&big(2)), "the JSON a watcher is sent");
    }

    #[test]
    fn the_log_is_checkpointed_apart_and_starts_over_small() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let wal = dir.path().join("ensemble.db-wal");
        let log = |seq: u64| Event {
            run: "r".into(),
            seq,
            at_us: 0,
            machine_at_us: None,
            kind: EventKind::Log {
                shard: ensemble_protocol::event::ShardRef {
                    shard: 1,
                    machine: "m".into(),
                    role: "r".into(),
                    suite: "s".into(),
                    instance: 0,
                },
                test: "t".into(),
                level: "info".into(),
                message: "x".repeat(2000),
            },
        };
        // Past the threshold in commits of their own: SQLite's policy
        // would have checkpointed inside one of them.
        let wal_len = || std::fs::metadata(&wal).map_or(0, |m| m.len());
        let threshold = checkpoint::WAL_PAGES * 4096;
        let mut seq = 0;
        while wal_len() < threshold && seq < 100_000 {
            let mut batch: Vec<Event> = (seq + 1..=seq + 100).map(log).collect();
            seq += 100;
            s.write_batch(&mut batch, &[]).unwrap();
        }
        assert!(wal_len() >= threshold, "a commit checkpointed: the log is {} bytes", wal_len());
        // More rows, a log's worth in one commit, wake the checkpointer,
        // which finds the log long and copies it. A checkpoint already under
        // way when they were written (woken by the rows before, late on a
        // loaded machine) leaves their part: it goes again once the writes
        // pause, and copies all.
        let mut started_over = None;
        for _ in 0..5 {
            let before = s.checkpoints.complete();
            let mut more: Vec<Event> = (seq + 1..=seq + 2_100).map(log).collect();
            seq += 2_100;
            s.write_batch(&mut more, &[]).unwrap();
            let ran = s.checkpoints.wait_for_complete(before + 1, std::time::Duration::from_secs(60));
            assert!(ran, "a checkpoint copied the whole log");
            // Everything is in the database now: the next commit starts the
            // log over, cut back.
            seq += 1;
            s.write_batch(&mut [log(seq)], &[]).unwrap();
            if wal_len() < threshold / 4 {
                started_over = Some(wal_len());
                break;
            }
        }
        assert!(started_over.is_some(), "the log never started over: {} bytes", wal_len());
        assert_eq!(s.events("r", 1).unwrap().len() as u64, seq, "nothing lost");
    }

    #[test]
    fn everything_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.put_plan(&StoredPlan {
                id: "p1".into(),
                plan: plan(),
                created_us: 1,
                updated_us: 1,
                schedules: Vec::new(),
            })
            .unwrap();
            let meta = SuiteMeta {
                sha256: "ab".repeat(32),
                name: "x".into(),
                size: 3,
                kind: "ensemble suite".into(),
                tests: vec![],
                imports: vec![],
                exports: vec![],
                uploaded_us: 1,
                params: None,
                abi: None,
            };
            s.put_suite(&meta, b"abc").unwrap();
            let run = |state| RunMeta {
                id: format!("{state:?}"),
                plan: plan(),
                state,
                started_us: 5,
                finished_us: None,
                summary: None,
                reruns: None,
                scheduled: None,
            };
            s.put_run(&run(RunState::Passed)).unwrap();
            s.put_run(&run(RunState::Running)).unwrap();
            let ev = Event {
                run: "Passed".into(),
                seq: 1,
                at_us: 0,
                machine_at_us: None,
                kind: EventKind::RunFinished {
                    summary: Summary::default(),
                    duration_ms: 1,
                    shard_errors: 0,
                    cancelled: None,
                    verdict: ensemble_protocol::Verdict::Passed,
                },
            };
            s.put_event(&ev).unwrap();
            s.put_event(&ev).unwrap(); // duplicates are ignored
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.plans().unwrap()[0].plan, plan());
        let sha = "ab".repeat(32);
        assert_eq!(s.suite_bytes(&sha).unwrap().unwrap(), b"abc");
        assert_eq!(s.suite(&sha).unwrap().unwrap().name, "x");
        // Anything but 64 hex digits names no file at all.
        assert_eq!(s.suite_bytes("../ensemble.db").unwrap(), None);
        assert_eq!(s.run("Passed").unwrap().unwrap().state, RunState::Passed);
        // Left running, for the coordinator to take up again.
        let running: Vec<String> = s.running_runs().unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(running, ["Running"]);
        assert_eq!(s.events("Passed", 1).unwrap().len(), 1);
        assert_eq!(s.events_outline("Passed").unwrap().len(), 1);
        assert_eq!(s.runs_page(1, 0, None).unwrap().len(), 1);
        assert_eq!(s.runs_page(10, 1, None).unwrap().len(), 1);
        assert!(s.runs_page(10, 2, None).unwrap().is_empty());
        // One plan's runs, by its name.
        let name = plan().name;
        assert_eq!(s.runs_page(10, 0, Some(&name)).unwrap().len(), 2);
        assert!(s.runs_page(10, 0, Some("another plan")).unwrap().is_empty());
        assert_eq!(s.plans_page(1, 0, None).unwrap()[0].id, "p1");
        assert!(s.delete_plan("p1").unwrap());
        assert!(!s.delete_plan("p1").unwrap());
    }

    #[test]
    fn a_page_of_plans_is_bounded_in_bytes_as_in_items() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        for i in 0..4 {
            let mut plan = plan();
            plan.description = "d".repeat(6 << 20);
            s.put_plan(&StoredPlan {
                id: format!("big-{i}"),
                plan,
                created_us: i,
                updated_us: i,
                schedules: Vec::new(),
            })
            .unwrap();
        }
        assert_eq!(s.plan_count().unwrap(), 4);
        // 16 MiB a page: the third plan crosses it and ends the page.
        let first: Vec<String> = s.plans_page(1000, 0, None).unwrap().into_iter().map(|p| p.id).collect();
        assert_eq!(first, ["big-0", "big-1", "big-2"]);
        assert_eq!(s.plans_page(1000, 3, None).unwrap().len(), 1, "the next page starts past them");
        assert_eq!(s.plans().unwrap().len(), 4, "the scheduler reads them all");
    }

    #[test]
    fn a_page_of_plans_of_one_name_holds_those_only_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        for (id, name, created_us) in [("a2", "a", 30), ("b1", "b", 10), ("a1", "a", 20), ("a3", "a", 40)] {
            let mut plan = plan();
            plan.name = name.to_string();
            s.put_plan(&StoredPlan { id: id.into(), plan, created_us, updated_us: 0, schedules: Vec::new() })
                .unwrap();
        }
        let ids = |page: Vec<StoredPlan>| page.into_iter().map(|p| p.id).collect::<Vec<_>>();
        assert_eq!(ids(s.plans_page(1000, 0, Some("a")).unwrap()), ["a1", "a2", "a3"]);
        assert_eq!(ids(s.plans_page(1, 1, Some("a")).unwrap()), ["a2"]);
        assert_eq!(ids(s.plans_page(1000, 0, Some("b")).unwrap()), ["b1"]);
        assert!(s.plans_page(1000, 0, Some("c")).unwrap().is_empty());
    }

    #[test]
    fn attachment_bytes_go_to_disk_and_events_keep_only_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let bytes: Vec<u8> = (0..=255).cycle().take(70_000).collect();
        let sha = crate::sandbox::sha256_hex(&bytes);
        let shard = ensemble_protocol::ShardRef {
            shard: 1,
            machine: "m".into(),
            role: "r".into(),
            suite: "s".into(),
            instance: 0,
        };
        let mut events = vec![Event {
            run: "r".into(),
            seq: 1,
            at_us: 0,
            machine_at_us: None,
            kind: EventKind::Attachment {
                shard,
                test: "t".into(),
                name: "blob.bin".into(),
                sha256: sha.clone(),
                size: bytes.len() as u64,
                data: Some(ensemble_protocol::attachment::Blob(bytes.clone())),
            },
        }];
        let bodies = s.write_batch(&mut events, &[]).unwrap();
        assert!(bodies[0].len() < 1000, "the stored event is small: {} bytes", bodies[0].len());
        assert!(matches!(&events[0].kind, EventKind::Attachment { data: None, .. }), "watchers get no bytes");
        let stored = s.events("r", 1).unwrap();
        assert!(matches!(&stored[0].kind, EventKind::Attachment { data: None, .. }));
        assert_eq!(s.attachment_name("r", &sha).unwrap().as_deref(), Some("blob.bin"));
        assert_eq!(s.attachment_name("other", &sha).unwrap(), None, "only the run's own");
        assert_eq!(s.attachment_bytes(&sha).unwrap(), Some(bytes));
        assert_eq!(s.attachment_bytes("../ensemble.db").unwrap(), None, "only sha256 names");
    }

    #[test]
    fn attachments_past_their_retention_or_the_budget_are_swept_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        // Three runs, started at 10, 20 and 30, each attaching 1,000 bytes
        // of its own; and one file no run refers to.
        let mut shas = Vec::new();
        for (i, started) in [10i64, 20, 30].into_iter().enumerate() {
            let id = format!("run-{i}");
            s.put_run(&RunMeta {
                id: id.clone(),
                plan: plan(),
                state: RunState::Passed,
                started_us: started,
                finished_us: None,
                summary: None,
                reruns: None,
                scheduled: None,
            })
            .unwrap();
            let bytes = vec![i as u8; 1000];
            let sha = crate::sandbox::sha256_hex(&bytes);
            let shard = ensemble_protocol::ShardRef {
                shard: 1,
                machine: "m".into(),
                role: "r".into(),
                suite: "s".into(),
                instance: 0,
            };
            let mut events = vec![Event {
                run: id,
                seq: 1,
                at_us: started,
                machine_at_us: None,
                kind: EventKind::Attachment {
                    shard,
                    test: "t".into(),
                    name: "f.bin".into(),
                    sha256: sha.clone(),
                    size: 1000,
                    data: Some(ensemble_protocol::attachment::Blob(bytes)),
                },
            }];
            s.write_batch(&mut events, &[]).unwrap();
            shas.push(sha);
        }
        let orphan = crate::sandbox::sha256_hex(b"orphan");
        std::fs::write(dir.path().join("attachments").join(&orphan), b"orphan").unwrap();
        // A file just written is spared (its events may be on their way) ...
        assert_eq!(s.sweep_attachments(i64::MAX, 0).unwrap().files, 0);
        // ... these were written an hour ago.
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for e in std::fs::read_dir(dir.path().join("attachments")).unwrap().flatten() {
            std::fs::File::options().write(true).open(e.path()).unwrap().set_modified(hour_ago).unwrap();
        }
        // Retention: runs that started before 15 lose theirs; the orphan goes too.
        let swept = s.sweep_attachments(15, u64::MAX).unwrap();
        assert_eq!((swept.files, swept.bytes, swept.kept_files, swept.kept_bytes), (2, 1006, 2, 2000));
        assert_eq!(s.attachment_bytes(&shas[0]).unwrap(), None);
        assert!(s.attachment_bytes(&shas[1]).unwrap().is_some());
        // Budget: the oldest run's go first until the rest fit.
        let swept = s.sweep_attachments(0, 1500).unwrap();
        assert_eq!((swept.files, swept.kept_bytes), (1, 1000));
        assert_eq!(s.attachment_bytes(&shas[1]).unwrap(), None);
        assert!(s.attachment_bytes(&shas[2]).unwrap().is_some());
        // The events keep the name.
        assert_eq!(s.attachment_name("run-1", &shas[1]).unwrap().as_deref(), Some("f.bin"));
        assert_eq!(s.sweep_attachments(0, 1500).unwrap().files, 0, "nothing more to do");
    }

    #[test]
    fn finished_runs_past_their_retention_or_the_count_are_swept_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        // Runs started at 10..=50; the oldest is still running.
        let states =
            [RunState::Running, RunState::Passed, RunState::Failed, RunState::Cancelled, RunState::Passed];
        for (i, state) in states.into_iter().enumerate() {
            let id = format!("run-{i}");
            let started_us = 10 * (i as i64 + 1);
            s.put_run(&RunMeta {
                id: id.clone(),
                plan: plan(),
                state,
                started_us,
                finished_us: None,
                summary: None,
                reruns: None,
                scheduled: None,
            })
            .unwrap();
            let mut events = vec![Event {
                run: id,
                seq: 1,
                at_us: started_us,
                machine_at_us: None,
                kind: EventKind::RunStarted { plan: "p".into(), shards: Vec::new() },
            }];
            s.write_batch(&mut events, &[]).unwrap();
        }
        // Retention: finished runs that started before 25 go (run-1), with their events.
        let swept = s.sweep_runs(25, u64::MAX).unwrap();
        assert_eq!(swept, SweptRuns { runs: 1, events: 1, kept_runs: 3 });
        assert!(s.run("run-1").unwrap().is_none());
        assert!(s.events("run-1", 1).unwrap().is_empty());
        assert!(s.run("run-0").unwrap().is_some(), "a running run is never removed");
        // Count: past 2 finished runs, the oldest go first.
        let swept = s.sweep_runs(0, 2).unwrap();
        assert_eq!(swept, SweptRuns { runs: 1, events: 1, kept_runs: 2 });
        assert!(s.run("run-2").unwrap().is_none());
        assert!(s.run("run-3").unwrap().is_some() && s.run("run-4").unwrap().is_some());
        assert_eq!(s.sweep_runs(0, 2).unwrap().runs, 0, "nothing more to do");
    }

    #[test]
    fn suites_no_plan_or_run_names_are_swept_past_their_age_or_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let sha = |i: u8| format!("{i:02x}").repeat(32);
        for i in 1..=4u8 {
            let meta = SuiteMeta {
                sha256: sha(i),
                name: format!("s{i}"),
                size: 1000,
                kind: "ensemble suite".into(),
                tests: vec![],
                imports: vec![],
                exports: vec![],
                uploaded_us: i64::from(i) * 10,
                params: None,
                abi: None,
            };
            s.put_suite(&meta, &[i; 1000]).unwrap();
        }
        // A plan names suite 1, a run suite 2; 3 and 4 are named by none.
        let naming = |i: u8| {
            let mut plan = plan();
            plan.entries[0].suite = format!("sha256:{}", sha(i));
            plan
        };
        s.put_plan(&StoredPlan {
            id: "p".into(),
            plan: naming(1),
            created_us: 0,
            updated_us: 0,
            schedules: vec![],
        })
        .unwrap();
        s.put_run(&RunMeta {
            id: "r".into(),
            plan: naming(2),
            state: RunState::Passed,
            started_us: 0,
            finished_us: None,
            summary: None,
            reruns: None,
            scheduled: None,
        })
        .unwrap();
        // Age: unnamed suites uploaded before 35 go (3); named ones stay.
        let swept = s.sweep_suites(35, u64::MAX).unwrap();
        assert_eq!((swept.suites, swept.kept), (1, 3));
        assert!(s.suite(&sha(3)).unwrap().is_none() && s.suite_bytes(&sha(3)).unwrap().is_none());
        // Budget: past it the oldest unnamed go, never a named one.
        let swept = s.sweep_suites(0, 0).unwrap();
        assert_eq!((swept.suites, swept.kept, swept.kept_bytes), (1, 2, 2000));
        assert!(s.suite(&sha(1)).unwrap().is_some() && s.suite(&sha(2)).unwrap().is_some());
        // One uploaded in the last minutes is spared: what names it may be on its way.
        let mut fresh = s.suite(&sha(1)).unwrap().unwrap();
        fresh.sha256 = sha(9);
        fresh.uploaded_us = crate::time::now_us();
        s.put_suite(&fresh, b"new").unwrap();
        assert_eq!(s.sweep_suites(i64::MAX, 0).unwrap().suites, 0);
    }

    #[test]
    fn a_runs_outline_leaves_out_outputs_and_log_text_and_keeps_the_rest() {
        use ensemble_protocol::Outcome;
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let shard = ensemble_protocol::ShardRef {
            shard: 1,
            machine: "m".into(),
            role: "r".into(),
            suite: "s".into(),
            instance: 0,
        };
        let event =
            |seq: u64, kind: EventKind| Event { run: "r".into(), seq, at_us: 1, machine_at_us: None, kind };
        let mut events = vec![
            event(
                1,
                EventKind::Log {
                    shard: shard.clone(),
                    test: "t".into(),
                    level: "info".into(),
                    message: "x".repeat(1 << 20),
                },
            ),
            event(
                2,
                EventKind::TestFinished {
                    shard: shard.clone(),
                    test: "t".into(),
                    outcome: Outcome::Failed,
                    duration_ms: 1,
                    attempt: 1,
                    message: Some("why".into()),
                    output: "o".repeat(1 << 20),
                },
            ),
            event(
                3,
                EventKind::ShardFinished { shard, summary: Summary::default(), error: Some("kept".into()) },
            ),
        ];
        s.write_batch(&mut events, &[]).unwrap();
        let outline = s.events_outline("r").unwrap();
        assert!(matches!(&outline[0].kind, EventKind::Log { message, .. } if message.is_empty()));
        assert!(matches!(&outline[1].kind,
            EventKind::TestFinished { outcome: Outcome::Failed, test, message: None, output, .. } if test == "t" && output.is_empty()));
        assert!(matches!(&outline[2].kind, EventKind::ShardFinished { error: Some(e), .. } if e == "kept"));
    }
}
