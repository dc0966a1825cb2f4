//! `sandcron dev`: its flags and environment, merged with the file into a
//! [`DevConfig`].

use std::path::PathBuf;

use super::file::{FileConfig, read_file};
use super::settings::{LogsConfig, ServerConfig, WorkerConfig, alerts, check_capacity, logs, server, worker};

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
    /// The secrets key file, created on first start if missing.
    pub secrets_key_file: PathBuf,
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
    /// The secrets key file (default: secrets.key in the data directory,
    /// created with a new key on first start).
    #[arg(long, env = "SANDCRON_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
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
        let server = server(&file, self.listen.as_deref(), self.insecure)?;
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
            server,
            worker,
            logs: logs(&file.logs)?,
            alerts: alerts(&file.alerts)?,
            seed_demo: !self.no_demo,
            secrets_key_file: self
                .secrets_key_file
                .clone()
                .or(file.secrets.key_file.clone())
                .unwrap_or_else(|| data_dir.join(crate::secret::KEY_FILE_NAME)),
            data_dir,
        })
    }
}
