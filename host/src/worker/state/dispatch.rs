//! Due ticks to runs: the due timers of a turn are claimed together, each
//! won claim starts a run task (or records a skip, or broadcasts), queued
//! catch-up runs follow one another, and finished runs are accounted for.
//! A run task that finds no free slot offers its run to the other workers
//! (`worker/handoff.rs`); the decision to let it is made here.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::{AmbiguousClaim, LocalRun, MAX_FIRES_PER_TURN, State, TickAction, Timer};
use crate::coord::{ClaimOutcome, ClaimRequest, JobState, KillTarget, Revision, RunningEntry};
use crate::exec::{KillSwitch, ReportTo, StopReason};
use crate::ids::{JobName, RunId};
use crate::job::{Job, Overlap};
use crate::placement;
use crate::run::{RunStatus, Trigger};
use crate::schedule::{self, OverlapDecision};
use crate::worker::handoff::{self, Capacity, Offer};
use crate::worker::task::{self, TaskDone, TaskSpec};

impl State {
    /// Handles every timer that is due: claims the ticks (packed into few
    /// transactions), then starts runs or records skips. A tick's timer is
    /// due the claim lead before the tick, so its run is claimed ahead and
    /// starts on the instant (its task waits for the tick); a tick whose
    /// overlap decision needs the runs in progress at the tick itself is
    /// put back until then.
    pub(super) async fn fire_due(&mut self) {
        let now = self.now();
        let mut claims: Vec<ClaimRequest> = Vec::new();
        let mut actions: Vec<TickAction> = Vec::new();
        // Per claim made ahead by the lead: the lead it was made with (its
        // slack tells whether the lead is long enough).
        let mut ahead: Vec<Option<Duration>> = Vec::new();
        let mut fired = 0;
        // A job's next tick can be due already (a worker running behind):
        // it waits for the next turn, so that a job never has two claims in
        // flight at once, which could let the later tick win the claim state
        // and leave the earlier one unrecorded.
        let mut deferred = Vec::new();
        // Jobs with a claim in this turn (a set: a turn may hold thousands).
        let mut claimed: HashSet<JobName> = HashSet::new();
        while fired < MAX_FIRES_PER_TURN {
            let Some((timer, due)) = self.timers.pop_due(now) else {
                break;
            };
            match timer {
                Timer::Tick(name) => {
                    if claimed.contains(&name) {
                        deferred.push((Timer::Tick(name), due));
                        continue;
                    }
                    let Some(slot) = self.jobs.get_mut(&name) else { continue };
                    let Some(tick) = slot.next_tick else { continue };
                    let at_tick = std::mem::take(&mut slot.claim_at_tick);
                    if tick > now && !self.may_claim_ahead(&name) {
                        if let Some(slot) = self.jobs.get_mut(&name) {
                            slot.claim_at_tick = true;
                        }
                        self.timers.set(Timer::Tick(name), tick);
                        continue;
                    }
                    fired += 1;
                    if let Some((request, action)) = self.prepare_tick(&name, tick).await {
                        claimed.insert(name);
                        claims.push(request);
                        actions.push(action);
                        let lead = Duration::try_from(tick.duration_since(due)).ok();
                        ahead.push(lead.filter(|_| !at_tick));
                    }
                }
                Timer::Recover(name) => {
                    fired += 1;
                    self.recover(&name).await;
                }
                Timer::Triggers(name) => {
                    fired += 1;
                    self.take_triggers(&name).await;
                }
            }
        }
        for (timer, due) in deferred {
            self.timers.set(timer, due);
        }
        if claims.is_empty() {
            return;
        }
        let outcomes = match self.deps.coord.claim(&claims).await {
            Ok(outcomes) => outcomes,
            Err(err) => {
                // The store is unreachable: the ticks stay unclaimed, so the
                // next owner (or this worker, recovering) accounts for them by
                // the catch-up policy instead of dropping them.
                tracing::warn!(%err, ticks = claims.len(), "cannot claim due ticks; they will be caught up");
                for (request, action) in claims.iter().zip(actions) {
                    self.hold_ambiguous(
                        request.job.clone(),
                        AmbiguousClaim {
                            tick: request.tick,
                            lease: request.lease,
                            run: request.run.clone(),
                            blocking: match action {
                                TickAction::Skip(blocking) => blocking,
                                TickAction::Run | TickAction::Broadcast => None,
                            },
                            broadcast: action == TickAction::Broadcast,
                            plan: None,
                            abandoned: Vec::new(),
                        },
                    );
                    self.recover_at(&request.job, now + SignedDuration::from_secs(1));
                }
                return;
            }
        };
        // Runs claimed ahead, by the lead they were claimed with and their tick.
        let observed: Vec<(Duration, Timestamp)> = claims
            .iter()
            .zip(&actions)
            .zip(&ahead)
            .filter_map(|((request, action), ahead)| {
                (*action == TickAction::Run)
                    .then_some(*ahead)?
                    .map(|lead| (lead, request.tick))
            })
            .collect();
        for ((request, outcome), action) in claims.into_iter().zip(outcomes).zip(actions) {
            self.apply_claim(request, outcome, action).await;
        }
        // The slack is counted to when the turn's runs were spawned, not to
        // the claim's answer: at thousands of claims a turn, spawning is a
        // good part of what the lead must cover.
        let spawned = self.now();
        self.lead.observe(
            spawned,
            observed
                .into_iter()
                .map(|(lead, tick)| (lead, tick.duration_since(spawned))),
        );
        self.deps
            .metrics
            .jobs_scheduled
            .store(self.timers.len() as u64, Ordering::Relaxed);
    }

    /// Sets the job's next timer and builds the claim for tick `due`; `None`
    /// when the tick is not this worker's to claim. The second value says
    /// what a won claim does: start its run, record the tick `skipped`
    /// (overlap forbidden), or hand it out (a broadcast job).
    pub(super) async fn prepare_tick(&mut self, name: &JobName, due: Timestamp) -> Option<(ClaimRequest, TickAction)> {
        let slot = self.jobs.get(name)?;
        if !slot.owned || slot.job.spec.paused {
            return None;
        }
        let job = slot.job.clone();
        let state_unknown = slot.state_revision.is_none();
        self.set_tick_timer(name, job.schedule.next_after(due));
        if state_unknown {
            // The claim state is unknown (after an error): recover instead,
            // which accounts for this tick through the catch-up policy.
            self.recover(name).await;
            return None;
        }
        let slot = self.jobs.get(name)?;
        if slot.last_tick.is_some_and(|last| last >= due) {
            return None;
        }
        let seen_revision = slot.state_revision.unwrap_or(0);
        let queued: Vec<Timestamp> = slot.catchup_queue.iter().copied().collect();
        let unconfirmed_plan = slot.unconfirmed_plan.as_deref().cloned();
        let running = self.running_runs(name);
        let decision = schedule::overlap_decision(job.spec.overlap, running.len());
        let start = match decision {
            OverlapDecision::Skip => false,
            OverlapDecision::Start => true,
            OverlapDecision::ReplaceAndStart => {
                self.replace_runs(name, &running).await;
                true
            }
        };
        let (run, action) = match (start, job.spec.broadcast) {
            (false, _) => (None, TickAction::Skip(running.first().copied())),
            (true, true) => (None, TickAction::Broadcast),
            (true, false) => (
                Some(self.running_entry(&job, RunId::generate(), due, Trigger::Schedule, 1)),
                TickAction::Run,
            ),
        };
        Some((
            ClaimRequest {
                job: name.clone(),
                tick: due,
                seen_revision,
                run,
                lease: self.lease,
                skipped: matches!(action, TickAction::Skip(_)),
                catchup: queued,
                plan: unconfirmed_plan,
            },
            action,
        ))
    }

    /// Runs of `job` in progress anywhere: this worker's, and others' as seen
    /// in `running/`.
    pub(super) fn running_runs(&self, job: &JobName) -> Vec<RunId> {
        let mut runs: Vec<RunId> = self.local_runs.of_job(job).to_vec();
        if let Some(remote) = self.remote_running.get(job) {
            runs.extend(remote.keys().filter(|id| !self.local_runs.contains_key(id)));
        }
        runs.sort();
        runs
    }

    /// Whether the job's next tick may be claimed ahead of it: its overlap
    /// decision cannot change by the tick (no run in progress, or overlap
    /// allowed), and it is no broadcast (whose shards start at once).
    fn may_claim_ahead(&self, name: &JobName) -> bool {
        let Some(slot) = self.jobs.get(name) else { return false };
        !slot.job.spec.broadcast && (slot.job.spec.overlap == Overlap::Allow || self.running_runs(name).is_empty())
    }

    /// Overlap `replace`: kills the job's runs, here directly and elsewhere
    /// through kill requests.
    pub(super) async fn replace_runs(&self, job: &JobName, runs: &[RunId]) {
        for run_id in runs {
            match self.local_runs.get(run_id) {
                Some(run) => run.kill.pull(StopReason::Killed),
                None => {
                    if let Err(err) = self.deps.coord.request_kill(job, KillTarget::Run(*run_id)).await {
                        tracing::warn!(%job, run = %run_id, %err, "cannot request a kill for overlap replace");
                    }
                }
            }
        }
    }

    pub(super) async fn apply_claim(&mut self, request: ClaimRequest, outcome: ClaimOutcome, action: TickAction) {
        let name = request.job.clone();
        match outcome {
            ClaimOutcome::Won { fence } => {
                let Some(slot) = self.jobs.get_mut(&name) else { return };
                slot.state_revision = Some(fence);
                slot.last_tick = Some(request.tick);
                slot.last_claim_skipped = request.skipped;
                let job = slot.job.clone();
                match (request.run, action) {
                    (Some(entry), _) => self.spawn_run(job, entry, fence),
                    // A run claim always carries its entry; nothing to do without one.
                    (None, TickAction::Run) => {}
                    (None, TickAction::Broadcast) => {
                        self.broadcast(&job, request.tick, Trigger::Schedule, None).await;
                    }
                    (None, TickAction::Skip(blocking_run)) => {
                        let record = self.skip_record(&job, request.tick, fence, blocking_run);
                        self.deps.metrics.run_ended(RunStatus::Skipped);
                        self.record_ended(&job, record).await;
                    }
                }
            }
            ClaimOutcome::Lost => {
                // Someone else moved the claim state: another worker took the
                // tick (fine), or the job was re-created. Re-read before the
                // next claim; recovery accounts for anything still unclaimed.
                self.deps.metrics.claims_lost.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(job = %name, tick = %request.tick, "claim lost");
                if let Some(slot) = self.jobs.get_mut(&name) {
                    slot.state_revision = None;
                }
                self.recover(&name).await;
            }
        }
    }

    pub(super) fn spawn_run(&mut self, job: Arc<Job>, entry: RunningEntry, fence: Revision) {
        self.spawn_run_with(job, entry, fence, None, None);
    }

    /// Starts a run task. `held`: the slot reserved for a run taken from
    /// another worker (`handed_off_from`); without one, the task waits for a
    /// slot, and a run that another live worker could run is offered to the
    /// others meanwhile (`worker/handoff.rs`).
    pub(super) fn spawn_run_with(
        &mut self,
        job: Arc<Job>,
        entry: RunningEntry,
        fence: Revision,
        held: Option<OwnedSemaphorePermit>,
        handed_off_from: Option<String>,
    ) {
        let kill = KillSwitch::new();
        let run_id = entry.run_id;
        let fenced = RunningEntry {
            fence: Some(fence),
            ..entry.clone()
        };
        let offered = Arc::new(AtomicBool::new(false));
        let offer = (held.is_none()
            && handed_off_from.is_none()
            && handoff::offerable(&entry)
            && placement::others_can_run(&job, &self.deps.info.id, self.workers.values()))
        .then(oneshot::channel);
        let (taken, offer) = match offer {
            Some((taken_tx, taken_rx)) => (
                Some(taken_tx),
                Some(Box::new(Offer {
                    coord: self.deps.coord.clone(),
                    job: job.clone(),
                    entry: fenced.clone(),
                    lease: self.current_lease.clone(),
                    offered: offered.clone(),
                    taken: taken_rx,
                    events: self.handoff_tx.clone(),
                    metrics: self.deps.metrics.clone(),
                })),
            ),
            None => (None, None),
        };
        self.kill_switches.insert(run_id, job.name.clone(), kill.clone());
        self.local_runs.insert(
            run_id,
            LocalRun {
                job: job.name.clone(),
                kill: kill.clone(),
                entry: fenced,
                offered,
                taken,
            },
        );
        let report = entry.result_token.clone().map(|token| {
            let url = self
                .deps
                .config
                .api_url
                .as_ref()
                .map(|api| format!("{}/api/v1/runs/{run_id}/result", api.trim_end_matches('/')));
            (ReportTo { url, token }, self.results.register(run_id))
        });
        // A scheduled run claimed ahead of its tick starts on the tick.
        let start_at = (entry.trigger == Trigger::Schedule)
            .then(|| Duration::try_from(entry.tick.duration_since(self.now())).ok())
            .flatten()
            .map(|wait| tokio::time::Instant::now() + wait);
        let gate = start_at.and_then(|at| self.clock.gate(entry.tick, at.into_std()));
        let spec = TaskSpec {
            start_at,
            gate,
            executor: self.deps.executors.for_kind(&job.spec.kind),
            job,
            entry,
            fence,
            kill,
            sink: self.run_sink.clone(),
            coord: self.deps.coord.clone(),
            metrics: self.deps.metrics.clone(),
            capacity: Capacity {
                semaphore: self.semaphore.clone(),
                held,
                offer,
            },
            handed_off_from,
            done: self.done_tx.clone(),
            shell_allowed: self.deps.info.allow_native,
            retention: self.deps.retention,
            alerts: self.deps.alerts.clone(),
            report,
            keyring: self.deps.keyring.clone(),
            caps: self.deps.config.caps,
        };
        self.runs.spawn(task::carry_out(Box::new(spec)));
    }

    /// Starts the next queued catch-up tick of `name` if none is running:
    /// one transaction publishes its run and writes the claim state without
    /// it, so a crash cannot leave a tick both started and listed.
    pub(super) async fn start_next_catchup(&mut self, name: &JobName) {
        let Some(slot) = self.jobs.get(name) else { return };
        if !slot.owned || slot.catchup_running {
            return;
        }
        let (Some(seen), Some(last_tick), Some(&tick)) =
            (slot.state_revision, slot.last_tick, slot.catchup_queue.front())
        else {
            return;
        };
        let job = slot.job.clone();
        let state = JobState {
            last_tick,
            lease: Some(self.lease.0),
            skipped: slot.last_claim_skipped,
            catchup: slot.catchup_queue.iter().skip(1).copied().collect(),
            plan: slot.unconfirmed_plan.as_deref().cloned(),
        };
        let entry = self.running_entry(&job, RunId::generate(), tick, Trigger::Catchup, 1);
        let outcome = self
            .deps
            .coord
            .start_queued_run(name, &entry, self.lease, &state, seen)
            .await;
        let retry_at = self.now() + SignedDuration::from_secs(1);
        let Some(slot) = self.jobs.get_mut(name) else { return };
        slot.catchup_queue.pop_front();
        match outcome {
            Ok(Some(fence)) => {
                slot.state_revision = Some(fence);
                slot.catchup_running = true;
                tracing::info!(job = %name, %tick, "catch-up run");
                self.spawn_run(job, entry, fence);
            }
            Ok(None) => {
                // The state moved: another worker took the job over, and
                // records the queued ticks it found there.
                slot.catchup_queue.clear();
                slot.state_revision = None;
                self.recover_at(name, retry_at);
            }
            Err(err) => {
                // The transaction may have gone through unanswered: withdraw
                // the run it would have published, and record the tick under
                // the id a later owner would use, should the state still
                // list it. Recovery (in a second) re-reads the rest.
                slot.state_revision = None;
                tracing::warn!(job = %name, %tick, %err, "cannot start a catch-up run; recording it missed");
                self.withdraw_entry(name.clone(), entry.run_id);
                self.record_unstarted(&job, &[tick], 0, &format!("catch-up run could not start: {err}"))
                    .await;
                self.recover_at(name, retry_at);
            }
        }
    }

    pub(super) async fn on_run_finished(&mut self, done: TaskDone) {
        self.local_runs.remove(&done.run_id);
        self.kill_switches.remove(&done.run_id);
        self.results.forget(&done.run_id);
        while self.runs.try_join_next().is_some() {}
        // A tick put back because this job had runs in progress may be
        // claimed ahead now that they are over.
        if let Some(slot) = self.jobs.get(&done.job)
            && slot.claim_at_tick
            && let Some(tick) = slot.next_tick
            && self.running_runs(&done.job).is_empty()
        {
            // A moment later, so that the runs of a burst ending together
            // are claimed together.
            let soon = self.now() + SignedDuration::from_millis(5);
            self.timers.set(
                Timer::Tick(done.job.clone()),
                soon.max(self.lead.act_at(tick)).min(tick),
            );
        }
        // A slot freed: an offer nobody had room for may fit here now.
        self.take_offers();
        // Its retry and dependents were stored with the removal of its
        // entry; what is left is the next queued catch-up tick.
        if done.trigger == Trigger::Catchup
            && let Some(slot) = self.jobs.get_mut(&done.job)
        {
            slot.catchup_running = false;
            self.start_next_catchup(&done.job).await;
        }
    }
}
