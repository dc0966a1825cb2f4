//! Row 2, dispatch: tick due → run recorded in the log store, in process
//! (embedded coordination store, claims, no-op executor, batching sink into
//! SQLite), for 1 job and for 10k jobs due in the same second; compared with
//! the sink's flush interval and with writing the same records straight
//! into the store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use sandcron::coord::embedded::EmbeddedStore;
use sandcron::coord::{Coordinator, KvStore};
use sandcron::logstore::sqlite::SqliteLogStore;
use sandcron::logstore::{LogBatch, LogStore, SinkConfig};
use sandcron::run::RunStatus;

use crate::Ctx;
use crate::inproc::{InProcWorker, Probe, Timed, job_name, load_jobs, run_record, shell_kind, wait_scheduled};
use crate::report::{Stats, ms, ratio, spread};

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let single_ticks = ctx.pick(6, 30);
    let bursts = ctx.pick(2, 6);
    let burst_jobs = 10_000;

    // One job every second.
    let single = {
        let (samples, _) = measure(1, "* * * * * *", Duration::from_secs(single_ticks + 1)).await?;
        Stats::of(&samples.iter().map(|(_, ms)| *ms).collect::<Vec<_>>())
    };
    // 10k jobs due together every 5 s.
    let (samples, _) = measure(burst_jobs, "*/5 * * * * *", Duration::from_secs(5 * bursts as u64 + 1)).await?;
    let mut by_tick: BTreeMap<Timestamp, Vec<f64>> = BTreeMap::new();
    for (tick, ms) in &samples {
        by_tick.entry(*tick).or_default().push(*ms);
    }
    // Whole bursts only (the first and last may be cut by the window).
    let complete: Vec<&Vec<f64>> = by_tick.values().filter(|v| v.len() == burst_jobs).collect();
    let per_run: Vec<f64> = complete.iter().flat_map(|v| v.iter().copied()).collect();
    let burst_done: Vec<f64> = complete
        .iter()
        .map(|v| v.iter().copied().fold(f64::NAN, f64::max))
        .collect();
    let burst_first: Vec<f64> = complete
        .iter()
        .map(|v| v.iter().copied().fold(f64::NAN, f64::min))
        .collect();

    // The floor: the same records written straight into a SQLite store in
    // the sink's batch size (a `running` and a final record per run).
    let raw_ms = raw_write(burst_jobs).await?;
    let flush_ms = SinkConfig::default().flush_interval.as_secs_f64() * 1e3;

    let report = &mut ctx.report;
    report.heading("2. Dispatch: tick due → run recorded");
    report.note(format!(
        "In process: the embedded coordination store, the worker (timer queue, packed claims, runner), a no-op \
         executor and the batching sink into SQLite (defaults: {} events or {flush_ms:.0} ms per batch). A \
         sample is the instant the run's final record was written to the store minus its tick. 1 job: every \
         second, {single_ticks} ticks. 10k jobs: all at `*/5 * * * * *`, {} complete bursts. Comparisons: the \
         sink's flush interval (the most a batch waits before it is written) and writing the same 2 × 10k records \
         straight into SQLite with no scheduler.",
        SinkConfig::default().batch_docs,
        complete.len(),
    ));
    let done = Stats::of(&burst_done);
    report.table(
        &["case", "tick → recorded: median (p99; min–max)", "comparison", "ratio"],
        &[
            vec![
                "1 job, every second".into(),
                spread(single),
                format!("sink flush interval {}", ms(flush_ms)),
                ratio(single.map_or(f64::NAN, |s| s.median), flush_ms),
            ],
            vec![
                "10k jobs in one second: each run".into(),
                spread(Stats::of(&per_run)),
                "–".into(),
                "–".into(),
            ],
            vec![
                "10k jobs in one second: first run of the burst".into(),
                spread(Stats::of(&burst_first)),
                "–".into(),
                "–".into(),
            ],
            vec![
                "10k jobs in one second: whole burst recorded".into(),
                spread(done),
                format!("2 × 10k records written straight to SQLite: {}", ms(raw_ms)),
                ratio(done.map_or(f64::NAN, |s| s.median), raw_ms),
            ],
        ],
    );
    Ok(())
}

/// Runs `jobs` jobs on `schedule` for `window` and returns (tick, tick →
/// recorded ms) of each succeeded scheduled run.
async fn measure(jobs: usize, schedule: &str, window: Duration) -> anyhow::Result<(Vec<(Timestamp, f64)>, f64)> {
    let data = tempfile::tempdir()?;
    let store = EmbeddedStore::open(&data.path().join("coord.db"))?;
    let sqlite: Arc<dyn LogStore> = SqliteLogStore::open(&data.path().join("logs.db"))?;
    let timed = Timed::new(sqlite);
    let coord = Coordinator::new(store.clone() as Arc<dyn KvStore>, "/bench/");
    load_jobs(&coord, jobs, schedule, &shell_kind("true"), 8).await;
    let probe = Arc::new(Probe::default());
    let worker = InProcWorker::start("bench-dispatch", coord, timed.clone(), probe);
    wait_scheduled(&[&worker], jobs as u64, Duration::from_secs(120)).await;
    // Let the first (possibly partial) second pass.
    tokio::time::sleep(Duration::from_secs(1)).await;
    timed.take();
    let started = Instant::now();
    tokio::time::sleep(window).await;
    worker.stop().await;
    Ok((timed.take(), started.elapsed().as_secs_f64()))
}

/// Milliseconds to write `runs` × 2 run records into a fresh SQLite store in
/// batches of the sink's size.
async fn raw_write(runs: usize) -> anyhow::Result<f64> {
    let data = tempfile::tempdir()?;
    let store = SqliteLogStore::open(&data.path().join("logs.db"))?;
    let tick = Timestamp::now();
    let mut records = Vec::with_capacity(runs * 2);
    for i in 0..runs {
        let mut record = run_record(job_name(i), tick);
        records.push(record.clone());
        record.status = RunStatus::Succeeded;
        record.ended_at = Some(tick);
        records.push(record);
    }
    let batch = SinkConfig::default().batch_docs;
    let started = Instant::now();
    for chunk in records.chunks(batch) {
        store
            .write(&LogBatch {
                runs: chunk.to_vec(),
                chunks: Vec::new(),
            })
            .await?;
    }
    Ok(started.elapsed().as_secs_f64() * 1e3)
}
