//! `sandcron rerun RUN_ID [--follow]`: asks the server to run a run's job
//! again for that run's tick, prints what the server said it did, and with
//! `--follow` the new run's output until it ends.

use std::io::Write;

use serde_json::Value;

use super::client::Client;
use super::{follow_to_its_end, text};

/// Re-runs `run_id`; with `follow`, fails unless the new run succeeded.
pub(super) async fn run(client: &Client, run_id: &str, follow: bool, mut out: impl Write) -> anyhow::Result<()> {
    let answer = client.post(&format!("/runs/{run_id}/rerun")).await?;
    writeln!(out, "{}", describe(&answer))?;
    if let Some(note) = answer["note"].as_str() {
        writeln!(out, "note: {note}")?;
    }
    let Some(new_run) = answer["run_id"].as_str().filter(|_| follow) else {
        return Ok(());
    };
    // The output goes to stdout too, and must come after the lines above.
    out.flush()?;
    drop(out);
    follow_to_its_end(client, new_run).await
}

/// What the server said it did, in one line: the new run (or, for a whole
/// broadcast tick, the runs), the run re-run and how it ended, the tick,
/// and the worker a shard must run on.
fn describe(answer: &Value) -> String {
    let job = text(&answer["job"]);
    let what = match answer["run_id"].as_str() {
        Some(run_id) => format!("run {run_id} of {job} requested"),
        None => format!("runs of {job} requested (one per eligible worker)"),
    };
    let worker = answer["worker"]
        .as_str()
        .map(|worker| format!(", on worker {worker}"))
        .unwrap_or_default();
    format!(
        "{what}: a re-run of run {} ({}) for tick {}{worker}",
        text(&answer["rerun_of"]),
        text(&answer["rerun_of_status"]),
        text(&answer["tick"]),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_answer_reads_as_one_line() {
        let shard = serde_json::json!({
            "job": "fan", "run_id": "01JR0000000000000000000002", "rerun_of": "01JR0000000000000000000001",
            "rerun_of_status": "failed", "tick": "2026-01-02T03:00:00Z", "trigger": "rerun", "worker": "w-2",
        });
        assert_eq!(
            super::describe(&shard),
            "run 01JR0000000000000000000002 of fan requested: a re-run of run 01JR0000000000000000000001 \
             (failed) for tick 2026-01-02T03:00:00Z, on worker w-2"
        );
        let whole_tick = serde_json::json!({
            "job": "fan", "rerun_of": "01JR0000000000000000000001", "rerun_of_status": "missed",
            "tick": "2026-01-02T03:00:00Z", "trigger": "rerun",
        });
        assert_eq!(
            super::describe(&whole_tick),
            "runs of fan requested (one per eligible worker): a re-run of run 01JR0000000000000000000001 \
             (missed) for tick 2026-01-02T03:00:00Z"
        );
    }
}
