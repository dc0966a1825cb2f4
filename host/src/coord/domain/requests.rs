//! Requests addressed to workers through the store: kill requests (on a
//! short lease), trigger requests (run now, a re-run of an earlier run's
//! tick, a dependent job's run, a retry, the shards of a broadcast tick), and the outcomes that services report
//! for async runs, kept until the run's worker takes them.

use std::time::Duration;

use jiff::Timestamp;

use super::keys::Family;
use super::records::{KillTarget, RunReport, TriggerRequest};
use super::{Coordinator, encode};
use crate::auth::Role;
use crate::coord::{Compare, MAX_TXN_OPS, StoreError, Txn, TxnOp};
use crate::ids::{JobName, RunId};

/// How long a kill request stays in the store. A run that is not found by
/// then was not running.
const KILL_REQUEST_TTL: Duration = Duration::from_secs(60);

/// How long a reported async result stays in the store if no worker takes
/// it (its run ended or was lost meanwhile).
const RESULT_TTL: Duration = Duration::from_secs(3600);

impl Coordinator {
    /// Asks whichever worker runs it to kill a run (or every run of the job).
    pub async fn request_kill(&self, job: &JobName, target: KillTarget) -> Result<(), StoreError> {
        let lease = self.store.lease_grant(KILL_REQUEST_TTL).await?;
        let which = match target {
            KillTarget::Run(run_id) => run_id.to_string(),
            KillTarget::All => "all".to_owned(),
        };
        // The value is unique per request so a repeated kill is a new event.
        let value = encode(&Timestamp::now())?;
        self.store
            .put(&self.key(Family::Kill, &format!("{job}/{which}")), value, Some(lease))
            .await?;
        Ok(())
    }

    /// Stores a "run now" request; returns its key.
    pub async fn request_trigger(&self, job: &JobName, requested_by: Role) -> Result<String, StoreError> {
        self.put_trigger(job, &TriggerRequest::manual(requested_by)).await
    }

    /// The run a trigger request's run will have: the id its key ends with
    /// (the worker that takes the request starts the run under it, so "run
    /// now" can name the run before it exists). `None` for a key of another
    /// shape.
    pub fn trigger_run_id(&self, key: &str) -> Option<RunId> {
        key.rsplit('/').next().and_then(|id| id.parse().ok())
    }

    /// Stores a request to start a run of `job`; returns its key, whose last
    /// segment is the run's id to be ([`Coordinator::trigger_run_id`]).
    pub async fn put_trigger(&self, job: &JobName, request: &TriggerRequest) -> Result<String, StoreError> {
        let key = self.key(Family::Trigger, &format!("{job}/{}", RunId::generate()));
        self.store.put(&key, encode(request)?, None).await?;
        Ok(key)
    }

    /// Stores the shard requests of one broadcast tick (each addressed to
    /// its worker), in as few transactions as the operation limit allows;
    /// with `consume`, the trigger that asked for the broadcast is deleted
    /// in the first one, which fails (`Ok(false)`) if it is gone already.
    pub async fn put_shards(
        &self,
        job: &JobName,
        shards: &[TriggerRequest],
        consume: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut first = true;
        for batch in shards.chunks(MAX_TXN_OPS - 1) {
            let mut txn = Txn::new();
            if let (true, Some(key)) = (first, consume) {
                txn.compares.push(Compare::exists(key));
                txn.success.push(TxnOp::delete(key));
            }
            for request in batch {
                let index = request.shard.map_or(0, |shard| shard.index);
                let group = request.shard.map_or_else(RunId::generate, |shard| shard.group);
                let key = self.key(Family::Trigger, &format!("{job}/{group}-{index:05}"));
                txn.success.push(TxnOp::put(key, encode(request)?));
            }
            let response = self.store.txn(txn).await?;
            if first && !response.succeeded {
                return Ok(false);
            }
            first = false;
        }
        Ok(true)
    }

    /// Deletes a trigger nobody will take (its worker is gone); `false` if
    /// someone took or deleted it first.
    pub async fn drop_trigger(&self, trigger_key: &str) -> Result<bool, StoreError> {
        let response = self
            .store
            .txn(
                Txn::new()
                    .when([Compare::exists(trigger_key)])
                    .and_then([TxnOp::delete(trigger_key)]),
            )
            .await?;
        Ok(response.succeeded)
    }

    /// Stores the reported outcome of an async run, for the worker running
    /// it; `Ok(false)` if one was reported already.
    pub async fn put_result(&self, job: &JobName, run_id: RunId, report: &RunReport) -> Result<bool, StoreError> {
        let key = self.key(Family::Results, &format!("{job}/{run_id}"));
        let lease = self.store.lease_grant(RESULT_TTL).await?;
        let response = self
            .store
            .txn(
                Txn::new()
                    .when([Compare::missing(key.clone())])
                    .and_then([TxnOp::put_leased(key, encode(report)?, lease)]),
            )
            .await?;
        Ok(response.succeeded)
    }

    /// Removes a result its worker has taken.
    pub async fn delete_result(&self, job: &JobName, run_id: RunId) -> Result<(), StoreError> {
        self.store
            .delete(&self.key(Family::Results, &format!("{job}/{run_id}")))
            .await
            .map(|_| ())
    }

    /// Runs requested and not yet started, of one job or of all jobs.
    pub async fn triggers(&self, job: Option<&JobName>) -> Result<Vec<(JobName, TriggerRequest)>, StoreError> {
        let range = self.store.range(&self.per_job_prefix(Family::Trigger, job)).await?;
        Ok(range.kvs.iter().filter_map(|kv| self.decode_trigger(kv)).collect())
    }
}
