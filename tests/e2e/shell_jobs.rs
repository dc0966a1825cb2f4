//! Shell jobs end to end: scheduling, output, kill, overlap, retries.

use std::collections::BTreeSet;
use std::time::Duration;

use sandcron_tests::{processes_in_group, wait_for};
use serde_json::{Value, json};

use crate::{dev, shell_job};

fn statuses(runs: &[Value], status: &str) -> Vec<Value> {
    runs.iter().filter(|r| r["status"] == status).cloned().collect()
}

#[tokio::test]
async fn an_every_second_job_records_one_run_per_second_with_its_output() {
    let dev = dev(&[]);
    let api = dev.api();
    api.put("/api/v1/jobs/ticker", &shell_job("@every 1s", "echo tick"))
        .await
        .expect(201);
    let runs = wait_for("four succeeded runs", Duration::from_secs(20), || async {
        let runs = api.runs("ticker").await;
        (statuses(&runs, "succeeded").len() >= 4).then_some(runs)
    })
    .await;
    let succeeded = statuses(&runs, "succeeded");
    let ticks: BTreeSet<String> = succeeded
        .iter()
        .map(|r| r["tick"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ticks.len(), succeeded.len(), "a tick ran twice: {succeeded:?}");
    // Consecutive whole seconds, each run once.
    let seconds: Vec<i64> = ticks
        .iter()
        .map(|t| t.parse::<jiff::Timestamp>().unwrap().as_second())
        .collect();
    for pair in seconds.windows(2) {
        assert_eq!(pair[1] - pair[0], 1, "ticks are not one second apart: {ticks:?}");
    }
    for run in &succeeded {
        assert_eq!(run["trigger"], "schedule");
        assert_eq!(run["exit_code"], 0);
        let output = api.output(run["run_id"].as_str().unwrap()).await;
        assert_eq!(
            output,
            vec![("stdout".to_owned(), "tick\n".to_owned())],
            "run {}",
            run["run_id"]
        );
    }
    // The job list shows the last run and the next one.
    let jobs = api.get("/api/v1/jobs").await.expect(200);
    assert_eq!(jobs[0]["name"], "ticker");
    assert!(jobs[0]["next_run"].is_string());
    assert!(jobs[0]["last_run"]["run_id"].is_string());
}

#[tokio::test]
async fn a_kill_ends_a_sleep_as_killed_and_leaves_no_process_behind() {
    let dev = dev(&[]);
    let api = dev.api();
    // The shell prints its pid (= its process group id), starts a background
    // sleeper in the same group, and waits.
    api.put(
        "/api/v1/jobs/sleeper",
        &shell_job("@yearly", "echo $$; sleep 300 & sleep 300"),
    )
    .await
    .expect(201);
    api.post("/api/v1/jobs/sleeper/run").await.expect(202);
    let run = wait_for(
        "the run to print its process group",
        Duration::from_secs(20),
        || async {
            let runs = api.runs("sleeper").await;
            let run = runs.into_iter().find(|r| r["status"] == "running")?;
            let output = api.output(run["run_id"].as_str()?).await;
            let pgid: i32 = output.first()?.1.trim().parse().ok()?;
            Some((run, pgid))
        },
    )
    .await;
    let (run, pgid) = run;
    assert_eq!(processes_in_group(pgid).len(), 3, "sh and two sleeps should be running");
    let run_id = run["run_id"].as_str().unwrap();
    let killed = api
        .post(&format!("/api/v1/jobs/sleeper/kill?run_id={run_id}"))
        .await
        .expect(202);
    assert_eq!(killed["runs"], json!([run_id]));
    let requested = std::time::Instant::now();
    let ended = wait_for("the run to end killed", Duration::from_secs(20), || async {
        let run = api.get(&format!("/api/v1/runs/{run_id}")).await.expect(200);
        (run["status"] != "running").then_some(run)
    })
    .await;
    eprintln!("kill → recorded end: {:?}", requested.elapsed());
    assert_eq!(ended["status"], "killed", "{ended}");
    assert_eq!(ended["error"], "killed on request");
    wait_for("the process group to be empty", Duration::from_secs(5), || async {
        processes_in_group(pgid).is_empty().then_some(())
    })
    .await;
    // Nothing left to kill: a precise 409.
    api.post("/api/v1/jobs/sleeper/kill")
        .await
        .expect_error(409, "conflict", "has no running runs");
}

#[tokio::test]
async fn a_job_that_outlasts_its_interval_records_skipped_ticks_when_overlap_is_forbidden() {
    let dev = dev(&[]);
    let api = dev.api();
    api.put("/api/v1/jobs/slow", &shell_job("@every 1s", "sleep 4"))
        .await
        .expect(201);
    let runs = wait_for("two skipped ticks", Duration::from_secs(20), || async {
        let runs = api.runs("slow").await;
        (statuses(&runs, "skipped").len() >= 2).then_some(runs)
    })
    .await;
    let running = statuses(&runs, "running");
    assert_eq!(running.len(), 1, "only one run at a time: {runs:?}");
    for skipped in statuses(&runs, "skipped") {
        let error = skipped["error"].as_str().unwrap();
        assert!(error.contains("still running (overlap: forbid)"), "{error}");
        assert!(
            error.contains(running[0]["run_id"].as_str().unwrap()),
            "names the blocking run: {error}"
        );
    }
    // Every tick appears once, whether run or skipped.
    let ticks: Vec<&str> = runs.iter().map(|r| r["tick"].as_str().unwrap()).collect();
    let unique: BTreeSet<&&str> = ticks.iter().collect();
    assert_eq!(unique.len(), ticks.len(), "duplicate ticks: {ticks:?}");
    // Run-now is refused while it runs, since the job forbids overlap.
    api.post("/api/v1/jobs/slow/run")
        .await
        .expect_error(409, "conflict", "overlap policy is forbid");
}

#[tokio::test]
async fn overlap_allow_runs_side_by_side_and_replace_kills_the_previous_run() {
    let dev = dev(&[]);
    let api = dev.api();
    let mut allow = shell_job("@every 1s", "sleep 3");
    allow["overlap"] = json!("allow");
    api.put("/api/v1/jobs/allow", &allow).await.expect(201);
    wait_for("two runs of one job at once", Duration::from_secs(20), || async {
        (statuses(&api.runs("allow").await, "running").len() >= 2).then_some(())
    })
    .await;
    api.delete("/api/v1/jobs/allow").await.expect(204);

    let mut replace = shell_job("@every 1s", "sleep 30");
    replace["overlap"] = json!("replace");
    api.put("/api/v1/jobs/replace", &replace).await.expect(201);
    let runs = wait_for("a run replaced by the next tick", Duration::from_secs(20), || async {
        let runs = api.runs("replace").await;
        (!statuses(&runs, "killed").is_empty()).then_some(runs)
    })
    .await;
    assert!(statuses(&runs, "skipped").is_empty(), "replace never skips: {runs:?}");
}

#[tokio::test]
async fn failed_runs_are_retried_with_backoff_and_counted_as_attempts() {
    let dev = dev(&[]);
    let api = dev.api();
    let mut job = shell_job("@every 1s", "echo attempt $SANDCRON_ATTEMPT; exit 3");
    job["retry"] = json!({"max": 2, "backoff_s": 1});
    job["overlap"] = json!("allow");
    api.put("/api/v1/jobs/flaky", &job).await.expect(201);
    let runs = wait_for("a first attempt and two retries", Duration::from_secs(30), || async {
        let runs = api.runs("flaky").await;
        runs.iter()
            .any(|r| r["attempt"] == 3 && r["status"] == "failed")
            .then_some(runs)
    })
    .await;
    api.post("/api/v1/jobs/flaky/pause").await.expect(200);
    let retry3 = runs.iter().find(|r| r["attempt"] == 3).unwrap();
    assert_eq!(retry3["trigger"], "retry");
    assert_eq!(retry3["exit_code"], 3);
    let first = runs
        .iter()
        .find(|r| r["attempt"] == 1 && r["tick"] == retry3["tick"])
        .unwrap();
    assert_eq!(first["trigger"], "schedule");
    let output = api.output(retry3["run_id"].as_str().unwrap()).await;
    assert_eq!(output[0].1, "attempt 3\n");
    // No fourth attempt: max is 2 retries.
    assert!(runs.iter().all(|r| r["attempt"].as_u64().unwrap() <= 3));
}

#[tokio::test]
async fn a_paused_jobs_retry_waits_until_the_job_is_resumed() {
    let dev = dev(&[]);
    let api = dev.api();
    let mut job = shell_job(&crate::once_in(2), "echo attempt $SANDCRON_ATTEMPT; exit 3");
    job["retry"] = json!({"max": 1, "backoff_s": 3});
    api.put("/api/v1/jobs/held", &job).await.expect(201);
    crate::failed_attempt(&api, "held", 1, Duration::from_secs(20)).await;
    api.post("/api/v1/jobs/held/pause").await.expect(200);
    let pending = crate::first_pending(&api, "held").await;
    let not_before: jiff::Timestamp = pending["not_before"].as_str().unwrap().parse().unwrap();
    // Let the backoff pass while the job is paused: the retry stays pending.
    let past = not_before.duration_since(jiff::Timestamp::now()) + jiff::SignedDuration::from_secs(2);
    tokio::time::sleep(past.try_into().unwrap_or_default()).await;
    let runs = api.runs("held").await;
    assert!(
        runs.iter().all(|r| r["attempt"] == 1),
        "no retry while paused: {runs:?}"
    );
    let view = api.get("/api/v1/jobs/held").await.expect(200);
    assert_eq!(view["pending"][0]["trigger"], "retry", "{view}");
    // Resumed, it runs at once (its backoff is over).
    api.post("/api/v1/jobs/held/resume").await.expect(200);
    let retry = crate::failed_attempt(&api, "held", 2, Duration::from_secs(20)).await;
    assert_eq!(retry["trigger"], "retry");
    assert_eq!(api.output(retry["run_id"].as_str().unwrap()).await[0].1, "attempt 2\n");
}

#[tokio::test]
async fn run_now_of_a_paused_job_runs_once_and_keeps_it_paused() {
    let dev = dev(&[]);
    let api = dev.api();
    let mut job = shell_job("@every 1s", "echo manual");
    job["paused"] = json!(true);
    api.put("/api/v1/jobs/paused", &job).await.expect(201);
    let reply = api.post("/api/v1/jobs/paused/run").await.expect(202);
    assert_eq!(reply["note"], "the job is paused; this run does not resume it");
    let runs = wait_for("the manual run", Duration::from_secs(20), || async {
        let runs = api.runs("paused").await;
        (!statuses(&runs, "succeeded").is_empty()).then_some(runs)
    })
    .await;
    assert_eq!(runs.len(), 1, "only the manual run: {runs:?}");
    assert_eq!(runs[0]["trigger"], "manual");
    let view = api.get("/api/v1/jobs/paused").await.expect(200);
    assert_eq!(view["status"], "paused");
    assert_eq!(view["paused"], true);
}

#[tokio::test]
async fn output_is_streamed_while_the_run_runs_and_cut_at_its_limit() {
    let dev = dev(&[]);
    let api = dev.api();
    let job = json!({"schedule": "@yearly", "kind": {"shell": {
        "command": "echo first; echo err >&2; sleep 2; echo second; head -c 5000 /dev/zero | tr '\\0' x",
        "output_kb": 2}}});
    api.put("/api/v1/jobs/chatty", &job).await.expect(201);
    api.post("/api/v1/jobs/chatty/run").await.expect(202);
    // "first" is visible before the run ends.
    let run_id = wait_for("output while running", Duration::from_secs(20), || async {
        let runs = api.runs("chatty").await;
        let run = runs.first()?;
        let id = run["run_id"].as_str()?.to_owned();
        let output = api.output(&id).await;
        (run["status"] == "running" && output.iter().any(|(_, d)| d.contains("first"))).then_some(id)
    })
    .await;
    // Follow until done, in pages.
    let mut after: Option<u64> = None;
    let mut text = String::new();
    let mut stderr = String::new();
    loop {
        let mut path = format!("/api/v1/runs/{run_id}/output?follow=true&wait_s=10");
        if let Some(after) = after {
            path.push_str(&format!("&after={after}"));
        }
        let page = api.get(&path).await.expect(200);
        for chunk in page["chunks"].as_array().unwrap() {
            let target = if chunk["stream"] == "stderr" {
                &mut stderr
            } else {
                &mut text
            };
            target.push_str(chunk["data"].as_str().unwrap());
        }
        after = page["next_after"].as_u64();
        if page["done"] == true {
            assert_eq!(page["truncated"], true);
            break;
        }
    }
    assert!(text.starts_with("first\nsecond\nxxx"), "{text:?}");
    assert_eq!(
        text.len() + "err\n".len(),
        2048,
        "output is cut at output_kb, both streams counted"
    );
    assert!(stderr.starts_with("err\n"), "{stderr:?}");
    assert!(
        stderr.ends_with("[sandcron: output truncated at 2048 bytes]\n"),
        "{stderr:?}"
    );
    let run = api.get(&format!("/api/v1/runs/{run_id}")).await.expect(200);
    assert_eq!(run["truncated"], true);
    assert_eq!(run["output_bytes"], 2048);
    assert_eq!(run["status"], "succeeded");
}

#[tokio::test]
async fn a_result_line_on_stdout_is_recorded_with_the_run() {
    let dev = dev(&[]);
    let api = dev.api();
    let job = shell_job(
        "@yearly",
        "echo working; echo '::sandcron::result {\"rows\": 42, \"ok\": true}'",
    );
    api.put("/api/v1/jobs/reporter", &job).await.expect(201);
    api.post("/api/v1/jobs/reporter/run").await.expect(202);
    let run = wait_for("the run to succeed", Duration::from_secs(20), || async {
        api.runs("reporter")
            .await
            .into_iter()
            .find(|r| r["status"] == "succeeded")
    })
    .await;
    assert_eq!(run["result"], json!({"rows": 42, "ok": true}));
    // The line stays in the output too.
    let output = api.output(run["run_id"].as_str().unwrap()).await;
    assert!(
        output.iter().any(|(_, text)| text.contains("::sandcron::result")),
        "{output:?}"
    );
}

/// A worker's caps (`max_timeout_s`, `max_output_kb`) bound every run,
/// whatever the job asks, and the run's output says what was lowered.
#[tokio::test]
async fn a_worker_s_caps_bound_a_job_that_asks_for_more() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("caps.toml");
    std::fs::write(&config, "[worker]\nmax_timeout_s = 1\nmax_output_kb = 1\n").unwrap();
    let dev = dev(&["--config", config.to_str().unwrap()]);
    let api = dev.api();
    let mut job = shell_job("0 0 1 1 *", "head -c 5000 /dev/zero | tr '\\0' x; sleep 30");
    job["kind"]["shell"]["timeout_s"] = json!(3600);
    api.put("/api/v1/jobs/greedy", &job).await.expect(201);
    api.post("/api/v1/jobs/greedy/run").await.expect(202);
    let run = wait_for("the capped run to end", Duration::from_secs(20), || async {
        api.runs("greedy").await.into_iter().find(|r| r["status"] != "running")
    })
    .await;
    assert_eq!(run["status"], "timed_out", "{run}");
    assert_eq!(run["truncated"], true, "{run}");
    assert!(run["output_bytes"].as_u64().unwrap() <= 1024, "{run}");
    let stderr: String = api
        .output(run["run_id"].as_str().unwrap())
        .await
        .into_iter()
        .filter(|(stream, _)| stream == "stderr")
        .map(|(_, text)| text)
        .collect();
    assert!(
        stderr.contains("[sandcron: this worker's caps lowered timeout_s 3600 → 1, output_kb 1024 → 1]"),
        "{stderr}"
    );
    // The job itself keeps what it asked for.
    let stored = api.get("/api/v1/jobs/greedy").await.expect(200);
    assert_eq!(stored["kind"]["shell"]["timeout_s"], 3600);
}
