//! The worker: watch → schedule → claim → execute → report.
//!
//! One task owns all scheduling state (jobs, timers, ownership, local runs)
//! and reacts to four inputs: watch updates from the coordination store, due
//! timers, finished runs, and shutdown. Runs execute in their own tasks,
//! bounded by a semaphore of the worker's capacity, and report back through a
//! channel. A run that finds every slot busy is offered to the other
//! workers, and the first worker with a free slot to take it (or this one,
//! when a slot frees first) runs it (`handoff.rs`). Policies come from
//! `schedule` (pure); this module does the I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::alert::AlertHandle;
use crate::auth::Role;
use crate::config::WorkerConfig;
use crate::coord::{Coordinator, Family};
use crate::exec::Executor;
use crate::job::{Job, JobKind};
use crate::logstore::Sink;
use crate::metrics::Metrics;
use crate::placement::WorkerInfo;
use crate::schedule::TimerQueue;

mod chunks;
mod clock;
mod followups;
mod handoff;
mod kill;
mod kvstate;
mod results;
mod secrets;
mod state;
mod status;
mod takeover;
mod task;
#[cfg(test)]
mod tests;
mod watchers;

use kill::{KillSwitches, watch_kills};
pub use kvstate::StoredState;
use results::{ResultWaiters, watch_results};
use state::State;
use watchers::{forward_watch, keep_lease};

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
    /// Opens the secrets jobs use; `None`: no key file (jobs with secrets fail).
    pub keyring: Option<Arc<crate::secret::Keyring>>,
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
    pub async fn serve(self, shutdown: CancellationToken) -> anyhow::Result<()> {
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
            let (handoff_tx, handoff_rx) = mpsc::channel(256);
            let (lease_lost_tx, lease_lost_rx) = mpsc::channel(1);
            let watchers = CancellationToken::new();
            let kill_switches = KillSwitches::default();
            let current_lease = Arc::new(AtomicI64::new(lease.0));
            let mut helper_tasks = JoinSet::new();
            for family in [
                Family::Workers,
                Family::Jobs,
                Family::Running,
                Family::Trigger,
                Family::Handoff,
            ] {
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
            // The log backlog, for the masters' workers page.
            helper_tasks.spawn(status::publish_status(
                deps.coord.clone(),
                deps.info.id.clone(),
                deps.sink.stats(),
                current_lease.clone(),
                watchers.clone(),
                status::PUBLISH_EVERY,
            ));
            let mut state = State {
                semaphore: Arc::new(Semaphore::new(deps.info.capacity)),
                run_sink: Arc::new(deps.sink.clone()),
                deps,
                lease,
                jobs: HashMap::new(),
                workers: BTreeMap::new(),
                timers: TimerQueue::new(),
                lead: Default::default(),
                clock: clock::TickClock::start(),
                remote_running: HashMap::new(),
                local_runs: Default::default(),
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
                open_offers: BTreeMap::new(),
                taking: BTreeSet::new(),
                handoff_tx,
                handoff_rx,
                stopping: shutdown.child_token(),
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
