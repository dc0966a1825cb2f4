//! The log-store contract: run records and output chunks, written in batches
//! and queried by job, status, worker, trigger and time with cursor
//! pagination; and the audit log's entries, written once each and queried
//! newest first.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::audit::{AuditAction, AuditEntry};
use crate::ids::{AuditId, JobName, RunId};
use crate::run::{OutputChunk, RunRecord, RunStatus, Trigger};

/// What the sink hands the store in one write.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogBatch {
    /// Run records in the order they were produced; later records of the same
    /// run supersede earlier ones (subject to the fencing rule).
    pub runs: Vec<RunRecord>,
    pub chunks: Vec<OutputChunk>,
}

impl LogBatch {
    pub fn len(&self) -> usize {
        self.runs.len() + self.chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty() && self.chunks.is_empty()
    }

    /// Drops the run records whose writing cannot change what is stored
    /// once the whole batch is applied: a record followed, later in the
    /// batch, by a record of the same run that is the run's own outcome
    /// (terminal, not `lost`) with at least its fence. Most runs end within
    /// one batch window, so this halves the record writes of a busy worker.
    ///
    /// Why the result is the same: the later record `b` replaces any stored
    /// record with a fence up to its own. Every record `a` may replace has a
    /// fence up to `a`'s, so after `a` replaced something, `b` replaces `a`;
    /// and if `a` replaced nothing, `b` meets what it would have met alone.
    pub fn drop_superseded(&mut self) {
        // Per run, the highest fence of an own outcome seen so far, walking
        // from the end.
        let mut outcome_fence: HashMap<RunId, i64> = HashMap::new();
        let mut keep = vec![true; self.runs.len()];
        for (position, record) in self.runs.iter().enumerate().rev() {
            if outcome_fence
                .get(&record.run_id)
                .is_some_and(|&fence| fence >= record.fence)
            {
                keep[position] = false;
                continue;
            }
            if record.status.is_terminal() && record.status != RunStatus::Lost {
                let fence = outcome_fence.entry(record.run_id).or_insert(record.fence);
                *fence = (*fence).max(record.fence);
            }
        }
        let mut keep = keep.into_iter();
        self.runs.retain(|_| keep.next().unwrap_or(true));
    }
}

/// A filter over run records. Results are ordered newest tick first
/// (`tick` descending, then `run_id` descending).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunQuery {
    pub job: Option<JobName>,
    pub status: Option<RunStatus>,
    /// The worker that ran (or recorded) the run, exactly.
    pub worker: Option<String>,
    pub trigger: Option<Trigger>,
    /// Only runs whose tick is at or after this instant.
    pub since: Option<Timestamp>,
    /// Only runs whose tick is before this instant.
    pub until: Option<Timestamp>,
    /// At most this many runs (the store clamps it to 1..=1000).
    pub limit: usize,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunPage {
    pub runs: Vec<RunRecord>,
    /// Present when more runs match; pass it back as `RunQuery::cursor`.
    pub next_cursor: Option<String>,
}

/// A filter over audit entries. Results are ordered newest first (`id`
/// descending, which is time order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub job: Option<JobName>,
    /// The token name, exactly.
    pub actor: Option<String>,
    pub action: Option<AuditAction>,
    /// The target, exactly (a module digest, a secret name, a state key).
    pub target: Option<String>,
    /// Only entries at or after this instant.
    pub since: Option<Timestamp>,
    /// Only entries before this instant.
    pub until: Option<Timestamp>,
    /// At most this many entries (the store clamps it to 1..=1000).
    pub limit: usize,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of audit entries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Present when more entries match; pass it back as `AuditQuery::cursor`.
    pub next_cursor: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    /// The store cannot be reached or failed to answer; worth retrying.
    #[error("log store unavailable: {0}")]
    Unavailable(String),
    /// The request itself is wrong (a malformed cursor, say); not worth retrying.
    #[error("{0}")]
    Invalid(String),
    #[error("log store error: {0}")]
    Other(String),
}

/// Storage for run records and output. Implementations: SQLite (embedded) and
/// MongoDB; both must pass `logstore::conformance`.
///
/// Writes are idempotent: a chunk is keyed by `(run_id, seq)` and a replayed
/// chunk is ignored; a run record is keyed by `run_id` and replaces the stored
/// one only if its `fence` is higher, or equal and it does not turn a terminal
/// status back into `running`. So replaying a batch, or a late write from a
/// worker that was fenced out, never corrupts what is stored.
/// Storage for the audit log: part of every log store (see [`LogStore`]),
/// a contract of its own so that each backend keeps it in its own file.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Stores audit entries. Idempotent: an entry whose `id` is already
    /// stored is left as it is, so a batch may be written again (after a
    /// failure, or by two masters moving the same entries).
    async fn write_audit(&self, entries: &[AuditEntry]) -> Result<(), LogStoreError>;

    /// Audit entries matching `query`, newest first.
    async fn audit(&self, query: &AuditQuery) -> Result<AuditPage, LogStoreError>;

    /// Deletes the audit entries whose `expire_at` is before `before`
    /// (entries without one are kept); returns how many. A MongoDB TTL
    /// index does the same continuously.
    async fn purge_audit(&self, before: Timestamp) -> Result<u64, LogStoreError>;
}

#[async_trait]
pub trait LogStore: AuditStore {
    async fn write(&self, batch: &LogBatch) -> Result<(), LogStoreError>;

    async fn runs(&self, query: &RunQuery) -> Result<RunPage, LogStoreError>;

    async fn run(&self, run_id: RunId) -> Result<Option<RunRecord>, LogStoreError>;

    /// Chunks of a run with `seq > after` (all when `after` is `None`), in
    /// `seq` order, at most `limit`.
    async fn output(&self, run_id: RunId, after: Option<u64>, limit: usize) -> Result<Vec<OutputChunk>, LogStoreError>;

    /// The newest run (by tick) of each named job that has one.
    async fn last_runs(&self, jobs: &[JobName]) -> Result<BTreeMap<JobName, RunRecord>, LogStoreError>;

    /// Deletes runs that are no longer running and whose `expire_at` is
    /// before `before` (or, for records without one, whose tick is), with
    /// their output; returns how many runs were deleted. A MongoDB TTL index
    /// does the same continuously.
    async fn purge(&self, before: Timestamp) -> Result<u64, LogStoreError>;
}

/// The rule both backends apply when a run record arrives for a `run_id`
/// that is already stored.
///
/// A higher fence wins. With the same fence, a record may not turn a finished
/// run back into a running one, and a `lost` marker — written by another
/// worker that saw the run's worker disappear — only replaces a run that is
/// still `running`: if the run's own final record got through, it stands.
pub fn supersedes(new: &RunRecord, stored: &RunRecord) -> bool {
    if new.fence != stored.fence {
        return new.fence > stored.fence;
    }
    if !stored.status.is_terminal() {
        return true;
    }
    new.status.is_terminal() && new.status != RunStatus::Lost
}

/// The smallest whole millisecond at or after `t`: both stores keep ticks in
/// whole milliseconds, so `tick >= t` and `tick < t` compare against this.
pub(crate) fn ceil_millisecond(t: Timestamp) -> i64 {
    let ms = t.as_millisecond();
    match Timestamp::from_millisecond(ms) {
        Ok(floor) if floor < t => ms + 1,
        _ => ms,
    }
}

/// A page size of `runs` as every store applies it: the caller's, within
/// 1..=1000, 100 when the caller passes 0.
pub(crate) fn runs_limit(asked: usize) -> usize {
    match asked {
        0 => 100,
        n => n.min(1000),
    }
}

/// The most chunks one `output` call returns as every store applies it:
/// the caller's, within 1..=[`MAX_OUTPUT_LIMIT`], 1000 when the caller
/// passes 0.
pub(crate) fn output_limit(asked: usize) -> usize {
    match asked {
        0 => 1000,
        n => n.min(MAX_OUTPUT_LIMIT),
    }
}

/// The stored form of an `output` cursor: sequence numbers are stored as
/// signed 64-bit integers, none above `i64::MAX`; `-1` before the first.
/// `None` when nothing can follow `after`.
pub(crate) fn stored_after(after: Option<u64>) -> Option<i64> {
    match after {
        None => Some(-1),
        Some(after) => i64::try_from(after).ok(),
    }
}

/// The most chunks one `output` call returns.
pub(crate) const MAX_OUTPUT_LIMIT: usize = 10_000;

/// A page of runs from `limit + 1` fetched in order: the first `limit`, and
/// a cursor after the last of them when there were more.
pub(crate) fn page(mut runs: Vec<RunRecord>, limit: usize) -> RunPage {
    let next_cursor = if runs.len() > limit {
        runs.truncate(limit);
        runs.last()
            .map(|last| encode_cursor(last.tick.as_millisecond(), last.run_id))
    } else {
        None
    };
    RunPage { runs, next_cursor }
}

/// The runs cursor of both stores: the sort key of the page's last run,
/// `<tick ms>_<run id>`. Only digits, `-`, `_` and upper-case letters, so it
/// needs no URL escaping (and a cursor stays valid across the two stores).
pub(crate) fn encode_cursor(tick: i64, run_id: RunId) -> String {
    format!("{tick}_{run_id}")
}

/// A page of audit entries from `limit + 1` fetched newest first: the first
/// `limit`, and a cursor (the id of the last of them) when there were more.
/// Ids are ULIDs in Crockford base 32: no URL escaping needed.
pub(crate) fn audit_page(mut entries: Vec<AuditEntry>, limit: usize) -> AuditPage {
    let next_cursor = if entries.len() > limit {
        entries.truncate(limit);
        entries.last().map(|last| last.id.to_string())
    } else {
        None
    };
    AuditPage { entries, next_cursor }
}

/// The id an audit cursor names: entries older than it come next.
pub(crate) fn decode_audit_cursor(cursor: &str) -> Result<AuditId, LogStoreError> {
    cursor
        .parse()
        .map_err(|_| LogStoreError::Invalid("invalid cursor".to_owned()))
}

pub(crate) fn decode_cursor(cursor: &str) -> Result<(i64, RunId), LogStoreError> {
    let invalid = || LogStoreError::Invalid("invalid cursor".to_owned());
    let (tick, run_id) = cursor.split_once('_').ok_or_else(invalid)?;
    let tick = tick.parse::<i64>().map_err(|_| invalid())?;
    let run_id = run_id.parse::<RunId>().map_err(|_| invalid())?;
    Ok((tick, run_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::sample_record;

    /// What a store holds after `records` are applied in order to `stored`
    /// under [`supersedes`], per run.
    fn apply(stored: &[RunRecord], records: &[RunRecord]) -> BTreeMap<RunId, RunRecord> {
        let mut state: BTreeMap<RunId, RunRecord> = stored.iter().map(|r| (r.run_id, r.clone())).collect();
        for record in records {
            match state.get(&record.run_id) {
                Some(current) if !supersedes(record, current) => {}
                _ => {
                    state.insert(record.run_id, record.clone());
                }
            }
        }
        state
    }

    /// Every record a run can have: each kind of status at each of 3 fences,
    /// each told apart by its worker field.
    fn variants(run_id: RunId) -> Vec<RunRecord> {
        let job = JobName::new("coalesce").unwrap();
        let statuses = [
            RunStatus::Running,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Lost,
        ];
        let mut all = Vec::new();
        for fence in 1..=3 {
            for status in statuses {
                let mut record = sample_record(&job, Timestamp::UNIX_EPOCH, status, fence);
                record.run_id = run_id;
                record.worker = format!("{status:?}@{fence}");
                all.push(record);
            }
        }
        all
    }

    #[test]
    fn dropping_superseded_records_never_changes_what_is_stored() {
        let run = RunId::generate();
        let options = variants(run);
        let n = options.len();
        let mut dropped_any = 0;
        for len in 1..=4u32 {
            for code in 0..n.pow(len) {
                let records: Vec<RunRecord> = (0..len).map(|i| options[(code / n.pow(i)) % n].clone()).collect();
                let mut batch = LogBatch {
                    runs: records.clone(),
                    chunks: vec![],
                };
                batch.drop_superseded();
                dropped_any += usize::from(batch.runs.len() < records.len());
                for stored in std::iter::once(None).chain(options.iter().map(Some)) {
                    let stored: Vec<RunRecord> = stored.into_iter().cloned().collect();
                    assert_eq!(
                        apply(&stored, &batch.runs),
                        apply(&stored, &records),
                        "batch {:?} kept as {:?}, stored {:?}",
                        records.iter().map(|r| &r.worker).collect::<Vec<_>>(),
                        batch.runs.iter().map(|r| &r.worker).collect::<Vec<_>>(),
                        stored.iter().map(|r| &r.worker).collect::<Vec<_>>(),
                    );
                }
            }
        }
        assert!(dropped_any > 0, "some batches must shrink");
    }

    #[test]
    fn a_run_that_ends_within_the_batch_is_one_write_and_other_runs_are_untouched() {
        let (a, b) = (RunId::generate(), RunId::generate());
        let (va, vb) = (variants(a), variants(b));
        // Index 4 * (fence - 1) + [running, succeeded, failed, lost].
        let running_a = va[4].clone();
        let succeeded_a = va[5].clone();
        let running_b = vb[4].clone();
        let lost_b = vb[7].clone();
        let mut batch = LogBatch {
            runs: vec![running_a, running_b.clone(), succeeded_a.clone(), lost_b.clone()],
            chunks: vec![],
        };
        batch.drop_superseded();
        // A `lost` marker is no run's own outcome: b's running record stays.
        assert_eq!(batch.runs, vec![running_b, succeeded_a, lost_b]);
        // A later outcome at a lower fence does not hide a higher record.
        let mut batch = LogBatch {
            runs: vec![va[9].clone(), va[1].clone()],
            chunks: vec![],
        };
        batch.drop_superseded();
        assert_eq!(batch.runs.len(), 2);
    }
}
