//! Log stores that stand in for a real one: [`Discard`] accepts every write
//! and keeps nothing (the claims benchmark isolates the coordination store
//! with it); [`Hanging`] never finishes a write, as a store that hangs (what
//! a worker's sink holds then stays in its memory). And [`Tap`], for a log
//! store in front of another that fails, holds or watches some calls and
//! passes every call on: the one place that forwards the whole contract.

use std::collections::BTreeMap;

use async_trait::async_trait;
use jiff::Timestamp;

use crate::audit::AuditEntry;
use crate::ids::{JobName, RunId};
use crate::logstore::{AuditPage, AuditQuery, AuditStore, LogBatch, LogStore, LogStoreError, RunPage, RunQuery};
use crate::run::{OutputChunk, RunRecord};

/// Accepts every write, keeps nothing, finds nothing.
#[derive(Debug, Default)]
pub struct Discard;

/// Never finishes a write; reads find nothing.
#[derive(Debug, Default)]
pub struct Hanging;

/// A call of the [`LogStore`] contract, as a [`Tap`] sees it.
#[derive(Debug, Clone, Copy)]
pub enum Call<'a> {
    Write(&'a LogBatch),
    Runs,
    Run,
    Output,
    LastRuns,
    Purge,
    WriteAudit(&'a [AuditEntry]),
    Audit,
    PurgeAudit,
}

/// A log store in front of another: implementing `Tap` makes a type a
/// [`LogStore`] that passes every call on to [`Tap::inner`], after
/// [`Tap::before`] let it through. Tests and benchmarks write only what
/// they change (switch a store off, hold its writes, time them).
#[async_trait]
pub trait Tap: Send + Sync + 'static {
    /// The store every call is passed on to.
    fn inner(&self) -> &dyn LogStore;

    /// Runs before `call` is passed on; an error is answered instead.
    async fn before(&self, _call: Call<'_>) -> Result<(), LogStoreError> {
        Ok(())
    }

    /// Runs once the store behind has taken a write.
    fn written(&self, _batch: &LogBatch) {}
}

#[async_trait]
impl<T: Tap> LogStore for T {
    async fn write(&self, batch: &LogBatch) -> Result<(), LogStoreError> {
        self.before(Call::Write(batch)).await?;
        self.inner().write(batch).await?;
        self.written(batch);
        Ok(())
    }
    async fn runs(&self, query: &RunQuery) -> Result<RunPage, LogStoreError> {
        self.before(Call::Runs).await?;
        self.inner().runs(query).await
    }
    async fn run(&self, run_id: RunId) -> Result<Option<RunRecord>, LogStoreError> {
        self.before(Call::Run).await?;
        self.inner().run(run_id).await
    }
    async fn output(&self, run_id: RunId, after: Option<u64>, limit: usize) -> Result<Vec<OutputChunk>, LogStoreError> {
        self.before(Call::Output).await?;
        self.inner().output(run_id, after, limit).await
    }
    async fn last_runs(&self, jobs: &[JobName]) -> Result<BTreeMap<JobName, RunRecord>, LogStoreError> {
        self.before(Call::LastRuns).await?;
        self.inner().last_runs(jobs).await
    }
    async fn purge(&self, before: Timestamp) -> Result<u64, LogStoreError> {
        self.before(Call::Purge).await?;
        self.inner().purge(before).await
    }
}

#[async_trait]
impl<T: Tap> AuditStore for T {
    async fn write_audit(&self, entries: &[AuditEntry]) -> Result<(), LogStoreError> {
        self.before(Call::WriteAudit(entries)).await?;
        self.inner().write_audit(entries).await
    }
    async fn audit(&self, query: &AuditQuery) -> Result<AuditPage, LogStoreError> {
        self.before(Call::Audit).await?;
        self.inner().audit(query).await
    }
    async fn purge_audit(&self, before: Timestamp) -> Result<u64, LogStoreError> {
        self.before(Call::PurgeAudit).await?;
        self.inner().purge_audit(before).await
    }
}

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
}

#[async_trait]
impl AuditStore for Discard {
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
impl Tap for Hanging {
    fn inner(&self) -> &dyn LogStore {
        &Discard
    }

    async fn before(&self, call: Call<'_>) -> Result<(), LogStoreError> {
        if let Call::Write(_) | Call::WriteAudit(_) = call {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}
