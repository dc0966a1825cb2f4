//! Writing jobs: create or replace (validated, checked against the author's
//! role and the stored revision), delete, pause and resume.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;

use super::{JobView, load_job, not_found, parse_name, view_one};
use crate::api::{ApiError, ApiJson, AppState, Caller};
use crate::audit::{AuditAction, changed_fields};
use crate::auth::Role;
use crate::coord::KillTarget;
use crate::ids::JobName;
use crate::job::{JobKind, JobMeta, JobRecord, JobSpec};
use crate::module::ModuleKind;

/// Create or replace a job.
///
/// Shell jobs need the admin role and a server whose workers permit native
/// processes; wasm jobs need the operator role. Send `If-Match: <revision>`
/// to replace only that version, or `If-None-Match: *` to only create.
#[utoipa::path(put, path = "/api/v1/jobs/{name}", tag = "jobs", request_body = JobSpec,
    params(("name" = String, Path, description = "job name, [a-z0-9][a-z0-9_-]{0,62}")),
    responses((status = 200, description = "replaced", body = JobView), (status = 201, description = "created", body = JobView),
        (status = 400, body = crate::api::ErrorBody), (status = 403, body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody),
        (status = 412, body = crate::api::ErrorBody),
        (status = 413, body = crate::api::ErrorBody), (status = 422, body = crate::api::ErrorBody)))]
pub(in crate::api) async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    ApiJson(mut spec): ApiJson<JobSpec>,
) -> Result<Response, ApiError> {
    let name = parse_name(&name)?;
    spec.canonicalize();
    let now = Timestamp::now();
    spec.validate(now).map_err(|err| ApiError::Invalid {
        field: Some(err.field),
        message: err.message,
    })?;
    authorize_write(&state, &caller, &spec.kind)?;
    if let JobKind::Wasm(wasm) = &spec.kind {
        let Some(module) = state.coord.module_meta(&wasm.module).await? else {
            return Err(ApiError::invalid(
                "kind.wasm.module",
                format!(
                    "module {} is not uploaded; upload it first (sandcron module push FILE, or POST /api/v1/modules)",
                    wasm.module
                ),
            ));
        };
        if module.kind == ModuleKind::Module && !wasm.egress.is_empty() {
            return Err(ApiError::invalid(
                "kind.wasm.egress",
                format!(
                    "module {} is a core module (WASI preview 1), which has no network interface; \
                     only components (WASI 0.2, wasi:http and wasi:sockets) can use egress",
                    wasm.module
                ),
            ));
        }
    }
    check_integrations(&state, &name, &spec).await?;
    check_secrets(&state, &spec).await?;
    let expected = precondition(&headers)?;
    let existing = state.coord.get_job(&name).await?;
    // The role checks below are made on what was read: a write under
    // If-Match must be a write of exactly that version.
    if let (Some(Precondition::Revision(wanted)), Some((_, read))) = (&expected, &existing)
        && wanted != read
    {
        return Err(ApiError::PreconditionFailed(format!(
            "job {name} is at revision {read}, not {wanted}; read it again and retry"
        )));
    }
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
    check_job_quota(&state, &record, created).await?;
    let Some(revision) = state.coord.put_job(&name, &record, expected, reset_state).await? else {
        return Err(ApiError::PreconditionFailed(format!(
            "job {name} changed since revision {}; read it again and retry",
            expected.unwrap_or(0)
        )));
    };
    tracing::info!(job = %name, by = %caller.name, created, "job written");
    let entry = match &existing {
        None => caller
            .audit(AuditAction::JobCreate, name.as_str())
            .detail(format!("{} job", record.spec.kind.name())),
        Some((old, _)) => {
            let mut entry = caller.audit(AuditAction::JobReplace, name.as_str());
            // Names only: a field's value may be a credential.
            entry.changed = match (serde_json::to_value(&old.spec), serde_json::to_value(&record.spec)) {
                (Ok(before), Ok(after)) => changed_fields(&before, &after),
                _ => Vec::new(),
            };
            entry
        }
    };
    let before = existing.as_ref().map(|(_, before)| *before);
    state
        .audit
        .record(entry.job(&name).revisions(before, Some(revision)))
        .await;
    let view = view_one(&state, load_job(&state, &name).await?).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(view)).into_response())
}

/// A job fits `server.max_job_kb` stored, and a new one `server.max_jobs`.
async fn check_job_quota(state: &AppState, record: &JobRecord, created: bool) -> Result<(), ApiError> {
    let quotas = &state.quotas;
    let size = serde_json::to_vec(record).map_or(0, |bytes| bytes.len() as u64);
    if size > quotas.max_job_bytes {
        return Err(ApiError::PayloadTooLarge(format!(
            "the job is {size} bytes stored; the limit is {} bytes (server.max_job_kb)",
            quotas.max_job_bytes
        )));
    }
    if created {
        let (jobs, _) = state.coord.list_jobs().await?;
        if jobs.len() as u64 >= quotas.max_jobs {
            return Err(ApiError::QuotaExceeded(format!(
                "the installation holds {} jobs, the most it may (server.max_jobs)",
                jobs.len()
            )));
        }
    }
    Ok(())
}

/// Every secret the job uses is stored. (Whether it still is when a run
/// starts is the worker's to check: a secret can go between the two.)
async fn check_secrets(state: &AppState, spec: &JobSpec) -> Result<(), ApiError> {
    for (field, name) in spec.secret_references() {
        if state.coord.get_secret(&name).await?.is_none() {
            return Err(ApiError::invalid(
                field,
                format!("there is no secret named {name}; an admin creates it with `sandcron secret set {name}`"),
            ));
        }
    }
    Ok(())
}

/// What validation needs the other jobs or the installation for: the
/// dependents exist and form no cycle, and the alert channels are known.
pub(super) async fn check_integrations(state: &AppState, name: &JobName, spec: &JobSpec) -> Result<(), ApiError> {
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

pub(super) fn authorize_write(state: &AppState, caller: &Caller, kind: &JobKind) -> Result<(), ApiError> {
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

pub(super) enum Precondition {
    Revision(i64),
    Absent,
}

pub(super) fn precondition(headers: &HeaderMap) -> Result<Option<Precondition>, ApiError> {
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

/// Delete a job. Runs in progress are killed.
///
/// Send `If-Match: <revision>` to delete only that version.
#[utoipa::path(delete, path = "/api/v1/jobs/{name}", tag = "jobs", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody),
        (status = 412, body = crate::api::ErrorBody)))]
pub(in crate::api) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let name = parse_name(&name)?;
    caller.require(Role::Operator, "deleting a job")?;
    let wanted = match precondition(&headers)? {
        Some(Precondition::Revision(revision)) => Some(revision),
        Some(Precondition::Absent) => {
            return Err(ApiError::BadRequest(
                "If-None-Match makes no sense on a delete; send If-Match: <revision>".into(),
            ));
        }
        None => None,
    };
    let (record, revision) = state.coord.get_job(&name).await?.ok_or_else(|| not_found(&name))?;
    if let Some(wanted) = wanted
        && wanted != revision
    {
        return Err(ApiError::PreconditionFailed(format!(
            "job {name} is at revision {revision}, not {wanted}; read it again and retry"
        )));
    }
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
    // Exactly the version whose kind was checked above.
    if !state.coord.delete_job_at(&name, Some(revision)).await? {
        return Err(match state.coord.get_job(&name).await? {
            None => not_found(&name),
            Some(_) => ApiError::PreconditionFailed(format!(
                "job {name} changed while it was being deleted; read it again and retry"
            )),
        });
    }
    tracing::info!(job = %name, by = %caller.name, "job deleted");
    state
        .audit
        .record(
            caller
                .audit(AuditAction::JobDelete, name.as_str())
                .job(&name)
                .revisions(Some(revision), None)
                .detail(format!("{} job", record.spec.kind.name())),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Pause a job: no new ticks until resumed; runs in progress continue.
#[utoipa::path(post, path = "/api/v1/jobs/{name}/pause", tag = "jobs", params(("name" = String, Path)),
    responses((status = 200, body = JobView), (status = 404, body = crate::api::ErrorBody)))]
pub(in crate::api) async fn pause(
    state: State<AppState>,
    caller: Caller,
    name: Path<String>,
) -> Result<Json<JobView>, ApiError> {
    set_paused(state, caller, name, true).await
}

/// Resume a paused job. Ticks that passed while paused are not caught up.
#[utoipa::path(post, path = "/api/v1/jobs/{name}/resume", tag = "jobs", params(("name" = String, Path)),
    responses((status = 200, body = JobView), (status = 404, body = crate::api::ErrorBody)))]
pub(in crate::api) async fn resume(
    state: State<AppState>,
    caller: Caller,
    name: Path<String>,
) -> Result<Json<JobView>, ApiError> {
    set_paused(state, caller, name, false).await
}

pub(super) async fn set_paused(
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
        let action = if paused {
            AuditAction::JobPause
        } else {
            AuditAction::JobResume
        };
        let mut entry = caller
            .audit(action, name.as_str())
            .job(&name)
            .revisions(Some(revision), Some(revision));
        if record.spec.paused == paused {
            entry = entry.detail(if paused { "already paused" } else { "not paused" });
        } else {
            let now = Timestamp::now();
            record.spec.paused = paused;
            record.meta.updated_at = now;
            if !paused {
                // Paused time is not an outage: catch-up starts from now.
                record.meta.active_since = now;
            }
            // `written_by` stays: pausing does not change who wrote the job.
            let Some(after) = state.coord.put_job(&name, &record, Some(revision), false).await? else {
                continue;
            };
            tracing::info!(job = %name, by = %caller.name, paused, "job paused state changed");
            entry.revision_after = Some(after);
        }
        state.audit.record(entry).await;
        let job = load_job(&state, &name).await?;
        return Ok(Json(view_one(&state, job).await?));
    }
    Err(ApiError::Conflict(format!("job {name} keeps changing; try again")))
}
