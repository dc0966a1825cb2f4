//! Validated settings, and the checks that turn the raw file's tables into
//! them: tokens, binds, worker limits and grants, alerts, logs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use crate::auth::Token;
use crate::job::limits as job_limits;

use super::file::{AlertsFile, AuthFile, DirFile, FileConfig, LogsFile, ServerFile, StateFile, WorkerFile};

/// Server settings after validation.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub tokens: Vec<Token>,
    /// Largest JSON body accepted.
    pub max_body_bytes: usize,
    /// Largest module accepted at upload.
    pub max_module_bytes: u64,
    /// `server.allowed_hosts`, lower case, checked.
    pub allowed_hosts: Vec<String>,
    /// What callers may store.
    pub quotas: Quotas,
}

/// What the API lets callers store (`[server] max_modules`,
/// `max_modules_mb`, `max_jobs`, `max_job_kb`, `max_pending_runs`,
/// `max_secrets`), so that the coordination store stays bounded: with the
/// defaults, and the workers' default state quota, the most live data the
/// API can put in etcd is [`Quotas::worst_case_bytes`], under etcd's
/// default 2 GiB quota with room for history between compactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    pub max_modules: u64,
    pub max_module_total_bytes: u64,
    pub max_jobs: u64,
    pub max_job_bytes: u64,
    pub max_pending_runs: u64,
    pub max_secrets: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            max_modules: 256,
            max_module_total_bytes: 512 << 20,
            max_jobs: 2000,
            max_job_bytes: 64 << 10,
            max_pending_runs: 20,
            max_secrets: 500,
        }
    }
}

/// Bytes the store holds per item beyond what a quota counts, measured from
/// the encodings (see the tests): a job's key, bookkeeping and claim state;
/// one pending run; one state key's store key; a sealed secret's record.
pub const JOB_OVERHEAD_BYTES: u64 = 8 << 10;
pub const TRIGGER_BYTES: u64 = 1536;
pub const STATE_KEY_OVERHEAD_BYTES: u64 = 704;
pub const SECRET_BYTES: u64 = (2 * crate::secret::MAX_SECRET_BYTES as u64) + 512;

impl Quotas {
    /// The most live data callers can make the coordination store hold
    /// through the API under these quotas, with jobs' state bounded by
    /// `state` (a worker setting). History between compactions comes on top.
    pub fn worst_case_bytes(&self, state: &crate::kvstate::StateQuota) -> u64 {
        let per_job = self.max_job_bytes
            + JOB_OVERHEAD_BYTES
            + self.max_pending_runs * TRIGGER_BYTES
            + state.max_job_bytes
            + state.max_keys * STATE_KEY_OVERHEAD_BYTES;
        self.max_module_total_bytes + self.max_jobs * per_job + self.max_secrets * SECRET_BYTES
    }
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
    pub dirs: BTreeMap<String, crate::exec::wasm::DirGrant>,
    pub max_memory_mb: u64,
    /// The most any run may have (`max_timeout_s`, `max_output_kb`,
    /// `max_fuel`, `max_memory_mb`); a job asking more runs with the cap.
    pub caps: crate::job::RunCaps,
    pub clock_offset_ms: i64,
    /// Where HTTP jobs may connect; empty: this worker runs no HTTP jobs.
    pub http_allow: crate::exec::egress::EgressPolicy,
    /// Base URL of the API for async results (`<api_url>/api/v1/runs/<id>/result`).
    pub api_url: Option<String>,
    /// How much key-value state each job may keep (`[worker.state]`).
    pub state_quota: crate::kvstate::StateQuota,
}

/// Log settings after validation.
#[derive(Debug, Clone)]
pub struct LogsConfig {
    pub retention: Duration,
    /// How long the audit log keeps an entry.
    pub audit_retention: Duration,
    pub batch_docs: usize,
    pub flush_interval: Duration,
    /// How long a stopping worker goes on replaying its log spool.
    pub shutdown_replay: Duration,
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

pub(super) fn tokens(auth: &AuthFile) -> anyhow::Result<Vec<Token>> {
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

pub(super) fn parse_sha256_hex(hex: &str) -> anyhow::Result<[u8; 32]> {
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
pub(super) fn check_bind(listen: SocketAddr, tokens: &[Token], insecure: bool) -> anyhow::Result<()> {
    if tokens.is_empty() && !listen.ip().is_loopback() && !insecure {
        bail!(
            "refusing to listen on {listen} without auth tokens: configure [[auth.tokens]] \
             or pass --insecure to accept unauthenticated requests from the network"
        );
    }
    Ok(())
}

pub(super) fn check_capacity(capacity: usize) -> anyhow::Result<usize> {
    if !(1..=10_000).contains(&capacity) {
        bail!("worker capacity must be between 1 and 10000, got {capacity}");
    }
    Ok(capacity)
}

pub(super) fn kb_to_bytes(kb: u64, key: &str) -> anyhow::Result<usize> {
    if !(1..=1024 * 1024).contains(&kb) {
        bail!("{key} must be between 1 and 1048576, got {kb}");
    }
    Ok((kb * 1024) as usize)
}

pub(super) fn module_limit(mb: Option<u64>) -> anyhow::Result<u64> {
    Ok(bounded("server.max_module_mb", mb, 64, 1..=1024)? * 1024 * 1024)
}

pub(super) fn worker(
    file: &WorkerFile,
    allow_native_default: bool,
    drain_default_s: u64,
) -> anyhow::Result<WorkerConfig> {
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
    let kill_grace_s = bounded("worker.kill_grace_s", file.kill_grace_s, 5, 0..=600)?;
    let max_memory_mb = match file.max_memory_mb.unwrap_or(4096) {
        mb @ 1..=4096 => mb,
        mb => bail!("worker.max_memory_mb must be between 1 and 4096, got {mb}"),
    };
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
        max_memory_mb,
        caps: crate::job::RunCaps {
            timeout_s: capped(file.max_timeout_s, "max_timeout_s", job_limits::MAX_TIMEOUT_S)?,
            output_kb: capped(file.max_output_kb, "max_output_kb", job_limits::MAX_OUTPUT_KB)?,
            fuel: capped(file.max_fuel, "max_fuel", u64::MAX)?,
            memory_mb: max_memory_mb,
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
        state_quota: state_quota(&file.state)?,
    })
}

/// A worker cap: at least 1, at most what any job may ask (`max`, also
/// the default).
fn capped(value: Option<u64>, key: &str, max: u64) -> anyhow::Result<u64> {
    match value {
        None => Ok(max),
        Some(value) if (1..=max).contains(&value) => Ok(value),
        Some(value) => bail!("worker.{key} must be between 1 and {max}, got {value}"),
    }
}

/// Validates `[worker.state]`: a value fits one store write
/// (`coord::MAX_VALUE_BYTES`), every count is at least 1.
pub(super) fn state_quota(file: &StateFile) -> anyhow::Result<crate::kvstate::StateQuota> {
    let defaults = crate::kvstate::StateQuota::default();
    let max_value_kb = (crate::coord::MAX_VALUE_BYTES / 1024) as u64;
    let max_keys = match file.max_keys {
        None => defaults.max_keys,
        Some(keys @ 1..=1_000_000) => keys,
        Some(keys) => bail!("worker.state.max_keys must be between 1 and 1000000, got {keys}"),
    };
    let max_value_bytes = match file.max_value_kb {
        None => defaults.max_value_bytes,
        Some(kb) if (1..=max_value_kb).contains(&kb) => kb * 1024,
        Some(kb) => bail!(
            "worker.state.max_value_kb must be between 1 and {max_value_kb} (one coordination-store write), got {kb}"
        ),
    };
    let max_job_bytes = match file.max_job_kb {
        None => defaults.max_job_bytes,
        Some(kb @ 1..=1_048_576) => kb * 1024,
        Some(kb) => bail!("worker.state.max_job_kb must be between 1 and 1048576, got {kb}"),
    };
    Ok(crate::kvstate::StateQuota {
        max_keys,
        max_value_bytes,
        max_job_bytes,
    })
}

/// Checks an `http://` or `https://` URL from the configuration.
pub(super) fn http_url(url: &str, key: &str) -> anyhow::Result<String> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("{key}: {url:?} is not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        bail!("{key}: {url:?} must be an http:// or https:// URL");
    }
    Ok(url.to_owned())
}

/// Validates `[alerts]`: channels, rules naming known channels, intervals.
pub(super) fn alerts(file: &AlertsFile) -> anyhow::Result<crate::alert::AlertsConfig> {
    use crate::alert::{
        AlertsConfig, Channel, EmailChannel, FeishuChannel, GlobalRule, SlackChannel, SmtpTls, WebhookChannel,
    };
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
        let built = match (&channel.webhook, &channel.email, &channel.slack, &channel.feishu) {
            (Some(hook), None, None, None) => Channel::Webhook(WebhookChannel {
                url: http_url(&hook.url, &format!("{key}.webhook.url"))?,
                secret: match (&hook.secret, hook.unsigned.unwrap_or(false)) {
                    (Some(_), true) => bail!("{key}.webhook: a secret and unsigned = true contradict each other"),
                    (Some(secret), false) if secret.len() < 16 => {
                        bail!("{key}.webhook.secret must be at least 16 characters")
                    }
                    (None, false) => bail!(
                        "{key}.webhook.secret is required (at least 16 characters): deliveries are signed so \
                         receivers can check them; set unsigned = true to send them unsigned"
                    ),
                    (secret, _) => secret.clone(),
                },
                timeout: timeout(hook.timeout_s, &format!("{key}.webhook.timeout_s"))?,
            }),
            (None, Some(mail), None, None) => {
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
            (None, None, Some(slack), None) => Channel::Slack(
                SlackChannel::new(&slack.url, timeout(slack.timeout_s, &format!("{key}.slack.timeout_s"))?)
                    .map_err(|err| anyhow::anyhow!("{key}.slack.url: {err}"))?,
            ),
            (None, None, None, Some(feishu)) => Channel::Feishu(
                FeishuChannel::new(
                    &feishu.url,
                    feishu.secret.as_deref(),
                    timeout(feishu.timeout_s, &format!("{key}.feishu.timeout_s"))?,
                )
                .map_err(|err| anyhow::anyhow!("{key}.feishu.{err}"))?,
            ),
            _ => bail!("{key}: give exactly one of webhook, email, slack or feishu"),
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
pub(super) fn is_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
}

/// Directory grants must name existing absolute directories; the name is what
/// a job's `dirs[].grant` refers to.
pub(super) fn checked_dirs(
    dirs: &BTreeMap<String, DirFile>,
) -> anyhow::Result<BTreeMap<String, crate::exec::wasm::DirGrant>> {
    let mut grants = BTreeMap::new();
    for (name, entry) in dirs {
        if !is_label(name) {
            bail!("worker.dirs: grant name {name:?} must be 1-63 of [A-Za-z0-9._/-]");
        }
        let grant = match entry {
            DirFile::Path(path) => crate::exec::wasm::DirGrant::open(path.clone()),
            DirFile::Grant(grant) => crate::exec::wasm::DirGrant {
                path: grant.path.clone(),
                writable: grant.writable,
                jobs: grant.jobs.clone(),
            },
        };
        if !grant.path.is_absolute() || !grant.path.is_dir() {
            bail!(
                "worker.dirs.{name}: {} is not an existing absolute directory",
                grant.path.display()
            );
        }
        for pattern in &grant.jobs {
            let name_part = pattern.strip_suffix('*').unwrap_or(pattern);
            if pattern != "*" && crate::ids::JobName::new(name_part).is_err() {
                bail!("worker.dirs.{name}.jobs: {pattern:?} is neither a job name nor a prefix ending in '*'");
            }
        }
        grants.insert(name.clone(), grant);
    }
    Ok(grants)
}

/// `value`, or `default` when the file leaves it out, within `range`.
fn bounded<T: PartialOrd + std::fmt::Display + Copy>(
    key: &str,
    value: Option<T>,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> anyhow::Result<T> {
    let value = value.unwrap_or(default);
    if !range.contains(&value) {
        bail!(
            "{key} must be between {} and {}, got {value}",
            range.start(),
            range.end()
        );
    }
    Ok(value)
}

pub(super) fn logs(file: &LogsFile) -> anyhow::Result<LogsConfig> {
    let retention_days = bounded("logs.retention_days", file.retention_days, 30, 1..=3650)?;
    let audit_retention_days = bounded("logs.audit_retention_days", file.audit_retention_days, 365, 1..=36_500)?;
    let batch_docs = bounded("logs.batch_docs", file.batch_docs, 500, 1..=100_000)?;
    let flush_ms = bounded("logs.flush_ms", file.flush_ms, 100, 1..=60_000)?;
    let shutdown_replay_s = bounded("logs.shutdown_replay_s", file.shutdown_replay_s, 30, 0..=86_400)?;
    Ok(LogsConfig {
        retention: Duration::from_secs(retention_days * 24 * 3600),
        audit_retention: Duration::from_secs(audit_retention_days * 24 * 3600),
        batch_docs,
        flush_interval: Duration::from_millis(flush_ms),
        shutdown_replay: Duration::from_secs(shutdown_replay_s),
    })
}

/// The server settings of `[server]` and `[auth]`, with the `--listen` and
/// `--insecure` flags over the file: the address parses, and a server
/// without tokens listens on loopback unless told otherwise.
pub(super) fn server(
    file: &FileConfig,
    listen_flag: Option<&str>,
    insecure_flag: bool,
) -> anyhow::Result<ServerConfig> {
    let listen_text = listen_flag
        .map(str::to_owned)
        .or(file.server.listen.clone())
        .unwrap_or_else(|| super::DEFAULT_LISTEN.to_owned());
    let listen: SocketAddr = listen_text
        .parse()
        .with_context(|| format!("listen address {listen_text:?} is not an IP:port"))?;
    let tokens = tokens(&file.auth)?;
    check_bind(listen, &tokens, insecure_flag || file.server.insecure.unwrap_or(false))?;
    Ok(ServerConfig {
        listen,
        tokens,
        max_body_bytes: kb_to_bytes(file.server.max_body_kb.unwrap_or(1024), "server.max_body_kb")?,
        max_module_bytes: module_limit(file.server.max_module_mb)?,
        allowed_hosts: allowed_hosts(file.server.allowed_hosts.as_deref().unwrap_or_default())?,
        quotas: quotas(&file.server)?,
    })
}

/// `[server]` quotas: each at least 1 and at most a bound that keeps one
/// key under the store's value limit where it matters.
fn quotas(file: &ServerFile) -> anyhow::Result<Quotas> {
    let defaults = Quotas::default();
    let count = |value: Option<u64>, key: &str, default: u64, max: u64| -> anyhow::Result<u64> {
        match value {
            None => Ok(default),
            Some(value) if (1..=max).contains(&value) => Ok(value),
            Some(value) => bail!("server.{key} must be between 1 and {max}, got {value}"),
        }
    };
    Ok(Quotas {
        max_modules: count(file.max_modules, "max_modules", defaults.max_modules, 1_000_000)?,
        max_module_total_bytes: count(
            file.max_modules_mb,
            "max_modules_mb",
            defaults.max_module_total_bytes >> 20,
            1 << 20,
        )? << 20,
        max_jobs: count(file.max_jobs, "max_jobs", defaults.max_jobs, 10_000_000)?,
        // A job is one key: it must fit one store value.
        max_job_bytes: count(
            file.max_job_kb,
            "max_job_kb",
            defaults.max_job_bytes >> 10,
            (crate::coord::MAX_VALUE_BYTES >> 10) as u64,
        )? << 10,
        max_pending_runs: count(
            file.max_pending_runs,
            "max_pending_runs",
            defaults.max_pending_runs,
            100_000,
        )?,
        max_secrets: count(file.max_secrets, "max_secrets", defaults.max_secrets, 1_000_000)?,
    })
}

/// `server.allowed_hosts`: host names, without ports or wildcards.
fn allowed_hosts(names: &[String]) -> anyhow::Result<Vec<String>> {
    names
        .iter()
        .map(|name| {
            let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
            let valid = crate::job::is_host_name(&name);
            if valid {
                Ok(name)
            } else {
                bail!("server.allowed_hosts: {name:?} is not a host name (no port, no wildcard)")
            }
        })
        .collect()
}
