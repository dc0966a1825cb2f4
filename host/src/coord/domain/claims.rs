//! Claims: a tick is claimed by a compare-and-swap on the job's claim state
//! (`state/<job>`), whose revision is the run's fencing token; claims are
//! packed into as few transactions as the store allows. Also reading the
//! claim state and the claimant's own rewrites of it.
//!
//! Why claims cannot run a tick twice: ticks only move forward in
//! `state/<job>`, and a claim commits only if the state is still at the
//! revision its claimant read, so two workers that briefly both believe they
//! own a job (or whose clocks disagree) cannot both win the same tick.
//!
//! A claim that skips its tick (overlap `forbid`) sets `skipped` in the
//! state, and the skip record's id is derived from (job, tick)
//! (`RunId::for_skip`); a catch-up claim stores its plan's inputs (`plan`)
//! and lists its queued ticks (`catchup`; a tick is either listed there or
//! has its run published, never both, never neither). Those records travel
//! only through the claimant's log sink, so a worker that takes the job over
//! from another lease derives them again from the state and writes the ones
//! the log store lacks (`worker/state/recovery.rs`).

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use jiff::Timestamp;

use super::keys::Family;
use super::records::{JobState, PlanInputs, RunningEntry};
use super::{Coordinator, encode};
use crate::coord::{Compare, LeaseId, MAX_TXN_OPS, Revision, StoreError, Txn, TxnOp};
use crate::ids::JobName;

/// One tick to claim. `seen_revision` is the mod revision of `state/<job>` the
/// claimer last saw (0: never claimed); the claim fails if anyone moved it since.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub job: JobName,
    pub tick: Timestamp,
    pub seen_revision: Revision,
    /// The run to publish under `running/` on success; `None` when the tick is
    /// only being recorded (skipped, missed).
    pub run: Option<RunningEntry>,
    pub lease: LeaseId,
    /// The claim records its tick skipped (kept in the state: [`JobState::skipped`]).
    pub skipped: bool,
    /// The claimant's queued catch-up ticks ([`JobState::catchup`]).
    pub catchup: Vec<Timestamp>,
    /// For a catch-up claim: its plan's inputs ([`JobState::plan`]).
    pub plan: Option<PlanInputs>,
}

/// The result of one claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The tick is ours: `fence` is the claim's revision (the fencing token) and
    /// also the new mod revision of `state/<job>`.
    Won { fence: Revision },
    /// Someone else moved the job's state first; re-read it before trying again.
    Lost,
}

impl Coordinator {
    /// A job's claim state and the mod revision of its key (0 if never claimed).
    pub async fn job_state(&self, name: &JobName) -> Result<(Option<JobState>, Revision), StoreError> {
        match self.store.get(&self.key(Family::State, name.as_str())).await? {
            None => Ok((None, 0)),
            Some(kv) => {
                let state = serde_json::from_slice(&kv.value)
                    .map_err(|err| StoreError::Other(format!("stored state of {name} is not valid JSON: {err}")))?;
                Ok((Some(state), kv.mod_revision))
            }
        }
    }

    /// The claim state of every job, with the mod revision of each state key.
    pub async fn all_states(&self) -> Result<HashMap<JobName, (JobState, Revision)>, StoreError> {
        let range = self.store.range(&self.prefix_of(Family::State)).await?;
        Ok(range
            .kvs
            .iter()
            .filter_map(|kv| {
                let name = JobName::new(self.strip(Family::State, &kv.key)?).ok()?;
                let state = serde_json::from_slice(&kv.value).ok()?;
                Some((name, (state, kv.mod_revision)))
            })
            .collect())
    }

    /// The claim states of `names` (those that have one), read key by key
    /// with up to 64 reads in flight: for a batch of jobs that is a small
    /// share of all of them, where one range over every state would read
    /// mostly others.
    pub async fn states_of(&self, names: &[JobName]) -> Result<HashMap<JobName, (JobState, Revision)>, StoreError> {
        // Owned futures: borrowing `self` across them makes the worker's
        // loop future not `Send` for every lifetime.
        let reads = futures::stream::iter(names.to_vec())
            .map(|name| {
                let coord = self.clone();
                async move {
                    let (state, revision) = coord.job_state(&name).await?;
                    Ok::<_, StoreError>(state.map(|state| (name, (state, revision))))
                }
            })
            .buffer_unordered(64);
        let found: Vec<Result<_, StoreError>> = reads.collect().await;
        let mut states = HashMap::new();
        for entry in found {
            states.extend(entry?);
        }
        Ok(states)
    }

    /// Claims ticks. Claims are packed into as few transactions as the store's
    /// operation limit allows, and the transactions are sent together (so a
    /// store that commits in groups, or pipelines, pays one round for all of
    /// them). If a packed transaction fails (some job's state moved), its
    /// claims are retried one by one so each gets its own answer. Outcomes
    /// are returned in request order.
    pub async fn claim(&self, requests: &[ClaimRequest]) -> Result<Vec<ClaimOutcome>, StoreError> {
        let mut batches = Vec::new();
        let mut start = 0;
        while start < requests.len() {
            // Each claim needs up to two operations; a job may appear only once
            // per transaction (one write per key).
            let mut end = start;
            let mut ops = 0;
            let mut seen = HashSet::new();
            while end < requests.len() {
                let need = 1 + usize::from(requests[end].run.is_some());
                if ops + need > MAX_TXN_OPS || !seen.insert(&requests[end].job) {
                    break;
                }
                ops += need;
                end += 1;
            }
            batches.push(&requests[start..end]);
            start = end;
        }
        let results = futures::future::join_all(batches.into_iter().map(|batch| self.claim_batch(batch))).await;
        let mut outcomes = Vec::with_capacity(requests.len());
        for result in results {
            outcomes.extend(result?);
        }
        Ok(outcomes)
    }

    async fn claim_batch(&self, batch: &[ClaimRequest]) -> Result<Vec<ClaimOutcome>, StoreError> {
        let response = self.store.txn(self.claim_txn(batch)?).await?;
        if response.succeeded {
            return Ok(vec![
                ClaimOutcome::Won {
                    fence: response.revision
                };
                batch.len()
            ]);
        }
        if batch.len() == 1 {
            return Ok(vec![ClaimOutcome::Lost]);
        }
        let singles = batch.iter().map(|request| async move {
            let response = self.store.txn(self.claim_txn(std::slice::from_ref(request))?).await?;
            Ok::<_, StoreError>(if response.succeeded {
                ClaimOutcome::Won {
                    fence: response.revision,
                }
            } else {
                ClaimOutcome::Lost
            })
        });
        futures::future::join_all(singles).await.into_iter().collect()
    }

    fn claim_txn(&self, batch: &[ClaimRequest]) -> Result<Txn, StoreError> {
        let mut txn = Txn::new();
        for request in batch {
            let state_key = self.key(Family::State, request.job.as_str());
            txn.compares
                .push(Compare::mod_revision_is(state_key.clone(), request.seen_revision));
            txn.success.push(TxnOp::put(
                state_key,
                encode(&JobState {
                    last_tick: request.tick,
                    lease: Some(request.lease.0),
                    skipped: request.skipped,
                    catchup: request.catchup.clone(),
                    plan: request.plan.clone(),
                })?,
            ));
            if let Some(run) = &request.run {
                txn.success.push(TxnOp::put_leased(
                    self.running_key(&request.job, run.run_id),
                    encode(run)?,
                    request.lease,
                ));
            }
        }
        Ok(txn)
    }

    /// Writes the job's claim state as `state` if it is still at
    /// `seen_revision` (the claimant updating its own state, no tick
    /// claimed); the new revision, or `None` when the state moved.
    pub async fn rewrite_state(
        &self,
        job: &JobName,
        state: &JobState,
        seen_revision: Revision,
    ) -> Result<Option<Revision>, StoreError> {
        self.put_state_if(job, state, seen_revision, None).await
    }

    /// Publishes the run of a queued catch-up tick and, in the same
    /// transaction, writes the job's claim state without it (`state`), if
    /// the state is still at `seen_revision`. Returns the fencing token, or
    /// `None` when the state moved (another worker took the job over and
    /// accounted for the queued ticks).
    pub async fn start_queued_run(
        &self,
        job: &JobName,
        run: &RunningEntry,
        lease: LeaseId,
        state: &JobState,
        seen_revision: Revision,
    ) -> Result<Option<Revision>, StoreError> {
        let entry = TxnOp::put_leased(self.running_key(job, run.run_id), encode(run)?, lease);
        self.put_state_if(job, state, seen_revision, Some(entry)).await
    }

    /// Puts `state` (and `also`) if the state key is still at
    /// `seen_revision`; the transaction's revision, or `None` if it moved.
    async fn put_state_if(
        &self,
        job: &JobName,
        state: &JobState,
        seen_revision: Revision,
        also: Option<TxnOp>,
    ) -> Result<Option<Revision>, StoreError> {
        let state_key = self.key(Family::State, job.as_str());
        let mut ops = vec![TxnOp::put(state_key.clone(), encode(state)?)];
        ops.extend(also);
        let response = self
            .store
            .txn(
                Txn::new()
                    .when([Compare::mod_revision_is(state_key, seen_revision)])
                    .and_then(ops),
            )
            .await?;
        Ok(response.succeeded.then_some(response.revision))
    }
}
