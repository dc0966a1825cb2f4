//! Unit tests of the SQLite log store: the conformance suite in memory and
//! on disk, plus what only this store promises (full timestamp precision,
//! schema upgrades in place, queries that walk indexes, reads that do not
//! wait for the writer).

use super::schema::MIGRATIONS;
use super::*;
use crate::logstore::store::encode_cursor;
use crate::testkit::{logstore_suite, sample_record};

#[tokio::test]
async fn in_memory_store_passes_the_conformance_suite() {
    let store = SqliteLogStore::in_memory().unwrap();
    logstore_suite::run_all(store, "mem").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteLogStore::open(&dir.path().join("logs.db")).unwrap();
    logstore_suite::run_all(store.clone(), "file").await;
    // A second pass in the same database shows the checks keep apart.
    logstore_suite::run_all(store, "again").await;
}

#[tokio::test]
async fn reopening_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs.db");
    let record = sample_record(
        &JobName::new("reopen").unwrap(),
        Timestamp::UNIX_EPOCH,
        RunStatus::Succeeded,
        3,
    );
    let chunk = OutputChunk {
        expire_at: None,
        run_id: record.run_id,
        seq: 0,
        stream: StreamKind::Stderr,
        at: Timestamp::from_microsecond(1_700_000_000_123_456).unwrap(),
        data: "kept\n".to_owned(),
    };
    {
        let store = SqliteLogStore::open(&path).unwrap();
        store
            .write(&LogBatch {
                runs: vec![record.clone()],
                chunks: vec![chunk.clone()],
            })
            .await
            .unwrap();
    }
    let store = SqliteLogStore::open(&path).unwrap();
    assert_eq!(store.run(record.run_id).await.unwrap(), Some(record.clone()));
    assert_eq!(store.output(record.run_id, None, 10).await.unwrap(), vec![chunk]);
    let version: i64 = store
        .writer
        .run(|conn| Ok(conn.query_row("SELECT version FROM schema_version", [], |row| row.get(0))?))
        .await
        .unwrap();
    assert_eq!(version, MIGRATIONS.len() as i64);
}

#[tokio::test]
async fn sqlite_keeps_full_timestamp_precision() {
    // Stricter than the conformance suite (which allows MongoDB's
    // milliseconds): the record is stored as JSON, so nanoseconds survive.
    let store = SqliteLogStore::in_memory().unwrap();
    let mut record = sample_record(
        &JobName::new("precise").unwrap(),
        Timestamp::new(1_700_000_000, 123_456_789).unwrap(),
        RunStatus::Running,
        1,
    );
    record.started_at = Some(Timestamp::new(1_700_000_001, 1).unwrap());
    store
        .write(&LogBatch {
            runs: vec![record.clone()],
            chunks: vec![],
        })
        .await
        .unwrap();
    assert_eq!(store.run(record.run_id).await.unwrap(), Some(record));
}

#[tokio::test]
async fn a_version_1_database_upgrades_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs.db");
    // What sandcron 0.1 left behind: the version-1 schema and its rows,
    // whose records have no `expire_at`.
    let old = sample_record(
        &JobName::new("before-upgrade").unwrap(),
        Timestamp::from_millisecond(3_600_000).unwrap(),
        RunStatus::Succeeded,
        1,
    );
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (1);",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO runs (run_id, job, tick, status, fence, started_at, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                old.run_id.to_string(),
                old.job.as_str(),
                old.tick.as_millisecond(),
                old.status.as_str(),
                old.fence,
                old.started_at.map(Timestamp::as_millisecond),
                serde_json::to_string(&old).unwrap(),
            ],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO output (run_id, seq, stream, at, data) VALUES (?1, 0, 'stdout', ?2, 'old\n')",
            params![old.run_id.to_string(), old.tick.as_microsecond()],
        )
        .unwrap();
    }

    let store = SqliteLogStore::open(&path).unwrap();
    let version: i64 = store
        .writer
        .run(|conn| Ok(conn.query_row("SELECT version FROM schema_version", [], |row| row.get(0))?))
        .await
        .unwrap();
    assert_eq!(version, MIGRATIONS.len() as i64);
    assert_eq!(store.run(old.run_id).await.unwrap(), Some(old.clone()));
    let chunks = store.output(old.run_id, None, 10).await.unwrap();
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].expire_at, None);
    // Version 4 filled the worker and trigger columns from the record, so
    // the filters find runs written before them.
    let found = store
        .runs(&RunQuery {
            worker: Some(old.worker.clone()),
            trigger: Some(old.trigger),
            ..RunQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(found.runs, vec![old.clone()]);
    let other_trigger = store
        .runs(&RunQuery {
            worker: Some(old.worker.clone()),
            trigger: Some(crate::run::Trigger::Manual),
            ..RunQuery::default()
        })
        .await
        .unwrap();
    assert!(other_trigger.runs.is_empty());

    // New rows carry an expiry; the old one is purged by its tick.
    let mut new = sample_record(
        &JobName::new("after-upgrade").unwrap(),
        Timestamp::from_millisecond(3_600_000).unwrap(),
        RunStatus::Succeeded,
        1,
    );
    new.expire_at = Some(Timestamp::from_millisecond(4_000_000_000_000).unwrap());
    store
        .write(&LogBatch {
            runs: vec![new.clone()],
            chunks: vec![],
        })
        .await
        .unwrap();
    assert_eq!(
        store
            .purge(Timestamp::from_millisecond(7_200_000).unwrap())
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.run(old.run_id).await.unwrap(), None);
    assert!(store.output(old.run_id, None, 10).await.unwrap().is_empty());
    assert_eq!(store.run(new.run_id).await.unwrap(), Some(new));

    // Opening again changes nothing.
    drop(store);
    let store = SqliteLogStore::open(&path).unwrap();
    let version: i64 = store
        .writer
        .run(|conn| Ok(conn.query_row("SELECT version FROM schema_version", [], |row| row.get(0))?))
        .await
        .unwrap();
    assert_eq!(version, MIGRATIONS.len() as i64);
}

#[tokio::test]
async fn chunk_expiry_keeps_microseconds() {
    let store = SqliteLogStore::in_memory().unwrap();
    let chunk = OutputChunk {
        expire_at: Some(Timestamp::new(1_900_000_000, 123_456_000).unwrap()),
        run_id: RunId::generate(),
        seq: 0,
        stream: StreamKind::Stdout,
        at: Timestamp::new(1_700_000_000, 654_321_000).unwrap(),
        data: "x\n".to_owned(),
    };
    store
        .write(&LogBatch {
            runs: vec![],
            chunks: vec![chunk.clone()],
        })
        .await
        .unwrap();
    assert_eq!(store.output(chunk.run_id, None, 10).await.unwrap(), vec![chunk]);
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs.db");
    drop(SqliteLogStore::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.execute("UPDATE schema_version SET version = 99", []).unwrap();
    drop(conn);
    let err = SqliteLogStore::open(&path).unwrap_err().to_string();
    assert!(err.contains("schema version 99"), "{err}");
}

#[tokio::test]
async fn queries_walk_indexes() {
    let store = SqliteLogStore::in_memory().unwrap();
    let plans = [
        "SELECT record FROM runs WHERE job = ?1 ORDER BY tick DESC, run_id DESC LIMIT 101",
        "SELECT record FROM runs WHERE job = ?1 AND (tick < ?2 OR (tick = ?2 AND run_id < ?3)) \
         ORDER BY tick DESC, run_id DESC LIMIT 101",
        "SELECT record FROM runs WHERE status = ?1 ORDER BY tick DESC, run_id DESC LIMIT 101",
        // By worker and by trigger, alone, after a cursor and with a job.
        "SELECT record FROM runs WHERE worker = ?1 ORDER BY tick DESC, run_id DESC LIMIT 101",
        "SELECT record FROM runs WHERE worker = ?1 AND (tick < ?2 OR (tick = ?2 AND run_id < ?3)) \
         ORDER BY tick DESC, run_id DESC LIMIT 101",
        "SELECT record FROM runs WHERE \"trigger\" = ?1 ORDER BY tick DESC, run_id DESC LIMIT 101",
        "SELECT record FROM runs WHERE \"trigger\" = ?1 AND (tick < ?2 OR (tick = ?2 AND run_id < ?3)) \
         ORDER BY tick DESC, run_id DESC LIMIT 101",
        "SELECT record FROM runs WHERE \"trigger\" = ?1 AND tick >= ?2 AND tick < ?3 \
         ORDER BY tick DESC, run_id DESC LIMIT 101",
        "SELECT record FROM runs WHERE job = ?1 AND worker = ?2 AND \"trigger\" = ?3 \
         ORDER BY tick DESC, run_id DESC LIMIT 101",
        "SELECT record FROM runs WHERE tick >= ?1 AND tick < ?2 ORDER BY tick DESC, run_id DESC LIMIT 101",
        "SELECT record FROM runs ORDER BY tick DESC, run_id DESC LIMIT 101",
        PURGE_SELECT,
        "SELECT seq, stream, at, data FROM output WHERE run_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        // The audit log: newest first, by job, actor and target, after a cursor.
        "SELECT entry FROM audit ORDER BY id DESC LIMIT 101",
        "SELECT entry FROM audit WHERE id < ?1 ORDER BY id DESC LIMIT 101",
        "SELECT entry FROM audit WHERE job = ?1 AND id < ?2 ORDER BY id DESC LIMIT 101",
        "SELECT entry FROM audit WHERE actor = ?1 ORDER BY id DESC LIMIT 101",
        "SELECT entry FROM audit WHERE target = ?1 ORDER BY id DESC LIMIT 101",
        "SELECT id FROM audit WHERE expire_at < ?1 LIMIT ?2",
    ];
    for sql in plans {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let purge = sql == PURGE_SELECT;
        let plan: Vec<String> = store
            .readers
            .run(move |conn| {
                let mut stmt = conn.prepare(&explain)?;
                let count = stmt.parameter_count();
                let args: Vec<Value> = (0..count).map(|_| Value::Null).collect();
                let rows = stmt.query_map(params_from_iter(args), |row| row.get::<_, String>(3))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
            .unwrap();
        let plan = plan.join("; ");
        assert!(
            plan.contains("USING INDEX") || plan.contains("USING COVERING INDEX"),
            "{sql}: {plan}"
        );
        if purge {
            // Both halves of the OR walk an index, rather than one scan.
            assert!(plan.contains("MULTI-INDEX OR"), "{sql}: {plan}");
            assert!(!plan.contains("SCAN runs"), "{sql}: {plan}");
        }
        assert!(!plan.contains("TEMP B-TREE"), "{sql} sorts outside an index: {plan}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_do_not_wait_for_the_writer() {
    // Hold the writer connection inside an open write transaction and
    // show that a read still completes: readers have their own
    // connections and WAL gives them the last committed snapshot.
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteLogStore::open(&dir.path().join("logs.db")).unwrap();
    let record = sample_record(
        &JobName::new("busy").unwrap(),
        Timestamp::UNIX_EPOCH,
        RunStatus::Failed,
        1,
    );
    store
        .write(&LogBatch {
            runs: vec![record.clone()],
            chunks: vec![],
        })
        .await
        .unwrap();

    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let writer = tokio::spawn({
        let store = Arc::clone(&store);
        async move {
            store
                .writer
                .run(move |conn| {
                    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    tx.execute("DELETE FROM runs", [])?;
                    held_tx.send(()).ok();
                    release_rx.recv().ok();
                    // Rolled back: the read below must never see the delete.
                    drop(tx);
                    Ok(())
                })
                .await
                .unwrap();
        }
    });
    tokio::task::spawn_blocking(move || held_rx.recv().unwrap())
        .await
        .unwrap();
    assert_eq!(store.run(record.run_id).await.unwrap(), Some(record.clone()));
    release_tx.send(()).unwrap();
    writer.await.unwrap();
}

#[test]
fn cursors_round_trip_and_reject_garbage() {
    let id = RunId::from_parts(5, 9);
    assert_eq!(decode_cursor(&encode_cursor(-12, id)).unwrap(), (-12, id));
    for bad in [
        "",
        "_",
        "12",
        "x_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "12_nope",
        "12_01ARZ3NDEKTSV4RRFFQ69G5FAV_x",
    ] {
        assert!(matches!(decode_cursor(bad), Err(LogStoreError::Invalid(_))), "{bad:?}");
    }
}

#[test]
fn since_and_until_round_up_to_whole_milliseconds() {
    assert_eq!(ceil_millisecond(Timestamp::from_millisecond(1500).unwrap()), 1500);
    assert_eq!(ceil_millisecond(Timestamp::new(1, 500_000_001).unwrap()), 1501);
    assert_eq!(ceil_millisecond(Timestamp::new(-1, -500_000_001).unwrap()), -1500);
}
