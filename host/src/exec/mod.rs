//! Execution: the executor contract, output capture, and the executors
//! (`native` here; `wasm` in the sandbox issue).
//!
//! Executors never touch the coordination store or the log store directly:
//! they get a request, a [`RunOutput`] to write into and a kill signal, and
//! return a [`RunOutcome`]. A failed job is an outcome, not an error.

use std::collections::BTreeMap;

use async_trait::async_trait;
use jiff::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::ids::{JobName, RunId};
use crate::job::JobKind;
use crate::run::{RunStatus, Trigger};

pub mod native;
mod output;

pub use output::RunOutput;

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
}

impl ExecRequest {
    /// The variables sandcron sets for every run, native or sandboxed.
    pub fn sandcron_env(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("SANDCRON_JOB".to_owned(), self.job.to_string()),
            ("SANDCRON_RUN_ID".to_owned(), self.run_id.to_string()),
            ("SANDCRON_TICK".to_owned(), self.tick.to_string()),
            ("SANDCRON_TRIGGER".to_owned(), self.trigger.as_str().to_owned()),
            ("SANDCRON_ATTEMPT".to_owned(), self.attempt.to_string()),
            ("SANDCRON_FENCE".to_owned(), self.fence.to_string()),
        ])
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

/// A kill switch for one run: a token plus the reason it was pulled.
#[derive(Debug, Clone, Default)]
pub struct KillSwitch {
    token: CancellationToken,
    reason: std::sync::Arc<std::sync::OnceLock<StopReason>>,
}

impl KillSwitch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops the run; the first reason given wins.
    pub fn pull(&self, reason: StopReason) {
        let _first = self.reason.set(reason);
        self.token.cancel();
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
}

impl RunOutcome {
    pub fn new(status: RunStatus) -> Self {
        Self {
            status,
            exit_code: None,
            error: None,
            fuel_used: None,
            peak_memory: None,
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
}
