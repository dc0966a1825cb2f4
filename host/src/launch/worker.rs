//! `sandcron worker`: a worker over etcd and MongoDB, with its probe server
//! (`/healthz`, `/readyz`, `/metrics`).

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{WorkerParts, build_worker, check_secrets_key, connect_stores, sink, start_alerts, worker_engine};
use crate::api;
use crate::config::{WorkerRoleConfig, hostname};
use crate::coord::Coordinator;
use crate::ids::WorkerId;
use crate::metrics::Metrics;

/// Runs a worker until `shutdown` is cancelled; then its runs drain and its
/// log sink flushes.
pub async fn worker(config: WorkerRoleConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let _heap_keeper = super::HeapKeeper::start();
    let data = &config.data_dir;
    std::fs::create_dir_all(data).with_context(|| format!("cannot create the data directory {}", data.display()))?;
    // The worker starts even when MongoDB is down later: its sink spools to
    // disk and replays when MongoDB is back.
    let (coord, logs) = connect_stores(&config.stores).await?;
    let keyring = check_secrets_key(config.secrets_key.as_ref(), &coord, "worker").await?;
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
        keyring,
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
    let result = worker.serve(shutdown).await;
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
