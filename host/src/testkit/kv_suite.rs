//! The conformance suite every [`KvStore`] backend must pass — the embedded
//! store in its unit tests, etcd 3.4 (through its adapter) in the end-to-end
//! tests — so that sandcron's coordination logic can rely on one behaviour.
//!
//! Only behaviour etcd 3.4 shares is checked. Every key a check touches starts
//! with the caller's prefix, so the suite can share a server with other data.
//! Two caveats on a shared server: the exact-revision checks retry a few
//! times in case another client writes meanwhile, and the compaction check
//! compacts the whole store (up to a revision of its own writes).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use tokio::time::{Instant, sleep, timeout};

use crate::coord::{
    CmpOp, Compare, KeyValue, KvStore, LeaseId, MAX_TXN_OPS, MAX_VALUE_BYTES, Revision, StoreError, Txn, TxnOp,
    WatchEvent, WatchStream,
};

/// How long a check waits for something a store should do promptly.
const PROMPT: Duration = Duration::from_secs(5);

/// etcd raises shorter lease TTLs to its minimum (about 2 s by default).
const LEASE_TTL: Duration = Duration::from_secs(2);

/// Attempts of a check that needs no other client to write meanwhile.
const EXACT_ATTEMPTS: usize = 5;

/// Runs every check, in an order that keeps them independent: the ones that
/// compare exact revisions run alone, the slow lease check alongside the
/// concurrency check.
pub async fn run_all(store: Arc<dyn KvStore>, prefix: &str) {
    let shared: &dyn KvStore = store.as_ref();
    put_get_round_trip(shared, prefix).await;
    range_is_prefix_scoped_and_sorted(shared, prefix).await;
    revisions_advance_once_per_write_txn(shared, prefix).await;
    create_and_mod_revisions(shared, prefix).await;
    delete_reports_existence_and_recreate_gets_new_create_revision(shared, prefix).await;
    txn_compares_choose_the_branch(shared, prefix).await;
    txn_is_atomic(shared, prefix).await;
    delete_prefix_deletes_exactly_the_prefix(shared, prefix).await;
    limits_are_rejected_as_invalid(shared, prefix).await;
    watch_replays_history_then_follows_live(shared, prefix).await;
    watch_sees_deletes_at_their_revision(shared, prefix).await;
    watch_sees_only_its_prefix(shared, prefix).await;
    compaction_fails_watches_from_older_revisions(shared, prefix).await;
    lease_revoke_deletes_its_keys(shared, prefix).await;
    tokio::join!(
        lease_keep_alive_then_expiry(shared, prefix),
        concurrent_compare_and_swap_loses_no_update(Arc::clone(&store), prefix),
    );
}

/// A put reads back exactly (binary and empty values too); an overwrite keeps
/// the create revision; a missing key is `None`.
pub async fn put_get_round_trip(store: &dyn KvStore, prefix: &str) {
    let key = format!("{prefix}put_get/key");
    let value = vec![0u8, 159, 146, 150, 255, b'\n'];
    let first = ok(store.put(&key, value.clone(), None).await, "put");
    assert!(first > 0, "a write's revision must be positive, got {first}");
    let kv = present(store, &key).await;
    assert_eq!(kv.key, key);
    assert_eq!(kv.value, value, "value of {key} read back differently");
    assert_eq!(
        (kv.create_revision, kv.mod_revision),
        (first, first),
        "revisions of a new key"
    );
    assert_eq!(kv.lease, None, "{key} was put without a lease");

    let second = ok(store.put(&key, Vec::new(), None).await, "overwrite with an empty value");
    assert!(second > first, "overwrite revision {second} must exceed {first}");
    let kv = present(store, &key).await;
    assert_eq!(kv.value, Vec::<u8>::new(), "an empty value must read back empty");
    assert_eq!(
        (kv.create_revision, kv.mod_revision),
        (first, second),
        "revisions after overwrite"
    );

    let missing = ok(store.get(&format!("{prefix}put_get/missing")).await, "get missing");
    assert_eq!(missing, None, "a key never written must be absent");
}

/// `range(p)` returns exactly the keys starting with `p`, sorted, including a
/// key equal to `p`, and nothing of a sibling such as `p` without its slash.
pub async fn range_is_prefix_scoped_and_sorted(store: &dyn KvStore, prefix: &str) {
    let base = format!("{prefix}range/");
    let names = ["a/2", "a/1", "a/", "a/10", "a/1/deep", "a", "ab", "a-b", "b/1", "a/Z"];
    let mut highest = 0;
    for name in names {
        highest = ok(
            store
                .put(&format!("{base}{name}"), name.as_bytes().to_vec(), None)
                .await,
            "put",
        );
    }

    let scoped = ok(store.range(&format!("{base}a/")).await, "range a/");
    let mut expected: Vec<String> = names
        .iter()
        .filter(|name| name.starts_with("a/"))
        .map(|name| format!("{base}{name}"))
        .collect();
    expected.sort();
    assert_eq!(
        keys_of(&scoped.kvs),
        expected,
        "range of {base}a/ must hold exactly its keys, sorted"
    );
    for kv in &scoped.kvs {
        assert_eq!(
            kv.value,
            &kv.key.as_bytes()[base.len()..],
            "value of {} in a range",
            kv.key
        );
    }
    assert!(
        scoped.revision >= highest,
        "a range must report a revision at or after the writes it sees ({} < {highest})",
        scoped.revision
    );

    let everything = ok(store.range(&base).await, "range all");
    let mut expected: Vec<String> = names.iter().map(|name| format!("{base}{name}")).collect();
    expected.sort();
    assert_eq!(
        keys_of(&everything.kvs),
        expected,
        "range of {base} must hold all its keys, sorted"
    );

    let empty = ok(store.range(&format!("{base}none/")).await, "range of nothing");
    assert!(
        empty.kvs.is_empty(),
        "a range with no keys must be empty, got {:?}",
        keys_of(&empty.kvs)
    );
    assert!(
        empty.revision >= highest,
        "an empty range still reports the store revision"
    );
}

/// Each write transaction advances the revision by exactly one; reads, failed
/// compares without failure operations, empty branches and deletes of nothing
/// do not advance it.
pub async fn revisions_advance_once_per_write_txn(store: &dyn KvStore, prefix: &str) {
    let base = format!("{prefix}revisions/");
    let mut last_miss = String::new();
    for _ in 0..EXACT_ATTEMPTS {
        match revision_round(store, &base).await {
            Ok(()) => return,
            Err(miss) => last_miss = miss,
        }
    }
    panic!(
        "revisions did not advance exactly once per write txn in {EXACT_ATTEMPTS} attempts \
         (only possible with another writer on the store); last: {last_miss}"
    );
}

/// One pass of the exact-revision check. Hard failures panic; a mismatch that
/// another writer could explain returns `Err` so the caller retries.
async fn revision_round(store: &dyn KvStore, base: &str) -> Result<(), String> {
    macro_rules! exact {
        ($holds:expr, $($message:tt)+) => {
            if !$holds {
                return Err(format!($($message)+));
            }
        };
    }
    let key = format!("{base}key");
    let start = current_revision(store, base).await;
    ok(store.get(&key).await, "get");
    ok(store.range(base).await, "range");
    let after_reads = current_revision(store, base).await;
    assert!(
        after_reads >= start,
        "the revision went backwards: {start} -> {after_reads}"
    );
    exact!(
        after_reads == start,
        "reads moved the revision from {start} to {after_reads}"
    );

    let first = ok(store.put(&key, b"1".to_vec(), None).await, "put");
    assert!(
        first > after_reads,
        "a put must advance the revision ({after_reads} -> {first})"
    );
    exact!(
        first == after_reads + 1,
        "a put moved the revision from {after_reads} to {first}"
    );
    let second = ok(store.put(&key, b"2".to_vec(), None).await, "put");
    assert!(second > first, "a put must advance the revision ({first} -> {second})");
    exact!(second == first + 1, "a put moved the revision from {first} to {second}");

    let stale = Compare::mod_revision_is(&key, first);
    let response = ok(
        store
            .txn(Txn::new().when([stale.clone()]).and_then([TxnOp::put(&key, "never")]))
            .await,
        "txn with a failing compare",
    );
    assert!(!response.succeeded, "compare {stale:?} must fail after the key changed");
    assert!(
        response.revision >= second,
        "a txn reported a revision older than the store's"
    );
    exact!(
        response.revision == second,
        "a failed compare without failure ops moved the revision from {second} to {}",
        response.revision
    );
    assert_eq!(
        present(store, &key).await.value,
        &b"2"[..],
        "a failed compare must not write"
    );

    let response = ok(store.txn(Txn::new()).await, "empty txn");
    assert!(response.succeeded, "a txn without compares must succeed");
    exact!(
        response.revision == second,
        "an empty txn moved the revision to {}",
        response.revision
    );

    let response = ok(
        store
            .txn(Txn::new().and_then([
                TxnOp::delete(format!("{base}missing")),
                TxnOp::DeletePrefix {
                    prefix: format!("{base}missing/"),
                },
            ]))
            .await,
        "txn deleting nothing",
    );
    exact!(
        response.revision == second,
        "deleting keys that do not exist moved the revision to {}",
        response.revision
    );

    let response = ok(
        store
            .txn(Txn::new().when([stale]).or_else([TxnOp::put(&key, "3")]))
            .await,
        "txn with a failing compare and a failure op",
    );
    assert!(!response.succeeded, "the compare must still fail");
    assert!(
        response.revision > second,
        "the failure branch wrote, so the revision must advance"
    );
    exact!(
        response.revision == second + 1,
        "a failure branch moved the revision from {second} to {}",
        response.revision
    );
    let kv = present(store, &key).await;
    assert_eq!((&kv.value[..], kv.mod_revision), (&b"3"[..], response.revision));

    let before = response.revision;
    let (a, b) = (format!("{base}multi/a"), format!("{base}multi/b"));
    let response = ok(
        store
            .txn(Txn::new().and_then([TxnOp::put(&a, "a"), TxnOp::put(&b, "b"), TxnOp::delete(&key)]))
            .await,
        "txn with three writes",
    );
    exact!(
        response.revision == before + 1,
        "one txn with three writes moved the revision from {before} to {}",
        response.revision
    );
    for written in [&a, &b] {
        let kv = present(store, written).await;
        assert_eq!(
            kv.mod_revision, response.revision,
            "every write of a txn shares its revision"
        );
    }
    ok(
        store
            .txn(Txn::new().and_then([TxnOp::DeletePrefix {
                prefix: base.to_owned(),
            }]))
            .await,
        "clean up",
    );
    Ok(())
}

/// `create_revision` is set by the write that creates a key and kept by later
/// writes; `mod_revision` follows every write; other keys' writes touch neither.
pub async fn create_and_mod_revisions(store: &dyn KvStore, prefix: &str) {
    let key = format!("{prefix}create_mod/key");
    let other = format!("{prefix}create_mod/other");
    let created = ok(store.put(&key, b"1".to_vec(), None).await, "put");
    let modified = ok(store.put(&key, b"2".to_vec(), None).await, "put");
    ok(store.put(&other, b"x".to_vec(), None).await, "put other");
    let kv = present(store, &key).await;
    assert_eq!(
        (kv.create_revision, kv.mod_revision),
        (created, modified),
        "create/mod revisions of {key} after two puts (and a put of another key)"
    );

    let third = format!("{prefix}create_mod/third");
    let response = ok(
        store
            .txn(Txn::new().and_then([TxnOp::put(&key, "3"), TxnOp::put(&third, "new")]))
            .await,
        "txn",
    );
    let kv = present(store, &key).await;
    assert_eq!((kv.create_revision, kv.mod_revision), (created, response.revision));
    let kv = present(store, &third).await;
    assert_eq!(
        (kv.create_revision, kv.mod_revision),
        (response.revision, response.revision)
    );
}

/// `delete` reports whether the key existed; a re-created key gets a new
/// create revision.
pub async fn delete_reports_existence_and_recreate_gets_new_create_revision(store: &dyn KvStore, prefix: &str) {
    let key = format!("{prefix}delete/key");
    let created = ok(store.put(&key, b"1".to_vec(), None).await, "put");
    assert!(
        ok(store.delete(&key).await, "delete"),
        "deleting an existing key must report true"
    );
    assert_eq!(ok(store.get(&key).await, "get"), None, "a deleted key must be absent");
    assert!(
        !ok(store.delete(&key).await, "delete again"),
        "deleting a missing key must report false"
    );

    let recreated = ok(store.put(&key, b"2".to_vec(), None).await, "re-create");
    let kv = present(store, &key).await;
    assert!(recreated > created);
    assert_eq!(
        (kv.create_revision, kv.mod_revision),
        (recreated, recreated),
        "a re-created key starts over (first created at {created})"
    );
}

/// Every comparison on mod and create revisions, with each operator, on an
/// existing and a missing key (whose revisions are 0), picks the right branch.
pub async fn txn_compares_choose_the_branch(store: &dyn KvStore, prefix: &str) {
    let key = format!("{prefix}compare/key");
    let missing = format!("{prefix}compare/missing");
    let branch = format!("{prefix}compare/branch");
    let created = ok(store.put(&key, b"1".to_vec(), None).await, "put");
    let modified = ok(store.put(&key, b"2".to_vec(), None).await, "put");
    assert!(created < modified);

    let by_mod = |op, revision| Compare::ModRevision {
        key: key.clone(),
        op,
        revision,
    };
    let by_create = |op, revision| Compare::CreateRevision {
        key: key.clone(),
        op,
        revision,
    };
    let on_missing_mod = |op, revision| Compare::ModRevision {
        key: missing.clone(),
        op,
        revision,
    };
    let on_missing_create = |op, revision| Compare::CreateRevision {
        key: missing.clone(),
        op,
        revision,
    };
    let cases: Vec<(Vec<Compare>, bool)> = vec![
        (vec![by_mod(CmpOp::Equal, modified)], true),
        (vec![by_mod(CmpOp::Equal, created)], false),
        (vec![by_mod(CmpOp::NotEqual, modified)], false),
        (vec![by_mod(CmpOp::NotEqual, created)], true),
        (vec![by_mod(CmpOp::Less, modified + 1)], true),
        (vec![by_mod(CmpOp::Less, modified)], false),
        (vec![by_mod(CmpOp::Greater, modified - 1)], true),
        (vec![by_mod(CmpOp::Greater, modified)], false),
        (vec![by_create(CmpOp::Equal, created)], true),
        (vec![by_create(CmpOp::Equal, modified)], false),
        (vec![by_create(CmpOp::NotEqual, created)], false),
        (vec![by_create(CmpOp::NotEqual, modified)], true),
        (vec![by_create(CmpOp::Less, modified)], true),
        (vec![by_create(CmpOp::Less, created)], false),
        (vec![by_create(CmpOp::Greater, created - 1)], true),
        (vec![by_create(CmpOp::Greater, created)], false),
        (vec![on_missing_mod(CmpOp::Equal, 0)], true),
        (vec![on_missing_mod(CmpOp::Greater, 0)], false),
        (vec![on_missing_create(CmpOp::Equal, 0)], true),
        (vec![on_missing_create(CmpOp::Less, 1)], true),
        (vec![on_missing_create(CmpOp::NotEqual, 0)], false),
        (vec![Compare::mod_revision_is(&key, modified)], true),
        (vec![Compare::exists(&key)], true),
        (vec![Compare::missing(&key)], false),
        (vec![Compare::missing(&missing)], true),
        (vec![Compare::exists(&missing)], false),
        (vec![Compare::exists(&key), Compare::missing(&missing)], true),
        (vec![Compare::exists(&key), Compare::exists(&missing)], false),
        (vec![Compare::exists(&missing), Compare::exists(&key)], false),
        (vec![], true),
    ];
    for (case, (compares, holds)) in cases.into_iter().enumerate() {
        let success = format!("success {case}");
        let failure = format!("failure {case}");
        let response = ok(
            store
                .txn(
                    Txn::new()
                        .when(compares.clone())
                        .and_then([TxnOp::put(&branch, success.clone())])
                        .or_else([TxnOp::put(&branch, failure.clone())]),
                )
                .await,
            "txn",
        );
        assert_eq!(
            response.succeeded, holds,
            "compares {compares:?} with {key} at create {created} / mod {modified} and {missing} absent"
        );
        let kv = present(store, &branch).await;
        let expected = if holds { success } else { failure };
        assert_eq!(
            String::from_utf8_lossy(&kv.value),
            expected,
            "the {} branch must have run for {compares:?}",
            if holds { "success" } else { "failure" }
        );
        assert_eq!(
            kv.mod_revision, response.revision,
            "the branch's write is at the txn's revision"
        );
    }
    let kv = present(store, &key).await;
    assert_eq!(
        (kv.create_revision, kv.mod_revision),
        (created, modified),
        "compares must not write"
    );
}

/// A failed compare applies nothing of the success branch (and all of the
/// failure branch); a held compare applies all of it at one revision.
pub async fn txn_is_atomic(store: &dyn KvStore, prefix: &str) {
    let base = format!("{prefix}atomic/");
    let (keep, a, b, on_failure, not_on_success) = (
        format!("{base}keep"),
        format!("{base}a"),
        format!("{base}b"),
        format!("{base}f"),
        format!("{base}g"),
    );
    let kept_at = ok(store.put(&keep, b"original".to_vec(), None).await, "put");

    let success = [TxnOp::put(&a, "a"), TxnOp::put(&b, "b"), TxnOp::delete(&keep)];
    let response = ok(
        store
            .txn(
                Txn::new()
                    .when([Compare::missing(&keep)])
                    .and_then(success.clone())
                    .or_else([TxnOp::put(&on_failure, "f")]),
            )
            .await,
        "txn with a failing compare",
    );
    assert!(!response.succeeded);
    assert_eq!(
        ok(store.get(&a).await, "get"),
        None,
        "nothing of a failed success branch may apply"
    );
    assert_eq!(
        ok(store.get(&b).await, "get"),
        None,
        "nothing of a failed success branch may apply"
    );
    assert_eq!(
        present(store, &keep).await.mod_revision,
        kept_at,
        "a failed branch must not delete"
    );
    assert_eq!(present(store, &on_failure).await.mod_revision, response.revision);

    let response = ok(
        store
            .txn(
                Txn::new()
                    .when([Compare::exists(&keep)])
                    .and_then(success)
                    .or_else([TxnOp::put(&not_on_success, "g")]),
            )
            .await,
        "txn with a holding compare",
    );
    assert!(response.succeeded);
    assert_eq!(present(store, &a).await.mod_revision, response.revision);
    assert_eq!(present(store, &b).await.mod_revision, response.revision);
    assert_eq!(
        ok(store.get(&keep).await, "get"),
        None,
        "the success branch's delete must apply"
    );
    assert_eq!(
        ok(store.get(&not_on_success).await, "get"),
        None,
        "the failure branch must not run"
    );
}

/// `DeletePrefix` deletes every key under the prefix (deep ones too) and
/// nothing else, in one revision.
pub async fn delete_prefix_deletes_exactly_the_prefix(store: &dyn KvStore, prefix: &str) {
    let base = format!("{prefix}delete_prefix/");
    let names = ["x/1", "x/2", "x/3/deep", "x/", "x", "xy", "y"];
    for name in names {
        ok(store.put(&format!("{base}{name}"), b"v".to_vec(), None).await, "put");
    }
    let before = current_revision(store, &base).await;
    let mut watch = ok(store.watch(&base, before).await, "watch");
    let response = ok(
        store
            .txn(Txn::new().and_then([TxnOp::DeletePrefix {
                prefix: format!("{base}x/"),
            }]))
            .await,
        "delete prefix",
    );
    let remaining = ok(store.range(&base).await, "range");
    assert_eq!(
        keys_of(&remaining.kvs),
        ["x", "xy", "y"].map(|name| format!("{base}{name}")),
        "DeletePrefix {base}x/ must delete exactly the keys under it"
    );
    let events = next_events(&mut watch, 4, PROMPT, "deletes of a DeletePrefix").await;
    for event in &events {
        assert!(
            matches!(event, WatchEvent::Delete { revision, .. } if *revision == response.revision),
            "expected deletes at revision {}, got {event:?}",
            response.revision
        );
    }
    let mut deleted: Vec<&str> = events.iter().map(WatchEvent::key).collect();
    deleted.sort_unstable();
    let expected = ["x/", "x/1", "x/2", "x/3/deep"].map(|name| format!("{base}{name}"));
    assert_eq!(deleted, expected.iter().map(String::as_str).collect::<Vec<_>>());
}

/// Over-limit requests fail as `Invalid` and apply nothing: more than
/// `MAX_TXN_OPS` operations in either branch, a value over `MAX_VALUE_BYTES`,
/// a key put twice, or put and deleted, in one branch. Requests at the limits pass.
pub async fn limits_are_rejected_as_invalid(store: &dyn KvStore, prefix: &str) {
    let base = format!("{prefix}limits/");
    let puts = |area: &str, count: usize| -> Vec<TxnOp> {
        (0..count)
            .map(|i| TxnOp::put(format!("{base}{area}/{i:03}"), "v"))
            .collect()
    };

    let response = ok(
        store.txn(Txn::new().and_then(puts("most", MAX_TXN_OPS))).await,
        "txn of MAX_TXN_OPS puts",
    );
    let written = ok(store.range(&format!("{base}most/")).await, "range");
    assert_eq!(
        written.kvs.len(),
        MAX_TXN_OPS,
        "a txn of exactly MAX_TXN_OPS puts must apply"
    );
    assert!(written.kvs.iter().all(|kv| kv.mod_revision == response.revision));

    let sentinel = format!("{base}sentinel");
    let rejected = [
        (
            "too many success ops",
            Txn::new().and_then(puts("over", MAX_TXN_OPS + 1)),
        ),
        (
            "too many failure ops (branch not taken)",
            Txn::new()
                .and_then([TxnOp::put(&sentinel, "v")])
                .or_else(puts("over", MAX_TXN_OPS + 1)),
        ),
        (
            "too large a value",
            Txn::new().and_then([
                TxnOp::put(&sentinel, "v"),
                TxnOp::put(format!("{base}huge"), vec![7u8; MAX_VALUE_BYTES + 1]),
            ]),
        ),
        (
            "a key put twice",
            Txn::new().and_then([TxnOp::put(&sentinel, "1"), TxnOp::put(&sentinel, "2")]),
        ),
        (
            "a key put twice in the failure branch (not taken)",
            Txn::new()
                .and_then([TxnOp::put(format!("{base}other"), "v")])
                .or_else([TxnOp::put(&sentinel, "1"), TxnOp::put(&sentinel, "2")]),
        ),
        (
            "a key put and deleted",
            Txn::new().and_then([TxnOp::put(&sentinel, "v"), TxnOp::delete(&sentinel)]),
        ),
        (
            "a key put and deleted by prefix",
            Txn::new().and_then([TxnOp::put(&sentinel, "v"), TxnOp::DeletePrefix { prefix: base.clone() }]),
        ),
    ];
    for (what, txn) in rejected {
        match store.txn(txn).await {
            Err(StoreError::Invalid(_)) => {}
            other => panic!("a txn with {what} must fail as Invalid, got {other:?}"),
        }
    }
    match store
        .put(&format!("{base}huge"), vec![7u8; MAX_VALUE_BYTES + 1], None)
        .await
    {
        Err(StoreError::Invalid(_)) => {}
        other => panic!("a put of MAX_VALUE_BYTES + 1 bytes must fail as Invalid, got {other:?}"),
    }
    let leftovers = ok(store.range(&base).await, "range");
    let leftovers: Vec<String> = keys_of(&leftovers.kvs)
        .into_iter()
        .filter(|key| !key.starts_with(&format!("{base}most/")))
        .collect();
    assert!(
        leftovers.is_empty(),
        "rejected txns must apply nothing, found {leftovers:?}"
    );

    let big = format!("{base}big");
    let value: Vec<u8> = (0..MAX_VALUE_BYTES).map(|i| (i % 251) as u8).collect();
    ok(
        store.put(&big, value.clone(), None).await,
        "put of exactly MAX_VALUE_BYTES",
    );
    let kv = present(store, &big).await;
    assert!(
        kv.value == value,
        "a MAX_VALUE_BYTES value read back differently ({} bytes)",
        kv.value.len()
    );
    ok(
        store
            .txn(Txn::new().and_then([TxnOp::DeletePrefix { prefix: base }]))
            .await,
        "clean up",
    );
}

/// A watch from a past revision replays the later history in revision order,
/// one batch per revision at most, then follows live writes; a watch from a
/// range's revision misses nothing after the range.
pub async fn watch_replays_history_then_follows_live(store: &dyn KvStore, prefix: &str) {
    let base = format!("{prefix}watch_replay/");
    let key = |name: &str| format!("{base}{name}");
    let start = current_revision(store, &base).await;
    let r1 = ok(store.put(&key("a"), b"1".to_vec(), None).await, "put");
    let r2 = ok(store.put(&key("b"), b"2".to_vec(), None).await, "put");
    let r3 = ok(
        store
            .txn(Txn::new().and_then([TxnOp::put(key("c"), "3"), TxnOp::put(key("d"), "4")]))
            .await,
        "txn",
    )
    .revision;
    let r4 = ok(
        store.txn(Txn::new().and_then([TxnOp::delete(key("a"))])).await,
        "delete",
    )
    .revision;

    let mut watch = ok(store.watch(&base, start).await, "watch from the past");
    let events = next_events(&mut watch, 5, PROMPT, "replayed history").await;
    assert_eq!(
        describe(&events),
        [
            ("put", key("a"), r1),
            ("put", key("b"), r2),
            ("put", key("c"), r3),
            ("put", key("d"), r3),
            ("delete", key("a"), r4)
        ],
        "replay from revision {start}"
    );
    match &events[0] {
        WatchEvent::Put(kv) => assert_eq!(
            (&kv.value[..], kv.create_revision, kv.mod_revision, kv.lease),
            (&b"1"[..], r1, r1, None),
            "a replayed put carries the key's value and revisions"
        ),
        other => panic!("expected a put, got {other:?}"),
    }

    let r5 = ok(store.put(&key("e"), b"5".to_vec(), None).await, "put");
    let r6 = ok(store.put(&key("b"), b"6".to_vec(), None).await, "put");
    let events = next_events(&mut watch, 2, PROMPT, "live events after the replay").await;
    assert_eq!(describe(&events), [("put", key("e"), r5), ("put", key("b"), r6)]);
    match &events[1] {
        WatchEvent::Put(kv) => assert_eq!(
            (&kv.value[..], kv.create_revision, kv.mod_revision),
            (&b"6"[..], r2, r6),
            "a live put carries the key's value and revisions"
        ),
        other => panic!("expected a put, got {other:?}"),
    }

    let mut resumed = ok(store.watch(&base, r2).await, "watch resuming mid-history");
    let events = next_events(&mut resumed, 3, PROMPT, "history after r2").await;
    assert_eq!(
        describe(&events),
        [("put", key("c"), r3), ("put", key("d"), r3), ("delete", key("a"), r4)],
        "a watch after revision {r2} starts with revision {r3}"
    );

    let listed = ok(store.range(&base).await, "range");
    let r7 = ok(store.put(&key("f"), b"7".to_vec(), None).await, "put");
    let mut handoff = ok(
        store.watch(&base, listed.revision).await,
        "watch from a range's revision",
    );
    let events = next_events(&mut handoff, 1, PROMPT, "events after a range").await;
    assert_eq!(
        describe(&events),
        [("put", key("f"), r7)],
        "a watch from a range's revision"
    );
}

/// Deletes reach watchers as `Delete` events carrying the deleting write's
/// revision; a `DeletePrefix` delivers all its deletes at one revision; a
/// delete of nothing delivers nothing.
pub async fn watch_sees_deletes_at_their_revision(store: &dyn KvStore, prefix: &str) {
    let base = format!("{prefix}watch_delete/");
    let key = |name: &str| format!("{base}{name}");
    for name in ["x", "y/1", "y/2"] {
        ok(store.put(&key(name), b"v".to_vec(), None).await, "put");
    }
    let start = current_revision(store, &base).await;
    let mut watch = ok(store.watch(&base, start).await, "watch");

    let deleted = ok(
        store.txn(Txn::new().and_then([TxnOp::delete(key("x"))])).await,
        "delete",
    )
    .revision;
    let events = next_events(&mut watch, 1, PROMPT, "a delete").await;
    assert_eq!(describe(&events), [("delete", key("x"), deleted)]);

    assert!(
        !ok(store.delete(&key("x")).await, "delete again"),
        "the key is already gone"
    );
    let prefix_deleted = ok(
        store
            .txn(Txn::new().and_then([TxnOp::DeletePrefix { prefix: key("y/") }]))
            .await,
        "delete prefix",
    )
    .revision;
    let marker = ok(store.put(&key("marker"), b"m".to_vec(), None).await, "put marker");
    let events = next_events(&mut watch, 3, PROMPT, "prefix deletes, then a marker").await;
    assert_eq!(
        describe(&events),
        [
            ("delete", key("y/1"), prefix_deleted),
            ("delete", key("y/2"), prefix_deleted),
            ("put", key("marker"), marker)
        ],
        "a delete of a missing key must not reach watchers"
    );
}

/// A watch sees only keys under its prefix: not a sibling that shares the
/// prefix's text without its slash.
pub async fn watch_sees_only_its_prefix(store: &dyn KvStore, prefix: &str) {
    let base = format!("{prefix}watch_scope/");
    let key = |name: &str| format!("{base}{name}");
    let start = current_revision(store, &base).await;
    let mut scoped = ok(store.watch(&key("a/"), start).await, "watch a/");
    let mut sibling = ok(store.watch(&key("ab"), start).await, "watch ab");

    ok(store.put(&key("ab"), b"v".to_vec(), None).await, "put");
    ok(store.put(&key("a"), b"v".to_vec(), None).await, "put");
    ok(store.put(&key("b/1"), b"v".to_vec(), None).await, "put");
    let inside = ok(store.put(&key("a/1"), b"v".to_vec(), None).await, "put");
    ok(store.delete(&key("ab")).await, "delete");
    let marker = ok(store.put(&key("a/marker"), b"v".to_vec(), None).await, "put");
    let sibling_marker = ok(store.put(&key("abc"), b"v".to_vec(), None).await, "put");

    let events = next_events(&mut scoped, 2, PROMPT, "events under a/").await;
    assert_eq!(
        describe(&events),
        [("put", key("a/1"), inside), ("put", key("a/marker"), marker)],
        "a watch on {base}a/ must see only its keys"
    );
    let events = next_events(&mut sibling, 3, PROMPT, "events under ab").await;
    let kinds: Vec<(&str, String)> = describe(&events)
        .into_iter()
        .map(|(kind, key, _)| (kind, key))
        .collect();
    assert_eq!(
        kinds,
        [("put", key("ab")), ("delete", key("ab")), ("put", key("abc"))],
        "a watch on {base}ab must see only its keys"
    );
    assert_eq!(events[2].revision(), sibling_marker);
}

/// After `compact(r)`, a watch needing a revision at or before `r` yields
/// `Compacted` and ends; a watch after `r` works; current keys are unaffected.
pub async fn compaction_fails_watches_from_older_revisions(store: &dyn KvStore, prefix: &str) {
    let base = format!("{prefix}compaction/");
    let key = |name: &str| format!("{base}{name}");
    let r1 = ok(store.put(&key("a"), b"1".to_vec(), None).await, "put");
    let r2 = ok(store.put(&key("b"), b"2".to_vec(), None).await, "put");
    let r3 = ok(store.put(&key("c"), b"3".to_vec(), None).await, "put");
    ok(store.compact(r2).await, "compact");

    let mut stale = ok(store.watch(&base, r1 - 1).await, "watch from before the compaction");
    match timeout(PROMPT, stale.next()).await {
        Ok(Some(Err(StoreError::Compacted { .. }))) => {}
        other => panic!(
            "a watch after revision {} (compacted at {r2}) must yield Compacted, got {other:?}",
            r1 - 1
        ),
    }
    match timeout(PROMPT, stale.next()).await {
        Ok(None) => {}
        other => panic!("a watch must end after its error, got {other:?}"),
    }

    let mut fresh = ok(store.watch(&base, r2).await, "watch from the compaction revision");
    let events = next_events(&mut fresh, 1, PROMPT, "events after the compaction").await;
    assert_eq!(describe(&events), [("put", key("c"), r3)]);

    let listed = ok(store.range(&base).await, "range");
    let revisions: Vec<(Revision, Revision)> = listed
        .kvs
        .iter()
        .map(|kv| (kv.create_revision, kv.mod_revision))
        .collect();
    assert_eq!(
        revisions,
        [(r1, r1), (r2, r2), (r3, r3)],
        "compaction must not change current keys"
    );
}

/// Keys put with a lease carry it; revoking the lease deletes them in one
/// revision (a key re-put without the lease survives); afterwards the lease is
/// unknown to puts and keep-alives, and revoking it again is not an error.
pub async fn lease_revoke_deletes_its_keys(store: &dyn KvStore, prefix: &str) {
    let base = format!("{prefix}lease_revoke/");
    let key = |name: &str| format!("{base}{name}");
    let lease = ok(store.lease_grant(LEASE_TTL).await, "lease grant");
    ok(store.put(&key("a"), b"a".to_vec(), Some(lease)).await, "leased put");
    ok(
        store
            .txn(Txn::new().and_then([TxnOp::put_leased(key("b"), "b", lease)]))
            .await,
        "leased txn",
    );
    ok(
        store.put(&key("detached"), b"1".to_vec(), Some(lease)).await,
        "leased put",
    );
    ok(
        store.put(&key("detached"), b"2".to_vec(), None).await,
        "put without the lease",
    );
    ok(store.lease_keep_alive(lease).await, "keep-alive of a live lease");
    assert_eq!(
        present(store, &key("a")).await.lease,
        Some(lease),
        "a leased key carries its lease"
    );
    assert_eq!(
        present(store, &key("detached")).await.lease,
        None,
        "a re-put without lease leaves it"
    );

    let start = current_revision(store, &base).await;
    let mut watch = ok(store.watch(&base, start).await, "watch");
    ok(store.lease_revoke(lease).await, "revoke");
    let events = next_events(&mut watch, 2, PROMPT, "deletes of a revoked lease").await;
    let revision = events[0].revision();
    assert_eq!(
        describe(&events),
        [("delete", key("a"), revision), ("delete", key("b"), revision)],
        "revoking deletes the lease's keys in one revision"
    );
    assert_eq!(ok(store.get(&key("a")).await, "get"), None);
    assert_eq!(
        present(store, &key("detached")).await.value,
        &b"2"[..],
        "a detached key survives"
    );
    ok(
        store.lease_revoke(lease).await,
        "revoking an unknown lease is not an error",
    );

    expect_lease_gone(store, &base, lease).await;
    let marker = ok(store.put(&key("marker"), b"m".to_vec(), None).await, "put marker");
    let events = next_events(&mut watch, 1, PROMPT, "the marker").await;
    assert_eq!(
        describe(&events),
        [("put", key("marker"), marker)],
        "failed puts must write nothing"
    );
}

/// Keep-alives hold a lease's keys past its TTL; once they stop, expiry
/// deletes the keys in one revision (seen by a watch), and the lease is
/// unknown to keep-alives and puts.
pub async fn lease_keep_alive_then_expiry(store: &dyn KvStore, prefix: &str) {
    let base = format!("{prefix}lease_expiry/");
    let key = |name: &str| format!("{base}{name}");
    let lease = ok(store.lease_grant(LEASE_TTL).await, "lease grant");
    let granted = Instant::now();
    ok(store.put(&key("a"), b"a".to_vec(), Some(lease)).await, "leased put");
    ok(store.put(&key("b"), b"b".to_vec(), Some(lease)).await, "leased put");
    // Watched from before the keep-alives, so an early expiry is seen too.
    let start = current_revision(store, &base).await;

    // Time passing is the behaviour under test here: keep the lease alive for
    // one and a half TTLs.
    let mut last_keep_alive = Instant::now();
    while granted.elapsed() < LEASE_TTL * 3 / 2 {
        sleep(LEASE_TTL / 4).await;
        ok(store.lease_keep_alive(lease).await, "keep-alive");
        last_keep_alive = Instant::now();
    }
    for name in ["a", "b"] {
        assert_eq!(
            present(store, &key(name)).await.lease,
            Some(lease),
            "keep-alives must hold {} past the TTL",
            key(name)
        );
    }

    let mut watch = ok(store.watch(&base, start).await, "watch");
    let events = next_events(&mut watch, 2, LEASE_TTL + PROMPT, "deletes of an expired lease").await;
    let expired_after = last_keep_alive.elapsed();
    let revision = events[0].revision();
    assert_eq!(
        describe(&events),
        [("delete", key("a"), revision), ("delete", key("b"), revision)],
        "expiry deletes the lease's keys in one revision"
    );
    assert!(
        expired_after >= LEASE_TTL / 2,
        "the lease expired {expired_after:?} after its last keep-alive; the TTL is {LEASE_TTL:?}"
    );
    expect_lease_gone(store, &base, lease).await;
}

/// 8 tasks × 50 compare-and-swap increments of one counter: the final value is
/// the number of successful swaps, each value was written once, and swap
/// revisions (fencing tokens) increase with the value.
pub async fn concurrent_compare_and_swap_loses_no_update(store: Arc<dyn KvStore>, prefix: &str) {
    const TASKS: usize = 8;
    const INCREMENTS: usize = 50;
    let key = format!("{prefix}cas/counter");
    ok(store.put(&key, b"0".to_vec(), None).await, "put counter");

    let tasks = (0..TASKS).map(|_| {
        let store = Arc::clone(&store);
        let key = key.clone();
        tokio::spawn(async move {
            let mut swaps: Vec<(u64, Revision)> = Vec::with_capacity(INCREMENTS);
            while swaps.len() < INCREMENTS {
                let seen = present(store.as_ref(), &key).await;
                let value: u64 = String::from_utf8_lossy(&seen.value)
                    .parse()
                    .unwrap_or_else(|e| panic!("counter {key} holds {:?}: {e}", seen.value));
                // Let the other tasks interleave between read and swap.
                tokio::task::yield_now().await;
                let response = ok(
                    store
                        .txn(
                            Txn::new()
                                .when([Compare::mod_revision_is(&key, seen.mod_revision)])
                                .and_then([TxnOp::put(&key, (value + 1).to_string())]),
                        )
                        .await,
                    "compare-and-swap",
                );
                if response.succeeded {
                    swaps.push((value + 1, response.revision));
                }
            }
            swaps
        })
    });
    let finished = match timeout(Duration::from_secs(60), join_all(tasks)).await {
        Ok(finished) => finished,
        Err(_) => panic!("{TASKS} tasks did not finish {INCREMENTS} increments each within 60 s"),
    };
    let mut swaps = Vec::new();
    for task in finished {
        match task {
            Ok(task_swaps) => swaps.extend(task_swaps),
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => panic!("an increment task failed: {error}"),
        }
    }
    let total = (TASKS * INCREMENTS) as u64;
    let counter = present(store.as_ref(), &key).await;
    assert_eq!(
        String::from_utf8_lossy(&counter.value),
        total.to_string(),
        "the counter must equal the number of successful swaps"
    );
    swaps.sort_unstable();
    let values: Vec<u64> = swaps.iter().map(|(value, _)| *value).collect();
    assert!(
        values.iter().copied().eq(1..=total),
        "every value from 1 to {total} must be written by exactly one successful swap"
    );
    assert!(
        swaps.windows(2).all(|pair| pair[0].1 < pair[1].1),
        "swap revisions must increase with the counter (they are fencing tokens)"
    );
    assert_eq!(counter.mod_revision, swaps.last().map_or(0, |(_, revision)| *revision));
}

/// A lease that is gone (revoked or expired): keep-alive and puts fail with
/// `LeaseNotFound`, and a txn putting with it applies nothing.
async fn expect_lease_gone(store: &dyn KvStore, base: &str, lease: LeaseId) {
    match store.lease_keep_alive(lease).await {
        Err(StoreError::LeaseNotFound(id)) => assert_eq!(id, lease),
        other => panic!("keep-alive of a gone lease must fail with LeaseNotFound, got {other:?}"),
    }
    let leased = format!("{base}after/leased");
    match store.put(&leased, b"v".to_vec(), Some(lease)).await {
        Err(StoreError::LeaseNotFound(id)) => assert_eq!(id, lease),
        other => panic!("a put with a gone lease must fail with LeaseNotFound, got {other:?}"),
    }
    let plain = format!("{base}after/plain");
    let txn = Txn::new().and_then([TxnOp::put(&plain, "v"), TxnOp::put_leased(&leased, "v", lease)]);
    match store.txn(txn).await {
        Err(StoreError::LeaseNotFound(_)) => {}
        other => {
            panic!("a txn putting with a gone lease must fail with LeaseNotFound, got {other:?}")
        }
    }
    let written = ok(store.range(&format!("{base}after/")).await, "range");
    assert!(
        written.kvs.is_empty(),
        "a txn failing on its lease must apply nothing: {:?}",
        keys_of(&written.kvs)
    );
}

#[track_caller]
fn ok<T>(result: Result<T, StoreError>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("{what} failed: {error}"),
    }
}

async fn present(store: &dyn KvStore, key: &str) -> KeyValue {
    match store.get(key).await {
        Ok(Some(kv)) => kv,
        Ok(None) => panic!("{key} must exist"),
        Err(error) => panic!("get {key} failed: {error}"),
    }
}

/// The store's revision, read through a range of keys nobody writes.
async fn current_revision(store: &dyn KvStore, base: &str) -> Revision {
    ok(store.range(&format!("{base}\u{1}unused/")).await, "range").revision
}

fn keys_of(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter().map(|kv| kv.key.clone()).collect()
}

fn describe(events: &[WatchEvent]) -> Vec<(&'static str, String, Revision)> {
    events
        .iter()
        .map(|event| match event {
            WatchEvent::Put(kv) => ("put", kv.key.clone(), kv.mod_revision),
            WatchEvent::Delete { key, revision } => ("delete", key.clone(), *revision),
        })
        .collect()
}

/// Reads batches until `count` events arrived (more is an error), checking
/// that revisions never go backwards and that no revision is split across
/// batches.
async fn next_events(watch: &mut WatchStream, count: usize, wait: Duration, what: &str) -> Vec<WatchEvent> {
    let deadline = Instant::now() + wait;
    let mut events: Vec<WatchEvent> = Vec::new();
    while events.len() < count {
        let batch = match tokio::time::timeout_at(deadline, watch.next()).await {
            Ok(Some(Ok(batch))) => batch,
            Ok(Some(Err(error))) => panic!("{what}: the watch failed: {error}"),
            Ok(None) => panic!("{what}: the watch ended"),
            Err(_) => panic!(
                "{what}: {} of {count} events within {wait:?}; got {:?}",
                events.len(),
                describe(&events)
            ),
        };
        assert!(!batch.is_empty(), "{what}: a watch yielded an empty batch");
        assert!(
            batch.windows(2).all(|pair| pair[0].revision() <= pair[1].revision()),
            "{what}: a batch out of revision order: {:?}",
            describe(&batch)
        );
        if let (Some(previous), Some(first)) = (events.last(), batch.first()) {
            assert!(
                previous.revision() < first.revision(),
                "{what}: revision {} continued in a later batch (or went backwards): {:?} then {:?}",
                first.revision(),
                describe(&events),
                describe(&batch)
            );
        }
        events.extend(batch);
    }
    assert_eq!(
        events.len(),
        count,
        "{what}: more events than expected: {:?}",
        describe(&events)
    );
    events
}
