//! The `sandcron-bench` binary: parses `--quick` and `--only a,b`, runs each
//! section in a fresh child process of its own (so that one section's memory
//! and threads never weigh on another's figures), and writes the report to
//! `target/bench/report[-quick].md`.
//!
//! Build and run with `just bench [--quick]` (it builds the release binary
//! and the guests, and installs the peers first).

use std::time::Instant;

use anyhow::Context as _;
use sandcron_bench::{Ctx, SECTIONS, sys};
use sandcron_tests::workspace_root;

/// Counts heap bytes on the threads that ask (`memory`); passes through elsewhere.
#[global_allocator]
static ALLOC: sandcron_bench::memory::Counting = sandcron_bench::memory::Counting;

fn main() -> anyhow::Result<()> {
    let mut ctx = Ctx::default();
    let mut only: Option<Vec<String>> = None;
    // Set in a child: run exactly one section and write its report here.
    let mut section_out: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => ctx.quick = true,
            "--only" => {
                let list = args.next().unwrap_or_default();
                only = Some(list.split(',').map(str::to_owned).collect());
            }
            "--section-out" => section_out = args.next(),
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
    let selected: Vec<&str> = SECTIONS
        .into_iter()
        .filter(|section| only.as_ref().is_none_or(|only| only.iter().any(|name| name == section)))
        .collect();

    if let Some(out) = section_out {
        let section = selected.first().context("a child runs one section")?;
        run_section(&mut ctx, section)?;
        std::fs::write(out, ctx.report.text())?;
        return Ok(());
    }

    let started = Instant::now();
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
        .line(format!("- Load average before (1, 5, 15 min): {}", sys::load_average()));
    ctx.report
        .line(format!("- sandcron binary: {}", sys::sandcron_bin().display()));
    let scratch = tempfile::tempdir()?;
    for section in selected {
        let section_started = Instant::now();
        let out = scratch.path().join(section);
        let mut command = std::process::Command::new(std::env::current_exe()?);
        if ctx.quick {
            command.arg("--quick");
        }
        let status = command
            .args(["--only", section, "--section-out"])
            .arg(&out)
            .status()
            .context("start a section")?;
        match std::fs::read_to_string(&out) {
            Ok(text) if status.success() => ctx.report.keep(&text),
            _ => ctx.report.line(format!(
                "\n**{section}: not measured ({status}); see the output above**\n"
            )),
        }
        eprintln!("bench: {section} took {:.0} s", section_started.elapsed().as_secs_f64());
    }
    ctx.report.line(format!(
        "\n---\nLoad average after (1, 5, 15 min): {}; total time {:.0} s.",
        sys::load_average(),
        started.elapsed().as_secs_f64()
    ));
    let dir = workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(if ctx.quick { "report-quick.md" } else { "report.md" });
    std::fs::write(&file, ctx.report.text())?;
    eprintln!("bench: report written to {}", file.display());
    Ok(())
}

fn run_section(ctx: &mut Ctx, section: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match section {
            "executors" => sandcron_bench::executors::run(ctx).await,
            "network" => sandcron_bench::network::run(ctx).await,
            "dispatch" => sandcron_bench::dispatch::run(ctx).await,
            "lateness" => sandcron_bench::lateness::run(ctx).await,
            "scale" => sandcron_bench::scale::run(ctx).await,
            "claims" => sandcron_bench::claims::run(ctx).await,
            "logs" => sandcron_bench::logs::run(ctx).await,
            "kill" => sandcron_bench::kill::run(ctx).await,
            _ => sandcron_bench::footprint::run(ctx).await,
        }
    })
}
