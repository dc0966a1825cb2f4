//! `/api/v1/jobs`: list, create or replace, read, delete, pause, resume,
//! run now, kill.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiJson, ApiQuery, AppState, Caller};
use crate::auth::Role;
use crate::coord::{KillTarget, RunningEntry, TriggerRequest};
use crate::ids::{JobName, RunId};
use crate::job::{Job, JobKind, JobMeta, JobRecord, JobSpec};
use crate::placement::{self, WorkerInfo};
use crate::run::{RunRecord, Shard, Trigger};

/// A job as the API shows it: its spec, bookkeeping and live status.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub name: String,
    #[serde(flatten)]
    pub spec: JobSpec,
    pub meta: JobMeta,
    /// Store revision; send it back in `If-Match` to update only this version.
    pub revision: i64,
    pub status: JobStatus,
    /// Why no worker schedules the job, when `status` is `unschedulable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The worker scheduling the job.
    pub owner: Option<String>,
    /// The schedule in words.
    pub explain: String,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_run: Option<Timestamp>,
    pub last_run: Option<RunRecord>,
    /// True when the log store did not answer, so `last_run` is unknown.
    /// Jobs stay manageable while MongoDB is down.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub history_unavailable: bool,
    pub running: Vec<RunningEntry>,
    /// Runs requested and not started yet: "run now" and dependents about to
    /// be taken, retries waiting for their backoff, shards of a broadcast.
    pub pending: Vec<PendingRun>,
}

/// A run requested and not started yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PendingRun {
    pub trigger: Trigger,
    /// The tick it will run for.
    #[schema(value_type = String, format = DateTime)]
    pub tick: Timestamp,
    pub attempt: u32,
    #[schema(value_type = String, format = DateTime)]
    pub requested_at: Timestamp,
    pub requested_by: String,
    /// Not started before this instant (a retry's backoff).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub not_before: Option<Timestamp>,
    /// The worker that must run it (a shard); otherwise the job's owner does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
}

impl From<&TriggerRequest> for PendingRun {
    fn from(request: &TriggerRequest) -> Self {
        Self {
            trigger: request.trigger,
            tick: request.tick(),
            attempt: request.attempt,
            requested_at: request.requested_at,
            requested_by: request.requested_by.clone(),
            not_before: request.not_before,
            worker: request.target_worker.clone(),
            shard: request.shard,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for its next tick.
    Scheduled,
    /// At least one run in progress.
    Running,
    Paused,
    /// No live worker can run it (see `reason`).
    Unschedulable,
}

fn parse_name(name: &str) -> Result<JobName, ApiError> {
    JobName::new(name).map_err(|err| ApiError::Invalid {
        field: Some("name".into()),
        message: err.to_string(),
    })
}

fn not_found(name: &JobName) -> ApiError {
    ApiError::NotFound(format!("job {name} does not exist"))
}

/// Live context shared by the views of one response.
struct Context {
    workers: Vec<WorkerInfo>,
    running: BTreeMap<JobName, Vec<RunningEntry>>,
    pending: BTreeMap<JobName, Vec<PendingRun>>,
    last_runs: BTreeMap<JobName, RunRecord>,
    history_unavailable: bool,
    now: Timestamp,
}

impl Context {
    async fn load(state: &AppState, names: &[JobName]) -> Result<Self, ApiError> {
        let workers = state.coord.list_workers().await?;
        let mut running: BTreeMap<JobName, Vec<RunningEntry>> = BTreeMap::new();
        let job_filter = if names.len() == 1 { names.first() } else { None };
        for (job, mut entry) in state.coord.running(job_filter).await? {
            // The token's hash authenticates result reports; no reader needs it.
            entry.result_token_sha256 = None;
            running.entry(job).or_default().push(entry);
        }
        let mut pending: BTreeMap<JobName, Vec<PendingRun>> = BTreeMap::new();
        for (job, request) in state.coord.triggers(job_filter).await? {
            pending.entry(job).or_default().push(PendingRun::from(&request));
        }
        for runs in pending.values_mut() {
            runs.sort_by_key(|run| (run.not_before.unwrap_or(run.requested_at), run.tick));
        }
        // Jobs live in the coordination store; a log-store outage must not
        // keep operators from reading, pausing or editing them.
        let (last_runs, history_unavailable) = match state.logs.last_runs(names).await {
            Ok(last_runs) => (last_runs, false),
            Err(err) => {
                tracing::warn!(%err, "job views without their last runs: the log store did not answer");
                (BTreeMap::new(), true)
            }
        };
        Ok(Self {
            workers,
            running,
            pending,
            last_runs,
            history_unavailable,
            now: Timestamp::now(),
        })
    }

    fn view(&mut self, job: Job) -> JobView {
        let owner = placement::owner(&job, &self.workers).map(|w| w.id.clone());
        let running = self.running.remove(&job.name).unwrap_or_default();
        let (status, reason) = if job.spec.paused {
            (JobStatus::Paused, None)
        } else if !running.is_empty() {
            (JobStatus::Running, None)
        } else if owner.is_none() {
            (
                JobStatus::Unschedulable,
                Some(placement::unplaceable_reason(&job, &self.workers)),
            )
        } else {
            (JobStatus::Scheduled, None)
        };
        let next_run = if job.spec.paused {
            None
        } else {
            job.schedule.next_after(self.now)
        };
        JobView {
            name: job.name.to_string(),
            explain: job.schedule.expr().explain(),
            last_run: self.last_runs.remove(&job.name),
            history_unavailable: self.history_unavailable,
            spec: job.spec,
            meta: job.meta,
            revision: job.revision,
            status,
            reason,
            owner,
            next_run,
            running,
            pending: self.pending.remove(&job.name).unwrap_or_default(),
        }
    }
}

async fn load_job(state: &AppState, name: &JobName) -> Result<Job, ApiError> {
    let (record, revision) = state.coord.get_job(name).await?.ok_or_else(|| not_found(name))?;
    let schedule = crate::cronexpr::Schedule::new(&record.spec.schedule, &record.spec.timezone)
        .map_err(|err| ApiError::Internal(anyhow::anyhow!("stored job {name} has an invalid schedule: {err}")))?;
    Ok(Job {
        name: name.clone(),
        spec: record.spec,
        meta: record.meta,
        schedule,
        revision,
    })
}

async fn view_one(state: &AppState, job: Job) -> Result<JobView, ApiError> {
    let mut context = Context::load(state, std::slice::from_ref(&job.name)).await?;
    Ok(context.view(job))
}

/// Filters for the job list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only jobs whose name contains this text.
    pub q: Option<String>,
    pub status: Option<JobStatus>,
}

/// List jobs with status, last run and next run.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, body = [JobView]), (status = 401, body = super::ErrorBody)))]
pub(super) async fn list(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Vec<JobView>>, ApiError> {
    let (jobs, _) = state.coord.list_jobs().await?;
    let jobs: Vec<Job> = jobs
        .into_iter()
        .filter_map(|job| match job {
            Ok(job) => Some(job),
            Err((name, err)) => {
                tracing::warn!(job = %name, %err, "skipping an invalid stored job");
                None
            }
        })
        .filter(|job| query.q.as_deref().is_none_or(|q| job.name.as_str().contains(q)))
        .collect();
    let names: Vec<JobName> = jobs.iter().map(|job| job.name.clone()).collect();
    let mut context = Context::load(&state, &names).await?;
    let views = jobs
        .into_iter()
        .map(|job| context.view(job))
        .filter(|view| query.status.is_none_or(|status| view.status == status))
        .collect();
    Ok(Json(views))
}

/// Create or replace a job.
///
/// Shell jobs need the admin role and a server whose workers permit native
/// processes; wasm jobs need the operator role. Send `If-Match: <revision>`
/// to replace only that version, or `If-None-Match: *` to only create.
#[utoipa::path(put, path = "/api/v1/jobs/{name}", tag = "jobs", request_body = JobSpec,
    params(("name" = String, Path, description = "job name, [a-z0-9][a-z0-9_-]{0,62}")),
    responses((status = 200, description = "replaced", body = JobView), (status = 201, description = "created", body = JobView),
        (status = 400, body = super::ErrorBody), (status = 403, body = super::ErrorBody), (status = 412, body = super::ErrorBody),
        (status = 413, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
pub(super) async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    ApiJson(spec): ApiJson<JobSpec>,
) -> Result<Response, ApiError> {
    let name = parse_name(&name)?;
    let now = Timestamp::now();
    spec.validate(now).map_err(|err| ApiError::Invalid {
        field: Some(err.field),
        message: err.message,
    })?;
    authorize_write(&state, &caller, &spec.kind)?;
    if let JobKind::Wasm(wasm) = &spec.kind
        && !state.coord.module_exists(&wasm.module).await?
    {
        return Err(ApiError::invalid(
            "kind.wasm.module",
            format!(
                "module {} is not uploaded; POST it to /api/v1/modules first",
                wasm.module
            ),
        ));
    }
    check_integrations(&state, &name, &spec).await?;
    let expected = precondition(&headers)?;
    let existing = state.coord.get_job(&name).await?;
    if let Some((old, _)) = &existing
        && old.spec.kind.is_native()
    {
        caller.require(Role::Admin, "replacing a shell job")?;
    }
    let (meta, reset_state, created) = match &existing {
        None => (
            JobMeta {
                created_at: now,
                updated_at: now,
                active_since: now,
                written_by: caller.role,
            },
            false,
            true,
        ),
        Some((old, _)) => {
            let timing_changed = old.spec.schedule != spec.schedule || old.spec.timezone != spec.timezone;
            let resumed = old.spec.paused && !spec.paused;
            let active_since = if timing_changed || resumed {
                now
            } else {
                old.meta.active_since
            };
            (
                JobMeta {
                    created_at: old.meta.created_at,
                    updated_at: now,
                    active_since,
                    written_by: caller.role,
                },
                timing_changed,
                false,
            )
        }
    };
    let expected = match (expected, &existing) {
        (Some(Precondition::Revision(rev)), _) => Some(rev),
        (Some(Precondition::Absent), Some(_)) => {
            return Err(ApiError::PreconditionFailed(format!(
                "job {name} already exists (If-None-Match: *)"
            )));
        }
        (Some(Precondition::Absent), None) => Some(0),
        // Without a precondition the write still must not race another
        // writer between our read and write: pin it to what we read.
        (None, Some((_, rev))) => Some(*rev),
        (None, None) => Some(0),
    };
    let record = JobRecord { spec, meta };
    let Some(_revision) = state.coord.put_job(&name, &record, expected, reset_state).await? else {
        return Err(ApiError::PreconditionFailed(format!(
            "job {name} changed since revision {}; read it again and retry",
            expected.unwrap_or(0)
        )));
    };
    tracing::info!(job = %name, by = %caller.name, created, "job written");
    let view = view_one(&state, load_job(&state, &name).await?).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(view)).into_response())
}

/// What validation needs the other jobs or the installation for: the
/// dependents exist and form no cycle, and the alert channels are known.
async fn check_integrations(state: &AppState, name: &JobName, spec: &JobSpec) -> Result<(), ApiError> {
    let invalid = |err: crate::job::JobError| ApiError::Invalid {
        field: Some(err.field),
        message: err.message,
    };
    if let Some(alerts) = &spec.alerts
        && !state.alert_channels.is_empty()
    {
        for (index, channel) in alerts.channels.iter().enumerate() {
            if !state.alert_channels.contains(channel) {
                return Err(ApiError::invalid(
                    format!("alerts.channels[{index}]"),
                    format!(
                        "no alert channel named {channel:?}; configured: {}",
                        state.alert_channels.join(", ")
                    ),
                ));
            }
        }
    }
    if spec.dependents().next().is_none() {
        return Ok(());
    }
    // The whole graph is read: a cycle can pass through any job.
    let (jobs, _) = state.coord.list_jobs().await?;
    let others: Vec<(JobName, Vec<JobName>)> = jobs
        .into_iter()
        .filter_map(Result::ok)
        .map(|job| (job.name, job.spec.dependents().cloned().collect()))
        .collect();
    crate::job::check_dependency_cycles(name, spec, others.iter().map(|(n, d)| (n, d.clone()))).map_err(invalid)
}

fn authorize_write(state: &AppState, caller: &Caller, kind: &JobKind) -> Result<(), ApiError> {
    match kind {
        JobKind::Shell(_) => {
            caller.require(Role::Admin, "writing a shell job")?;
            if !state.shell_jobs {
                return Err(ApiError::Forbidden(
                    "shell jobs are disabled: no worker of this server permits native processes \
                     (allow_native = false, or sandcron dev --no-native)"
                        .to_owned(),
                ));
            }
            Ok(())
        }
        JobKind::Wasm(_) => caller.require(Role::Operator, "writing a wasm job"),
        JobKind::Http(_) => caller.require(Role::Operator, "writing an http job"),
    }
}

enum Precondition {
    Revision(i64),
    Absent,
}

fn precondition(headers: &HeaderMap) -> Result<Option<Precondition>, ApiError> {
    if let Some(value) = headers.get(axum::http::header::IF_NONE_MATCH) {
        return match value.to_str() {
            Ok("*") => Ok(Some(Precondition::Absent)),
            _ => Err(ApiError::BadRequest("If-None-Match accepts only *".into())),
        };
    }
    let Some(value) = headers.get(axum::http::header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim().trim_matches('"');
    text.parse::<i64>()
        .ok()
        .filter(|rev| *rev > 0)
        .map(|rev| Some(Precondition::Revision(rev)))
        .ok_or_else(|| ApiError::BadRequest(format!("If-Match must be a job revision, got {text:?}")))
}

/// One job with status, last run and next run.
#[utoipa::path(get, path = "/api/v1/jobs/{name}", tag = "jobs", params(("name" = String, Path)),
    responses((status = 200, body = JobView), (status = 404, body = super::ErrorBody)))]
pub(super) async fn get(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let name = parse_name(&name)?;
    let job = load_job(&state, &name).await?;
    Ok(Json(view_one(&state, job).await?))
}

/// Delete a job. Runs in progress are killed.
#[utoipa::path(delete, path = "/api/v1/jobs/{name}", tag = "jobs", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = super::ErrorBody)))]
pub(super) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = parse_name(&name)?;
    caller.require(Role::Operator, "deleting a job")?;
    let (record, _) = state.coord.get_job(&name).await?.ok_or_else(|| not_found(&name))?;
    if record.spec.kind.is_native() {
        caller.require(Role::Admin, "deleting a shell job")?;
    }
    let (jobs, _) = state.coord.list_jobs().await?;
    let parents: Vec<String> = jobs
        .into_iter()
        .filter_map(Result::ok)
        .filter(|job| job.name != name && job.spec.dependents().any(|d| *d == name))
        .map(|job| job.name.to_string())
        .collect();
    if !parents.is_empty() {
        return Err(ApiError::Conflict(format!(
            "job {name} is started by {} (on_success/on_failure); remove it there first",
            parents.join(", ")
        )));
    }
    if !state.coord.running(Some(&name)).await?.is_empty() {
        state.coord.request_kill(&name, KillTarget::All).await?;
    }
    if !state.coord.delete_job(&name).await? {
        return Err(not_found(&name));
    }
    tracing::info!(job = %name, by = %caller.name, "job deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Pause a job: no new ticks until resumed; runs in progress continue.
#[utoipa::path(post, path = "/api/v1/jobs/{name}/pause", tag = "jobs", params(("name" = String, Path)),
    responses((status = 200, body = JobView), (status = 404, body = super::ErrorBody)))]
pub(super) async fn pause(
    state: State<AppState>,
    caller: Caller,
    name: Path<String>,
) -> Result<Json<JobView>, ApiError> {
    set_paused(state, caller, name, true).await
}

/// Resume a paused job. Ticks that passed while paused are not caught up.
#[utoipa::path(post, path = "/api/v1/jobs/{name}/resume", tag = "jobs", params(("name" = String, Path)),
    responses((status = 200, body = JobView), (status = 404, body = super::ErrorBody)))]
pub(super) async fn resume(
    state: State<AppState>,
    caller: Caller,
    name: Path<String>,
) -> Result<Json<JobView>, ApiError> {
    set_paused(state, caller, name, false).await
}

async fn set_paused(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    paused: bool,
) -> Result<Json<JobView>, ApiError> {
    let name = parse_name(&name)?;
    caller.require(Role::Operator, if paused { "pausing a job" } else { "resuming a job" })?;
    // Retry on a concurrent write: pausing must not fail because a worker or
    // another client touched the job a moment earlier.
    for _ in 0..5 {
        let (mut record, revision) = state.coord.get_job(&name).await?.ok_or_else(|| not_found(&name))?;
        if record.spec.paused != paused {
            let now = Timestamp::now();
            record.spec.paused = paused;
            record.meta.updated_at = now;
            if !paused {
                // Paused time is not an outage: catch-up starts from now.
                record.meta.active_since = now;
            }
            // `written_by` stays: pausing does not change who wrote the job.
            if state
                .coord
                .put_job(&name, &record, Some(revision), false)
                .await?
                .is_none()
            {
                continue;
            }
            tracing::info!(job = %name, by = %caller.name, paused, "job paused state changed");
        }
        let job = load_job(&state, &name).await?;
        return Ok(Json(view_one(&state, job).await?));
    }
    Err(ApiError::Conflict(format!("job {name} keeps changing; try again")))
}

/// The answer to "run now".
#[derive(Debug, Serialize, ToSchema)]
pub struct RunRequested {
    pub job: String,
    /// Present when something about the request is worth knowing (a paused job).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Run a job now, once, outside its schedule.
///
/// Allowed for paused jobs (the job stays paused). Refused with 409 when the
/// job forbids overlap and is running, or when no live worker can run it.
#[utoipa::path(post, path = "/api/v1/jobs/{name}/run", tag = "jobs", params(("name" = String, Path)),
    responses((status = 202, body = RunRequested), (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody)))]
pub(super) async fn run_now(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<RunRequested>), ApiError> {
    let name = parse_name(&name)?;
    caller.require(Role::Operator, "running a job")?;
    let job = load_job(&state, &name).await?;
    let workers = state.coord.list_workers().await?;
    if placement::owner(&job, &workers).is_none() {
        return Err(ApiError::Conflict(format!(
            "job {name} cannot run: {}",
            placement::unplaceable_reason(&job, &workers)
        )));
    }
    if job.spec.overlap == crate::job::Overlap::Forbid
        && let Some((_, running)) = state.coord.running(Some(&name)).await?.first()
    {
        return Err(ApiError::Conflict(format!(
            "job {name} is running (run {}) and its overlap policy is forbid",
            running.run_id
        )));
    }
    state.coord.request_trigger(&name, caller.role).await?;
    tracing::info!(job = %name, by = %caller.name, "run requested");
    let note = job
        .spec
        .paused
        .then(|| "the job is paused; this run does not resume it".to_owned());
    Ok((
        StatusCode::ACCEPTED,
        Json(RunRequested {
            job: name.to_string(),
            note,
        }),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct KillQuery {
    /// Kill only this run; without it every run of the job is killed.
    pub run_id: Option<String>,
}

/// The answer to a kill request.
#[derive(Debug, Serialize, ToSchema)]
pub struct KillRequested {
    pub job: String,
    /// The runs asked to stop; each ends `killed` within about a second.
    pub runs: Vec<String>,
}

/// Kill a running run of a job, or all of them.
#[utoipa::path(post, path = "/api/v1/jobs/{name}/kill", tag = "jobs", params(("name" = String, Path), KillQuery),
    responses((status = 202, body = KillRequested), (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody)))]
pub(super) async fn kill(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiQuery(query): ApiQuery<KillQuery>,
) -> Result<(StatusCode, Json<KillRequested>), ApiError> {
    let name = parse_name(&name)?;
    caller.require(Role::Operator, "killing a run")?;
    let target = match &query.run_id {
        Some(text) => KillTarget::Run(
            text.parse::<RunId>()
                .map_err(|err| ApiError::invalid("run_id", err.to_string()))?,
        ),
        None => KillTarget::All,
    };
    if state.coord.get_job(&name).await?.is_none() {
        return Err(not_found(&name));
    }
    let running: Vec<RunId> = state
        .coord
        .running(Some(&name))
        .await?
        .into_iter()
        .map(|(_, e)| e.run_id)
        .collect();
    let runs: Vec<RunId> = match target {
        KillTarget::All if running.is_empty() => {
            return Err(ApiError::Conflict(format!("job {name} has no running runs")));
        }
        KillTarget::All => running,
        KillTarget::Run(run_id) if !running.contains(&run_id) => {
            return Err(ApiError::Conflict(format!("run {run_id} of job {name} is not running")));
        }
        KillTarget::Run(run_id) => vec![run_id],
    };
    state.coord.request_kill(&name, target).await?;
    tracing::info!(job = %name, by = %caller.name, runs = runs.len(), "kill requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(KillRequested {
            job: name.to_string(),
            runs: runs.iter().map(ToString::to_string).collect(),
        }),
    ))
}
