//! The batching sink: carries run records and output chunks from executors to
//! a `LogStore` in batches, retries a failing store, and spools to a local
//! file while the store stays down or falls behind, so that nothing handed to
//! it is lost and runs do not wait for a slow store.
//!
//! Executors hold a cheap `Sink` handle; one `SinkTask` owns the store, the
//! batch being filled and the spool. Records and chunks travel over one
//! bounded channel so their order is kept, and every bound (the channel's
//! events and bytes, a batch's documents and bytes, the spool's size) turns
//! into backpressure on the executors rather than memory growth or dropped
//! data. In memory the sink holds at most `channel_max_bytes` queued, plus
//! the batch being filled and the one being written, each sealed at
//! `batch_max_bytes` (one larger document goes alone).
//!
//! The task is a small state machine around one write in flight:
//! - healthy: a full batch (or one `flush_interval` old) is written to the
//!   store, retried with backoff; while it is in flight the next batch fills.
//! - behind: a sealed batch waits on the write in flight while the channel is
//!   half full (the store takes batches more slowly than they come), or the
//!   write has taken `spool_when_behind` while a sealed batch or a `flush`
//!   waits on it (a slow or hung write). Its batch (the write goes on) and
//!   every sealed batch are appended to the spool, so the channel is read
//!   again and runs do not wait on the store; if the write lands, the spool
//!   skips its copy.
//! - spooling: a batch whose retries ran past `spool_after` is appended to the
//!   spool, and so is every later batch until the spool is empty again, so
//!   the store still receives batches in order. The spool's head batches are
//!   replayed, merged up to a batch's size, with backoff; once everything is
//!   replayed the file is truncated.
//! - shutdown: once every `Sink` is dropped, what is queued is written or
//!   spooled, and the spool goes on replaying for `shutdown_replay`; what
//!   is left then stays in the file for the next start.
//!
//! Producers wait only when the channel is full. With a spool, the channel
//! fills only if the spool cannot take more: its disk budget
//! (`spool_max_bytes`) is spent, which the pipeline logs, or it cannot be
//! written. `SinkStats` counts producers held back and for how long. Store
//! writes run as tasks of their own, each attempt bounded by
//! `write_timeout`.
//!
//! It never touches a store other than through `LogStore`.
//!
//! The files: the task's state machine (`pipeline.rs`), filling and sealing
//! batches (`batch.rs`), spooling batches and replaying them (`replay.rs`),
//! store writes with retries and backoff (`retry.rs`), and the spool file
//! itself (`spool.rs`). This file holds the handle executors use, its
//! configuration and counters, and the start of the task.

mod batch;
mod pipeline;
mod replay;
mod retry;
mod spool;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument as _;

use self::pipeline::Pipeline;
use self::spool::Spool;
use crate::logstore::LogStore;
use crate::run::{OutputChunk, RunRecord};

/// How the sink batches, retries and spools.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// A batch is written once it holds this many records and chunks.
    pub batch_docs: usize,
    /// … or this long after its first event, whichever comes first.
    pub flush_interval: Duration,
    /// Events the channel holds before `record`/`chunk` wait. Memory is
    /// bounded by `channel_max_bytes`; this bounds the small events, and
    /// must leave room for a burst: every run queues two records and a
    /// flush, so a worker starting 10,000 runs in one second queues 30,000
    /// events before the store has taken a batch.
    pub channel_capacity: usize,
    /// Bytes (of output and records, roughly as stored) the channel holds
    /// before `record`/`chunk` wait.
    pub channel_max_bytes: usize,
    /// A batch is also sealed once it holds this many bytes.
    pub batch_max_bytes: usize,
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
    /// A store write that has not answered after this long counts as failed
    /// (and is retried, or spooled): a write on a connection that died
    /// without a word would otherwise never end, and keep the spool from
    /// draining. Generous, so that a slow write is not cut short.
    pub write_timeout: Duration,
    /// How long the store's write in flight may take while a sealed batch or
    /// a `flush` waits on it before the sink spools instead (when there is a
    /// spool): the store is behind, and runs must not wait for it. A sealed
    /// batch waiting while the channel is half full is spooled at once.
    /// `None`: nothing is spooled for a store that is merely behind.
    pub spool_when_behind: Option<Duration>,
    /// At shutdown, how long the spool goes on being replayed into a store
    /// that takes it (slowly) before the sink stops and leaves the rest for
    /// the next start: a worker told to stop must stop in bounded time
    /// (systemd kills it after 90 s by default), and what is in the spool
    /// is on disk already.
    pub shutdown_replay: Duration,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            batch_docs: 500,
            flush_interval: Duration::from_millis(100),
            // 10,000 held a 10,000-run burst back: the senders waited for
            // room with their slots held (BENCHMARKS.md, Reading, item 3).
            channel_capacity: 100_000,
            channel_max_bytes: 64 << 20,
            batch_max_bytes: 8 << 20,
            spool_path: None,
            spool_max_bytes: 1 << 30,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            spool_after: Duration::from_secs(1),
            write_timeout: Duration::from_secs(30),
            spool_when_behind: Some(Duration::from_millis(250)),
            shutdown_replay: Duration::from_secs(30),
        }
    }
}

/// Counters for `/metrics`, the worker's published status and tests.
/// Gauges: `queued`, `spooled_bytes`, `spool_oldest_micros`, `held`,
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
    /// … of which while the store failed,
    pub spooled_down: AtomicU64,
    /// … and while it worked but was behind.
    pub spooled_behind: AtomicU64,
    /// When the oldest batch still in the spool was appended (Unix
    /// microseconds, roughly: see `Spool`); 0 when the spool is empty. A spool
    /// left by an earlier process counts from when this one opened it.
    pub spool_oldest_micros: AtomicU64,
    /// Producers (`record`, `chunk`, `flush`) waiting for room in the
    /// channel right now: runs held back by the sink.
    pub held: AtomicU64,
    /// Microseconds producers spent waiting for room, summed over producers
    /// and counted as each wait ends.
    pub held_micros: AtomicU64,
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

    /// How far the spool is behind: the age of its oldest batch (zero when
    /// it is empty).
    pub fn spool_lag(&self) -> Duration {
        match self.spool_oldest_micros.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            oldest => Duration::from_micros(unix_micros().saturating_sub(oldest)),
        }
    }

    /// Whether a producer waits for room in the channel now.
    pub fn backpressure(&self) -> bool {
        self.held.load(Ordering::Relaxed) > 0
    }

    fn spool_changed(&self, spool: &Spool) {
        self.spooled_bytes.store(spool.pending_bytes(), Ordering::Relaxed);
        self.spool_oldest_micros
            .store(spool.oldest_micros().unwrap_or(0), Ordering::Relaxed);
    }
}

/// Now, in microseconds since the Unix epoch (0 for a clock before it).
fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
}

/// A producer waiting for room in the channel, counted in `SinkStats::held`
/// while it waits (also if its future is dropped meanwhile).
struct Held<'s> {
    stats: &'s SinkStats,
    since: Instant,
}

impl<'s> Held<'s> {
    fn start(stats: &'s SinkStats) -> Self {
        stats.held.fetch_add(1, Ordering::Relaxed);
        Self {
            stats,
            since: Instant::now(),
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let waited = u64::try_from(self.since.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.stats.held_micros.fetch_add(waited, Ordering::Relaxed);
        self.stats.held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The handle executors write through. Cloning is cheap.
#[derive(Clone)]
pub struct Sink {
    tx: mpsc::Sender<Queued>,
    stats: Arc<SinkStats>,
    /// For reads only: every write goes through the task.
    store: Arc<dyn LogStore>,
    /// The channel's room in bytes (`channel_max_bytes`).
    room: Arc<Semaphore>,
    /// The most one event holds of it (larger events take all of it).
    max_weight: usize,
    pressure: Arc<Pressure>,
}

/// How producers tell the task that the channel is filling up, which it
/// does only while the task does not read it: the store is behind. The task
/// then spools rather than let producers wait (`Pipeline::behind_at`).
pub(super) struct Pressure {
    pub(super) notify: tokio::sync::Notify,
    /// Events queued (`SinkStats::queued`) from which the channel counts as
    /// filling up: half its capacity.
    pub(super) queued: u64,
}

impl Pressure {
    /// Whether the channel is filling up: half full, or a producer already
    /// waits for room (which the channel's bytes can cause first).
    pub(super) fn felt(&self, stats: &SinkStats) -> bool {
        stats.queued.load(Ordering::Relaxed) >= self.queued || stats.held.load(Ordering::Relaxed) > 0
    }
}

/// The task that drains the channel into the store; see `run`.
pub struct SinkTask {
    store: Arc<dyn LogStore>,
    config: SinkConfig,
    stats: Arc<SinkStats>,
    rx: mpsc::Receiver<Queued>,
    pressure: Arc<Pressure>,
}

/// How long `Sink::record_unless_stored` waits for the store to say
/// whether it holds a record.
const READ_BACK_PATIENCE: Duration = Duration::from_secs(2);

impl Sink {
    /// A sink writing into `store`; spawn (or await) the returned task.
    pub fn new(store: Arc<dyn LogStore>, config: SinkConfig) -> (Sink, SinkTask) {
        let config = SinkConfig {
            batch_docs: config.batch_docs.max(1),
            channel_capacity: config.channel_capacity.max(1),
            channel_max_bytes: config.channel_max_bytes.clamp(1, Semaphore::MAX_PERMITS),
            batch_max_bytes: config.batch_max_bytes.max(1),
            retry_initial: config.retry_initial.max(Duration::from_millis(1)),
            retry_max: config.retry_max.max(config.retry_initial).max(Duration::from_millis(1)),
            write_timeout: config.write_timeout.max(Duration::from_millis(1)),
            ..config
        };
        let (tx, rx) = mpsc::channel(config.channel_capacity);
        let stats = Arc::new(SinkStats::default());
        let pressure = Arc::new(Pressure {
            notify: tokio::sync::Notify::new(),
            queued: (config.channel_capacity as u64 / 2).max(1),
        });
        (
            Sink {
                tx,
                stats: Arc::clone(&stats),
                store: Arc::clone(&store),
                room: Arc::new(Semaphore::new(config.channel_max_bytes)),
                max_weight: config.channel_max_bytes,
                pressure: Arc::clone(&pressure),
            },
            SinkTask {
                store,
                config,
                stats,
                rx,
                pressure,
            },
        )
    }

    /// Queues a run record; waits while the channel is full, never drops.
    /// (Boxed at the call, so the future holds a pointer, not the record:
    /// every run task awaits a few of these.)
    pub fn record(&self, run: RunRecord) -> impl Future<Output = ()> + Send + '_ {
        let event = Event::Record(Box::new(run));
        async move {
            self.send(event).await;
        }
    }

    /// Queues `run` unless the store already holds a record with its id;
    /// says whether it queued it. For a record another process may have
    /// written first under the same id: a stored record, maybe more precise,
    /// is left alone. A store that cannot answer, or not within
    /// `READ_BACK_PATIENCE` (a store that is behind must not hold up the
    /// caller, which may be the worker's scheduling loop), gets the record
    /// anyway (its fencing rule keeps one record per id).
    pub async fn record_unless_stored(&self, run: RunRecord) -> bool {
        match tokio::time::timeout(READ_BACK_PATIENCE, self.store.run(run.run_id)).await {
            Ok(Ok(Some(_))) => return false,
            Ok(Ok(None)) => {}
            Ok(Err(err)) => tracing::warn!(run = %run.run_id, %err, "cannot read a run record back; writing it anyway"),
            Err(_) => tracing::warn!(
                run = %run.run_id,
                waited = ?READ_BACK_PATIENCE,
                "the log store did not answer a run record's read-back; writing it anyway"
            ),
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

    /// Queues `event`; false if the task has stopped. The common case —
    /// room for its bytes and a place in the channel — waits for nothing and
    /// keeps the future small; the waits are boxed (`wait_for_room`,
    /// `send_held`).
    async fn send(&self, event: Event) -> bool {
        let weight = event.weight();
        let permits = u32::try_from(weight.min(self.max_weight)).unwrap_or(u32::MAX);
        let sent = match Arc::clone(&self.room).try_acquire_many_owned(permits) {
            Ok(room) => match self.try_enqueue(Queued {
                event,
                weight,
                _room: Some(room),
            }) {
                Ok(sent) => sent,
                Err(full) => Box::pin(self.send_held(None, full)).await,
            },
            Err(_) => Box::pin(self.wait_for_room(event, weight, permits)).await,
        };
        if sent {
            return true;
        }
        self.stats.queued.fetch_sub(1, Ordering::Relaxed);
        if self.stats.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::error!("the log sink has stopped; run records and output are no longer recorded");
        }
        false
    }

    /// Counts `queued` in (before the send, so the task's decrement never
    /// runs first) and puts it in the channel if there is a place: whether
    /// it went in (false: the task has stopped), or, the channel being
    /// full, the event back.
    fn try_enqueue(&self, queued: Queued) -> Result<bool, Box<Queued>> {
        if self.stats.queued.fetch_add(1, Ordering::Relaxed) + 1 >= self.pressure.queued {
            self.pressure.notify.notify_one();
        }
        match self.tx.try_send(queued) {
            Ok(()) => Ok(true),
            Err(mpsc::error::TrySendError::Full(queued)) => Err(Box::new(queued)),
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(false),
        }
    }

    /// No room for the event's bytes: a flood of large chunks waits here,
    /// not in memory (the semaphore is never closed), then for a place in
    /// the channel. Either wait is the sink holding its producer back, and
    /// counted as such.
    async fn wait_for_room(&self, event: Event, weight: usize, permits: u32) -> bool {
        let held = Held::start(&self.stats);
        self.pressure.notify.notify_one();
        let room = Arc::clone(&self.room).acquire_many_owned(permits).await.ok();
        match self.try_enqueue(Queued {
            event,
            weight,
            _room: room,
        }) {
            Ok(sent) => sent,
            Err(full) => self.send_held(Some(held), full).await,
        }
    }

    /// The channel is full: waits for a place, counted as held.
    async fn send_held(&self, held: Option<Held<'_>>, queued: Box<Queued>) -> bool {
        let _held = held.unwrap_or_else(|| Held::start(&self.stats));
        self.pressure.notify.notify_one();
        self.tx.send(*queued).await.is_ok()
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
            pressure,
        } = self;
        let spool = match &config.spool_path {
            Some(path) => match Spool::open(path.clone(), config.spool_max_bytes).await {
                Ok(spool) => {
                    if !spool.is_empty() {
                        let bytes = spool.pending_bytes();
                        tracing::info!(path = %path.display(), bytes, "replaying the log spool");
                    }
                    stats.spool_changed(&spool);
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
        Pipeline::new(store, config, stats, rx, spool, pressure)
            .run()
            .instrument(tracing::info_span!("log_sink"))
            .await
    }
}

enum Event {
    /// Boxed so that the channel's slots are sized for chunks, the common
    /// event, rather than for the much larger record.
    Record(Box<RunRecord>),
    Chunk(OutputChunk),
    Flush(oneshot::Sender<()>),
}

impl Event {
    /// About the bytes the event takes, in memory and stored.
    fn weight(&self) -> usize {
        const OVERHEAD: usize = 256;
        match self {
            Event::Record(run) => {
                OVERHEAD * 4
                    + run.error.as_ref().map_or(0, String::len)
                    + run.result.as_ref().map_or(0, |value| value.to_string().len())
                    + run.egress.as_ref().map_or(0, |ledger| ledger.entries.len() * OVERHEAD)
            }
            Event::Chunk(chunk) => OVERHEAD + chunk.data.len(),
            Event::Flush(_) => 0,
        }
    }
}

/// An event in the channel with the room it holds, given back when the
/// task takes it into a batch.
struct Queued {
    event: Event,
    /// `event.weight()`, computed once.
    weight: usize,
    _room: Option<OwnedSemaphorePermit>,
}
