//! The audit log's part of the `LogStore` conformance suite (run by
//! `logstore_suite::run_all`): entries round-trip with every field, are
//! stored once however often they are written, filter by job, actor,
//! action, target and time, come newest first in cursor pages, and are
//! purged by their expiry only.
//!
//! Isolation as in `logstore_suite`: every check's entries carry an actor
//! of their own (`<prefix>-<check>-<random>`), and checks that do not filter
//! by actor also confine themselves to a random hour between 2001 and 2100.
//! The purge check's entries expire days ahead (a store may delete expired
//! entries on its own at any time, as MongoDB's TTL monitor does), later
//! than any other check's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use jiff::{SignedDuration, Timestamp};

use super::logstore_suite::{random_u64, unique_job, window};
use crate::audit::{AuditAction, AuditEntry};
use crate::auth::Role;
use crate::ids::{AuditId, RunId};
use crate::logstore::{AuditQuery, LogStore, LogStoreError};

/// Runs every check, one after another.
pub async fn run_all(store: &dyn LogStore, prefix: &str) {
    audit_entries_round_trip(store, prefix).await;
    audit_writes_are_idempotent(store, prefix).await;
    audit_filters_and_order(store, prefix).await;
    audit_paginates(store, prefix).await;
    malformed_audit_cursors_are_invalid(store, prefix).await;
    purge_audit_follows_expiry(store, prefix).await;
}

/// A full entry (every field set, text that needs escaping) and a minimal
/// one read back equal, as does an entry of every action.
pub async fn audit_entries_round_trip(store: &dyn LogStore, prefix: &str) {
    let actor = unique_actor(prefix, "rt");
    let job = unique_job(prefix, "rt");
    let base = window();
    let mut full = AuditEntry::new(base, &actor, Role::Admin, AuditAction::JobReplace, job.as_str())
        .job(&job)
        .revisions(Some(41), Some(1 << 40))
        .detail("changed: \"quoted\", ünïcödé\nsecond line\t€ $set {dotted.key}");
    full.changed = vec!["kind".to_owned(), "schedule".to_owned()];
    full.runs = vec![RunId::generate(), RunId::generate()];
    full.remote = Some("[2001:db8::1]:54321".to_owned());
    full.forwarded_for = Some("203.0.113.9, 10.0.0.1".to_owned());
    full.expire_at = Some(base + SignedDuration::from_hours(24 * 365 * 200));
    let minimal = AuditEntry::new(
        base + SignedDuration::from_millis(1),
        &actor,
        Role::Viewer,
        AuditAction::SecretDelete,
        "s",
    );
    let mut every = vec![full, minimal];
    for (i, action) in AuditAction::ALL.into_iter().enumerate() {
        let role = [Role::Viewer, Role::Operator, Role::Admin][i % 3];
        every.push(AuditEntry::new(
            base + SignedDuration::from_secs(10 + i as i64),
            &actor,
            role,
            action,
            &format!("target-{i}"),
        ));
    }
    store.write_audit(&[]).await.expect("an empty write is accepted");
    store.write_audit(&every).await.expect("write_audit");
    let page = store
        .audit(&AuditQuery {
            actor: Some(actor.clone()),
            limit: 1000,
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    every.sort_by_key(|entry| std::cmp::Reverse(entry.id));
    assert_eq!(page.entries, every, "entries did not round-trip, newest first");
    assert_eq!(page.next_cursor, None);
}

/// Writing an entry again (alone, or in a batch with new ones) stores it
/// once, and the first write of an id stands.
pub async fn audit_writes_are_idempotent(store: &dyn LogStore, prefix: &str) {
    let actor = unique_actor(prefix, "idem");
    let base = window();
    let first = AuditEntry::new(base, &actor, Role::Operator, AuditAction::Kill, "a").detail("first");
    store.write_audit(std::slice::from_ref(&first)).await.expect("write");
    store
        .write_audit(std::slice::from_ref(&first))
        .await
        .expect("a repeated write succeeds");
    let mut changed = first.clone();
    changed.detail = Some("second".to_owned());
    let second = AuditEntry::new(
        base + SignedDuration::from_secs(1),
        &actor,
        Role::Operator,
        AuditAction::Kill,
        "b",
    );
    store
        .write_audit(&[changed, second.clone()])
        .await
        .expect("a batch with a stored entry succeeds");
    let page = store
        .audit(&AuditQuery {
            actor: Some(actor),
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    assert_eq!(
        page.entries,
        vec![second, first],
        "each entry once, the first write kept"
    );
}

/// Each filter alone and together; `since` includes its instant, `until`
/// excludes it; newest first throughout.
pub async fn audit_filters_and_order(store: &dyn LogStore, prefix: &str) {
    let base = window();
    let alice = unique_actor(prefix, "alice");
    let bob = unique_actor(prefix, "bob");
    let (red, blue) = (unique_job(prefix, "red"), unique_job(prefix, "blue"));
    let at = |secs: i64| base + SignedDuration::from_secs(secs);
    let entries = vec![
        AuditEntry::new(at(1), &alice, Role::Operator, AuditAction::JobCreate, red.as_str()).job(&red),
        AuditEntry::new(at(2), &bob, Role::Admin, AuditAction::JobCreate, blue.as_str()).job(&blue),
        AuditEntry::new(at(3), &alice, Role::Operator, AuditAction::JobPause, red.as_str()).job(&red),
        AuditEntry::new(at(4), &alice, Role::Operator, AuditAction::StateDelete, "counter").job(&blue),
        AuditEntry::new(at(5), &bob, Role::Admin, AuditAction::SecretSet, "counter"),
        AuditEntry::new(at(6), &bob, Role::Admin, AuditAction::JobDelete, red.as_str()).job(&red),
    ];
    store.write_audit(&entries).await.expect("write");
    let pick = |indexes: &[usize]| -> Vec<AuditEntry> { indexes.iter().rev().map(|&i| entries[i].clone()).collect() };
    let window_query = AuditQuery {
        since: Some(base),
        until: Some(base + SignedDuration::from_hours(1)),
        ..AuditQuery::default()
    };
    let cases: Vec<(&str, AuditQuery, Vec<AuditEntry>)> = vec![
        ("the window", window_query.clone(), pick(&[0, 1, 2, 3, 4, 5])),
        (
            "job",
            AuditQuery {
                job: Some(red.clone()),
                ..AuditQuery::default()
            },
            pick(&[0, 2, 5]),
        ),
        (
            "actor",
            AuditQuery {
                actor: Some(alice.clone()),
                ..AuditQuery::default()
            },
            pick(&[0, 2, 3]),
        ),
        (
            "action in the window",
            AuditQuery {
                action: Some(AuditAction::JobCreate),
                ..window_query.clone()
            },
            pick(&[0, 1]),
        ),
        (
            "target in the window",
            AuditQuery {
                target: Some("counter".to_owned()),
                ..window_query.clone()
            },
            pick(&[3, 4]),
        ),
        (
            "job and actor",
            AuditQuery {
                job: Some(red.clone()),
                actor: Some(bob.clone()),
                ..AuditQuery::default()
            },
            pick(&[5]),
        ),
        (
            "since includes, until excludes",
            AuditQuery {
                since: Some(at(2)),
                until: Some(at(5)),
                ..AuditQuery::default()
            },
            pick(&[1, 2, 3]),
        ),
        (
            "since a sub-millisecond instant",
            AuditQuery {
                actor: Some(bob.clone()),
                since: Some(at(2) + SignedDuration::from_nanos(1)),
                ..AuditQuery::default()
            },
            pick(&[4, 5]),
        ),
        (
            "nothing matches",
            AuditQuery {
                job: Some(blue.clone()),
                actor: Some(bob.clone()),
                action: Some(AuditAction::Kill),
                ..AuditQuery::default()
            },
            vec![],
        ),
    ];
    for (what, query, want) in cases {
        let page = store.audit(&query).await.expect("audit");
        assert_eq!(page.entries, want, "{what}");
        assert_eq!(page.next_cursor, None, "{what}");
    }
}

/// Pages of `limit` entries, newest first, each entry exactly once, also
/// when many share a millisecond and when newer entries arrive between
/// pages; a limit of 0 means the default page.
pub async fn audit_paginates(store: &dyn LogStore, prefix: &str) {
    let actor = unique_actor(prefix, "page");
    let base = window();
    let mut entries: Vec<AuditEntry> = (0..25)
        .map(|i| {
            // Five entries per millisecond: the id's random part orders them.
            let at = base + SignedDuration::from_millis(i / 5);
            let mut entry = AuditEntry::new(at, &actor, Role::Operator, AuditAction::RunNow, "j");
            entry.id = AuditId::from_parts(entry.id.unix_ms(), u128::from(random_u64()));
            entry
        })
        .collect();
    store.write_audit(&entries).await.expect("write");
    entries.sort_by_key(|entry| std::cmp::Reverse(entry.id));
    let mut seen = Vec::new();
    let mut cursor = None;
    for page_number in 0.. {
        let page = store
            .audit(&AuditQuery {
                actor: Some(actor.clone()),
                limit: 7,
                cursor: cursor.clone(),
                ..AuditQuery::default()
            })
            .await
            .expect("audit");
        assert!(page.entries.len() <= 7);
        seen.extend(page.entries);
        if page_number == 0 {
            // A newer entry arrives after the first page: later pages go on
            // where the first ended, without it.
            let newer = AuditEntry::new(
                base + SignedDuration::from_secs(60),
                &actor,
                Role::Admin,
                AuditAction::Kill,
                "j",
            );
            store.write_audit(&[newer]).await.expect("write");
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, entries, "every entry once, in order");
    let page = store
        .audit(&AuditQuery {
            actor: Some(actor.clone()),
            limit: 0,
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    assert_eq!(page.entries.len(), 26, "limit 0 is the default page");
}

pub async fn malformed_audit_cursors_are_invalid(store: &dyn LogStore, prefix: &str) {
    let actor = unique_actor(prefix, "cursor");
    for cursor in ["", "garbage", "12345_01JD0000000000000000000000", "%00%ff", "😀"] {
        let query = AuditQuery {
            actor: Some(actor.clone()),
            cursor: Some(cursor.to_owned()),
            ..AuditQuery::default()
        };
        match store.audit(&query).await {
            Err(LogStoreError::Invalid(message)) => assert_eq!(message, "invalid cursor", "cursor {cursor:?}"),
            other => panic!("cursor {cursor:?} gave {other:?}; expected Invalid(\"invalid cursor\")"),
        }
    }
}

/// `purge_audit` deletes the entries that expired before its cut-off and
/// keeps those that expire later and those without an expiry.
pub async fn purge_audit_follows_expiry(store: &dyn LogStore, prefix: &str) {
    let actor = unique_actor(prefix, "purge");
    // Days ahead, so that no store expires them on its own first, and no
    // other check's entries expire before it.
    let cutoff = Timestamp::now()
        + SignedDuration::from_hours(24 * 10)
        + SignedDuration::from_millis((random_u64() % 3_600_000) as i64);
    let cutoff = Timestamp::from_millisecond(cutoff.as_millisecond()).unwrap();
    let base = window();
    let entry = |n: i64, expire_at: Option<Timestamp>| {
        let mut entry = AuditEntry::new(
            base + SignedDuration::from_secs(n),
            &actor,
            Role::Operator,
            AuditAction::ModuleDelete,
            &format!("m{n}"),
        );
        entry.expire_at = expire_at;
        entry
    };
    let expired = [
        entry(1, Some(cutoff - SignedDuration::from_secs(60))),
        entry(2, Some(cutoff - SignedDuration::from_millis(1))),
    ];
    let kept = [
        entry(3, Some(cutoff)),
        entry(4, None),
        entry(5, Some(cutoff + SignedDuration::from_hours(24))),
    ];
    store.write_audit(&expired).await.expect("write");
    store.write_audit(&kept).await.expect("write");
    let deleted = store.purge_audit(cutoff).await.expect("purge_audit");
    assert!(deleted >= 2, "purged {deleted} entries; 2 had expired");
    let page = store
        .audit(&AuditQuery {
            actor: Some(actor),
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    let mut want = kept.to_vec();
    want.reverse();
    assert_eq!(page.entries, want, "only the expired entries are gone");
}

/// An actor name unique to one call of one check.
fn unique_actor(prefix: &str, check: &str) -> String {
    unique_job(prefix, check).to_string()
}
