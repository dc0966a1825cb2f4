//! The BSON documents of the three collections, `RunDoc` in `runs`,
//! `ChunkDoc` in `output` and `AuditDoc` in `audit`, and how run records,
//! chunks and audit entries map onto them.
//! The mapping is where the schema's compromises live (instants stored twice,
//! `result` as JSON text, integers read leniently; see the module comment of
//! `mongo`), so that the queries and writes deal in plain documents.
//! An absent optional value is left out of a document
//! (`skip_serializing_none`) and read back as absent when missing; the
//! leniently read integers say `default` themselves, as serde needs.

use std::fmt;

use jiff::Timestamp;
use mongodb::bson::DateTime;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::audit::{AuditAction, AuditEntry};
use crate::auth::Role;
use crate::ids::{JobName, ModuleDigest, RunId};
use crate::logstore::LogStoreError;
use crate::run::{OutputChunk, RunRecord, RunStatus, StreamKind, Trigger};

/// One run, as stored in `runs`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RunDoc {
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
    module: Option<String>,
    status: RunStatus,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    exit_code: Option<i64>,
    error: Option<String>,
    started_at: Option<DateTime>,
    ended_at: Option<DateTime>,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    fuel_used: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    peak_memory: Option<i64>,
    #[serde(deserialize_with = "lenient::int")]
    output_bytes: i64,
    truncated: bool,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    missed_count: Option<i64>,
    missed_until: Option<DateTime>,
    result_due: Option<DateTime>,
    /// The guest's result as JSON text; see the module comment.
    result: Option<String>,
    /// The egress ledger as JSON text, like `result`: its counters are
    /// unsigned 64-bit, which BSON has no type for.
    egress: Option<String>,
    expire_at: Option<DateTime>,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    expire_ms: Option<i64>,
    /// The parent run (JSON text), for a dependent job's run.
    parent: Option<String>,
    /// The shard (JSON text), for a broadcast job's run.
    shard: Option<String>,
    /// The run a re-run re-runs.
    rerun_of: Option<String>,
    /// The worker that handed the run off (least-loaded hand-off).
    handed_off_from: Option<String>,
    /// The names of the secrets the run was given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    secrets: Vec<String>,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    module_wait_ms: Option<i64>,
}

impl RunDoc {
    pub(super) fn new(record: &RunRecord) -> Self {
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
            egress: record
                .egress
                .as_ref()
                .and_then(|ledger| serde_json::to_string(ledger).ok()),
            expire_at: record.expire_at.map(to_date),
            expire_ms: record.expire_at.map(Timestamp::as_millisecond),
            // Small JSON texts, like `result`: no numbers the wire server
            // could turn into another type on the way.
            parent: record.parent.as_ref().and_then(|p| serde_json::to_string(p).ok()),
            shard: record.shard.as_ref().and_then(|s| serde_json::to_string(s).ok()),
            rerun_of: record.rerun_of.map(|id| id.to_string()),
            handed_off_from: record.handed_off_from.clone(),
            secrets: record.secrets.clone(),
            module_wait_ms: record.module_wait_ms.map(saturate),
        }
    }

    pub(super) fn into_record(self) -> Result<RunRecord, LogStoreError> {
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
            started_at: from_opt_date(self.started_at).map_err(|e| corrupt("an invalid started_at", &e))?,
            ended_at: from_opt_date(self.ended_at).map_err(|e| corrupt("an invalid ended_at", &e))?,
            fuel_used: self.fuel_used.map(|n| unsigned("fuel_used", n)).transpose()?,
            peak_memory: self.peak_memory.map(|n| unsigned("peak_memory", n)).transpose()?,
            output_bytes: unsigned("output_bytes", self.output_bytes)?,
            truncated: self.truncated,
            missed_count: self.missed_count.map(|n| unsigned("missed_count", n)).transpose()?,
            missed_until: from_opt_date(self.missed_until).map_err(|e| corrupt("an invalid missed_until", &e))?,
            result_due: from_opt_date(self.result_due).map_err(|e| corrupt("an invalid result_due", &e))?,
            result: from_opt_json(self.result).map_err(|e| corrupt("an unreadable result", &e))?,
            egress: from_opt_json(self.egress).map_err(|e| corrupt("an unreadable egress ledger", &e))?,
            expire_at: from_opt_date(self.expire_at).map_err(|e| corrupt("an invalid expire_at", &e))?,
            parent: from_opt_json(self.parent).map_err(|e| corrupt("an unreadable parent", &e))?,
            shard: from_opt_json(self.shard).map_err(|e| corrupt("an unreadable shard", &e))?,
            rerun_of: self
                .rerun_of
                .map(|id| id.parse::<RunId>())
                .transpose()
                .map_err(|e| corrupt("an invalid rerun_of", &e))?,
            handed_off_from: self.handed_off_from,
            secrets: self.secrets,
            module_wait_ms: self.module_wait_ms.map(|n| unsigned("module_wait_ms", n)).transpose()?,
        })
    }
}

/// One output chunk, as stored in `output`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ChunkDoc {
    /// `<run_id>:<seq>`, so that a replayed chunk is a duplicate key.
    #[serde(rename = "_id")]
    id: String,
    run_id: String,
    #[serde(deserialize_with = "lenient::int")]
    seq: i64,
    stream: StreamKind,
    at: DateTime,
    data: String,
    expire_at: Option<DateTime>,
}

impl ChunkDoc {
    pub(super) fn new(chunk: &OutputChunk) -> Self {
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

    pub(super) fn into_chunk(self, run_id: RunId) -> Result<OutputChunk, LogStoreError> {
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
            expire_at: from_opt_date(expire_at).map_err(|e| corrupt("an invalid expire_at", &e))?,
        })
    }
}

/// One audit entry, as stored in `audit`. Written once, never replaced.
#[serde_with::skip_serializing_none]
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct AuditDoc {
    #[serde(rename = "_id")]
    id: String,
    /// The same as `_id`, for sorting and indexes (see the module comment
    /// of `mongo` on `_id` in compound indexes).
    audit_id: String,
    at: DateTime,
    #[serde(deserialize_with = "lenient::int")]
    at_ms: i64,
    actor: String,
    role: Role,
    action: AuditAction,
    target: String,
    job: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    revision_before: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    revision_after: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    changed: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    runs: Vec<String>,
    detail: Option<String>,
    remote: Option<String>,
    forwarded_for: Option<String>,
    expire_at: Option<DateTime>,
    #[serde(default, deserialize_with = "lenient::opt_int")]
    expire_ms: Option<i64>,
}

impl AuditDoc {
    pub(super) fn new(entry: &AuditEntry) -> Self {
        let id = entry.id.to_string();
        Self {
            audit_id: id.clone(),
            id,
            at: to_date(entry.at),
            at_ms: entry.at.as_millisecond(),
            actor: entry.actor.clone(),
            role: entry.role,
            action: entry.action,
            target: entry.target.clone(),
            job: entry.job.as_ref().map(|job| job.as_str().to_owned()),
            revision_before: entry.revision_before,
            revision_after: entry.revision_after,
            changed: entry.changed.clone(),
            runs: entry.runs.iter().map(ToString::to_string).collect(),
            detail: entry.detail.clone(),
            remote: entry.remote.clone(),
            forwarded_for: entry.forwarded_for.clone(),
            expire_at: entry.expire_at.map(to_date),
            expire_ms: entry.expire_at.map(Timestamp::as_millisecond),
        }
    }

    pub(super) fn into_entry(self) -> Result<AuditEntry, LogStoreError> {
        let id = self.id;
        let corrupt =
            |what: &str, e: &dyn fmt::Display| LogStoreError::Other(format!("stored audit entry {id} has {what}: {e}"));
        Ok(AuditEntry {
            id: id.parse().map_err(|e| corrupt("an invalid id", &e))?,
            at: from_date(self.at).map_err(|e| corrupt("an invalid time", &e))?,
            actor: self.actor,
            role: self.role,
            action: self.action,
            target: self.target,
            job: self
                .job
                .map(|job| JobName::new(&job))
                .transpose()
                .map_err(|e| corrupt("an invalid job", &e))?,
            revision_before: self.revision_before,
            revision_after: self.revision_after,
            changed: self.changed,
            runs: self
                .runs
                .iter()
                .map(|run| run.parse::<RunId>())
                .collect::<Result<_, _>>()
                .map_err(|e| corrupt("an invalid run id", &e))?,
            detail: self.detail,
            remote: self.remote,
            forwarded_for: self.forwarded_for,
            expire_at: from_opt_date(self.expire_at).map_err(|e| corrupt("an invalid expire_at", &e))?,
        })
    }
}

/// Just the `_id`, for `purge`.
#[derive(Debug, Deserialize)]
pub(super) struct IdDoc {
    #[serde(rename = "_id")]
    pub(super) id: String,
}

/// A BSON date: milliseconds, the sub-millisecond rest cut off.
fn to_date(t: Timestamp) -> DateTime {
    DateTime::from_millis(t.as_millisecond())
}

fn from_date(d: DateTime) -> Result<Timestamp, jiff::Error> {
    Timestamp::from_millisecond(d.timestamp_millis())
}

/// An optional BSON date, as [`from_date`] reads it.
fn from_opt_date(d: Option<DateTime>) -> Result<Option<Timestamp>, jiff::Error> {
    d.map(from_date).transpose()
}

/// An optional value stored as JSON text (`result`, `egress`, `parent`,
/// `shard`; see the module comment).
fn from_opt_json<T: DeserializeOwned>(text: Option<String>) -> Result<Option<T>, serde_json::Error> {
    text.map(|text| serde_json::from_str(&text)).transpose()
}

/// BSON has no unsigned 64-bit integer. Counters past i64::MAX (fuel beyond
/// 9.2e18) are stored as i64::MAX rather than failing the batch.
fn saturate(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

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
