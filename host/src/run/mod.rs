//! The run model: run records, their statuses and triggers, and output chunks.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::{JobName, ModuleDigest, RunId};
use crate::job::{Job, JobKind};

mod ledger;

pub use ledger::{EgressEntry, EgressKind, EgressLedger, EgressOutcome, EgressTotals, MAX_LEDGER_ENTRIES};

/// The prefix of the stdout line that sets a run's result value.
pub const RESULT_MARKER: &str = "::sandcron::result ";

/// The largest result value accepted, in bytes of JSON.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;

/// Where a run stands. Every run ends in exactly one terminal status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Killed,
    OutOfFuel,
    OutOfMemory,
    /// The tick found the previous run still running and the job forbids overlap.
    Skipped,
    /// The tick passed while no worker ran the job, and catch-up did not run it.
    Missed,
    /// The worker running it disappeared; its true outcome is unknown.
    Lost,
}

impl RunStatus {
    pub const ALL: [RunStatus; 10] = [
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::TimedOut,
        RunStatus::Killed,
        RunStatus::OutOfFuel,
        RunStatus::OutOfMemory,
        RunStatus::Skipped,
        RunStatus::Missed,
        RunStatus::Lost,
    ];

    pub fn is_terminal(self) -> bool {
        self != RunStatus::Running
    }

    /// Whether a run that ended so is retried under the job's retry policy.
    /// Kills are deliberate and never retried; resource exhaustion would only
    /// fail again.
    pub fn is_retryable(self) -> bool {
        matches!(self, RunStatus::Failed | RunStatus::TimedOut | RunStatus::Lost)
    }

    /// Whether a job's alert rule may name this status.
    pub fn is_alertable(self) -> bool {
        !matches!(self, RunStatus::Running | RunStatus::Succeeded)
    }

    /// Whether a run that ended so counts as a failure: for failure-rate
    /// alerts and `on_failure` dependents. Kills are deliberate, and ticks
    /// that did not run (skipped, missed) are not runs that failed.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            RunStatus::Failed | RunStatus::TimedOut | RunStatus::OutOfFuel | RunStatus::OutOfMemory | RunStatus::Lost
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Killed => "killed",
            RunStatus::OutOfFuel => "out_of_fuel",
            RunStatus::OutOfMemory => "out_of_memory",
            RunStatus::Skipped => "skipped",
            RunStatus::Missed => "missed",
            RunStatus::Lost => "lost",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RunStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<_> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown run status {s:?}; expected one of {}", known.join(", "))
            })
    }
}

/// `t` cut to a whole millisecond: the precision the log stores keep, so a
/// tick read back compares equal to the one written (and `since=<tick>`
/// finds its own run). Ticks of requested runs (manual, dependency) are the
/// request's instant, made with this.
pub fn whole_millisecond(t: Timestamp) -> Timestamp {
    Timestamp::from_millisecond(t.as_millisecond()).unwrap_or(t)
}

/// Why a run exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Schedule,
    Manual,
    Catchup,
    Retry,
    /// Started by another job's run (`on_success` / `on_failure`).
    Dependency,
    /// A run started again for the tick of an earlier run
    /// (`POST /api/v1/runs/{id}/rerun`); `rerun_of` names that run.
    Rerun,
}

impl Trigger {
    pub const ALL: [Trigger; 6] = [
        Trigger::Schedule,
        Trigger::Manual,
        Trigger::Catchup,
        Trigger::Retry,
        Trigger::Dependency,
        Trigger::Rerun,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Catchup => "catchup",
            Trigger::Retry => "retry",
            Trigger::Dependency => "dependency",
            Trigger::Rerun => "rerun",
        }
    }
}

impl std::str::FromStr for Trigger {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Trigger::ALL
            .into_iter()
            .find(|trigger| trigger.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<_> = Trigger::ALL.iter().map(|t| t.as_str()).collect();
                format!("unknown trigger {s:?}; expected one of {}", known.join(", "))
            })
    }
}

/// The run that started a dependent run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ParentRun {
    #[schema(value_type = String)]
    pub job: JobName,
    #[schema(value_type = String)]
    pub run_id: RunId,
    pub status: RunStatus,
}

/// One shard of a broadcast tick: the tick runs once on each of `count`
/// workers; `group` names the tick's set of shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
    #[schema(value_type = String)]
    pub group: RunId,
}

/// One run of a job (or one recorded tick that did not run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunRecord {
    #[schema(value_type = String)]
    pub run_id: RunId,
    #[schema(value_type = String)]
    pub job: JobName,
    /// The scheduled instant this run is for (the request instant for manual
    /// runs; for a re-run, the tick of the run it re-runs).
    #[schema(value_type = String, format = DateTime)]
    pub tick: Timestamp,
    pub trigger: Trigger,
    /// 1 for the first attempt, incremented by each retry.
    pub attempt: u32,
    pub worker: String,
    /// The claim's store revision: the fencing token of this run.
    pub fence: i64,
    /// `wasm` or `shell`.
    pub kind: String,
    #[schema(value_type = Option<String>)]
    pub module: Option<ModuleDigest>,
    pub status: RunStatus,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<Timestamp>,
    pub fuel_used: Option<u64>,
    pub peak_memory: Option<u64>,
    pub output_bytes: u64,
    pub truncated: bool,
    /// For a `missed` record that stands for many ticks: how many, and the last
    /// of them (`tick` is the first). Keeps an outage of an every-second job
    /// from writing a record per second while still accounting for each tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub missed_until: Option<Timestamp>,
    /// The value the run reported with a stdout line `::sandcron::result <json>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// For an `async` run whose process, module or call ended well: until
    /// when the worker waits for its reported result (then `timed_out`).
    /// Present only while the run waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub result_due: Option<Timestamp>,
    /// When the record (and its output) may be deleted: the tick plus the
    /// job's retention (or the installation's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expire_at: Option<Timestamp>,
    /// For a run started by another job's run: that run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRun>,
    /// For a shard of a broadcast job's tick: which one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// For a re-run (trigger `rerun`): the run it re-runs, whose tick it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub rerun_of: Option<RunId>,
    /// For a run its owner had no free slot for: the worker that claimed
    /// it and handed it to `worker`, which had one (least-loaded hand-off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handed_off_from: Option<String>,
    /// What a WASM job did on the network, when it was granted any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressLedger>,
    /// The stored secrets the run was given, by name (never their values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// For a WASM run whose module was not ready: how long it waited for
    /// the module to be compiled or loaded from the disk cache before it
    /// started (workers get modules ready when they take a job on, so
    /// normally only a run right after an upload or a restart waits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_wait_ms: Option<u64>,
}

impl RunRecord {
    /// A record of run `run_id` of `job` (a job of `kind`) for `tick`, with
    /// `status`: a scheduled first attempt, worker and fence unset, every
    /// optional field empty. What the other constructors build on.
    pub fn new(job: JobName, run_id: RunId, tick: Timestamp, kind: &str, status: RunStatus) -> Self {
        Self {
            run_id,
            job,
            tick,
            trigger: Trigger::Schedule,
            attempt: 1,
            worker: String::new(),
            fence: 0,
            kind: kind.to_owned(),
            module: None,
            status,
            exit_code: None,
            error: None,
            started_at: None,
            ended_at: None,
            fuel_used: None,
            peak_memory: None,
            output_bytes: 0,
            truncated: false,
            missed_count: None,
            missed_until: None,
            result_due: None,
            result: None,
            expire_at: None,
            parent: None,
            shard: None,
            rerun_of: None,
            handed_off_from: None,
            egress: None,
            secrets: Vec::new(),
            module_wait_ms: None,
        }
    }

    /// [`RunRecord::new`] for a run of `job`, with its kind and module.
    pub fn for_job(job: &Job, run_id: RunId, tick: Timestamp, status: RunStatus) -> Self {
        let mut record = Self::new(job.name.clone(), run_id, tick, job.spec.kind.name(), status);
        if let JobKind::Wasm(wasm) = &job.spec.kind {
            record.module = Some(wasm.module.clone());
        }
        record
    }

    /// A record for a tick of `job` that ends without running (`skipped` or
    /// `missed`), recorded by `worker` under claim `fence`.
    pub fn not_run(job: &Job, tick: Timestamp, status: RunStatus, worker: &str, fence: i64, reason: String) -> Self {
        Self {
            worker: worker.to_owned(),
            fence,
            module: None,
            error: Some(reason),
            ended_at: Some(Timestamp::now()),
            ..Self::new(job.name.clone(), RunId::generate(), tick, job.spec.kind.name(), status)
        }
    }

    /// Run time in milliseconds, when the run has started and ended.
    pub fn duration_ms(&self) -> Option<i64> {
        match (self.started_at, self.ended_at) {
            (Some(start), Some(end)) => Some(end.duration_since(start).as_millis() as i64),
            _ => None,
        }
    }
}

/// Which stream a chunk of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    Stdout,
    Stderr,
}

/// A piece of a run's output. `(run_id, seq)` is unique, so replaying a batch
/// never duplicates output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OutputChunk {
    #[schema(value_type = String)]
    pub run_id: RunId,
    /// 0, 1, 2 … across both streams of the run, in the order written.
    pub seq: u64,
    pub stream: StreamKind,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    pub data: String,
    /// When the chunk may be deleted (the run's `expire_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expire_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::{RunStatus, Trigger};

    #[test]
    fn every_status_and_trigger_is_listed_and_parses_from_its_stored_name() {
        for status in RunStatus::ALL {
            let stored = serde_json::to_value(status).unwrap();
            assert_eq!(stored, status.as_str());
            assert_eq!(status.as_str().parse::<RunStatus>(), Ok(status));
        }
        for trigger in Trigger::ALL {
            // A new variant fails to compile here until it is listed in ALL.
            match trigger {
                Trigger::Schedule
                | Trigger::Manual
                | Trigger::Catchup
                | Trigger::Retry
                | Trigger::Dependency
                | Trigger::Rerun => {}
            }
            let stored = serde_json::to_value(trigger).unwrap();
            assert_eq!(stored, trigger.as_str());
            assert_eq!(trigger.as_str().parse::<Trigger>(), Ok(trigger));
        }
        let err = "nope".parse::<Trigger>().unwrap_err();
        assert!(err.contains("schedule, manual, catchup, retry, dependency"), "{err}");
    }

    /// A job reads its trigger from `SANDCRON_TRIGGER`; the Rust guest crate
    /// refuses a name it does not know, so every trigger must be one it knows.
    #[test]
    fn the_guest_crate_knows_every_trigger() {
        for trigger in Trigger::ALL {
            let theirs = trigger.as_str().parse::<sandcron_guest::Trigger>();
            assert_eq!(theirs.map(|t| t.as_str()), Ok(trigger.as_str()));
        }
    }
}
