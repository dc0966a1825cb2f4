//! The batching sink: carries run records and output chunks from executors to
//! a `LogStore` in batches, retries a failing store, and spools to a local
//! file while the store stays down, so that nothing handed to it is lost.
//!
//! Executors hold a cheap `Sink` handle; one `SinkTask` owns the store, the
//! batch being filled and the spool. Records and chunks travel over one
//! bounded channel so their order is kept, and every bound (channel, batch,
//! spool size) turns into backpressure on the executors rather than memory
//! growth or dropped data.
//!
//! The task is a small state machine around one write in flight:
//! - healthy: a full batch (or one `flush_interval` old) is written to the
//!   store, retried with backoff; while it is in flight the next batch fills.
//! - spooling: a batch whose retries ran past `spool_after` is appended to the
//!   spool, and so is every later batch until the spool is empty again, so
//!   the store still receives batches in order. The spool's head batch is
//!   replayed with backoff; once everything is replayed the file is truncated.
//!
//! It never touches a store other than through `LogStore`.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::logstore::{LogBatch, LogStore, LogStoreError};
use crate::run::{OutputChunk, RunRecord};

/// How the sink batches, retries and spools.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// A batch is written once it holds this many records and chunks.
    pub batch_docs: usize,
    /// … or this long after its first event, whichever comes first.
    pub flush_interval: Duration,
    /// Events the channel holds before `record`/`chunk` wait.
    pub channel_capacity: usize,
    /// Where batches wait while the store is down; without one, the sink
    /// retries forever and applies backpressure instead.
    pub spool_path: Option<PathBuf>,
    /// The spool file never grows past this; beyond it, backpressure.
    pub spool_max_bytes: u64,
    /// First retry delay; doubles up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// How long a batch is retried against the store before it goes to the
    /// spool (when there is one).
    pub spool_after: Duration,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            batch_docs: 500,
            flush_interval: Duration::from_millis(100),
            channel_capacity: 10_000,
            spool_path: None,
            spool_max_bytes: 1 << 30,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            spool_after: Duration::from_secs(1),
        }
    }
}

/// Counters for `/metrics` and tests. Gauges: `queued`, `spooled_bytes`,
/// `last_flush_micros`; the rest count up.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Events handed to the sink and not yet taken by the task: those in the
    /// channel, plus any sender waiting for room.
    pub queued: AtomicU64,
    /// Events written to the store (a replayed event counts again).
    pub written: AtomicU64,
    /// Batches written to the store.
    pub batches: AtomicU64,
    /// Failed store writes, retries included.
    pub write_errors: AtomicU64,
    /// Bytes in the spool not yet replayed.
    pub spooled_bytes: AtomicU64,
    /// Batches appended to the spool.
    pub spooled_batches: AtomicU64,
    /// Duration of the last successful store write.
    pub last_flush_micros: AtomicU64,
    /// Sum and count of successful store-write durations, for a mean.
    pub flush_micros_sum: AtomicU64,
    pub flush_count: AtomicU64,
    /// Events the store refused as invalid (`LogStoreError::Invalid`), which
    /// no retry can fix; they are logged and dropped rather than left to
    /// block everything behind them.
    pub rejected: AtomicU64,
    /// Events handed to a sink whose task had already stopped.
    pub dropped: AtomicU64,
    /// Set once the task has opened its spool, so `spooled_bytes` counts
    /// what an earlier process left behind.
    started: tokio::sync::watch::Sender<bool>,
}

impl SinkStats {
    /// Waits until the sink task has started (and opened its spool, if it
    /// has one), so the gauges describe the spool on disk.
    pub async fn wait_started(&self) {
        let mut started = self.started.subscribe();
        // The sender lives in `self`, so this cannot fail while we wait.
        let _ = started.wait_for(|started| *started).await;
    }
}

/// The handle executors write through. Cloning is cheap.
#[derive(Clone)]
pub struct Sink {
    tx: mpsc::Sender<Event>,
    stats: Arc<SinkStats>,
    /// For reads only: every write goes through the task.
    store: Arc<dyn LogStore>,
}

/// The task that drains the channel into the store; see `run`.
pub struct SinkTask {
    store: Arc<dyn LogStore>,
    config: SinkConfig,
    stats: Arc<SinkStats>,
    rx: mpsc::Receiver<Event>,
}

impl Sink {
    /// A sink writing into `store`; spawn (or await) the returned task.
    pub fn new(store: Arc<dyn LogStore>, config: SinkConfig) -> (Sink, SinkTask) {
        let config = SinkConfig {
            batch_docs: config.batch_docs.max(1),
            channel_capacity: config.channel_capacity.max(1),
            retry_initial: config.retry_initial.max(Duration::from_millis(1)),
            retry_max: config.retry_max.max(config.retry_initial).max(Duration::from_millis(1)),
            ..config
        };
        let (tx, rx) = mpsc::channel(config.channel_capacity);
        let stats = Arc::new(SinkStats::default());
        (
            Sink {
                tx,
                stats: Arc::clone(&stats),
                store: Arc::clone(&store),
            },
            SinkTask {
                store,
                config,
                stats,
                rx,
            },
        )
    }

    /// Queues a run record; waits while the channel is full, never drops.
    pub async fn record(&self, run: RunRecord) {
        self.send(Event::Record(Box::new(run))).await;
    }

    /// Queues `run` unless the store already holds a record with its id;
    /// says whether it queued it. For a record another process may have
    /// written first under the same id: a stored record, maybe more precise,
    /// is left alone. A store that cannot answer gets the record anyway (its
    /// fencing rule keeps one record per id).
    pub async fn record_unless_stored(&self, run: RunRecord) -> bool {
        match self.store.run(run.run_id).await {
            Ok(Some(_)) => return false,
            Ok(None) => {}
            Err(err) => tracing::warn!(run = %run.run_id, %err, "cannot read a run record back; writing it anyway"),
        }
        self.record(run).await;
        true
    }

    /// Queues an output chunk; waits while the channel is full, never drops.
    pub async fn chunk(&self, chunk: OutputChunk) {
        self.send(Event::Chunk(chunk)).await;
    }

    /// Returns once everything sent before the call, through any clone of
    /// this sink, is in the store or safely in the spool. Without a spool and with the store
    /// down, that is when the store comes back.
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.send(Event::Flush(done)).await && written.await.is_err() {
            tracing::warn!("log sink stopped before a flush completed");
        }
    }

    pub fn stats(&self) -> Arc<SinkStats> {
        Arc::clone(&self.stats)
    }

    async fn send(&self, event: Event) -> bool {
        // Counted before the send so the task's decrement never runs first.
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(event).await.is_ok() {
            return true;
        }
        self.stats.queued.fetch_sub(1, Ordering::Relaxed);
        if self.stats.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::error!("the log sink has stopped; run records and output are no longer recorded");
        }
        false
    }
}

impl SinkTask {
    /// Runs until every `Sink` clone is dropped, then writes (or spools)
    /// everything still queued and returns. A spool left by an earlier
    /// process is replayed first.
    ///
    /// At shutdown with the store down, a sink with a spool returns once
    /// everything is spooled and one more replay attempt has failed; one
    /// without a spool keeps retrying, so bound the wait with a deadline.
    ///
    /// A spool that cannot be opened (a bad path, or another process using
    /// it) is logged and the sink runs without one: backpressure instead of
    /// spooling, but nothing dropped.
    pub async fn run(self) -> anyhow::Result<()> {
        let SinkTask {
            store,
            config,
            stats,
            rx,
        } = self;
        let spool = match &config.spool_path {
            Some(path) => match Spool::open(path.clone(), config.spool_max_bytes).await {
                Ok(spool) => {
                    if !spool.is_empty() {
                        let bytes = spool.pending_bytes();
                        tracing::info!(path = %path.display(), bytes, "replaying the log spool");
                    }
                    stats.spooled_bytes.store(spool.pending_bytes(), Ordering::Relaxed);
                    Some(spool)
                }
                Err(e) => {
                    tracing::error!(
                        path = %path.display(),
                        error = %e,
                        "cannot open the log spool; running without one, so a log-store outage will slow runs down"
                    );
                    None
                }
            },
            None => None,
        };
        stats.started.send_replace(true);
        let replay_backoff = Backoff::new(config.retry_initial, config.retry_max);
        let pipeline = Pipeline {
            store,
            config,
            stats,
            outage: Arc::new(Outage::default()),
            rx,
            intake_closed: false,
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
        };
        pipeline.run().instrument(tracing::info_span!("log_sink")).await
    }
}

enum Event {
    /// Boxed so that the channel's slots are sized for chunks, the common
    /// event, rather than for the much larger record.
    Record(Box<RunRecord>),
    Chunk(OutputChunk),
    Flush(oneshot::Sender<()>),
}

/// A batch and the `flush` calls waiting for it to be durable.
#[derive(Default)]
struct Pending {
    batch: LogBatch,
    waiters: Vec<oneshot::Sender<()>>,
}

impl Pending {
    fn is_idle(&self) -> bool {
        self.batch.is_empty() && self.waiters.is_empty()
    }

    fn done(self) {
        for waiter in self.waiters {
            // A flush caller that gave up waiting is no concern of ours.
            waiter.send(()).ok();
        }
    }
}

/// The one store write in flight.
struct InFlight {
    write: BoxFuture<'static, Outcome>,
    waiters: Vec<oneshot::Sender<()>>,
    /// For a replay: where the spool's next batch starts once this one is in.
    replay_next: Option<u64>,
}

enum Outcome {
    Written {
        events: usize,
        micros: u64,
    },
    Rejected {
        events: usize,
        error: String,
    },
    /// A direct write ran out of `spool_after`: the batch goes to the spool.
    GaveUp(LogBatch),
    /// A replay attempt failed: the batch stays at the spool's head.
    Failed(LogBatch),
}

struct Pipeline {
    store: Arc<dyn LogStore>,
    config: SinkConfig,
    stats: Arc<SinkStats>,
    outage: Arc<Outage>,
    rx: mpsc::Receiver<Event>,
    /// Every `Sink` is gone and the channel is drained.
    intake_closed: bool,
    buffer: Vec<Event>,
    /// The batch being filled.
    open: Pending,
    open_deadline: Option<Instant>,
    /// Full batches waiting their turn. The channel is read only while this
    /// is empty, which is what bounds memory and pushes back on executors.
    sealed: VecDeque<Pending>,
    in_flight: Option<InFlight>,
    spool: Option<Spool>,
    replay_at: Instant,
    replay_backoff: Backoff,
    /// Set after a failed spool append (a full disk, say): when to try again.
    append_retry_at: Option<Instant>,
    /// Shutting down with the store still down: leave the spool for the next
    /// start rather than wait for the store.
    replay_given_up: bool,
}

impl Pipeline {
    async fn run(mut self) -> anyhow::Result<()> {
        loop {
            self.dispatch().await;
            if self.finished() {
                if let Some(spool) = self.spool.as_ref().filter(|s| !s.is_empty()) {
                    tracing::warn!(
                        path = %spool.path.display(),
                        bytes = spool.pending_bytes(),
                        "log store still unavailable at shutdown; the spool will be replayed on the next start"
                    );
                }
                return Ok(());
            }
            let read_channel = !self.intake_closed && self.sealed.is_empty();
            let room = self.config.batch_docs.saturating_sub(self.open.batch.len()).max(1);
            let seal_at = self.open_deadline.filter(|_| self.sealed.is_empty());
            let wake_at = self.wake_at();
            tokio::select! {
                outcome = next_outcome(&mut self.in_flight), if self.in_flight.is_some() => {
                    self.completed(outcome).await;
                }
                received = self.rx.recv_many(&mut self.buffer, room), if read_channel => {
                    if received == 0 {
                        self.intake_closed = true;
                        self.seal();
                    } else {
                        self.stats.queued.fetch_sub(received as u64, Ordering::Relaxed);
                        self.take_buffer();
                    }
                }
                () = sleep_until(seal_at), if seal_at.is_some() => self.seal(),
                () = sleep_until(wake_at), if wake_at.is_some() => {}
            }
        }
    }

    fn finished(&self) -> bool {
        self.intake_closed
            && self.open.is_idle()
            && self.sealed.is_empty()
            && self.in_flight.is_none()
            && (self.replay_given_up || self.spool.as_ref().is_none_or(Spool::is_empty))
    }

    /// When a replay or a failed append is next due, if either is waiting.
    fn wake_at(&self) -> Option<Instant> {
        // `end > 0` covers a spool still to replay and one still to truncate.
        let replay = (self.in_flight.is_none() && self.spool.as_ref().is_some_and(|s| s.end > 0))
            .then_some(self.replay_at)
            .filter(|_| !self.replay_given_up);
        let append = self.append_retry_at.filter(|_| !self.sealed.is_empty());
        match (replay, append) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn take_buffer(&mut self) {
        let mut events = std::mem::take(&mut self.buffer);
        // Flushes taken together seal one batch, not one each: when many
        // runs end at once, their flushes share a write.
        let mut flush = false;
        for event in events.drain(..) {
            match event {
                Event::Record(run) => {
                    self.start_batch();
                    self.open.batch.runs.push(*run);
                }
                Event::Chunk(chunk) => {
                    self.start_batch();
                    self.open.batch.chunks.push(chunk);
                }
                Event::Flush(waiter) => {
                    self.open.waiters.push(waiter);
                    flush = true;
                    continue;
                }
            }
            if self.open.batch.len() >= self.config.batch_docs {
                self.seal();
            }
        }
        if flush {
            self.seal();
        }
        // Handing the allocation back keeps the buffer from being regrown.
        self.buffer = events;
    }

    fn start_batch(&mut self) {
        if self.open.batch.is_empty() {
            self.open_deadline = Some(Instant::now() + self.config.flush_interval);
        }
    }

    fn seal(&mut self) {
        if !self.open.is_idle() {
            let open = std::mem::take(&mut self.open);
            // A batch already waiting its turn takes the new one in, up to
            // `batch_docs`: many small flushes (runs ending together) then
            // share a write instead of queueing one write each.
            match self.sealed.back_mut() {
                Some(last) if last.batch.len() + open.batch.len() <= self.config.batch_docs => {
                    last.batch.runs.extend(open.batch.runs);
                    last.batch.chunks.extend(open.batch.chunks);
                    last.waiters.extend(open.waiters);
                }
                _ => self.sealed.push_back(open),
            }
        }
        self.open_deadline = None;
    }

    /// Moves work forward without waiting on the store: starts the next
    /// write, appends to the spool, starts a replay when one is due.
    async fn dispatch(&mut self) {
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
                self.append_retry_at = None;
                if self.in_flight.is_some() {
                    break;
                }
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

    /// Appends the first sealed batch to the spool; false if it has to wait.
    async fn spool_front(&mut self) -> bool {
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

    fn start_direct(&mut self, pending: Pending, give_up: Option<Duration>) {
        let Pending { batch, waiters } = pending;
        let write = write_with_retries(
            Arc::clone(&self.store),
            batch,
            give_up,
            Backoff::new(self.config.retry_initial, self.config.retry_max),
            Arc::clone(&self.stats),
            Arc::clone(&self.outage),
        );
        self.in_flight = Some(InFlight {
            write: Box::pin(write),
            waiters,
            replay_next: None,
        });
    }

    async fn start_replay(&mut self) {
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

    async fn completed(&mut self, outcome: Outcome) {
        let Some(InFlight {
            waiters, replay_next, ..
        }) = self.in_flight.take()
        else {
            return;
        };
        let pending = Pending {
            batch: LogBatch::default(),
            waiters,
        };
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
            Outcome::GaveUp(batch) => {
                self.spool_given_up(Pending {
                    batch,
                    waiters: pending.waiters,
                })
                .await
            }
            Outcome::Failed(batch) => {
                if let (Some(spool), Some(next)) = (self.spool.as_mut(), replay_next) {
                    spool.put_back_head(batch, next);
                }
                self.replay_at = Instant::now() + self.replay_backoff.next_delay();
                if self.intake_closed && self.open.is_idle() && self.sealed.is_empty() {
                    self.replay_given_up = true;
                }
            }
        }
    }

    /// A replayed batch is in the store (or refused for good): move past it,
    /// and empty the file once everything is replayed so its space returns.
    async fn replayed(&mut self, next: Option<u64>) {
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
    async fn spool_given_up(&mut self, pending: Pending) {
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

/// Writes a batch, retrying with backoff; gives the batch back once
/// `give_up` has passed (never, without a spool).
async fn write_with_retries(
    store: Arc<dyn LogStore>,
    batch: LogBatch,
    give_up: Option<Duration>,
    mut backoff: Backoff,
    stats: Arc<SinkStats>,
    outage: Arc<Outage>,
) -> Outcome {
    if batch.is_empty() {
        return Outcome::Written { events: 0, micros: 0 };
    }
    let started = Instant::now();
    loop {
        match attempt(&*store, &batch, &stats, &outage).await {
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

enum Attempt {
    Written(u64),
    Rejected(String),
    Failed,
}

async fn attempt(store: &dyn LogStore, batch: &LogBatch, stats: &SinkStats, outage: &Outage) -> Attempt {
    let started = Instant::now();
    match store.write(batch).await {
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
struct Outage(AtomicBool);

impl Outage {
    fn failed(&self, error: &LogStoreError) {
        if !self.0.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %error, "log store write failed; retrying with backoff");
        }
    }

    fn recovered(&self) {
        if self.0.swap(false, Ordering::Relaxed) {
            tracing::info!("log store writes succeed again");
        }
    }
}

struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }
}

enum Appended {
    Yes,
    /// The batch would take the file past `spool_max_bytes`.
    Full,
}

/// The spool: an append-only file of JSON lines, one `LogBatch` each,
/// fsync'd before a batch counts as safe. Bytes `head..end` wait for replay;
/// everything before `head` is in the store. The head offset lives only in
/// memory, so after a crash the whole file is replayed again, which the
/// store's idempotency makes harmless.
struct Spool {
    path: PathBuf,
    /// Opened for appending (every write lands at the end whatever else
    /// happens) and read positionally, so no shared cursor needs guarding.
    file: Arc<File>,
    head: u64,
    end: u64,
    max_bytes: u64,
    /// The head batch, decoded, while it is not being replayed.
    head_batch: Option<(LogBatch, u64)>,
    /// In a run of I/O failures, which is logged once, not per retry.
    failing: bool,
}

impl Spool {
    async fn open(path: PathBuf, max_bytes: u64) -> io::Result<Self> {
        let opened = path.clone();
        let (file, end) = blocking(move || {
            if let Some(parent) = opened.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            let file = OpenOptions::new().read(true).append(true).create(true).open(&opened)?;
            // Two processes appending to one spool would interleave batches.
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        "the spool is in use by another process",
                    ));
                }
                // Some network filesystems cannot lock; the spool still works.
                Err(std::fs::TryLockError::Error(e)) if e.kind() == io::ErrorKind::Unsupported => {
                    tracing::warn!(error = %e, "cannot lock the log spool; make sure no other process uses it");
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
            let end = repair_tail(&file)?;
            Ok((file, end))
        })
        .await?;
        Ok(Self {
            path,
            file: Arc::new(file),
            head: 0,
            end,
            max_bytes,
            head_batch: None,
            failing: false,
        })
    }

    fn is_empty(&self) -> bool {
        self.head >= self.end
    }

    fn pending_bytes(&self) -> u64 {
        self.end.saturating_sub(self.head)
    }

    async fn append(&mut self, batch: &LogBatch) -> io::Result<Appended> {
        if batch.is_empty() {
            return Ok(Appended::Yes);
        }
        let mut line = serde_json::to_vec(batch).map_err(io::Error::other)?;
        line.push(b'\n');
        if self.end.saturating_add(line.len() as u64) > self.max_bytes {
            return Ok(Appended::Full);
        }
        let file = Arc::clone(&self.file);
        let expected = self.end;
        let appended = blocking(move || {
            // A failed append may have left part of a line behind; close it
            // off so the next batch starts on a line of its own.
            let start = if file.metadata()?.len() == expected {
                expected
            } else {
                repair_tail(&file)?
            };
            (&*file).write_all(&line)?;
            file.sync_data()?;
            Ok(start + line.len() as u64)
        })
        .await;
        self.end = self.note("append to", appended)?;
        Ok(Appended::Yes)
    }

    /// The batch at the head and where the next one starts; `None` once the
    /// spool is replayed. Lines that do not decode (the torn tail of a crash)
    /// are logged and skipped.
    async fn take_head(&mut self) -> io::Result<Option<(LogBatch, u64)>> {
        if let Some(head) = self.head_batch.take() {
            return Ok(Some(head));
        }
        while self.head < self.end {
            let (file, offset, end) = (Arc::clone(&self.file), self.head, self.end);
            let read = blocking(move || read_line(&file, offset, end)).await;
            let (line, next) = self.note("read", read)?;
            if line.iter().all(u8::is_ascii_whitespace) {
                self.head = next;
                continue;
            }
            match serde_json::from_slice::<LogBatch>(&line) {
                Ok(batch) => return Ok(Some((batch, next))),
                Err(e) => {
                    let path = self.path.display();
                    tracing::error!(%path, offset, error = %e, "skipping an unreadable spool line");
                    self.head = next;
                }
            }
        }
        Ok(None)
    }

    /// Logs the first failure of a run of them, and the recovery after it,
    /// rather than every retry.
    fn note<T>(&mut self, action: &str, result: io::Result<T>) -> io::Result<T> {
        match &result {
            Ok(_) if self.failing => {
                self.failing = false;
                tracing::info!(path = %self.path.display(), "the log spool works again");
            }
            Ok(_) => {}
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::error!(path = %self.path.display(), error = %e, "cannot {action} the log spool; retrying");
            }
            Err(_) => {}
        }
        result
    }

    fn put_back_head(&mut self, batch: LogBatch, next: u64) {
        self.head_batch = Some((batch, next));
    }

    fn advance(&mut self, next: u64) {
        self.head = next;
        self.head_batch = None;
    }

    async fn truncate(&mut self) -> io::Result<()> {
        let file = Arc::clone(&self.file);
        let truncated = blocking(move || {
            file.set_len(0)?;
            file.sync_data()
        })
        .await;
        self.note("truncate", truncated)?;
        self.head = 0;
        self.end = 0;
        self.head_batch = None;
        Ok(())
    }
}

/// Makes sure the file ends with a newline (a crash mid-append leaves a
/// partial line, which then stands alone and is skipped at replay) and
/// returns its length.
fn repair_tail(file: &File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8];
    file.read_exact_at(&mut last, len - 1)?;
    if last[0] == b'\n' {
        return Ok(len);
    }
    tracing::warn!("the log spool ends in a partial batch (a crash while spooling?); it will be skipped");
    let mut writer = file;
    writer.write_all(b"\n")?;
    file.sync_data()?;
    Ok(len + 1)
}

/// The line starting at `offset` (without its newline) and the offset after
/// it, reading no further than `end`.
fn read_line(file: &File, mut offset: u64, end: u64) -> io::Result<(Vec<u8>, u64)> {
    let mut line = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while offset < end {
        let want = usize::try_from(end - offset).unwrap_or(usize::MAX).min(buf.len());
        let n = file.read_at(&mut buf[..want], offset)?;
        if n == 0 {
            break;
        }
        if let Some(newline) = buf[..n].iter().position(|b| *b == b'\n') {
            line.extend_from_slice(&buf[..newline]);
            return Ok((line, offset + newline as u64 + 1));
        }
        line.extend_from_slice(&buf[..n]);
        offset += n as u64;
    }
    Ok((line, end))
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use async_trait::async_trait;
    use jiff::Timestamp;
    use tokio::sync::watch;

    use super::*;
    use crate::ids::{JobName, RunId};
    use crate::logstore::conformance::sample_record;
    use crate::logstore::sqlite::SqliteLogStore;
    use crate::logstore::{RunPage, RunQuery};
    use crate::run::{RunStatus, StreamKind};

    /// SQLite behind switches: fail every write, refuse every write as
    /// invalid, or hold writes until released. Logs the batches it passes on
    /// to SQLite, in order.
    struct TestStore {
        inner: Arc<SqliteLogStore>,
        failing: AtomicBool,
        invalid: AtomicBool,
        hold: watch::Sender<bool>,
        held: AtomicU64,
        log: Mutex<Vec<LogBatch>>,
    }

    impl TestStore {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                inner: SqliteLogStore::in_memory().unwrap(),
                failing: AtomicBool::new(false),
                invalid: AtomicBool::new(false),
                hold: watch::Sender::new(false),
                held: AtomicU64::new(0),
                log: Mutex::new(Vec::new()),
            })
        }

        fn fail(&self, failing: bool) {
            self.failing.store(failing, Ordering::SeqCst);
        }

        /// Chunk seqs in the order they reached the store, replays included.
        fn logged_seqs(&self) -> Vec<u64> {
            self.log
                .lock()
                .unwrap()
                .iter()
                .flat_map(|b| b.chunks.iter().map(|c| c.seq))
                .collect()
        }

        fn logged_runs(&self) -> Vec<(RunId, RunStatus)> {
            self.log
                .lock()
                .unwrap()
                .iter()
                .flat_map(|b| b.runs.iter().map(|r| (r.run_id, r.status)))
                .collect()
        }

        async fn seqs(&self, run_id: RunId) -> Vec<u64> {
            self.inner
                .output(run_id, None, 10_000)
                .await
                .unwrap()
                .iter()
                .map(|c| c.seq)
                .collect()
        }
    }

    #[async_trait]
    impl LogStore for TestStore {
        async fn write(&self, batch: &LogBatch) -> Result<(), LogStoreError> {
            if *self.hold.borrow() {
                self.held.fetch_add(1, Ordering::SeqCst);
                self.hold.subscribe().wait_for(|held| !*held).await.ok();
                self.held.fetch_sub(1, Ordering::SeqCst);
            }
            if self.invalid.load(Ordering::SeqCst) {
                return Err(LogStoreError::Invalid("refused".to_owned()));
            }
            if self.failing.load(Ordering::SeqCst) {
                return Err(LogStoreError::Unavailable("switched off".to_owned()));
            }
            // Logged before SQLite sees it, so that once a test observes the
            // data in SQLite, the log already has it too.
            self.log.lock().unwrap().push(batch.clone());
            self.inner.write(batch).await
        }

        async fn runs(&self, query: &RunQuery) -> Result<RunPage, LogStoreError> {
            self.inner.runs(query).await
        }

        async fn run(&self, run_id: RunId) -> Result<Option<RunRecord>, LogStoreError> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(LogStoreError::Unavailable("switched off".to_owned()));
            }
            self.inner.run(run_id).await
        }

        async fn output(
            &self,
            run_id: RunId,
            after: Option<u64>,
            limit: usize,
        ) -> Result<Vec<OutputChunk>, LogStoreError> {
            self.inner.output(run_id, after, limit).await
        }

        async fn last_runs(&self, jobs: &[JobName]) -> Result<BTreeMap<JobName, RunRecord>, LogStoreError> {
            self.inner.last_runs(jobs).await
        }

        async fn purge(&self, before: Timestamp) -> Result<u64, LogStoreError> {
            self.inner.purge(before).await
        }
    }

    /// A 64-byte chunk.
    fn chunk(run_id: RunId, seq: u64) -> OutputChunk {
        let mut data = format!("run output line {seq:>8} ");
        while data.len() < 63 {
            data.push('.');
        }
        data.push('\n');
        // A fixed clock keeps the encoded size of a chunk predictable.
        let at = Timestamp::from_millisecond(1_700_000_000_000 + seq as i64).unwrap();
        OutputChunk {
            expire_at: None,
            run_id,
            seq,
            stream: StreamKind::Stdout,
            at,
            data,
        }
    }

    fn record(status: RunStatus) -> RunRecord {
        sample_record(&JobName::new("sink-test").unwrap(), Timestamp::now(), status, 1)
    }

    /// Short timings so outages play out quickly; nothing flushes by time
    /// unless a test asks for it.
    fn config() -> SinkConfig {
        SinkConfig {
            batch_docs: 10,
            flush_interval: Duration::from_secs(3600),
            channel_capacity: 64,
            spool_path: None,
            spool_max_bytes: 1 << 20,
            retry_initial: Duration::from_millis(2),
            retry_max: Duration::from_millis(10),
            spool_after: Duration::from_millis(20),
        }
    }

    fn start(store: Arc<TestStore>, config: SinkConfig) -> (Sink, tokio::task::JoinHandle<anyhow::Result<()>>) {
        let (sink, task) = Sink::new(store, config);
        (sink, tokio::spawn(task.run()))
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::SeqCst)
    }

    /// Polls `condition` until it holds; fails the test after 20 s.
    async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !condition().await {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test]
    async fn batches_fill_to_batch_docs() {
        let store = TestStore::new();
        let (sink, task) = start(Arc::clone(&store), config());
        let stats = sink.stats();
        let run_id = RunId::generate();
        for seq in 0..25 {
            sink.chunk(chunk(run_id, seq)).await;
        }
        eventually("two full batches are written", async || get(&stats.written) == 20).await;
        assert_eq!(get(&stats.batches), 2);
        assert_eq!(store.seqs(run_id).await, (0..20).collect::<Vec<_>>());
        // The last five wait for a full batch, the interval, or a flush.
        sink.flush().await;
        assert_eq!(get(&stats.written), 25);
        assert_eq!(get(&stats.batches), 3);
        assert!(store.log.lock().unwrap().iter().all(|b| b.len() <= 10));
        drop(sink);
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn record_unless_stored_leaves_a_stored_record_alone_and_writes_an_absent_one() {
        let store = TestStore::new();
        let (sink, task) = start(Arc::clone(&store), config());
        let stored = record(RunStatus::Skipped);
        sink.record(stored.clone()).await;
        sink.flush().await;
        let mut again = stored.clone();
        again.error = Some("written again, less precisely".to_owned());
        assert!(!sink.record_unless_stored(again).await, "already stored");
        let absent = record(RunStatus::Skipped);
        assert!(sink.record_unless_stored(absent.clone()).await);
        sink.flush().await;
        assert_eq!(store.inner.run(stored.run_id).await.unwrap(), Some(stored));
        assert_eq!(store.inner.run(absent.run_id).await.unwrap(), Some(absent));
        // A store that cannot answer the read gets the record anyway.
        store.fail(true);
        let unknown = record(RunStatus::Skipped);
        assert!(sink.record_unless_stored(unknown.clone()).await);
        store.fail(false);
        sink.flush().await;
        assert_eq!(store.inner.run(unknown.run_id).await.unwrap(), Some(unknown));
        drop(sink);
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_batch_is_written_flush_interval_after_its_first_event() {
        let store = TestStore::new();
        let (sink, task) = start(
            Arc::clone(&store),
            SinkConfig {
                batch_docs: 1000,
                flush_interval: Duration::from_millis(20),
                ..config()
            },
        );
        let stats = sink.stats();
        let run = record(RunStatus::Running);
        sink.record(run.clone()).await;
        sink.chunk(chunk(run.run_id, 0)).await;
        sink.chunk(chunk(run.run_id, 1)).await;
        eventually("the interval flushes the batch", async || get(&stats.written) == 3).await;
        assert_eq!(get(&stats.batches), 1, "three events, one batch");
        assert_eq!(store.inner.run(run.run_id).await.unwrap(), Some(run));
        drop(sink);
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn flush_returns_once_everything_before_it_is_stored() {
        let store = TestStore::new();
        let (sink, task) = start(
            Arc::clone(&store),
            SinkConfig {
                batch_docs: 1000,
                ..config()
            },
        );
        // Nothing pending: returns at once.
        sink.flush().await;
        let run = record(RunStatus::Running);
        let other = sink.clone();
        sink.record(run.clone()).await;
        for seq in 0..5 {
            other.chunk(chunk(run.run_id, seq)).await;
        }
        sink.flush().await;
        // No waiting: the barrier already guarantees it.
        assert_eq!(store.inner.run(run.run_id).await.unwrap(), Some(run.clone()));
        assert_eq!(store.seqs(run.run_id).await, vec![0, 1, 2, 3, 4]);
        let mut done = run.clone();
        done.status = RunStatus::Succeeded;
        other.record(done.clone()).await;
        other.flush().await;
        assert_eq!(store.inner.run(run.run_id).await.unwrap(), Some(done));
        drop((sink, other));
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn flushes_waiting_together_share_one_write() {
        let store = TestStore::new();
        let (sink, task) = start(
            Arc::clone(&store),
            SinkConfig {
                batch_docs: 1000,
                channel_capacity: 256,
                ..config()
            },
        );
        let stats = sink.stats();
        // Hold the store so that the first batch stays in flight while the
        // other runs end and ask for their flushes.
        store.hold.send_replace(true);
        sink.record(record(RunStatus::Succeeded)).await;
        let first = tokio::spawn({
            let sink = sink.clone();
            async move { sink.flush().await }
        });
        eventually("the first write is held", async || get(&store.held) == 1).await;
        let asked = Arc::new(AtomicU64::new(0));
        let mut ends = Vec::new();
        for _ in 0..50 {
            let sink = sink.clone();
            let asked = Arc::clone(&asked);
            ends.push(tokio::spawn(async move {
                sink.record(record(RunStatus::Succeeded)).await;
                asked.fetch_add(1, Ordering::SeqCst);
                sink.flush().await;
            }));
        }
        eventually("every run end is taken in", async || {
            get(&asked) == 50 && get(&stats.queued) == 0
        })
        .await;
        store.hold.send_replace(false);
        first.await.unwrap();
        for end in ends {
            end.await.unwrap();
        }
        assert_eq!(get(&stats.written), 51);
        // One write for the held batch and one for the 50 run ends (a third
        // if the last flush slipped in after the release).
        let batches = get(&stats.batches);
        assert!(batches <= 3, "50 flushes made {batches} writes");
        drop(sink);
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn records_and_chunks_reach_the_store_in_the_order_sent() {
        let store = TestStore::new();
        let (sink, task) = start(
            Arc::clone(&store),
            SinkConfig {
                batch_docs: 3,
                ..config()
            },
        );
        let mut sent_runs = Vec::new();
        for n in 0..20u64 {
            let run = record(RunStatus::Running);
            let mut done = run.clone();
            done.status = RunStatus::Succeeded;
            sink.record(run.clone()).await;
            sink.chunk(chunk(run.run_id, 0)).await;
            sink.chunk(chunk(run.run_id, 1)).await;
            sink.record(done.clone()).await;
            sent_runs.extend([(run.run_id, RunStatus::Running), (run.run_id, RunStatus::Succeeded)]);
            if n % 7 == 0 {
                sink.flush().await;
            }
        }
        sink.flush().await;
        assert_eq!(store.logged_runs(), sent_runs);
        for (run_id, _) in sent_runs.iter().step_by(2) {
            let stored = store.inner.run(*run_id).await.unwrap().unwrap();
            assert_eq!(stored.status, RunStatus::Succeeded);
            assert_eq!(store.seqs(*run_id).await, vec![0, 1]);
        }
        drop(sink);
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn an_outage_spools_and_recovery_replays_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let spool_path = dir.path().join("spool").join("sink.jsonl");
        let store = TestStore::new();
        store.fail(true);
        let (sink, task) = start(
            Arc::clone(&store),
            SinkConfig {
                spool_path: Some(spool_path.clone()),
                ..config()
            },
        );
        let stats = sink.stats();
        let run = record(RunStatus::Running);
        let mut done = run.clone();
        done.status = RunStatus::Succeeded;

        sink.record(run.clone()).await;
        for seq in 0..100 {
            sink.chunk(chunk(run.run_id, seq)).await;
        }
        // With the store down, the barrier is "safely spooled".
        sink.flush().await;
        assert!(get(&stats.spooled_bytes) > 0, "batches went to the spool");
        assert!(get(&stats.write_errors) > 0);
        assert!(std::fs::metadata(&spool_path).unwrap().len() > 0);
        assert!(store.seqs(run.run_id).await.is_empty(), "nothing reached the store");

        // Still accepting while down.
        for seq in 100..150 {
            sink.chunk(chunk(run.run_id, seq)).await;
        }
        sink.record(done.clone()).await;
        sink.flush().await;
        assert!(store.seqs(run.run_id).await.is_empty());

        store.fail(false);
        eventually("the spool is replayed", async || get(&stats.spooled_bytes) == 0).await;
        assert_eq!(
            store.seqs(run.run_id).await,
            (0..150).collect::<Vec<_>>(),
            "every chunk exactly once"
        );
        assert_eq!(store.inner.run(run.run_id).await.unwrap(), Some(done));
        // Batches arrived in the order they were sent.
        let mut first_seen = store.logged_seqs();
        let mut seen = std::collections::HashSet::new();
        first_seen.retain(|seq| seen.insert(*seq));
        assert_eq!(first_seen, (0..150).collect::<Vec<_>>());
        assert_eq!(
            store.logged_runs(),
            vec![(run.run_id, RunStatus::Running), (run.run_id, RunStatus::Succeeded)]
        );
        eventually("the spool file is truncated", async || {
            std::fs::metadata(&spool_path).unwrap().len() == 0
        })
        .await;

        // Healthy again: writes go straight to the store.
        let spooled = get(&stats.spooled_batches);
        sink.chunk(chunk(run.run_id, 150)).await;
        sink.flush().await;
        assert_eq!(get(&stats.spooled_batches), spooled);
        assert_eq!(store.seqs(run.run_id).await.len(), 151);
        drop(sink);
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_spool_left_by_an_earlier_process_is_replayed_first() {
        let dir = tempfile::tempdir().unwrap();
        let spool_path = dir.path().join("sink.jsonl");
        let run = record(RunStatus::Running);
        let batches = [
            LogBatch {
                runs: vec![run.clone()],
                chunks: (0..3).map(|s| chunk(run.run_id, s)).collect(),
            },
            LogBatch {
                runs: vec![],
                chunks: (3..6).map(|s| chunk(run.run_id, s)).collect(),
            },
        ];
        let mut text = String::new();
        for batch in &batches {
            text.push_str(&serde_json::to_string(batch).unwrap());
            text.push('\n');
        }
        // A crash in the middle of an append leaves a partial line.
        text.push_str("{\"runs\":[],\"chunks\":[{\"run_id\":");
        std::fs::write(&spool_path, text).unwrap();

        let store = TestStore::new();
        let (sink, task) = start(
            Arc::clone(&store),
            SinkConfig {
                spool_path: Some(spool_path.clone()),
                ..config()
            },
        );
        // Sent after start, so it must land after the spooled batches.
        sink.chunk(chunk(run.run_id, 6)).await;
        sink.flush().await;
        eventually("the old spool is replayed", async || {
            store.seqs(run.run_id).await.len() == 7
        })
        .await;
        assert_eq!(store.logged_seqs(), (0..7).collect::<Vec<_>>());
        assert_eq!(store.inner.run(run.run_id).await.unwrap(), Some(run));
        eventually("the spool file is truncated", async || {
            std::fs::metadata(&spool_path).unwrap().len() == 0
        })
        .await;
        drop(sink);
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_killed_sink_loses_nothing_it_spooled() {
        let dir = tempfile::tempdir().unwrap();
        let spool_path = dir.path().join("sink.jsonl");
        let store = TestStore::new();
        store.fail(true);
        let config = SinkConfig {
            spool_path: Some(spool_path.clone()),
            ..config()
        };
        let (sink, task) = start(Arc::clone(&store), config.clone());
        let run_id = RunId::generate();
        for seq in 0..40 {
            sink.chunk(chunk(run_id, seq)).await;
        }
        sink.flush().await;
        // The closest thing to kill -9 in-process: the task stops mid-outage
        // without any chance to clean up.
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        drop(sink);
        eventually("the old task lets go of the spool", async || {
            File::open(&spool_path).unwrap().try_lock().is_ok()
        })
        .await;

        store.fail(false);
        let (sink, task) = start(Arc::clone(&store), config);
        eventually("the new sink replays the spool", async || {
            store.seqs(run_id).await.len() == 40
        })
        .await;
        assert_eq!(store.seqs(run_id).await, (0..40).collect::<Vec<_>>());
        eventually("the spool file is truncated", async || {
            std::fs::metadata(&spool_path).unwrap().len() == 0
        })
        .await;
        drop(sink);
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn the_task_writes_everything_and_ends_when_every_handle_is_dropped() {
        let store = TestStore::new();
        let (sink, task) = start(
            Arc::clone(&store),
            SinkConfig {
                batch_docs: 1000,
                ..config()
            },
        );
        let run = record(RunStatus::Killed);
        let clone = sink.clone();
        sink.record(run.clone()).await;
        for seq in 0..7 {
            clone.chunk(chunk(run.run_id, seq)).await;
        }
        drop(sink);
        drop(clone);
        task.await.unwrap().unwrap();
        assert_eq!(store.inner.run(run.run_id).await.unwrap(), Some(run.clone()));
        assert_eq!(store.seqs(run.run_id).await, (0..7).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn at_shutdown_a_down_store_leaves_its_batches_in_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let spool_path = dir.path().join("sink.jsonl");
        let store = TestStore::new();
        store.fail(true);
        let (sink, task) = start(
            Arc::clone(&store),
            SinkConfig {
                spool_path: Some(spool_path.clone()),
                ..config()
            },
        );
        let run_id = RunId::generate();
        for seq in 0..15 {
            sink.chunk(chunk(run_id, seq)).await;
        }
        drop(sink);
        task.await.unwrap().unwrap();
        let text = std::fs::read_to_string(&spool_path).unwrap();
        let spooled: Vec<u64> = text
            .lines()
            .flat_map(|line| serde_json::from_str::<LogBatch>(line).unwrap().chunks)
            .map(|c| c.seq)
            .collect();
        assert_eq!(spooled, (0..15).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_full_channel_makes_senders_wait() {
        let store = TestStore::new();
        store.hold.send_replace(true);
        let capacity = 4;
        let (sink, task) = start(
            Arc::clone(&store),
            SinkConfig {
                batch_docs: 1,
                channel_capacity: capacity,
                ..config()
            },
        );
        let stats = sink.stats();
        let run_id = RunId::generate();
        let accepted = Arc::new(AtomicU64::new(0));
        let producer = tokio::spawn({
            let (sink, accepted) = (sink.clone(), Arc::clone(&accepted));
            async move {
                for seq in 0..100 {
                    sink.chunk(chunk(run_id, seq)).await;
                    accepted.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        // One batch held in the store, one sealed behind it, the channel
        // full, and the producer waiting with its next event.
        let bound = capacity as u64 + 2;
        eventually("the pipeline fills up", async || {
            get(&store.held) == 1 && get(&stats.queued) == capacity as u64 + 1 && get(&accepted) == bound
        })
        .await;
        for _ in 0..1000 {
            tokio::task::yield_now().await;
        }
        assert_eq!(get(&accepted), bound, "the producer must wait while everything is full");
        assert!(!producer.is_finished());

        store.hold.send_replace(false);
        producer.await.unwrap();
        sink.flush().await;
        assert_eq!(store.seqs(run_id).await, (0..100).collect::<Vec<_>>());
        assert_eq!(get(&stats.queued), 0);
        drop(sink);
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_full_spool_makes_senders_wait_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let spool_path = dir.path().join("sink.jsonl");
        let store = TestStore::new();
        store.fail(true);
        let run_id = RunId::generate();
        // Batches are exactly ten chunks in order, so the test knows every
        // spool line in advance and how many fit.
        let max = 8 * 1024;
        let line = |n: u64| {
            let batch = LogBatch {
                runs: vec![],
                chunks: (n * 10..n * 10 + 10).map(|seq| chunk(run_id, seq)).collect(),
            };
            serde_json::to_vec(&batch).unwrap().len() as u64 + 1
        };
        let mut fit = 0;
        let mut used = 0;
        while used + line(fit) <= max {
            used += line(fit);
            fit += 1;
        }
        let capacity = 8;
        let (sink, task) = start(
            Arc::clone(&store),
            SinkConfig {
                spool_path: Some(spool_path.clone()),
                spool_max_bytes: max,
                channel_capacity: capacity,
                ..config()
            },
        );
        let stats = sink.stats();
        let accepted = Arc::new(AtomicU64::new(0));
        let producer = tokio::spawn({
            let (sink, accepted) = (sink.clone(), Arc::clone(&accepted));
            async move {
                for seq in 0..200 {
                    sink.chunk(chunk(run_id, seq)).await;
                    accepted.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        // `fit` batches spooled, the next one sealed and waiting for room,
        // the channel full, and the producer waiting with its next event.
        let bound = (fit + 1) * 10 + capacity as u64;
        eventually("the spool fills and the channel backs up", async || {
            get(&stats.spooled_batches) == fit && get(&stats.queued) == capacity as u64 + 1 && get(&accepted) == bound
        })
        .await;
        for _ in 0..1000 {
            tokio::task::yield_now().await;
        }
        assert_eq!(get(&accepted), bound, "the producer waits for spool space");
        assert_eq!(std::fs::metadata(&spool_path).unwrap().len(), used);

        store.fail(false);
        producer.await.unwrap();
        sink.flush().await;
        eventually("everything is replayed", async || store.seqs(run_id).await.len() == 200).await;
        assert_eq!(store.seqs(run_id).await, (0..200).collect::<Vec<_>>());
        drop(sink);
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn without_a_spool_the_sink_retries_until_the_store_returns() {
        let store = TestStore::new();
        store.fail(true);
        let (sink, task) = start(Arc::clone(&store), config());
        let stats = sink.stats();
        let run_id = RunId::generate();
        for seq in 0..5 {
            sink.chunk(chunk(run_id, seq)).await;
        }
        let flushing = tokio::spawn({
            let sink = sink.clone();
            async move { sink.flush().await }
        });
        eventually("several retries fail", async || get(&stats.write_errors) >= 5).await;
        assert!(!flushing.is_finished(), "nothing is durable yet");
        store.fail(false);
        flushing.await.unwrap();
        assert_eq!(store.seqs(run_id).await, vec![0, 1, 2, 3, 4]);
        drop(sink);
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_batch_the_store_refuses_is_dropped_not_retried() {
        let store = TestStore::new();
        store.invalid.store(true, Ordering::SeqCst);
        let (sink, task) = start(Arc::clone(&store), config());
        let stats = sink.stats();
        let run_id = RunId::generate();
        for seq in 0..3 {
            sink.chunk(chunk(run_id, seq)).await;
        }
        sink.flush().await;
        assert_eq!(get(&stats.rejected), 3);
        store.invalid.store(false, Ordering::SeqCst);
        sink.chunk(chunk(run_id, 3)).await;
        sink.flush().await;
        assert_eq!(store.seqs(run_id).await, vec![3]);
        drop(sink);
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_stopped_sink_counts_what_it_drops() {
        let (sink, task) = Sink::new(TestStore::new(), config());
        drop(task);
        sink.chunk(chunk(RunId::generate(), 0)).await;
        sink.flush().await;
        assert_eq!(get(&sink.stats().dropped), 2);
        assert_eq!(get(&sink.stats().queued), 0);
    }

    #[tokio::test]
    async fn a_spool_in_use_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let spool_path = dir.path().join("sink.jsonl");
        let held = File::create(&spool_path).unwrap();
        held.lock().unwrap();
        let store = TestStore::new();
        let (sink, task) = start(
            Arc::clone(&store),
            SinkConfig {
                spool_path: Some(spool_path.clone()),
                ..config()
            },
        );
        // The sink runs without a spool rather than share one.
        let run_id = RunId::generate();
        sink.chunk(chunk(run_id, 0)).await;
        sink.flush().await;
        assert_eq!(store.seqs(run_id).await, vec![0]);
        drop(sink);
        task.await.unwrap().unwrap();
        assert_eq!(std::fs::metadata(&spool_path).unwrap().len(), 0);
    }
}
