//! The masters' dead-man task (in `sandcron dev` too): follows the jobs with an
//! `alerts.no_success_within_s` rule (a watch on `jobs/`, so the cost is
//! one map in memory), and every few seconds decides (`alert::decide`)
//! for each of them whose next check has come. A check reads the job's
//! last success from the log store and its mark from the coordination
//! store; a due alert is raised by the master whose compare-and-swap of
//! the mark lands, with the reason the job may not be running: no live
//! worker can run it (`placement`), or what its last run did.
//!
//! A job is checked only when it could be due: after a check, not again
//! before the end of the period it is in (the count only moves forward),
//! unless the job is written. So the work per poll is bounded by the jobs
//! that are overdue now, each costing two reads, once a period.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::alert::{AlertHandle, DeadmanDecision, DeadmanFacts, DeadmanMark, NoSuccessFacts, decide};
use crate::coord::{Coordinator, Family, KeyValue, StoreError, WatchEvent, WatchUpdate};
use crate::ids::JobName;
use crate::job::Job;
use crate::logstore::{LogStore, LogStoreError, RunQuery};
use crate::placement::{owner, unplaceable_reason};
use crate::run::RunStatus;

/// How often the due checks run (a period is at least 10 s).
const POLL: Duration = Duration::from_secs(2);

/// How often marks of deleted jobs and removed rules are swept.
const SWEEP: Duration = Duration::from_secs(60);

/// The wait before listing the jobs again after the watch failed.
const RETRY: Duration = Duration::from_secs(2);

/// Errors longer than this are cut in a reason.
const MAX_REASON_ERROR_CHARS: usize = 200;

/// The dead-man task of one master (or of `sandcron dev`).
/// A master's alerting: the alert task, and the dead-man watch that feeds
/// it (started only when channels are configured).
pub(super) struct MasterAlerts {
    stop: CancellationToken,
    watch: Option<tokio::task::JoinHandle<()>>,
    alerts: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl MasterAlerts {
    /// Starts the watch over `alerts` (from [`super::start_alerts`]); it
    /// stops when `stop` is cancelled or [`MasterAlerts::stop`] is called.
    pub(super) fn start(
        coord: &Coordinator,
        logs: &Arc<dyn LogStore>,
        alerts: (Option<AlertHandle>, Option<tokio::task::JoinHandle<anyhow::Result<()>>>),
        stop: CancellationToken,
    ) -> MasterAlerts {
        let (handle, task) = alerts;
        let watch =
            handle.map(|handle| tokio::spawn(DeadmanWatch::new(coord.clone(), logs.clone(), handle).run(stop.clone())));
        MasterAlerts {
            stop,
            watch,
            alerts: task,
        }
    }

    /// Stops the watch, then waits for the alert task, which ends with the
    /// last handle to it, after its last deliveries.
    pub(super) async fn stop(self) -> anyhow::Result<()> {
        use anyhow::Context as _;
        self.stop.cancel();
        if let Some(watch) = self.watch {
            watch.await.context("dead-man alert task panicked")?;
        }
        if let Some(task) = self.alerts {
            task.await.context("alert task panicked")?.context("alerts failed")?;
        }
        Ok(())
    }
}

pub(super) struct DeadmanWatch {
    coord: Coordinator,
    logs: Arc<dyn LogStore>,
    alerts: AlertHandle,
}

/// A job with a dead-man rule, and when it needs looking at next.
struct Tracked {
    job: Arc<Job>,
    /// `None`: at the next poll.
    next_check: Option<Timestamp>,
}

/// Why a check could not decide.
#[derive(Debug, thiserror::Error)]
enum CheckError {
    #[error("coordination store: {0}")]
    Coord(#[from] StoreError),
    #[error("{0}")]
    Logs(#[from] LogStoreError),
}

impl DeadmanWatch {
    pub(super) fn new(coord: Coordinator, logs: Arc<dyn LogStore>, alerts: AlertHandle) -> DeadmanWatch {
        DeadmanWatch { coord, logs, alerts }
    }

    /// Runs until `shutdown` is cancelled.
    pub(super) async fn run(self, shutdown: CancellationToken) {
        let mut watcher = self.coord.watcher(Family::Jobs);
        let mut tracked: HashMap<JobName, Tracked> = HashMap::new();
        let mut synced = false;
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sweep: Option<tokio::time::Instant> = None;
        let mut failing = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                update = watcher.next() => match update {
                    Ok(WatchUpdate::Snapshot(kvs)) => {
                        self.replace(&mut tracked, &kvs);
                        synced = true;
                    }
                    Ok(WatchUpdate::Events(events)) => {
                        for event in &events {
                            self.apply(&mut tracked, event);
                        }
                    }
                    Err(err) => {
                        tracing::warn!(%err, "dead-man alerts: cannot watch the jobs; listing them again");
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(RETRY) => {}
                        }
                    }
                },
                _ = poll.tick(), if synced => {
                    // Said once when checks start failing, and once when they
                    // work again, not at every poll of an outage.
                    let checked = tokio::select! {
                        () = shutdown.cancelled() => return,
                        checked = self.check_due(&mut tracked) => checked,
                    };
                    match (checked, failing) {
                        (Some((job, err)), false) => {
                            tracing::warn!(%job, %err, "dead-man alerts: cannot check a job; trying again every few seconds");
                            failing = true;
                        }
                        (None, true) => {
                            tracing::info!("dead-man alerts: checks work again");
                            failing = false;
                        }
                        _ => {}
                    }
                    if last_sweep.is_none_or(|at| at.elapsed() >= SWEEP) {
                        last_sweep = Some(tokio::time::Instant::now());
                        if let Err(err) = self.sweep(&tracked).await {
                            tracing::debug!(%err, "dead-man alerts: cannot sweep stale marks");
                        }
                    }
                }
            }
        }
    }

    /// The job of a `jobs/` key-value, when it has a dead-man rule.
    fn with_rule(&self, kv: &KeyValue) -> Option<Job> {
        let job = self.coord.decode_job(kv)?.ok()?;
        job.spec.alerts.as_ref()?.no_success_within_s?;
        Some(job)
    }

    /// Takes a full listing of the jobs; jobs whose record did not change
    /// keep their next check.
    fn replace(&self, tracked: &mut HashMap<JobName, Tracked>, kvs: &[KeyValue]) {
        let mut fresh = HashMap::new();
        for job in kvs.iter().filter_map(|kv| self.with_rule(kv)) {
            let next_check = tracked
                .get(&job.name)
                .filter(|known| known.job.revision == job.revision)
                .and_then(|known| known.next_check);
            fresh.insert(
                job.name.clone(),
                Tracked {
                    job: Arc::new(job),
                    next_check,
                },
            );
        }
        *tracked = fresh;
    }

    fn apply(&self, tracked: &mut HashMap<JobName, Tracked>, event: &WatchEvent) {
        match event {
            WatchEvent::Put(kv) => match self.with_rule(kv) {
                // A written job is checked at the next poll: its rule, its
                // pause or its activation may have changed.
                Some(job) => {
                    tracked.insert(
                        job.name.clone(),
                        Tracked {
                            job: Arc::new(job),
                            next_check: None,
                        },
                    );
                }
                None => {
                    if let Some(name) = self
                        .coord
                        .strip(Family::Jobs, &kv.key)
                        .and_then(|rest| JobName::new(rest).ok())
                    {
                        tracked.remove(&name);
                    }
                }
            },
            WatchEvent::Delete { key, .. } => {
                if let Some(name) = self
                    .coord
                    .strip(Family::Jobs, key)
                    .and_then(|rest| JobName::new(rest).ok())
                {
                    tracked.remove(&name);
                }
            }
        }
    }

    /// Checks every job whose time has come; the first check that could
    /// not be made, if any. A failed check stops the round (a store is
    /// likely down: the other jobs would wait for its timeout too); the
    /// jobs not checked stay due for the next poll.
    async fn check_due(&self, tracked: &mut HashMap<JobName, Tracked>) -> Option<(JobName, CheckError)> {
        let now = Timestamp::now();
        for entry in tracked.values_mut() {
            if entry.job.spec.paused || entry.next_check.is_some_and(|at| at > now) {
                continue;
            }
            match self.check(&entry.job, now).await {
                Ok(next_check) => entry.next_check = Some(next_check),
                Err(err) => {
                    entry.next_check = None;
                    return Some((entry.job.name.clone(), err));
                }
            }
        }
        None
    }

    /// Decides for one job, raising its alert if it is due and this master
    /// wins the mark; returns when to check it next.
    async fn check(&self, job: &Arc<Job>, now: Timestamp) -> Result<Timestamp, CheckError> {
        let Some(period_s) = job.spec.alerts.as_ref().and_then(|alerts| alerts.no_success_within_s) else {
            return Ok(Timestamp::MAX);
        };
        let last_success = self.last_success(&job.name).await?;
        let (stored, revision) = self.coord.deadman_mark::<DeadmanMark>(&job.name).await?;
        let decision = decide(&DeadmanFacts {
            now,
            period_s,
            active_since: job.meta.active_since,
            last_success,
            stored,
        });
        let (mark, next_check) = match decision {
            DeadmanDecision::NotDue { next_check } | DeadmanDecision::AlreadyRaised { next_check } => {
                return Ok(next_check);
            }
            DeadmanDecision::Due { mark, next_check } => (mark, next_check),
        };
        if !self.coord.put_deadman_mark(&job.name, &mark, revision).await? {
            // Another master raised it (or moved the mark): look again at
            // the next poll, which finds it raised.
            return Ok(now);
        }
        let reason = self.reason(job, mark.since, now).await;
        tracing::info!(job = %job.name, period_s, periods = mark.periods, %reason, "no successful run within the period");
        self.alerts.no_success(
            job,
            NoSuccessFacts {
                period_s,
                last_success,
                since: mark.since,
                periods: mark.periods,
                reason,
            },
        );
        Ok(next_check)
    }

    /// The end of the job's newest successful run, if the history has one.
    async fn last_success(&self, job: &JobName) -> Result<Option<Timestamp>, LogStoreError> {
        let page = self
            .logs
            .runs(&RunQuery {
                job: Some(job.clone()),
                status: Some(RunStatus::Succeeded),
                limit: 1,
                ..RunQuery::default()
            })
            .await?;
        Ok(page
            .runs
            .first()
            .map(|run| run.ended_at.or(run.started_at).unwrap_or(run.tick)))
    }

    /// Why the job may not be running, in words: no live worker can run
    /// it, its schedule does not fire in time, or what its last run did.
    async fn reason(&self, job: &Job, since: Timestamp, now: Timestamp) -> String {
        let workers = match self.coord.list_workers().await {
            Ok(workers) => workers,
            Err(err) => return format!("the live workers could not be listed ({err})"),
        };
        let Some(owner) = owner(job, &workers) else {
            return format!("no live worker can run it: {}", unplaceable_reason(job, &workers));
        };
        let mut reason = match self.logs.last_runs(std::slice::from_ref(&job.name)).await {
            Ok(last) => match last.get(&job.name) {
                None => format!("worker {} owns it, and it has not run yet", owner.id),
                Some(run) if run.status == RunStatus::Running => format!(
                    "worker {} owns it; its last run {} has been running since {}",
                    owner.id,
                    run.run_id,
                    run.started_at.unwrap_or(run.tick)
                ),
                Some(run) => {
                    let mut text = format!(
                        "worker {} owns it; its last run {} {} at {}",
                        owner.id,
                        run.run_id,
                        run.status,
                        run.ended_at.unwrap_or(run.tick)
                    );
                    if let Some(error) = run.error.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
                        text.push_str(": ");
                        text.push_str(&cut(error, MAX_REASON_ERROR_CHARS));
                    }
                    text
                }
            },
            Err(err) => format!("worker {} owns it (its last run could not be read: {err})", owner.id),
        };
        if let Some(next) = job.schedule.next_after(since)
            && next > now
        {
            reason.push_str(&format!("; its schedule does not fire until {next}"));
        }
        reason
    }

    /// Deletes the marks of jobs that no longer exist or no longer have a
    /// dead-man rule. The watch may lag, so each is confirmed by a fresh
    /// read; the delete is fenced on the mark's revision, so a mark
    /// written meanwhile (for a rule just set) stays.
    async fn sweep(&self, tracked: &HashMap<JobName, Tracked>) -> Result<(), StoreError> {
        for (job, revision) in self.coord.deadman_marks().await? {
            let stale = match JobName::new(&job) {
                Err(_) => true,
                Ok(name) if tracked.contains_key(&name) => false,
                Ok(name) => match self.coord.get_job(&name).await? {
                    None => true,
                    Some((record, _)) => record.spec.alerts.and_then(|a| a.no_success_within_s).is_none(),
                },
            };
            if stale && self.coord.delete_deadman_mark(&job, revision).await? {
                tracing::debug!(%job, "dead-man alerts: removed the mark of a job without the rule");
            }
        }
        Ok(())
    }
}

/// `text` cut to at most `max` characters, with `…` when it was longer.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}
