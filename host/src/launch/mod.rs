//! What each process of `sandcron` starts, one file a role: `master` (the
//! API and the console over etcd and MongoDB; stateless, run several),
//! `worker` (watch, schedule, claim, execute, report) and `dev` (master and
//! worker in one process over the embedded stores). This file holds the
//! pieces they share: the log sink, the WASM engine, worker assembly and the
//! alert task.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;

use crate::alert::{AlertHandle, Alerter, AlertsConfig};
use crate::config::{ClusterStores, LogsConfig, MongoSettings, WorkerConfig, hostname, inherited_env};
use crate::coord::etcd::EtcdStore;
use crate::coord::{Coordinator, KvStore};
use crate::exec::Executor;
use crate::exec::http::HttpExecutor;
use crate::exec::native::NativeExecutor;
use crate::exec::wasm::{WasmConfig, WasmEngine};
use crate::logstore::mongo::{MongoConfig, MongoLogStore};
use crate::logstore::{LogStore, Sink, SinkConfig, SinkTask};
use crate::metrics::Metrics;
use crate::placement::WorkerInfo;
use crate::secret::Keyring;
use crate::worker::{Executors, StoredModules, StoredState, Worker, WorkerDeps};

mod deadman;
mod dev;
mod master;
mod worker;

pub use dev::{DEMO_MODULE, KEY_PREFIX, LEASE_TTL, dev};
pub use master::master;
pub use worker::worker;

/// The heap keeper (`heap::keeper`) for as long as a role runs.
pub(crate) struct HeapKeeper(tokio::task::JoinHandle<()>);

impl HeapKeeper {
    pub(crate) fn start() -> Self {
        Self(tokio::spawn(crate::heap::keeper()))
    }
}

impl Drop for HeapKeeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) fn mongo_config(settings: &MongoSettings) -> MongoConfig {
    MongoConfig {
        uri: settings.uri.clone(),
        database: settings.database.clone(),
        max_pool_size: settings.pool_size,
        connect_timeout: settings.connect_timeout,
        server_selection_timeout: settings.server_selection_timeout,
    }
}

/// Checks a master's or worker's secrets key against the stored secrets
/// before it serves: without a key, a store that holds secrets is refused
/// (the process could not seal or open them); with one, a store none of
/// whose secrets opens is refused (the wrong key file), and each secret
/// that does not open is named in a warning.
pub(crate) async fn check_secrets_key(
    keyring: Option<&Arc<Keyring>>,
    coord: &Coordinator,
    role: &str,
) -> anyhow::Result<Option<Arc<Keyring>>> {
    let stored = coord.list_secrets().await.context("cannot read the stored secrets")?;
    let Some(keyring) = keyring else {
        if !stored.is_empty() {
            anyhow::bail!(
                "{} secret(s) are stored, but this {role} has no secrets key file: set [secrets] key_file \
                 (or SANDCRON_SECRETS_KEY_FILE, or --secrets-key-file) to the key file they were written with",
                stored.len()
            );
        }
        return Ok(None);
    };
    let mut failures = Vec::new();
    for (name, secret, _) in &stored {
        if let Err(err) = keyring.open(name, &secret.sealed) {
            failures.push(err.to_string());
        }
    }
    if !stored.is_empty() && failures.len() == stored.len() {
        anyhow::bail!(
            "the secrets key file does not open any of the {} stored secret(s) (its keys: {}); it is not the \
             installation's key file. First: {}",
            stored.len(),
            keyring.ids().join(", "),
            failures[0]
        );
    }
    for failure in &failures {
        tracing::warn!(%failure, "a stored secret does not open with this key file");
    }
    Ok(Some(Arc::clone(keyring)))
}

/// The log sink of a worker, spooling under `data` when the store fails.
pub(crate) fn sink(logs: Arc<dyn LogStore>, config: &LogsConfig, data: &Path) -> (Sink, SinkTask) {
    Sink::new(
        logs,
        SinkConfig {
            batch_docs: config.batch_docs,
            flush_interval: config.flush_interval,
            shutdown_replay: config.shutdown_replay,
            spool_path: Some(data.join("log-spool.jsonl")),
            ..SinkConfig::default()
        },
    )
}

/// A worker's WASM engine: sized by its capacity, module artifacts cached
/// under its data directory.
pub(crate) fn worker_engine(
    config: &WorkerConfig,
    data: &Path,
    max_module_bytes: u64,
) -> anyhow::Result<Arc<WasmEngine>> {
    WasmEngine::new(WasmConfig {
        capacity: config.capacity,
        max_memory_mb: config.max_memory_mb,
        max_fuel: config.caps.fuel,
        max_timeout_s: config.caps.timeout_s,
        max_module_bytes,
        cache_dir: Some(data.join("wasm-cache")),
        dirs: config.dirs.clone(),
        egress_policy: config.http_allow.clone(),
    })
    .context("cannot start the WebAssembly engine")
}

/// What a worker is assembled from.
pub(crate) struct WorkerParts<'a> {
    pub(crate) coord: Coordinator,
    pub(crate) sink: Sink,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) engine: &'a Arc<WasmEngine>,
    pub(crate) worker: &'a WorkerConfig,
    pub(crate) id: String,
    pub(crate) lease_ttl: Duration,
    pub(crate) retention: Duration,
    pub(crate) alerts: Option<AlertHandle>,
    pub(crate) keyring: Option<Arc<Keyring>>,
}

/// Builds a worker: the WASM executor on `engine`, the native executor where
/// permitted, the HTTP executor where an allow-list exists, and its
/// published identity.
pub(crate) fn build_worker(parts: WorkerParts<'_>) -> anyhow::Result<Worker> {
    let config = parts.worker;
    let engine = parts.engine;
    let wasm: Arc<dyn Executor> = Arc::new(
        engine
            .executor(Arc::new(StoredModules::new(parts.coord.clone())))
            .with_state(Arc::new(StoredState::new(parts.coord.clone(), config.state_quota))),
    );
    let shell: Option<Arc<dyn Executor>> = config.allow_native.then(|| {
        Arc::new(NativeExecutor::new(
            inherited_env(&config.native_env),
            config.kill_grace,
        )) as Arc<dyn Executor>
    });
    let http = if config.http_allow.is_empty() {
        None
    } else {
        Some(
            Arc::new(HttpExecutor::new(config.http_allow.clone()).context("cannot build the HTTP client")?)
                as Arc<dyn Executor>,
        )
    };
    let info = WorkerInfo {
        id: parts.id,
        hostname: hostname(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        labels: config.labels.clone(),
        allow_native: config.allow_native,
        capacity: config.capacity,
        started_at: Timestamp::now(),
        http: http.is_some(),
    };
    Ok(Worker::new(WorkerDeps {
        coord: parts.coord,
        sink: parts.sink,
        executors: Executors {
            shell,
            wasm: Some(wasm),
            http,
        },
        metrics: parts.metrics,
        config: config.clone(),
        info,
        lease_ttl: parts.lease_ttl,
        drain_timeout: config.drain_timeout,
        retention: parts.retention,
        alerts: parts.alerts,
        keyring: parts.keyring,
    }))
}

/// Starts the alert task when `[alerts]` configures any channel; returns
/// the handle the worker reports to and the task, which ends after the
/// worker (when the last handle is dropped).
/// What the HTTP API serves from, besides the `[server]` and `[alerts]`
/// settings.
pub(crate) struct ApiParts {
    pub coord: Coordinator,
    pub logs: Arc<dyn LogStore>,
    pub metrics: Arc<Metrics>,
    pub audit: crate::api::audit::AuditLog,
    /// Validates uploads.
    pub modules: Arc<dyn crate::module::ModuleInspector>,
    pub secrets: Option<Arc<Keyring>>,
    /// Whether shell jobs are accepted.
    pub shell_jobs: bool,
}

impl ApiParts {
    /// The parts a master (or `sandcron dev`) has made: its stores, metrics,
    /// audit log, upload validator and secrets key, and whether it accepts
    /// shell jobs.
    pub(crate) fn new(
        (coord, logs): (Coordinator, Arc<dyn LogStore>),
        metrics: Arc<Metrics>,
        audit: crate::api::audit::AuditLog,
        modules: Arc<dyn crate::module::ModuleInspector>,
        secrets: Option<Arc<Keyring>>,
        shell_jobs: bool,
    ) -> ApiParts {
        ApiParts {
            coord,
            logs,
            metrics,
            audit,
            modules,
            secrets,
            shell_jobs,
        }
    }
}

/// The API and console over `parts`, as `[server]` configures the HTTP
/// layer, the tokens and the quotas, naming the channels of `[alerts]`.
pub(crate) fn api_router(
    parts: ApiParts,
    server: &crate::config::ServerConfig,
    alerts: &AlertsConfig,
    shutdown: &tokio_util::sync::CancellationToken,
) -> axum::Router {
    let state = crate::api::AppState {
        coord: parts.coord,
        logs: parts.logs,
        tokens: server.tokens.clone().into(),
        metrics: parts.metrics,
        audit: parts.audit,
        shell_jobs: parts.shell_jobs,
        shutdown: shutdown.clone(),
        modules: parts.modules,
        alert_channels: alerts.channels.keys().cloned().collect::<Vec<_>>().into(),
        secrets: parts.secrets,
        quotas: server.quotas,
    };
    crate::api::router(
        state,
        &crate::api::HttpConfig {
            max_body_bytes: server.max_body_bytes,
            allowed_hosts: server.allowed_hosts.clone(),
        },
    )
}

pub(crate) fn start_alerts(
    config: &AlertsConfig,
    metrics: &Metrics,
) -> (Option<AlertHandle>, Option<tokio::task::JoinHandle<anyhow::Result<()>>>) {
    if config.channels.is_empty() {
        return (None, None);
    }
    let (alerter, handle) = Alerter::new(config.clone());
    metrics.attach_alerts(alerter.stats());
    (Some(handle), Some(tokio::spawn(alerter.run())))
}

/// Connects a cluster process to its stores: etcd (the coordinator over
/// the configured prefix) and MongoDB. A worker starts even when MongoDB is
/// down later on (its sink spools); only a first connection is needed.
pub(crate) async fn connect_stores(stores: &ClusterStores) -> anyhow::Result<(Coordinator, Arc<dyn LogStore>)> {
    let store: Arc<dyn KvStore> = EtcdStore::connect(&stores.etcd)
        .await
        .with_context(|| format!("cannot reach etcd at {}", stores.etcd.endpoints.join(", ")))?;
    let coord = Coordinator::new(store, &stores.prefix);
    let logs: Arc<dyn LogStore> = MongoLogStore::connect(&mongo_config(&stores.mongo))
        .await
        .context("cannot reach MongoDB")?;
    Ok((coord, logs))
}
