//! Bad input gets a precise 4xx in the error format, never a crash.

use serde_json::json;

use crate::{dev, shell_job};

#[tokio::test]
async fn invalid_job_bodies_name_the_field_and_why() {
    let dev = dev(&[]);
    let api = dev.api();
    let cases = [
        (
            shell_job("61 * * * *", "true"),
            "schedule",
            "minute field \"61\": 61 is out of range 0-59",
        ),
        (
            shell_job("* * * *", "true"),
            "schedule",
            "expected 5, 6 or 7 fields, found 4",
        ),
        (shell_job("0 0 * * MON-FOO", "true"), "schedule", "day-of-week"),
        (shell_job("@every 0s", "true"), "schedule", "at least 1s"),
        (shell_job("0 0 30 2 *", "true"), "schedule", "never fires"),
        (
            json!({"schedule": "@daily", "timezone": "Mars/Olympus", "kind": {"shell": {"command": "true"}}}),
            "timezone",
            "unknown time zone \"Mars/Olympus\"",
        ),
        (
            json!({"schedule": "@daily", "kind": {"shell": {"command": "true"}}, "colour": "red"}),
            "colour",
            "unknown field `colour`",
        ),
        (
            json!({"schedule": "@daily", "kind": {"shell": {"command": "true", "timeout_s": "soon"}}}),
            "kind.shell.timeout_s",
            "invalid type",
        ),
        (
            json!({"schedule": 5, "kind": {"shell": {"command": "true"}}}),
            "schedule",
            "invalid type",
        ),
        (
            json!({"kind": {"shell": {"command": "true"}}}),
            "",
            "missing field `schedule`",
        ),
        (
            json!({"schedule": "@daily", "kind": {"shell": {"command": "true", "env": {"SANDCRON_X": "1"}}}}),
            "kind.shell.env.SANDCRON_X",
            "reserved",
        ),
        (
            json!({"schedule": "@daily", "kind": {"wasm": {"module": "sha256:abc"}}}),
            "kind.wasm.module",
            "64 lower-case hex digits",
        ),
        (
            json!({"schedule": "@daily", "kind": {"wasm": {"module": format!("sha256:{}", "a".repeat(64))}}}),
            "kind.wasm.module",
            "is not uploaded",
        ),
    ];
    for (body, field, message) in cases {
        let reply = api.put("/api/v1/jobs/bad", &body).await;
        let error = reply.clone().expect_error(422, "invalid", message);
        if field.is_empty() {
            assert!(
                error["error"]["field"].is_null() || error["error"]["field"] == "",
                "{error}"
            );
        } else {
            assert_eq!(error["error"]["field"], field, "{body} → {error}");
        }
    }
    // Nothing was stored.
    api.get("/api/v1/jobs/bad")
        .await
        .expect_error(404, "not_found", "job bad does not exist");
}

#[tokio::test]
async fn bad_job_names_are_rejected_in_the_path() {
    let dev = dev(&[]);
    let api = dev.api();
    let body = shell_job("@daily", "true");
    let long = "x".repeat(64);
    let cases = [
        ("Upper", "contains 'U'"),
        ("a%2Fb", "contains '/'"),
        ("a..b", "contains '.'"),
        ("-lead", "must start"),
        (long.as_str(), "64 characters long; the limit is 63"),
        ("tab%09", "contains '\\t'"),
    ];
    for (name, message) in cases {
        let error = api
            .put(&format!("/api/v1/jobs/{name}"), &body)
            .await
            .expect_error(422, "invalid", message);
        assert_eq!(error["error"]["field"], "name");
    }
}

#[tokio::test]
async fn malformed_and_oversized_bodies_and_unknown_routes() {
    // A small body limit, so the oversized body fits in the socket buffers
    // and the client reads the 413 instead of a reset connection.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("small.toml");
    std::fs::write(&config, "[server]\nmax_body_kb = 16\n").unwrap();
    let dev = dev(&["--config", &config.to_string_lossy()]);
    let api = dev.api();
    let reply = api
        .raw("PUT", "/api/v1/jobs/x", "application/json", b"{\"schedule\": ".to_vec())
        .await;
    reply.expect_error(400, "bad_request", "malformed JSON");
    let reply = api
        .raw("PUT", "/api/v1/jobs/x", "application/json", vec![0xff, 0xfe, b'{'])
        .await;
    reply.expect_error(400, "bad_request", "malformed JSON");
    let reply = api.raw("PUT", "/api/v1/jobs/x", "text/plain", b"{}".to_vec()).await;
    reply.expect_error(415, "unsupported_media_type", "application/json");
    let mut huge = shell_job("@daily", "true");
    huge["description"] = json!("x".repeat(64 * 1024));
    api.put("/api/v1/jobs/x", &huge)
        .await
        .expect_error(413, "payload_too_large", "larger than the server accepts");
    api.get("/api/v1/nothing-here")
        .await
        .expect_error(404, "not_found", "no route for GET /api/v1/nothing-here");
    api.request("PATCH", "/api/v1/jobs/x", None)
        .await
        .expect_error(405, "method_not_allowed", "PATCH is not allowed");
    api.get("/api/v1/runs?status=exploded")
        .await
        .expect_error(422, "invalid", "unknown run status \"exploded\"");
    api.get("/api/v1/runs?limit=0")
        .await
        .expect_error(422, "invalid", "between 1 and 1000");
    api.get("/api/v1/runs?cursor=garbage")
        .await
        .expect_error(422, "invalid", "invalid cursor");
    api.get("/api/v1/runs?since=yesterday")
        .await
        .expect_error(422, "invalid", "not an RFC 3339 instant");
    api.get("/api/v1/runs/not-a-run")
        .await
        .expect_error(422, "invalid", "is not a ULID");
    api.get("/api/v1/runs/01JBZ1T4W8CZ8J8S1V1D0ZC5QK")
        .await
        .expect_error(404, "not_found", "does not exist");
    api.get("/api/v1/runs?bogus=1")
        .await
        .expect_error(400, "bad_request", "unknown field `bogus`");
    api.get("/api/v1/cron/next?expr=*/0+*+*+*+*")
        .await
        .expect_error(422, "invalid", "step must be at least 1");
    api.get("/api/v1/cron/next?expr=@daily&tz=Nowhere/Land")
        .await
        .expect_error(422, "invalid", "unknown time zone");
    api.get("/api/v1/cron/next?expr=@daily&count=1000")
        .await
        .expect_error(422, "invalid", "between 1 and 100");
}

#[tokio::test]
async fn kill_and_run_of_missing_or_idle_jobs_are_precise_errors() {
    let dev = dev(&[]);
    let api = dev.api();
    api.post("/api/v1/jobs/ghost/run")
        .await
        .expect_error(404, "not_found", "job ghost does not exist");
    api.post("/api/v1/jobs/ghost/kill")
        .await
        .expect_error(404, "not_found", "job ghost does not exist");
    api.delete("/api/v1/jobs/ghost")
        .await
        .expect_error(404, "not_found", "job ghost does not exist");
    api.put("/api/v1/jobs/idle", &shell_job("@yearly", "true"))
        .await
        .expect(201);
    api.post("/api/v1/jobs/idle/kill")
        .await
        .expect_error(409, "conflict", "job idle has no running runs");
    api.post("/api/v1/jobs/idle/kill?run_id=01JBZ1T4W8CZ8J8S1V1D0ZC5QK")
        .await
        .expect_error(
            409,
            "conflict",
            "run 01JBZ1T4W8CZ8J8S1V1D0ZC5QK of job idle is not running",
        );
    api.post("/api/v1/jobs/idle/kill?run_id=nope")
        .await
        .expect_error(422, "invalid", "is not a ULID");
}

#[tokio::test]
async fn shell_jobs_are_refused_where_native_processes_are_not_permitted() {
    let dev = dev(&["--no-native"]);
    let api = dev.api();
    api.put("/api/v1/jobs/sh", &shell_job("@daily", "true"))
        .await
        .expect_error(403, "forbidden", "shell jobs are disabled");
}

#[tokio::test]
async fn optimistic_concurrency_with_if_match() {
    let dev = dev(&[]);
    let api = dev.api();
    let created = api
        .put("/api/v1/jobs/v", &shell_job("@daily", "true"))
        .await
        .expect(201);
    let revision = created["revision"].as_i64().unwrap();
    // Another writer changes it.
    api.put("/api/v1/jobs/v", &shell_job("@hourly", "true"))
        .await
        .expect(200);
    let http = sandcron_tests::http_client().build().expect("client");
    let stale = http
        .put(format!("{}/api/v1/jobs/v", dev.base))
        .header("if-match", revision.to_string())
        .json(&shell_job("@weekly", "true"))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status().as_u16(), 412);
    let create_only = http
        .put(format!("{}/api/v1/jobs/v", dev.base))
        .header("if-none-match", "*")
        .json(&shell_job("@weekly", "true"))
        .send()
        .await
        .unwrap();
    assert_eq!(create_only.status().as_u16(), 412);
    assert_eq!(api.get("/api/v1/jobs/v").await.expect(200)["schedule"], "@hourly");
}
