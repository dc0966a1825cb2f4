//! `/api/v1/audit`: the audit log — every write made through the API, who
//! made it, when, to what — newest first, filtered by job, actor, action,
//! target and time, in cursor pages. Operators and admins only: it names
//! every token's activity and every job's history.
//!
//! Writing entries is `recorder.rs` ([`AuditLog`]): handlers call
//! `state.audit.record(caller.audit(action, target)…)` once their write has
//! succeeded.

use axum::Json;
use axum::extract::State;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::query::{Window, filter};
use super::{ApiError, ApiQuery, AppState, Caller};
use crate::audit::{AuditAction, AuditEntry};
use crate::auth::Role;
use crate::ids::JobName;
use crate::logstore::AuditQuery;

mod recorder;

pub use recorder::AuditLog;

impl Caller {
    /// An entry of the audit log for `action` on `target` by this caller,
    /// now, from where the request came.
    pub(crate) fn audit(&self, action: AuditAction, target: &str) -> AuditEntry {
        let mut entry = AuditEntry::new(Timestamp::now(), &self.name, self.role, action, target);
        entry.remote = self.remote.clone();
        entry.forwarded_for = self.forwarded_for.clone();
        entry
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditListQuery {
    /// Only entries about this job.
    pub job: Option<String>,
    /// Only entries of this token name.
    pub actor: Option<String>,
    /// One of job_create, job_replace, job_delete, job_pause, job_resume, run_now, rerun, kill,
    /// module_upload, module_delete, secret_set, secret_delete, secret_rekey, state_delete, state_clear.
    pub action: Option<String>,
    /// Only entries about this target (a module digest, a secret name, a state key, …).
    pub target: Option<String>,
    /// RFC 3339; entries at or after it.
    pub since: Option<String>,
    /// RFC 3339; entries before it.
    pub until: Option<String>,
    /// 1–1000, default 100.
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of audit entries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntries {
    pub entries: Vec<AuditEntry>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Read the audit log (operators and admins).
///
/// Entries recorded on this master a moment ago are included: the call
/// moves what waits in the outbox first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditListQuery),
    responses((status = 200, body = AuditEntries), (status = 403, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody), (status = 503, body = super::ErrorBody)))]
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AuditListQuery>,
) -> Result<Json<AuditEntries>, ApiError> {
    caller.require(Role::Operator, "reading the audit log")?;
    let job = filter("job", query.job.as_deref(), JobName::new)?;
    let action = filter("action", query.action.as_deref(), str::parse::<AuditAction>)?;
    let Window { since, until, limit } = Window::parse(query.since.as_deref(), query.until.as_deref(), query.limit)?;
    state.audit.catch_up().await;
    let page = state
        .logs
        .audit(&AuditQuery {
            job,
            actor: query.actor,
            action,
            target: query.target,
            since,
            until,
            limit,
            cursor: query.cursor,
        })
        .await?;
    Ok(Json(AuditEntries {
        entries: page.entries,
        next_cursor: page.next_cursor,
    }))
}
