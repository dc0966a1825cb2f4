//! End-to-end tests: the real `sandcron` binary, started by the harness on a
//! free port with a temporary data directory, driven over HTTP and its CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_errors;
mod auth;
mod check;
mod cli;
mod cluster;
mod console;
mod deploy;
mod fuzz;
mod hostile;
mod integrations;
mod lifecycle;
mod logs;
mod shell_jobs;
mod soak;
mod wasm;

use sandcron_tests::Dev;

/// The binary under test, built fresh by cargo for this test target.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_sandcron");

pub(crate) fn dev(extra: &[&str]) -> Dev {
    Dev::start(BIN, extra)
}

/// A shell job body.
pub(crate) fn shell_job(schedule: &str, command: &str) -> serde_json::Value {
    serde_json::json!({"schedule": schedule, "kind": {"shell": {"command": command}}})
}
