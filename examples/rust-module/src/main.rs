//! Build and run with `scripts/build-guests.sh` and then
//! `wasmtime run --env SANDCRON_JOB=demo --env SANDCRON_TICK=2026-11-22T00:00:00Z target/guests/rust-module.wasm`.
//!
//! A sandcron job as a `wasm32-wasip1` core module using `sandcron-guest`: it
//! prints a greeting on stdout, writes one structured log line on stderr and
//! records `{"ok":true,"attempt":N}` as the run's result.

use std::process::ExitCode;

use sandcron_guest::{Context, error, info, set_result_object};

fn main() -> ExitCode {
    // Under sandcron every SANDCRON_* variable is set and `Context::from_env`
    // would do; the defaults let the module also run by hand with only a few
    // of them (as in the command above).
    let ctx = match Context::from_env_or_defaults() {
        Ok(ctx) => ctx,
        Err(err) => {
            error!("invalid run context", error = err.to_string(), var = err.var());
            return ExitCode::FAILURE;
        }
    };

    println!("hello from rust-module: job={} tick={}", ctx.job(), ctx.tick());

    info!(
        "greeted",
        trigger = ctx.trigger().as_str(),
        attempt = ctx.attempt(),
        fence = ctx.fence(),
        tick_unix = ctx.tick_unix(),
    );

    match set_result_object(&[("ok", true.into()), ("attempt", ctx.attempt().into())]) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!("could not record the result", error = err.to_string());
            ExitCode::FAILURE
        }
    }
}
