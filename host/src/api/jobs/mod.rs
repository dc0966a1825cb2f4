//! `/api/v1/jobs`: list, create or replace, read, delete, pause, resume,
//! run now, kill.
//!
//! Reading (this file: views, list, get), writing (`write`: create or
//! replace, delete, pause and resume, with the author's role and the
//! preconditions) and acting (`actions`: run now, kill) are separate rooms.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiQuery, AppState, Caller};
use crate::auth::Role;
use crate::coord::{RunningEntry, TriggerRequest};
use crate::ids::JobName;
use crate::job::{Job, JobKind, JobMeta, JobSpec};
use crate::placement::{self, WorkerInfo};
use crate::run::{RunRecord, Shard, Trigger};

pub(in crate::api) mod actions;
mod write;

pub(super) use actions::{__path_kill, __path_run_now, kill, run_now};
pub(super) use write::{__path_delete, __path_pause, __path_put, __path_resume, delete, pause, put, resume};

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

impl JobView {
    /// The view as `caller` may see it: viewers get the header names of an
    /// HTTP job but not their values, which often carry credentials.
    fn for_caller(mut self, caller: &Caller) -> Self {
        if caller.role < Role::Operator
            && let JobKind::Http(http) = &mut self.spec.kind
        {
            for value in http.headers.values_mut() {
                *value = REDACTED.to_owned();
            }
        }
        self
    }
}

/// What a viewer sees instead of an HTTP job's header value.
pub const REDACTED: &str = "***";

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
        let (last_runs, history_unavailable) = last_runs(state, names).await;
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

/// The newest run of each of `names`, and whether the log store failed to
/// answer. Jobs live in the coordination store; a log-store outage must not
/// keep operators from reading, pausing or editing them.
async fn last_runs(state: &AppState, names: &[JobName]) -> (BTreeMap<JobName, RunRecord>, bool) {
    if names.is_empty() {
        return (BTreeMap::new(), false);
    }
    match state.logs.last_runs(names).await {
        Ok(last_runs) => (last_runs, false),
        Err(err) => {
            tracing::warn!(%err, "job views without their last runs: the log store did not answer");
            (BTreeMap::new(), true)
        }
    }
}

pub(in crate::api) async fn load_job(state: &AppState, name: &JobName) -> Result<Job, ApiError> {
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

/// The most jobs one page of the list holds, and the default page size.
const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 500;

/// Filters and paging for the job list.
#[derive(Debug, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only jobs whose name contains this text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
    /// 1–1000, default 500.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Only jobs whose name sorts after this one: the name of the last job
    /// of the previous page (the `Link: <…>; rel="next"` header gives the
    /// next page's address whole).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// `false`: views without `last_run`, and no read of the log store —
    /// for clients that need only the jobs (`sandcron check-history`), where
    /// a page of last runs is one log-store query per job. Default `true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run: Option<bool>,
}

/// List jobs with status, last run and next run, in name order, a page at
/// a time: when more jobs follow, the answer has a `Link` header with the
/// next page's address (`rel="next"`).
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, body = [JobView],
        headers(("Link" = String, description = "`<next page>; rel=\"next\"` when more jobs follow"))),
        (status = 401, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse as _;

    let limit = ApiError::count("limit", query.limit, DEFAULT_PAGE, MAX_PAGE)?;
    let (jobs, _) = state.coord.list_jobs().await?;
    let jobs = jobs
        .into_iter()
        .filter_map(|job| match job {
            Ok(job) => Some(job),
            Err((name, err)) => {
                tracing::warn!(job = %name, %err, "skipping an invalid stored job");
                None
            }
        })
        .filter(|job| query.q.as_deref().is_none_or(|q| job.name.as_str().contains(q)))
        .filter(|job| query.after.as_deref().is_none_or(|after| job.name.as_str() > after));
    // Live status first (it decides the `status` filter), then the last
    // runs of the page's jobs only.
    let mut context = Context::load(&state, &[]).await?;
    let mut page: Vec<(JobName, JobView)> = jobs
        .map(|job| (job.name.clone(), context.view(job)))
        .filter(|(_, view)| query.status.is_none_or(|status| view.status == status))
        .take(limit + 1)
        .collect();
    let more = page.len() > limit;
    page.truncate(limit);
    let names: Vec<JobName> = page.iter().map(|(name, _)| name.clone()).collect();
    let (mut last_runs, history_unavailable) = match query.last_run {
        Some(false) => (BTreeMap::new(), false),
        _ => last_runs(&state, &names).await,
    };
    let views: Vec<JobView> = page
        .into_iter()
        .map(|(name, mut view)| {
            view.last_run = last_runs.remove(&name);
            view.history_unavailable = history_unavailable;
            view.for_caller(&caller)
        })
        .collect();
    let next = match views.last() {
        Some(last) if more => Some(ListQuery {
            after: Some(last.name.clone()),
            ..query
        }),
        _ => None,
    };
    let mut response = Json(views).into_response();
    if let Some(next) = next {
        let query = serde_urlencoded::to_string(&next).map_err(|err| ApiError::Internal(err.into()))?;
        let link = format!("</api/v1/jobs?{query}>; rel=\"next\"");
        if let Ok(value) = axum::http::HeaderValue::from_str(&link) {
            response.headers_mut().insert(axum::http::header::LINK, value);
        }
    }
    Ok(response)
}

/// One job with status, last run and next run.
#[utoipa::path(get, path = "/api/v1/jobs/{name}", tag = "jobs", params(("name" = String, Path)),
    responses((status = 200, body = JobView), (status = 404, body = super::ErrorBody)))]
pub(super) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let name = parse_name(&name)?;
    let job = load_job(&state, &name).await?;
    Ok(Json(view_one(&state, job).await?.for_caller(&caller)))
}
