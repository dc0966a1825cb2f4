//! `SqliteLogStore`: the embedded `LogStore` behind `sandcron dev` — one SQLite
//! file in WAL mode, one writer connection and a small pool of readers, every
//! call run on tokio's blocking pool.
//!
//! Each run is stored as its full JSON record next to the columns the queries
//! filter and sort on (`job`, `tick` in unix milliseconds, `status`, `fence`),
//! so the record can grow fields without a migration while every query still
//! walks an index. Output chunks are rows keyed by `(run_id, seq)`.
//!
//! Retention: a run's `expire_at` is also a column, and `purge(before)` deletes
//! the finished runs whose `expire_at` is before `before` (or, without one,
//! whose tick is), with their output — the rule the MongoDB store's TTL
//! indexes apply continuously. SQLite has no TTL monitor, so `sandcron dev`
//! calls `purge` periodically.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::types::Value;
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params, params_from_iter};
use tokio::sync::Semaphore;

use crate::ids::{JobName, RunId};
use crate::logstore::store::{ceil_millisecond, decode_cursor, encode_cursor};
use crate::logstore::{LogBatch, LogStore, LogStoreError, RunPage, RunQuery, supersedes};
use crate::run::{OutputChunk, RunRecord, RunStatus, StreamKind};

/// `RunQuery::limit` when the caller passes 0.
const DEFAULT_RUNS_LIMIT: usize = 100;
/// The most runs one page holds.
const MAX_RUNS_LIMIT: usize = 1000;
/// `output` limit when the caller passes 0.
const DEFAULT_OUTPUT_LIMIT: usize = 1000;
/// The most chunks one `output` call returns.
const MAX_OUTPUT_LIMIT: usize = 10_000;
/// Readers in the pool: enough that the console's polling never waits for a
/// connection on a small machine, few enough to keep file handles cheap.
const READERS: usize = 4;
/// How long a connection waits for a lock held by another process (a second
/// `sandcron dev` on the same directory, a `sqlite3` shell) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Runs deleted per purge transaction, so a large purge never holds the write
/// lock long enough to stall the sink.
const PURGE_BATCH: usize = 500;

/// Which finished runs `purge` deletes: expired ones, and those without an
/// expiry whose tick is old. `?1` is the cut-off in unix milliseconds.
/// Written as a union of two ranges so that each half walks an index
/// (`runs_by_expiry`, `runs_by_tick`).
const PURGE_SELECT: &str = "SELECT run_id FROM runs WHERE status <> ?2 \
     AND (expire_at < ?1 OR (expire_at IS NULL AND tick < ?1)) LIMIT ?3";

/// The schema, one entry per version; entry `n` takes a database from version
/// `n` to `n + 1`. Append new entries — never edit old ones.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE runs (
    run_id     TEXT    NOT NULL PRIMARY KEY,
    job        TEXT    NOT NULL,
    tick       INTEGER NOT NULL, -- unix milliseconds
    status     TEXT    NOT NULL,
    fence      INTEGER NOT NULL,
    started_at INTEGER,          -- unix milliseconds
    record     TEXT    NOT NULL  -- the full RunRecord as JSON
);
CREATE INDEX runs_by_job ON runs (job, tick DESC, run_id DESC);
CREATE INDEX runs_by_status ON runs (status, tick DESC, run_id DESC);
CREATE INDEX runs_by_tick ON runs (tick DESC, run_id DESC);
CREATE TABLE output (
    run_id TEXT    NOT NULL,
    seq    INTEGER NOT NULL,
    stream TEXT    NOT NULL,
    at     INTEGER NOT NULL,     -- unix microseconds
    data   TEXT    NOT NULL,
    PRIMARY KEY (run_id, seq)
);
"#,
    // Version 2: retention. The record JSON carries `expire_at` already; the
    // runs column exists for `purge`, the output column to give chunks
    // theirs back. Existing rows get NULL: they never expire by date and are
    // purged by tick, as before.
    r#"
ALTER TABLE runs ADD COLUMN expire_at INTEGER;   -- unix milliseconds; NULL: no expiry
ALTER TABLE output ADD COLUMN expire_at INTEGER; -- unix microseconds, like `at`
CREATE INDEX runs_by_expiry ON runs (expire_at);
"#,
];

/// The embedded log store. Cheap to share: hand out the `Arc`.
pub struct SqliteLogStore {
    writer: Arc<Pool>,
    /// The same pool as `writer` for an in-memory store, whose data only the
    /// connection that created it can see.
    readers: Arc<Pool>,
    location: String,
}

impl fmt::Debug for SqliteLogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteLogStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl SqliteLogStore {
    /// Opens (creating if needed) the store in the file at `path` and brings
    /// its schema up to date. The directory must exist.
    pub fn open(path: &Path) -> Result<Arc<Self>, LogStoreError> {
        let location = path.display().to_string();
        let opening = |e: Failure| {
            let e = LogStoreError::from(e);
            LogStoreError::Other(format!("cannot open log store {location}: {e}"))
        };
        let mut writer = Connection::open(path).map_err(|e| opening(e.into()))?;
        configure(&writer, true).map_err(opening)?;
        migrate(&mut writer).map_err(opening)?;
        // Readers are opened after the writer has switched the file to WAL and
        // created the schema, so they never see a half-made database.
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = Connection::open(path).map_err(|e| opening(e.into()))?;
            configure(&reader, false).map_err(opening)?;
            readers.push(reader);
        }
        Ok(Arc::new(Self {
            writer: Pool::new(vec![writer]),
            readers: Pool::new(readers),
            location,
        }))
    }

    /// A store that lives and dies with the process; for tests and throwaway
    /// `dev` sessions. Reads share the single connection with writes.
    pub fn in_memory() -> Result<Arc<Self>, LogStoreError> {
        let opening = |e: Failure| {
            let e = LogStoreError::from(e);
            LogStoreError::Other(format!("cannot create in-memory log store: {e}"))
        };
        let mut conn = Connection::open_in_memory().map_err(|e| opening(e.into()))?;
        configure(&conn, true).map_err(opening)?;
        migrate(&mut conn).map_err(opening)?;
        let pool = Pool::new(vec![conn]);
        Ok(Arc::new(Self {
            writer: Arc::clone(&pool),
            readers: pool,
            location: ":memory:".to_owned(),
        }))
    }
}

#[async_trait]
impl LogStore for SqliteLogStore {
    async fn write(&self, batch: &LogBatch) -> Result<(), LogStoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // The blocking closure must own its data; encoding here also keeps
        // the work done under the write lock to the SQL itself.
        let runs = batch.runs.iter().map(RunRow::new).collect::<Result<Vec<_>, _>>()?;
        let chunks = batch.chunks.iter().map(ChunkRow::new).collect::<Vec<_>>();
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                {
                    let mut select = tx.prepare_cached("SELECT record FROM runs WHERE run_id = ?1")?;
                    let mut upsert = tx.prepare_cached(
                        "INSERT INTO runs (run_id, job, tick, status, fence, started_at, record, expire_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                         ON CONFLICT (run_id) DO UPDATE SET job = excluded.job, tick = excluded.tick, \
                         status = excluded.status, fence = excluded.fence, \
                         started_at = excluded.started_at, record = excluded.record, \
                         expire_at = excluded.expire_at",
                    )?;
                    // In batch order: a later record of the same run sees the
                    // earlier one as stored, exactly as if written separately.
                    for row in &runs {
                        let stored: Option<String> = select.query_row([&row.run_id], |r| r.get(0)).optional()?;
                        if let Some(stored) = stored {
                            let stored: RunRecord = decode_record(&row.run_id, &stored)?;
                            if !supersedes(&row.record, &stored) {
                                continue;
                            }
                        }
                        upsert.execute(params![
                            row.run_id,
                            row.record.job.as_str(),
                            row.record.tick.as_millisecond(),
                            row.record.status.as_str(),
                            row.record.fence,
                            row.record.started_at.map(Timestamp::as_millisecond),
                            row.json,
                            row.record.expire_at.map(Timestamp::as_millisecond),
                        ])?;
                    }
                    let mut insert = tx.prepare_cached(
                        "INSERT OR IGNORE INTO output (run_id, seq, stream, at, data, expire_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?;
                    for chunk in &chunks {
                        insert.execute(params![
                            chunk.run_id,
                            chunk.seq,
                            chunk.stream,
                            chunk.at,
                            chunk.data,
                            chunk.expire_at
                        ])?;
                    }
                }
                tx.commit()?;
                Ok(())
            })
            .await
    }

    async fn runs(&self, query: &RunQuery) -> Result<RunPage, LogStoreError> {
        let limit = match query.limit {
            0 => DEFAULT_RUNS_LIMIT,
            n => n.min(MAX_RUNS_LIMIT),
        };
        let mut conditions: Vec<&str> = Vec::new();
        let mut args: Vec<Value> = Vec::new();
        if let Some(job) = &query.job {
            conditions.push("job = ?");
            args.push(Value::Text(job.as_str().to_owned()));
        }
        if let Some(status) = query.status {
            conditions.push("status = ?");
            args.push(Value::Text(status.as_str().to_owned()));
        }
        if let Some(since) = query.since {
            conditions.push("tick >= ?");
            args.push(Value::Integer(ceil_millisecond(since)));
        }
        if let Some(until) = query.until {
            conditions.push("tick < ?");
            args.push(Value::Integer(ceil_millisecond(until)));
        }
        if let Some(cursor) = &query.cursor {
            let (tick, run_id) = decode_cursor(cursor)?;
            // Spelled out rather than as a row value so that every SQLite
            // version turns it into a range on the index.
            conditions.push("(tick < ? OR (tick = ? AND run_id < ?))");
            args.extend([
                Value::Integer(tick),
                Value::Integer(tick),
                Value::Text(run_id.to_string()),
            ]);
        }
        let mut sql = String::from("SELECT record FROM runs");
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(" ORDER BY tick DESC, run_id DESC LIMIT ?");
        // One row beyond the page says whether another page exists.
        args.push(Value::Integer(limit as i64 + 1));

        let rows: Vec<String> = self
            .readers
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt
                    .query_map(params_from_iter(args), |row| row.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await?;
        // Decoded outside the blocking call: JSON work needs no connection.
        let mut runs = rows
            .iter()
            .map(|json| serde_json::from_str::<RunRecord>(json))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| LogStoreError::Other(format!("stored run record is unreadable: {e}")))?;
        let next_cursor = if runs.len() > limit {
            runs.truncate(limit);
            runs.last()
                .map(|last| encode_cursor(last.tick.as_millisecond(), last.run_id))
        } else {
            None
        };
        Ok(RunPage { runs, next_cursor })
    }

    async fn run(&self, run_id: RunId) -> Result<Option<RunRecord>, LogStoreError> {
        let key = run_id.to_string();
        self.readers
            .run(move |conn| {
                let mut stmt = conn.prepare_cached("SELECT record FROM runs WHERE run_id = ?1")?;
                let json: Option<String> = stmt.query_row([&key], |row| row.get(0)).optional()?;
                json.map(|json| decode_record(&key, &json)).transpose()
            })
            .await
    }

    async fn output(&self, run_id: RunId, after: Option<u64>, limit: usize) -> Result<Vec<OutputChunk>, LogStoreError> {
        let after = match after {
            None => -1,
            Some(after) => match i64::try_from(after) {
                Ok(after) => after,
                // No stored seq is above i64::MAX (see `ChunkRow::new`).
                Err(_) => return Ok(Vec::new()),
            },
        };
        let limit = match limit {
            0 => DEFAULT_OUTPUT_LIMIT,
            n => n.min(MAX_OUTPUT_LIMIT),
        };
        self.readers
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT seq, stream, at, data, expire_at FROM output \
                     WHERE run_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
                )?;
                let rows = stmt
                    .query_map(params![run_id.to_string(), after, limit as i64], |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, i64>(2)?,
                            row.get::<_, String>(3)?,
                            row.get::<_, Option<i64>>(4)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                rows.into_iter()
                    .map(|(seq, stream, at, data, expire_at)| {
                        let stream = match stream.as_str() {
                            "stdout" => StreamKind::Stdout,
                            "stderr" => StreamKind::Stderr,
                            other => {
                                return Err(Failure::corrupt(format!("output of run {run_id} has stream {other:?}")));
                            }
                        };
                        let seq = u64::try_from(seq)
                            .map_err(|_| Failure::corrupt(format!("output of run {run_id} has seq {seq}")))?;
                        let at = Timestamp::from_microsecond(at)
                            .map_err(|e| Failure::corrupt(format!("output of run {run_id} has time {at}: {e}")))?;
                        let expire_at = expire_at.map(Timestamp::from_microsecond).transpose().map_err(|e| {
                            Failure::corrupt(format!("output of run {run_id} has an unreadable expiry: {e}"))
                        })?;
                        Ok(OutputChunk {
                            expire_at,
                            run_id,
                            seq,
                            stream,
                            at,
                            data,
                        })
                    })
                    .collect()
            })
            .await
    }

    async fn last_runs(&self, jobs: &[JobName]) -> Result<BTreeMap<JobName, RunRecord>, LogStoreError> {
        if jobs.is_empty() {
            return Ok(BTreeMap::new());
        }
        let jobs = jobs.to_vec();
        self.readers
            .run(move |conn| {
                // One read transaction: a consistent snapshot, and one index
                // seek per job instead of a scan.
                let tx = conn.transaction()?;
                let mut newest = BTreeMap::new();
                {
                    let mut stmt = tx.prepare_cached(
                        "SELECT run_id, record FROM runs WHERE job = ?1 ORDER BY tick DESC, run_id DESC LIMIT 1",
                    )?;
                    for job in jobs {
                        let row: Option<(String, String)> = stmt
                            .query_row([job.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))
                            .optional()?;
                        if let Some((run_id, json)) = row {
                            newest.insert(job, decode_record(&run_id, &json)?);
                        }
                    }
                }
                tx.commit()?;
                Ok(newest)
            })
            .await
    }

    async fn purge(&self, before: Timestamp) -> Result<u64, LogStoreError> {
        let before = ceil_millisecond(before);
        let mut deleted = 0u64;
        loop {
            let n = self
                .writer
                .run(move |conn| {
                    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    let n = {
                        let mut select = tx.prepare_cached(PURGE_SELECT)?;
                        let ids = select
                            .query_map(
                                params![before, RunStatus::Running.as_str(), PURGE_BATCH as i64],
                                |row| row.get::<_, String>(0),
                            )?
                            .collect::<Result<Vec<_>, _>>()?;
                        let mut drop_output = tx.prepare_cached("DELETE FROM output WHERE run_id = ?1")?;
                        let mut drop_run = tx.prepare_cached("DELETE FROM runs WHERE run_id = ?1")?;
                        for id in &ids {
                            drop_output.execute([id])?;
                            drop_run.execute([id])?;
                        }
                        ids.len()
                    };
                    tx.commit()?;
                    Ok(n)
                })
                .await?;
            deleted += n as u64;
            if n < PURGE_BATCH {
                return Ok(deleted);
            }
        }
    }
}

/// A fixed set of connections handed out one per call. The permit is taken
/// before the blocking task is spawned, so waiting callers queue as futures
/// rather than as parked threads of the blocking pool.
struct Pool {
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Connection>>,
}

impl Pool {
    fn new(connections: Vec<Connection>) -> Arc<Self> {
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(connections.len())),
            idle: Mutex::new(connections),
        })
    }

    async fn run<T, F>(self: &Arc<Self>, work: F) -> Result<T, LogStoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Failure> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| LogStoreError::Other("log store is closed".to_owned()))?;
        let pool = Arc::clone(self);
        let task = tokio::task::spawn_blocking(move || {
            // Moved in so that the permit is released only once the
            // connection is back, even if the caller stopped waiting.
            let _permit = permit;
            let mut lease = Lease {
                pool: &pool,
                conn: pool.take(),
            };
            match lease.conn.as_mut() {
                Some(conn) => work(conn),
                None => Err(Failure::Store(LogStoreError::Other(
                    "log store connection was lost".to_owned(),
                ))),
            }
        });
        match task.await {
            Ok(result) => result.map_err(LogStoreError::from),
            Err(e) => Err(LogStoreError::Other(format!("log store task failed: {e}"))),
        }
    }

    fn take(&self) -> Option<Connection> {
        crate::sync::lock(&self.idle).pop()
    }
}

/// Returns its connection to the pool when dropped, even by a panic (a
/// transaction left open rolls back when its guard unwinds).
struct Lease<'a> {
    pool: &'a Pool,
    conn: Option<Connection>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            crate::sync::lock(&self.pool.idle).push(conn);
        }
    }
}

/// What goes wrong inside a pooled call: SQLite's error, or one of ours.
enum Failure {
    Sql(rusqlite::Error),
    Store(LogStoreError),
}

impl Failure {
    fn corrupt(message: String) -> Self {
        Failure::Store(LogStoreError::Other(message))
    }
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sql(e)
    }
}

impl From<LogStoreError> for Failure {
    fn from(e: LogStoreError) -> Self {
        Failure::Store(e)
    }
}

impl From<Failure> for LogStoreError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Store(e) => e,
            Failure::Sql(e) => {
                // Locks held elsewhere and I/O trouble (a full disk, say) can
                // clear up, so the sink retries them; anything else is a bug
                // or a damaged file and retrying will not help.
                let transient = matches!(
                    e.sqlite_error_code(),
                    Some(
                        ErrorCode::DatabaseBusy
                            | ErrorCode::DatabaseLocked
                            | ErrorCode::SystemIoFailure
                            | ErrorCode::DiskFull
                            | ErrorCode::CannotOpen
                            | ErrorCode::OutOfMemory
                    )
                );
                if transient {
                    LogStoreError::Unavailable(e.to_string())
                } else {
                    LogStoreError::Other(e.to_string())
                }
            }
        }
    }
}

/// A run record ready to bind.
struct RunRow {
    run_id: String,
    json: String,
    record: RunRecord,
}

impl RunRow {
    fn new(record: &RunRecord) -> Result<Self, LogStoreError> {
        let json = serde_json::to_string(record)
            .map_err(|e| LogStoreError::Invalid(format!("run {} cannot be encoded: {e}", record.run_id)))?;
        Ok(Self {
            run_id: record.run_id.to_string(),
            json,
            record: record.clone(),
        })
    }
}

/// An output chunk ready to bind.
struct ChunkRow {
    run_id: String,
    seq: i64,
    stream: &'static str,
    at: i64,
    data: String,
    expire_at: Option<i64>,
}

impl ChunkRow {
    fn new(chunk: &OutputChunk) -> Self {
        Self {
            run_id: chunk.run_id.to_string(),
            // A run would need 2^63 chunks to get here; saturate rather than
            // fail the whole batch over it.
            seq: i64::try_from(chunk.seq).unwrap_or(i64::MAX),
            stream: match chunk.stream {
                StreamKind::Stdout => "stdout",
                StreamKind::Stderr => "stderr",
            },
            at: chunk.at.as_microsecond(),
            data: chunk.data.clone(),
            expire_at: chunk.expire_at.map(Timestamp::as_microsecond),
        }
    }
}

fn decode_record(run_id: &str, json: &str) -> Result<RunRecord, Failure> {
    serde_json::from_str(json).map_err(|e| Failure::corrupt(format!("stored run {run_id} is unreadable: {e}")))
}

fn configure(conn: &Connection, writer: bool) -> Result<(), Failure> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(64);
    if writer {
        // WAL lets the readers run while the writer commits; an in-memory
        // database answers "memory", which is fine.
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        // NORMAL in WAL mode loses at most the last commits on power loss,
        // never consistency; the sink's replays cover the rest.
        conn.execute_batch("PRAGMA synchronous = NORMAL;")?;
    } else {
        conn.execute_batch("PRAGMA query_only = ON;")?;
    }
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), Failure> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);")?;
    let current: Option<i64> = tx
        .query_row("SELECT version FROM schema_version", [], |row| row.get(0))
        .optional()?;
    let known = MIGRATIONS.len();
    let current = match current {
        None => 0,
        Some(v) => usize::try_from(v).map_err(|_| Failure::corrupt(format!("schema version {v} is not valid")))?,
    };
    if current > known {
        return Err(Failure::corrupt(format!(
            "the log store has schema version {current}, newer than this sandcron knows ({known}); upgrade sandcron"
        )));
    }
    for migration in &MIGRATIONS[current..] {
        tx.execute_batch(migration)?;
    }
    if current == 0 {
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [known as i64])?;
    } else if current < known {
        tx.execute("UPDATE schema_version SET version = ?1", [known as i64])?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logstore::conformance;

    #[tokio::test]
    async fn in_memory_store_passes_the_conformance_suite() {
        let store = SqliteLogStore::in_memory().unwrap();
        conformance::run_all(store, "mem").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn file_store_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteLogStore::open(&dir.path().join("logs.db")).unwrap();
        conformance::run_all(store.clone(), "file").await;
        // A second pass in the same database shows the checks keep apart.
        conformance::run_all(store, "again").await;
    }

    #[tokio::test]
    async fn reopening_keeps_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs.db");
        let record = conformance::sample_record(
            &JobName::new("reopen").unwrap(),
            Timestamp::UNIX_EPOCH,
            RunStatus::Succeeded,
            3,
        );
        let chunk = OutputChunk {
            expire_at: None,
            run_id: record.run_id,
            seq: 0,
            stream: StreamKind::Stderr,
            at: Timestamp::from_microsecond(1_700_000_000_123_456).unwrap(),
            data: "kept\n".to_owned(),
        };
        {
            let store = SqliteLogStore::open(&path).unwrap();
            store
                .write(&LogBatch {
                    runs: vec![record.clone()],
                    chunks: vec![chunk.clone()],
                })
                .await
                .unwrap();
        }
        let store = SqliteLogStore::open(&path).unwrap();
        assert_eq!(store.run(record.run_id).await.unwrap(), Some(record.clone()));
        assert_eq!(store.output(record.run_id, None, 10).await.unwrap(), vec![chunk]);
        let version: i64 = store
            .writer
            .run(|conn| Ok(conn.query_row("SELECT version FROM schema_version", [], |row| row.get(0))?))
            .await
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }

    #[tokio::test]
    async fn sqlite_keeps_full_timestamp_precision() {
        // Stricter than the conformance suite (which allows MongoDB's
        // milliseconds): the record is stored as JSON, so nanoseconds survive.
        let store = SqliteLogStore::in_memory().unwrap();
        let mut record = conformance::sample_record(
            &JobName::new("precise").unwrap(),
            Timestamp::new(1_700_000_000, 123_456_789).unwrap(),
            RunStatus::Running,
            1,
        );
        record.started_at = Some(Timestamp::new(1_700_000_001, 1).unwrap());
        store
            .write(&LogBatch {
                runs: vec![record.clone()],
                chunks: vec![],
            })
            .await
            .unwrap();
        assert_eq!(store.run(record.run_id).await.unwrap(), Some(record));
    }

    #[tokio::test]
    async fn a_version_1_database_upgrades_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs.db");
        // What sandcron 0.1 left behind: the version-1 schema and its rows,
        // whose records have no `expire_at`.
        let old = conformance::sample_record(
            &JobName::new("before-upgrade").unwrap(),
            Timestamp::from_millisecond(3_600_000).unwrap(),
            RunStatus::Succeeded,
            1,
        );
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (1);",
            )
            .unwrap();
            conn.execute(
                "INSERT INTO runs (run_id, job, tick, status, fence, started_at, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    old.run_id.to_string(),
                    old.job.as_str(),
                    old.tick.as_millisecond(),
                    old.status.as_str(),
                    old.fence,
                    old.started_at.map(Timestamp::as_millisecond),
                    serde_json::to_string(&old).unwrap(),
                ],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO output (run_id, seq, stream, at, data) VALUES (?1, 0, 'stdout', ?2, 'old\n')",
                params![old.run_id.to_string(), old.tick.as_microsecond()],
            )
            .unwrap();
        }

        let store = SqliteLogStore::open(&path).unwrap();
        let version: i64 = store
            .writer
            .run(|conn| Ok(conn.query_row("SELECT version FROM schema_version", [], |row| row.get(0))?))
            .await
            .unwrap();
        assert_eq!(version, 2);
        assert_eq!(store.run(old.run_id).await.unwrap(), Some(old.clone()));
        let chunks = store.output(old.run_id, None, 10).await.unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].expire_at, None);

        // New rows carry an expiry; the old one is purged by its tick.
        let mut new = conformance::sample_record(
            &JobName::new("after-upgrade").unwrap(),
            Timestamp::from_millisecond(3_600_000).unwrap(),
            RunStatus::Succeeded,
            1,
        );
        new.expire_at = Some(Timestamp::from_millisecond(4_000_000_000_000).unwrap());
        store
            .write(&LogBatch {
                runs: vec![new.clone()],
                chunks: vec![],
            })
            .await
            .unwrap();
        assert_eq!(
            store
                .purge(Timestamp::from_millisecond(7_200_000).unwrap())
                .await
                .unwrap(),
            1
        );
        assert_eq!(store.run(old.run_id).await.unwrap(), None);
        assert!(store.output(old.run_id, None, 10).await.unwrap().is_empty());
        assert_eq!(store.run(new.run_id).await.unwrap(), Some(new));

        // Opening again changes nothing.
        drop(store);
        let store = SqliteLogStore::open(&path).unwrap();
        let version: i64 = store
            .writer
            .run(|conn| Ok(conn.query_row("SELECT version FROM schema_version", [], |row| row.get(0))?))
            .await
            .unwrap();
        assert_eq!(version, 2);
    }

    #[tokio::test]
    async fn chunk_expiry_keeps_microseconds() {
        let store = SqliteLogStore::in_memory().unwrap();
        let chunk = OutputChunk {
            expire_at: Some(Timestamp::new(1_900_000_000, 123_456_000).unwrap()),
            run_id: RunId::generate(),
            seq: 0,
            stream: StreamKind::Stdout,
            at: Timestamp::new(1_700_000_000, 654_321_000).unwrap(),
            data: "x\n".to_owned(),
        };
        store
            .write(&LogBatch {
                runs: vec![],
                chunks: vec![chunk.clone()],
            })
            .await
            .unwrap();
        assert_eq!(store.output(chunk.run_id, None, 10).await.unwrap(), vec![chunk]);
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs.db");
        drop(SqliteLogStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute("UPDATE schema_version SET version = 99", []).unwrap();
        drop(conn);
        let err = SqliteLogStore::open(&path).unwrap_err().to_string();
        assert!(err.contains("schema version 99"), "{err}");
    }

    #[tokio::test]
    async fn queries_walk_indexes() {
        let store = SqliteLogStore::in_memory().unwrap();
        let plans = [
            "SELECT record FROM runs WHERE job = ?1 ORDER BY tick DESC, run_id DESC LIMIT 101",
            "SELECT record FROM runs WHERE job = ?1 AND (tick < ?2 OR (tick = ?2 AND run_id < ?3)) \
             ORDER BY tick DESC, run_id DESC LIMIT 101",
            "SELECT record FROM runs WHERE status = ?1 ORDER BY tick DESC, run_id DESC LIMIT 101",
            "SELECT record FROM runs WHERE tick >= ?1 AND tick < ?2 ORDER BY tick DESC, run_id DESC LIMIT 101",
            "SELECT record FROM runs ORDER BY tick DESC, run_id DESC LIMIT 101",
            PURGE_SELECT,
            "SELECT seq, stream, at, data FROM output WHERE run_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        ];
        for sql in plans {
            let explain = format!("EXPLAIN QUERY PLAN {sql}");
            let purge = sql == PURGE_SELECT;
            let plan: Vec<String> = store
                .readers
                .run(move |conn| {
                    let mut stmt = conn.prepare(&explain)?;
                    let count = stmt.parameter_count();
                    let args: Vec<Value> = (0..count).map(|_| Value::Null).collect();
                    let rows = stmt.query_map(params_from_iter(args), |row| row.get::<_, String>(3))?;
                    Ok(rows.collect::<Result<Vec<_>, _>>()?)
                })
                .await
                .unwrap();
            let plan = plan.join("; ");
            assert!(
                plan.contains("USING INDEX") || plan.contains("USING COVERING INDEX"),
                "{sql}: {plan}"
            );
            if purge {
                // Both halves of the OR walk an index, rather than one scan.
                assert!(plan.contains("MULTI-INDEX OR"), "{sql}: {plan}");
                assert!(!plan.contains("SCAN runs"), "{sql}: {plan}");
            }
            assert!(!plan.contains("TEMP B-TREE"), "{sql} sorts outside an index: {plan}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_do_not_wait_for_the_writer() {
        // Hold the writer connection inside an open write transaction and
        // show that a read still completes: readers have their own
        // connections and WAL gives them the last committed snapshot.
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteLogStore::open(&dir.path().join("logs.db")).unwrap();
        let record = conformance::sample_record(
            &JobName::new("busy").unwrap(),
            Timestamp::UNIX_EPOCH,
            RunStatus::Failed,
            1,
        );
        store
            .write(&LogBatch {
                runs: vec![record.clone()],
                chunks: vec![],
            })
            .await
            .unwrap();

        let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let writer = tokio::spawn({
            let store = Arc::clone(&store);
            async move {
                store
                    .writer
                    .run(move |conn| {
                        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                        tx.execute("DELETE FROM runs", [])?;
                        held_tx.send(()).ok();
                        release_rx.recv().ok();
                        // Rolled back: the read below must never see the delete.
                        drop(tx);
                        Ok(())
                    })
                    .await
                    .unwrap();
            }
        });
        tokio::task::spawn_blocking(move || held_rx.recv().unwrap())
            .await
            .unwrap();
        assert_eq!(store.run(record.run_id).await.unwrap(), Some(record.clone()));
        release_tx.send(()).unwrap();
        writer.await.unwrap();
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let id = RunId::from_parts(5, 9);
        assert_eq!(decode_cursor(&encode_cursor(-12, id)).unwrap(), (-12, id));
        for bad in [
            "",
            "_",
            "12",
            "x_01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "12_nope",
            "12_01ARZ3NDEKTSV4RRFFQ69G5FAV_x",
        ] {
            assert!(matches!(decode_cursor(bad), Err(LogStoreError::Invalid(_))), "{bad:?}");
        }
    }

    #[test]
    fn since_and_until_round_up_to_whole_milliseconds() {
        assert_eq!(ceil_millisecond(Timestamp::from_millisecond(1500).unwrap()), 1500);
        assert_eq!(ceil_millisecond(Timestamp::new(1, 500_000_001).unwrap()), 1501);
        assert_eq!(ceil_millisecond(Timestamp::new(-1, -500_000_001).unwrap()), -1500);
    }
}
