//! Sample records for tests: a run record filled in the way an executor
//! would fill it.

use jiff::{SignedDuration, Timestamp};

use crate::coord::RunningEntry;
use crate::ids::{JobName, ModuleDigest, RunId};
use crate::run::{EgressEntry, EgressKind, EgressLedger, EgressOutcome, RunRecord, RunStatus, Trigger};

/// The `running/` entry of a new run (a fresh id) on `worker`, for its tick
/// now, first attempt, with no fence, parent, shard or result token yet.
pub fn sample_entry(worker: &str, trigger: Trigger) -> RunningEntry {
    let now = Timestamp::now();
    RunningEntry {
        run_id: RunId::generate(),
        worker: worker.to_owned(),
        tick: now,
        trigger,
        attempt: 1,
        claimed_at: now,
        fence: None,
        parent: None,
        shard: None,
        depth: 0,
        rerun_of: None,
        result_token_sha256: None,
        result_token: None,
    }
}

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
        module_wait_ms: terminal.then_some(1_234),
        result: terminal.then(|| serde_json::json!({"rows": 3, "ok": true, "note": "ünïcødé"})),
        egress: terminal.then(|| sample_ledger(started)),
        ..RunRecord::new(job.clone(), RunId::generate(), tick, "wasm", status)
    }
}

/// A ledger of one allowed and one refused call, with counters past what a
/// signed 32-bit integer holds (MongoDB-wire servers answer some numbers
/// as Int32).
fn sample_ledger(at: Timestamp) -> EgressLedger {
    let mut ledger = EgressLedger::default();
    ledger.push(EgressEntry {
        at,
        kind: EgressKind::Http,
        method: Some("POST".to_owned()),
        target: "https://api.example.com:443".to_owned(),
        path: Some("/v1/report".to_owned()),
        address: Some("203.0.113.7:443".to_owned()),
        outcome: EgressOutcome::Ok,
        status: Some(201),
        error: None,
        bytes_out: 5_000_000_000,
        bytes_in: 812,
        duration_ms: 42,
    });
    ledger.push(EgressEntry {
        at,
        kind: EgressKind::Tcp,
        method: None,
        target: "tcp://db.internal:5432".to_owned(),
        path: None,
        address: None,
        outcome: EgressOutcome::Refused,
        status: None,
        error: Some("not in the job's egress".to_owned()),
        bytes_out: 0,
        bytes_in: 0,
        duration_ms: 0,
    });
    ledger
}
