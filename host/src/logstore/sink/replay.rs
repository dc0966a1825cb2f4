//! The pipeline's spooling side: while the store is down (a direct write ran
//! out of patience) or behind (the channel filled up behind its write, or a
//! sealed batch or a flush waited on it too long), batches are appended to
//! the spool, and the spool's head batches are replayed, merged, with backoff
//! until the file is empty and can be truncated. A spool without room
//! (`spool_max_bytes`) leaves batches waiting, which holds producers back;
//! that is logged when it starts and ends. The file format itself is
//! `spool.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::batch::Pending;
use super::pipeline::{InFlight, Outcome, Pipeline, on_its_own};
use super::retry::{Attempt, attempt};
use super::spool::Appended;

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
                    self.count_spooled();
                }
                if let Some(pending) = self.sealed.pop_front() {
                    pending.done();
                }
                true
            }
            // Room comes back when the replay empties and truncates the file.
            Ok(Appended::Full) => {
                self.spool_without_room();
                false
            }
            // Logged by the spool, once per run of failures.
            Err(_) => {
                self.append_retry_at = Some(Instant::now() + self.config.retry_max);
                false
            }
        }
    }

    /// The store is behind (see `behind_at`): the batch of the write in
    /// flight goes to the spool, and the flushes waiting on it are answered.
    /// The write goes on; if it lands, the replay skips the copy. With the
    /// spool no longer empty, `dispatch` then spools every sealed batch
    /// behind it, in order, until the replay has caught up.
    pub(super) async fn spool_if_behind(&mut self) {
        if self.behind_at().is_none_or(|at| at > Instant::now()) {
            return;
        }
        let (Some(spool), Some(flight)) = (self.spool.as_mut(), self.in_flight.as_mut()) else {
            return;
        };
        let Some(direct) = flight.direct.as_mut() else {
            return;
        };
        match spool.append(&direct.batch).await {
            Ok(Appended::Yes) => {
                direct.spooled = Some(spool.end);
                let waiters = std::mem::take(&mut flight.waiters);
                tracing::info!(
                    path = %spool.path.display(),
                    "the log store is behind; spooling log batches to disk until it catches up"
                );
                self.append_retry_at = None;
                self.count_spooled();
                Pending {
                    waiters,
                    ..Pending::default()
                }
                .done();
            }
            // Nowhere to go: the batches wait for the store, and so, once
            // the channel is full, do producers. Tried again after a pause.
            Ok(Appended::Full) => {
                self.spool_without_room();
                self.append_retry_at = Some(Instant::now() + self.config.retry_max);
            }
            Err(_) => self.append_retry_at = Some(Instant::now() + self.config.retry_max),
        }
    }

    /// A batch went into the spool: counts it, by why (the store failing, or
    /// behind), and notes that the spool has room.
    fn count_spooled(&mut self) {
        self.stats.spooled_batches.fetch_add(1, Ordering::Relaxed);
        let reason = if self.outage.is_failing() {
            &self.stats.spooled_down
        } else {
            &self.stats.spooled_behind
        };
        reason.fetch_add(1, Ordering::Relaxed);
        if let Some(spool) = &self.spool {
            self.stats.spool_changed(spool);
        }
        self.spool_has_room();
    }

    /// The spool refused a batch for want of room: from now on producers
    /// wait for the store. Logged once, until it has room again.
    fn spool_without_room(&mut self) {
        if self.spool_full {
            return;
        }
        self.spool_full = true;
        if let Some(spool) = &self.spool {
            tracing::warn!(
                path = %spool.path.display(),
                pending_bytes = spool.pending_bytes(),
                "the log spool's disk budget is spent; runs wait for the log store until the spool has drained"
            );
        }
    }

    fn spool_has_room(&mut self) {
        if std::mem::take(&mut self.spool_full) {
            tracing::info!("the log spool has room again; runs no longer wait for the log store");
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
                self.truncate().await;
                if self.spool.as_ref().is_some_and(|spool| spool.end > 0) {
                    self.replay_at = Instant::now() + self.replay_backoff.next_delay();
                }
            }
            return;
        }
        match spool
            .take_head(self.config.batch_docs, self.config.batch_max_bytes)
            .await
        {
            Ok(Some((mut batch, next))) => {
                batch.drop_superseded();
                let store = Arc::clone(&self.store);
                let stats = Arc::clone(&self.stats);
                let outage = Arc::clone(&self.outage);
                let timeout = self.config.write_timeout;
                let write = async move {
                    match attempt(&*store, &batch, timeout, &stats, &outage).await {
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
                    write: on_its_own(write),
                    waiters: Vec::new(),
                    replay_next: Some(next),
                    direct: None,
                });
            }
            Ok(None) => self.truncate().await,
            Err(_) => {
                self.replay_at = Instant::now() + self.replay_backoff.next_delay();
            }
        }
    }

    async fn truncate(&mut self) {
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        if spool.truncate().await.is_ok() {
            tracing::info!(path = %spool.path.display(), "log spool replayed");
            self.stats.spool_changed(spool);
            self.spool_has_room();
        } else {
            self.stats.spool_changed(spool);
        }
    }

    /// A replayed batch is in the store (or refused for good): move past it,
    /// and empty the file once everything is replayed so its space returns.
    pub(super) async fn replayed(&mut self, next: Option<u64>) {
        if let (Some(spool), Some(next)) = (self.spool.as_mut(), next) {
            spool.advance(next);
            self.stats.spool_changed(spool);
            self.replay_backoff.reset();
            self.replay_at = Instant::now();
            if spool.is_empty() {
                self.truncate().await;
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
                self.count_spooled();
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
