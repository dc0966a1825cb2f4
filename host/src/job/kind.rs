//! What runs when a job fires: a WASI module in the sandbox, a shell
//! command on a worker that permits native processes, or an HTTP request;
//! with the defaults a body without a field gets.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::compact::Rare;
use crate::ids::ModuleDigest;

use super::egress::NetworkLimits;

/// What runs when the job fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum JobKind {
    Wasm(WasmJob),
    Shell(ShellJob),
    Http(HttpJob),
}

impl JobKind {
    pub fn name(&self) -> &'static str {
        match self {
            JobKind::Wasm(_) => "wasm",
            JobKind::Shell(_) => "shell",
            JobKind::Http(_) => "http",
        }
    }

    pub fn timeout_s(&self) -> u64 {
        match self {
            JobKind::Wasm(wasm) => wasm.limits.timeout_s,
            JobKind::Shell(shell) => shell.timeout_s,
            JobKind::Http(http) => http.timeout_s,
        }
    }

    pub fn output_kb(&self) -> u64 {
        match self {
            JobKind::Wasm(wasm) => wasm.limits.output_kb,
            JobKind::Shell(shell) => shell.output_kb,
            JobKind::Http(http) => http.output_kb,
        }
    }

    pub fn is_native(&self) -> bool {
        matches!(self, JobKind::Shell(_))
    }

    /// The kind with its limits lowered to a worker's `caps`, and a note for
    /// each limit that was lowered (`timeout_s 3600 → 600`).
    pub fn clamped(&self, caps: &RunCaps) -> (JobKind, Vec<String>) {
        let mut kind = self.clone();
        let mut notes = Vec::new();
        let mut clamp = |name: &str, value: &mut u64, cap: u64| {
            if *value > cap {
                notes.push(format!("{name} {value} → {cap}"));
                *value = cap;
            }
        };
        match &mut kind {
            JobKind::Wasm(wasm) => {
                clamp("timeout_s", &mut wasm.limits.timeout_s, caps.timeout_s);
                clamp("output_kb", &mut wasm.limits.output_kb, caps.output_kb);
                clamp("fuel", &mut wasm.limits.fuel, caps.fuel);
                clamp("memory_mb", &mut wasm.limits.memory_mb, caps.memory_mb);
            }
            JobKind::Shell(shell) => {
                clamp("timeout_s", &mut shell.timeout_s, caps.timeout_s);
                clamp("output_kb", &mut shell.output_kb, caps.output_kb);
            }
            JobKind::Http(http) => {
                clamp("timeout_s", &mut http.timeout_s, caps.timeout_s);
                clamp("output_kb", &mut http.output_kb, caps.output_kb);
            }
        }
        (kind, notes)
    }
}

/// The most a worker lets any run have (`[worker] max_timeout_s`,
/// `max_output_kb`, `max_fuel`, `max_memory_mb`); a job asking for more
/// runs with the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunCaps {
    pub timeout_s: u64,
    pub output_kb: u64,
    pub fuel: u64,
    pub memory_mb: u64,
}

impl Default for RunCaps {
    fn default() -> Self {
        Self {
            timeout_s: super::limits::MAX_TIMEOUT_S,
            output_kb: super::limits::MAX_OUTPUT_KB,
            fuel: u64::MAX,
            memory_mb: super::limits::MAX_MEMORY_MB,
        }
    }
}

/// A WASI module run inside the sandbox. The fields most jobs leave empty
/// are [`Rare`], as in `JobSpec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WasmJob {
    #[schema(value_type = String, example = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")]
    pub module: ModuleDigest,
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub args: Rare<Vec<String>>,
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    pub env: Rare<BTreeMap<String, String>>,
    /// Directories to preopen; each must be granted by the worker's config.
    #[serde(default)]
    #[schema(value_type = Vec<DirMount>)]
    pub dirs: Rare<Vec<DirMount>>,
    #[serde(default)]
    pub limits: WasmLimits,
    /// Where the job may connect (components only): `https://host`,
    /// `http://host:port`, `https://*.domain`, `tcp://host:port`. Empty:
    /// nowhere. The worker's own policy applies on top.
    #[serde(default, skip_serializing_if = "Rare::is_usual")]
    #[schema(value_type = Vec<String>)]
    pub egress: Rare<Vec<String>>,
    /// Per-run network limits (only meaningful with `egress`).
    #[serde(default)]
    #[schema(value_type = NetworkLimits)]
    pub network: Rare<NetworkLimits>,
    /// Plain settings a component reads through `wasi:config/store`, beside
    /// the job's secrets and the run context (`SANDCRON_*`).
    #[serde(default, skip_serializing_if = "Rare::is_usual")]
    #[schema(value_type = BTreeMap<String, String>)]
    pub config: Rare<BTreeMap<String, String>>,
    /// Also give the job's secrets as environment variables (for languages
    /// and core modules that only read the environment).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secrets_as_env: bool,
    /// Put the run context (`SANDCRON_JOB`, `SANDCRON_TICK`, ...) in the
    /// environment (default). With `false` the environment is exactly
    /// `env` (and the secrets, with `secrets_as_env`); the context stays
    /// readable through `wasi:config`.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub context_env: bool,
}

impl WasmJob {
    /// A job running `module` with no arguments, environment, directories,
    /// network, config or secrets, at the default limits.
    pub fn new(module: ModuleDigest) -> Self {
        Self {
            module,
            args: Rare::default(),
            env: Rare::default(),
            dirs: Rare::default(),
            limits: WasmLimits::default(),
            egress: Rare::default(),
            network: Rare::default(),
            config: Rare::default(),
            secrets_as_env: false,
            context_env: true,
        }
    }
}

fn yes() -> bool {
    true
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if takes a reference
fn is_true(value: &bool) -> bool {
    *value
}

/// A directory a worker grants (by name, in its config) mounted into the
/// guest at `guest_path`; read-only unless `writable`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DirMount {
    /// The grant's name in the worker configuration (`[worker.dirs]`).
    pub grant: String,
    /// Where the guest sees it, an absolute path such as `/data`.
    pub guest_path: String,
    #[serde(default)]
    pub writable: bool,
}

/// Resource limits of one WASM run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct WasmLimits {
    /// Fuel units (roughly one per WebAssembly instruction).
    pub fuel: u64,
    pub memory_mb: u64,
    pub timeout_s: u64,
    pub output_kb: u64,
}

impl Default for WasmLimits {
    fn default() -> Self {
        Self {
            fuel: 10_000_000_000,
            memory_mb: 64,
            timeout_s: 300,
            output_kb: 1024,
        }
    }
}

/// A command run by `sh -c` on a worker that permits native processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellJob {
    pub command: String,
    /// Extra environment; the process otherwise starts with a cleared environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "default_shell_timeout_s")]
    pub timeout_s: u64,
    #[serde(default = "default_output_kb")]
    pub output_kb: u64,
}

/// An HTTP request made by the worker when the job fires. The response's
/// status line, headers and body (up to `output_kb`) are the run's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpJob {
    /// `GET` (default), `HEAD`, `POST`, `PUT`, `PATCH`, `DELETE` or `OPTIONS`.
    #[serde(default = "default_http_method")]
    pub method: String,
    /// An `http://` or `https://` URL; the worker's allow-list decides
    /// which destinations it may reach.
    pub url: String,
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    pub headers: Rare<BTreeMap<String, String>>,
    /// The request body, sent as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The whole exchange, connecting to the last byte of the body.
    #[serde(default = "default_http_timeout_s")]
    pub timeout_s: u64,
    /// Statuses that count as success; empty: any 2xx.
    #[serde(default, skip_serializing_if = "Rare::is_usual")]
    #[schema(value_type = Vec<u16>)]
    pub expect_status: Rare<Vec<u16>>,
    #[serde(default = "default_output_kb")]
    pub output_kb: u64,
}

/// The methods an HTTP job may use.
pub const HTTP_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

fn default_http_method() -> String {
    "GET".to_owned()
}

fn default_http_timeout_s() -> u64 {
    30
}

fn default_shell_timeout_s() -> u64 {
    3600
}

fn default_output_kb() -> u64 {
    1024
}
