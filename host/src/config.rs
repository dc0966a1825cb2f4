//! Configuration: the TOML file, `SANDCRON_*` environment variables and
//! command-line flags, merged and validated in one place.
//!
//! This is the only module that reads the environment or configuration files.
//! Precedence, highest first: flags, environment, file, defaults. Unknown keys
//! in the file are errors that name the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::auth::{Role, Token};

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
    /// Channels by name: each a `webhook` or an `email`.
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    pub url: String,
    /// Signs every delivery (`X-Sandcron-Signature`); strongly recommended.
    pub secret: Option<String>,
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
    /// Host directories WASM jobs may mount, by grant name.
    #[serde(default)]
    pub dirs: BTreeMap<String, PathBuf>,
    /// The most linear memory one WASM run may use (caps a job's memory_mb).
    pub max_memory_mb: Option<u64>,
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsFile {
    pub retention_days: Option<u64>,
    pub batch_docs: Option<usize>,
    pub flush_ms: Option<u64>,
}

/// Server settings after validation.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub tokens: Vec<Token>,
    /// Largest JSON body accepted.
    pub max_body_bytes: usize,
    /// Largest module accepted at upload.
    pub max_module_bytes: u64,
}

/// Worker settings after validation.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub id: Option<String>,
    pub capacity: usize,
    pub allow_native: bool,
    pub labels: BTreeMap<String, String>,
    pub native_env: Vec<String>,
    pub kill_grace: Duration,
    pub missed_record_limit: u64,
    pub catchup_run_limit: u64,
    pub drain_timeout: Duration,
    pub dirs: BTreeMap<String, PathBuf>,
    pub max_memory_mb: u64,
    pub clock_offset_ms: i64,
    /// Where HTTP jobs may connect; empty: this worker runs no HTTP jobs.
    pub http_allow: crate::exec::egress::EgressPolicy,
    /// Base URL of the API for async results (`<api_url>/api/v1/runs/<id>/result`).
    pub api_url: Option<String>,
}

/// Log settings after validation.
#[derive(Debug, Clone)]
pub struct LogsConfig {
    pub retention: Duration,
    pub batch_docs: usize,
    pub flush_interval: Duration,
}

/// Everything `sandcron dev` needs, validated.
#[derive(Debug, Clone)]
pub struct DevConfig {
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub worker: WorkerConfig,
    pub logs: LogsConfig,
    pub alerts: crate::alert::AlertsConfig,
    /// Seed one demo job into an empty store.
    pub seed_demo: bool,
}

/// `sandcron dev` flags; each also reads its `SANDCRON_*` variable.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DevArgs {
    /// TOML configuration file.
    #[arg(long, env = "SANDCRON_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the API and console (default 127.0.0.1:8070; port 0 picks a free one).
    #[arg(long, env = "SANDCRON_LISTEN")]
    pub listen: Option<String>,
    /// Where jobs and run history are kept (default ./sandcron-data).
    #[arg(long, env = "SANDCRON_DATA_DIR")]
    pub data: Option<PathBuf>,
    /// Forbid shell jobs on this machine.
    #[arg(long)]
    pub no_native: bool,
    /// Concurrent runs at most.
    #[arg(long, env = "SANDCRON_CAPACITY")]
    pub capacity: Option<usize>,
    /// Serve without tokens on a non-loopback address.
    #[arg(long)]
    pub insecure: bool,
    /// Do not seed the demo job into an empty store.
    #[arg(long)]
    pub no_demo: bool,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8070";
pub const DEFAULT_DATA_DIR: &str = "sandcron-data";

impl DevArgs {
    /// Reads the file (if any), applies flags and environment, validates.
    pub fn load(&self) -> anyhow::Result<DevConfig> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let data_dir = self
            .data
            .clone()
            .or(file.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let listen_text = self
            .listen
            .clone()
            .or(file.server.listen.clone())
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen_text
            .parse()
            .with_context(|| format!("listen address {listen_text:?} is not an IP:port"))?;
        let tokens = tokens(&file.auth)?;
        let insecure = self.insecure || file.server.insecure.unwrap_or(false);
        check_bind(listen, &tokens, insecure)?;
        let server = ServerConfig {
            listen,
            tokens,
            max_body_bytes: kb_to_bytes(file.server.max_body_kb.unwrap_or(1024), "server.max_body_kb")?,
            max_module_bytes: module_limit(file.server.max_module_mb)?,
        };
        let mut worker = worker(&file.worker, true, 10)?;
        if file.worker.http_allow.is_none() {
            // Your own machine: local services are fair game, as in crontab.
            worker.http_allow = crate::exec::egress::EgressPolicy::local_machine();
        }
        if self.no_native {
            worker.allow_native = false;
        }
        if let Some(capacity) = self.capacity {
            worker.capacity = check_capacity(capacity)?;
        }
        Ok(DevConfig {
            data_dir,
            server,
            worker,
            logs: logs(&file.logs)?,
            alerts: alerts(&file.alerts)?,
            seed_demo: !self.no_demo,
        })
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read configuration file {}", path.display()))?;
    parse_file(&text).with_context(|| format!("invalid configuration file {}", path.display()))
}

/// Parses configuration text; errors name the offending key and line.
pub fn parse_file(text: &str) -> anyhow::Result<FileConfig> {
    toml::from_str(text).map_err(|err| anyhow::anyhow!("{}", err.to_string().trim_end()))
}

fn tokens(auth: &AuthFile) -> anyhow::Result<Vec<Token>> {
    let mut out = Vec::with_capacity(auth.tokens.len());
    for entry in &auth.tokens {
        if entry.name.trim().is_empty() {
            bail!("auth.tokens: every token needs a name");
        }
        let sha256 = match (&entry.token, &entry.sha256) {
            (Some(token), None) => {
                if token.len() < 16 {
                    bail!("auth.tokens {:?}: token must be at least 16 characters", entry.name);
                }
                Sha256::digest(token.as_bytes()).into()
            }
            (None, Some(hex)) => {
                parse_sha256_hex(hex).with_context(|| format!("auth.tokens {:?}: sha256", entry.name))?
            }
            _ => bail!("auth.tokens {:?}: give exactly one of token or sha256", entry.name),
        };
        if out.iter().any(|t: &Token| t.sha256 == sha256) {
            bail!("auth.tokens {:?}: the same token is configured twice", entry.name);
        }
        out.push(Token {
            name: entry.name.clone(),
            role: entry.role,
            sha256,
        });
    }
    Ok(out)
}

fn parse_sha256_hex(hex: &str) -> anyhow::Result<[u8; 32]> {
    if hex.len() != 64 {
        bail!("expected 64 hex digits, found {}", hex.len());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte =
            u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| anyhow::anyhow!("not hexadecimal: {hex:?}"))?;
    }
    Ok(out)
}

/// A server without tokens answers anyone who can reach it, so it may only
/// listen on loopback unless the operator says otherwise explicitly.
fn check_bind(listen: SocketAddr, tokens: &[Token], insecure: bool) -> anyhow::Result<()> {
    if tokens.is_empty() && !listen.ip().is_loopback() && !insecure {
        bail!(
            "refusing to listen on {listen} without auth tokens: configure [[auth.tokens]] \
             or pass --insecure to accept unauthenticated requests from the network"
        );
    }
    Ok(())
}

fn check_capacity(capacity: usize) -> anyhow::Result<usize> {
    if !(1..=10_000).contains(&capacity) {
        bail!("worker capacity must be between 1 and 10000, got {capacity}");
    }
    Ok(capacity)
}

fn kb_to_bytes(kb: u64, key: &str) -> anyhow::Result<usize> {
    if !(1..=1024 * 1024).contains(&kb) {
        bail!("{key} must be between 1 and 1048576, got {kb}");
    }
    Ok((kb * 1024) as usize)
}

fn module_limit(mb: Option<u64>) -> anyhow::Result<u64> {
    let mb = mb.unwrap_or(64);
    if !(1..=1024).contains(&mb) {
        bail!("server.max_module_mb must be between 1 and 1024, got {mb}");
    }
    Ok(mb * 1024 * 1024)
}

fn worker(file: &WorkerFile, allow_native_default: bool, drain_default_s: u64) -> anyhow::Result<WorkerConfig> {
    if let Some(id) = &file.id {
        crate::ids::WorkerId::new(id).context("worker.id")?;
    }
    for (key, value) in &file.labels {
        if !is_label(key) || !is_label(value) {
            bail!("worker.labels: {key:?} = {value:?} is not a valid label (1-63 of [A-Za-z0-9._/-])");
        }
    }
    let native_env = file.native_env.clone().unwrap_or_else(|| vec!["PATH".to_owned()]);
    for name in &native_env {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("worker.native_env: {name:?} is not a variable name");
        }
    }
    let kill_grace_s = file.kill_grace_s.unwrap_or(5);
    if !(0..=600).contains(&kill_grace_s) {
        bail!("worker.kill_grace_s must be between 0 and 600, got {kill_grace_s}");
    }
    Ok(WorkerConfig {
        id: file.id.clone(),
        capacity: check_capacity(file.capacity.unwrap_or(16))?,
        allow_native: file.allow_native.unwrap_or(allow_native_default),
        labels: file.labels.clone(),
        native_env,
        kill_grace: Duration::from_secs(kill_grace_s),
        missed_record_limit: file.missed_record_limit.unwrap_or(1000).max(1),
        catchup_run_limit: file.catchup_run_limit.unwrap_or(100).max(1),
        drain_timeout: Duration::from_secs(file.drain_timeout_s.unwrap_or(drain_default_s).min(3600)),
        dirs: checked_dirs(&file.dirs)?,
        max_memory_mb: match file.max_memory_mb.unwrap_or(4096) {
            mb @ 1..=4096 => mb,
            mb => bail!("worker.max_memory_mb must be between 1 and 4096, got {mb}"),
        },
        clock_offset_ms: match file.clock_offset_ms.unwrap_or(0) {
            ms @ -3_600_000..=3_600_000 => ms,
            ms => bail!("worker.clock_offset_ms must be within an hour, got {ms}"),
        },
        http_allow: match &file.http_allow {
            Some(entries) => crate::exec::egress::EgressPolicy::parse(entries)
                .map_err(|err| anyhow::anyhow!("worker.http_allow: {err}"))?,
            None => crate::exec::egress::EgressPolicy::public_only(),
        },
        api_url: match &file.api_url {
            Some(url) => Some(http_url(url, "worker.api_url")?.trim_end_matches('/').to_owned()),
            None => None,
        },
    })
}

/// Checks an `http://` or `https://` URL from the configuration.
fn http_url(url: &str, key: &str) -> anyhow::Result<String> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("{key}: {url:?} is not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        bail!("{key}: {url:?} must be an http:// or https:// URL");
    }
    Ok(url.to_owned())
}

/// Validates `[alerts]`: channels, rules naming known channels, intervals.
fn alerts(file: &AlertsFile) -> anyhow::Result<crate::alert::AlertsConfig> {
    use crate::alert::{AlertsConfig, Channel, EmailChannel, GlobalRule, SmtpTls, WebhookChannel};
    let timeout = |value: Option<u64>, key: &str| -> anyhow::Result<Duration> {
        match value.unwrap_or(10) {
            s @ 1..=300 => Ok(Duration::from_secs(s)),
            s => bail!("{key} must be between 1 and 300, got {s}"),
        }
    };
    let mut channels = BTreeMap::new();
    for (name, channel) in &file.channels {
        let key = format!("alerts.channels.{name}");
        if !is_label(name) {
            bail!("{key}: channel names are 1-63 of [A-Za-z0-9._/-]");
        }
        let built = match (&channel.webhook, &channel.email) {
            (Some(hook), None) => Channel::Webhook(WebhookChannel {
                url: http_url(&hook.url, &format!("{key}.webhook.url"))?,
                secret: match &hook.secret {
                    Some(secret) if secret.len() < 16 => {
                        bail!("{key}.webhook.secret must be at least 16 characters")
                    }
                    other => other.clone(),
                },
                timeout: timeout(hook.timeout_s, &format!("{key}.webhook.timeout_s"))?,
            }),
            (None, Some(mail)) => {
                let tls = mail.tls.unwrap_or(SmtpTls::Starttls);
                let default_port = match tls {
                    SmtpTls::Starttls => 587,
                    SmtpTls::Tls => 465,
                    SmtpTls::None => 25,
                };
                if mail.username.is_some() != mail.password.is_some() {
                    bail!("{key}.email: username and password go together");
                }
                let ca_pem = match &mail.ca_file {
                    Some(path) => Some(
                        std::fs::read(path)
                            .with_context(|| format!("{key}.email.ca_file: cannot read {}", path.display()))?,
                    ),
                    None => None,
                };
                let channel = EmailChannel {
                    host: mail.smtp_host.clone(),
                    port: mail.smtp_port.unwrap_or(default_port),
                    tls,
                    username: mail.username.clone(),
                    password: mail.password.clone(),
                    ca_pem,
                    from: mail.from.clone(),
                    to: mail.to.clone(),
                    timeout: timeout(mail.timeout_s, &format!("{key}.email.timeout_s"))?,
                };
                channel
                    .validate()
                    .map_err(|err| anyhow::anyhow!("{key}.email: {err}"))?;
                Channel::Email(channel)
            }
            _ => bail!("{key}: give exactly one of webhook or email"),
        };
        channels.insert(name.clone(), built);
    }
    let mut rules = Vec::new();
    for (index, rule) in file.rules.iter().enumerate() {
        let key = format!("alerts.rules[{index}]");
        if rule.channels.is_empty() {
            bail!("{key}.channels: name at least one channel");
        }
        for channel in &rule.channels {
            if !channels.contains_key(channel) {
                bail!("{key}.channels: no channel named {channel:?} in [alerts.channels]");
            }
        }
        if let Some(status) = rule.on.iter().find(|status| !status.is_alertable()) {
            bail!("{key}.on: {status} is not an alertable status");
        }
        if rule.on.is_empty() && rule.failure_rate.is_none() {
            bail!("{key}: name the statuses to alert on (on) or a failure_rate");
        }
        if let Some(rate) = &rule.failure_rate {
            crate::job::check_failure_rate(&format!("{key}.failure_rate"), rate)
                .map_err(|err| anyhow::anyhow!("{err}"))?;
        }
        rules.push(GlobalRule {
            on: rule.on.clone(),
            failure_rate: rule.failure_rate,
            channels: rule.channels.clone(),
        });
    }
    let min_interval_s = file.min_interval_s.unwrap_or(300);
    if min_interval_s > 7 * 24 * 3600 {
        bail!("alerts.min_interval_s must be at most a week, got {min_interval_s}");
    }
    Ok(AlertsConfig {
        channels,
        rules,
        min_interval: Duration::from_secs(min_interval_s),
        console_url: match &file.console_url {
            Some(url) => Some(http_url(url, "alerts.console_url")?),
            None => None,
        },
    })
}

/// Labels, grant names and channel names: 1 to 63 of `[A-Za-z0-9._/-]`.
fn is_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
}

/// Directory grants must name existing absolute directories; the name is what
/// a job's `dirs[].grant` refers to.
fn checked_dirs(dirs: &BTreeMap<String, PathBuf>) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    for (name, path) in dirs {
        if !is_label(name) {
            bail!("worker.dirs: grant name {name:?} must be 1-63 of [A-Za-z0-9._/-]");
        }
        if !path.is_absolute() || !path.is_dir() {
            bail!(
                "worker.dirs.{name}: {} is not an existing absolute directory",
                path.display()
            );
        }
    }
    Ok(dirs.clone())
}

fn logs(file: &LogsFile) -> anyhow::Result<LogsConfig> {
    let retention_days = file.retention_days.unwrap_or(30);
    if !(1..=3650).contains(&retention_days) {
        bail!("logs.retention_days must be between 1 and 3650, got {retention_days}");
    }
    let batch_docs = file.batch_docs.unwrap_or(500);
    if !(1..=100_000).contains(&batch_docs) {
        bail!("logs.batch_docs must be between 1 and 100000, got {batch_docs}");
    }
    let flush_ms = file.flush_ms.unwrap_or(100);
    if !(1..=60_000).contains(&flush_ms) {
        bail!("logs.flush_ms must be between 1 and 60000, got {flush_ms}");
    }
    Ok(LogsConfig {
        retention: Duration::from_secs(retention_days * 24 * 3600),
        batch_docs,
        flush_interval: Duration::from_millis(flush_ms),
    })
}

/// Validated `[mongodb]` settings.
#[derive(Debug, Clone)]
pub struct MongoSettings {
    pub uri: String,
    pub database: String,
    pub pool_size: Option<u32>,
    pub connect_timeout: Duration,
    pub server_selection_timeout: Duration,
}

/// What a cluster process (master or worker) shares: where the stores are.
#[derive(Debug, Clone)]
pub struct ClusterStores {
    pub etcd: crate::coord::etcd::EtcdConfig,
    /// Key prefix in etcd (ends with `/`).
    pub prefix: String,
    pub mongo: MongoSettings,
}

/// Everything `sandcron master` needs, validated.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    pub server: ServerConfig,
    pub stores: ClusterStores,
    pub allow_shell_jobs: bool,
    /// Upload limits checked by the master's module inspection.
    pub max_memory_mb: u64,
    /// The alert channels of `[alerts]`, by name: what jobs may name (when
    /// the master's file has any; workers deliver).
    pub alert_channels: Vec<String>,
}

/// Everything `sandcron worker` needs, validated.
#[derive(Debug, Clone)]
pub struct WorkerRoleConfig {
    pub worker: WorkerConfig,
    pub stores: ClusterStores,
    pub logs: LogsConfig,
    /// The worker's own files: the log spool and compiled module artifacts.
    pub data_dir: PathBuf,
    pub lease_ttl: Duration,
    /// Where the probe server listens, if anywhere.
    pub listen: Option<SocketAddr>,
    pub alerts: crate::alert::AlertsConfig,
}

/// Flags shared by `sandcron master` and `sandcron worker`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClusterArgs {
    /// TOML configuration file.
    #[arg(long, env = "SANDCRON_CONFIG")]
    pub config: Option<PathBuf>,
    /// etcd client URLs, comma-separated (overrides [etcd] endpoints).
    #[arg(long, env = "SANDCRON_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// MongoDB connection string (overrides [mongodb] uri).
    #[arg(long, env = "SANDCRON_MONGODB_URI", hide_env_values = true)]
    pub mongodb_uri: Option<String>,
    /// Load and validate the configuration (file, environment and flags) as a
    /// start would, print a summary without secrets and exit: 0 when valid, 2
    /// when not. Contacts neither etcd nor MongoDB.
    #[arg(long)]
    pub check_config: bool,
}

/// `sandcron master` flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MasterArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Address of the API and console (default 127.0.0.1:8070).
    #[arg(long, env = "SANDCRON_LISTEN")]
    pub listen: Option<String>,
    /// Serve without tokens on a non-loopback address.
    #[arg(long)]
    pub insecure: bool,
}

/// `sandcron worker` flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Worker id (default: host name and a random suffix).
    #[arg(long, env = "SANDCRON_WORKER_ID")]
    pub id: Option<String>,
    /// Concurrent runs at most.
    #[arg(long, env = "SANDCRON_CAPACITY")]
    pub capacity: Option<usize>,
    /// Where the worker keeps its spool and module cache (default ./sandcron-worker-data).
    #[arg(long, env = "SANDCRON_DATA_DIR")]
    pub data: Option<PathBuf>,
    /// Address of the probe server: /healthz, /readyz and /metrics (default: none).
    #[arg(long, env = "SANDCRON_WORKER_LISTEN")]
    pub listen: Option<String>,
}

impl MasterArgs {
    pub fn load(&self) -> anyhow::Result<MasterConfig> {
        let file = self.cluster.file()?;
        let listen_text = self
            .listen
            .clone()
            .or(file.server.listen.clone())
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen_text
            .parse()
            .with_context(|| format!("listen address {listen_text:?} is not an IP:port"))?;
        let tokens = tokens(&file.auth)?;
        check_bind(listen, &tokens, self.insecure || file.server.insecure.unwrap_or(false))?;
        let server = ServerConfig {
            listen,
            tokens,
            max_body_bytes: kb_to_bytes(file.server.max_body_kb.unwrap_or(1024), "server.max_body_kb")?,
            max_module_bytes: module_limit(file.server.max_module_mb)?,
        };
        Ok(MasterConfig {
            server,
            stores: self.cluster.stores(&file)?,
            allow_shell_jobs: file.server.allow_shell_jobs.unwrap_or(true),
            max_memory_mb: file.worker.max_memory_mb.unwrap_or(4096).clamp(1, 4096),
            alert_channels: alerts(&file.alerts)?.channels.into_keys().collect(),
        })
    }
}

impl WorkerArgs {
    pub fn load(&self) -> anyhow::Result<WorkerRoleConfig> {
        let file = self.cluster.file()?;
        let mut worker = worker(&file.worker, false, 30)?;
        if let Some(id) = &self.id {
            crate::ids::WorkerId::new(id).context("--id")?;
            worker.id = Some(id.clone());
        }
        if let Some(capacity) = self.capacity {
            worker.capacity = check_capacity(capacity)?;
        }
        let lease_ttl_s = file.worker.lease_ttl_s.unwrap_or(10);
        if !(2..=300).contains(&lease_ttl_s) {
            bail!("worker.lease_ttl_s must be between 2 and 300, got {lease_ttl_s}");
        }
        Ok(WorkerRoleConfig {
            worker,
            stores: self.cluster.stores(&file)?,
            logs: logs(&file.logs)?,
            data_dir: self
                .data
                .clone()
                .or(file.data_dir.clone())
                .unwrap_or_else(|| PathBuf::from("sandcron-worker-data")),
            lease_ttl: Duration::from_secs(lease_ttl_s),
            listen: match self.listen.clone().or(file.worker.listen.clone()) {
                Some(text) => Some(
                    text.parse()
                        .with_context(|| format!("worker listen address {text:?} is not an IP:port"))?,
                ),
                None => None,
            },
            alerts: alerts(&file.alerts)?,
        })
    }
}

impl ClusterArgs {
    fn file(&self) -> anyhow::Result<FileConfig> {
        match &self.config {
            Some(path) => read_file(path),
            None => Ok(FileConfig::default()),
        }
    }

    fn stores(&self, file: &FileConfig) -> anyhow::Result<ClusterStores> {
        let etcd = file.etcd.as_ref();
        let endpoints = if self.etcd_endpoints.is_empty() {
            etcd.and_then(|e| e.endpoints.clone()).unwrap_or_default()
        } else {
            self.etcd_endpoints.clone()
        };
        if endpoints.is_empty() {
            bail!("no etcd endpoints: set [etcd] endpoints, --etcd-endpoints or SANDCRON_ETCD_ENDPOINTS");
        }
        for endpoint in &endpoints {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                bail!("etcd endpoint {endpoint:?} must start with http:// or https://");
            }
        }
        let millis = |value: Option<u64>, key: &str| -> anyhow::Result<Duration> {
            match value.unwrap_or(5000) {
                ms @ 100..=600_000 => Ok(Duration::from_millis(ms)),
                ms => bail!("{key} must be between 100 and 600000, got {ms}"),
            }
        };
        let read_pem = |path: &Option<PathBuf>, key: &str| -> anyhow::Result<Option<Vec<u8>>> {
            path.as_ref()
                .map(|p| {
                    let pem = std::fs::read(p).with_context(|| format!("{key}: cannot read {}", p.display()))?;
                    // Caught here rather than at the first connection (and by --check-config).
                    if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
                        bail!("{key}: {} is not a PEM file", p.display());
                    }
                    Ok(pem)
                })
                .transpose()
        };
        let ca = read_pem(&etcd.and_then(|e| e.ca_file.clone()), "etcd.ca_file")?;
        let cert = read_pem(&etcd.and_then(|e| e.cert_file.clone()), "etcd.cert_file")?;
        let key = read_pem(&etcd.and_then(|e| e.key_file.clone()), "etcd.key_file")?;
        if cert.is_some() != key.is_some() {
            bail!("etcd.cert_file and etcd.key_file go together");
        }
        let tls = match ca {
            Some(ca_pem) => Some(crate::coord::etcd::EtcdTls {
                ca_pem,
                client_cert_pem: cert,
                client_key_pem: key,
                server_name: etcd.and_then(|e| e.server_name.clone()),
            }),
            None if cert.is_some() => bail!("etcd.cert_file needs etcd.ca_file"),
            None => None,
        };
        let username = etcd.and_then(|e| e.username.clone());
        let password = etcd.and_then(|e| e.password.clone());
        if username.is_some() != password.is_some() {
            bail!("etcd.username and etcd.password go together");
        }
        let mut etcd_config = crate::coord::etcd::EtcdConfig::new(endpoints);
        etcd_config.dial_timeout = millis(etcd.and_then(|e| e.dial_timeout_ms), "etcd.dial_timeout_ms")?;
        etcd_config.request_timeout = millis(etcd.and_then(|e| e.request_timeout_ms), "etcd.request_timeout_ms")?;
        etcd_config.username = username;
        etcd_config.password = password;
        etcd_config.tls = tls;
        let prefix = etcd
            .and_then(|e| e.prefix.clone())
            .unwrap_or_else(|| "/sandcron/".to_owned());
        if !prefix.starts_with('/') || !prefix.ends_with('/') || prefix.len() > 128 {
            bail!("etcd.prefix {prefix:?} must start and end with '/'");
        }

        let mongo = file.mongodb.as_ref();
        let uri = self
            .mongodb_uri
            .clone()
            .or_else(|| mongo.and_then(|m| m.uri.clone()))
            .context("no MongoDB URI: set [mongodb] uri, --mongodb-uri or SANDCRON_MONGODB_URI")?;
        if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
            bail!("the MongoDB URI must start with mongodb:// or mongodb+srv://");
        }
        let database = mongo
            .and_then(|m| m.database.clone())
            .unwrap_or_else(|| "sandcron".to_owned());
        if database.is_empty() || database.len() > 63 || database.contains(['/', '.', ' ', '$', '\\', '"']) {
            bail!("mongodb.database {database:?} is not a valid database name");
        }
        let mongo = MongoSettings {
            uri,
            database,
            pool_size: mongo.and_then(|m| m.pool_size),
            connect_timeout: millis(mongo.and_then(|m| m.connect_timeout_ms), "mongodb.connect_timeout_ms")?,
            server_selection_timeout: millis(
                mongo.and_then(|m| m.server_selection_timeout_ms),
                "mongodb.server_selection_timeout_ms",
            )?,
        };
        Ok(ClusterStores {
            etcd: etcd_config,
            prefix,
            mongo,
        })
    }
}

/// Client settings for the CLI subcommands.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Base URL of a sandcron master.
    #[arg(
        long,
        global = true,
        env = "SANDCRON_SERVER",
        default_value = "http://127.0.0.1:8070"
    )]
    pub server: String,
    /// Bearer token.
    #[arg(long, global = true, env = "SANDCRON_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// The tracing filter: `SANDCRON_LOG`, else `info`.
pub fn log_filter() -> String {
    std::env::var("SANDCRON_LOG").unwrap_or_else(|_| "info".to_owned())
}

/// The machine's host name, for default worker ids.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Variables a native process inherits, read from this process's environment.
pub fn inherited_env(names: &[String]) -> BTreeMap<String, String> {
    names
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|value| (name.clone(), value)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = parse_file("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").expect_err("unknown");
        assert!(err.to_string().contains("unknown field `lisen`"), "{err}");
        let err = parse_file("[wroker]\n").expect_err("unknown table");
        assert!(err.to_string().contains("unknown field `wroker`"), "{err}");
    }

    #[test]
    fn defaults_are_loopback_without_tokens_and_native_allowed() {
        let config = DevArgs::default().load().expect("defaults");
        assert_eq!(config.server.listen, DEFAULT_LISTEN.parse().expect("addr"));
        assert!(config.server.tokens.is_empty());
        assert!(config.worker.allow_native);
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        let config = DevArgs {
            no_native: true,
            ..DevArgs::default()
        }
        .load()
        .expect("no native");
        assert!(!config.worker.allow_native);
    }

    #[test]
    fn a_public_bind_needs_tokens_or_insecure() {
        let args = DevArgs {
            listen: Some("0.0.0.0:8070".into()),
            ..DevArgs::default()
        };
        let err = args.load().expect_err("public bind");
        assert!(err.to_string().contains("without auth tokens"), "{err}");
        let args = DevArgs { insecure: true, ..args };
        assert!(args.load().is_ok());
    }

    #[test]
    fn tokens_are_hashed_and_validated() {
        let file = parse_file("[[auth.tokens]]\nname = \"ci\"\nrole = \"operator\"\ntoken = \"0123456789abcdef\"\n")
            .expect("parses");
        let parsed = tokens(&file.auth).expect("valid");
        assert_eq!(parsed[0].role, Role::Operator);
        assert_eq!(parsed[0].sha256, <[u8; 32]>::from(Sha256::digest(b"0123456789abcdef")));
        assert!(
            !format!("{:?}", parsed[0]).contains("0123"),
            "debug output must not leak"
        );
        let file = parse_file("[[auth.tokens]]\nname = \"x\"\nrole = \"admin\"\ntoken = \"short\"\n").expect("parses");
        assert!(tokens(&file.auth).is_err());
        let file = parse_file("[[auth.tokens]]\nname = \"x\"\nrole = \"root\"\ntoken = \"0123456789abcdef\"\n")
            .expect_err("unknown role");
        assert!(file.to_string().contains("unknown variant `root`"), "{file}");
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("c.toml");
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn a_worker_needs_its_stores_and_does_not_run_native_processes_by_default() {
        let dir = tempfile::tempdir().expect("temp dir");
        let args = WorkerArgs {
            cluster: ClusterArgs {
                config: Some(write(dir.path(), "")),
                ..Default::default()
            },
            ..Default::default()
        };
        let err = args.load().expect_err("no etcd");
        assert!(err.to_string().contains("no etcd endpoints"), "{err}");
        let config = write(
            dir.path(),
            "[etcd]\nendpoints = [\"http://127.0.0.1:2379\", \"http://127.0.0.2:2379\"]\nprefix = \"/prod/\"\n\
             [mongodb]\nuri = \"mongodb://127.0.0.1:27017\"\n[worker]\ncapacity = 8\nlease_ttl_s = 5\n",
        );
        let args = WorkerArgs {
            cluster: ClusterArgs {
                config: Some(config.clone()),
                ..Default::default()
            },
            id: Some("w-1".into()),
            ..Default::default()
        };
        let loaded = args.load().expect("valid");
        assert!(
            !loaded.worker.allow_native,
            "cluster workers forbid native processes unless configured"
        );
        assert_eq!(loaded.worker.capacity, 8);
        assert_eq!(loaded.worker.id.as_deref(), Some("w-1"));
        assert_eq!(loaded.stores.etcd.endpoints.len(), 2);
        assert_eq!(loaded.stores.prefix, "/prod/");
        assert_eq!(loaded.stores.mongo.database, "sandcron");
        assert_eq!(loaded.lease_ttl, Duration::from_secs(5));
        // Flags (and their environment variables) override the file.
        let args = WorkerArgs {
            cluster: ClusterArgs {
                config: Some(config),
                etcd_endpoints: vec!["http://10.0.0.9:2379".into()],
                mongodb_uri: Some("mongodb://db:27017".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let loaded = args.load().expect("valid");
        assert_eq!(loaded.stores.etcd.endpoints, vec!["http://10.0.0.9:2379".to_owned()]);
        assert_eq!(loaded.stores.mongo.uri, "mongodb://db:27017");
    }

    #[test]
    fn cluster_settings_are_checked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cases = [
            (
                "[etcd]\nendpoints = [\"127.0.0.1:2379\"]\n[mongodb]\nuri = \"mongodb://x\"\n",
                "must start with http://",
            ),
            ("[etcd]\nendpoints = [\"http://x:1\"]\n", "no MongoDB URI"),
            (
                "[etcd]\nendpoints = [\"http://x:1\"]\n[mongodb]\nuri = \"postgres://x\"\n",
                "must start with mongodb://",
            ),
            (
                "[etcd]\nendpoints = [\"http://x:1\"]\nprefix = \"nope\"\n[mongodb]\nuri = \"mongodb://x\"\n",
                "etcd.prefix",
            ),
            (
                "[etcd]\nendpoints = [\"http://x:1\"]\nusername = \"u\"\n[mongodb]\nuri = \"mongodb://x\"\n",
                "go together",
            ),
            (
                "[etcd]\nendpoints = [\"http://x:1\"]\nca_file = \"/nonexistent/ca.pem\"\n[mongodb]\nuri = \"mongodb://x\"\n",
                "cannot read",
            ),
            (
                "[etcd]\nendpoints = [\"http://x:1\"]\n[mongodb]\nuri = \"mongodb://x\"\nport = 1\n",
                "unknown field `port`",
            ),
        ];
        for (text, expected) in cases {
            let args = MasterArgs {
                cluster: ClusterArgs {
                    config: Some(write(dir.path(), text)),
                    ..Default::default()
                },
                ..Default::default()
            };
            let err = format!("{:#}", args.load().expect_err(text));
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
