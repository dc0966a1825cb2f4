//! The job model (what operators store) and its validation.
//!
//! A [`JobSpec`] is the body of `PUT /api/v1/jobs/{name}`: it is parsed strictly
//! (unknown fields are errors) and then [`JobSpec::validate`]d in one place, so
//! every store, worker and console sees only jobs that passed the same checks.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Role;
use crate::cronexpr::{CronError, Schedule, ScheduleError};
use crate::ids::{JobName, ModuleDigest};
use crate::run::RunStatus;

/// What an operator stores for a job: everything but its name and bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Cron text: 5 fields (Vixie), 6 (leading seconds), 7 (trailing years), a macro or `@every <duration>`.
    pub schedule: String,
    /// IANA time zone the schedule is evaluated in.
    #[serde(default = "default_timezone")]
    pub timezone: String,
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
    pub selector: BTreeMap<String, String>,
    #[serde(default)]
    pub description: String,
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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub on_success: Vec<JobName>,
    /// Jobs started when a run of this job fails for good (after its retries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub on_failure: Vec<JobName>,
    /// Run each tick once on every eligible worker (a shard each, with
    /// `SANDCRON_SHARD_INDEX` and `SANDCRON_SHARD_COUNT`) instead of once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub broadcast: bool,
    /// Who is told when runs of this job go wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<JobAlerts>,
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
    /// Channel names from the workers' `[alerts.channels]` configuration.
    pub channels: Vec<String>,
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
    pub fn new(schedule: impl Into<String>, kind: JobKind) -> Self {
        Self {
            schedule: schedule.into(),
            timezone: default_timezone(),
            kind,
            overlap: Overlap::default(),
            catchup: Catchup::default(),
            retry: RetryPolicy::default(),
            paused: false,
            selector: BTreeMap::new(),
            description: String::new(),
            retention_days: None,
            completion: Completion::Sync,
            result_timeout_s: None,
            on_success: Vec::new(),
            on_failure: Vec::new(),
            broadcast: false,
            alerts: None,
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
}

fn default_timezone() -> String {
    "UTC".to_owned()
}

/// What runs when the job fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum JobKind {
    Wasm(WasmJob),
    Shell(ShellJob),
    Http(HttpJob),
}

impl JobKind {
    pub fn name(&self) -> &'static str {
        match self {
            JobKind::Wasm(_) => "wasm",
            JobKind::Shell(_) => "shell",
            JobKind::Http(_) => "http",
        }
    }

    pub fn timeout_s(&self) -> u64 {
        match self {
            JobKind::Wasm(wasm) => wasm.limits.timeout_s,
            JobKind::Shell(shell) => shell.timeout_s,
            JobKind::Http(http) => http.timeout_s,
        }
    }

    pub fn output_kb(&self) -> u64 {
        match self {
            JobKind::Wasm(wasm) => wasm.limits.output_kb,
            JobKind::Shell(shell) => shell.output_kb,
            JobKind::Http(http) => http.output_kb,
        }
    }

    pub fn is_native(&self) -> bool {
        matches!(self, JobKind::Shell(_))
    }
}

/// A WASI module run inside the sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WasmJob {
    #[schema(value_type = String, example = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")]
    pub module: ModuleDigest,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Directories to preopen; each must be granted by the worker's config.
    #[serde(default)]
    pub dirs: Vec<DirMount>,
    #[serde(default)]
    pub limits: WasmLimits,
}

/// A directory a worker grants (by name, in its config) mounted into the
/// guest at `guest_path`; read-only unless `writable`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DirMount {
    /// The grant's name in the worker configuration (`[worker.dirs]`).
    pub grant: String,
    /// Where the guest sees it, an absolute path such as `/data`.
    pub guest_path: String,
    #[serde(default)]
    pub writable: bool,
}

/// Resource limits of one WASM run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct WasmLimits {
    /// Fuel units (roughly one per WebAssembly instruction).
    pub fuel: u64,
    pub memory_mb: u64,
    pub timeout_s: u64,
    pub output_kb: u64,
}

impl Default for WasmLimits {
    fn default() -> Self {
        Self {
            fuel: 10_000_000_000,
            memory_mb: 64,
            timeout_s: 300,
            output_kb: 1024,
        }
    }
}

/// A command run by `sh -c` on a worker that permits native processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellJob {
    pub command: String,
    /// Extra environment; the process otherwise starts with a cleared environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "default_shell_timeout_s")]
    pub timeout_s: u64,
    #[serde(default = "default_output_kb")]
    pub output_kb: u64,
}

/// An HTTP request made by the worker when the job fires. The response's
/// status line, headers and body (up to `output_kb`) are the run's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpJob {
    /// `GET` (default), `HEAD`, `POST`, `PUT`, `PATCH`, `DELETE` or `OPTIONS`.
    #[serde(default = "default_http_method")]
    pub method: String,
    /// An `http://` or `https://` URL; the worker's allow-list decides
    /// which destinations it may reach.
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The request body, sent as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The whole exchange, connecting to the last byte of the body.
    #[serde(default = "default_http_timeout_s")]
    pub timeout_s: u64,
    /// Statuses that count as success; empty: any 2xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect_status: Vec<u16>,
    #[serde(default = "default_output_kb")]
    pub output_kb: u64,
}

/// The methods an HTTP job may use.
pub const HTTP_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

fn default_http_method() -> String {
    "GET".to_owned()
}

fn default_http_timeout_s() -> u64 {
    30
}

fn default_shell_timeout_s() -> u64 {
    3600
}

fn default_output_kb() -> u64 {
    1024
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

/// Upper bounds that keep one job's spec small enough for any store.
pub mod limits {
    pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
    pub const MAX_ARGS: usize = 1024;
    pub const MAX_ARG_BYTES: usize = 16 * 1024;
    pub const MAX_ENV: usize = 256;
    pub const MAX_ENV_VALUE_BYTES: usize = 16 * 1024;
    pub const MAX_DESCRIPTION_CHARS: usize = 2048;
    pub const MAX_SELECTOR: usize = 32;
    pub const MAX_TIMEOUT_S: u64 = 7 * 24 * 3600;
    pub const MAX_OUTPUT_KB: u64 = 64 * 1024;
    pub const MAX_MEMORY_MB: u64 = 4096;
    pub const MAX_RETRIES: u32 = 100;
    pub const MAX_BACKOFF_S: u64 = 24 * 3600;
    pub const MAX_CATCHUP_WINDOW_S: u64 = 31 * 24 * 3600;
    pub const MAX_URL_BYTES: usize = 8 * 1024;
    pub const MAX_HEADERS: usize = 64;
    pub const MAX_HEADER_VALUE_BYTES: usize = 8 * 1024;
    pub const MAX_HTTP_BODY_BYTES: usize = 256 * 1024;
    pub const MAX_DEPENDENTS: usize = 32;
    pub const MAX_ALERT_CHANNELS: usize = 16;
}

impl JobSpec {
    /// Checks everything a store cannot: the schedule and zone parse and fire,
    /// names and sizes are within limits. Returns the parsed schedule.
    pub fn validate(&self, now: Timestamp) -> Result<Schedule, JobError> {
        let schedule = Schedule::new(&self.schedule, &self.timezone).map_err(|err| match err {
            ScheduleError::Cron(cron) => JobError::new("schedule", describe_cron_error(&cron)),
            other @ ScheduleError::UnknownTimeZone(_) => JobError::new("timezone", other.to_string()),
        })?;
        if schedule.next_after(now).is_none() {
            return Err(JobError::new(
                "schedule",
                format!("{:?} never fires after {now}", self.schedule),
            ));
        }
        match &self.kind {
            JobKind::Wasm(wasm) => {
                if wasm.args.len() > limits::MAX_ARGS {
                    return Err(JobError::new(
                        "kind.wasm.args",
                        format!("at most {} arguments are allowed", limits::MAX_ARGS),
                    ));
                }
                for (index, arg) in wasm.args.iter().enumerate() {
                    check_text(&format!("kind.wasm.args[{index}]"), arg, limits::MAX_ARG_BYTES)?;
                }
                check_env("kind.wasm.env", &wasm.env)?;
                if wasm.dirs.len() > 16 {
                    return Err(JobError::new("kind.wasm.dirs", "at most 16 directories are allowed"));
                }
                for (index, dir) in wasm.dirs.iter().enumerate() {
                    let field = format!("kind.wasm.dirs[{index}]");
                    check_label(&format!("{field}.grant"), &dir.grant)?;
                    let path_ok = dir.guest_path.starts_with('/')
                        && dir.guest_path.len() <= 256
                        && !dir.guest_path.split('/').any(|part| part == ".." || part == ".")
                        && !dir.guest_path.contains('\0');
                    if !path_ok {
                        return Err(JobError::new(
                            format!("{field}.guest_path"),
                            "must be an absolute path without '.' or '..' components",
                        ));
                    }
                }
                let limits_ = &wasm.limits;
                if limits_.fuel == 0 {
                    return Err(JobError::new("kind.wasm.limits.fuel", "must be at least 1"));
                }
                check_range(
                    "kind.wasm.limits.memory_mb",
                    limits_.memory_mb,
                    1,
                    limits::MAX_MEMORY_MB,
                )?;
                check_range(
                    "kind.wasm.limits.timeout_s",
                    limits_.timeout_s,
                    1,
                    limits::MAX_TIMEOUT_S,
                )?;
                check_range(
                    "kind.wasm.limits.output_kb",
                    limits_.output_kb,
                    1,
                    limits::MAX_OUTPUT_KB,
                )?;
            }
            JobKind::Shell(shell) => {
                if shell.command.trim().is_empty() {
                    return Err(JobError::new("kind.shell.command", "must not be empty"));
                }
                check_text("kind.shell.command", &shell.command, limits::MAX_COMMAND_BYTES)?;
                check_env("kind.shell.env", &shell.env)?;
                check_range("kind.shell.timeout_s", shell.timeout_s, 1, limits::MAX_TIMEOUT_S)?;
                check_range("kind.shell.output_kb", shell.output_kb, 1, limits::MAX_OUTPUT_KB)?;
            }
            JobKind::Http(http) => check_http(http)?,
        }
        self.validate_integrations()?;
        if self.retry.max > limits::MAX_RETRIES {
            return Err(JobError::new(
                "retry.max",
                format!("must be at most {}", limits::MAX_RETRIES),
            ));
        }
        check_range("retry.backoff_s", self.retry.backoff_s, 1, limits::MAX_BACKOFF_S)?;
        check_range(
            "retry.max_backoff_s",
            self.retry.max_backoff_s,
            self.retry.backoff_s,
            limits::MAX_BACKOFF_S,
        )?;
        check_range(
            "catchup.window_s",
            self.catchup.window_s,
            0,
            limits::MAX_CATCHUP_WINDOW_S,
        )?;
        if self.selector.len() > limits::MAX_SELECTOR {
            return Err(JobError::new(
                "selector",
                format!("at most {} labels are allowed", limits::MAX_SELECTOR),
            ));
        }
        for (key, value) in &self.selector {
            check_label(&format!("selector.{key}"), key)?;
            check_label(&format!("selector.{key}"), value)?;
        }
        if let Some(days) = self.retention_days {
            check_range("retention_days", u64::from(days), 1, 3650)?;
        }
        if self.description.chars().count() > limits::MAX_DESCRIPTION_CHARS {
            return Err(JobError::new(
                "description",
                format!("must be at most {} characters", limits::MAX_DESCRIPTION_CHARS),
            ));
        }
        Ok(schedule)
    }
}

impl JobSpec {
    /// Completion, dependents, broadcast and alerts. Whether the dependents
    /// exist and form no cycle needs the other jobs: see [`check_dependency_cycles`].
    fn validate_integrations(&self) -> Result<(), JobError> {
        if let Some(timeout) = self.result_timeout_s {
            if self.completion.is_sync() {
                return Err(JobError::new(
                    "result_timeout_s",
                    "applies only to jobs with completion \"async\"",
                ));
            }
            check_range("result_timeout_s", timeout, 1, limits::MAX_TIMEOUT_S)?;
        }
        for (field, names) in [("on_success", &self.on_success), ("on_failure", &self.on_failure)] {
            if names.len() > limits::MAX_DEPENDENTS {
                return Err(JobError::new(
                    field,
                    format!("at most {} jobs are allowed", limits::MAX_DEPENDENTS),
                ));
            }
            for (index, name) in names.iter().enumerate() {
                if names[..index].contains(name) {
                    return Err(JobError::new(
                        format!("{field}[{index}]"),
                        format!("{name} is listed twice"),
                    ));
                }
            }
        }
        if self.broadcast && self.dependents().next().is_some() {
            let field = if self.on_success.is_empty() {
                "on_failure"
            } else {
                "on_success"
            };
            return Err(JobError::new(
                field,
                "a broadcast job cannot start dependent jobs: each of its shards ends on its own",
            ));
        }
        if self.broadcast && !self.completion.is_sync() {
            return Err(JobError::new(
                "completion",
                "a broadcast job cannot use async completion",
            ));
        }
        if let Some(alerts) = &self.alerts {
            if alerts.channels.is_empty() {
                return Err(JobError::new("alerts.channels", "name at least one channel"));
            }
            if alerts.channels.len() > limits::MAX_ALERT_CHANNELS {
                return Err(JobError::new(
                    "alerts.channels",
                    format!("at most {} channels are allowed", limits::MAX_ALERT_CHANNELS),
                ));
            }
            for (index, channel) in alerts.channels.iter().enumerate() {
                check_label(&format!("alerts.channels[{index}]"), channel)?;
            }
            for (index, status) in alerts.on.iter().enumerate() {
                if !status.is_alertable() {
                    return Err(JobError::new(
                        format!("alerts.on[{index}]"),
                        format!(
                            "{status} is not an alertable status; use failed, timed_out, killed, out_of_fuel, out_of_memory, skipped, missed or lost"
                        ),
                    ));
                }
            }
            if alerts.on.is_empty() && alerts.failure_rate.is_none() {
                return Err(JobError::new(
                    "alerts.on",
                    "name the statuses to alert on, or set a failure_rate",
                ));
            }
            if let Some(rate) = &alerts.failure_rate {
                check_failure_rate("alerts.failure_rate", rate)?;
            }
        }
        Ok(())
    }
}

/// Checks a failure-rate rule (a job's or a global one).
pub fn check_failure_rate(field: &str, rate: &FailureRate) -> Result<(), JobError> {
    if !(rate.threshold > 0.0 && rate.threshold <= 1.0) {
        return Err(JobError::new(
            format!("{field}.threshold"),
            format!("must be above 0 and at most 1, got {}", rate.threshold),
        ));
    }
    check_range(&format!("{field}.window_s"), rate.window_s, 10, 7 * 24 * 3600)?;
    check_range(&format!("{field}.min_runs"), u64::from(rate.min_runs), 1, 10_000)?;
    Ok(())
}

fn check_http(http: &HttpJob) -> Result<(), JobError> {
    if !HTTP_METHODS.contains(&http.method.as_str()) {
        return Err(JobError::new(
            "kind.http.method",
            format!("{:?} is not one of {}", http.method, HTTP_METHODS.join(", ")),
        ));
    }
    if http.url.len() > limits::MAX_URL_BYTES {
        return Err(JobError::new(
            "kind.http.url",
            format!("must be at most {} bytes", limits::MAX_URL_BYTES),
        ));
    }
    let url = reqwest::Url::parse(&http.url).map_err(|err| JobError::new("kind.http.url", format!("{err}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(JobError::new(
            "kind.http.url",
            format!("the scheme must be http or https, not {:?}", url.scheme()),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(JobError::new("kind.http.url", "must name a host"));
    }
    if http.headers.len() > limits::MAX_HEADERS {
        return Err(JobError::new(
            "kind.http.headers",
            format!("at most {} headers are allowed", limits::MAX_HEADERS),
        ));
    }
    for (name, value) in &http.headers {
        let field = format!("kind.http.headers.{name}");
        let token = !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(JobError::new(
                field,
                "header names are letters, digits and !#$%&'*+-.^_`|~",
            ));
        }
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("x-sandcron-") {
            return Err(JobError::new(
                field,
                "the X-Sandcron- prefix is reserved for headers sandcron sets",
            ));
        }
        if matches!(
            lower.as_str(),
            "host" | "content-length" | "transfer-encoding" | "connection" | "upgrade" | "te" | "trailer"
        ) {
            return Err(JobError::new(field, "this header is set by the HTTP client"));
        }
        if value.len() > limits::MAX_HEADER_VALUE_BYTES {
            return Err(JobError::new(
                field,
                format!("must be at most {} bytes", limits::MAX_HEADER_VALUE_BYTES),
            ));
        }
        if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(JobError::new(
                field,
                "header values must not contain control characters",
            ));
        }
    }
    if let Some(body) = &http.body {
        check_text("kind.http.body", body, limits::MAX_HTTP_BODY_BYTES)?;
    }
    check_range("kind.http.timeout_s", http.timeout_s, 1, limits::MAX_TIMEOUT_S)?;
    check_range("kind.http.output_kb", http.output_kb, 1, limits::MAX_OUTPUT_KB)?;
    for (index, status) in http.expect_status.iter().enumerate() {
        check_range(
            &format!("kind.http.expect_status[{index}]"),
            u64::from(*status),
            100,
            599,
        )?;
    }
    Ok(())
}

/// Checks that `name`'s dependents exist and that adding its edges to the
/// stored jobs' makes no cycle. `others` are the other jobs' dependents (the
/// stored version of `name` itself is replaced by `spec`).
pub fn check_dependency_cycles<'a>(
    name: &JobName,
    spec: &JobSpec,
    others: impl IntoIterator<Item = (&'a JobName, Vec<JobName>)>,
) -> Result<(), JobError> {
    let mut graph: BTreeMap<JobName, Vec<JobName>> = others
        .into_iter()
        .filter(|(other, _)| *other != name)
        .map(|(other, dependents)| (other.clone(), dependents))
        .collect();
    for (field, names) in [("on_success", &spec.on_success), ("on_failure", &spec.on_failure)] {
        for (index, dependent) in names.iter().enumerate() {
            if dependent != name && !graph.contains_key(dependent) {
                return Err(JobError::new(
                    format!("{field}[{index}]"),
                    format!("there is no job named {dependent}"),
                ));
            }
        }
    }
    graph.insert(name.clone(), spec.dependents().cloned().collect());
    // A cycle through `name` is a path from one of its dependents back to it.
    let mut stack: Vec<(JobName, Vec<JobName>)> = vec![(name.clone(), vec![name.clone()])];
    let mut seen = std::collections::BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in graph.get(&at).into_iter().flatten() {
            let mut longer = path.clone();
            longer.push(next.clone());
            if next == name {
                let field = if spec.on_success.contains(&longer[1]) {
                    "on_success"
                } else {
                    "on_failure"
                };
                let cycle: Vec<String> = longer.iter().map(JobName::to_string).collect();
                return Err(JobError::new(
                    field,
                    format!("dependencies would form a cycle: {}", cycle.join(" -> ")),
                ));
            }
            if seen.insert(next.clone()) {
                stack.push((next.clone(), longer));
            }
        }
    }
    Ok(())
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

fn describe_cron_error(err: &CronError) -> String {
    err.to_string()
}

fn check_text(field: &str, text: &str, max_bytes: usize) -> Result<(), JobError> {
    if text.len() > max_bytes {
        return Err(JobError::new(field, format!("must be at most {max_bytes} bytes")));
    }
    if text.contains('\0') {
        return Err(JobError::new(field, "must not contain NUL characters"));
    }
    Ok(())
}

fn check_env(field: &str, env: &BTreeMap<String, String>) -> Result<(), JobError> {
    if env.len() > limits::MAX_ENV {
        return Err(JobError::new(
            field,
            format!("at most {} variables are allowed", limits::MAX_ENV),
        ));
    }
    for (key, value) in env {
        let path = format!("{field}.{key}");
        let valid_name = key
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if key.is_empty() || key.len() > 128 || !valid_name {
            return Err(JobError::new(
                path,
                "variable names are letters, digits and '_', not starting with a digit",
            ));
        }
        if key.starts_with("SANDCRON_") {
            return Err(JobError::new(
                path,
                "the SANDCRON_ prefix is reserved for variables sandcron sets",
            ));
        }
        check_text(&path, value, limits::MAX_ENV_VALUE_BYTES)?;
    }
    Ok(())
}

fn check_range(field: &str, value: u64, min: u64, max: u64) -> Result<(), JobError> {
    if value < min || value > max {
        return Err(JobError::new(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ));
    }
    Ok(())
}

fn check_label(field: &str, text: &str) -> Result<(), JobError> {
    let valid = !text.is_empty()
        && text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if !valid {
        return Err(JobError::new(
            field,
            format!("label {text:?} must be 1 to 63 characters of letters, digits, '.', '_', '-' and '/'"),
        ));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-11-22T00:00:00Z".parse().expect("timestamp")
    }

    fn shell(json: serde_json::Value) -> Result<JobSpec, serde_json::Error> {
        serde_json::from_value(json)
    }

    #[test]
    fn a_minimal_shell_job_gets_defaults() {
        let spec = shell(serde_json::json!({
            "schedule": "@every 1s",
            "kind": {"shell": {"command": "echo tick"}}
        }))
        .expect("parses");
        assert_eq!(spec.timezone, "UTC");
        assert_eq!(spec.overlap, Overlap::Forbid);
        assert_eq!(
            spec.catchup,
            Catchup {
                policy: CatchupPolicy::Skip,
                window_s: 3600
            }
        );
        assert_eq!(
            spec.retry,
            RetryPolicy {
                max: 0,
                backoff_s: 10,
                max_backoff_s: 3600
            }
        );
        let JobKind::Shell(kind) = &spec.kind else {
            panic!("shell")
        };
        assert_eq!((kind.timeout_s, kind.output_kb), (3600, 1024));
        assert!(spec.validate(now()).is_ok());
    }

    #[test]
    fn the_design_example_body_parses() {
        let spec = shell(serde_json::json!({
            "schedule": "*/5 * * * * *", "timezone": "Europe/Berlin",
            "kind": {"wasm": {"module": format!("sha256:{}", "a".repeat(64)), "args": [], "env": {},
                "limits": {"fuel": 1000000000u64, "memory_mb": 64, "timeout_s": 30, "output_kb": 1024}}},
            "overlap": "forbid", "catchup": {"policy": "latest", "window_s": 300},
            "retry": {"max": 2, "backoff_s": 5}, "paused": false
        }))
        .expect("parses");
        assert_eq!(spec.retry.max_backoff_s, 3600);
        assert!(spec.validate(now()).is_ok());
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_rejected() {
        let err = shell(serde_json::json!({
            "schedule": "@daily", "kind": {"shell": {"command": "x"}}, "colour": "red"
        }))
        .expect_err("unknown field");
        assert!(err.to_string().contains("unknown field `colour`"), "{err}");
        let err = shell(serde_json::json!({
            "schedule": "@daily", "kind": {"shell": {"command": "x", "timeout_s": "soon"}}
        }))
        .expect_err("wrong type");
        assert!(err.to_string().contains("invalid type"), "{err}");
        let err = shell(serde_json::json!({"schedule": "@daily", "kind": {"python": {}}})).expect_err("unknown kind");
        assert!(err.to_string().contains("unknown variant `python`"), "{err}");
    }

    #[test]
    fn validation_names_the_bad_field() {
        let base = serde_json::json!({"schedule": "@daily", "kind": {"shell": {"command": "x"}}});
        let cases: Vec<(serde_json::Value, &str, &str)> = vec![
            (
                serde_json::json!({"schedule": "61 * * * *"}),
                "schedule",
                "minute field",
            ),
            (
                serde_json::json!({"timezone": "Mars/Olympus"}),
                "timezone",
                "unknown time zone",
            ),
            (serde_json::json!({"schedule": "0 0 30 2 *"}), "schedule", "never fires"),
            (
                serde_json::json!({"kind": {"shell": {"command": "  "}}}),
                "kind.shell.command",
                "empty",
            ),
            (
                serde_json::json!({"kind": {"shell": {"command": "x", "timeout_s": 0}}}),
                "kind.shell.timeout_s",
                "between",
            ),
            (
                serde_json::json!({"kind": {"shell": {"command": "x", "env": {"SANDCRON_JOB": "y"}}}}),
                "kind.shell.env.SANDCRON_JOB",
                "reserved",
            ),
            (
                serde_json::json!({"kind": {"shell": {"command": "x", "env": {"1A": "y"}}}}),
                "kind.shell.env.1A",
                "variable names",
            ),
            (serde_json::json!({"retry": {"max": 1000}}), "retry.max", "at most"),
            (
                serde_json::json!({"retry": {"backoff_s": 100, "max_backoff_s": 10}}),
                "retry.max_backoff_s",
                "between",
            ),
            (
                serde_json::json!({"selector": {"zone": "eu west"}}),
                "selector.zone",
                "label",
            ),
        ];
        for (patch, field, message) in cases {
            let mut body = base.clone();
            for (key, value) in patch.as_object().expect("object") {
                body[key] = value.clone();
            }
            let spec = shell(body).expect("parses");
            let err = spec.validate(now()).expect_err(field);
            assert_eq!(err.field, field, "{err}");
            assert!(err.message.contains(message), "{err}");
        }
    }
}
