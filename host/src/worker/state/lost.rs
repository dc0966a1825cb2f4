//! Runs whose worker vanished: the job's owner watches `running/`, and a
//! run whose entry went with its worker's lease is recorded `lost`.
//!
//! Every worker sees every run end. For the runs of jobs it would own if
//! their worker were gone, it checks whether that worker is alive with one
//! read of `workers/` per watch update (`Coordinator::live_workers`), never
//! one per run: a read per run bound the whole cluster's claim rate by the
//! store's round trip.
//!
//! A run handed off to another worker (`worker/handoff.rs`) had its entry
//! rewritten with the taker's id and lease, so it is the taker's going that
//! makes it `lost`; the worker that offered it has let go of it by then
//! (`State::note_taken`), so the job's owner never mistakes it for a run of
//! its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::State;
use crate::coord::{RunningEntry, WatchEvent, WatchUpdate};
use crate::ids::JobName;
use crate::job::{Job, JobKind};
use crate::placement;
use crate::run::{RunRecord, RunStatus};
use crate::worker::followups;

impl State {
    pub(super) async fn on_running(&mut self, update: WatchUpdate) {
        match update {
            WatchUpdate::Snapshot(kvs) => {
                self.remote_running.clear();
                for kv in &kvs {
                    if let Some((job, entry)) = self.deps.coord.decode_running(kv) {
                        self.note_taken(&job, &entry);
                        self.remote_running.entry(job).or_default().insert(entry.run_id, entry);
                    }
                }
            }
            WatchUpdate::Events(events) => {
                let mut ended = Vec::new();
                for event in events {
                    match event {
                        WatchEvent::Put(kv) if self.own_echo(&kv.key) => {}
                        WatchEvent::Put(kv) => {
                            if let Some((job, entry)) = self.deps.coord.decode_running(&kv) {
                                self.note_taken(&job, &entry);
                                self.remote_running.entry(job).or_default().insert(entry.run_id, entry);
                            }
                        }
                        WatchEvent::Delete { key, .. } => {
                            let Some((job, run_id)) = self.deps.coord.decode_running_key(&key) else {
                                continue;
                            };
                            let entry = self.remote_running.get_mut(&job).and_then(|runs| runs.remove(&run_id));
                            if self.remote_running.get(&job).is_some_and(HashMap::is_empty) {
                                self.remote_running.remove(&job);
                            }
                            if let Some(entry) = entry {
                                ended.push((job, entry));
                            }
                        }
                    }
                }
                self.check_lost(ended).await;
            }
        }
    }

    /// Whether a `running/` put under `key` is this worker's own entry
    /// echoed back: a run in progress here that was never offered. Only a
    /// taker rewrites an entry, and only after the offer, whose flag is set
    /// before the offer is written. Such an entry is neither decoded nor
    /// kept in `remote_running` (`running_runs` counts the local runs): in a
    /// burst every run's entry comes back, and decoding them was the
    /// scheduling loop's work.
    fn own_echo(&self, key: &str) -> bool {
        self.deps.coord.decode_running_key(key).is_some_and(|(job, run_id)| {
            self.local_runs
                .get(&run_id)
                .is_some_and(|run| run.job == job && !run.offered.load(Ordering::SeqCst))
        })
    }

    /// Runs of other workers left `running/`. If a run's worker is gone (its
    /// lease expired with the run's entry on it), the run's outcome will never
    /// be reported, so the job's owner records it `lost` — with the run's own
    /// fence, so the marker cannot replace a final record that did arrive.
    ///
    /// Whether a worker is gone is read from the store, once for all the
    /// runs of one watch update: every run that ends anywhere in the cluster
    /// comes through here, so a read per run would bound the whole worker by
    /// the store's round trip.
    pub(super) async fn check_lost(&mut self, ended: Vec<(JobName, RunningEntry)>) {
        let candidates: Vec<(Arc<Job>, RunningEntry)> = ended
            .into_iter()
            .filter(|(_, entry)| !self.local_runs.contains_key(&entry.run_id))
            .filter_map(|(job, entry)| {
                let slot = self.jobs.get(&job)?;
                // The job's owner once the run's worker is gone. Computed here
                // rather than read from `slot.owned`: the membership change may
                // not have reached this worker yet (the two watches are
                // independent).
                let owner = placement::owner(&slot.job, self.workers.values().filter(|w| w.id != entry.worker))?;
                (owner.id == self.deps.info.id).then(|| (slot.job.clone(), entry))
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let alive = match self.deps.coord.live_workers().await {
            Ok(alive) => alive,
            Err(err) => {
                tracing::warn!(runs = candidates.len(), %err, "cannot check whether ended runs' workers are alive");
                return;
            }
        };
        for (job, entry) in candidates {
            if !alive.contains(&entry.worker) {
                self.record_lost(&job, entry).await;
            }
        }
    }

    /// Records a run whose worker disappeared `lost` and starts what follows
    /// a failed run.
    pub(super) async fn record_lost(&mut self, job: &Arc<Job>, entry: RunningEntry) {
        let reason = format!("worker {} disappeared while the run was in progress", entry.worker);
        let record = self.lost_record(job, &entry, reason);
        tracing::warn!(job = %job.name, run = %entry.run_id, worker = %entry.worker, "run lost with its worker");
        self.deps.metrics.run_ended(RunStatus::Lost);
        self.record_ended(job, record).await;
        // Its retry (a lost run counts as failed) or else its dependents
        // (`on_failure`) start here, since the worker that would have
        // started them is gone.
        for (target, request) in followups::follow_ups(job, &entry, RunStatus::Lost, self.now()) {
            if let Err(err) = self.deps.coord.put_trigger(&target, &request).await {
                tracing::warn!(job = %job.name, %target, %err, "cannot start the retry or a dependent job of a lost run");
            }
        }
    }

    /// The `lost` record of a run that `entry` published, with `reason`,
    /// under the run's own fence (so the marker cannot replace a final
    /// record that did arrive).
    pub(super) fn lost_record(&self, job: &Job, entry: &RunningEntry, reason: String) -> RunRecord {
        let mut record = self.not_run(job, entry.tick, RunStatus::Lost, entry.fence.unwrap_or(0), reason);
        record.run_id = entry.run_id;
        record.trigger = entry.trigger;
        record.attempt = entry.attempt;
        record.worker = entry.worker.clone();
        record.started_at = Some(entry.claimed_at);
        record.parent = entry.parent.clone();
        record.shard = entry.shard;
        record.rerun_of = entry.rerun_of;
        if let JobKind::Wasm(wasm) = &job.spec.kind {
            record.module = Some(wasm.module.clone());
        }
        record
    }
}
