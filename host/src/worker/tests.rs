//! Workers in this process on one embedded coordination store: what only a
//! worker dying at a precise moment shows, which a test with processes
//! cannot time (a catch-up claimant killed before its sink wrote; a worker
//! killed while a run it offered waits for a taker).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp, Unit};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Executors, Worker, WorkerDeps};
use crate::auth::Role;
use crate::config::WorkerConfig;
use crate::coord::embedded::EmbeddedStore;
use crate::coord::{Coordinator, KvStore};
use crate::exec::{ExecRequest, Executor, KillSwitch, RunOutcome, RunOutput};
use crate::ids::{JobName, RunId};
use crate::job::{JobKind, JobMeta, JobRecord, JobSpec, ShellJob};
use crate::logstore::sqlite::SqliteLogStore;
use crate::logstore::{LogStore, RunQuery, Sink, SinkConfig};
use crate::metrics::Metrics;
use crate::placement::WorkerInfo;
use crate::run::{RunRecord, RunStatus};
use crate::testkit::Hanging;

/// Succeeds at once. The jobs here have only ticks that are missed, so it
/// is there for placement (a worker owns only jobs it has an executor for).
struct Succeeds;

#[async_trait]
impl Executor for Succeeds {
    async fn execute(&self, _request: &ExecRequest, _output: &mut RunOutput, _kill: &KillSwitch) -> RunOutcome {
        RunOutcome::new(RunStatus::Succeeded)
    }
}

/// A worker task and its sink task; dropping them without a drain is a
/// `kill -9` (the lease is no longer kept alive and expires).
struct Running {
    worker: JoinHandle<anyhow::Result<()>>,
    sink: JoinHandle<anyhow::Result<()>>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
}

impl Running {
    fn kill(self) {
        self.worker.abort();
        self.sink.abort();
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.worker.await;
        let _ = self.sink.await;
    }
}

fn start(id: &str, coord: &Coordinator, logs: Arc<dyn LogStore>) -> Running {
    start_with(coord, logs, info(id, 4, &[]), Arc::new(Succeeds))
}

/// The worker record of a test worker.
fn info(id: &str, capacity: usize, labels: &[(&str, &str)]) -> WorkerInfo {
    WorkerInfo {
        id: id.to_owned(),
        hostname: "test".into(),
        version: "test".into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        allow_native: true,
        capacity,
        started_at: Timestamp::now(),
        http: false,
    }
}

/// Starts worker `info` running shell jobs with `shell`.
fn start_with(coord: &Coordinator, logs: Arc<dyn LogStore>, info: WorkerInfo, shell: Arc<dyn Executor>) -> Running {
    let (sink, sink_task) = Sink::new(logs, SinkConfig::default());
    let sink_handle = tokio::spawn(sink_task.run());
    let shutdown = CancellationToken::new();
    let metrics = Metrics::new();
    let worker = Worker::new(WorkerDeps {
        coord: coord.clone(),
        sink,
        executors: Executors {
            shell: Some(shell),
            ..Executors::default()
        },
        metrics: metrics.clone(),
        config: WorkerConfig {
            id: Some(info.id.clone()),
            capacity: info.capacity,
            allow_native: true,
            labels: info.labels.clone(),
            native_env: vec![],
            kill_grace: Duration::from_secs(1),
            missed_record_limit: 1000,
            catchup_run_limit: 100,
            drain_timeout: Duration::from_secs(1),
            dirs: BTreeMap::new(),
            max_memory_mb: 64,
            caps: Default::default(),
            clock_offset_ms: 0,
            http_allow: crate::exec::egress::EgressPolicy::public_only(),
            api_url: None,
            state_quota: Default::default(),
        },
        info,
        lease_ttl: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(1),
        retention: Duration::from_secs(3600),
        alerts: None,
        keyring: None,
    });
    Running {
        worker: tokio::spawn(worker.serve(shutdown.clone())),
        sink: sink_handle,
        shutdown,
        metrics,
    }
}

/// Creates job `name` whose only ticks (once a year) are the 3 seconds from
/// about 2 s from now, with the default catch-up policy (`skip`); returns
/// them.
async fn three_tick_job(coord: &Coordinator, name: &JobName) -> Vec<Timestamp> {
    let mut first = Timestamp::now().round(Unit::Second).expect("round") + SignedDuration::from_secs(2);
    let utc = |t: Timestamp| t.to_zoned(jiff::tz::TimeZone::UTC);
    // The three seconds within one minute.
    while utc(first).second() > 57 {
        first += SignedDuration::from_secs(1);
    }
    let at = utc(first);
    let schedule = format!(
        "{}-{} {} {} {} {} *",
        at.second(),
        at.second() + 2,
        at.minute(),
        at.hour(),
        at.day(),
        at.month()
    );
    let spec = JobSpec::new(
        schedule,
        JobKind::Shell(ShellJob {
            command: "true".into(),
            env: BTreeMap::new(),
            timeout_s: 60,
            output_kb: 64,
        }),
    );
    put_job(coord, name, spec).await;
    (0..3).map(|i| first + SignedDuration::from_secs(i)).collect()
}

/// Waits until `condition` holds, polling; panics after `deadline`.
async fn eventually<T>(what: &str, deadline: Duration, mut condition: impl AsyncFnMut() -> Option<T>) -> T {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (on the clock: that is the condition) until every tick in `ticks`
/// is more than the catch-up grace in the past, so that a worker starting
/// now accounts for them through its catch-up plan.
async fn until_passed(ticks: &[Timestamp]) {
    let last = *ticks.last().expect("ticks");
    let at = last + SignedDuration::from_millis(1_500);
    if let Ok(wait) = Duration::try_from(at.duration_since(Timestamp::now())) {
        tokio::time::sleep(wait).await;
    }
}

async fn job_runs(logs: &SqliteLogStore, job: &JobName) -> Vec<RunRecord> {
    logs.runs(&RunQuery {
        job: Some(job.clone()),
        ..RunQuery::default()
    })
    .await
    .expect("runs")
    .runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_ticks_of_a_worker_killed_before_its_sink_wrote_them_are_recorded_by_the_next_owner() {
    let store: Arc<dyn KvStore> = EmbeddedStore::in_memory();
    let coord = Coordinator::new(store, "/plan-takeover/");
    let job = JobName::new("gap").unwrap();
    let ticks = three_tick_job(&coord, &job).await;
    until_passed(&ticks).await;

    // w1 catches the ticks up (all missed: policy skip); its sink never
    // gets to write their records.
    let w1 = start("w1", &coord, Arc::new(Hanging));
    let state = eventually("w1's catch-up claim", Duration::from_secs(10), async || {
        let (state, _) = coord.job_state(&job).await.ok()?;
        state.filter(|s| s.last_tick >= ticks[2] && s.plan.is_some())
    })
    .await;
    assert_eq!(state.plan.as_ref().map(|p| p.abandoned.len()), Some(0));
    w1.kill();

    // w2 takes the job over once w1's lease expires, and records the ticks
    // from the plan's inputs in the claim state.
    let logs = SqliteLogStore::in_memory().expect("sqlite");
    let w2 = start("w2", &coord, logs.clone());
    let records = eventually("the missed ticks recorded by w2", Duration::from_secs(30), async || {
        let runs = job_runs(&logs, &job).await;
        (runs.len() >= ticks.len()).then_some(runs)
    })
    .await;
    let mut recorded: Vec<(Timestamp, RunStatus, RunId)> =
        records.iter().map(|r| (r.tick, r.status, r.run_id)).collect();
    recorded.sort();
    let expected: Vec<(Timestamp, RunStatus, RunId)> = ticks
        .iter()
        .map(|t| (*t, RunStatus::Missed, RunId::for_missed(&job, *t)))
        .collect();
    assert_eq!(recorded, expected, "each tick once, under the id its claimant used");
    for record in &records {
        assert_eq!(record.worker, "w2");
        let error = record.error.as_deref().unwrap_or_default();
        assert!(error.contains("recorded by w2 on taking the job over"), "{error}");
    }
    w2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_plan_leaves_the_claim_state_once_its_records_are_stored() {
    let store: Arc<dyn KvStore> = EmbeddedStore::in_memory();
    let coord = Coordinator::new(store, "/plan-stored/");
    let job = JobName::new("gap").unwrap();
    let ticks = three_tick_job(&coord, &job).await;
    until_passed(&ticks).await;

    let logs = SqliteLogStore::in_memory().expect("sqlite");
    let w = start("w", &coord, logs.clone());
    // The claim carried the plan; with its records stored, the state drops
    // it although no later tick comes to claim.
    let state = eventually(
        "the plan dropped from the claim state",
        Duration::from_secs(10),
        async || {
            let (state, _) = coord.job_state(&job).await.ok()?;
            state.filter(|s| s.last_tick >= ticks[2] && s.plan.is_none())
        },
    )
    .await;
    assert!(state.lease.is_some());
    let records = job_runs(&logs, &job).await;
    let mut ids: Vec<RunId> = records.iter().map(|r| r.run_id).collect();
    ids.sort();
    let expected: Vec<RunId> = ticks.iter().map(|t| RunId::for_missed(&job, *t)).collect();
    assert_eq!(ids, expected, "stored before the plan left the state");
    assert!(records.iter().all(|r| r.status == RunStatus::Missed && r.worker == "w"));
    w.stop().await;
}

/// Runs of jobs named `long-…` last until they are killed; the others
/// succeed at once. Every run it starts is listed, by job.
#[derive(Clone, Default)]
struct Gate(Arc<std::sync::Mutex<Vec<(String, RunId)>>>);

impl Gate {
    fn started(&self, job: &str) -> Vec<RunId> {
        crate::sync::lock(&self.0)
            .iter()
            .filter(|(name, _)| name == job)
            .map(|(_, run)| *run)
            .collect()
    }
}

#[async_trait]
impl Executor for Gate {
    async fn execute(&self, request: &ExecRequest, _output: &mut RunOutput, kill: &KillSwitch) -> RunOutcome {
        crate::sync::lock(&self.0).push((request.job.to_string(), request.run_id));
        if request.job.as_str().starts_with("long") {
            RunOutcome::stopped(kill.pulled().await)
        } else {
            RunOutcome::new(RunStatus::Succeeded)
        }
    }
}

/// A shell job with no ticks (runs only when asked), for workers labelled
/// `selector` when given.
fn asked_only(selector: Option<(&str, &str)>) -> JobSpec {
    JobSpec {
        selector: selector
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        ..JobSpec::new(
            "@yearly",
            JobKind::Shell(ShellJob {
                command: "true".into(),
                env: BTreeMap::new(),
                timeout_s: 60,
                output_kb: 64,
            }),
        )
    }
}

async fn put_job(coord: &Coordinator, name: &JobName, spec: JobSpec) {
    let now = Timestamp::now();
    let record = JobRecord {
        spec,
        meta: JobMeta {
            created_at: now,
            updated_at: now,
            active_since: now,
            written_by: Role::Admin,
        },
    };
    coord.put_job(name, &record, None, true).await.expect("put job");
}

/// Two workers of one slot each, `w1` and `w2`, each busy with a run of its
/// own `long-…` job (pinned by a label), and a job `quick-…` that rendezvous
/// placement gives to `w1` and that either may run.
struct Busy {
    store: Arc<dyn KvStore>,
    coord: Coordinator,
    logs: Arc<SqliteLogStore>,
    gate: Gate,
    quick: JobName,
}

impl Busy {
    /// The setting, and the two workers (`w1`, `w2`).
    async fn start(prefix: &str) -> (Busy, Running, Running) {
        let store: Arc<dyn KvStore> = EmbeddedStore::in_memory();
        let coord = Coordinator::new(store.clone(), prefix);
        let logs = SqliteLogStore::in_memory().expect("sqlite");
        let (one, two) = (info("w1", 1, &[("node", "1")]), info("w2", 1, &[("node", "2")]));
        let quick = (0..64)
            .map(|i| JobName::new(&format!("quick-{i}")).unwrap())
            .find(|name| {
                let job = crate::job::Job::for_test(name.as_str(), asked_only(None), Timestamp::now());
                crate::placement::owner(&job, [&one, &two]).is_some_and(|owner| owner.id == "w1")
            })
            .expect("a job w1 owns");
        put_job(&coord, &quick, asked_only(None)).await;
        for (name, node) in [("long-1", "1"), ("long-2", "2")] {
            put_job(&coord, &JobName::new(name).unwrap(), asked_only(Some(("node", node)))).await;
        }
        let gate = Gate::default();
        let w1 = start_with(&coord, logs.clone(), one, Arc::new(gate.clone()));
        let w2 = start_with(&coord, logs.clone(), two, Arc::new(gate.clone()));
        // Each must see the other before `quick` runs: a worker offers a
        // run only to workers it knows.
        for worker in [&w1, &w2] {
            eventually("the workers to see each other", Duration::from_secs(10), async || {
                worker
                    .metrics
                    .render()
                    .contains("sandcron_live_workers 2")
                    .then_some(())
            })
            .await;
        }
        let busy = Busy {
            store,
            coord,
            logs,
            gate,
            quick,
        };
        for name in ["long-1", "long-2"] {
            busy.ask(name).await;
        }
        eventually("both workers busy", Duration::from_secs(10), async || {
            (busy.gate.started("long-1").len() == 1 && busy.gate.started("long-2").len() == 1).then_some(())
        })
        .await;
        (busy, w1, w2)
    }

    /// "Run now"; returns the run's id.
    async fn ask(&self, job: &str) -> RunId {
        let key = self
            .coord
            .request_trigger(&JobName::new(job).unwrap(), Role::Admin)
            .await
            .expect("trigger");
        self.coord.trigger_run_id(&key).expect("run id")
    }

    /// Asks for a run of the quick job, which its owner (all slots busy)
    /// offers; returns it once the offer is stored.
    async fn offer_quick(&self) -> RunId {
        let offered = self.ask(self.quick.as_str()).await;
        eventually("the run offered", Duration::from_secs(10), async || {
            (self.offers().await == vec![offered]).then_some(())
        })
        .await;
        offered
    }

    /// The runs offered now, by id.
    async fn offers(&self) -> Vec<RunId> {
        let range = self
            .store
            .range(&self.coord.prefix_of(crate::coord::Family::Handoff))
            .await
            .expect("range");
        range
            .kvs
            .iter()
            .filter_map(|kv| self.coord.decode_offer(kv))
            .map(|(_, entry)| entry.run_id)
            .collect()
    }

    async fn record(&self, run: RunId, done: impl Fn(&RunRecord) -> bool) -> RunRecord {
        eventually("the run's record", Duration::from_secs(20), async || {
            self.logs.run(run).await.ok().flatten().filter(|record| done(record))
        })
        .await
    }

    async fn free(&self, job: &str) {
        self.coord
            .request_kill(&JobName::new(job).unwrap(), crate::coord::KillTarget::All)
            .await
            .expect("kill");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offered_run_goes_to_the_first_worker_with_a_free_slot_and_runs_once() {
    let (busy, w1, w2) = Busy::start("/handoff-open/").await;

    // Both workers are full: w1's run of `quick` is offered and stays open.
    let first = busy.ask(busy.quick.as_str()).await;
    eventually("the run offered", Duration::from_secs(10), async || {
        (busy.offers().await == vec![first]).then_some(())
    })
    .await;
    assert!(
        busy.gate.started(busy.quick.as_str()).is_empty(),
        "no slot anywhere yet"
    );

    // w2's slot frees first: w2 takes the run and runs it under the claim's fence.
    busy.free("long-2").await;
    let record = busy.record(first, |r| r.status == RunStatus::Succeeded).await;
    assert_eq!(record.worker, "w2");
    assert_eq!(record.handed_off_from.as_deref(), Some("w1"));
    assert!(record.fence > 0);
    assert!(busy.offers().await.is_empty());

    // Full again, and this time w1's own slot frees first: it withdraws its
    // offer and runs the run itself.
    busy.ask("long-2").await;
    eventually("w2 busy again", Duration::from_secs(10), async || {
        (busy.gate.started("long-2").len() == 2).then_some(())
    })
    .await;
    let second = busy.ask(busy.quick.as_str()).await;
    eventually("the run offered", Duration::from_secs(10), async || {
        (busy.offers().await == vec![second]).then_some(())
    })
    .await;
    busy.free("long-1").await;
    let record = busy.record(second, |r| r.status == RunStatus::Succeeded).await;
    assert_eq!(
        (record.worker.as_str(), record.handed_off_from.as_deref()),
        ("w1", None)
    );
    assert!(busy.offers().await.is_empty());

    // Each run started exactly once, wherever it ran.
    assert_eq!(busy.gate.started(busy.quick.as_str()), vec![first, second]);
    busy.free("long-2").await;
    w1.stop().await;
    w2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_offered_by_a_worker_that_dies_is_recorded_lost_and_runs_nowhere() {
    let (busy, w1, w2) = Busy::start("/handoff-dies/").await;
    let offered = busy.offer_quick().await;

    // w1 dies: its lease takes the offer and the run's entry along, and w2,
    // the job's owner now, records the run lost.
    w1.kill();
    let record = busy.record(offered, |r| r.status == RunStatus::Lost).await;
    assert_eq!(record.worker, "w1");
    assert!(busy.offers().await.is_empty());

    // w2 gets a free slot; with the offer gone it has nothing to take. A run
    // asked for after that shows that w2 has dealt with the freed slot.
    busy.free("long-2").await;
    let probe = busy.ask(busy.quick.as_str()).await;
    let probed = busy.record(probe, |r| r.status == RunStatus::Succeeded).await;
    assert_eq!(probed.worker, "w2");
    assert_eq!(
        busy.gate.started(busy.quick.as_str()),
        vec![probe],
        "the lost run never started anywhere"
    );
    let runs = job_runs(&busy.logs, &busy.quick).await;
    assert_eq!(runs.len(), 2, "the lost run and the probe: {runs:?}");
    w2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_offer_goes_with_its_worker_s_lease_is_recorded_lost_and_never_runs() {
    let (busy, w1, w2) = Busy::start("/handoff-lease/").await;
    let offered = busy.offer_quick().await;

    // w1's lease ends under it, as after a long pause: the offer and the
    // run's entry go with it, and w1 registers again on a new lease.
    let registration = format!("{}w1", busy.coord.prefix_of(crate::coord::Family::Workers));
    let lease_of_w1 = async || {
        busy.store
            .get(&registration)
            .await
            .ok()
            .flatten()
            .and_then(|kv| kv.lease)
    };
    let old = lease_of_w1().await.expect("w1's lease");
    busy.store.lease_revoke(old).await.expect("revoke");
    eventually("w1 registered again", Duration::from_secs(10), async || {
        lease_of_w1().await.filter(|lease| *lease != old)
    })
    .await;

    // w1's slot frees. A taker might have taken the run before the lease
    // ended, so w1 does not run it: the run is recorded lost (by w1, or by
    // w2 if it saw w1 gone first) and never starts.
    busy.free("long-1").await;
    let record = busy.record(offered, |r| r.status == RunStatus::Lost).await;
    assert_eq!(record.worker, "w1");
    let probe = busy.ask(busy.quick.as_str()).await;
    busy.record(probe, |r| r.status == RunStatus::Succeeded).await;
    assert_eq!(
        busy.gate.started(busy.quick.as_str()),
        vec![probe],
        "the run whose offer went with the lease never started"
    );
    busy.free("long-2").await;
    w1.stop().await;
    w2.stop().await;
}

/// Notes, for each scheduled run, its tick, when the run's `running/`
/// entry says it was claimed, and when it started.
struct StartTimes {
    coord: Coordinator,
    seen: std::sync::Mutex<Vec<(Timestamp, Timestamp, Timestamp)>>,
}

#[async_trait]
impl Executor for StartTimes {
    async fn execute(&self, request: &ExecRequest, _output: &mut RunOutput, _kill: &KillSwitch) -> RunOutcome {
        let started = Timestamp::now();
        let running = self.coord.running(Some(&request.job)).await.expect("running entries");
        let claimed = running
            .iter()
            .find(|(_, entry)| entry.run_id == request.run_id)
            .map(|(_, entry)| entry.claimed_at)
            .expect("the run's running entry");
        self.seen.lock().expect("lock").push((request.tick, claimed, started));
        RunOutcome::new(RunStatus::Succeeded)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_runs_are_claimed_ahead_of_their_ticks_and_start_on_them() {
    let store: Arc<dyn KvStore> = EmbeddedStore::in_memory();
    let coord = Coordinator::new(store, "/claim-ahead/");
    let data = tempfile::tempdir().unwrap();
    let logs = SqliteLogStore::open(&data.path().join("logs.db")).unwrap();
    let executor = Arc::new(StartTimes {
        coord: coord.clone(),
        seen: std::sync::Mutex::new(Vec::new()),
    });
    let worker = start_with(&coord, logs.clone(), info("w1", 4, &[]), executor.clone());
    let job = JobName::new("on-time").unwrap();
    let ticks = three_tick_job(&coord, &job).await;
    let seen = eventually("the three runs", Duration::from_secs(20), async || {
        let seen = executor.seen.lock().expect("lock").clone();
        (seen.len() == 3).then_some(seen)
    })
    .await;
    worker.stop().await;
    for ((tick, claimed, started), expected) in seen.iter().zip(&ticks) {
        assert_eq!(tick, expected);
        assert!(claimed < tick, "tick {tick} claimed at {claimed}, not ahead of it");
        assert!(started >= tick, "tick {tick} started early, at {started}");
    }
}

#[test]
fn consecutive_event_batches_of_a_family_are_merged_in_order_and_snapshots_never() {
    use crate::coord::{Family, KeyValue, WatchEvent, WatchUpdate};
    use crate::worker::watchers::coalesce;
    let put = |key: &str| {
        WatchEvent::Put(KeyValue {
            key: key.to_owned(),
            value: bytes::Bytes::from_static(b"{}"),
            create_revision: 1,
            mod_revision: 1,
            lease: None,
        })
    };
    let delete = |key: &str| WatchEvent::Delete {
        key: key.to_owned(),
        revision: 2,
    };
    let keys = |update: &WatchUpdate| -> Vec<String> {
        match update {
            WatchUpdate::Events(events) => events
                .iter()
                .map(|event| match event {
                    WatchEvent::Put(kv) => format!("put {}", kv.key),
                    WatchEvent::Delete { key, .. } => format!("delete {key}"),
                })
                .collect(),
            WatchUpdate::Snapshot(kvs) => kvs.iter().map(|kv| format!("snapshot {}", kv.key)).collect(),
        }
    };
    let merged = coalesce([
        (Family::Jobs, WatchUpdate::Events(vec![put("a")])),
        (Family::Jobs, WatchUpdate::Events(vec![put("b"), delete("a")])),
        (Family::Running, WatchUpdate::Events(vec![put("r1")])),
        (Family::Jobs, WatchUpdate::Events(vec![put("c")])),
        (Family::Jobs, WatchUpdate::Snapshot(Vec::new())),
        (Family::Jobs, WatchUpdate::Events(vec![put("d")])),
        (Family::Jobs, WatchUpdate::Events(vec![put("e")])),
    ]);
    let shape: Vec<(Family, Vec<String>)> = merged.iter().map(|(family, update)| (*family, keys(update))).collect();
    assert_eq!(
        shape,
        vec![
            (Family::Jobs, vec!["put a".into(), "put b".into(), "delete a".into()]),
            (Family::Running, vec!["put r1".into()]),
            (Family::Jobs, vec!["put c".into()]),
            (Family::Jobs, vec![]),
            (Family::Jobs, vec!["put d".into(), "put e".into()]),
        ]
    );
}

/// The size of the future `f` returns, without calling it.
fn future_size<A, F: Future>(_: fn(A) -> F) -> usize {
    std::mem::size_of::<F>()
}

#[test]
fn a_run_task_is_small() {
    // Every run is one spawned task of this future: a spawn copies it, and
    // each run waiting for a burst's tick holds it. Rare paths (an offer,
    // a wait for a slot or for room in the sink) are boxed where they are
    // awaited; at 8.7 KB, 10,000 runs due together held 87 MB and the
    // copies showed in the burst's profile.
    let size = future_size(super::task::carry_out);
    assert!(size <= 3584, "a run task's future is {size} bytes");
    eprintln!("a run task's future: {size} bytes");
}
