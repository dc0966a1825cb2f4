//! Requested runs: run-now, re-runs, dependents and retries (trigger keys
//! taken by the job's owner or their target worker), and broadcast ticks
//! handed out as one shard per eligible worker.

use std::collections::BTreeSet;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};

use super::{JobSlot, State, Timer};
use crate::coord::{KeyValue, TriggerRequest, WatchEvent, WatchUpdate};
use crate::ids::{JobName, RunId};
use crate::job::Job;
use crate::run::{RunStatus, Shard, Trigger};

impl State {
    pub(super) async fn on_triggers(&mut self, update: WatchUpdate) {
        let puts: Vec<KeyValue> = match update {
            WatchUpdate::Snapshot(kvs) => {
                self.pending_triggers.clear();
                kvs
            }
            WatchUpdate::Events(events) => {
                let mut puts = Vec::new();
                for event in events {
                    match event {
                        WatchEvent::Put(kv) => puts.push(kv),
                        WatchEvent::Delete { key, .. } => {
                            self.pending_triggers.remove(&key);
                        }
                    }
                }
                puts
            }
        };
        let mut names = BTreeSet::new();
        for kv in puts {
            let Some((name, _)) = self.deps.coord.decode_trigger(&kv) else {
                continue;
            };
            self.pending_triggers.insert(kv.key.clone(), (name.clone(), kv));
            names.insert(name);
        }
        for name in names {
            self.take_triggers(&name).await;
        }
        self.reap_orphan_shards().await;
    }

    /// Whether this worker is the one to take a trigger: the worker a shard
    /// is addressed to, or else the job's owner.
    pub(super) fn takes(&self, slot: &JobSlot, request: &TriggerRequest) -> bool {
        match &request.target_worker {
            Some(target) => *target == self.deps.info.id,
            None => slot.owned,
        }
    }

    /// Starts the runs requested for `name` that are this worker's to take
    /// (see [`State::takes`]). A broadcast job's "run now" is handed out to
    /// every eligible worker instead.
    pub(super) async fn take_triggers(&mut self, name: &JobName) {
        let Some(slot) = self.jobs.get(name) else { return };
        let job = slot.job.clone();
        let keys: Vec<String> = self
            .pending_triggers
            .iter()
            .filter(|(_, (job, _))| job == name)
            .map(|(key, _)| key.clone())
            .collect();
        let now = self.now();
        // The earliest request of ours that must wait (a retry's backoff).
        let mut wake: Option<Timestamp> = None;
        for key in keys {
            let Some((_, kv)) = self.pending_triggers.get(&key) else {
                continue;
            };
            let Some((_, request)) = self.deps.coord.decode_trigger(kv) else {
                self.pending_triggers.remove(&key);
                continue;
            };
            let Some(slot) = self.jobs.get(name) else { return };
            if !self.takes(slot, &request) {
                continue;
            }
            // A paused job's retries wait until it is resumed (a "run now"
            // of a paused job runs: someone asked for that run).
            if request.trigger == Trigger::Retry && job.spec.paused {
                continue;
            }
            if let Some(not_before) = request.not_before
                && not_before > now
            {
                wake = Some(wake.map_or(not_before, |w| w.min(not_before)));
                continue;
            }
            let Some((_, kv)) = self.pending_triggers.remove(&key) else {
                continue;
            };
            if job.spec.broadcast && request.shard.is_none() {
                if !self
                    .broadcast_tick(&job, request.tick(), request.trigger, request.rerun_of, Some(&kv.key))
                    .await
                {
                    self.pending_triggers.insert(key, (name.clone(), kv));
                    let soon = now + SignedDuration::from_secs(1);
                    wake = Some(wake.map_or(soon, |w| w.min(soon)));
                }
                continue;
            }
            // A requested run keeps the id its request was written under,
            // which "run now" already told its caller.
            let run_id = self.deps.coord.trigger_run_id(&kv.key).unwrap_or_else(RunId::generate);
            let mut entry = self.running_entry(&job, run_id, request.tick(), request.trigger, request.attempt);
            entry.parent = request.parent.clone();
            entry.shard = request.shard;
            entry.depth = request.depth;
            entry.rerun_of = request.rerun_of;
            match self.deps.coord.take_trigger(&kv.key, name, &entry, self.lease).await {
                Ok(Some(fence)) => {
                    tracing::info!(job = %name, by = %request.requested_by, trigger = %request.trigger.as_str(), shard = ?request.shard.map(|s| s.index), "requested run");
                    self.spawn_run(job.clone(), entry, fence);
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(job = %name, %err, "cannot take a run request; retrying in 1 s");
                    self.pending_triggers.insert(key, (name.clone(), kv));
                    let soon = now + SignedDuration::from_secs(1);
                    wake = Some(wake.map_or(soon, |w| w.min(soon)));
                }
            }
        }
        if let Some(at) = wake {
            self.timers.set(Timer::Triggers(name.clone()), at);
        }
    }

    /// Hands one tick of a broadcast job out to every worker able to run
    /// it, a shard each, as triggers addressed to them (consuming
    /// `consume`, the request that asked for it, in the same transaction).
    /// With no such worker, or when the shards cannot be stored, the tick is
    /// recorded `missed`. Returns `false` only when the store failed and
    /// `consume` should be tried again.
    pub(super) async fn broadcast(
        &mut self,
        job: &Arc<Job>,
        tick: Timestamp,
        trigger: Trigger,
        consume: Option<&str>,
    ) -> bool {
        self.broadcast_tick(job, tick, trigger, None, consume).await
    }

    /// [`State::broadcast`], for a re-run of the tick too: every shard (and
    /// a `missed` record, if the tick cannot be handed out) names the run
    /// re-run in `rerun_of`.
    pub(super) async fn broadcast_tick(
        &mut self,
        job: &Arc<Job>,
        tick: Timestamp,
        trigger: Trigger,
        rerun_of: Option<RunId>,
        consume: Option<&str>,
    ) -> bool {
        // A re-run's record says it was one, like the runs it would have started.
        let as_requested = |mut record: crate::run::RunRecord| {
            if rerun_of.is_some() {
                record.trigger = trigger;
                record.rerun_of = rerun_of;
            }
            record
        };
        let targets: Vec<String> = self
            .workers
            .values()
            .filter(|worker| worker.can_run(job))
            .map(|worker| worker.id.clone())
            .collect();
        if targets.is_empty() {
            let record = as_requested(self.not_run(
                job,
                tick,
                RunStatus::Missed,
                0,
                "no live worker can run this broadcast job".into(),
            ));
            self.deps.metrics.run_ended(RunStatus::Missed);
            self.record_ended(job, record).await;
            return true;
        }
        let group = RunId::generate();
        let count = u32::try_from(targets.len()).unwrap_or(u32::MAX);
        let shards: Vec<TriggerRequest> = targets
            .into_iter()
            .enumerate()
            .map(|(index, worker)| TriggerRequest {
                requested_at: self.now(),
                requested_by: format!("broadcast by {}", self.deps.info.id),
                trigger,
                tick: Some(tick),
                parent: None,
                depth: 0,
                shard: Some(Shard {
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    count,
                    group,
                }),
                target_worker: Some(worker),
                attempt: 1,
                not_before: None,
                rerun_of,
            })
            .collect();
        match self.deps.coord.put_shards(&job.name, &shards, consume).await {
            Ok(_) => {
                tracing::info!(job = %job.name, %tick, shards = count, %group, "broadcast");
                true
            }
            Err(err) if consume.is_some() => {
                tracing::warn!(job = %job.name, %err, "cannot hand out a broadcast; will retry");
                false
            }
            Err(err) => {
                tracing::warn!(job = %job.name, %err, "cannot hand out a broadcast tick; recording it missed");
                let record = as_requested(self.not_run(
                    job,
                    tick,
                    RunStatus::Missed,
                    0,
                    format!("the broadcast's shards could not be handed out: {err}"),
                ));
                self.deps.metrics.run_ended(RunStatus::Missed);
                self.record_ended(job, record).await;
                true
            }
        }
    }

    /// Shards addressed to workers that are gone will never be taken: the
    /// job's owner deletes each (once, by transaction) and records it `lost`.
    pub(super) async fn reap_orphan_shards(&mut self) {
        let orphans: Vec<(String, JobName, TriggerRequest)> = self
            .pending_triggers
            .iter()
            .filter_map(|(key, (job, kv))| {
                let (_, request) = self.deps.coord.decode_trigger(kv)?;
                let target = request.target_worker.as_ref()?;
                let slot = self.jobs.get(job)?;
                (!self.workers.contains_key(target) && slot.owned).then(|| (key.clone(), job.clone(), request))
            })
            .collect();
        if orphans.is_empty() {
            return;
        }
        // This worker's view of membership may lag: ask the store.
        let alive = match self.deps.coord.live_workers().await {
            Ok(alive) => alive,
            Err(err) => {
                tracing::warn!(shards = orphans.len(), %err, "cannot check the workers of orphaned shards");
                return;
            }
        };
        for (key, name, request) in orphans {
            let target = request.target_worker.clone().unwrap_or_default();
            if alive.contains(&target) {
                continue;
            }
            match self.deps.coord.drop_trigger(&key).await {
                Ok(true) => {
                    self.pending_triggers.remove(&key);
                    let Some(job) = self.jobs.get(&name).map(|slot| slot.job.clone()) else {
                        continue;
                    };
                    let mut record = self.not_run(
                        &job,
                        request.tick(),
                        RunStatus::Lost,
                        0,
                        format!("worker {target} was gone before it started its shard"),
                    );
                    record.trigger = request.trigger;
                    record.shard = request.shard;
                    record.rerun_of = request.rerun_of;
                    record.worker = target;
                    tracing::warn!(job = %name, "a broadcast shard was lost with its worker");
                    self.deps.metrics.run_ended(RunStatus::Lost);
                    self.record_ended(&job, record).await;
                }
                Ok(false) => {
                    self.pending_triggers.remove(&key);
                }
                Err(err) => tracing::warn!(job = %name, %err, "cannot remove an orphaned shard"),
            }
        }
    }
}
