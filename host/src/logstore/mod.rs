//! Run logs and the audit log: the log-store contract (`store`), its
//! implementations — SQLite (`sqlite`, for `sandcron dev`) and MongoDB
//! (`mongo`, for clusters) — and the batching sink that carries records and
//! output from executors to a store, spooling to disk while the store is
//! away (`sink`).

pub mod mongo;
pub mod sink;
pub mod sqlite;
mod store;

pub use sink::{Sink, SinkConfig, SinkTask};
pub use store::{AuditPage, AuditQuery, AuditStore, LogBatch, LogStore, LogStoreError, RunPage, RunQuery, supersedes};
