//! `sandcron master`: the HTTP API and the console over etcd and MongoDB.
//! Stateless: run several behind a load balancer.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::mongo_config;
use crate::api::{self, AppState, HttpConfig};
use crate::config::MasterConfig;
use crate::coord::etcd::EtcdStore;
use crate::coord::{Coordinator, KvStore};
use crate::exec::wasm::{WasmConfig, WasmEngine};
use crate::logstore::LogStore;
use crate::logstore::mongo::MongoLogStore;
use crate::metrics::Metrics;

/// Runs a master on `listener` until `shutdown` is cancelled.
pub async fn master(config: MasterConfig, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
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
