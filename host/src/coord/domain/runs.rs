//! Running runs: publishing a run under `running/` (on the runner's
//! lease), taking a trigger and publishing its run in one transaction,
//! removing ended runs (packed into shared transactions) with the runs they
//! start, and listing the runs in progress.
//!
//! A run's `running/` entry is deleted only after its final record is
//! durable (in the log store or the worker's spool): a worker that dies
//! before that leaves the entry, so the run is recorded `lost` rather than
//! left `running`. A live worker whose delete fails retries it in the
//! background until it goes through, as a stale entry would hold back every
//! later tick of an `overlap: forbid` job for as long as the lease lives.
//! Plain deletes that arrive while one transaction is in flight share the
//! next one (group commit, at most `MAX_TXN_OPS` each); a pack that fails
//! fails each of its deletes, and each is retried on its own.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::keys::Family;
use super::records::{RunningEntry, TriggerRequest};
use super::{Coordinator, encode};
use crate::coord::{Compare, KvStore, LeaseId, MAX_TXN_OPS, Revision, StoreError, Txn, TxnOp};
use crate::ids::{JobName, RunId};

/// A delete waiting for its pack, and where its outcome goes.
type PackedDelete = (String, oneshot::Sender<Result<(), StoreError>>);

/// Deletes of `running/` entries, packed: runs that end while a pack is in
/// flight share the next transaction, so a busy worker makes one store
/// write for many ended runs instead of one each (group commit: a lone
/// delete goes at once, nothing waits for a pack to fill). The channel
/// needs no bound of its own: every sender waits for its delete's outcome,
/// so at most one delete per run task (bounded by the worker's capacity)
/// and per background retry is ever queued.
pub(super) struct DeleteQueue(mpsc::UnboundedSender<PackedDelete>);

impl DeleteQueue {
    fn start(store: Arc<dyn KvStore>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<PackedDelete>();
        tokio::spawn(async move {
            let mut pack = Vec::new();
            while rx.recv_many(&mut pack, MAX_TXN_OPS).await > 0 {
                let mut keys: Vec<String> = pack.iter().map(|(key, _)| key.clone()).collect();
                keys.sort_unstable();
                keys.dedup();
                let result = store
                    .txn(Txn::new().and_then(keys.into_iter().map(TxnOp::delete)))
                    .await
                    .map(|_| ());
                for (_, reply) in pack.drain(..) {
                    let _gone = reply.send(result.clone());
                }
            }
        });
        Self(tx)
    }

    /// Deletes `key` in the next pack. Should the packer be gone (its
    /// runtime shut down while this coordinator lives on), alone.
    async fn delete(&self, store: &Arc<dyn KvStore>, key: String) -> Result<(), StoreError> {
        let (reply, outcome) = oneshot::channel();
        match self.0.send((key, reply)) {
            Ok(()) => match outcome.await {
                Ok(result) => result,
                Err(_) => Err(StoreError::Unavailable("the delete packer stopped mid-pack".into())),
            },
            Err(mpsc::error::SendError((key, _))) => store.delete(&key).await.map(|_| ()),
        }
    }
}

impl Coordinator {
    /// Publishes a run that needs no tick claim (a retry of a claimed tick);
    /// returns its fencing token.
    pub async fn start_run(&self, job: &JobName, run: &RunningEntry, lease: LeaseId) -> Result<Revision, StoreError> {
        self.store
            .put(&self.running_key(job, run.run_id), encode(run)?, Some(lease))
            .await
    }

    /// Consumes a manual trigger and publishes its run in one transaction, so
    /// a trigger starts exactly one run; `None` if someone else consumed it.
    pub async fn take_trigger(
        &self,
        trigger_key: &str,
        job: &JobName,
        run: &RunningEntry,
        lease: LeaseId,
    ) -> Result<Option<Revision>, StoreError> {
        let response = self
            .store
            .txn(Txn::new().when([Compare::exists(trigger_key)]).and_then([
                TxnOp::delete(trigger_key),
                TxnOp::put_leased(self.running_key(job, run.run_id), encode(run)?, lease),
            ]))
            .await?;
        Ok(response.succeeded.then_some(response.revision))
    }

    /// Removes a finished run from `running/`; concurrent calls share one
    /// transaction (see [`DeleteQueue`]).
    pub async fn finish_run(&self, job: &JobName, run_id: RunId) -> Result<(), StoreError> {
        let queue = self.deletes.get_or_init(|| DeleteQueue::start(self.store.clone()));
        queue.delete(&self.store, self.running_key(job, run_id)).await
    }

    /// Removes a finished run from `running/` and, in the same transaction,
    /// stores the trigger requests of the runs it starts (its retry, or its
    /// dependents), so that they start exactly when the run is seen to end.
    pub async fn finish_run_starting(
        &self,
        job: &JobName,
        run_id: RunId,
        dependents: &[(JobName, TriggerRequest)],
    ) -> Result<(), StoreError> {
        if dependents.is_empty() {
            return self.finish_run(job, run_id).await;
        }
        let running = self.running_key(job, run_id);
        let mut ops = vec![TxnOp::delete(running.clone())];
        for (dependent, request) in dependents {
            let key = self.key(Family::Trigger, &format!("{dependent}/{}", RunId::generate()));
            ops.push(TxnOp::put(key, encode(request)?));
        }
        // Only while the run's entry exists: a transaction repeated after a
        // lost answer cannot start the dependents twice.
        let response = self
            .store
            .txn(Txn::new().when([Compare::exists(running)]).and_then(ops))
            .await?;
        if !response.succeeded {
            tracing::warn!(%job, run = %run_id, "the run's entry was already gone; its retry or dependent jobs were not started");
        }
        Ok(())
    }

    /// Runs in progress, of one job or of all jobs.
    pub async fn running(&self, job: Option<&JobName>) -> Result<Vec<(JobName, RunningEntry)>, StoreError> {
        let range = self.store.range(&self.per_job_prefix(Family::Running, job)).await?;
        Ok(range.kvs.iter().filter_map(|kv| self.decode_running(kv)).collect())
    }

    /// The running entry of a run, found by its id alone.
    pub async fn find_running(&self, run_id: RunId) -> Result<Option<(JobName, RunningEntry)>, StoreError> {
        Ok(self.running(None).await?.into_iter().find(|(_, e)| e.run_id == run_id))
    }
}
