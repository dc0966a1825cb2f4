//! Unit tests of the batching sink, against SQLite behind switches that fail,
//! refuse or hold writes, so that outages, spooling, replay and
//! backpressure play out in-process and in milliseconds.

use std::fs::File;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use async_trait::async_trait;
use jiff::Timestamp;
use tokio::sync::watch;
use tokio::time::Instant;

use super::*;
use crate::ids::{JobName, RunId};
use crate::logstore::sqlite::SqliteLogStore;
use crate::logstore::{LogBatch, LogStoreError};
use crate::run::{RunStatus, StreamKind};
use crate::testkit::{Call, Tap, sample_record};

/// SQLite behind switches: fail every write, refuse every write as
/// invalid, hold writes until released, or never return from the next
/// write, or from any read of a run. Logs the batches it passes on to
/// SQLite, in order.
struct TestStore {
    inner: Arc<SqliteLogStore>,
    failing: AtomicBool,
    invalid: AtomicBool,
    hold: watch::Sender<bool>,
    held: AtomicU64,
    hang_next: AtomicBool,
    reads_hang: AtomicBool,
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
            hang_next: AtomicBool::new(false),
            reads_hang: AtomicBool::new(false),
            log: Mutex::new(Vec::new()),
        })
    }

    fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    fn switched_off(&self) -> Result<(), LogStoreError> {
        if self.failing.load(Ordering::SeqCst) {
            Err(LogStoreError::Unavailable("switched off".to_owned()))
        } else {
            Ok(())
        }
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
impl Tap for TestStore {
    fn inner(&self) -> &dyn LogStore {
        &*self.inner
    }

    async fn before(&self, call: Call<'_>) -> Result<(), LogStoreError> {
        match call {
            Call::Write(batch) => {
                if self.hang_next.swap(false, Ordering::SeqCst) {
                    return std::future::pending().await;
                }
                if *self.hold.borrow() {
                    // Counted while it waits, also if the write is dropped.
                    let _held = Held::count(&self.held);
                    self.hold.subscribe().wait_for(|held| !*held).await.ok();
                }
                if self.invalid.load(Ordering::SeqCst) {
                    return Err(LogStoreError::Invalid("refused".to_owned()));
                }
                self.switched_off()?;
                // Logged before SQLite sees it, so that once a test observes
                // the data in SQLite, the log already has it too.
                self.log.lock().unwrap().push(batch.clone());
                Ok(())
            }
            Call::Run => {
                if self.reads_hang.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                self.switched_off()
            }
            _ => Ok(()),
        }
    }
}

/// One write waiting at `TestStore::hold`.
struct Held<'c>(&'c AtomicU64);

impl<'c> Held<'c> {
    fn count(counter: &'c AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
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

/// A producer task that hands `count` chunks of `run_id` to the sink.
fn produce(sink: &Sink, run_id: RunId, count: u64) -> tokio::task::JoinHandle<()> {
    let sink = sink.clone();
    tokio::spawn(async move {
        for seq in 0..count {
            sink.chunk(chunk(run_id, seq)).await;
        }
    })
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
        channel_max_bytes: 64 << 20,
        batch_max_bytes: 8 << 20,
        spool_path: None,
        spool_max_bytes: 1 << 20,
        retry_initial: Duration::from_millis(2),
        retry_max: Duration::from_millis(10),
        spool_after: Duration::from_millis(20),
        // Writes held at `TestStore::hold` wait for the test, not a timeout.
        write_timeout: Duration::from_secs(3600),
        // Long enough that a write on a busy machine is not taken for a
        // store that is behind where a test expects direct writes.
        spool_when_behind: Some(Duration::from_millis(500)),
        shutdown_replay: Duration::from_secs(3600),
    }
}

fn start(store: Arc<TestStore>, config: SinkConfig) -> (Sink, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let (sink, task) = Sink::new(store, config);
    (sink, tokio::spawn(task.run()))
}

/// A sink with a spool in a fresh directory over a store that holds every
/// write until `hold` is released: (the directory, the store, the sink, its
/// task).
fn start_held(
    config: SinkConfig,
) -> (
    tempfile::TempDir,
    Arc<TestStore>,
    Sink,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = TestStore::new();
    store.hold.send_replace(true);
    let (sink, task) = start(
        Arc::clone(&store),
        SinkConfig {
            spool_path: Some(dir.path().join("sink.jsonl")),
            ..config
        },
    );
    (dir, store, sink, task)
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

#[tokio::test(start_paused = true)]
async fn record_unless_stored_writes_the_record_when_the_store_does_not_answer_the_read() {
    let store = TestStore::new();
    let (sink, task) = start(Arc::clone(&store), config());
    store.reads_hang.store(true, Ordering::SeqCst);
    let unknown = record(RunStatus::Lost);
    // Paused time: the read-back's patience runs out without a real wait.
    assert!(sink.record_unless_stored(unknown.clone()).await);
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
async fn at_shutdown_a_slow_store_gets_the_spool_for_shutdown_replay_then_the_next_start_gets_the_rest() {
    let (dir, store, sink, task) = start_held(SinkConfig {
        spool_when_behind: Some(Duration::from_millis(20)),
        shutdown_replay: Duration::from_millis(200),
        ..config()
    });
    let spool_path = dir.path().join("sink.jsonl");
    let stats = sink.stats();
    let run_id = RunId::generate();
    for seq in 0..25 {
        sink.chunk(chunk(run_id, seq)).await;
    }
    eventually("the held store's batches are spooled", async || {
        get(&stats.spooled_behind) > 0
    })
    .await;
    drop(sink);
    // The store never answers: without the bound the sink would wait for
    // it (its writes time out only after an hour here).
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the sink stops once shutdown_replay has passed")
        .unwrap()
        .unwrap();
    assert!(store.seqs(run_id).await.is_empty(), "the held store took nothing");

    // The next start replays the spool into a store that answers.
    store.hold.send_replace(false);
    let (sink, task) = start(
        Arc::clone(&store),
        SinkConfig {
            spool_path: Some(spool_path),
            ..config()
        },
    );
    eventually("the spool is replayed", async || store.seqs(run_id).await.len() == 25).await;
    assert_eq!(store.seqs(run_id).await, (0..25).collect::<Vec<_>>());
    drop(sink);
    task.await.unwrap().unwrap();
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
    // full, and the producer waiting with its next event. Without a spool,
    // nothing takes the batches' place: the store's pace is the runs' pace.
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
    assert!(stats.backpressure(), "a waiting producer is counted");
    assert_eq!(get(&stats.held), 1);

    store.hold.send_replace(false);
    producer.await.unwrap();
    sink.flush().await;
    assert_eq!(store.seqs(run_id).await, (0..100).collect::<Vec<_>>());
    assert_eq!(get(&stats.queued), 0);
    assert!(!stats.backpressure());
    assert!(get(&stats.held_micros) > 0, "the wait is counted once it ends");
    assert_eq!(get(&stats.spooled_batches), 0);
    drop(sink);
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn large_chunks_fill_the_channel_by_bytes_before_its_event_count() {
    let store = TestStore::new();
    store.hold.send_replace(true);
    // Room in the channel for three 4 KiB chunks, though it counts 1000 events.
    let size = 4096;
    let (sink, task) = start(
        Arc::clone(&store),
        SinkConfig {
            batch_docs: 1,
            channel_capacity: 1000,
            channel_max_bytes: 3 * (size + 256) + 100,
            ..config()
        },
    );
    let stats = sink.stats();
    let run_id = RunId::generate();
    let accepted = Arc::new(AtomicU64::new(0));
    let producer = tokio::spawn({
        let (sink, accepted) = (sink.clone(), Arc::clone(&accepted));
        async move {
            for seq in 0..40 {
                let mut big = chunk(run_id, seq);
                big.data = format!("{seq:>8}").repeat(size / 8);
                sink.chunk(big).await;
                accepted.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    // One batch held in the store, one sealed behind it and three in the
    // channel; the producer waits for room with its next chunk.
    eventually("the channel fills up by bytes", async || {
        get(&store.held) == 1 && get(&stats.queued) == 3 && get(&accepted) == 5
    })
    .await;
    for _ in 0..1000 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        get(&accepted),
        5,
        "the producer must wait while the channel's bytes are used"
    );
    assert!(!producer.is_finished());

    store.hold.send_replace(false);
    producer.await.unwrap();
    sink.flush().await;
    assert_eq!(store.seqs(run_id).await, (0..40).collect::<Vec<_>>());
    drop(sink);
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_batch_is_sealed_at_batch_max_bytes() {
    let store = TestStore::new();
    let (sink, task) = start(
        Arc::clone(&store),
        SinkConfig {
            batch_docs: 1000,
            batch_max_bytes: 10_000,
            ..config()
        },
    );
    let run_id = RunId::generate();
    for seq in 0..10 {
        let mut big = chunk(run_id, seq);
        big.data = "x".repeat(4000);
        sink.chunk(big).await;
    }
    sink.flush().await;
    assert_eq!(store.seqs(run_id).await, (0..10).collect::<Vec<_>>());
    let sizes: Vec<usize> = store.log.lock().unwrap().iter().map(|b| b.chunks.len()).collect();
    assert!(
        sizes.iter().all(|&n| n <= 3),
        "no batch holds more than ~10 kB: {sizes:?}"
    );
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

/// A deadline for calls that must return while the store is held: a guard
/// against a hang, not a measure of speed.
const MUST_RETURN: Duration = Duration::from_secs(10);

/// Runs `call`, failing the test if it has not returned within `MUST_RETURN`.
async fn returns<T>(what: &str, call: impl Future<Output = T>) -> T {
    tokio::time::timeout(MUST_RETURN, call)
        .await
        .unwrap_or_else(|_| panic!("{what} did not return while the store was behind"))
}

/// Chunk seqs of `run_id` in the order they reached the store, replays
/// included.
fn logged_seqs_of(store: &TestStore, run_id: RunId) -> Vec<u64> {
    store
        .log
        .lock()
        .unwrap()
        .iter()
        .flat_map(|b| b.chunks.iter().filter(|c| c.run_id == run_id).map(|c| c.seq))
        .collect()
}

#[tokio::test]
async fn a_store_that_falls_behind_never_holds_runs_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = TestStore::new();
    // Writes neither fail nor return: the store is as far behind as can be.
    store.hold.send_replace(true);
    let capacity = 8;
    let (sink, task) = start(
        Arc::clone(&store),
        SinkConfig {
            spool_path: Some(dir.path().join("sink.jsonl")),
            channel_capacity: capacity,
            // The held write is never given up: when it lands, the spool
            // must skip its copy.
            spool_after: Duration::from_secs(3600),
            ..config()
        },
    );
    let stats = sink.stats();
    let runs: Vec<RunRecord> = (0..4).map(|_| record(RunStatus::Running)).collect();
    for run in &runs {
        returns("record", sink.record(run.clone())).await;
    }
    // Far more events than the channel holds.
    for seq in 0..50 {
        for run in &runs {
            returns("chunk", sink.chunk(chunk(run.run_id, seq))).await;
        }
    }
    for run in &runs {
        let mut done = run.clone();
        done.status = RunStatus::Succeeded;
        returns("record", sink.record(done)).await;
    }
    returns("flush", sink.flush()).await;

    assert_eq!(get(&store.held), 1, "the first write is still held");
    assert!(store.log.lock().unwrap().is_empty(), "nothing reached the store yet");
    assert!(get(&stats.spooled_bytes) > 0, "the spool holds the rest");
    assert!(get(&stats.spooled_batches) > 1);
    assert_eq!(
        get(&stats.spooled_behind),
        get(&stats.spooled_batches),
        "spooled because the store was behind, not down"
    );
    assert!(stats.spool_lag() > Duration::ZERO);
    assert!(!stats.backpressure());

    store.hold.send_replace(false);
    eventually("the spool drains", async || get(&stats.spooled_bytes) == 0).await;
    sink.flush().await;
    assert_eq!(stats.spool_lag(), Duration::ZERO);
    for run in &runs {
        assert_eq!(store.seqs(run.run_id).await, (0..50).collect::<Vec<_>>());
        // Exactly once, in order: the held write's batch was not replayed.
        assert_eq!(logged_seqs_of(&store, run.run_id), (0..50).collect::<Vec<_>>());
        let statuses: Vec<RunStatus> = store
            .logged_runs()
            .into_iter()
            .filter(|(id, _)| *id == run.run_id)
            .map(|(_, status)| status)
            .collect();
        assert_eq!(statuses, vec![RunStatus::Running, RunStatus::Succeeded]);
        let stored = store.inner.run(run.run_id).await.unwrap().unwrap();
        assert_eq!(stored.status, RunStatus::Succeeded);
    }
    eventually("the spool file is truncated", async || {
        std::fs::metadata(dir.path().join("sink.jsonl")).unwrap().len() == 0
    })
    .await;
    // Caught up: writes go straight to the store again.
    let spooled = get(&stats.spooled_batches);
    sink.chunk(chunk(runs[0].run_id, 50)).await;
    sink.flush().await;
    assert_eq!(get(&stats.spooled_batches), spooled);
    assert_eq!(store.seqs(runs[0].run_id).await.len(), 51);
    drop(sink);
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_filling_channel_makes_the_sink_spool_however_quick_each_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = TestStore::new();
    store.hold.send_replace(true);
    let capacity = 8;
    let (sink, task) = start(
        Arc::clone(&store),
        SinkConfig {
            spool_path: Some(dir.path().join("sink.jsonl")),
            channel_capacity: capacity,
            // No write is ever slow enough for this: only the channel
            // filling up behind the held write says the store is behind,
            // as with a store that answers each write quickly but takes
            // fewer records a second than the runs make.
            spool_when_behind: Some(Duration::from_secs(3600)),
            spool_after: Duration::from_secs(3600),
            ..config()
        },
    );
    let stats = sink.stats();
    let run_id = RunId::generate();
    for seq in 0..200 {
        returns("chunk", sink.chunk(chunk(run_id, seq))).await;
    }
    returns("flush", sink.flush()).await;
    assert_eq!(get(&store.held), 1, "the first write is still held");
    assert!(get(&stats.spooled_behind) > 0);
    store.hold.send_replace(false);
    eventually("the spool drains", async || get(&stats.spooled_bytes) == 0).await;
    assert_eq!(logged_seqs_of(&store, run_id), (0..200).collect::<Vec<_>>());
    drop(sink);
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_write_that_never_returns_is_given_up_and_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = TestStore::new();
    store.hang_next.store(true, Ordering::SeqCst);
    let (sink, task) = start(
        Arc::clone(&store),
        SinkConfig {
            spool_path: Some(dir.path().join("sink.jsonl")),
            write_timeout: Duration::from_millis(200),
            ..config()
        },
    );
    let stats = sink.stats();
    let run_id = RunId::generate();
    for seq in 0..30 {
        returns("chunk", sink.chunk(chunk(run_id, seq))).await;
    }
    // The first batch's write never returns; the flush waiting on it
    // returns once its batch is in the spool, and the write is tried again
    // once `write_timeout` has passed.
    returns("flush", sink.flush()).await;
    eventually("the spool is replayed", async || {
        store.seqs(run_id).await.len() == 30 && get(&stats.spooled_bytes) == 0
    })
    .await;
    assert!(get(&stats.write_errors) >= 1, "the hung write counts as failed");
    assert_eq!(store.seqs(run_id).await, (0..30).collect::<Vec<_>>());
    // In order. (A write slower than the timeout on a busy machine may have
    // been written twice; the store keeps one of each.)
    let mut first_seen = logged_seqs_of(&store, run_id);
    let mut seen = std::collections::HashSet::new();
    first_seen.retain(|seq| seen.insert(*seq));
    assert_eq!(first_seen, (0..30).collect::<Vec<_>>());
    assert_eq!(stats.spool_lag(), Duration::ZERO);
    drop(sink);
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_spent_spool_budget_holds_runs_back_and_counts_it() {
    let (_dir, store, sink, task) = start_held(SinkConfig {
        // Room for a few ten-chunk batches.
        spool_max_bytes: 8 * 1024,
        channel_capacity: 8,
        ..config()
    });
    let stats = sink.stats();
    let run_id = RunId::generate();
    let producer = produce(&sink, run_id, 300);
    eventually("the spool is full and the producer waits", async || {
        stats.backpressure() && get(&stats.spooled_bytes) > 0
    })
    .await;
    assert!(!producer.is_finished());
    assert!(get(&stats.spooled_bytes) <= 8 * 1024);

    store.hold.send_replace(false);
    returns("the producer", producer).await.unwrap();
    sink.flush().await;
    eventually("the spool drains", async || get(&stats.spooled_bytes) == 0).await;
    assert!(!stats.backpressure());
    assert!(get(&stats.held_micros) > 0);
    assert_eq!(store.seqs(run_id).await, (0..300).collect::<Vec<_>>(), "nothing lost");
    drop(sink);
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn with_spooling_when_behind_off_a_slow_store_holds_runs_back() {
    let (_dir, store, sink, task) = start_held(SinkConfig {
        channel_capacity: 4,
        spool_when_behind: None,
        ..config()
    });
    let stats = sink.stats();
    let run_id = RunId::generate();
    let producer = produce(&sink, run_id, 100);
    eventually("the producer waits for the store", async || {
        get(&store.held) == 1 && stats.backpressure()
    })
    .await;
    assert_eq!(get(&stats.spooled_batches), 0, "a slow store is not spooled for");
    store.hold.send_replace(false);
    producer.await.unwrap();
    sink.flush().await;
    assert_eq!(store.seqs(run_id).await, (0..100).collect::<Vec<_>>());
    drop(sink);
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_replay_merges_small_spooled_batches() {
    let (_dir, store, sink, task) = start_held(SinkConfig {
        spool_after: Duration::from_secs(3600),
        ..config()
    });
    let stats = sink.stats();
    let run_id = RunId::generate();
    // Twenty batches of three chunks, each sealed by its flush: the first
    // is held in the store, the other nineteen go to the spool one by one.
    for n in 0..20 {
        for seq in n * 3..n * 3 + 3 {
            sink.chunk(chunk(run_id, seq)).await;
        }
        returns("flush", sink.flush()).await;
    }
    assert_eq!(get(&stats.spooled_batches), 20, "the held batch is spooled too");
    store.hold.send_replace(false);
    eventually("the spool is replayed", async || get(&stats.spooled_bytes) == 0).await;
    assert_eq!(store.logged_seqs(), (0..60).collect::<Vec<_>>());
    // The held write, then three spooled batches per write (nine chunks; a
    // fourth would pass `batch_docs`), as direct writes would have merged
    // them.
    let writes: Vec<usize> = store.log.lock().unwrap().iter().map(LogBatch::len).collect();
    assert_eq!(writes, vec![3, 9, 9, 9, 9, 9, 9, 3]);
    drop(sink);
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_default_channel_takes_a_ten_thousand_run_burst_while_the_store_is_busy() {
    // Each run of a burst queues its `running` record, its final record
    // and a flush (a chunk stands in for the flush, which would wait for
    // the store). With the store busy on its first batch and nothing
    // spooled, all of it must fit in the channel: a sender waiting for room
    // would hold its run's slot, and the runs behind it would start late.
    let store = TestStore::new();
    store.hold.send_replace(true);
    let (sink, task) = start(
        Arc::clone(&store),
        SinkConfig {
            spool_path: None,
            spool_when_behind: None,
            ..SinkConfig::default()
        },
    );
    let stats = sink.stats();
    let runs = 10_000;
    returns("queueing a 10,000-run burst", async {
        for seq in 0..runs {
            let running = record(RunStatus::Running);
            let ended = RunRecord {
                status: RunStatus::Succeeded,
                ..running.clone()
            };
            sink.record(running.clone()).await;
            sink.chunk(chunk(running.run_id, seq)).await;
            sink.record(ended).await;
        }
    })
    .await;
    assert_eq!(get(&stats.held_micros), 0, "no sender waited for room");
    assert!(store.logged_runs().is_empty(), "the store wrote nothing meanwhile");

    store.hold.send_replace(false);
    sink.flush().await;
    // A batch holding both records of a run keeps the final one.
    let ended: std::collections::HashSet<_> = store
        .logged_runs()
        .into_iter()
        .filter(|(_, status)| *status == RunStatus::Succeeded)
        .collect();
    assert_eq!(ended.len(), runs as usize, "every final record reached the store");
    assert_eq!(get(&stats.spooled_batches), 0);
    drop(sink);
    task.await.unwrap().unwrap();
}
