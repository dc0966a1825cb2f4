//! The OpenAPI 3 description of every route, generated from the handlers and
//! types (utoipa) and served at `/api/v1/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{error, jobs, runs, system};

#[derive(OpenApi)]
#[openapi(
    info(title = "sandcron", description = "A distributed cron whose jobs run in a WebAssembly sandbox."),
    paths(
        jobs::list, jobs::put, jobs::get, jobs::delete, jobs::pause, jobs::resume, jobs::run_now, jobs::kill,
        runs::list, runs::get, runs::output,
        system::workers, system::cron_next, system::healthz, system::readyz, system::metrics,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "jobs", description = "Create, change and control jobs"),
        (name = "runs", description = "Run history and output"),
        (name = "workers", description = "Live workers"),
        (name = "cron", description = "Cron expression preview"),
        (name = "system", description = "Probes and metrics"),
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
