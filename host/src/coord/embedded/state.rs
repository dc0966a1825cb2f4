//! The store's in-memory state, everything behind its one lock: the keys
//! with their revisions, and how a checked transaction changes them — the
//! compares, the puts and deletes, and publishing the result as the next
//! revision to the watchers, the history and the disk queue.
//!
//! The lease methods of [`State`] live in `lease`, the watcher fan-out in
//! `watch`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use tokio::time::Instant;

use super::EmbeddedStoreBuilder;
use super::disk::{CommitReceiver, Disk, DiskWrite};
use super::lease::Lease;
use super::txn::{PreparedOp, PreparedTxn};
use super::watch::{Event, History, RevisionEvents, Watcher};
use crate::coord::{Compare, KeyValue, LeaseId, Revision, StoreError, TxnResponse};

/// A stored value. The value is shared (`Bytes`) between the map, the watch
/// history and the disk queue, so a 1 MiB module chunk exists once in memory.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) value: bytes::Bytes,
    pub(super) create_revision: Revision,
    pub(super) mod_revision: Revision,
    pub(super) lease: Option<LeaseId>,
}

impl Entry {
    pub(super) fn to_key_value(&self, key: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: self.value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            lease: self.lease,
        }
    }
}

/// Everything behind the store's one lock.
pub(super) struct State {
    pub(super) revision: Revision,
    pub(super) keys: BTreeMap<String, Entry>,
    pub(super) history: History,
    pub(super) leases: HashMap<LeaseId, Lease>,
    /// Lease deadlines in order, so expiry and "when is the next one due" are
    /// O(log n) instead of a scan per transaction.
    pub(super) deadlines: BTreeSet<(Instant, LeaseId)>,
    pub(super) next_lease_id: i64,
    pub(super) watchers: HashMap<u64, Watcher>,
    pub(super) next_watcher_id: u64,
    pub(super) watch_buffer: usize,
    /// `None` for an in-memory store, and after the store is dropped.
    pub(super) disk: Option<Disk>,
}

/// The changes one write makes, gathered before they are published.
pub(super) struct Changes {
    revision: Revision,
    events: Vec<Event>,
    disk: Vec<DiskWrite>,
}

impl State {
    pub(super) fn new(
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
    pub(super) fn ensure_writable(&self) -> Result<(), StoreError> {
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

    pub(super) fn apply(&mut self, txn: PreparedTxn) -> Result<(TxnResponse, Option<CommitReceiver>), StoreError> {
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

    pub(super) fn changes(&self) -> Changes {
        Changes {
            revision: self.revision + 1,
            events: Vec::new(),
            disk: Vec::new(),
        }
    }

    fn put(&mut self, key: String, value: bytes::Bytes, lease: Option<LeaseId>, changes: &mut Changes) {
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

    pub(super) fn delete(&mut self, key: &str, changes: &mut Changes) {
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
    pub(super) fn publish(&mut self, changes: Changes) -> Result<Option<CommitReceiver>, StoreError> {
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
}
