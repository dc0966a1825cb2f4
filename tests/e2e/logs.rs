//! Run logs in MongoDB end to end: a real MongoDB-wire server goes away
//! while jobs print, and a worker dies with output only in its spool. In
//! both cases every line of every run must arrive exactly once, in order,
//! and every run record must end in its true status.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use sandcron_tests::cluster::WorkerProcess;
use sandcron_tests::{Api, wait_for};
use serde_json::{Value, json};

use crate::cluster::{Stores, settle, unix, wait_for_workers};

/// Lines each run prints, one every 100 ms.
const LINES: usize = 20;

/// A shell job that prints `1` … `LINES`, one line every 100 ms.
fn counting_job(schedule: &str) -> Value {
    let command = format!("for i in $(seq 1 {LINES}); do echo \"line $i\"; sleep 0.1; done");
    json!({"schedule": schedule, "kind": {"shell": {"command": command}}, "overlap": "allow"})
}

async fn metric(worker: &WorkerProcess, name: &str) -> f64 {
    worker
        .metric(name)
        .await
        .unwrap_or_else(|| panic!("worker {} has no metric {name}", worker.id))
}

/// Checks that every ended run of `job` succeeded with exactly the counted
/// lines in order; returns its runs by tick.
async fn check_runs(api: &Api, job: &str) -> BTreeMap<i64, Value> {
    let runs = api.runs(job).await;
    let mut by_tick = BTreeMap::new();
    for run in runs {
        let id = run["run_id"].as_str().expect("run id").to_owned();
        assert_eq!(run["status"], "succeeded", "{job}: run {id} ended {run}");
        assert_eq!(run["exit_code"], 0, "{job}: {run}");
        let text: String = api.output(&id).await.into_iter().map(|(_, data)| data).collect();
        let expected: String = (1..=LINES).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, expected, "{job}: run {id} output");
        assert!(
            by_tick.insert(unix(&run["tick"]), run).is_none(),
            "{job}: a tick ran twice"
        );
    }
    by_tick
}

#[tokio::test]
async fn a_mongodb_outage_loses_no_line_and_never_blocks_scheduling() {
    let mut stores = Stores::start();
    let env = stores.env("mongo-outage");
    let master = env.master("master", "");
    let api = master.api();
    let worker = env.worker("w1", "allow_native = true\ncapacity = 64");
    wait_for_workers(&api, 1).await;
    let jobs: Vec<String> = (0..10).map(|i| format!("print-{i}")).collect();
    for job in &jobs {
        api.put(&format!("/api/v1/jobs/{job}"), &counting_job("*/3 * * * * *"))
            .await
            .expect(201);
    }
    wait_for("output to reach MongoDB", Duration::from_secs(30), || async {
        let runs = api.get("/api/v1/runs?status=succeeded&limit=1").await;
        (runs.status == 200 && runs.body["runs"].as_array().is_some_and(|r| !r.is_empty())).then_some(())
    })
    .await;

    stores.mongo.stop();
    let down_at = Timestamp::now();
    let fired_before = metric(&worker, "sandcron_fire_lateness_seconds_count").await;
    // Thirty seconds without MongoDB. The worker goes on scheduling and
    // running (fires keep counting) and its sink spools what it cannot write.
    let outage = Instant::now() + Duration::from_secs(30);
    let mut max_spool = 0.0_f64;
    while Instant::now() < outage {
        max_spool = max_spool.max(metric(&worker, "sandcron_sink_spool_bytes").await);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let fired_during = metric(&worker, "sandcron_fire_lateness_seconds_count").await - fired_before;
    assert!(max_spool > 0.0, "the sink spooled during the outage");
    // 10 jobs every 3 s for 30 s: 100 fires; allow for the edges.
    assert!(
        fired_during >= 90.0,
        "scheduling went on during the outage: {fired_during} fires"
    );
    stores.mongo.start_again();
    let up_at = Timestamp::now();

    settle(&api, &jobs).await;
    wait_for("the spool to drain", Duration::from_secs(60), || async {
        let spool = metric(&worker, "sandcron_sink_spool_bytes").await;
        let queued = metric(&worker, "sandcron_sink_queue_depth").await;
        (spool == 0.0 && queued == 0.0).then_some(())
    })
    .await;
    let mut total = 0;
    for job in &jobs {
        let by_tick = check_runs(&api, job).await;
        // Every tick of the outage ran and its record arrived.
        let missing: Vec<i64> = (down_at.as_second() + 1..up_at.as_second())
            .filter(|t| t % 3 == 0 && !by_tick.contains_key(t))
            .collect();
        assert!(missing.is_empty(), "{job}: outage ticks without a run: {missing:?}");
        total += by_tick.len();
    }
    eprintln!("{total} runs, each with all {LINES} lines; spool peaked at {max_spool} bytes");
}

#[tokio::test]
async fn a_worker_killed_with_a_full_spool_replays_it_after_a_restart() {
    let mut stores = Stores::start();
    let env = stores.env("spool-replay");
    let master = env.master("master", "");
    let api = master.api();
    let mut worker = env.worker("w1", "allow_native = true\ncapacity = 16");
    wait_for_workers(&api, 1).await;
    let jobs: Vec<String> = (0..3).map(|i| format!("spool-{i}")).collect();
    stores.mongo.stop();
    // Jobs live in etcd: they can be created while MongoDB is down, and
    // their views say the history is unavailable rather than failing.
    for job in &jobs {
        let view = api
            .put(&format!("/api/v1/jobs/{job}"), &counting_job("*/2 * * * * *"))
            .await
            .expect(201);
        assert_eq!(view["history_unavailable"], true, "{view}");
    }
    // With MongoDB down, finished runs collect in the spool.
    wait_for("runs to end into the spool", Duration::from_secs(60), || async {
        let ended = metric(&worker, "sandcron_runs_total{status=\"succeeded\"}").await;
        let spool = metric(&worker, "sandcron_sink_spool_bytes").await;
        (ended >= 6.0 && spool > 0.0).then_some(())
    })
    .await;
    for job in &jobs {
        api.post(&format!("/api/v1/jobs/{job}/pause")).await.expect(200);
    }
    // A run's running entry goes once its final record is durable (here:
    // in the spool), so no entry left means everything is on disk.
    wait_for("runs to end and be spooled", Duration::from_secs(30), || async {
        for job in &jobs {
            let view = api.get(&format!("/api/v1/jobs/{job}")).await.expect(200);
            if !view["running"].as_array().is_some_and(Vec::is_empty) {
                return None;
            }
        }
        Some(())
    })
    .await;
    let ended = metric(&worker, "sandcron_runs_total{status=\"succeeded\"}").await as usize;
    let spooled = std::fs::metadata(worker.data.join("log-spool.jsonl"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(spooled > 0, "the spool file holds the runs");

    worker.proc.kill9();
    stores.mongo.start_again();
    worker.start_again();
    wait_for("the spool to replay", Duration::from_secs(60), || async {
        let spool = worker.metric("sandcron_sink_spool_bytes").await?;
        (spool == 0.0).then_some(())
    })
    .await;
    let mut total = 0;
    for job in &jobs {
        total += check_runs(&api, job).await.len();
    }
    assert_eq!(total, ended, "every run that ended before the crash is in MongoDB");
    eprintln!("{total} runs replayed from a {spooled}-byte spool");
}
