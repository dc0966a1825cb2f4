//! The worker's scheduling state and its event loop: one task owns every
//! job slot, timer, run and pending request, and reacts to watch updates,
//! due timers, finished runs, a lost lease and shutdown. The reactions live
//! in the child modules, one family each: `jobs` (the job watch, ownership,
//! re-planning), `recovery` (taking a job up: claim state, catch-up plans,
//! claims whose answer was lost), `lost` (runs of workers that vanished),
//! `triggers` (run-now, dependents, retries, broadcast shards), `dispatch`
//! (due ticks → claims → run tasks), `handoff` (other workers' offers of
//! runs they have no slot for, taken while this worker has free slots) and
//! `records` (the records of ticks that did not run).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::coord::{Family, KeyValue, LeaseId, PlanInputs, Revision, RunningEntry, StoreError, WatchUpdate};
use crate::exec::{KillSwitch, StopReason};
use crate::ids::{JobName, RunId};
use crate::job::Job;
use crate::placement::WorkerInfo;
use crate::schedule::{self, TimerQueue};
use crate::worker::WorkerDeps;
use crate::worker::handoff::HandoffEvent;
use crate::worker::kill::KillSwitches;
use crate::worker::results::ResultWaiters;
use crate::worker::task::TaskDone;
use crate::worker::watchers::coalesce;

mod dispatch;
mod handoff;
mod jobs;
mod lost;
mod records;
mod recovery;
mod triggers;

/// What a timer is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Timer {
    /// The job's next tick, at `JobSlot::next_tick`; the deadline is earlier
    /// by the claim lead (`schedule::ClaimLead`), so that the claim is done
    /// when the tick comes.
    Tick(JobName),
    /// Read the job's claim state again and re-plan it (after an error or a
    /// lost claim); the ticks that passed meanwhile follow the catch-up policy.
    Recover(JobName),
    /// The job's earliest trigger request not to start before now (a retry).
    Triggers(JobName),
}

pub(super) struct JobSlot {
    job: Arc<Job>,
    /// Whether placement gives this job to this worker.
    owned: bool,
    /// Mod revision of `state/<job>` as last seen; `None` when unknown.
    state_revision: Option<Revision>,
    last_tick: Option<Timestamp>,
    /// The tick the job's `Timer::Tick` is for.
    next_tick: Option<Timestamp>,
    /// Set when the tick could not be claimed ahead and its timer was put
    /// back to the tick itself; its claim then says nothing about the lead.
    claim_at_tick: bool,
    /// Catch-up ticks (`all` policy) still to run, one after another; the
    /// claim state lists the same ticks (`JobState::catchup`).
    catchup_queue: VecDeque<Timestamp>,
    catchup_running: bool,
    /// Whether the claim state says its last claim skipped its tick.
    last_claim_skipped: bool,
    /// The inputs of this worker's last catch-up plan while its records may
    /// still be only in the sink: every claim of the job carries them into
    /// the claim state (`JobState::plan`) until the sink has stored them.
    /// Boxed: rare, and the slot map holds one slot per job.
    unconfirmed_plan: Option<Box<PlanInputs>>,
}

pub(super) struct LocalRun {
    job: JobName,
    kill: KillSwitch,
    entry: RunningEntry,
    /// Set while the run may be offered to other workers: its entry is then
    /// not published again on re-registration (a taker may own it).
    offered: Arc<AtomicBool>,
    /// Tells the run task that another worker took its offered run; `None`
    /// for a run that is never offered.
    taken: Option<oneshot::Sender<String>>,
}

/// This worker's runs in progress, by run id and by job (a tick's overlap
/// decision asks for one job's runs; a burst makes thousands of them).
#[derive(Default)]
pub(super) struct LocalRuns {
    runs: HashMap<RunId, LocalRun>,
    by_job: HashMap<JobName, Vec<RunId>>,
}

impl LocalRuns {
    pub(super) fn insert(&mut self, run_id: RunId, run: LocalRun) {
        self.by_job.entry(run.job.clone()).or_default().push(run_id);
        self.runs.insert(run_id, run);
    }

    pub(super) fn remove(&mut self, run_id: &RunId) -> Option<LocalRun> {
        let run = self.runs.remove(run_id)?;
        if let Some(ids) = self.by_job.get_mut(&run.job) {
            ids.retain(|id| id != run_id);
            if ids.is_empty() {
                self.by_job.remove(&run.job);
            }
        }
        Some(run)
    }

    pub(super) fn get(&self, run_id: &RunId) -> Option<&LocalRun> {
        self.runs.get(run_id)
    }

    pub(super) fn get_mut(&mut self, run_id: &RunId) -> Option<&mut LocalRun> {
        self.runs.get_mut(run_id)
    }

    pub(super) fn contains_key(&self, run_id: &RunId) -> bool {
        self.runs.contains_key(run_id)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &LocalRun> {
        self.runs.values()
    }

    pub(super) fn len(&self) -> usize {
        self.runs.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The runs of `job` in progress here.
    pub(super) fn of_job(&self, job: &JobName) -> &[RunId] {
        self.by_job.get(job).map_or(&[], Vec::as_slice)
    }
}

pub(super) struct State {
    pub(super) deps: WorkerDeps,
    pub(super) lease: LeaseId,
    pub(super) jobs: HashMap<JobName, JobSlot>,
    pub(super) workers: BTreeMap<String, WorkerInfo>,
    pub(super) timers: TimerQueue<Timer>,
    /// How far ahead of their ticks scheduled runs are claimed.
    pub(super) lead: schedule::ClaimLead,
    /// Opens the ticks of runs claimed ahead, on the instant.
    pub(super) clock: crate::worker::clock::TickClock,
    /// The sink the run tasks share (`deps.sink`, cloned once).
    pub(super) run_sink: Arc<crate::logstore::Sink>,
    /// Runs published under `running/` by any worker, by job.
    pub(super) remote_running: HashMap<JobName, HashMap<RunId, RunningEntry>>,
    pub(super) local_runs: LocalRuns,
    pub(super) kill_switches: KillSwitches,
    /// The lease the keep-alive task renews; replaced on re-registration.
    pub(super) current_lease: Arc<AtomicI64>,
    pub(super) semaphore: Arc<Semaphore>,
    pub(super) runs: JoinSet<()>,
    pub(super) done_tx: mpsc::Sender<TaskDone>,
    pub(super) done_rx: mpsc::Receiver<TaskDone>,
    /// Catch-up plans whose records the sink has stored, by job.
    pub(super) plans_stored_tx: mpsc::Sender<(JobName, PlanInputs)>,
    pub(super) plans_stored_rx: mpsc::Receiver<(JobName, PlanInputs)>,
    /// Manual-run requests not (yet) taken, by key: for jobs this worker does
    /// not own (yet). Taken when the job becomes this worker's; forgotten when
    /// another worker takes them (their key is deleted).
    pub(super) pending_triggers: BTreeMap<String, (JobName, KeyValue)>,
    /// Claims whose transaction failed without an answer: the store may or
    /// may not have committed them. Resolved at the job's next recovery,
    /// which reads the claim state back.
    pub(super) ambiguous: HashMap<JobName, AmbiguousClaim>,
    /// Async runs waiting for their reported result, shared with the
    /// results watcher.
    pub(super) results: ResultWaiters,
    /// Other workers' offers of runs they have no free slot for, by key.
    pub(super) open_offers: BTreeMap<String, (JobName, RunningEntry)>,
    /// The offers this worker is trying to take (one try each at a time).
    pub(super) taking: BTreeSet<String>,
    /// Hand-off news from take attempts and run tasks.
    pub(super) handoff_tx: mpsc::Sender<HandoffEvent>,
    pub(super) handoff_rx: mpsc::Receiver<HandoffEvent>,
    /// Cancelled when the worker shuts down: it takes no more offers.
    pub(super) stopping: CancellationToken,
}

/// What a won tick claim does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TickAction {
    /// Start the run the claim published.
    Run,
    /// Record the tick `skipped`: the named run was still running.
    Skip(Option<RunId>),
    /// Hand the tick out to every eligible worker (a broadcast job).
    Broadcast,
}

/// A claim sent in a transaction whose outcome is unknown.
pub(super) struct AmbiguousClaim {
    tick: Timestamp,
    lease: LeaseId,
    /// The run the claim would have published.
    run: Option<RunningEntry>,
    /// The run that made a tick claim a `skipped` record.
    blocking: Option<RunId>,
    /// A broadcast tick, whose shards were never handed out.
    broadcast: bool,
    /// For a catch-up claim: the plan it would have carried out.
    plan: Option<schedule::CatchupPlan>,
    /// For a catch-up claim: another claimant's queued ticks it took over.
    abandoned: Vec<Timestamp>,
}

/// Why a queued catch-up tick that another claimant never started is `missed`.
pub(super) const ABANDONED: &str =
    "its catch-up run was queued on a worker that stopped or gave the job up before starting it";

/// The longest the loop sleeps without looking at the clock again, so a
/// wall-clock jump delays ticks by at most this much.
pub(super) const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Above this many jobs to recover at once, claim states are read with one
/// range read instead of one read per job.
pub(super) const BULK_STATE_READ: usize = 16;

/// … and with one range over every job's state only when they are at least
/// 1/`BULK_STATE_SHARE` of the jobs; fewer are read key by key, concurrently.
pub(super) const BULK_STATE_SHARE: usize = 4;

/// Most due timers handled per loop turn, so watch events and finished runs
/// are not starved when very many jobs fire at once.
pub(super) const MAX_FIRES_PER_TURN: usize = 4096;

impl State {
    pub(super) async fn event_loop(
        &mut self,
        shutdown: &CancellationToken,
        mut watch_rx: mpsc::Receiver<(Family, WatchUpdate)>,
        mut lease_lost: mpsc::Receiver<()>,
    ) -> anyhow::Result<()> {
        let mut retry_triggers = tokio::time::interval(Duration::from_secs(2));
        retry_triggers.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Due timers and the other inputs take turns: a burst of finished
        // runs (thousands a second) must not hold back the next ticks, nor
        // a long run of due timers the finished runs and watch updates.
        let mut timers_turn = true;
        let mut done = Vec::new();
        let mut updates = Vec::new();
        let mut watches_open = true;
        loop {
            if std::mem::replace(&mut timers_turn, false) && self.timers.next_due().is_some_and(|due| due <= self.now())
            {
                self.fire_due().await;
                continue;
            }
            timers_turn = true;
            let sleep = match self.timers.next_due() {
                Some(due) => {
                    let wait = due.duration_since(self.now());
                    Duration::try_from(wait).unwrap_or(Duration::ZERO).min(MAX_SLEEP)
                }
                None => MAX_SLEEP,
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                finished = self.done_rx.recv_many(&mut done, 1024) => {
                    // All the runs that ended meanwhile at once: a burst ends
                    // thousands together, and each would otherwise wait its
                    // turn with the due timers.
                    for done in done.drain(..finished) {
                        self.on_run_finished(done).await;
                    }
                }
                Some((job, plan)) = self.plans_stored_rx.recv() => self.on_plan_stored(&job, &plan).await,
                Some(event) = self.handoff_rx.recv() => self.on_handoff(event).await,
                received = watch_rx.recv_many(&mut updates, 64), if watches_open => {
                    watches_open = received > 0;
                    for (family, update) in coalesce(updates.drain(..)) {
                        self.on_watch(family, update).await;
                    }
                }
                Some(()) = lease_lost.recv() => {
                    tracing::warn!("worker lease expired; re-registering and resynchronising");
                    if let Err(err) = self.reregister().await {
                        tracing::error!(%err, "cannot re-register the worker; will retry");
                    }
                }
                _ = retry_triggers.tick() => self.retry_pending_triggers().await,
                () = tokio::time::sleep(sleep) => self.fire_due().await,
            }
        }
    }

    /// The worker's clock: the system clock, shifted by the configured test
    /// offset (used to show that a skewed worker cannot run a tick twice).
    pub(super) fn now(&self) -> Timestamp {
        let now = Timestamp::now();
        match self.deps.config.clock_offset_ms {
            0 => now,
            offset => now.checked_add(SignedDuration::from_millis(offset)).unwrap_or(now),
        }
    }

    pub(super) async fn on_watch(&mut self, family: Family, update: WatchUpdate) {
        match family {
            Family::Jobs => self.on_jobs(update).await,
            Family::Workers => self.on_workers(update).await,
            Family::Running => self.on_running(update).await,
            Family::Trigger => self.on_triggers(update).await,
            Family::Handoff => self.on_offers(update).await,
            Family::Kill | Family::State | Family::Modules | Family::Results | Family::Secrets => {}
        }
    }

    /// Requested runs whose start failed earlier (store errors) get another
    /// try; shards of workers that are gone are accounted for.
    pub(super) async fn retry_pending_triggers(&mut self) {
        let waiting: BTreeSet<JobName> = self
            .pending_triggers
            .values()
            .map(|(job, _)| job.clone())
            .filter(|job| self.jobs.contains_key(job))
            .collect();
        for name in waiting {
            self.take_triggers(&name).await;
        }
        self.reap_orphan_shards().await;
        // An offer nobody had room for when it appeared stays open.
        self.take_offers();
    }

    /// After losing the lease: a new lease, the worker entry and the entries of
    /// runs still in progress published again, and every owned job's claim
    /// state re-read before it is claimed again.
    pub(super) async fn reregister(&mut self) -> Result<(), StoreError> {
        let lease = self.deps.coord.store().lease_grant(self.deps.lease_ttl).await?;
        self.deps.coord.register_worker(&self.deps.info, lease).await?;
        for run in self.local_runs.values() {
            // An offered run's entry may be a taker's now; the offer's
            // outcome decides who has it (`worker/handoff.rs`).
            if run.offered.load(Ordering::SeqCst) {
                continue;
            }
            self.deps.coord.start_run(&run.job, &run.entry, lease).await?;
        }
        self.lease = lease;
        self.current_lease.store(lease.0, Ordering::Relaxed);
        let owned: Vec<JobName> = self
            .jobs
            .iter()
            .filter(|(_, s)| s.owned)
            .map(|(n, _)| n.clone())
            .collect();
        self.replan(owned).await;
        Ok(())
    }

    /// Shutdown: runs get the drain timeout to finish, then are killed; the
    /// lease is revoked so other workers take over at once.
    pub(super) async fn drain(&mut self) {
        if !self.local_runs.is_empty() {
            tracing::info!(runs = self.local_runs.len(), timeout = ?self.deps.drain_timeout, "waiting for runs to finish");
        }
        let deadline = tokio::time::Instant::now() + self.deps.drain_timeout;
        let mut killed = false;
        // Runs offered to other workers stay offered while they wait, so a
        // draining worker still hands them off; it takes no more offers
        // itself, and a take already under way is started (stopped at once
        // past the deadline) so that its run is accounted for here.
        self.stopping.cancel();
        // Finished runs report on `done_rx`; it is read (and the reports
        // dropped: no retries at shutdown) so no run task blocks on it.
        while !self.runs.is_empty() || !self.taking.is_empty() {
            tokio::select! {
                Some(_) = self.runs.join_next(), if !self.runs.is_empty() => {}
                Some(done) = self.done_rx.recv() => {
                    self.local_runs.remove(&done.run_id);
                    self.kill_switches.remove(&done.run_id);
                }
                Some(event) = self.handoff_rx.recv() => match event {
                    HandoffEvent::Attempt { key, taken } => {
                        self.taking.remove(&key);
                        if let Some(taken) = taken {
                            let run_id = taken.entry.run_id;
                            self.start_taken(taken);
                            if let (true, Some(run)) = (killed, self.local_runs.get(&run_id)) {
                                run.kill.pull(StopReason::Shutdown);
                            }
                        }
                    }
                    HandoffEvent::Vanished { job, entry } => self.record_vanished(&job, entry).await,
                },
                () = tokio::time::sleep_until(deadline), if !killed => {
                    tracing::warn!(runs = self.local_runs.len(), "drain timeout; killing remaining runs");
                    for run in self.local_runs.values() {
                        run.kill.pull(StopReason::Shutdown);
                    }
                    killed = true;
                }
            }
        }
    }

    /// Holds a claim whose transaction failed without an answer until the
    /// job's next recovery reads the claim state back; the state revision
    /// this worker knew is no longer to be trusted.
    pub(super) fn hold_ambiguous(&mut self, job: JobName, claim: AmbiguousClaim) {
        if let Some(slot) = self.jobs.get_mut(&job) {
            slot.state_revision = None;
        }
        self.ambiguous.insert(job, claim);
    }
}
