//! One run, from claim to report: wait for its tick, then for a free slot
//! (or, offered to the other workers meanwhile, end here if one of them
//! takes it), execute (recorded `running` once it first waits), wait for
//! the reported outcome of an async job, record the outcome, remove the
//! `running/` entry (starting its retry or the job's dependents in the
//! same transaction: `followups.rs`), tell the alerts and the worker.
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
use crate::run::{RunRecord, RunStatus, StreamKind, Trigger};
use crate::secret::{Keyring, RunSecrets, mask_text};
use crate::worker::clock::Gate;
use crate::worker::handoff::{Capacity, Slot};

/// Everything a run task needs, handed over by the worker.
pub(super) struct TaskSpec {
    /// For a run claimed ahead of its tick: the instant it starts.
    pub(super) start_at: Option<tokio::time::Instant>,
    /// Opens at `start_at` (`worker/clock.rs`); `None`: the run waits on
    /// its own timer.
    pub(super) gate: Option<Arc<Gate>>,
    pub(super) job: Arc<Job>,
    pub(super) entry: RunningEntry,
    pub(super) fence: Revision,
    pub(super) executor: Option<Arc<dyn Executor>>,
    pub(super) kill: KillSwitch,
    /// Shared by the worker's runs: a run's output holds it as is.
    pub(super) sink: Arc<Sink>,
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

/// Waits until `start_at` (if any), on the tick's gate when it has one;
/// `Some` when a kill came first.
async fn until_tick(
    start_at: Option<tokio::time::Instant>,
    gate: Option<&Gate>,
    kill: &KillSwitch,
) -> Option<StopReason> {
    let start_at = start_at?;
    let tick = async {
        match gate {
            Some(gate) => gate.opened().await,
            None => tokio::time::sleep_until(start_at).await,
        }
    };
    // Biased: a tick that has come is not made to wait for a look at the
    // kill switch (a lock), a thousand times in a burst.
    tokio::select! {
        biased;
        () = tick => None,
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
        gate,
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
    let awaits_report = report.is_some();
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
    let slot = match until_tick(start_at, gate.as_deref(), &kill).await {
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
                let mut output = RunOutput::new(entry.run_id, sink.clone(), request.kind.output_kb() * 1024)
                    .expiring_at(record.expire_at)
                    .masking(masker.clone());
                if !lowered.is_empty() {
                    let note = format!("[sandcron: this worker's caps lowered {}]\n", lowered.join(", "));
                    output.write(StreamKind::Stderr, note.as_bytes()).await;
                }
                // Recorded `running` only if it has to wait (see `noted_if_it_waits`).
                let mut outcome = noted_if_it_waits(executor.execute(&request, &mut output, &kill), || {
                    sink.record(record.clone())
                })
                .await;
                if let (Some(rx), RunStatus::Succeeded) = (report_rx, outcome.status) {
                    drop(slot.take());
                    // Readers learn that the run now waits, and until when.
                    let timeout = jiff::SignedDuration::try_from(job.spec.result_timeout()).unwrap_or_default();
                    record.result_due = Timestamp::now().checked_add(timeout).ok();
                    sink.record(record.clone()).await;
                    outcome = Box::pin(await_report(&job, rx, &kill, &mut output, &mut record)).await;
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
    let ended_at = Timestamp::now();
    record.ended_at = Some(ended_at);
    // A run that went well is in its record; at thousands of runs a second
    // an INFO line for each would be most of the log.
    if record.status == RunStatus::Succeeded {
        tracing::debug!(status = %record.status, exit_code = ?record.exit_code, "run ended");
    } else {
        tracing::info!(status = %record.status, exit_code = ?record.exit_code, "run ended");
    }
    metrics.run_ended(record.status);
    if record.status == RunStatus::Succeeded {
        metrics.job_succeeded(&job.name, ended_at);
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
    let follow_ups = super::followups::follow_ups(&job, &entry, status, ended_at);
    if let Err(err) = coord.finish_run_starting(&job.name, entry.run_id, &follow_ups).await {
        // Left in place, the entry would hold back an `overlap: forbid` job
        // (every tick skipped) until this worker's lease ends.
        tracing::warn!(%err, follow_ups = follow_ups.len(), "cannot remove the running entry; retrying");
        finish_in_background(coord.clone(), job.name.clone(), entry.run_id, follow_ups);
    }
    if awaits_report {
        // A taken report is deleted only now: until the run's entry is
        // gone, a second report finds the first and is refused (409), after
        // it finds no run (404); none is ever accepted and then ignored.
        // (One that came too late for a run that timed out goes too.)
        if let Err(err) = Box::pin(coord.delete_result(&job.name, entry.run_id)).await {
            // It is on a lease and goes by itself.
            tracing::debug!(%err, "cannot delete the taken result");
        }
    }
    let _worker_gone = done.send(TaskDone::of(&job, &entry)).await;
}

/// Runs `run`, doing `note` first if the run has to wait; `note` is made
/// only then (a record's clone costs as much as its send).
///
/// A run's `running` record is `note`: a run that ends in its first poll
/// (a no-op, a guest that returns at once) is recorded once, ended, instead
/// of twice, which is a record less to build and send per run, and runs of
/// a burst start sooner; one that goes on is recorded `running` when it
/// first waits (a guest is made to wait at every epoch tick, a process as
/// soon as it is spawned), so readers see it while it works. The `running/`
/// entry, which the cluster goes by, is there from the claim either way.
async fn noted_if_it_waits<T, N: Future<Output = ()>>(run: impl Future<Output = T>, note: impl FnOnce() -> N) -> T {
    let mut run = std::pin::pin!(run);
    match std::future::poll_fn(|cx| std::task::Poll::Ready(run.as_mut().poll(cx))).await {
        std::task::Poll::Ready(outcome) => outcome,
        std::task::Poll::Pending => {
            note().await;
            run.await
        }
    }
}

/// An async run whose call ended well: waits for the report, a kill, or the
/// job's result timeout, and turns it into the run's outcome. A report's
/// output joins the run's output; its result is the run's result.
async fn await_report(
    job: &Job,
    rx: oneshot::Receiver<RunReport>,
    kill: &KillSwitch,
    output: &mut RunOutput,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_run_that_ends_in_its_first_poll_is_not_noted_as_running() {
        let noted = std::sync::atomic::AtomicBool::new(false);
        let outcome = noted_if_it_waits(async { 7 }, || async { noted.store(true, Ordering::Relaxed) }).await;
        assert_eq!(outcome, 7);
        assert!(!noted.load(Ordering::Relaxed), "a run that never waited was noted");
    }

    #[tokio::test]
    async fn a_run_that_waits_is_noted_before_it_goes_on() {
        let noted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (go, wait) = oneshot::channel::<()>();
        let seen = noted.clone();
        let run = async move {
            wait.await.expect("go");
            // The note was made while the run waited, before it went on.
            seen.load(Ordering::Relaxed)
        };
        let note = || async {
            noted.store(true, Ordering::Relaxed);
            go.send(()).expect("the run waits");
        };
        assert!(
            noted_if_it_waits(run, note).await,
            "the run went on before it was noted"
        );
    }
}
