//! The records sandcron stores and exchanges through the coordination
//! store: a job's claim state (and the inputs of its catch-up plan), a
//! running run, trigger and kill requests, an async run's reported outcome,
//! and a stored module's commit marker.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Role;
use crate::coord::Revision;
use crate::ids::{JobName, RunId};
use crate::module::{Capability, ModuleKind};
use crate::run::{ParentRun, RunStatus, Shard, Trigger};

/// The claim record of a job: the newest tick any worker has claimed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobState {
    pub last_tick: Timestamp,
    /// The lease of the worker that made the claim. A worker whose claim
    /// transaction failed without an answer (the store went away mid-commit)
    /// reads it back to learn whether the claim went through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<i64>,
    /// The claim recorded its tick `skipped` (overlap forbidden) instead of
    /// starting a run. That record travels only through the claimant's log
    /// sink, with no `running/` entry to show for it, so a worker that takes
    /// the job over from another lease writes it again (same deterministic
    /// run id, [`crate::ids::RunId::for_skip`]) unless the log store has it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// Catch-up ticks this state accounts for that wait to run one after
    /// another on the claimant, oldest first; each leaves the list in the
    /// transaction that publishes its run. A worker that takes the job over
    /// from another lease records the ticks still listed `missed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub catchup: Vec<Timestamp>,
    /// Set by a catch-up claim: what the plan it carried out was made from.
    /// The plan's `missed` records (and those of another claimant's queue it
    /// took over) travel only through the claimant's log sink, so a worker
    /// that takes the job over from another lease derives the same records
    /// from this (deterministic ids, [`crate::ids::RunId::for_missed`]) and
    /// writes the ones the log store lacks. The claimant's next claim leaves
    /// it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanInputs>,
}

/// The inputs of a catch-up plan ([`crate::schedule::plan_catchup`]), enough
/// for any worker to derive the same plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanInputs {
    /// The revision of the job record the plan was made for: a plan is only
    /// derived again for the same schedule and policy.
    pub job_revision: Revision,
    pub after: Timestamp,
    pub now: Timestamp,
    pub missed_records: u64,
    pub runs: u64,
    pub grace_ms: u64,
    pub scan: u64,
    /// Another claimant's queued ticks that the claim took over, which it
    /// records `missed` ([`crate::ids::RunId::for_unstarted_catchup`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub abandoned: Vec<Timestamp>,
}

/// A run in progress, as published under `running/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunningEntry {
    #[schema(value_type = String)]
    pub run_id: RunId,
    pub worker: String,
    #[schema(value_type = String, format = DateTime)]
    pub tick: Timestamp,
    pub trigger: Trigger,
    pub attempt: u32,
    #[schema(value_type = String, format = DateTime)]
    pub claimed_at: Timestamp,
    /// The run's fencing token, once known. Absent in the entry written by
    /// the claim itself, whose revision is the fence; present when the entry
    /// is published again (after the worker lost and renewed its lease).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<Revision>,
    /// For a dependent job's run: the run that started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRun>,
    /// For a shard of a broadcast tick: which one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// How many dependency links led to this run (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub depth: u32,
    /// For a re-run: the run it re-runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub rerun_of: Option<RunId>,
    /// For a run of an async job: the SHA-256 (hex) of the token the
    /// service reporting its result must present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_token_sha256: Option<String>,
    /// The token itself: known only to the worker running the run (and,
    /// through it, to the job), never stored.
    #[serde(skip)]
    #[schema(ignore)]
    pub result_token: Option<String>,
}

/// Which runs a kill request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillTarget {
    Run(RunId),
    All,
}

/// A kill request as seen by workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillRequest {
    pub job: JobName,
    pub target: KillTarget,
}

/// A request to start a run outside the schedule: "run now", a re-run of
/// an earlier run's tick, a dependent job started by its parent's run, a
/// retry, or one shard of a broadcast tick (then addressed to one worker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerRequest {
    pub requested_at: Timestamp,
    pub requested_by: String,
    /// `manual`, `rerun`, `dependency` or `retry`; a shard keeps the trigger
    /// of its tick.
    #[serde(default = "manual")]
    pub trigger: Trigger,
    /// The instant the run is for: the tick of a shard, a retry or a re-run;
    /// otherwise the request time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRun>,
    /// How many dependency links led here (a guard against cycles that
    /// slipped past validation, e.g. two masters saving at once).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub depth: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// The worker that must run it (shards); `None`: the job's owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_worker: Option<String>,
    /// The attempt this run is (a retried shard keeps counting).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub attempt: u32,
    /// Not to be started before this instant (a retry's backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
    /// For a re-run: the run it re-runs (whose tick is `tick`). The run
    /// started for the request carries it in its record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<RunId>,
}

fn manual() -> Trigger {
    Trigger::Manual
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl TriggerRequest {
    /// "Run now", by a caller with `role`.
    pub fn manual(requested_by: Role) -> Self {
        Self {
            requested_at: crate::run::whole_millisecond(Timestamp::now()),
            requested_by: requested_by.as_str().into(),
            trigger: Trigger::Manual,
            tick: None,
            parent: None,
            depth: 0,
            shard: None,
            target_worker: None,
            attempt: 1,
            not_before: None,
            rerun_of: None,
        }
    }

    /// A re-run of run `of` for its `tick`, by a caller with `role`: the
    /// same tick again, a first attempt, taken by the job's owner unless
    /// the caller addresses it to a worker (a broadcast shard).
    pub fn rerun(requested_by: Role, of: RunId, tick: Timestamp) -> Self {
        Self {
            trigger: Trigger::Rerun,
            tick: Some(crate::run::whole_millisecond(tick)),
            rerun_of: Some(of),
            ..Self::manual(requested_by)
        }
    }

    /// The instant the run is for.
    pub fn tick(&self) -> Timestamp {
        crate::run::whole_millisecond(self.tick.unwrap_or(self.requested_at))
    }
}

/// What the service an async run called reports (`POST /api/v1/runs/{run_id}/result`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunReport {
    /// `succeeded` or `failed`.
    pub status: RunStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A JSON value stored with the run, like a `::sandcron::result` line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// Text appended to the run's output (stdout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// A stored module's commit marker (written after all its chunks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ModuleMeta {
    pub size: u64,
    pub chunks: u32,
    /// `module` (core WASI preview 1) or `component` (WASI preview 2).
    pub kind: ModuleKind,
    #[schema(value_type = String, format = DateTime)]
    pub uploaded_at: Timestamp,
    /// The network interfaces it imports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<Capability>,
    /// A label for people: the uploaded file's name or the uploader's
    /// `--name`; the latest upload that gave one. The digest stays what jobs
    /// name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}
