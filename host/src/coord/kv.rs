//! The store contract: an etcd-v3-shaped key-value store with revisions,
//! compare-and-swap transactions, resumable prefix watches and leases.

use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;

/// A store revision: increases by one with every write transaction.
pub type Revision = i64;

/// The most operations one transaction may carry (etcd's default `--max-txn-ops`);
/// etcd counts the compares against the same limit.
pub const MAX_TXN_OPS: usize = 128;

/// The largest value one put may carry. etcd rejects requests over 1.5 MiB;
/// keeping values at 1 MiB leaves room for the key and the rest of the request.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// An opaque lease handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub i64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// One stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    /// Shared, not copied, between a store's copy, its watch events and readers.
    pub value: bytes::Bytes,
    /// Revision of the write that created the key (since it last did not exist).
    pub create_revision: Revision,
    /// Revision of the last write to the key.
    pub mod_revision: Revision,
    pub lease: Option<LeaseId>,
}

/// The keys under a prefix, read at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResult {
    /// Sorted by key.
    pub kvs: Vec<KeyValue>,
    /// The store revision the read saw; a watch from it misses nothing.
    pub revision: Revision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

impl CmpOp {
    pub fn holds(self, left: Revision, right: Revision) -> bool {
        match self {
            CmpOp::Equal => left == right,
            CmpOp::NotEqual => left != right,
            CmpOp::Less => left < right,
            CmpOp::Greater => left > right,
        }
    }
}

/// A condition of a transaction. A missing key has create and mod revision 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    ModRevision { key: String, op: CmpOp, revision: Revision },
    CreateRevision { key: String, op: CmpOp, revision: Revision },
}

impl Compare {
    /// The key's last write was at `revision` (0: the key does not exist).
    pub fn mod_revision_is(key: impl Into<String>, revision: Revision) -> Self {
        Compare::ModRevision {
            key: key.into(),
            op: CmpOp::Equal,
            revision,
        }
    }

    pub fn missing(key: impl Into<String>) -> Self {
        Compare::CreateRevision {
            key: key.into(),
            op: CmpOp::Equal,
            revision: 0,
        }
    }

    pub fn exists(key: impl Into<String>) -> Self {
        Compare::CreateRevision {
            key: key.into(),
            op: CmpOp::Greater,
            revision: 0,
        }
    }

    pub fn key(&self) -> &str {
        match self {
            Compare::ModRevision { key, .. } | Compare::CreateRevision { key, .. } => key,
        }
    }
}

/// A write inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
    },
    DeletePrefix {
        prefix: String,
    },
}

impl TxnOp {
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        TxnOp::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        }
    }

    pub fn put_leased(key: impl Into<String>, value: impl Into<Vec<u8>>, lease: LeaseId) -> Self {
        TxnOp::Put {
            key: key.into(),
            value: value.into(),
            lease: Some(lease),
        }
    }

    pub fn delete(key: impl Into<String>) -> Self {
        TxnOp::Delete { key: key.into() }
    }
}

/// `if all(compares) then success else failure`, atomically, at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.compares.extend(compares);
        self
    }

    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.success.extend(ops);
        self
    }

    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.failure.extend(ops);
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether every compare held (and the success branch ran).
    pub succeeded: bool,
    /// The store revision after the transaction: the revision of its writes, if
    /// it wrote anything. For a claim this is the fencing token.
    pub revision: Revision,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    /// `revision` is the revision of the deleting write (lease expiry included).
    Delete {
        key: String,
        revision: Revision,
    },
}

impl WatchEvent {
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }

    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
        }
    }
}

/// Batches of events in revision order. The stream ends after yielding an
/// error; the watcher then re-lists and watches again from the new revision.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Vec<WatchEvent>, StoreError>> + Send>>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or did not answer in time; worth retrying.
    #[error("coordination store unavailable: {0}")]
    Unavailable(String),
    /// A watch asked for history the store no longer keeps, or fell so far
    /// behind that the store dropped it (as etcd does). Both revisions are in
    /// etcd's start-revision terms: `requested` is the first revision the
    /// watcher needed; `compact_revision` the oldest one still watchable.
    #[error("revision {requested} is compacted (oldest kept: {compact_revision})")]
    Compacted {
        requested: Revision,
        compact_revision: Revision,
    },
    #[error("lease {0} not found or expired")]
    LeaseNotFound(LeaseId),
    /// The request breaks a store limit (value size, operations per transaction).
    #[error("request rejected by the coordination store: {0}")]
    Invalid(String),
    #[error("coordination store error: {0}")]
    Other(String),
}

/// The etcd-v3-shaped store contract. Implementations: `coord::embedded::EmbeddedStore`
/// and (in cluster mode) etcd. Both must pass `coord::conformance`.
#[async_trait]
pub trait KvStore: Send + Sync + 'static {
    /// One key, or `None`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Every key starting with `prefix`, sorted, with the revision read at.
    async fn range(&self, prefix: &str) -> Result<RangeResult, StoreError>;

    /// Runs `txn` atomically. At most [`MAX_TXN_OPS`] operations per branch;
    /// one key may be written at most once per branch.
    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError>;

    /// Events for keys under `prefix` with revision greater than `after`.
    /// If `after` is older than the history kept, the stream's first item is
    /// [`StoreError::Compacted`]. The events of one revision (one transaction)
    /// always arrive in the same batch.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError>;

    /// A lease that expires `ttl` after its last keep-alive; expiry deletes
    /// every key attached to it (each deletion visible to watches). A backend
    /// may raise the TTL to its minimum and round it to whole seconds (etcd).
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError>;

    /// Renews the lease; [`StoreError::LeaseNotFound`] once it has expired.
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Ends the lease now, deleting its keys. Revoking an unknown lease is not an error.
    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Forgets history at or before `revision`; watches asking for it then get
    /// [`StoreError::Compacted`]. Current keys are unaffected. Compacting past
    /// the current revision is [`StoreError::Invalid`]; compacting an already
    /// compacted revision does nothing.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// Puts one key; returns the write's revision.
    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<Revision, StoreError> {
        let response = self
            .txn(Txn::new().and_then([TxnOp::Put {
                key: key.to_owned(),
                value,
                lease,
            }]))
            .await?;
        Ok(response.revision)
    }

    /// Deletes one key; returns whether it existed.
    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let response = self
            .txn(Txn::new().when([Compare::exists(key)]).and_then([TxnOp::delete(key)]))
            .await?;
        Ok(response.succeeded)
    }
}
