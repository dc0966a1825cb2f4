//! Workers, the cron preview, probes and metrics.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiQuery, AppState, Caller};
use crate::coord::LogBacklog;
use crate::cronexpr::{CronExpr, parse_timezone};
use crate::logstore::RunQuery;
use crate::placement::WorkerInfo;

/// A live worker and its load, derived from the `running/` entries that
/// name it (no worker writes its load anywhere), and its log backlog, which
/// it publishes itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerView {
    #[serde(flatten)]
    pub info: WorkerInfo,
    /// Runs it has in progress: running, or claimed and waiting for a slot.
    pub running: usize,
    /// Slots in use: its runs in progress, at most its `capacity`. An async
    /// run waiting for its reported result counts, though it has given its
    /// slot back.
    pub slots_in_use: usize,
    /// Runs it claimed that wait for one of its slots (`running` beyond
    /// `capacity`); another worker with a free slot takes such a run over
    /// (see docs/cluster.md, "Least-loaded hand-off").
    pub waiting: usize,
    pub uptime_s: i64,
    /// Run records and output the worker holds for the log store: its spool
    /// (bytes, and how far behind the oldest batch is) and whether its runs
    /// wait for the log sink. As the worker last published it, every two
    /// seconds at most; `null` when it published none (a worker of an
    /// older version, or one that just started).
    pub log_backlog: Option<LogBacklog>,
}

/// The alert channels jobs may name.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertChannels {
    /// Channel names from `[alerts.channels]`; empty when this server has
    /// none configured (then any name is accepted and the workers decide).
    pub channels: Vec<String>,
}

/// The alert channels a job's `alerts.channels` may name.
#[utoipa::path(get, path = "/api/v1/alerts/channels", tag = "jobs",
    responses((status = 200, body = AlertChannels)))]
pub(super) async fn alert_channels(State(state): State<AppState>, _caller: Caller) -> Json<AlertChannels> {
    Json(AlertChannels {
        channels: state.alert_channels.to_vec(),
    })
}

/// Live workers (those holding their lease).
#[utoipa::path(get, path = "/api/v1/workers", tag = "workers",
    responses((status = 200, body = [WorkerView])))]
pub(super) async fn workers(State(state): State<AppState>, _caller: Caller) -> Result<Json<Vec<WorkerView>>, ApiError> {
    let workers = state.coord.list_workers().await?;
    let mut running: BTreeMap<String, usize> = BTreeMap::new();
    for (_, entry) in state.coord.running(None).await? {
        *running.entry(entry.worker).or_default() += 1;
    }
    let mut backlogs = state.coord.log_backlogs().await?;
    let now = Timestamp::now();
    Ok(Json(
        workers
            .into_iter()
            .map(|info| {
                let running = running.get(&info.id).copied().unwrap_or(0);
                let slots_in_use = running.min(info.capacity);
                WorkerView {
                    running,
                    slots_in_use,
                    waiting: running - slots_in_use,
                    uptime_s: now.duration_since(info.started_at).as_secs(),
                    log_backlog: backlogs.remove(&info.id),
                    info,
                }
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CronQuery {
    /// The cron expression.
    pub expr: String,
    /// IANA zone (default UTC).
    pub tz: Option<String>,
    /// RFC 3339 instant to start after (default now).
    pub after: Option<String>,
    /// How many fire times (1–100, default 5).
    pub count: Option<usize>,
}

/// The next fire times of an expression.
#[derive(Debug, Serialize, ToSchema)]
pub struct CronPreview {
    pub expr: String,
    pub timezone: String,
    /// The expression in words.
    pub explain: String,
    /// Whether DST transitions shift rather than skip or repeat it (see docs/jobs.md).
    pub fixed_time: bool,
    #[schema(value_type = Vec<String>)]
    pub next: Vec<Timestamp>,
}

/// Validate a cron expression and preview its next fire times.
#[utoipa::path(get, path = "/api/v1/cron/next", tag = "cron", params(CronQuery),
    responses((status = 200, body = CronPreview), (status = 422, body = super::ErrorBody)))]
pub(super) async fn cron_next(
    _caller: Caller,
    ApiQuery(query): ApiQuery<CronQuery>,
) -> Result<Json<CronPreview>, ApiError> {
    let expr = CronExpr::parse(&query.expr).map_err(|err| ApiError::invalid("expr", err.to_string()))?;
    let tz_name = query.tz.unwrap_or_else(|| "UTC".to_owned());
    let tz = parse_timezone(&tz_name).map_err(|err| ApiError::invalid("tz", err.to_string()))?;
    let after = match query.after {
        Some(text) => super::query::parse_time("after", &text)?,
        None => Timestamp::now(),
    };
    let count = ApiError::count("count", query.count, 5, 100)?;
    let next = expr.iter_after(after, &tz).take(count).collect();
    Ok(Json(CronPreview {
        explain: expr.explain(),
        fixed_time: expr.is_fixed_time(),
        expr: expr.as_str().to_owned(),
        timezone: tz_name,
        next,
    }))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, body = String)))]
pub(super) async fn healthz() -> Response {
    super::text(StatusCode::OK, "ok\n")
}

/// Readiness: both stores answer.
#[utoipa::path(get, path = "/readyz", tag = "system", responses((status = 200, body = String), (status = 503, body = String)))]
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    let coord = state.coord.list_workers().await;
    let logs = state
        .logs
        .runs(&RunQuery {
            limit: 1,
            ..RunQuery::default()
        })
        .await;
    match (coord, logs) {
        (Ok(_), Ok(_)) => super::text(StatusCode::OK, "ready\n"),
        (Err(err), _) => (StatusCode::SERVICE_UNAVAILABLE, format!("coordination store: {err}\n")).into_response(),
        (_, Err(err)) => (StatusCode::SERVICE_UNAVAILABLE, format!("log store: {err}\n")).into_response(),
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "system", responses((status = 200, body = String, content_type = "text/plain")))]
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    // A master sees the workers only through the store; a failed read keeps
    // the last count rather than failing the scrape.
    if let Ok(workers) = state.coord.list_workers().await {
        state.metrics.set_live_workers(workers.len());
    }
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}
