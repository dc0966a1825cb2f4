//! The OpenAPI 3 description of every route, generated from the handlers and
//! types (utoipa) and served at `/api/v1/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{audit, auth, error, jobs, modules, runs, secrets, state, system};

#[derive(OpenApi)]
#[openapi(
    info(title = "sandcron", description = "A distributed cron whose jobs run in a WebAssembly sandbox."),
    paths(
        jobs::list, jobs::put, jobs::get, jobs::delete, jobs::pause, jobs::resume, jobs::run_now, jobs::kill,
        state::list, state::get, state::delete_key, state::clear,
        modules::upload, modules::list, modules::get, modules::delete,
        secrets::put, secrets::list, secrets::delete, secrets::rekey,
        runs::list, runs::get, runs::output, runs::report, runs::rerun,
        audit::list,
        system::workers, system::alert_channels, system::cron_next, system::healthz, system::readyz, system::metrics,
        auth::whoami,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "jobs", description = "Create, change and control jobs"),
        (name = "state", description = "Jobs' key-value state (wasi:keyvalue)"),
        (name = "modules", description = "Upload and manage WebAssembly modules"),
        (name = "secrets", description = "Write-only secrets that jobs use by name"),
        (name = "runs", description = "Run history and output"),
        (name = "audit", description = "Every write made through the API: who, when, what"),
        (name = "workers", description = "Live workers"),
        (name = "cron", description = "Cron expression preview"),
        (name = "system", description = "Probes and metrics"),
        (name = "auth", description = "The caller's identity and role"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document, as JSON.
pub fn document() -> serde_json::Value {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut doc = serde_json::to_value(doc).unwrap_or_default();
    open_job_view(&mut doc);
    document_errors(&mut doc);
    doc
}

pub(super) async fn serve() -> Json<serde_json::Value> {
    Json(document())
}

/// A job view is a job spec plus read-only fields, but the spec's schema
/// forbids additional properties (a PUT body must not carry unknown fields),
/// so `allOf` with it would reject every view. The view refers to a copy
/// of the spec's schema that allows them.
fn open_job_view(doc: &mut serde_json::Value) {
    let schemas = &mut doc["components"]["schemas"];
    let mut fields = schemas["JobSpec"].clone();
    if let Some(object) = fields.as_object_mut() {
        object.remove("additionalProperties");
    }
    schemas["JobSpecFields"] = fields;
    if let Some(parts) = schemas["JobView"]["allOf"].as_array_mut() {
        for part in parts {
            if part["$ref"] == "#/components/schemas/JobSpec" {
                *part = serde_json::json!({"$ref": "#/components/schemas/JobSpecFields"});
            }
        }
    }
}

/// Every API operation may answer with the error statuses of docs/API.md;
/// each is described with the error body, unless the operation already
/// describes it.
fn document_errors(doc: &mut serde_json::Value) {
    const ERRORS: [(&str, &str); 10] = [
        ("400", "malformed request: JSON, query or headers"),
        ("401", "missing or unknown token"),
        ("403", "the token's role is too low, or the action is disabled here"),
        ("404", "no such job, run, module or route"),
        ("409", "conflicts with the current state"),
        ("413", "the body is larger than the server accepts"),
        ("415", "unsupported content type"),
        ("422", "a value is invalid; `field` names it"),
        ("500", "a bug; details are in the server log"),
        ("503", "a backing store is unreachable; retry"),
    ];
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        if !path.starts_with("/api/v1/") || path == "/api/v1/openapi.json" {
            continue;
        }
        let Some(operations) = item.as_object_mut() else {
            continue;
        };
        for operation in operations.values_mut() {
            let Some(responses) = operation["responses"].as_object_mut() else {
                continue;
            };
            for (status, description) in ERRORS {
                responses.entry(status).or_insert_with(|| {
                    serde_json::json!({
                        "description": description,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
                    })
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_described() {
        let doc = document();
        let paths = doc["paths"].as_object().expect("paths");
        let expected = [
            ("/api/v1/jobs", vec!["get"]),
            ("/api/v1/jobs/{name}", vec!["put", "get", "delete"]),
            ("/api/v1/jobs/{name}/pause", vec!["post"]),
            ("/api/v1/jobs/{name}/resume", vec!["post"]),
            ("/api/v1/jobs/{name}/run", vec!["post"]),
            ("/api/v1/jobs/{name}/kill", vec!["post"]),
            ("/api/v1/jobs/{name}/state", vec!["get", "delete"]),
            ("/api/v1/jobs/{name}/state/{key}", vec!["get", "delete"]),
            ("/api/v1/modules", vec!["post", "get"]),
            ("/api/v1/modules/{digest}", vec!["get", "delete"]),
            ("/api/v1/runs", vec!["get"]),
            ("/api/v1/runs/{run_id}", vec!["get"]),
            ("/api/v1/runs/{run_id}/output", vec!["get"]),
            ("/api/v1/runs/{run_id}/result", vec!["post"]),
            ("/api/v1/runs/{run_id}/rerun", vec!["post"]),
            ("/api/v1/audit", vec!["get"]),
            ("/api/v1/secrets", vec!["get"]),
            ("/api/v1/secrets/{name}", vec!["put", "delete"]),
            ("/api/v1/secrets/rekey", vec!["post"]),
            ("/api/v1/workers", vec!["get"]),
            ("/api/v1/alerts/channels", vec!["get"]),
            ("/api/v1/cron/next", vec!["get"]),
            ("/api/v1/whoami", vec!["get"]),
            ("/healthz", vec!["get"]),
            ("/readyz", vec!["get"]),
            ("/metrics", vec!["get"]),
        ];
        for (path, methods) in expected {
            let item = paths.get(path).unwrap_or_else(|| panic!("{path} is not described"));
            for method in methods {
                assert!(item.get(method).is_some(), "{method} {path} is not described");
            }
        }
        assert_eq!(
            paths.len(),
            26,
            "a described route has no test entry: {:?}",
            paths.keys().collect::<Vec<_>>()
        );
        // Every API operation documents the error statuses; a job view may
        // carry fields a job spec may not.
        for (path, item) in paths.iter().filter(|(p, _)| p.starts_with("/api/v1/")) {
            for (method, operation) in item.as_object().expect("operations") {
                for status in ["400", "401", "403", "404", "422", "500", "503"] {
                    assert!(
                        operation["responses"].get(status).is_some(),
                        "{method} {path} does not document {status}"
                    );
                }
            }
        }
        // The result route is authorised by the run's token, not a bearer token.
        assert_eq!(
            doc["paths"]["/api/v1/runs/{run_id}/result"]["post"]["security"],
            serde_json::json!([{}])
        );
        assert!(doc["components"]["schemas"]["JobSpec"]["additionalProperties"] == false);
        assert!(doc["components"]["schemas"]["JobSpecFields"]["additionalProperties"].is_null());
        // Every schema the paths reference exists.
        let text = doc.to_string();
        for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = reference.split('"').next().expect("name");
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "schema {name} is referenced but missing"
            );
        }
    }
}
