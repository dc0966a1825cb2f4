//! The key-value state port of the WASM executor (`exec::state::StateStore`)
//! over the coordination store: `Coordinator`'s fenced state operations
//! with this worker's quota. The fence, the quotas and the job's prefix are
//! enforced there (`coord/domain/kvstate.rs`), once for every backend.

use async_trait::async_trait;

use crate::coord::Coordinator;
use crate::exec::state::StateStore;
use crate::ids::JobName;
use crate::kvstate::{KeyPage, StateError, StateKey, StateQuota};

/// Jobs' key-value state in the coordination store, within `quota`.
#[derive(Debug, Clone)]
pub struct StoredState {
    coord: Coordinator,
    quota: StateQuota,
}

impl StoredState {
    pub fn new(coord: Coordinator, quota: StateQuota) -> Self {
        Self { coord, quota }
    }
}

#[async_trait]
impl StateStore for StoredState {
    async fn open(&self, job: &JobName, fence: i64) -> Result<(), StateError> {
        self.coord.state_open(job, fence, &self.quota).await
    }

    async fn get(&self, job: &JobName, _fence: i64, key: &StateKey) -> Result<Option<Vec<u8>>, StateError> {
        self.coord.state_get(job, key).await
    }

    async fn set(&self, job: &JobName, fence: i64, key: &StateKey, value: Vec<u8>) -> Result<(), StateError> {
        self.coord.state_set(job, fence, &self.quota, key, value).await
    }

    async fn delete(&self, job: &JobName, fence: i64, key: &StateKey) -> Result<(), StateError> {
        self.coord.state_delete(job, fence, &self.quota, key).await
    }

    async fn list_keys(&self, job: &JobName, _fence: i64, cursor: Option<u64>) -> Result<KeyPage, StateError> {
        self.coord.state_keys(job, cursor).await
    }

    async fn increment(&self, job: &JobName, fence: i64, key: &StateKey, delta: u64) -> Result<u64, StateError> {
        self.coord.state_increment(job, fence, &self.quota, key, delta).await
    }
}
