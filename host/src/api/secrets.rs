//! `/api/v1/secrets`: write (admins), list with the jobs that use each,
//! delete, and re-seal under a rotated key. No answer ever holds a value:
//! a value goes in once, sealed under the installation's key file, and
//! only workers open it, at run time.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use jiff::Timestamp;
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, AppState, Caller};
use crate::audit::AuditAction;
use crate::auth::Role;
use crate::coord::StoredSecret;
use crate::ids::SecretName;
use crate::secret::{Keyring, MAX_SECRET_BYTES, SecretValue};

/// A stored secret, without its value.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretView {
    pub name: String,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    /// The token that last wrote it.
    pub written_by: String,
    /// The id of the key that sealed it.
    pub key_id: String,
    /// Jobs that use it.
    pub jobs: Vec<String>,
}

/// The answer to a re-seal.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rekeyed {
    /// The key every secret is now sealed with.
    pub key_id: String,
    /// Secrets sealed again under it.
    pub resealed: Vec<String>,
    /// Secrets already sealed under it.
    pub current: usize,
    /// Secrets that could not be opened (their key is not in the key file).
    pub failed: Vec<RekeyFailure>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RekeyFailure {
    pub name: String,
    pub error: String,
}

fn keyring(state: &AppState) -> Result<&Keyring, ApiError> {
    state.secrets.as_deref().ok_or_else(|| {
        ApiError::Unavailable(
            "this server has no secrets key file: set [secrets] key_file (or SANDCRON_SECRETS_KEY_FILE) \
             on the masters and workers"
                .into(),
        )
    })
}

fn parse_name(text: &str) -> Result<SecretName, ApiError> {
    SecretName::new(text).map_err(|err| ApiError::invalid("name", err.to_string()))
}

/// Which jobs use each secret.
async fn users(state: &AppState) -> Result<BTreeMap<SecretName, Vec<String>>, ApiError> {
    let (jobs, _) = state.coord.list_jobs().await?;
    let mut users: BTreeMap<SecretName, Vec<String>> = BTreeMap::new();
    for job in jobs.into_iter().flatten() {
        for (_, secret) in job.spec.secret_references() {
            users.entry(secret).or_default().push(job.name.to_string());
        }
    }
    Ok(users)
}

/// Create or replace a secret.
///
/// The body is the value, as is (UTF-8 text, at most 64 KiB). Admins only.
/// The answer never repeats it; the next run of each job that uses the
/// secret gets the new value.
#[utoipa::path(put, path = "/api/v1/secrets/{name}", tag = "secrets",
    params(("name" = String, Path, description = "secret name, [a-z0-9][a-z0-9_-]{0,62}")),
    request_body(content = String, content_type = "text/plain", description = "the value"),
    responses((status = 200, description = "replaced", body = SecretView), (status = 201, description = "created", body = SecretView),
        (status = 403, body = super::ErrorBody), (status = 409, body = super::ErrorBody), (status = 413, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody), (status = 503, body = super::ErrorBody)))]
pub(super) async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<SecretView>), ApiError> {
    caller.require(Role::Admin, "writing a secret")?;
    let name = parse_name(&name)?;
    if body.len() > MAX_SECRET_BYTES {
        return Err(ApiError::PayloadTooLarge(format!(
            "a secret value is at most {MAX_SECRET_BYTES} bytes; this one is {}",
            body.len()
        )));
    }
    if body.is_empty() {
        return Err(ApiError::invalid("value", "a secret value must not be empty"));
    }
    if std::str::from_utf8(&body).is_err() {
        return Err(ApiError::invalid(
            "value",
            "a secret value must be UTF-8 text (environment variables and wasi:config values are text); \
             encode binary values, e.g. as base64",
        ));
    }
    let keyring = keyring(&state)?;
    let sealed = keyring
        .seal(&name, &SecretValue::new(body.to_vec()))
        .map_err(|err| ApiError::Internal(anyhow::anyhow!("cannot seal the secret: {err}")))?;
    let existed = state.coord.get_secret(&name).await?.is_some();
    if !existed {
        let count = state.coord.list_secrets().await?.len() as u64;
        if count >= state.quotas.max_secrets {
            return Err(ApiError::QuotaExceeded(format!(
                "the installation holds {count} secrets, the most it may (server.max_secrets)"
            )));
        }
    }
    let stored = StoredSecret {
        sealed,
        updated_at: Timestamp::now(),
        written_by: caller.name.clone(),
    };
    state.coord.put_secret(&name, &stored).await?;
    tracing::info!(secret = %name, by = %caller.name, key = keyring.sealing_id(), "secret written");
    // The name and the sealing key only: never the value.
    let how = if existed { "replaced" } else { "created" };
    let detail = format!("{how}, sealed under key {}", keyring.sealing_id());
    state
        .audit
        .record(caller.audit(AuditAction::SecretSet, name.as_str()).detail(detail))
        .await;
    let jobs = users(&state).await?.remove(&name).unwrap_or_default();
    let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(view(&name, stored, jobs))))
}

fn view(name: &SecretName, stored: StoredSecret, jobs: Vec<String>) -> SecretView {
    SecretView {
        name: name.to_string(),
        updated_at: stored.updated_at,
        written_by: stored.written_by,
        key_id: stored.sealed.key_id,
        jobs,
    }
}

/// List secrets: names, who wrote each when, the jobs that use it. Never values.
#[utoipa::path(get, path = "/api/v1/secrets", tag = "secrets", responses((status = 200, body = [SecretView])))]
pub(super) async fn list(State(state): State<AppState>, _caller: Caller) -> Result<Json<Vec<SecretView>>, ApiError> {
    let mut users = users(&state).await?;
    let secrets = state.coord.list_secrets().await?;
    Ok(Json(
        secrets
            .into_iter()
            .map(|(name, stored, _)| {
                let jobs = users.remove(&name).unwrap_or_default();
                view(&name, stored, jobs)
            })
            .collect(),
    ))
}

/// Delete a secret no job uses.
#[utoipa::path(delete, path = "/api/v1/secrets/{name}", tag = "secrets", params(("name" = String, Path)),
    responses((status = 204), (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody)))]
pub(super) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin, "deleting a secret")?;
    let name = parse_name(&name)?;
    if let Some(jobs) = users(&state).await?.get(&name) {
        return Err(ApiError::Conflict(format!(
            "secret {name} is used by jobs: {}; remove it from them first",
            jobs.join(", ")
        )));
    }
    if !state.coord.delete_secret(&name).await? {
        return Err(ApiError::NotFound(format!("there is no secret named {name}")));
    }
    tracing::info!(secret = %name, by = %caller.name, "secret deleted");
    state
        .audit
        .record(caller.audit(AuditAction::SecretDelete, name.as_str()))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Seal every secret again under the key file's first key.
///
/// The step of a key rotation after the new key is put first in the key
/// file of every master and worker; afterwards the old key's line can go.
#[utoipa::path(post, path = "/api/v1/secrets/rekey", tag = "secrets",
    responses((status = 200, body = Rekeyed), (status = 403, body = super::ErrorBody), (status = 503, body = super::ErrorBody)))]
pub(super) async fn rekey(State(state): State<AppState>, caller: Caller) -> Result<Json<Rekeyed>, ApiError> {
    caller.require(Role::Admin, "re-sealing secrets")?;
    let keyring = keyring(&state)?;
    let mut answer = Rekeyed {
        key_id: keyring.sealing_id().to_owned(),
        resealed: Vec::new(),
        current: 0,
        failed: Vec::new(),
    };
    for (name, stored, revision) in state.coord.list_secrets().await? {
        if stored.sealed.key_id == keyring.sealing_id() {
            answer.current += 1;
            continue;
        }
        let value = match keyring.open(&name, &stored.sealed) {
            Ok(value) => value,
            Err(err) => {
                answer.failed.push(RekeyFailure {
                    name: name.to_string(),
                    error: err.to_string(),
                });
                continue;
            }
        };
        let sealed = keyring
            .seal(&name, &value)
            .map_err(|err| ApiError::Internal(anyhow::anyhow!("cannot seal the secret: {err}")))?;
        let resealed = StoredSecret { sealed, ..stored };
        // A secret written meanwhile is already under the new key.
        if state.coord.replace_secret(&name, &resealed, revision).await? {
            answer.resealed.push(name.to_string());
        } else {
            answer.current += 1;
        }
    }
    tracing::info!(key = %answer.key_id, resealed = answer.resealed.len(), failed = answer.failed.len(), by = %caller.name, "secrets re-sealed");
    let detail = format!(
        "{} re-sealed, {} already current, {} failed",
        answer.resealed.len(),
        answer.current,
        answer.failed.len()
    );
    state
        .audit
        .record(caller.audit(AuditAction::SecretRekey, &answer.key_id).detail(detail))
        .await;
    Ok(Json(answer))
}
