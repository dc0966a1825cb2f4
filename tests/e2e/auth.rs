//! Bearer tokens and roles, against a server configured with three tokens.

use sandcron_tests::wasm_job;

use crate::{dev, shell_job, tokens_config};

const VIEWER: &str = "viewer-token-0123456789";
const OPERATOR: &str = "operator-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

/// (name, role, token) of the three tokens.
const TOKENS: [(&str, &str, &str); 3] = [
    ("ro", "viewer", VIEWER),
    ("ops", "operator", OPERATOR),
    ("root", "admin", ADMIN),
];

#[tokio::test]
async fn every_call_needs_a_token_and_the_right_role() {
    let dir = tempfile::tempdir().unwrap();
    let config = tokens_config(dir.path(), &TOKENS);
    let dev = dev(&["--config", &config]);
    let anonymous = dev.api();
    let wrong = dev.api_with_token("not-a-token-at-all");
    let viewer = dev.api_with_token(VIEWER);
    let operator = dev.api_with_token(OPERATOR);
    let admin = dev.api_with_token(ADMIN);

    // Probes, metrics and the API description are public.
    for path in ["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"] {
        assert_eq!(anonymous.get(path).await.status, 200, "{path}");
    }
    anonymous
        .get("/api/v1/jobs")
        .await
        .expect_error(401, "unauthorized", "missing bearer token");
    wrong
        .get("/api/v1/jobs")
        .await
        .expect_error(401, "unauthorized", "invalid token");
    viewer.get("/api/v1/jobs").await.expect(200);

    // Shell jobs are for admins only.
    let shell = shell_job("@yearly", "echo hi");
    viewer.put("/api/v1/jobs/sh", &shell).await.expect_error(
        403,
        "forbidden",
        "needs the admin role; token \"ro\" has the viewer role",
    );
    operator.put("/api/v1/jobs/sh", &shell).await.expect_error(
        403,
        "forbidden",
        "needs the admin role; token \"ops\" has the operator role",
    );
    admin.put("/api/v1/jobs/sh", &shell).await.expect(201);

    // Operators run, pause, resume and kill; viewers only read.
    viewer
        .post("/api/v1/jobs/sh/run")
        .await
        .expect_error(403, "forbidden", "needs the operator role");
    viewer
        .post("/api/v1/jobs/sh/pause")
        .await
        .expect_error(403, "forbidden", "needs the operator role");
    viewer
        .post("/api/v1/jobs/sh/kill")
        .await
        .expect_error(403, "forbidden", "needs the operator role");
    viewer
        .delete("/api/v1/jobs/sh")
        .await
        .expect_error(403, "forbidden", "needs the operator role");
    operator.post("/api/v1/jobs/sh/pause").await.expect(200);
    operator.post("/api/v1/jobs/sh/resume").await.expect(200);
    operator.post("/api/v1/jobs/sh/run").await.expect(202);
    // Pausing did not change who wrote the job, so the shell job still runs.
    sandcron_tests::wait_for(
        "the manual run to succeed",
        std::time::Duration::from_secs(20),
        || async {
            viewer
                .runs("sh")
                .await
                .iter()
                .any(|r| r["status"] == "succeeded")
                .then_some(())
        },
    )
    .await;
    // Replacing or deleting a shell job needs admin.
    operator
        .put("/api/v1/jobs/sh", &shell)
        .await
        .expect_error(403, "forbidden", "needs the admin role");
    operator.delete("/api/v1/jobs/sh").await.expect_error(
        403,
        "forbidden",
        "deleting a shell job needs the admin role",
    );
    admin.delete("/api/v1/jobs/sh").await.expect(204);
    for path in ["/api/v1/runs", "/api/v1/workers", "/api/v1/cron/next?expr=@daily"] {
        anonymous
            .get(path)
            .await
            .expect_error(401, "unauthorized", "missing bearer token");
        viewer.get(path).await.expect(200);
    }
    // The token never appears in the server's log.
    let log = dev.log_text();
    for token in [VIEWER, OPERATOR, ADMIN] {
        assert!(!log.contains(token), "token leaked into the log");
    }
}

#[tokio::test]
async fn a_server_without_tokens_refuses_a_public_address() {
    let output = std::process::Command::new(crate::BIN)
        .args(["dev", "--listen", "0.0.0.0:0", "--no-demo", "--data"])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without auth tokens"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_configuration_file_with_an_unknown_key_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[worker]\ncapacty = 3\n").unwrap();
    let output = std::process::Command::new(crate::BIN)
        .args(["dev", "--no-demo", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .arg("--data")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown field `capacty`"), "{stderr}");
}

/// One route of the matrix: who may call it.
struct Route {
    method: &'static str,
    /// The OpenAPI path template it exercises.
    template: &'static str,
    path: String,
    body: Option<serde_json::Value>,
    /// 0 public, 1 viewer, 2 operator, 3 admin.
    needs: u8,
}

/// Every route × {no token, wrong token, viewer, operator, admin}: allowed
/// exactly as documented, 401 without a valid token, 403 below the role.
/// The OpenAPI description is the list of routes, so a new route without a
/// row here fails the test.
#[tokio::test]
async fn the_auth_matrix_covers_every_route_and_role() {
    let dir = tempfile::tempdir().unwrap();
    let config = tokens_config(dir.path(), &TOKENS);
    let dev = dev(&["--config", &config]);
    let admin = dev.api_with_token(ADMIN);
    let hello = wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1) (func (export "_start")))"#,
    )
    .unwrap();
    let digest = admin
        .raw("POST", "/api/v1/modules", "application/wasm", hello.clone())
        .await
        .expect(201)["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let wasm = wasm_job("@yearly", &digest, None);
    admin.put("/api/v1/jobs/w", &wasm).await.expect(201);
    admin
        .put("/api/v1/jobs/sh", &shell_job("@yearly", "true"))
        .await
        .expect(201);
    let no_run = "01JD0000000000000000000000";
    let no_module = format!("sha256:{}", "0".repeat(64));
    let route = |method, template, path: &str, body: Option<serde_json::Value>, needs| Route {
        method,
        template,
        path: path.to_owned(),
        body,
        needs,
    };
    let routes = vec![
        route("GET", "/api/v1/openapi.json", "/api/v1/openapi.json", None, 0),
        route("GET", "/api/v1/jobs", "/api/v1/jobs", None, 1),
        route("GET", "/api/v1/jobs/{name}", "/api/v1/jobs/w", None, 1),
        route("PUT", "/api/v1/jobs/{name}", "/api/v1/jobs/w", Some(wasm.clone()), 2),
        route(
            "PUT",
            "/api/v1/jobs/{name}",
            "/api/v1/jobs/sh2",
            Some(shell_job("@yearly", "true")),
            3,
        ),
        route("POST", "/api/v1/jobs/{name}/pause", "/api/v1/jobs/w/pause", None, 2),
        route("POST", "/api/v1/jobs/{name}/resume", "/api/v1/jobs/w/resume", None, 2),
        route("POST", "/api/v1/jobs/{name}/run", "/api/v1/jobs/w/run", None, 2),
        route("POST", "/api/v1/jobs/{name}/kill", "/api/v1/jobs/w/kill", None, 2),
        route("DELETE", "/api/v1/jobs/{name}", "/api/v1/jobs/nothing-here", None, 2),
        route("POST", "/api/v1/modules", "/api/v1/modules", None, 2),
        route("GET", "/api/v1/modules", "/api/v1/modules", None, 1),
        route(
            "GET",
            "/api/v1/modules/{digest}",
            &format!("/api/v1/modules/{digest}"),
            None,
            1,
        ),
        route(
            "DELETE",
            "/api/v1/modules/{digest}",
            &format!("/api/v1/modules/{no_module}"),
            None,
            2,
        ),
        route("GET", "/api/v1/runs", "/api/v1/runs", None, 1),
        route(
            "GET",
            "/api/v1/runs/{run_id}",
            &format!("/api/v1/runs/{no_run}"),
            None,
            1,
        ),
        route(
            "GET",
            "/api/v1/runs/{run_id}/output",
            &format!("/api/v1/runs/{no_run}/output"),
            None,
            1,
        ),
        // Re-running a run starts the job again: operators, like run now.
        route(
            "POST",
            "/api/v1/runs/{run_id}/rerun",
            &format!("/api/v1/runs/{no_run}/rerun"),
            None,
            2,
        ),
        route("GET", "/api/v1/workers", "/api/v1/workers", None, 1),
        route("GET", "/api/v1/alerts/channels", "/api/v1/alerts/channels", None, 1),
        route("GET", "/api/v1/cron/next", "/api/v1/cron/next?expr=@daily", None, 1),
        route("GET", "/api/v1/whoami", "/api/v1/whoami", None, 1),
        // The audit log names every token's activity: operators and admins.
        route("GET", "/api/v1/audit", "/api/v1/audit", None, 2),
        // A job's key-value state may hold what the job keeps to itself:
        // operators only, reading included.
        route("GET", "/api/v1/jobs/{name}/state", "/api/v1/jobs/w/state", None, 2),
        route(
            "GET",
            "/api/v1/jobs/{name}/state/{key}",
            "/api/v1/jobs/w/state/k",
            None,
            2,
        ),
        route(
            "DELETE",
            "/api/v1/jobs/{name}/state/{key}",
            "/api/v1/jobs/w/state/k",
            None,
            2,
        ),
        route("DELETE", "/api/v1/jobs/{name}/state", "/api/v1/jobs/w/state", None, 2),
        // Secrets: everyone sees names; only admins write or re-seal.
        route("GET", "/api/v1/secrets", "/api/v1/secrets", None, 1),
        route(
            "PUT",
            "/api/v1/secrets/{name}",
            "/api/v1/secrets/s",
            Some(serde_json::json!("a-secret-value")),
            3,
        ),
        route("POST", "/api/v1/secrets/rekey", "/api/v1/secrets/rekey", None, 3),
        route(
            "DELETE",
            "/api/v1/secrets/{name}",
            "/api/v1/secrets/nothing-here",
            None,
            3,
        ),
        // Last: an admin deleting the shell job really deletes it.
        route("DELETE", "/api/v1/jobs/{name}", "/api/v1/jobs/sh", None, 3),
    ];

    // Completeness: every documented operation has a row.
    let doc = dev.api().get("/api/v1/openapi.json").await.expect(200);
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/api/v1/") {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            let method = method.to_uppercase();
            // Results are authorised by the run's own token (below).
            let by_run_token = path == "/api/v1/runs/{run_id}/result";
            assert!(
                by_run_token || routes.iter().any(|r| r.template == path && r.method == method),
                "{method} {path} is missing from the auth matrix"
            );
        }
    }

    let identities: [(&str, Option<&str>, u8); 5] = [
        ("no token", None, 0),
        ("wrong token", Some("wrong-token-0123456789"), 0),
        ("viewer", Some(VIEWER), 1),
        ("operator", Some(OPERATOR), 2),
        ("admin", Some(ADMIN), 3),
    ];
    let mut checked = 0;
    for route in &routes {
        for (who, token, rank) in identities {
            let api = sandcron_tests::Api::new(&dev.base, token);
            let reply = match (route.method, &route.body) {
                ("POST", None) if route.template == "/api/v1/modules" => {
                    api.raw("POST", &route.path, "application/wasm", hello.clone()).await
                }
                (method, body) => api.request(method, &route.path, body.as_ref()).await,
            };
            let status = reply.status;
            let what = format!("{} {} as {who}: {status} {}", route.method, route.path, reply.body);
            if rank >= route.needs {
                assert!(status != 401 && status != 403 && status < 500, "allowed, but {what}");
            } else if token.is_none() || who == "wrong token" {
                assert_eq!(status, 401, "{what}");
                assert_eq!(reply.body["error"]["code"], "unauthorized", "{what}");
            } else {
                assert_eq!(status, 403, "{what}");
                assert_eq!(reply.body["error"]["code"], "forbidden", "{what}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, routes.len() * 5);
    // A run's result is authorised by the run's token alone: no API token,
    // whatever its role, stands in for it, and none is needed with it.
    let result = format!("{}/api/v1/runs/{no_run}/result", dev.base);
    let http = sandcron_tests::http_client().build().unwrap();
    for (who, token, _) in identities {
        let mut without = http.post(&result).json(&serde_json::json!({"status": "succeeded"}));
        let mut with = http
            .post(&result)
            .header("x-sandcron-run-token", "scr_0123456789")
            .json(&serde_json::json!({"status": "succeeded"}));
        if let Some(token) = token {
            without = without.bearer_auth(token);
            with = with.bearer_auth(token);
        }
        let status = without.send().await.unwrap().status();
        assert_eq!(status, 401, "result without a run token as {who}");
        // Past authentication: the run is not running.
        let status = with.send().await.unwrap().status();
        assert_eq!(status, 404, "result with a run token as {who}");
    }
    // The shell job is gone (only the admin's delete went through), the
    // wasm job is still there.
    admin.get("/api/v1/jobs/sh").await.expect(404);
    admin.get("/api/v1/jobs/w").await.expect(200);
    let log = dev.log_text();
    for token in [VIEWER, OPERATOR, ADMIN, "wrong-token-0123456789"] {
        assert!(!log.contains(token), "a token leaked into the log");
    }
}
