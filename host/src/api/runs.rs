//! `/api/v1/runs`: run history with filters and cursor paging, one run, and
//! a run's output after a sequence cursor, optionally followed live.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiQuery, AppState, Caller};
use crate::ids::{JobName, RunId};
use crate::logstore::RunQuery;
use crate::run::{OutputChunk, RunRecord, RunStatus};

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

fn parse_time(field: &str, text: &str) -> Result<Timestamp, ApiError> {
    text.parse()
        .map_err(|err| ApiError::invalid(field, format!("{text:?} is not an RFC 3339 instant: {err}")))
}

/// Query run history.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", params(RunsQuery),
    responses((status = 200, body = RunsPage), (status = 422, body = super::ErrorBody)))]
pub(super) async fn list(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(query): ApiQuery<RunsQuery>,
) -> Result<Json<RunsPage>, ApiError> {
    let job = query
        .job
        .as_deref()
        .map(JobName::new)
        .transpose()
        .map_err(|err| ApiError::invalid("job", err.to_string()))?;
    let status = query
        .status
        .as_deref()
        .map(str::parse::<RunStatus>)
        .transpose()
        .map_err(|err| ApiError::invalid("status", err))?;
    let since = query.since.as_deref().map(|t| parse_time("since", t)).transpose()?;
    let until = query.until.as_deref().map(|t| parse_time("until", t)).transpose()?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and 1000, got {limit}"),
        ));
    }
    let page = state
        .logs
        .runs(&RunQuery {
            job,
            status,
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
    let limit = query.limit.unwrap_or(1000);
    if !(1..=5000).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and 5000, got {limit}"),
        ));
    }
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
