//! Workers in this process on one embedded coordination store: what only a
//! worker dying at a precise moment shows, which a test with processes
//! cannot time.

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
    let (sink, sink_task) = Sink::new(logs, SinkConfig::default());
    let sink_handle = tokio::spawn(sink_task.run());
    let shutdown = CancellationToken::new();
    let worker = Worker::new(WorkerDeps {
        coord: coord.clone(),
        sink,
        executors: Executors {
            shell: Some(Arc::new(Succeeds)),
            ..Executors::default()
        },
        metrics: Metrics::new(),
        config: WorkerConfig {
            id: Some(id.to_owned()),
            capacity: 4,
            allow_native: true,
            labels: BTreeMap::new(),
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
        info: WorkerInfo {
            id: id.to_owned(),
            hostname: "test".into(),
            version: "test".into(),
            labels: BTreeMap::new(),
            allow_native: true,
            capacity: 4,
            started_at: Timestamp::now(),
            http: false,
        },
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
    let now = Timestamp::now();
    let record = JobRecord {
        spec: JobSpec::new(
            schedule,
            JobKind::Shell(ShellJob {
                command: "true".into(),
                env: BTreeMap::new(),
                timeout_s: 60,
                output_kb: 64,
            }),
        ),
        meta: JobMeta {
            created_at: now,
            updated_at: now,
            active_since: now,
            written_by: Role::Admin,
        },
    };
    coord.put_job(name, &record, None, true).await.expect("put job");
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
