//! Coordination: the key-value store contract every backend implements, and
//! the sandcron key layout built on it.
//!
//! The contract ([`KvStore`], in `kv`) is deliberately the small etcd v3 core —
//! revisions, compare-and-swap transactions, prefix watches that resume from a
//! revision, and leases — so the etcd backend is a thin adapter and the
//! embedded backend a faithful in-process copy. All sandcron logic (jobs,
//! claims, workers, kill and trigger requests) lives once, in [`Coordinator`],
//! above that contract. No driver type crosses this boundary.

mod domain;
pub mod embedded;
pub mod etcd;
mod kv;

pub use domain::{
    AuditOutbox, ClaimOutcome, ClaimRequest, Coordinator, Family, JobState, KillRequest, KillTarget, LogBacklog,
    ModuleMeta, PlanInputs, PrefixWatcher, RunReport, RunningEntry, StateEntry, StateListing, StateMeta, StoredSecret,
    TriggerRequest, WatchUpdate,
};
pub use kv::{
    CmpOp, Compare, KeyValue, KvStore, LeaseId, MAX_TXN_OPS, MAX_VALUE_BYTES, RangeResult, Revision, StoreError, Txn,
    TxnOp, TxnResponse, WatchEvent, WatchStream,
};
