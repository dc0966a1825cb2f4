//! Jobs: reading, writing (with an optional compare-and-swap on the job's
//! revision, resetting its claim state when the schedule changes), deleting
//! (with its claim state, pending triggers, results and key-value state)
//! and listing them.

use super::Coordinator;
use super::keys::Family;
use crate::coord::{Compare, Revision, StoreError, Txn, TxnOp};
use crate::ids::JobName;
use crate::job::{Job, JobError, JobRecord};

impl Coordinator {
    /// The stored record of a job and its revision.
    pub async fn get_job(&self, name: &JobName) -> Result<Option<(JobRecord, Revision)>, StoreError> {
        let Some(kv) = self.store.get(&self.key(Family::Jobs, name.as_str())).await? else {
            return Ok(None);
        };
        let record = serde_json::from_slice(&kv.value)
            .map_err(|err| StoreError::Other(format!("stored job {name} is not valid JSON: {err}")))?;
        Ok(Some((record, kv.mod_revision)))
    }

    /// Writes a job. With `expected = Some(rev)` the write only happens if the
    /// job is still at `rev` (0: does not exist yet); returns `Ok(None)` when
    /// that check fails. When the schedule changes, the claim state is reset so
    /// the new schedule starts fresh.
    pub async fn put_job(
        &self,
        name: &JobName,
        record: &JobRecord,
        expected: Option<Revision>,
        reset_state: bool,
    ) -> Result<Option<Revision>, StoreError> {
        let key = self.key(Family::Jobs, name.as_str());
        let value = serde_json::to_vec(record).map_err(|err| StoreError::Other(format!("cannot encode job: {err}")))?;
        let mut ops = vec![TxnOp::put(key.clone(), value)];
        if reset_state {
            ops.push(TxnOp::delete(self.key(Family::State, name.as_str())));
        }
        let compares = expected.map(|rev| Compare::mod_revision_is(key, rev));
        let response = self.store.txn(Txn::new().when(compares).and_then(ops)).await?;
        Ok(response.succeeded.then_some(response.revision))
    }

    /// Deletes a job with its claim state, pending triggers, results and
    /// key-value state. Running runs finish (or are killed by the caller);
    /// their keys go with their leases, and their state writes are refused
    /// from now on (the job no longer exists).
    pub async fn delete_job(&self, name: &JobName) -> Result<bool, StoreError> {
        self.delete_job_at(name, None).await
    }

    /// Deletes a job as [`Coordinator::delete_job`] does, but only if it is
    /// still at `revision` (when given): a caller that checked the job it
    /// read deletes exactly that job. Returns whether it deleted.
    pub async fn delete_job_at(&self, name: &JobName, revision: Option<Revision>) -> Result<bool, StoreError> {
        let key = self.key(Family::Jobs, name.as_str());
        let condition = match revision {
            Some(revision) => Compare::mod_revision_is(key.clone(), revision),
            None => Compare::exists(key.clone()),
        };
        let response = self
            .store
            .txn(Txn::new().when([condition]).and_then([
                TxnOp::delete(key),
                TxnOp::delete(self.key(Family::State, name.as_str())),
                TxnOp::DeletePrefix {
                    prefix: self.key(Family::Trigger, &format!("{name}/")),
                },
                TxnOp::DeletePrefix {
                    prefix: self.key(Family::Results, &format!("{name}/")),
                },
                TxnOp::DeletePrefix {
                    prefix: self.state_prefix_of(name),
                },
            ]))
            .await?;
        Ok(response.succeeded)
    }

    /// Every job, decoded and validated; records that fail to decode are
    /// returned as errors beside the good ones so callers can report them.
    pub async fn list_jobs(&self) -> Result<(Vec<Result<Job, (String, JobError)>>, Revision), StoreError> {
        let range = self.store.range(&self.prefix_of(Family::Jobs)).await?;
        let jobs = range.kvs.iter().filter_map(|kv| self.decode_job(kv)).collect();
        Ok((jobs, range.revision))
    }
}
