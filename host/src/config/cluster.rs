//! `sandcron master` and `sandcron worker`: their flags and environment,
//! merged with the file into a [`MasterConfig`] or [`WorkerRoleConfig`],
//! and the stores both share.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use super::file::{FileConfig, read_file};
use super::settings::{
    ClusterStores, LogsConfig, MongoSettings, ServerConfig, WorkerConfig, alerts, check_capacity, logs, server, worker,
};
use crate::secret::Keyring;

/// Everything `sandcron master` needs, validated.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    pub server: ServerConfig,
    pub stores: ClusterStores,
    pub allow_shell_jobs: bool,
    /// Upload limits checked by the master's module inspection.
    pub max_memory_mb: u64,
    /// The validated `[alerts]`: its channel names are what jobs may name
    /// (when the master's file has any); the master delivers dead-man
    /// alerts (`alerts.no_success_within_s`) through its channels, which
    /// workers deliver run alerts through.
    pub alerts: crate::alert::AlertsConfig,
    /// Seals the secrets admins write; `None`: no key file configured.
    pub secrets_key: Option<Arc<Keyring>>,
    /// How long the audit log keeps an entry (`[logs] audit_retention_days`).
    pub audit_retention: Duration,
    /// The most live data callers can put in etcd under this file's quotas
    /// (`[server]`, and `[worker.state]` for jobs' state).
    pub etcd_worst_case_bytes: u64,
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
    /// Opens the secrets jobs use; `None`: no key file configured.
    pub secrets_key: Option<Arc<Keyring>>,
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
    /// The secrets key file (overrides [secrets] key_file).
    #[arg(long, env = "SANDCRON_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
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
        let server = server(&file, self.listen.as_deref(), self.insecure)?;
        let etcd_worst_case_bytes = server
            .quotas
            .worst_case_bytes(&super::settings::state_quota(&file.worker.state)?);
        Ok(MasterConfig {
            etcd_worst_case_bytes,
            server,
            stores: self.cluster.stores(&file)?,
            allow_shell_jobs: file.server.allow_shell_jobs.unwrap_or(true),
            audit_retention: logs(&file.logs)?.audit_retention,
            max_memory_mb: file.worker.max_memory_mb.unwrap_or(4096).clamp(1, 4096),
            alerts: alerts(&file.alerts)?,
            secrets_key: self.cluster.secrets_key(&file)?,
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
            secrets_key: self.cluster.secrets_key(&file)?,
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

    /// The key file of flag, environment or file, read and checked.
    fn secrets_key(&self, file: &FileConfig) -> anyhow::Result<Option<Arc<Keyring>>> {
        let path = self.secrets_key_file.clone().or(file.secrets.key_file.clone());
        Ok(match path {
            Some(path) => Some(Arc::new(Keyring::load(&path)?)),
            None => None,
        })
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
