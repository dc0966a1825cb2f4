//! The raw configuration file, exactly as written (every table rejects
//! unknown keys), and reading it. Nothing here is validated: `settings`
//! turns these tables into the settings the parts run with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::auth::Role;

/// The raw file, exactly as written; every table rejects unknown keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerFile,
    #[serde(default)]
    pub auth: AuthFile,
    #[serde(default)]
    pub worker: WorkerFile,
    #[serde(default)]
    pub logs: LogsFile,
    pub etcd: Option<EtcdFile>,
    pub mongodb: Option<MongoFile>,
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub alerts: AlertsFile,
    #[serde(default)]
    pub secrets: SecretsFile,
}

/// `[secrets]`: the key file that seals the secrets jobs use. Masters and
/// workers of one installation need the same file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsFile {
    /// One key per line, 64 hex digits, the first sealing; mode 0600
    /// (`sandcron secret keygen` makes one). `sandcron dev` default:
    /// `secrets.key` in its data directory, created on first start.
    pub key_file: Option<PathBuf>,
}

/// `[alerts]`: where workers send alerts, and the rules for every job.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsFile {
    /// The same alert (job, rule, status) at most once per this many seconds
    /// (default 300); the ones in between are counted in the next.
    pub min_interval_s: Option<u64>,
    /// The console's public address, for links in alerts.
    pub console_url: Option<String>,
    /// Channels by name: each a `webhook`, an `email`, a `slack` or a `feishu`.
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelFile>,
    /// Rules that apply to every job.
    #[serde(default)]
    pub rules: Vec<AlertRuleFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelFile {
    pub webhook: Option<WebhookFile>,
    pub email: Option<EmailFile>,
    pub slack: Option<SlackFile>,
    pub feishu: Option<FeishuFile>,
}

/// A Slack incoming webhook; its URL is its credential.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackFile {
    pub url: String,
    pub timeout_s: Option<u64>,
}

/// A Feishu (Lark) custom bot's webhook.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeishuFile {
    pub url: String,
    /// The bot's signature-verification secret, when it has one.
    pub secret: Option<String>,
    pub timeout_s: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    pub url: String,
    /// Signs every delivery (`X-Sandcron-Signature`); required unless
    /// `unsigned = true`.
    pub secret: Option<String>,
    /// Send deliveries unsigned (for receivers that cannot check a
    /// signature, such as chat webhooks whose URL is the secret).
    pub unsigned: Option<bool>,
    pub timeout_s: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailFile {
    /// The SMTP server's host name (also the name its certificate must carry).
    pub smtp_host: String,
    /// Default 587 for `starttls`, 465 for `tls`, 25 for `none`.
    pub smtp_port: Option<u16>,
    /// `starttls` (default), `tls` or `none`.
    pub tls: Option<crate::alert::SmtpTls>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Extra CA certificates (PEM) to trust for the SMTP server.
    pub ca_file: Option<PathBuf>,
    pub from: String,
    pub to: Vec<String>,
    pub timeout_s: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRuleFile {
    #[serde(default)]
    pub on: Vec<crate::run::RunStatus>,
    pub failure_rate: Option<crate::job::FailureRate>,
    pub channels: Vec<String>,
}

/// `[etcd]`: the coordination cluster of a master or worker.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdFile {
    /// Client URLs of the members, e.g. `["http://10.0.0.1:2379", …]`.
    pub endpoints: Option<Vec<String>>,
    /// Key prefix, so several installations can share one etcd.
    pub prefix: Option<String>,
    pub dial_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM files for `https://` endpoints.
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub server_name: Option<String>,
}

/// `[mongodb]`: where run history and output live in a cluster.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoFile {
    /// A MongoDB connection string, e.g. `mongodb://db1,db2,db3/?replicaSet=rs0`.
    pub uri: Option<String>,
    pub database: Option<String>,
    pub pool_size: Option<u32>,
    pub connect_timeout_ms: Option<u64>,
    pub server_selection_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub listen: Option<String>,
    /// Serve without tokens on a non-loopback address. Only for trusted networks.
    pub insecure: Option<bool>,
    pub max_body_kb: Option<u64>,
    /// The largest WebAssembly binary accepted at upload.
    pub max_module_mb: Option<u64>,
    /// Whether this master accepts shell jobs (from admins) at all.
    pub allow_shell_jobs: Option<bool>,
    /// Host names a server without tokens answers besides `localhost` and
    /// address literals (names of this machine the browser uses).
    pub allowed_hosts: Option<Vec<String>>,
    /// Modules the installation may hold.
    pub max_modules: Option<u64>,
    /// Their bytes together, MiB.
    pub max_modules_mb: Option<u64>,
    /// Jobs the installation may hold.
    pub max_jobs: Option<u64>,
    /// The largest job (its stored JSON), KiB.
    pub max_job_kb: Option<u64>,
    /// Runs of one job requested and not started yet ("run now").
    pub max_pending_runs: Option<u64>,
    /// Secrets the installation may hold.
    pub max_secrets: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    #[serde(default)]
    pub tokens: Vec<TokenFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    /// Who the token belongs to; shown in logs instead of the token.
    pub name: String,
    pub role: Role,
    /// The token itself, or …
    pub token: Option<String>,
    /// … its SHA-256 in hex, so the file need not hold the secret.
    pub sha256: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerFile {
    pub id: Option<String>,
    pub capacity: Option<usize>,
    pub allow_native: Option<bool>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Variables a native process inherits from the worker (everything else is cleared).
    pub native_env: Option<Vec<String>>,
    /// SIGTERM → SIGKILL grace period for native process groups.
    pub kill_grace_s: Option<u64>,
    /// Missed ticks recorded one by one before the rest are summarised in one record.
    pub missed_record_limit: Option<u64>,
    /// Most ticks one `catchup = all` recovery runs.
    pub catchup_run_limit: Option<u64>,
    /// How long shutdown waits for runs to finish before killing them.
    pub drain_timeout_s: Option<u64>,
    /// Host directories WASM jobs may mount, by grant name: a path (any
    /// job, writable if the job asks), or `{ path, writable = false, jobs =
    /// ["backup-*"] }`.
    #[serde(default)]
    pub dirs: BTreeMap<String, DirFile>,
    /// The most linear memory one WASM run may use (caps a job's memory_mb).
    pub max_memory_mb: Option<u64>,
    /// The longest any run may take (caps a job's timeout_s).
    pub max_timeout_s: Option<u64>,
    /// The most output any run may keep, KiB (caps a job's output_kb).
    pub max_output_kb: Option<u64>,
    /// The most fuel one WASM run may have (caps a job's fuel).
    pub max_fuel: Option<u64>,
    /// For tests only: shifts this worker's clock, to show that claims stay
    /// exactly-once when clocks disagree.
    pub clock_offset_ms: Option<i64>,
    /// The worker's lease: how long after its last keep-alive a silent worker
    /// is considered gone and its jobs move.
    pub lease_ttl_s: Option<u64>,
    /// Address of the worker's probe server (`/healthz`, `/readyz`,
    /// `/metrics`); none by default.
    pub listen: Option<String>,
    /// Where HTTP jobs may connect: `public`, `private`, `loopback`, `*`,
    /// addresses, CIDR blocks, host names, `*.domain`. Default `["public"]`
    /// (`sandcron dev`: public, private and loopback); `[]` refuses HTTP jobs.
    pub http_allow: Option<Vec<String>>,
    /// The API's address as services outside see it (a master or the load
    /// balancer in front of them), for async jobs' `SANDCRON_RESULT_URL`.
    pub api_url: Option<String>,
    /// `[worker.state]`: how much key-value state (`wasi:keyvalue`) each
    /// job may keep.
    #[serde(default)]
    pub state: StateFile,
}

/// One `[worker] dirs` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DirFile {
    /// A path every job may mount, writable if it asks (the original form).
    Path(PathBuf),
    Grant(DirGrantFile),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrantFile {
    pub path: PathBuf,
    /// Whether jobs may mount it writable (default: read-only).
    #[serde(default)]
    pub writable: bool,
    /// Only these jobs (names, or prefixes ending in `*`); default: all.
    #[serde(default)]
    pub jobs: Vec<String>,
}

/// `[worker.state]`: per-job quotas of key-value state, checked at every
/// write a run makes on this worker.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    /// Keys per job (default 1000).
    pub max_keys: Option<u64>,
    /// Bytes per value, KiB (default 64; at most 1024).
    pub max_value_kb: Option<u64>,
    /// Keys and values of one job together, KiB (default 1024).
    pub max_job_kb: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsFile {
    pub retention_days: Option<u64>,
    /// How long audit entries are kept (default 365).
    pub audit_retention_days: Option<u64>,
    pub batch_docs: Option<usize>,
    pub flush_ms: Option<u64>,
    pub shutdown_replay_s: Option<u64>,
}

pub(super) fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read configuration file {}", path.display()))?;
    parse_file(&text).with_context(|| format!("invalid configuration file {}", path.display()))
}

/// Parses configuration text; errors name the offending key and line.
pub fn parse_file(text: &str) -> anyhow::Result<FileConfig> {
    toml::from_str(text).map_err(|err| anyhow::anyhow!("{}", err.to_string().trim_end()))
}
