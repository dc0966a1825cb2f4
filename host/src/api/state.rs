//! `/api/v1/jobs/{name}/state`: a job's key-value state (what its runs keep
//! through `wasi:keyvalue`) for operators — list the keys with their sizes,
//! read one value, delete one key or all of them. Values may hold what a
//! job keeps to itself, so even reading needs the operator role.
//!
//! Operators are not runs: their deletes carry no fence, and clearing the
//! state keeps its fence, so a superseded run stays locked out
//! (`coord/domain/kvstate.rs`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, AppState, Caller};
use crate::audit::AuditAction;
use crate::auth::Role;
use crate::ids::JobName;
use crate::kvstate::{StateKey, StateQuota, StateUsage};

/// A job's state: its keys (no values), totals and quota.
#[derive(Debug, Serialize, ToSchema)]
pub struct StateView {
    pub job: String,
    /// The fence of the newest run that touched the state; only runs with
    /// this fence or a newer one may write it. `null`: no run has yet.
    pub fence: Option<i64>,
    /// Keys and the bytes of keys and values together.
    pub total: StateUsage,
    /// The quota the last write was checked against (each worker applies
    /// its own `[worker.state]`); `null` before the first write.
    pub quota: Option<StateQuota>,
    /// In key order.
    pub keys: Vec<StateKeyView>,
}

/// One key of a job's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct StateKeyView {
    pub key: String,
    /// The value's length in bytes.
    pub size: u64,
    /// The coordination-store revision of the key's last write.
    pub revision: i64,
}

/// What deleting a job's state removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct StateCleared {
    pub job: String,
    /// How many keys were deleted.
    pub deleted: u64,
}

fn parse_name(name: &str) -> Result<JobName, ApiError> {
    JobName::new(name).map_err(|err| ApiError::invalid("name", err.to_string()))
}

fn parse_key(key: &str) -> Result<StateKey, ApiError> {
    StateKey::new(key).map_err(|err| ApiError::invalid("key", err.to_string()))
}

/// The caller may touch state, and the job exists.
async fn authorize(state: &AppState, caller: &Caller, name: &str, action: &str) -> Result<JobName, ApiError> {
    let name = parse_name(name)?;
    caller.require(Role::Operator, action)?;
    if state.coord.get_job(&name).await?.is_none() {
        return Err(ApiError::NotFound(format!("job {name} does not exist")));
    }
    Ok(name)
}

fn no_key(name: &JobName, key: &StateKey) -> ApiError {
    ApiError::NotFound(format!("job {name} has no state key {:?}", key.as_str()))
}

/// List a job's state: keys with sizes and revisions, totals, quota.
#[utoipa::path(get, path = "/api/v1/jobs/{name}/state", tag = "state", params(("name" = String, Path)),
    responses((status = 200, body = StateView), (status = 403, body = crate::api::ErrorBody), (status = 404, body = crate::api::ErrorBody)))]
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<StateView>, ApiError> {
    let name = authorize(&state, &caller, &name, "reading a job's state").await?;
    let listing = state.coord.state_listing(&name).await?;
    Ok(Json(StateView {
        job: name.to_string(),
        fence: listing.meta.map(|meta| meta.fence),
        total: listing.meta.map(|meta| meta.usage).unwrap_or_default(),
        quota: listing.meta.and_then(|meta| meta.quota),
        keys: listing
            .entries
            .into_iter()
            .map(|entry| StateKeyView {
                key: entry.key.to_string(),
                size: entry.size,
                revision: entry.revision,
            })
            .collect(),
    }))
}

/// Read one value of a job's state, as raw bytes.
///
/// The key is one path segment: percent-encode `/` and other reserved
/// characters. The value's revision is in the `X-Sandcron-Revision` header.
#[utoipa::path(get, path = "/api/v1/jobs/{name}/state/{key}", tag = "state", params(("name" = String, Path), ("key" = String, Path)),
    responses((status = 200, description = "the value", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 403, body = crate::api::ErrorBody), (status = 404, body = crate::api::ErrorBody), (status = 422, body = crate::api::ErrorBody)))]
pub(super) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let name = authorize(&state, &caller, &name, "reading a job's state").await?;
    let key = parse_key(&key)?;
    let (value, revision) = state
        .coord
        .state_value(&name, &key)
        .await?
        .ok_or_else(|| no_key(&name, &key))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::HeaderName::from_static("x-sandcron-revision"),
                revision.to_string(),
            ),
        ],
        value,
    )
        .into_response())
}

/// Delete one key of a job's state.
#[utoipa::path(delete, path = "/api/v1/jobs/{name}/state/{key}", tag = "state", params(("name" = String, Path), ("key" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 403, body = crate::api::ErrorBody),
        (status = 404, body = crate::api::ErrorBody), (status = 422, body = crate::api::ErrorBody)))]
pub(super) async fn delete_key(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let name = authorize(&state, &caller, &name, "deleting a job's state").await?;
    let key = parse_key(&key)?;
    if !state.coord.state_remove(&name, &key).await? {
        return Err(no_key(&name, &key));
    }
    tracing::info!(job = %name, key = key.as_str(), by = %caller.name, "state key deleted");
    state
        .audit
        .record(caller.audit(AuditAction::StateDelete, key.as_str()).job(&name))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete every key of a job's state (its fence stays).
#[utoipa::path(delete, path = "/api/v1/jobs/{name}/state", tag = "state", params(("name" = String, Path)),
    responses((status = 200, body = StateCleared), (status = 403, body = crate::api::ErrorBody), (status = 404, body = crate::api::ErrorBody)))]
pub(super) async fn clear(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<StateCleared>, ApiError> {
    let name = authorize(&state, &caller, &name, "deleting a job's state").await?;
    let deleted = state.coord.state_clear(&name).await?;
    tracing::info!(job = %name, deleted, by = %caller.name, "state cleared");
    state
        .audit
        .record(
            caller
                .audit(AuditAction::StateClear, name.as_str())
                .job(&name)
                .detail(format!(
                    "{deleted} {} deleted",
                    if deleted == 1 { "key" } else { "keys" }
                )),
        )
        .await;
    Ok(Json(StateCleared {
        job: name.to_string(),
        deleted,
    }))
}
