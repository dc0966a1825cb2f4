//! Workers run inside the benchmark process: the real `Worker` (watch,
//! timer queue, claims, runner, sink) over any coordination store, with a
//! probe executor that records how late each scheduled run started, and log
//! stores that time or discard what the sink writes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jiff::{Timestamp, Unit};
use sandcron::auth::Role;
use sandcron::config::WorkerConfig;
use sandcron::coord::Coordinator;
use sandcron::exec::{ExecRequest, Executor, KillSwitch, RunOutcome, RunOutput};
use sandcron::ids::{JobName, ModuleDigest, RunId};
use sandcron::job::{JobKind, JobMeta, JobRecord, JobSpec, ShellJob, WasmJob};
use sandcron::logstore::{LogBatch, LogStore, Sink, SinkConfig};
use sandcron::metrics::Metrics;
use sandcron::placement::WorkerInfo;
use sandcron::run::{RunRecord, RunStatus, Trigger};
use sandcron::testkit::Tap;
use sandcron::worker::{Executors, Worker, WorkerDeps};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A WASI command that does nothing: the cheapest real guest.
pub const NOOP_WAT: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

/// A job record for `schedule` in UTC, written by an admin, active now.
pub fn job_record(schedule: &str, kind: JobKind) -> JobRecord {
    let now = Timestamp::now();
    JobRecord {
        spec: JobSpec::new(schedule, kind),
        meta: JobMeta {
            created_at: now,
            updated_at: now,
            active_since: now,
            written_by: Role::Admin,
        },
    }
}

/// A shell job kind (the probe executor never runs it).
pub fn shell_kind(command: &str) -> JobKind {
    JobKind::Shell(ShellJob {
        command: command.into(),
        env: BTreeMap::new(),
        timeout_s: 60,
        output_kb: 64,
    })
}

/// A WASM job kind for a module digest.
pub fn wasm_kind(digest: &ModuleDigest) -> JobKind {
    JobKind::Wasm(WasmJob::new(digest.clone()))
}

/// `bench-000042`.
pub fn job_name(i: usize) -> JobName {
    JobName::new(&format!("bench-{i:06}")).unwrap_or_else(|_| unreachable!("valid job name"))
}

/// Writes jobs `0..count` with `schedule` through `writers` concurrent tasks.
pub async fn load_jobs(coord: &Coordinator, count: usize, schedule: &str, kind: &JobKind, writers: usize) {
    write_jobs(coord, count, &job_record(schedule, kind.clone()), writers).await;
}

/// Writes `record` as jobs `0..count` through `writers` concurrent tasks.
pub async fn write_jobs(coord: &Coordinator, count: usize, record: &JobRecord, writers: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for shard in 0..writers {
        let coord = coord.clone();
        let record = record.clone();
        tasks.spawn(async move {
            for i in (shard..count).step_by(writers) {
                if let Err(err) = coord.put_job(&job_name(i), &record, None, true).await {
                    eprintln!("bench: cannot write job {i}: {err}");
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Deletes jobs `0..count`.
pub async fn delete_jobs(coord: &Coordinator, count: usize, writers: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for shard in 0..writers {
        let coord = coord.clone();
        tasks.spawn(async move {
            for i in (shard..count).step_by(writers) {
                let _ = coord.delete_job(&job_name(i)).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// An executor that succeeds at once and records, for scheduled runs, the
/// start minus the tick in milliseconds.
#[derive(Debug, Default)]
pub struct Probe {
    /// (tick, lateness in ms) per scheduled run, in the order they started.
    lateness_ms: Mutex<Vec<(Timestamp, f64)>>,
    pub started: AtomicU64,
}

impl Probe {
    /// Takes the samples gathered so far.
    pub fn take(&self) -> Vec<f64> {
        self.take_by_tick().into_iter().map(|(_, late)| late).collect()
    }

    /// Takes the samples gathered so far, with their ticks.
    pub fn take_by_tick(&self) -> Vec<(Timestamp, f64)> {
        std::mem::take(&mut *self.lateness_ms.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[async_trait]
impl Executor for Probe {
    async fn execute(&self, request: &ExecRequest, _output: &mut RunOutput, _kill: &KillSwitch) -> RunOutcome {
        if request.trigger == Trigger::Schedule {
            let late = Timestamp::now().duration_since(request.tick).as_secs_f64() * 1e3;
            self.lateness_ms
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((request.tick, late));
        }
        self.started.fetch_add(1, Ordering::Relaxed);
        RunOutcome::new(RunStatus::Succeeded)
    }
}

/// A log store in front of another that notes, for every terminal run record
/// it writes (succeeded scheduled runs), the instant it was stored minus the
/// run's tick (ms).
pub struct Timed {
    inner: Arc<dyn LogStore>,
    recorded_ms: Mutex<Vec<(Timestamp, f64)>>,
}

impl Timed {
    pub fn new(inner: Arc<dyn LogStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            recorded_ms: Mutex::new(Vec::new()),
        })
    }

    /// Takes the (tick, tick → stored ms) pairs gathered so far.
    pub fn take(&self) -> Vec<(Timestamp, f64)> {
        std::mem::take(&mut *self.recorded_ms.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Tap for Timed {
    fn inner(&self) -> &dyn LogStore {
        &*self.inner
    }

    fn written(&self, batch: &LogBatch) {
        let now = Timestamp::now();
        let mut recorded = self.recorded_ms.lock().unwrap_or_else(|e| e.into_inner());
        let scheduled = |r: &&RunRecord| r.status == RunStatus::Succeeded && r.trigger == Trigger::Schedule;
        for run in batch.runs.iter().filter(scheduled) {
            let tick = run.tick.round(Unit::Millisecond).unwrap_or(run.tick);
            recorded.push((tick, now.duration_since(run.tick).as_secs_f64() * 1e3));
        }
    }
}

/// A worker running in this process, with its sink.
pub struct InProcWorker {
    pub metrics: Arc<Metrics>,
    /// The sink's counters (producers held back, spool).
    pub sink_stats: Arc<sandcron::logstore::sink::SinkStats>,
    shutdown: CancellationToken,
    worker: JoinHandle<anyhow::Result<()>>,
    sink: JoinHandle<anyhow::Result<()>>,
}

impl InProcWorker {
    /// Starts worker `id` on `coord`, writing into `logs`, running every job
    /// (shell and WASM alike) with `executor`.
    pub fn start(id: &str, coord: Coordinator, logs: Arc<dyn LogStore>, executor: Arc<dyn Executor>) -> InProcWorker {
        let metrics = Metrics::new();
        let (sink, sink_task) = Sink::new(logs, SinkConfig::default());
        let sink_stats = sink.stats();
        metrics.attach_sink(Arc::clone(&sink_stats));
        let sink_handle = tokio::spawn(sink_task.run());
        let shutdown = CancellationToken::new();
        let capacity = 256;
        let worker = Worker::new(WorkerDeps {
            coord,
            sink,
            executors: Executors {
                shell: Some(executor.clone()),
                wasm: Some(executor),
                http: None,
            },
            metrics: metrics.clone(),
            config: WorkerConfig {
                id: Some(id.to_owned()),
                capacity,
                allow_native: true,
                labels: BTreeMap::new(),
                native_env: vec![],
                kill_grace: Duration::from_secs(1),
                missed_record_limit: 1000,
                catchup_run_limit: 100,
                drain_timeout: Duration::from_secs(10),
                dirs: BTreeMap::new(),
                max_memory_mb: 4096,
                caps: Default::default(),
                clock_offset_ms: 0,
                http_allow: sandcron::exec::egress::EgressPolicy::public_only(),
                api_url: None,
                state_quota: Default::default(),
            },
            info: WorkerInfo {
                id: id.to_owned(),
                hostname: "bench".into(),
                version: "bench".into(),
                labels: BTreeMap::new(),
                allow_native: true,
                capacity,
                started_at: Timestamp::now(),
                http: false,
            },
            lease_ttl: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            retention: Duration::from_secs(3600),
            alerts: None,
            keyring: None,
        });
        let worker_handle = tokio::spawn(worker.serve(shutdown.clone()));
        InProcWorker {
            metrics,
            sink_stats,
            shutdown,
            worker: worker_handle,
            sink: sink_handle,
        }
    }

    /// Jobs this worker schedules.
    pub fn scheduled(&self) -> u64 {
        self.metrics.jobs_scheduled.load(Ordering::Relaxed)
    }

    /// Stops the worker, then its sink (which flushes).
    pub async fn stop(self) {
        self.shutdown.cancel();
        if let Ok(Err(err)) = self.worker.await {
            eprintln!("bench: worker ended with {err:#}");
        }
        // The worker held the last sink handle; the sink drains and ends.
        if let Ok(Err(err)) = self.sink.await {
            eprintln!("bench: sink ended with {err:#}");
        }
    }
}

/// Waits until `scheduled()` reaches `want` (summed over `workers`), at most
/// `limit`; returns how long it took.
pub async fn wait_scheduled(workers: &[&InProcWorker], want: u64, limit: Duration) -> Duration {
    let started = std::time::Instant::now();
    while workers.iter().map(|w| w.scheduled()).sum::<u64>() < want && started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// Sleeps until the next whole second plus `offset_ms`.
pub async fn align_to_second(offset_ms: i64) {
    let now = Timestamp::now();
    let next = now
        .round(
            jiff::TimestampRound::new()
                .smallest(Unit::Second)
                .mode(jiff::RoundMode::Ceil),
        )
        .unwrap_or(now);
    let at = next + jiff::SignedDuration::from_millis(offset_ms);
    let wait = at.duration_since(now).as_secs_f64().max(0.0);
    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
}

/// A `running` record of a scheduled WASM run of `job` at `tick`, as the
/// runner writes it when the run starts.
pub fn run_record(job: JobName, tick: Timestamp) -> RunRecord {
    RunRecord {
        worker: "bench".into(),
        fence: 1,
        started_at: Some(tick),
        ..RunRecord::new(job, RunId::generate(), tick, "wasm", RunStatus::Running)
    }
}
