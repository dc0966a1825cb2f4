//! Worker status: `<prefix>status/<worker-id>` holds what a worker publishes
//! about itself beside its registration, on its lease (so it goes with the
//! worker): today its log backlog, for the masters' workers view. It is a key
//! of its own rather than a field of `workers/<id>` because every worker
//! watches `workers/` and recomputes job ownership on each change there;
//! nobody watches `status/`, and masters read it in one range read.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Coordinator, encode};
use crate::coord::{LeaseId, Revision, StoreError};

/// A worker's log sink as the worker last published it: what waits in its
/// spool for the log store, and whether runs wait for the sink.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct LogBacklog {
    /// Bytes in the worker's spool not yet written to the log store: output
    /// and records that are safe on its disk but not visible yet.
    pub spool_bytes: u64,
    /// Age, in whole seconds, of the oldest batch in the spool (0 when it
    /// is empty): how far behind the log store the worker's history is.
    pub spool_lag_s: u64,
    /// Runs wait for room in the sink: its spool's disk budget is spent (or
    /// it has no spool and the log store is slow or down).
    pub backpressure: bool,
    /// Records and output chunks queued in the sink's memory.
    pub queued: u64,
}

impl Coordinator {
    fn status_prefix(&self) -> String {
        format!("{}status/", self.prefix)
    }

    /// Publishes a worker's log backlog under its lease.
    pub async fn publish_log_backlog(
        &self,
        worker: &str,
        backlog: &LogBacklog,
        lease: LeaseId,
    ) -> Result<Revision, StoreError> {
        let key = format!("{}{worker}", self.status_prefix());
        self.store.put(&key, encode(backlog)?, Some(lease)).await
    }

    /// The log backlog every live worker published, by worker id: one range
    /// read however many workers there are. A value that does not decode
    /// at all is left out, as if none was published.
    pub async fn log_backlogs(&self) -> Result<HashMap<String, LogBacklog>, StoreError> {
        let prefix = self.status_prefix();
        let range = self.store.range(&prefix).await?;
        Ok(range
            .kvs
            .into_iter()
            .filter_map(|kv| {
                let worker = kv.key.strip_prefix(&prefix)?.to_owned();
                Some((worker, serde_json::from_slice(&kv.value).ok()?))
            })
            .collect())
    }
}
