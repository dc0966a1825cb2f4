//! `POST /api/v1/runs/{run_id}/rerun` in process: the trigger request it
//! stores (trigger `rerun`, the original's tick, `rerun_of`), what its
//! answer says, its audit entry, and each refusal: a viewer, an unknown run
//! or a deleted job, a run still running, overlap, no worker, the pending
//! quota; broadcast shards go back to the worker that ran them.

use axum::http::{Method, StatusCode};
use jiff::Timestamp;
use serde_json::{Value, json};

use super::{OPERATOR, TestApi, VIEWER, wasm_job};
use crate::coord::TriggerRequest;
use crate::ids::{JobName, RunId};
use crate::logstore::LogBatch;
use crate::run::{RunRecord, RunStatus, Shard, Trigger};
use crate::testkit::sample_record;

/// The tick of every seeded run: a whole second, as the log stores keep it.
const TICK: &str = "2026-03-01T04:05:06Z";

fn tick() -> Timestamp {
    TICK.parse().expect("instant")
}

impl TestApi {
    /// Creates a WASM job `name` (with `extra` fields merged into its body).
    async fn wasm_job(&self, name: &str, extra: Value) {
        let digest = self.upload_demo().await;
        let mut body = wasm_job(&digest);
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        self.call(Method::PUT, &format!("/api/v1/jobs/{name}"), Some(OPERATOR), body)
            .await
            .expect(StatusCode::CREATED);
    }

    /// Stores an ended run of `job` at [`TICK`] (as a worker would record
    /// it, changed by `adjust`) and returns its id.
    async fn seed_run(&self, job: &str, status: RunStatus, adjust: impl FnOnce(&mut RunRecord)) -> RunId {
        let mut record = sample_record(&JobName::new(job).expect("name"), tick(), status, 7);
        record.worker = "w1".to_owned();
        adjust(&mut record);
        let run_id = record.run_id;
        let mut batch = LogBatch::default();
        batch.runs.push(record);
        self.state.logs.write(&batch).await.expect("seeded");
        run_id
    }

    async fn rerun(&self, run_id: RunId, token: &str) -> super::Reply {
        self.call(
            Method::POST,
            &format!("/api/v1/runs/{run_id}/rerun"),
            Some(token),
            Value::Null,
        )
        .await
    }

    /// The run requests stored for `job`, not yet taken by a worker.
    async fn requests(&self, job: &str) -> Vec<TriggerRequest> {
        let name = JobName::new(job).expect("name");
        let stored = self.state.coord.triggers(Some(&name)).await.expect("triggers");
        stored.into_iter().map(|(_, request)| request).collect()
    }
}

#[tokio::test]
async fn a_rerun_stores_a_request_for_the_original_tick_and_says_what_it_did() {
    let api = TestApi::new();
    api.register_worker("w1").await;
    api.wasm_job("again", json!({})).await;
    let original = api.seed_run("again", RunStatus::Failed, |_| {}).await;

    let answer = api.rerun(original, OPERATOR).await.expect(StatusCode::ACCEPTED);
    let new_run = answer["run_id"].as_str().expect("the new run's id").to_owned();
    assert_ne!(new_run, original.to_string());
    assert_eq!(answer["job"], "again", "{answer}");
    assert_eq!(answer["rerun_of"], original.to_string(), "{answer}");
    assert_eq!(answer["rerun_of_status"], "failed", "{answer}");
    assert_eq!(answer["tick"], TICK, "{answer}");
    assert_eq!(answer["trigger"], "rerun", "{answer}");
    assert!(answer.get("note").is_none(), "nothing to note: {answer}");
    assert!(answer.get("worker").is_none(), "the job's owner takes it: {answer}");

    // The request the job's owner takes: the original tick, first attempt.
    let requests = api.requests("again").await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!(request.trigger, Trigger::Rerun);
    assert_eq!(request.tick(), tick());
    assert_eq!(request.rerun_of, Some(original));
    assert_eq!((request.attempt, request.target_worker.as_deref()), (1, None));
    assert_eq!(request.requested_by, "operator");
    let view = api.get("/api/v1/jobs/again").await.expect(StatusCode::OK);
    assert_eq!(view["pending"][0]["trigger"], "rerun", "{view}");
    assert_eq!(view["pending"][0]["tick"], TICK, "{view}");

    // One audit entry naming both runs.
    let page = api
        .call(Method::GET, "/api/v1/audit?action=rerun", Some(OPERATOR), Value::Null)
        .await
        .expect(StatusCode::OK);
    let entries = page["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{page}");
    assert_eq!(entries[0]["target"], "again");
    assert_eq!(entries[0]["job"], "again");
    assert_eq!(entries[0]["runs"], json!([original.to_string(), new_run]));
    assert!(
        entries[0]["detail"].as_str().is_some_and(|d| d.contains(TICK)),
        "{}",
        entries[0]
    );
}

#[tokio::test]
async fn skipped_and_missed_records_re_run_their_tick_and_a_paused_job_is_noted() {
    let api = TestApi::new();
    api.register_worker("w1").await;
    api.wasm_job("gaps", json!({"paused": true})).await;
    let skipped = api.seed_run("gaps", RunStatus::Skipped, |_| {}).await;
    let answer = api.rerun(skipped, OPERATOR).await.expect(StatusCode::ACCEPTED);
    assert_eq!(answer["tick"], TICK);
    assert_eq!(answer["rerun_of_status"], "skipped");
    let note = answer["note"].as_str().unwrap_or_default();
    assert!(note.contains("paused"), "{answer}");

    // A missed record that stands for several ticks re-runs its first.
    let missed = api
        .seed_run("gaps", RunStatus::Missed, |record| {
            record.missed_count = Some(5);
            record.missed_until = Some("2026-03-01T04:09:06Z".parse().expect("instant"));
        })
        .await;
    let answer = api.rerun(missed, OPERATOR).await.expect(StatusCode::ACCEPTED);
    assert_eq!(answer["tick"], TICK);
    let note = answer["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("5 missed ticks") && note.contains("only the first"),
        "{answer}"
    );
    let requests = api.requests("gaps").await;
    assert_eq!(requests.len(), 2);
    assert!(
        requests
            .iter()
            .all(|r| r.tick() == tick() && r.trigger == Trigger::Rerun)
    );
}

#[tokio::test]
async fn a_rerun_is_refused_clearly() {
    let api = TestApi::with(|state| state.quotas.max_pending_runs = 1);
    api.wasm_job("strict", json!({})).await;
    let ended = api.seed_run("strict", RunStatus::Succeeded, |_| {}).await;

    // Viewers may not; an unknown or malformed run id is not found.
    api.rerun(ended, VIEWER)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden", "operator");
    let unknown = RunId::generate();
    api.rerun(unknown, OPERATOR).await.expect_error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("run {unknown} does not exist"),
    );
    api.call(Method::POST, "/api/v1/runs/nope/rerun", Some(OPERATOR), Value::Null)
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "");

    // No live worker can run it.
    api.rerun(ended, OPERATOR)
        .await
        .expect_error(StatusCode::CONFLICT, "conflict", "no live workers");
    api.register_worker("w1").await;

    // The run itself is running: waiting for a slot (an entry, no record
    // yet), or recorded running.
    let waiting = RunId::generate();
    api.publish_running("strict", waiting, "w1", Trigger::Schedule).await;
    api.rerun(waiting, OPERATOR)
        .await
        .expect_error(StatusCode::CONFLICT, "conflict", "still running");
    let recorded = api.seed_run("strict", RunStatus::Running, |_| {}).await;
    api.rerun(recorded, OPERATOR)
        .await
        .expect_error(StatusCode::CONFLICT, "conflict", "still recorded running");

    // Overlap forbidden (the default) while another run of the job runs.
    api.rerun(ended, OPERATOR)
        .await
        .expect_error(StatusCode::CONFLICT, "conflict", "overlap policy is forbid");
    assert!(api.requests("strict").await.is_empty(), "refusals store nothing");

    // With overlap allowed it goes ahead, up to the pending quota.
    api.wasm_job("loose", json!({"overlap": "allow"})).await;
    api.publish_running("loose", RunId::generate(), "w1", Trigger::Schedule)
        .await;
    let loose = api.seed_run("loose", RunStatus::Failed, |_| {}).await;
    api.rerun(loose, OPERATOR).await.expect(StatusCode::ACCEPTED);
    api.rerun(loose, OPERATOR)
        .await
        .expect_error(StatusCode::CONFLICT, "quota_exceeded", "max_pending_runs");

    // The run's job was deleted: not found, naming the job.
    let orphan = api.seed_run("deleted", RunStatus::Failed, |_| {}).await;
    api.rerun(orphan, OPERATOR)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found", "job deleted of run");
}

#[tokio::test]
async fn a_broadcast_shard_is_re_run_on_its_worker_and_a_whole_tick_on_every_worker() {
    let api = TestApi::new();
    api.register_worker("w1").await;
    api.register_worker("w2").await;
    api.wasm_job("fan", json!({"broadcast": true})).await;
    let shard = Shard {
        index: 1,
        count: 2,
        group: RunId::generate(),
    };
    let failed_shard = api
        .seed_run("fan", RunStatus::Failed, |record| {
            record.worker = "w2".to_owned();
            record.shard = Some(shard);
        })
        .await;
    let answer = api.rerun(failed_shard, OPERATOR).await.expect(StatusCode::ACCEPTED);
    assert!(answer["run_id"].is_string(), "one shard, one run: {answer}");
    assert_eq!(answer["worker"], "w2", "{answer}");
    assert_eq!(answer["shard"]["index"], 1, "{answer}");
    assert!(
        answer["note"].as_str().is_some_and(|n| n.contains("only shard")),
        "{answer}"
    );
    let requests = api.requests("fan").await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].target_worker.as_deref(), Some("w2"));
    assert_eq!(requests[0].shard, Some(shard));
    assert_eq!(requests[0].rerun_of, Some(failed_shard));

    // The worker that ran the shard is gone.
    let stranded = api
        .seed_run("fan", RunStatus::Lost, |record| {
            record.worker = "w9".to_owned();
            record.shard = Some(shard);
        })
        .await;
    api.rerun(stranded, OPERATOR)
        .await
        .expect_error(StatusCode::CONFLICT, "conflict", "on worker w9, which is gone");

    // A tick recorded as a whole (no shard) is handed out again by the owner.
    let whole = api.seed_run("fan", RunStatus::Missed, |_| {}).await;
    let answer = api.rerun(whole, OPERATOR).await.expect(StatusCode::ACCEPTED);
    assert!(answer.get("run_id").is_none(), "each shard gets its own id: {answer}");
    assert!(
        answer["note"]
            .as_str()
            .is_some_and(|n| n.contains("every eligible worker")),
        "{answer}"
    );
    let requests = api.requests("fan").await;
    let whole_request = requests.iter().find(|r| r.rerun_of == Some(whole)).expect("stored");
    assert_eq!(
        (whole_request.shard, whole_request.target_worker.as_deref()),
        (None, None)
    );
}
