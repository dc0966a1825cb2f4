//! Secrets end to end against `sandcron dev`: values reach a job of each
//! kind (a component through `wasi:config` and its environment, a shell
//! job's environment, an HTTP job's header and body), output is masked, and
//! no value appears in any API answer, run record, output chunk, the
//! server's log or its stores' files; the key file is checked at start
//! (wrong key, exposed file); a key rotates with `secret rekey`; a
//! component's environment can be exactly what the job declares.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use sandcron_tests::receiver::Receiver;
use sandcron_tests::{Api, Dev, wait_for};
use serde_json::{Value, json};

use crate::{BIN, built_guest, dev, tokens_config};

const WASM_VALUE: &str = "wasm-S3cr3t-9f8e7d6c5b";
const SHELL_VALUE: &str = "shell-S3cr3t-1a2b3c4d5e";
const HTTP_VALUE: &str = "http-S3cr3t-5e6f7a8b9c";
const VALUES: [&str; 3] = [WASM_VALUE, SHELL_VALUE, HTTP_VALUE];

/// Runs `job` now; returns its record once it has ended.
async fn run_to_end(api: &Api, job: &str) -> Value {
    let started = api.post(&format!("/api/v1/jobs/{job}/run")).await.expect(202);
    let run_id = started["run_id"].as_str().expect("run id").to_owned();
    wait_for(
        &format!("run {run_id} of {job} to end"),
        Duration::from_secs(60),
        || async {
            let run = api.get(&format!("/api/v1/runs/{run_id}")).await;
            (run.status == 200 && run.body["status"] != "running").then_some(run.body)
        },
    )
    .await
}

/// A run's output as one text per stream.
async fn streams(api: &Api, run: &Value) -> (String, String) {
    let chunks = api.output(run["run_id"].as_str().expect("id")).await;
    let join = |name: &str| -> String {
        chunks
            .iter()
            .filter(|(stream, _)| stream == name)
            .map(|(_, text)| text.as_str())
            .collect()
    };
    (join("stdout"), join("stderr"))
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize])
            } else {
                '='
            });
        }
    }
    out
}

/// Every file under `dir` but the key file, as lossy text, by path.
fn files_under(dir: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n != "secrets.key") {
                let bytes = std::fs::read(&path).unwrap_or_default();
                found.push((path.display().to_string(), String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_every_kind_of_job_and_no_value_leaks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = tokens_config(
        dir.path(),
        &[
            ("root", "admin", "admin-token-secrets-e2e"),
            ("ops", "operator", "operator-token-secrets-e2e"),
            ("watcher", "viewer", "viewer-token-secrets-e2e"),
        ],
    );
    let server = dev(&["--config", &config]);
    let admin = server.api_with_token("admin-token-secrets-e2e");
    let operator = server.api_with_token("operator-token-secrets-e2e");
    let viewer = server.api_with_token("viewer-token-secrets-e2e");
    let receiver = Receiver::start().await;

    admin.put_secret("wasm-token", WASM_VALUE).await;
    admin.put_secret("shell-token", SHELL_VALUE).await;
    admin.put_secret("http-token", HTTP_VALUE).await;
    operator
        .raw("PUT", "/api/v1/secrets/mine", "text/plain", b"x-value".to_vec())
        .await
        .expect_error(403, "forbidden", "needs the admin role");

    let digest = operator.upload_module(built_guest("config-probe")).await;
    operator
        .put(
            "/api/v1/jobs/probe",
            &json!({
                "schedule": "0 0 1 1 *",
                "secrets": {"API_TOKEN": "wasm-token"},
                "kind": {"wasm": {
                    "module": digest,
                    "args": ["config", "env", "leak", "API_TOKEN"],
                    "config": {"region": "eu"},
                    "secrets_as_env": true,
                }},
            }),
        )
        .await
        .expect(201);
    admin
        .put(
            "/api/v1/jobs/script",
            &json!({
                "schedule": "0 0 1 1 *",
                "secrets": {"TOKEN": "shell-token"},
                "kind": {"shell": {"command": concat!(
                    "echo \"whole $TOKEN\"; ",
                    "printf 'split %s' \"${TOKEN%?????????}\"; ",
                    "printf '%s\\n' \"${TOKEN#${TOKEN%?????????}}\"; ",
                    "echo \"base64 $(printf %s \"$TOKEN\" | base64)\"; ",
                    "echo \"err $TOKEN\" >&2",
                )}},
            }),
        )
        .await
        .expect(201);
    operator
        .put(
            "/api/v1/jobs/hook",
            &json!({
                "schedule": "0 0 1 1 *",
                "kind": {"http": {
                    "method": "POST",
                    "url": receiver.url("/echo"),
                    "headers": {"Authorization": "Bearer ${secret:http-token}", "X-Plain": "plain"},
                    "body": "token=${secret:http-token}",
                }},
            }),
        )
        .await
        .expect(201);

    // The component: wasi:config holds the config, the secret and the run
    // context; the environment the secret (secrets_as_env) and the context.
    let run = run_to_end(&operator, "probe").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["secrets"], json!(["wasm-token"]));
    let (stdout, stderr) = streams(&operator, &run).await;
    for line in [
        "config API_TOKEN=***",
        "config region=eu",
        "config SANDCRON_JOB=probe",
        "env API_TOKEN=***",
        "whole API_TOKEN=***",
        "split API_TOKEN=***",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line:?} missing from:\n{stdout}");
    }
    assert!(stderr.contains("stderr API_TOKEN=***"), "{stderr}");
    assert_eq!(run["result"], json!({"API_TOKEN": "***"}), "the result is masked too");
    // Masking is a safety net, not a boundary: an encoded value passes.
    let encoded = format!("base64 API_TOKEN={}", base64(WASM_VALUE.as_bytes()));
    assert!(stdout.contains(&encoded), "{stdout}");

    // The shell job: its environment, masked whole and split across writes.
    let run = run_to_end(&admin, "script").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let (stdout, stderr) = streams(&admin, &run).await;
    assert!(stdout.lines().any(|l| l == "whole ***"), "{stdout}");
    assert!(stdout.lines().any(|l| l == "split ***"), "{stdout}");
    assert!(stdout.contains(&base64(SHELL_VALUE.as_bytes())), "{stdout}");
    assert_eq!(stderr.trim(), "err ***");

    // The HTTP job: the service gets the value; the run's output (the
    // service repeating it) does not keep it.
    let run = run_to_end(&operator, "hook").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["secrets"], json!(["http-token"]));
    let got = receiver.requests_to("/echo");
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].header("authorization"),
        Some(format!("Bearer {HTTP_VALUE}").as_str())
    );
    assert_eq!(got[0].body, format!("token={HTTP_VALUE}").into_bytes());
    let (stdout, _) = streams(&operator, &run).await;
    assert!(stdout.contains("authorization: Bearer ***"), "{stdout}");
    assert!(stdout.contains("token=***"), "{stdout}");

    // Viewers see HTTP header names, not values (nor the templates).
    let seen = viewer.get("/api/v1/jobs/hook").await.expect(200);
    assert_eq!(
        seen["kind"]["http"]["headers"],
        json!({"Authorization": "***", "X-Plain": "***"})
    );

    // Now look everywhere for the values: every API answer a client can
    // get, every run record and output chunk, the server's log, and every
    // file of its stores.
    let mut seen: Vec<(String, String)> = Vec::new();
    for api in [&admin, &viewer] {
        for path in [
            "/api/v1/jobs",
            "/api/v1/jobs/probe",
            "/api/v1/jobs/script",
            "/api/v1/jobs/hook",
            "/api/v1/secrets",
            "/api/v1/runs?limit=1000",
            "/api/v1/workers",
            "/api/v1/modules",
            "/metrics",
        ] {
            seen.push((path.to_owned(), api.get(path).await.body.to_string()));
        }
        for job in ["probe", "script", "hook"] {
            for run in api.runs(job).await {
                let id = run["run_id"].as_str().expect("id");
                seen.push((
                    format!("run {id}"),
                    api.get(&format!("/api/v1/runs/{id}")).await.body.to_string(),
                ));
                let output = api.get(&format!("/api/v1/runs/{id}/output?limit=5000")).await;
                seen.push((format!("output of {id}"), output.body.to_string()));
            }
        }
    }
    seen.push(("the server's log".to_owned(), server.log_text()));
    seen.extend(files_under(&server.data_dir().join("data")));
    for (place, text) in &seen {
        for value in VALUES {
            assert!(!text.contains(value), "{value} appears in {place}");
        }
    }
    assert!(
        seen.iter().any(|(_, text)| text.contains("***")),
        "the scan saw the masked output"
    );
}

/// Starts `sandcron dev` on `data` and expects it to refuse to start; returns its stderr.
fn refused_start(data: &Path) -> String {
    let output = Command::new(BIN)
        .args(["dev", "--listen", "127.0.0.1:0", "--no-demo", "--data"])
        .arg(data)
        .stdin(Stdio::null())
        .output()
        .expect("run sandcron dev");
    assert!(!output.status.success(), "dev started with a bad key file");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn sandcron_cli(server: &Dev, args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    use std::io::Write as _;
    let mut child = Command::new(BIN)
        .args(args)
        .env("SANDCRON_SERVER", &server.base)
        .env_remove("SANDCRON_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sandcron");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    let output = child.wait_with_output().expect("wait");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_file_is_checked_at_start_and_rotates_with_rekey() {
    let mut server = dev(&[]);
    let data = server.data_dir().join("data");
    let key_path = data.join("secrets.key");
    // Serving starts after the key file is made (or checked).
    server.api().get("/api/v1/secrets").await.expect(200);
    let original = std::fs::read_to_string(&key_path).expect("dev made a key file");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    // Through the CLI: the value from stdin (never argv), its trailing newline dropped.
    let (code, out, err) = sandcron_cli(&server, &["secret", "set", "report-token"], b"first-value-123\n");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("secret report-token stored"), "{out}");
    let digest = server.api().upload_module(built_guest("config-probe")).await;
    server
        .api()
        .put(
            "/api/v1/jobs/report",
            &json!({"schedule": "0 0 1 1 *", "secrets": {"T": "report-token"},
                "kind": {"wasm": {"module": digest, "args": ["get", "T"]}}}),
        )
        .await
        .expect(201);
    let (_, listed, _) = sandcron_cli(&server, &["secret", "ls"], b"");
    assert!(listed.contains("report-token") && listed.contains("report"), "{listed}");
    assert!(!listed.contains("first-value-123"), "{listed}");
    let (code, _, err) = sandcron_cli(&server, &["secret", "rm", "report-token"], b"");
    assert_eq!(code, 1);
    assert!(err.contains("used by jobs: report"), "{err}");

    // The value a run gets, before and after replacing it.
    let run = run_to_end(&server.api(), "report").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let (stdout, _) = streams(&server.api(), &run).await;
    assert!(stdout.contains("get T=***"), "{stdout}");
    sandcron_cli(&server, &["secret", "set", "report-token"], b"second-value-456");
    server
        .api()
        .put(
            "/api/v1/jobs/report",
            &json!({"schedule": "0 0 1 1 *", "secrets": {"T": "report-token"},
                "kind": {"wasm": {"module": digest, "args": ["get", "T"], "secrets_as_env": true,
                    "config": {"LENGTH_OF_T": "16"}}}}),
        )
        .await
        .expect(200);

    // A wrong key file: refused, naming the problem; an exposed one too.
    server.stop();
    let (_, other_line, _) = sandcron_cli(&server, &["secret", "keygen"], b"");
    std::fs::write(&key_path, &other_line).expect("write key");
    let err = refused_start(&data);
    assert!(err.contains("does not open any of the 1 stored secret(s)"), "{err}");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(&key_path, &original).expect("restore key");
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = refused_start(&data);
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }

    // Rotation: the new key first, the old one still there; rekey; then
    // the old line goes and the secret still opens.
    std::fs::write(&key_path, format!("{other_line}{original}")).expect("rotated key file");
    server.start_again();
    let (code, out, err) = sandcron_cli(&server, &["secret", "rekey"], b"");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 secret(s) sealed again"), "{out}");
    server.stop();
    std::fs::write(&key_path, &other_line).expect("new key only");
    server.start_again();
    let run = run_to_end(&server.api(), "report").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let (stdout, _) = streams(&server.api(), &run).await;
    assert!(stdout.contains("get T=***"), "{stdout}");
    assert!(!stdout.contains("second-value-456"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_can_keep_its_environment_exactly_as_declared() {
    let server = dev(&[]);
    let api = server.api();
    let digest = api.upload_module(built_guest("config-probe")).await;
    api.put(
        "/api/v1/jobs/exact",
        &json!({"schedule": "0 0 1 1 *", "kind": {"wasm": {
            "module": digest, "args": ["env", "get", "SANDCRON_JOB"],
            "env": {"ONLY": "this"}, "context_env": false}}}),
    )
    .await
    .expect(201);
    let run = run_to_end(&api, "exact").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let (stdout, _) = streams(&api, &run).await;
    let env: Vec<&str> = stdout.lines().filter(|l| l.starts_with("env ")).collect();
    assert_eq!(env, ["env ONLY=this"], "{stdout}");
    assert!(stdout.lines().any(|l| l == "get SANDCRON_JOB=exact"), "{stdout}");
}
