//! `sandcron check-history` against a real server: a clean history passes,
//! and a history with a lost chunk and a lost run record fails, naming both.

use std::process::Command;
use std::time::Duration;

use sandcron_tests::wait_for;
use serde_json::Value;

use crate::{BIN, dev, shell_job};

fn check_history(server: &str, args: &[&str]) -> (i32, Value, String) {
    let output = Command::new(BIN)
        .args(["check-history", "--server", server, "--json"])
        .args(args)
        .env_remove("SANDCRON_TOKEN")
        .output()
        .expect("run sandcron check-history");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let report = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (
        output.status.code().unwrap_or(-1),
        report,
        format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)),
    )
}

fn kinds(report: &Value) -> Vec<String> {
    report["violations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Runs SQL on the stopped server's log database (Python's sqlite3, which
/// the MongoDB-wire test server needs anyway).
fn sql(db: &std::path::Path, statement: &str, args: &[&str]) {
    let script = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nn = c.execute(sys.argv[2], sys.argv[3:]).rowcount\nc.commit()\nassert n == 1, n\n";
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(db)
        .arg(statement)
        .args(args)
        .status()
        .expect("python3");
    assert!(status.success(), "{statement}");
}

#[tokio::test]
async fn check_history_passes_a_clean_history_and_names_what_was_lost() {
    let mut server = dev(&[]);
    let api = server.api();
    api.put(
        "/api/v1/jobs/three-lines",
        &shell_job("* * * * * *", "echo one; sleep 0.2; echo two; sleep 0.2; echo three"),
    )
    .await
    .expect(201);
    let runs = wait_for("six runs to end", Duration::from_secs(30), || async {
        let runs = api.runs("three-lines").await;
        let ended: Vec<Value> = runs.into_iter().filter(|r| r["status"] == "succeeded").collect();
        (ended.len() >= 6).then_some(ended)
    })
    .await;

    // The newest ticks may still be on their way to the store; a true
    // violation never goes away, so waiting for a clean report is honest.
    let report = wait_for("a clean report", Duration::from_secs(20), || async {
        let (code, report, _) = check_history(&server.base, &["--since", "2m", "--until", "2s"]);
        (code == 0).then_some(report)
    })
    .await;
    let executed = report["executed"].as_u64().unwrap_or(0);
    assert!(executed >= 4, "{report}");
    assert_eq!(
        report["chunks"].as_u64(),
        Some(3 * executed),
        "three chunks a run: {report}"
    );
    assert_eq!(report["violations"], serde_json::json!([]));

    // Lose one chunk of one run and the whole record of another.
    let gap_run = runs[1]["run_id"].as_str().unwrap().to_owned();
    let lost_run = runs[3]["run_id"].as_str().unwrap().to_owned();
    let lost_tick = runs[3]["tick"].as_str().unwrap().to_owned();
    server.stop();
    let db = server.data_dir().join("data/logs.db");
    sql(&db, "DELETE FROM output WHERE run_id = ? AND seq = 1", &[&gap_run]);
    sql(&db, "DELETE FROM runs WHERE run_id = ?", &[&lost_run]);
    server.start_again();
    let (report, text) = wait_for("the losses to be reported", Duration::from_secs(20), || async {
        let (code, report, text) = check_history(&server.base, &["--since", "5m", "--until", "2s"]);
        assert!(code == 0 || code == 1, "{text}");
        let found = kinds(&report);
        let all = ["output_gap", "output_short", "unrecorded"]
            .iter()
            .all(|kind| found.iter().any(|f| f == kind));
        (code == 1 && all).then_some((report, text))
    })
    .await;
    let unrecorded: Vec<&str> = report["violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["kind"] == "unrecorded")
        .filter_map(|v| v["tick"].as_str())
        .collect();
    assert!(
        unrecorded
            .iter()
            .any(|t| t.parse::<jiff::Timestamp>().ok() == lost_tick.parse().ok()),
        "the lost record's tick {lost_tick} is reported: {text}"
    );
    assert!(
        report["violations"]
            .to_string()
            .contains(&format!("\"run_id\":\"{gap_run}\"")),
        "the run that lost a chunk is named: {text}"
    );
}

/// A worker that falls behind (here: frozen for three seconds) finds several
/// ticks of each job due at once. Each must still be claimed once and
/// recorded: none may win over an earlier one and leave it unrecorded.
#[tokio::test]
async fn a_worker_that_falls_behind_accounts_for_every_tick() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let server = dev(&[]);
    let api = server.api();
    for i in 0..5 {
        api.put(&format!("/api/v1/jobs/every-{i}"), &shell_job("* * * * * *", "true"))
            .await
            .expect(201);
    }
    wait_for("the jobs to run", Duration::from_secs(20), || async {
        let runs = api.runs("every-4").await;
        runs.iter().any(|r| r["status"] == "succeeded").then_some(())
    })
    .await;
    let pid = Pid::from_raw(server.pid() as i32);
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
    // The freeze is the scenario, not a synchronisation.
    tokio::time::sleep(Duration::from_secs(3)).await;
    kill(pid, Signal::SIGCONT).expect("SIGCONT");
    let report = wait_for("a clean report after the freeze", Duration::from_secs(30), || async {
        let (code, report, _) = check_history(&server.base, &["--since", "2m", "--until", "2s", "--no-output"]);
        (code == 0 && report["executed"].as_u64().unwrap_or(0) >= 20).then_some(report)
    })
    .await;
    assert_eq!(report["violations"], serde_json::json!([]), "{report}");
}
