//! Transactions checked before the store's lock is taken: the contract's
//! limits (operations, value size, keys put twice or put and deleted in one
//! branch, as etcd refuses them), and values moved into shared `Bytes` so that
//! the map, the history, the disk queue, watch events and readers share one
//! copy.

use std::collections::HashSet;

use crate::coord::{Compare, LeaseId, MAX_TXN_OPS, MAX_VALUE_BYTES, StoreError, Txn, TxnOp};

/// A transaction checked against the store's limits, values moved into
/// shared `Bytes` before the lock is taken.
pub(super) struct PreparedTxn {
    pub(super) compares: Vec<Compare>,
    pub(super) success: Vec<PreparedOp>,
    pub(super) failure: Vec<PreparedOp>,
}

pub(super) enum PreparedOp {
    Put {
        key: String,
        value: bytes::Bytes,
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
    },
    DeletePrefix {
        prefix: String,
    },
}

impl PreparedTxn {
    /// Like etcd, both branches are checked whichever one will run.
    pub(super) fn new(txn: Txn) -> Result<Self, StoreError> {
        if txn.compares.len() > MAX_TXN_OPS {
            return Err(StoreError::Invalid(format!(
                "too many compares in txn request: {} (limit {MAX_TXN_OPS})",
                txn.compares.len()
            )));
        }
        check_branch(&txn.success, "success")?;
        check_branch(&txn.failure, "failure")?;
        Ok(PreparedTxn {
            compares: txn.compares,
            success: txn.success.into_iter().map(PreparedOp::from).collect(),
            failure: txn.failure.into_iter().map(PreparedOp::from).collect(),
        })
    }
}

impl From<TxnOp> for PreparedOp {
    fn from(op: TxnOp) -> Self {
        match op {
            TxnOp::Put { key, value, lease } => PreparedOp::Put {
                key,
                // Trimmed to its length: the copy may live as long as the key.
                value: bytes::Bytes::from(value.into_boxed_slice()),
                lease,
            },
            TxnOp::Delete { key } => PreparedOp::Delete { key },
            TxnOp::DeletePrefix { prefix } => PreparedOp::DeletePrefix { prefix },
        }
    }
}

fn check_branch(ops: &[TxnOp], branch: &str) -> Result<(), StoreError> {
    if ops.len() > MAX_TXN_OPS {
        return Err(StoreError::Invalid(format!(
            "too many operations in txn request: {} in the {branch} branch (limit {MAX_TXN_OPS})",
            ops.len()
        )));
    }
    let mut puts = HashSet::new();
    for op in ops {
        match op {
            TxnOp::Put { key, value, .. } => {
                if key.is_empty() {
                    return Err(StoreError::Invalid("key is not provided".into()));
                }
                if value.len() > MAX_VALUE_BYTES {
                    return Err(StoreError::Invalid(format!(
                        "value of {key} is {} bytes (limit {MAX_VALUE_BYTES})",
                        value.len()
                    )));
                }
                if !puts.insert(key.as_str()) {
                    return Err(StoreError::Invalid(format!(
                        "duplicate key given in txn request: {key}"
                    )));
                }
            }
            TxnOp::Delete { key } if key.is_empty() => {
                return Err(StoreError::Invalid("key is not provided".into()));
            }
            // An empty prefix would delete the whole store; nothing needs that.
            TxnOp::DeletePrefix { prefix } if prefix.is_empty() => {
                return Err(StoreError::Invalid("delete prefix is empty".into()));
            }
            TxnOp::Delete { .. } | TxnOp::DeletePrefix { .. } => {}
        }
    }
    // etcd also refuses a put and a delete of the same key in one branch: the
    // outcome would depend on the order of operations.
    for op in ops {
        let deleted_put = match op {
            TxnOp::Delete { key } => puts.get(key.as_str()),
            TxnOp::DeletePrefix { prefix } => puts.iter().find(|put| put.starts_with(prefix.as_str())),
            TxnOp::Put { .. } => None,
        };
        if let Some(key) = deleted_put {
            return Err(StoreError::Invalid(format!(
                "duplicate key given in txn request: {key} is both put and deleted"
            )));
        }
    }
    Ok(())
}
