//! `/api/v1/runs`: run history with filters and cursor paging, one run, and
//! a run's output after a sequence cursor, optionally followed live; an
//! async run's reported result; re-running a run for its tick.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use axum::extract::FromRequest as _;

use super::query::{Window, filter};
use super::{ApiError, ApiQuery, AppState, Caller};
use crate::ids::{JobName, RunId, WorkerId};
use crate::logstore::RunQuery;
use crate::run::{OutputChunk, RunRecord, RunStatus, Trigger};

/// How often a follow request looks for new output. The log store is polled,
/// not watched: change streams are not something every deployment has.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
const FOLLOW_WAIT_DEFAULT_S: u64 = 20;
const FOLLOW_WAIT_MAX_S: u64 = 60;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    pub job: Option<String>,
    /// One of running, succeeded, failed, timed_out, killed, out_of_fuel, out_of_memory, skipped, missed, lost.
    pub status: Option<String>,
    /// A worker id (as `GET /api/v1/workers` lists them): the runs it ran.
    pub worker: Option<String>,
    /// One of schedule, manual, catchup, retry, dependency, rerun.
    pub trigger: Option<String>,
    /// RFC 3339; runs whose tick is at or after it.
    pub since: Option<String>,
    /// RFC 3339; runs whose tick is before it.
    pub until: Option<String>,
    /// 1–1000, default 100.
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of runs, newest tick first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunsPage {
    pub runs: Vec<RunRecord>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Query run history.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", params(RunsQuery),
    responses((status = 200, body = RunsPage), (status = 422, body = super::ErrorBody)))]
pub(super) async fn list(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(query): ApiQuery<RunsQuery>,
) -> Result<Json<RunsPage>, ApiError> {
    let job = filter("job", query.job.as_deref(), JobName::new)?;
    let status = filter("status", query.status.as_deref(), str::parse::<RunStatus>)?;
    // Validated as a worker id (1–128 characters of a small alphabet), but
    // passed on as text: the store compares it with the record's `worker`.
    let worker = filter("worker", query.worker.as_deref(), WorkerId::new)?.map(|worker| worker.as_str().to_owned());
    // An unknown trigger is refused with the valid ones, as an unknown
    // `status` is.
    let trigger = filter("trigger", query.trigger.as_deref(), str::parse::<Trigger>)?;
    let Window { since, until, limit } = Window::parse(query.since.as_deref(), query.until.as_deref(), query.limit)?;
    let page = state
        .logs
        .runs(&RunQuery {
            job,
            status,
            worker,
            trigger,
            since,
            until,
            limit,
            cursor: query.cursor,
        })
        .await?;
    Ok(Json(RunsPage {
        runs: page.runs,
        next_cursor: page.next_cursor,
    }))
}

fn parse_run_id(text: &str) -> Result<RunId, ApiError> {
    text.parse()
        .map_err(|err: crate::ids::InvalidId| ApiError::invalid("run_id", err.to_string()))
}

/// The job of `run_id` when it is running, waits for a result and `token`
/// is its token (compared as SHA-256 digests, in constant time).
async fn check_run_token(state: &AppState, run_id: RunId, token: &str) -> Result<JobName, ApiError> {
    let Some((job, entry)) = state.coord.find_running(run_id).await? else {
        return Err(ApiError::NotFound(format!(
            "run {run_id} is not running: it ended (or timed out), or never existed"
        )));
    };
    let Some(expected) = &entry.result_token_sha256 else {
        return Err(ApiError::Conflict(format!(
            "run {run_id} of job {job} does not wait for a result: its job's completion is sync"
        )));
    };
    let presented = crate::crypto::sha256_hex(token.as_bytes());
    if !crate::crypto::constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
        return Err(ApiError::Forbidden(format!("wrong token for run {run_id}")));
    }
    Ok(job)
}

/// One run.
#[utoipa::path(get, path = "/api/v1/runs/{run_id}", tag = "runs", params(("run_id" = String, Path)),
    responses((status = 200, body = RunRecord), (status = 404, body = super::ErrorBody)))]
pub(super) async fn get(
    State(state): State<AppState>,
    _caller: Caller,
    Path(run_id): Path<String>,
) -> Result<Json<RunRecord>, ApiError> {
    let run_id = parse_run_id(&run_id)?;
    let run = state
        .logs
        .run(run_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("run {run_id} does not exist")))?;
    Ok(Json(run))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OutputQuery {
    /// Only chunks with a greater `seq`.
    pub after: Option<u64>,
    /// Wait (long-poll) until new output arrives or the run ends.
    #[serde(default)]
    pub follow: bool,
    /// Longest wait for `follow`, seconds (default 20, at most 60).
    pub wait_s: Option<u64>,
    /// Most chunks returned (1–5000, default 1000).
    pub limit: Option<usize>,
}

/// A slice of a run's output.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutputPage {
    pub run_id: String,
    pub status: RunStatus,
    pub chunks: Vec<OutputChunk>,
    /// Pass as `after` to continue; the `seq` of the last chunk returned (or
    /// the `after` given when there was none).
    pub next_after: Option<u64>,
    /// The run has ended and every chunk has been returned.
    pub done: bool,
    pub truncated: bool,
}

/// A run's output after a sequence cursor; with `follow=true` the request
/// waits for new output (long-poll) and `done` says when to stop.
#[utoipa::path(get, path = "/api/v1/runs/{run_id}/output", tag = "runs", params(("run_id" = String, Path), OutputQuery),
    responses((status = 200, body = OutputPage), (status = 404, body = super::ErrorBody)))]
pub(super) async fn output(
    State(state): State<AppState>,
    _caller: Caller,
    Path(run_id): Path<String>,
    ApiQuery(query): ApiQuery<OutputQuery>,
) -> Result<Json<OutputPage>, ApiError> {
    let run_id = parse_run_id(&run_id)?;
    let limit = ApiError::count("limit", query.limit, 1000, 5000)?;
    let wait_s = query.wait_s.unwrap_or(FOLLOW_WAIT_DEFAULT_S);
    if wait_s > FOLLOW_WAIT_MAX_S {
        return Err(ApiError::invalid(
            "wait_s",
            format!("must be at most {FOLLOW_WAIT_MAX_S}, got {wait_s}"),
        ));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait_s);
    loop {
        let run = state
            .logs
            .run(run_id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("run {run_id} does not exist")))?;
        // Read the status before the chunks: if the run had ended by then,
        // every chunk was written before the final record, so an empty read
        // below really means "no more output".
        let ended = run.status.is_terminal();
        let chunks = state.logs.output(run_id, query.after, limit).await?;
        let full_page = chunks.len() == limit;
        let waiting = query.follow && chunks.is_empty() && !ended && tokio::time::Instant::now() < deadline;
        if waiting {
            tokio::select! {
                () = tokio::time::sleep(FOLLOW_POLL) => continue,
                () = state.shutdown.cancelled() => {}
            }
        }
        let next_after = chunks.last().map(|c| c.seq).or(query.after);
        return Ok(Json(OutputPage {
            run_id: run_id.to_string(),
            status: run.status,
            done: ended && !full_page,
            truncated: run.truncated,
            chunks,
            next_after,
        }));
    }
}

/// The outcome an async run's service reports.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResultBody {
    /// The run's token (`SANDCRON_RUN_TOKEN` / `X-Sandcron-Run-Token`),
    /// unless sent in the `X-Sandcron-Run-Token` header.
    pub token: Option<String>,
    /// `succeeded` or `failed`.
    pub status: RunStatus,
    pub exit_code: Option<i32>,
    /// Why it failed, in words (at most 64 KiB).
    pub error: Option<String>,
    /// A JSON value stored with the run (at most 64 KiB).
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// Text appended to the run's output (at most 1 MiB).
    pub output: Option<String>,
}

/// The answer to an accepted result.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResultAccepted {
    pub run_id: String,
    pub status: RunStatus,
}

/// The header a run's token may come in.
pub const RUN_TOKEN_HEADER: &str = "x-sandcron-run-token";

/// Report the outcome of a run of an async job (`completion: async`). It is
/// authorised by the run's own token, not by an API token: the service the
/// job called gets it with the call. The run then ends with this outcome.
#[utoipa::path(post, path = "/api/v1/runs/{run_id}/result", tag = "runs",
    params(("run_id" = String, Path), ("x-sandcron-run-token" = Option<String>, Header, description = "the run's token")),
    request_body = ResultBody,
    security(()),
    responses((status = 202, body = ResultAccepted), (status = 401, body = super::ErrorBody),
        (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
pub(super) async fn report(
    State(state): State<AppState>,
    Path(run_id): Path<String>,
    request: axum::extract::Request,
) -> Result<(axum::http::StatusCode, Json<ResultAccepted>), ApiError> {
    let run_id = parse_run_id(&run_id)?;
    let header_token = request
        .headers()
        .get(RUN_TOKEN_HEADER)
        .map(|value| value.to_str().map(str::trim).unwrap_or_default().to_owned())
        .filter(|token| !token.is_empty());
    // A token in the header is checked before a byte of the body is read:
    // an unauthenticated caller cannot make this route read its body.
    if let Some(token) = &header_token {
        check_run_token(&state, run_id, token).await?;
    }
    let super::ApiJson(body) = super::ApiJson::<ResultBody>::from_request(request, &state).await?;
    let Some(token) = header_token.or_else(|| body.token.clone()).filter(|t| !t.is_empty()) else {
        return Err(ApiError::Unauthorized(format!(
            "missing run token: send the run's token in the {RUN_TOKEN_HEADER} header or as \"token\""
        )));
    };
    if !matches!(body.status, RunStatus::Succeeded | RunStatus::Failed) {
        return Err(ApiError::invalid(
            "status",
            format!("must be succeeded or failed, got {}", body.status),
        ));
    }
    let too_long = |field: &str, text: &Option<String>, max: usize| match text {
        Some(text) if text.len() > max => Err(ApiError::invalid(field, format!("must be at most {max} bytes"))),
        _ => Ok(()),
    };
    too_long("error", &body.error, 64 * 1024)?;
    too_long("output", &body.output, 1024 * 1024)?;
    if let Some(result) = &body.result
        && result.to_string().len() > crate::run::MAX_RESULT_BYTES
    {
        return Err(ApiError::invalid(
            "result",
            format!("must be at most {} bytes of JSON", crate::run::MAX_RESULT_BYTES),
        ));
    }
    let job = check_run_token(&state, run_id, &token).await?;
    let report = crate::coord::RunReport {
        status: body.status,
        exit_code: body.exit_code,
        error: body.error,
        result: body.result,
        output: body.output,
    };
    if !state.coord.put_result(&job, run_id, &report).await? {
        return Err(ApiError::Conflict(format!(
            "a result was already reported for run {run_id}"
        )));
    }
    tracing::info!(%job, run = %run_id, status = %report.status, "run result reported");
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(ResultAccepted {
            run_id: run_id.to_string(),
            status: report.status,
        }),
    ))
}

/// The answer to a re-run: what was asked of the workers, and why it might
/// not be what the caller expected.
#[derive(Debug, Serialize, ToSchema)]
pub struct RerunRequested {
    pub job: String,
    /// The id the new run will have once a worker takes the request; absent
    /// when a whole broadcast tick is re-run (each shard gets an id of its
    /// own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The run re-run; the new run's record names it in `rerun_of`.
    pub rerun_of: String,
    /// How that run ended.
    pub rerun_of_status: RunStatus,
    /// The tick the new run is for: the original run's (what the job gets
    /// as `SANDCRON_TICK`).
    #[schema(value_type = String, format = DateTime)]
    pub tick: jiff::Timestamp,
    /// Always `rerun`.
    pub trigger: Trigger,
    /// For a shard of a broadcast tick: the worker that must run it (the
    /// one that ran the original).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// For a shard of a broadcast tick: which one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<crate::run::Shard>,
    /// Present when something about the request is worth knowing (a paused
    /// job, a `missed` record standing for several ticks, a broadcast).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Re-run a run: start its job again for that run's tick.
///
/// The new run has trigger `rerun`, names the original in `rerun_of`, and
/// gets the original's tick (`SANDCRON_TICK`) and, for a dependent run, its
/// parent run; it runs the job as the job is now. Any ended run may be
/// re-run, `skipped`, `missed` and `lost` records too (a `missed` record
/// that stands for several ticks re-runs its first). A shard of a broadcast
/// tick is re-run alone, on the worker that ran it; a broadcast tick
/// recorded as a whole is handed out again to every eligible worker. Like
/// "run now" it is allowed for paused jobs, and is not retried. Refused with
/// 409 while the run is running, when the job forbids overlap and is
/// running, when no live worker can run it (for a shard: when its worker is
/// gone), or when the job has as many runs waiting as it may; with 404 when
/// the run or its job does not exist.
#[utoipa::path(post, path = "/api/v1/runs/{run_id}/rerun", tag = "runs", params(("run_id" = String, Path)),
    responses((status = 202, body = RerunRequested), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody)))]
pub(super) async fn rerun(
    State(state): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
) -> Result<(axum::http::StatusCode, Json<RerunRequested>), ApiError> {
    let run_id = parse_run_id(&run_id)?;
    caller.require(crate::auth::Role::Operator, "re-running a run")?;
    // A run waiting for a free slot holds a running entry but has no record yet.
    if let Some((job, _)) = state.coord.find_running(run_id).await? {
        return Err(ApiError::Conflict(format!(
            "run {run_id} of job {job} is still running: re-run it once it has ended (or kill it first)"
        )));
    }
    let original = state
        .logs
        .run(run_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("run {run_id} does not exist")))?;
    let name = original.job.clone();
    if !original.status.is_terminal() {
        return Err(ApiError::Conflict(format!(
            "run {run_id} of job {name} is still recorded running: re-run it once it has ended (or kill it first)"
        )));
    }
    let job = super::jobs::load_job(&state, &name).await.map_err(|err| match err {
        ApiError::NotFound(_) => ApiError::NotFound(format!(
            "job {name} of run {run_id} does not exist any more: a deleted job's runs cannot be re-run"
        )),
        other => other,
    })?;
    let workers = state.coord.list_workers().await?;
    // A shard's index is its worker's share of the tick, so a shard is
    // re-run where it ran, as a retry of it would be.
    let shard = original.shard.filter(|_| job.spec.broadcast);
    let target_worker = match shard {
        Some(shard) => {
            let which = format!(
                "run {run_id} was shard index {} of {} on worker {}",
                shard.index, shard.count, original.worker
            );
            let Some(worker) = workers.iter().find(|worker| worker.id == original.worker) else {
                return Err(ApiError::Conflict(format!(
                    "{which}, which is gone: a shard is re-run only on the worker it ran on"
                )));
            };
            if !worker.can_run(&job) {
                return Err(ApiError::Conflict(format!(
                    "{which}, which cannot run job {name} any more: {}",
                    crate::placement::unplaceable_reason(&job, std::slice::from_ref(worker))
                )));
            }
            Some(worker.id.clone())
        }
        None => {
            super::jobs::actions::require_placeable(&job, &workers)?;
            None
        }
    };
    super::jobs::actions::check_may_start(&state, &job).await?;

    let mut request = crate::coord::TriggerRequest::rerun(caller.role, run_id, original.tick);
    request.parent = original.parent.clone();
    request.shard = shard;
    request.target_worker = target_worker.clone();
    let key = state.coord.put_trigger(&name, &request).await?;
    let whole_tick = job.spec.broadcast && shard.is_none();
    let new_run = (!whole_tick).then(|| state.coord.trigger_run_id(&key)).flatten();
    tracing::info!(job = %name, by = %caller.name, rerun_of = %run_id, run = ?new_run, "re-run requested");

    let mut notes = Vec::new();
    if job.spec.paused {
        notes.push("the job is paused; this run does not resume it".to_owned());
    }
    if let (Some(count @ 2..), Some(until)) = (original.missed_count, original.missed_until) {
        notes.push(format!(
            "run {run_id} stands for {count} missed ticks, {} to {until}; only the first is re-run",
            original.tick
        ));
    }
    if whole_tick {
        notes.push(
            "broadcast: the tick runs again once on every eligible worker, each shard under a run id of its own"
                .to_owned(),
        );
    } else if let (Some(shard), Some(worker)) = (shard, &target_worker) {
        notes.push(format!(
            "broadcast: only shard index {} of {} runs again, on worker {worker}",
            shard.index, shard.count
        ));
    }
    let note = (!notes.is_empty()).then(|| notes.join("; "));

    let mut entry = caller
        .audit(crate::audit::AuditAction::Rerun, name.as_str())
        .job(&name)
        .revisions(Some(job.revision), Some(job.revision))
        .detail(match &note {
            Some(note) => format!("tick {} of run {run_id} ({}); {note}", original.tick, original.status),
            None => format!("tick {} of run {run_id} ({})", original.tick, original.status),
        });
    entry.runs = std::iter::once(run_id).chain(new_run).collect();
    state.audit.record(entry).await;
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(RerunRequested {
            job: name.to_string(),
            run_id: new_run.map(|id| id.to_string()),
            rerun_of: run_id.to_string(),
            rerun_of_status: original.status,
            tick: original.tick,
            trigger: Trigger::Rerun,
            worker: target_worker,
            shard,
            note,
        }),
    ))
}
