//! Row 9, network per run: a component (the test guest `net-probe`) making
//! one HTTP GET to a local server through the host's checked, recorded
//! `wasi:http` path, against the same GET from a shell job (`curl`, a process
//! per run) and a trivial component for the base cost; all through the real
//! executors, in one run.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use sandcron::exec::egress::EgressPolicy;
use sandcron::exec::native::NativeExecutor;
use sandcron::exec::wasm::{WasmConfig, WasmEngine};
use sandcron::ids::ModuleDigest;
use sandcron::job::{JobKind, WasmJob};
use sandcron_tests::receiver::Receiver;
use sandcron_tests::workspace_root;

use crate::Ctx;
use crate::executors::{Modules, measure};
use crate::inproc::{shell_kind, wasm_kind};
use crate::report::{Stats, ratio, run_row};

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let runs = ctx.pick(300, 2_000);
    let service = Receiver::start().await;
    let url = service.url("/");
    let mut missing = Vec::new();
    let guest = |name: &str| std::fs::read(workspace_root().join(format!("target/guests/{name}.wasm"))).ok();
    let probe = guest("net-probe");
    let trivial = guest("rust-component");
    let mut modules = HashMap::new();
    for bytes in [&probe, &trivial].into_iter().flatten() {
        modules.insert(ModuleDigest::of(bytes), bytes.clone());
    }
    let engine = WasmEngine::new(WasmConfig {
        capacity: 4,
        egress_policy: EgressPolicy::local_machine(),
        ..WasmConfig::default()
    })?;
    let executor = engine.executor(Arc::new(Modules(modules)));

    let mut rows: Vec<(String, Option<Stats>, usize)> = Vec::new();
    match &trivial {
        Some(bytes) => {
            let kind = wasm_kind(&ModuleDigest::of(bytes));
            measure(&executor, &kind, 20).await?;
            let samples = measure(&executor, &kind, runs).await?;
            rows.push((
                "component, no network (rust-component)".into(),
                Stats::of_durations(&samples),
                runs,
            ));
        }
        None => missing.push("rust-component"),
    }
    let mut wasm_median = f64::NAN;
    match &probe {
        Some(bytes) => {
            let kind = JobKind::Wasm(WasmJob {
                args: vec!["get".into(), url.clone()].into(),
                egress: vec![format!("http://{}", service.addr)].into(),
                ..WasmJob::new(ModuleDigest::of(bytes))
            });
            measure(&executor, &kind, 20).await?;
            let samples = measure(&executor, &kind, runs).await?;
            let stats = Stats::of_durations(&samples);
            wasm_median = stats.map_or(f64::NAN, |s| s.median);
            rows.push(("component, one GET (net-probe, wasi:http)".into(), stats, runs));
        }
        None => missing.push("net-probe"),
    }
    let curl = ["/usr/bin/curl", "/bin/curl"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists());
    let mut curl_median = f64::NAN;
    match curl {
        Some(curl) => {
            let native = NativeExecutor::new(
                BTreeMap::from([("PATH".into(), "/usr/bin:/bin".into())]),
                Duration::from_secs(1),
            );
            let kind = shell_kind(&format!("{curl} -s -o /dev/null {url}"));
            measure(&native, &kind, 20).await?;
            let samples = measure(&native, &kind, runs).await?;
            let stats = Stats::of_durations(&samples);
            curl_median = stats.map_or(f64::NAN, |s| s.median);
            rows.push(("shell job, one GET (`curl`, a process per run)".into(), stats, runs));
        }
        None => missing.push("curl"),
    }
    let served = service.requests().len();

    let report = &mut ctx.report;
    report.heading("9. Network per run");
    report.note(
        "One whole run per sample through the real executors, back to back; the GET goes to a \
         local HTTP server on loopback. The component's request passes the job's egress check, the \
         host's own resolution and address check, and is written to the run's ledger. Ratios \
         compare medians with the shell job.",
    );
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|(label, stats, count)| run_row(label, *stats, *count, &[curl_median]))
        .collect();
    report.table(&["run", "runs", "median", "p99", "vs curl"], &table);
    report.note(format!(
        "The server answered {served} requests. Component GET vs curl: {}.",
        ratio(wasm_median, curl_median)
    ));
    if !missing.is_empty() {
        report.note(format!("Not measured (missing): {}.", missing.join(", ")));
    }
    Ok(())
}
