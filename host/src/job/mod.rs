//! The job model (what operators store) and its validation.
//!
//! A [`JobSpec`] is the body of `PUT /api/v1/jobs/{name}`: it is parsed strictly
//! (unknown fields are errors) and then [`JobSpec::validate`]d in one place, so
//! every store, worker and console sees only jobs that passed the same checks.

//!
//! The model lives here and in `kind` (what runs when the job fires); the
//! checks in `validate`.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Role;
use crate::compact::{Interned, Rare};
use crate::cronexpr::Schedule;
use crate::ids::{JobName, SecretName};
use crate::run::RunStatus;

mod alerts;
mod egress;
mod kind;
#[cfg(test)]
mod tests;
mod validate;

pub use alerts::check_failure_rate;
pub use egress::{EgressHost, EgressScheme, EgressTarget, NetworkLimits, is_host_name};
pub use kind::{DirMount, HTTP_METHODS, HttpJob, JobKind, RunCaps, ShellJob, WasmJob, WasmLimits};
pub use validate::{check_dependency_cycles, limits};

/// What an operator stores for a job: everything but its name and bookkeeping.
///
/// Every worker keeps every job's spec, so the fields most jobs leave empty
/// are [`Rare`] (one pointer, nothing on the heap, while empty) and the
/// schedule and time zone are [`Interned`]; both read and (de)serialise as
/// the plain value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Cron text: 5 fields (Vixie), 6 (leading seconds), 7 (trailing years), a macro or `@every <duration>`.
    #[schema(value_type = String)]
    pub schedule: Interned,
    /// IANA time zone the schedule is evaluated in.
    #[serde(default = "default_timezone")]
    #[schema(value_type = String)]
    pub timezone: Interned,
    pub kind: JobKind,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default)]
    pub catchup: Catchup,
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default)]
    pub paused: bool,
    /// Worker labels a worker must carry (all of them) to run this job.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    pub selector: Rare<BTreeMap<String, String>>,
    #[serde(default)]
    #[schema(value_type = String)]
    pub description: Rare<String>,
    /// Days to keep this job's run history and output (default: the
    /// installation's `logs.retention_days`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
    /// `sync` (default): a run ends when its process, module or HTTP call
    /// ends. `async`: a run that ended well then stays `running` until the
    /// service it called reports the outcome with
    /// `POST /api/v1/runs/{run_id}/result` and the run's token, or until
    /// `result_timeout_s` passes.
    #[serde(default, skip_serializing_if = "Completion::is_sync")]
    pub completion: Completion,
    /// How long an async run waits for its report (default 3600 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_timeout_s: Option<u64>,
    /// Jobs started (once each) when a run of this job succeeds; they get the
    /// parent's run id as `SANDCRON_PARENT_RUN_ID`.
    #[serde(default, skip_serializing_if = "Rare::is_usual")]
    #[schema(value_type = Vec<String>)]
    pub on_success: Rare<Vec<JobName>>,
    /// Jobs started when a run of this job fails for good (after its retries).
    #[serde(default, skip_serializing_if = "Rare::is_usual")]
    #[schema(value_type = Vec<String>)]
    pub on_failure: Rare<Vec<JobName>>,
    /// Run each tick once on every eligible worker (a shard each, with
    /// `SANDCRON_SHARD_INDEX` and `SANDCRON_SHARD_COUNT`) instead of once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub broadcast: bool,
    /// Who is told when runs of this job go wrong.
    // Boxed, as `Rare` fields are, but optional: a rule has no usual value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<JobAlerts>)]
    pub alerts: Option<Box<JobAlerts>>,
    /// Stored secrets the job receives, by the name it reads each under: an
    /// environment variable (shell jobs, and WASM jobs with
    /// `secrets_as_env`) and a `wasi:config` key (WASM components). HTTP
    /// jobs write `${secret:NAME}` in header values and the body instead.
    /// Values are resolved by the worker at run time and never stored here.
    #[serde(default, skip_serializing_if = "Rare::is_usual")]
    #[schema(value_type = BTreeMap<String, String>)]
    pub secrets: Rare<BTreeMap<String, SecretName>>,
}

/// How a run's outcome is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Completion {
    /// When the process, module or HTTP call ends.
    #[default]
    Sync,
    /// When the called service reports it (`POST /api/v1/runs/{run_id}/result`).
    Async,
}

impl Completion {
    pub fn is_sync(&self) -> bool {
        *self == Completion::Sync
    }
}

/// A job's alert rule: which outcomes raise an alert, and where it goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobAlerts {
    /// Run statuses that raise an alert: `failed`, `timed_out`, `killed`,
    /// `out_of_fuel`, `out_of_memory`, `skipped`, `missed`, `lost`.
    #[serde(default)]
    pub on: Vec<RunStatus>,
    /// Alert when too large a share of recent runs failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<FailureRate>,
    /// Dead-man alert: alert when no run of the job has succeeded within
    /// this many seconds (10 s to a year), once per such period — also when
    /// no worker is alive or none can run the job. Raised by the masters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_success_within_s: Option<u64>,
    /// Overrun warning: alert (once per run) when a run is still running
    /// this many seconds after it started; the run is not stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_duration_s: Option<u64>,
    /// Channel names from the `[alerts.channels]` configuration.
    pub channels: Vec<String>,
}

impl JobAlerts {
    /// How long a run may take before it overruns, if the rule says.
    pub fn expected_duration(&self) -> Option<std::time::Duration> {
        self.expected_duration_s.map(std::time::Duration::from_secs)
    }
}

/// "More than `threshold` of the runs that ended in the last `window_s`
/// seconds failed, counting at least `min_runs` runs."
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailureRate {
    /// A share between 0 (exclusive) and 1 (inclusive), e.g. 0.5.
    pub threshold: f64,
    #[serde(default = "default_failure_window_s")]
    pub window_s: u64,
    #[serde(default = "default_failure_min_runs")]
    pub min_runs: u32,
}

fn default_failure_window_s() -> u64 {
    600
}

fn default_failure_min_runs() -> u32 {
    5
}

/// The default of `result_timeout_s`.
pub const DEFAULT_RESULT_TIMEOUT_S: u64 = 3600;

impl JobSpec {
    /// A spec running `kind` on `schedule` in UTC, every other field at the
    /// default a body without it gets.
    pub fn new(schedule: impl Into<Interned>, kind: JobKind) -> Self {
        Self {
            schedule: schedule.into(),
            timezone: default_timezone(),
            kind,
            overlap: Overlap::default(),
            catchup: Catchup::default(),
            retry: RetryPolicy::default(),
            paused: false,
            selector: Rare::default(),
            description: Rare::default(),
            retention_days: None,
            completion: Completion::Sync,
            result_timeout_s: None,
            on_success: Rare::default(),
            on_failure: Rare::default(),
            broadcast: false,
            alerts: None,
            secrets: Rare::default(),
        }
    }

    /// Writes the time zone as the IANA database spells it (`europe/berlin`
    /// becomes `Europe/Berlin`); an unknown zone is left for `validate` to
    /// refuse.
    pub fn canonicalize(&mut self) {
        if let Ok(canonical) = crate::cronexpr::canonical_timezone(&self.timezone) {
            self.timezone = Interned::from(canonical);
        }
    }

    /// How long an async run waits for its report.
    pub fn result_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.result_timeout_s.unwrap_or(DEFAULT_RESULT_TIMEOUT_S))
    }

    /// The jobs this job starts, on success and on failure.
    pub fn dependents(&self) -> impl Iterator<Item = &JobName> {
        self.on_success.iter().chain(&self.on_failure)
    }

    /// Every stored secret the job uses, each with the field that names it
    /// first: its `secrets` and, for an HTTP job, the `${secret:NAME}`
    /// references of its headers and body. References that do not parse
    /// are left to `validate`.
    pub fn secret_references(&self) -> Vec<(String, SecretName)> {
        let mut found: Vec<(String, SecretName)> = Vec::new();
        let mut add = |field: String, name: SecretName| {
            if !found.iter().any(|(_, seen)| *seen == name) {
                found.push((field, name));
            }
        };
        for (alias, name) in self.secrets.iter() {
            add(format!("secrets.{alias}"), name.clone());
        }
        if let JobKind::Http(http) = &self.kind {
            for (header, value) in &http.headers {
                for name in crate::secret::references(value).unwrap_or_default() {
                    add(format!("kind.http.headers.{header}"), name);
                }
            }
            for name in http
                .body
                .as_deref()
                .map(crate::secret::references)
                .into_iter()
                .flatten()
                .flatten()
            {
                add("kind.http.body".to_owned(), name);
            }
        }
        found
    }
}

fn default_timezone() -> Interned {
    Interned::new("UTC")
}

/// What a tick does when the job's previous run is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Record the tick as `skipped`.
    #[default]
    Forbid,
    /// Start another run beside it.
    Allow,
    /// Kill the running one, then start.
    Replace,
}

/// What happens to ticks that passed while no worker could run the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Catchup {
    pub policy: CatchupPolicy,
    /// Only ticks this recent are run by `latest` and `all`; older ones are recorded `missed`.
    pub window_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatchupPolicy {
    /// Record every missed tick as `missed`.
    #[default]
    Skip,
    /// Run once for the newest missed tick within the window.
    Latest,
    /// Run every missed tick within the window, oldest first (bounded).
    All,
}

impl Catchup {
    pub const DEFAULT_WINDOW_S: u64 = 3600;
}

/// Retries of `failed` and `timed_out` runs with exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    pub max: u32,
    pub backoff_s: u64,
    pub max_backoff_s: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max: 0,
            backoff_s: 10,
            max_backoff_s: 3600,
        }
    }
}

/// A stored job: the operator's spec plus bookkeeping the server maintains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRecord {
    pub spec: JobSpec,
    pub meta: JobMeta,
}

/// Bookkeeping kept beside a spec; never written by clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobMeta {
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    /// Catch-up never reaches back before this instant: the last time the job
    /// was created, resumed or given a new schedule.
    #[schema(value_type = String, format = DateTime)]
    pub active_since: Timestamp,
    /// The role of the caller who last wrote the job; shell jobs run only when it is `admin`.
    pub written_by: Role,
}

impl Job {
    /// When a run of this job for `tick` may be deleted: `tick` plus the job's
    /// retention, or `default` when the job sets none.
    pub fn expire_at(&self, tick: Timestamp, default: std::time::Duration) -> Option<Timestamp> {
        let retention = match self.spec.retention_days {
            Some(days) => jiff::SignedDuration::from_hours(i64::from(days) * 24),
            None => jiff::SignedDuration::try_from(default).ok()?,
        };
        tick.checked_add(retention).ok()
    }
}

/// A job that passed validation, with its parsed schedule.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: JobName,
    pub spec: JobSpec,
    pub meta: JobMeta,
    pub schedule: Schedule,
    /// The store revision of the job's record (its optimistic-concurrency version).
    pub revision: i64,
}

/// Why a job spec was rejected; `field` is a JSON path into the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct JobError {
    pub field: String,
    pub message: String,
}

impl JobError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl Default for Catchup {
    fn default() -> Self {
        Self {
            policy: CatchupPolicy::Skip,
            window_s: Self::DEFAULT_WINDOW_S,
        }
    }
}

impl JobRecord {
    /// Parses a stored record and re-validates it; a record that no longer
    /// validates (edited by hand in the store, say) is reported, not run.
    pub fn decode(name: JobName, bytes: &[u8], revision: i64) -> Result<Job, JobError> {
        let record: JobRecord = serde_json::from_slice(bytes)
            .map_err(|err| JobError::new("record", format!("stored job is not valid: {err}")))?;
        let schedule = Schedule::new(&record.spec.schedule, &record.spec.timezone)
            .map_err(|err| JobError::new("schedule", format!("stored schedule is not valid: {err}")))?;
        Ok(Job {
            name,
            spec: record.spec,
            meta: record.meta,
            schedule,
            revision,
        })
    }
}

#[cfg(test)]
impl Job {
    /// A stored job for unit tests: `spec` as written by an admin at `at`,
    /// at revision 1.
    pub(crate) fn for_test(name: &str, spec: JobSpec, at: Timestamp) -> Job {
        Job {
            name: JobName::new(name).expect("name"),
            schedule: Schedule::new(&spec.schedule, &spec.timezone).expect("schedule"),
            spec,
            meta: JobMeta {
                created_at: at,
                updated_at: at,
                active_since: at,
                written_by: Role::Admin,
            },
            revision: 1,
        }
    }
}
