//! The OpenAPI 3 description of every route, generated from the handlers and
//! types (utoipa) and served at `/api/v1/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{auth, error, jobs, modules, runs, system};

#[derive(OpenApi)]
#[openapi(
    info(title = "sandcron", description = "A distributed cron whose jobs run in a WebAssembly sandbox."),
    paths(
        jobs::list, jobs::put, jobs::get, jobs::delete, jobs::pause, jobs::resume, jobs::run_now, jobs::kill,
        modules::upload, modules::list, modules::get, modules::delete,
        runs::list, runs::get, runs::output,
        system::workers, system::cron_next, system::healthz, system::readyz, system::metrics,
        auth::whoami,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "jobs", description = "Create, change and control jobs"),
        (name = "modules", description = "Upload and manage WebAssembly modules"),
        (name = "runs", description = "Run history and output"),
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
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

pub(super) async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_described() {
        let doc = serde_json::to_value(document()).expect("serialises");
        let paths = doc["paths"].as_object().expect("paths");
        let expected = [
            ("/api/v1/jobs", vec!["get"]),
            ("/api/v1/jobs/{name}", vec!["put", "get", "delete"]),
            ("/api/v1/jobs/{name}/pause", vec!["post"]),
            ("/api/v1/jobs/{name}/resume", vec!["post"]),
            ("/api/v1/jobs/{name}/run", vec!["post"]),
            ("/api/v1/jobs/{name}/kill", vec!["post"]),
            ("/api/v1/modules", vec!["post", "get"]),
            ("/api/v1/modules/{digest}", vec!["get", "delete"]),
            ("/api/v1/runs", vec!["get"]),
            ("/api/v1/runs/{run_id}", vec!["get"]),
            ("/api/v1/runs/{run_id}/output", vec!["get"]),
            ("/api/v1/workers", vec!["get"]),
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
            17,
            "a described route has no test entry: {:?}",
            paths.keys().collect::<Vec<_>>()
        );
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
