//! Leases: granting, keeping alive, revoking and expiring them (a lease's
//! keys go with it, in one revision), and the task that expires leases at
//! their deadlines even when no call arrives.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::EmbeddedStore;
use super::state::State;
use crate::coord::{LeaseId, StoreError};

pub(super) struct Lease {
    ttl: Duration,
    deadline: Instant,
    /// The keys attached to this lease now (a key re-put without it leaves).
    pub(super) keys: BTreeSet<String>,
}

impl EmbeddedStore {
    /// Starts the expiry task unless it runs. It holds only a `Weak` to the
    /// store, so it ends when the store is dropped.
    pub(super) fn ensure_lease_task(&self) -> Result<(), StoreError> {
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
}

impl State {
    pub(super) fn grant_lease(&mut self, ttl: Duration, now: Instant) -> Result<LeaseId, StoreError> {
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

    pub(super) fn keep_lease_alive(&mut self, id: LeaseId, now: Instant) -> Result<(), StoreError> {
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
    pub(super) fn revoke_lease(&mut self, id: LeaseId) {
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

    pub(super) fn expire_leases(&mut self, now: Instant) {
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
