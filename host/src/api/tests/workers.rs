//! `GET /api/v1/workers` in process: each live worker's load, derived from
//! the `running/` entries that name it — runs in progress, slots in use
//! (at most its capacity) and runs waiting for a slot.

use axum::http::StatusCode;

use super::TestApi;
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
