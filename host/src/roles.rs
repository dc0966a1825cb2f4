//! The cluster roles, each its own process: `sandcron master` (the API and
//! the console over etcd and MongoDB; stateless, run several) and
//! `sandcron worker` (watch, schedule, claim, execute, report).
//!
//! `sandcron dev` (in `dev`) wires the same parts into one process over the
//! embedded stores; the pieces both use live here.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::alert::{AlertHandle, Alerter, AlertsConfig};
use crate::api::{self, AppState, HttpConfig};
use crate::config::{LogsConfig, MasterConfig, MongoSettings, WorkerConfig, WorkerRoleConfig, hostname, inherited_env};
use crate::coord::etcd::EtcdStore;
use crate::coord::{Coordinator, KvStore, WorkerInfo};
use crate::exec::Executor;
use crate::exec::http::HttpExecutor;
use crate::exec::native::NativeExecutor;
use crate::exec::wasm::{WasmConfig, WasmEngine};
use crate::ids::WorkerId;
use crate::logstore::mongo::{MongoConfig, MongoLogStore};
use crate::logstore::{LogStore, Sink, SinkConfig, SinkTask};
use crate::metrics::Metrics;
use crate::worker::{Executors, StoredModules, Worker, WorkerDeps};

/// Runs a master on `listener` until `shutdown` is cancelled.
pub async fn run_master(
    config: MasterConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let store: Arc<dyn KvStore> = EtcdStore::connect(&config.stores.etcd)
        .await
        .with_context(|| format!("cannot reach etcd at {}", config.stores.etcd.endpoints.join(", ")))?;
    let coord = Coordinator::new(store, &config.stores.prefix);
    let logs: Arc<dyn LogStore> = MongoLogStore::connect(&mongo_config(&config.stores.mongo))
        .await
        .context("cannot reach MongoDB")?;
    // The master only validates uploads; a one-slot engine is enough.
    let engine = WasmEngine::new(WasmConfig {
        capacity: 1,
        max_memory_mb: config.max_memory_mb,
        max_module_bytes: config.server.max_module_bytes,
        ..WasmConfig::default()
    })
    .context("cannot start the WebAssembly engine for upload validation")?;
    let state = AppState {
        coord,
        logs,
        tokens: config.server.tokens.clone().into(),
        metrics: Metrics::new(),
        shell_jobs: config.allow_shell_jobs,
        shutdown: shutdown.clone(),
        modules: engine,
        alert_channels: config.alert_channels.clone().into(),
    };
    let app = api::router(
        state,
        &HttpConfig {
            max_body_bytes: config.server.max_body_bytes,
        },
    );
    api::serve(listener, app, shutdown)
        .await
        .context("HTTP server failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// Runs a worker until `shutdown` is cancelled; then its runs drain and its
/// log sink flushes.
pub async fn run_worker(config: WorkerRoleConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let data = &config.data_dir;
    std::fs::create_dir_all(data).with_context(|| format!("cannot create the data directory {}", data.display()))?;
    let store: Arc<dyn KvStore> = EtcdStore::connect(&config.stores.etcd)
        .await
        .with_context(|| format!("cannot reach etcd at {}", config.stores.etcd.endpoints.join(", ")))?;
    let coord = Coordinator::new(store, &config.stores.prefix);
    // The worker starts even when MongoDB is down: its sink spools to disk
    // and replays when MongoDB is back. Only a first connection is needed.
    let logs: Arc<dyn LogStore> = MongoLogStore::connect(&mongo_config(&config.stores.mongo))
        .await
        .context("cannot reach MongoDB")?;
    let metrics = Metrics::new();
    let (sink, sink_task) = sink(logs, &config.logs, data);
    metrics.attach_sink(sink.stats());
    let sink_handle = tokio::spawn(sink_task.run());
    let id = match &config.worker.id {
        Some(id) => id.clone(),
        None => WorkerId::generate(&hostname()).to_string(),
    };
    // Uploads are validated by masters; a worker accepts any stored module.
    let engine = worker_engine(&config.worker, data, u64::MAX)?;
    let probes = match config.listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            Some(listener)
        }
        None => None,
    };
    let (alerts, alerts_task) = start_alerts(&config.alerts, &metrics);
    let worker = build_worker(WorkerParts {
        coord: coord.clone(),
        sink: sink.clone(),
        metrics: metrics.clone(),
        engine: &engine,
        worker: &config.worker,
        id,
        lease_ttl: config.lease_ttl,
        retention: config.logs.retention,
        alerts,
    })?;
    // Announce only once the sink has opened its spool: from then on the
    // metrics count what an earlier process left in it.
    sink.stats().wait_started().await;
    // The probe server outlives the worker's drain, so a shutting-down
    // worker still answers /metrics until its runs have ended.
    let probes_stop = CancellationToken::new();
    let probes_task = match probes {
        Some(listener) => {
            let addr = listener.local_addr()?;
            println!("sandcron worker {} started; probes on http://{addr}", worker.id());
            let app = worker_probes(coord, metrics, worker.id().to_owned());
            Some(tokio::spawn(api::serve(listener, app, probes_stop.clone())))
        }
        None => {
            println!("sandcron worker {} started", worker.id());
            None
        }
    };
    let result = worker.run(shutdown).await;
    if let Some(task) = alerts_task {
        task.await.context("alert task panicked")?.context("alerts failed")?;
    }
    probes_stop.cancel();
    if let Some(task) = probes_task {
        task.await
            .context("probe server panicked")?
            .context("probe server failed")?;
    }
    drop(sink);
    sink_handle
        .await
        .context("sink task panicked")?
        .context("log sink failed")?;
    result.context("worker failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// A worker's probe server: `/healthz` (the process answers), `/readyz`
/// (etcd answers and lists this worker as live) and `/metrics`.
fn worker_probes(coord: Coordinator, metrics: Arc<Metrics>, id: String) -> axum::Router {
    use axum::http::StatusCode;
    use axum::http::header::CONTENT_TYPE;
    use axum::response::IntoResponse;
    use axum::routing::get;

    let ready = move || {
        let coord = coord.clone();
        let id = id.clone();
        async move {
            match coord.list_workers().await {
                Ok(workers) if workers.iter().any(|w| w.id == id) => (StatusCode::OK, "ready\n".to_owned()),
                Ok(_) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("worker {id} is not registered (lease lost?)\n"),
                ),
                Err(err) => (StatusCode::SERVICE_UNAVAILABLE, format!("coordination store: {err}\n")),
            }
        }
    };
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { ([(CONTENT_TYPE, "text/plain; version=0.0.4")], metrics.render()).into_response() }
            }),
        )
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

/// The log sink of a worker, spooling under `data` when the store fails.
pub(crate) fn sink(logs: Arc<dyn LogStore>, config: &LogsConfig, data: &Path) -> (Sink, SinkTask) {
    Sink::new(
        logs,
        SinkConfig {
            batch_docs: config.batch_docs,
            flush_interval: config.flush_interval,
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
        max_module_bytes,
        cache_dir: Some(data.join("wasm-cache")),
        dirs: config.dirs.clone(),
        ..WasmConfig::default()
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
}

/// Builds a worker: the WASM executor on `engine`, the native executor where
/// permitted, the HTTP executor where an allow-list exists, and its
/// published identity.
pub(crate) fn build_worker(parts: WorkerParts<'_>) -> anyhow::Result<Worker> {
    let config = parts.worker;
    let engine = parts.engine;
    let wasm: Arc<dyn Executor> = Arc::new(engine.executor(Arc::new(StoredModules::new(parts.coord.clone()))));
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
    }))
}

/// Starts the alert task when `[alerts]` configures any channel; returns
/// the handle the worker reports to and the task, which ends after the
/// worker (when the last handle is dropped).
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
