//! Row 3, fire lateness (start of a run minus its scheduled instant) with 1k
//! and 10k jobs firing every second: sandcron embedded (one in-process
//! worker on the embedded store and the SQLite log store, no-op executor),
//! sandcron in cluster mode (3 `sandcron worker` processes, etcd, nx-27017,
//! a trivial WASM guest), APScheduler (its own process, no-op jobs,
//! default executor) and tokio-cron-scheduler (the Rust crate, `rustpeer`),
//! with the ratio to APScheduler.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sandcron::coord::embedded::EmbeddedStore;
use sandcron::coord::{Coordinator, KvStore};
use sandcron::logstore::LogStore;
use sandcron::logstore::sqlite::SqliteLogStore;
use sandcron_tests::cluster::metric_sample;
use sandcron_tests::workspace_root;

use crate::Ctx;
use crate::inproc::{InProcWorker, Probe, load_jobs, shell_kind, wait_scheduled, wasm_kind};
use crate::report::{Stats, ms, rate, ratio};
use crate::servers::{Cluster, histogram_max_bound, histogram_quantile, lateness_buckets, merge_buckets};
use crate::sys::{cpu_seconds, machine_busy_seconds};

/// What one APScheduler run measured (scripts/bench-apscheduler.py).
#[derive(Debug, Clone)]
pub struct Apscheduler {
    pub version: String,
    pub samples: Vec<f64>,
    pub expected: Option<f64>,
    pub missed: u64,
    pub max_instances: u64,
    pub load_s: f64,
    pub rss_kib: u64,
    pub cpu_per_s: f64,
    pub seconds: f64,
}

impl Apscheduler {
    pub fn stats(&self) -> Option<Stats> {
        Stats::of(&self.samples)
    }

    pub fn fires_per_s(&self) -> f64 {
        self.samples.len() as f64 / self.seconds
    }
}

/// The venv python `scripts/bench-install-peers.sh` made.
fn apscheduler_python() -> Option<PathBuf> {
    let entries = std::fs::read_dir(workspace_root().join("target/bench-tools")).ok()?;
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("venv-apscheduler-"))
        .map(|e| e.path().join("bin/python"))
        .find(|p| p.exists())
}

/// Runs `jobs` APScheduler jobs (every second, or the scale mix) for
/// `seconds` after a 3 s warm-up.
pub async fn apscheduler(jobs: usize, seconds: f64, mix: bool) -> Result<Apscheduler, String> {
    let python = apscheduler_python().ok_or("not installed (scripts/bench-install-peers.sh)")?;
    let out = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    let mut command = tokio::process::Command::new(python);
    command
        .arg(workspace_root().join("scripts/bench-apscheduler.py"))
        .args([
            "--jobs",
            &jobs.to_string(),
            "--seconds",
            &seconds.to_string(),
            "--warmup",
            "3",
        ])
        .arg("--out")
        .arg(out.path());
    if mix {
        command.arg("--mix");
    }
    let output = command.output().await.map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "the script failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).map_err(|e| e.to_string())?;
    let samples = std::fs::read_to_string(out.path())
        .map_err(|e| e.to_string())?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let num = |key: &str| summary[key].as_f64().unwrap_or(f64::NAN);
    Ok(Apscheduler {
        version: summary["version"].as_str().unwrap_or("?").to_owned(),
        samples,
        expected: summary["expected"].as_f64(),
        missed: num("missed") as u64,
        max_instances: num("max_instances") as u64,
        load_s: num("load_s"),
        rss_kib: num("rss_kib") as u64,
        cpu_per_s: num("cpu_per_s"),
        seconds,
    })
}

/// One measured configuration.
struct Row {
    setup: String,
    jobs: usize,
    fires_per_s: f64,
    p50: f64,
    p99: f64,
    max: String,
    cpu: String,
    note: String,
}

impl Row {
    /// A peer that could not be measured, and why.
    fn not_measured(setup: &str, jobs: usize, problem: impl std::fmt::Display) -> Row {
        Row {
            setup: setup.into(),
            jobs,
            fires_per_s: f64::NAN,
            p50: f64::NAN,
            p99: f64::NAN,
            max: "–".into(),
            cpu: "–".into(),
            note: format!("not measured: {problem}"),
        }
    }
}

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let window = ctx.pick(6, 60);
    // `SANDCRON_BENCH_LATENESS=embedded,cluster` measures only those setups
    // (of embedded, cluster, apscheduler, rust), and
    // `SANDCRON_BENCH_LATENESS_JOBS=1000` only that size (of 1000, 10000):
    // for profiling one of them.
    let only = std::env::var("SANDCRON_BENCH_LATENESS").ok();
    let wanted = |setup: &str| only.as_deref().is_none_or(|only| only.split(',').any(|s| s == setup));
    let size = std::env::var("SANDCRON_BENCH_LATENESS_JOBS").ok();
    let sizes: Vec<usize> = [1_000, 10_000]
        .into_iter()
        .filter(|jobs| size.as_deref().is_none_or(|size| size == jobs.to_string()))
        .collect();
    let mut rows = Vec::new();
    let mut peers = Vec::new();
    for jobs in sizes.iter().copied().filter(|_| wanted("embedded")) {
        rows.push(embedded(jobs, window).await?);
    }
    for jobs in sizes.iter().copied().filter(|_| wanted("cluster")) {
        rows.push(cluster(jobs, window).await?);
    }
    for jobs in sizes.iter().copied().filter(|_| wanted("apscheduler")) {
        let peer = apscheduler(jobs, window as f64, false).await;
        let row = match &peer {
            Ok(a) => {
                let stats = a.stats();
                Row {
                    setup: format!("APScheduler {} (BackgroundScheduler, default executor)", a.version),
                    jobs,
                    fires_per_s: a.fires_per_s(),
                    p50: stats.map_or(f64::NAN, |s| s.median),
                    p99: stats.map_or(f64::NAN, |s| s.p99),
                    max: stats.map_or("–".into(), |s| ms(s.max)),
                    cpu: format!("{:.0} %", a.cpu_per_s * 100.0),
                    note: format!(
                        "{} ticks dropped as misfired (> 1 s late), {} skipped (max_instances)",
                        a.missed, a.max_instances
                    ),
                }
            }
            Err(problem) => Row::not_measured("APScheduler", jobs, problem),
        };
        peers.push((jobs, row.p50, row.p99));
        rows.push(row);
    }
    for jobs in sizes.iter().copied().filter(|_| wanted("rust")) {
        rows.push(rust_peer(jobs, window).await);
    }

    let report = &mut ctx.report;
    report.heading("3. Fire lateness");
    report.note(format!(
        "N jobs at `* * * * * *` (every second) for {window} s after a warm-up; lateness = actual start − \
         scheduled instant. Embedded: one in-process worker (embedded store, claims, SQLite log store, no-op \
         executor), exact per-run samples. Cluster: 3 `sandcron worker` processes + 1 master on one etcd and \
         nx-27017, a no-op WASM guest; from the workers' `sandcron_fire_lateness_seconds` histograms (window \
         delta, quantiles interpolated inside buckets as Prometheus does, max as the bucket bound). \
         APScheduler: its own Python process, no-op jobs, exact samples. tokio-cron-scheduler: the Rust crate \
         with its defaults in the bench's child process, no-op jobs, lateness within the second a run started \
         in. CPU: the scheduler processes' CPU \
         per second of wall time (cluster: the 3 workers together). Ratios: p50 and p99 over APScheduler's \
         with the same N."
    ));
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let (p50, p99) = peers
                .iter()
                .find(|(jobs, _, _)| *jobs == row.jobs)
                .map_or((f64::NAN, f64::NAN), |(_, p50, p99)| (*p50, *p99));
            vec![
                row.setup.clone(),
                row.jobs.to_string(),
                format!("{} of {}", rate(row.fires_per_s), rate(row.jobs as f64)),
                ms(row.p50),
                ms(row.p99),
                row.max.clone(),
                row.cpu.clone(),
                ratio(row.p50, p50),
                ratio(row.p99, p99),
                row.note.clone(),
            ]
        })
        .collect();
    report.table(
        &[
            "scheduler",
            "jobs",
            "fires",
            "p50",
            "p99",
            "max",
            "CPU",
            "p50 vs APScheduler",
            "p99 vs APScheduler",
            "notes",
        ],
        &table,
    );
    Ok(())
}

/// tokio-cron-scheduler with the same N jobs (see `rustpeer`).
async fn rust_peer(jobs: usize, window: u64) -> Row {
    let cpu = cpu_seconds("self");
    let wall = Instant::now();
    match crate::rustpeer::measure(jobs, window).await {
        Ok(peer) => {
            let cpu = (cpu_seconds("self") - cpu) / wall.elapsed().as_secs_f64();
            let stats = Stats::of(&peer.samples);
            Row {
                setup: "tokio-cron-scheduler 0.15 (defaults, in process, no-op jobs)".into(),
                jobs,
                fires_per_s: peer.fires as f64 / peer.seconds,
                p50: stats.map_or(f64::NAN, |s| s.median),
                p99: stats.map_or(f64::NAN, |s| s.p99),
                max: stats.map_or("–".into(), |s| ms(s.max)),
                cpu: format!("{:.0} %", cpu * 100.0),
                note: "lateness within the second a run started in (the crate does not pass the scheduled instant)"
                    .into(),
            }
        }
        Err(problem) => Row::not_measured("tokio-cron-scheduler", jobs, format!("{problem:#}")),
    }
}

async fn embedded(jobs: usize, window: u64) -> anyhow::Result<Row> {
    let data = tempfile::tempdir()?;
    let store = EmbeddedStore::open(&data.path().join("coord.db"))?;
    let logs: Arc<dyn LogStore> = SqliteLogStore::open(&data.path().join("logs.db"))?;
    let coord = Coordinator::new(store.clone() as Arc<dyn KvStore>, "/bench/");
    load_jobs(&coord, jobs, "* * * * * *", &shell_kind("true"), 8).await;
    let probe = Arc::new(Probe::default());
    let worker = InProcWorker::start("bench-lateness", coord, logs, probe.clone());
    wait_scheduled(&[&worker], jobs as u64, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    probe.take();
    let cpu = cpu_seconds("self");
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(window)).await;
    let cpu = (cpu_seconds("self") - cpu) / wall.elapsed().as_secs_f64();
    let by_tick = probe.take_by_tick();
    let samples: Vec<f64> = by_tick.iter().map(|(_, late)| *late).collect();
    let bursts = Bursts::of(&by_tick);
    let waiting = worker
        .metrics
        .runs_waiting_for_capacity
        .load(std::sync::atomic::Ordering::Relaxed);
    // Runs held back by the log sink (senders waiting for room in its
    // channel) over the whole run, warm-up included.
    let held_s = worker.sink_stats.held_micros.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6;
    worker.stop().await;
    let stats = Stats::of(&samples);
    Ok(Row {
        setup: "sandcron embedded (in process)".into(),
        jobs,
        fires_per_s: samples.len() as f64 / window as f64,
        p50: stats.map_or(f64::NAN, |s| s.median),
        p99: stats.map_or(f64::NAN, |s| s.p99),
        max: stats.map_or("–".into(), |s| ms(s.max)),
        cpu: format!("{:.0} %", cpu * 100.0),
        note: format!(
            "{bursts}; {waiting} runs waiting for capacity at the end; runs held back by the log sink: {held_s:.1} s \
             in all"
        ),
    })
}

async fn cluster(jobs: usize, window: u64) -> anyhow::Result<Row> {
    let mut cluster = Cluster::start(3, "capacity = 64").await?;
    let digest = cluster.put_noop_module().await?;
    load_jobs(&cluster.coord, jobs, "* * * * * *", &wasm_kind(&digest), 16).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while cluster.sum_metric("sandcron_jobs_scheduled").await < jobs as f64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pids: Vec<String> = cluster.workers.iter().map(|(w, _)| w.pid()).collect();
    let cpu_of = |pids: &[String]| pids.iter().map(|p| cpu_seconds(p)).sum::<f64>();
    // Where the machine's CPU goes in the window: the stores run on the
    // same two cores as the workers.
    let store_pids = |pid: Option<u32>| pid.map(|p| vec![p.to_string()]).unwrap_or_default();
    let etcd_pids = store_pids(cluster.etcd.pid());
    let mongo_pids = store_pids(cluster.mongo.pid());
    let stores_before = (cpu_of(&etcd_pids), cpu_of(&mongo_pids), machine_busy_seconds());
    let mut before = Vec::new();
    for text in cluster.worker_metrics().await {
        merge_buckets(&mut before, &lateness_buckets(&text), 1.0);
    }
    let cpu = cpu_of(&pids);
    let wall = Instant::now();
    let window_start = jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_secs(window)).await;
    let window_end = jiff::Timestamp::now();
    let mut delta = Vec::new();
    let texts = cluster.worker_metrics().await;
    let elapsed = wall.elapsed().as_secs_f64();
    let cpu = (cpu_of(&pids) - cpu) / elapsed;
    let etcd_cpu = (cpu_of(&etcd_pids) - stores_before.0) / elapsed;
    let mongo_cpu = (cpu_of(&mongo_pids) - stores_before.1) / elapsed;
    let machine_cpu = (machine_busy_seconds() - stores_before.2) / elapsed;
    for text in &texts {
        merge_buckets(&mut delta, &lateness_buckets(text), 1.0);
    }
    merge_buckets(&mut delta, &before, -1.0);
    let queued: f64 = texts
        .iter()
        .map(|t| metric_sample(t, "sandcron_sink_queue_depth").unwrap_or(0.0))
        .sum();
    let waiting: f64 = texts
        .iter()
        .map(|t| metric_sample(t, "sandcron_runs_waiting_for_capacity").unwrap_or(0.0))
        .sum();
    let spooled: f64 = texts
        .iter()
        .map(|t| metric_sample(t, "sandcron_sink_spool_bytes").unwrap_or(0.0))
        .sum();
    let count = delta.last().map_or(0.0, |b| b.1);
    let history = history_after(&mut cluster, window_start, window_end).await;
    drop(cluster);
    Ok(Row {
        setup: "sandcron cluster (3 workers, etcd, nx-27017)".into(),
        jobs,
        fires_per_s: count / window as f64,
        p50: histogram_quantile(&delta, 0.5) * 1e3,
        p99: histogram_quantile(&delta, 0.99) * 1e3,
        max: match histogram_max_bound(&delta) {
            bound if bound.is_infinite() => "> 30 s".to_owned(),
            bound => format!("≤ {}", ms(bound * 1e3)),
        },
        cpu: format!("{:.0} %", cpu * 100.0),
        note: format!(
            "CPU in the window, in cores: workers {cpu:.2}, etcd {etcd_cpu:.2}, nx-27017 {mongo_cpu:.2}, the \
             machine {machine_cpu:.2} of {}; at the end: {queued:.0} events queued in the sinks, {:.1} MiB \
             spooled, {waiting:.0} runs waiting for capacity; {history}",
            std::thread::available_parallelism().map_or(0, usize::from),
            spooled / 1048576.0
        ),
    })
}

/// Stops the workers (all at once: SIGTERM, and they drain their runs and
/// sinks, spool included, before they exit), then checks the window's
/// history with `sandcron check-history` through the master (no output
/// read: the no-op guest writes none); says how it went.
async fn history_after(cluster: &mut Cluster, since: jiff::Timestamp, until: jiff::Timestamp) -> String {
    let drain = Instant::now();
    // One SIGTERM each, all at once (a second one would make a worker exit
    // without draining).
    std::thread::scope(|scope| {
        for (worker, _) in &mut cluster.workers {
            scope.spawn(move || worker.stop_within(Duration::from_secs(600)));
        }
    });
    let drained = drain.elapsed().as_secs_f64();
    // Bounded: reading a 10k-jobs/s window back through the Python
    // nx-27017 can take longer than the rest of the bench.
    let check_limit = Duration::from_secs(600);
    let checking = Instant::now();
    let output = tokio::time::timeout(
        check_limit,
        tokio::process::Command::new(crate::sys::sandcron_bin())
            .args(["check-history", "--server", &cluster.base, "--no-output", "--json"])
            .args(["--since", &since.to_string(), "--until", &until.to_string()])
            .env_remove("SANDCRON_TOKEN")
            .kill_on_drop(true)
            .output(),
    )
    .await;
    let checked = checking.elapsed().as_secs_f64();
    let output = match output {
        Ok(output) => output,
        Err(_) => {
            return format!(
                "the workers drained and exited {drained:.0} s after SIGTERM; `check-history` over the window did \
                 not finish within {} s (stopped)",
                check_limit.as_secs()
            );
        }
    };
    match output {
        Ok(output) => {
            let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
            let violations = report["violations"].as_array().map_or(0, Vec::len);
            let complaint = String::from_utf8_lossy(&output.stderr);
            let complaint = complaint.lines().next().unwrap_or_default();
            format!(
                "the workers drained and exited {drained:.0} s after SIGTERM; `check-history` over the window \
                 ({checked:.0} s): exit {}, {} runs, {violations} violations{}",
                output.status.code().unwrap_or(-1),
                report["runs"],
                if complaint.is_empty() {
                    String::new()
                } else {
                    format!(" ({complaint})")
                }
            )
        }
        Err(err) => format!("workers drained in {drained:.0} s; check-history could not run: {err}"),
    }
}

/// How each tick's burst went: when its first run started, and when its
/// last, over the ticks of the window.
struct Bursts {
    first: Option<Stats>,
    last: Option<Stats>,
}

impl Bursts {
    fn of(samples: &[(jiff::Timestamp, f64)]) -> Bursts {
        let mut ticks: std::collections::BTreeMap<jiff::Timestamp, (f64, f64)> = std::collections::BTreeMap::new();
        for (tick, late) in samples {
            let (first, last) = ticks.entry(*tick).or_insert((*late, *late));
            *first = first.min(*late);
            *last = last.max(*late);
        }
        let firsts: Vec<f64> = ticks.values().map(|(first, _)| *first).collect();
        let lasts: Vec<f64> = ticks.values().map(|(_, last)| *last).collect();
        Bursts {
            first: Stats::of(&firsts),
            last: Stats::of(&lasts),
        }
    }
}

impl std::fmt::Display for Bursts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.first, &self.last) {
            (Some(first), Some(last)) => write!(
                f,
                "per tick ({} ticks), first run started after {} (median), last after {} (median; best {}, worst {})",
                last.count,
                ms(first.median),
                ms(last.median),
                ms(last.min),
                ms(last.max)
            ),
            _ => write!(f, "no ticks"),
        }
    }
}
