//! One run, from claim to report: wait for a free slot, record `running`,
//! execute, record the outcome, remove the `running/` entry, tell the worker.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use jiff::Timestamp;
use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument;

use crate::coord::{Coordinator, Revision, RunningEntry};
use crate::exec::{ExecRequest, Executor, KillSwitch, RunOutcome, RunOutput};
use crate::ids::{JobName, RunId};
use crate::job::{Job, JobKind};
use crate::logstore::Sink;
use crate::metrics::Metrics;
use crate::run::{RunRecord, RunStatus, Trigger};

/// Everything a run task needs, handed over by the worker.
pub(super) struct RunSpec {
    pub(super) job: Arc<Job>,
    pub(super) entry: RunningEntry,
    pub(super) fence: Revision,
    pub(super) executor: Option<Arc<dyn Executor>>,
    pub(super) kill: KillSwitch,
    pub(super) sink: Sink,
    pub(super) coord: Coordinator,
    pub(super) metrics: Arc<Metrics>,
    pub(super) semaphore: Arc<Semaphore>,
    pub(super) done: mpsc::Sender<RunFinished>,
    pub(super) shell_allowed: bool,
    pub(super) retention: std::time::Duration,
}

/// What the worker learns when a run ends.
#[derive(Debug)]
pub(super) struct RunFinished {
    pub(super) job: JobName,
    pub(super) run_id: RunId,
    pub(super) tick: Timestamp,
    pub(super) trigger: Trigger,
    pub(super) attempt: u32,
    pub(super) status: RunStatus,
}

pub(super) async fn run(spec: RunSpec) {
    let span = tracing::info_span!("run", job = %spec.job.name, run = %spec.entry.run_id);
    execute(spec).instrument(span).await;
}

async fn execute(spec: RunSpec) {
    let RunSpec {
        job,
        entry,
        fence,
        executor,
        kill,
        sink,
        coord,
        metrics,
        semaphore,
        done,
        shell_allowed,
        retention,
    } = spec;
    let mut record = RunRecord {
        run_id: entry.run_id,
        job: job.name.clone(),
        tick: entry.tick,
        trigger: entry.trigger,
        attempt: entry.attempt,
        worker: entry.worker.clone(),
        fence,
        kind: job.spec.kind.name().to_owned(),
        module: match &job.spec.kind {
            JobKind::Wasm(wasm) => Some(wasm.module.clone()),
            JobKind::Shell(_) => None,
        },
        status: RunStatus::Running,
        exit_code: None,
        error: None,
        started_at: None,
        ended_at: None,
        fuel_used: None,
        peak_memory: None,
        output_bytes: 0,
        truncated: false,
        missed_count: None,
        missed_until: None,
        result: None,
        expire_at: job.expire_at(entry.tick, retention),
    };

    // Wait for a free slot; a kill while waiting ends the run before it starts.
    metrics.runs_waiting_for_capacity.fetch_add(1, Ordering::Relaxed);
    let permit = tokio::select! {
        permit = semaphore.acquire_owned() => permit.ok(),
        reason = kill.pulled() => {
            let outcome = RunOutcome::stopped(reason);
            record.error = outcome.error.map(|e| format!("{e} before it started"));
            record.status = outcome.status;
            None
        }
    };
    metrics.runs_waiting_for_capacity.fetch_sub(1, Ordering::Relaxed);

    if let Some(_permit) = permit {
        let started = Timestamp::now();
        record.started_at = Some(started);
        if entry.trigger == Trigger::Schedule {
            metrics.observe_lateness(started.duration_since(entry.tick).as_secs_f64());
        }
        sink.record(record.clone()).await;
        metrics.runs_running.fetch_add(1, Ordering::Relaxed);
        let outcome = match (executor, crate::worker::shell_permitted(&job, shell_allowed)) {
            (_, Err(reason)) => RunOutcome::new(RunStatus::Failed).with_error(reason),
            (None, Ok(())) => RunOutcome::new(RunStatus::Failed)
                .with_error(format!("this worker cannot run {} jobs", job.spec.kind.name())),
            (Some(executor), Ok(())) => {
                let request = ExecRequest {
                    job: job.name.clone(),
                    run_id: entry.run_id,
                    tick: entry.tick,
                    trigger: entry.trigger,
                    attempt: entry.attempt,
                    fence,
                    kind: job.spec.kind.clone(),
                };
                let mut output = RunOutput::new(entry.run_id, sink.clone(), job.spec.kind.output_kb() * 1024)
                    .expiring_at(record.expire_at);
                let outcome = executor.execute(&request, &mut output, &kill).await;
                record.output_bytes = output.bytes_written();
                record.truncated = output.is_truncated();
                record.result = output.result().cloned();
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
        record.status = outcome.status;
        record.exit_code = outcome.exit_code;
        record.error = outcome.error;
        record.fuel_used = outcome.fuel_used;
        record.peak_memory = outcome.peak_memory;
    }
    record.ended_at = Some(Timestamp::now());
    tracing::info!(status = %record.status, exit_code = ?record.exit_code, "run ended");
    metrics.run_ended(record.status);
    let status = record.status;
    sink.record(record).await;
    // The running entry goes only once the final record is durable (in the
    // store or the spool): a worker killed before that leaves the entry,
    // and the run is then recorded `lost` instead of staying `running`.
    sink.flush().await;
    if let Err(err) = coord.finish_run(&job.name, entry.run_id).await {
        // The entry is on the worker's lease, so it goes with the lease at worst.
        tracing::warn!(%err, "cannot remove the running entry");
    }
    let _worker_gone = done
        .send(RunFinished {
            job: job.name.clone(),
            run_id: entry.run_id,
            tick: entry.tick,
            trigger: entry.trigger,
            attempt: entry.attempt,
            status,
        })
        .await;
}
