//! Execution: the executor contract, output capture, and the executors:
//! `native` (process groups), `wasm` (the sandbox) and `http` (callbacks,
//! within the worker's `egress` allow-list).
//!
//! Executors never touch the coordination store or the log store directly:
//! they get a request, a [`RunOutput`] to write into and a kill signal, and
//! return a [`RunOutcome`]. A failed job is an outcome, not an error. A
//! component's key-value state goes through the [`state::StateStore`] port.

use std::collections::BTreeMap;

use async_trait::async_trait;
use jiff::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::ids::{JobName, RunId};
use crate::job::JobKind;
use crate::run::{EgressLedger, ParentRun, RunStatus, Shard, Trigger};
use crate::secret::RunSecrets;

pub mod egress;
pub mod http;
pub mod native;
mod output;
pub mod state;
pub mod wasm;

pub use output::{ChunkSink, RunOutput};

/// Everything an executor needs to start one run.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub job: JobName,
    pub run_id: RunId,
    pub tick: Timestamp,
    pub trigger: Trigger,
    pub attempt: u32,
    pub fence: i64,
    pub kind: JobKind,
    /// The run that started this one (a dependent job's run).
    pub parent: Option<ParentRun>,
    /// Which shard of a broadcast tick this run is.
    pub shard: Option<Shard>,
    /// For an async job: where and with what token to report the outcome.
    pub report_to: Option<ReportTo>,
    /// The job's secrets, opened by the worker for this run.
    pub secrets: RunSecrets,
}

/// Where an async run's outcome is reported, and the run's token.
#[derive(Clone, PartialEq, Eq)]
pub struct ReportTo {
    /// `<api>/api/v1/runs/<run_id>/result`, when the worker knows the API's
    /// address (`worker.api_url`).
    pub url: Option<String>,
    pub token: String,
}

impl std::fmt::Debug for ReportTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportTo")
            .field("url", &self.url)
            .field("token", &"<secret>")
            .finish()
    }
}

impl ExecRequest {
    /// The variables sandcron sets for every run, native or sandboxed (and,
    /// as `X-Sandcron-*` headers, for HTTP calls).
    pub fn sandcron_env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::from([
            ("SANDCRON_JOB".to_owned(), self.job.to_string()),
            ("SANDCRON_RUN_ID".to_owned(), self.run_id.to_string()),
            ("SANDCRON_TICK".to_owned(), self.tick.to_string()),
            ("SANDCRON_TRIGGER".to_owned(), self.trigger.as_str().to_owned()),
            ("SANDCRON_ATTEMPT".to_owned(), self.attempt.to_string()),
            ("SANDCRON_FENCE".to_owned(), self.fence.to_string()),
        ]);
        if let Some(parent) = &self.parent {
            env.insert("SANDCRON_PARENT_JOB".to_owned(), parent.job.to_string());
            env.insert("SANDCRON_PARENT_RUN_ID".to_owned(), parent.run_id.to_string());
            env.insert("SANDCRON_PARENT_STATUS".to_owned(), parent.status.as_str().to_owned());
        }
        if let Some(shard) = &self.shard {
            env.insert("SANDCRON_SHARD_INDEX".to_owned(), shard.index.to_string());
            env.insert("SANDCRON_SHARD_COUNT".to_owned(), shard.count.to_string());
        }
        if let Some(report) = &self.report_to {
            env.insert("SANDCRON_RUN_TOKEN".to_owned(), report.token.clone());
            if let Some(url) = &report.url {
                env.insert("SANDCRON_RESULT_URL".to_owned(), url.clone());
            }
        }
        env
    }

    /// The run's secrets by the names the job reads them under, as text.
    pub fn secret_env(&self) -> Result<BTreeMap<String, String>, String> {
        self.secrets
            .values
            .iter()
            .map(|(name, value)| match value.as_text() {
                Some(text) => Ok((name.clone(), text.to_owned())),
                None => Err(format!("the secret given as {name} is not UTF-8 text")),
            })
            .collect()
    }
}

/// Why a run is being stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A kill request (API, overlap `replace`).
    Killed,
    /// The worker is shutting down and its drain deadline passed.
    Shutdown,
}

/// A kill switch for one run: a token plus the reason it was pulled, and
/// what the executor asked to be done at once when it is pulled.
#[derive(Clone, Default)]
pub struct KillSwitch {
    token: CancellationToken,
    reason: std::sync::Arc<std::sync::OnceLock<StopReason>>,
    interrupt: std::sync::Arc<std::sync::OnceLock<Interrupt>>,
}

/// Called by [`KillSwitch::pull`] on the puller's thread.
type Interrupt = Box<dyn Fn() + Send + Sync>;

impl std::fmt::Debug for KillSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KillSwitch")
            .field("pulled", &self.is_pulled())
            .field("reason", &self.reason())
            .finish_non_exhaustive()
    }
}

impl KillSwitch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops the run; the first reason given wins. The executor's interrupt
    /// (if it set one) runs here, so the run hears of it without waiting for
    /// its own next look at the switch.
    pub fn pull(&self, reason: StopReason) {
        let _first = self.reason.set(reason);
        self.token.cancel();
        if let Some(interrupt) = self.interrupt.get() {
            interrupt();
        }
    }

    /// Sets what [`KillSwitch::pull`] does at once (the first one set
    /// stays); called at once if the switch is pulled already.
    pub fn on_pull(&self, interrupt: impl Fn() + Send + Sync + 'static) {
        if self.interrupt.set(Box::new(interrupt)).is_ok()
            && self.is_pulled()
            && let Some(interrupt) = self.interrupt.get()
        {
            interrupt();
        }
    }

    pub fn reason(&self) -> Option<StopReason> {
        self.reason.get().copied()
    }

    pub fn is_pulled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves when the switch is pulled.
    pub async fn pulled(&self) -> StopReason {
        self.token.cancelled().await;
        self.reason().unwrap_or(StopReason::Killed)
    }
}

/// How a run ended, as the executor saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    pub status: RunStatus,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub fuel_used: Option<u64>,
    pub peak_memory: Option<u64>,
    /// What the run did on the network (WASM components with `egress`).
    pub egress: Option<EgressLedger>,
    /// How long the run waited for its module to be compiled (or loaded
    /// from the disk cache) before it could start; `None` when the module
    /// was ready.
    pub module_wait: Option<std::time::Duration>,
}

impl RunOutcome {
    pub fn new(status: RunStatus) -> Self {
        Self {
            status,
            exit_code: None,
            error: None,
            fuel_used: None,
            peak_memory: None,
            egress: None,
            module_wait: None,
        }
    }

    pub fn with_error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }

    /// The outcome of a run stopped by `reason`.
    pub fn stopped(reason: StopReason) -> Self {
        match reason {
            StopReason::Killed => RunOutcome::new(RunStatus::Killed).with_error("killed on request"),
            StopReason::Shutdown => RunOutcome::new(RunStatus::Killed).with_error("killed: the worker shut down"),
        }
    }
}

/// Runs one kind of job.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// Runs `request` to completion, writing its output into `output`, and
    /// stops early when `kill` is pulled or the job's timeout passes.
    async fn execute(&self, request: &ExecRequest, output: &mut RunOutput, kill: &KillSwitch) -> RunOutcome;

    /// Gets what a job of `kind` needs ready ahead of its first run (the
    /// WASM executor compiles its module), in the background; returns at
    /// once. Called by a worker when it takes a job on or its spec changes.
    fn warm(&self, _kind: &JobKind) {}
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::{KillSwitch, StopReason};

    fn counting(switch: &KillSwitch) -> Arc<AtomicUsize> {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        switch.on_pull(move || {
            seen.fetch_add(1, Ordering::SeqCst);
        });
        calls
    }

    #[test]
    fn a_pull_runs_the_executor_s_interrupt_on_the_puller_s_thread() {
        let switch = KillSwitch::new();
        let calls = counting(&switch);
        assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing before the pull");
        switch.clone().pull(StopReason::Killed);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(switch.reason(), Some(StopReason::Killed));
    }

    #[test]
    fn an_interrupt_set_after_the_pull_runs_at_once_and_only_the_first_is_kept() {
        let switch = KillSwitch::new();
        switch.pull(StopReason::Shutdown);
        let calls = counting(&switch);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "a switch pulled before the run started"
        );
        let second = counting(&switch);
        switch.pull(StopReason::Killed);
        assert_eq!(second.load(Ordering::SeqCst), 0, "a second interrupt is not kept");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(switch.reason(), Some(StopReason::Shutdown), "the first reason wins");
    }
}
