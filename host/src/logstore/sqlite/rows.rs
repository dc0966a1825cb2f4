//! Run records and output chunks as row values: encoded before a write
//! takes the write lock (so the lock covers only the SQL), and stored
//! records decoded back, a damaged one reported rather than skipped.

use jiff::Timestamp;

use super::pool::Failure;
use crate::logstore::LogStoreError;
use crate::run::{OutputChunk, RunRecord, StreamKind};

/// A run record ready to bind.
pub(super) struct RunRow {
    pub(super) run_id: String,
    pub(super) json: String,
    pub(super) record: RunRecord,
}

impl RunRow {
    pub(super) fn new(record: &RunRecord) -> Result<Self, LogStoreError> {
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
pub(super) struct ChunkRow {
    pub(super) run_id: String,
    pub(super) seq: i64,
    pub(super) stream: &'static str,
    pub(super) at: i64,
    pub(super) data: String,
    pub(super) expire_at: Option<i64>,
}

impl ChunkRow {
    pub(super) fn new(chunk: &OutputChunk) -> Self {
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

pub(super) fn decode_record(run_id: &str, json: &str) -> Result<RunRecord, Failure> {
    serde_json::from_str(json).map_err(|e| Failure::corrupt(format!("stored run {run_id} is unreadable: {e}")))
}
