//! Restarts: jobs and history survive, missed ticks follow the catch-up
//! policy, shutdown drains runs and flushes logs, a crash leaves `lost` runs.

use std::collections::BTreeSet;
use std::time::Duration;

use sandcron_tests::wait_for;
use serde_json::{Value, json};

use crate::{dev, shell_job};

fn with_catchup(mut job: Value, policy: &str) -> Value {
    job["catchup"] = json!({"policy": policy, "window_s": 3600});
    job
}

#[tokio::test]
async fn jobs_and_history_survive_a_restart_and_missed_ticks_follow_the_catchup_policy() {
    let mut dev = dev(&[]);
    let api = dev.api();
    api.put(
        "/api/v1/jobs/skipper",
        &with_catchup(shell_job("@every 1s", "echo s"), "skip"),
    )
    .await
    .expect(201);
    api.put(
        "/api/v1/jobs/latest",
        &with_catchup(shell_job("@every 1s", "echo l"), "latest"),
    )
    .await
    .expect(201);
    wait_for("runs of both jobs", Duration::from_secs(20), || async {
        let a = api.runs("skipper").await.iter().any(|r| r["status"] == "succeeded");
        let b = api.runs("latest").await.iter().any(|r| r["status"] == "succeeded");
        (a && b).then_some(())
    })
    .await;
    let before_skipper = api.runs("skipper").await.len();
    assert_eq!(dev.stop(), Some(0), "clean exit on SIGTERM");
    // The outage itself: ticks pass while nothing runs.
    std::thread::sleep(Duration::from_secs(4));
    dev.start_again();
    let api = dev.api();

    let jobs = api.jobs().await;
    let names: BTreeSet<&str> = jobs.iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, BTreeSet::from(["latest", "skipper"]));

    // skip: the outage's ticks are recorded as missed, each tick once.
    let runs = wait_for("missed ticks of skipper", Duration::from_secs(20), || async {
        let runs = api.runs("skipper").await;
        let missed = runs.iter().filter(|r| r["status"] == "missed").count();
        (missed >= 2 && runs.len() > before_skipper + missed).then_some(runs)
    })
    .await;
    for missed in runs.iter().filter(|r| r["status"] == "missed") {
        assert!(
            missed["error"].as_str().unwrap().contains("catch-up policy is skip"),
            "{missed}"
        );
    }
    let ticks: Vec<&str> = runs
        .iter()
        .filter(|r| r["trigger"] != "retry")
        .map(|r| r["tick"].as_str().unwrap())
        .collect();
    let unique: BTreeSet<&&str> = ticks.iter().collect();
    assert_eq!(unique.len(), ticks.len(), "a tick was recorded twice: {ticks:?}");
    // History from before the restart is still there, and runs continue after it.
    assert!(runs.len() > before_skipper);

    // latest: one catch-up run for the newest missed tick, the rest missed.
    let runs = wait_for("the catch-up run of latest", Duration::from_secs(20), || async {
        let runs = api.runs("latest").await;
        runs.iter()
            .any(|r| r["trigger"] == "catchup" && r["status"] == "succeeded")
            .then_some(runs)
    })
    .await;
    let catchups: Vec<&Value> = runs.iter().filter(|r| r["trigger"] == "catchup").collect();
    assert_eq!(catchups.len(), 1, "{catchups:?}");
    let missed: Vec<&Value> = runs.iter().filter(|r| r["status"] == "missed").collect();
    assert!(!missed.is_empty());
    let catchup_tick = catchups[0]["tick"].as_str().unwrap();
    assert!(
        missed.iter().all(|m| m["tick"].as_str().unwrap() < catchup_tick),
        "the newest tick is the one run"
    );
}

#[tokio::test]
async fn shutdown_lets_a_running_run_finish_and_flushes_its_output() {
    let mut dev = dev(&[]);
    let api = dev.api();
    api.put("/api/v1/jobs/drain", &shell_job("@yearly", "sleep 1; echo finished"))
        .await
        .expect(201);
    api.post("/api/v1/jobs/drain/run").await.expect(202);
    let run_id = wait_for("the run to start", Duration::from_secs(20), || async {
        let runs = api.runs("drain").await;
        runs.first()
            .filter(|r| r["status"] == "running")
            .map(|r| r["run_id"].as_str().unwrap().to_owned())
    })
    .await;
    assert_eq!(dev.stop(), Some(0));
    dev.start_again();
    let api = dev.api();
    let run = api.get(&format!("/api/v1/runs/{run_id}")).await.expect(200);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        api.output(&run_id).await,
        vec![("stdout".to_owned(), "finished\n".to_owned())]
    );
}

#[tokio::test]
async fn a_run_cut_off_by_a_crash_is_recorded_lost_after_restart() {
    let mut dev = dev(&[]);
    let api = dev.api();
    api.put("/api/v1/jobs/crash", &shell_job("@yearly", "sleep 300"))
        .await
        .expect(201);
    api.post("/api/v1/jobs/crash/run").await.expect(202);
    let run_id = wait_for("the run to start", Duration::from_secs(20), || async {
        let runs = api.runs("crash").await;
        runs.first()
            .filter(|r| r["status"] == "running")
            .map(|r| r["run_id"].as_str().unwrap().to_owned())
    })
    .await;
    dev.kill9();
    dev.start_again();
    let api = dev.api();
    let run = api.get(&format!("/api/v1/runs/{run_id}")).await.expect(200);
    assert_eq!(run["status"], "lost", "{run}");
    assert!(run["error"].as_str().unwrap().contains("stopped before the run ended"));
    // The job is schedulable again: nothing stale claims it is running.
    let job = api.get("/api/v1/jobs/crash").await.expect(200);
    assert_eq!(job["running"], json!([]));
}

#[tokio::test]
async fn catchup_all_runs_every_missed_tick_in_order() {
    let mut dev = dev(&[]);
    let api = dev.api();
    api.put(
        "/api/v1/jobs/every",
        &with_catchup(shell_job("@every 1s", "echo $SANDCRON_TICK"), "all"),
    )
    .await
    .expect(201);
    wait_for("a first run", Duration::from_secs(20), || async {
        api.runs("every")
            .await
            .iter()
            .any(|r| r["status"] == "succeeded")
            .then_some(())
    })
    .await;
    dev.stop();
    std::thread::sleep(Duration::from_secs(4));
    dev.start_again();
    let api = dev.api();
    let runs = wait_for("catch-up runs", Duration::from_secs(30), || async {
        let runs = api.runs("every").await;
        let catchups = runs
            .iter()
            .filter(|r| r["trigger"] == "catchup" && r["status"] == "succeeded")
            .count();
        (catchups >= 2).then_some(runs)
    })
    .await;
    let mut catchups: Vec<&Value> = runs.iter().filter(|r| r["trigger"] == "catchup").collect();
    catchups.sort_by_key(|r| r["run_id"].as_str().unwrap().to_owned());
    let ticks: Vec<&str> = catchups.iter().map(|r| r["tick"].as_str().unwrap()).collect();
    let mut sorted = ticks.clone();
    sorted.sort();
    assert_eq!(ticks, sorted, "catch-up runs start oldest tick first");
    assert!(
        runs.iter().all(|r| r["status"] != "missed"),
        "within the window nothing is missed"
    );
}

#[tokio::test]
async fn a_log_that_is_not_a_terminal_gets_plain_text() {
    let dev = dev(&[]);
    let api = dev.api();
    api.put("/api/v1/jobs/chatty", &shell_job("@every 1s", "echo hi; exit 3"))
        .await
        .expect(201);
    // A run that did not succeed logs its end with structured fields (one
    // that did is logged at DEBUG only).
    let log = wait_for("a run's end in the log", Duration::from_secs(20), || async {
        let log = dev.log_text();
        log.contains("run ended").then_some(log)
    })
    .await;
    assert!(!log.contains('\u{1b}'), "no terminal escapes in a log file:\n{log}");
    assert!(log.contains("status=failed"), "{log}");
    assert!(log.contains("exit_code=Some(3)"), "{log}");
}
