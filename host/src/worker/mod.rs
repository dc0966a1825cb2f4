//! The worker: watch → schedule → claim → execute → report.
//!
//! One task owns all scheduling state (jobs, timers, ownership, local runs)
//! and reacts to four inputs: watch updates from the coordination store, due
//! timers, finished runs, and shutdown. Runs execute in their own tasks,
//! bounded by a semaphore of the worker's capacity, and report back through a
//! channel. Policies come from `schedule` (pure); this module does the I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use anyhow::Context;
use jiff::{SignedDuration, Timestamp};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::alert::AlertHandle;
use crate::config::{Role, WorkerConfig};
use crate::coord::{
    ClaimOutcome, ClaimRequest, Coordinator, Family, JobState, KeyValue, KillTarget, LeaseId, PlanInputs, Revision,
    RunReport, RunningEntry, StoreError, TriggerRequest, WatchEvent, WatchUpdate, WorkerInfo,
};
use crate::exec::{Executor, KillSwitch, ReportTo, StopReason};
use crate::ids::{JobName, RunId};
use crate::job::{CatchupPolicy, Completion, Job, JobKind};
use crate::logstore::Sink;
use crate::metrics::Metrics;
use crate::run::{RunRecord, RunStatus, Shard, Trigger};
use crate::schedule::{self, CatchupLimits, OverlapDecision, TimerQueue};

mod runner;
#[cfg(test)]
mod tests;

use runner::{RunFinished, RunSpec};

/// The executors a worker has, by job kind. A kind without one is not
/// advertised, so placement never gives this worker such jobs.
#[derive(Clone, Default)]
pub struct Executors {
    pub shell: Option<Arc<dyn Executor>>,
    pub wasm: Option<Arc<dyn Executor>>,
    pub http: Option<Arc<dyn Executor>>,
}

impl Executors {
    fn for_kind(&self, kind: &JobKind) -> Option<Arc<dyn Executor>> {
        match kind {
            JobKind::Shell(_) => self.shell.clone(),
            JobKind::Wasm(_) => self.wasm.clone(),
            JobKind::Http(_) => self.http.clone(),
        }
    }
}

/// Module bytes for the WASM executor, read from the coordination store.
#[derive(Debug, Clone)]
pub struct StoredModules {
    coord: Coordinator,
}

impl StoredModules {
    pub fn new(coord: Coordinator) -> Self {
        Self { coord }
    }
}

#[async_trait::async_trait]
impl crate::exec::wasm::ModuleSource for StoredModules {
    async fn module_bytes(&self, digest: &crate::ids::ModuleDigest) -> anyhow::Result<Vec<u8>> {
        self.coord
            .module_bytes(digest)
            .await?
            .ok_or_else(|| anyhow::anyhow!("module {digest} is not stored (was it deleted?)"))
    }
}

/// What a worker is built from.
pub struct WorkerDeps {
    pub coord: Coordinator,
    pub sink: Sink,
    pub executors: Executors,
    pub metrics: Arc<Metrics>,
    pub config: WorkerConfig,
    /// This worker's published identity (id, labels, capacity, native permission).
    pub info: WorkerInfo,
    pub lease_ttl: Duration,
    /// How long shutdown waits for runs to end before killing them.
    pub drain_timeout: Duration,
    /// How long run history is kept when a job sets no retention.
    pub retention: Duration,
    /// Where ended runs are reported for alerting; `None`: no alerts configured.
    pub alerts: Option<AlertHandle>,
}

pub struct Worker {
    deps: WorkerDeps,
}

impl Worker {
    pub fn new(deps: WorkerDeps) -> Self {
        Self { deps }
    }

    /// The id this worker registers under.
    pub fn id(&self) -> &str {
        &self.deps.info.id
    }

    /// Runs until `shutdown` is cancelled, then drains: no new claims, runs
    /// get `drain_timeout` to finish before they are killed, the lease is
    /// revoked. Returns once every run has ended and reported.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let deps = self.deps;
        let span = tracing::info_span!("worker", id = %deps.info.id);
        async move {
            let lease = deps
                .coord
                .store()
                .lease_grant(deps.lease_ttl)
                .await
                .context("cannot obtain the worker's lease")?;
            deps.coord
                .register_worker(&deps.info, lease)
                .await
                .context("cannot register the worker")?;
            tracing::info!(
                capacity = deps.info.capacity,
                native = deps.info.allow_native,
                "worker registered"
            );
            let (done_tx, done_rx) = mpsc::channel(1024);
            let (plans_stored_tx, plans_stored_rx) = mpsc::channel(64);
            let (watch_tx, watch_rx) = mpsc::channel(64);
            let (lease_lost_tx, lease_lost_rx) = mpsc::channel(1);
            let watchers = CancellationToken::new();
            let kill_switches = KillSwitches::default();
            let current_lease = Arc::new(AtomicI64::new(lease.0));
            let mut helper_tasks = JoinSet::new();
            for family in [Family::Workers, Family::Jobs, Family::Running, Family::Trigger] {
                helper_tasks.spawn(forward_watch(
                    deps.coord.clone(),
                    family,
                    watch_tx.clone(),
                    watchers.clone(),
                ));
            }
            drop(watch_tx);
            // Kills and lease keep-alives run beside the scheduling loop so a
            // long burst of scheduling work can delay neither.
            helper_tasks.spawn(watch_kills(deps.coord.clone(), kill_switches.clone(), watchers.clone()));
            let results = ResultWaiters::default();
            helper_tasks.spawn(watch_results(deps.coord.clone(), results.clone(), watchers.clone()));
            helper_tasks.spawn(keep_lease(
                deps.coord.clone(),
                current_lease.clone(),
                deps.lease_ttl,
                lease_lost_tx,
                watchers.clone(),
            ));
            let mut state = State {
                semaphore: Arc::new(Semaphore::new(deps.info.capacity)),
                deps,
                lease,
                jobs: HashMap::new(),
                workers: BTreeMap::new(),
                timers: TimerQueue::new(),
                remote_running: HashMap::new(),
                local_runs: HashMap::new(),
                kill_switches,
                current_lease,
                runs: JoinSet::new(),
                done_tx,
                done_rx,
                plans_stored_tx,
                plans_stored_rx,
                pending_triggers: BTreeMap::new(),
                ambiguous: HashMap::new(),
                results,
            };
            let result = state.event_loop(&shutdown, watch_rx, lease_lost_rx).await;
            // Runs drain while the kill watcher and the lease keeper still work.
            state.drain().await;
            watchers.cancel();
            while helper_tasks.join_next().await.is_some() {}
            if let Err(err) = state.deps.coord.store().lease_revoke(state.lease).await {
                tracing::warn!(%err, "cannot revoke the worker lease; it will expire");
            }
            result
        }
        .instrument(span)
        .await
    }
}

/// What a timer is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Timer {
    Tick(JobName),
    /// The job's earliest trigger request not to start before now (a retry).
    Triggers(JobName),
}

struct JobSlot {
    job: Arc<Job>,
    /// Whether placement gives this job to this worker.
    owned: bool,
    /// Mod revision of `state/<job>` as last seen; `None` when unknown.
    state_revision: Option<Revision>,
    last_tick: Option<Timestamp>,
    /// Catch-up ticks (`all` policy) still to run, one after another; the
    /// claim state lists the same ticks (`JobState::catchup`).
    catchup_queue: VecDeque<Timestamp>,
    catchup_running: bool,
    /// Whether the claim state says its last claim skipped its tick.
    last_claim_skipped: bool,
    /// The inputs of this worker's last catch-up plan while its records may
    /// still be only in the sink: every claim of the job carries them into
    /// the claim state (`JobState::plan`) until the sink has stored them.
    unconfirmed_plan: Option<PlanInputs>,
}

struct LocalRun {
    job: JobName,
    kill: KillSwitch,
    entry: RunningEntry,
}

/// The kill switches of this worker's runs, shared with the kill watcher so a
/// kill request reaches a run without waiting for the scheduling loop.
#[derive(Clone, Default)]
struct KillSwitches(Arc<std::sync::Mutex<HashMap<RunId, (JobName, KillSwitch)>>>);

impl KillSwitches {
    fn insert(&self, run_id: RunId, job: JobName, kill: KillSwitch) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(run_id, (job, kill));
        }
    }

    fn remove(&self, run_id: &RunId) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(run_id);
        }
    }

    /// Pulls the switches of the runs a kill request names.
    fn pull(&self, job: &JobName, target: KillTarget) {
        let Ok(map) = self.0.lock() else { return };
        for (run_id, (run_job, kill)) in map.iter() {
            let hit = run_job == job
                && match target {
                    KillTarget::Run(target) => target == *run_id,
                    KillTarget::All => true,
                };
            if hit {
                tracing::info!(%job, run = %run_id, "kill requested");
                kill.pull(StopReason::Killed);
            }
        }
    }
}

struct State {
    deps: WorkerDeps,
    lease: LeaseId,
    jobs: HashMap<JobName, JobSlot>,
    workers: BTreeMap<String, WorkerInfo>,
    timers: TimerQueue<Timer>,
    /// Runs published under `running/` by any worker, by job.
    remote_running: HashMap<JobName, HashMap<RunId, RunningEntry>>,
    local_runs: HashMap<RunId, LocalRun>,
    kill_switches: KillSwitches,
    /// The lease the keep-alive task renews; replaced on re-registration.
    current_lease: Arc<AtomicI64>,
    semaphore: Arc<Semaphore>,
    runs: JoinSet<()>,
    done_tx: mpsc::Sender<RunFinished>,
    done_rx: mpsc::Receiver<RunFinished>,
    /// Catch-up plans whose records the sink has stored, by job.
    plans_stored_tx: mpsc::Sender<(JobName, PlanInputs)>,
    plans_stored_rx: mpsc::Receiver<(JobName, PlanInputs)>,
    /// Manual-run requests not (yet) taken, by key: for jobs this worker does
    /// not own (yet). Taken when the job becomes this worker's; forgotten when
    /// another worker takes them (their key is deleted).
    pending_triggers: BTreeMap<String, (JobName, KeyValue)>,
    /// Claims whose transaction failed without an answer: the store may or
    /// may not have committed them. Resolved at the job's next recovery,
    /// which reads the claim state back.
    ambiguous: HashMap<JobName, AmbiguousClaim>,
    /// Async runs waiting for their reported result, shared with the
    /// results watcher.
    results: ResultWaiters,
}

/// What a won tick claim does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TickAction {
    /// Start the run the claim published.
    Run,
    /// Record the tick `skipped`: the named run was still running.
    Skip(Option<RunId>),
    /// Hand the tick out to every eligible worker (a broadcast job).
    Broadcast,
}

/// A claim sent in a transaction whose outcome is unknown.
struct AmbiguousClaim {
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
const ABANDONED: &str = "its catch-up run was queued on a worker that stopped or gave the job up before starting it";

/// The longest the loop sleeps without looking at the clock again, so a
/// wall-clock jump delays ticks by at most this much.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Above this many jobs to recover at once, claim states are read with one
/// range read instead of one read per job.
const BULK_STATE_READ: usize = 16;

/// Most due timers handled per loop turn, so watch events and finished runs
/// are not starved when very many jobs fire at once.
const MAX_FIRES_PER_TURN: usize = 4096;

impl State {
    async fn event_loop(
        &mut self,
        shutdown: &CancellationToken,
        mut watch_rx: mpsc::Receiver<(Family, WatchUpdate)>,
        mut lease_lost: mpsc::Receiver<()>,
    ) -> anyhow::Result<()> {
        let mut retry_triggers = tokio::time::interval(Duration::from_secs(2));
        retry_triggers.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
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
                Some(done) = self.done_rx.recv() => self.on_run_finished(done).await,
                Some((job, plan)) = self.plans_stored_rx.recv() => self.on_plan_stored(&job, &plan).await,
                Some((family, update)) = watch_rx.recv() => self.on_watch(family, update).await,
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
    fn now(&self) -> Timestamp {
        let now = Timestamp::now();
        match self.deps.config.clock_offset_ms {
            0 => now,
            offset => now.checked_add(SignedDuration::from_millis(offset)).unwrap_or(now),
        }
    }

    // ---- lease ---------------------------------------------------------------

    /// Requested runs whose start failed earlier (store errors) get another
    /// try; shards of workers that are gone are accounted for.
    async fn retry_pending_triggers(&mut self) {
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
    }

    /// After losing the lease: a new lease, the worker entry and the entries of
    /// runs still in progress published again, and every owned job's claim
    /// state re-read before it is claimed again.
    async fn reregister(&mut self) -> Result<(), StoreError> {
        let lease = self.deps.coord.store().lease_grant(self.deps.lease_ttl).await?;
        self.deps.coord.register_worker(&self.deps.info, lease).await?;
        for run in self.local_runs.values() {
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

    // ---- watches -------------------------------------------------------------

    async fn on_watch(&mut self, family: Family, update: WatchUpdate) {
        match family {
            Family::Jobs => self.on_jobs(update).await,
            Family::Workers => self.on_workers(update).await,
            Family::Running => self.on_running(update).await,
            Family::Trigger => self.on_triggers(update).await,
            Family::Kill | Family::State | Family::Modules | Family::Results => {}
        }
    }

    async fn on_jobs(&mut self, update: WatchUpdate) {
        let mut replan = Vec::new();
        match update {
            WatchUpdate::Snapshot(kvs) => {
                let mut present = HashSet::new();
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
                            if let Some((name, true)) = self.upsert_job(&kv) {
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
    fn upsert_job(&mut self, kv: &KeyValue) -> Option<(JobName, bool)> {
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

    /// Re-plans jobs whose timing or ownership changed: owned ones are
    /// recovered — claim state read, ticks that passed unclaimed handled by
    /// the catch-up policy, next timer set, pending manual runs started —
    /// and the others lose their timer. Work is batched so a snapshot or a
    /// membership change of thousands of jobs costs a handful of round
    /// trips: one range read of all claim states, and one packed claim for
    /// all the jobs with ticks to account for. Jobs whose claim is lost
    /// (someone moved their state meanwhile) are re-read and retried.
    async fn replan(&mut self, names: Vec<JobName>) {
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
        let with_triggers = owned.clone();
        for _round in 0..3 {
            if owned.is_empty() {
                break;
            }
            owned = self.recover_round(owned).await;
        }
        for name in owned {
            // Still contended after three rounds: try again shortly.
            self.timers
                .set(Timer::Tick(name), self.now() + SignedDuration::from_secs(1));
        }
        for name in with_triggers {
            // A queue taken up again after an error resumes here.
            self.start_next_catchup(&name).await;
            if self.pending_triggers.values().any(|(job, _)| *job == name) {
                self.take_triggers(&name).await;
            }
        }
        self.deps
            .metrics
            .jobs_scheduled
            .store(self.timers.len() as u64, Ordering::Relaxed);
    }

    /// One round of recovery for `names`; returns the jobs whose claim was lost.
    async fn recover_round(&mut self, names: Vec<JobName>) -> Vec<JobName> {
        let mut states = if names.len() > BULK_STATE_READ {
            match self.deps.coord.all_states().await {
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
                    self.timers.set(Timer::Tick(name), now + SignedDuration::from_secs(1));
                    continue;
                }
            };
            if let Some(state) = &state
                && state.skipped
                && state.lease != Some(self.lease.0)
            {
                let mut record = self.skip_record(&job, state.last_tick, revision, None);
                record.error = Some(format!(
                    "previous run was still running (overlap: forbid); recorded by {} on taking the job over, \
                     as the worker that skipped the tick had not recorded it",
                    self.deps.info.id
                ));
                unconfirmed.push(record);
            }
            if let Some(state) = &state
                && state.lease != Some(self.lease.0)
                && let Some(inputs) = &state.plan
            {
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
                            self.timers.set(Timer::Tick(name), now + SignedDuration::from_secs(1));
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
                            slot.unconfirmed_plan = Some(inputs.clone());
                        }
                        self.confirm_plans_stored(vec![(name.clone(), inputs)]);
                    }
                }
            }
            // Queued catch-up ticks the state lists are this worker's to run
            // only if it made the claim and still holds the same queue;
            // otherwise their claimant stopped or gave the job up, and they
            // are recorded `missed` once this worker's claim wins.
            let listed = state.as_ref().map(|s| s.catchup.clone()).unwrap_or_default();
            let keep = state.as_ref().is_some_and(|s| s.lease == Some(self.lease.0)) && listed == own_queue;
            let (kept, abandoned) = if keep {
                (listed, Vec::new())
            } else {
                (Vec::new(), listed)
            };
            let last_skipped = state.as_ref().is_some_and(|s| s.skipped);
            let last_tick = state.map(|s| s.last_tick);
            if let Some(slot) = self.jobs.get_mut(&name) {
                slot.state_revision = Some(revision);
                slot.last_tick = last_tick;
                slot.last_claim_skipped = last_skipped;
                if !keep {
                    slot.catchup_queue.clear();
                }
            }
            let after = last_tick.map_or(job.meta.active_since, |t| t.max(job.meta.active_since));
            let plan = schedule::plan_catchup(&job.schedule, job.spec.catchup, after, now, limits);
            if plan.is_empty() && abandoned.is_empty() {
                self.set_tick_timer(&name, plan.next);
                continue;
            }
            // What the plan was made from, when it has records to write, so
            // that a later owner can write them if this worker dies first.
            let has_records = !plan.missed.is_empty() || plan.missed_summary.is_some() || !abandoned.is_empty();
            let inputs = has_records.then(|| PlanInputs {
                job_revision: job.revision,
                after,
                now,
                missed_records: limits.missed_records,
                runs: limits.runs,
                grace_ms: u64::try_from(limits.grace.as_millis()).unwrap_or(u64::MAX),
                scan: limits.scan,
                abandoned: abandoned.clone(),
            });
            // One claim accounts for the whole gap: the state jumps to the
            // plan's horizon, and the first catch-up run is published with it.
            // A broadcast job's catch-up ticks are handed out once the
            // claim is won; it publishes no run of its own.
            let entry = if job.spec.broadcast {
                None
            } else {
                plan.run
                    .first()
                    .map(|tick| self.running_entry(&job, RunId::generate(), *tick, Trigger::Catchup, 1))
            };
            let mut queue = kept;
            if !job.spec.broadcast {
                queue.extend(plan.run.iter().skip(1));
            }
            claims.push(ClaimRequest {
                job: name.clone(),
                tick: plan.horizon,
                seen_revision: revision,
                run: entry.clone(),
                lease: self.lease,
                // A claim that only takes over abandoned ticks keeps the
                // state's word on its last tick.
                skipped: plan.is_empty() && last_skipped,
                catchup: queue.clone(),
                // A plan of this worker's whose records are not stored yet
                // stays until a plan with records of its own replaces it.
                plan: inputs
                    .clone()
                    .or_else(|| self.jobs.get(&name).and_then(|s| s.unconfirmed_plan.clone())),
            });
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
                    if let Some(slot) = self.jobs.get_mut(&job.name) {
                        slot.state_revision = None;
                    }
                    self.ambiguous.insert(
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
                    self.timers
                        .set(Timer::Tick(job.name.clone()), now + SignedDuration::from_secs(1));
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
                if inputs.is_some() {
                    slot.unconfirmed_plan = inputs;
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
    fn confirm_records(&self, records: Vec<RunRecord>) {
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
    async fn account_ambiguous(&mut self, job: &Arc<Job>, claim: AmbiguousClaim, fence: Revision) {
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

    /// Deletes a `running/` entry this worker published but never started,
    /// retrying in the background until the store answers.
    fn withdraw_entry(&self, job: JobName, run_id: RunId) {
        runner::finish_in_background(self.deps.coord.clone(), job, run_id, Vec::new());
    }

    fn set_tick_timer(&mut self, name: &JobName, next: Option<Timestamp>) {
        match next {
            Some(next) => self.timers.set(Timer::Tick(name.clone()), next),
            None => {
                self.timers.remove(&Timer::Tick(name.clone()));
            }
        }
    }

    fn remove_job(&mut self, name: &JobName) {
        self.timers.remove(&Timer::Tick(name.clone()));
        self.timers.remove(&Timer::Triggers(name.clone()));
        self.jobs.remove(name);
    }

    fn is_owner(&self, job: &Job) -> bool {
        self.deps.executors.for_kind(&job.spec.kind).is_some()
            && schedule::owner(job, self.workers.values()).is_some_and(|owner| owner.id == self.deps.info.id)
    }

    async fn on_workers(&mut self, update: WatchUpdate) {
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
        // Membership changed: take over jobs this worker now wins, let go of
        // the ones another worker wins.
        let mut changed = Vec::new();
        let mut gained = 0usize;
        let mut lost = 0usize;
        for (name, slot) in &mut self.jobs {
            let owned = self.deps.executors.for_kind(&slot.job.spec.kind).is_some()
                && schedule::owner(&slot.job, self.workers.values()).is_some_and(|owner| owner.id == self.deps.info.id);
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

    async fn on_running(&mut self, update: WatchUpdate) {
        match update {
            WatchUpdate::Snapshot(kvs) => {
                self.remote_running.clear();
                for kv in &kvs {
                    if let Some((job, entry)) = self.deps.coord.decode_running(kv) {
                        self.remote_running.entry(job).or_default().insert(entry.run_id, entry);
                    }
                }
            }
            WatchUpdate::Events(events) => {
                let mut ended = Vec::new();
                for event in events {
                    match event {
                        WatchEvent::Put(kv) => {
                            if let Some((job, entry)) = self.deps.coord.decode_running(&kv) {
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

    /// Runs of other workers left `running/`. If a run's worker is gone (its
    /// lease expired with the run's entry on it), the run's outcome will never
    /// be reported, so the job's owner records it `lost` — with the run's own
    /// fence, so the marker cannot replace a final record that did arrive.
    ///
    /// Whether a worker is gone is read from the store, once for all the
    /// runs of one watch update: every run that ends anywhere in the cluster
    /// comes through here, so a read per run would bound the whole worker by
    /// the store's round trip.
    async fn check_lost(&mut self, ended: Vec<(JobName, RunningEntry)>) {
        let candidates: Vec<(Arc<Job>, RunningEntry)> = ended
            .into_iter()
            .filter(|(_, entry)| !self.local_runs.contains_key(&entry.run_id))
            .filter_map(|(job, entry)| {
                let slot = self.jobs.get(&job)?;
                // The job's owner once the run's worker is gone. Computed here
                // rather than read from `slot.owned`: the membership change may
                // not have reached this worker yet (the two watches are
                // independent).
                let owner = schedule::owner(&slot.job, self.workers.values().filter(|w| w.id != entry.worker))?;
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
    async fn record_lost(&mut self, job: &Arc<Job>, entry: RunningEntry) {
        let mut record = self.not_run(
            job,
            entry.tick,
            RunStatus::Lost,
            entry.fence.unwrap_or(0),
            format!("worker {} disappeared while the run was in progress", entry.worker),
        );
        record.run_id = entry.run_id;
        record.trigger = entry.trigger;
        record.attempt = entry.attempt;
        record.worker = entry.worker.clone();
        record.started_at = Some(entry.claimed_at);
        record.parent = entry.parent.clone();
        record.shard = entry.shard;
        if let JobKind::Wasm(wasm) = &job.spec.kind {
            record.module = Some(wasm.module.clone());
        }
        tracing::warn!(job = %job.name, run = %entry.run_id, worker = %entry.worker, "run lost with its worker");
        self.deps.metrics.run_ended(RunStatus::Lost);
        self.record_ended(job, record).await;
        // Its retry (a lost run counts as failed) or else its dependents
        // (`on_failure`) start here, since the worker that would have
        // started them is gone.
        for (target, request) in runner::follow_ups(job, &entry, RunStatus::Lost, self.now()) {
            if let Err(err) = self.deps.coord.put_trigger(&target, &request).await {
                tracing::warn!(job = %job.name, %target, %err, "cannot start the retry or a dependent job of a lost run");
            }
        }
    }

    async fn on_triggers(&mut self, update: WatchUpdate) {
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
    fn takes(&self, slot: &JobSlot, request: &TriggerRequest) -> bool {
        match &request.target_worker {
            Some(target) => *target == self.deps.info.id,
            None => slot.owned,
        }
    }

    /// Starts the runs requested for `name` that are this worker's to take
    /// (see [`State::takes`]). A broadcast job's "run now" is handed out to
    /// every eligible worker instead.
    async fn take_triggers(&mut self, name: &JobName) {
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
                    .broadcast(&job, request.tick(), request.trigger, Some(&kv.key))
                    .await
                {
                    self.pending_triggers.insert(key, (name.clone(), kv));
                    let soon = now + SignedDuration::from_secs(1);
                    wake = Some(wake.map_or(soon, |w| w.min(soon)));
                }
                continue;
            }
            let mut entry = self.running_entry(
                &job,
                RunId::generate(),
                request.tick(),
                request.trigger,
                request.attempt,
            );
            entry.parent = request.parent.clone();
            entry.shard = request.shard;
            entry.depth = request.depth;
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
    async fn broadcast(&mut self, job: &Arc<Job>, tick: Timestamp, trigger: Trigger, consume: Option<&str>) -> bool {
        let targets: Vec<String> = self
            .workers
            .values()
            .filter(|worker| worker.can_run(job))
            .map(|worker| worker.id.clone())
            .collect();
        if targets.is_empty() {
            let record = self.not_run(
                job,
                tick,
                RunStatus::Missed,
                0,
                "no live worker can run this broadcast job".into(),
            );
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
                let record = self.not_run(
                    job,
                    tick,
                    RunStatus::Missed,
                    0,
                    format!("the broadcast's shards could not be handed out: {err}"),
                );
                self.deps.metrics.run_ended(RunStatus::Missed);
                self.record_ended(job, record).await;
                true
            }
        }
    }

    /// Shards addressed to workers that are gone will never be taken: the
    /// job's owner deletes each (once, by transaction) and records it `lost`.
    async fn reap_orphan_shards(&mut self) {
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

    // ---- scheduling ----------------------------------------------------------

    /// Takes over one job (see [`State::replan`]).
    async fn recover(&mut self, name: &JobName) {
        self.replan(vec![name.clone()]).await;
    }

    fn catchup_limits(&self) -> CatchupLimits {
        CatchupLimits {
            missed_records: self.deps.config.missed_record_limit,
            runs: self.deps.config.catchup_run_limit,
            ..CatchupLimits::default()
        }
    }

    async fn record_missed(&self, job: &Arc<Job>, plan: &schedule::CatchupPlan, fence: Revision) {
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
    fn missed_records(&self, job: &Job, plan: &schedule::CatchupPlan, fence: Revision) -> Vec<RunRecord> {
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
    fn confirm_plans_stored(&self, plans: Vec<(JobName, PlanInputs)>) {
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
    async fn on_plan_stored(&mut self, job: &JobName, plan: &PlanInputs) {
        let Some(slot) = self.jobs.get_mut(job) else { return };
        if slot.unconfirmed_plan.as_ref() != Some(plan) {
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
    fn rederive_plan_records(
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

    fn not_run(&self, job: &Job, tick: Timestamp, status: RunStatus, fence: Revision, reason: String) -> RunRecord {
        let mut record = RunRecord::not_run(job, tick, status, &self.deps.info.id, fence, reason);
        record.expire_at = job.expire_at(tick, self.deps.retention);
        record
    }

    /// Records queued catch-up ticks that never started `missed`, under the
    /// ids every worker derives for them, so recording one twice keeps one
    /// record.
    async fn record_unstarted(&self, job: &Arc<Job>, ticks: &[Timestamp], fence: Revision, reason: &str) {
        for record in self.unstarted_records(job, ticks, fence, reason) {
            self.deps.metrics.run_ended(RunStatus::Missed);
            self.record_ended(job, record).await;
        }
        if !ticks.is_empty() {
            tracing::warn!(job = %job.name, ticks = ticks.len(), "recorded queued catch-up ticks missed");
        }
    }

    fn unstarted_records(&self, job: &Job, ticks: &[Timestamp], fence: Revision, reason: &str) -> Vec<RunRecord> {
        ticks
            .iter()
            .map(|tick| {
                let mut record = self.not_run(job, *tick, RunStatus::Missed, fence, reason.to_owned());
                record.run_id = RunId::for_unstarted_catchup(&job.name, *tick);
                record.trigger = Trigger::Catchup;
                record
            })
            .collect()
    }

    /// The record that a tick claimed with `fence` was skipped because
    /// `blocking` (when known) was still running. Its id is derived from the
    /// job and tick, so a later owner re-recording it writes the same record.
    fn skip_record(&self, job: &Job, tick: Timestamp, fence: Revision, blocking: Option<RunId>) -> RunRecord {
        let reason = match blocking {
            Some(run) => format!("previous run {run} was still running (overlap: forbid)"),
            None => "previous run was still running (overlap: forbid)".to_owned(),
        };
        let mut record = self.not_run(job, tick, RunStatus::Skipped, fence, reason);
        record.run_id = RunId::for_skip(&job.name, tick);
        record
    }

    /// Records a run or tick that ended, and tells the alerts about it.
    async fn record_ended(&self, job: &Arc<Job>, record: RunRecord) {
        if let Some(alerts) = &self.deps.alerts {
            alerts.notify(job, &record);
        }
        self.deps.sink.record(record).await;
    }

    /// The entry a new run of `job` publishes. A run of an async job gets a
    /// fresh token here; only its hash is published.
    fn running_entry(&self, job: &Job, run_id: RunId, tick: Timestamp, trigger: Trigger, attempt: u32) -> RunningEntry {
        let token = (job.spec.completion == Completion::Async).then(new_run_token);
        RunningEntry {
            run_id,
            worker: self.deps.info.id.clone(),
            tick,
            trigger,
            attempt,
            claimed_at: self.now(),
            fence: None,
            parent: None,
            shard: None,
            depth: 0,
            result_token_sha256: token.as_ref().map(|t| crate::crypto::sha256_hex(t.as_bytes())),
            result_token: token,
        }
    }

    /// Handles every timer that is due: claims the ticks (packed into few
    /// transactions), then starts runs or records skips.
    async fn fire_due(&mut self) {
        let now = self.now();
        let mut claims: Vec<ClaimRequest> = Vec::new();
        let mut actions: Vec<TickAction> = Vec::new();
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
            if let Timer::Tick(name) = &timer
                && claimed.contains(name)
            {
                deferred.push((timer, due));
                continue;
            }
            fired += 1;
            match timer {
                Timer::Tick(name) => {
                    if let Some((request, action)) = self.prepare_tick(&name, due).await {
                        claimed.insert(name);
                        claims.push(request);
                        actions.push(action);
                    }
                }
                Timer::Triggers(name) => self.take_triggers(&name).await,
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
                    if let Some(slot) = self.jobs.get_mut(&request.job) {
                        slot.state_revision = None;
                    }
                    self.ambiguous.insert(
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
                    self.timers
                        .set(Timer::Tick(request.job.clone()), now + SignedDuration::from_secs(1));
                }
                return;
            }
        };
        for ((request, outcome), action) in claims.into_iter().zip(outcomes).zip(actions) {
            self.apply_claim(request, outcome, action).await;
        }
        self.deps
            .metrics
            .jobs_scheduled
            .store(self.timers.len() as u64, Ordering::Relaxed);
    }

    /// Sets the job's next timer and builds the claim for tick `due`; `None`
    /// when the tick is not this worker's to claim. The second value says
    /// what a won claim does: start its run, record the tick `skipped`
    /// (overlap forbidden), or hand it out (a broadcast job).
    async fn prepare_tick(&mut self, name: &JobName, due: Timestamp) -> Option<(ClaimRequest, TickAction)> {
        let slot = self.jobs.get(name)?;
        if !slot.owned || slot.job.spec.paused {
            return None;
        }
        let job = slot.job.clone();
        if let Some(next) = job.schedule.next_after(due) {
            self.timers.set(Timer::Tick(name.clone()), next);
        }
        if slot.state_revision.is_none() {
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
        let unconfirmed_plan = slot.unconfirmed_plan.clone();
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
    fn running_runs(&self, job: &JobName) -> Vec<RunId> {
        let mut runs: Vec<RunId> = self
            .local_runs
            .iter()
            .filter(|(_, run)| &run.job == job)
            .map(|(id, _)| *id)
            .collect();
        if let Some(remote) = self.remote_running.get(job) {
            runs.extend(remote.keys().filter(|id| !self.local_runs.contains_key(id)));
        }
        runs.sort();
        runs
    }

    /// Overlap `replace`: kills the job's runs, here directly and elsewhere
    /// through kill requests.
    async fn replace_runs(&self, job: &JobName, runs: &[RunId]) {
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

    async fn apply_claim(&mut self, request: ClaimRequest, outcome: ClaimOutcome, action: TickAction) {
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

    fn spawn_run(&mut self, job: Arc<Job>, entry: RunningEntry, fence: Revision) {
        let kill = KillSwitch::new();
        let run_id = entry.run_id;
        self.kill_switches.insert(run_id, job.name.clone(), kill.clone());
        self.local_runs.insert(
            run_id,
            LocalRun {
                job: job.name.clone(),
                kill: kill.clone(),
                entry: RunningEntry {
                    fence: Some(fence),
                    ..entry.clone()
                },
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
        let spec = RunSpec {
            executor: self.deps.executors.for_kind(&job.spec.kind),
            job,
            entry,
            fence,
            kill,
            sink: self.deps.sink.clone(),
            coord: self.deps.coord.clone(),
            metrics: self.deps.metrics.clone(),
            semaphore: self.semaphore.clone(),
            done: self.done_tx.clone(),
            shell_allowed: self.deps.info.allow_native,
            retention: self.deps.retention,
            alerts: self.deps.alerts.clone(),
            report,
        };
        self.runs.spawn(runner::run(spec));
    }

    /// Starts the next queued catch-up tick of `name` if none is running:
    /// one transaction publishes its run and writes the claim state without
    /// it, so a crash cannot leave a tick both started and listed.
    async fn start_next_catchup(&mut self, name: &JobName) {
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
            plan: slot.unconfirmed_plan.clone(),
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
                self.timers.set(Timer::Tick(name.clone()), retry_at);
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
                self.timers.set(Timer::Tick(name.clone()), retry_at);
            }
        }
    }

    async fn on_run_finished(&mut self, done: RunFinished) {
        self.local_runs.remove(&done.run_id);
        self.kill_switches.remove(&done.run_id);
        self.results.forget(&done.run_id);
        while self.runs.try_join_next().is_some() {}
        // Its retry and dependents were stored with the removal of its
        // entry; what is left is the next queued catch-up tick.
        if done.trigger == Trigger::Catchup
            && let Some(slot) = self.jobs.get_mut(&done.job)
        {
            slot.catchup_running = false;
            self.start_next_catchup(&done.job).await;
        }
    }

    /// Shutdown: runs get the drain timeout to finish, then are killed; the
    /// lease is revoked so other workers take over at once.
    async fn drain(&mut self) {
        if !self.local_runs.is_empty() {
            tracing::info!(runs = self.local_runs.len(), timeout = ?self.deps.drain_timeout, "waiting for runs to finish");
        }
        let deadline = tokio::time::Instant::now() + self.deps.drain_timeout;
        let mut killed = false;
        // Finished runs report on `done_rx`; it is read (and the reports
        // dropped: no retries at shutdown) so no run task blocks on it.
        loop {
            tokio::select! {
                joined = self.runs.join_next() => if joined.is_none() { break },
                Some(done) = self.done_rx.recv() => {
                    self.local_runs.remove(&done.run_id);
                    self.kill_switches.remove(&done.run_id);
                }
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
}

/// Renews the worker's lease every third of its TTL. When the store says the
/// lease is gone, tells the scheduling loop (which re-registers and stores the
/// new lease in `current`). A failure to reach the store is retried.
async fn keep_lease(
    coord: Coordinator,
    current: Arc<AtomicI64>,
    ttl: Duration,
    lost: mpsc::Sender<()>,
    stop: CancellationToken,
) {
    let mut interval = tokio::time::interval(ttl / 3);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let lease = LeaseId(current.load(Ordering::Relaxed));
        match coord.store().lease_keep_alive(lease).await {
            Ok(()) => {}
            Err(StoreError::LeaseNotFound(_)) => {
                // A full channel means the loop already knows.
                let _already_told = lost.try_send(());
            }
            Err(err) => tracing::warn!(%err, "lease keep-alive failed; will retry"),
        }
    }
}

/// Watches kill requests and pulls the switches of this worker's runs they
/// name. Requests already handled (a snapshot after a watch failure repeats
/// them) are skipped by revision, so "kill all" never hits a run that started
/// after the request.
async fn watch_kills(coord: Coordinator, switches: KillSwitches, stop: CancellationToken) {
    let mut handled: Revision = 0;
    let decoder = coord.clone();
    watch_puts(coord, Family::Kill, stop, move |mut puts| {
        puts.sort_by_key(|kv| kv.mod_revision);
        for kv in puts {
            if kv.mod_revision <= handled {
                continue;
            }
            handled = kv.mod_revision;
            if let Some(request) = decoder.decode_kill(&kv.key) {
                switches.pull(&request.job, request.target);
            }
        }
    })
    .await;
}

/// Watches one key family and hands every put (the whole snapshot after a
/// watch failure, then each put event) to `on_puts`; backs off on errors.
/// Deletes are of no interest to its users.
async fn watch_puts(
    coord: Coordinator,
    family: Family,
    stop: CancellationToken,
    mut on_puts: impl FnMut(Vec<KeyValue>),
) {
    let mut watcher = coord.watcher(family);
    let mut backoff = Duration::from_millis(100);
    loop {
        let update = tokio::select! {
            () = stop.cancelled() => return,
            update = watcher.next() => update,
        };
        let puts: Vec<KeyValue> = match update {
            Ok(WatchUpdate::Snapshot(kvs)) => kvs,
            Ok(WatchUpdate::Events(events)) => events
                .into_iter()
                .filter_map(|event| match event {
                    WatchEvent::Put(kv) => Some(kv),
                    WatchEvent::Delete { .. } => None,
                })
                .collect(),
            Err(err) => {
                tracing::warn!(?family, %err, ?backoff, "watch failed; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        on_puts(puts);
    }
}

/// Drives one watcher and forwards its updates; on a store error it backs off
/// and starts over with a fresh snapshot.
async fn forward_watch(
    coord: Coordinator,
    family: Family,
    tx: mpsc::Sender<(Family, WatchUpdate)>,
    stop: CancellationToken,
) {
    let mut watcher = coord.watcher(family);
    let mut backoff = Duration::from_millis(100);
    loop {
        let update = tokio::select! {
            () = stop.cancelled() => return,
            update = watcher.next() => update,
        };
        match update {
            Ok(update) => {
                backoff = Duration::from_millis(100);
                if tx.send((family, update)).await.is_err() {
                    return;
                }
            }
            Err(err) => {
                tracing::warn!(?family, %err, ?backoff, "watch failed; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Whether a stored job may run here at all: shell jobs need native
/// permission on the worker and an admin as their author.
pub(crate) fn shell_permitted(job: &Job, allow_native: bool) -> Result<(), String> {
    if !job.spec.kind.is_native() {
        return Ok(());
    }
    if !allow_native {
        return Err("this worker does not permit native processes".to_owned());
    }
    if job.meta.written_by != Role::Admin {
        return Err(format!(
            "shell jobs must be written by an admin; this one was written by a {}",
            job.meta.written_by.as_str()
        ));
    }
    Ok(())
}

/// A fresh token for an async run: 256 random bits in hex, prefixed so it is
/// recognisable in a secret scanner.
fn new_run_token() -> String {
    match crate::crypto::random_bytes::<32>() {
        Ok(bytes) => format!("scr_{}", crate::crypto::hex(&bytes)),
        Err(err) => {
            // Without randomness no token can be trusted; a run id is not
            // secret, so fall back to one nobody can guess either: the
            // clock's nanoseconds hashed with the process id. Logged, as it
            // should never happen on Linux.
            tracing::error!(%err, "cannot read random bytes for a run token");
            let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
            format!("scr_{}", crate::crypto::sha256_hex(seed.as_bytes()))
        }
    }
}

/// Async runs waiting for their reported outcome, by run id, shared with the
/// results watcher so a report reaches its run without the scheduling loop.
#[derive(Clone, Default)]
struct ResultWaiters(Arc<std::sync::Mutex<HashMap<RunId, tokio::sync::oneshot::Sender<RunReport>>>>);

impl ResultWaiters {
    fn register(&self, run_id: RunId) -> tokio::sync::oneshot::Receiver<RunReport> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Ok(mut map) = self.0.lock() {
            map.insert(run_id, tx);
        }
        rx
    }

    fn forget(&self, run_id: &RunId) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(run_id);
        }
    }

    /// Hands `report` to its run if it runs here; whether it did.
    fn deliver(&self, run_id: RunId, report: RunReport) -> bool {
        let waiter = self.0.lock().ok().and_then(|mut map| map.remove(&run_id));
        waiter.is_some_and(|tx| tx.send(report).is_ok())
    }
}

/// Watches reported results and hands each to the run it is for, if that run
/// is one of this worker's. A snapshot after a watch failure repeats them;
/// a report already handed over finds no waiter and is skipped.
async fn watch_results(coord: Coordinator, waiters: ResultWaiters, stop: CancellationToken) {
    let decoder = coord.clone();
    watch_puts(coord, Family::Results, stop, move |puts| {
        for kv in puts {
            if let Some((job, run_id, report)) = decoder.decode_result(&kv)
                && waiters.deliver(run_id, report)
            {
                tracing::debug!(%job, run = %run_id, "reported result handed to its run");
            }
        }
    })
    .await;
}
