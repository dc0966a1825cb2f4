//! Scheduler benchmark: the cost of scheduling 100k jobs.
//!
//! Build and run with `just bench` (or
//! `cargo bench -p sandcron --bench scheduler -- [--quick] [--jobs N] [--seconds S]`).
//!
//! Part 1 times the pure pieces: the timer queue (insert, fire-and-reinsert,
//! remove) and next-fire computation for the job mix. Part 2 loads the jobs
//! into a real in-process worker — embedded coordination store, claims,
//! SQLite log store behind the batching sink — with a no-op executor, and
//! measures memory, CPU per second of wall time at steady state, and fire
//! lateness (start of the run minus its tick). Benchmarks print; they never
//! pass or fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jiff::Timestamp;
use sandcron::config::{Role, WorkerConfig};
use sandcron::coord::embedded::EmbeddedStore;
use sandcron::coord::{Coordinator, KvStore, WorkerInfo};
use sandcron::cronexpr::Schedule;
use sandcron::exec::{ExecRequest, Executor, KillSwitch, RunOutcome, RunOutput};
use sandcron::ids::JobName;
use sandcron::job::{JobKind, JobMeta, JobRecord, JobSpec, ShellJob};
use sandcron::logstore::sqlite::SqliteLogStore;
use sandcron::logstore::{LogStore, Sink, SinkConfig};
use sandcron::metrics::Metrics;
use sandcron::run::{RunStatus, Trigger};
use sandcron::schedule::TimerQueue;
use sandcron::worker::{Executors, Worker, WorkerDeps};
use tokio_util::sync::CancellationToken;

struct Args {
    jobs: usize,
    seconds: u64,
}

fn args() -> Args {
    let mut args = Args {
        jobs: 100_000,
        seconds: 60,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--quick" => args.seconds = 20,
            "--jobs" => args.jobs = iter.next().and_then(|n| n.parse().ok()).expect("--jobs N"),
            "--seconds" => args.seconds = iter.next().and_then(|n| n.parse().ok()).expect("--seconds S"),
            "--bench" => {}
            other => eprintln!("ignoring argument {other}"),
        }
    }
    args
}

/// The job mix, averaging one fire per job per minute: 20 % twice a minute,
/// 40 % once a minute, 40 % every other minute, at pseudo-random seconds.
fn schedule_text(i: usize) -> String {
    let second = (i * 7919) % 60;
    match i % 5 {
        0 => format!("{second},{} * * * * *", (second + 30) % 60),
        1 | 2 => format!("{second} * * * * *"),
        _ => format!("{second} */2 * * * *"),
    }
}

fn main() {
    let args = args();
    println!("# Scheduler benchmark\n");
    println!(
        "{} jobs averaging one fire per minute each; steady-state window {} s.\n",
        args.jobs, args.seconds
    );
    micro(args.jobs);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(full(args));
}

fn micro(jobs: usize) {
    let schedules: Vec<Schedule> = (0..jobs)
        .map(|i| Schedule::new(&schedule_text(i), "Europe/Berlin").unwrap())
        .collect();
    let now = Timestamp::now();
    let started = Instant::now();
    let mut firsts = Vec::with_capacity(jobs);
    for schedule in &schedules {
        firsts.push(schedule.next_after(now).unwrap());
    }
    let next_ns = started.elapsed().as_nanos() as f64 / jobs as f64;

    let mut queue = TimerQueue::new();
    let started = Instant::now();
    for (i, due) in firsts.iter().enumerate() {
        queue.set(i, *due);
    }
    let insert_ns = started.elapsed().as_nanos() as f64 / jobs as f64;

    // Fire every job once, computing and setting its next deadline: the
    // steady-state work per fire.
    let far = now + jiff::SignedDuration::from_hours(1);
    let started = Instant::now();
    let mut fired = 0;
    while fired < jobs {
        let (key, due) = queue.pop_due(far).unwrap();
        queue.set(key, schedules[key].next_after(due).unwrap());
        fired += 1;
    }
    let fire_ns = started.elapsed().as_nanos() as f64 / jobs as f64;

    let started = Instant::now();
    for i in 0..jobs {
        queue.remove(&i);
    }
    let remove_ns = started.elapsed().as_nanos() as f64 / jobs as f64;

    println!("## Pure scheduling (one core, no I/O)\n");
    println!("| operation | cost per job |\n| --- | --- |");
    println!("| next fire time, job mix in Europe/Berlin | {next_ns:.0} ns |");
    println!("| timer queue insert (heap of {jobs}) | {insert_ns:.0} ns |");
    println!("| fire: pop due + next fire + re-insert | {fire_ns:.0} ns |");
    println!("| timer queue remove | {remove_ns:.0} ns |\n");
}

/// Records lateness and does nothing else.
struct Noop {
    lateness_ms: Mutex<Vec<f64>>,
}

#[async_trait]
impl Executor for Noop {
    async fn execute(&self, request: &ExecRequest, _output: &mut RunOutput, _kill: &KillSwitch) -> RunOutcome {
        if request.trigger == Trigger::Schedule {
            let late = Timestamp::now().duration_since(request.tick).as_secs_f64() * 1000.0;
            self.lateness_ms.lock().unwrap().push(late);
        }
        RunOutcome::new(RunStatus::Succeeded)
    }
}

async fn full(args: Args) {
    let data = tempfile::tempdir().unwrap();
    let rss_empty = rss_kib();
    let store = EmbeddedStore::open(&data.path().join("coord.db")).unwrap();
    let logs: Arc<dyn LogStore> = SqliteLogStore::open(&data.path().join("logs.db")).unwrap();
    let coord = Coordinator::new(store.clone() as Arc<dyn KvStore>, "/bench/");

    let load_started = Instant::now();
    let now = Timestamp::now();
    let mut tasks = tokio::task::JoinSet::new();
    for shard in 0..8 {
        let coord = coord.clone();
        let jobs = args.jobs;
        tasks.spawn(async move {
            for i in (shard..jobs).step_by(8) {
                let record = JobRecord {
                    spec: JobSpec {
                        schedule: schedule_text(i),
                        timezone: "Europe/Berlin".into(),
                        kind: JobKind::Shell(ShellJob {
                            command: "true".into(),
                            env: BTreeMap::new(),
                            timeout_s: 60,
                            output_kb: 1,
                        }),
                        overlap: Default::default(),
                        catchup: Default::default(),
                        retry: Default::default(),
                        paused: false,
                        selector: BTreeMap::new(),
                        description: String::new(),
                        retention_days: None,
                    },
                    meta: JobMeta {
                        created_at: now,
                        updated_at: now,
                        active_since: now,
                        written_by: Role::Admin,
                    },
                };
                coord
                    .put_job(&JobName::new(&format!("job-{i:06}")).unwrap(), &record, Some(0), false)
                    .await
                    .unwrap();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let load_s = load_started.elapsed().as_secs_f64();

    let metrics = Metrics::new();
    let (sink, sink_task) = Sink::new(logs.clone(), SinkConfig::default());
    metrics.attach_sink(sink.stats());
    let sink_handle = tokio::spawn(sink_task.run());
    let noop = Arc::new(Noop {
        lateness_ms: Mutex::new(Vec::new()),
    });
    let shutdown = CancellationToken::new();
    let worker = Worker::new(WorkerDeps {
        coord: coord.clone(),
        sink: sink.clone(),
        executors: Executors {
            shell: Some(noop.clone()),
            wasm: None,
        },
        metrics: metrics.clone(),
        config: WorkerConfig {
            id: None,
            capacity: 256,
            allow_native: true,
            labels: BTreeMap::new(),
            native_env: vec![],
            kill_grace: Duration::from_secs(1),
            missed_record_limit: 1000,
            catchup_run_limit: 100,
            drain_timeout: Duration::from_secs(10),
            dirs: BTreeMap::new(),
            max_memory_mb: 4096,
            clock_offset_ms: 0,
        },
        info: WorkerInfo {
            id: "bench-worker".into(),
            hostname: "bench".into(),
            version: "bench".into(),
            labels: BTreeMap::new(),
            allow_native: true,
            capacity: 256,
            started_at: Timestamp::now(),
        },
        lease_ttl: Duration::from_secs(10),
        drain_timeout: Duration::from_secs(10),
        retention: Duration::from_secs(3600),
    });
    let schedule_started = Instant::now();
    let worker_handle = tokio::spawn(worker.run(shutdown.clone()));
    while metrics.jobs_scheduled.load(std::sync::atomic::Ordering::Relaxed) < args.jobs as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let startup_s = schedule_started.elapsed().as_secs_f64();
    let rss_loaded = rss_kib();

    // Warm up for a few seconds, then measure a clean window.
    tokio::time::sleep(Duration::from_secs(5)).await;
    noop.lateness_ms.lock().unwrap().clear();
    let cpu_before = cpu_seconds();
    let wall_before = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let cpu = cpu_seconds() - cpu_before;
    let wall = wall_before.elapsed().as_secs_f64();
    let rss_steady = rss_kib();
    let mut lateness = std::mem::take(&mut *noop.lateness_ms.lock().unwrap());
    shutdown.cancel();
    worker_handle.await.unwrap().unwrap();
    drop(sink);
    sink_handle.await.unwrap().unwrap();

    lateness.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lateness
            .get(((lateness.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!("## Full worker, in process (embedded store, claims, SQLite log store, no-op executor)\n");
    println!("| figure | value |\n| --- | --- |");
    println!("| jobs | {} |", args.jobs);
    println!("| load into the embedded store (8 writers) | {load_s:.1} s |");
    println!("| worker start until every job is scheduled | {startup_s:.1} s |");
    println!("| RSS before loading | {:.0} MiB |", rss_empty as f64 / 1024.0);
    println!("| RSS with jobs scheduled | {:.0} MiB |", rss_loaded as f64 / 1024.0);
    println!(
        "| RSS after the steady-state window | {:.0} MiB |",
        rss_steady as f64 / 1024.0
    );
    println!(
        "| fires in the window | {} ({:.0}/s) |",
        lateness.len(),
        lateness.len() as f64 / wall
    );
    println!(
        "| CPU per second of wall time | {:.3} s ({:.1} % of one core) |",
        cpu / wall,
        100.0 * cpu / wall
    );
    println!(
        "| fire lateness p50 / p99 / max | {:.1} ms / {:.1} ms / {:.1} ms |",
        pct(0.5),
        pct(0.99),
        lateness.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "\nMachine: {} cores; measured {}.",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        Timestamp::now()
    );
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// User plus system CPU time of this process, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the command: state(0) ppid(1) … utime(11) stime(12), in clock ticks.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
        .sum();
    // /proc reports CPU time in USER_HZ, which Linux fixes at 100 per second.
    ticks / 100.0
}
