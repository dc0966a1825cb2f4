//! `sandcron dev`: master and worker in one process on the embedded stores
//! (coordination and logs in SQLite files under the data directory).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::deadman::MasterAlerts;
use super::{ApiParts, WorkerParts, api_router, build_worker, check_secrets_key, sink, start_alerts, worker_engine};
use crate::api;
use crate::api::audit::AuditLog;
use crate::auth::Role;
use crate::config::{DevConfig, hostname};
use crate::coord::Coordinator;
use crate::coord::embedded::EmbeddedStore;
use crate::ids::{JobName, ModuleDigest, WorkerId};
use crate::job::{JobKind, JobMeta, JobRecord, JobSpec, WasmJob, WasmLimits};
use crate::logstore::sqlite::SqliteLogStore;
use crate::logstore::{LogBatch, LogStore, RunQuery};
use crate::metrics::Metrics;
use crate::module::ModuleKind;
use crate::run::RunStatus;
use crate::secret::Keyring;

/// The coordination key prefix.
pub const KEY_PREFIX: &str = "/sandcron/";
/// The worker lease TTL.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// Runs `sandcron dev` on `listener` until `shutdown` is cancelled; then the
/// server stops, runs drain, and the sink flushes last.
pub async fn dev(config: DevConfig, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let _heap_keeper = super::HeapKeeper::start();
    let data = &config.data_dir;
    std::fs::create_dir_all(data).with_context(|| format!("cannot create the data directory {}", data.display()))?;
    let store = EmbeddedStore::open(&data.join("coord.db")).context("cannot open the coordination store")?;
    let logs: Arc<dyn LogStore> = SqliteLogStore::open(&data.join("logs.db")).context("cannot open the log store")?;
    let coord = Coordinator::new(store, KEY_PREFIX);
    mark_lost_runs(logs.as_ref())
        .await
        .context("cannot close runs left by the previous process")?;
    let (keyring, created) = Keyring::load_or_create(&config.secrets_key_file)?;
    if created {
        tracing::info!(path = %config.secrets_key_file.display(), key = keyring.sealing_id(), "created a secrets key file");
    }
    let keyring = check_secrets_key(Some(&Arc::new(keyring)), &coord, "server").await?;

    let metrics = Metrics::new();
    let (sink, sink_task) = sink(logs.clone(), &config.logs, data);
    metrics.attach_sink(sink.stats());
    let sink_handle = tokio::spawn(sink_task.run());

    let id = match &config.worker.id {
        Some(id) => id.clone(),
        None => stable_worker_id(data)?,
    };
    let engine = worker_engine(&config.worker, data, config.server.max_module_bytes)?;
    if config.seed_demo {
        seed_demo(&coord, data).await?;
    }
    let (alerts, alerts_task) = start_alerts(&config.alerts, &metrics);
    // Dead-man alerts, as a master raises them (on the embedded stores).
    let master_alerts = MasterAlerts::start(&coord, &logs, (alerts.clone(), alerts_task), CancellationToken::new());
    let mut worker_config = config.worker.clone();
    if worker_config.api_url.is_none() {
        // Async jobs report to this very server.
        worker_config.api_url = Some(format!("http://{}", listener.local_addr()?));
    }
    let worker = build_worker(WorkerParts {
        coord: coord.clone(),
        sink: sink.clone(),
        metrics: metrics.clone(),
        engine: &engine,
        worker: &worker_config,
        id,
        lease_ttl: LEASE_TTL,
        retention: config.logs.retention,
        alerts,
        keyring: keyring.clone(),
    })?;
    let worker_handle = tokio::spawn(worker.serve(shutdown.clone()));
    let retention_handle = tokio::spawn(retention(logs.clone(), config.logs.retention, shutdown.clone()));
    let audit = AuditLog::new(coord.clone(), logs.clone(), config.logs.audit_retention, &metrics);
    let audit_handle = tokio::spawn(audit.clone().run(shutdown.clone()));

    let parts = ApiParts::new(
        (coord, logs),
        metrics,
        audit,
        engine,
        keyring,
        config.worker.allow_native,
    );
    let served = api::serve(
        listener,
        api_router(parts, &config.server, &config.alerts, &shutdown),
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();

    let worker_result = worker_handle.await.context("worker task panicked")?;
    master_alerts.stop().await?;
    retention_handle.await.context("retention task panicked")?;
    audit_handle
        .await
        .context("audit mover panicked")?
        .context("audit mover failed")?;
    // The sink ends when its last handle is gone; it flushes everything first.
    drop(sink);
    sink_handle
        .await
        .context("sink task panicked")?
        .context("log sink failed")?;
    served.context("HTTP server failed")?;
    worker_result.context("worker failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// The worker id is kept in the data directory so run records keep naming the
/// same worker across restarts.
fn stable_worker_id(data: &Path) -> anyhow::Result<String> {
    let path = data.join("worker-id");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(id) = WorkerId::new(text.trim())
    {
        return Ok(id.to_string());
    }
    let id = WorkerId::generate(&hostname());
    std::fs::write(&path, format!("{id}\n")).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id.to_string())
}

/// Runs still `running` in the log store when the single dev process starts
/// were cut off when the previous process died: record them as `lost`. The
/// record keeps the run's fence, so it can only replace a `running` record.
async fn mark_lost_runs(logs: &dyn LogStore) -> anyhow::Result<()> {
    let mut cursor = None;
    let now = Timestamp::now();
    let mut lost = 0;
    loop {
        let page = logs
            .runs(&RunQuery {
                status: Some(RunStatus::Running),
                limit: 1000,
                cursor,
                ..RunQuery::default()
            })
            .await?;
        let runs = page
            .runs
            .into_iter()
            .map(|mut run| {
                run.status = RunStatus::Lost;
                run.ended_at = Some(now);
                run.error = Some("the process running it stopped before the run ended".to_owned());
                run
            })
            .collect::<Vec<_>>();
        lost += runs.len();
        logs.write(&LogBatch {
            runs,
            chunks: Vec::new(),
        })
        .await?;
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    if lost > 0 {
        tracing::warn!(runs = lost, "recorded runs cut off by the previous shutdown as lost");
    }
    Ok(())
}

/// The demo job's module: prints a greeting with the job and the tick (see
/// assets/demo.wat).
pub const DEMO_MODULE: &[u8] = include_bytes!("../../assets/demo.wasm");

/// Seeds one demo WASM job the first time a data directory is used, and asks
/// for a first run at once, so a newcomer sees runs and output immediately.
async fn seed_demo(coord: &Coordinator, data: &Path) -> anyhow::Result<()> {
    let marker = data.join("demo-seeded");
    if marker.exists() {
        return Ok(());
    }
    let (jobs, _) = coord.list_jobs().await?;
    if jobs.is_empty() {
        let digest = ModuleDigest::of(DEMO_MODULE);
        coord
            .put_module(&digest, DEMO_MODULE, ModuleKind::Module, Vec::new(), Some("hello.wasm"))
            .await?;
        let now = Timestamp::now();
        let record = JobRecord {
            spec: JobSpec {
                description: "A demo job seeded by `sandcron dev`: a tiny WebAssembly module that greets every 30 \
                              seconds. Delete it whenever you like."
                    .to_owned()
                    .into(),
                ..JobSpec::new(
                    "*/30 * * * * *",
                    JobKind::Wasm(WasmJob {
                        limits: WasmLimits {
                            output_kb: 64,
                            ..WasmLimits::default()
                        },
                        ..WasmJob::new(digest)
                    }),
                )
            },
            meta: JobMeta {
                created_at: now,
                updated_at: now,
                active_since: now,
                written_by: Role::Admin,
            },
        };
        let name = JobName::new("hello")?;
        coord.put_job(&name, &record, Some(0), false).await?;
        coord.request_trigger(&name, Role::Admin).await?;
        tracing::info!(job = %name, "seeded a demo job");
    }
    std::fs::write(&marker, b"").with_context(|| format!("cannot write {}", marker.display()))?;
    Ok(())
}

/// Deletes run history older than the retention period, and expired audit
/// entries, hourly.
async fn retention(logs: Arc<dyn LogStore>, keep: Duration, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let Ok(keep) = jiff::SignedDuration::try_from(keep) else {
            return;
        };
        let before = Timestamp::now() - keep;
        match logs.purge(before).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(runs = count, %before, "purged old run history"),
            Err(err) => tracing::warn!(%err, "cannot purge old run history"),
        }
        match logs.purge_audit(Timestamp::now()).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(entries = count, "purged expired audit entries"),
            Err(err) => tracing::warn!(%err, "cannot purge expired audit entries"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SANDCRON_BLESS=1 cargo test -p sandcron --lib demo_module` rewrites
    /// assets/demo.wasm after an edit of demo.wat.
    #[test]
    fn the_demo_module_is_what_its_text_assembles_to() {
        let assembled = wat::parse_str(include_str!("../../assets/demo.wat")).expect("demo.wat assembles");
        if std::env::var_os("SANDCRON_BLESS").is_some() {
            std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/demo.wasm"), &assembled).expect("write");
            return;
        }
        assert!(
            assembled == DEMO_MODULE,
            "assets/demo.wasm is stale: run SANDCRON_BLESS=1 cargo test -p sandcron --lib demo_module"
        );
    }
}
