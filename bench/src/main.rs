//! The `sandcron-bench` binary: parses `--quick` and `--only a,b`, runs the
//! sections, and writes the report to `target/bench/report[-quick].md`.
//!
//! Build and run with `just bench [--quick]` (it builds the release binary
//! and the guests, and installs the peers first).

use std::time::Instant;

use sandcron_bench::{Ctx, SECTIONS, sys};

fn main() -> anyhow::Result<()> {
    let mut ctx = Ctx::default();
    let mut only: Option<Vec<String>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => ctx.quick = true,
            "--only" => {
                let list = args.next().unwrap_or_default();
                only = Some(list.split(',').map(str::to_owned).collect());
            }
            // `cargo bench` passes this to every bench target.
            "--bench" => {}
            other => anyhow::bail!(
                "unknown argument {other:?} (expected --quick, --only {})",
                SECTIONS.join(",")
            ),
        }
    }
    if let Some(only) = &only
        && let Some(unknown) = only.iter().find(|name| !SECTIONS.contains(&name.as_str()))
    {
        anyhow::bail!("unknown section {unknown:?}; sections: {}", SECTIONS.join(", "));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let started = Instant::now();
    let load_before = sys::load_average();
    ctx.report.line(format!(
        "# sandcron benchmarks ({} run)\n",
        if ctx.quick { "quick" } else { "full" }
    ));
    ctx.report.line(format!("- Machine: {}", sys::machine()));
    ctx.report.line(format!(
        "- Started: {}",
        jiff::Timestamp::now().round(jiff::Unit::Second)?
    ));
    ctx.report
        .line(format!("- Load average before (1, 5, 15 min): {load_before}"));
    ctx.report
        .line(format!("- sandcron binary: {}", sys::sandcron_bin().display()));
    for section in SECTIONS {
        if only
            .as_ref()
            .is_some_and(|only| !only.iter().any(|name| name == section))
        {
            continue;
        }
        let section_started = Instant::now();
        let outcome = runtime.block_on(async {
            match section {
                "executors" => sandcron_bench::executors::run(&mut ctx).await,
                "dispatch" => sandcron_bench::dispatch::run(&mut ctx).await,
                "lateness" => sandcron_bench::lateness::run(&mut ctx).await,
                "scale" => sandcron_bench::scale::run(&mut ctx).await,
                "claims" => sandcron_bench::claims::run(&mut ctx).await,
                "logs" => sandcron_bench::logs::run(&mut ctx).await,
                "kill" => sandcron_bench::kill::run(&mut ctx).await,
                _ => sandcron_bench::footprint::run(&mut ctx).await,
            }
        });
        if let Err(err) = outcome {
            // One broken section does not cost the others' figures.
            ctx.report.line(format!("\n**{section}: not measured: {err:#}**\n"));
        }
        eprintln!("bench: {section} took {:.0} s", section_started.elapsed().as_secs_f64());
    }
    ctx.report.line(format!(
        "\n---\nLoad average after (1, 5, 15 min): {}; total time {:.0} s.",
        sys::load_average(),
        started.elapsed().as_secs_f64()
    ));
    let dir = sys::root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(if ctx.quick { "report-quick.md" } else { "report.md" });
    std::fs::write(&file, ctx.report.text())?;
    eprintln!("bench: report written to {}", file.display());
    Ok(())
}
