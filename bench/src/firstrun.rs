//! Row 1, first run after upload: a job's first run against its later runs,
//! on a real worker in this process (embedded store, SQLite log store, the
//! WASM engine with an empty disk cache, modules read from the store as a
//! worker reads them). The job is saved just after one of its ticks, so its
//! first tick comes one period after the upload; the worker gets the module
//! ready when it takes the job on (compile, or load from the disk cache), so
//! that tick should neither wait for a compilation nor start later than the
//! ones after it. Without the warm-up, the first run would wait for the
//! compile time of the table above.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use jiff::Timestamp;
use sandcron::coord::embedded::EmbeddedStore;
use sandcron::coord::{Coordinator, KvStore};
use sandcron::exec::Executor;
use sandcron::exec::wasm::{WasmConfig, WasmEngine};
use sandcron::ids::{JobName, ModuleDigest};
use sandcron::logstore::sqlite::SqliteLogStore;
use sandcron::logstore::{LogStore, RunQuery};
use sandcron::module::ModuleInspector;
use sandcron::run::{RunRecord, RunStatus};
use sandcron::worker::StoredModules;

use crate::inproc::{InProcWorker, job_record, wasm_kind};
use crate::report::{Stats, ms};

/// One guest's first run and later runs.
pub struct FirstRun {
    pub label: String,
    pub period_s: u64,
    /// How long the first run waited for its module (`None`: not at all).
    pub first_wait_ms: Option<u64>,
    /// Start minus tick, and start to end, of the first run.
    pub first_late_ms: f64,
    pub first_run_ms: f64,
    /// The same medians over the later runs, and whether any of them waited.
    pub later_late: Option<Stats>,
    pub later_run: Option<Stats>,
    pub later_count: usize,
}

fn millis(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64() * 1e3
}

/// Uploads `bytes` to a fresh worker's store, saves a job running it every
/// `period_s` seconds just after one of its ticks, and reads back its first
/// `1 + later` runs.
pub async fn measure(label: &str, bytes: &[u8], period_s: u64, later: usize) -> anyhow::Result<FirstRun> {
    let data = tempfile::tempdir()?;
    let coord = Coordinator::new(EmbeddedStore::in_memory() as Arc<dyn KvStore>, "/bench-first-run/");
    let logs: Arc<dyn LogStore> = SqliteLogStore::open(&data.path().join("logs.db"))?;
    let engine = WasmEngine::new(WasmConfig {
        capacity: 4,
        cache_dir: Some(data.path().join("cache")),
        ..WasmConfig::default()
    })?;
    let info = engine.inspect(bytes).map_err(|err| anyhow::anyhow!("{label}: {err}"))?;
    let executor: Arc<dyn Executor> = Arc::new(engine.executor(Arc::new(StoredModules::new(coord.clone()))));
    let worker = InProcWorker::start("bench-first-run", coord.clone(), logs.clone(), executor);

    let digest = ModuleDigest::of(bytes);
    coord
        .put_module(&digest, bytes, info.kind, info.capabilities, Some(label))
        .await?;
    // Save the job a quarter second after a tick, so that its first tick is
    // one period (less that quarter second) after the upload.
    let period_ms = period_s as i128 * 1000;
    let now_ms = Timestamp::now().as_millisecond() as i128;
    let next_tick_ms = (now_ms / period_ms + 1) * period_ms;
    tokio::time::sleep(Duration::from_millis((next_tick_ms + 250 - now_ms) as u64)).await;
    let name = JobName::new("first-run")?;
    coord
        .put_job(
            &name,
            &job_record(&format!("*/{period_s} * * * * *"), wasm_kind(&digest)),
            None,
            true,
        )
        .await?;

    let limit = Duration::from_secs(period_s * (later as u64 + 2) + 60);
    let started = Instant::now();
    let runs = loop {
        let page = logs
            .runs(&RunQuery {
                job: Some(name.clone()),
                limit: 100,
                ..RunQuery::default()
            })
            .await?;
        let mut ended: Vec<RunRecord> = page
            .runs
            .into_iter()
            .filter(|run| run.status.is_terminal() && run.started_at.is_some())
            .collect();
        if ended.len() > later {
            ended.sort_by_key(|run| run.tick);
            break ended;
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "{label}: only {} of {} runs ended within {limit:?}",
            ended.len(),
            later + 1
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    worker.stop().await;
    if let Some(bad) = runs.iter().find(|run| run.status != RunStatus::Succeeded) {
        anyhow::bail!("{label}: run {} ended {:?}: {:?}", bad.run_id, bad.status, bad.error);
    }
    let timing = |run: &RunRecord| -> anyhow::Result<(f64, f64)> {
        let start = run.started_at.context("a started run has a start")?;
        let end = run.ended_at.context("an ended run has an end")?;
        Ok((millis(run.tick, start), millis(start, end)))
    };
    let (first, rest) = runs.split_first().context("at least one run")?;
    let (first_late_ms, first_run_ms) = timing(first)?;
    let mut late = Vec::new();
    let mut run = Vec::new();
    for later_run in rest.iter().take(later) {
        let (l, r) = timing(later_run)?;
        late.push(l);
        run.push(r);
    }
    Ok(FirstRun {
        label: label.to_owned(),
        period_s,
        first_wait_ms: first.module_wait_ms,
        first_late_ms,
        first_run_ms,
        later_late: Stats::of(&late),
        later_run: Stats::of(&run),
        later_count: late.len(),
    })
}

/// The table's row for `row`.
pub fn table_row(row: &FirstRun) -> Vec<String> {
    let median = |stats: Option<Stats>| stats.map_or("–".into(), |s| ms(s.median));
    vec![
        row.label.clone(),
        format!("every {} s", row.period_s),
        row.first_wait_ms.map_or("none".into(), |wait| ms(wait as f64)),
        ms(row.first_late_ms),
        median(row.later_late),
        ms(row.first_run_ms),
        median(row.later_run),
        row.later_count.to_string(),
    ]
}
