//! The embedded coordination store behind `sandcron dev`: etcd v3 semantics
//! (one revision counter, compare-and-swap transactions, resumable prefix
//! watches, leases) served from memory, with the keys that carry no lease made
//! durable in a SQLite file by a group-commit thread.
//!
//! What it must not do: hold a lock across an await; return from a
//! transaction that changed a persisted key before the SQLite commit holding
//! that change; grow without bound (watch history is capped by events and
//! bytes, every watcher by a bounded channel — a watcher that falls behind is
//! told so and dropped); panic on a dead disk thread; stop on a poisoned lock
//! (the one poison policy is `crate::sync`'s).
//!
//! Durability, precisely: a write is applied in memory (and seen by readers
//! and watchers in this process) first, then committed; its transaction
//! returns after the commit, so an acknowledged write survives a crash, and a
//! crash in between loses it along with everything in the process that saw
//! it. Revisions that touched only leased keys are recorded without anyone
//! waiting, so the revision never goes backwards across a clean restart and,
//! after a crash, stays at or above every durable write's revision.
//!
//! The store and its [`KvStore`] implementation live here; the rest is one
//! concept a file: `state` (keys, revisions and how a transaction changes
//! them, all behind the one lock), `txn` (checking a transaction before the
//! lock is taken), `watch` (the watch history and the watchers), `lease`
//! (leases and their expiry task) and `disk` (the SQLite file and its
//! group-commit thread).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::disk::{Disk, open_database};
use self::state::{Entry, State};
use self::txn::PreparedTxn;
use self::watch::{EmbeddedWatch, Watcher};
use crate::coord::{KeyValue, KvStore, LeaseId, RangeResult, Revision, StoreError, Txn, TxnResponse, WatchStream};

mod disk;
mod lease;
mod state;
#[cfg(test)]
mod tests;
mod txn;
mod watch;

/// Watch history kept by default, in events (across all keys).
pub const DEFAULT_HISTORY_EVENTS: usize = 10_000;

/// Watch history kept by default, in bytes of keys and values. Module chunks
/// are up to 1 MiB each, so the event count alone would not bound memory.
pub const DEFAULT_HISTORY_BYTES: usize = 64 * 1024 * 1024;

/// Revisions a watcher may have queued and unread before it is dropped.
pub const DEFAULT_WATCH_BUFFER: usize = 1024;

/// The in-process [`KvStore`]: see the module documentation.
pub struct EmbeddedStore {
    state: Mutex<State>,
    /// The newest revision committed to disk (persistent stores only).
    durable: Option<Arc<AtomicI64>>,
    /// Wakes the lease-expiry task when a lease may expire earlier than the
    /// one it sleeps for.
    lease_wake: Arc<Notify>,
    /// Started by the first `lease_grant`, so that constructing a store does
    /// not need a tokio runtime.
    lease_task: Mutex<Option<JoinHandle<()>>>,
    this: Weak<EmbeddedStore>,
}

/// Options for an [`EmbeddedStore`]; finish with [`in_memory`](Self::in_memory)
/// or [`open`](Self::open).
#[derive(Debug, Clone)]
pub struct EmbeddedStoreBuilder {
    history_events: usize,
    history_bytes: usize,
    watch_buffer: usize,
}

impl Default for EmbeddedStoreBuilder {
    fn default() -> Self {
        Self {
            history_events: DEFAULT_HISTORY_EVENTS,
            history_bytes: DEFAULT_HISTORY_BYTES,
            watch_buffer: DEFAULT_WATCH_BUFFER,
        }
    }
}

impl EmbeddedStoreBuilder {
    /// Watch history kept, in events; older revisions are compacted away.
    pub fn history_events(mut self, events: usize) -> Self {
        self.history_events = events;
        self
    }

    /// Watch history kept, in bytes of keys and values.
    pub fn history_bytes(mut self, bytes: usize) -> Self {
        self.history_bytes = bytes;
        self
    }

    /// Revisions one watcher may have queued and unread before it gets an
    /// error and is dropped (at least 1).
    pub fn watch_buffer(mut self, revisions: usize) -> Self {
        self.watch_buffer = revisions.max(1);
        self
    }

    /// A store that keeps nothing on disk (tests, benchmarks).
    pub fn in_memory(self) -> Arc<EmbeddedStore> {
        EmbeddedStore::start(State::new(&self, 0, BTreeMap::new(), None), None)
    }

    /// A store persisted to the SQLite file at `path` (created if missing).
    /// The file is locked for as long as the store lives: a second store on
    /// the same file fails with [`StoreError::Unavailable`].
    pub fn open(self, path: &Path) -> Result<Arc<EmbeddedStore>, StoreError> {
        let (connection, revision, keys) = open_database(path)?;
        let (disk, durable) = Disk::start(connection, revision)?;
        Ok(EmbeddedStore::start(
            State::new(&self, revision, keys, Some(disk)),
            Some(durable),
        ))
    }
}

impl EmbeddedStore {
    pub fn builder() -> EmbeddedStoreBuilder {
        EmbeddedStoreBuilder::default()
    }

    /// A store persisted to the SQLite file at `path`, with default options.
    pub fn open(path: &Path) -> Result<Arc<EmbeddedStore>, StoreError> {
        Self::builder().open(path)
    }

    /// A store that keeps nothing on disk, with default options.
    pub fn in_memory() -> Arc<EmbeddedStore> {
        Self::builder().in_memory()
    }

    /// The newest revision known to be committed to disk; `None` for an
    /// in-memory store. Every acknowledged write to an unleased key is at or
    /// below it.
    pub fn durable_revision(&self) -> Option<Revision> {
        self.durable.as_ref().map(|durable| durable.load(Ordering::Acquire))
    }

    fn start(state: State, durable: Option<Arc<AtomicI64>>) -> Arc<Self> {
        Arc::new_cyclic(|this| EmbeddedStore {
            state: Mutex::new(state),
            durable,
            lease_wake: Arc::new(Notify::new()),
            lease_task: Mutex::new(None),
            this: this.clone(),
        })
    }

    fn locked(&self) -> MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }

    #[cfg(test)]
    fn watcher_count(&self) -> usize {
        crate::sync::lock(&self.state).watchers.len()
    }
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("EmbeddedStore");
        if let Ok(state) = self.state.try_lock() {
            debug
                .field("revision", &state.revision)
                .field("keys", &state.keys.len());
        }
        debug
            .field("durable_revision", &self.durable_revision())
            .finish_non_exhaustive()
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        let task = crate::sync::get_mut(&mut self.lease_task);
        if let Some(task) = task.take() {
            task.abort();
        }
        // Closing the queue lets the disk writer finish what is queued (leased
        // writes' revision bumps; every awaited commit is done by now, since a
        // waiting transaction holds a reference) and release the file, so the
        // same path can be reopened as soon as this returns. That is at most
        // one SQLite commit of blocking.
        let state = crate::sync::get_mut(&mut self.state);
        if let Some(disk) = state.disk.take() {
            disk.close();
        }
    }
}

#[async_trait]
impl KvStore for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        // Only the `Arc` of the value is cloned under the lock; copying a
        // value of up to 1 MiB happens after it is released.
        let entry = self.locked().keys.get(key).cloned();
        Ok(entry.map(|entry| entry.to_key_value(key)))
    }

    async fn range(&self, prefix: &str) -> Result<RangeResult, StoreError> {
        let (entries, revision) = {
            let state = self.locked();
            let entries: Vec<(String, Entry)> = state
                .keys
                .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                .take_while(|(key, _)| key.starts_with(prefix))
                .map(|(key, entry)| (key.clone(), entry.clone()))
                .collect();
            (entries, state.revision)
        };
        let kvs = entries.iter().map(|(key, entry)| entry.to_key_value(key)).collect();
        Ok(RangeResult { kvs, revision })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        let txn = PreparedTxn::new(txn)?;
        let (response, commit) = {
            let mut state = self.locked();
            state.ensure_writable()?;
            state.expire_leases(Instant::now());
            state.apply(txn)?
        };
        if let Some(commit) = commit {
            match commit.await {
                Ok(outcome) => outcome?,
                Err(_) => {
                    return Err(StoreError::Unavailable(
                        "embedded store disk writer stopped before committing the write".into(),
                    ));
                }
            }
        }
        Ok(response)
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        if after < 0 {
            return Err(StoreError::Invalid(format!("watch revision {after} is negative")));
        }
        let mut state = self.locked();
        let Some(replay) = state.history.since(prefix, after) else {
            let compacted = StoreError::Compacted {
                requested: after.saturating_add(1),
                compact_revision: state.history.floor.saturating_add(1),
            };
            return Ok(Box::pin(futures::stream::iter([Err(compacted)])));
        };
        let (sender, live) = mpsc::channel(state.watch_buffer);
        let lagged = Arc::new(AtomicI64::new(0));
        let id = state.next_watcher_id;
        state.next_watcher_id += 1;
        state.watchers.insert(
            id,
            Watcher {
                prefix: prefix.to_owned(),
                sender,
                lagged: Arc::clone(&lagged),
            },
        );
        drop(state);
        Ok(Box::pin(EmbeddedWatch {
            id,
            prefix: prefix.to_owned(),
            after,
            replay,
            live,
            lagged,
            store: self.this.clone(),
            finished: false,
        }))
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        if ttl.is_zero() {
            return Err(StoreError::Invalid("lease ttl must be positive".into()));
        }
        self.ensure_lease_task()?;
        let id = self.locked().grant_lease(ttl, Instant::now())?;
        // The new lease may be due before the one the expiry task sleeps for.
        self.lease_wake.notify_one();
        Ok(id)
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut state = self.locked();
        let now = Instant::now();
        state.expire_leases(now);
        state.keep_lease_alive(lease, now)
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.locked().revoke_lease(lease);
        Ok(())
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut state = self.locked();
        if revision > state.revision {
            return Err(StoreError::Invalid(format!(
                "cannot compact at revision {revision}: the store is at revision {}",
                state.revision
            )));
        }
        state.history.compact(revision);
        Ok(())
    }
}
