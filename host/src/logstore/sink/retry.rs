//! Store writes with retries: one attempt at a time against the `LogStore`,
//! each bounded by `write_timeout` (an attempt without an answer by then has
//! failed), exponential backoff between attempts, and an outage logged once
//! when it starts and once when it ends rather than at every retry. A batch
//! the store refuses as invalid is not retried: no retry can fix it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::SinkStats;
use super::pipeline::Outcome;
use crate::logstore::{LogBatch, LogStore, LogStoreError};

/// Writes a batch, retrying with backoff; gives the batch back once
/// `give_up` has passed (never, without a spool). The batch is shared with
/// the pipeline, which may spool it while the write goes on.
pub(super) async fn write_with_retries(
    store: Arc<dyn LogStore>,
    batch: Arc<LogBatch>,
    give_up: Option<Duration>,
    timeout: Duration,
    mut backoff: Backoff,
    stats: Arc<SinkStats>,
    outage: Arc<Outage>,
) -> Outcome {
    if batch.is_empty() {
        return Outcome::Written { events: 0, micros: 0 };
    }
    let started = Instant::now();
    loop {
        match attempt(&*store, &batch, timeout, &stats, &outage).await {
            Attempt::Written(micros) => {
                return Outcome::Written {
                    events: batch.len(),
                    micros,
                };
            }
            Attempt::Rejected(error) => {
                return Outcome::Rejected {
                    events: batch.len(),
                    error,
                };
            }
            Attempt::Failed => {}
        }
        let mut delay = backoff.next_delay();
        if let Some(limit) = give_up {
            let spent = started.elapsed();
            if spent >= limit {
                return Outcome::GaveUp(batch);
            }
            // The last wait ends exactly at the limit, for one final try.
            delay = delay.min(limit - spent);
        }
        tokio::time::sleep(delay).await;
    }
}

pub(super) enum Attempt {
    Written(u64),
    Rejected(String),
    Failed,
}

/// One write of `batch`; one that has not answered within `timeout` is
/// dropped and counts as failed. (Dropped, it may still land in the store
/// later; writes are idempotent and the fencing rule keeps the newer
/// record, so the retry or replay after it does no harm.)
pub(super) async fn attempt(
    store: &dyn LogStore,
    batch: &LogBatch,
    timeout: Duration,
    stats: &SinkStats,
    outage: &Outage,
) -> Attempt {
    let started = Instant::now();
    let answer = tokio::time::timeout(timeout, store.write(batch))
        .await
        .unwrap_or_else(|_| Err(LogStoreError::Unavailable(format!("no answer within {timeout:?}"))));
    match answer {
        Ok(()) => {
            outage.recovered();
            Attempt::Written(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX))
        }
        Err(LogStoreError::Invalid(error)) => Attempt::Rejected(error),
        Err(e) => {
            stats.write_errors.fetch_add(1, Ordering::Relaxed);
            outage.failed(&e);
            Attempt::Failed
        }
    }
}

/// Logs a store outage once when it starts and once when it ends, however
/// many retries fall in between.
#[derive(Default)]
pub(super) struct Outage(AtomicBool);

impl Outage {
    fn failed(&self, error: &LogStoreError) {
        if !self.0.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %error, "log store write failed; retrying with backoff");
        }
    }

    /// Whether the store's last write failed.
    pub(super) fn is_failing(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn recovered(&self) {
        if self.0.swap(false, Ordering::Relaxed) {
            tracing::info!("log store writes succeed again");
        }
    }
}

pub(super) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(super) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    pub(super) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    pub(super) fn reset(&mut self) {
        self.next = self.initial;
    }
}
