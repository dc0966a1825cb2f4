//! [`AuditLog`]: how the API keeps its audit entries, and the task that
//! moves them into the log store.
//!
//! An entry is recorded after the write it describes succeeded, in two
//! steps, so that neither an outage of the log store nor a master that
//! stops loses it, and neither blocks an operator:
//!
//! 1. `record` puts it in the coordination store's outbox (`audit/<id>`).
//!    That store took the write being recorded a moment ago, so it is up;
//!    the call waits for this one put (a few milliseconds), not for the log
//!    store. It runs as a task of its own, so a client that hangs up cannot
//!    cancel it half-way.
//! 2. The mover (`run`, one per master) moves what the outbox holds into the
//!    log store and deletes it there: at once after a `record`, every few
//!    seconds for what other masters left, with backoff while the log store
//!    fails. Any master may move any entry: writes are idempotent by id.
//!
//! If the outbox put fails (the coordination store went away after the
//! write), the entry goes straight to the log store; if that fails too, or
//! the outbox is over [`MAX_BACKLOG`] entries (the log store has been away
//! for very long), the entry is dropped: written to the server log at error
//! level, field by field, and counted in `sandcron_audit_dropped_total`.
//! API calls are never refused for the audit log's sake.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jiff::SignedDuration;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

use crate::audit::AuditEntry;
use crate::coord::Coordinator;
use crate::ids::AuditId;
use crate::logstore::LogStore;
use crate::metrics::{AuditStats, Metrics};

/// Entries the outbox may hold before new ones are dropped: at about half a
/// kilobyte each, 5 MB of the coordination store, weeks of a busy team's
/// writes.
const MAX_BACKLOG: u64 = 10_000;
/// How long one step of `record` may take.
const RECORD_TIMEOUT: Duration = Duration::from_secs(5);
/// Entries per log-store write when moving.
const MOVE_BATCH: usize = 500;
/// How often the mover looks at the outbox when nothing woke it: entries a
/// stopped master left there are moved within this.
const SWEEP: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long the last move may take at shutdown; what it leaves is moved by
/// another master, or by this one's next start.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a read of the audit log waits for its own move first.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(2);

/// The audit log of one API server. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    coord: Coordinator,
    logs: Arc<dyn LogStore>,
    /// How long entries are kept; `None`: forever.
    retention: Option<SignedDuration>,
    stats: Arc<AuditStats>,
    /// Rings when an entry was put in the outbox.
    recorded: Notify,
    /// One move at a time in this process.
    moving: Mutex<()>,
}

impl AuditLog {
    /// An audit log over `coord`'s outbox and `logs`, keeping entries for
    /// `retention`; its figures become part of `metrics`.
    pub fn new(coord: Coordinator, logs: Arc<dyn LogStore>, retention: Duration, metrics: &Metrics) -> Self {
        let stats = Arc::new(AuditStats::default());
        metrics.attach_audit(Arc::clone(&stats));
        Self {
            inner: Arc::new(Inner {
                coord,
                logs,
                retention: SignedDuration::try_from(retention).ok(),
                stats,
                recorded: Notify::new(),
                moving: Mutex::new(()),
            }),
        }
    }

    /// Keeps `entry`, describing a write that has succeeded. Never fails:
    /// what cannot be kept is logged and counted (see the module comment).
    pub(crate) async fn record(&self, mut entry: AuditEntry) {
        entry.expire_at = self.inner.retention.and_then(|keep| entry.at.checked_add(keep).ok());
        let inner = Arc::clone(&self.inner);
        let id = entry.id;
        // A task of its own: the handler's future is dropped if the client
        // hangs up, and the write being recorded has happened regardless.
        if let Err(err) = tokio::spawn(async move { inner.keep(entry).await }).await {
            tracing::error!(%id, %err, "the task recording an audit entry failed");
        }
    }

    /// Moves what the outbox holds into the log store; returns how many
    /// entries it moved.
    pub async fn flush(&self) -> anyhow::Result<usize> {
        self.inner.flush().await
    }

    /// Before a read of the audit log: moves what waits, so that a reader
    /// sees what was just recorded. A failure only delays that (the mover
    /// keeps trying), so it is logged, not returned.
    pub(crate) async fn catch_up(&self) {
        match tokio::time::timeout(CATCH_UP_TIMEOUT, self.flush()).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::debug!(%err, "cannot move audit entries before a read"),
            Err(_) => tracing::debug!("moving audit entries before a read took too long"),
        }
    }

    /// The mover: moves entries from the outbox into the log store until
    /// `shutdown`, then once more (within [`DRAIN_TIMEOUT`]).
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut backoff = MIN_BACKOFF;
        let mut failing = false;
        loop {
            let pause = match self.flush().await {
                Ok(moved) => {
                    if failing {
                        tracing::info!(moved, "audit entries reach the log store again");
                    }
                    failing = false;
                    backoff = MIN_BACKOFF;
                    SWEEP
                }
                Err(err) => {
                    let backlog = self.inner.stats.backlog.load(Ordering::Relaxed);
                    tracing::warn!(%err, backlog, retry_in = ?backoff, "cannot move audit entries to the log store");
                    failing = true;
                    let pause = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    pause
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                // While the log store fails, new entries wait for the backoff.
                () = self.inner.recorded.notified(), if !failing => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
        match tokio::time::timeout(DRAIN_TIMEOUT, self.flush()).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::warn!(%err, "audit entries stay in the outbox for the next master"),
            Err(_) => tracing::warn!("audit entries stay in the outbox for the next master (timed out)"),
        }
        Ok(())
    }
}

impl Inner {
    async fn keep(&self, entry: AuditEntry) {
        let stats = &self.stats;
        if stats.backlog.load(Ordering::Relaxed) >= MAX_BACKLOG {
            self.drop_entry(
                &entry,
                "the outbox is full: the log store has not taken entries for long",
            );
            return;
        }
        let outbox = tokio::time::timeout(RECORD_TIMEOUT, self.coord.put_audit(&entry)).await;
        let outbox_error = match outbox {
            Ok(Ok(())) => {
                stats.recorded.fetch_add(1, Ordering::Relaxed);
                stats.backlog.fetch_add(1, Ordering::Relaxed);
                self.recorded.notify_one();
                return;
            }
            Ok(Err(err)) => err.to_string(),
            Err(_) => "the coordination store did not answer in time".to_owned(),
        };
        let direct = tokio::time::timeout(RECORD_TIMEOUT, self.logs.write_audit(std::slice::from_ref(&entry))).await;
        match direct {
            Ok(Ok(())) => {
                tracing::warn!(id = %entry.id, %outbox_error, "audit entry written to the log store directly");
                stats.recorded.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(err)) => self.drop_entry(
                &entry,
                &format!("neither store took it (coordination: {outbox_error}; log: {err})"),
            ),
            Err(_) => self.drop_entry(
                &entry,
                &format!("neither store took it (coordination: {outbox_error}; log: timed out)"),
            ),
        }
    }

    /// The last resort: the entry goes to the server log, whole.
    fn drop_entry(&self, entry: &AuditEntry, reason: &str) {
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        let entry_json = serde_json::to_string(entry).unwrap_or_default();
        tracing::error!(
            id = %entry.id,
            actor = %entry.actor,
            action = %entry.action,
            target = %entry.target,
            entry = %entry_json,
            "audit entry dropped: {reason}"
        );
    }

    async fn flush(&self) -> anyhow::Result<usize> {
        let _one_at_a_time = self.moving.lock().await;
        let outbox = self.coord.audit_outbox().await?;
        let stats = &self.stats;
        stats.backlog.store(outbox.entries.len() as u64, Ordering::Relaxed);
        if !outbox.unreadable.is_empty() {
            tracing::warn!(keys = ?outbox.unreadable, "deleting outbox keys that hold no audit entry");
            self.coord.remove_audit(&[], &outbox.unreadable).await?;
        }
        let mut moved = 0;
        for part in outbox.entries.chunks(MOVE_BATCH) {
            self.logs.write_audit(part).await?;
            let ids: Vec<AuditId> = part.iter().map(|entry| entry.id).collect();
            self.coord.remove_audit(&ids, &[]).await?;
            moved += part.len();
            stats.stored.fetch_add(part.len() as u64, Ordering::Relaxed);
            stats
                .backlog
                .store((outbox.entries.len() - moved) as u64, Ordering::Relaxed);
        }
        Ok(moved)
    }
}
