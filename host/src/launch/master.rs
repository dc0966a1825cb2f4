//! `sandcron master`: the HTTP API and the console over etcd and MongoDB.
//! Stateless: run several behind a load balancer.

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{check_secrets_key, connect_stores};
use crate::api::audit::AuditLog;
use crate::api::{self, AppState, HttpConfig};
use crate::config::MasterConfig;
use crate::exec::wasm::{WasmConfig, WasmEngine};
use crate::metrics::Metrics;

/// Runs a master on `listener` until `shutdown` is cancelled.
pub async fn master(config: MasterConfig, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (coord, logs) = connect_stores(&config.stores).await?;
    let secrets = check_secrets_key(config.secrets_key.as_ref(), &coord, "master").await?;
    // The master only validates uploads; a one-slot engine is enough.
    let engine = WasmEngine::new(WasmConfig {
        capacity: 1,
        max_memory_mb: config.max_memory_mb,
        max_module_bytes: config.server.max_module_bytes,
        ..WasmConfig::default()
    })
    .context("cannot start the WebAssembly engine for upload validation")?;
    let metrics = Metrics::new();
    let audit = AuditLog::new(coord.clone(), logs.clone(), config.audit_retention, &metrics);
    // The audit mover stops after the server: entries recorded by the last
    // requests are moved (or left in the outbox for another master).
    let mover_stop = shutdown.child_token();
    let mover = tokio::spawn(audit.clone().run(mover_stop.clone()));
    let state = AppState {
        coord,
        logs,
        tokens: config.server.tokens.clone().into(),
        metrics,
        audit,
        shell_jobs: config.allow_shell_jobs,
        shutdown: shutdown.clone(),
        modules: engine,
        alert_channels: config.alert_channels.clone().into(),
        secrets,
        quotas: config.server.quotas,
    };
    let app = api::router(
        state,
        &HttpConfig {
            max_body_bytes: config.server.max_body_bytes,
            allowed_hosts: config.server.allowed_hosts.clone(),
        },
    );
    let served = api::serve(listener, app, shutdown).await;
    mover_stop.cancel();
    mover
        .await
        .context("audit mover panicked")?
        .context("audit mover failed")?;
    served.context("HTTP server failed")?;
    tracing::info!("stopped");
    Ok(())
}
