//! Run logs: the log-store contract, its SQLite implementation, and the
//! batching sink that carries records and output from executors to a store.

pub mod mongo;
pub mod sink;
pub mod sqlite;
mod store;

#[cfg(any(test, feature = "testkit"))]
pub mod conformance;

pub use sink::{Sink, SinkConfig, SinkTask};
pub use store::*;
