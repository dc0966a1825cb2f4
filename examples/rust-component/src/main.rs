//! Build and run with `scripts/build-guests.sh` and then
//! `wasmtime run --env SANDCRON_JOB=demo --env SANDCRON_TICK=2026-11-22T00:00:00Z target/guests/rust-component.wasm [fail]`.
//!
//! A sandcron job as a WASI 0.2 component (`wasm32-wasip2`, for which rustc
//! emits a component exporting `wasi:cli/run` directly), using only std. It
//! prints a greeting; given the argument `fail` it then reports an error on
//! stderr and exits with status 1, so that the host's failure reporting for
//! components can be tested.

use std::env;
use std::process::ExitCode;

fn main() -> ExitCode {
    let job = env::var("SANDCRON_JOB").unwrap_or_default();
    let tick = env::var("SANDCRON_TICK").unwrap_or_default();
    println!("hello from rust-component: job={job} tick={tick}");

    if env::args().skip(1).any(|arg| arg == "fail") {
        eprintln!("rust-component: failing because the argument `fail` was given");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
