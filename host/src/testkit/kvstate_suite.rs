//! The key-value state conformance suite: `Coordinator`'s fenced state
//! operations (what a guest reaches through `wasi:keyvalue`) checked over
//! any `KvStore` — isolation between jobs, the fence, the quotas, counters,
//! paged listings, operators' reads and deletes, and state deleted with its
//! job. Run by `coordinator_suite::run_all`, so against the embedded store
//! and etcd alike.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use jiff::Timestamp;

use crate::auth::Role;
use crate::coord::{Coordinator, KvStore};
use crate::ids::JobName;
use crate::job::{JobKind, JobMeta, JobRecord, JobSpec, ShellJob};
use crate::kvstate::{KEYS_PER_PAGE, StateError, StateKey, StateQuota, StateUsage};

/// Runs every check.
pub async fn run_all(store: Arc<dyn KvStore>, prefix: &str) {
    jobs_never_see_each_other_s_state(store.clone(), &format!("{prefix}isolation/")).await;
    a_superseded_run_cannot_write(store.clone(), &format!("{prefix}fence/")).await;
    quotas_bound_keys_values_and_bytes(store.clone(), &format!("{prefix}quota/")).await;
    counters_increment_atomically(store.clone(), &format!("{prefix}counter/")).await;
    keys_are_listed_in_pages(store.clone(), &format!("{prefix}pages/")).await;
    operators_read_and_delete_state(store.clone(), &format!("{prefix}operator/")).await;
    deleting_a_job_deletes_its_state(store, &format!("{prefix}deleted/")).await;
}

fn key(text: &str) -> StateKey {
    StateKey::new(text).unwrap()
}

/// Creates a job called `name` (state writes need the job to exist).
async fn job(coord: &Coordinator, name: &str) -> JobName {
    let name = JobName::new(name).unwrap();
    let now = Timestamp::now();
    let record = JobRecord {
        spec: JobSpec::new(
            "@daily",
            JobKind::Shell(ShellJob {
                command: "true".into(),
                env: Default::default(),
                timeout_s: 1,
                output_kb: 1,
            }),
        ),
        meta: JobMeta {
            created_at: now,
            updated_at: now,
            active_since: now,
            written_by: Role::Admin,
        },
    };
    coord
        .put_job(&name, &record, None, false)
        .await
        .unwrap()
        .expect("written");
    name
}

/// A job's keys live under its own prefix: the same key in two jobs are
/// two values, and a key spelled like a path stays inside its job.
pub async fn jobs_never_see_each_other_s_state(store: Arc<dyn KvStore>, prefix: &str) {
    let coord = Coordinator::new(store.clone(), prefix);
    let quota = StateQuota::default();
    let (victim, thief) = (job(&coord, "victim").await, job(&coord, "thief").await);
    coord.state_open(&victim, 10, &quota).await.unwrap();
    coord.state_open(&thief, 10, &quota).await.unwrap();
    coord
        .state_set(&victim, 10, &quota, &key("secret"), b"victim's".to_vec())
        .await
        .unwrap();
    coord
        .state_set(&thief, 10, &quota, &key("secret"), b"thief's".to_vec())
        .await
        .unwrap();
    for path in [
        "../victim/k/secret",
        "../../kv/victim/k/secret",
        "/victim/secret",
        "victim/k/secret",
    ] {
        assert_eq!(coord.state_get(&thief, &key(path)).await.unwrap(), None, "{path}");
        coord
            .state_set(&thief, 10, &quota, &key(path), b"planted".to_vec())
            .await
            .unwrap();
    }
    assert_eq!(
        coord.state_get(&victim, &key("secret")).await.unwrap().as_deref(),
        Some(&b"victim's"[..])
    );
    let victims: Vec<String> = coord
        .state_listing(&victim)
        .await
        .unwrap()
        .entries
        .iter()
        .map(|entry| entry.key.to_string())
        .collect();
    assert_eq!(
        victims,
        vec!["secret".to_owned()],
        "nothing was planted in the victim's state"
    );
    let thieves = coord.state_listing(&thief).await.unwrap().entries;
    assert_eq!(thieves.len(), 5, "the path-like keys are the thief's own keys");
    assert!(thieves.iter().any(|entry| entry.key.as_str() == "../victim/k/secret"));
    // Every store key of the state is under the job's prefix.
    let all = store.range(&format!("{prefix}kv/")).await.unwrap();
    for kv in &all.kvs {
        assert!(
            kv.key.starts_with(&format!("{prefix}kv/victim/")) || kv.key.starts_with(&format!("{prefix}kv/thief/")),
            "{}",
            kv.key
        );
    }
    assert_eq!(all.kvs.len(), 2 + 1 + 5, "two metas, one victim key, five thief keys");
}

/// The newest fence that touched the state owns it: an older run is
/// refused at open and on every write, and the newer run's value stays.
pub async fn a_superseded_run_cannot_write(store: Arc<dyn KvStore>, prefix: &str) {
    let coord = Coordinator::new(store, prefix);
    let quota = StateQuota::default();
    let job = job(&coord, "fenced").await;
    let owner = key("owner");
    // The old run opens first and writes.
    coord.state_open(&job, 100, &quota).await.unwrap();
    coord
        .state_set(&job, 100, &quota, &owner, b"old".to_vec())
        .await
        .unwrap();
    // A newer run (a later claim) opens and writes.
    coord.state_open(&job, 200, &quota).await.unwrap();
    coord
        .state_set(&job, 200, &quota, &owner, b"new".to_vec())
        .await
        .unwrap();
    // The old run wakes up: every write is refused, naming the newer fence.
    let superseded = StateError::Superseded { fence: 100, newer: 200 };
    assert_eq!(
        coord.state_set(&job, 100, &quota, &owner, b"zombie".to_vec()).await,
        Err(superseded.clone())
    );
    assert!(
        superseded
            .to_string()
            .starts_with("superseded by a newer run (fence 200)")
    );
    assert_eq!(
        coord.state_increment(&job, 100, &quota, &key("n"), 1).await,
        Err(superseded.clone())
    );
    assert_eq!(
        coord.state_delete(&job, 100, &quota, &owner).await,
        Err(superseded.clone())
    );
    assert_eq!(
        coord.state_delete(&job, 100, &quota, &key("missing")).await,
        Err(superseded.clone()),
        "even a delete that would change nothing"
    );
    assert_eq!(coord.state_open(&job, 100, &quota).await, Err(superseded));
    // Reads are not fenced; the stored value is the newer run's.
    assert_eq!(
        coord.state_get(&job, &owner).await.unwrap().as_deref(),
        Some(&b"new"[..])
    );
    // The newer run, and any later one, still writes.
    coord
        .state_set(&job, 200, &quota, &owner, b"newer".to_vec())
        .await
        .unwrap();
    coord.state_open(&job, 300, &quota).await.unwrap();
    assert_eq!(
        coord.state_set(&job, 200, &quota, &owner, b"late".to_vec()).await,
        Err(StateError::Superseded { fence: 200, newer: 300 })
    );
    let listing = coord.state_listing(&job).await.unwrap();
    assert_eq!(listing.meta.map(|meta| meta.fence), Some(300));
    // Clearing the state keeps the fence: the old runs stay locked out.
    assert_eq!(coord.state_clear(&job).await.unwrap(), 1);
    assert_eq!(
        coord.state_set(&job, 200, &quota, &owner, b"late".to_vec()).await,
        Err(StateError::Superseded { fence: 200, newer: 300 })
    );
}

/// Keys per job, bytes per value and bytes per job are each refused with
/// their own error; deleting frees quota.
pub async fn quotas_bound_keys_values_and_bytes(store: Arc<dyn KvStore>, prefix: &str) {
    let coord = Coordinator::new(store, prefix);
    let quota = StateQuota {
        max_keys: 3,
        max_value_bytes: 100,
        max_job_bytes: 250,
    };
    let job = job(&coord, "bounded").await;
    coord.state_open(&job, 1, &quota).await.unwrap();
    assert_eq!(
        coord.state_set(&job, 1, &quota, &key("big"), vec![0; 101]).await,
        Err(StateError::ValueTooLarge { size: 101, limit: 100 })
    );
    for name in ["a", "b", "c"] {
        coord.state_set(&job, 1, &quota, &key(name), vec![1; 80]).await.unwrap();
    }
    assert_eq!(
        coord.state_set(&job, 1, &quota, &key("d"), Vec::new()).await,
        Err(StateError::TooManyKeys { limit: 3 })
    );
    let usage = coord.state_listing(&job).await.unwrap().meta.unwrap().usage;
    assert_eq!(usage, StateUsage { keys: 3, bytes: 3 * 81 });
    // 243 bytes: growing "a" by 8 bytes would make 251.
    assert_eq!(
        coord.state_set(&job, 1, &quota, &key("a"), vec![1; 88]).await,
        Err(StateError::JobTooLarge { size: 251, limit: 250 })
    );
    coord.state_set(&job, 1, &quota, &key("a"), vec![1; 87]).await.unwrap();
    // Deleting frees a key and its bytes.
    coord.state_delete(&job, 1, &quota, &key("c")).await.unwrap();
    let usage = coord.state_listing(&job).await.unwrap().meta.unwrap().usage;
    assert_eq!(
        usage,
        StateUsage {
            keys: 2,
            bytes: 88 + 81
        }
    );
    coord.state_set(&job, 1, &quota, &key("d"), vec![1; 50]).await.unwrap();
    // An operator's delete frees quota too.
    assert!(coord.state_remove(&job, &key("d")).await.unwrap());
    coord.state_set(&job, 1, &quota, &key("e"), vec![1; 50]).await.unwrap();
    let listing = coord.state_listing(&job).await.unwrap();
    let meta = listing.meta.unwrap();
    assert_eq!(
        meta.usage,
        StateUsage {
            keys: 3,
            bytes: 88 + 81 + 51
        }
    );
    assert_eq!(meta.quota, Some(quota), "the quota the last write was checked against");
    // The counters match what is stored.
    let stored: u64 = listing.entries.iter().map(|entry| entry.key.len() + entry.size).sum();
    assert_eq!(stored, meta.usage.bytes);
    assert_eq!(listing.entries.len() as u64, meta.usage.keys);
}

/// `increment` counts from 0, keeps decimal text, refuses what is not a
/// counter, and loses no update among concurrent ones.
pub async fn counters_increment_atomically(store: Arc<dyn KvStore>, prefix: &str) {
    let coord = Coordinator::new(store, prefix);
    let quota = StateQuota::default();
    let job = job(&coord, "counting").await;
    let count = key("count");
    coord.state_open(&job, 5, &quota).await.unwrap();
    assert_eq!(coord.state_increment(&job, 5, &quota, &count, 1).await, Ok(1));
    assert_eq!(coord.state_increment(&job, 5, &quota, &count, 41).await, Ok(42));
    assert_eq!(
        coord.state_get(&job, &count).await.unwrap().as_deref(),
        Some(&b"42"[..])
    );
    let adds = (0..8).map(|_| coord.state_increment(&job, 5, &quota, &count, 1));
    let results = futures::future::join_all(adds).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        coord.state_get(&job, &count).await.unwrap().as_deref(),
        Some(&b"50"[..])
    );
    coord
        .state_set(&job, 5, &quota, &key("text"), b"hello".to_vec())
        .await
        .unwrap();
    assert_eq!(
        coord.state_increment(&job, 5, &quota, &key("text"), 1).await,
        Err(StateError::NotACounter(key("text")))
    );
    let usage = coord.state_listing(&job).await.unwrap().meta.unwrap().usage;
    assert_eq!(
        usage,
        StateUsage {
            keys: 2,
            bytes: 5 + 2 + 4 + 5
        }
    );
}

/// Listing pages through every key once, in key order, with a cursor.
pub async fn keys_are_listed_in_pages(store: Arc<dyn KvStore>, prefix: &str) {
    let coord = Coordinator::new(store, prefix);
    // More keys than the default quota allows, to make three pages.
    let quota = StateQuota {
        max_keys: 1000,
        ..StateQuota::default()
    };
    let job = job(&coord, "paged").await;
    coord.state_open(&job, 1, &quota).await.unwrap();
    let empty = coord.state_keys(&job, None).await.unwrap();
    assert!(empty.keys.is_empty() && empty.cursor.is_none());
    let count = KEYS_PER_PAGE * 2 + 7;
    for i in 0..count {
        coord
            .state_set(&job, 1, &quota, &key(&format!("key/{i:04}")), Vec::new())
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = coord.state_keys(&job, cursor).await.unwrap();
        pages += 1;
        seen.extend(page.keys.iter().map(|key| key.to_string()));
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..count).map(|i| format!("key/{i:04}")).collect();
    assert_eq!(seen, expected);
    // A cursor past the end is an empty last page, not an error.
    let past = coord.state_keys(&job, Some(u64::MAX)).await.unwrap();
    assert!(past.keys.is_empty() && past.cursor.is_none());
}

/// Operators read values with their revisions, delete one key or all.
pub async fn operators_read_and_delete_state(store: Arc<dyn KvStore>, prefix: &str) {
    let coord = Coordinator::new(store, prefix);
    let quota = StateQuota::default();
    let job = job(&coord, "operated").await;
    let untouched = coord.state_listing(&job).await.unwrap();
    assert_eq!((untouched.meta, untouched.entries.len()), (None, 0));
    coord.state_open(&job, 7, &quota).await.unwrap();
    coord
        .state_set(&job, 7, &quota, &key("a"), b"1".to_vec())
        .await
        .unwrap();
    coord
        .state_set(&job, 7, &quota, &key("b"), b"22".to_vec())
        .await
        .unwrap();
    let (value, revision) = coord.state_value(&job, &key("b")).await.unwrap().unwrap();
    assert_eq!(value, b"22");
    let listing = coord.state_listing(&job).await.unwrap();
    assert_eq!(listing.entries[1].revision, revision);
    assert_eq!(listing.entries[1].size, 2);
    assert!(coord.state_value(&job, &key("c")).await.unwrap().is_none());
    assert!(coord.state_remove(&job, &key("a")).await.unwrap());
    assert!(!coord.state_remove(&job, &key("a")).await.unwrap(), "already gone");
    assert_eq!(coord.state_clear(&job).await.unwrap(), 1);
    let cleared = coord.state_listing(&job).await.unwrap();
    assert!(cleared.entries.is_empty());
    assert_eq!(
        cleared.meta.map(|meta| (meta.fence, meta.usage)),
        Some((7, StateUsage::default()))
    );
    // The owning run goes on writing after a clear.
    coord
        .state_set(&job, 7, &quota, &key("a"), b"again".to_vec())
        .await
        .unwrap();
}

/// Deleting a job deletes its state; a run of the deleted job can no
/// longer write (no orphan state for a later job of the same name).
pub async fn deleting_a_job_deletes_its_state(store: Arc<dyn KvStore>, prefix: &str) {
    let coord = Coordinator::new(store.clone(), prefix);
    let quota = StateQuota::default();
    let job = job(&coord, "doomed").await;
    let other = self::job(&coord, "doomed-not").await;
    coord.state_open(&job, 3, &quota).await.unwrap();
    coord
        .state_set(&job, 3, &quota, &key("k"), b"v".to_vec())
        .await
        .unwrap();
    coord.state_open(&other, 3, &quota).await.unwrap();
    coord
        .state_set(&other, 3, &quota, &key("k"), b"v".to_vec())
        .await
        .unwrap();
    assert!(coord.delete_job(&job).await.unwrap());
    assert!(
        store
            .range(&format!("{prefix}kv/doomed/"))
            .await
            .unwrap()
            .kvs
            .is_empty(),
        "the state went with the job"
    );
    assert_eq!(
        coord.state_listing(&other).await.unwrap().entries.len(),
        1,
        "a job whose name starts alike keeps its state"
    );
    assert_eq!(
        coord.state_set(&job, 3, &quota, &key("k"), b"orphan".to_vec()).await,
        Err(StateError::JobGone("doomed".to_owned()))
    );
    assert_eq!(
        coord.state_open(&job, 4, &quota).await,
        Err(StateError::JobGone("doomed".to_owned()))
    );
    assert!(
        store
            .range(&format!("{prefix}kv/doomed/"))
            .await
            .unwrap()
            .kvs
            .is_empty()
    );
}
