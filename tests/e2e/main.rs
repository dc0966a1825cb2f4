//! End-to-end tests: the real `sandcron` binary, started by the harness on a
//! free port with a temporary data directory, driven over HTTP and its CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod alert_deadman;
mod alert_formats;
mod api_errors;
mod audit;
mod auth;
mod browser_origin;
mod check;
mod cli;
mod cluster;
mod console;
mod deploy;
mod fuzz;
mod handoff;
mod hostile;
mod integrations;
mod lifecycle;
mod logs;
mod network;
mod network_examples;
mod rerun;
mod secrets;
mod shell_jobs;
mod soak;
mod state;
mod try_cmd;
mod wasm;

use std::path::Path;
use std::time::Duration;

use sandcron_tests::{Api, Dev, wait_for, workspace_root};
use serde_json::Value;

/// The binary under test, built fresh by cargo for this test target.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_sandcron");

/// `sandcron ARGS` as a user runs it, without a token, against `server`
/// (`SANDCRON_SERVER`; `None`: the default): the finished process.
pub(crate) fn cli_output(args: &[&str], server: Option<&str>) -> std::process::Output {
    let mut command = std::process::Command::new(BIN);
    command.args(args).env_remove("SANDCRON_TOKEN");
    match server {
        Some(server) => command.env("SANDCRON_SERVER", server),
        None => command.env_remove("SANDCRON_SERVER"),
    };
    command.output().expect("run sandcron")
}

/// [`cli_output`] as (exit code, stdout, stderr), both as text.
pub(crate) fn cli(args: &[&str], server: Option<&str>) -> (i32, String, String) {
    let output = cli_output(args, server);
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

pub(crate) fn dev(extra: &[&str]) -> Dev {
    Dev::start(BIN, extra)
}

/// A test guest from `tests/guests/<name>.wat`, assembled.
pub(crate) fn guest_wat(name: &str) -> Vec<u8> {
    let path = workspace_root().join("tests/guests").join(format!("{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|err| panic!("cannot assemble {}: {err}", path.display()))
}

/// A guest built by `scripts/build-guests.sh` (an example or a test guest).
pub(crate) fn built_guest(name: &str) -> Vec<u8> {
    let path = workspace_root().join("target/guests").join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|err| {
        panic!(
            "cannot read {} ({err}); build the guests with scripts/build-guests.sh",
            path.display()
        )
    })
}

/// Writes `<dir>/tokens.toml` with one `[[auth.tokens]]` entry per
/// (name, role, token); returns its path for `--config`.
pub(crate) fn tokens_config(dir: &Path, tokens: &[(&str, &str, &str)]) -> String {
    let path = dir.join("tokens.toml");
    let entries: String = tokens
        .iter()
        .map(|(name, role, token)| {
            format!("[[auth.tokens]]\nname = \"{name}\"\nrole = \"{role}\"\ntoken = \"{token}\"\n")
        })
        .collect();
    std::fs::write(&path, entries).expect("write config");
    path.to_string_lossy().into_owned()
}

/// Waits for the first pending run in `job`'s view (a stored retry, say).
pub(crate) async fn first_pending(api: &Api, job: &str) -> Value {
    wait_for(&format!("a pending run of {job}"), Duration::from_secs(10), || async {
        let view = api.get(&format!("/api/v1/jobs/{job}")).await.expect(200);
        view["pending"].as_array().and_then(|p| p.first().cloned())
    })
    .await
}

/// Waits for a `failed` run of `job` that is attempt `attempt`.
pub(crate) async fn failed_attempt(api: &Api, job: &str, attempt: u64, within: Duration) -> Value {
    wait_for(&format!("attempt {attempt} of {job} to fail"), within, || async {
        api.runs(job)
            .await
            .into_iter()
            .find(|r| r["attempt"] == attempt && r["status"] == "failed")
    })
    .await
}

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

/// Runs `job` now and waits up to `within` for that run to end (the job may
/// have run before); returns the record as the API returns it by id, with
/// its egress ledger.
pub(crate) async fn run_now(api: &Api, job: &str, within: Duration) -> Value {
    let started = api.post(&format!("/api/v1/jobs/{job}/run")).await.expect(202);
    let run_id = started["run_id"].as_str().expect("run id").to_owned();
    wait_for(&format!("run {run_id} of {job} to end"), within, || async {
        let run = api.get(&format!("/api/v1/runs/{run_id}")).await;
        (run.status == 200 && run.body["status"] != "running").then_some(run.body)
    })
    .await
}

/// The guest's stdout lines.
pub(crate) async fn lines(api: &Api, run: &Value) -> Vec<String> {
    let output = api.output(run["run_id"].as_str().expect("id")).await;
    output
        .iter()
        .filter(|(stream, _)| stream == "stdout")
        .map(|(_, text)| text.as_str())
        .collect::<String>()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The entries of a run's egress ledger.
pub(crate) fn entries(run: &Value) -> Vec<Value> {
    run["egress"]["entries"].as_array().cloned().unwrap_or_default()
}

/// A shell job body.
pub(crate) fn shell_job(schedule: &str, command: &str) -> serde_json::Value {
    serde_json::json!({"schedule": schedule, "kind": {"shell": {"command": command}}})
}
