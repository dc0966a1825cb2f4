//! Unit tests of the MongoDB log store: the document mapping and the
//! fencing filter checked by hand, everything else against a real nx-27017
//! per test (started by the `sandcron-tests` harness on its own port and
//! data directory), so tests run in parallel, in one process or one each.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use jiff::SignedDuration;
use sandcron_tests::mongo::MongoServer;

use super::writes::supersedable;
use super::*;
use crate::logstore::store::MAX_OUTPUT_LIMIT;
use crate::logstore::{Sink, SinkConfig};
use crate::run::StreamKind;
use crate::testkit::{logstore_suite, sample_record};

fn config(server: &MongoServer) -> MongoConfig {
    MongoConfig {
        uri: server.uri(),
        connect_timeout: Duration::from_secs(2),
        server_selection_timeout: Duration::from_secs(2),
        ..MongoConfig::default()
    }
}

async fn connect(server: &MongoServer) -> Arc<MongoLogStore> {
    MongoLogStore::connect(&config(server)).await.unwrap()
}

/// Blocking harness calls (process start and stop) off the async threads.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}

fn job(name: &str) -> JobName {
    JobName::new(name).unwrap()
}

fn chunk(run_id: RunId, seq: u64) -> OutputChunk {
    OutputChunk {
        expire_at: None,
        run_id,
        seq,
        stream: if seq % 5 == 4 {
            StreamKind::Stderr
        } else {
            StreamKind::Stdout
        },
        at: Timestamp::from_millisecond(1_700_000_000_000 + seq as i64).unwrap(),
        data: format!("line {seq}\n"),
    }
}

async fn seqs(store: &dyn LogStore, run_id: RunId) -> Vec<u64> {
    store
        .output(run_id, None, MAX_OUTPUT_LIMIT)
        .await
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect()
}

/// Polls `condition` until it holds; fails the test after `timeout`.
async fn eventually(what: &str, timeout: Duration, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite() {
    let server = blocking(MongoServer::start);
    logstore_suite::run_all(connect(&server).await, "mongo").await;
    // A second client finds the collections and indexes in place, and a
    // second pass in the same database shows the checks keep apart.
    logstore_suite::run_all(connect(&server).await, "again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_have_the_documented_shape() {
    let server = blocking(MongoServer::start);
    let store = connect(&server).await;
    let mut record = sample_record(
        &job("shape"),
        Timestamp::new(1_700_000_000, 123_456_789).unwrap(),
        RunStatus::Succeeded,
        7,
    );
    record.expire_at = Some(Timestamp::from_millisecond(4_102_444_800_000).unwrap());
    record.fuel_used = Some(u64::MAX);
    let mut stored_chunk = chunk(record.run_id, 3);
    stored_chunk.expire_at = record.expire_at;
    store
        .write(&LogBatch {
            runs: vec![record.clone()],
            chunks: vec![stored_chunk],
        })
        .await
        .unwrap();

    let raw = store.runs.clone_with_type::<Document>();
    let run = raw.find_one(doc! {}).await.unwrap().unwrap();
    let id = record.run_id.to_string();
    assert_eq!(run.get_str("_id").unwrap(), id);
    assert_eq!(run.get_str("run_id").unwrap(), id);
    assert_eq!(run.get_str("job").unwrap(), "shape");
    assert_eq!(run.get_str("status").unwrap(), "succeeded");
    assert_eq!(run.get_str("trigger").unwrap(), "schedule");
    // Dates are BSON dates at millisecond precision, their query keys
    // integers (of whatever width the server answers).
    assert_eq!(run.get_datetime("tick").unwrap().timestamp_millis(), 1_700_000_000_123);
    assert_eq!(bson_int(&run, "tick_ms"), 1_700_000_000_123);
    assert_eq!(
        run.get_datetime("expire_at").unwrap().timestamp_millis(),
        4_102_444_800_000
    );
    assert_eq!(bson_int(&run, "expire_ms"), 4_102_444_800_000);
    assert_eq!(bson_int(&run, "fence"), 7);
    assert_eq!(bson_int(&run, "fuel_used"), i64::MAX, "u64 beyond i64 saturates");
    let result: serde_json::Value = serde_json::from_str(run.get_str("result").unwrap()).unwrap();
    assert_eq!(Some(result), record.result);
    assert!(
        !run.contains_key("missed_count"),
        "absent options are left out, not null"
    );

    let output = store.output.clone_with_type::<Document>();
    let stored = output.find_one(doc! {}).await.unwrap().unwrap();
    assert_eq!(stored.get_str("_id").unwrap(), format!("{id}:3"));
    assert_eq!(stored.get_str("run_id").unwrap(), id);
    assert_eq!(bson_int(&stored, "seq"), 3);
    assert_eq!(stored.get_str("stream").unwrap(), "stdout");
    assert_eq!(stored.get_datetime("at").unwrap().timestamp_millis(), 1_700_000_000_003);
    assert!(stored.get_datetime("expire_at").is_ok());

    // The indexes, by their keys (names are the server's business).
    let keys = |indexes: Vec<IndexModel>| -> BTreeSet<(Vec<String>, bool)> {
        indexes
            .into_iter()
            .map(|index| {
                let ttl = index.options.and_then(|o| o.expire_after).is_some();
                (index.keys.keys().cloned().collect(), ttl)
            })
            .collect()
    };
    let owned = |fields: &[&str], ttl: bool| (fields.iter().map(|f| (*f).to_owned()).collect(), ttl);
    let runs = keys(store.runs.list_indexes().await.unwrap().try_collect().await.unwrap());
    for want in [
        owned(&["job", "tick_ms", "run_id"], false),
        owned(&["status", "tick_ms", "run_id"], false),
        owned(&["worker", "tick_ms", "run_id"], false),
        owned(&["trigger", "tick_ms", "run_id"], false),
        owned(&["tick_ms", "run_id"], false),
        owned(&["expire_ms"], false),
        owned(&["expire_at"], true),
    ] {
        assert!(runs.contains(&want), "runs lacks index {want:?}: {runs:?}");
    }
    let chunks = keys(store.output.list_indexes().await.unwrap().try_collect().await.unwrap());
    for want in [owned(&["run_id", "seq"], false), owned(&["expire_at"], true)] {
        assert!(chunks.contains(&want), "output lacks index {want:?}: {chunks:?}");
    }
}

fn bson_int(doc: &Document, key: &str) -> i64 {
    match doc.get(key) {
        Some(Bson::Int32(n)) => (*n).into(),
        Some(Bson::Int64(n)) => *n,
        other => panic!("{key} is {other:?}, not an integer"),
    }
}

#[test]
fn integers_are_read_whatever_their_width() {
    let record = sample_record(&job("lenient"), Timestamp::UNIX_EPOCH, RunStatus::Failed, 3);
    let mut stored = mongodb::bson::serialize_to_document(&RunDoc::new(&record)).unwrap();
    // As nx-27017 answers: small integers as Int32; and as a JSON-minded
    // server might: integral doubles.
    stored.insert("fence", Bson::Int32(3));
    stored.insert("attempt", Bson::Double(1.0));
    stored.insert("tick_ms", Bson::Int32(0));
    stored.insert("exit_code", Bson::Int64(0));
    stored.insert("output_bytes", Bson::Int32(0));
    stored.insert("missed_count", Bson::Null);
    let doc: RunDoc = mongodb::bson::deserialize_from_document(stored.clone()).unwrap();
    assert_eq!(doc.into_record().unwrap(), record);

    stored.insert("attempt", Bson::Double(1.5));
    assert!(mongodb::bson::deserialize_from_document::<RunDoc>(stored).is_err());
}

#[test]
fn the_replace_filter_is_the_fencing_rule() {
    // Each filter, evaluated by hand against a stored (fence, status),
    // agrees with `supersedes` for every combination.
    let matches = |filter: &Document, fence: i64, status: RunStatus| -> bool {
        let fence_ok = |cond: &Document| match cond.get_document("fence") {
            Ok(ops) => {
                let (op, value) = ops.iter().next().unwrap();
                let value = value.as_i64().unwrap();
                match op.as_str() {
                    "$lt" => fence < value,
                    "$lte" => fence <= value,
                    other => panic!("unexpected operator {other}"),
                }
            }
            Err(_) => cond.get_i64("fence").unwrap() == fence,
        };
        let status_ok = |cond: &Document| cond.get_str("status").ok().is_none_or(|s| s == status.as_str());
        match filter.get_array("$and") {
            Ok(parts) => {
                let id = parts[0].as_document().unwrap();
                assert_eq!(id.keys().collect::<Vec<_>>(), ["_id"]);
                let branches = parts[1].as_document().unwrap().get_array("$or").unwrap();
                branches.iter().any(|branch| {
                    let branch = branch.as_document().unwrap();
                    fence_ok(branch) && status_ok(branch)
                })
            }
            Err(_) => {
                assert!(filter.get_str("_id").is_ok());
                fence_ok(filter)
            }
        }
    };
    for new_status in RunStatus::ALL {
        for stored_status in RunStatus::ALL {
            for stored_fence in [4, 5, 6] {
                let new = sample_record(&job("rule"), Timestamp::UNIX_EPOCH, new_status, 5);
                let mut stored = new.clone();
                stored.fence = stored_fence;
                stored.status = stored_status;
                assert_eq!(
                    matches(&supersedable(&new), stored_fence, stored_status),
                    crate::logstore::supersedes(&new, &stored),
                    "new {new_status} at 5 over stored {stored_status} at {stored_fence}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fencing_rule_holds_under_a_real_race() {
    let server = blocking(MongoServer::start);
    // Separate clients, so that writes really are concurrent requests.
    let stores: Vec<Arc<MongoLogStore>> = vec![connect(&server).await, connect(&server).await];
    let terminal = [
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Killed,
        RunStatus::TimedOut,
    ];
    for round in 0..25u64 {
        let base = sample_record(&job("race"), Timestamp::now(), RunStatus::Running, 0);
        let record = |fence: i64, status: RunStatus| {
            let mut r = base.clone();
            r.fence = fence;
            r.status = status;
            r.worker = format!("owner-{fence}");
            r
        };
        // Four owners of one run, each fenced out by the next: every one
        // writes `running` then its outcome, all at once. Odd rounds let
        // the fenced-out owners report only their outcome, so that a
        // terminal record races a newer `running` one.
        let writers: Vec<_> = (1..=4i64)
            .map(|fence| {
                let store = Arc::clone(&stores[fence as usize % 2]);
                let mut records = vec![
                    record(fence, RunStatus::Running),
                    record(fence, terminal[fence as usize - 1]),
                ];
                if round % 2 == 1 && fence < 4 {
                    records.remove(0);
                }
                tokio::spawn(async move {
                    for r in records {
                        store
                            .write(&LogBatch {
                                runs: vec![r],
                                chunks: vec![],
                            })
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        let stored = stores[0].run(base.run_id).await.unwrap().unwrap();
        assert_eq!(
            (stored.fence, stored.status, stored.worker.as_str()),
            (4, RunStatus::TimedOut, "owner-4"),
            "round {round}: the newest owner's outcome stands"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_spooled_and_replayed_without_loss() {
    let mut server = blocking(MongoServer::start);
    let store = MongoLogStore::connect(&MongoConfig {
        // Short, so that a write to the stopped server fails quickly.
        server_selection_timeout: Duration::from_millis(500),
        ..config(&server)
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let capacity = 2_000;
    let (sink, task) = Sink::new(
        store.clone(),
        SinkConfig {
            batch_docs: 100,
            flush_interval: Duration::from_millis(20),
            channel_capacity: capacity,
            spool_path: Some(dir.path().join("spool").join("sink.jsonl")),
            retry_initial: Duration::from_millis(20),
            retry_max: Duration::from_millis(200),
            spool_after: Duration::from_millis(300),
            ..SinkConfig::default()
        },
    );
    let task = tokio::spawn(task.run());
    let stats = sink.stats();

    // The producer: runs one after another, each `running`, 500 chunks,
    // then its outcome. It pauses a little every 50 events (the pace of
    // a busy worker) until `burst` is set, then sends as fast as the
    // sink takes them, `quota` events in all.
    let down = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let sent_while_down = Arc::new(AtomicU64::new(0));
    let burst = Arc::new(AtomicBool::new(false));
    let outcomes = [
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Killed,
        RunStatus::TimedOut,
    ];
    let quota: u64 = 24_000;
    let producer = tokio::spawn({
        let (sink, down, sent, sent_while_down, burst) = (
            sink.clone(),
            Arc::clone(&down),
            Arc::clone(&sent),
            Arc::clone(&sent_while_down),
            Arc::clone(&burst),
        );
        async move {
            let mut runs = Vec::new();
            let count = |sent: &AtomicU64| {
                sent.fetch_add(1, Ordering::SeqCst);
                if down.load(Ordering::SeqCst) {
                    sent_while_down.fetch_add(1, Ordering::SeqCst);
                }
            };
            let mut n = 0u64;
            while sent.load(Ordering::SeqCst) < quota {
                let mut run = sample_record(&job("outage"), Timestamp::now(), RunStatus::Running, 1);
                sink.record(run.clone()).await;
                count(&sent);
                for seq in 0..500 {
                    sink.chunk(chunk(run.run_id, seq)).await;
                    count(&sent);
                    if seq % 50 == 0 && !burst.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                run.status = outcomes[n as usize % outcomes.len()];
                sink.record(run.clone()).await;
                count(&sent);
                runs.push(run);
                n += 1;
            }
            runs
        }
    });

    // Stop the server while runs are being written.
    eventually("events reach the store", Duration::from_secs(60), async || {
        stats.written.load(Ordering::SeqCst) >= 1_000
    })
    .await;
    blocking(|| server.stop());
    down.store(true, Ordering::SeqCst);
    let stopped = sent.load(Ordering::SeqCst);
    burst.store(true, Ordering::SeqCst);
    // While it is down, the producer sends everything it has — several
    // times what the channel holds, so the spool must take it — and
    // finishes without waiting for the server, which stays down until
    // then (a sink that made senders wait for the store would hang here).
    let runs = tokio::time::timeout(Duration::from_secs(120), producer)
        .await
        .expect("the producer is not held up while the server is down")
        .unwrap();
    let during = sent_while_down.load(Ordering::SeqCst);
    assert!(
        during > 5 * capacity as u64,
        "{during} events sent during the outage (stopped at {stopped})"
    );
    sink.flush().await;
    assert!(
        stats.spooled_batches.load(Ordering::SeqCst) > 0,
        "batches went to the spool"
    );
    assert!(stats.spooled_bytes.load(Ordering::SeqCst) > 0);
    assert!(stats.write_errors.load(Ordering::SeqCst) > 0);
    // Keep it down a while: retries keep failing and nothing is lost.
    tokio::time::sleep(Duration::from_secs(2)).await;

    blocking(|| server.start_again());
    eventually("the spool is replayed", Duration::from_secs(120), async || {
        stats.spooled_bytes.load(Ordering::SeqCst) == 0
    })
    .await;
    sink.flush().await;
    for run in &runs {
        assert_eq!(
            seqs(&*store, run.run_id).await,
            (0..500).collect::<Vec<_>>(),
            "every chunk of {} once, in order",
            run.run_id
        );
        let stored = store.run(run.run_id).await.unwrap().unwrap();
        assert_eq!(stored.status, run.status, "{} ends in its true status", run.run_id);
    }
    assert_eq!(stats.rejected.load(Ordering::SeqCst), 0);
    drop(sink);
    task.await.unwrap().unwrap();
}

/// Set in the child process of `a_killed_process_leaves_a_spool_the_next_sink_replays`.
const CHILD_ENV: &str = "SANDCRON_TEST_SPOOL_CHILD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_leaves_a_spool_the_next_sink_replays() {
    if let Ok(control) = std::env::var(CHILD_ENV) {
        return spooling_child(Path::new(&control)).await;
    }
    let mut server = blocking(MongoServer::start);
    let control = tempfile::tempdir().unwrap();
    let spool = control.path().join("sink.jsonl");
    let run_id = RunId::generate();
    std::fs::write(control.path().join("uri"), server.uri()).unwrap();
    std::fs::write(control.path().join("run"), run_id.to_string()).unwrap();

    // The child: this very test, run again in its own process.
    let name = format!(
        "{}::a_killed_process_leaves_a_spool_the_next_sink_replays",
        module_path!().split_once("::").unwrap().1
    );
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name.as_str(), "--exact", "--nocapture"])
        .env(CHILD_ENV, control.path())
        .stdout(std::fs::File::create(control.path().join("child.log")).unwrap())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let wait_for = async |marker: &str| {
        let path = control.path().join(marker);
        eventually(
            &format!("the child writes {marker}"),
            Duration::from_secs(120),
            async || path.exists(),
        )
        .await;
    };

    wait_for("connected").await;
    blocking(|| server.stop());
    std::fs::write(control.path().join("go"), "").unwrap();
    wait_for("spooled").await;
    // kill -9, with the spool full.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(std::fs::metadata(&spool).unwrap().len() > 0, "the child left a spool");

    blocking(|| server.start_again());
    let store = connect(&server).await;
    assert!(
        store.run(run_id).await.unwrap().is_none(),
        "nothing reached the store before"
    );
    let (sink, task) = Sink::new(
        store.clone(),
        SinkConfig {
            spool_path: Some(spool.clone()),
            ..SinkConfig::default()
        },
    );
    let task = tokio::spawn(task.run());
    eventually("the new sink replays the spool", Duration::from_secs(60), async || {
        seqs(&*store, run_id).await.len() == 200
    })
    .await;
    assert_eq!(seqs(&*store, run_id).await, (0..200).collect::<Vec<_>>());
    let stored = store.run(run_id).await.unwrap().unwrap();
    assert_eq!(stored.status, RunStatus::Failed);
    eventually("the spool is truncated", Duration::from_secs(60), async || {
        std::fs::metadata(&spool).unwrap().len() == 0
    })
    .await;
    drop(sink);
    task.await.unwrap().unwrap();
}

/// The child's side: connect, wait for the server to go away, spool a run
/// and its output, say so, and wait to be killed.
async fn spooling_child(control: &Path) {
    let read = |name: &str| std::fs::read_to_string(control.join(name)).unwrap();
    let store = MongoLogStore::connect(&MongoConfig {
        uri: read("uri"),
        server_selection_timeout: Duration::from_millis(300),
        ..MongoConfig::default()
    })
    .await
    .unwrap();
    let run_id: RunId = read("run").parse().unwrap();
    std::fs::write(control.join("connected"), "").unwrap();
    let go = control.join("go");
    eventually("the parent says go", Duration::from_secs(120), async || go.exists()).await;

    let (sink, task) = Sink::new(
        store,
        SinkConfig {
            batch_docs: 50,
            spool_path: Some(control.join("sink.jsonl")),
            retry_initial: Duration::from_millis(10),
            retry_max: Duration::from_millis(100),
            spool_after: Duration::from_millis(100),
            ..SinkConfig::default()
        },
    );
    let _task = tokio::spawn(task.run());
    let mut run = sample_record(&job("killed"), Timestamp::now(), RunStatus::Running, 1);
    run.run_id = run_id;
    sink.record(run.clone()).await;
    for seq in 0..200 {
        sink.chunk(chunk(run_id, seq)).await;
    }
    run.status = RunStatus::Failed;
    sink.record(run).await;
    // With the store down, this returns once everything is in the spool.
    sink.flush().await;
    std::fs::write(control.join("spooled"), "").unwrap();
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_documents_are_removed() {
    let server = blocking(MongoServer::start);
    let store = connect(&server).await;
    let now = Timestamp::now();
    let with = |expire_at: Option<Timestamp>, status: RunStatus| {
        // Ticks ahead of `now`, so that only `expire_at` decides at first.
        let mut r = sample_record(&job("ttl"), now + SignedDuration::from_hours(1), status, 1);
        r.expire_at = expire_at;
        r
    };
    let expired = with(Some(now - SignedDuration::from_secs(1)), RunStatus::Succeeded);
    let expired_running = with(Some(now - SignedDuration::from_secs(1)), RunStatus::Running);
    let unexpired = with(Some(now + SignedDuration::from_hours(24)), RunStatus::Succeeded);
    let never = with(None, RunStatus::Succeeded);
    let all = [&expired, &expired_running, &unexpired, &never];
    let chunks = all
        .iter()
        .flat_map(|r| {
            (0..3).map(|seq| OutputChunk {
                expire_at: r.expire_at,
                ..chunk(r.run_id, seq)
            })
        })
        .collect();
    store
        .write(&LogBatch {
            runs: all.iter().map(|r| (*r).clone()).collect(),
            chunks,
        })
        .await
        .unwrap();

    // Runs and chunks past their `expire_at` go: `purge` deletes the
    // finished ones and the TTL indexes everything expired, including a
    // run still marked running (nx-27017 applies TTL on each read, a
    // real MongoDB within a minute).
    let deleted = store.purge(now).await.unwrap();
    assert!(deleted <= 1, "purge deleted {deleted}");
    for gone in [&expired, &expired_running] {
        eventually(
            "expired runs and output are gone",
            Duration::from_secs(120),
            async || store.run(gone.run_id).await.unwrap().is_none() && seqs(&*store, gone.run_id).await.is_empty(),
        )
        .await;
    }
    for kept in [&unexpired, &never] {
        assert!(
            store.run(kept.run_id).await.unwrap().is_some(),
            "{} is kept",
            kept.run_id
        );
        assert_eq!(seqs(&*store, kept.run_id).await, vec![0, 1, 2]);
    }
    // `never` has no expiry: only `purge` removes it, by its tick.
    assert_eq!(store.purge(now + SignedDuration::from_hours(2)).await.unwrap(), 1);
    assert!(store.run(never.run_id).await.unwrap().is_none());
    assert!(store.run(unexpired.run_id).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_is_unavailable_until_it_returns() {
    // Nothing listens: connecting fails as unavailable, not as an error.
    let nobody = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let refused = MongoLogStore::connect(&MongoConfig {
        uri: format!("mongodb://127.0.0.1:{nobody}/?directConnection=true"),
        server_selection_timeout: Duration::from_millis(300),
        ..MongoConfig::default()
    })
    .await;
    assert!(matches!(refused, Err(LogStoreError::Unavailable(_))), "{refused:?}");
    let garbage = MongoLogStore::connect(&MongoConfig {
        uri: "mongo://nowhere".to_owned(),
        ..MongoConfig::default()
    })
    .await;
    assert!(matches!(garbage, Err(LogStoreError::Invalid(_))), "{garbage:?}");

    let mut server = blocking(MongoServer::start);
    let store = MongoLogStore::connect(&MongoConfig {
        server_selection_timeout: Duration::from_millis(300),
        ..config(&server)
    })
    .await
    .unwrap();
    let record = sample_record(&job("down"), Timestamp::now(), RunStatus::Succeeded, 1);
    let batch = LogBatch {
        runs: vec![record.clone()],
        chunks: vec![chunk(record.run_id, 0)],
    };
    blocking(|| server.stop());
    // The first request may still find a pooled connection and fail on
    // it; every one fails as unavailable.
    for _ in 0..2 {
        let write = store.write(&batch).await;
        assert!(matches!(write, Err(LogStoreError::Unavailable(_))), "{write:?}");
        let read = store.runs(&RunQuery::default()).await;
        assert!(matches!(read, Err(LogStoreError::Unavailable(_))), "{read:?}");
    }
    blocking(|| server.start_again());
    eventually("the store works again", Duration::from_secs(30), async || {
        store.write(&batch).await.is_ok()
    })
    .await;
    assert_eq!(store.run(record.run_id).await.unwrap(), Some(at_millis(&record)));
}

/// The record as stored: instants at whole milliseconds.
fn at_millis(record: &RunRecord) -> RunRecord {
    let ms = |t: Timestamp| Timestamp::from_millisecond(t.as_millisecond()).unwrap();
    let mut r = record.clone();
    r.tick = ms(r.tick);
    r.started_at = r.started_at.map(ms);
    r.ended_at = r.ended_at.map(ms);
    r.missed_until = r.missed_until.map(ms);
    r.result_due = r.result_due.map(ms);
    r.expire_at = r.expire_at.map(ms);
    r
}
