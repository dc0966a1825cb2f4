//! Conversions between the contract's types and etcd-client's: a
//! transaction's compares and operations on the way in, key-values and
//! response revisions on the way out; and the value-size check made before
//! anything is sent.

use etcd_client::{CompareOp, DeleteOptions, PutOptions};

use super::errors::Failure;
use crate::coord::{CmpOp, Compare, KeyValue, LeaseId, MAX_VALUE_BYTES, Revision, StoreError, Txn, TxnOp};

/// Values over the contract's limit are refused here: etcd itself would take
/// up to 1.5 MiB, and the embedded store refuses them too.
pub(super) fn check_value(key: &str, len: usize) -> Result<(), StoreError> {
    if len > MAX_VALUE_BYTES {
        return Err(StoreError::Invalid(format!(
            "value of {key} is {len} bytes, more than the {MAX_VALUE_BYTES} allowed"
        )));
    }
    Ok(())
}

pub(super) fn check_values(ops: &[TxnOp]) -> Result<(), StoreError> {
    for op in ops {
        if let TxnOp::Put { key, value, .. } = op {
            check_value(key, value.len())?;
        }
    }
    Ok(())
}

pub(super) fn etcd_txn(txn: Txn) -> etcd_client::Txn {
    let compares: Vec<etcd_client::Compare> = txn.compares.into_iter().map(etcd_compare).collect();
    let success: Vec<etcd_client::TxnOp> = txn.success.into_iter().map(etcd_op).collect();
    let failure: Vec<etcd_client::TxnOp> = txn.failure.into_iter().map(etcd_op).collect();
    etcd_client::Txn::new()
        .when(compares)
        .and_then(success)
        .or_else(failure)
}

fn etcd_compare(compare: Compare) -> etcd_client::Compare {
    match compare {
        Compare::ModRevision { key, op, revision } => etcd_client::Compare::mod_revision(key, etcd_cmp(op), revision),
        Compare::CreateRevision { key, op, revision } => {
            etcd_client::Compare::create_revision(key, etcd_cmp(op), revision)
        }
    }
}

fn etcd_cmp(op: CmpOp) -> CompareOp {
    match op {
        CmpOp::Equal => CompareOp::Equal,
        CmpOp::NotEqual => CompareOp::NotEqual,
        CmpOp::Less => CompareOp::Less,
        CmpOp::Greater => CompareOp::Greater,
    }
}

fn etcd_op(op: TxnOp) -> etcd_client::TxnOp {
    match op {
        TxnOp::Put { key, value, lease } => {
            etcd_client::TxnOp::put(key, value, lease.map(|lease| PutOptions::new().with_lease(lease.0)))
        }
        TxnOp::Delete { key } => etcd_client::TxnOp::delete(key, None),
        TxnOp::DeletePrefix { prefix } => etcd_client::TxnOp::delete(prefix, Some(DeleteOptions::new().with_prefix())),
    }
}

pub(super) fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision, Failure> {
    header
        .map(etcd_client::ResponseHeader::revision)
        .ok_or_else(|| Failure::Final(StoreError::Other("etcd answered without a response header".into())))
}

pub(super) fn key_value(kv: etcd_client::KeyValue) -> KeyValue {
    let (create_revision, mod_revision, lease) = (kv.create_revision(), kv.mod_revision(), kv.lease());
    let (key, value) = kv.into_key_value();
    KeyValue {
        key: key_string(key),
        value: value.into(),
        create_revision,
        mod_revision,
        lease: (lease != 0).then_some(LeaseId(lease)),
    }
}

/// sandcron writes only UTF-8 keys; a foreign key that is not is shown
/// lossily rather than failing a whole listing (decoding then skips it).
pub(super) fn key_string(key: Vec<u8>) -> String {
    String::from_utf8(key).unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
}
