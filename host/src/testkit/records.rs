//! Sample records for tests: a run record filled in the way an executor
//! would fill it.

use jiff::{SignedDuration, Timestamp};

use crate::ids::{JobName, ModuleDigest, RunId};
use crate::run::{RunRecord, RunStatus};

/// A run record with every field set the way an executor would, for tests
/// here and elsewhere. `tick` is whole milliseconds if the caller's is.
pub fn sample_record(job: &JobName, tick: Timestamp, status: RunStatus, fence: i64) -> RunRecord {
    let started = tick + SignedDuration::from_millis(15);
    let terminal = status.is_terminal();
    RunRecord {
        worker: "conformance-worker".to_owned(),
        fence,
        module: Some(ModuleDigest::of(job.as_str().as_bytes())),
        exit_code: terminal.then_some(0),
        started_at: Some(started),
        ended_at: terminal.then(|| started + SignedDuration::from_millis(250)),
        fuel_used: terminal.then_some(12_345),
        peak_memory: Some(65_536),
        result: terminal.then(|| serde_json::json!({"rows": 3, "ok": true, "note": "ünïcødé"})),
        ..RunRecord::new(job.clone(), RunId::generate(), tick, "wasm", status)
    }
}
