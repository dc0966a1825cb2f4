//! The pipeline's spooling side: while the store is down, sealed batches
//! (and a direct write that ran out of patience) are appended to the spool,
//! and the spool's head batch is replayed with backoff until the file is
//! empty and can be truncated. The file format itself is `spool.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::SinkStats;
use super::batch::Pending;
use super::pipeline::{InFlight, Outcome, Pipeline};
use super::retry::{Attempt, attempt};
use super::spool::{Appended, Spool};

impl Pipeline {
    /// Appends the first sealed batch to the spool; false if it has to wait.
    pub(super) async fn spool_front(&mut self) -> bool {
        let (Some(spool), Some(front)) = (self.spool.as_mut(), self.sealed.front_mut()) else {
            return false;
        };
        front.batch.drop_superseded();
        match spool.append(&front.batch).await {
            Ok(Appended::Yes) => {
                self.append_retry_at = None;
                if !front.batch.is_empty() {
                    self.stats.spooled_batches.fetch_add(1, Ordering::Relaxed);
                }
                self.stats.spooled_bytes.store(spool.pending_bytes(), Ordering::Relaxed);
                if let Some(pending) = self.sealed.pop_front() {
                    pending.done();
                }
                true
            }
            // Room comes back when the replay empties and truncates the file.
            Ok(Appended::Full) => false,
            // Logged by the spool, once per run of failures.
            Err(_) => {
                self.append_retry_at = Some(Instant::now() + self.config.retry_max);
                false
            }
        }
    }

    pub(super) async fn start_replay(&mut self) {
        if self.in_flight.is_some() || self.replay_given_up || Instant::now() < self.replay_at {
            return;
        }
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        if spool.is_empty() {
            if spool.end > 0 {
                // An earlier truncation failed; try again, at backoff pace.
                Self::truncate(spool, &self.stats).await;
                if spool.end > 0 {
                    self.replay_at = Instant::now() + self.replay_backoff.next_delay();
                }
            }
            return;
        }
        match spool.take_head().await {
            Ok(Some((batch, next))) => {
                let store = Arc::clone(&self.store);
                let stats = Arc::clone(&self.stats);
                let outage = Arc::clone(&self.outage);
                let write = async move {
                    match attempt(&*store, &batch, &stats, &outage).await {
                        Attempt::Written(micros) => Outcome::Written {
                            events: batch.len(),
                            micros,
                        },
                        Attempt::Rejected(error) => Outcome::Rejected {
                            events: batch.len(),
                            error,
                        },
                        Attempt::Failed => Outcome::Failed(batch),
                    }
                };
                self.in_flight = Some(InFlight {
                    write: Box::pin(write),
                    waiters: Vec::new(),
                    replay_next: Some(next),
                });
            }
            Ok(None) => {
                Self::truncate(spool, &self.stats).await;
            }
            Err(_) => {
                self.replay_at = Instant::now() + self.replay_backoff.next_delay();
            }
        }
    }

    async fn truncate(spool: &mut Spool, stats: &SinkStats) {
        if spool.truncate().await.is_ok() {
            tracing::info!(path = %spool.path.display(), "log spool replayed");
        }
        stats.spooled_bytes.store(spool.pending_bytes(), Ordering::Relaxed);
    }

    /// A replayed batch is in the store (or refused for good): move past it,
    /// and empty the file once everything is replayed so its space returns.
    pub(super) async fn replayed(&mut self, next: Option<u64>) {
        if let (Some(spool), Some(next)) = (self.spool.as_mut(), next) {
            spool.advance(next);
            self.stats.spooled_bytes.store(spool.pending_bytes(), Ordering::Relaxed);
            self.replay_backoff.reset();
            self.replay_at = Instant::now();
            if spool.is_empty() {
                Self::truncate(spool, &self.stats).await;
            }
        }
    }

    /// A direct write ran out of patience: it becomes the spool's first
    /// batch, ahead of everything sealed after it.
    pub(super) async fn spool_given_up(&mut self, pending: Pending) {
        let Some(spool) = self.spool.as_mut() else {
            // Without a spool there is no give-up; keep trying regardless.
            self.start_direct(pending, None);
            return;
        };
        match spool.append(&pending.batch).await {
            Ok(Appended::Yes) => {
                tracing::warn!(path = %spool.path.display(), "log store unavailable; spooling log batches to disk");
                self.stats.spooled_batches.fetch_add(1, Ordering::Relaxed);
                self.stats.spooled_bytes.store(spool.pending_bytes(), Ordering::Relaxed);
                // The store just failed; give it a moment before the replay.
                self.replay_backoff.reset();
                self.replay_at = Instant::now() + self.replay_backoff.next_delay();
                pending.done();
            }
            Ok(Appended::Full) => {
                tracing::warn!("a log batch is larger than the whole spool; retrying the store with it");
                self.start_direct(pending, None);
            }
            Err(_) => {
                // Keep the batch in memory and keep trying the store; new
                // batches wait behind it, which is the backpressure.
                self.start_direct(pending, None);
            }
        }
    }
}
