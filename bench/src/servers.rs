//! The processes the benchmark talks to: etcd and the MongoDB-wire server
//! nx-27017 started exactly as the tests start them (`sandcron-tests`), and
//! `sandcron dev`, `master` and `worker` processes from the release binary,
//! with the configuration files the cluster tests write, but with the
//! binary's default log level (the tests turn on debug logging, which would
//! be part of what is measured here).

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use sandcron::coord::etcd::{EtcdConfig, EtcdStore};
use sandcron::coord::{Coordinator, KvStore};
use sandcron::ids::ModuleDigest;
use sandcron::module::ModuleKind;
use sandcron_tests::cluster::metric_sample;
use sandcron_tests::etcd::EtcdServer;
use sandcron_tests::mongo::MongoServer;
use sandcron_tests::process::ChildProcess;

use crate::sys::sandcron_bin;

/// How long a sandcron process may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a sandcron process may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// One sandcron process; killed on drop.
pub struct SandcronProc {
    process: ChildProcess,
    /// What followed the ready prefix on its ready line.
    pub ready: String,
}

impl SandcronProc {
    /// Starts `sandcron <args>` and waits for a stdout line starting with
    /// `ready_prefix`; stderr goes to `log`.
    pub fn start(args: &[String], ready_prefix: &str, log: &Path) -> anyhow::Result<SandcronProc> {
        let mut command = Command::new(sandcron_bin());
        command.args(args).env_remove("SANDCRON_LOG");
        let name = format!("sandcron {}", args.first().map_or("", String::as_str));
        let mut process = ChildProcess::new(&name, command, log)?;
        let ready = process
            .start_until_ready(ready_prefix, START_TIMEOUT)
            .map_err(|err| match err.kind() {
                io::ErrorKind::TimedOut => anyhow::Error::new(err),
                _ => anyhow::anyhow!("{err} (run `just bench`, which builds it)"),
            })?;
        Ok(SandcronProc { process, ready })
    }

    pub fn pid(&self) -> String {
        self.process.pid().map_or_else(String::new, |pid| pid.to_string())
    }

    /// SIGTERM, then wait at most `limit` (then SIGKILL).
    pub fn stop_within(&mut self, limit: std::time::Duration) {
        self.process.stop(limit).ok();
    }

    /// SIGTERM, then wait (at most 60 s, then SIGKILL).
    pub fn stop(&mut self) {
        // One that outlives the deadline is killed: the figures it was
        // started for are taken by then.
        self.process.stop(STOP_TIMEOUT).ok();
    }
}

/// `sandcron dev` on a free port with a temporary data directory.
pub struct DevProc {
    pub proc: SandcronProc,
    /// `http://127.0.0.1:<port>`
    pub base: String,
    _dir: tempfile::TempDir,
}

impl DevProc {
    pub fn start() -> anyhow::Result<DevProc> {
        let dir = tempfile::Builder::new().prefix("sandcron-bench-dev-").tempdir()?;
        let args: Vec<String> = [
            "dev",
            "--listen",
            "127.0.0.1:0",
            "--no-demo",
            "--data",
            &dir.path().join("data").to_string_lossy(),
        ]
        .map(str::to_owned)
        .to_vec();
        let proc = SandcronProc::start(&args, "sandcron dev listening on ", &dir.path().join("dev.log"))?;
        let base = proc.ready.split_whitespace().next().unwrap_or_default().to_owned();
        Ok(DevProc { proc, base, _dir: dir })
    }
}

/// etcd + nx-27017 + one master + N workers, and a coordinator of the
/// harness's own on the same etcd and key prefix.
pub struct Cluster {
    pub master: SandcronProc,
    /// The master's `http://127.0.0.1:<port>`.
    pub base: String,
    /// Each worker and the URL of its /metrics.
    pub workers: Vec<(SandcronProc, String)>,
    pub coord: Coordinator,
    pub etcd: EtcdServer,
    pub mongo: MongoServer,
    pub mongo_uri: String,
    pub database: String,
    /// How each worker was started (arguments, log file), to restart it.
    worker_starts: Vec<(Vec<String>, PathBuf)>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts the stores, a master and `workers` workers; `worker_extra` is
    /// TOML for the `[worker]` table.
    pub async fn start(workers: usize, worker_extra: &str) -> anyhow::Result<Cluster> {
        let (etcd, mongo) =
            tokio::task::spawn_blocking(|| (EtcdServer::start(), MongoServer::start_in_memory())).await?;
        let mut dir = tempfile::Builder::new().prefix("sandcron-bench-cluster-").tempdir()?;
        // `SANDCRON_BENCH_KEEP=1` leaves the logs and data behind, to look into a figure.
        if std::env::var_os("SANDCRON_BENCH_KEEP").is_some() {
            dir.disable_cleanup(true);
            eprintln!("bench: keeping {}", dir.path().display());
        }
        let namespace = "bench";
        // A stopping worker replays its whole log spool (not the default
        // 30 s), so that `check-history` after the stop sees every record.
        let stores = format!(
            "[etcd]\nendpoints = [{:?}]\nprefix = \"/{namespace}/\"\nrequest_timeout_ms = 5000\ndial_timeout_ms = 5000\n\
             [mongodb]\nuri = {:?}\ndatabase = {namespace:?}\nserver_selection_timeout_ms = 5000\nconnect_timeout_ms = 5000\n\
             [logs]\nshutdown_replay_s = 1800\n",
            etcd.endpoint(),
            mongo.uri(),
        );
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let master_config = dir.path().join("master.toml");
        std::fs::write(&master_config, &stores)?;
        let master = SandcronProc::start(
            &[
                "master".into(),
                "--config".into(),
                path(&master_config),
                "--listen".into(),
                "127.0.0.1:0".into(),
            ],
            "sandcron master listening on ",
            &dir.path().join("master.log"),
        )?;
        let base = master.ready.split_whitespace().next().unwrap_or_default().to_owned();
        let mut procs = Vec::new();
        let mut worker_starts = Vec::new();
        for i in 0..workers {
            let name = format!("worker-{i}");
            let config = dir.path().join(format!("{name}.toml"));
            std::fs::write(&config, format!("[worker]\n{worker_extra}\n{stores}"))?;
            let args = vec![
                "worker".into(),
                "--config".into(),
                path(&config),
                "--id".into(),
                name.clone(),
                "--data".into(),
                path(&dir.path().join(format!("{name}-data"))),
                "--listen".into(),
                "127.0.0.1:0".into(),
            ];
            let log = dir.path().join(format!("{name}.log"));
            procs.push(start_worker(&args, &log)?);
            worker_starts.push((args, log));
        }
        let store = EtcdStore::connect(&EtcdConfig::new([etcd.endpoint()])).await?;
        let coord = Coordinator::new(store as Arc<dyn KvStore>, &format!("/{namespace}/"));
        Ok(Cluster {
            master,
            base,
            workers: procs,
            coord,
            mongo_uri: mongo.uri(),
            database: namespace.to_owned(),
            etcd,
            mongo,
            worker_starts,
            _dir: dir,
        })
    }

    /// Stops worker `i` (SIGTERM, drained) and starts it again with the same
    /// identity, configuration and data directory.
    pub fn restart_worker(&mut self, i: usize) -> anyhow::Result<()> {
        self.workers[i].0.stop();
        let (args, log) = &self.worker_starts[i];
        self.workers[i] = start_worker(args, log)?;
        Ok(())
    }

    /// Uploads the no-op guest (`NOOP_WAT`) and returns its digest.
    pub async fn put_noop_module(&self) -> anyhow::Result<ModuleDigest> {
        let module = wat::parse_str(crate::inproc::NOOP_WAT)?;
        let digest = ModuleDigest::of(&module);
        self.coord
            .put_module(&digest, &module, ModuleKind::Module, Vec::new(), Some("noop.wasm"))
            .await?;
        Ok(digest)
    }

    /// The /metrics text of every worker.
    pub async fn worker_metrics(&self) -> Vec<String> {
        let mut texts = Vec::new();
        sandcron::tls::install_crypto_provider();
        for (_, url) in &self.workers {
            // A worker saturated by a burst may answer late: three tries.
            let mut text = String::new();
            for _ in 0..3 {
                if let Ok(response) = reqwest::get(url).await
                    && let Ok(body) = response.text().await
                {
                    text = body;
                    break;
                }
            }
            texts.push(text);
        }
        texts
    }

    /// The sum over the workers of a plain metric (`sandcron_jobs_scheduled`).
    pub async fn sum_metric(&self, name: &str) -> f64 {
        self.worker_metrics()
            .await
            .iter()
            .map(|text| metric_sample(text, name).unwrap_or(0.0))
            .sum()
    }

    /// Stops the workers and the master (SIGTERM: they drain and flush).
    pub fn stop(&mut self) {
        for (worker, _) in &mut self.workers {
            worker.stop();
        }
        self.master.stop();
    }
}

/// Starts a worker process: it and the URL of its /metrics.
fn start_worker(args: &[String], log: &Path) -> anyhow::Result<(SandcronProc, String)> {
    let proc = SandcronProc::start(args, "sandcron worker ", log)?;
    let probes = proc
        .ready
        .split_once("probes on ")
        .map(|(_, url)| format!("{}/metrics", url.trim()))
        .unwrap_or_default();
    Ok((proc, probes))
}

/// The cumulative buckets of `sandcron_fire_lateness_seconds` as (upper
/// bound in seconds, count), `+Inf` last.
pub fn lateness_buckets(text: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("sandcron_fire_lateness_seconds_bucket{le=\"")?;
            let (bound, rest) = rest.split_once("\"}")?;
            let bound = if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound.parse().ok()?
            };
            Some((bound, rest.trim().parse().ok()?))
        })
        .collect()
}

/// Adds bucket counts of several histograms (same bounds), or subtracts
/// `before` from `after` with `sign = -1`.
pub fn merge_buckets(into: &mut Vec<(f64, f64)>, other: &[(f64, f64)], sign: f64) {
    if into.is_empty() {
        into.extend(other.iter().map(|(b, _)| (*b, 0.0)));
    }
    for (slot, (_, count)) in into.iter_mut().zip(other) {
        slot.1 += sign * count;
    }
}

/// The `q` quantile of a cumulative histogram, interpolated linearly inside
/// its bucket as Prometheus' `histogram_quantile` does (in seconds).
pub fn histogram_quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let Some(&(_, total)) = buckets.last() else {
        return f64::NAN;
    };
    if total <= 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let mut lower_bound = 0.0;
    let mut lower_count = 0.0;
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return lower_bound;
            }
            let inside = count - lower_count;
            let fraction = if inside > 0.0 {
                (rank - lower_count) / inside
            } else {
                1.0
            };
            return lower_bound + (bound - lower_bound) * fraction;
        }
        lower_bound = bound;
        lower_count = count;
    }
    lower_bound
}

/// The upper bound of the highest non-empty bucket (seconds): "max ≤ this".
pub fn histogram_max_bound(buckets: &[(f64, f64)]) -> f64 {
    let mut below = 0.0;
    for &(bound, count) in buckets {
        if count > below && count >= buckets.last().map_or(0.0, |b| b.1) {
            return bound;
        }
        below = count;
    }
    f64::NAN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_a_bucket() {
        let buckets = vec![(0.001, 0.0), (0.01, 100.0), (f64::INFINITY, 100.0)];
        let p50 = histogram_quantile(&buckets, 0.5);
        assert!((p50 - 0.0055).abs() < 1e-9, "{p50}");
        assert_eq!(histogram_max_bound(&buckets), 0.01);
    }
}
