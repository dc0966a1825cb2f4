//! Publishes the worker's log backlog (its sink's spool, lag and
//! backpressure) under `status/<id>` on the worker's lease, so that masters
//! can show it on the workers page. It is written only when it changed, and
//! again once the worker's lease was replaced (the key went with the old
//! one); never into the registration under `workers/`, whose every change
//! makes every worker recompute job ownership.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::coord::{Coordinator, LeaseId, LogBacklog};
use crate::logstore::sink::SinkStats;

/// How often the backlog is looked at (and published, if it changed).
pub(super) const PUBLISH_EVERY: Duration = Duration::from_secs(2);

/// Runs until `stop`: publishes `stats` as the log backlog of worker `id`
/// every `every` (`PUBLISH_EVERY`) when it changed, under the lease in
/// `lease`. A failed write is tried again at the next look.
pub(super) async fn publish_status(
    coord: Coordinator,
    id: String,
    stats: Arc<SinkStats>,
    lease: Arc<AtomicI64>,
    stop: CancellationToken,
    every: Duration,
) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published: Option<(LeaseId, Change)> = None;
    let mut failing = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let lease = LeaseId(lease.load(Ordering::Relaxed));
        let backlog = backlog_of(&stats);
        let change = Change::of(&backlog);
        if published.as_ref() == Some(&(lease, change)) {
            continue;
        }
        match coord.publish_log_backlog(&id, &backlog, lease).await {
            Ok(_) => {
                published = Some((lease, change));
                failing = false;
            }
            Err(err) => {
                // A lost lease is the lease keeper's to report; this only
                // says once that the page may show an old backlog.
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(%err, "cannot publish the worker's log backlog; retrying");
                }
            }
        }
    }
}

/// The log backlog as the masters show it.
fn backlog_of(stats: &SinkStats) -> LogBacklog {
    LogBacklog {
        spool_bytes: stats.spooled_bytes.load(Ordering::Relaxed),
        spool_lag_s: stats.spool_lag().as_secs(),
        backpressure: stats.backpressure(),
        queued: stats.queued.load(Ordering::Relaxed),
    }
}

/// What makes a backlog worth publishing again: any change to the spool or
/// the backpressure, but of the queue only a change in its order of
/// magnitude, so that a busy worker whose queue moves all the time does not
/// write every two seconds for that alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Change {
    spool_bytes: u64,
    spool_lag_s: u64,
    backpressure: bool,
    queued_magnitude: u32,
}

impl Change {
    fn of(backlog: &LogBacklog) -> Self {
        Self {
            spool_bytes: backlog.spool_bytes,
            spool_lag_s: backlog.spool_lag_s,
            backpressure: backlog.backpressure,
            queued_magnitude: u64::BITS - backlog.queued.leading_zeros(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::KvStore;
    use crate::coord::embedded::EmbeddedStore;

    /// Polls the published backlogs until `check` accepts them; fails the
    /// test after 20 s.
    async fn published(coord: &Coordinator, what: &str, check: impl Fn(Option<&LogBacklog>) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let backlogs = coord.log_backlogs().await.expect("range read");
            if check(backlogs.get("w1")) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting until {what}: {backlogs:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn the_backlog_is_published_on_the_lease_when_it_changes_and_after_a_new_lease() {
        let store: Arc<dyn KvStore> = EmbeddedStore::in_memory();
        let coord = Coordinator::new(Arc::clone(&store), "/t/");
        let first = store.lease_grant(Duration::from_secs(60)).await.expect("lease");
        let lease = Arc::new(AtomicI64::new(first.0));
        let stats = Arc::new(SinkStats::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(publish_status(
            coord.clone(),
            "w1".to_owned(),
            Arc::clone(&stats),
            Arc::clone(&lease),
            stop.clone(),
            Duration::from_millis(10),
        ));
        published(&coord, "an empty backlog is published at start", |b| {
            b == Some(&LogBacklog::default())
        })
        .await;
        stats.spooled_bytes.store(4096, Ordering::Relaxed);
        stats.held.store(1, Ordering::Relaxed);
        published(&coord, "the change is published", |b| {
            b.is_some_and(|b| b.spool_bytes == 4096 && b.backpressure)
        })
        .await;
        // The worker's lease is gone and replaced: the key went with it and
        // comes back under the new one.
        store.lease_revoke(first).await.expect("revoke");
        let second = store.lease_grant(Duration::from_secs(60)).await.expect("lease");
        lease.store(second.0, Ordering::Relaxed);
        published(&coord, "it is published again", |b| {
            b.is_some_and(|b| b.spool_bytes == 4096)
        })
        .await;
        store.lease_revoke(second).await.expect("revoke");
        published(&coord, "it is on the lease", |b| b.is_none()).await;
        stop.cancel();
        task.await.expect("the task ends");
    }

    #[test]
    fn a_queue_moving_within_its_magnitude_is_no_change() {
        let backlog = |queued, spool_bytes| LogBacklog {
            queued,
            spool_bytes,
            ..LogBacklog::default()
        };
        assert_eq!(Change::of(&backlog(40, 0)), Change::of(&backlog(50, 0)));
        assert_ne!(Change::of(&backlog(40, 0)), Change::of(&backlog(70, 0)));
        assert_ne!(Change::of(&backlog(0, 0)), Change::of(&backlog(1, 0)));
        assert_ne!(Change::of(&backlog(40, 0)), Change::of(&backlog(40, 1)));
    }
}
