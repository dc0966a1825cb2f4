//! The chaos soak: a whole cluster on loopback (a 3-member etcd, the
//! MongoDB-wire server, 2 masters, 4 workers, one of them with a skewed
//! clock) runs a few hundred mixed jobs while a fault driver kills, freezes
//! and restarts its parts at random. At the end `sandcron check-history`
//! judges the recorded history; the soak returns its figures.
//!
//! Used by the e2e suite (3 minutes) and by `just soak --minutes N`.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::{ClusterEnv, Master, WorkerProcess, wait_for_workers};
use crate::etcd::EtcdCluster;
use crate::mongo::MongoServer;
use crate::{Api, wait_for, workspace_root};

/// What to soak.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// The `sandcron` binary.
    pub bin: String,
    /// How long faults are injected.
    pub duration: Duration,
    /// Jobs (a multiple of 10 works best).
    pub jobs: usize,
    /// Check the output of at most this many runs (`None`: every run).
    pub output_sample: Option<usize>,
    pub seed: u64,
}

/// The soak's figures.
#[derive(Debug, Clone, Default)]
pub struct SoakReport {
    pub seed: u64,
    pub jobs: usize,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, usize>,
    /// Seconds from a worker's `kill -9` until every job had a live owner.
    pub failovers: Vec<f64>,
    /// When each fault started, and what it was.
    pub timeline: Vec<String>,
    /// The checker's JSON report.
    pub check: Value,
    /// The checker's exit status (0: no violation).
    pub check_status: i32,
}

impl SoakReport {
    fn figure(&self, key: &str) -> u64 {
        self.check[key].as_u64().unwrap_or(0)
    }

    fn violations(&self, kind: &str) -> usize {
        self.check["violations"]
            .as_array()
            .map_or(0, |v| v.iter().filter(|v| v["kind"] == kind).count())
    }

    /// Output chunks lost: sequence numbers missing, plus runs with a lost tail.
    pub fn chunks_lost(&self) -> usize {
        let gaps: usize = self.check["violations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["kind"] == "output_gap")
            .map(|v| v["missing"].as_array().map_or(0, Vec::len))
            .sum();
        gaps + self.violations("output_short")
    }

    /// Every violation the checker found.
    pub fn violation_count(&self) -> usize {
        self.check["violations"].as_array().map_or(usize::MAX, Vec::len)
    }

    /// The figures as a markdown table.
    pub fn table(&self) -> String {
        let mut failovers = self.failovers.clone();
        failovers.sort_by(f64::total_cmp);
        let p99 = failovers
            .get(((failovers.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
            .copied();
        let max = failovers.last().copied();
        let secs = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} s"));
        let faults: Vec<String> = self.faults.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
        let rows = [
            ("seed", self.seed.to_string()),
            ("jobs", self.jobs.to_string()),
            ("faults injected", faults.join(", ")),
            ("ticks scheduled (expected)", self.figure("ticks_expected").to_string()),
            ("run records", self.figure("runs").to_string()),
            ("runs executed", self.figure("executed").to_string()),
            (
                "ticks recorded skipped/missed",
                self.figure("recorded_not_run").to_string(),
            ),
            ("duplicate ticks", self.violations("duplicate").to_string()),
            ("unrecorded ticks", self.violations("unrecorded").to_string()),
            ("runs stuck running", self.violations("not_terminal").to_string()),
            ("stale fences", self.violations("stale_fence").to_string()),
            (
                "runs whose output was checked",
                self.figure("output_checked").to_string(),
            ),
            ("output chunks read back", self.figure("chunks").to_string()),
            ("output chunks lost", self.chunks_lost().to_string()),
            ("worker failovers measured", failovers.len().to_string()),
            ("failover time p99", secs(p99)),
            ("failover time max", secs(max)),
        ];
        let mut out = String::from("| figure | value |\n| --- | --- |\n");
        for (name, value) in rows {
            out.push_str(&format!("| {name} | {value} |\n"));
        }
        out
    }
}

/// A small deterministic generator (xorshift64*), so a seed replays a soak's
/// fault sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from))
    }
}

/// Worker lease TTL during the soak: short, so faults play out quickly.
const LEASE_S: u64 = 4;

/// The job mix: every-second and slower schedules, WASM and shell, overlap
/// policies, catch-up policies and retries.
fn job_body(index: usize, module: &str) -> Value {
    match index % 10 {
        0 => json!({"schedule": "* * * * * *", "kind": {"wasm": {"module": module}}, "overlap": "forbid"}),
        1..=3 => json!({"schedule": "*/10 * * * * *", "kind": {"wasm": {"module": module}},
                     "catchup": {"policy": "latest", "window_s": 60}}),
        4..=5 => json!({"schedule": "*/5 * * * * *", "kind": {"shell": {"command": "echo one; echo two"}},
                     "overlap": "allow"}),
        6 => json!({"schedule": "* * * * * *", "kind": {"shell": {"command": "sleep 1.5; echo slept"}},
                     "overlap": "forbid"}),
        _ => json!({"schedule": "*/15 * * * * *", "kind": {"shell": {"command": "echo failing >&2; exit 3"}},
                     "retry": {"max": 1, "backoff_s": 2}}),
    }
}

/// Runs the soak and returns its figures (it does not judge them).
pub async fn run(config: SoakConfig) -> SoakReport {
    let mut report = SoakReport {
        seed: config.seed,
        jobs: config.jobs,
        ..SoakReport::default()
    };
    let mut rng = Rng(config.seed | 1);
    let mut etcd = EtcdCluster::start(3);
    let mut mongo = MongoServer::start();
    let dir = tempfile::Builder::new()
        .prefix("sandcron-soak-")
        .tempdir()
        .expect("temp dir");
    let env = ClusterEnv {
        bin: config.bin.clone(),
        dir: dir.path().to_owned(),
        etcd_endpoints: etcd.endpoints(),
        mongo_uri: mongo.uri(),
        namespace: "soak".into(),
    };
    let masters: Vec<Master> = (1..=2).map(|i| env.master(&format!("m{i}"), "")).collect();
    let worker_extra =
        |skew: i64| format!("lease_ttl_s = {LEASE_S}\nallow_native = true\ncapacity = 64\nclock_offset_ms = {skew}");
    let mut workers: Vec<WorkerProcess> = (1..=4)
        .map(|i| env.worker(&format!("w{i}"), &worker_extra(if i == 4 { 1500 } else { 0 })))
        .collect();
    let apis: Vec<Api> = masters.iter().map(Master::api).collect();
    let api = &apis[0];
    wait_for_workers(api, 4, Duration::from_secs(60)).await;
    let demo = std::fs::read(workspace_root().join("host/assets/demo.wasm")).expect("demo.wasm");
    let digest = api.upload_module(demo).await;
    let started = jiff::Timestamp::now();
    for index in 0..config.jobs {
        let master = &apis[index % apis.len()];
        master
            .put(&format!("/api/v1/jobs/soak-{index:04}"), &job_body(index, &digest))
            .await
            .expect(201);
    }

    // The fault driver: one fault at a time, at random, until the deadline.
    let deadline = Instant::now() + config.duration;
    while Instant::now() < deadline {
        tokio::time::sleep(rng.millis(3_000, 8_000)).await;
        match rng.below(5) {
            0 | 1 => {
                let victim = rng.below(workers.len() as u64) as usize;
                let id = workers[victim].id.clone();
                workers[victim].proc.kill9();
                let killed = Instant::now();
                *report.faults.entry("worker kill -9").or_default() += 1;
                report
                    .timeline
                    .push(format!("{} {}", jiff::Timestamp::now(), "worker kill -9"));
                if let Some(seconds) = failover(api, &id, killed).await {
                    report.failovers.push(seconds);
                }
                tokio::time::sleep(rng.millis(500, 3_000)).await;
                workers[victim].start_again();
            }
            2 => {
                let victim = rng.below(workers.len() as u64) as usize;
                workers[victim].proc.pause();
                *report.faults.entry("worker SIGSTOP past its lease").or_default() += 1;
                report.timeline.push(format!(
                    "{} {}",
                    jiff::Timestamp::now(),
                    "worker SIGSTOP past its lease"
                ));
                tokio::time::sleep(Duration::from_secs(LEASE_S + 2) + rng.millis(0, 2_000)).await;
                workers[victim].proc.resume();
            }
            3 => {
                let member = if rng.below(2) == 0 {
                    etcd.leader()
                } else {
                    rng.below(3) as usize
                };
                etcd.kill_member(member);
                *report.faults.entry("etcd member kill -9").or_default() += 1;
                report
                    .timeline
                    .push(format!("{} {}", jiff::Timestamp::now(), "etcd member kill -9"));
                tokio::time::sleep(rng.millis(2_000, 6_000)).await;
                etcd.restart_member(member);
            }
            _ => {
                mongo.kill9();
                *report.faults.entry("MongoDB kill -9").or_default() += 1;
                report
                    .timeline
                    .push(format!("{} {}", jiff::Timestamp::now(), "MongoDB kill -9"));
                tokio::time::sleep(rng.millis(3_000, 10_000)).await;
                mongo.start_again();
            }
        }
    }

    // Heal, let every spool drain, then judge the history up to a few
    // seconds ago (later ticks may still be on their way).
    wait_for_workers(api, 4, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(LEASE_S + 4)).await;
    wait_for("every spool to drain", Duration::from_secs(120), || async {
        for worker in &workers {
            if worker.metric("sandcron_sink_spool_bytes").await != Some(0.0) {
                return None;
            }
        }
        Some(())
    })
    .await;
    let since = started.to_string();
    let until = (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(5)).to_string();
    let output = Command::new(&config.bin)
        .args(["check-history", "--json", "--server", &masters[1].base])
        .args(["--since", &since, "--until", &until])
        .args(
            config
                .output_sample
                .map(|n| vec!["--output-sample".to_owned(), n.to_string()])
                .unwrap_or_default(),
        )
        .output()
        .expect("run sandcron check-history");
    report.check_status = output.status.code().unwrap_or(-1);
    report.check = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| json!({"error": String::from_utf8_lossy(&output.stderr).into_owned()}));
    if report.check_status != 0 {
        // Keep the processes' logs and configuration for the post-mortem.
        let kept = dir.keep();
        report.timeline.push(format!("logs kept in {}", kept.display()));
    }
    report
}

/// Seconds from `killed` until the dead worker `id` owns no job and every
/// job has an owner; `None` if that took over a minute.
async fn failover(api: &Api, id: &str, killed: Instant) -> Option<f64> {
    let limit = killed + Duration::from_secs(60);
    while Instant::now() < limit {
        let jobs = api.get("/api/v1/jobs").await;
        if jobs.status == 200 {
            let moved = jobs.body.as_array().is_some_and(|jobs| {
                jobs.iter()
                    .all(|j| j["owner"].as_str().is_some_and(|owner| owner != id))
            });
            if moved {
                return Some(killed.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}
