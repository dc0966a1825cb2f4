//! Cluster processes for end-to-end tests: `sandcron master` and
//! `sandcron worker`, each started from a configuration file that points at
//! the test's etcd and MongoDB-wire server, on free ports with their own data
//! directories; stopped, killed, paused and resumed as a test needs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::Api;

/// How long a process may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One sandcron process and its log.
pub struct Proc {
    name: String,
    bin: PathBuf,
    args: Vec<String>,
    ready_prefix: String,
    child: Option<Child>,
    log: PathBuf,
    /// What followed the ready prefix on the ready line.
    pub ready: String,
}

impl Proc {
    fn start(name: &str, bin: &str, args: Vec<String>, ready_prefix: &str, log: PathBuf) -> Proc {
        let mut proc = Proc {
            name: name.to_owned(),
            bin: PathBuf::from(bin),
            args,
            ready_prefix: ready_prefix.to_owned(),
            child: None,
            log,
            ready: String::new(),
        };
        proc.spawn();
        proc
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut child = Command::new(&self.bin)
            .args(&self.args)
            .env("SANDCRON_LOG", "info,sandcron=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", self.bin.display()));
        let stdout = child.stdout.take().expect("stdout");
        let prefix = self.ready_prefix.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix(&prefix) {
                    let _ = tx.send(rest.to_owned());
                }
            }
        });
        self.child = Some(child);
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(rest) => self.ready = rest,
            Err(_) => panic!(
                "{} did not start within {START_TIMEOUT:?}; log:\n{}",
                self.name,
                self.log_text()
            ),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// SIGTERM and wait for the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop; log:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the process freezes (its leases keep ticking down).
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// Starts the process again with the same arguments and data.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "{} is still running", self.name);
        self.spawn();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("---- {} log (last 60 lines) ----", self.name);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        self.resume();
        self.kill9();
    }
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
        let proc = Proc::start(
            name,
            &self.bin,
            args,
            "sandcron master listening on ",
            self.dir.join(format!("{name}.log")),
        );
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
        let proc = Proc::start(
            name,
            &self.bin,
            args,
            "sandcron worker ",
            self.dir.join(format!("{name}.log")),
        );
        let probes = proc
            .ready
            .split_once("probes on ")
            .map(|(_, url)| url.trim().to_owned())
            .unwrap_or_default();
        WorkerProcess {
            proc,
            id: name.to_owned(),
            probes,
            data,
        }
    }
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
        self.probes = self
            .proc
            .ready
            .split_once("probes on ")
            .map(|(_, url)| url.trim().to_owned())
            .unwrap_or_default();
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
        text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok()).flatten()
        })
    }
}
