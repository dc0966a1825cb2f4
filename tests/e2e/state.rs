//! Jobs' key-value state (`wasi:keyvalue`) end to end, with the `kv-probe`
//! test guest (`tests/guests/kv-probe`, built by scripts/build-guests.sh):
//! a counter kept across runs, the API and CLI over it, isolation between
//! jobs, quotas the guest sees, roles, state deleted with its job, `sandcron
//! try`'s in-memory state, and — in a real cluster — the fence that keeps a
//! run superseded while its worker was frozen from overwriting newer state.

use std::process::Command;
use std::time::Duration;

use sandcron_tests::cluster::WorkerProcess;
use sandcron_tests::{Api, wait_for};
use serde_json::{Value, json};

use crate::cluster::{Stores, wait_for_workers};
use crate::{BIN, built_guest, dev, lines, tokens_config};

/// A WASM job running `kv-probe` with `args`, never on its own schedule.
fn probe_job(digest: &str, args: &[&str]) -> Value {
    json!({"schedule": "0 0 1 1 *", "overlap": "allow", "kind": {"wasm": {"module": digest, "args": args}}})
}

/// Runs `job` now and waits for that run (not an earlier one) to end;
/// returns its record.
async fn run_once(api: &Api, job: &str) -> Value {
    let requested = api.post(&format!("/api/v1/jobs/{job}/run")).await.expect(202);
    let run_id = requested["run_id"].as_str().expect("run id").to_owned();
    wait_for(
        &format!("run {run_id} of {job} to end"),
        Duration::from_secs(60),
        || async {
            let reply = api.get(&format!("/api/v1/runs/{run_id}")).await;
            (reply.status == 200 && reply.body["status"] != "running").then_some(reply.body)
        },
    )
    .await
}

/// A state value as raw bytes: (status, content type, body).
async fn raw_value(base: &str, token: Option<&str>, job: &str, key: &str) -> (u16, String, Vec<u8>) {
    let client = sandcron_tests::http_client().build().expect("client");
    let mut request = client.get(format!("{base}/api/v1/jobs/{job}/state/{key}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, kind, response.bytes().await.expect("body").to_vec())
}

/// `sandcron ARGS` against `server`: (exit status, stdout bytes, stderr).
fn sandcron(args: &[&str], server: &str) -> (i32, Vec<u8>, String) {
    let output = crate::cli_output(args, Some(server));
    (
        output.status.code().unwrap_or(-1),
        output.stdout,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_counter_lives_across_runs_and_operators_list_read_and_delete_it() {
    let dev = dev(&[]);
    let api = dev.api();
    let digest = api.upload_module(built_guest("kv-probe")).await;
    api.put(
        "/api/v1/jobs/counter",
        &probe_job(&digest, &["incr", "count", "1", "get", "count"]),
    )
    .await
    .expect(201);
    let first = run_once(&api, "counter").await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let second = run_once(&api, "counter").await;
    assert_eq!(second["status"], "succeeded", "{second}");
    let output = lines(&api, &second).await;
    assert!(output.contains(&"incr count = 2".to_owned()), "{output:?}");
    assert!(output.contains(&"get count = 2".to_owned()), "{output:?}");
    assert_eq!(output[0], format!("probe fence={}", second["fence"]));

    // The API: keys with sizes, totals, the fence of the run that owns it.
    let state = api.get("/api/v1/jobs/counter/state").await.expect(200);
    assert_eq!(state["job"], "counter");
    assert_eq!(state["fence"], second["fence"], "{state}");
    assert_eq!(state["total"], json!({"keys": 1, "bytes": 6}), "\"count\" and \"2\"");
    assert_eq!(state["keys"][0]["key"], "count");
    assert_eq!(state["keys"][0]["size"], 1);
    assert!(state["keys"][0]["revision"].as_i64().is_some_and(|r| r > 0));
    assert_eq!(
        state["quota"],
        json!({"max_keys": 128, "max_value_bytes": 65536, "max_job_bytes": 65536})
    );
    let (status, kind, body) = raw_value(&dev.base, None, "counter", "count").await;
    assert_eq!(
        (status, kind.as_str(), body.as_slice()),
        (200, "application/octet-stream", &b"2"[..])
    );

    // The CLI: ls, get (raw bytes on stdout), rm.
    let (code, out, err) = sandcron(&["state", "ls", "counter"], &dev.base);
    assert_eq!(code, 0, "{err}");
    let out = String::from_utf8(out).expect("utf-8");
    assert!(out.lines().any(|l| l.starts_with("count ")), "{out}");
    assert!(out.contains("1 keys, 6 bytes"), "{out}");
    assert!(out.contains(&format!("fence {}", second["fence"])), "{out}");
    let (code, out, err) = sandcron(&["state", "get", "counter", "count"], &dev.base);
    assert_eq!((code, out.as_slice()), (0, &b"2"[..]), "{err}");
    let (code, _, err) = sandcron(&["state", "get", "counter", "nope"], &dev.base);
    assert_eq!(code, 1);
    assert!(err.contains("job counter has no state key \"nope\""), "{err}");
    let (code, _, err) = sandcron(&["state", "rm", "counter"], &dev.base);
    assert_ne!(code, 0);
    assert!(err.contains("--all"), "{err}");
    let (code, out, err) = sandcron(&["state", "rm", "counter", "count"], &dev.base);
    assert_eq!(code, 0, "{err}");
    assert!(String::from_utf8_lossy(&out).contains("deleted"));
    api.get("/api/v1/jobs/counter/state/count").await.expect_error(
        404,
        "not_found",
        "job counter has no state key \"count\"",
    );
    api.delete("/api/v1/jobs/counter/state/count")
        .await
        .expect_error(404, "not_found", "no state key");
    api.get("/api/v1/jobs/nope/state")
        .await
        .expect_error(404, "not_found", "job nope does not exist");
    api.get("/api/v1/jobs/counter/state/%20")
        .await
        .expect_error(404, "not_found", "no state key \" \"");

    // Deleted, the counter starts again; `rm --all` empties the state.
    let third = run_once(&api, "counter").await;
    assert!(lines(&api, &third).await.contains(&"incr count = 1".to_owned()));
    let (code, out, err) = sandcron(&["state", "rm", "counter", "--all"], &dev.base);
    assert_eq!(code, 0, "{err}");
    assert!(String::from_utf8_lossy(&out).contains("1 keys of job counter deleted"));
    let state = api.get("/api/v1/jobs/counter/state").await.expect(200);
    assert_eq!(
        (state["keys"].clone(), state["total"]["keys"].clone()),
        (json!([]), json!(0))
    );
    assert_eq!(state["fence"], third["fence"], "the fence stays");

    // Deleting the job deletes its state: a new job of the same name starts empty.
    run_once(&api, "counter").await;
    api.delete("/api/v1/jobs/counter").await.expect_one_of(&[200, 204]);
    api.get("/api/v1/jobs/counter/state")
        .await
        .expect_error(404, "not_found", "job counter does not exist");
    api.put("/api/v1/jobs/counter", &probe_job(&digest, &["list"]))
        .await
        .expect(201);
    let state = api.get("/api/v1/jobs/counter/state").await.expect(200);
    assert_eq!(
        (state["keys"].clone(), state["fence"].clone()),
        (json!([]), Value::Null)
    );
    let fresh = run_once(&api, "counter").await;
    assert!(
        lines(&api, &fresh)
            .await
            .contains(&"list =  (0 keys, 1 pages)".to_owned())
    );
}

#[tokio::test]
async fn a_job_never_sees_another_job_s_state() {
    let dev = dev(&[]);
    let api = dev.api();
    let digest = api.upload_module(built_guest("kv-probe")).await;
    api.put(
        "/api/v1/jobs/victim",
        &probe_job(&digest, &["set", "secret", "hunter2"]),
    )
    .await
    .expect(201);
    assert_eq!(run_once(&api, "victim").await["status"], "succeeded");
    let long = "k".repeat(257);
    let thief_args = [
        "get",
        "../victim/secret",
        "get",
        "../victim/k/secret",
        "get",
        "../../kv/victim/k/secret",
        "get",
        "/kv/victim/k/secret",
        "set",
        "../victim/k/secret",
        "pwned",
        "get",
        "../victim/k/secret",
        "open",
        "victim",
        "get",
        "",
        "get",
        &long,
        "list",
    ];
    api.put("/api/v1/jobs/thief", &probe_job(&digest, &thief_args))
        .await
        .expect(201);
    let run = run_once(&api, "thief").await;
    assert_eq!(run["status"], "failed", "the refused calls fail the probe: {run}");
    let output = lines(&api, &run).await;
    for expected in [
        "get ../victim/secret = (none)",
        "get ../victim/k/secret = (none)",
        "get ../../kv/victim/k/secret = (none)",
        "get /kv/victim/k/secret = (none)",
        "set ../victim/k/secret = ok",
        "get ../victim/k/secret = pwned",
        "open victim error: no-such-store",
        "get  error: invalid key: the key is empty",
        "list = ../victim/k/secret (1 keys, 1 pages)",
    ] {
        assert!(output.contains(&expected.to_owned()), "{expected:?} not in {output:#?}");
    }
    assert!(
        output.contains(&format!(
            "get {long} error: invalid key: the key is 257 bytes long; the limit is 256"
        )),
        "{output:#?}"
    );
    // The victim's state is untouched; what the thief wrote is its own.
    let victim = api.get("/api/v1/jobs/victim/state").await.expect(200);
    assert_eq!(victim["keys"].as_array().map(Vec::len), Some(1), "{victim}");
    let (_, _, secret) = raw_value(&dev.base, None, "victim", "secret").await;
    assert_eq!(secret, b"hunter2");
    let thief = api.get("/api/v1/jobs/thief/state").await.expect(200);
    assert_eq!(thief["keys"][0]["key"], "../victim/k/secret");
    let (status, _, planted) = raw_value(&dev.base, None, "thief", "..%2Fvictim%2Fk%2Fsecret").await;
    assert_eq!((status, planted.as_slice()), (200, &b"pwned"[..]));
}

#[tokio::test]
async fn quota_breaches_are_errors_the_guest_sees() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("quota.toml");
    std::fs::write(
        &config,
        "[worker.state]\nmax_keys = 3\nmax_value_kb = 1\nmax_job_kb = 2\n",
    )
    .expect("config");
    let dev = dev(&["--config", config.to_str().expect("path")]);
    let api = dev.api();
    let digest = api.upload_module(built_guest("kv-probe")).await;
    let big = "v".repeat(1025);
    let args = [
        "fill", "k", "5", "10", "set", "big", &big, "del", "k0", "del", "k1", "del", "k2", "fill", "j", "3", "1000",
        "list",
    ];
    api.put("/api/v1/jobs/greedy", &probe_job(&digest, &args))
        .await
        .expect(201);
    let run = run_once(&api, "greedy").await;
    assert_eq!(run["status"], "failed", "{run}");
    let output = lines(&api, &run).await;
    for expected in [
        "fill k stored 3 error: quota exceeded: the job's state already holds 3 keys, the most it may",
        "set big error: value is 1025 bytes; the limit per value is 1024 bytes",
        "del k0 = ok",
        "fill j stored 2 error: quota exceeded: the job's state would hold 3006 bytes (keys and values); the limit is 2048 bytes",
        "list = j0,j1 (2 keys, 1 pages)",
    ] {
        assert!(output.contains(&expected.to_owned()), "{expected:?} not in {output:#?}");
    }
    let state = api.get("/api/v1/jobs/greedy/state").await.expect(200);
    assert_eq!(state["total"], json!({"keys": 2, "bytes": 2004}));
    assert_eq!(
        state["quota"],
        json!({"max_keys": 3, "max_value_bytes": 1024, "max_job_bytes": 2048})
    );
}

#[tokio::test]
async fn only_operators_reach_a_job_s_state() {
    const VIEWER: &str = "viewer-token-0123456789";
    const OPERATOR: &str = "operator-token-0123456789";
    let dir = tempfile::tempdir().expect("temp dir");
    let config = tokens_config(dir.path(), &[("ro", "viewer", VIEWER), ("ops", "operator", OPERATOR)]);
    let dev = dev(&["--config", &config]);
    let (viewer, operator) = (dev.api_with_token(VIEWER), dev.api_with_token(OPERATOR));
    let digest = operator.upload_module(built_guest("kv-probe")).await;
    operator
        .put("/api/v1/jobs/kept", &probe_job(&digest, &["set", "k", "v"]))
        .await
        .expect(201);
    assert_eq!(run_once(&operator, "kept").await["status"], "succeeded");
    viewer.get("/api/v1/jobs/kept/state").await.expect_error(
        403,
        "forbidden",
        "reading a job's state needs the operator role",
    );
    let (status, _, _) = raw_value(&dev.base, Some(VIEWER), "kept", "k").await;
    assert_eq!(status, 403);
    viewer.delete("/api/v1/jobs/kept/state/k").await.expect_error(
        403,
        "forbidden",
        "deleting a job's state needs the operator role",
    );
    viewer.delete("/api/v1/jobs/kept/state").await.expect(403);
    dev.api().get("/api/v1/jobs/kept/state").await.expect(401);
    operator.get("/api/v1/jobs/kept/state").await.expect(200);
    let (status, _, value) = raw_value(&dev.base, Some(OPERATOR), "kept", "k").await;
    assert_eq!((status, value.as_slice()), (200, &b"v"[..]));
    operator.delete("/api/v1/jobs/kept/state").await.expect(200);
}

#[test]
fn sandcron_try_keeps_state_in_memory_for_one_run() {
    let guest = sandcron_tests::workspace_root().join("target/guests/kv-probe.wasm");
    let guest = guest.to_str().expect("path");
    let run = |args: &[&str]| {
        let output = Command::new(BIN)
            .arg("try")
            .arg(guest)
            .arg("--")
            .args(args)
            .output()
            .expect("try");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (code, out) = run(&["incr", "count", "5", "incr", "count", "1", "set", "a", "b", "list"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("incr count = 6\n"), "{out}");
    assert!(out.contains("list = a,count (2 keys, 1 pages)\n"), "{out}");
    // Nothing outlives the process.
    let (_, out) = run(&["get", "count"]);
    assert!(out.contains("get count = (none)\n"), "{out}");
    let help = Command::new(BIN).args(["try", "--help"]).output().expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("wasi:keyvalue"), "{help}");
    assert!(help.contains("lost when it exits"), "{help}");
}

/// The fence in a real cluster: a run whose worker froze past its lease
/// (SIGSTOP) while a newer run of the job, on another worker, wrote the
/// state cannot overwrite it when it wakes up (SIGCONT). The old run waits
/// on a key the new run writes, so the order is certain, not timed.
#[tokio::test]
async fn a_run_superseded_while_its_worker_was_frozen_cannot_overwrite_newer_state() {
    let stores = Stores::start();
    let env = stores.env("kv-fence");
    let master = env.master("master", "");
    let api = master.api();
    let lease = "lease_ttl_s = 3";
    let w1: WorkerProcess = env.worker("w1", &format!("{lease}\nlabels = {{ zone = \"a\" }}"));
    let _w2: WorkerProcess = env.worker("w2", &format!("{lease}\nlabels = {{ zone = \"b\" }}"));
    wait_for_workers(&api, 2).await;
    let digest = api.upload_module(built_guest("kv-probe")).await;
    // The old run: on w1, writes, then waits for the newer run's signal and
    // tries to write again.
    let mut old_job = probe_job(
        &digest,
        &["set", "owner", "old", "wait", "go", "set", "owner", "zombie"],
    );
    old_job["selector"] = json!({"zone": "a"});
    api.put("/api/v1/jobs/fenced", &old_job).await.expect(201);
    let requested = api.post("/api/v1/jobs/fenced/run").await.expect(202);
    let old_id = requested["run_id"].as_str().expect("run id").to_owned();
    wait_for("the old run to write and wait", Duration::from_secs(60), || async {
        let state = api.get("/api/v1/jobs/fenced/state").await;
        (state.status == 200 && state.body["keys"].as_array().is_some_and(|k| !k.is_empty())).then_some(())
    })
    .await;
    let old_fence = api.get("/api/v1/jobs/fenced/state").await.expect(200)["fence"].clone();

    // w1 freezes past its lease; the job moves to w2, where a newer run
    // writes the key and the signal.
    w1.proc.pause();
    wait_for_workers(&api, 1).await;
    let mut new_job = probe_job(&digest, &["set", "owner", "new", "set", "go", "1"]);
    new_job["selector"] = json!({"zone": "b"});
    api.put("/api/v1/jobs/fenced", &new_job).await.expect(200);
    let newer = run_once(&api, "fenced").await;
    assert_eq!(
        (newer["status"].as_str(), newer["worker"].as_str()),
        (Some("succeeded"), Some("w2")),
        "{newer}"
    );
    assert!(
        newer["fence"].as_i64() > old_fence.as_i64(),
        "{newer} after {old_fence}"
    );

    // w1 wakes up: its run sees the signal and is refused.
    w1.proc.resume();
    let refusal = format!(
        "set owner error: superseded by a newer run (fence {}); this run (fence {old_fence}) may no longer write the job's state",
        newer["fence"]
    );
    wait_for("the old run's refused write", Duration::from_secs(60), || async {
        let output = api
            .get(&format!("/api/v1/runs/{old_id}/output?limit=5000"))
            .await
            .expect(200);
        let text: String = output["chunks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|chunk| chunk["data"].as_str())
            .collect();
        text.lines().any(|line| line == refusal).then_some(())
    })
    .await;
    let (status, _, owner) = raw_value(&master.base, None, "fenced", "owner").await;
    assert_eq!(
        (status, owner.as_slice()),
        (200, &b"new"[..]),
        "the newer run's value stays"
    );
    let state = api.get("/api/v1/jobs/fenced/state").await.expect(200);
    assert_eq!(state["fence"], newer["fence"]);
    let old = wait_for("the old run to end", Duration::from_secs(60), || async {
        let reply = api.get(&format!("/api/v1/runs/{old_id}")).await;
        (reply.status == 200 && reply.body["status"] == "failed").then_some(reply.body)
    })
    .await;
    assert_eq!(old["worker"], "w1");
}
