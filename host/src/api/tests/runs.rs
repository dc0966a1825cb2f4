//! `/api/v1/runs` in process: history filtered and paged from the log
//! store, one run, a run's output after a cursor, and the async-result
//! endpoint's refusals.

use axum::http::{Method, StatusCode};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use super::TestApi;
use crate::ids::JobName;
use crate::logstore::LogBatch;
use crate::run::{OutputChunk, RunStatus, StreamKind, Trigger};
use crate::testkit::sample_record;

#[tokio::test]
async fn history_is_filtered_and_paged_newest_first() {
    let api = TestApi::new();
    let job = JobName::new("hist").expect("name");
    let other = JobName::new("other").expect("name");
    let start: Timestamp = "2026-03-01T00:00:00Z".parse().expect("instant");
    let mut batch = LogBatch::default();
    for minute in 0..5 {
        let status = if minute == 2 {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        };
        batch.runs.push(sample_record(
            &job,
            start + SignedDuration::from_mins(minute),
            status,
            1,
        ));
    }
    batch.runs.push(sample_record(&other, start, RunStatus::Succeeded, 1));
    api.state.logs.write(&batch).await.expect("seeded");

    let page = api.get("/api/v1/runs?job=hist&limit=2").await.expect(StatusCode::OK);
    let ticks: Vec<&str> = page["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter_map(|r| r["tick"].as_str())
        .collect();
    assert_eq!(ticks, ["2026-03-01T00:04:00Z", "2026-03-01T00:03:00Z"]);
    let cursor = page["next_cursor"].as_str().expect("more pages");
    let next = api
        .get(&format!("/api/v1/runs?job=hist&limit=2&cursor={cursor}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(next["runs"][0]["tick"], "2026-03-01T00:02:00Z");

    let failed = api.get("/api/v1/runs?status=failed").await.expect(StatusCode::OK);
    assert_eq!(failed["runs"].as_array().map(Vec::len), Some(1));
    assert_eq!(failed["runs"][0]["job"], "hist");

    let run_id = failed["runs"][0]["run_id"].as_str().expect("id");
    let one = api.get(&format!("/api/v1/runs/{run_id}")).await.expect(StatusCode::OK);
    assert_eq!(one["status"], "failed");
}

#[tokio::test]
async fn history_is_filtered_by_worker_and_trigger() {
    let api = TestApi::new();
    let job = JobName::new("by-worker").expect("name");
    let start: Timestamp = "2026-03-01T00:00:00Z".parse().expect("instant");
    let mut batch = LogBatch::default();
    for (minute, (worker, trigger)) in [
        ("w-1", Trigger::Schedule),
        ("w-2", Trigger::Manual),
        ("w-1", Trigger::Manual),
        ("w-2", Trigger::Retry),
    ]
    .into_iter()
    .enumerate()
    {
        let mut record = sample_record(
            &job,
            start + SignedDuration::from_mins(minute as i64),
            RunStatus::Succeeded,
            1,
        );
        record.worker = worker.to_owned();
        record.trigger = trigger;
        batch.runs.push(record);
    }
    api.state.logs.write(&batch).await.expect("seeded");
    let shown = |page: &serde_json::Value| -> Vec<(String, String)> {
        page["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .map(|r| {
                (
                    r["worker"].as_str().unwrap_or_default().to_owned(),
                    r["trigger"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let pair = |worker: &str, trigger: &str| (worker.to_owned(), trigger.to_owned());

    let page = api.get("/api/v1/runs?worker=w-1").await.expect(StatusCode::OK);
    assert_eq!(shown(&page), [pair("w-1", "manual"), pair("w-1", "schedule")]);
    let page = api.get("/api/v1/runs?trigger=manual").await.expect(StatusCode::OK);
    assert_eq!(shown(&page), [pair("w-1", "manual"), pair("w-2", "manual")]);
    let page = api
        .get("/api/v1/runs?job=by-worker&worker=w-2&trigger=manual")
        .await
        .expect(StatusCode::OK);
    assert_eq!(shown(&page), [pair("w-2", "manual")]);

    // Paged: the cursor keeps the filters' runs, one page each.
    let first = api
        .get("/api/v1/runs?trigger=manual&limit=1")
        .await
        .expect(StatusCode::OK);
    assert_eq!(shown(&first), [pair("w-1", "manual")]);
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let second = api
        .get(&format!("/api/v1/runs?trigger=manual&limit=1&cursor={cursor}"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(shown(&second), [pair("w-2", "manual")]);
    assert!(second["next_cursor"].is_null(), "{second}");
}

#[tokio::test]
async fn bad_history_queries_name_the_parameter() {
    let api = TestApi::new();
    let cases = [
        ("/api/v1/runs?limit=0", "limit"),
        ("/api/v1/runs?limit=1001", "limit"),
        ("/api/v1/runs?status=exploded", "status"),
        ("/api/v1/runs?trigger=cron", "trigger"),
        ("/api/v1/runs?trigger=", "trigger"),
        ("/api/v1/runs?worker=", "worker"),
        ("/api/v1/runs?worker=a%2Fb", "worker"),
        ("/api/v1/runs?job=Not%20A%20Name", "job"),
        ("/api/v1/runs?since=yesterday", "since"),
    ];
    for (uri, field) in cases {
        let error = api
            .get(uri)
            .await
            .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "");
        assert_eq!(error["field"], field, "{uri}");
    }
    let long = "w".repeat(129);
    let error = api.get(&format!("/api/v1/runs?worker={long}")).await.expect_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "1 to 128",
    );
    assert_eq!(error["field"], "worker");
    // An unknown trigger is answered with the valid ones.
    api.get("/api/v1/runs?trigger=cron").await.expect_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        "expected one of schedule, manual, catchup, retry, dependency",
    );
    api.get("/api/v1/runs?cursor=garbage")
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "cursor");
    api.get("/api/v1/runs?colour=red")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request", "colour");
    api.get("/api/v1/runs/not-a-ulid")
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "");
    let absent = crate::ids::RunId::generate();
    api.get(&format!("/api/v1/runs/{absent}"))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found", "does not exist");
}

#[tokio::test]
async fn output_is_read_after_a_cursor() {
    let api = TestApi::new();
    let job = JobName::new("out").expect("name");
    let record = sample_record(
        &job,
        "2026-03-01T00:00:00Z".parse().expect("instant"),
        RunStatus::Succeeded,
        1,
    );
    let run_id = record.run_id;
    let chunks = (0..3)
        .map(|seq| OutputChunk {
            run_id,
            seq,
            stream: if seq == 1 {
                StreamKind::Stderr
            } else {
                StreamKind::Stdout
            },
            at: Timestamp::now(),
            data: format!("line {seq}\n"),
            expire_at: None,
        })
        .collect();
    api.state
        .logs
        .write(&LogBatch {
            runs: vec![record],
            chunks,
        })
        .await
        .expect("seeded");
    let all = api
        .get(&format!("/api/v1/runs/{run_id}/output"))
        .await
        .expect(StatusCode::OK);
    let data: Vec<&str> = all["chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .filter_map(|c| c["data"].as_str())
        .collect();
    assert_eq!(data, ["line 0\n", "line 1\n", "line 2\n"]);
    assert_eq!(all["chunks"][1]["stream"], "stderr");
    let rest = api
        .get(&format!("/api/v1/runs/{run_id}/output?after=1"))
        .await
        .expect(StatusCode::OK);
    assert_eq!(rest["chunks"].as_array().map(Vec::len), Some(1));
    assert_eq!(rest["chunks"][0]["seq"], 2);
    assert_eq!(rest["status"], "succeeded");
}

#[tokio::test]
async fn a_result_report_needs_a_token_a_valid_status_and_a_running_run() {
    let api = TestApi::new();
    let absent = crate::ids::RunId::generate();
    let uri = format!("/api/v1/runs/{absent}/result");
    api.call(Method::POST, &uri, None, json!({"status": "succeeded"}))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized", "missing run token");
    api.call(Method::POST, &uri, None, json!({"status": "running", "token": "t"}))
        .await
        .expect_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "must be succeeded or failed",
        );
    let huge = "x".repeat(64 * 1024 + 1);
    api.call(
        Method::POST,
        &uri,
        None,
        json!({"status": "failed", "token": "t", "error": huge}),
    )
    .await
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "at most 65536 bytes");
    api.call(Method::POST, &uri, None, json!({"status": "succeeded", "token": "t"}))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found", "is not running");
    // A token in the header is checked before the body is read: a body that
    // is not even JSON gets the token's answer, not a parse error.
    let request = axum::http::Request::builder()
        .method(Method::POST)
        .uri(&uri)
        .header("x-sandcron-run-token", "a-guess")
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from("this is not JSON"))
        .expect("request");
    api.send(request)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found", "is not running");
}
