//! Row 7, kill latency: `POST /jobs/{name}/kill` through the API of a
//! `sandcron dev` → the run recorded `killed` (its `ended_at`), for a
//! CPU-bound WASM guest (stopped at the next epoch tick) and a native
//! `sleep` (its process group gets SIGTERM); compared with sending SIGTERM
//! to a `sleep` child directly and reaping it.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use sandcron_tests::{Api, wasm_job, workspace_root};
use serde_json::json;

use crate::Ctx;
use crate::report::{Stats, ratio, spread};
use crate::servers::DevProc;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let repeats = ctx.pick(20, 100);
    let dev = DevProc::start()?;
    let api = Api::new(&dev.base, None);
    let spin = wat::parse_file(workspace_root().join("tests/guests/loop.wat"))?;
    let digest = api.upload_module(spin).await;
    let limits = json!({"fuel": 1_000_000_000_000_000u64, "memory_mb": 16, "timeout_s": 600, "output_kb": 64});
    for (name, body) in [
        ("spin", wasm_job("@yearly", &digest, Some(limits))),
        (
            "sleeper",
            json!({"schedule": "@yearly", "kind": {"shell": {"command": "sleep 600"}}}),
        ),
    ] {
        let reply = api.put(&format!("/api/v1/jobs/{name}"), &body).await;
        anyhow::ensure!(reply.status == 200 || reply.status == 201, "job {name}: {}", reply.body);
    }
    let wasm = kill_samples(&api, "spin", repeats).await?;
    let native = kill_samples(&api, "sleeper", repeats).await?;
    drop(dev);
    let raw = raw_sigterm(repeats)?;
    let med = |s: Option<Stats>| s.map_or(f64::NAN, |s| s.median);

    let report = &mut ctx.report;
    report.heading("7. Kill latency");
    report.note(format!(
        "`sandcron dev` (embedded stores). {repeats} runs each: run now, wait until it is `running` (plus 200 \
         ms), take the instant, `POST /api/v1/jobs/{{name}}/kill`, then read the run's `ended_at` once it is \
         `killed`. WASM: `tests/guests/loop.wat`, a loop with no host calls. Native: `sleep 600` (its process \
         group gets SIGTERM). Comparison: SIGTERM to a `sleep` child of the harness, until it is reaped."
    ));
    report.table(
        &["run", "kill → ended: median (p99; min–max)", "vs direct SIGTERM"],
        &[
            vec!["WASM, CPU-bound guest".into(), spread(wasm), ratio(med(wasm), med(raw))],
            vec![
                "native `sleep 600`".into(),
                spread(native),
                ratio(med(native), med(raw)),
            ],
            vec!["direct SIGTERM + reap of `sleep`".into(), spread(raw), "1.00×".into()],
        ],
    );
    Ok(())
}

async fn kill_samples(api: &Api, job: &str, repeats: usize) -> anyhow::Result<Option<Stats>> {
    let mut samples = Vec::new();
    for _ in 0..repeats {
        let reply = api.post(&format!("/api/v1/jobs/{job}/run")).await;
        anyhow::ensure!(reply.status == 202, "run now: {}", reply.body);
        let run_id = sandcron_tests::wait_for("the run to start", Duration::from_secs(30), || async {
            let page = api.get(&format!("/api/v1/runs?job={job}&status=running")).await;
            page.body["runs"][0]["run_id"].as_str().map(str::to_owned)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let asked = Timestamp::now();
        let reply = api.post(&format!("/api/v1/jobs/{job}/kill")).await;
        anyhow::ensure!(reply.status == 202, "kill: {}", reply.body);
        let ended = sandcron_tests::wait_for("the run to end", Duration::from_secs(60), || async {
            let run = api.get(&format!("/api/v1/runs/{run_id}")).await;
            let run = if run.body.get("run").is_some() {
                run.body["run"].clone()
            } else {
                run.body
            };
            (run["status"] != "running")
                .then(|| run["ended_at"].as_str().and_then(|t| t.parse::<Timestamp>().ok()))
                .flatten()
        })
        .await;
        samples.push(ended.duration_since(asked).as_secs_f64() * 1e3);
        // The job forbids overlap: the next run-now waits until the worker
        // has removed this run's `running/` entry (a moment after its record).
        sandcron_tests::wait_for("the run's entry to go", Duration::from_secs(30), || async {
            let view = api.get(&format!("/api/v1/jobs/{job}")).await;
            view.body["running"].as_array().is_some_and(Vec::is_empty).then_some(())
        })
        .await;
    }
    Ok(Stats::of(&samples))
}

fn raw_sigterm(repeats: usize) -> anyhow::Result<Option<Stats>> {
    let mut samples = Vec::new();
    for _ in 0..repeats {
        let mut child = std::process::Command::new("sleep").arg("600").spawn()?;
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        child.wait()?;
        samples.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Stats::of(&samples))
}
