//! `/api/v1/modules` in process: upload (raw and multipart, idempotent),
//! list, read, delete, and every way an upload is refused.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::Value;

use super::{OPERATOR, TestApi, VIEWER, wasm_job};

fn upload(body: impl Into<Body>, content_type: &str, token: &str) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri("/api/v1/modules")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .expect("request")
}

#[tokio::test]
async fn uploads_are_content_addressed_idempotent_and_listed_with_their_jobs() {
    let api = TestApi::new();
    let first = api
        .send(upload(crate::launch::DEMO_MODULE, "application/wasm", OPERATOR))
        .await
        .expect(StatusCode::CREATED);
    let digest = first["digest"].as_str().expect("digest").to_owned();
    assert_eq!(
        digest,
        crate::ids::ModuleDigest::of(crate::launch::DEMO_MODULE).to_string()
    );
    assert_eq!(first["kind"], "module");
    assert_eq!(first["created"], true);
    assert_eq!(
        first["capabilities"],
        serde_json::json!([]),
        "a core module has no network interface"
    );
    assert_eq!(first["size"], crate::launch::DEMO_MODULE.len());
    assert!(first.get("name").is_none(), "a raw upload without ?name has no label");

    // The same bytes again, as a multipart form field: stored already.
    let boundary = "sandcron-test-boundary";
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"module\"; filename=\"demo.wasm\"\r\n\
         Content-Type: application/wasm\r\n\r\n"
    )
    .into_bytes();
    form.extend_from_slice(crate::launch::DEMO_MODULE);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let again = api
        .send(upload(
            form,
            &format!("multipart/form-data; boundary={boundary}"),
            OPERATOR,
        ))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        (again["digest"].as_str(), &again["created"]),
        (Some(digest.as_str()), &Value::Bool(false))
    );
    assert_eq!(again["name"], "demo.wasm", "the multipart file name labels the module");

    api.call(Method::PUT, "/api/v1/jobs/user", Some(OPERATOR), wasm_job(&digest))
        .await
        .expect(StatusCode::CREATED);
    let listed = api.get("/api/v1/modules").await.expect(StatusCode::OK);
    assert_eq!(listed[0]["digest"], digest.as_str());
    assert_eq!(listed[0]["jobs"], serde_json::json!(["user"]));
    assert_eq!(listed[0]["name"], "demo.wasm");
    let one = api
        .get(&format!("/api/v1/modules/{digest}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(one["size"], crate::launch::DEMO_MODULE.len());

    // In use: refused, naming the job; free again after the job goes.
    let uri = format!("/api/v1/modules/{digest}");
    api.call(Method::DELETE, &uri, Some(OPERATOR), Value::Null)
        .await
        .expect_error(StatusCode::CONFLICT, "conflict", "user");
    api.call(Method::DELETE, "/api/v1/jobs/user", Some(OPERATOR), Value::Null)
        .await
        .expect(StatusCode::NO_CONTENT);
    api.call(Method::DELETE, &uri, Some(OPERATOR), Value::Null)
        .await
        .expect(StatusCode::NO_CONTENT);
    api.get(&uri)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found", "not stored");
}

#[tokio::test]
async fn bad_uploads_are_refused_with_the_reason() {
    let api = TestApi::new();
    api.send(upload("hello world", "application/wasm", OPERATOR))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "bad magic number");
    let imports_host =
        wat::parse_str(r#"(module (import "env" "host_fn" (func)) (func (export "_start")))"#).expect("wat");
    api.send(upload(imports_host, "application/wasm", OPERATOR))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "env::host_fn");
    let mut truncated = crate::launch::DEMO_MODULE.to_vec();
    truncated.truncate(truncated.len() / 2);
    api.send(upload(truncated, "application/wasm", OPERATOR))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "invalid WebAssembly");
    // The test engine accepts 1 MiB: one byte more is refused by size
    // (after the magic number), and a body past the route's limit before it
    // is read.
    let mut huge = b"\0asm\x01\0\0\0".to_vec();
    huge.resize((1 << 20) + 1, 0);
    api.send(upload(huge, "application/wasm", OPERATOR)).await.expect_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the limit is 1048576 bytes",
    );
    let mut past_route = b"\0asm\x01\0\0\0".to_vec();
    past_route.resize((1 << 20) + 64 * 1024 + 1, 0);
    api.send(upload(past_route, "application/wasm", OPERATOR))
        .await
        .expect_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "larger than the limit",
        );
    api.send(upload(crate::launch::DEMO_MODULE, "text/plain", OPERATOR))
        .await
        .expect_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "text/plain",
        );
    let boundary = "b";
    let no_field =
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n--{boundary}--\r\n");
    api.send(upload(
        no_field,
        &format!("multipart/form-data; boundary={boundary}"),
        OPERATOR,
    ))
    .await
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "no field named \"module\"");
    api.send(upload(crate::launch::DEMO_MODULE, "application/wasm", VIEWER))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden", "");
    api.get("/api/v1/modules/sha256:nothex")
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "");
    assert_eq!(
        api.get("/api/v1/modules").await.expect(StatusCode::OK),
        serde_json::json!([])
    );
}

#[tokio::test]
async fn a_module_keeps_the_name_it_was_uploaded_under_and_bad_names_are_refused() {
    let api = TestApi::new();
    let named = |name: &str| {
        let mut request = upload(crate::launch::DEMO_MODULE, "application/wasm", OPERATOR);
        *request.uri_mut() = format!("/api/v1/modules?name={name}").parse().expect("uri");
        request
    };
    let first = api.send(named("report.wasm")).await.expect(StatusCode::CREATED);
    assert_eq!(first["name"], "report.wasm");
    let digest = first["digest"].as_str().expect("digest").to_owned();
    // The same bytes under another name: relabelled, not stored twice.
    let again = api.send(named("report%20v2.wasm")).await.expect(StatusCode::OK);
    assert_eq!(
        (again["name"].as_str(), &again["created"]),
        (Some("report v2.wasm"), &Value::Bool(false))
    );
    let one = api
        .get(&format!("/api/v1/modules/{digest}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(one["name"], "report v2.wasm");
    // Without a name, a re-upload keeps the label.
    api.send(upload(crate::launch::DEMO_MODULE, "application/wasm", OPERATOR))
        .await
        .expect(StatusCode::OK);
    let listed = api.get("/api/v1/modules").await.expect(StatusCode::OK);
    assert_eq!(listed[0]["name"], "report v2.wasm");

    for (bad, expected) in [
        ("", "1 to 128 characters"),
        ("dir%2Freport.wasm", "may not contain '/'"),
        ("tab%09name", "may not contain '\\t'"),
        (&"x".repeat(129), "1 to 128 characters"),
    ] {
        api.send(named(bad))
            .await
            .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", expected);
    }
    let mut unknown = upload(crate::launch::DEMO_MODULE, "application/wasm", OPERATOR);
    *unknown.uri_mut() = "/api/v1/modules?label=x".parse().expect("uri");
    let refused = api.send(unknown).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{:?}", refused.body);
}
