//! Row 5, claims: runs per second that 3 workers claim on one etcd (every
//! run needs a claim: a compare-and-swap on `state/<job>` plus the
//! `running/` entry, packed up to 64 claims per transaction), against the
//! raw rate of single claim-shaped transactions the harness itself issues
//! to the same etcd from 3 clients, and from 3 × 16 in flight.
//!
//! The workers run in this process with their own etcd connections, a no-op
//! executor and a log store that discards, so that only the coordination
//! path is measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use sandcron::coord::etcd::{EtcdConfig, EtcdStore};
use sandcron::coord::{Coordinator, KvStore};
use sandcron::logstore::LogStore;
use sandcron::testkit::Discard;
use sandcron_tests::etcd::EtcdServer;

use crate::Ctx;
use crate::inproc::{InProcWorker, Probe, delete_jobs, load_jobs, shell_kind, wait_scheduled};
use crate::report::{rate, ratio};
use crate::sys::cpu_seconds;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let window = ctx.pick(5, 30);
    let etcd = tokio::task::spawn_blocking(EtcdServer::start).await?;
    let endpoint = etcd.endpoint();

    let raw_single = raw_txns(&endpoint, 3, 1, Duration::from_secs(window.min(10))).await?;
    let raw_parallel = raw_txns(&endpoint, 3, 16, Duration::from_secs(window.min(10))).await?;

    let mut rows = Vec::new();
    let mut cold = Vec::new();
    for jobs in [1_000, 5_000, 10_000, 20_000] {
        let (runs_per_s, lost, cpu, start) = workers(&endpoint, jobs, window).await?;
        if jobs != 5_000 {
            cold.push(vec![
                format!("3 workers, {jobs} jobs every second"),
                secs(start.scheduled),
                start.first_run.map_or("none in 30 s".into(), secs),
                start.steady.map_or("not within 30 s".into(), secs),
            ]);
        }
        rows.push(vec![
            format!("sandcron, 3 workers, {jobs} jobs every second"),
            rate(runs_per_s),
            format!("{lost}"),
            format!("{:.0} %", cpu * 100.0),
            ratio(runs_per_s, raw_single),
            ratio(runs_per_s, raw_parallel),
        ]);
    }
    rows.push(vec![
        "raw etcd txns (compare + 2 puts), 3 clients × 1 in flight".into(),
        rate(raw_single),
        "–".into(),
        "–".into(),
        "1.00×".into(),
        ratio(raw_single, raw_parallel),
    ]);
    rows.push(vec![
        "raw etcd txns (compare + 2 puts), 3 clients × 16 in flight".into(),
        rate(raw_parallel),
        "–".into(),
        "–".into(),
        ratio(raw_parallel, raw_single),
        "1.00×".into(),
    ]);
    drop(etcd);

    let report = &mut ctx.report;
    report.heading("5. Claims on etcd");
    report.note(format!(
        "One etcd 3.4 member (Debian), loopback. sandcron: 3 workers (in this process, one etcd connection \
         each) own N jobs at `* * * * * *`; a sample is a run started, which only a won claim allows; window \
         {window} s. Each run also deletes its `running/` entry when it ends (runs that end together share \
         one etcd transaction). Raw: the harness's own claim-shaped transactions (compare the key's mod revision, put the \
         state and a running entry) with etcd-client, one key per client. CPU: this process (workers and \
         harness) per second of wall time."
    ));
    report.table(
        &[
            "what",
            "claims (runs) or txns per second",
            "claims lost",
            "CPU",
            "vs raw single txns",
            "vs raw 3 × 16",
        ],
        &rows,
    );
    report.note(
        "Cold start: the same 3 workers, from the instant they are started (jobs already stored): when all \
         N jobs are scheduled (summed `sandcron_jobs_scheduled`), when the first run starts, and when the \
         runs of one second first reach 90 % of N (the steady rate); sampled every 50 ms.",
    );
    report.table(&["cold start", "all scheduled", "first run", "steady rate"], &cold);
    Ok(())
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// How a set of workers started: from their start to all jobs scheduled,
/// to the first run, to the first second of runs at 90 % of the jobs.
struct ColdStart {
    scheduled: Duration,
    first_run: Option<Duration>,
    steady: Option<Duration>,
}

/// Samples `probe.started` every 50 ms from `began` until the runs of the
/// last second reach 90 % of `jobs` (or 30 s pass).
async fn cold_start(workers: &[&InProcWorker], probe: &Probe, jobs: usize, began: Instant) -> ColdStart {
    let mut samples: std::collections::VecDeque<(Instant, u64)> = std::collections::VecDeque::new();
    let mut scheduled = None;
    let mut first_run = None;
    let mut steady = None;
    while began.elapsed() < Duration::from_secs(30) {
        let now = Instant::now();
        let started = probe.started.load(Ordering::Relaxed);
        if scheduled.is_none() && workers.iter().map(|w| w.scheduled()).sum::<u64>() >= jobs as u64 {
            scheduled = Some(now - began);
        }
        if first_run.is_none() && started > 0 {
            first_run = Some(now - began);
        }
        samples.push_back((now, started));
        while samples
            .front()
            .is_some_and(|(at, _)| now - *at > Duration::from_secs(1))
        {
            samples.pop_front();
        }
        if let Some((at, before)) = samples.front()
            && now - *at >= Duration::from_millis(950)
            && (started - before) as f64 >= 0.9 * jobs as f64
        {
            steady = Some(now - began);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ColdStart {
        scheduled: scheduled.unwrap_or_else(|| began.elapsed()),
        first_run,
        steady,
    }
}

/// Runs per second started by 3 in-process workers owning `jobs` jobs that
/// fire every second; (runs/s, claims lost, CPU per second, how they started).
async fn workers(endpoint: &str, jobs: usize, window: u64) -> anyhow::Result<(f64, u64, f64, ColdStart)> {
    let prefix = format!("/claims-{jobs}/");
    let loader = Coordinator::new(
        EtcdStore::connect(&EtcdConfig::new([endpoint])).await? as Arc<dyn KvStore>,
        &prefix,
    );
    load_jobs(&loader, jobs, "* * * * * *", &shell_kind("true"), 16).await;
    let probe = Arc::new(Probe::default());
    let mut stores = Vec::new();
    for _ in 0..3 {
        stores.push(EtcdStore::connect(&EtcdConfig::new([endpoint])).await?);
    }
    let began = Instant::now();
    let mut workers = Vec::new();
    for (i, store) in stores.into_iter().enumerate() {
        let coord = Coordinator::new(store as Arc<dyn KvStore>, &prefix);
        let logs: Arc<dyn LogStore> = Arc::new(Discard);
        workers.push(InProcWorker::start(&format!("claims-{i}"), coord, logs, probe.clone()));
    }
    let refs: Vec<&InProcWorker> = workers.iter().collect();
    let start = cold_start(&refs, &probe, jobs, began).await;
    wait_scheduled(&refs, jobs as u64, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = probe.started.load(Ordering::Relaxed);
    let cpu = cpu_seconds("self");
    let wall = Instant::now();
    tokio::time::sleep(Duration::from_secs(window)).await;
    let runs = probe.started.load(Ordering::Relaxed) - started;
    let elapsed = wall.elapsed().as_secs_f64();
    let cpu = (cpu_seconds("self") - cpu) / elapsed;
    probe.take();
    let lost: u64 = workers
        .iter()
        .map(|w| w.metrics.claims_lost.load(Ordering::Relaxed))
        .sum();
    for worker in workers {
        worker.stop().await;
    }
    delete_jobs(&loader, jobs, 16).await;
    Ok((runs as f64 / elapsed, lost, cpu, start))
}

/// Claim-shaped transactions per second from `clients` connections with
/// `in_flight` concurrent loops each.
async fn raw_txns(endpoint: &str, clients: usize, in_flight: usize, window: Duration) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + window;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let client = etcd_client::Client::connect([endpoint], None).await?;
        for f in 0..in_flight {
            let mut kv = client.kv_client();
            let done = done.clone();
            tasks.spawn(async move {
                let state = format!("/raw-{in_flight}/state/{c}-{f}");
                let mut revision = 0;
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let txn = Txn::new()
                        .when([Compare::mod_revision(state.as_str(), CompareOp::Equal, revision)])
                        .and_then([
                            TxnOp::put(state.as_str(), format!("{{\"last_tick\":{n}}}"), None),
                            TxnOp::put(format!("/raw-{in_flight}/running/{c}-{f}/{n}"), "{}", None),
                        ]);
                    let response = kv.txn(txn).await?;
                    anyhow::ensure!(response.succeeded(), "raw claim lost");
                    revision = response.header().map_or(0, |h| h.revision());
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            });
        }
    }
    let started = Instant::now();
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}
