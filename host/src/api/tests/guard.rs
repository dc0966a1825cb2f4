//! The tokenless server's guard, in process: a rebound host name and pages
//! of other origins change nothing; every answer carries the security
//! headers.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};

use super::{TestApi, shell_job};

fn tokenless() -> TestApi {
    TestApi::with(|state| state.tokens = Vec::new().into())
}

fn request(method: Method, uri: &str, headers: &[(&str, &str)], body: Option<serde_json::Value>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let body = match body {
        Some(body) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    builder.body(body).expect("request")
}

#[tokio::test]
async fn a_rebound_host_name_is_refused_and_nothing_changes() {
    let api = tokenless();
    let rebound = [("host", "rebind.example:8070")];
    api.send(request(Method::GET, "/api/v1/jobs", &rebound, None))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden", "not this server's");
    api.send(request(
        Method::PUT,
        "/api/v1/jobs/evil",
        &rebound,
        Some(shell_job("touch /tmp/pwned")),
    ))
    .await
    .expect_error(StatusCode::FORBIDDEN, "forbidden", "rebind.example");
    let own = [("host", "127.0.0.1:8070")];
    api.send(request(Method::GET, "/api/v1/jobs/evil", &own, None))
        .await
        .expect(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn pages_of_other_origins_are_refused_and_the_console_and_cli_are_not() {
    let api = tokenless();
    let host = ("host", "localhost:8070");
    let evil = [
        host,
        ("origin", "http://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ];
    api.send(request(
        Method::PUT,
        "/api/v1/jobs/evil",
        &evil,
        Some(shell_job("true")),
    ))
    .await
    .expect_error(StatusCode::FORBIDDEN, "forbidden", "may not change");
    let other_port = [
        host,
        ("origin", "http://localhost:9999"),
        ("sec-fetch-site", "same-site"),
    ];
    api.send(request(Method::POST, "/api/v1/jobs/evil/run", &other_port, None))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden", "may not change");
    // The console (same origin) and the CLI (no Origin) write as before.
    let console = [
        host,
        ("origin", "http://localhost:8070"),
        ("sec-fetch-site", "same-origin"),
    ];
    api.send(request(
        Method::PUT,
        "/api/v1/jobs/mine",
        &console,
        Some(shell_job("true")),
    ))
    .await
    .expect(StatusCode::CREATED);
    api.send(request(Method::POST, "/api/v1/jobs/mine/pause", &[host], None))
        .await
        .expect(StatusCode::OK);
    api.send(request(Method::GET, "/api/v1/jobs/evil", &[host], None))
        .await
        .expect(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let api = tokenless();
    for uri in ["/", "/api/v1/jobs", "/api/v1/nothing", "/healthz"] {
        let response = tower::ServiceExt::oneshot(
            api.app.clone(),
            request(Method::GET, uri, &[("host", "127.0.0.1")], None),
        )
        .await
        .expect("infallible");
        let headers = response.headers();
        let csp = headers["content-security-policy"].to_str().expect("ascii");
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{uri}: {csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{uri}");
        assert_eq!(headers["x-frame-options"], "DENY", "{uri}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{uri}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{uri}");
    }
}
