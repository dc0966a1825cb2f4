//! Integrations end to end against `sandcron dev`: HTTP callback jobs (with
//! a local HTTP server as the service), async results, dependent jobs,
//! broadcast on one worker, alerts by webhook (the same local server) and
//! by email (a real SMTP server, aiosmtpd, over STARTTLS).

use std::time::Duration;

use sandcron_tests::receiver::Receiver;
use sandcron_tests::smtp::SmtpSink;
use sandcron_tests::{Api, Dev, wait_for};
use serde_json::{Value, json};

use crate::{BIN, dev, shell_job};

const WAIT: Duration = Duration::from_secs(30);

/// An http job body that runs only when asked (yearly schedule).
fn http_job(url: &str, extra: Value) -> Value {
    let mut kind = json!({"url": url});
    for (key, value) in extra.as_object().expect("object") {
        kind[key] = value.clone();
    }
    json!({"schedule": "@yearly", "kind": {"http": kind}})
}

/// Runs `job` now and waits for the run to end; returns its record.
async fn run_to_end(api: &Api, job: &str) -> Value {
    let before = api.runs(job).await.len();
    api.post(&format!("/api/v1/jobs/{job}/run")).await.expect(202);
    wait_for(&format!("a run of {job} to end"), WAIT, || async {
        let runs = api.runs(job).await;
        (runs.len() > before && runs[0]["status"] != "running").then(|| runs[0].clone())
    })
    .await
}

fn text_of(output: &[(String, String)]) -> String {
    output.iter().map(|(_, text)| text.as_str()).collect()
}

/// `sandcron dev` with `config` (TOML) as its configuration file.
fn dev_with_config(config: &str) -> (Dev, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sandcron.toml");
    std::fs::write(&path, config).expect("config");
    (Dev::start(BIN, &["--config", path.to_str().expect("utf-8")]), dir)
}

#[tokio::test]
async fn an_http_job_calls_its_url_and_records_the_response() {
    let service = Receiver::start().await;
    let dev = dev(&[]);
    let api = dev.api();
    let job = http_job(
        &service.url("/hook?from=sandcron"),
        json!({"method": "POST", "headers": {"Authorization": "Bearer abc", "Content-Type": "application/json"},
               "body": "{\"hello\": 1}"}),
    );
    api.put("/api/v1/jobs/notify", &job).await.expect(201);
    let run = run_to_end(&api, "notify").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["kind"], "http");
    let got = service.requests_to("/hook");
    assert_eq!(got.len(), 1, "{got:?}");
    let request = &got[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.uri, "/hook?from=sandcron");
    assert_eq!(request.body, br#"{"hello": 1}"#);
    assert_eq!(request.header("authorization"), Some("Bearer abc"));
    assert_eq!(request.header("x-sandcron-job"), Some("notify"));
    assert_eq!(request.header("x-sandcron-run-id"), run["run_id"].as_str());
    assert_eq!(request.header("x-sandcron-trigger"), Some("manual"));
    assert_eq!(request.header("x-sandcron-attempt"), Some("1"));
    assert!(request.header("x-sandcron-fence").is_some());
    assert!(
        request.header("x-sandcron-run-token").is_none(),
        "a sync job gets no token"
    );
    assert!(
        request
            .header("user-agent")
            .is_some_and(|ua| ua.starts_with("sandcron/"))
    );
    // The response is the run's output: status line, headers, body.
    let output = text_of(&api.output(run["run_id"].as_str().unwrap()).await);
    assert!(
        output.contains(&format!("> POST {}", service.url("/hook?from=sandcron"))),
        "{output}"
    );
    assert!(output.contains("< HTTP/1.1 200 OK"), "{output}");
    assert!(output.contains("< x-receiver: sandcron-tests"), "{output}");
    assert!(output.ends_with("\n\nok\n"), "{output}");
}

#[tokio::test]
async fn http_jobs_fail_on_unexpected_statuses_time_out_and_retry() {
    let service = Receiver::start().await;
    let dev = dev(&[]);
    let api = dev.api();
    // A 500 where 2xx is expected fails; an expected 500 succeeds.
    api.put("/api/v1/jobs/five", &http_job(&service.url("/status/500"), json!({})))
        .await
        .expect(201);
    let run = run_to_end(&api, "five").await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"], "HTTP 500 Internal Server Error; expected 2xx");
    api.put(
        "/api/v1/jobs/five-ok",
        &http_job(&service.url("/status/500"), json!({"expect_status": [500, 503]})),
    )
    .await
    .expect(201);
    assert_eq!(run_to_end(&api, "five-ok").await["status"], "succeeded");
    // A slow service: the job's timeout ends the run.
    api.put(
        "/api/v1/jobs/slow",
        &http_job(&service.url("/slow/20000"), json!({"timeout_s": 1})),
    )
    .await
    .expect(201);
    let run = run_to_end(&api, "slow").await;
    assert_eq!(run["status"], "timed_out");
    assert!(run["error"].as_str().unwrap().contains("within 1 s"), "{run}");
    // A big body is cut at output_kb.
    api.put(
        "/api/v1/jobs/big",
        &http_job(&service.url("/big/100000"), json!({"output_kb": 4})),
    )
    .await
    .expect(201);
    let run = run_to_end(&api, "big").await;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["truncated"], true);
    assert!(run["output_bytes"].as_u64().unwrap() <= 4 * 1024, "{run}");
    // A flaky service is retried. Manual runs are not, so the job fires
    // once by schedule, a few seconds from now (7 fields: with the year).
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3);
    let at = at.to_zoned(jiff::tz::TimeZone::UTC);
    let mut flaky = http_job(&service.url("/flaky/2"), json!({}));
    flaky["schedule"] = json!(format!(
        "{} {} {} {} {} * {}",
        at.second(),
        at.minute(),
        at.hour(),
        at.day(),
        at.month(),
        at.year()
    ));
    flaky["retry"] = json!({"max": 3, "backoff_s": 1});
    api.put("/api/v1/jobs/flaky", &flaky).await.expect(201);
    let runs = wait_for("the flaky service to be called three times", WAIT, || async {
        let runs = api.runs("flaky").await;
        runs.iter()
            .any(|r| r["status"] == "succeeded" && r["attempt"] == 3)
            .then_some(runs)
    })
    .await;
    let success = runs
        .iter()
        .find(|r| r["status"] == "succeeded" && r["attempt"] == 3)
        .unwrap();
    let attempts: Vec<&Value> = runs.iter().filter(|r| r["tick"] == success["tick"]).collect();
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert_eq!(service.requests_to("/flaky/2").len(), 3);
    assert!(attempts.iter().any(|r| r["attempt"] == 1 && r["status"] == "failed"));
    assert!(attempts.iter().any(|r| r["attempt"] == 2 && r["trigger"] == "retry"));
}

#[tokio::test]
async fn the_allow_list_keeps_http_jobs_away_from_what_it_does_not_name() {
    let service = Receiver::start().await;
    let (dev, _dir) = dev_with_config("[worker]\nhttp_allow = [\"public\"]\n");
    let api = dev.api();
    api.put("/api/v1/jobs/local", &http_job(&service.url("/x"), json!({})))
        .await
        .expect(201);
    let run = run_to_end(&api, "local").await;
    assert_eq!(run["status"], "failed");
    let error = run["error"].as_str().unwrap();
    assert!(error.contains("destination not allowed"), "{error}");
    assert!(error.contains("loopback"), "{error}");
    // By name too: localhost resolves to loopback, which is checked.
    let by_name = service.url("/x").replace("127.0.0.1", "localhost");
    api.put("/api/v1/jobs/by-name", &http_job(&by_name, json!({})))
        .await
        .expect(201);
    let run = run_to_end(&api, "by-name").await;
    assert_eq!(run["status"], "failed");
    assert!(run["error"].as_str().unwrap().contains("not allowed"), "{run}");
    // Cloud metadata is refused even where every address class is allowed.
    let (dev2, _dir2) = dev_with_config("[worker]\nhttp_allow = [\"*\"]\n");
    let api2 = dev2.api();
    api2.put(
        "/api/v1/jobs/metadata",
        &http_job("http://169.254.169.254/latest/meta-data/", json!({"timeout_s": 5})),
    )
    .await
    .expect(201);
    let run = run_to_end(&api2, "metadata").await;
    assert_eq!(run["status"], "failed");
    assert!(run["error"].as_str().unwrap().contains("link-local"), "{run}");
    assert!(
        service.requests().is_empty(),
        "the service was reached: {:?}",
        service.requests()
    );
    // A worker with an empty allow-list runs no HTTP jobs, and the job says why.
    let (dev3, _dir3) = dev_with_config("[worker]\nhttp_allow = []\n");
    let api3 = dev3.api();
    api3.put("/api/v1/jobs/nowhere", &http_job("https://example.com/", json!({})))
        .await
        .expect(201);
    let view = wait_for("the job to be unschedulable", WAIT, || async {
        let view = api3.get("/api/v1/jobs/nowhere").await.expect(200);
        (view["status"] == "unschedulable").then_some(view)
    })
    .await;
    assert!(view["reason"].as_str().unwrap().contains("http_allow"), "{view}");
    api3.post("/api/v1/jobs/nowhere/run").await.expect(409);
}

#[tokio::test]
async fn bad_http_and_integration_settings_are_refused_with_the_field() {
    let dev = dev(&[]);
    let api = dev.api();
    let cases = [
        (http_job("ftp://example.com/x", json!({})), "kind.http.url", "scheme"),
        (http_job("not a url", json!({})), "kind.http.url", ""),
        (
            http_job("http://example.com", json!({"method": "BREW"})),
            "kind.http.method",
            "BREW",
        ),
        (
            http_job("http://example.com", json!({"headers": {"X-Sandcron-Job": "x"}})),
            "kind.http.headers.X-Sandcron-Job",
            "reserved",
        ),
        (
            http_job("http://example.com", json!({"headers": {"Bad Header": "x"}})),
            "kind.http.headers.Bad Header",
            "header names",
        ),
        (
            http_job("http://example.com", json!({"headers": {"X-Ok": "a\r\nInjected: 1"}})),
            "kind.http.headers.X-Ok",
            "control characters",
        ),
        (
            http_job("http://example.com", json!({"expect_status": [99]})),
            "kind.http.expect_status[0]",
            "between",
        ),
        (
            json!({"schedule": "@daily", "kind": {"shell": {"command": "true"}}, "result_timeout_s": 10}),
            "result_timeout_s",
            "async",
        ),
        (
            json!({"schedule": "@daily", "kind": {"shell": {"command": "true"}}, "on_success": ["nope"]}),
            "on_success[0]",
            "no job named nope",
        ),
        (
            json!({"schedule": "@daily", "kind": {"shell": {"command": "true"}}, "broadcast": true, "on_failure": ["x"]}),
            "on_failure",
            "broadcast",
        ),
        (
            json!({"schedule": "@daily", "kind": {"shell": {"command": "true"}}, "alerts": {"on": ["succeeded"], "channels": ["ops"]}}),
            "alerts.on[0]",
            "not an alertable status",
        ),
        (
            json!({"schedule": "@daily", "kind": {"shell": {"command": "true"}}, "alerts": {"failure_rate": {"threshold": 2}, "channels": ["ops"]}}),
            "alerts.failure_rate.threshold",
            "above 0",
        ),
    ];
    for (body, field, message) in cases {
        let error = api.put("/api/v1/jobs/bad", &body).await.expect(422);
        assert_eq!(error["error"]["field"], field, "{body}: {error}");
        assert!(
            error["error"]["message"].as_str().unwrap().contains(message),
            "{body}: {error}"
        );
    }
    // Unknown fields of the http kind are refused, naming the field.
    let error = api
        .put(
            "/api/v1/jobs/bad",
            &http_job("http://example.com", json!({"colour": "red"})),
        )
        .await
        .expect(422);
    assert_eq!(error["error"]["field"], "kind.http.colour", "{error}");
    assert!(
        error["error"]["message"].as_str().unwrap().contains("unknown field"),
        "{error}"
    );
}

#[tokio::test]
async fn an_async_job_waits_for_its_reported_result() {
    let service = Receiver::start().await;
    let dev = dev(&[]);
    let api = dev.api();
    let mut job = http_job(&service.url("/start-export"), json!({"method": "POST"}));
    job["completion"] = json!("async");
    job["result_timeout_s"] = json!(120);
    api.put("/api/v1/jobs/export", &job).await.expect(201);
    api.post("/api/v1/jobs/export/run").await.expect(202);
    // The service is called with the run's token and where to report.
    let call = wait_for("the service to be called", WAIT, || async {
        service.requests_to("/start-export").into_iter().next()
    })
    .await;
    let token = call.header("x-sandcron-run-token").expect("token").to_owned();
    let result_url = call.header("x-sandcron-result-url").expect("result url").to_owned();
    let run_id = call.header("x-sandcron-run-id").expect("run id").to_owned();
    assert!(token.starts_with("scr_") && token.len() > 60, "{token}");
    assert_eq!(result_url, format!("{}/api/v1/runs/{run_id}/result", dev.base));
    // The call has ended, but the run waits, and says until when.
    let run = wait_for("the run to wait for its report", WAIT, || async {
        let reply = api.get(&format!("/api/v1/runs/{run_id}")).await;
        (reply.status == 200 && reply.body["result_due"].is_string()).then(|| reply.expect(200))
    })
    .await;
    assert_eq!(run["status"], "running", "{run}");
    let started: jiff::Timestamp = run["started_at"].as_str().unwrap().parse().unwrap();
    let due: jiff::Timestamp = run["result_due"].as_str().unwrap().parse().unwrap();
    let wait = due.duration_since(started);
    assert!(
        wait >= jiff::SignedDuration::from_secs(120) && wait < jiff::SignedDuration::from_secs(180),
        "result_timeout_s 120 from the call's end: {run}"
    );
    // The job view lists the run, but not its token's hash.
    let view = api.get("/api/v1/jobs/export").await.expect(200);
    assert_eq!(view["running"][0]["run_id"], run_id.as_str(), "{view}");
    assert!(view["running"][0].get("result_token_sha256").is_none(), "{view}");
    let http = sandcron_tests::http_client().build().unwrap();
    let post = |token: Option<&str>, body: Value| {
        let mut request = http.post(&result_url).json(&body);
        if let Some(token) = token {
            request = request.header("x-sandcron-run-token", token);
        }
        request.send()
    };
    let body = json!({"status": "succeeded", "result": {"rows": 42}, "output": "exported 42 rows\n"});
    let missing = post(None, body.clone()).await.unwrap();
    assert_eq!(missing.status(), 401);
    let wrong = post(Some("scr_wrong"), body.clone()).await.unwrap();
    assert_eq!(wrong.status(), 403);
    let bad_status = post(Some(&token), json!({"status": "running"})).await.unwrap();
    assert_eq!(bad_status.status(), 422);
    // The token may also come in the body.
    let mut with_token = body.clone();
    with_token["token"] = json!(token);
    let accepted = post(None, with_token).await.unwrap();
    assert_eq!(accepted.status(), 202, "{:?}", accepted.text().await);
    let run = wait_for("the run to end with the report", WAIT, || async {
        let run = api.get(&format!("/api/v1/runs/{run_id}")).await.expect(200);
        (run["status"] != "running").then_some(run)
    })
    .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(run.get("result_due").is_none(), "only while waiting: {run}");
    assert_eq!(run["result"], json!({"rows": 42}));
    let output = text_of(&api.output(&run_id).await);
    assert!(output.contains("< HTTP/1.1 200 OK"), "{output}");
    assert!(output.ends_with("exported 42 rows\n"), "{output}");
    // A report for a run that has ended is refused. (The final record is
    // written before the run's entry goes, so wait for the entry too.)
    wait_for("the run's entry to go", WAIT, || async {
        let view = api.get("/api/v1/jobs/export").await.expect(200);
        view["running"].as_array().is_some_and(Vec::is_empty).then_some(())
    })
    .await;
    let late = post(Some(&token), body).await.unwrap();
    assert_eq!(late.status(), 404);
    // A sync run does not take reports.
    api.put("/api/v1/jobs/sleeper", &shell_job("@yearly", "sleep 30"))
        .await
        .expect(201);
    api.post("/api/v1/jobs/sleeper/run").await.expect(202);
    let sleeper = wait_for("the sleeper to run", WAIT, || async {
        let runs = api.runs("sleeper").await;
        runs.first().filter(|r| r["status"] == "running").cloned()
    })
    .await;
    let url = format!(
        "{}/api/v1/runs/{}/result",
        dev.base,
        sleeper["run_id"].as_str().unwrap()
    );
    let sync = http
        .post(&url)
        .header("x-sandcron-run-token", "scr_x")
        .json(&json!({"status": "succeeded"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sync.status(), 409);
    api.post("/api/v1/jobs/sleeper/kill").await.expect(202);
}

#[tokio::test]
async fn an_async_run_without_a_report_times_out_and_a_failed_report_fails_it() {
    let dev = dev(&[]);
    let api = dev.api();
    // A shell job gets its token and result URL in the environment.
    let mut job = shell_job(
        "@yearly",
        "echo \"token=$(printf %s \"$SANDCRON_RUN_TOKEN\" | cut -c1-4) url=$SANDCRON_RESULT_URL\"",
    );
    job["completion"] = json!("async");
    job["result_timeout_s"] = json!(2);
    api.put("/api/v1/jobs/silent", &job).await.expect(201);
    let run = run_to_end(&api, "silent").await;
    assert_eq!(run["status"], "timed_out", "{run}");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("no result was reported within 2 s"),
        "{run}"
    );
    let run_id = run["run_id"].as_str().unwrap();
    let output = text_of(&api.output(run_id).await);
    assert_eq!(
        output,
        format!("token=scr_ url={}/api/v1/runs/{run_id}/result\n", dev.base)
    );
    // A reported failure ends the run failed, with the reported error.
    let mut job = shell_job("@yearly", "echo \"$SANDCRON_RUN_TOKEN\" > \"$TOKEN_FILE\"");
    let token_file = dev.data_dir().join("token");
    job["kind"]["shell"]["env"] = json!({"TOKEN_FILE": token_file.to_str().unwrap()});
    job["completion"] = json!("async");
    api.put("/api/v1/jobs/reported", &job).await.expect(201);
    api.post("/api/v1/jobs/reported/run").await.expect(202);
    let token = wait_for("the token file", WAIT, || async {
        std::fs::read_to_string(&token_file)
            .ok()
            .filter(|t| t.ends_with('\n'))
            .map(|t| t.trim().to_owned())
    })
    .await;
    let running = wait_for("the run", WAIT, || async {
        api.runs("reported").await.first().cloned()
    })
    .await;
    let url = format!(
        "{}/api/v1/runs/{}/result",
        dev.base,
        running["run_id"].as_str().unwrap()
    );
    // Reported with the guest SDK's client helper, as a Rust service would.
    let report = sandcron_guest::client::Report::failed("export quota exceeded").with_exit_code(3);
    let (url2, token2, report2) = (url.clone(), token.clone(), report.clone());
    tokio::task::spawn_blocking(move || sandcron_guest::client::report_result(&url2, &token2, &report2))
        .await
        .unwrap()
        .expect("reported");
    let run = wait_for("the reported failure", WAIT, || async {
        let runs = api.runs("reported").await;
        runs.first().filter(|r| r["status"] != "running").cloned()
    })
    .await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["exit_code"], 3);
    assert_eq!(run["error"], "export quota exceeded");
    // Once the run has ended, a report is refused and says why: 409 (a
    // result was already reported) while the worker is still removing the
    // run's entry, 404 (the run is not running) after; never accepted.
    let refused = tokio::task::spawn_blocking(move || sandcron_guest::client::report_result(&url, &token, &report))
        .await
        .unwrap()
        .expect_err("the run has ended");
    assert!(
        matches!(
            &refused,
            sandcron_guest::client::ReportError::Refused { status: 404 | 409, .. }
        ),
        "{refused}"
    );
}

#[tokio::test]
async fn dependent_jobs_start_on_success_and_on_failure_with_their_parent() {
    let dev = dev(&[]);
    let api = dev.api();
    api.put(
        "/api/v1/jobs/report",
        &shell_job(
            "@yearly",
            "echo \"parent=$SANDCRON_PARENT_JOB/$SANDCRON_PARENT_STATUS\"",
        ),
    )
    .await
    .expect(201);
    api.put(
        "/api/v1/jobs/cleanup",
        &shell_job("@yearly", "echo \"cleaning after $SANDCRON_PARENT_RUN_ID\""),
    )
    .await
    .expect(201);
    let mut extract = shell_job("@yearly", "echo extracted");
    extract["on_success"] = json!(["report"]);
    extract["on_failure"] = json!(["cleanup"]);
    api.put("/api/v1/jobs/extract", &extract).await.expect(201);
    let parent = run_to_end(&api, "extract").await;
    assert_eq!(parent["status"], "succeeded");
    let child = wait_for("the on_success job to run", WAIT, || async {
        let runs = api.runs("report").await;
        runs.first().filter(|r| r["status"] != "running").cloned()
    })
    .await;
    assert_eq!(child["status"], "succeeded");
    assert_eq!(child["trigger"], "dependency");
    assert_eq!(child["parent"]["job"], "extract");
    assert_eq!(child["parent"]["run_id"], parent["run_id"]);
    assert_eq!(child["parent"]["status"], "succeeded");
    let output = text_of(&api.output(child["run_id"].as_str().unwrap()).await);
    assert_eq!(output, "parent=extract/succeeded\n");
    assert!(api.runs("cleanup").await.is_empty(), "on_failure ran after a success");
    // A failure starts on_failure only.
    extract["kind"]["shell"]["command"] = json!("exit 4");
    api.put("/api/v1/jobs/extract", &extract).await.expect(200);
    let failed = run_to_end(&api, "extract").await;
    assert_eq!(failed["status"], "failed");
    let cleanup = wait_for("the on_failure job to run", WAIT, || async {
        let runs = api.runs("cleanup").await;
        runs.first().filter(|r| r["status"] != "running").cloned()
    })
    .await;
    assert_eq!(cleanup["parent"]["run_id"], failed["run_id"]);
    let output = text_of(&api.output(cleanup["run_id"].as_str().unwrap()).await);
    assert_eq!(
        output,
        format!("cleaning after {}\n", failed["run_id"].as_str().unwrap())
    );
    assert_eq!(api.runs("report").await.len(), 1, "on_success ran after a failure");

    // Cycles are refused when saved, naming the cycle.
    let mut report = shell_job("@yearly", "true");
    report["on_success"] = json!(["extract"]);
    let error = api.put("/api/v1/jobs/report", &report).await.expect(422);
    assert_eq!(error["error"]["field"], "on_success");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cycle: report -> extract -> report"),
        "{error}"
    );
    let mut selfish = shell_job("@yearly", "true");
    selfish["on_failure"] = json!(["selfish"]);
    let error = api.put("/api/v1/jobs/selfish", &selfish).await.expect(422);
    assert!(error["error"]["message"].as_str().unwrap().contains("cycle"), "{error}");
    // A job others start cannot be deleted from under them.
    let error = api.delete("/api/v1/jobs/report").await.expect(409);
    assert!(
        error["error"]["message"].as_str().unwrap().contains("extract"),
        "{error}"
    );
}

#[tokio::test]
async fn a_broadcast_job_on_one_worker_runs_one_shard() {
    let dev = dev(&[]);
    let api = dev.api();
    let mut job = shell_job(
        "@yearly",
        "echo \"shard $SANDCRON_SHARD_INDEX of $SANDCRON_SHARD_COUNT\"",
    );
    job["broadcast"] = json!(true);
    api.put("/api/v1/jobs/everywhere", &job).await.expect(201);
    let run = run_to_end(&api, "everywhere").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["shard"]["index"], 0);
    assert_eq!(run["shard"]["count"], 1);
    assert!(run["shard"]["group"].is_string());
    let output = text_of(&api.output(run["run_id"].as_str().unwrap()).await);
    assert_eq!(output, "shard 0 of 1\n");
    // A requested run's tick is a whole millisecond: `since=<tick>` finds it.
    let tick = run["tick"].as_str().unwrap();
    let page = api
        .get(&format!("/api/v1/runs?job=everywhere&since={tick}"))
        .await
        .expect(200);
    assert_eq!(page["runs"][0]["run_id"], run["run_id"], "{page}");
}

#[tokio::test]
async fn alerts_reach_a_signed_webhook_and_an_smtp_server_once_per_interval() {
    let hooks = Receiver::start().await;
    let smtp = SmtpSink::start();
    let secret = "a-webhook-secret-of-some-length";
    let config = format!(
        r#"
[alerts]
min_interval_s = 3600
console_url = "https://cron.example.com"
[alerts.channels.hook]
webhook = {{ url = "{hook}", secret = "{secret}" }}
[alerts.channels.mail]
email = {{ smtp_host = "localhost", smtp_port = {port}, tls = "starttls", ca_file = "{ca}", from = "sandcron <cron@example.com>", to = ["oncall@example.com"] }}
[[alerts.rules]]
on = ["lost"]
channels = ["hook"]
[[alerts.rules]]
failure_rate = {{ threshold = 1.0, window_s = 600, min_runs = 2 }}
channels = ["hook"]
"#,
        hook = hooks.url("/alerts"),
        port = smtp.port,
        ca = smtp.cert_pem.display(),
    );
    let (dev, _dir) = dev_with_config(&config);
    let api = dev.api();
    let mut job = shell_job("@yearly", "echo failing >&2; exit 2");
    job["alerts"] = json!({"on": ["failed"], "channels": ["hook", "mail"]});
    api.put("/api/v1/jobs/nightly", &job).await.expect(201);
    // The console lists the channels; unknown ones are refused.
    let channels = api.get("/api/v1/alerts/channels").await.expect(200);
    assert_eq!(channels, json!({"channels": ["hook", "mail"]}));
    let mut unknown = job.clone();
    unknown["alerts"]["channels"] = json!(["pager"]);
    let error = api.put("/api/v1/jobs/other", &unknown).await.expect(422);
    assert_eq!(error["error"]["field"], "alerts.channels[0]");

    let first = run_to_end(&api, "nightly").await;
    assert_eq!(first["status"], "failed");
    let delivery = wait_for("the webhook alert", WAIT, || async {
        hooks.requests_to("/alerts").into_iter().next()
    })
    .await;
    let alert = delivery.json();
    assert_eq!(alert["event"], "run");
    assert_eq!(alert["job"], "nightly");
    assert_eq!(alert["status"], "failed");
    assert_eq!(alert["run_id"], first["run_id"]);
    assert_eq!(alert["rule"], "job");
    assert_eq!(alert["suppressed"], 0);
    assert_eq!(
        alert["url"],
        format!("https://cron.example.com/#/runs/{}", first["run_id"].as_str().unwrap())
    );
    assert_eq!(delivery.header("x-sandcron-delivery"), alert["id"].as_str());
    // The signature is the documented HMAC of "<timestamp>.<body>".
    let timestamp: i64 = delivery.header("x-sandcron-timestamp").unwrap().parse().unwrap();
    assert_eq!(
        delivery.header("x-sandcron-signature").unwrap(),
        sandcron::alert::signature(secret, timestamp, &delivery.body)
    );
    let mail = wait_for("the email alert", WAIT, || async { smtp.messages().into_iter().next() }).await;
    let subject = mail.header("subject").unwrap_or_default();
    assert!(
        subject.contains("[sandcron] job nightly: run") && subject.contains("failed"),
        "{subject}"
    );
    assert!(mail.header("to").unwrap_or_default().contains("oncall@example.com"));
    assert!(mail.raw.contains(first["run_id"].as_str().unwrap()), "{}", mail.raw);
    // Received over TLS: aiosmtpd requires STARTTLS before MAIL FROM.
    assert!(mail.header("x-peer").is_some(), "{}", mail.raw);

    // More failures within the interval are suppressed and counted (one
    // alert per rule, whatever its channels): two of the job's rule, and
    // the failure-rate rule's second crossing.
    for _ in 0..2 {
        assert_eq!(run_to_end(&api, "nightly").await["status"], "failed");
    }
    let metrics = wait_for("suppressed alerts to be counted", WAIT, || async {
        let text = reqwest_text(&format!("{}/metrics", dev.base)).await;
        (text.contains("sandcron_alerts_total{outcome=\"suppressed\"} 3")
            && text.contains("sandcron_alerts_total{outcome=\"sent\"} 3"))
        .then_some(text)
    })
    .await;
    assert!(
        metrics.contains("sandcron_alerts_total{outcome=\"failed\"} 0"),
        "{metrics}"
    );
    // The global failure-rate rule saw nightly's three failures too: one
    // alert when it crossed, for a rate of 2 of 2.
    let rates: Vec<Value> = hooks
        .requests_to("/alerts")
        .iter()
        .map(|r| r.json())
        .filter(|a| a["event"] == "failure_rate")
        .collect();
    assert_eq!(rates.len(), 1, "{rates:?}");
    assert_eq!(rates[0]["rule"], "global[1]");
    assert_eq!(rates[0]["failure_rate"]["failed"], 2);
    assert_eq!(rates[0]["failure_rate"]["runs"], 2);
    let run_alerts = hooks
        .requests_to("/alerts")
        .iter()
        .filter(|r| r.json()["event"] == "run")
        .count();
    assert_eq!(run_alerts, 1);
    // One alert by email. SMTP delivery is at least once: a message resent
    // because its acknowledgement was lost carries the same Message-ID.
    let ids: std::collections::BTreeSet<Option<String>> =
        smtp.messages().iter().map(|m| m.header("message-id")).collect();
    assert_eq!(
        ids.into_iter().collect::<Vec<_>>(),
        vec![Some(format!("<{}@sandcron>", alert["id"].as_str().unwrap()))]
    );
}

async fn reqwest_text(url: &str) -> String {
    sandcron_tests::http_client()
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_async_run_waiting_for_its_report_does_not_hold_a_slot() {
    // One slot: a waiting async run must not keep other jobs from running.
    let dev = dev(&["--capacity", "1"]);
    let api = dev.api();
    let mut waiting = shell_job("@yearly", "true");
    waiting["completion"] = json!("async");
    api.put("/api/v1/jobs/waiting", &waiting).await.expect(201);
    api.post("/api/v1/jobs/waiting/run").await.expect(202);
    wait_for("the async run to wait", WAIT, || async {
        let runs = api.runs("waiting").await;
        runs.first().filter(|r| r["status"] == "running").cloned()
    })
    .await;
    api.put("/api/v1/jobs/other", &shell_job("@yearly", "echo ran"))
        .await
        .expect(201);
    let other = run_to_end(&api, "other").await;
    assert_eq!(other["status"], "succeeded", "{other}");
    assert_eq!(api.runs("waiting").await[0]["status"], "running");
    api.post("/api/v1/jobs/waiting/kill").await.expect(202);
    let killed = wait_for("the waiting run to be killed", WAIT, || async {
        let runs = api.runs("waiting").await;
        runs.first().filter(|r| r["status"] != "running").cloned()
    })
    .await;
    assert_eq!(killed["status"], "killed");
    assert!(
        killed["error"]
            .as_str()
            .unwrap()
            .contains("while waiting for its reported result"),
        "{killed}"
    );
}
