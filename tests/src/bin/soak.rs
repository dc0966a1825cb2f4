//! `just soak [--minutes N] [--jobs N] [--seed N]`: the chaos soak against
//! a release build, printing its figures as a markdown table. Exits 1 when
//! the run-history checker finds a violation.

use std::time::Duration;

use sandcron_tests::soak::{self, SoakConfig};
use sandcron_tests::workspace_root;

fn main() {
    let mut minutes = 3.0_f64;
    let mut jobs = 200;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut output_sample = None;
    let mut bin = workspace_root()
        .join("target/release/sandcron")
        .to_string_lossy()
        .into_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--minutes" => minutes = value().parse().unwrap_or_else(|_| usage("--minutes takes a number")),
            "--jobs" => jobs = value().parse().unwrap_or_else(|_| usage("--jobs takes a number")),
            "--seed" => seed = value().parse().unwrap_or_else(|_| usage("--seed takes a number")),
            "--bin" => bin = value(),
            "--output-sample" => {
                output_sample = Some(
                    value()
                        .parse()
                        .unwrap_or_else(|_| usage("--output-sample takes a number")),
                );
            }
            _ => usage(&format!("unknown argument {arg}")),
        }
    }
    if !(0.1..=24.0 * 60.0).contains(&minutes) {
        usage("--minutes must be between 0.1 and 1440");
    }
    if !std::path::Path::new(&bin).exists() {
        usage(&format!(
            "{bin} does not exist: build it with cargo build --release -p sandcron"
        ));
    }
    let config = SoakConfig {
        bin,
        duration: Duration::from_secs_f64(minutes * 60.0),
        jobs,
        seed,
        output_sample,
    };
    eprintln!("soak: {minutes} minutes, {jobs} jobs, seed {seed}");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => usage(&format!("cannot start the async runtime: {err}")),
    };
    let report = runtime.block_on(soak::run(config));
    println!("{}", report.table());
    if report.check_status != 0 || report.violation_count() != 0 {
        println!(
            "violations:\n{}",
            serde_json::to_string_pretty(&report.check["violations"]).unwrap_or_default()
        );
        std::process::exit(1);
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("soak: {problem}\nusage: soak [--minutes N] [--jobs N] [--seed N] [--output-sample N] [--bin PATH]");
    std::process::exit(2);
}
