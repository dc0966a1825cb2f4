//! `SqliteLogStore`: the embedded `LogStore` behind `sandcron dev` — one SQLite
//! file in WAL mode, one writer connection and a small pool of readers, every
//! call run on tokio's blocking pool.
//!
//! Each run is stored as its full JSON record next to the columns the queries
//! filter and sort on (`job`, `tick` in unix milliseconds, `status`, `fence`,
//! `worker`, `trigger`), so the record can grow fields without a migration
//! while every query still walks an index. Output chunks are rows keyed by
//! `(run_id, seq)`.
//!
//! Retention: a run's `expire_at` is also a column, and `purge(before)` deletes
//! the finished runs whose `expire_at` is before `before` (or, without one,
//! whose tick is), with their output — the rule the MongoDB store's TTL
//! indexes apply continuously. SQLite has no TTL monitor, so `sandcron dev`
//! calls `purge` periodically.
//!
//! The audit log is the `audit` table, one row per entry (its JSON and the
//! columns its queries filter on); `purge_audit` deletes by its expiry.
//!
//! The files: the schema, its migrations and the settings of every
//! connection (`schema.rs`), the connection pool and the error type of its
//! calls (`pool.rs`), how records and chunks become row values (`rows.rs`)
//! and the audit log's queries (`audit.rs`). This file holds the store, its
//! opening and the `LogStore` methods.

mod audit;
mod pool;
mod rows;
mod schema;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params, params_from_iter};

use self::pool::{Failure, Pool};
use self::rows::{ChunkRow, RunRow, decode_record};
use self::schema::{configure, migrate};
use crate::ids::{JobName, RunId};
use crate::logstore::store::{ceil_millisecond, decode_cursor, output_limit, page, runs_limit, stored_after};
use crate::logstore::{LogBatch, LogStore, LogStoreError, RunPage, RunQuery, supersedes};
use crate::run::{OutputChunk, RunRecord, RunStatus, StreamKind, Trigger};

/// Readers in the pool: enough that the console's polling never waits for a
/// connection on a small machine, few enough to keep file handles cheap.
const READERS: usize = 4;
/// Runs (or audit entries) deleted per purge transaction, so a large purge
/// never holds the write lock long enough to stall the sink.
const PURGE_BATCH: i64 = 500;

/// Which finished runs `purge` deletes: expired ones, and those without an
/// expiry whose tick is old. `?1` is the cut-off in unix milliseconds.
/// Written as a union of two ranges so that each half walks an index
/// (`runs_by_expiry`, `runs_by_tick`).
const PURGE_SELECT: &str = "SELECT run_id FROM runs WHERE status <> ?2 \
     AND (expire_at < ?1 OR (expire_at IS NULL AND tick < ?1)) LIMIT ?3";

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

/// The filter of a page query: conditions joined with AND, and the
/// arguments of their `?` in order. The run history and the audit log
/// build one each, the same way, and [`SqliteLogStore::json_page`] runs it.
#[derive(Debug, Default)]
struct Where {
    conditions: Vec<&'static str>,
    args: Vec<Value>,
}

impl Where {
    /// `condition`, with the arguments of its `?`.
    fn and(&mut self, condition: &'static str, args: impl IntoIterator<Item = Value>) {
        self.conditions.push(condition);
        self.args.extend(args);
    }

    /// `condition` with one text argument, when a `value` is given.
    fn text(&mut self, condition: &'static str, value: Option<&str>) {
        if let Some(value) = value {
            self.and(condition, [Value::Text(value.to_owned())]);
        }
    }

    /// A page's time window over one column: `at_or_after` bound to `since`
    /// and `before` to `until`, each given, as stored (whole milliseconds,
    /// rounded up).
    fn window(
        &mut self,
        at_or_after: &'static str,
        before: &'static str,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    ) {
        for (condition, bound) in [(at_or_after, since), (before, until)] {
            if let Some(bound) = bound {
                self.and(condition, [Value::Integer(ceil_millisecond(bound))]);
            }
        }
    }
}

impl SqliteLogStore {
    /// Purges in transactions of at most [`PURGE_BATCH`] rows: `batch`
    /// deletes one and answers how many it deleted; a short one was the last.
    /// Answers how many were deleted in all.
    async fn purge_in_batches<F>(&self, batch: F) -> Result<u64, LogStoreError>
    where
        F: Fn(&mut Connection) -> Result<usize, Failure> + Clone + Send + 'static,
    {
        let mut deleted = 0u64;
        loop {
            let n = self.writer.run(batch.clone()).await?;
            deleted += n as u64;
            if (n as i64) < PURGE_BATCH {
                return Ok(deleted);
            }
        }
    }

    /// Up to `limit + 1` JSON documents of the one-column `select`, filtered
    /// by `filter` and ordered by `order`: the extra row says whether another
    /// page exists. Decoded outside the blocking call (JSON needs no
    /// connection).
    async fn json_page<T: serde::de::DeserializeOwned>(
        &self,
        select: &str,
        filter: Where,
        order: &str,
        limit: usize,
        what: &str,
    ) -> Result<Vec<T>, LogStoreError> {
        let Where { conditions, mut args } = filter;
        let mut sql = String::from(select);
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(" ORDER BY ");
        sql.push_str(order);
        sql.push_str(" LIMIT ?");
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
        rows.iter()
            .map(|json| serde_json::from_str::<T>(json))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| LogStoreError::Other(format!("stored {what} is unreadable: {e}")))
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
                        "INSERT INTO runs (run_id, job, tick, status, fence, started_at, record, expire_at, \
                         worker, \"trigger\") \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                         ON CONFLICT (run_id) DO UPDATE SET job = excluded.job, tick = excluded.tick, \
                         status = excluded.status, fence = excluded.fence, \
                         started_at = excluded.started_at, record = excluded.record, \
                         expire_at = excluded.expire_at, worker = excluded.worker, \
                         \"trigger\" = excluded.\"trigger\"",
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
                            row.record.worker,
                            row.record.trigger.as_str(),
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
        let limit = runs_limit(query.limit);
        let mut filter = Where::default();
        filter.text("job = ?", query.job.as_ref().map(JobName::as_str));
        filter.text("status = ?", query.status.map(RunStatus::as_str));
        filter.text("worker = ?", query.worker.as_deref());
        filter.text("\"trigger\" = ?", query.trigger.map(Trigger::as_str));
        filter.window("tick >= ?", "tick < ?", query.since, query.until);
        if let Some(cursor) = &query.cursor {
            let (tick, run_id) = decode_cursor(cursor)?;
            // Spelled out rather than as a row value so that every SQLite
            // version turns it into a range on the index.
            filter.and(
                "(tick < ? OR (tick = ? AND run_id < ?))",
                [
                    Value::Integer(tick),
                    Value::Integer(tick),
                    Value::Text(run_id.to_string()),
                ],
            );
        }
        let runs = self
            .json_page(
                "SELECT record FROM runs",
                filter,
                "tick DESC, run_id DESC",
                limit,
                "run record",
            )
            .await?;
        Ok(page(runs, limit))
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
        let Some(after) = stored_after(after) else {
            return Ok(Vec::new());
        };
        let limit = output_limit(limit);
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
        self.purge_in_batches(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = {
                let mut select = tx.prepare_cached(PURGE_SELECT)?;
                let ids = select
                    .query_map(params![before, RunStatus::Running.as_str(), PURGE_BATCH], |row| {
                        row.get::<_, String>(0)
                    })?
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
        .await
    }
}
