//! Taking a job up (start, restart, ownership change, resume, schedule
//! change): its claim state is read, the ticks that passed unclaimed are
//! planned by the catch-up policy and claimed in one transaction, records
//! another lease may have left unwritten are confirmed, and claims whose
//! answer was lost are accounted for.
//!
//! A claim transaction that fails without an answer (the store died
//! mid-commit) is not assumed to have failed: `state/<job>` carries the
//! claimant's lease, and the next recovery reads it back; a claim that did go
//! through has its ticks recorded (`missed`, as they are late by then) and
//! the run it published withdrawn. The per-job decision is the pure
//! `worker::takeover::decide`; this file does the I/O around it. A plan of
//! another lease is derived again only for the same job revision (an edited
//! job's plan is logged, not re-derived).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::{ABANDONED, AmbiguousClaim, BULK_STATE_READ, BULK_STATE_SHARE, State, Timer};
use crate::coord::{ClaimOutcome, ClaimRequest, JobState, PlanInputs, Revision};
use crate::ids::{JobName, RunId};
use crate::job::{CatchupPolicy, Job};
use crate::run::{RunRecord, RunStatus, Trigger};
use crate::schedule::{self, CatchupLimits};
use crate::worker::takeover;

impl State {
    /// One round of recovery for `names`; returns the jobs whose claim was lost.
    pub(super) async fn recover_round(&mut self, names: Vec<JobName>) -> Vec<JobName> {
        let mut states = if names.len() > BULK_STATE_READ {
            // One range over every state when the jobs are a large share of
            // all of them (a start, a membership change); else their own
            // keys. A range for every watch batch of new jobs made importing
            // N jobs into a running cluster read O(N²) states.
            let read = if names.len().saturating_mul(BULK_STATE_SHARE) >= self.jobs.len() {
                self.deps.coord.all_states().await
            } else {
                self.deps.coord.states_of(&names).await
            };
            match read {
                Ok(states) => Some(states),
                Err(err) => {
                    tracing::warn!(%err, "cannot read claim states in bulk; reading them one by one");
                    None
                }
            }
        } else {
            None
        };
        let now = self.now();
        let limits = self.catchup_limits();
        let mut claims = Vec::new();
        let mut plans = Vec::new();
        // Records of other leases' last claims that skipped their tick or
        // carried out a catch-up plan: their claimant may have died with the
        // records still in its sink.
        let mut unconfirmed = Vec::new();
        for name in names {
            let Some(slot) = self.jobs.get(&name) else { continue };
            let job = slot.job.clone();
            let own_queue: Vec<Timestamp> = slot.catchup_queue.iter().copied().collect();
            if !slot.owned || job.spec.paused {
                self.timers.remove(&Timer::Tick(name));
                continue;
            }
            let found = match states.as_mut() {
                Some(states) => Ok(states
                    .remove(&name)
                    .map_or((None, 0), |(state, rev)| (Some(state), rev))),
                None => self.deps.coord.job_state(&name).await,
            };
            let (state, revision) = match found {
                Ok(found) => found,
                Err(err) => {
                    tracing::warn!(job = %name, %err, "cannot read claim state; retrying soon");
                    self.recover_at(&name, now + SignedDuration::from_secs(1));
                    continue;
                }
            };
            let takeover = takeover::decide(&job, state.as_ref(), self.lease.0, &own_queue, now, limits);
            if let Some(tick) = takeover.foreign_skip {
                let mut record = self.skip_record(&job, tick, revision, None);
                record.error = Some(format!(
                    "previous run was still running (overlap: forbid); recorded by {} on taking the job over, \
                     as the worker that skipped the tick had not recorded it",
                    self.deps.info.id
                ));
                unconfirmed.push(record);
            }
            if let (Some(inputs), Some(state)) = (&takeover.foreign_plan, &state) {
                unconfirmed.extend(self.rederive_plan_records(&job, inputs, state.last_tick, revision));
            }
            if let Some(claim) = self.ambiguous.remove(&name) {
                // Ours if the state still names our claim, or (when a later
                // claim moved it on) if the run we published exists.
                let mut committed = state
                    .as_ref()
                    .is_some_and(|s| s.last_tick == claim.tick && s.lease == Some(claim.lease.0));
                if let (false, Some(entry)) = (committed, &claim.run) {
                    committed = match self.deps.coord.running(Some(&name)).await {
                        Ok(running) => running.iter().any(|(_, e)| e.run_id == entry.run_id),
                        Err(err) => {
                            // Unknown still: keep it for the next recovery.
                            tracing::warn!(job = %name, %err, "cannot read running entries; retrying soon");
                            self.ambiguous.insert(name.clone(), claim);
                            self.recover_at(&name, now + SignedDuration::from_secs(1));
                            continue;
                        }
                    };
                }
                if committed {
                    // A catch-up claim put its plan in the state: kept there
                    // until the records written now are stored.
                    let plan = claim.plan.as_ref().and(state.as_ref()).and_then(|s| s.plan.clone());
                    self.account_ambiguous(&job, claim, revision).await;
                    if let Some(inputs) = plan {
                        if let Some(slot) = self.jobs.get_mut(&name) {
                            slot.unconfirmed_plan = Some(Box::new(inputs.clone()));
                        }
                        self.confirm_plans_stored(vec![(name.clone(), inputs)]);
                    }
                }
            }
            if let Some(slot) = self.jobs.get_mut(&name) {
                slot.state_revision = Some(revision);
                slot.last_tick = takeover.last_tick;
                slot.last_claim_skipped = takeover.last_skipped;
                if !takeover.keep_queue {
                    slot.catchup_queue.clear();
                }
            }
            let plan = takeover.plan;
            let Some(claim) = takeover.claim else {
                self.set_tick_timer(&name, plan.next);
                continue;
            };
            let entry = claim
                .first_run
                .map(|tick| self.running_entry(&job, RunId::generate(), tick, Trigger::Catchup, 1));
            claims.push(ClaimRequest {
                job: name.clone(),
                tick: plan.horizon,
                seen_revision: revision,
                run: entry.clone(),
                lease: self.lease,
                skipped: claim.skipped,
                catchup: claim.queue.clone(),
                // A plan of this worker's whose records are not stored yet
                // stays until a plan with records of its own replaces it.
                plan: claim.inputs.clone().or_else(|| {
                    self.jobs
                        .get(&name)
                        .and_then(|s| s.unconfirmed_plan.as_deref().cloned())
                }),
            });
            let (queue, abandoned, inputs) = (claim.queue, claim.abandoned, claim.inputs);
            plans.push((job, plan, entry, queue, abandoned, inputs));
        }
        self.confirm_records(unconfirmed);
        if claims.is_empty() {
            return Vec::new();
        }
        let outcomes = match self.deps.coord.claim(&claims).await {
            Ok(outcomes) => outcomes,
            Err(err) => {
                tracing::warn!(%err, jobs = claims.len(), "cannot claim missed ticks; retrying soon");
                for ((job, plan, entry, _queue, abandoned, _inputs), request) in plans.into_iter().zip(&claims) {
                    self.hold_ambiguous(
                        job.name.clone(),
                        AmbiguousClaim {
                            tick: request.tick,
                            lease: request.lease,
                            run: entry,
                            blocking: None,
                            broadcast: false,
                            plan: Some(plan),
                            abandoned,
                        },
                    );
                    self.recover_at(&job.name, now + SignedDuration::from_secs(1));
                }
                return Vec::new();
            }
        };
        let mut lost = Vec::new();
        let mut unconfirmed_plans = Vec::new();
        for ((job, plan, entry, queue, abandoned, inputs), outcome) in plans.into_iter().zip(outcomes) {
            let ClaimOutcome::Won { fence } = outcome else {
                self.deps.metrics.claims_lost.fetch_add(1, Ordering::Relaxed);
                lost.push(job.name.clone());
                continue;
            };
            self.record_unstarted(&job, &abandoned, fence, ABANDONED).await;
            self.record_missed(&job, &plan, fence).await;
            if let Some(inputs) = &inputs {
                unconfirmed_plans.push((job.name.clone(), inputs.clone()));
            }
            if job.spec.broadcast {
                for tick in &plan.run {
                    self.broadcast(&job, *tick, Trigger::Catchup, None).await;
                }
            }
            if let Some(slot) = self.jobs.get_mut(&job.name) {
                slot.state_revision = Some(fence);
                slot.last_tick = Some(plan.horizon);
                slot.last_claim_skipped = plan.is_empty() && slot.last_claim_skipped;
                slot.catchup_queue = queue.into();
                slot.catchup_running |= entry.is_some();
                if let Some(inputs) = inputs {
                    slot.unconfirmed_plan = Some(Box::new(inputs));
                }
            }
            if let Some(entry) = entry {
                tracing::info!(job = %job.name, tick = %entry.tick, policy = ?job.spec.catchup.policy, "catch-up run");
                self.spawn_run(job.clone(), entry, fence);
            }
            self.set_tick_timer(&job.name, plan.next);
        }
        self.confirm_plans_stored(unconfirmed_plans);
        lost
    }

    /// Writes the records of claims another lease made (skips, catch-up
    /// plans), in the background, where the log store does not have them: a
    /// worker killed just after its claim had them only in its sink's memory.
    /// The records carry the claimant's ids, so one that did arrive stays
    /// alone.
    pub(super) fn confirm_records(&self, records: Vec<RunRecord>) {
        if records.is_empty() {
            return;
        }
        let sink = self.deps.sink.clone();
        tokio::spawn(async move {
            use futures::StreamExt as _;
            futures::stream::iter(records)
                .for_each_concurrent(16, |record| {
                    let sink = &sink;
                    async move {
                        let (job, tick) = (record.job.clone(), record.tick);
                        let status = record.status;
                        if sink.record_unless_stored(record).await {
                            tracing::info!(%job, %tick, ?status, "recorded a tick its claimant had not recorded");
                        }
                    }
                })
                .await;
        });
    }

    /// A claim whose answer was lost did go through: the tick (or the
    /// catch-up plan) is this worker's, but its run was never started and its
    /// records never written. Account for every tick it covered — as not run,
    /// since by now it is late — and withdraw the run it published.
    pub(super) async fn account_ambiguous(&mut self, job: &Arc<Job>, claim: AmbiguousClaim, fence: Revision) {
        const LATE: &str = "claimed while the coordination store failed; the claim's answer was lost, so the \
                            tick was not run";
        tracing::warn!(job = %job.name, tick = %claim.tick, "a claim whose answer was lost went through; recording its ticks");
        if let Some(plan) = &claim.plan {
            self.record_unstarted(job, &claim.abandoned, fence, ABANDONED).await;
            self.record_missed(job, plan, fence).await;
            // Catch-up runs the plan would have started, after the first
            // (which is `claim.run`) — all of them for a broadcast job. The
            // claim listed the queued ones in the state: their ids are the
            // ones a later owner would record them under.
            if job.spec.broadcast {
                for tick in &plan.run {
                    let record = self.not_run(job, *tick, RunStatus::Missed, fence, LATE.to_owned());
                    self.deps.metrics.run_ended(RunStatus::Missed);
                    self.record_ended(job, record).await;
                }
            } else {
                let queued: Vec<Timestamp> = plan.run.iter().skip(1).copied().collect();
                self.record_unstarted(job, &queued, fence, LATE).await;
            }
        }
        match claim.run {
            Some(entry) => {
                let mut record = self.not_run(job, entry.tick, RunStatus::Missed, fence, LATE.to_owned());
                record.run_id = entry.run_id;
                record.trigger = entry.trigger;
                self.deps.metrics.run_ended(RunStatus::Missed);
                self.record_ended(job, record).await;
                self.withdraw_entry(job.name.clone(), entry.run_id);
            }
            None if claim.broadcast => {
                let record = self.not_run(job, claim.tick, RunStatus::Missed, fence, LATE.to_owned());
                self.deps.metrics.run_ended(RunStatus::Missed);
                self.record_ended(job, record).await;
            }
            None if claim.plan.is_none() => {
                let record = self.skip_record(job, claim.tick, fence, claim.blocking);
                self.deps.metrics.run_ended(RunStatus::Skipped);
                self.record_ended(job, record).await;
            }
            None => {}
        }
    }

    pub(super) fn catchup_limits(&self) -> CatchupLimits {
        CatchupLimits {
            missed_records: self.deps.config.missed_record_limit,
            runs: self.deps.config.catchup_run_limit,
            ..CatchupLimits::default()
        }
    }

    pub(super) async fn record_missed(&self, job: &Arc<Job>, plan: &schedule::CatchupPlan, fence: Revision) {
        for record in self.missed_records(job, plan, fence) {
            self.record_ended(job, record).await;
        }
        let total = plan.missed.len() as u64 + plan.missed_summary.and_then(|s| s.count).unwrap_or(0);
        self.deps.metrics.runs_ended(RunStatus::Missed, total);
        if total > 0 {
            tracing::info!(job = %job.name, missed = total, "recorded missed ticks");
        }
    }

    /// The `missed` records of a catch-up plan claimed with `fence`, under
    /// ids derived from the job and tick ([`RunId::for_missed`]).
    pub(super) fn missed_records(&self, job: &Job, plan: &schedule::CatchupPlan, fence: Revision) -> Vec<RunRecord> {
        let reason = match job.spec.catchup.policy {
            CatchupPolicy::Skip => "no worker ran the job at this time; catch-up policy is skip",
            CatchupPolicy::Latest => "no worker ran the job at this time; catch-up ran only the latest tick",
            CatchupPolicy::All => "no worker ran the job at this time; outside the catch-up window or limit",
        };
        let mut records: Vec<RunRecord> = plan
            .missed
            .iter()
            .map(|tick| {
                let mut record = self.not_run(job, *tick, RunStatus::Missed, fence, reason.to_owned());
                record.run_id = RunId::for_missed(&job.name, *tick);
                record
            })
            .collect();
        if let Some(summary) = plan.missed_summary {
            let mut record = self.not_run(
                job,
                summary.first,
                RunStatus::Missed,
                fence,
                format!(
                    "{reason}; this record stands for every tick from {} to {}",
                    summary.first, summary.last
                ),
            );
            record.run_id = RunId::for_missed(&job.name, summary.first);
            record.missed_count = summary.count;
            record.missed_until = Some(summary.last);
            records.push(record);
        }
        records
    }

    /// Tells the scheduling loop once the sink has stored everything queued
    /// so far — the records of the catch-up `plans` among them, one flush for
    /// all — so that claims stop carrying the plans in the claim state.
    pub(super) fn confirm_plans_stored(&self, plans: Vec<(JobName, PlanInputs)>) {
        if plans.is_empty() {
            return;
        }
        let sink = self.deps.sink.clone();
        let stored = self.plans_stored_tx.clone();
        tokio::spawn(async move {
            sink.flush().await;
            for plan in plans {
                let _ = stored.send(plan).await;
            }
        });
    }

    /// The records of catch-up plan `plan` are stored: claims stop carrying
    /// it, and the claim state drops it now unless it moved on (a job that
    /// fires rarely would otherwise keep it until its next tick, and every
    /// owner change meanwhile would check its records again).
    pub(super) async fn on_plan_stored(&mut self, job: &JobName, plan: &PlanInputs) {
        let Some(slot) = self.jobs.get_mut(job) else { return };
        if slot.unconfirmed_plan.as_deref() != Some(plan) {
            return;
        }
        slot.unconfirmed_plan = None;
        let (Some(seen), Some(last_tick)) = (slot.state_revision, slot.last_tick) else {
            return;
        };
        let state = JobState {
            last_tick,
            lease: Some(self.lease.0),
            skipped: slot.last_claim_skipped,
            catchup: slot.catchup_queue.iter().copied().collect(),
            plan: None,
        };
        match self.deps.coord.rewrite_state(job, &state, seen).await {
            Ok(Some(revision)) => {
                if let Some(slot) = self.jobs.get_mut(job)
                    && slot.state_revision == Some(seen)
                {
                    slot.state_revision = Some(revision);
                }
            }
            // Moved on: a later claim already left the plan out.
            Ok(None) => {}
            // Harmless: the next claim leaves it out.
            Err(err) => tracing::debug!(%job, %err, "cannot drop a stored catch-up plan from the claim state"),
        }
    }

    /// The records of another lease's catch-up claim, derived again from
    /// the plan's inputs in the claim state: its `missed` ticks and the
    /// queued ticks it took over. `fence` is the state's revision now;
    /// `last_tick` its last tick, which the plan's horizon cannot pass.
    pub(super) fn rederive_plan_records(
        &self,
        job: &Arc<Job>,
        inputs: &PlanInputs,
        last_tick: Timestamp,
        fence: Revision,
    ) -> Vec<RunRecord> {
        if inputs.job_revision != job.revision {
            tracing::warn!(
                job = %job.name,
                "the job changed since another worker's catch-up claim; its missed ticks cannot be derived again"
            );
            return Vec::new();
        }
        let limits = CatchupLimits {
            missed_records: inputs.missed_records,
            runs: inputs.runs,
            grace: Duration::from_millis(inputs.grace_ms),
            scan: inputs.scan,
        };
        let plan = schedule::plan_catchup(&job.schedule, job.spec.catchup, inputs.after, inputs.now, limits);
        if plan.horizon > last_tick {
            tracing::warn!(job = %job.name, "another worker's catch-up plan does not match its claim state; not derived again");
            return Vec::new();
        }
        let note = format!(
            "; recorded by {} on taking the job over, as the worker that claimed it may not have",
            self.deps.info.id
        );
        let mut records = self.missed_records(job, &plan, fence);
        records.extend(self.unstarted_records(job, &inputs.abandoned, fence, ABANDONED));
        for record in &mut records {
            if let Some(error) = &mut record.error {
                error.push_str(&note);
            }
        }
        records
    }
}
