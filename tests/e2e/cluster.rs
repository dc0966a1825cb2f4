//! Cluster mode end to end: real etcd, a real MongoDB-wire server, and
//! masters and workers as separate processes. Every test checks the run
//! history for the guarantees: at most one run per (job, tick), and every
//! tick either run or recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use sandcron_tests::cluster::{ClusterEnv, Master, WorkerProcess};
use sandcron_tests::etcd::{EtcdCluster, EtcdServer};
use sandcron_tests::mongo::MongoServer;
use sandcron_tests::{Api, wait_for, wasm_job};
use serde_json::{Value, json};

use crate::guest_wat;

/// Lease TTL of the test workers: short, so failover is quick.
const LEASE: &str = "lease_ttl_s = 3";

pub(crate) struct Stores {
    pub(crate) etcd: EtcdServer,
    pub(crate) mongo: MongoServer,
    dir: tempfile::TempDir,
}

impl Stores {
    pub(crate) fn start() -> Stores {
        Stores {
            etcd: EtcdServer::start(),
            mongo: MongoServer::start(),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub(crate) fn env(&self, namespace: &str) -> ClusterEnv {
        ClusterEnv {
            bin: crate::BIN.to_owned(),
            dir: self.dir.path().to_owned(),
            etcd_endpoints: vec![self.etcd.endpoint()],
            mongo_uri: self.mongo.uri(),
            namespace: namespace.to_owned(),
        }
    }
}

/// Creates `count` WASM jobs `<prefix>NN` firing every second; returns their names.
async fn every_second_jobs(api: &Api, digest: &str, prefix: &str, count: usize) -> Vec<String> {
    let jobs: Vec<String> = (0..count).map(|i| format!("{prefix}{i:02}")).collect();
    for job in &jobs {
        api.put(&format!("/api/v1/jobs/{job}"), &wasm_job("* * * * * *", digest, None))
            .await
            .expect(201);
    }
    jobs
}

/// Waits until the master lists exactly `count` live workers (30 s at most).
pub(crate) async fn wait_for_workers(api: &Api, count: usize) {
    sandcron_tests::cluster::wait_for_workers(api, count, Duration::from_secs(30)).await;
}

pub(crate) fn unix(tick: &Value) -> i64 {
    tick.as_str()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .map(|t| t.as_second())
        .expect("tick")
}

/// Checks one every-second job's history between `from` and `to` (Unix
/// seconds, inclusive): no tick accepted twice, every tick accounted for by
/// a run or a recorded skip/miss (a summary miss covers its whole range).
/// Returns how many ticks ran.
fn check_every_second_history(job: &str, runs: &[Value], from: i64, to: i64) -> usize {
    let mut seen: BTreeMap<i64, Vec<&Value>> = BTreeMap::new();
    for run in scheduled(runs) {
        seen.entry(unix(&run["tick"])).or_default().push(run);
    }
    for (tick, runs) in &seen {
        assert_eq!(
            runs.len(),
            1,
            "{job}: tick {tick} accepted {} times: {runs:?}",
            runs.len()
        );
    }
    let missing = uncovered(runs, from, to);
    assert!(missing.is_empty(), "{job}: ticks neither run nor recorded: {missing:?}");
    seen.values().filter(|r| r[0]["status"] == "succeeded").count()
}

/// The runs a schedule accounts for: scheduled ticks and catch-ups.
fn scheduled(runs: &[Value]) -> impl Iterator<Item = &Value> {
    runs.iter()
        .filter(|r| r["trigger"] == "schedule" || r["trigger"] == "catchup")
}

/// The ticks in `from..=to` that no run or missed-range record accounts for.
fn uncovered(runs: &[Value], from: i64, to: i64) -> Vec<i64> {
    let mut covered = BTreeSet::new();
    for run in scheduled(runs) {
        let tick = unix(&run["tick"]);
        covered.insert(tick);
        if !run["missed_until"].is_null() {
            covered.extend(tick..=unix(&run["missed_until"]));
        }
    }
    (from..=to).filter(|t| !covered.contains(t)).collect()
}

/// Pauses every job and waits until nothing runs, so the history is final.
pub(crate) async fn settle(api: &Api, jobs: &[String]) {
    for job in jobs {
        api.post(&format!("/api/v1/jobs/{job}/pause")).await.expect(200);
    }
    wait_for("runs to finish", Duration::from_secs(30), || async {
        let mut running = 0;
        for job in jobs {
            running += api.runs(job).await.iter().filter(|r| r["status"] == "running").count();
        }
        (running == 0).then_some(())
    })
    .await;
}

/// Ends an every-second test now: settles `jobs`, then checks each one's
/// history over the ticks every job certainly covered (from 2 s after
/// `started`, when the last job was created, to 2 s before the first
/// pause). Returns how many ticks ran.
async fn settle_and_check(api: &Api, jobs: &[String], started: Timestamp) -> usize {
    let stopped = Timestamp::now();
    settle(api, jobs).await;
    let (from, to) = (started.as_second() + 2, stopped.as_second() - 2);
    let mut ran = 0;
    for job in jobs {
        ran += check_every_second_history(job, &api.runs(job).await, from, to);
    }
    ran
}

#[tokio::test]
async fn three_workers_run_every_tick_of_thirty_jobs_exactly_once() {
    let stores = Stores::start();
    let env = stores.env("exactly-once");
    let master = env.master("master", "");
    let api = master.api();
    let _workers: Vec<WorkerProcess> = (1..=3).map(|i| env.worker(&format!("w{i}"), LEASE)).collect();
    wait_for_workers(&api, 3).await;
    let hello = api.upload_module(guest_wat("hello")).await;
    let jobs = every_second_jobs(&api, &hello, "job-", 30).await;
    let started = Timestamp::now();
    // Work is spread: every worker owns some jobs.
    let owners: BTreeSet<String> = api
        .jobs()
        .await
        .iter()
        .map(|j| j["owner"].as_str().unwrap_or("none").to_owned())
        .collect();
    assert_eq!(owners.len(), 3, "jobs are spread over the workers: {owners:?}");
    tokio::time::sleep(Duration::from_secs(30)).await;
    let ran = settle_and_check(&api, &jobs, started).await;
    eprintln!("30 jobs: {ran} runs succeeded");
    assert!(ran >= 30 * 20, "most ticks ran: {ran}");
}

#[tokio::test]
async fn a_killed_worker_s_jobs_move_and_its_run_is_recorded_lost() {
    let stores = Stores::start();
    let env = stores.env("failover");
    let master = env.master("master", "");
    let api = master.api();
    let mut workers: Vec<WorkerProcess> = (1..=3).map(|i| env.worker(&format!("w{i}"), LEASE)).collect();
    wait_for_workers(&api, 3).await;
    let hello = api.upload_module(guest_wat("hello")).await;
    let sleep = api.upload_module(guest_wat("sleep")).await;
    let jobs: Vec<String> = (0..12).map(|i| format!("tick-{i:02}")).collect();
    for job in &jobs {
        let mut body = wasm_job("* * * * * *", &hello, None);
        body["catchup"] = json!({"policy": "skip"});
        api.put(&format!("/api/v1/jobs/{job}"), &body).await.expect(201);
    }
    api.put("/api/v1/jobs/long", &wasm_job("@yearly", &sleep, None))
        .await
        .expect(201);
    api.post("/api/v1/jobs/long/run").await.expect(202);
    let long_run = wait_for("the long run to start", Duration::from_secs(30), || async {
        api.runs("long").await.into_iter().find(|r| r["status"] == "running")
    })
    .await;
    let started = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Kill the worker running the long run.
    let victim = long_run["worker"].as_str().unwrap().to_owned();
    let index = workers
        .iter()
        .position(|w| w.id == victim)
        .expect("victim is one of ours");
    let victim_jobs: Vec<String> = api
        .jobs()
        .await
        .iter()
        .filter(|j| j["owner"] == victim.as_str() && j["name"] != "long")
        .map(|j| j["name"].as_str().unwrap().to_owned())
        .collect();
    let killed_at = Instant::now();
    workers[index].proc.kill9();
    // Within the lease TTL + 2 s its jobs run elsewhere.
    wait_for(
        "the victim's jobs to run on other workers",
        Duration::from_secs(3 + 2 + 5),
        || async {
            for job in &victim_jobs {
                let runs = api.runs(job).await;
                let moved = runs
                    .iter()
                    .any(|r| r["status"] == "succeeded" && r["worker"] != victim.as_str());
                if !moved {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    eprintln!("failover after kill -9: {:?} (lease TTL 3 s)", killed_at.elapsed());
    let run = wait_for("the long run to be recorded lost", Duration::from_secs(20), || async {
        let run = api
            .get(&format!("/api/v1/runs/{}", long_run["run_id"].as_str().unwrap()))
            .await
            .expect(200);
        (run["status"] == "lost").then_some(run)
    })
    .await;
    assert!(run["error"].as_str().unwrap().contains(&victim), "{run}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    settle(&api, &["long".to_owned()]).await;
    settle_and_check(&api, &jobs, started).await;
    // The victim's jobs have missed ticks recorded for the gap.
    let missed: usize = {
        let mut count = 0;
        for job in &victim_jobs {
            count += api.runs(job).await.iter().filter(|r| r["status"] == "missed").count();
        }
        count
    };
    assert!(
        victim_jobs.is_empty() || missed > 0,
        "the gap's ticks are recorded missed (catch-up: skip)"
    );
}

#[tokio::test]
async fn a_worker_paused_past_its_lease_never_runs_a_tick_twice() {
    let stores = Stores::start();
    let env = stores.env("sigstop");
    let master = env.master("master", "");
    let api = master.api();
    let workers: Vec<WorkerProcess> = (1..=3).map(|i| env.worker(&format!("w{i}"), LEASE)).collect();
    wait_for_workers(&api, 3).await;
    let hello = api.upload_module(guest_wat("hello")).await;
    let jobs = every_second_jobs(&api, &hello, "job-", 12).await;
    let started = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    workers[0].proc.pause();
    // Past the lease: its jobs move; then it wakes up believing it owns them.
    wait_for_workers(&api, 2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    workers[0].proc.resume();
    wait_for_workers(&api, 3).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    settle_and_check(&api, &jobs, started).await;
}

#[tokio::test]
async fn workers_with_skewed_clocks_never_run_a_tick_twice() {
    let stores = Stores::start();
    let env = stores.env("skew");
    let master = env.master("master", "");
    let api = master.api();
    let _workers = [
        env.worker("early", &format!("{LEASE}\nclock_offset_ms = 2000")),
        env.worker("late", &format!("{LEASE}\nclock_offset_ms = -2000")),
        env.worker("right", LEASE),
    ];
    wait_for_workers(&api, 3).await;
    let hello = api.upload_module(guest_wat("hello")).await;
    let jobs = every_second_jobs(&api, &hello, "job-", 12).await;
    let started = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(12)).await;
    settle_and_check(&api, &jobs, started).await;
}

#[tokio::test]
async fn an_etcd_outage_is_survived_and_its_ticks_are_recorded() {
    let mut stores = Stores::start();
    let env = stores.env("etcd-outage");
    let master = env.master("master", "");
    let api = master.api();
    let _workers: Vec<WorkerProcess> = (1..=2).map(|i| env.worker(&format!("w{i}"), LEASE)).collect();
    wait_for_workers(&api, 2).await;
    let hello = api.upload_module(guest_wat("hello")).await;
    // An `overlap: forbid` job whose run times out early in the outage, when
    // its worker cannot remove the run's `running/` entry. The worker keeps
    // its lease through the outage (etcd extends leases when it restarts),
    // so an entry left behind would skip every later tick of the job.
    let sleep = api.upload_module(guest_wat("sleep")).await;
    let mut sleeper = wasm_job("* * * * * *", &sleep, Some(json!({"timeout_s": 5})));
    sleeper["overlap"] = json!("forbid");
    api.put("/api/v1/jobs/sleeper", &sleeper).await.expect(201);
    wait_for("the sleeper to start", Duration::from_secs(30), || async {
        api.runs("sleeper").await.into_iter().find(|r| r["status"] == "running")
    })
    .await;
    let jobs = every_second_jobs(&api, &hello, "job-", 6).await;
    let started = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stores.etcd.stop();
    let outage = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    stores.etcd.start_again();
    // Workers reconnect, re-register and go on.
    wait_for_workers(&api, 2).await;
    let after = Timestamp::now().as_second();
    // Generous: on a loaded 2-core CI machine reconnection (client backoff,
    // re-listing every watch, recovery claims) once took longer than 30 s.
    wait_for("runs after the outage", Duration::from_secs(60), || async {
        let sleeper_ran = api
            .runs("sleeper")
            .await
            .iter()
            .any(|r| r["status"] != "skipped" && unix(&r["tick"]) > after);
        if !sleeper_ran {
            return None;
        }
        for job in &jobs {
            let ran_after = api
                .runs(job)
                .await
                .iter()
                .any(|r| r["status"] == "succeeded" && unix(&r["tick"]) > after);
            if !ran_after {
                return None;
            }
        }
        Some(())
    })
    .await;
    settle_and_check(&api, &jobs, started).await;
    for job in &jobs {
        let runs = api.runs(job).await;
        let outage_ticks: Vec<&Value> = runs
            .iter()
            .filter(|r| (outage.as_second() + 1..outage.as_second() + 9).contains(&unix(&r["tick"])))
            .collect();
        assert!(
            outage_ticks
                .iter()
                .all(|r| r["status"] != "succeeded" || r["trigger"] == "catchup"),
            "{job}"
        );
    }
}

#[tokio::test]
async fn a_skip_whose_worker_died_before_recording_it_is_recorded_by_the_next_owner() {
    let stores = Stores::start();
    let env = stores.env("lost-skip");
    let master = env.master("master", "");
    let api = master.api();
    // w1 holds its log records for a minute (the default is 100 ms), so when
    // it is killed the records of the ticks it skipped are still in memory.
    let mut w1 = env.worker("w1", &format!("{LEASE}\n[logs]\nflush_ms = 60000\nbatch_docs = 100000"));
    wait_for_workers(&api, 1).await;
    let sleep = api.upload_module(guest_wat("sleep")).await;
    let mut body = wasm_job("* * * * * *", &sleep, None);
    body["overlap"] = json!("forbid");
    api.put("/api/v1/jobs/blocked", &body).await.expect(201);
    // Its first run sleeps a minute; every later tick is claimed as skipped.
    wait_for("w1 to skip two ticks", Duration::from_secs(30), || async {
        let skipped = w1.metric(r#"sandcron_runs_total{status="skipped"}"#).await?;
        (skipped >= 2.0).then_some(())
    })
    .await;
    w1.proc.kill9();
    let killed = Timestamp::now().as_second();
    let _w2 = env.worker("w2", LEASE);
    // w2 takes the job over. The claim state says w1's last claim skipped its
    // tick; the log store has no record of it, so w2 writes it.
    let skip_tick = wait_for("w2 to record w1's last skip", Duration::from_secs(30), || async {
        api.runs("blocked").await.iter().find_map(|r| {
            let tick = unix(&r["tick"]);
            (r["status"] == "skipped" && r["worker"] == "w2" && tick <= killed).then_some(tick)
        })
    })
    .await;
    // From that tick on, every tick is accounted for exactly once: w1's
    // skip, the ticks no worker claimed (caught up or recorded missed), and
    // w2's own. Records may reach the store in more than one flush, so wait
    // until all of them up to `to` are there.
    let to = Timestamp::now().as_second();
    let runs = wait_for("w2 to record every tick up to now", Duration::from_secs(30), || async {
        let runs = api.runs("blocked").await;
        uncovered(&runs, skip_tick, to).is_empty().then_some(runs)
    })
    .await;
    check_every_second_history("blocked", &runs, skip_tick, to);
    // w1's run, whose records never left w1 either, is recorded lost once
    // w1's lease (and with it the run's entry) is gone.
    wait_for("w1's run to be recorded lost", Duration::from_secs(30), || async {
        let runs = api.runs("blocked").await;
        let lost: Vec<&Value> = runs.iter().filter(|r| r["status"] == "lost").collect();
        assert!(lost.len() <= 1, "one run, lost once: {lost:?}");
        lost.first().map(|r| assert_eq!(r["worker"], "w1", "{r}"))
    })
    .await;
}

#[tokio::test]
async fn queued_catch_up_ticks_of_a_killed_worker_are_recorded_by_the_next_owner() {
    let stores = Stores::start();
    let env = stores.env("queued-catchup");
    let master = env.master("master", "");
    let api = master.api();
    let sleep = api.upload_module(guest_wat("sleep")).await;
    // Created while no worker runs: its first ticks pass unclaimed, and the
    // first worker catches all of them up, one 3-second run after another.
    let mut body = wasm_job("* * * * * *", &sleep, Some(json!({"timeout_s": 3})));
    body["catchup"] = json!({"policy": "all", "window_s": 300});
    let created = api.put("/api/v1/jobs/backlog", &body).await.expect(201);
    let active_since = unix(&created["meta"]["active_since"]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut w1 = env.worker("w1", LEASE);
    wait_for("w1's first catch-up run", Duration::from_secs(30), || async {
        api.runs("backlog")
            .await
            .into_iter()
            .find(|r| r["trigger"] == "catchup" && r["status"] == "running")
    })
    .await;
    // Killed with the rest of its catch-up queue not started.
    w1.proc.kill9();
    let killed = Timestamp::now().as_second();
    let _w2 = env.worker("w2", LEASE);
    // w2 takes the job over: the claim state lists w1's queue, which w2
    // records missed; w1's run in progress is recorded lost.
    // The records arrive in more than one flush under load: wait until
    // every tick before the kill is accounted for, then check each once.
    let (from, to) = (active_since + 1, killed - 2);
    let runs = wait_for(
        "w2 to account for w1's queue and run",
        Duration::from_secs(30),
        || async {
            let runs = api.runs("backlog").await;
            let queue_recorded = runs
                .iter()
                .any(|r| r["status"] == "missed" && r["trigger"] == "catchup" && r["worker"] == "w2");
            let run_lost = runs.iter().any(|r| r["status"] == "lost" && r["worker"] == "w1");
            (queue_recorded && run_lost && uncovered(&runs, from, to).is_empty()).then_some(runs)
        },
    )
    .await;
    let abandoned: Vec<&Value> = runs
        .iter()
        .filter(|r| r["status"] == "missed" && r["worker"] == "w2" && unix(&r["tick"]) < killed)
        .collect();
    assert!(
        abandoned.iter().all(|r| r["error"]
            .as_str()
            .is_some_and(|e| e.contains("queued on a worker that stopped"))),
        "{abandoned:?}"
    );
    // Every tick w1 accounted for — caught up, queued, skipped while its
    // catch-up ran — is recorded exactly once.
    check_every_second_history("backlog", &runs, from, to);
}

#[tokio::test]
async fn a_pending_retry_survives_its_worker_and_runs_after_its_backoff_on_the_next() {
    let stores = Stores::start();
    let env = stores.env("durable-retry");
    let master = env.master("master", "");
    let api = master.api();
    let mut w1 = env.worker("w1", LEASE);
    wait_for_workers(&api, 1).await;
    let exit3 = api.upload_module(guest_wat("exit3")).await;
    // One tick, three seconds from now; it fails, and its one retry waits 6 s.
    let mut body = wasm_job(&crate::once_in(3), &exit3, None);
    body["retry"] = json!({"max": 1, "backoff_s": 6});
    api.put("/api/v1/jobs/flaky", &body).await.expect(201);
    let first = wait_for("the first attempt to fail", Duration::from_secs(30), || async {
        api.runs("flaky").await.into_iter().find(|r| r["status"] == "failed")
    })
    .await;
    assert_eq!(
        (first["attempt"].as_u64(), first["worker"].as_str()),
        (Some(1), Some("w1"))
    );
    // The retry is stored with the end of the run, and the job view shows it.
    let pending = crate::first_pending(&api, "flaky").await;
    assert_eq!(
        (pending["trigger"].as_str(), pending["attempt"].as_u64()),
        (Some("retry"), Some(2))
    );
    assert_eq!(pending["tick"], first["tick"]);
    let not_before: Timestamp = pending["not_before"].as_str().expect("not_before").parse().unwrap();
    // w1 stops during the backoff (a restart, a deploy); w2 takes the job.
    assert_eq!(w1.proc.stop(), Some(0));
    let _w2 = env.worker("w2", LEASE);
    let retry = crate::failed_attempt(&api, "flaky", 2, Duration::from_secs(30)).await;
    assert_eq!(retry["trigger"], "retry");
    assert_eq!(retry["worker"], "w2");
    assert_eq!(retry["tick"], first["tick"], "a retry re-runs its tick");
    let ended: Timestamp = first["ended_at"].as_str().unwrap().parse().unwrap();
    let started: Timestamp = retry["started_at"].as_str().unwrap().parse().unwrap();
    assert!(
        not_before.duration_since(ended) >= jiff::SignedDuration::from_secs(6) && started >= not_before,
        "the backoff is kept: ended {ended}, due {not_before}, retried {started}"
    );
    // max 1: no third attempt, and the first's tick has exactly these two.
    let runs = api.runs("flaky").await;
    assert_eq!(runs.len(), 2, "{runs:?}");
    let view = api.get("/api/v1/jobs/flaky").await.expect(200);
    assert_eq!(view["pending"], json!([]), "nothing left waiting");
}

#[tokio::test]
async fn scheduling_goes_on_when_the_etcd_leader_dies() {
    let mut etcd = EtcdCluster::start(3);
    let mongo = MongoServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let env = ClusterEnv {
        bin: crate::BIN.to_owned(),
        dir: dir.path().to_owned(),
        etcd_endpoints: etcd.endpoints(),
        mongo_uri: mongo.uri(),
        namespace: "leader".into(),
    };
    let master = env.master("master", "");
    let api = master.api();
    let _workers: Vec<WorkerProcess> = (1..=2)
        .map(|i| env.worker(&format!("w{i}"), "lease_ttl_s = 10"))
        .collect();
    wait_for_workers(&api, 2).await;
    let hello = api.upload_module(guest_wat("hello")).await;
    for job in ["a", "b", "c"] {
        api.put(&format!("/api/v1/jobs/{job}"), &wasm_job("* * * * * *", &hello, None))
            .await
            .expect(201);
    }
    let leader = etcd.leader();
    etcd.kill_member(leader);
    let killed = Timestamp::now().as_second();
    wait_for("runs after the leader died", Duration::from_secs(40), || async {
        for job in ["a", "b", "c"] {
            let ok = api
                .runs(job)
                .await
                .iter()
                .any(|r| r["status"] == "succeeded" && unix(&r["tick"]) > killed + 5);
            if !ok {
                return None;
            }
        }
        Some(())
    })
    .await;
    settle(&api, &["a".into(), "b".into(), "c".into()]).await;
    for job in ["a", "b", "c"] {
        let runs = api.runs(job).await;
        let ticks: Vec<i64> = runs
            .iter()
            .filter(|r| r["trigger"] == "schedule")
            .map(|r| unix(&r["tick"]))
            .collect();
        let unique: BTreeSet<&i64> = ticks.iter().collect();
        assert_eq!(unique.len(), ticks.len(), "{job}: a tick ran twice");
    }
}

#[tokio::test]
async fn any_master_kills_a_run_on_any_worker() {
    let stores = Stores::start();
    let env = stores.env("kill");
    let first = env.master("m1", "");
    let second = env.master("m2", "");
    let _workers: Vec<WorkerProcess> = (1..=2).map(|i| env.worker(&format!("w{i}"), LEASE)).collect();
    let (a, b) = (first.api(), second.api());
    wait_for_workers(&a, 2).await;
    let spin = a.upload_module(guest_wat("spin")).await;
    let limits = json!({"fuel": 1_000_000_000_000_000u64, "timeout_s": 600});
    let body = wasm_job("@yearly", &spin, Some(limits));
    a.put("/api/v1/jobs/spin", &body).await.expect(201);
    // Both masters see the same cluster.
    assert_eq!(b.get("/api/v1/jobs/spin").await.expect(200)["name"], "spin");
    b.post("/api/v1/jobs/spin/run").await.expect(202);
    let run = wait_for("the spin to run", Duration::from_secs(30), || async {
        a.runs("spin").await.into_iter().find(|r| r["status"] == "running")
    })
    .await;
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let requested = Instant::now();
    b.post(&format!("/api/v1/jobs/spin/kill?run_id={run_id}"))
        .await
        .expect(202);
    let ended = wait_for("the kill", Duration::from_secs(20), || async {
        let run = a.get(&format!("/api/v1/runs/{run_id}")).await.expect(200);
        (run["status"] != "running").then_some(run)
    })
    .await;
    eprintln!("kill across the cluster: {:?}", requested.elapsed());
    assert_eq!(ended["status"], "killed", "{ended}");
    drop::<Master>(first);
}

#[tokio::test]
async fn a_broadcast_job_runs_each_tick_once_on_every_worker() {
    let stores = Stores::start();
    let env = stores.env("broadcast");
    let master = env.master("master", "");
    let api = master.api();
    let _workers: Vec<WorkerProcess> = (1..=3).map(|i| env.worker(&format!("w{i}"), LEASE)).collect();
    wait_for_workers(&api, 3).await;
    let guest = api.upload_module(guest_wat("env_args")).await;
    let mut job = wasm_job("*/2 * * * * *", &guest, None);
    job["broadcast"] = json!(true);
    api.put("/api/v1/jobs/fleet", &job).await.expect(201);
    // Three ticks, each with all its shards ended.
    let complete = |runs: &[Value]| -> Vec<i64> {
        let mut per_tick: BTreeMap<i64, usize> = BTreeMap::new();
        for run in runs
            .iter()
            .filter(|r| r["status"] == "succeeded" && r["trigger"] == "schedule")
        {
            *per_tick.entry(unix(&run["tick"])).or_default() += 1;
        }
        per_tick.into_iter().filter(|(_, n)| *n >= 3).map(|(t, _)| t).collect()
    };
    wait_for("three complete broadcast ticks", Duration::from_secs(40), || async {
        (complete(&api.runs("fleet").await).len() >= 3).then_some(())
    })
    .await;
    settle(&api, &["fleet".to_owned()]).await;
    let runs = api.runs("fleet").await;
    let mut ticks: BTreeMap<i64, Vec<&Value>> = BTreeMap::new();
    for run in runs.iter().filter(|r| r["trigger"] == "schedule") {
        ticks.entry(unix(&run["tick"])).or_default().push(run);
    }
    let mut checked = 0;
    for (tick, shards) in &ticks {
        if shards.len() < 3 {
            // The first tick may predate a worker's view of the job; never more than 3.
            continue;
        }
        assert_eq!(shards.len(), 3, "tick {tick}: {shards:?}");
        let indices: BTreeSet<u64> = shards.iter().map(|r| r["shard"]["index"].as_u64().unwrap()).collect();
        assert_eq!(indices, BTreeSet::from([0, 1, 2]), "tick {tick}");
        let workers: BTreeSet<&str> = shards.iter().map(|r| r["worker"].as_str().unwrap()).collect();
        assert_eq!(workers.len(), 3, "tick {tick}: every shard on its own worker");
        let groups: BTreeSet<&str> = shards.iter().map(|r| r["shard"]["group"].as_str().unwrap()).collect();
        assert_eq!(groups.len(), 1, "tick {tick}: one group");
        for shard in shards {
            assert_eq!(shard["shard"]["count"], 3);
            let output: String = api
                .output(shard["run_id"].as_str().unwrap())
                .await
                .into_iter()
                .map(|(_, text)| text)
                .collect();
            let index = shard["shard"]["index"].as_u64().unwrap();
            assert!(output.contains(&format!("SANDCRON_SHARD_INDEX={index}\n")), "{output}");
            assert!(output.contains("SANDCRON_SHARD_COUNT=3\n"), "{output}");
        }
        checked += 1;
    }
    assert!(checked >= 3, "{ticks:?}");
    for (tick, shards) in &ticks {
        assert!(
            shards.len() <= 3,
            "tick {tick} ran more than once per worker: {shards:?}"
        );
    }
    // Run now hands out shards too.
    api.post("/api/v1/jobs/fleet/run").await.expect(202);
    let manual = wait_for("three manual shards", Duration::from_secs(30), || async {
        let runs = api.runs("fleet").await;
        let manual: Vec<Value> = runs
            .into_iter()
            .filter(|r| r["trigger"] == "manual" && r["status"] == "succeeded")
            .collect();
        (manual.len() == 3).then_some(manual)
    })
    .await;
    let indices: BTreeSet<u64> = manual.iter().map(|r| r["shard"]["index"].as_u64().unwrap()).collect();
    assert_eq!(indices, BTreeSet::from([0, 1, 2]));
}

#[tokio::test]
async fn a_shard_handed_to_a_worker_that_dies_is_recorded_lost() {
    let stores = Stores::start();
    let env = stores.env("broadcast-lost");
    let master = env.master("master", "");
    let api = master.api();
    // A 10 s lease leaves the owner ample time, even on a loaded machine, to
    // hand the dead worker its shard before the lease expires.
    let mut workers: Vec<WorkerProcess> = (1..=3)
        .map(|i| env.worker(&format!("w{i}"), "lease_ttl_s = 10"))
        .collect();
    wait_for_workers(&api, 3).await;
    let guest = api.upload_module(guest_wat("hello")).await;
    let mut job = wasm_job("@yearly", &guest, None);
    job["broadcast"] = json!(true);
    api.put("/api/v1/jobs/fleet", &job).await.expect(201);
    let owner = wait_for("the job's owner", Duration::from_secs(20), || async {
        let view = api.get("/api/v1/jobs/fleet").await.expect(200);
        view["owner"].as_str().map(str::to_owned)
    })
    .await;
    // Kill a worker that is not the owner, then ask for a run while its
    // lease still stands: the owner hands it a shard it will never take.
    let victim = workers.iter().position(|w| w.id != owner).expect("a non-owner");
    let victim_id = workers[victim].id.clone();
    workers[victim].proc.kill9();
    api.post("/api/v1/jobs/fleet/run").await.expect(202);
    let runs = wait_for(
        "two shards run and one recorded lost",
        Duration::from_secs(60),
        || async {
            let runs = api.runs("fleet").await;
            let done = runs.iter().filter(|r| r["status"] == "succeeded").count();
            let lost = runs.iter().filter(|r| r["status"] == "lost").count();
            (done == 2 && lost == 1).then_some(runs)
        },
    )
    .await;
    let lost = runs.iter().find(|r| r["status"] == "lost").unwrap();
    assert_eq!(lost["worker"], victim_id.as_str(), "{lost}");
    assert_eq!(lost["shard"]["count"], 3, "{lost}");
    assert!(
        lost["error"]
            .as_str()
            .unwrap()
            .contains("was gone before it started its shard"),
        "{lost}"
    );
    let indices: BTreeSet<u64> = runs.iter().map(|r| r["shard"]["index"].as_u64().unwrap()).collect();
    assert_eq!(
        indices,
        BTreeSet::from([0, 1, 2]),
        "every shard accounted for once: {runs:?}"
    );
}

/// A component's network calls in a cluster: the worker's policy bounds
/// them, and the ledger reaches MongoDB and comes back through any master.
#[tokio::test]
async fn a_component_reaches_what_its_job_lists_on_a_worker_whose_policy_allows_it() {
    let service = sandcron_tests::receiver::Receiver::start().await;
    let stores = Stores::start();
    let env = stores.env("net");
    let master = env.master("m1", "");
    // One worker allows loopback (where the test service is); one does not.
    let _open = env.worker(
        "w-loopback",
        &format!("{LEASE}\nhttp_allow = [\"loopback\"]\nlabels = {{ net = \"loopback\" }}"),
    );
    let _public = env.worker("w-public", &format!("{LEASE}\nlabels = {{ net = \"public\" }}"));
    let api = master.api();
    wait_for_workers(&api, 2).await;
    let digest = api.upload_module(crate::built_guest("net-probe")).await;
    let listed = format!("http://127.0.0.1:{}", service.addr.port());
    let url = service.url("/from-the-cluster");
    for (job, net) in [("net-open", "loopback"), ("net-closed", "public")] {
        let body = json!({
            "schedule": "0 0 1 1 *",
            "selector": {"net": net},
            "kind": {"wasm": {"module": digest, "args": ["get", url, "get", "https://example.com/"], "egress": [listed]}},
        });
        api.put(&format!("/api/v1/jobs/{job}"), &body).await.expect(201);
        api.post(&format!("/api/v1/jobs/{job}/run")).await.expect(202);
    }
    let ended = |job: &'static str| {
        let api = api.clone();
        async move {
            let run = wait_for(&format!("the run of {job}"), Duration::from_secs(60), || async {
                api.runs(job).await.into_iter().find(|r| r["status"] != "running")
            })
            .await;
            // The record by id, from MongoDB, with its ledger.
            api.get(&format!("/api/v1/runs/{}", run["run_id"].as_str().unwrap()))
                .await
                .expect(200)
        }
    };
    let open = ended("net-open").await;
    assert_eq!(open["worker"], "w-loopback");
    let entries = open["egress"]["entries"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 2, "{open}");
    assert_eq!(
        (entries[0]["outcome"].as_str(), entries[0]["status"].as_u64()),
        (Some("ok"), Some(200))
    );
    assert_eq!(entries[0]["path"], "/from-the-cluster");
    assert_eq!(entries[1]["outcome"], "refused", "not listed");
    let closed = ended("net-closed").await;
    assert_eq!(closed["worker"], "w-public");
    let entry = &closed["egress"]["entries"][0];
    assert_eq!(entry["outcome"], "refused", "{closed}");
    assert!(
        entry["error"].as_str().unwrap_or_default().contains("loopback"),
        "{entry}"
    );
    // Only the run on the worker that allows loopback reached the service.
    assert_eq!(service.requests_to("/from-the-cluster").len(), 1);
}

/// Secrets in a cluster: the masters and workers share one key file; a
/// secret written through a master reaches a run on a worker, its output
/// masked in MongoDB; a worker with another key file, or none, refuses to
/// start rather than run jobs it cannot give their secrets.
#[tokio::test]
async fn a_secret_reaches_a_run_on_a_worker_that_shares_the_key_file() {
    let stores = Stores::start();
    let env = stores.env("secrets");
    let keygen = |name: &str| {
        let path = env.dir.join(name);
        let status = std::process::Command::new(crate::BIN)
            .args(["secret", "keygen", "--out"])
            .arg(&path)
            .status()
            .expect("keygen");
        assert!(status.success());
        path
    };
    let key = keygen("secrets.key");
    let secrets = format!("[secrets]\nkey_file = {:?}", key.display().to_string());
    let master = env.master("m1", &secrets);
    let _worker = env.worker("w1", &format!("{LEASE}\n{secrets}"));
    let api = master.api();
    wait_for_workers(&api, 1).await;
    api.raw(
        "PUT",
        "/api/v1/secrets/db-password",
        "text/plain",
        b"cluster-S3cr3t-77aa".to_vec(),
    )
    .await
    .expect(201);
    let digest = api.upload_module(crate::built_guest("config-probe")).await;
    api.put(
        "/api/v1/jobs/uses-secret",
        &json!({"schedule": "0 0 1 1 *", "secrets": {"DB_PASSWORD": "db-password"},
            "kind": {"wasm": {"module": digest, "args": ["leak", "DB_PASSWORD"]}}}),
    )
    .await
    .expect(201);
    api.post("/api/v1/jobs/uses-secret/run").await.expect(202);
    let run = wait_for("the run of uses-secret", Duration::from_secs(60), || async {
        api.runs("uses-secret")
            .await
            .into_iter()
            .find(|r| r["status"] != "running")
    })
    .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["secrets"], json!(["db-password"]));
    let output: String = api
        .output(run["run_id"].as_str().unwrap())
        .await
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    assert!(output.contains("whole DB_PASSWORD=***"), "{output}");
    assert!(!output.contains("cluster-S3cr3t-77aa"), "{output}");

    // Another key file, or none: the worker refuses to start, and says why.
    let other = keygen("other.key");
    for (name, extra, expected) in [
        (
            "w-wrong",
            format!("{LEASE}\n[secrets]\nkey_file = {:?}", other.display().to_string()),
            "does not open any of the 1 stored secret(s)",
        ),
        ("w-none", LEASE.to_owned(), "has no secrets key file"),
    ] {
        let config = env.dir.join(format!("{name}.toml"));
        let stores_toml = std::fs::read_to_string(env.dir.join("w1.toml")).expect("w1 config");
        let stores_only = stores_toml
            .split_once("[etcd]")
            .map(|(_, rest)| format!("[etcd]{rest}"))
            .expect("stores");
        std::fs::write(&config, format!("[worker]\n{extra}\n{stores_only}")).expect("config");
        let output = std::process::Command::new(crate::BIN)
            .args(["worker", "--id", name, "--config"])
            .arg(&config)
            .arg("--data")
            .arg(env.dir.join(format!("{name}-data")))
            .output()
            .expect("run worker");
        assert!(!output.status.success(), "{name} started");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }
    // A master with the wrong key file refuses too (it could seal nothing
    // the workers can open).
    let config = env.dir.join("m-wrong.toml");
    let master_toml = std::fs::read_to_string(env.dir.join("m1.toml")).expect("m1 config");
    std::fs::write(
        &config,
        master_toml.replace(&key.display().to_string(), &other.display().to_string()),
    )
    .expect("config");
    let output = std::process::Command::new(crate::BIN)
        .args(["master", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .output()
        .expect("run master");
    assert!(!output.status.success(), "a master with the wrong key started");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("does not open any of the 1 stored secret(s)"),
        "{stderr}"
    );
}
