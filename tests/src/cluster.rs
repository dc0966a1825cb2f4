//! Cluster processes for end-to-end tests: `sandcron master` and
//! `sandcron worker`, each started from a configuration file that points at
//! the test's etcd and MongoDB-wire server, on free ports with their own data
//! directories; stopped, killed, paused and resumed as a test needs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::process::ChildProcess;
use crate::{Api, wait_for};

/// How long a process may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a process may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(90);

/// One sandcron process and its log.
pub struct Proc {
    ready_prefix: String,
    process: ChildProcess,
    /// What followed the ready prefix on the ready line.
    pub ready: String,
}

impl Proc {
    fn start(name: &str, bin: &str, args: Vec<String>, ready_prefix: &str, log: PathBuf) -> Proc {
        let mut command = Command::new(bin);
        command.args(args).env("SANDCRON_LOG", "info,sandcron=debug");
        let mut proc = Proc {
            ready_prefix: ready_prefix.to_owned(),
            process: ChildProcess::new(name, command, &log).expect("log file"),
            ready: String::new(),
        };
        proc.spawn();
        proc
    }

    fn spawn(&mut self) {
        self.ready = self
            .process
            .start_until_ready(&self.ready_prefix, START_TIMEOUT)
            .unwrap_or_else(|err| panic!("{err}"));
    }

    pub fn log_text(&self) -> String {
        self.process.log_text()
    }

    pub fn pid(&self) -> Option<i32> {
        self.process.pid().map(|pid| pid as i32)
    }

    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    /// SIGTERM and wait for the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let status = self.process.stop(STOP_TIMEOUT).unwrap_or_else(|err| panic!("{err}"));
        status.and_then(|status| status.code())
    }

    /// SIGKILL, as a crash.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// SIGSTOP: the process freezes (its leases keep ticking down).
    pub fn pause(&self) {
        self.process.signal(Signal::SIGSTOP);
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        self.process.signal(Signal::SIGCONT);
    }

    /// Starts the process again with the same arguments and data.
    pub fn start_again(&mut self) {
        self.spawn();
    }
}

/// Waits until `api`'s master lists exactly `count` live workers.
pub async fn wait_for_workers(api: &Api, count: usize, within: Duration) {
    wait_for(&format!("{count} live workers"), within, || async {
        let workers = api.get("/api/v1/workers").await;
        (workers.status == 200 && workers.body.as_array().map_or(0, Vec::len) == count).then_some(())
    })
    .await;
}

/// One unlabelled sample from Prometheus text, e.g.
/// `sandcron_sink_spool_bytes` or `sandcron_runs_total{status="skipped"}`.
pub fn metric_sample(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    })
}

/// Where a test cluster's stores are, and where its files go.
#[derive(Clone)]
pub struct ClusterEnv {
    pub bin: String,
    pub dir: PathBuf,
    pub etcd_endpoints: Vec<String>,
    pub mongo_uri: String,
    /// The etcd key prefix and MongoDB database, unique per test.
    pub namespace: String,
}

impl ClusterEnv {
    fn stores_toml(&self) -> String {
        let endpoints: Vec<String> = self.etcd_endpoints.iter().map(|e| format!("{e:?}")).collect();
        format!(
            "[etcd]\nendpoints = [{}]\nprefix = \"/{}/\"\nrequest_timeout_ms = 2000\ndial_timeout_ms = 2000\n\
             [mongodb]\nuri = {:?}\ndatabase = {:?}\nserver_selection_timeout_ms = 2000\nconnect_timeout_ms = 2000\n",
            endpoints.join(", "),
            self.namespace,
            self.mongo_uri,
            self.namespace
        )
    }

    fn write_config(&self, name: &str, extra: &str) -> PathBuf {
        let path = self.dir.join(format!("{name}.toml"));
        std::fs::write(&path, format!("{extra}\n{}", self.stores_toml())).expect("write config");
        path
    }

    /// Starts a master; `extra` is TOML prepended to the generated file
    /// (top-level keys and tables such as `[auth]`).
    pub fn master(&self, name: &str, extra: &str) -> Master {
        let config = self.write_config(name, extra);
        let args = vec![
            "master".into(),
            "--config".into(),
            path(&config),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        let proc = self.start(name, args, "sandcron master listening on ");
        let base = proc.ready.split_whitespace().next().unwrap_or_default().to_owned();
        Master { proc, base }
    }

    /// Starts a worker with id `name`; `extra` is TOML for its `[worker]`
    /// table (capacity, allow_native, clock_offset_ms, lease_ttl_s, …).
    pub fn worker(&self, name: &str, extra: &str) -> WorkerProcess {
        let data = self.dir.join(format!("{name}-data"));
        let config = self.write_config(name, &format!("[worker]\n{extra}\n"));
        let args = vec![
            "worker".into(),
            "--config".into(),
            path(&config),
            "--id".into(),
            name.into(),
            "--data".into(),
            path(&data),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        let proc = self.start(name, args, "sandcron worker ");
        WorkerProcess {
            probes: probes_url(&proc),
            proc,
            id: name.to_owned(),
            data,
        }
    }

    /// Starts `bin <args>` as `name`, logging to `<dir>/<name>.log`.
    fn start(&self, name: &str, args: Vec<String>, ready_prefix: &str) -> Proc {
        let log = self.dir.join(format!("{name}.log"));
        Proc::start(name, &self.bin, args, ready_prefix, log)
    }
}

/// The probe URL a worker's ready line names.
fn probes_url(proc: &Proc) -> String {
    proc.ready
        .split_once("probes on ")
        .map(|(_, url)| url.trim().to_owned())
        .unwrap_or_default()
}

fn path(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A running `sandcron master`.
pub struct Master {
    pub proc: Proc,
    /// `http://127.0.0.1:<port>`
    pub base: String,
}

impl Master {
    pub fn api(&self) -> Api {
        Api::new(&self.base, None)
    }
}

/// A running `sandcron worker`.
pub struct WorkerProcess {
    pub proc: Proc,
    pub id: String,
    /// `http://127.0.0.1:<port>` of its /healthz, /readyz and /metrics.
    pub probes: String,
    /// Its data directory (log spool, module cache).
    pub data: PathBuf,
}

impl WorkerProcess {
    /// Starts the worker again (same id, data and configuration); its probe
    /// port changes.
    pub fn start_again(&mut self) {
        self.proc.start_again();
        self.probes = probes_url(&self.proc);
    }

    /// One sample from its `/metrics`, e.g. `sandcron_sink_spool_bytes`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = crate::http_client()
            .build()
            .ok()?
            .get(format!("{}/metrics", self.probes))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        metric_sample(&text, name)
    }
}
