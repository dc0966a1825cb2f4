//! The installation's quotas in process: modules (count and bytes), jobs
//! (count and size), runs waiting to start per job, secrets; each breach a
//! 409 `quota_exceeded` (413 for a job too large) that names the setting,
//! and each write that does not grow the installation still allowed.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};

use super::{ADMIN, OPERATOR, TestApi, shell_job, wasm_job};
use crate::config::Quotas;

fn tight() -> Quotas {
    Quotas {
        max_modules: 1,
        max_module_total_bytes: 1 << 20,
        max_jobs: 2,
        max_job_bytes: 2048,
        max_pending_runs: 2,
        max_secrets: 1,
    }
}

async fn upload(api: &TestApi, bytes: Vec<u8>) -> super::Reply {
    let request = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/modules")
        .header(header::AUTHORIZATION, format!("Bearer {OPERATOR}"))
        .header(header::CONTENT_TYPE, "application/wasm")
        .body(Body::from(bytes))
        .expect("request");
    api.send(request).await
}

#[tokio::test]
async fn modules_past_the_count_are_refused_and_the_same_bytes_are_not_counted_twice() {
    let api = TestApi::with(|state| state.quotas = tight());
    let digest = api.upload_demo().await;
    let again = upload(&api, crate::launch::DEMO_MODULE.to_vec()).await;
    assert_eq!(
        again.status,
        StatusCode::OK,
        "an upload of stored bytes stores nothing: {again:?}"
    );
    let other = wat::parse_str(r#"(module (func (export "_start")))"#).expect("wat");
    upload(&api, other).await.expect_error(
        StatusCode::CONFLICT,
        "quota_exceeded",
        "holds 1 modules, the most it may (server.max_modules)",
    );
    assert!(digest.starts_with("sha256:"));
}

#[tokio::test]
async fn modules_past_the_total_bytes_are_refused() {
    let api = TestApi::with(|state| {
        state.quotas = Quotas {
            max_modules: 10,
            max_module_total_bytes: 400,
            ..tight()
        }
    });
    let small = wat::parse_str(r#"(module (func (export "_start")))"#).expect("wat");
    upload(&api, small).await.expect(StatusCode::CREATED);
    upload(&api, crate::launch::DEMO_MODULE.to_vec()).await.expect_error(
        StatusCode::CONFLICT,
        "quota_exceeded",
        "(server.max_modules_mb)",
    );
}

#[tokio::test]
async fn jobs_past_the_count_or_the_size_are_refused_and_replacing_one_is_not() {
    let api = TestApi::with(|state| state.quotas = tight());
    for name in ["a", "b"] {
        api.call(
            Method::PUT,
            &format!("/api/v1/jobs/{name}"),
            Some(ADMIN),
            shell_job("true"),
        )
        .await
        .expect(StatusCode::CREATED);
    }
    api.call(Method::PUT, "/api/v1/jobs/c", Some(ADMIN), shell_job("true"))
        .await
        .expect_error(
            StatusCode::CONFLICT,
            "quota_exceeded",
            "holds 2 jobs, the most it may (server.max_jobs)",
        );
    api.call(Method::PUT, "/api/v1/jobs/a", Some(ADMIN), shell_job("echo replaced"))
        .await
        .expect(StatusCode::OK);
    let big = shell_job(&format!("echo {}", "x".repeat(4000)));
    api.call(Method::PUT, "/api/v1/jobs/b", Some(ADMIN), big)
        .await
        .expect_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the limit is 2048 bytes (server.max_job_kb)",
        );
}

#[tokio::test]
async fn runs_waiting_to_start_are_bounded_per_job() {
    let api = TestApi::with(|state| state.quotas = tight());
    api.register_worker("w1").await;
    let digest = api.upload_demo().await;
    let mut job = wasm_job(&digest);
    job["overlap"] = json!("allow");
    api.call(Method::PUT, "/api/v1/jobs/busy", Some(OPERATOR), job)
        .await
        .expect(StatusCode::CREATED);
    // No worker takes them here: they wait.
    for _ in 0..2 {
        api.call(Method::POST, "/api/v1/jobs/busy/run", Some(OPERATOR), Value::Null)
            .await
            .expect(StatusCode::ACCEPTED);
    }
    api.call(Method::POST, "/api/v1/jobs/busy/run", Some(OPERATOR), Value::Null)
        .await
        .expect_error(
            StatusCode::CONFLICT,
            "quota_exceeded",
            "job busy has 2 runs waiting to start, the most it may (server.max_pending_runs)",
        );
}

#[tokio::test]
async fn secrets_past_the_count_are_refused_and_replacing_one_is_not() {
    let api = TestApi::with(|state| state.quotas = tight());
    let put = |name: &'static str| {
        Request::builder()
            .method(Method::PUT)
            .uri(format!("/api/v1/secrets/{name}"))
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
            .body(Body::from("a-value"))
            .expect("request")
    };
    api.send(put("one")).await.expect(StatusCode::CREATED);
    api.send(put("one")).await.expect(StatusCode::OK);
    api.send(put("two")).await.expect_error(
        StatusCode::CONFLICT,
        "quota_exceeded",
        "holds 1 secrets, the most it may (server.max_secrets)",
    );
}
