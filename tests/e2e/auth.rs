//! Bearer tokens and roles, against a server configured with three tokens.

use crate::{dev, shell_job};

const VIEWER: &str = "viewer-token-0123456789";
const OPERATOR: &str = "operator-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

fn config(dir: &std::path::Path) -> String {
    let path = dir.join("auth.toml");
    std::fs::write(
        &path,
        format!(
            "[[auth.tokens]]\nname = \"ro\"\nrole = \"viewer\"\ntoken = \"{VIEWER}\"\n\
             [[auth.tokens]]\nname = \"ops\"\nrole = \"operator\"\ntoken = \"{OPERATOR}\"\n\
             [[auth.tokens]]\nname = \"root\"\nrole = \"admin\"\ntoken = \"{ADMIN}\"\n"
        ),
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn every_call_needs_a_token_and_the_right_role() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
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
