//! Execution: the executor contract, output capture, and the executors:
//! `native` (process groups), `wasm` (the sandbox) and `http` (callbacks,
//! within the worker's `egress` allow-list).
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
use crate::run::{ParentRun, RunStatus, Shard, Trigger};

pub mod egress;
pub mod http;
pub mod native;
mod output;
pub mod wasm;

pub use output::{MAX_RESULT_BYTES, RESULT_MARKER, RunOutput};

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

/// Whether a WebAssembly binary is a core module (WASI preview 1) or a
/// component (WASI preview 2, the `wasi:cli/command` world).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModuleKind {
    Module,
    Component,
}

impl ModuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleKind::Module => "module",
            ModuleKind::Component => "component",
        }
    }
}

/// What upload-time inspection learned about a binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    pub kind: ModuleKind,
    /// Every import, as `module::name` (core) or the interface name (component).
    pub imports: Vec<String>,
}

/// Why a binary was refused at upload. Each maps to a 4xx with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    #[error("not a WebAssembly binary (bad magic number)")]
    NotWasm,
    #[error("module is {size} bytes; the limit is {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("unsupported WebAssembly binary version {0:#x}")]
    UnsupportedVersion(u32),
    #[error("invalid WebAssembly: {0}")]
    Invalid(String),
    #[error("imports other than WASI are not allowed: {}", .0.join(", "))]
    ForbiddenImports(Vec<String>),
    #[error("component is not a command: {0}")]
    NotACommand(String),
}

/// Checks uploaded binaries. Implemented by the WASM executor's engine, so
/// the API can validate uploads without depending on wasmtime.
pub trait ModuleInspector: Send + Sync + 'static {
    /// Validates `bytes` as an accepted job binary: magic, version, size
    /// limit, wasmtime validation, WASI-only imports, command world.
    fn inspect(&self, bytes: &[u8]) -> Result<ModuleInfo, ModuleError>;

    /// The largest binary accepted, in bytes.
    fn max_module_bytes(&self) -> u64;
}

/// Runs one kind of job.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// Runs `request` to completion, writing its output into `output`, and
    /// stops early when `kill` is pulled or the job's timeout passes.
    async fn execute(&self, request: &ExecRequest, output: &mut RunOutput, kill: &KillSwitch) -> RunOutcome;
}
