//! Configuration: the TOML file, `SANDCRON_*` environment variables and
//! command-line flags, merged and validated in one place.
//!
//! This is the only module that reads the environment or configuration files.
//! Precedence, highest first: flags, environment, file, defaults. Unknown keys
//! in the file are errors that name the key. Raw tables (`file`) are turned
//! into validated settings (`settings`) by each role's arguments (`dev`,
//! `cluster`), the way ripgrep turns low-level into high-level arguments.

use std::collections::BTreeMap;

mod cluster;
mod dev;
mod file;
mod settings;
#[cfg(test)]
mod tests;

pub use cluster::{ClusterArgs, MasterArgs, MasterConfig, WorkerArgs, WorkerRoleConfig};
pub use dev::{DEFAULT_DATA_DIR, DEFAULT_LISTEN, DevArgs, DevConfig};
pub use file::{FileConfig, parse_file};
pub use settings::{
    ClusterStores, JOB_OVERHEAD_BYTES, LogsConfig, MongoSettings, Quotas, SECRET_BYTES, STATE_KEY_OVERHEAD_BYTES,
    ServerConfig, TRIGGER_BYTES, WorkerConfig,
};

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
