//! `/api/v1/modules`: upload (raw `application/wasm` or multipart field
//! `module`), list with the jobs that use each, read, delete.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiQuery, AppState, Caller};
use crate::audit::AuditAction;
use crate::auth::Role;
use crate::coord::ModuleMeta;
use crate::ids::ModuleDigest;
use crate::job::JobKind;
use crate::module::{Capability, ModuleError, ModuleKind};

/// A stored module.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModuleView {
    /// `sha256:` and 64 hex digits: what a wasm job's `module` names.
    pub digest: String,
    /// A label for people: the uploaded file's name (or the uploader's
    /// `name`), when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub size: u64,
    pub kind: ModuleKind,
    #[schema(value_type = String, format = DateTime)]
    pub uploaded_at: Timestamp,
    /// The network interfaces it imports (`http`, `sockets`); a job running
    /// it still reaches only what its `egress` lists. Core modules: none.
    pub capabilities: Vec<Capability>,
    /// Jobs whose `kind.wasm.module` is this module.
    pub jobs: Vec<String>,
}

/// The answer to an upload.
#[derive(Debug, Serialize, ToSchema)]
pub struct Uploaded {
    pub digest: String,
    /// The module's label, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub size: u64,
    pub kind: ModuleKind,
    /// The network interfaces it imports (`http`, `sockets`). A core module
    /// (WASI preview 1) has no network interface at all.
    pub capabilities: Vec<Capability>,
    /// False when the same bytes were already stored (uploads are idempotent).
    pub created: bool,
}

fn view(digest: &ModuleDigest, meta: ModuleMeta, users: &BTreeMap<ModuleDigest, Vec<String>>) -> ModuleView {
    ModuleView {
        digest: digest.to_string(),
        name: meta.name,
        size: meta.size,
        kind: meta.kind,
        uploaded_at: meta.uploaded_at,
        capabilities: meta.capabilities,
        jobs: users.get(digest).cloned().unwrap_or_default(),
    }
}

/// Which jobs use which module.
async fn users(state: &AppState) -> Result<BTreeMap<ModuleDigest, Vec<String>>, ApiError> {
    let (jobs, _) = state.coord.list_jobs().await?;
    let mut users: BTreeMap<ModuleDigest, Vec<String>> = BTreeMap::new();
    for job in jobs.into_iter().flatten() {
        if let JobKind::Wasm(wasm) = &job.spec.kind {
            users.entry(wasm.module.clone()).or_default().push(job.name.to_string());
        }
    }
    Ok(users)
}

fn module_error(err: ModuleError) -> ApiError {
    match err {
        ModuleError::TooLarge { .. } => ApiError::PayloadTooLarge(err.to_string()),
        other => ApiError::invalid("module", other.to_string()),
    }
}

/// Reads the module bytes from a raw or multipart body, with the file name
/// a multipart part gives.
async fn body_bytes(request: Request, state: &AppState) -> Result<(Bytes, Option<String>), ApiError> {
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "module is larger than the limit of {} bytes",
            state.modules.max_module_bytes()
        ))
    };
    // A declared length over what the route accepts is refused before a
    // byte of the body is read, so the client gets its answer promptly.
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length as usize > super::module_body_limit(state.modules.max_module_bytes())) {
        return Err(too_large());
    }
    match content_type.as_str() {
        "application/wasm" | "application/octet-stream" => {
            let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    too_large()
                } else {
                    ApiError::BadRequest(format!("cannot read the body: {}", rejection.body_text()))
                }
            })?;
            Ok((bytes, None))
        }
        "multipart/form-data" => {
            let mut multipart = Multipart::from_request(request, state).await.map_err(|rejection| {
                ApiError::BadRequest(format!("malformed multipart body: {}", rejection.body_text()))
            })?;
            loop {
                let field = multipart.next_field().await.map_err(|err| {
                    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        too_large()
                    } else {
                        ApiError::BadRequest(format!("malformed multipart body: {}", err.body_text()))
                    }
                })?;
                let Some(field) = field else {
                    return Err(ApiError::invalid(
                        "module",
                        "the multipart body has no field named \"module\"",
                    ));
                };
                if field.name() == Some("module") {
                    let file_name = field.file_name().map(str::to_owned);
                    let bytes = field.bytes().await.map_err(|err| {
                        if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
                            too_large()
                        } else {
                            ApiError::BadRequest(format!("malformed multipart body: {}", err.body_text()))
                        }
                    })?;
                    return Ok((bytes, file_name));
                }
            }
        }
        "" => Err(ApiError::UnsupportedMediaType(
            "send the module as application/wasm or as multipart/form-data field \"module\"".to_owned(),
        )),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "content type {other} is not accepted; send application/wasm or multipart/form-data field \"module\""
        ))),
    }
}

/// How an upload may be labelled.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(super) struct UploadQuery {
    /// A label for people (1–128 characters, no control characters or
    /// slashes), e.g. the file's name. Default: the multipart part's file
    /// name, if any. Uploading the same bytes under another name relabels
    /// the module.
    pub name: Option<String>,
}

/// The longest module label.
const MAX_NAME_CHARS: usize = 128;

/// A module label as given (`name` parameter) or taken from a multipart
/// file name (only its last path component: some browsers send a path).
fn module_label(given: Option<String>, file_name: Option<String>) -> Result<Option<String>, ApiError> {
    let check = |name: &str, field: &str| -> Result<(), ApiError> {
        let count = name.chars().count();
        if count == 0 || count > MAX_NAME_CHARS {
            return Err(ApiError::invalid(
                field,
                format!("a module name has 1 to {MAX_NAME_CHARS} characters, this one {count}"),
            ));
        }
        if let Some(c) = name.chars().find(|c| c.is_control() || *c == '/' || *c == '\\') {
            return Err(ApiError::invalid(
                field,
                format!("a module name may not contain {c:?}: it is a label, not a path"),
            ));
        }
        Ok(())
    };
    if let Some(name) = given {
        check(&name, "name")?;
        return Ok(Some(name));
    }
    let Some(file_name) = file_name else {
        return Ok(None);
    };
    let base = file_name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    // A file name that makes no label is no reason to refuse the module.
    Ok(check(&base, "module").is_ok().then_some(base))
}

/// Upload a WebAssembly module or component.
///
/// The binary is validated (magic, size, wasmtime validation, WASI-only
/// imports, command world for components) and stored under its SHA-256
/// digest. Uploading the same bytes again is harmless (it only relabels the
/// module when a new `name` is given).
#[utoipa::path(post, path = "/api/v1/modules", tag = "modules", params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "the .wasm bytes (or multipart/form-data with field `module`)"),
    responses((status = 201, description = "stored", body = Uploaded), (status = 200, description = "already stored", body = Uploaded),
        (status = 409, body = super::ErrorBody), (status = 413, body = super::ErrorBody), (status = 415, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody)))]
pub(super) async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<UploadQuery>,
    request: Request,
) -> Result<(StatusCode, Json<Uploaded>), ApiError> {
    caller.require(Role::Operator, "uploading a module")?;
    let given = query.name.map(|name| name.trim().to_owned());
    // A bad label is refused before the body is read.
    module_label(given.clone(), None)?;
    let (bytes, file_name) = body_bytes(request, &state).await?;
    let name = module_label(given, file_name)?;
    let inspector = state.modules.clone();
    // Validation parses (and for components compiles) the binary: keep it
    // off the async runtime threads.
    let checked = bytes.clone();
    let info = tokio::task::spawn_blocking(move || inspector.inspect(&checked))
        .await
        .map_err(|err| ApiError::Internal(anyhow::anyhow!("module validation panicked: {err}")))?
        .map_err(module_error)?;
    let digest = ModuleDigest::of(&bytes);
    if !state.coord.module_exists(&digest).await? {
        check_module_quota(&state, bytes.len() as u64).await?;
    }
    let (meta, created) = state
        .coord
        .put_module(&digest, &bytes, info.kind, info.capabilities, name.as_deref())
        .await?;
    tracing::info!(module = %digest, size = meta.size, kind = meta.kind.as_str(), created, by = %caller.name, "module uploaded");
    let stored = if created { "stored" } else { "already stored" };
    let detail = match &meta.name {
        Some(name) => format!("{name}: {}, {} bytes, {stored}", meta.kind.as_str(), meta.size),
        None => format!("{}, {} bytes, {stored}", meta.kind.as_str(), meta.size),
    };
    state
        .audit
        .record(caller.audit(AuditAction::ModuleUpload, digest.as_str()).detail(detail))
        .await;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((
        status,
        Json(Uploaded {
            digest: digest.to_string(),
            name: meta.name,
            size: meta.size,
            kind: meta.kind,
            capabilities: meta.capabilities,
            created,
        }),
    ))
}

/// Refuses a new module that would take the installation past its module
/// quotas (count, total bytes).
async fn check_module_quota(state: &AppState, size: u64) -> Result<(), ApiError> {
    let quotas = &state.quotas;
    let modules = state.coord.list_modules().await?;
    if modules.len() as u64 >= quotas.max_modules {
        return Err(ApiError::QuotaExceeded(format!(
            "the installation holds {} modules, the most it may (server.max_modules); delete modules no job uses first",
            modules.len()
        )));
    }
    let total: u64 = modules.iter().map(|(_, meta)| meta.size).sum();
    if total + size > quotas.max_module_total_bytes {
        return Err(ApiError::QuotaExceeded(format!(
            "the installation's modules hold {} MiB; this one ({} KiB) would pass the limit of {} MiB \
             (server.max_modules_mb); delete modules no job uses first",
            total >> 20,
            size >> 10,
            quotas.max_module_total_bytes >> 20
        )));
    }
    Ok(())
}

/// List stored modules with the jobs that use them.
#[utoipa::path(get, path = "/api/v1/modules", tag = "modules", responses((status = 200, body = [ModuleView])))]
pub(super) async fn list(State(state): State<AppState>, _caller: Caller) -> Result<Json<Vec<ModuleView>>, ApiError> {
    let users = users(&state).await?;
    let modules = state.coord.list_modules().await?;
    Ok(Json(
        modules
            .into_iter()
            .map(|(digest, meta)| view(&digest, meta, &users))
            .collect(),
    ))
}

fn parse_digest(text: &str) -> Result<ModuleDigest, ApiError> {
    ModuleDigest::new(text).map_err(|err| ApiError::invalid("digest", err.to_string()))
}

/// One stored module.
#[utoipa::path(get, path = "/api/v1/modules/{digest}", tag = "modules", params(("digest" = String, Path)),
    responses((status = 200, body = ModuleView), (status = 404, body = super::ErrorBody)))]
pub(super) async fn get(
    State(state): State<AppState>,
    _caller: Caller,
    Path(digest): Path<String>,
) -> Result<Json<ModuleView>, ApiError> {
    let digest = parse_digest(&digest)?;
    let meta = state
        .coord
        .module_meta(&digest)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("module {digest} is not stored")))?;
    Ok(Json(view(&digest, meta, &users(&state).await?)))
}

/// Delete a module no job uses.
#[utoipa::path(delete, path = "/api/v1/modules/{digest}", tag = "modules", params(("digest" = String, Path)),
    responses((status = 204), (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody)))]
pub(super) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(digest): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Operator, "deleting a module")?;
    let digest = parse_digest(&digest)?;
    if let Some(jobs) = users(&state).await?.get(&digest) {
        return Err(ApiError::Conflict(format!(
            "module {digest} is used by jobs: {}",
            jobs.join(", ")
        )));
    }
    if !state.coord.delete_module(&digest).await? {
        return Err(ApiError::NotFound(format!("module {digest} is not stored")));
    }
    tracing::info!(module = %digest, by = %caller.name, "module deleted");
    state
        .audit
        .record(caller.audit(AuditAction::ModuleDelete, digest.as_str()))
        .await;
    Ok(StatusCode::NO_CONTENT)
}
