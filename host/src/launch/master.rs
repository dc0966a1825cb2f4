//! `sandcron master`: the HTTP API and the console over etcd and MongoDB,
//! and the dead-man alerts. Stateless: run several behind a load balancer
//! (they raise each dead-man alert once between them).

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::deadman::MasterAlerts;
use super::{ApiParts, api_router, check_secrets_key, connect_stores, start_alerts};
use crate::api;
use crate::api::audit::AuditLog;
use crate::config::MasterConfig;
use crate::exec::wasm::{WasmConfig, WasmEngine};
use crate::metrics::Metrics;

/// Runs a master on `listener` until `shutdown` is cancelled.
pub async fn master(config: MasterConfig, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let _heap_keeper = super::HeapKeeper::start();
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
    // Dead-man alerts: every master watches, the one whose mark lands
    // delivers, so a cluster with no live worker still alerts.
    let alerts = MasterAlerts::start(
        &coord,
        &logs,
        start_alerts(&config.alerts, &metrics),
        shutdown.child_token(),
    );
    let parts = ApiParts::new((coord, logs), metrics, audit, engine, secrets, config.allow_shell_jobs);
    let served = api::serve(
        listener,
        api_router(parts, &config.server, &config.alerts, &shutdown),
        shutdown,
    )
    .await;
    // The alert task ends with the dead-man watch's handle, after its last
    // deliveries.
    alerts.stop().await?;
    mover_stop.cancel();
    mover
        .await
        .context("audit mover panicked")?
        .context("audit mover failed")?;
    served.context("HTTP server failed")?;
    tracing::info!("stopped");
    Ok(())
}
