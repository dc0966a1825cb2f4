//! Workers: registering one under its lease, listing the registered
//! workers, and which of them are alive now.

use std::collections::HashSet;

use super::keys::Family;
use super::{Coordinator, encode};
use crate::coord::{LeaseId, Revision, StoreError};
use crate::placement::WorkerInfo;

impl Coordinator {
    /// Publishes (or refreshes) a worker under its lease.
    pub async fn register_worker(&self, info: &WorkerInfo, lease: LeaseId) -> Result<Revision, StoreError> {
        self.store
            .put(&self.key(Family::Workers, &info.id), encode(info)?, Some(lease))
            .await
    }

    pub async fn list_workers(&self) -> Result<Vec<WorkerInfo>, StoreError> {
        let range = self.store.range(&self.prefix_of(Family::Workers)).await?;
        Ok(range
            .kvs
            .iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect())
    }

    /// The ids of the workers whose registration (and so whose lease) is
    /// alive now, read from the store: one read however many are asked
    /// about. Taken from the keys, so an entry whose value cannot be decoded
    /// still counts as alive.
    pub async fn live_workers(&self) -> Result<HashSet<String>, StoreError> {
        let range = self.store.range(&self.prefix_of(Family::Workers)).await?;
        Ok(range
            .kvs
            .iter()
            .filter_map(|kv| self.strip(Family::Workers, &kv.key))
            .map(str::to_owned)
            .collect())
    }
}
