//! Re-running a run (`POST /api/v1/runs/{id}/rerun`, `sandcron rerun`)
//! against `sandcron dev`: the new run ends with trigger `rerun`, names the
//! original in `rerun_of` and runs for the original's tick (the job sees it
//! as `SANDCRON_TICK`); an overlap-forbidding job that is running refuses;
//! a broadcast shard runs again alone, with its shard, on its worker.

use std::time::Duration;

use sandcron_tests::{Api, wait_for};
use serde_json::Value;

use crate::{dev, lines, once_in, shell_job};

/// `sandcron ARGS` against the server at `server`: (exit code, stdout, stderr).
fn sandcron(server: &str, args: &[&str]) -> (i32, String, String) {
    crate::cli(args, Some(server))
}

/// Waits until run `run_id` is recorded and has ended; returns its record.
async fn ended(api: &Api, run_id: &str) -> Value {
    wait_for(&format!("run {run_id} to end"), Duration::from_secs(30), || async {
        let run = api.get(&format!("/api/v1/runs/{run_id}")).await;
        (run.status == 200 && run.body["status"] != "running").then_some(run.body)
    })
    .await
}

/// Waits until run `run_id` is recorded running.
async fn running(api: &Api, run_id: &str) {
    wait_for(&format!("run {run_id} to run"), Duration::from_secs(30), || async {
        let run = api.get(&format!("/api/v1/runs/{run_id}")).await;
        (run.status == 200 && run.body["status"] == "running").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_scheduled_run_is_re_run_for_its_tick_through_the_api_and_the_cli() {
    let dev = dev(&[]);
    let api = dev.api();
    // Fires once, a few seconds from now: the original run's tick is a
    // scheduled instant, not the moment anyone asked for a re-run.
    api.put(
        "/api/v1/jobs/tick-echo",
        &shell_job(&once_in(3), "echo \"tick=$SANDCRON_TICK trigger=$SANDCRON_TRIGGER\""),
    )
    .await
    .expect(201);
    let original = wait_for("the scheduled run", Duration::from_secs(30), || async {
        api.runs("tick-echo")
            .await
            .into_iter()
            .find(|r| r["trigger"] == "schedule" && r["status"] == "succeeded")
    })
    .await;
    let original_id = original["run_id"].as_str().unwrap().to_owned();
    let tick = original["tick"].as_str().unwrap().to_owned();
    assert_eq!(lines(&api, &original).await, [format!("tick={tick} trigger=schedule")]);

    // Through the API: the answer says what was done.
    let answer = api.post(&format!("/api/v1/runs/{original_id}/rerun")).await.expect(202);
    assert_eq!(answer["rerun_of"], original_id.as_str(), "{answer}");
    assert_eq!(answer["tick"], tick.as_str(), "{answer}");
    assert_eq!(answer["trigger"], "rerun", "{answer}");
    assert_eq!(answer["rerun_of_status"], "succeeded", "{answer}");
    let first_id = answer["run_id"].as_str().expect("the new run's id").to_owned();
    let first = ended(&api, &first_id).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(first["trigger"], "rerun", "{first}");
    assert_eq!(first["rerun_of"], original_id.as_str(), "{first}");
    assert_eq!(first["tick"], tick.as_str(), "the original's tick: {first}");
    assert_eq!(lines(&api, &first).await, [format!("tick={tick} trigger=rerun")]);

    // Through the CLI, following the new run to its end; a re-run of the
    // re-run names the run it re-ran, and keeps the tick.
    let (code, out, err) = sandcron(&dev.base, &["rerun", &first_id, "--follow"]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let said = out.lines().next().unwrap_or_default();
    assert!(
        said.contains(&format!("a re-run of run {first_id} (succeeded) for tick {tick}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("tick={tick} trigger=rerun")),
        "the run's output follows: {out}"
    );
    let second_id = said
        .strip_prefix("run ")
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the new run's id first")
        .to_owned();
    let second = ended(&api, &second_id).await;
    assert_eq!(
        (&second["trigger"], &second["rerun_of"], &second["tick"]),
        (
            &Value::from("rerun"),
            &Value::from(first_id.as_str()),
            &Value::from(tick.as_str())
        ),
        "{second}"
    );

    // History lists re-runs by their trigger; the scheduled run is still the only one of its kind.
    let page = api.get("/api/v1/runs?job=tick-echo&trigger=rerun").await.expect(200);
    let mut rerun_ids: Vec<&str> = page["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["run_id"].as_str())
        .collect();
    rerun_ids.sort_unstable();
    let mut expected = vec![first_id.as_str(), second_id.as_str()];
    expected.sort_unstable();
    assert_eq!(rerun_ids, expected);

    // Unknown runs are not found, for the CLI too.
    let (code, _, err) = sandcron(&dev.base, &["rerun", "01ARZ3NDEKTSV4RRFFQ69G5FAV"]);
    assert_ne!(code, 0);
    assert!(err.contains("does not exist"), "{err}");
}

#[tokio::test]
async fn a_job_that_forbids_overlap_refuses_a_rerun_while_it_runs() {
    let dev = dev(&[]);
    let api = dev.api();
    api.put("/api/v1/jobs/long", &shell_job("@yearly", "sleep 60"))
        .await
        .expect(201);
    let kill = async |run_id: &str| {
        api.post(&format!("/api/v1/jobs/long/kill?run_id={run_id}"))
            .await
            .expect(202);
        ended(&api, run_id).await
    };
    // A run that has ended (killed), then a long one that runs.
    let start = async || {
        let answer = api.post("/api/v1/jobs/long/run").await.expect(202);
        let run_id = answer["run_id"].as_str().unwrap().to_owned();
        running(&api, &run_id).await;
        run_id
    };
    let original = start().await;
    assert_eq!(kill(&original).await["status"], "killed");
    let long = start().await;

    api.post(&format!("/api/v1/runs/{original}/rerun")).await.expect_error(
        409,
        "conflict",
        &format!("running (run {long}) and its overlap policy is forbid"),
    );
    api.post(&format!("/api/v1/runs/{long}/rerun"))
        .await
        .expect_error(409, "conflict", "still running");
    let (code, _, err) = sandcron(&dev.base, &["rerun", &original]);
    assert_ne!(code, 0);
    assert!(err.contains("overlap policy is forbid"), "{err}");
    // Nothing was asked of the worker.
    let view = api.get("/api/v1/jobs/long").await.expect(200);
    assert_eq!(view["pending"], Value::Array(Vec::new()), "{view}");

    // Once the long run has ended, the same re-run goes ahead. (Its final
    // record is written before its `running/` entry goes, and the entry is
    // what the overlap check reads: wait for both.)
    kill(&long).await;
    wait_for("the long run's entry to go", Duration::from_secs(30), || async {
        let view = api.get("/api/v1/jobs/long").await.expect(200);
        view["running"].as_array().is_some_and(Vec::is_empty).then_some(())
    })
    .await;
    let answer = api.post(&format!("/api/v1/runs/{original}/rerun")).await.expect(202);
    let rerun_id = answer["run_id"].as_str().unwrap().to_owned();
    running(&api, &rerun_id).await;
    let rerun = kill(&rerun_id).await;
    assert_eq!(
        (&rerun["trigger"], &rerun["rerun_of"]),
        (&Value::from("rerun"), &Value::from(original.as_str()))
    );
    assert_eq!(
        rerun["tick"],
        api.get(&format!("/api/v1/runs/{original}")).await.expect(200)["tick"]
    );
}

#[tokio::test]
async fn a_broadcast_shard_is_re_run_alone_on_its_worker() {
    let dev = dev(&[]);
    let api = dev.api();
    let mut job = shell_job(
        "@yearly",
        "echo \"shard $SANDCRON_SHARD_INDEX of $SANDCRON_SHARD_COUNT, $SANDCRON_TRIGGER\"",
    );
    job["broadcast"] = Value::Bool(true);
    api.put("/api/v1/jobs/everywhere", &job).await.expect(201);
    api.post("/api/v1/jobs/everywhere/run").await.expect(202);
    let shard = wait_for("the shard of the run", Duration::from_secs(30), || async {
        api.runs("everywhere")
            .await
            .into_iter()
            .find(|r| r["status"] == "succeeded")
    })
    .await;
    let shard_id = shard["run_id"].as_str().unwrap();

    let answer = api.post(&format!("/api/v1/runs/{shard_id}/rerun")).await.expect(202);
    assert_eq!(answer["worker"], shard["worker"], "{answer}");
    assert_eq!(answer["shard"], shard["shard"], "{answer}");
    let rerun = ended(&api, answer["run_id"].as_str().expect("one shard, one run")).await;
    assert_eq!(rerun["status"], "succeeded", "{rerun}");
    assert_eq!(
        (&rerun["trigger"], &rerun["rerun_of"], &rerun["shard"], &rerun["tick"]),
        (&Value::from("rerun"), &shard["run_id"], &shard["shard"], &shard["tick"]),
        "{rerun}"
    );
    assert_eq!(lines(&api, &rerun).await, ["shard 0 of 1, rerun"]);
}
