//! Least-loaded hand-off in a cluster of processes (real etcd, a real
//! MongoDB-wire server): worker `a` has one slot, taken by a long run; the
//! ticks of a second job `a` owns run on `b`, which has free slots, while the
//! long run still runs — each tick once, recorded as handed off from `a` —
//! and the workers API, the CLI and the history checker agree.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use sandcron_tests::cluster::WorkerProcess;
use sandcron_tests::{Api, wait_for, wasm_job};
use serde_json::Value;

use crate::cluster::{Stores, settle, unix, wait_for_workers};
use crate::{BIN, guest_wat};

/// Waits until `worker` itself counts `count` live workers: a worker offers
/// a run only to workers it knows.
async fn wait_until_seen(worker: &WorkerProcess, count: usize) {
    wait_for(
        &format!("{} to see {count} workers", worker.id),
        Duration::from_secs(30),
        || async { (worker.metric("sandcron_live_workers").await == Some(count as f64)).then_some(()) },
    )
    .await;
}

/// Two job names that rendezvous placement gives to `owner`, found by
/// creating candidates and reading the owner the API reports for each; the
/// other candidates are deleted again.
async fn jobs_owned_by(api: &Api, owner: &str, digest: &str) -> (String, String) {
    let candidates: Vec<String> = (0..40).map(|i| format!("cand-{i:02}")).collect();
    for name in &candidates {
        api.put(&format!("/api/v1/jobs/{name}"), &wasm_job("@yearly", digest, None))
            .await
            .expect(201);
    }
    let owners: BTreeMap<String, String> = api
        .jobs()
        .await
        .iter()
        .map(|job| {
            (
                job["name"].as_str().unwrap_or_default().to_owned(),
                job["owner"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let mut owned = candidates
        .iter()
        .filter(|name| owners.get(*name).map(String::as_str) == Some(owner));
    let (first, second) = match (owned.next(), owned.next()) {
        (Some(first), Some(second)) => (first.clone(), second.clone()),
        _ => panic!(
            "fewer than two of {} candidates are owned by {owner}: {owners:?}",
            candidates.len()
        ),
    };
    for name in candidates.iter().filter(|name| **name != first && **name != second) {
        api.delete(&format!("/api/v1/jobs/{name}")).await.expect(204);
    }
    (first, second)
}

/// `sandcron <args> --server <server>`: exit code, stdout, stdout and stderr.
fn sandcron(args: &[&str], server: &str) -> (i32, String, String) {
    let output = Command::new(BIN)
        .args(args)
        .args(["--server", server])
        .env_remove("SANDCRON_TOKEN")
        .output()
        .expect("run sandcron");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let all = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), stdout, all)
}

fn worker<'w>(workers: &'w Value, id: &str) -> Option<&'w Value> {
    workers.as_array()?.iter().find(|w| w["id"] == id)
}

#[tokio::test]
async fn a_run_whose_owner_is_at_capacity_runs_at_once_on_a_worker_with_a_free_slot() {
    let stores = Stores::start();
    let env = stores.env("handoff");
    let master = env.master("master", "");
    let api = master.api();
    let a = env.worker("a", "capacity = 1\nlease_ttl_s = 3");
    let b = env.worker("b", "capacity = 4\nlease_ttl_s = 3");
    wait_for_workers(&api, 2).await;
    wait_until_seen(&a, 2).await;
    wait_until_seen(&b, 2).await;
    let hello = api.upload_module(guest_wat("hello")).await;
    let sleep = api.upload_module(guest_wat("sleep")).await;
    let (long, second) = jobs_owned_by(&api, "a", &hello).await;

    // The long run (a 60 s sleep) takes a's only slot.
    api.put(&format!("/api/v1/jobs/{long}"), &wasm_job("@yearly", &sleep, None))
        .await
        .expect(200);
    api.post(&format!("/api/v1/jobs/{long}/run")).await.expect(202);
    let long_run = wait_for("the long run to start on a", Duration::from_secs(30), || async {
        api.runs(&long).await.into_iter().find(|r| r["status"] == "running")
    })
    .await;
    assert_eq!(long_run["worker"], "a", "{long_run}");

    // The second job fires every second; a claims each tick but has no slot.
    api.put(
        &format!("/api/v1/jobs/{second}"),
        &wasm_job("* * * * * *", &hello, None),
    )
    .await
    .expect(200);
    let started = Timestamp::now();
    let ran = wait_for(
        "five ticks of the second job to run",
        Duration::from_secs(60),
        || async {
            let ran: Vec<Value> = api
                .runs(&second)
                .await
                .into_iter()
                .filter(|r| r["status"] == "succeeded")
                .collect();
            (ran.len() >= 5).then_some(ran)
        },
    )
    .await;
    // Read after the second job's runs: the long run was still running when
    // every one of them had ended, so none waited for a's slot.
    let long_now = api.runs(&long).await;
    assert_eq!(long_now.len(), 1, "{long_now:?}");
    assert_eq!(long_now[0]["status"], "running", "{long_now:?}");
    for run in &ran {
        assert_eq!(run["worker"], "b", "a run of {second} ran on its owner: {run}");
        assert_eq!(run["handed_off_from"], "a", "{run}");
        assert_eq!(run["trigger"], "schedule", "{run}");
        assert!(run["fence"].as_i64().unwrap_or(0) > 0, "{run}");
    }

    // The workers API, the console's source, shows a's one slot in use and
    // b's free ones; the CLI prints the same.
    let workers = api.get("/api/v1/workers").await.expect(200);
    let load = |id: &str| {
        let w = worker(&workers, id).unwrap_or_else(|| panic!("{id} listed: {workers}"));
        (w["capacity"].as_u64(), w["slots_in_use"].as_u64())
    };
    assert_eq!(load("a"), (Some(1), Some(1)), "{workers}");
    assert_eq!(load("b").0, Some(4), "{workers}");
    assert!(load("b").1.is_some_and(|used| used < 4), "{workers}");
    let (code, out, all) = sandcron(&["workers"], &master.base);
    assert_eq!(code, 0, "{all}");
    assert!(
        out.lines().next().is_some_and(|header| header.contains("SLOTS IN USE")),
        "{out}"
    );
    let row_a = out
        .lines()
        .find(|line| line.starts_with("a "))
        .unwrap_or_else(|| panic!("a row for a: {out}"));
    assert!(row_a.contains(" 1/1 "), "{out}");
    // Each side counts the hand-offs in its /metrics.
    let handed_off = ran.len() as f64;
    assert!(
        a.metric("sandcron_runs_offered_total")
            .await
            .is_some_and(|n| n >= handed_off),
        "a offered at least the {handed_off} runs b took"
    );
    assert!(
        b.metric("sandcron_runs_taken_over_total")
            .await
            .is_some_and(|n| n >= handed_off),
        "b counted the {handed_off} runs it took over"
    );

    // Each tick ran once: no tick of the second job has two runs, and the
    // history checker agrees over the ticks since it began.
    let stopped = Timestamp::now();
    settle(&api, std::slice::from_ref(&second)).await;
    let mut per_tick: BTreeMap<i64, usize> = BTreeMap::new();
    for run in api.runs(&second).await {
        if run["trigger"] == "schedule" || run["trigger"] == "catchup" {
            *per_tick.entry(unix(&run["tick"])).or_default() += 1;
        }
    }
    assert!(per_tick.len() >= 5, "{per_tick:?}");
    let twice: Vec<_> = per_tick.iter().filter(|(_, runs)| **runs > 1).collect();
    assert!(twice.is_empty(), "ticks run more than once: {twice:?}");
    let since = (started + SignedDuration::from_secs(2)).to_string();
    let until = (stopped - SignedDuration::from_secs(1)).to_string();
    let (code, report, all) = sandcron(
        &[
            "check-history",
            "--job",
            &second,
            "--since",
            &since,
            "--until",
            &until,
            "--json",
        ],
        &master.base,
    );
    assert_eq!(code, 0, "{all}");
    let report: Value = serde_json::from_str(&report).unwrap_or(Value::Null);
    assert!(report["executed"].as_u64().unwrap_or(0) >= 1, "{report}");

    // Both sides say so in their logs.
    assert!(
        a.proc
            .log_text()
            .contains("run handed off to a worker with a free slot")
    );
    assert!(
        b.proc
            .log_text()
            .contains("took over a run its worker had no free slot for")
    );
    api.post(&format!("/api/v1/jobs/{long}/kill"))
        .await
        .expect_one_of(&[200, 202]);
}
