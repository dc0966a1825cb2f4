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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::ops::Bound;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak, mpsc as std_mpsc};
use std::task::{Context, Poll};
use std::thread;
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;
use rusqlite::{Connection, ErrorCode, params};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::coord::{
    Compare, KeyValue, KvStore, LeaseId, MAX_TXN_OPS, MAX_VALUE_BYTES, RangeResult, Revision, StoreError, Txn, TxnOp,
    TxnResponse, WatchEvent, WatchStream,
};

/// Watch history kept by default, in events (across all keys).
pub const DEFAULT_HISTORY_EVENTS: usize = 10_000;

/// Watch history kept by default, in bytes of keys and values. Module chunks
/// are up to 1 MiB each, so the event count alone would not bound memory.
pub const DEFAULT_HISTORY_BYTES: usize = 64 * 1024 * 1024;

/// Revisions a watcher may have queued and unread before it is dropped.
pub const DEFAULT_WATCH_BUFFER: usize = 1024;

/// How long `open` waits for another holder of the file to let go of it: long
/// enough for a previous `sandcron dev` that is still exiting, short enough to
/// tell a user promptly that the data directory is in use.
const LOCK_WAIT: Duration = Duration::from_secs(1);

/// The most transactions one SQLite commit takes, so one commit stays short.
const MAX_GROUP_COMMIT: usize = 1024;

/// The on-disk format this code writes, kept in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;

/// Bytes a history event costs beyond its key and value (a rough figure, so
/// that many tiny events still count against the byte budget).
const EVENT_OVERHEAD_BYTES: usize = 64;

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
        let failure = Arc::new(OnceLock::new());
        let durable = Arc::new(AtomicI64::new(revision));
        let (queue, commits) = std_mpsc::channel();
        let thread = {
            let failure = Arc::clone(&failure);
            let durable = Arc::clone(&durable);
            thread::Builder::new()
                .name("sandcron-kv-disk".to_owned())
                .spawn(move || run_disk_writer(connection, commits, failure, durable))
                .map_err(|e| StoreError::Unavailable(format!("cannot start the embedded store disk writer: {e}")))?
        };
        let disk = Disk {
            queue,
            failure,
            thread: Some(thread),
        };
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

    /// Starts the expiry task unless it runs. It holds only a `Weak` to the
    /// store, so it ends when the store is dropped.
    fn ensure_lease_task(&self) -> Result<(), StoreError> {
        let mut task = crate::sync::lock(&self.lease_task);
        if task.as_ref().is_some_and(|task| !task.is_finished()) {
            return Ok(());
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| StoreError::Other("embedded store leases need a tokio runtime to expire".into()))?;
        *task = Some(runtime.spawn(run_lease_expiry(self.this.clone(), Arc::clone(&self.lease_wake))));
        Ok(())
    }

    /// Expires due leases; returns when the next one is due.
    fn expire_due_leases(&self) -> Result<Option<Instant>, StoreError> {
        let mut state = self.locked();
        state.expire_leases(Instant::now());
        Ok(state.next_lease_deadline())
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

/// A stored value. The value is shared (`Arc`) between the map, the watch
/// history and the disk queue, so a 1 MiB module chunk exists once in memory.
#[derive(Debug, Clone)]
struct Entry {
    value: Arc<Vec<u8>>,
    create_revision: Revision,
    mod_revision: Revision,
    lease: Option<LeaseId>,
}

impl Entry {
    fn to_key_value(&self, key: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: self.value.as_ref().clone(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            lease: self.lease,
        }
    }
}

/// Everything behind the store's one lock.
struct State {
    revision: Revision,
    keys: BTreeMap<String, Entry>,
    history: History,
    leases: HashMap<LeaseId, Lease>,
    /// Lease deadlines in order, so expiry and "when is the next one due" are
    /// O(log n) instead of a scan per transaction.
    deadlines: BTreeSet<(Instant, LeaseId)>,
    next_lease_id: i64,
    watchers: HashMap<u64, Watcher>,
    next_watcher_id: u64,
    watch_buffer: usize,
    /// `None` for an in-memory store, and after the store is dropped.
    disk: Option<Disk>,
}

struct Lease {
    ttl: Duration,
    deadline: Instant,
    /// The keys attached to this lease now (a key re-put without it leaves).
    keys: BTreeSet<String>,
}

struct Watcher {
    prefix: String,
    sender: mpsc::Sender<Arc<RevisionEvents>>,
    /// Set to the first revision the watcher missed when its buffer was full.
    lagged: Arc<AtomicI64>,
}

/// The events of one revision, shared by the history and every watcher.
#[derive(Debug)]
struct RevisionEvents {
    revision: Revision,
    events: Vec<Event>,
    bytes: usize,
}

#[derive(Debug)]
enum Event {
    Put { key: String, entry: Entry },
    Delete { key: String },
}

impl Event {
    fn key(&self) -> &str {
        match self {
            Event::Put { key, .. } | Event::Delete { key } => key,
        }
    }

    fn bytes(&self) -> usize {
        EVENT_OVERHEAD_BYTES
            + match self {
                Event::Put { key, entry } => key.len() + entry.value.len(),
                Event::Delete { key } => key.len(),
            }
    }
}

/// The changes one write makes, gathered before they are published.
struct Changes {
    revision: Revision,
    events: Vec<Event>,
    disk: Vec<DiskWrite>,
}

impl State {
    fn new(
        options: &EmbeddedStoreBuilder,
        revision: Revision,
        keys: BTreeMap<String, Entry>,
        disk: Option<Disk>,
    ) -> Self {
        State {
            revision,
            keys,
            // Nothing before the opening revision can be replayed.
            history: History::new(options, revision),
            leases: HashMap::new(),
            deadlines: BTreeSet::new(),
            next_lease_id: 1,
            watchers: HashMap::new(),
            next_watcher_id: 0,
            watch_buffer: options.watch_buffer.max(1),
            disk,
        }
    }

    /// Refuses writes once the disk writer has failed: memory would otherwise
    /// drift further from what survives a restart.
    fn ensure_writable(&self) -> Result<(), StoreError> {
        match self.disk.as_ref().and_then(|disk| disk.failure.get()) {
            Some(reason) => Err(StoreError::Unavailable(format!(
                "embedded store cannot persist writes: {reason}"
            ))),
            None => Ok(()),
        }
    }

    fn compare_holds(&self, compare: &Compare) -> bool {
        let entry = self.keys.get(compare.key());
        match compare {
            Compare::ModRevision { op, revision, .. } => {
                op.holds(entry.map_or(0, |entry| entry.mod_revision), *revision)
            }
            Compare::CreateRevision { op, revision, .. } => {
                op.holds(entry.map_or(0, |entry| entry.create_revision), *revision)
            }
        }
    }

    fn apply(&mut self, txn: PreparedTxn) -> Result<(TxnResponse, Option<CommitReceiver>), StoreError> {
        let succeeded = txn.compares.iter().all(|compare| self.compare_holds(compare));
        let ops = if succeeded { txn.success } else { txn.failure };
        // Like etcd, only the leases of the branch taken must exist; checked
        // before anything changes, so a failure applies nothing.
        for op in &ops {
            if let PreparedOp::Put { lease: Some(lease), .. } = op
                && !self.leases.contains_key(lease)
            {
                return Err(StoreError::LeaseNotFound(*lease));
            }
        }
        let mut changes = self.changes();
        for op in ops {
            match op {
                PreparedOp::Put { key, value, lease } => self.put(key, value, lease, &mut changes),
                PreparedOp::Delete { key } => self.delete(&key, &mut changes),
                PreparedOp::DeletePrefix { prefix } => {
                    let keys: Vec<String> = self
                        .keys
                        .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
                        .take_while(|(key, _)| key.starts_with(&prefix))
                        .map(|(key, _)| key.clone())
                        .collect();
                    for key in keys {
                        self.delete(&key, &mut changes);
                    }
                }
            }
        }
        let commit = self.publish(changes)?;
        Ok((
            TxnResponse {
                succeeded,
                revision: self.revision,
            },
            commit,
        ))
    }

    fn changes(&self) -> Changes {
        Changes {
            revision: self.revision + 1,
            events: Vec::new(),
            disk: Vec::new(),
        }
    }

    fn put(&mut self, key: String, value: Arc<Vec<u8>>, lease: Option<LeaseId>, changes: &mut Changes) {
        let previous = self.keys.get(&key);
        let create_revision = previous.map_or(changes.revision, |entry| entry.create_revision);
        let previous_lease = previous.and_then(|entry| entry.lease);
        let was_on_disk = previous.is_some_and(|entry| entry.lease.is_none());
        if previous_lease != lease {
            if let Some(old) = previous_lease.and_then(|old| self.leases.get_mut(&old)) {
                old.keys.remove(&key);
            }
            if let Some(new) = lease.and_then(|new| self.leases.get_mut(&new)) {
                new.keys.insert(key.clone());
            }
        }
        let entry = Entry {
            value,
            create_revision,
            mod_revision: changes.revision,
            lease,
        };
        // Only unleased keys are persisted: a leased key would outlive its
        // lease across a restart, which etcd never allows.
        if lease.is_none() {
            changes.disk.push(DiskWrite::Put {
                key: key.clone(),
                entry: entry.clone(),
            });
        } else if was_on_disk {
            changes.disk.push(DiskWrite::Delete { key: key.clone() });
        }
        changes.events.push(Event::Put {
            key: key.clone(),
            entry: entry.clone(),
        });
        self.keys.insert(key, entry);
    }

    fn delete(&mut self, key: &str, changes: &mut Changes) {
        let Some(entry) = self.keys.remove(key) else {
            return;
        };
        match entry.lease {
            Some(lease) => {
                if let Some(lease) = self.leases.get_mut(&lease) {
                    lease.keys.remove(key);
                }
            }
            None => changes.disk.push(DiskWrite::Delete { key: key.to_owned() }),
        }
        changes.events.push(Event::Delete { key: key.to_owned() });
    }

    /// Makes `changes` the next revision: history, watchers, disk. A write
    /// that changed nothing does not advance the revision (etcd neither).
    /// Returns the receiver to await when the write must become durable.
    fn publish(&mut self, changes: Changes) -> Result<Option<CommitReceiver>, StoreError> {
        if changes.events.is_empty() {
            return Ok(None);
        }
        self.revision = changes.revision;
        let bytes = changes.events.iter().map(Event::bytes).sum();
        let batch = Arc::new(RevisionEvents {
            revision: changes.revision,
            events: changes.events,
            bytes,
        });
        self.notify_watchers(&batch);
        self.history.push(batch);
        match &self.disk {
            None => Ok(None),
            Some(disk) => disk.enqueue(changes.revision, changes.disk),
        }
    }

    fn notify_watchers(&mut self, batch: &Arc<RevisionEvents>) {
        self.watchers.retain(|_, watcher| {
            if !batch
                .events
                .iter()
                .any(|event| event.key().starts_with(&watcher.prefix))
            {
                return true;
            }
            match watcher.sender.try_send(Arc::clone(batch)) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // Dropping the sender ends the stream, which then reports
                    // the revision it missed instead of buffering without bound.
                    watcher.lagged.store(batch.revision, Ordering::Release);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    fn grant_lease(&mut self, ttl: Duration, now: Instant) -> Result<LeaseId, StoreError> {
        let deadline = now
            .checked_add(ttl)
            .ok_or_else(|| StoreError::Invalid(format!("lease ttl {ttl:?} is too long")))?;
        let id = LeaseId(self.next_lease_id);
        self.next_lease_id += 1;
        self.leases.insert(
            id,
            Lease {
                ttl,
                deadline,
                keys: BTreeSet::new(),
            },
        );
        self.deadlines.insert((deadline, id));
        Ok(id)
    }

    fn keep_lease_alive(&mut self, id: LeaseId, now: Instant) -> Result<(), StoreError> {
        let lease = self.leases.get_mut(&id).ok_or(StoreError::LeaseNotFound(id))?;
        let deadline = now
            .checked_add(lease.ttl)
            .ok_or_else(|| StoreError::Invalid(format!("lease ttl {:?} is too long", lease.ttl)))?;
        self.deadlines.remove(&(lease.deadline, id));
        lease.deadline = deadline;
        self.deadlines.insert((deadline, id));
        Ok(())
    }

    /// Ends a lease and deletes its keys in one revision.
    fn revoke_lease(&mut self, id: LeaseId) {
        let Some(lease) = self.leases.remove(&id) else {
            return;
        };
        self.deadlines.remove(&(lease.deadline, id));
        let mut changes = self.changes();
        for key in &lease.keys {
            self.delete(key, &mut changes);
        }
        // Leased keys are never on disk, so nobody waits for this commit; it
        // only records the revision.
        if let Err(error) = self.publish(changes) {
            tracing::warn!(lease = %id, %error, "could not record a lease deletion's revision on disk");
        }
    }

    fn expire_leases(&mut self, now: Instant) {
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.revoke_lease(id);
        }
    }

    fn next_lease_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(deadline, _)| *deadline)
    }
}

/// Kept revisions, oldest first, bounded by event count and bytes.
struct History {
    batches: VecDeque<Arc<RevisionEvents>>,
    events: usize,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
    /// Every revision after `floor` is still in `batches`.
    floor: Revision,
}

impl History {
    fn new(options: &EmbeddedStoreBuilder, floor: Revision) -> Self {
        History {
            batches: VecDeque::new(),
            events: 0,
            bytes: 0,
            max_events: options.history_events,
            max_bytes: options.history_bytes,
            floor,
        }
    }

    fn push(&mut self, batch: Arc<RevisionEvents>) {
        self.events += batch.events.len();
        self.bytes += batch.bytes;
        self.batches.push_back(batch);
        while self.events > self.max_events || self.bytes > self.max_bytes {
            if !self.drop_oldest() {
                break;
            }
        }
    }

    fn compact(&mut self, revision: Revision) {
        while self.batches.front().is_some_and(|batch| batch.revision <= revision) {
            self.drop_oldest();
        }
        self.floor = self.floor.max(revision);
    }

    fn drop_oldest(&mut self) -> bool {
        let Some(oldest) = self.batches.pop_front() else {
            return false;
        };
        self.events -= oldest.events.len();
        self.bytes -= oldest.bytes;
        self.floor = oldest.revision;
        true
    }

    /// The kept revisions after `after` touching `prefix`; `None` if some
    /// revision after `after` is no longer kept.
    fn since(&self, prefix: &str, after: Revision) -> Option<VecDeque<Arc<RevisionEvents>>> {
        if after < self.floor {
            return None;
        }
        let start = self.batches.partition_point(|batch| batch.revision <= after);
        Some(
            self.batches
                .range(start..)
                .filter(|batch| batch.events.iter().any(|event| event.key().starts_with(prefix)))
                .cloned()
                .collect(),
        )
    }
}

/// A transaction checked against the store's limits, values moved into `Arc`s
/// before the lock is taken.
struct PreparedTxn {
    compares: Vec<Compare>,
    success: Vec<PreparedOp>,
    failure: Vec<PreparedOp>,
}

enum PreparedOp {
    Put {
        key: String,
        value: Arc<Vec<u8>>,
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
    },
    DeletePrefix {
        prefix: String,
    },
}

impl PreparedTxn {
    /// Like etcd, both branches are checked whichever one will run.
    fn new(txn: Txn) -> Result<Self, StoreError> {
        if txn.compares.len() > MAX_TXN_OPS {
            return Err(StoreError::Invalid(format!(
                "too many compares in txn request: {} (limit {MAX_TXN_OPS})",
                txn.compares.len()
            )));
        }
        check_branch(&txn.success, "success")?;
        check_branch(&txn.failure, "failure")?;
        Ok(PreparedTxn {
            compares: txn.compares,
            success: txn.success.into_iter().map(PreparedOp::from).collect(),
            failure: txn.failure.into_iter().map(PreparedOp::from).collect(),
        })
    }
}

impl From<TxnOp> for PreparedOp {
    fn from(op: TxnOp) -> Self {
        match op {
            TxnOp::Put { key, value, lease } => PreparedOp::Put {
                key,
                value: Arc::new(value),
                lease,
            },
            TxnOp::Delete { key } => PreparedOp::Delete { key },
            TxnOp::DeletePrefix { prefix } => PreparedOp::DeletePrefix { prefix },
        }
    }
}

fn check_branch(ops: &[TxnOp], branch: &str) -> Result<(), StoreError> {
    if ops.len() > MAX_TXN_OPS {
        return Err(StoreError::Invalid(format!(
            "too many operations in txn request: {} in the {branch} branch (limit {MAX_TXN_OPS})",
            ops.len()
        )));
    }
    let mut puts = HashSet::new();
    for op in ops {
        match op {
            TxnOp::Put { key, value, .. } => {
                if key.is_empty() {
                    return Err(StoreError::Invalid("key is not provided".into()));
                }
                if value.len() > MAX_VALUE_BYTES {
                    return Err(StoreError::Invalid(format!(
                        "value of {key} is {} bytes (limit {MAX_VALUE_BYTES})",
                        value.len()
                    )));
                }
                if !puts.insert(key.as_str()) {
                    return Err(StoreError::Invalid(format!(
                        "duplicate key given in txn request: {key}"
                    )));
                }
            }
            TxnOp::Delete { key } if key.is_empty() => {
                return Err(StoreError::Invalid("key is not provided".into()));
            }
            // An empty prefix would delete the whole store; nothing needs that.
            TxnOp::DeletePrefix { prefix } if prefix.is_empty() => {
                return Err(StoreError::Invalid("delete prefix is empty".into()));
            }
            TxnOp::Delete { .. } | TxnOp::DeletePrefix { .. } => {}
        }
    }
    // etcd also refuses a put and a delete of the same key in one branch: the
    // outcome would depend on the order of operations.
    for op in ops {
        let deleted_put = match op {
            TxnOp::Delete { key } => puts.get(key.as_str()),
            TxnOp::DeletePrefix { prefix } => puts.iter().find(|put| put.starts_with(prefix.as_str())),
            TxnOp::Put { .. } => None,
        };
        if let Some(key) = deleted_put {
            return Err(StoreError::Invalid(format!(
                "duplicate key given in txn request: {key} is both put and deleted"
            )));
        }
    }
    Ok(())
}

/// The stream returned by `watch`: replayed history first, then live
/// revisions from the watcher's bounded channel.
struct EmbeddedWatch {
    id: u64,
    prefix: String,
    after: Revision,
    replay: VecDeque<Arc<RevisionEvents>>,
    live: mpsc::Receiver<Arc<RevisionEvents>>,
    lagged: Arc<AtomicI64>,
    store: Weak<EmbeddedStore>,
    finished: bool,
}

impl EmbeddedWatch {
    fn events(&self, batch: &RevisionEvents) -> Vec<WatchEvent> {
        batch
            .events
            .iter()
            .filter(|event| event.key().starts_with(&self.prefix))
            .map(|event| match event {
                Event::Put { key, entry } => WatchEvent::Put(entry.to_key_value(key)),
                Event::Delete { key } => WatchEvent::Delete {
                    key: key.clone(),
                    revision: batch.revision,
                },
            })
            .collect()
    }
}

impl Stream for EmbeddedWatch {
    type Item = Result<Vec<WatchEvent>, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        while let Some(batch) = self.replay.pop_front() {
            let events = self.events(&batch);
            if !events.is_empty() {
                return Poll::Ready(Some(Ok(events)));
            }
        }
        loop {
            match self.live.poll_recv(cx) {
                Poll::Ready(Some(batch)) => {
                    let events = self.events(&batch);
                    if batch.revision > self.after && !events.is_empty() {
                        return Poll::Ready(Some(Ok(events)));
                    }
                }
                Poll::Ready(None) => {
                    self.finished = true;
                    let missed = self.lagged.load(Ordering::Acquire);
                    let error = if missed > 0 {
                        // The kv contract has no "lagged" error; `Compacted`
                        // means the same to a watcher: re-list, watch again.
                        StoreError::Compacted {
                            requested: missed,
                            compact_revision: missed,
                        }
                    } else {
                        StoreError::Unavailable("embedded store closed".into())
                    };
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for EmbeddedWatch {
    fn drop(&mut self) {
        if let Some(store) = self.store.upgrade() {
            crate::sync::lock(&store.state).watchers.remove(&self.id);
        }
    }
}

/// Expires leases at their deadlines even when no call arrives, so watchers
/// see the deletions promptly. Holds the store only while expiring.
async fn run_lease_expiry(store: Weak<EmbeddedStore>, wake: Arc<Notify>) {
    loop {
        let next = match store.upgrade().map(|store| store.expire_due_leases()) {
            None => return,
            Some(Ok(next)) => next,
            Some(Err(error)) => {
                tracing::error!(%error, "embedded store lease expiry stopped");
                return;
            }
        };
        match next {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

type CommitReceiver = oneshot::Receiver<Result<(), StoreError>>;

/// The persistent half: a queue to the disk-writer thread.
struct Disk {
    /// Written under the state lock, so commits arrive in revision order.
    queue: std_mpsc::Sender<DiskCommit>,
    /// Set once by the writer when a commit fails or the writer stops.
    failure: Arc<OnceLock<String>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Disk {
    /// Queues one revision. Writes that touch disk get a receiver resolved
    /// after their commit; a revision that only touched leased keys is not
    /// waited for (it is recorded so revisions never go backwards after a
    /// restart, but nothing durable refers to it).
    fn enqueue(&self, revision: Revision, writes: Vec<DiskWrite>) -> Result<Option<CommitReceiver>, StoreError> {
        let (committed, receiver) = if writes.is_empty() {
            (None, None)
        } else {
            let (sender, receiver) = oneshot::channel();
            (Some(sender), Some(receiver))
        };
        self.queue
            .send(DiskCommit {
                revision,
                writes,
                committed,
            })
            .map_err(|_| {
                let reason = self.failure.get_or_init(|| "the disk writer stopped".into());
                StoreError::Unavailable(format!("embedded store cannot persist writes: {reason}"))
            })?;
        Ok(receiver)
    }

    fn close(self) {
        let Disk { queue, thread, .. } = self;
        drop(queue);
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("embedded store disk writer panicked");
        }
    }
}

struct DiskCommit {
    revision: Revision,
    writes: Vec<DiskWrite>,
    committed: Option<oneshot::Sender<Result<(), StoreError>>>,
}

enum DiskWrite {
    Put { key: String, entry: Entry },
    Delete { key: String },
}

/// Group commit: takes every queued revision, commits them in one SQLite
/// transaction (one fsync), then acknowledges each waiting writer.
fn run_disk_writer(
    mut connection: Connection,
    commits: std_mpsc::Receiver<DiskCommit>,
    failure: Arc<OnceLock<String>>,
    durable: Arc<AtomicI64>,
) {
    let _stopped = MarkStopped(Arc::clone(&failure));
    while let Ok(first) = commits.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP_COMMIT {
            match commits.try_recv() {
                Ok(commit) => group.push(commit),
                Err(_) => break,
            }
        }
        let outcome = match failure.get() {
            Some(reason) => Err(reason.clone()),
            None => write_group(&mut connection, &group).map_err(|e| format!("sqlite commit failed: {e}")),
        };
        match &outcome {
            Ok(()) => {
                if let Some(last) = group.last() {
                    durable.store(last.revision, Ordering::Release);
                }
            }
            Err(reason) => {
                tracing::error!(%reason, "embedded store write not persisted; refusing further writes");
                failure.get_or_init(|| reason.clone());
            }
        }
        for commit in group {
            if let Some(committed) = commit.committed {
                let reply = outcome.clone().map_err(|reason| {
                    StoreError::Unavailable(format!("embedded store cannot persist writes: {reason}"))
                });
                if committed.send(reply).is_err() {
                    // The writer stopped waiting (its future was dropped); the
                    // outcome is the same either way.
                    tracing::trace!(revision = commit.revision, "commit acknowledged to nobody");
                }
            }
        }
    }
}

/// Marks the store unwritable if the writer thread ends for any reason
/// (including a panic), so writes fail fast instead of queueing forever.
struct MarkStopped(Arc<OnceLock<String>>);

impl Drop for MarkStopped {
    fn drop(&mut self) {
        self.0.get_or_init(|| "the disk writer stopped".into());
    }
}

fn write_group(connection: &mut Connection, group: &[DiskCommit]) -> rusqlite::Result<()> {
    let transaction = connection.transaction()?;
    {
        let mut put = transaction.prepare_cached(
            "INSERT OR REPLACE INTO kv (key, value, create_revision, mod_revision) \
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut delete = transaction.prepare_cached("DELETE FROM kv WHERE key = ?1")?;
        for commit in group {
            for write in &commit.writes {
                match write {
                    DiskWrite::Put { key, entry } => {
                        put.execute(params![
                            key,
                            entry.value.as_slice(),
                            entry.create_revision,
                            entry.mod_revision
                        ])?;
                    }
                    DiskWrite::Delete { key } => {
                        delete.execute([key])?;
                    }
                }
            }
        }
        if let Some(last) = group.last() {
            transaction
                .prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'revision'")?
                .execute([last.revision])?;
        }
    }
    transaction.commit()
}

/// Opens (or creates) the database, locks it for this process and loads it.
fn open_database(path: &Path) -> Result<(Connection, Revision, BTreeMap<String, Entry>), StoreError> {
    let failed = |action: &'static str| move |e: rusqlite::Error| sqlite_error(path, action, e);
    let connection = Connection::open(path).map_err(failed("open"))?;
    connection.busy_timeout(LOCK_WAIT).map_err(failed("configure"))?;
    // One process owns the file: a second `sandcron dev` on the same data
    // directory fails instead of forking the revision history. Exclusive
    // locking also lets WAL run without its shared-memory index.
    connection
        .pragma_update(None, "locking_mode", "EXCLUSIVE")
        .map_err(failed("configure"))?;
    let journal: String = connection
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(failed("lock"))?;
    if !journal.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Other(format!(
            "{}: cannot use write-ahead logging (journal mode {journal})",
            path.display()
        )));
    }
    // FULL: an acknowledged write survives power loss too; group commit keeps
    // the fsync per batch, not per write.
    connection
        .pragma_update(None, "synchronous", "FULL")
        .map_err(failed("configure"))?;
    let version: i64 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(failed("read"))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Other(format!(
            "{} was written by a newer sandcron (format {version}, this one reads {SCHEMA_VERSION})",
            path.display()
        )));
    }
    connection
        .execute_batch(&format!(
            "BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS kv (
                 key TEXT PRIMARY KEY NOT NULL,
                 value BLOB NOT NULL,
                 create_revision INTEGER NOT NULL,
                 mod_revision INTEGER NOT NULL
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
             INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0);
             PRAGMA user_version = {SCHEMA_VERSION};
             COMMIT;"
        ))
        .map_err(failed("initialise"))?;
    let (revision, keys) = load(&connection).map_err(failed("load"))?;
    Ok((connection, revision, keys))
}

fn load(connection: &Connection) -> rusqlite::Result<(Revision, BTreeMap<String, Entry>)> {
    let mut revision: Revision =
        connection.query_row("SELECT value FROM meta WHERE name = 'revision'", [], |row| row.get(0))?;
    let mut keys = BTreeMap::new();
    let mut statement = connection.prepare("SELECT key, value, create_revision, mod_revision FROM kv")?;
    let rows = statement.query_map([], |row| {
        let entry = Entry {
            value: Arc::new(row.get(1)?),
            create_revision: row.get(2)?,
            mod_revision: row.get(3)?,
            lease: None,
        };
        Ok((row.get::<_, String>(0)?, entry))
    })?;
    for row in rows {
        let (key, entry) = row?;
        // The revision is written in the same transaction as the keys; this
        // only guards against a hand-edited file sending revisions backwards.
        revision = revision.max(entry.mod_revision);
        keys.insert(key, entry);
    }
    Ok((revision, keys))
}

fn sqlite_error(path: &Path, action: &str, error: rusqlite::Error) -> StoreError {
    let busy = matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    );
    if busy {
        StoreError::Unavailable(format!(
            "{} is in use by another sandcron process (is `sandcron dev` already running here?)",
            path.display()
        ))
    } else {
        StoreError::Other(format!(
            "cannot {action} the embedded store {}: {error}",
            path.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::coord::conformance;

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
        conformance::run_all(EmbeddedStore::in_memory(), "/conformance/").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn persistent_store_passes_the_conformance_suite() {
        let (_dir, path) = temp_database();
        conformance::run_all(EmbeddedStore::open(&path).unwrap(), "/conformance/").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn coordinator_operations_pass_their_suite_on_the_embedded_store() {
        crate::coord::suite::run_all(EmbeddedStore::in_memory(), "/suite/").await;
        let (_dir, path) = temp_database();
        crate::coord::suite::run_all(EmbeddedStore::open(&path).unwrap(), "/suite/").await;
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
                    kv.value.as_slice(),
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
        assert_eq!(store.get("a").await.unwrap().unwrap().value, b"1");
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
}
