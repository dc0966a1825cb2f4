//! The embedded store's own tests: both conformance suites in memory and on
//! disk, durability across a restart, the bounds on watchers and history,
//! lease expiry, and what happens when the disk writer dies.

use std::sync::mpsc as std_mpsc;

use futures::StreamExt;

use super::*;
use crate::coord::{Compare, MAX_TXN_OPS, TxnOp, WatchEvent};
use crate::testkit::kv_suite;

fn temp_database() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coord.sqlite");
    (dir, path)
}

async fn next_batch(watch: &mut WatchStream) -> Option<Result<Vec<WatchEvent>, StoreError>> {
    tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_store_passes_the_conformance_suite() {
    kv_suite::run_all(EmbeddedStore::in_memory(), "/conformance/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_store_passes_the_conformance_suite() {
    let (_dir, path) = temp_database();
    kv_suite::run_all(EmbeddedStore::open(&path).unwrap(), "/conformance/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_operations_pass_their_suite_on_the_embedded_store() {
    crate::testkit::coordinator_suite::run_all(EmbeddedStore::in_memory(), "/suite/").await;
    let (_dir, path) = temp_database();
    crate::testkit::coordinator_suite::run_all(EmbeddedStore::open(&path).unwrap(), "/suite/").await;
}

#[tokio::test]
async fn reopening_keeps_unleased_keys_and_the_revision_and_drops_leased_keys() {
    let (_dir, path) = temp_database();
    let store = EmbeddedStore::open(&path).unwrap();
    let lease = store.lease_grant(Duration::from_secs(60)).await.unwrap();
    let a_created = store.put("a", b"1".to_vec(), None).await.unwrap();
    let a_modified = store.put("a", b"2".to_vec(), None).await.unwrap();
    store.put("leased", b"x".to_vec(), Some(lease)).await.unwrap();
    // A key that moves onto a lease leaves the disk; one that moves off
    // a lease joins it.
    store.put("onto_lease", b"x".to_vec(), None).await.unwrap();
    store.put("onto_lease", b"y".to_vec(), Some(lease)).await.unwrap();
    let off_lease_created = store.put("off_lease", b"x".to_vec(), Some(lease)).await.unwrap();
    let off_lease = store.put("off_lease", b"y".to_vec(), None).await.unwrap();
    store.put("deleted", b"x".to_vec(), None).await.unwrap();
    assert!(store.delete("deleted").await.unwrap());
    // The newest revision touches only a leased key: it is recorded
    // without anyone waiting for it, and must survive all the same.
    let last = store.put("leased_last", b"x".to_vec(), Some(lease)).await.unwrap();
    drop(store);

    let store = EmbeddedStore::open(&path).unwrap();
    let listed = store.range("").await.unwrap();
    assert_eq!(listed.revision, last, "the revision must survive a restart");
    let kvs: Vec<_> = listed
        .kvs
        .iter()
        .map(|kv| {
            (
                kv.key.as_str(),
                &kv.value[..],
                kv.create_revision,
                kv.mod_revision,
                kv.lease,
            )
        })
        .collect();
    assert_eq!(
        kvs,
        [
            ("a", &b"2"[..], a_created, a_modified, None),
            ("off_lease", &b"y"[..], off_lease_created, off_lease, None)
        ]
    );
    assert_eq!(store.put("b", b"1".to_vec(), None).await.unwrap(), last + 1);
    assert!(matches!(
        store.lease_keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    // History does not survive a restart; watching from the reopening
    // revision on works.
    let mut old = store.watch("", last - 1).await.unwrap();
    assert!(matches!(
        next_batch(&mut old).await,
        Some(Err(StoreError::Compacted { .. }))
    ));
    let mut current = store.watch("", last).await.unwrap();
    let events = next_batch(&mut current).await.unwrap().unwrap();
    assert_eq!(events[0].key(), "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_committed_to_disk_when_its_txn_returns() {
    let (_dir, path) = temp_database();
    let store = EmbeddedStore::open(&path).unwrap();
    let writers = (0..8).map(|writer| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for i in 0..25 {
                let revision = store.put(&format!("k/{writer}/{i}"), vec![1; 100], None).await.unwrap();
                let durable = store.durable_revision().unwrap();
                assert!(
                    durable >= revision,
                    "acknowledged revision {revision}, durable {durable}"
                );
            }
        })
    });
    for writer in futures::future::join_all(writers).await {
        writer.unwrap();
    }
    let revision = store.range("").await.unwrap().revision;
    drop(store);
    let store = EmbeddedStore::open(&path).unwrap();
    let listed = store.range("k/").await.unwrap();
    assert_eq!((listed.kvs.len(), listed.revision), (200, revision));
}

#[tokio::test]
async fn a_slow_watcher_gets_an_error_instead_of_unbounded_buffering() {
    let store = EmbeddedStore::builder().watch_buffer(4).in_memory();
    let mut slow = store.watch("k/", 0).await.unwrap();
    let mut fast = store.watch("k/", 0).await.unwrap();
    let mut revisions = Vec::new();
    for i in 0..10 {
        let revision = store.put(&format!("k/{i}"), b"v".to_vec(), None).await.unwrap();
        let events = next_batch(&mut fast).await.unwrap().unwrap();
        assert_eq!(events[0].revision(), revision);
        revisions.push(revision);
    }
    assert_eq!(store.watcher_count(), 1, "the slow watcher must be dropped");
    for revision in &revisions[..4] {
        let events = next_batch(&mut slow).await.unwrap().unwrap();
        assert_eq!(events[0].revision(), *revision);
    }
    match next_batch(&mut slow).await {
        Some(Err(StoreError::Compacted { requested, .. })) => {
            assert_eq!(requested, revisions[4])
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(next_batch(&mut slow).await.is_none());
    drop(fast);
    assert_eq!(store.watcher_count(), 0, "dropping a watch unregisters it");
}

#[tokio::test]
async fn history_is_bounded_by_events_and_bytes() {
    let store = EmbeddedStore::builder().history_events(5).in_memory();
    let mut revisions = Vec::new();
    for i in 0..10 {
        revisions.push(store.put(&format!("k/{i}"), b"v".to_vec(), None).await.unwrap());
    }
    let mut too_old = store.watch("k/", revisions[3]).await.unwrap();
    match next_batch(&mut too_old).await {
        Some(Err(StoreError::Compacted {
            requested,
            compact_revision,
        })) => {
            assert_eq!((requested, compact_revision), (revisions[4], revisions[5]));
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    let mut kept = store.watch("k/", revisions[4]).await.unwrap();
    for revision in &revisions[5..] {
        assert_eq!(next_batch(&mut kept).await.unwrap().unwrap()[0].revision(), *revision);
    }

    let store = EmbeddedStore::builder().history_bytes(3 * 1024).in_memory();
    for i in 0..4 {
        store.put(&format!("k/{i}"), vec![0; 1024], None).await.unwrap();
    }
    let mut too_old = store.watch("k/", 0).await.unwrap();
    assert!(matches!(
        next_batch(&mut too_old).await,
        Some(Err(StoreError::Compacted { .. }))
    ));
}

#[tokio::test]
async fn leases_expire_promptly_without_other_calls() {
    let store = EmbeddedStore::in_memory();
    let ttl = Duration::from_millis(300);
    let granted = Instant::now();
    let lease = store.lease_grant(ttl).await.unwrap();
    let put = store.put("k", b"v".to_vec(), Some(lease)).await.unwrap();
    let mut watch = store.watch("", put).await.unwrap();
    let events = next_batch(&mut watch).await.unwrap().unwrap();
    let elapsed = granted.elapsed();
    assert!(matches!(&events[..], [WatchEvent::Delete { key, .. }] if key == "k"));
    assert!(elapsed >= ttl, "expired after {elapsed:?}, before the ttl");
    assert!(
        elapsed < ttl + Duration::from_millis(200),
        "expired only after {elapsed:?}"
    );
}

#[tokio::test]
async fn a_lease_without_keys_expires_without_a_revision() {
    let store = EmbeddedStore::in_memory();
    let before = store.put("k", b"v".to_vec(), None).await.unwrap();
    let lease = store.lease_grant(Duration::from_millis(20)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(matches!(
        store.lease_keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    store.lease_revoke(lease).await.unwrap();
    assert_eq!(store.range("").await.unwrap().revision, before);
}

#[tokio::test(flavor = "current_thread")]
async fn dropping_the_store_ends_its_lease_task() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let store = EmbeddedStore::in_memory();
    store.lease_grant(Duration::from_secs(60)).await.unwrap();
    assert_eq!(metrics.num_alive_tasks(), baseline + 1);
    let weak = Arc::downgrade(&store);
    drop(store);
    for _ in 0..100 {
        if metrics.num_alive_tasks() == baseline {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(metrics.num_alive_tasks(), baseline, "the lease task outlived the store");
    assert!(weak.upgrade().is_none());
}

#[tokio::test]
async fn a_watch_ends_with_an_error_when_the_store_is_dropped() {
    let store = EmbeddedStore::in_memory();
    let mut watch = store.watch("", 0).await.unwrap();
    drop(store);
    assert!(matches!(
        next_batch(&mut watch).await,
        Some(Err(StoreError::Unavailable(_)))
    ));
    assert!(next_batch(&mut watch).await.is_none());
}

#[tokio::test]
async fn a_second_store_on_the_same_file_is_refused() {
    let (_dir, path) = temp_database();
    let first = EmbeddedStore::open(&path).unwrap();
    match EmbeddedStore::open(&path) {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.contains("in use"), "{message}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    drop(first);
    EmbeddedStore::open(&path).unwrap();
}

#[tokio::test]
async fn a_dead_disk_writer_fails_writes_but_not_reads() {
    let (_dir, path) = temp_database();
    let store = EmbeddedStore::open(&path).unwrap();
    store.put("a", b"1".to_vec(), None).await.unwrap();
    {
        // Cut the queue as if the writer thread had died.
        let mut state = store.state.lock().unwrap();
        let disk = state.disk.as_mut().unwrap();
        disk.queue = std_mpsc::channel().0;
    }
    assert!(matches!(
        store.put("b", b"1".to_vec(), None).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.put("c", b"1".to_vec(), None).await,
        Err(StoreError::Unavailable(_))
    ));
    assert_eq!(store.get("a").await.unwrap().unwrap().value, &b"1"[..]);
}

#[tokio::test]
async fn invalid_requests_are_refused() {
    let store = EmbeddedStore::in_memory();
    for txn in [
        Txn::new().and_then([TxnOp::put("", "v")]),
        Txn::new().and_then([TxnOp::delete("")]),
        Txn::new().and_then([TxnOp::DeletePrefix { prefix: String::new() }]),
        Txn::new().when((0..=MAX_TXN_OPS).map(|i| Compare::missing(format!("k/{i}")))),
    ] {
        assert!(matches!(store.txn(txn).await, Err(StoreError::Invalid(_))));
    }
    assert!(matches!(
        store.lease_grant(Duration::ZERO).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.lease_grant(Duration::MAX).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(store.compact(1).await, Err(StoreError::Invalid(_))));
    assert!(matches!(store.watch("", -1).await, Err(StoreError::Invalid(_))));
    assert_eq!(store.range("").await.unwrap().revision, 0);
}
