//! Async runs: the per-run token a job reports its outcome with, and the
//! waiters that hand a reported result to its run task.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::coord::{Coordinator, Family, RunReport};
use crate::ids::RunId;
use crate::sync::lock;
use crate::worker::watchers::watch_puts;

/// A fresh token for an async run: 256 random bits in hex, prefixed so it is
/// recognisable in a secret scanner.
/// `None` when the OS gives no random bytes: a token derived from anything
/// else could be guessed, so the run then fails instead of starting.
pub(super) fn new_run_token() -> Option<String> {
    match crate::crypto::random_bytes::<32>() {
        Ok(bytes) => Some(format!("scr_{}", crate::crypto::hex(&bytes))),
        Err(err) => {
            tracing::error!(%err, "cannot read random bytes for a run token; the run fails");
            None
        }
    }
}

/// Async runs waiting for their reported outcome, by run id, shared with the
/// results watcher so a report reaches its run without the scheduling loop.
#[derive(Clone, Default)]
pub(super) struct ResultWaiters(Arc<std::sync::Mutex<HashMap<RunId, tokio::sync::oneshot::Sender<RunReport>>>>);

impl ResultWaiters {
    pub(super) fn register(&self, run_id: RunId) -> tokio::sync::oneshot::Receiver<RunReport> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&self.0).insert(run_id, tx);
        rx
    }

    pub(super) fn forget(&self, run_id: &RunId) {
        lock(&self.0).remove(run_id);
    }

    /// Hands `report` to its run if it runs here; whether it did.
    pub(super) fn deliver(&self, run_id: RunId, report: RunReport) -> bool {
        let waiter = lock(&self.0).remove(&run_id);
        waiter.is_some_and(|tx| tx.send(report).is_ok())
    }
}

/// Watches reported results and hands each to the run it is for, if that run
/// is one of this worker's. A snapshot after a watch failure repeats them;
/// a report already handed over finds no waiter and is skipped.
pub(super) async fn watch_results(coord: Coordinator, waiters: ResultWaiters, stop: CancellationToken) {
    let decoder = coord.clone();
    watch_puts(coord, Family::Results, stop, move |puts| {
        for kv in puts {
            if let Some((job, run_id, report)) = decoder.decode_result(&kv)
                && waiters.deliver(run_id, report)
            {
                tracing::debug!(%job, run = %run_id, "reported result handed to its run");
            }
        }
    })
    .await;
}
