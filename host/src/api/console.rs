//! The web console: the static files of `webroot/`, embedded in the binary so
//! a master needs nothing on disk and no network to serve it. It is the
//! application's fallback: any GET that no other route takes.

use axum::extract::Request;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::ApiError;

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// (URL path, content type, bytes) of every console file. A file added to
/// `webroot/` is served only once it is listed here.
const FILES: &[(&str, &str, &[u8])] = &[
    ("/", HTML, include_bytes!("../../../webroot/index.html")),
    ("/style.css", CSS, include_bytes!("../../../webroot/style.css")),
    ("/js/app.js", JS, include_bytes!("../../../webroot/js/app.js")),
    ("/js/api.js", JS, include_bytes!("../../../webroot/js/api.js")),
    ("/js/ui.js", JS, include_bytes!("../../../webroot/js/ui.js")),
    (
        "/js/dashboard.js",
        JS,
        include_bytes!("../../../webroot/js/dashboard.js"),
    ),
    ("/js/jobs.js", JS, include_bytes!("../../../webroot/js/jobs.js")),
    ("/js/editor.js", JS, include_bytes!("../../../webroot/js/editor.js")),
    ("/js/modules.js", JS, include_bytes!("../../../webroot/js/modules.js")),
    ("/js/runs.js", JS, include_bytes!("../../../webroot/js/runs.js")),
    ("/js/run.js", JS, include_bytes!("../../../webroot/js/run.js")),
    ("/js/workers.js", JS, include_bytes!("../../../webroot/js/workers.js")),
    ("/js/secrets.js", JS, include_bytes!("../../../webroot/js/secrets.js")),
    ("/js/state.js", JS, include_bytes!("../../../webroot/js/state.js")),
    ("/js/audit.js", JS, include_bytes!("../../../webroot/js/audit.js")),
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::FILES;

    /// Every file under `dir`, as a URL path relative to `root`.
    fn walk(root: &Path, dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read webroot") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(root, &path, found);
            } else {
                let relative = path.strip_prefix(root).expect("under webroot");
                found.push(format!("/{}", relative.to_string_lossy()));
            }
        }
    }

    #[test]
    fn every_webroot_file_is_served() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../webroot");
        let mut found = Vec::new();
        walk(&root, &root, &mut found);
        for file in found {
            let url = if file == "/index.html" { "/" } else { file.as_str() };
            assert!(
                FILES.iter().any(|(path, _, _)| *path == url),
                "webroot{file} is not in console::FILES, so the binary would not serve it"
            );
        }
    }
}
