//! Row 8, footprint: idle RSS of a worker and a master (cluster mode, no
//! jobs) and of `sandcron dev`, binary size, and cold start of `sandcron
//! dev` to `/readyz`; compared with nx-27017 and APScheduler idle, the
//! `wasmtime` and `etcd` binaries, and etcd's cold start.

use std::time::{Duration, Instant};

use crate::Ctx;
use crate::executors::wasmtime_cli;
use crate::lateness::apscheduler;
use crate::report::{Stats, mib, ratio, spread};
use crate::servers::{Cluster, DevProc};
use crate::sys::{file_size, rss_kib, sandcron_bin};

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let repeats = ctx.pick(3, 10);

    // Cold start: spawn → first 200 from /readyz, on a fresh data directory.
    let mut cold = Vec::new();
    let mut dev_rss = 0;
    for i in 0..repeats {
        let started = Instant::now();
        let dev = tokio::task::spawn_blocking(DevProc::start).await??;
        let ready = format!("{}/readyz", dev.base);
        sandcron::tls::install_crypto_provider();
        let http = reqwest::Client::new();
        loop {
            if let Ok(response) = http.get(&ready).send().await
                && response.status().is_success()
            {
                break;
            }
            anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "dev never ready");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        cold.push(started.elapsed().as_secs_f64() * 1e3);
        if i == 0 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            dev_rss = rss_kib(&dev.proc.pid());
        }
    }
    let mut etcd_cold = Vec::new();
    for _ in 0..repeats.min(3) {
        let started = Instant::now();
        let etcd = tokio::task::spawn_blocking(sandcron_tests::etcd::EtcdServer::start).await?;
        etcd_cold.push(started.elapsed().as_secs_f64() * 1e3);
        drop(etcd);
    }

    let cluster = Cluster::start(1, "").await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let worker_rss = rss_kib(&cluster.workers[0].0.pid());
    let master_rss = rss_kib(&cluster.master.pid());
    let nx_rss = cluster.mongo.pid().map_or(0, |p| rss_kib(&p.to_string()));
    drop(cluster);
    let aps_rss = apscheduler(0, 2.0, false).await.map_or(0, |a| a.rss_kib);

    let bin = file_size(&sandcron_bin());
    let wasmtime = wasmtime_cli().map_or(0, |p| file_size(&p));
    let etcd_bin = file_size(std::path::Path::new("/usr/bin/etcd"));
    let kib = |v: u64| if v == 0 { f64::NAN } else { v as f64 };
    let cold = Stats::of(&cold);
    let etcd_cold = Stats::of(&etcd_cold);

    let report = &mut ctx.report;
    report.heading("8. Footprint");
    report.note(
        "Idle: no jobs, 5 s after start (cluster: 1 master, 1 worker on etcd and nx-27017). Cold start: spawn of \
         `sandcron dev --no-demo` on a fresh data directory until `/readyz` answers 200 (polled every 2 ms); \
         etcd: `sandcron-tests`' start of a one-member etcd until it serves (its own polling included).",
    );
    let mb = |v: u64| {
        if v == 0 {
            "–".to_owned()
        } else {
            format!("{:.1} MB", v as f64 / 1e6)
        }
    };
    report.table(
        &["figure", "sandcron", "comparison", "ratio"],
        &[
            vec![
                "idle worker RSS".into(),
                mib(worker_rss),
                format!("APScheduler, 0 jobs: {}", mib(aps_rss)),
                ratio(kib(worker_rss), kib(aps_rss)),
            ],
            vec![
                "idle master RSS".into(),
                mib(master_rss),
                format!("nx-27017 (Python), idle: {}", mib(nx_rss)),
                ratio(kib(master_rss), kib(nx_rss)),
            ],
            vec![
                "idle `sandcron dev` RSS".into(),
                mib(dev_rss),
                format!("APScheduler, 0 jobs: {}", mib(aps_rss)),
                ratio(kib(dev_rss), kib(aps_rss)),
            ],
            vec![
                "release binary size".into(),
                mb(bin),
                format!("`wasmtime` CLI {}; etcd {}", mb(wasmtime), mb(etcd_bin)),
                format!(
                    "{} / {}",
                    ratio(kib(bin), kib(wasmtime)),
                    ratio(kib(bin), kib(etcd_bin))
                ),
            ],
            vec![
                "cold start to ready".into(),
                spread(cold),
                format!("etcd: {}", spread(etcd_cold)),
                ratio(
                    cold.map_or(f64::NAN, |s| s.median),
                    etcd_cold.map_or(f64::NAN, |s| s.median),
                ),
            ],
        ],
    );
    Ok(())
}
