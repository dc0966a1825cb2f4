//! The job and worker watches: job records added, changed or deleted,
//! ownership recomputed when membership changes, and the re-planning of the
//! jobs whose timing or ownership moved.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use jiff::{SignedDuration, Timestamp};

use super::{JobSlot, State, Timer};
use crate::coord::{Family, KeyValue, WatchEvent, WatchUpdate};
use crate::ids::JobName;
use crate::job::Job;
use crate::placement::{self, WorkerInfo};

/// Jobs re-planned at once from which the worker gives the freed heap back
/// right away (`heap::release`).
const BULK_REPLAN: usize = 1000;

impl State {
    pub(super) async fn on_jobs(&mut self, update: WatchUpdate) {
        let mut replan = Vec::new();
        // A job changed twice in one update is re-planned once.
        let mut seen = HashSet::new();
        match update {
            WatchUpdate::Snapshot(kvs) => {
                // Sized once: growing the maps step by step through a
                // snapshot of 100k jobs leaves each smaller table behind as
                // free heap the process keeps.
                self.jobs.reserve(kvs.len().saturating_sub(self.jobs.len()));
                replan.reserve(kvs.len());
                let mut present = HashSet::with_capacity(kvs.len());
                // The records stay until every job is parsed: freed
                // together they leave whole free pages that the bulk
                // re-plan's `heap::release` gives back (freed one by one,
                // each would leave a fragment of a page among the jobs).
                for kv in &kvs {
                    if let Some((name, changed)) = self.upsert_job(kv) {
                        if changed {
                            replan.push(name.clone());
                        }
                        present.insert(name);
                    }
                }
                let gone: Vec<JobName> = self.jobs.keys().filter(|n| !present.contains(*n)).cloned().collect();
                for name in gone {
                    self.remove_job(&name);
                }
            }
            WatchUpdate::Events(events) => {
                for event in events {
                    match event {
                        WatchEvent::Put(kv) => {
                            if let Some((name, true)) = self.upsert_job(&kv)
                                && seen.insert(name.clone())
                            {
                                replan.push(name);
                            }
                        }
                        WatchEvent::Delete { key, .. } => {
                            if let Some(name) = self
                                .deps
                                .coord
                                .strip(Family::Jobs, &key)
                                .and_then(|n| JobName::new(n).ok())
                            {
                                self.remove_job(&name);
                            }
                        }
                    }
                }
            }
        }
        self.replan(replan).await;
    }

    /// Adds or updates a job. Returns its name when the record is valid, and
    /// whether its timing or ownership changed (it then needs replanning).
    pub(super) fn upsert_job(&mut self, kv: &KeyValue) -> Option<(JobName, bool)> {
        let job = match self.deps.coord.decode_job(kv)? {
            Ok(job) => Arc::new(job),
            Err((name, err)) => {
                tracing::warn!(job = %name, %err, "ignoring an invalid stored job");
                if let Ok(name) = JobName::new(&name) {
                    self.remove_job(&name);
                }
                return None;
            }
        };
        let name = job.name.clone();
        let owned = self.is_owner(&job);
        let needs_warming = owned
            && self
                .jobs
                .get(&name)
                .is_none_or(|slot| !slot.owned || slot.job.spec.kind != job.spec.kind);
        if needs_warming && let Some(executor) = self.deps.executors.for_kind(&job.spec.kind) {
            // A module compiled now is ready for the first tick.
            executor.warm(&job.spec.kind);
        }
        let changed = match self.jobs.get_mut(&name) {
            Some(slot) => {
                if slot.job.revision == job.revision {
                    return Some((name, false));
                }
                let timing_changed = slot.job.spec.schedule != job.spec.schedule
                    || slot.job.spec.timezone != job.spec.timezone
                    || slot.job.spec.paused != job.spec.paused
                    || slot.job.meta.active_since != job.meta.active_since;
                let ownership_changed = slot.owned != owned;
                slot.job = job;
                slot.owned = owned;
                if !owned {
                    // Its next owner records the queued ticks from the claim state.
                    slot.catchup_queue.clear();
                }
                timing_changed || ownership_changed
            }
            None => {
                self.jobs.insert(
                    name.clone(),
                    JobSlot {
                        job,
                        owned,
                        state_revision: None,
                        last_tick: None,
                        next_tick: None,
                        claim_at_tick: false,
                        catchup_queue: VecDeque::new(),
                        catchup_running: false,
                        last_claim_skipped: false,
                        unconfirmed_plan: None,
                    },
                );
                true
            }
        };
        Some((name, changed))
    }

    pub(super) fn remove_job(&mut self, name: &JobName) {
        self.timers.remove(&Timer::Tick(name.clone()));
        self.timers.remove(&Timer::Recover(name.clone()));
        self.timers.remove(&Timer::Triggers(name.clone()));
        self.jobs.remove(name);
        self.deps.metrics.forget_job(name);
    }

    /// Schedules the job's next tick (`None`: it has none), acted on the
    /// claim lead before it.
    pub(super) fn set_tick_timer(&mut self, name: &JobName, next: Option<Timestamp>) {
        let Some(slot) = self.jobs.get_mut(name) else { return };
        slot.next_tick = next;
        slot.claim_at_tick = false;
        match next {
            Some(next) => self.timers.set(Timer::Tick(name.clone()), self.lead.act_at(next)),
            None => {
                self.timers.remove(&Timer::Tick(name.clone()));
            }
        }
    }

    /// Re-plans the job at `at` instead of claiming its next tick: after an
    /// error or a lost claim its claim state must be read again first.
    pub(super) fn recover_at(&mut self, name: &JobName, at: Timestamp) {
        self.timers.remove(&Timer::Tick(name.clone()));
        self.timers.set(Timer::Recover(name.clone()), at);
    }

    /// Re-plans jobs whose timing or ownership changed: owned ones are
    /// recovered — claim state read, ticks that passed unclaimed handled by
    /// the catch-up policy, next timer set, pending manual runs started —
    /// and the others lose their timer. Work is batched so a snapshot or a
    /// membership change of thousands of jobs costs a handful of round
    /// trips: one range read of all claim states, and one packed claim for
    /// all the jobs with ticks to account for. Jobs whose claim is lost
    /// (someone moved their state meanwhile) are re-read and retried.
    pub(super) async fn replan(&mut self, names: Vec<JobName>) {
        let bulk = names.len() >= BULK_REPLAN;
        let mut owned: Vec<JobName> = names
            .into_iter()
            .filter(|name| match self.jobs.get(name) {
                Some(slot) if slot.owned => true,
                _ => {
                    self.timers.remove(&Timer::Tick(name.clone()));
                    false
                }
            })
            .collect();
        self.timers.reserve(owned.len().saturating_sub(self.timers.len()));
        let with_triggers = owned.clone();
        for _round in 0..3 {
            if owned.is_empty() {
                break;
            }
            owned = self.recover_round(owned).await;
        }
        for name in owned {
            // Still contended after three rounds: try again shortly.
            self.recover_at(&name, self.now() + SignedDuration::from_secs(1));
        }
        for name in with_triggers {
            // A queue taken up again after an error resumes here.
            self.start_next_catchup(&name).await;
            if self.pending_triggers.values().any(|(job, _)| *job == name) {
                self.take_triggers(&name).await;
            }
        }
        if bulk {
            // The records and claim states just decoded and dropped sit as
            // free heap among the jobs kept: give their pages back now (a
            // few ms, once per snapshot or membership change), not at the
            // keeper's next look.
            crate::heap::release_logged("bulk re-plan").await;
        }
        self.deps
            .metrics
            .jobs_scheduled
            .store(self.timers.len() as u64, Ordering::Relaxed);
    }

    /// Takes over one job (see [`State::replan`]).
    pub(super) async fn recover(&mut self, name: &JobName) {
        self.replan(vec![name.clone()]).await;
    }

    pub(super) fn is_owner(&self, job: &Job) -> bool {
        self.deps.executors.for_kind(&job.spec.kind).is_some()
            && placement::owner(job, self.workers.values()).is_some_and(|owner| owner.id == self.deps.info.id)
    }

    pub(super) async fn on_workers(&mut self, update: WatchUpdate) {
        match update {
            WatchUpdate::Snapshot(kvs) => {
                self.workers = kvs
                    .iter()
                    .filter_map(|kv| serde_json::from_slice::<WorkerInfo>(&kv.value).ok())
                    .map(|info| (info.id.clone(), info))
                    .collect();
            }
            WatchUpdate::Events(events) => {
                for event in events {
                    match event {
                        WatchEvent::Put(kv) => {
                            if let Ok(info) = serde_json::from_slice::<WorkerInfo>(&kv.value) {
                                self.workers.insert(info.id.clone(), info);
                            }
                        }
                        WatchEvent::Delete { key, .. } => {
                            if let Some(id) = self.deps.coord.strip(Family::Workers, &key) {
                                self.workers.remove(id);
                            }
                        }
                    }
                }
            }
        }
        self.deps.metrics.set_live_workers(self.workers.len());
        // Membership changed: take over jobs this worker now wins, let go of
        // the ones another worker wins.
        let mut changed = Vec::new();
        let mut gained = 0usize;
        let mut lost = 0usize;
        for (name, slot) in &mut self.jobs {
            let executor = self.deps.executors.for_kind(&slot.job.spec.kind);
            let owned = executor.is_some()
                && placement::owner(&slot.job, self.workers.values())
                    .is_some_and(|owner| owner.id == self.deps.info.id);
            if owned
                && !slot.owned
                && let Some(executor) = &executor
            {
                executor.warm(&slot.job.spec.kind);
            }
            if owned != slot.owned {
                slot.owned = owned;
                slot.state_revision = None;
                if !owned {
                    // Its next owner records the queued ticks from the claim state.
                    slot.catchup_queue.clear();
                }
                if owned {
                    gained += 1
                } else {
                    lost += 1
                }
                changed.push(name.clone());
            }
        }
        if gained + lost > 0 {
            tracing::info!(gained, lost, workers = self.workers.len(), "job ownership changed");
        }
        self.replan(changed).await;
        self.reap_orphan_shards().await;
    }
}
