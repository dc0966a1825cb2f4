//! One run, from claim to report: wait for a free slot (or, offered to the
//! other workers meanwhile, end here if one of them takes it), record `running`,
//! execute, wait for the reported outcome of an async job, record the
//! outcome, remove the `running/` entry (starting the job's dependents in
//! the same transaction), tell the alerts and the worker.
//!
//! No retry lives only in a worker's memory: a retry is a trigger request
//! written in the transaction that removes the failed run's entry (for a
//! `lost` run, by the owner that records it), so a restart or an ownership
//! change cannot drop it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::alert::AlertHandle;
use crate::coord::{Coordinator, Revision, RunReport, RunningEntry, TriggerRequest};
use crate::exec::{ExecRequest, Executor, KillSwitch, ReportTo, RunOutcome, RunOutput, StopReason};
use crate::ids::{JobName, RunId};
use crate::job::{Job, RunCaps};
use crate::logstore::Sink;
use crate::metrics::Metrics;
use crate::run::{ParentRun, RunRecord, RunStatus, StreamKind, Trigger};
use crate::schedule;
use crate::secret::{Keyring, RunSecrets, mask_text};
use crate::worker::handoff::{Capacity, Slot};

/// How many dependency links a chain of runs may have. Cycles are refused
/// when jobs are saved; this stops one that slipped through (two masters
/// saving the two halves of a cycle at the same moment) from running forever.
pub(super) const MAX_DEPENDENCY_DEPTH: u32 = 16;

/// Everything a run task needs, handed over by the worker.
pub(super) struct TaskSpec {
    /// For a run claimed ahead of its tick: the instant it starts.
    pub(super) start_at: Option<tokio::time::Instant>,
    pub(super) job: Arc<Job>,
    pub(super) entry: RunningEntry,
    pub(super) fence: Revision,
    pub(super) executor: Option<Arc<dyn Executor>>,
    pub(super) kill: KillSwitch,
    pub(super) sink: Sink,
    pub(super) coord: Coordinator,
    pub(super) metrics: Arc<Metrics>,
    /// Where the run gets its slot (and whether it may be offered to other
    /// workers meanwhile: `worker/handoff.rs`).
    pub(super) capacity: Capacity,
    /// For a run taken from a worker that had no free slot: that worker.
    pub(super) handed_off_from: Option<String>,
    pub(super) done: mpsc::Sender<TaskDone>,
    pub(super) shell_allowed: bool,
    pub(super) retention: std::time::Duration,
    pub(super) alerts: Option<AlertHandle>,
    /// For an async job: where the run reports, and where its report arrives.
    pub(super) report: Option<(ReportTo, oneshot::Receiver<RunReport>)>,
    /// Opens the job's secrets; `None`: this worker has no key file.
    pub(super) keyring: Option<Arc<Keyring>>,
    /// The most this worker lets a run have.
    pub(super) caps: RunCaps,
}

/// What the worker learns when a run ends.
#[derive(Debug)]
pub(super) struct TaskDone {
    pub(super) job: JobName,
    pub(super) run_id: RunId,
    pub(super) trigger: Trigger,
}

impl TaskDone {
    fn of(job: &Job, entry: &RunningEntry) -> TaskDone {
        TaskDone {
            job: job.name.clone(),
            run_id: entry.run_id,
            trigger: entry.trigger,
        }
    }
}

/// Waits until `start_at` (if any); `Some` when a kill came first.
async fn until_tick(start_at: Option<tokio::time::Instant>, kill: &KillSwitch) -> Option<StopReason> {
    let start_at = start_at?;
    tokio::select! {
        () = tokio::time::sleep_until(start_at) => None,
        reason = kill.pulled() => Some(reason),
    }
}

/// The run task. Its future is what the worker spawns for every run, and
/// thousands may wait at once for a burst's tick: it is kept small (the
/// spec boxed, rare paths boxed where they are awaited), since each spawn
/// copies it and each waiting run holds it (`worker::tests`, `a_run_task_is_small`).
pub(super) fn carry_out(spec: Box<TaskSpec>) -> impl Future<Output = ()> + Send {
    let span = tracing::info_span!("run", job = %spec.job.name, run = %spec.entry.run_id);
    execute(spec).instrument(span)
}

async fn execute(spec: Box<TaskSpec>) {
    let TaskSpec {
        start_at,
        job,
        entry,
        fence,
        executor,
        kill,
        sink,
        coord,
        metrics,
        capacity,
        handed_off_from,
        done,
        shell_allowed,
        retention,
        alerts,
        report,
        keyring,
        caps,
    } = *spec;
    let mut record = RunRecord {
        trigger: entry.trigger,
        attempt: entry.attempt,
        worker: entry.worker.clone(),
        fence,
        expire_at: job.expire_at(entry.tick, retention),
        parent: entry.parent.clone(),
        shard: entry.shard,
        rerun_of: entry.rerun_of,
        handed_off_from,
        ..RunRecord::for_job(&job, entry.run_id, entry.tick, RunStatus::Running)
    };

    // Wait for the tick, then for a free slot; a kill while waiting ends
    // the run before it starts.
    let slot = match until_tick(start_at, &kill).await {
        Some(reason) => Slot::Stopped(reason),
        None => {
            metrics.runs_waiting_for_capacity.fetch_add(1, Ordering::Relaxed);
            let slot = capacity.wait(&kill).await;
            metrics.runs_waiting_for_capacity.fetch_sub(1, Ordering::Relaxed);
            slot
        }
    };
    let permit = match slot {
        Slot::Free(permit) => Some(permit),
        Slot::Stopped(reason) => {
            let outcome = RunOutcome::stopped(reason);
            record.error = outcome.error.map(|e| format!("{e} before it started"));
            record.status = outcome.status;
            None
        }
        Slot::Elsewhere => {
            // Taken by a worker with a free slot: its records and its
            // `running/` entry are that worker's now.
            let _worker_gone = done.send(TaskDone::of(&job, &entry)).await;
            return;
        }
    };

    if let Some(permit) = permit {
        // Held while the run works; an async run waiting for its report
        // gives its slot back (waiting costs nothing).
        let mut slot = Some(permit);
        let started = Timestamp::now();
        record.started_at = Some(started);
        if entry.trigger == Trigger::Schedule {
            metrics.observe_lateness(started.duration_since(entry.tick).as_secs_f64());
        }
        sink.record(record.clone()).await;
        // Warns if the run outlives the job's expected duration; stops with it.
        let overrun = alerts.as_ref().and_then(|alerts| alerts.overrun_timer(&job, &record));
        metrics.runs_running.fetch_add(1, Ordering::Relaxed);
        let tokenless = job.spec.completion == crate::job::Completion::Async && report.is_none();
        let secrets = match crate::worker::shell_permitted(&job, shell_allowed) {
            Ok(()) => super::secrets::open(&coord, keyring.as_deref(), &job).await,
            Err(reason) => Err(reason),
        };
        record.secrets = job
            .spec
            .secret_references()
            .into_iter()
            .map(|(_, name)| name.to_string())
            .collect();
        let masker = secrets.as_ref().map(RunSecrets::masker).unwrap_or_default();
        let outcome = match (executor, secrets) {
            (_, Err(reason)) => RunOutcome::new(RunStatus::Failed).with_error(reason),
            (Some(_), Ok(_)) if tokenless => RunOutcome::new(RunStatus::Failed).with_error(
                "the run's result token could not be made (the OS gave no random bytes); the run was not started",
            ),
            (None, Ok(_)) => RunOutcome::new(RunStatus::Failed)
                .with_error(format!("this worker cannot run {} jobs", job.spec.kind.name())),
            (Some(executor), Ok(secrets)) => {
                let (report_to, report_rx) = match report {
                    Some((to, rx)) => (Some(to), Some(rx)),
                    None => (None, None),
                };
                let (kind, lowered) = job.spec.kind.clamped(&caps);
                let request = ExecRequest {
                    job: job.name.clone(),
                    run_id: entry.run_id,
                    tick: entry.tick,
                    trigger: entry.trigger,
                    attempt: entry.attempt,
                    fence,
                    kind,
                    parent: entry.parent.clone(),
                    shard: entry.shard,
                    report_to,
                    secrets,
                };
                let mut output = RunOutput::new(entry.run_id, Arc::new(sink.clone()), request.kind.output_kb() * 1024)
                    .expiring_at(record.expire_at)
                    .masking(masker.clone());
                if !lowered.is_empty() {
                    let note = format!("[sandcron: this worker's caps lowered {}]\n", lowered.join(", "));
                    output.write(StreamKind::Stderr, note.as_bytes()).await;
                }
                let mut outcome = executor.execute(&request, &mut output, &kill).await;
                if let (Some(rx), RunStatus::Succeeded) = (report_rx, outcome.status) {
                    drop(slot.take());
                    // Readers learn that the run now waits, and until when.
                    let timeout = jiff::SignedDuration::try_from(job.spec.result_timeout()).unwrap_or_default();
                    record.result_due = Timestamp::now().checked_add(timeout).ok();
                    sink.record(record.clone()).await;
                    outcome = Box::pin(await_report(
                        &job,
                        entry.run_id,
                        rx,
                        &kill,
                        &mut output,
                        &coord,
                        &mut record,
                    ))
                    .await;
                    record.result_due = None;
                }
                record.output_bytes = output.bytes_written();
                record.truncated = output.is_truncated();
                if record.result.is_none() {
                    record.result = output.result().cloned();
                }
                match (outcome.error.clone(), output.result_error()) {
                    (None, Some(problem)) => RunOutcome {
                        error: Some(problem.to_owned()),
                        ..outcome
                    },
                    _ => outcome,
                }
            }
        };
        metrics.runs_running.fetch_sub(1, Ordering::Relaxed);
        drop((slot, overrun));
        record.status = outcome.status;
        record.exit_code = outcome.exit_code;
        // Errors and the ledger can quote what a guest sent: mask them too.
        record.error = outcome.error.map(|error| mask_text(&masker, &error));
        record.fuel_used = outcome.fuel_used;
        record.peak_memory = outcome.peak_memory;
        record.module_wait_ms = outcome.module_wait.map(|wait| wait.as_millis() as u64);
        record.egress = outcome
            .egress
            .map(|ledger| ledger.masked(|text| mask_text(&masker, text)));
    }
    record.ended_at = Some(Timestamp::now());
    // A run that went well is in its record; at thousands of runs a second
    // an INFO line for each would be most of the log.
    if record.status == RunStatus::Succeeded {
        tracing::debug!(status = %record.status, exit_code = ?record.exit_code, "run ended");
    } else {
        tracing::info!(status = %record.status, exit_code = ?record.exit_code, "run ended");
    }
    metrics.run_ended(record.status);
    if record.status == RunStatus::Succeeded {
        metrics.job_succeeded(&job.name, record.ended_at.unwrap_or_else(Timestamp::now));
    }
    if let Some(ledger) = &record.egress {
        metrics.egress_recorded(ledger);
    }
    let status = record.status;
    if let Some(alerts) = &alerts {
        alerts.notify(&job, &record);
    }
    sink.record(record).await;
    // The running entry goes only once the final record is durable (in the
    // store or the spool): a worker killed before that leaves the entry,
    // and the run is then recorded `lost` instead of staying `running`.
    sink.flush().await;
    // Its retry and dependents are stored with the entry's removal, so they
    // start exactly when the run is seen to end — even if this worker does
    // not live to start them.
    let follow_ups = follow_ups(&job, &entry, status, Timestamp::now());
    if let Err(err) = coord.finish_run_starting(&job.name, entry.run_id, &follow_ups).await {
        // Left in place, the entry would hold back an `overlap: forbid` job
        // (every tick skipped) until this worker's lease ends.
        tracing::warn!(%err, follow_ups = follow_ups.len(), "cannot remove the running entry; retrying");
        finish_in_background(coord.clone(), job.name.clone(), entry.run_id, follow_ups);
    }
    let _worker_gone = done.send(TaskDone::of(&job, &entry)).await;
}

/// An async run whose call ended well: waits for the report, a kill, or the
/// job's result timeout, and turns it into the run's outcome. A report's
/// output joins the run's output; its result is the run's result.
async fn await_report(
    job: &Job,
    run_id: RunId,
    rx: oneshot::Receiver<RunReport>,
    kill: &KillSwitch,
    output: &mut RunOutput,
    coord: &Coordinator,
    record: &mut RunRecord,
) -> RunOutcome {
    let timeout = job.spec.result_timeout();
    tracing::debug!(?timeout, "waiting for the run's reported result");
    tokio::select! {
        report = rx => match report {
            Ok(report) => {
                tracing::info!(status = %report.status, "result reported");
                if let Some(text) = &report.output {
                    output.write(StreamKind::Stdout, text.as_bytes()).await;
                    output.finish().await;
                }
                if report.result.is_some() {
                    record.result = report.result.clone();
                }
                if let Err(err) = coord.delete_result(&job.name, run_id).await {
                    // It is on a lease and goes by itself.
                    tracing::debug!(%err, "cannot delete the taken result");
                }
                RunOutcome {
                    status: report.status,
                    exit_code: report.exit_code,
                    error: report.error,
                    ..RunOutcome::new(report.status)
                }
            }
            Err(_) => RunOutcome::new(RunStatus::Failed)
                .with_error("the worker stopped waiting for the reported result"),
        },
        reason = kill.pulled() => {
            let mut outcome = RunOutcome::stopped(reason);
            outcome.error = outcome.error.map(|e| format!("{e} while waiting for its reported result"));
            outcome
        }
        () = tokio::time::sleep(timeout) => RunOutcome::new(RunStatus::TimedOut).with_error(format!(
            "no result was reported within {} s (completion: async)",
            timeout.as_secs()
        )),
    }
}

/// Removes a run's `running/` entry (storing its follow-ups — retry or
/// dependents — in the same transaction), retrying in the background until
/// the store answers. The transaction only applies while the entry exists,
/// so a retry after a lost answer cannot store the follow-ups twice.
pub(super) fn finish_in_background(
    coord: Coordinator,
    job: JobName,
    run_id: RunId,
    follow_ups: Vec<(JobName, TriggerRequest)>,
) {
    tokio::spawn(async move {
        let mut delay = std::time::Duration::from_millis(200);
        loop {
            match coord.finish_run_starting(&job, run_id, &follow_ups).await {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(%job, run = %run_id, %err, "cannot remove a running entry; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(5));
                }
            }
        }
    });
}

/// The runs a run that ended with `status` at `now` starts, as trigger
/// requests: its retry (after the job's backoff), or else its dependents.
pub(super) fn follow_ups(
    job: &Job,
    entry: &RunningEntry,
    status: RunStatus,
    now: Timestamp,
) -> Vec<(JobName, TriggerRequest)> {
    match retry_of(job, entry, status, now) {
        Some(retry) => vec![(job.name.clone(), retry)],
        None => dependents_of(job, entry, status),
    }
}

/// The retry of a run that ended with `status` at `now`, if the job's retry
/// policy asks for one: the same tick, the next attempt, not before the
/// backoff has passed; a shard is retried on the worker it ran on.
fn retry_of(job: &Job, entry: &RunningEntry, status: RunStatus, now: Timestamp) -> Option<TriggerRequest> {
    // Runs someone asked for by hand (run now, re-run) are not retried:
    // whoever asked sees how it ended and can ask again.
    if !status.is_retryable() || matches!(entry.trigger, Trigger::Manual | Trigger::Rerun) {
        return None;
    }
    let delay = schedule::retry_delay(&job.spec.retry, entry.attempt)?;
    let delay = jiff::SignedDuration::try_from(delay).unwrap_or(jiff::SignedDuration::ZERO);
    tracing::info!(attempt = entry.attempt + 1, ?delay, "retry scheduled");
    Some(TriggerRequest {
        requested_at: crate::run::whole_millisecond(now),
        requested_by: format!("retry of run {}", entry.run_id),
        trigger: Trigger::Retry,
        tick: Some(entry.tick),
        parent: entry.parent.clone(),
        depth: entry.depth,
        shard: entry.shard,
        target_worker: entry.shard.map(|_| entry.worker.clone()),
        attempt: entry.attempt + 1,
        not_before: Some(crate::run::whole_millisecond(now.saturating_add(delay).unwrap_or(now))),
        rerun_of: None,
    })
}

/// The jobs a run that ended with `status`, and is not retried, starts:
/// `on_success` after a success; `on_failure` after a failure.
fn dependents_of(job: &Job, entry: &RunningEntry, status: RunStatus) -> Vec<(JobName, TriggerRequest)> {
    let targets = if status == RunStatus::Succeeded {
        &job.spec.on_success
    } else if status.is_failure() {
        &job.spec.on_failure
    } else {
        return Vec::new();
    };
    if targets.is_empty() {
        return Vec::new();
    }
    if entry.depth >= MAX_DEPENDENCY_DEPTH {
        tracing::warn!(
            depth = entry.depth,
            "a chain of {MAX_DEPENDENCY_DEPTH} dependent runs ends here; its dependents are not started"
        );
        return Vec::new();
    }
    tracing::info!(dependents = ?targets, "starting dependent jobs");
    targets
        .iter()
        .map(|target| {
            let request = TriggerRequest {
                requested_at: crate::run::whole_millisecond(Timestamp::now()),
                requested_by: format!("job {}", job.name),
                trigger: Trigger::Dependency,
                tick: None,
                parent: Some(ParentRun {
                    job: job.name.clone(),
                    run_id: entry.run_id,
                    status,
                }),
                depth: entry.depth + 1,
                shard: None,
                target_worker: None,
                attempt: 1,
                not_before: None,
                rerun_of: None,
            };
            (target.clone(), request)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::job::{JobKind, JobSpec, RetryPolicy, ShellJob};

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn job(max_retries: u32) -> Job {
        let now = ts("2026-01-01T00:00:00Z");
        let kind = JobKind::Shell(ShellJob {
            command: "false".into(),
            env: BTreeMap::new(),
            timeout_s: 1,
            output_kb: 1,
        });
        let spec = JobSpec {
            retry: RetryPolicy {
                max: max_retries,
                backoff_s: 10,
                max_backoff_s: 3600,
            },
            on_failure: vec![JobName::new("page-someone").unwrap()].into(),
            ..JobSpec::new("@daily", kind)
        };
        Job::for_test("flaky", spec, now)
    }

    fn entry(trigger: Trigger, attempt: u32) -> RunningEntry {
        RunningEntry {
            tick: ts("2026-01-02T00:00:00Z"),
            attempt,
            claimed_at: ts("2026-01-02T00:00:00Z"),
            fence: Some(7),
            ..crate::testkit::sample_entry("w1", trigger)
        }
    }

    #[test]
    fn a_failure_with_retries_left_stores_its_retry_not_its_dependents() {
        let now = ts("2026-01-02T00:00:01Z");
        let first = entry(Trigger::Schedule, 1);
        let follow = follow_ups(&job(2), &first, RunStatus::Failed, now);
        assert_eq!(follow.len(), 1, "{follow:?}");
        let (target, retry) = &follow[0];
        assert_eq!(target.as_str(), "flaky");
        assert_eq!(retry.trigger, Trigger::Retry);
        assert_eq!((retry.tick, retry.attempt), (Some(first.tick), 2));
        assert_eq!(retry.not_before, Some(ts("2026-01-02T00:00:11Z")), "after the backoff");
        assert_eq!(
            retry.target_worker, None,
            "the job's owner takes it, whoever that is then"
        );
        // The second retry waits twice as long.
        let second = follow_ups(&job(2), &entry(Trigger::Retry, 2), RunStatus::Lost, now);
        assert_eq!(second[0].1.not_before, Some(ts("2026-01-02T00:00:21Z")));
    }

    #[test]
    fn the_last_attempt_and_manual_runs_start_dependents_instead() {
        let now = ts("2026-01-02T00:00:01Z");
        for (entry, max) in [
            (entry(Trigger::Retry, 3), 2),
            (entry(Trigger::Manual, 1), 2),
            (entry(Trigger::Rerun, 1), 2),
            (entry(Trigger::Schedule, 1), 0),
        ] {
            let follow = follow_ups(&job(max), &entry, RunStatus::Failed, now);
            let targets: Vec<&str> = follow.iter().map(|(job, _)| job.as_str()).collect();
            assert_eq!(
                targets,
                vec!["page-someone"],
                "{:?} attempt {}",
                entry.trigger,
                entry.attempt
            );
            assert_eq!(follow[0].1.trigger, Trigger::Dependency);
        }
        // A success is never retried.
        assert!(follow_ups(&job(2), &entry(Trigger::Schedule, 1), RunStatus::Succeeded, now).is_empty());
    }

    #[test]
    fn a_shard_is_retried_on_the_worker_it_ran_on() {
        let mut shard = entry(Trigger::Schedule, 1);
        shard.shard = Some(crate::run::Shard {
            index: 1,
            count: 3,
            group: RunId::generate(),
        });
        let follow = follow_ups(&job(1), &shard, RunStatus::TimedOut, ts("2026-01-02T00:00:01Z"));
        assert_eq!(follow[0].1.shard, shard.shard);
        assert_eq!(follow[0].1.target_worker.as_deref(), Some("w1"));
    }
}
