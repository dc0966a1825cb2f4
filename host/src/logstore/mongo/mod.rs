//! `MongoLogStore`: the production `LogStore` on MongoDB — collections `runs`
//! (one document per run, `_id` = run id, replaced on each status change
//! under the fencing rule) and `output` (one document per chunk, `_id` =
//! `<run_id>:<seq>`), with an index for every query the trait makes and TTL
//! indexes on `expire_at` so that a real MongoDB deletes expired logs on its
//! own. No driver type leaves this module. The audit log is the collection
//! `audit` (one document per entry, `_id` = its ULID, inserted once, a TTL
//! index on `expire_at`; `audit.rs`).
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
//!
//! The files: the BSON documents and how records map onto them
//! (`documents.rs`), the writes with their fencing filter and batched
//! `update` commands (`writes.rs`), how driver errors become store errors
//! (`error.rs`) and the audit log's queries (`audit.rs`). This file holds the connection, the indexes and the
//! `LogStore` methods, queries in full and writes in their order.

mod audit;
mod documents;
mod error;
#[cfg(test)]
mod tests;
mod writes;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt as _, TryStreamExt as _};
use jiff::Timestamp;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};

use self::documents::{AuditDoc, ChunkDoc, IdDoc, RunDoc};
use self::error::store_error;
use crate::ids::{JobName, RunId};
use crate::logstore::store::{ceil_millisecond, decode_cursor, output_limit, page, runs_limit, stored_after};
use crate::logstore::{LogBatch, LogStore, LogStoreError, RunPage, RunQuery};
use crate::run::{OutputChunk, RunRecord, RunStatus};

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
    audit: Collection<AuditDoc>,
    database: String,
}

impl fmt::Debug for MongoLogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoLogStore")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// Runs deleted per purge round, so a large purge is many small deletes
/// rather than one that holds the server (and the sink) up.
const PURGE_BATCH: i64 = 500;
/// `last_runs` asks for each job separately (one index seek each); this many
/// at a time.
const LAST_RUNS_CONCURRENCY: usize = 8;

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
            audit: db.collection("audit"),
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
                // `runs` by job, by status, by worker, by trigger, by time;
                // `last_runs`.
                index(doc! { "job": 1, "tick_ms": -1, "run_id": -1 }),
                index(doc! { "status": 1, "tick_ms": -1, "run_id": -1 }),
                index(doc! { "worker": 1, "tick_ms": -1, "run_id": -1 }),
                index(doc! { "trigger": 1, "tick_ms": -1, "run_id": -1 }),
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
        self.audit
            .create_indexes([
                // Newest first, unfiltered and after a cursor; by job, actor
                // and target; `purge_audit` by expiry; the TTL monitor.
                index(doc! { "audit_id": -1 }),
                index(doc! { "job": 1, "audit_id": -1 }),
                index(doc! { "actor": 1, "audit_id": -1 }),
                index(doc! { "target": 1, "audit_id": -1 }),
                index(doc! { "expire_ms": 1 }),
                ttl(doc! { "expire_at": 1 }),
            ])
            .await
            .map_err(store_error)?;
        Ok(())
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
        let limit = runs_limit(query.limit);
        let mut filter = Document::new();
        if let Some(job) = &query.job {
            filter.insert("job", job.as_str());
        }
        if let Some(status) = query.status {
            filter.insert("status", status.as_str());
        }
        if let Some(worker) = &query.worker {
            filter.insert("worker", worker.as_str());
        }
        if let Some(trigger) = query.trigger {
            filter.insert("trigger", trigger.as_str());
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
        let docs = find_page(&self.runs, filter, doc! { "tick_ms": -1, "run_id": -1 }, limit).await?;
        let runs = docs
            .into_iter()
            .map(RunDoc::into_record)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page(runs, limit))
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
        let Some(after) = stored_after(after) else {
            return Ok(Vec::new());
        };
        let limit = output_limit(limit);
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

/// Up to `limit + 1` documents of `collection` matching `filter` in `sort`
/// order: the extra one says whether another page exists.
async fn find_page<D>(
    collection: &mongodb::Collection<D>,
    filter: mongodb::bson::Document,
    sort: mongodb::bson::Document,
    limit: usize,
) -> Result<Vec<D>, LogStoreError>
where
    D: serde::de::DeserializeOwned + Send + Sync,
{
    let fetch = limit as i64 + 1;
    collection
        .find(filter)
        .sort(sort)
        .limit(fetch)
        .batch_size(fetch as u32)
        .await
        .map_err(store_error)?
        .try_collect()
        .await
        .map_err(store_error)
}
