//! The audit log in MongoDB: collection `audit`, one document per entry
//! (`_id` = the entry's ULID), inserted once (a repeated id is a duplicate
//! key, which counts as success), queried newest first by `audit_id`, and
//! deleted by a TTL index on `expire_at` (and on demand by `purge_audit`).

use jiff::Timestamp;
use mongodb::bson::{Document, doc};

use super::MongoLogStore;
use super::documents::AuditDoc;
use super::error::{only_duplicates, store_error};
use crate::audit::AuditEntry;
use crate::logstore::store::{audit_page, ceil_millisecond, decode_audit_cursor, runs_limit};
use crate::logstore::{AuditPage, AuditQuery, AuditStore, LogStoreError};

#[async_trait::async_trait]
impl AuditStore for MongoLogStore {
    async fn write_audit(&self, entries: &[AuditEntry]) -> Result<(), LogStoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let docs: Vec<AuditDoc> = entries.iter().map(AuditDoc::new).collect();
        match self.audit.insert_many(&docs).ordered(false).await {
            Ok(_) => Ok(()),
            Err(e) if only_duplicates(&e) => Ok(()),
            Err(e) => Err(store_error(e)),
        }
    }

    async fn audit(&self, query: &AuditQuery) -> Result<AuditPage, LogStoreError> {
        let limit = runs_limit(query.limit);
        let mut filter = Document::new();
        if let Some(job) = &query.job {
            filter.insert("job", job.as_str());
        }
        if let Some(actor) = &query.actor {
            filter.insert("actor", actor.as_str());
        }
        if let Some(action) = query.action {
            filter.insert("action", action.as_str());
        }
        if let Some(target) = &query.target {
            filter.insert("target", target.as_str());
        }
        if let Some(cursor) = &query.cursor {
            let before = decode_audit_cursor(cursor)?;
            filter.insert("audit_id", doc! { "$lt": before.to_string() });
        }
        let mut at = Document::new();
        if let Some(since) = query.since {
            at.insert("$gte", ceil_millisecond(since));
        }
        if let Some(until) = query.until {
            at.insert("$lt", ceil_millisecond(until));
        }
        if !at.is_empty() {
            filter.insert("at_ms", at);
        }
        let docs = super::find_page(&self.audit, filter, doc! { "audit_id": -1 }, limit).await?;
        let entries = docs
            .into_iter()
            .map(AuditDoc::into_entry)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(audit_page(entries, limit))
    }

    async fn purge_audit(&self, before: Timestamp) -> Result<u64, LogStoreError> {
        let result = self
            .audit
            .delete_many(doc! { "expire_ms": { "$lt": ceil_millisecond(before) } })
            .await
            .map_err(store_error)?;
        Ok(result.deleted_count)
    }
}
