//! Log stores that stand in for a real one: [`Discard`] accepts every write
//! and keeps nothing (the claims benchmark isolates the coordination store
//! with it); [`Hanging`] never finishes a write, as a store that hangs (what
//! a worker's sink holds then stays in its memory).

use std::collections::BTreeMap;

use async_trait::async_trait;
use jiff::Timestamp;

use crate::audit::AuditEntry;
use crate::ids::{JobName, RunId};
use crate::logstore::{AuditPage, AuditQuery, LogBatch, LogStore, LogStoreError, RunPage, RunQuery};
use crate::run::{OutputChunk, RunRecord};

/// Accepts every write, keeps nothing, finds nothing.
#[derive(Debug, Default)]
pub struct Discard;

/// Never finishes a write; reads find nothing.
#[derive(Debug, Default)]
pub struct Hanging;

#[async_trait]
impl LogStore for Discard {
    async fn write(&self, _batch: &LogBatch) -> Result<(), LogStoreError> {
        Ok(())
    }
    async fn runs(&self, _query: &RunQuery) -> Result<RunPage, LogStoreError> {
        Ok(RunPage::default())
    }
    async fn run(&self, _run_id: RunId) -> Result<Option<RunRecord>, LogStoreError> {
        Ok(None)
    }
    async fn output(
        &self,
        _run_id: RunId,
        _after: Option<u64>,
        _limit: usize,
    ) -> Result<Vec<OutputChunk>, LogStoreError> {
        Ok(Vec::new())
    }
    async fn last_runs(&self, _jobs: &[JobName]) -> Result<BTreeMap<JobName, RunRecord>, LogStoreError> {
        Ok(BTreeMap::new())
    }
    async fn purge(&self, _before: Timestamp) -> Result<u64, LogStoreError> {
        Ok(0)
    }
    async fn write_audit(&self, _entries: &[AuditEntry]) -> Result<(), LogStoreError> {
        Ok(())
    }
    async fn audit(&self, _query: &AuditQuery) -> Result<AuditPage, LogStoreError> {
        Ok(AuditPage::default())
    }
    async fn purge_audit(&self, _before: Timestamp) -> Result<u64, LogStoreError> {
        Ok(0)
    }
}

/// Reads answer as [`Discard`]'s do.
#[async_trait]
impl LogStore for Hanging {
    async fn write(&self, _batch: &LogBatch) -> Result<(), LogStoreError> {
        std::future::pending().await
    }
    async fn runs(&self, query: &RunQuery) -> Result<RunPage, LogStoreError> {
        Discard.runs(query).await
    }
    async fn run(&self, run_id: RunId) -> Result<Option<RunRecord>, LogStoreError> {
        Discard.run(run_id).await
    }
    async fn output(&self, run_id: RunId, after: Option<u64>, limit: usize) -> Result<Vec<OutputChunk>, LogStoreError> {
        Discard.output(run_id, after, limit).await
    }
    async fn last_runs(&self, jobs: &[JobName]) -> Result<BTreeMap<JobName, RunRecord>, LogStoreError> {
        Discard.last_runs(jobs).await
    }
    async fn purge(&self, before: Timestamp) -> Result<u64, LogStoreError> {
        Discard.purge(before).await
    }
    async fn write_audit(&self, _entries: &[AuditEntry]) -> Result<(), LogStoreError> {
        std::future::pending().await
    }
    async fn audit(&self, query: &AuditQuery) -> Result<AuditPage, LogStoreError> {
        Discard.audit(query).await
    }
    async fn purge_audit(&self, before: Timestamp) -> Result<u64, LogStoreError> {
        Discard.purge_audit(before).await
    }
}
