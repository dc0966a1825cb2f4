//! The port a run's key-value state goes through (`wasi:keyvalue` for
//! components): the executor asks, the worker answers over the
//! coordination store (`worker::StoredState`). Executors never see the
//! store; every call names the job and the run's fence, and the
//! implementation enforces the fence, the quotas and the job's prefix.

use async_trait::async_trait;

use crate::ids::JobName;
use crate::kvstate::{KeyPage, StateError, StateKey};

/// One job's key-value state, as runs of it reach it.
///
/// `fence` is the run's `ExecRequest::fence`. `open` registers it (a run
/// whose fence is older than the newest that touched the state is refused
/// from then on); writes are refused to such a run; reads are not fenced.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// The run starts using the state.
    async fn open(&self, job: &JobName, fence: i64) -> Result<(), StateError>;

    async fn get(&self, job: &JobName, fence: i64, key: &StateKey) -> Result<Option<Vec<u8>>, StateError>;

    async fn set(&self, job: &JobName, fence: i64, key: &StateKey, value: Vec<u8>) -> Result<(), StateError>;

    /// Deleting a missing key is no error.
    async fn delete(&self, job: &JobName, fence: i64, key: &StateKey) -> Result<(), StateError>;

    async fn exists(&self, job: &JobName, fence: i64, key: &StateKey) -> Result<bool, StateError> {
        Ok(self.get(job, fence, key).await?.is_some())
    }

    /// A page of keys from `cursor` (a previous page's `cursor`; `None`
    /// for the first).
    async fn list_keys(&self, job: &JobName, fence: i64, cursor: Option<u64>) -> Result<KeyPage, StateError>;

    /// Adds `delta` to the decimal counter at `key` (missing: 0) atomically;
    /// returns the new value.
    async fn increment(&self, job: &JobName, fence: i64, key: &StateKey, delta: u64) -> Result<u64, StateError>;
}
