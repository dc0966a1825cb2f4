//! [`WasmExecutor`]: runs WASM jobs on a [`WasmEngine`] — the module made
//! ready (and how long the run waited for it), a pool slot, then the
//! sandbox — and gets the modules of a worker's jobs ready ahead of their
//! first run (`warm`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;

use super::sandbox::{self, SandboxReport};
use super::{Bytes, ModuleSource, WasmEngine};
use crate::exec::state::StateStore;
use crate::exec::{ExecRequest, Executor, KillSwitch, RunOutcome, RunOutput};
use crate::ids::ModuleDigest;
use crate::job::JobKind;
use crate::run::RunStatus;

/// Runs WASM jobs on a [`WasmEngine`].
#[derive(Clone)]
pub struct WasmExecutor {
    pub(super) engine: Arc<WasmEngine>,
    pub(super) source: Arc<dyn ModuleSource>,
    pub(super) state: Option<Arc<dyn StateStore>>,
}

impl std::fmt::Debug for WasmExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmExecutor").field("engine", &self.engine).finish()
    }
}

impl WasmExecutor {
    pub fn engine(&self) -> &Arc<WasmEngine> {
        &self.engine
    }

    /// Components of this executor's runs reach their job's key-value state
    /// (`wasi:keyvalue`) through `state`.
    pub fn with_state(mut self, state: Arc<dyn StateStore>) -> Self {
        self.state = Some(state);
        self
    }

    pub(super) async fn run_sandboxed(
        &self,
        request: &ExecRequest,
        output: &mut RunOutput,
        kill: &KillSwitch,
    ) -> SandboxReport {
        let report = |outcome: RunOutcome| SandboxReport {
            outcome,
            forwarded: 0,
            discarded: 0,
        };
        let JobKind::Wasm(job) = &request.kind else {
            return report(RunOutcome::new(RunStatus::Failed).with_error("the WASM executor runs wasm jobs only"));
        };
        let mut plan = match self.engine.plan(request, job) {
            Ok(plan) => plan,
            Err(error) => return report(RunOutcome::new(RunStatus::Failed).with_error(error)),
        };
        plan.state.store = self.state.clone();
        // Waiting for a first compilation or for a pool slot ends with the
        // kill switch; neither counts against the run's timeout. A wait for
        // the module is reported with the run.
        let waited = std::time::Instant::now();
        let was_ready = self.engine.cache.get(&job.module).is_some();
        let loaded = tokio::select! {
            biased;
            reason = kill.pulled() => return report(RunOutcome::stopped(reason)),
            loaded = self.engine.load(&job.module, Bytes::From(&*self.source)) => loaded,
        };
        let module_wait = (!was_ready).then(|| waited.elapsed());
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(error) => {
                let mut outcome = RunOutcome::new(RunStatus::Failed).with_error(error.to_string());
                outcome.module_wait = module_wait;
                return report(outcome);
            }
        };
        let _slot = tokio::select! {
            biased;
            reason = kill.pulled() => return report(RunOutcome::stopped(reason)),
            permit = self.engine.slots.acquire() => match permit {
                Ok(permit) => permit,
                Err(_closed) => return report(RunOutcome::new(RunStatus::Failed).with_error("the WASM engine is shutting down")),
            },
        };
        self.engine.counters.runs.fetch_add(1, Ordering::Relaxed);
        // A kill moves the engine's epoch on at once: a guest that is
        // computing reaches its epoch deadline at its next check and its
        // callback sees the switch, rather than at the ticker's next tick.
        // Other running guests merely yield once.
        let engine = self.engine.parts.engine.weak();
        kill.on_pull(move || {
            if let Some(engine) = engine.upgrade() {
                engine.increment_epoch();
            }
        });
        loaded.run_started();
        let mut report = sandbox::execute(&self.engine.parts.engine, &loaded.prepared, &plan, output, kill).await;
        report.outcome.module_wait = module_wait;
        loaded.run_finished(
            report.outcome.fuel_used.unwrap_or(0),
            report.outcome.peak_memory.unwrap_or(0),
        );
        if report.discarded > 0 {
            tracing::debug!(
                job = %request.job,
                run = %request.run_id,
                kept = report.forwarded,
                dropped = report.discarded,
                "guest output past the limit was dropped"
            );
        }
        report
    }
}

#[async_trait]
impl Executor for WasmExecutor {
    async fn execute(&self, request: &ExecRequest, output: &mut RunOutput, kill: &KillSwitch) -> RunOutcome {
        self.run_sandboxed(request, output, kill).await.outcome
    }

    /// Compiles (or loads from the disk cache) the job's module in the
    /// background, one module at a time, so that its first tick does not
    /// wait for it. Failures are left for the run to report.
    fn warm(&self, kind: &JobKind) {
        let JobKind::Wasm(job) = kind else { return };
        if self.engine.cache.get(&job.module).is_some()
            || !crate::sync::lock(&self.engine.warm_queue).insert(job.module.clone())
        {
            return;
        }
        let (engine, source, digest) = (Arc::clone(&self.engine), Arc::clone(&self.source), job.module.clone());
        tokio::spawn(async move {
            let turn = Arc::clone(&engine.warming).acquire_owned().await;
            if turn.is_ok() && engine.cache.get(&digest).is_none() {
                warm_one(&engine, &*source, &digest).await;
            }
            crate::sync::lock(&engine.warm_queue).remove(&digest);
        });
    }
}

/// Compiles (or loads) one module ahead of its runs and says how it went.
/// Failures are left for the run to report.
async fn warm_one(engine: &WasmEngine, source: &dyn ModuleSource, digest: &ModuleDigest) {
    let started = std::time::Instant::now();
    match engine.load(digest, Bytes::From(source)).await {
        Ok(_) => tracing::info!(
            module = %digest,
            took_ms = started.elapsed().as_millis() as u64,
            "module ready ahead of its first run"
        ),
        Err(err) => tracing::debug!(module = %digest, %err, "cannot get a module ready ahead of its run"),
    }
}
