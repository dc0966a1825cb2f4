//! The records of ticks that were claimed but not run (skipped, missed,
//! abandoned) and of ended runs, and the `running/` entries runs publish.

use std::sync::Arc;

use jiff::Timestamp;

use super::State;
use crate::coord::{Revision, RunningEntry};
use crate::ids::{JobName, RunId};
use crate::job::{Completion, Job};
use crate::run::{RunRecord, RunStatus, Trigger};
use crate::worker::results::new_run_token;
use crate::worker::task;

impl State {
    pub(super) fn not_run(
        &self,
        job: &Job,
        tick: Timestamp,
        status: RunStatus,
        fence: Revision,
        reason: String,
    ) -> RunRecord {
        let mut record = RunRecord::not_run(job, tick, status, &self.deps.info.id, fence, reason);
        record.expire_at = job.expire_at(tick, self.deps.retention);
        record
    }

    /// Records queued catch-up ticks that never started `missed`, under the
    /// ids every worker derives for them, so recording one twice keeps one
    /// record.
    pub(super) async fn record_unstarted(&self, job: &Arc<Job>, ticks: &[Timestamp], fence: Revision, reason: &str) {
        for record in self.unstarted_records(job, ticks, fence, reason) {
            self.deps.metrics.run_ended(RunStatus::Missed);
            self.record_ended(job, record).await;
        }
        if !ticks.is_empty() {
            tracing::warn!(job = %job.name, ticks = ticks.len(), "recorded queued catch-up ticks missed");
        }
    }

    pub(super) fn unstarted_records(
        &self,
        job: &Job,
        ticks: &[Timestamp],
        fence: Revision,
        reason: &str,
    ) -> Vec<RunRecord> {
        ticks
            .iter()
            .map(|tick| {
                let mut record = self.not_run(job, *tick, RunStatus::Missed, fence, reason.to_owned());
                record.run_id = RunId::for_unstarted_catchup(&job.name, *tick);
                record.trigger = Trigger::Catchup;
                record
            })
            .collect()
    }

    /// The record that a tick claimed with `fence` was skipped because
    /// `blocking` (when known) was still running. Its id is derived from the
    /// job and tick, so a later owner re-recording it writes the same record.
    pub(super) fn skip_record(
        &self,
        job: &Job,
        tick: Timestamp,
        fence: Revision,
        blocking: Option<RunId>,
    ) -> RunRecord {
        let reason = match blocking {
            Some(run) => format!("previous run {run} was still running (overlap: forbid)"),
            None => "previous run was still running (overlap: forbid)".to_owned(),
        };
        let mut record = self.not_run(job, tick, RunStatus::Skipped, fence, reason);
        record.run_id = RunId::for_skip(&job.name, tick);
        record
    }

    /// Records a run or tick that ended, and tells the alerts about it.
    pub(super) async fn record_ended(&self, job: &Arc<Job>, record: RunRecord) {
        if let Some(alerts) = &self.deps.alerts {
            alerts.notify(job, &record);
        }
        self.deps.sink.record(record).await;
    }

    /// The entry a new run of `job` publishes. A run of an async job gets a
    /// fresh token here; only its hash is published.
    pub(super) fn running_entry(
        &self,
        job: &Job,
        run_id: RunId,
        tick: Timestamp,
        trigger: Trigger,
        attempt: u32,
    ) -> RunningEntry {
        let token = (job.spec.completion == Completion::Async).then(new_run_token).flatten();
        RunningEntry {
            run_id,
            worker: self.deps.info.id.clone(),
            tick,
            trigger,
            attempt,
            claimed_at: self.now(),
            fence: None,
            parent: None,
            shard: None,
            depth: 0,
            rerun_of: None,
            result_token_sha256: token.as_ref().map(|t| crate::crypto::sha256_hex(t.as_bytes())),
            result_token: token,
        }
    }

    /// Deletes a `running/` entry this worker published but never started,
    /// retrying in the background until the store answers.
    pub(super) fn withdraw_entry(&self, job: JobName, run_id: RunId) {
        task::finish_in_background(self.deps.coord.clone(), job, run_id, Vec::new());
    }
}
