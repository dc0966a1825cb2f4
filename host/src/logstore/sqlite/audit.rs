//! The audit log in the SQLite store: the `audit` table (schema version 3),
//! entries inserted once each (a repeated id is ignored), queried newest
//! first by id with the filters as columns, and purged by `expire_at`.

use rusqlite::{TransactionBehavior, params};

use super::{PURGE_BATCH, SqliteLogStore, Where};
use crate::audit::{AuditAction, AuditEntry};
use crate::ids::JobName;
use crate::logstore::store::{audit_page, ceil_millisecond, decode_audit_cursor, runs_limit};
use crate::logstore::{AuditPage, AuditQuery, AuditStore, LogStoreError};

/// An entry ready to bind.
struct AuditRow {
    id: String,
    at: i64,
    actor: String,
    action: &'static str,
    target: String,
    job: Option<String>,
    expire_at: Option<i64>,
    json: String,
}

impl AuditRow {
    fn new(entry: &AuditEntry) -> Result<Self, LogStoreError> {
        let json = serde_json::to_string(entry)
            .map_err(|e| LogStoreError::Invalid(format!("audit entry {} cannot be encoded: {e}", entry.id)))?;
        Ok(Self {
            id: entry.id.to_string(),
            at: entry.at.as_millisecond(),
            actor: entry.actor.clone(),
            action: entry.action.as_str(),
            target: entry.target.clone(),
            job: entry.job.as_ref().map(|job| job.as_str().to_owned()),
            expire_at: entry.expire_at.map(jiff::Timestamp::as_millisecond),
            json,
        })
    }
}

#[async_trait::async_trait]
impl AuditStore for SqliteLogStore {
    async fn write_audit(&self, entries: &[AuditEntry]) -> Result<(), LogStoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let rows = entries.iter().map(AuditRow::new).collect::<Result<Vec<_>, _>>()?;
        self.writer
            .run(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                {
                    let mut insert = tx.prepare_cached(
                        "INSERT OR IGNORE INTO audit (id, at, actor, action, target, job, expire_at, entry) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )?;
                    for row in &rows {
                        insert.execute(params![
                            row.id,
                            row.at,
                            row.actor,
                            row.action,
                            row.target,
                            row.job,
                            row.expire_at,
                            row.json
                        ])?;
                    }
                }
                tx.commit()?;
                Ok(())
            })
            .await
    }

    async fn audit(&self, query: &AuditQuery) -> Result<AuditPage, LogStoreError> {
        let limit = runs_limit(query.limit);
        let mut filter = Where::default();
        filter.text("job = ?", query.job.as_ref().map(JobName::as_str));
        filter.text("actor = ?", query.actor.as_deref());
        filter.text("action = ?", query.action.map(AuditAction::as_str));
        filter.text("target = ?", query.target.as_deref());
        if let Some(cursor) = &query.cursor {
            filter.text("id < ?", Some(&decode_audit_cursor(cursor)?.to_string()));
        }
        filter.window("at >= ?", "at < ?", query.since, query.until);
        let entries = self
            .json_page("SELECT entry FROM audit", filter, "id DESC", limit, "audit entry")
            .await?;
        Ok(audit_page(entries, limit))
    }

    async fn purge_audit(&self, before: jiff::Timestamp) -> Result<u64, LogStoreError> {
        let before = ceil_millisecond(before);
        self.purge_in_batches(move |conn| {
            Ok(conn.execute(
                "DELETE FROM audit WHERE id IN \
                 (SELECT id FROM audit WHERE expire_at < ?1 LIMIT ?2)",
                params![before, PURGE_BATCH],
            )?)
        })
        .await
    }
}
