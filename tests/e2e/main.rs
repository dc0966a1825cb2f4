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
/// A cron expression (UTC, with seconds) that fires once, `secs` seconds from now.
pub(crate) fn once_in(secs: i64) -> String {
    let at = jiff::Timestamp::now()
        .saturating_add(jiff::SignedDuration::from_secs(secs))
        .expect("a near instant")
        .to_zoned(jiff::tz::TimeZone::UTC);
    format!(
        "{} {} {} {} {} *",
        at.second(),
        at.minute(),
        at.hour(),
        at.day(),
        at.month()
    )
}

pub(crate) fn shell_job(schedule: &str, command: &str) -> serde_json::Value {
    serde_json::json!({"schedule": schedule, "kind": {"shell": {"command": command}}})
}
