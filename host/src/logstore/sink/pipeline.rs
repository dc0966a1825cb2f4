//! The sink task's state machine: one `Pipeline` owns the channel, the
//! batches waiting their turn, the one store write in flight and the spool,
//! and its loop decides what moves next: among other things, that the store
//! is behind and the spool must take what waits for it. Filling batches
//! (`batch.rs`) and spooling and replaying them (`replay.rs`) are further
//! `impl Pipeline` blocks, kept apart so that each side of the machine reads
//! on its own.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use super::batch::Pending;
use super::retry::{Backoff, Outage, write_with_retries};
use super::spool::Spool;
use super::{Pressure, Queued, SinkConfig, SinkStats};
use crate::logstore::{LogBatch, LogStore};

/// The one store write in flight.
pub(super) struct InFlight {
    pub(super) write: BoxFuture<'static, Outcome>,
    pub(super) waiters: Vec<oneshot::Sender<()>>,
    /// For a replay: where the spool's next batch starts once this one is in.
    pub(super) replay_next: Option<u64>,
    /// For a direct write: what the pipeline needs to spool its batch while
    /// it is in flight.
    pub(super) direct: Option<Direct>,
}

impl InFlight {
    /// Whether the spool holds this write's batch as well: a replay, or a
    /// direct write spooled once the store fell behind.
    fn in_spool(&self) -> bool {
        self.replay_next.is_some() || self.direct.as_ref().is_some_and(|direct| direct.spooled.is_some())
    }
}

/// A direct write's side of `InFlight`.
pub(super) struct Direct {
    /// The batch, shared with the write.
    pub(super) batch: Arc<LogBatch>,
    pub(super) started: Instant,
    /// Once the store fell behind and the batch went to the spool as well:
    /// where the spool's next batch starts. The write then stands for the
    /// spool's head: landing, it moves the head past its copy.
    pub(super) spooled: Option<u64>,
}

pub(super) enum Outcome {
    Written {
        events: usize,
        micros: u64,
    },
    Rejected {
        events: usize,
        error: String,
    },
    /// A direct write ran out of `spool_after`: the batch goes to the spool.
    GaveUp(Arc<LogBatch>),
    /// A replay attempt failed: the batch stays at the spool's head.
    Failed(LogBatch),
}

pub(super) struct Pipeline {
    pub(super) store: Arc<dyn LogStore>,
    pub(super) config: SinkConfig,
    pub(super) stats: Arc<SinkStats>,
    pub(super) outage: Arc<Outage>,
    pub(super) rx: mpsc::Receiver<Queued>,
    pub(super) pressure: Arc<Pressure>,
    /// When every `Sink` was gone and the channel drained (the intake
    /// closed): the spool's replay goes on until `shutdown_replay` after it.
    pub(super) closed_at: Option<Instant>,
    pub(super) buffer: Vec<Queued>,
    /// The batch being filled.
    pub(super) open: Pending,
    pub(super) open_deadline: Option<Instant>,
    /// Full batches waiting their turn. The channel is read only while this
    /// is empty, which is what bounds memory and pushes back on executors.
    pub(super) sealed: VecDeque<Pending>,
    pub(super) in_flight: Option<InFlight>,
    pub(super) spool: Option<Spool>,
    pub(super) replay_at: Instant,
    pub(super) replay_backoff: Backoff,
    /// Set after a failed spool append (a full disk, say): when to try again.
    pub(super) append_retry_at: Option<Instant>,
    /// Shutting down with the store still down: leave the spool for the next
    /// start rather than wait for the store.
    pub(super) replay_given_up: bool,
    /// The spool refused a batch for want of room (`spool_max_bytes`), which
    /// was logged; cleared, and logged, once it takes one again.
    pub(super) spool_full: bool,
}

impl Pipeline {
    pub(super) fn new(
        store: Arc<dyn LogStore>,
        config: SinkConfig,
        stats: Arc<SinkStats>,
        rx: mpsc::Receiver<Queued>,
        spool: Option<Spool>,
        pressure: Arc<Pressure>,
    ) -> Self {
        let replay_backoff = Backoff::new(config.retry_initial, config.retry_max);
        Self {
            store,
            config,
            stats,
            outage: Arc::new(Outage::default()),
            rx,
            pressure,
            closed_at: None,
            buffer: Vec::new(),
            open: Pending::default(),
            open_deadline: None,
            sealed: VecDeque::new(),
            in_flight: None,
            spool,
            replay_at: Instant::now(),
            replay_backoff,
            append_retry_at: None,
            replay_given_up: false,
            spool_full: false,
        }
    }

    pub(super) async fn run(mut self) -> anyhow::Result<()> {
        loop {
            self.dispatch().await;
            if self.shutdown_replay_over() {
                self.replay_given_up = true;
            }
            if self.finished() {
                if let Some(spool) = self.spool.as_ref().filter(|s| !s.is_empty()) {
                    tracing::warn!(
                        path = %spool.path.display(),
                        bytes = spool.pending_bytes(),
                        "the log store did not take the whole spool before shutdown; the rest will be replayed on \
                         the next start"
                    );
                }
                return Ok(());
            }
            let read_channel = !self.intake_closed() && self.sealed.is_empty();
            let room = self.config.batch_docs.saturating_sub(self.open.batch.len()).max(1);
            let seal_at = self.open_deadline.filter(|_| self.sealed.is_empty());
            let wake_at = self.wake_at();
            // Producers say when the channel fills up; that may make the
            // store count as behind.
            let hear_pressure = self.behind_at().is_some();
            tokio::select! {
                outcome = next_outcome(&mut self.in_flight), if self.in_flight.is_some() => {
                    self.completed(outcome).await;
                }
                received = self.rx.recv_many(&mut self.buffer, room), if read_channel => {
                    if received == 0 {
                        self.closed_at = Some(Instant::now());
                        self.seal();
                    } else {
                        self.stats.queued.fetch_sub(received as u64, Ordering::Relaxed);
                        self.take_buffer();
                    }
                }
                () = sleep_until(seal_at), if seal_at.is_some() => self.seal(),
                () = sleep_until(wake_at), if wake_at.is_some() => {}
                () = self.pressure.notify.notified(), if hear_pressure => {}
            }
        }
    }

    /// Every `Sink` is gone and the channel is drained.
    fn intake_closed(&self) -> bool {
        self.closed_at.is_some()
    }

    fn finished(&self) -> bool {
        let in_flight_settled = match &self.in_flight {
            None => true,
            // Given up at shutdown: a write whose batch the spool holds too
            // is dropped (aborted) with the pipeline; the next start
            // replays its copy.
            Some(flight) => self.replay_given_up && flight.in_spool(),
        };
        self.intake_closed()
            && self.open.is_idle()
            && self.sealed.is_empty()
            && in_flight_settled
            && (self.replay_given_up || self.spool.as_ref().is_none_or(Spool::is_empty))
    }

    /// Shutting down with the spool still replaying, and `shutdown_replay`
    /// has passed since the intake closed.
    fn shutdown_replay_over(&self) -> bool {
        !self.replay_given_up
            && self.spool.as_ref().is_some_and(|s| !s.is_empty())
            && self
                .closed_at
                .is_some_and(|closed| closed.elapsed() >= self.config.shutdown_replay)
    }

    /// When a replay, a failed append, the store counting as behind, or the
    /// end of the shutdown's replay is next due, if any is waiting.
    fn wake_at(&self) -> Option<Instant> {
        // `end > 0` covers a spool still to replay and one still to truncate.
        let replay = (self.in_flight.is_none() && self.spool.as_ref().is_some_and(|s| s.end > 0))
            .then_some(self.replay_at)
            .filter(|_| !self.replay_given_up);
        let append = self.append_retry_at.filter(|_| !self.sealed.is_empty());
        let shutdown = self
            .closed_at
            .filter(|_| !self.replay_given_up)
            .map(|closed| closed + self.config.shutdown_replay);
        [replay, append, self.behind_at(), shutdown].into_iter().flatten().min()
    }

    /// When the store counts as behind: at once if a sealed batch waits on
    /// its direct write in flight while the channel fills up (the store
    /// takes batches more slowly than they come, however quick each write:
    /// without this, producers would soon wait), else once the write has
    /// taken `spool_when_behind` while a sealed batch or a flush waits on it
    /// (a slow or hung write); and a failed spool append has had its pause.
    /// `None` while there is no spool to take its place, or the spool
    /// already takes every batch.
    pub(super) fn behind_at(&self) -> Option<Instant> {
        let threshold = self.config.spool_when_behind?;
        let spool = self.spool.as_ref()?;
        let flight = self.in_flight.as_ref()?;
        let direct = flight.direct.as_ref().filter(|direct| direct.spooled.is_none())?;
        if !spool.is_empty() || (self.sealed.is_empty() && flight.waiters.is_empty()) {
            return None;
        }
        let at = if !self.sealed.is_empty() && self.pressure.felt(&self.stats) {
            direct.started
        } else {
            direct.started + threshold
        };
        Some(self.append_retry_at.map_or(at, |retry| retry.max(at)))
    }

    /// Moves work forward without waiting on the store: spools what waits
    /// on a store that is behind, starts the next write, appends to the
    /// spool, starts a replay when one is due.
    async fn dispatch(&mut self) {
        self.spool_if_behind().await;
        loop {
            let spooling = self.spool.as_ref().is_some_and(|s| !s.is_empty());
            if self.sealed.is_empty() {
                break;
            }
            if spooling {
                if self.append_retry_at.is_some_and(|at| at > Instant::now()) {
                    break;
                }
                if !self.spool_front().await {
                    break;
                }
            } else {
                if self.in_flight.is_some() {
                    break;
                }
                self.append_retry_at = None;
                let Some(mut pending) = self.sealed.pop_front() else {
                    break;
                };
                // Once per batch, as it leaves the queue (not at each merge).
                pending.batch.drop_superseded();
                if pending.batch.is_empty() {
                    // A flush with nothing new: everything before it is done.
                    pending.done();
                    continue;
                }
                let give_up = self.spool.as_ref().map(|_| self.config.spool_after);
                self.start_direct(pending, give_up);
            }
        }
        self.start_replay().await;
    }

    pub(super) fn start_direct(&mut self, pending: Pending, give_up: Option<Duration>) {
        let Pending { batch, waiters, .. } = pending;
        let batch = Arc::new(batch);
        let write = write_with_retries(
            Arc::clone(&self.store),
            Arc::clone(&batch),
            give_up,
            self.config.write_timeout,
            Backoff::new(self.config.retry_initial, self.config.retry_max),
            Arc::clone(&self.stats),
            Arc::clone(&self.outage),
        );
        self.in_flight = Some(InFlight {
            write: on_its_own(write),
            waiters,
            replay_next: None,
            direct: Some(Direct {
                batch,
                started: Instant::now(),
                spooled: None,
            }),
        });
    }

    async fn completed(&mut self, outcome: Outcome) {
        let Some(InFlight {
            waiters,
            replay_next,
            direct,
            ..
        }) = self.in_flight.take()
        else {
            return;
        };
        // A direct write whose batch is in the spool too stands for the
        // spool's head (its waiters were answered when it was spooled).
        let spooled_next = direct.and_then(|direct| direct.spooled);
        let pending = Pending {
            batch: LogBatch::default(),
            waiters,
            bytes: 0,
        };
        let replay_next = replay_next.or(spooled_next);
        match outcome {
            Outcome::Written { events, micros } => {
                self.stats.written.fetch_add(events as u64, Ordering::Relaxed);
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                self.stats.last_flush_micros.store(micros, Ordering::Relaxed);
                self.stats.flush_micros_sum.fetch_add(micros, Ordering::Relaxed);
                self.stats.flush_count.fetch_add(1, Ordering::Relaxed);
                self.replayed(replay_next).await;
                pending.done();
            }
            Outcome::Rejected { events, error } => {
                tracing::error!(events, error = %error, "the log store rejected a batch; it is dropped");
                self.stats.rejected.fetch_add(events as u64, Ordering::Relaxed);
                self.replayed(replay_next).await;
                pending.done();
            }
            Outcome::GaveUp(_) if spooled_next.is_some() => {
                // Already at the spool's head: the replay takes it from here,
                // once the store has had a moment.
                self.replay_backoff.reset();
                self.replay_at = Instant::now() + self.replay_backoff.next_delay();
                pending.done();
            }
            Outcome::GaveUp(batch) => {
                self.spool_given_up(Pending {
                    batch: Arc::unwrap_or_clone(batch),
                    waiters: pending.waiters,
                    bytes: pending.bytes,
                })
                .await
            }
            Outcome::Failed(batch) => {
                if let (Some(spool), Some(next)) = (self.spool.as_mut(), replay_next) {
                    spool.put_back_head(batch, next);
                }
                self.replay_at = Instant::now() + self.replay_backoff.next_delay();
                if self.intake_closed() && self.open.is_idle() && self.sealed.is_empty() {
                    self.replay_given_up = true;
                }
            }
        }
    }
}

/// Runs a store write as a task of its own, so that it goes on while the
/// pipeline waits on the spool's disk (a future of the pipeline's would move
/// only while the pipeline polls it, which would slow writes and replays
/// down exactly while the store is behind). Dropping the returned future (a
/// write given up, the sink task stopped) aborts the task. A panic in the
/// write is the pipeline's, as if the write had run inline.
pub(super) fn on_its_own(write: impl Future<Output = Outcome> + Send + 'static) -> BoxFuture<'static, Outcome> {
    let task = AbortOnDropHandle::new(tokio::spawn(write));
    Box::pin(async move {
        match task.await {
            Ok(outcome) => outcome,
            Err(err) => match err.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                // Only an abort cancels the task, and only dropping this
                // future aborts it: nobody is left to wait here.
                Err(_) => std::future::pending().await,
            },
        }
    })
}

async fn next_outcome(in_flight: &mut Option<InFlight>) -> Outcome {
    match in_flight {
        Some(flight) => (&mut flight.write).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
