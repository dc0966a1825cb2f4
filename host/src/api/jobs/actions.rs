//! Acting on a job: run it now (a trigger request the owner takes) and kill
//! its running runs (a kill request on a short lease).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{load_job, not_found, parse_name};
use crate::api::{ApiError, ApiQuery, AppState, Caller};
use crate::audit::AuditAction;
use crate::auth::Role;
use crate::coord::KillTarget;
use crate::ids::RunId;
use crate::placement;

/// The most run ids one audit entry of a kill names.
const MAX_AUDITED_RUNS: usize = 100;

/// The answer to "run now".
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RunRequested {
    pub job: String,
    /// The id the run will have once a worker takes the request (not for a
    /// broadcast job, whose shards get ids of their own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Present when something about the request is worth knowing (a paused job).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Run a job now, once, outside its schedule.
///
/// Allowed for paused jobs (the job stays paused). Refused with 409 when the
/// job forbids overlap and is running, or when no live worker can run it.
#[utoipa::path(post, path = "/api/v1/jobs/{name}/run", tag = "jobs", params(("name" = String, Path)),
    responses((status = 202, body = RunRequested), (status = 404, body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody)))]
pub(in crate::api) async fn run_now(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<RunRequested>), ApiError> {
    let name = parse_name(&name)?;
    caller.require(Role::Operator, "running a job")?;
    let job = load_job(&state, &name).await?;
    let workers = state.coord.list_workers().await?;
    require_placeable(&job, &workers)?;
    check_may_start(&state, &job).await?;
    let key = state.coord.request_trigger(&name, caller.role).await?;
    let run_id = (!job.spec.broadcast)
        .then(|| state.coord.trigger_run_id(&key))
        .flatten()
        .map(|id| id.to_string());
    tracing::info!(job = %name, by = %caller.name, "run requested");
    let note = job
        .spec
        .paused
        .then(|| "the job is paused; this run does not resume it".to_owned());
    let mut entry = caller
        .audit(AuditAction::RunNow, name.as_str())
        .job(&name)
        .revisions(Some(job.revision), Some(job.revision));
    entry.runs = run_id.iter().filter_map(|id| id.parse().ok()).collect();
    if job.spec.broadcast {
        entry = entry.detail("broadcast: one run per eligible worker");
    } else if let Some(note) = &note {
        entry = entry.detail(note);
    }
    state.audit.record(entry).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(RunRequested {
            job: name.to_string(),
            run_id,
            note,
        }),
    ))
}

/// Refused with 409 when no live worker can run `job`, saying why.
pub(in crate::api) fn require_placeable(
    job: &crate::job::Job,
    workers: &[placement::WorkerInfo],
) -> Result<(), ApiError> {
    if placement::owner(job, workers).is_none() {
        return Err(ApiError::Conflict(format!(
            "job {} cannot run: {}",
            job.name,
            placement::unplaceable_reason(job, workers)
        )));
    }
    Ok(())
}

/// What a run started by hand (run now, re-run) must pass besides placement:
/// a job that forbids overlap is not running (409), and the job has room
/// for one more pending run (409 `quota_exceeded`).
pub(in crate::api) async fn check_may_start(state: &AppState, job: &crate::job::Job) -> Result<(), ApiError> {
    let name = &job.name;
    if job.spec.overlap == crate::job::Overlap::Forbid
        && let Some((_, running)) = state.coord.running(Some(name)).await?.first()
    {
        return Err(ApiError::Conflict(format!(
            "job {name} is running (run {}) and its overlap policy is forbid",
            running.run_id
        )));
    }
    let pending = state.coord.triggers(Some(name)).await?.len() as u64;
    if pending >= state.quotas.max_pending_runs {
        return Err(ApiError::QuotaExceeded(format!(
            "job {name} has {pending} runs waiting to start, the most it may (server.max_pending_runs)"
        )));
    }
    Ok(())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct KillQuery {
    /// Kill only this run; without it every run of the job is killed.
    pub run_id: Option<String>,
}

/// The answer to a kill request.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct KillRequested {
    pub job: String,
    /// The runs asked to stop; each ends `killed` within about a second.
    pub runs: Vec<String>,
}

/// Kill a running run of a job, or all of them.
#[utoipa::path(post, path = "/api/v1/jobs/{name}/kill", tag = "jobs", params(("name" = String, Path), KillQuery),
    responses((status = 202, body = KillRequested), (status = 404, body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody)))]
pub(in crate::api) async fn kill(
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
    let mut entry = caller
        .audit(AuditAction::Kill, name.as_str())
        .job(&name)
        .detail(match target {
            KillTarget::All => format!("every running run ({})", runs.len()),
            KillTarget::Run(_) => "one run".to_owned(),
        });
    // The first runs by id: a kill of hundreds names them in its answer,
    // while an entry stays small.
    entry.runs = runs.iter().take(MAX_AUDITED_RUNS).copied().collect();
    state.audit.record(entry).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(KillRequested {
            job: name.to_string(),
            runs: runs.iter().map(ToString::to_string).collect(),
        }),
    ))
}
