//! The web console: the static files of `webroot/`, embedded in the binary so
//! a master needs nothing on disk and no network to serve it.

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::AppState;

/// (URL path, content type, bytes) of every console file.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("../../webroot/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../webroot/app.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../webroot/style.css"),
    ),
];

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/", get(serve)).route("/{*path}", get(serve))
}

async fn serve(uri: Uri) -> Response {
    let path = uri.path();
    match FILES.iter().find(|(name, _, _)| *name == path) {
        Some((_, content_type, bytes)) => {
            ([(CONTENT_TYPE, *content_type), (CACHE_CONTROL, "no-cache")], *bytes).into_response()
        }
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}
