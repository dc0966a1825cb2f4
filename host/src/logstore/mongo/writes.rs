//! Writes to `runs` and `output`: chunks inserted with replays ignored, and
//! run records replaced under the fencing rule by a filter the server
//! evaluates atomically, many records to one `update` command. Kept apart
//! from the queries because the duplicate-key dance that makes the
//! conditional upsert safe under races is subtle enough to read alone.

use mongodb::bson::{Bson, Document, doc};

use super::documents::{ChunkDoc, RunDoc};
use super::error::{DUPLICATE_KEY, is_duplicate_key, only_duplicates, store_error};
use super::{MongoLogStore, with_any};
use crate::logstore::LogStoreError;
use crate::run::{OutputChunk, RunRecord, RunStatus};

/// Conditional replaces per `update` command: far below the server's write
/// batch limit (100 000), and large enough that a default sink batch (500
/// events) is one command per round.
const RECORDS_PER_COMMAND: usize = 500;

/// Encoded run records per `update` command, at most (a lone larger record
/// still goes alone): well inside the 16 MiB command document.
const COMMAND_BYTES_BUDGET: usize = 8 * 1024 * 1024;

impl MongoLogStore {
    /// Inserts chunks, ignoring the ones already stored: a replayed batch
    /// hits duplicate keys, which is success.
    pub(super) async fn insert_chunks(&self, chunks: &[OutputChunk]) -> Result<(), LogStoreError> {
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
    pub(super) async fn upsert_runs(&self, records: &[&RunRecord]) -> Result<(), LogStoreError> {
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

/// The stored runs that `record` may replace (see `supersedes`): a lower
/// fence always; the same fence if the stored run is still running, or —
/// for a final record of the run's own (not a `lost` marker written by
/// someone else) — whatever its status.
pub(super) fn supersedable(record: &RunRecord) -> Document {
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
