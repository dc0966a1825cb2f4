//! `MongoLogStore`: the production `LogStore` on MongoDB — collections `runs`
//! (one document per run, `_id` = run id, replaced on each status change
//! under the fencing rule) and `output` (one document per chunk, `_id` =
//! `<run_id>:<seq>`), with an index for every query the trait makes and TTL
//! indexes on `expire_at` so that a real MongoDB deletes expired logs on its
//! own. No driver type leaves this module.
//!
//! It is plain MongoDB (4.4 or newer, as the driver requires; replica set or
//! not), and it also
//! runs against the test server nx-27017, a MongoDB wire-protocol server on
//! SQLite. Where nx-27017 and MongoDB disagree, the store uses a formulation
//! that is correct on both:
//! - **Instants are queried as integers.** nx-27017 compares BSON dates at
//!   whole seconds (it normalises them through SQLite's `datetime()`), so a
//!   range on a date misses runs in the same second. Every instant a query
//!   filters or sorts on is stored twice: as a BSON date for people and tools
//!   (`tick`, `expire_at`) and as unix milliseconds (`tick_ms`, `expire_ms`),
//!   which both servers compare exactly. Dates are BSON dates: millisecond
//!   precision, so sub-millisecond digits are cut (towards the past).
//! - **The run id tiebreaker is a field of its own** (`run_id`, equal to
//!   `_id`): on nx-27017 a compound index that includes `_id` makes every
//!   later replace fail ("JSON path error near '_id'"), so sorting and
//!   indexes use `run_id`.
//! - **`$or` always sits inside `$and`.** In updates and deletes, nx-27017
//!   applies a top-level `$or` and ignores the other conditions beside it
//!   (`{_id: A, $or: […]}` replaced document B); `{$and: [{_id: A}, {$or:
//!   […]}]}` means the same to MongoDB and works on both. See `with_any`.
//! - **Only duplicate-key errors (11000) are told apart.** nx-27017's error
//!   replies carry no `code`; its write errors do, and 11000 is the one this
//!   store branches on.
//! - **Integers are read leniently**: nx-27017 returns small integers as
//!   Int32 whatever they were written as.
//! - **`result` is stored as JSON text**, not as a sub-document: it is
//!   whatever a guest printed, and keys starting with `$` or holding `.` are
//!   trouble for MongoDB tools and for nx-27017.
//! - Nothing depends on index names, change streams or Decimal128.
//!
//! Known nx-27017 limit, not worked around (it would distort the schema): it
//! treats a string that starts like a date (`2024-01-31…`) as a date in
//! queries, so runs of a job named like that are not found there. Real
//! MongoDB is unaffected.
//!
//! Retention: the TTL indexes (`expireAfterSeconds: 0` on `expire_at`) delete
//! runs and chunks once their `expire_at` passes, within the server's TTL
//! pass (60 s on MongoDB); documents without `expire_at` never expire by TTL.
//! `purge(before)` applies the same rule on demand, plus the tick for runs
//! without an expiry. Unlike `purge`, the TTL monitor does not spare a run
//! still `running` — one would have to run for its whole retention.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt as _, TryStreamExt as _};
use jiff::Timestamp;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::error::{Error as DriverError, ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::ids::{JobName, ModuleDigest, RunId};
use crate::logstore::store::{ceil_millisecond, decode_cursor, encode_cursor};
use crate::logstore::{LogBatch, LogStore, LogStoreError, RunPage, RunQuery};
use crate::run::{OutputChunk, RunRecord, RunStatus, StreamKind, Trigger};

/// Where and how to reach MongoDB.
#[derive(Clone)]
pub struct MongoConfig {
    /// A MongoDB connection string: `mongodb://host1,host2/?replicaSet=rs0`.
    /// (`mongodb+srv://` needs the driver's DNS resolver, which this build
    /// leaves out; list the hosts instead.)
    pub uri: String,
    /// Default `sandcron`.
    pub database: String,
    /// Connections per server; the driver's default (10) when `None`.
    pub max_pool_size: Option<u32>,
    pub connect_timeout: Duration,
    /// How long an operation waits for a usable server before it fails as
    /// `Unavailable`. Short, because the sink spools rather than waits and the
    /// API should answer "unavailable" rather than hang.
    pub server_selection_timeout: Duration,
}

impl Default for MongoConfig {
    fn default() -> Self {
        Self {
            uri: "mongodb://127.0.0.1:27017".to_owned(),
            database: "sandcron".to_owned(),
            max_pool_size: None,
            connect_timeout: Duration::from_secs(10),
            server_selection_timeout: Duration::from_secs(5),
        }
    }
}

impl fmt::Debug for MongoConfig {
    // The URI may hold a password; it is left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoConfig")
            .field("database", &self.database)
            .field("max_pool_size", &self.max_pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("server_selection_timeout", &self.server_selection_timeout)
            .finish_non_exhaustive()
    }
}

/// The MongoDB log store. Cheap to share: hand out the `Arc`.
pub struct MongoLogStore {
    db: Database,
    runs: Collection<RunDoc>,
    output: Collection<ChunkDoc>,
    database: String,
}

impl fmt::Debug for MongoLogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoLogStore")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// `RunQuery::limit` when the caller passes 0.
const DEFAULT_RUNS_LIMIT: usize = 100;
/// The most runs one page holds.
const MAX_RUNS_LIMIT: usize = 1000;
/// `output` limit when the caller passes 0.
const DEFAULT_OUTPUT_LIMIT: usize = 1000;
/// The most chunks one `output` call returns.
const MAX_OUTPUT_LIMIT: usize = 10_000;
/// Runs deleted per purge round, so a large purge is many small deletes
/// rather than one that holds the server (and the sink) up.
const PURGE_BATCH: i64 = 500;
/// `last_runs` asks for each job separately (one index seek each); this many
/// at a time.
const LAST_RUNS_CONCURRENCY: usize = 8;
/// MongoDB's duplicate-key error: the one code this store acts on.
const DUPLICATE_KEY: i32 = 11000;

impl MongoLogStore {
    /// Connects to `config.uri` and makes sure the collections and indexes
    /// exist (creating what is missing; a no-op when they do). Fails with
    /// `Unavailable` when no server answers within the selection timeout.
    pub async fn connect(config: &MongoConfig) -> Result<Arc<Self>, LogStoreError> {
        let mut options = ClientOptions::parse(&config.uri)
            .await
            .map_err(|e| LogStoreError::Invalid(format!("invalid MongoDB connection string: {e}")))?;
        options.app_name = Some("sandcron".to_owned());
        options.connect_timeout = Some(config.connect_timeout);
        options.server_selection_timeout = Some(config.server_selection_timeout);
        if config.max_pool_size.is_some() {
            options.max_pool_size = config.max_pool_size;
        }
        let client = Client::with_options(options).map_err(store_error)?;
        let db = client.database(&config.database);
        let store = Self {
            db: db.clone(),
            runs: db.collection("runs"),
            output: db.collection("output"),
            database: config.database.clone(),
        };
        store.create_indexes().await?;
        Ok(Arc::new(store))
    }

    /// The indexes behind every query below. Creating an index that exists
    /// with the same keys and options does nothing, so this runs at every
    /// start. Names are left to the server: nothing refers to them.
    async fn create_indexes(&self) -> Result<(), LogStoreError> {
        let index = |keys: Document| IndexModel::builder().keys(keys).build();
        let ttl = |keys: Document| {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().expire_after(Duration::ZERO).build())
                .build()
        };
        self.runs
            .create_indexes([
                // `runs` by job, by status, by time; `last_runs`.
                index(doc! { "job": 1, "tick_ms": -1, "run_id": -1 }),
                index(doc! { "status": 1, "tick_ms": -1, "run_id": -1 }),
                index(doc! { "tick_ms": -1, "run_id": -1 }),
                // `purge` by expiry (the tick half uses the index above).
                index(doc! { "expire_ms": 1 }),
                ttl(doc! { "expire_at": 1 }),
            ])
            .await
            .map_err(store_error)?;
        self.output
            .create_indexes([
                IndexModel::builder()
                    .keys(doc! { "run_id": 1, "seq": 1 })
                    .options(IndexOptions::builder().unique(true).build())
                    .build(),
                ttl(doc! { "expire_at": 1 }),
            ])
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// Inserts chunks, ignoring the ones already stored: a replayed batch
    /// hits duplicate keys, which is success.
    async fn insert_chunks(&self, chunks: &[OutputChunk]) -> Result<(), LogStoreError> {
        let docs: Vec<ChunkDoc> = chunks.iter().map(ChunkDoc::new).collect();
        match self.output.insert_many(&docs).ordered(false).await {
            Ok(_) => Ok(()),
            Err(e) if only_duplicates(&e) => Ok(()),
            Err(e) => Err(store_error(e)),
        }
    }

    /// Stores `record` unless the stored record of the run supersedes it,
    /// decided by the server in one atomic compare-and-replace: the filter
    /// matches exactly the stored records that `supersedes(record, stored)`
    /// allows replacing, and the upsert inserts when there is none.
    ///
    /// When a record exists and the filter does not match, the upsert's
    /// insert hits the duplicate `_id`. That means the stored record wins —
    /// or that another writer inserted the run between the match and the
    /// insert, in which case the record may still supersede it. So on a
    /// duplicate key the conditional replace runs once more, now without
    /// upsert: the run certainly exists, and whatever it matches is final.
    async fn upsert_run(&self, record: &RunRecord) -> Result<(), LogStoreError> {
        let doc = RunDoc::new(record);
        let filter = supersedable(record);
        match self.runs.replace_one(filter.clone(), &doc).upsert(true).await {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate_key(&e) => {
                self.runs.replace_one(filter, &doc).await.map_err(store_error)?;
                Ok(())
            }
            Err(e) => Err(store_error(e)),
        }
    }

    /// [`Self::upsert_run`] for many runs (each named once) in few round
    /// trips: one `update` command carries up to [`RECORDS_PER_COMMAND`]
    /// conditional replaces, unordered. The statements whose upsert hit a
    /// duplicate `_id` go once more without upsert, in one more command, for
    /// the reason given at `upsert_run`. The plain `update` command is used
    /// (not the driver's `bulk_write`, which needs MongoDB 8.0).
    async fn upsert_runs(&self, records: &[&RunRecord]) -> Result<(), LogStoreError> {
        let mut docs = Vec::with_capacity(records.len());
        for record in records {
            let doc = mongodb::bson::serialize_to_document(&RunDoc::new(record))
                .map_err(|e| LogStoreError::Other(format!("cannot encode the record of run {}: {e}", record.run_id)))?;
            docs.push((supersedable(record), doc));
        }
        let mut start = 0;
        while start < docs.len() {
            // Whole statements up to the count limit, or the byte budget
            // (always at least one, which is below the document limit).
            let mut end = start;
            let mut bytes = 0;
            while end < docs.len() && end - start < RECORDS_PER_COMMAND {
                let size = docs[end].1.to_vec().map_or(0, |v| v.len());
                if end > start && bytes + size > COMMAND_BYTES_BUDGET {
                    break;
                }
                bytes += size;
                end += 1;
            }
            let part = &docs[start..end];
            let statements = |upsert: bool, which: &mut dyn Iterator<Item = usize>| -> Vec<Document> {
                which
                    .map(|i| doc! { "q": part[i].0.clone(), "u": part[i].1.clone(), "upsert": upsert })
                    .collect()
            };
            let duplicates = match self.update_runs(statements(true, &mut (0..part.len()))).await {
                Ok(duplicates) => duplicates,
                // A server that fails the whole command on a duplicate key
                // (rather than the one statement): one record at a time.
                Err(UpdateError::Duplicate) => {
                    for record in &records[start..end] {
                        self.upsert_run(record).await?;
                    }
                    start = end;
                    continue;
                }
                Err(UpdateError::Store(e)) => return Err(e),
            };
            if !duplicates.is_empty() {
                let retry = statements(false, &mut duplicates.iter().copied());
                match self.update_runs(retry).await {
                    Ok(left) if left.is_empty() => {}
                    Ok(_) | Err(UpdateError::Duplicate) => {
                        return Err(LogStoreError::Other(
                            "a run-record replace without upsert reported a duplicate key".to_owned(),
                        ));
                    }
                    Err(UpdateError::Store(e)) => return Err(e),
                }
            }
            start = end;
        }
        Ok(())
    }

    /// Sends one `update` command on `runs`; returns the positions of the
    /// statements that failed on a duplicate key. Any other write error
    /// fails the call (statements before and after it may have applied,
    /// which a replay repeats harmlessly).
    async fn update_runs(&self, statements: Vec<Document>) -> Result<Vec<usize>, UpdateError> {
        let command = doc! { "update": self.runs.name(), "updates": statements, "ordered": false };
        let reply = match self.db.run_command(command).await {
            Ok(reply) => reply,
            Err(e) if is_duplicate_key(&e) => return Err(UpdateError::Duplicate),
            Err(e) => return Err(UpdateError::Store(store_error(e))),
        };
        if let Ok(concern) = reply.get_document("writeConcernError") {
            let message = concern.get_str("errmsg").unwrap_or("no message");
            return Err(UpdateError::Store(LogStoreError::Unavailable(format!(
                "run records were written without their write concern: {message}"
            ))));
        }
        let mut duplicates = Vec::new();
        for error in reply.get_array("writeErrors").map(Vec::as_slice).unwrap_or_default() {
            let Some(error) = error.as_document() else { continue };
            let code = lenient_int(error.get("code"));
            let index = lenient_int(error.get("index")).and_then(|i| usize::try_from(i).ok());
            match (code, index) {
                (Some(code), Some(index)) if code == i64::from(DUPLICATE_KEY) => duplicates.push(index),
                _ => {
                    let message = error.get_str("errmsg").unwrap_or("no message");
                    return Err(UpdateError::Store(LogStoreError::Other(format!(
                        "cannot store a run record: {message}"
                    ))));
                }
            }
        }
        Ok(duplicates)
    }
}

/// Why [`MongoLogStore::update_runs`] failed.
enum UpdateError {
    /// The whole command failed on a duplicate key.
    Duplicate,
    Store(LogStoreError),
}

/// An integer of any BSON width (nx-27017 answers Int32 where MongoDB may
/// answer Int64), or an integral double.
fn lenient_int(value: Option<&Bson>) -> Option<i64> {
    match value? {
        Bson::Int32(n) => Some((*n).into()),
        Bson::Int64(n) => Some(*n),
        #[allow(clippy::cast_possible_truncation)]
        Bson::Double(n) if n.fract() == 0.0 => Some(*n as i64),
        _ => None,
    }
}

#[async_trait]
impl LogStore for MongoLogStore {
    async fn write(&self, batch: &LogBatch) -> Result<(), LogStoreError> {
        // Chunks first: once a run record says the run ended, its output is
        // stored (the API serves a finished run's output as complete).
        if !batch.chunks.is_empty() {
            self.insert_chunks(&batch.chunks).await?;
        }
        // The records of one run go in order, each judged against the one
        // before exactly as if written separately: round k holds the k-th
        // record of every run in the batch, so a round names each run once
        // and its records are independent of each other.
        let mut rounds: Vec<Vec<&RunRecord>> = Vec::new();
        let mut seen: std::collections::HashMap<RunId, usize> = std::collections::HashMap::new();
        for record in &batch.runs {
            let round = seen.entry(record.run_id).or_insert(0);
            if rounds.len() == *round {
                rounds.push(Vec::new());
            }
            rounds[*round].push(record);
            *round += 1;
        }
        for round in rounds {
            self.upsert_runs(&round).await?;
        }
        Ok(())
    }

    async fn runs(&self, query: &RunQuery) -> Result<RunPage, LogStoreError> {
        let limit = match query.limit {
            0 => DEFAULT_RUNS_LIMIT,
            n => n.min(MAX_RUNS_LIMIT),
        };
        let mut filter = Document::new();
        if let Some(job) = &query.job {
            filter.insert("job", job.as_str());
        }
        if let Some(status) = query.status {
            filter.insert("status", status.as_str());
        }
        let mut tick = Document::new();
        if let Some(since) = query.since {
            tick.insert("$gte", ceil_millisecond(since));
        }
        if let Some(until) = query.until {
            tick.insert("$lt", ceil_millisecond(until));
        }
        if !tick.is_empty() {
            filter.insert("tick_ms", tick);
        }
        if let Some(cursor) = &query.cursor {
            let (tick, run_id) = decode_cursor(cursor)?;
            filter = with_any(
                filter,
                [
                    doc! { "tick_ms": { "$lt": tick } },
                    doc! { "tick_ms": tick, "run_id": { "$lt": run_id.to_string() } },
                ],
            );
        }
        // One document beyond the page says whether another page exists.
        let fetch = limit as i64 + 1;
        let docs: Vec<RunDoc> = self
            .runs
            .find(filter)
            .sort(doc! { "tick_ms": -1, "run_id": -1 })
            .limit(fetch)
            .batch_size(fetch as u32)
            .await
            .map_err(store_error)?
            .try_collect()
            .await
            .map_err(store_error)?;
        let mut runs = docs
            .into_iter()
            .map(RunDoc::into_record)
            .collect::<Result<Vec<_>, _>>()?;
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
        self.runs
            .find_one(doc! { "_id": run_id.to_string() })
            .await
            .map_err(store_error)?
            .map(RunDoc::into_record)
            .transpose()
    }

    async fn output(&self, run_id: RunId, after: Option<u64>, limit: usize) -> Result<Vec<OutputChunk>, LogStoreError> {
        let after = match after {
            None => -1,
            Some(after) => match i64::try_from(after) {
                Ok(after) => after,
                // No stored seq is above i64::MAX (see `ChunkDoc::new`).
                Err(_) => return Ok(Vec::new()),
            },
        };
        let limit = match limit {
            0 => DEFAULT_OUTPUT_LIMIT,
            n => n.min(MAX_OUTPUT_LIMIT),
        };
        let docs: Vec<ChunkDoc> = self
            .output
            .find(doc! { "run_id": run_id.to_string(), "seq": { "$gt": after } })
            .sort(doc! { "seq": 1 })
            .limit(limit as i64)
            .batch_size(limit as u32)
            .await
            .map_err(store_error)?
            .try_collect()
            .await
            .map_err(store_error)?;
        docs.into_iter().map(|doc| doc.into_chunk(run_id)).collect()
    }

    async fn last_runs(&self, jobs: &[JobName]) -> Result<BTreeMap<JobName, RunRecord>, LogStoreError> {
        // One index seek per job: `$group` over the whole job index would
        // read every run of every job to keep one each.
        futures::stream::iter(jobs.iter().cloned())
            .map(|job| async move {
                let newest = self
                    .runs
                    .find_one(doc! { "job": job.as_str() })
                    .sort(doc! { "tick_ms": -1, "run_id": -1 })
                    .await
                    .map_err(store_error)?;
                newest
                    .map(|doc| doc.into_record().map(|record| (job, record)))
                    .transpose()
            })
            .buffer_unordered(LAST_RUNS_CONCURRENCY)
            .try_filter_map(|found| async move { Ok(found) })
            .try_collect()
            .await
    }

    async fn purge(&self, before: Timestamp) -> Result<u64, LogStoreError> {
        let before = ceil_millisecond(before);
        let finished = doc! { "status": { "$ne": RunStatus::Running.as_str() } };
        let old = [
            doc! { "expire_ms": { "$lt": before } },
            doc! { "expire_ms": Bson::Null, "tick_ms": { "$lt": before } },
        ];
        let filter = with_any(finished.clone(), old.clone());
        let mut deleted = 0u64;
        loop {
            let ids: Vec<String> = self
                .runs
                .clone_with_type::<IdDoc>()
                .find(filter.clone())
                .projection(doc! { "_id": 1 })
                .limit(PURGE_BATCH)
                .batch_size(PURGE_BATCH as u32)
                .await
                .map_err(store_error)?
                .map_ok(|doc| doc.id)
                .try_collect()
                .await
                .map_err(store_error)?;
            if ids.is_empty() {
                return Ok(deleted);
            }
            // Output first: if this stops half-way, the runs are still there
            // for the next purge to find, rather than output left orphaned.
            self.output
                .delete_many(doc! { "run_id": { "$in": &ids } })
                .await
                .map_err(store_error)?;
            // The filter again: a run rewritten meanwhile (taken over and
            // running again, say) stays.
            let mut these = finished.clone();
            these.insert("_id", doc! { "$in": &ids });
            let n = self
                .runs
                .delete_many(with_any(these, old.clone()))
                .await
                .map_err(store_error)?
                .deleted_count;
            deleted += n;
            if (ids.len() as i64) < PURGE_BATCH || n == 0 {
                return Ok(deleted);
            }
        }
    }
}

/// The stored runs that `record` may replace (see `supersedes`): a lower
/// fence always; the same fence if the stored run is still running, or —
/// for a final record of the run's own (not a `lost` marker written by
/// someone else) — whatever its status.
fn supersedable(record: &RunRecord) -> Document {
    let id = record.run_id.to_string();
    let own_outcome = record.status.is_terminal() && record.status != RunStatus::Lost;
    if own_outcome {
        doc! { "_id": id, "fence": { "$lte": record.fence } }
    } else {
        with_any(
            doc! { "_id": id },
            [
                doc! { "fence": { "$lt": record.fence } },
                doc! { "fence": record.fence, "status": RunStatus::Running.as_str() },
            ],
        )
    }
}

/// `all` and at least one of `any`: `{$and: [all, {$or: any}]}`, never
/// `{…all, $or: any}`, whose other conditions nx-27017 drops in updates and
/// deletes (see the module comment). Just `{$or: any}` when `all` is empty.
fn with_any(all: Document, any: impl IntoIterator<Item = Document>) -> Document {
    let any: Vec<Document> = any.into_iter().collect();
    if all.is_empty() {
        doc! { "$or": any }
    } else {
        doc! { "$and": [all, { "$or": any }] }
    }
}

/// One run, as stored in `runs`.
#[derive(Debug, Serialize, Deserialize)]
struct RunDoc {
    #[serde(rename = "_id")]
    id: String,
    /// The same as `_id`; see the module comment.
    run_id: String,
    job: String,
    tick: DateTime,
    #[serde(deserialize_with = "lenient::int")]
    tick_ms: i64,
    trigger: Trigger,
    #[serde(deserialize_with = "lenient::int")]
    attempt: i64,
    worker: String,
    #[serde(deserialize_with = "lenient::int")]
    fence: i64,
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    module: Option<String>,
    status: RunStatus,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_int"
    )]
    exit_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started_at: Option<DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ended_at: Option<DateTime>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_int"
    )]
    fuel_used: Option<i64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_int"
    )]
    peak_memory: Option<i64>,
    #[serde(deserialize_with = "lenient::int")]
    output_bytes: i64,
    truncated: bool,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_int"
    )]
    missed_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    missed_until: Option<DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result_due: Option<DateTime>,
    /// The guest's result as JSON text; see the module comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expire_at: Option<DateTime>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient::opt_int"
    )]
    expire_ms: Option<i64>,
    /// The parent run (JSON text), for a dependent job's run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent: Option<String>,
    /// The shard (JSON text), for a broadcast job's run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shard: Option<String>,
}

impl RunDoc {
    fn new(record: &RunRecord) -> Self {
        let id = record.run_id.to_string();
        Self {
            run_id: id.clone(),
            id,
            job: record.job.as_str().to_owned(),
            tick: to_date(record.tick),
            tick_ms: record.tick.as_millisecond(),
            trigger: record.trigger,
            attempt: record.attempt.into(),
            worker: record.worker.clone(),
            fence: record.fence,
            kind: record.kind.clone(),
            module: record.module.as_ref().map(|m| m.as_str().to_owned()),
            status: record.status,
            exit_code: record.exit_code.map(i64::from),
            error: record.error.clone(),
            started_at: record.started_at.map(to_date),
            ended_at: record.ended_at.map(to_date),
            fuel_used: record.fuel_used.map(saturate),
            peak_memory: record.peak_memory.map(saturate),
            output_bytes: saturate(record.output_bytes),
            truncated: record.truncated,
            missed_count: record.missed_count.map(saturate),
            missed_until: record.missed_until.map(to_date),
            result_due: record.result_due.map(to_date),
            // A `serde_json::Value` always encodes.
            result: record.result.as_ref().map(serde_json::Value::to_string),
            expire_at: record.expire_at.map(to_date),
            expire_ms: record.expire_at.map(Timestamp::as_millisecond),
            // Small JSON texts, like `result`: no numbers the wire server
            // could turn into another type on the way.
            parent: record.parent.as_ref().and_then(|p| serde_json::to_string(p).ok()),
            shard: record.shard.as_ref().and_then(|s| serde_json::to_string(s).ok()),
        }
    }

    fn into_record(self) -> Result<RunRecord, LogStoreError> {
        let id = self.id;
        let corrupt =
            |what: &str, e: &dyn fmt::Display| LogStoreError::Other(format!("stored run {id} has {what}: {e}"));
        let unsigned = |what: &str, n: i64| u64::try_from(n).map_err(|e| corrupt(what, &e));
        Ok(RunRecord {
            run_id: id.parse().map_err(|e| corrupt("an invalid id", &e))?,
            job: JobName::new(&self.job).map_err(|e| corrupt("an invalid job", &e))?,
            tick: from_date(self.tick).map_err(|e| corrupt("an invalid tick", &e))?,
            trigger: self.trigger,
            attempt: u32::try_from(self.attempt).map_err(|e| corrupt("an invalid attempt", &e))?,
            worker: self.worker,
            fence: self.fence,
            kind: self.kind,
            module: self
                .module
                .map(|m| ModuleDigest::new(&m))
                .transpose()
                .map_err(|e| corrupt("an invalid module", &e))?,
            status: self.status,
            exit_code: self
                .exit_code
                .map(i32::try_from)
                .transpose()
                .map_err(|e| corrupt("an invalid exit code", &e))?,
            error: self.error,
            started_at: self
                .started_at
                .map(from_date)
                .transpose()
                .map_err(|e| corrupt("an invalid started_at", &e))?,
            ended_at: self
                .ended_at
                .map(from_date)
                .transpose()
                .map_err(|e| corrupt("an invalid ended_at", &e))?,
            fuel_used: self.fuel_used.map(|n| unsigned("fuel_used", n)).transpose()?,
            peak_memory: self.peak_memory.map(|n| unsigned("peak_memory", n)).transpose()?,
            output_bytes: unsigned("output_bytes", self.output_bytes)?,
            truncated: self.truncated,
            missed_count: self.missed_count.map(|n| unsigned("missed_count", n)).transpose()?,
            missed_until: self
                .missed_until
                .map(from_date)
                .transpose()
                .map_err(|e| corrupt("an invalid missed_until", &e))?,
            result_due: self
                .result_due
                .map(from_date)
                .transpose()
                .map_err(|e| corrupt("an invalid result_due", &e))?,
            result: self
                .result
                .map(|text| serde_json::from_str(&text))
                .transpose()
                .map_err(|e| corrupt("an unreadable result", &e))?,
            expire_at: self
                .expire_at
                .map(from_date)
                .transpose()
                .map_err(|e| corrupt("an invalid expire_at", &e))?,
            parent: self
                .parent
                .map(|text| serde_json::from_str(&text))
                .transpose()
                .map_err(|e| corrupt("an unreadable parent", &e))?,
            shard: self
                .shard
                .map(|text| serde_json::from_str(&text))
                .transpose()
                .map_err(|e| corrupt("an unreadable shard", &e))?,
        })
    }
}

/// One output chunk, as stored in `output`.
#[derive(Debug, Serialize, Deserialize)]
struct ChunkDoc {
    /// `<run_id>:<seq>`, so that a replayed chunk is a duplicate key.
    #[serde(rename = "_id")]
    id: String,
    run_id: String,
    #[serde(deserialize_with = "lenient::int")]
    seq: i64,
    stream: StreamKind,
    at: DateTime,
    data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expire_at: Option<DateTime>,
}

impl ChunkDoc {
    fn new(chunk: &OutputChunk) -> Self {
        // A run would need 2^63 chunks to get past i64; saturate rather than
        // fail the whole batch over it.
        let seq = saturate(chunk.seq);
        Self {
            id: format!("{}:{seq}", chunk.run_id),
            run_id: chunk.run_id.to_string(),
            seq,
            stream: chunk.stream,
            at: to_date(chunk.at),
            data: chunk.data.clone(),
            expire_at: chunk.expire_at.map(to_date),
        }
    }

    fn into_chunk(self, run_id: RunId) -> Result<OutputChunk, LogStoreError> {
        let Self {
            id,
            seq,
            stream,
            at,
            data,
            expire_at,
            ..
        } = self;
        let corrupt =
            |what: &str, e: &dyn fmt::Display| LogStoreError::Other(format!("stored chunk {id} has {what}: {e}"));
        Ok(OutputChunk {
            run_id,
            seq: u64::try_from(seq).map_err(|e| corrupt("an invalid seq", &e))?,
            stream,
            at: from_date(at).map_err(|e| corrupt("an invalid time", &e))?,
            data,
            expire_at: expire_at
                .map(from_date)
                .transpose()
                .map_err(|e| corrupt("an invalid expire_at", &e))?,
        })
    }
}

/// Just the `_id`, for `purge`.
#[derive(Debug, Deserialize)]
struct IdDoc {
    #[serde(rename = "_id")]
    id: String,
}

/// A BSON date: milliseconds, the sub-millisecond rest cut off.
fn to_date(t: Timestamp) -> DateTime {
    DateTime::from_millis(t.as_millisecond())
}

fn from_date(d: DateTime) -> Result<Timestamp, jiff::Error> {
    Timestamp::from_millisecond(d.timestamp_millis())
}

/// BSON has no unsigned 64-bit integer. Counters past i64::MAX (fuel beyond
/// 9.2e18) are stored as i64::MAX rather than failing the batch.
fn saturate(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Whether every error of a failed insert is a duplicate key (a chunk that is
/// already stored), and nothing else went wrong.
fn only_duplicates(e: &DriverError) -> bool {
    match &*e.kind {
        ErrorKind::InsertMany(failure) => {
            failure.write_concern_error.is_none()
                && failure
                    .write_errors
                    .as_ref()
                    .is_some_and(|errors| !errors.is_empty() && errors.iter().all(|w| w.code == DUPLICATE_KEY))
        }
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        _ => false,
    }
}

fn is_duplicate_key(e: &DriverError) -> bool {
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        // A real MongoDB may answer a failed upsert with a command error.
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        _ => false,
    }
}

/// Sorts driver errors into the store's: what a retry may fix (the server is
/// unreachable, busy or failing over) is `Unavailable`; a request the driver
/// refuses outright is `Invalid`; the rest is `Other`. Codes are not
/// consulted (nx-27017 sends none); the driver's kinds and labels are.
fn store_error(e: DriverError) -> LogStoreError {
    let retryable = e.contains_label("RetryableWriteError") || e.contains_label("SystemOverloadedError");
    match &*e.kind {
        ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Shutdown => LogStoreError::Unavailable(e.to_string()),
        _ if retryable => LogStoreError::Unavailable(e.to_string()),
        ErrorKind::InvalidArgument { .. } => LogStoreError::Invalid(e.to_string()),
        _ => LogStoreError::Other(e.to_string()),
    }
}

/// Conditional replaces per `update` command: far below the server's write
/// batch limit (100 000), and large enough that a default sink batch (500
/// events) is one command per round.
const RECORDS_PER_COMMAND: usize = 500;

/// Encoded run records per `update` command, at most (a lone larger record
/// still goes alone): well inside the 16 MiB command document.
const COMMAND_BYTES_BUDGET: usize = 8 * 1024 * 1024;

/// Integer fields that accept whatever integer BSON type the server sends
/// (nx-27017 answers Int32 for small Int64 values), and integral doubles.
mod lenient {
    use std::fmt;

    use serde::Deserializer;
    use serde::de::{Error, Unexpected, Visitor};

    pub(super) fn int<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        deserializer.deserialize_any(Int)
    }

    pub(super) fn opt_int<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
        deserializer.deserialize_option(OptInt)
    }

    struct Int;

    impl<'de> Visitor<'de> for Int {
        type Value = i64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer")
        }

        fn visit_i32<E: Error>(self, v: i32) -> Result<i64, E> {
            Ok(v.into())
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }

        fn visit_u32<E: Error>(self, v: u32) -> Result<i64, E> {
            Ok(v.into())
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
        }

        fn visit_f64<E: Error>(self, v: f64) -> Result<i64, E> {
            // Exactly representable integers only; 2^63 itself is out of range.
            if v.fract() == 0.0 && (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&v) {
                Ok(v as i64)
            } else {
                Err(E::invalid_value(Unexpected::Float(v), &self))
            }
        }
    }

    struct OptInt;

    impl<'de> Visitor<'de> for OptInt {
        type Value = Option<i64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer or null")
        }

        fn visit_none<E: Error>(self) -> Result<Option<i64>, E> {
            Ok(None)
        }

        fn visit_unit<E: Error>(self) -> Result<Option<i64>, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<i64>, D::Error> {
            int(deserializer).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against a real nx-27017 per test (started by the `sandcron-tests`
    //! harness on its own port and data directory), so tests run in
    //! parallel, in one process or one each.

    use std::collections::BTreeSet;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Instant;

    use jiff::SignedDuration;
    use sandcron_tests::mongo::MongoServer;

    use super::*;
    use crate::logstore::conformance::{self, sample_record};
    use crate::logstore::{Sink, SinkConfig};

    fn config(server: &MongoServer) -> MongoConfig {
        MongoConfig {
            uri: server.uri(),
            connect_timeout: Duration::from_secs(2),
            server_selection_timeout: Duration::from_secs(2),
            ..MongoConfig::default()
        }
    }

    async fn connect(server: &MongoServer) -> Arc<MongoLogStore> {
        MongoLogStore::connect(&config(server)).await.unwrap()
    }

    /// Blocking harness calls (process start and stop) off the async threads.
    fn blocking<T>(work: impl FnOnce() -> T) -> T {
        tokio::task::block_in_place(work)
    }

    fn job(name: &str) -> JobName {
        JobName::new(name).unwrap()
    }

    fn chunk(run_id: RunId, seq: u64) -> OutputChunk {
        OutputChunk {
            expire_at: None,
            run_id,
            seq,
            stream: if seq % 5 == 4 {
                StreamKind::Stderr
            } else {
                StreamKind::Stdout
            },
            at: Timestamp::from_millisecond(1_700_000_000_000 + seq as i64).unwrap(),
            data: format!("line {seq}\n"),
        }
    }

    async fn seqs(store: &dyn LogStore, run_id: RunId) -> Vec<u64> {
        store
            .output(run_id, None, MAX_OUTPUT_LIMIT)
            .await
            .unwrap()
            .iter()
            .map(|c| c.seq)
            .collect()
    }

    /// Polls `condition` until it holds; fails the test after `timeout`.
    async fn eventually(what: &str, timeout: Duration, mut condition: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !condition().await {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting until {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_conformance_suite() {
        let server = blocking(MongoServer::start);
        conformance::run_all(connect(&server).await, "mongo").await;
        // A second client finds the collections and indexes in place, and a
        // second pass in the same database shows the checks keep apart.
        conformance::run_all(connect(&server).await, "again").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn documents_have_the_documented_shape() {
        let server = blocking(MongoServer::start);
        let store = connect(&server).await;
        let mut record = sample_record(
            &job("shape"),
            Timestamp::new(1_700_000_000, 123_456_789).unwrap(),
            RunStatus::Succeeded,
            7,
        );
        record.expire_at = Some(Timestamp::from_millisecond(4_102_444_800_000).unwrap());
        record.fuel_used = Some(u64::MAX);
        let mut stored_chunk = chunk(record.run_id, 3);
        stored_chunk.expire_at = record.expire_at;
        store
            .write(&LogBatch {
                runs: vec![record.clone()],
                chunks: vec![stored_chunk],
            })
            .await
            .unwrap();

        let raw = store.runs.clone_with_type::<Document>();
        let run = raw.find_one(doc! {}).await.unwrap().unwrap();
        let id = record.run_id.to_string();
        assert_eq!(run.get_str("_id").unwrap(), id);
        assert_eq!(run.get_str("run_id").unwrap(), id);
        assert_eq!(run.get_str("job").unwrap(), "shape");
        assert_eq!(run.get_str("status").unwrap(), "succeeded");
        assert_eq!(run.get_str("trigger").unwrap(), "schedule");
        // Dates are BSON dates at millisecond precision, their query keys
        // integers (of whatever width the server answers).
        assert_eq!(run.get_datetime("tick").unwrap().timestamp_millis(), 1_700_000_000_123);
        assert_eq!(bson_int(&run, "tick_ms"), 1_700_000_000_123);
        assert_eq!(
            run.get_datetime("expire_at").unwrap().timestamp_millis(),
            4_102_444_800_000
        );
        assert_eq!(bson_int(&run, "expire_ms"), 4_102_444_800_000);
        assert_eq!(bson_int(&run, "fence"), 7);
        assert_eq!(bson_int(&run, "fuel_used"), i64::MAX, "u64 beyond i64 saturates");
        let result: serde_json::Value = serde_json::from_str(run.get_str("result").unwrap()).unwrap();
        assert_eq!(Some(result), record.result);
        assert!(
            !run.contains_key("missed_count"),
            "absent options are left out, not null"
        );

        let output = store.output.clone_with_type::<Document>();
        let stored = output.find_one(doc! {}).await.unwrap().unwrap();
        assert_eq!(stored.get_str("_id").unwrap(), format!("{id}:3"));
        assert_eq!(stored.get_str("run_id").unwrap(), id);
        assert_eq!(bson_int(&stored, "seq"), 3);
        assert_eq!(stored.get_str("stream").unwrap(), "stdout");
        assert_eq!(stored.get_datetime("at").unwrap().timestamp_millis(), 1_700_000_000_003);
        assert!(stored.get_datetime("expire_at").is_ok());

        // The indexes, by their keys (names are the server's business).
        let keys = |indexes: Vec<IndexModel>| -> BTreeSet<(Vec<String>, bool)> {
            indexes
                .into_iter()
                .map(|index| {
                    let ttl = index.options.and_then(|o| o.expire_after).is_some();
                    (index.keys.keys().cloned().collect(), ttl)
                })
                .collect()
        };
        let owned = |fields: &[&str], ttl: bool| (fields.iter().map(|f| (*f).to_owned()).collect(), ttl);
        let runs = keys(store.runs.list_indexes().await.unwrap().try_collect().await.unwrap());
        for want in [
            owned(&["job", "tick_ms", "run_id"], false),
            owned(&["status", "tick_ms", "run_id"], false),
            owned(&["tick_ms", "run_id"], false),
            owned(&["expire_ms"], false),
            owned(&["expire_at"], true),
        ] {
            assert!(runs.contains(&want), "runs lacks index {want:?}: {runs:?}");
        }
        let chunks = keys(store.output.list_indexes().await.unwrap().try_collect().await.unwrap());
        for want in [owned(&["run_id", "seq"], false), owned(&["expire_at"], true)] {
            assert!(chunks.contains(&want), "output lacks index {want:?}: {chunks:?}");
        }
    }

    fn bson_int(doc: &Document, key: &str) -> i64 {
        match doc.get(key) {
            Some(Bson::Int32(n)) => (*n).into(),
            Some(Bson::Int64(n)) => *n,
            other => panic!("{key} is {other:?}, not an integer"),
        }
    }

    #[test]
    fn integers_are_read_whatever_their_width() {
        let record = sample_record(&job("lenient"), Timestamp::UNIX_EPOCH, RunStatus::Failed, 3);
        let mut stored = mongodb::bson::serialize_to_document(&RunDoc::new(&record)).unwrap();
        // As nx-27017 answers: small integers as Int32; and as a JSON-minded
        // server might: integral doubles.
        stored.insert("fence", Bson::Int32(3));
        stored.insert("attempt", Bson::Double(1.0));
        stored.insert("tick_ms", Bson::Int32(0));
        stored.insert("exit_code", Bson::Int64(0));
        stored.insert("output_bytes", Bson::Int32(0));
        stored.insert("missed_count", Bson::Null);
        let doc: RunDoc = mongodb::bson::deserialize_from_document(stored.clone()).unwrap();
        assert_eq!(doc.into_record().unwrap(), record);

        stored.insert("attempt", Bson::Double(1.5));
        assert!(mongodb::bson::deserialize_from_document::<RunDoc>(stored).is_err());
    }

    #[test]
    fn the_replace_filter_is_the_fencing_rule() {
        // Each filter, evaluated by hand against a stored (fence, status),
        // agrees with `supersedes` for every combination.
        let matches = |filter: &Document, fence: i64, status: RunStatus| -> bool {
            let fence_ok = |cond: &Document| match cond.get_document("fence") {
                Ok(ops) => {
                    let (op, value) = ops.iter().next().unwrap();
                    let value = value.as_i64().unwrap();
                    match op.as_str() {
                        "$lt" => fence < value,
                        "$lte" => fence <= value,
                        other => panic!("unexpected operator {other}"),
                    }
                }
                Err(_) => cond.get_i64("fence").unwrap() == fence,
            };
            let status_ok = |cond: &Document| cond.get_str("status").ok().is_none_or(|s| s == status.as_str());
            match filter.get_array("$and") {
                Ok(parts) => {
                    let id = parts[0].as_document().unwrap();
                    assert_eq!(id.keys().collect::<Vec<_>>(), ["_id"]);
                    let branches = parts[1].as_document().unwrap().get_array("$or").unwrap();
                    branches.iter().any(|branch| {
                        let branch = branch.as_document().unwrap();
                        fence_ok(branch) && status_ok(branch)
                    })
                }
                Err(_) => {
                    assert!(filter.get_str("_id").is_ok());
                    fence_ok(filter)
                }
            }
        };
        for new_status in RunStatus::ALL {
            for stored_status in RunStatus::ALL {
                for stored_fence in [4, 5, 6] {
                    let new = sample_record(&job("rule"), Timestamp::UNIX_EPOCH, new_status, 5);
                    let mut stored = new.clone();
                    stored.fence = stored_fence;
                    stored.status = stored_status;
                    assert_eq!(
                        matches(&supersedable(&new), stored_fence, stored_status),
                        crate::logstore::supersedes(&new, &stored),
                        "new {new_status} at 5 over stored {stored_status} at {stored_fence}"
                    );
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_fencing_rule_holds_under_a_real_race() {
        let server = blocking(MongoServer::start);
        // Separate clients, so that writes really are concurrent requests.
        let stores: Vec<Arc<MongoLogStore>> = vec![connect(&server).await, connect(&server).await];
        let terminal = [
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Killed,
            RunStatus::TimedOut,
        ];
        for round in 0..25u64 {
            let base = sample_record(&job("race"), Timestamp::now(), RunStatus::Running, 0);
            let record = |fence: i64, status: RunStatus| {
                let mut r = base.clone();
                r.fence = fence;
                r.status = status;
                r.worker = format!("owner-{fence}");
                r
            };
            // Four owners of one run, each fenced out by the next: every one
            // writes `running` then its outcome, all at once. Odd rounds let
            // the fenced-out owners report only their outcome, so that a
            // terminal record races a newer `running` one.
            let writers: Vec<_> = (1..=4i64)
                .map(|fence| {
                    let store = Arc::clone(&stores[fence as usize % 2]);
                    let mut records = vec![
                        record(fence, RunStatus::Running),
                        record(fence, terminal[fence as usize - 1]),
                    ];
                    if round % 2 == 1 && fence < 4 {
                        records.remove(0);
                    }
                    tokio::spawn(async move {
                        for r in records {
                            store
                                .write(&LogBatch {
                                    runs: vec![r],
                                    chunks: vec![],
                                })
                                .await
                                .unwrap();
                        }
                    })
                })
                .collect();
            for writer in writers {
                writer.await.unwrap();
            }
            let stored = stores[0].run(base.run_id).await.unwrap().unwrap();
            assert_eq!(
                (stored.fence, stored.status, stored.worker.as_str()),
                (4, RunStatus::TimedOut, "owner-4"),
                "round {round}: the newest owner's outcome stands"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outage_is_spooled_and_replayed_without_loss() {
        let mut server = blocking(MongoServer::start);
        let store = MongoLogStore::connect(&MongoConfig {
            // Short, so that a write to the stopped server fails quickly.
            server_selection_timeout: Duration::from_millis(500),
            ..config(&server)
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let capacity = 2_000;
        let (sink, task) = Sink::new(
            store.clone(),
            SinkConfig {
                batch_docs: 100,
                flush_interval: Duration::from_millis(20),
                channel_capacity: capacity,
                spool_path: Some(dir.path().join("spool").join("sink.jsonl")),
                retry_initial: Duration::from_millis(20),
                retry_max: Duration::from_millis(200),
                spool_after: Duration::from_millis(300),
                ..SinkConfig::default()
            },
        );
        let task = tokio::spawn(task.run());
        let stats = sink.stats();

        // The producer: runs one after another, each `running`, 500 chunks,
        // then its outcome. It pauses a little every 50 events (the pace of
        // a busy worker) until `burst` is set, then sends as fast as the
        // sink takes them, `quota` events in all.
        let down = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let sent_while_down = Arc::new(AtomicU64::new(0));
        let burst = Arc::new(AtomicBool::new(false));
        let outcomes = [
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Killed,
            RunStatus::TimedOut,
        ];
        let quota: u64 = 24_000;
        let producer = tokio::spawn({
            let (sink, down, sent, sent_while_down, burst) = (
                sink.clone(),
                Arc::clone(&down),
                Arc::clone(&sent),
                Arc::clone(&sent_while_down),
                Arc::clone(&burst),
            );
            async move {
                let mut runs = Vec::new();
                let count = |sent: &AtomicU64| {
                    sent.fetch_add(1, Ordering::SeqCst);
                    if down.load(Ordering::SeqCst) {
                        sent_while_down.fetch_add(1, Ordering::SeqCst);
                    }
                };
                let mut n = 0u64;
                while sent.load(Ordering::SeqCst) < quota {
                    let mut run = sample_record(&job("outage"), Timestamp::now(), RunStatus::Running, 1);
                    sink.record(run.clone()).await;
                    count(&sent);
                    for seq in 0..500 {
                        sink.chunk(chunk(run.run_id, seq)).await;
                        count(&sent);
                        if seq % 50 == 0 && !burst.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                    run.status = outcomes[n as usize % outcomes.len()];
                    sink.record(run.clone()).await;
                    count(&sent);
                    runs.push(run);
                    n += 1;
                }
                runs
            }
        });

        // Stop the server while runs are being written.
        eventually("events reach the store", Duration::from_secs(60), async || {
            stats.written.load(Ordering::SeqCst) >= 1_000
        })
        .await;
        blocking(|| server.stop());
        down.store(true, Ordering::SeqCst);
        let stopped = sent.load(Ordering::SeqCst);
        burst.store(true, Ordering::SeqCst);
        // While it is down, the producer sends everything it has — several
        // times what the channel holds, so the spool must take it — and
        // finishes without waiting for the server, which stays down until
        // then (a sink that made senders wait for the store would hang here).
        let runs = tokio::time::timeout(Duration::from_secs(120), producer)
            .await
            .expect("the producer is not held up while the server is down")
            .unwrap();
        let during = sent_while_down.load(Ordering::SeqCst);
        assert!(
            during > 5 * capacity as u64,
            "{during} events sent during the outage (stopped at {stopped})"
        );
        sink.flush().await;
        assert!(
            stats.spooled_batches.load(Ordering::SeqCst) > 0,
            "batches went to the spool"
        );
        assert!(stats.spooled_bytes.load(Ordering::SeqCst) > 0);
        assert!(stats.write_errors.load(Ordering::SeqCst) > 0);
        // Keep it down a while: retries keep failing and nothing is lost.
        tokio::time::sleep(Duration::from_secs(2)).await;

        blocking(|| server.start_again());
        eventually("the spool is replayed", Duration::from_secs(120), async || {
            stats.spooled_bytes.load(Ordering::SeqCst) == 0
        })
        .await;
        sink.flush().await;
        for run in &runs {
            assert_eq!(
                seqs(&*store, run.run_id).await,
                (0..500).collect::<Vec<_>>(),
                "every chunk of {} once, in order",
                run.run_id
            );
            let stored = store.run(run.run_id).await.unwrap().unwrap();
            assert_eq!(stored.status, run.status, "{} ends in its true status", run.run_id);
        }
        assert_eq!(stats.rejected.load(Ordering::SeqCst), 0);
        drop(sink);
        task.await.unwrap().unwrap();
    }

    /// Set in the child process of `a_killed_process_leaves_a_spool_the_next_sink_replays`.
    const CHILD_ENV: &str = "SANDCRON_TEST_SPOOL_CHILD";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_process_leaves_a_spool_the_next_sink_replays() {
        if let Ok(control) = std::env::var(CHILD_ENV) {
            return spooling_child(Path::new(&control)).await;
        }
        let mut server = blocking(MongoServer::start);
        let control = tempfile::tempdir().unwrap();
        let spool = control.path().join("sink.jsonl");
        let run_id = RunId::generate();
        std::fs::write(control.path().join("uri"), server.uri()).unwrap();
        std::fs::write(control.path().join("run"), run_id.to_string()).unwrap();

        // The child: this very test, run again in its own process.
        let name = format!(
            "{}::a_killed_process_leaves_a_spool_the_next_sink_replays",
            module_path!().split_once("::").unwrap().1
        );
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name.as_str(), "--exact", "--nocapture"])
            .env(CHILD_ENV, control.path())
            .stdout(std::fs::File::create(control.path().join("child.log")).unwrap())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let wait_for = async |marker: &str| {
            let path = control.path().join(marker);
            eventually(
                &format!("the child writes {marker}"),
                Duration::from_secs(120),
                async || path.exists(),
            )
            .await;
        };

        wait_for("connected").await;
        blocking(|| server.stop());
        std::fs::write(control.path().join("go"), "").unwrap();
        wait_for("spooled").await;
        // kill -9, with the spool full.
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(std::fs::metadata(&spool).unwrap().len() > 0, "the child left a spool");

        blocking(|| server.start_again());
        let store = connect(&server).await;
        assert!(
            store.run(run_id).await.unwrap().is_none(),
            "nothing reached the store before"
        );
        let (sink, task) = Sink::new(
            store.clone(),
            SinkConfig {
                spool_path: Some(spool.clone()),
                ..SinkConfig::default()
            },
        );
        let task = tokio::spawn(task.run());
        eventually("the new sink replays the spool", Duration::from_secs(60), async || {
            seqs(&*store, run_id).await.len() == 200
        })
        .await;
        assert_eq!(seqs(&*store, run_id).await, (0..200).collect::<Vec<_>>());
        let stored = store.run(run_id).await.unwrap().unwrap();
        assert_eq!(stored.status, RunStatus::Failed);
        eventually("the spool is truncated", Duration::from_secs(60), async || {
            std::fs::metadata(&spool).unwrap().len() == 0
        })
        .await;
        drop(sink);
        task.await.unwrap().unwrap();
    }

    /// The child's side: connect, wait for the server to go away, spool a run
    /// and its output, say so, and wait to be killed.
    async fn spooling_child(control: &Path) {
        let read = |name: &str| std::fs::read_to_string(control.join(name)).unwrap();
        let store = MongoLogStore::connect(&MongoConfig {
            uri: read("uri"),
            server_selection_timeout: Duration::from_millis(300),
            ..MongoConfig::default()
        })
        .await
        .unwrap();
        let run_id: RunId = read("run").parse().unwrap();
        std::fs::write(control.join("connected"), "").unwrap();
        let go = control.join("go");
        eventually("the parent says go", Duration::from_secs(120), async || go.exists()).await;

        let (sink, task) = Sink::new(
            store,
            SinkConfig {
                batch_docs: 50,
                spool_path: Some(control.join("sink.jsonl")),
                retry_initial: Duration::from_millis(10),
                retry_max: Duration::from_millis(100),
                spool_after: Duration::from_millis(100),
                ..SinkConfig::default()
            },
        );
        let _task = tokio::spawn(task.run());
        let mut run = sample_record(&job("killed"), Timestamp::now(), RunStatus::Running, 1);
        run.run_id = run_id;
        sink.record(run.clone()).await;
        for seq in 0..200 {
            sink.chunk(chunk(run_id, seq)).await;
        }
        run.status = RunStatus::Failed;
        sink.record(run).await;
        // With the store down, this returns once everything is in the spool.
        sink.flush().await;
        std::fs::write(control.join("spooled"), "").unwrap();
        std::future::pending::<()>().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expired_documents_are_removed() {
        let server = blocking(MongoServer::start);
        let store = connect(&server).await;
        let now = Timestamp::now();
        let with = |expire_at: Option<Timestamp>, status: RunStatus| {
            // Ticks ahead of `now`, so that only `expire_at` decides at first.
            let mut r = sample_record(&job("ttl"), now + SignedDuration::from_hours(1), status, 1);
            r.expire_at = expire_at;
            r
        };
        let expired = with(Some(now - SignedDuration::from_secs(1)), RunStatus::Succeeded);
        let expired_running = with(Some(now - SignedDuration::from_secs(1)), RunStatus::Running);
        let unexpired = with(Some(now + SignedDuration::from_hours(24)), RunStatus::Succeeded);
        let never = with(None, RunStatus::Succeeded);
        let all = [&expired, &expired_running, &unexpired, &never];
        let chunks = all
            .iter()
            .flat_map(|r| {
                (0..3).map(|seq| OutputChunk {
                    expire_at: r.expire_at,
                    ..chunk(r.run_id, seq)
                })
            })
            .collect();
        store
            .write(&LogBatch {
                runs: all.iter().map(|r| (*r).clone()).collect(),
                chunks,
            })
            .await
            .unwrap();

        // Runs and chunks past their `expire_at` go: `purge` deletes the
        // finished ones and the TTL indexes everything expired, including a
        // run still marked running (nx-27017 applies TTL on each read, a
        // real MongoDB within a minute).
        let deleted = store.purge(now).await.unwrap();
        assert!(deleted <= 1, "purge deleted {deleted}");
        for gone in [&expired, &expired_running] {
            eventually(
                "expired runs and output are gone",
                Duration::from_secs(120),
                async || store.run(gone.run_id).await.unwrap().is_none() && seqs(&*store, gone.run_id).await.is_empty(),
            )
            .await;
        }
        for kept in [&unexpired, &never] {
            assert!(
                store.run(kept.run_id).await.unwrap().is_some(),
                "{} is kept",
                kept.run_id
            );
            assert_eq!(seqs(&*store, kept.run_id).await, vec![0, 1, 2]);
        }
        // `never` has no expiry: only `purge` removes it, by its tick.
        assert_eq!(store.purge(now + SignedDuration::from_hours(2)).await.unwrap(), 1);
        assert!(store.run(never.run_id).await.unwrap().is_none());
        assert!(store.run(unexpired.run_id).await.unwrap().is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_that_is_down_is_unavailable_until_it_returns() {
        // Nothing listens: connecting fails as unavailable, not as an error.
        let nobody = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let refused = MongoLogStore::connect(&MongoConfig {
            uri: format!("mongodb://127.0.0.1:{nobody}/?directConnection=true"),
            server_selection_timeout: Duration::from_millis(300),
            ..MongoConfig::default()
        })
        .await;
        assert!(matches!(refused, Err(LogStoreError::Unavailable(_))), "{refused:?}");
        let garbage = MongoLogStore::connect(&MongoConfig {
            uri: "mongo://nowhere".to_owned(),
            ..MongoConfig::default()
        })
        .await;
        assert!(matches!(garbage, Err(LogStoreError::Invalid(_))), "{garbage:?}");

        let mut server = blocking(MongoServer::start);
        let store = MongoLogStore::connect(&MongoConfig {
            server_selection_timeout: Duration::from_millis(300),
            ..config(&server)
        })
        .await
        .unwrap();
        let record = sample_record(&job("down"), Timestamp::now(), RunStatus::Succeeded, 1);
        let batch = LogBatch {
            runs: vec![record.clone()],
            chunks: vec![chunk(record.run_id, 0)],
        };
        blocking(|| server.stop());
        // The first request may still find a pooled connection and fail on
        // it; every one fails as unavailable.
        for _ in 0..2 {
            let write = store.write(&batch).await;
            assert!(matches!(write, Err(LogStoreError::Unavailable(_))), "{write:?}");
            let read = store.runs(&RunQuery::default()).await;
            assert!(matches!(read, Err(LogStoreError::Unavailable(_))), "{read:?}");
        }
        blocking(|| server.start_again());
        eventually("the store works again", Duration::from_secs(30), async || {
            store.write(&batch).await.is_ok()
        })
        .await;
        assert_eq!(store.run(record.run_id).await.unwrap(), Some(at_millis(&record)));
    }

    /// The record as stored: instants at whole milliseconds.
    fn at_millis(record: &RunRecord) -> RunRecord {
        let ms = |t: Timestamp| Timestamp::from_millisecond(t.as_millisecond()).unwrap();
        let mut r = record.clone();
        r.tick = ms(r.tick);
        r.started_at = r.started_at.map(ms);
        r.ended_at = r.ended_at.map(ms);
        r.missed_until = r.missed_until.map(ms);
        r.result_due = r.result_due.map(ms);
        r.expire_at = r.expire_at.map(ms);
        r
    }
}
