//! The worker's background tasks beside the scheduling loop: the lease
//! keeper and the watch drivers that feed the loop (or, for kills and
//! results, act directly).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::coord::{Coordinator, Family, KeyValue, LeaseId, PrefixWatcher, StoreError, WatchEvent, WatchUpdate};

/// Renews the worker's lease every third of its TTL. When the store says the
/// lease is gone, tells the scheduling loop (which re-registers and stores the
/// new lease in `current`). A failure to reach the store is retried.
pub(super) async fn keep_lease(
    coord: Coordinator,
    current: Arc<AtomicI64>,
    ttl: Duration,
    lost: mpsc::Sender<()>,
    stop: CancellationToken,
) {
    let mut interval = tokio::time::interval(ttl / 3);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let lease = LeaseId(current.load(Ordering::Relaxed));
        match coord.store().lease_keep_alive(lease).await {
            Ok(()) => {}
            Err(StoreError::LeaseNotFound(_)) => {
                // A full channel means the loop already knows.
                let _already_told = lost.try_send(());
            }
            Err(err) => tracing::warn!(%err, "lease keep-alive failed; will retry"),
        }
    }
}

/// Watches one key family and hands every put (the whole snapshot after a
/// watch failure, then each put event) to `on_puts`; backs off on errors.
/// Deletes are of no interest to its users.
pub(super) async fn watch_puts(
    coord: Coordinator,
    family: Family,
    stop: CancellationToken,
    mut on_puts: impl FnMut(Vec<KeyValue>),
) {
    let mut watch = RetryingWatch::new(&coord, family, stop);
    while let Some(update) = watch.next().await {
        on_puts(match update {
            WatchUpdate::Snapshot(kvs) => kvs,
            WatchUpdate::Events(events) => events
                .into_iter()
                .filter_map(|event| match event {
                    WatchEvent::Put(kv) => Some(kv),
                    WatchEvent::Delete { .. } => None,
                })
                .collect(),
        });
    }
}

/// Joins consecutive event batches of the same family into one, in order, so
/// that the loop reacts to a burst (thousands of jobs written at once) in a
/// few large steps instead of one per watch message: one claim-state read and
/// one packed claim for many jobs. A snapshot is never merged.
pub(super) fn coalesce(updates: impl IntoIterator<Item = (Family, WatchUpdate)>) -> Vec<(Family, WatchUpdate)> {
    let mut merged: Vec<(Family, WatchUpdate)> = Vec::new();
    for (family, update) in updates {
        match (merged.last_mut(), update) {
            (Some((last, WatchUpdate::Events(events))), WatchUpdate::Events(more)) if *last == family => {
                events.extend(more);
            }
            (_, update) => merged.push((family, update)),
        }
    }
    merged
}

/// Drives one watcher and forwards its updates to the scheduling loop.
pub(super) async fn forward_watch(
    coord: Coordinator,
    family: Family,
    tx: mpsc::Sender<(Family, WatchUpdate)>,
    stop: CancellationToken,
) {
    let mut watch = RetryingWatch::new(&coord, family, stop);
    while let Some(update) = watch.next().await {
        if tx.send((family, update)).await.is_err() {
            return;
        }
    }
}

/// A watcher that outlives store errors: on one it backs off (100 ms,
/// doubling up to 5 s) and starts over with a fresh snapshot.
struct RetryingWatch {
    watcher: PrefixWatcher,
    family: Family,
    stop: CancellationToken,
    backoff: Duration,
}

impl RetryingWatch {
    fn new(coord: &Coordinator, family: Family, stop: CancellationToken) -> Self {
        Self {
            watcher: coord.watcher(family),
            family,
            stop,
            backoff: Duration::from_millis(100),
        }
    }

    /// The next update; `None` once `stop` is cancelled.
    async fn next(&mut self) -> Option<WatchUpdate> {
        loop {
            let update = tokio::select! {
                () = self.stop.cancelled() => return None,
                update = self.watcher.next() => update,
            };
            match update {
                Ok(update) => {
                    self.backoff = Duration::from_millis(100);
                    return Some(update);
                }
                Err(err) => {
                    let (family, backoff) = (self.family, self.backoff);
                    tracing::warn!(?family, %err, ?backoff, "watch failed; retrying");
                    tokio::select! {
                        () = self.stop.cancelled() => return None,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    self.backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
