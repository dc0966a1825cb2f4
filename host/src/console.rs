//! The web console: the static files of `webroot/`, embedded in the binary so
//! a master needs nothing on disk and no network to serve it. It is the
//! application's fallback: any GET that no other route takes.

use axum::extract::Request;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::api::ApiError;

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

/// Serves a console file, or answers 404 (as JSON under `/api/`).
pub(crate) async fn fallback(request: Request) -> Response {
    let path = request.uri().path();
    if path == "/api" || path.starts_with("/api/") {
        return ApiError::NotFound(format!("no route for {} {path}", request.method())).into_response();
    }
    let file = FILES.iter().find(|(name, _, _)| *name == path);
    match (request.method(), file) {
        (&Method::GET | &Method::HEAD, Some((_, content_type, bytes))) => {
            ([(CONTENT_TYPE, *content_type), (CACHE_CONTROL, "no-cache")], *bytes).into_response()
        }
        (_, Some(_)) => (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n").into_response(),
        (_, None) => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}
