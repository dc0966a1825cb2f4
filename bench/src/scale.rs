//! Row 4, scale: 100k jobs on one in-process worker (embedded coordination
//! store, claims, SQLite log store behind the sink, a no-op executor), with a
//! mixed job set averaging one fire per job per minute: memory, CPU per
//! second at steady state, fire lateness; the timer queue's insert, fire and
//! remove costs; the same job set in APScheduler for comparison; what each
//! structure costs per job; and a real `sandcron worker` process on etcd
//! with the jobs as WASM jobs: its RSS and heap as it takes them up, after a
//! window of runs, and after a restart on the stored jobs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use sandcron::coord::embedded::EmbeddedStore;
use sandcron::coord::{Coordinator, KvStore};
use sandcron::cronexpr::Schedule;
use sandcron::job::JobKind;
use sandcron::logstore::LogStore;
use sandcron::logstore::sqlite::SqliteLogStore;
use sandcron::schedule::TimerQueue;

use crate::Ctx;
use crate::inproc::{InProcWorker, Probe, job_name, job_record, shell_kind, wait_scheduled, wasm_kind};
use crate::lateness::{Apscheduler, apscheduler};
use crate::report::{Stats, mib, ms, rate, ratio};
use crate::servers::Cluster;
use crate::sys::{cpu_seconds, heap_mib, rss_kib};
use sandcron_tests::cluster::metric_sample;

/// The job mix, averaging one fire per job per minute: 20 % twice a minute,
/// 40 % once a minute, 40 % every other minute, at spread-out seconds.
/// `scripts/bench-apscheduler.py --mix` builds the same set.
pub fn schedule_text(i: usize) -> String {
    let second = (i * 7919) % 60;
    match i % 5 {
        0 => format!("{second},{} * * * * *", (second + 30) % 60),
        1 | 2 => format!("{second} * * * * *"),
        _ => format!("{second} */2 * * * *"),
    }
}

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let jobs = 100_000;
    let window = ctx.pick(10, 60);
    let (next_ns, insert_ns, fire_ns, remove_ns) = micro(jobs)?;
    // `SANDCRON_BENCH_SCALE=etcd` measures only those setups (of inproc,
    // etcd): for looking into one of them.
    let only = std::env::var("SANDCRON_BENCH_SCALE").ok();
    let wanted = |setup: &str| only.as_deref().is_none_or(|only| only.split(',').any(|s| s == setup));
    if wanted("inproc") {
        in_process(ctx, jobs, window).await?;
    }
    let structures = crate::memory::per_job(jobs)?;
    let report = &mut ctx.report;
    report.line("Memory per job, structure by structure (a counting allocator; the requested bytes, and the heap they take with glibc's chunk headers and rounding):\n");
    report.table(
        &["structure", "requested", "heap"],
        &structures
            .iter()
            .map(|s| {
                let bytes = |b: f64| {
                    if b.is_finite() {
                        format!("{b:.0} B")
                    } else {
                        "–".into()
                    }
                };
                vec![s.what.to_owned(), bytes(s.requested), bytes(s.heap)]
            })
            .collect::<Vec<_>>(),
    );
    if wanted("etcd") {
        // The topology that scales: a `sandcron worker` process on etcd.
        let on_etcd = worker_on_etcd(jobs, window).await;
        let report = &mut ctx.report;
        match on_etcd {
            Ok(on_etcd) => {
                report.line(format!(
                    "The same {jobs} jobs as WASM jobs (the no-op module), one `sandcron worker` process on etcd \
                     (nx-27017 for the logs, capacity 64), {window} s window:\n"
                ));
                report.table(
                    &["worker process", "RSS", "heap in use / free (its /metrics)"],
                    &[
                        on_etcd.empty.row("started, no jobs".into()),
                        on_etcd.loaded.row(format!(
                            "every job scheduled ({:.1} s after the last write)",
                            on_etcd.startup.as_secs_f64()
                        )),
                        on_etcd.steady.row("after the window".into()),
                        on_etcd.restarted.row(format!(
                            "restarted on the stored jobs, every job scheduled ({:.1} s after the start)",
                            on_etcd.restart_startup.as_secs_f64()
                        )),
                        vec![
                            "per job (scheduled − no jobs)".into(),
                            format!(
                                "{:.2} KiB",
                                on_etcd.loaded.rss.saturating_sub(on_etcd.empty.rss) as f64 / jobs as f64
                            ),
                            "–".into(),
                        ],
                    ],
                );
            }
            Err(problem) => report.note(format!("worker on etcd not measured: {problem:#}")),
        }
    }
    let report = &mut ctx.report;
    report.line("Pure scheduling cost (one core, no I/O), per job:\n");
    report.table(
        &["operation", "cost"],
        &[
            vec!["next fire time, job mix".into(), format!("{next_ns:.0} ns")],
            vec![
                format!("timer queue insert (heap of {jobs})"),
                format!("{insert_ns:.0} ns"),
            ],
            vec![
                "fire: pop due + next fire + re-insert".into(),
                format!("{fire_ns:.0} ns"),
            ],
            vec!["timer queue remove".into(), format!("{remove_ns:.0} ns")],
        ],
    );
    Ok(())
}

/// The in-process worker on the embedded store with 100k shell jobs, and
/// the same job set in APScheduler.
async fn in_process(ctx: &mut Ctx, jobs: usize, window: u64) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let rss_empty = rss_kib("self");
    let store = EmbeddedStore::open(&data.path().join("coord.db"))?;
    let logs: Arc<dyn LogStore> = SqliteLogStore::open(&data.path().join("logs.db"))?;
    let coord = Coordinator::new(store.clone() as Arc<dyn KvStore>, "/bench/");
    let load_started = Instant::now();
    write_mix(&coord, jobs, &shell_kind("true"), 8).await?;
    let load_s = load_started.elapsed().as_secs_f64();

    let rss_store = rss_kib("self");
    let probe = Arc::new(Probe::default());
    let worker = InProcWorker::start("bench-scale", coord.clone(), logs, probe.clone());
    let startup = wait_scheduled(&[&worker], jobs as u64, Duration::from_secs(600)).await;
    let rss_loaded = rss_kib("self");
    let heap_loaded = heap_mib();
    tokio::time::sleep(Duration::from_secs(5)).await;
    probe.take();
    let cpu_before = cpu_seconds("self");
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(window)).await;
    let cpu = cpu_seconds("self") - cpu_before;
    let wall = wall.elapsed().as_secs_f64();
    let rss_steady = rss_kib("self");
    let heap_steady = heap_mib();
    let lateness = probe.take();
    worker.stop().await;
    drop(store);
    let ours = Stats::of(&lateness);
    let fires = lateness.len() as f64 / wall;

    // The same job set in APScheduler, in its own process.
    let peer = apscheduler(jobs, window as f64, true).await;
    let report = &mut ctx.report;
    report.heading("4. Scale: 100k jobs on one worker");
    report.note(format!(
        "{jobs} jobs averaging one fire per minute each (20 % twice a minute, 40 % every minute, 40 % every \
         other minute); sandcron: one in-process worker on the embedded store with the SQLite log store and a \
         no-op executor; APScheduler: the same cron set in a BackgroundScheduler with no-op jobs. Steady-state \
         window {window} s after 5 s of warm-up."
    ));
    let theirs = peer.as_ref().ok();
    let from = |f: fn(&Apscheduler) -> f64| theirs.map_or(f64::NAN, f);
    let theirs_rss = from(|a| a.rss_kib as f64);
    let theirs_cpu = from(|a| a.cpu_per_s);
    let theirs_fires = from(Apscheduler::fires_per_s);
    let theirs_p99 = from(|a| a.stats().map_or(f64::NAN, |s| s.p99));
    let theirs_load = from(|a| a.load_s);
    let cpu_s = cpu / wall;
    let cell = |v: f64, f: &dyn Fn(f64) -> String| if v.is_finite() { f(v) } else { "–".into() };
    report.table(
        &["figure", "sandcron", "APScheduler", "sandcron / APScheduler"],
        &[
            vec![
                "load the jobs".into(),
                format!("{load_s:.1} s (8 writers, embedded store)"),
                cell(theirs_load, &|v| format!("{v:.1} s (add_job)")),
                ratio(load_s, theirs_load),
            ],
            vec![
                "start until every job is scheduled".into(),
                format!("{:.1} s", startup.as_secs_f64()),
                "–".into(),
                "–".into(),
            ],
            vec![
                "RSS with the jobs scheduled (process)".into(),
                mib(rss_loaded),
                cell(theirs_rss, &|v| mib(v as u64)),
                ratio(rss_loaded as f64, theirs_rss),
            ],
            vec![
                "of which heap in use / freed heap glibc keeps".into(),
                format!("{:.0} MiB / {:.0} MiB", heap_loaded.0, heap_loaded.1),
                "–".into(),
                "–".into(),
            ],
            vec!["RSS after the window".into(), mib(rss_steady), "–".into(), "–".into()],
            vec![
                "of which heap in use / freed heap glibc keeps".into(),
                format!("{:.0} MiB / {:.0} MiB", heap_steady.0, heap_steady.1),
                "–".into(),
                "–".into(),
            ],
            vec![
                "RSS per job (loaded − empty process)".into(),
                format!("{:.2} KiB", (rss_loaded.saturating_sub(rss_empty)) as f64 / jobs as f64),
                "–".into(),
                "–".into(),
            ],
            vec![
                "CPU per second of wall time".into(),
                format!("{:.1} % of a core", cpu_s * 100.0),
                cell(theirs_cpu, &|v| format!("{:.1} % of a core", v * 100.0)),
                ratio(cpu_s, theirs_cpu),
            ],
            vec![
                "fires".into(),
                rate(fires),
                cell(theirs_fires, &rate),
                ratio(fires, theirs_fires),
            ],
            vec![
                "CPU per fire".into(),
                format!("{:.0} µs", cpu / (lateness.len().max(1) as f64) * 1e6),
                cell(theirs_cpu / theirs_fires, &|v| format!("{:.0} µs", v * 1e6)),
                ratio(cpu_s / fires, theirs_cpu / theirs_fires),
            ],
            vec![
                "fire lateness p50 / p99 / max".into(),
                ours.map_or("–".into(), |s| {
                    format!("{} / {} / {}", ms(s.median), ms(s.p99), ms(s.max))
                }),
                theirs.and_then(Apscheduler::stats).map_or("–".into(), |s| {
                    format!("{} / {} / {}", ms(s.median), ms(s.p99), ms(s.max))
                }),
                ratio(ours.map_or(f64::NAN, |s| s.p99), theirs_p99),
            ],
        ],
    );
    if let Err(problem) = &peer {
        report.note(format!("APScheduler not measured: {problem}"));
    }
    let per_job = |kib: u64| format!("{:.2} KiB", kib as f64 / jobs as f64);
    let memory: Vec<Vec<String>> = vec![
        vec![
            "embedded store with the jobs loaded (RSS − empty process)".into(),
            per_job(rss_store.saturating_sub(rss_empty)),
        ],
        vec![
            "the worker on top, jobs scheduled (RSS − the loaded store)".into(),
            per_job(rss_loaded.saturating_sub(rss_store)),
        ],
    ];
    report.line("Memory per job (RSS deltas of this process):\n");
    report.table(&["what", "per job"], &memory);
    Ok(())
}

/// Writes jobs `0..jobs` of the scale mix (`schedule_text`) running `kind`
/// through `writers` concurrent tasks.
async fn write_mix(coord: &Coordinator, jobs: usize, kind: &JobKind, writers: usize) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for shard in 0..writers {
        let (coord, kind) = (coord.clone(), kind.clone());
        tasks.spawn(async move {
            for i in (shard..jobs).step_by(writers) {
                let record = job_record(&schedule_text(i), kind.clone());
                coord.put_job(&job_name(i), &record, None, false).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(())
}

/// RSS of a `sandcron worker` process on etcd, KiB, as it takes up the
/// scale mix, and again after a restart on the stored jobs.
struct OnEtcd {
    empty: Sample,
    loaded: Sample,
    steady: Sample,
    /// From the last job written to every job scheduled.
    startup: Duration,
    /// Restarted on the stored jobs (one snapshot), once every job is
    /// scheduled, and how long that took from the start.
    restarted: Sample,
    restart_startup: Duration,
}

/// A worker process's RSS (KiB), and its heap in use and free (bytes, from
/// its /metrics).
#[derive(Clone, Copy)]
struct Sample {
    rss: u64,
    heap: Option<(f64, f64)>,
}

impl Sample {
    async fn of(cluster: &Cluster) -> Sample {
        let rss = rss_kib(&cluster.workers[0].0.pid());
        let metrics = cluster.worker_metrics().await;
        let text = metrics.first().map_or("", String::as_str);
        let heap =
            metric_sample(text, "sandcron_heap_in_use_bytes").zip(metric_sample(text, "sandcron_heap_free_bytes"));
        Sample { rss, heap }
    }

    fn row(&self, what: String) -> Vec<String> {
        let heap = self.heap.map_or("–".into(), |(in_use, free)| {
            let mib = |b: f64| b / f64::from(1 << 20);
            format!("{:.0} MiB / {:.0} MiB", mib(in_use), mib(free))
        });
        vec![what, mib(self.rss), heap]
    }
}

/// Waits until the cluster's workers schedule `jobs` jobs (at most 300 s).
async fn wait_all_scheduled(cluster: &Cluster, jobs: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(300);
    while cluster.sum_metric("sandcron_jobs_scheduled").await < jobs as f64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the worker did not schedule every job within 300 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(started.elapsed())
}

/// One real worker process (the release binary) on etcd, with `jobs` WASM
/// jobs of the scale mix: its RSS before the jobs, once every job is
/// scheduled, after `window` seconds of runs, and once every job is
/// scheduled again after a restart.
async fn worker_on_etcd(jobs: usize, window: u64) -> anyhow::Result<OnEtcd> {
    let mut cluster = Cluster::start(1, "capacity = 64").await?;
    let digest = cluster.put_noop_module().await?;
    let empty = Sample::of(&cluster).await;
    write_mix(&cluster.coord, jobs, &wasm_kind(&digest), 16).await?;
    let startup = wait_all_scheduled(&cluster, jobs).await?;
    let loaded = Sample::of(&cluster).await;
    tokio::time::sleep(Duration::from_secs(window)).await;
    let steady = Sample::of(&cluster).await;
    let restart = Instant::now();
    cluster.restart_worker(0)?;
    wait_all_scheduled(&cluster, jobs).await?;
    let restart_startup = restart.elapsed();
    let restarted = Sample::of(&cluster).await;
    cluster.stop();
    Ok(OnEtcd {
        empty,
        loaded,
        steady,
        startup,
        restarted,
        restart_startup,
    })
}

/// (next fire, insert, fire, remove) in ns per job.
fn micro(jobs: usize) -> anyhow::Result<(f64, f64, f64, f64)> {
    let schedules = (0..jobs)
        .map(|i| Schedule::new(&schedule_text(i), "UTC"))
        .collect::<Result<Vec<_>, _>>()?;
    let now = Timestamp::now();
    let started = Instant::now();
    let mut firsts = Vec::with_capacity(jobs);
    for schedule in &schedules {
        firsts.push(
            schedule
                .next_after(now)
                .ok_or_else(|| anyhow::anyhow!("no next fire"))?,
        );
    }
    let next_ns = started.elapsed().as_nanos() as f64 / jobs as f64;
    let mut queue = TimerQueue::new();
    let started = Instant::now();
    for (i, due) in firsts.iter().enumerate() {
        queue.set(i, *due);
    }
    let insert_ns = started.elapsed().as_nanos() as f64 / jobs as f64;
    let far = now + jiff::SignedDuration::from_hours(1);
    let started = Instant::now();
    for _ in 0..jobs {
        let (key, due) = queue.pop_due(far).ok_or_else(|| anyhow::anyhow!("queue empty"))?;
        queue.set(
            key,
            schedules[key]
                .next_after(due)
                .ok_or_else(|| anyhow::anyhow!("no next fire"))?,
        );
    }
    let fire_ns = started.elapsed().as_nanos() as f64 / jobs as f64;
    let started = Instant::now();
    for i in 0..jobs {
        queue.remove(&i);
    }
    let remove_ns = started.elapsed().as_nanos() as f64 / jobs as f64;
    Ok((next_ns, insert_ns, fire_ns, remove_ns))
}
