//! The audit log's outbox: entries the API recorded and the log store has
//! not taken yet, one key each under `<prefix>audit/<id>`. The API writes
//! an entry here right after the write it records (the coordination store
//! has just taken that write, so it is up); any master moves entries to the
//! log store and deletes them here. Entries so outlive a log-store outage
//! and the master that recorded them.

use super::{Coordinator, encode};
use crate::audit::AuditEntry;
use crate::coord::{MAX_TXN_OPS, StoreError, Txn, TxnOp};
use crate::ids::AuditId;

/// What the outbox holds, in id (time) order.
#[derive(Debug, Default)]
pub struct AuditOutbox {
    pub entries: Vec<AuditEntry>,
    /// Keys whose value is not an entry (written by a newer or broken
    /// version): to be deleted rather than moved, or they would stay forever.
    pub unreadable: Vec<String>,
}

impl Coordinator {
    fn audit_prefix(&self) -> String {
        format!("{}audit/", self.prefix)
    }

    /// Puts an entry in the outbox.
    pub async fn put_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let key = format!("{}{}", self.audit_prefix(), entry.id);
        self.store.put(&key, encode(entry)?, None).await?;
        Ok(())
    }

    /// Everything in the outbox.
    pub async fn audit_outbox(&self) -> Result<AuditOutbox, StoreError> {
        let prefix = self.audit_prefix();
        let range = self.store.range(&prefix).await?;
        let mut outbox = AuditOutbox::default();
        for kv in range.kvs {
            match serde_json::from_slice::<AuditEntry>(&kv.value) {
                Ok(entry) => outbox.entries.push(entry),
                Err(_) => outbox.unreadable.push(kv.key),
            }
        }
        Ok(outbox)
    }

    /// Removes moved entries (and unreadable keys) from the outbox, in
    /// transactions of at most [`MAX_TXN_OPS`] deletes. Removing what is
    /// already gone (another master moved it) is not an error.
    pub async fn remove_audit(&self, ids: &[AuditId], unreadable: &[String]) -> Result<(), StoreError> {
        let prefix = self.audit_prefix();
        let keys: Vec<String> = ids
            .iter()
            .map(|id| format!("{prefix}{id}"))
            .chain(unreadable.iter().filter(|key| key.starts_with(&prefix)).cloned())
            .collect();
        for part in keys.chunks(MAX_TXN_OPS) {
            self.store
                .txn(Txn::new().and_then(part.iter().map(|key| TxnOp::delete(key.clone()))))
                .await?;
        }
        Ok(())
    }
}
