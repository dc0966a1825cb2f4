//! Least-loaded hand-off, the scheduling loop's side: the open offers of
//! other workers (the `handoff/` watch), taking the ones this worker can run
//! while it has free slots, starting the runs it took, telling a run task of
//! its own that its run was taken, and recording a run whose offer went with
//! this worker's lease. The run task's side and the protocol are in
//! `worker/handoff.rs`.

use std::sync::Arc;

use super::State;
use crate::coord::{KeyValue, RunningEntry, WatchEvent, WatchUpdate};
use crate::ids::JobName;
use crate::job::Job;
use crate::placement;
use crate::run::RunStatus;
use crate::worker::followups;
use crate::worker::handoff::{HandoffEvent, TakeAttempt, Taken};

impl State {
    pub(super) async fn on_offers(&mut self, update: WatchUpdate) {
        match update {
            WatchUpdate::Snapshot(kvs) => {
                self.open_offers.clear();
                for kv in &kvs {
                    self.note_offer(kv);
                }
            }
            WatchUpdate::Events(events) => {
                for event in events {
                    match event {
                        WatchEvent::Put(kv) => self.note_offer(&kv),
                        WatchEvent::Delete { key, .. } => {
                            self.open_offers.remove(&key);
                        }
                    }
                }
            }
        }
        self.take_offers();
    }

    /// Keeps another worker's offer (this worker's own are not for it).
    fn note_offer(&mut self, kv: &KeyValue) {
        if let Some((job, entry)) = self.deps.coord.decode_offer(kv)
            && entry.worker != self.deps.info.id
        {
            self.open_offers.insert(kv.key.clone(), (job, entry));
        }
    }

    /// Tries to take open offers of runs this worker can run, oldest first,
    /// as many as it has free slots not already promised to a try. Each try
    /// waits a delay that shrinks with the free slots
    /// (`placement::handoff_delay`), then reserves a slot and takes the run
    /// by transaction. Called when an offer appears, when a slot frees and
    /// every couple of seconds (an offer nobody had room for stays open).
    pub(super) fn take_offers(&mut self) {
        if self.open_offers.is_empty() || self.stopping.is_cancelled() {
            return;
        }
        let free = self.semaphore.available_permits();
        let spare = free.saturating_sub(self.taking.len());
        let Some(delay) = placement::handoff_delay(free).filter(|_| spare > 0) else {
            return;
        };
        let mut candidates: Vec<(String, Arc<Job>, RunningEntry)> = self
            .open_offers
            .iter()
            .filter(|(key, _)| !self.taking.contains(*key))
            .filter_map(|(key, (name, entry))| {
                let job = &self.jobs.get(name)?.job;
                self.can_take(job).then(|| (key.clone(), job.clone(), entry.clone()))
            })
            .collect();
        candidates.sort_by_key(|(_, _, entry)| entry.claimed_at);
        for (key, job, offered) in candidates.into_iter().take(spare) {
            self.taking.insert(key.clone());
            let attempt = TakeAttempt {
                coord: self.deps.coord.clone(),
                key,
                job,
                offered,
                me: self.deps.info.id.clone(),
                lease: self.lease,
                semaphore: self.semaphore.clone(),
                delay,
                stopping: self.stopping.clone(),
            };
            let events = self.handoff_tx.clone();
            tokio::spawn(async move {
                let _loop_gone = events.send(attempt.run().await).await;
            });
        }
    }

    /// Whether this worker may run `job`: the placement rule, and an
    /// executor for its kind.
    fn can_take(&self, job: &Job) -> bool {
        self.deps.executors.for_kind(&job.spec.kind).is_some() && self.deps.info.can_run(job)
    }

    pub(super) async fn on_handoff(&mut self, event: HandoffEvent) {
        match event {
            HandoffEvent::Attempt { key, taken } => {
                self.taking.remove(&key);
                if let Some(taken) = taken {
                    self.open_offers.remove(&key);
                    self.start_taken(taken);
                }
                // The slot a failed try reserved is free again.
                self.take_offers();
            }
            HandoffEvent::Vanished { job, entry } => self.record_vanished(&job, entry).await,
        }
    }

    /// Starts a run taken from another worker, in the slot reserved for it.
    pub(super) fn start_taken(&mut self, taken: Taken) {
        let Taken {
            job,
            entry,
            fence,
            permit,
            from,
        } = taken;
        tracing::info!(job = %job.name, run = %entry.run_id, %from, tick = %entry.tick, "took over a run its worker had no free slot for");
        self.deps
            .metrics
            .runs_taken_over
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (name, run_id) = (job.name.clone(), entry.run_id);
        self.spawn_run_with(job, entry, fence, Some(permit), Some(from));
        // A kill sent to the offering worker just before the take reached a
        // run that was no longer there; it passed the kill on by a request,
        // which may have come before this run's switch existed.
        let Some(kill) = self.local_runs.get(&run_id).map(|run| run.kill.clone()) else {
            return;
        };
        let coord = self.deps.coord.clone();
        tokio::spawn(async move {
            match coord.kill_requested(&name, run_id).await {
                Ok(true) => {
                    tracing::info!(job = %name, run = %run_id, "kill requested before the run was taken over");
                    kill.pull(crate::exec::StopReason::Killed);
                }
                Ok(false) => {}
                Err(err) => tracing::debug!(job = %name, run = %run_id, %err, "cannot check for a kill request"),
            }
        });
    }

    /// A `running/` entry was put: if it is one of this worker's offered
    /// runs and names another worker now, that worker took it — the run
    /// task stops waiting and ends without a record.
    pub(super) fn note_taken(&mut self, job: &JobName, entry: &RunningEntry) {
        if entry.worker == self.deps.info.id {
            return;
        }
        let Some(run) = self.local_runs.get_mut(&entry.run_id) else {
            return;
        };
        if run.job != *job {
            return;
        }
        if let Some(taken) = run.taken.take() {
            tracing::debug!(%job, run = %entry.run_id, taker = %entry.worker, "offered run taken");
            let _task_gone = taken.send(entry.worker.clone());
            // No longer this worker's: should its taker vanish, the job's
            // owner (this worker, maybe) records it lost.
            self.local_runs.remove(&entry.run_id);
        }
    }

    /// A run this worker offered whose offer (and entry) went with this
    /// worker's lease before anyone ran it is recorded `lost`, and what
    /// follows a failed run starts — unless a record of it is stored
    /// already (a taker that ran it and ended, or another worker that saw
    /// this one gone and recorded it lost).
    pub(super) async fn record_vanished(&mut self, job: &Arc<Job>, entry: RunningEntry) {
        let reason = format!(
            "worker {} lost its lease while the run waited for a free slot; the run's offer to other workers went \
             with it, and no record of the run running was found",
            self.deps.info.id
        );
        let record = self.lost_record(job, &entry, reason);
        if !self.deps.sink.record_unless_stored(record.clone()).await {
            return;
        }
        tracing::warn!(job = %job.name, run = %entry.run_id, "an offered run went with the worker's lease; recorded lost");
        self.deps.metrics.run_ended(RunStatus::Lost);
        if let Some(alerts) = &self.deps.alerts {
            alerts.notify(job, &record);
        }
        for (target, request) in followups::follow_ups(job, &entry, RunStatus::Lost, self.now()) {
            if let Err(err) = self.deps.coord.put_trigger(&target, &request).await {
                tracing::warn!(job = %job.name, %target, %err, "cannot start the retry or a dependent job of a lost run");
            }
        }
    }
}
