//! `GET /api/v1/workers` in process: each live worker's load, derived from
//! the `running/` entries that name it — runs in progress, slots in use
//! (at most its capacity) and runs waiting for a slot — and the log backlog
//! it published.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::TestApi;
use crate::coord::LogBacklog;
use crate::ids::RunId;
use crate::run::Trigger;

/// Publishes a run of `job` in progress on `worker`.
async fn publish_run(api: &TestApi, job: &str, worker: &str) {
    api.publish_running(job, RunId::generate(), worker, Trigger::Schedule)
        .await;
}

#[tokio::test]
async fn workers_show_their_slots_in_use_and_the_runs_waiting_for_one() {
    let api = TestApi::new();
    // `register_worker` gives each worker one slot.
    api.register_worker("full").await;
    api.register_worker("idle").await;
    publish_run(&api, "long", "full").await;
    publish_run(&api, "second", "full").await;
    // A run of a worker that is gone counts for no live worker.
    publish_run(&api, "orphan", "gone").await;
    let workers = api.get("/api/v1/workers").await.expect(StatusCode::OK);
    let load = |id: &str| {
        let worker = workers
            .as_array()
            .into_iter()
            .flatten()
            .find(|w| w["id"] == id)
            .unwrap_or_else(|| panic!("{id} listed: {workers}"));
        (
            worker["capacity"].as_u64(),
            worker["running"].as_u64(),
            worker["slots_in_use"].as_u64(),
            worker["waiting"].as_u64(),
        )
    };
    assert_eq!(load("full"), (Some(1), Some(2), Some(1), Some(1)));
    assert_eq!(load("idle"), (Some(1), Some(0), Some(0), Some(0)));
    assert_eq!(workers.as_array().map(Vec::len), Some(2), "{workers}");
}

#[tokio::test]
async fn workers_show_the_log_backlog_they_published() {
    let api = TestApi::new();
    api.register_worker("behind").await;
    api.register_worker("quiet").await;
    let lease = api.lease().await;
    let backlog = LogBacklog {
        spool_bytes: 12_900_000,
        spool_lag_s: 4,
        backpressure: true,
        queued: 10,
    };
    let coord = &api.state.coord;
    coord
        .publish_log_backlog("behind", &backlog, lease)
        .await
        .expect("published");
    // The backlog of a worker that is gone is shown nowhere.
    coord
        .publish_log_backlog("gone", &backlog, lease)
        .await
        .expect("published");
    let workers = api.get("/api/v1/workers").await.expect(StatusCode::OK);
    let backlog_of = |id: &str| {
        workers
            .as_array()
            .into_iter()
            .flatten()
            .find(|w| w["id"] == id)
            .unwrap_or_else(|| panic!("{id} listed: {workers}"))["log_backlog"]
            .clone()
    };
    assert_eq!(
        backlog_of("behind"),
        json!({"spool_bytes": 12_900_000, "spool_lag_s": 4, "backpressure": true, "queued": 10})
    );
    // A worker that published nothing (an older version, or just started).
    assert_eq!(backlog_of("quiet"), Value::Null);
    assert_eq!(workers.as_array().map(Vec::len), Some(2), "{workers}");
}
