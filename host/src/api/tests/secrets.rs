//! `/api/v1/secrets` in process: write-only values (no answer repeats one),
//! sealed in the store, roles, references checked when jobs are saved,
//! deletion refused while used, re-sealing under a rotated key, and viewers
//! seeing HTTP jobs' header names without their values.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};

use super::{ADMIN, OPERATOR, Reply, TestApi, VIEWER, shell_job, wasm_job};
use crate::ids::SecretName;
use crate::secret::Keyring;

const VALUE: &str = "sk_live_7Qv9TzX2mP4wR8sY";

async fn put_secret(api: &TestApi, name: &str, token: &str, value: &[u8]) -> Reply {
    let request = Request::builder()
        .method(Method::PUT)
        .uri(format!("/api/v1/secrets/{name}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(value.to_vec()))
        .expect("request");
    api.send(request).await
}

#[tokio::test]
async fn a_secret_is_written_listed_and_never_shown() {
    let api = TestApi::new();
    let created = put_secret(&api, "billing-api", ADMIN, VALUE.as_bytes())
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(created["name"], "billing-api");
    assert_eq!(created["written_by"], "admin");
    assert!(!created.to_string().contains(VALUE), "{created}");
    put_secret(&api, "billing-api", ADMIN, b"second-value")
        .await
        .expect(StatusCode::OK);

    let listed = api.get("/api/v1/secrets").await.expect(StatusCode::OK);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["name"], "billing-api");
    assert_eq!(listed[0]["jobs"], json!([]));
    assert!(!listed.to_string().contains("second-value"), "{listed}");

    // What the store holds is sealed: neither value appears in any key.
    let stored = api.state.coord.store().range("/").await.expect("range");
    for kv in &stored.kvs {
        let text = String::from_utf8_lossy(&kv.value);
        assert!(
            !text.contains(VALUE) && !text.contains("second-value"),
            "{}: {text}",
            kv.key
        );
    }
    let keyring = api.state.secrets.clone().expect("key");
    let name = SecretName::new("billing-api").expect("name");
    let (sealed, _) = api.state.coord.get_secret(&name).await.expect("read").expect("stored");
    assert_eq!(
        keyring.open(&name, &sealed.sealed).expect("opens").as_bytes(),
        b"second-value"
    );
}

#[tokio::test]
async fn only_admins_write_secrets_and_bad_values_get_a_precise_4xx() {
    let api = TestApi::new();
    put_secret(&api, "token", OPERATOR, b"value").await.expect_error(
        StatusCode::FORBIDDEN,
        "forbidden",
        "needs the admin role",
    );
    put_secret(&api, "token", VIEWER, b"value").await.expect_error(
        StatusCode::FORBIDDEN,
        "forbidden",
        "needs the admin role",
    );
    put_secret(&api, "Bad_Name", ADMIN, b"value").await.expect_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "secret name \"Bad_Name\" contains 'B'",
    );
    put_secret(&api, "token", ADMIN, b"").await.expect_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "must not be empty",
    );
    put_secret(&api, "token", ADMIN, &[0xff, 0xfe]).await.expect_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "must be UTF-8 text",
    );
    put_secret(&api, "token", ADMIN, &vec![b'x'; 64 * 1024 + 1])
        .await
        .expect_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "at most 65536 bytes",
        );
    put_secret(&api, "token", ADMIN, &vec![b'x'; 64 * 1024])
        .await
        .expect(StatusCode::CREATED);
    api.call(Method::DELETE, "/api/v1/secrets/token", Some(OPERATOR), Value::Null)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden", "needs the admin role");
    api.call(Method::DELETE, "/api/v1/secrets/nope", Some(ADMIN), Value::Null)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found", "there is no secret named nope");
    api.call(Method::GET, "/api/v1/secrets", None, Value::Null)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized", "missing bearer token");
}

#[tokio::test]
async fn a_server_without_a_key_file_refuses_secrets_with_a_clear_answer() {
    let api = TestApi::with(|state| state.secrets = None);
    put_secret(&api, "token", ADMIN, b"value").await.expect_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "no secrets key file",
    );
}

#[tokio::test]
async fn jobs_reference_stored_secrets_only_and_a_used_secret_cannot_go() {
    let api = TestApi::new();
    let digest = api.upload_demo().await;
    let mut job = wasm_job(&digest);
    job["secrets"] = json!({"API_TOKEN": "billing-api"});
    api.call(Method::PUT, "/api/v1/jobs/export", Some(OPERATOR), job.clone())
        .await
        .expect_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "there is no secret named billing-api",
        );
    put_secret(&api, "billing-api", ADMIN, VALUE.as_bytes())
        .await
        .expect(StatusCode::CREATED);
    let created = api
        .call(Method::PUT, "/api/v1/jobs/export", Some(OPERATOR), job)
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(created["secrets"], json!({"API_TOKEN": "billing-api"}));

    let listed = api.get("/api/v1/secrets").await.expect(StatusCode::OK);
    assert_eq!(listed[0]["jobs"], json!(["export"]));
    api.call(Method::DELETE, "/api/v1/secrets/billing-api", Some(ADMIN), Value::Null)
        .await
        .expect_error(StatusCode::CONFLICT, "conflict", "used by jobs: export");

    // Shell and HTTP jobs: an env name clash, a template naming no secret,
    // and a `secrets` table on an HTTP job are each refused at their field.
    let mut shell = shell_job("echo $T");
    shell["secrets"] = json!({"T": "billing-api"});
    shell["kind"]["shell"]["env"] = json!({"T": "plain"});
    let error = api
        .call(Method::PUT, "/api/v1/jobs/sh", Some(ADMIN), shell)
        .await
        .expect_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "also set in kind.shell.env",
        );
    assert_eq!(error["field"], "secrets.T");
    let http = json!({"schedule": "@hourly", "kind": {"http": {
        "url": "https://example.com/hook",
        "headers": {"Authorization": "Bearer ${secret:missing-one}"},
    }}});
    let error = api
        .call(Method::PUT, "/api/v1/jobs/hook", Some(OPERATOR), http)
        .await
        .expect_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "there is no secret named missing-one",
        );
    assert_eq!(error["field"], "kind.http.headers.Authorization");
    let http = json!({"schedule": "@hourly", "secrets": {"T": "billing-api"}, "kind": {"http": {
        "url": "https://example.com/hook"}}});
    api.call(Method::PUT, "/api/v1/jobs/hook", Some(OPERATOR), http)
        .await
        .expect_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "HTTP jobs name secrets where they are used",
        );
    let http = json!({"schedule": "@hourly", "kind": {"http": {
        "url": "https://example.com/hook", "body": "${secret:Bad}"}}});
    api.call(Method::PUT, "/api/v1/jobs/hook", Some(OPERATOR), http)
        .await
        .expect_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "secret name \"Bad\" contains 'B'",
        );

    api.call(Method::DELETE, "/api/v1/jobs/export", Some(OPERATOR), Value::Null)
        .await
        .expect(StatusCode::NO_CONTENT);
    api.call(Method::DELETE, "/api/v1/secrets/billing-api", Some(ADMIN), Value::Null)
        .await
        .expect(StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn viewers_see_http_header_names_but_not_their_values() {
    let api = TestApi::new();
    put_secret(&api, "hook-token", ADMIN, VALUE.as_bytes())
        .await
        .expect(StatusCode::CREATED);
    let http = json!({"schedule": "@hourly", "kind": {"http": {
        "url": "https://example.com/hook",
        "headers": {"Authorization": "Bearer ${secret:hook-token}", "X-Api-Key": "plain-key-123"},
    }}});
    api.call(Method::PUT, "/api/v1/jobs/hook", Some(OPERATOR), http)
        .await
        .expect(StatusCode::CREATED);
    for uri in ["/api/v1/jobs/hook", "/api/v1/jobs"] {
        let seen = api.get(uri).await.expect(StatusCode::OK);
        let text = seen.to_string();
        assert!(text.contains("X-Api-Key") && !text.contains("plain-key-123"), "{text}");
        assert!(!text.contains("${secret:hook-token}"), "{text}");
        let operator = api
            .call(Method::GET, uri, Some(OPERATOR), Value::Null)
            .await
            .expect(StatusCode::OK);
        assert!(
            operator.to_string().contains("plain-key-123"),
            "operators see what they edit"
        );
    }
    let listed = api.get("/api/v1/secrets").await.expect(StatusCode::OK);
    assert_eq!(listed[0]["jobs"], json!(["hook"]), "a template is a use");
}

#[tokio::test]
async fn rekey_seals_every_secret_under_the_first_key_of_a_rotated_file() {
    let old_line = Keyring::new_key_line().expect("random");
    let old = Arc::new(Keyring::parse(&old_line, "old.key").expect("old"));
    let api = TestApi::with(|state| state.secrets = Some(old.clone()));
    for name in ["a", "b"] {
        put_secret(&api, name, ADMIN, format!("value-of-{name}").as_bytes())
            .await
            .expect(StatusCode::CREATED);
    }
    let rotated = Arc::new(
        Keyring::parse(
            &format!("{}{old_line}", Keyring::new_key_line().expect("random")),
            "new.key",
        )
        .expect("new"),
    );
    let api = TestApi {
        app: super::router(
            super::AppState {
                secrets: Some(rotated.clone()),
                ..api.state.clone()
            },
            &super::HttpConfig {
                max_body_bytes: 1 << 20,
                allowed_hosts: Vec::new(),
            },
        ),
        state: api.state.clone(),
    };
    api.call(Method::POST, "/api/v1/secrets/rekey", Some(OPERATOR), Value::Null)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden", "needs the admin role");
    let answer = api
        .call(Method::POST, "/api/v1/secrets/rekey", Some(ADMIN), Value::Null)
        .await
        .expect(StatusCode::OK);
    assert_eq!(answer["key_id"], rotated.sealing_id());
    assert_eq!(answer["resealed"], json!(["a", "b"]));
    assert_eq!(answer["failed"], json!([]));
    let again = api
        .call(Method::POST, "/api/v1/secrets/rekey", Some(ADMIN), Value::Null)
        .await
        .expect(StatusCode::OK);
    assert_eq!(again["resealed"], json!([]));
    assert_eq!(again["current"], 2);
    // The old key alone no longer opens them: its line can go.
    let name = SecretName::new("a").expect("name");
    let (stored, _) = api.state.coord.get_secret(&name).await.expect("read").expect("stored");
    assert_eq!(stored.sealed.key_id, rotated.sealing_id());
    assert!(old.open(&name, &stored.sealed).is_err());
    assert_eq!(
        rotated.open(&name, &stored.sealed).expect("opens").as_bytes(),
        b"value-of-a"
    );
}
