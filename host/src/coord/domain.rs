//! The sandcron key layout and every coordination operation built on the
//! [`KvStore`] contract: jobs, claim-by-CAS with fencing, running runs, workers,
//! kill and trigger requests, and a re-listing prefix watcher.
//!
//! ```text
//! <prefix>jobs/<name>                job record (JSON)
//! <prefix>state/<name>               { last_tick, lease, skipped, catchup } —
//!                                    advanced only by claims
//! <prefix>running/<name>/<run_id>    a run in progress, on the runner's lease
//! <prefix>workers/<id>               worker info, on the worker's lease
//! <prefix>kill/<name>/<run_id|all>   kill request, on a short lease
//! <prefix>trigger/<name>/<id>        a run to start: "run now", a dependent
//!                                    job's run, a retry (not before its
//!                                    backoff ends), or one shard of a
//!                                    broadcast tick
//! <prefix>results/<name>/<run_id>    an async run's reported outcome, on a lease
//! <prefix>modules/meta/<hex>         module commit marker: size, chunks, kind
//! <prefix>modules/data/<hex>/<n>      module bytes, ≤ 1 MiB per chunk
//! ```

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::kv::{
    Compare, KeyValue, KvStore, LeaseId, MAX_TXN_OPS, Revision, StoreError, Txn, TxnOp, WatchEvent, WatchStream,
};
use crate::auth::Role;
use crate::ids::{JobName, ModuleDigest, RunId};
use crate::job::{Job, JobError, JobRecord};
use crate::module::ModuleKind;
use crate::placement::WorkerInfo;
use crate::run::{ParentRun, RunStatus, Shard, Trigger};

/// How long a kill request stays in the store. A run that is not found by
/// then was not running.
const KILL_REQUEST_TTL: Duration = Duration::from_secs(60);

/// How long a reported async result stays in the store if no worker takes
/// it (its run ended or was lost meanwhile).
const RESULT_TTL: Duration = Duration::from_secs(3600);

/// The claim record of a job: the newest tick any worker has claimed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobState {
    pub last_tick: Timestamp,
    /// The lease of the worker that made the claim. A worker whose claim
    /// transaction failed without an answer (the store went away mid-commit)
    /// reads it back to learn whether the claim went through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<i64>,
    /// The claim recorded its tick `skipped` (overlap forbidden) instead of
    /// starting a run. That record travels only through the claimant's log
    /// sink, with no `running/` entry to show for it, so a worker that takes
    /// the job over from another lease writes it again (same deterministic
    /// run id, [`crate::ids::RunId::for_skip`]) unless the log store has it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// Catch-up ticks this state accounts for that wait to run one after
    /// another on the claimant, oldest first; each leaves the list in the
    /// transaction that publishes its run. A worker that takes the job over
    /// from another lease records the ticks still listed `missed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub catchup: Vec<Timestamp>,
    /// Set by a catch-up claim: what the plan it carried out was made from.
    /// The plan's `missed` records (and those of another claimant's queue it
    /// took over) travel only through the claimant's log sink, so a worker
    /// that takes the job over from another lease derives the same records
    /// from this (deterministic ids, [`crate::ids::RunId::for_missed`]) and
    /// writes the ones the log store lacks. The claimant's next claim leaves
    /// it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanInputs>,
}

/// The inputs of a catch-up plan ([`crate::schedule::plan_catchup`]), enough
/// for any worker to derive the same plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanInputs {
    /// The revision of the job record the plan was made for: a plan is only
    /// derived again for the same schedule and policy.
    pub job_revision: Revision,
    pub after: Timestamp,
    pub now: Timestamp,
    pub missed_records: u64,
    pub runs: u64,
    pub grace_ms: u64,
    pub scan: u64,
    /// Another claimant's queued ticks that the claim took over, which it
    /// records `missed` ([`crate::ids::RunId::for_unstarted_catchup`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub abandoned: Vec<Timestamp>,
}

/// A run in progress, as published under `running/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunningEntry {
    #[schema(value_type = String)]
    pub run_id: RunId,
    pub worker: String,
    #[schema(value_type = String, format = DateTime)]
    pub tick: Timestamp,
    pub trigger: Trigger,
    pub attempt: u32,
    #[schema(value_type = String, format = DateTime)]
    pub claimed_at: Timestamp,
    /// The run's fencing token, once known. Absent in the entry written by
    /// the claim itself, whose revision is the fence; present when the entry
    /// is published again (after the worker lost and renewed its lease).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<Revision>,
    /// For a dependent job's run: the run that started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRun>,
    /// For a shard of a broadcast tick: which one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// How many dependency links led to this run (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub depth: u32,
    /// For a run of an async job: the SHA-256 (hex) of the token the
    /// service reporting its result must present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_token_sha256: Option<String>,
    /// The token itself: known only to the worker running the run (and,
    /// through it, to the job), never stored.
    #[serde(skip)]
    #[schema(ignore)]
    pub result_token: Option<String>,
}

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

/// Which runs a kill request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillTarget {
    Run(RunId),
    All,
}

/// A kill request as seen by workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillRequest {
    pub job: JobName,
    pub target: KillTarget,
}

/// A request to start a run outside the schedule: "run now", a dependent
/// job started by its parent's run, or one shard of a broadcast tick (then
/// addressed to one worker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerRequest {
    pub requested_at: Timestamp,
    pub requested_by: String,
    /// `manual` or `dependency`; a shard keeps the trigger of its tick.
    #[serde(default = "manual")]
    pub trigger: Trigger,
    /// The instant the run is for: the tick of a shard; otherwise the request time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRun>,
    /// How many dependency links led here (a guard against cycles that
    /// slipped past validation, e.g. two masters saving at once).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub depth: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// The worker that must run it (shards); `None`: the job's owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_worker: Option<String>,
    /// The attempt this run is (a retried shard keeps counting).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub attempt: u32,
    /// Not to be started before this instant (a retry's backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
}

fn manual() -> Trigger {
    Trigger::Manual
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl TriggerRequest {
    /// "Run now", by a caller with `role`.
    pub fn manual(requested_by: Role) -> Self {
        Self {
            requested_at: crate::run::whole_millisecond(Timestamp::now()),
            requested_by: requested_by.as_str().into(),
            trigger: Trigger::Manual,
            tick: None,
            parent: None,
            depth: 0,
            shard: None,
            target_worker: None,
            attempt: 1,
            not_before: None,
        }
    }

    /// The instant the run is for.
    pub fn tick(&self) -> Timestamp {
        crate::run::whole_millisecond(self.tick.unwrap_or(self.requested_at))
    }
}

/// What the service an async run called reports (`POST /api/v1/runs/{run_id}/result`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunReport {
    /// `succeeded` or `failed`.
    pub status: RunStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A JSON value stored with the run, like a `::sandcron::result` line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// Text appended to the run's output (stdout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// A stored module's commit marker (written after all its chunks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ModuleMeta {
    pub size: u64,
    pub chunks: u32,
    /// `module` (core WASI preview 1) or `component` (WASI preview 2).
    pub kind: ModuleKind,
    #[schema(value_type = String, format = DateTime)]
    pub uploaded_at: Timestamp,
}

/// Sandcron's view of the coordination store. Cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    store: Arc<dyn KvStore>,
    prefix: Arc<str>,
    /// The packer of `running/` deletes, started on first use.
    deletes: Arc<std::sync::OnceLock<DeleteQueue>>,
}

/// A delete waiting for its pack, and where its outcome goes.
type PackedDelete = (String, tokio::sync::oneshot::Sender<Result<(), StoreError>>);

/// Deletes of `running/` entries, packed: runs that end while a pack is in
/// flight share the next transaction, so a busy worker makes one store
/// write for many ended runs instead of one each (group commit: a lone
/// delete goes at once, nothing waits for a pack to fill).
struct DeleteQueue(tokio::sync::mpsc::UnboundedSender<PackedDelete>);

impl DeleteQueue {
    fn start(store: Arc<dyn KvStore>) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PackedDelete>();
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
        let (reply, outcome) = tokio::sync::oneshot::channel();
        match self.0.send((key, reply)) {
            Ok(()) => match outcome.await {
                Ok(result) => result,
                Err(_) => Err(StoreError::Unavailable("the delete packer stopped mid-pack".into())),
            },
            Err(tokio::sync::mpsc::error::SendError((key, _))) => store.delete(&key).await.map(|_| ()),
        }
    }
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator").field("prefix", &self.prefix).finish()
    }
}

/// The family of keys a watch covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Jobs,
    State,
    Running,
    Workers,
    Kill,
    Trigger,
    Modules,
    Results,
}

impl Family {
    fn segment(self) -> &'static str {
        match self {
            Family::Jobs => "jobs/",
            Family::State => "state/",
            Family::Running => "running/",
            Family::Workers => "workers/",
            Family::Kill => "kill/",
            Family::Trigger => "trigger/",
            Family::Modules => "modules/",
            Family::Results => "results/",
        }
    }
}

impl Coordinator {
    /// `prefix` must end with `/` (default `/sandcron/`).
    pub fn new(store: Arc<dyn KvStore>, prefix: &str) -> Self {
        let prefix = if prefix.ends_with('/') {
            prefix.to_owned()
        } else {
            format!("{prefix}/")
        };
        Self {
            store,
            prefix: prefix.into(),
            deletes: Arc::default(),
        }
    }

    pub fn store(&self) -> &Arc<dyn KvStore> {
        &self.store
    }

    pub fn prefix_of(&self, family: Family) -> String {
        format!("{}{}", self.prefix, family.segment())
    }

    fn key(&self, family: Family, rest: &str) -> String {
        format!("{}{}{}", self.prefix, family.segment(), rest)
    }

    /// The path of `key` below its family prefix, if it belongs to `family`.
    pub fn strip<'k>(&self, family: Family, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&*self.prefix)?.strip_prefix(family.segment())
    }

    // ---- jobs ---------------------------------------------------------------

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

    /// Deletes a job with its claim state and pending triggers. Running runs
    /// finish (or are killed by the caller); their keys go with their leases.
    pub async fn delete_job(&self, name: &JobName) -> Result<bool, StoreError> {
        let key = self.key(Family::Jobs, name.as_str());
        let response = self
            .store
            .txn(Txn::new().when([Compare::exists(key.clone())]).and_then([
                TxnOp::delete(key),
                TxnOp::delete(self.key(Family::State, name.as_str())),
                TxnOp::DeletePrefix {
                    prefix: self.key(Family::Trigger, &format!("{name}/")),
                },
                TxnOp::DeletePrefix {
                    prefix: self.key(Family::Results, &format!("{name}/")),
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

    /// Decodes a `jobs/` key-value; `None` if the key is not a job key at all.
    pub fn decode_job(&self, kv: &KeyValue) -> Option<Result<Job, (String, JobError)>> {
        let rest = self.strip(Family::Jobs, &kv.key)?;
        Some(match JobName::new(rest) {
            Ok(name) => JobRecord::decode(name, &kv.value, kv.mod_revision).map_err(|err| (rest.to_owned(), err)),
            Err(err) => Err((
                rest.to_owned(),
                JobError {
                    field: "name".into(),
                    message: err.to_string(),
                },
            )),
        })
    }

    // ---- claims -------------------------------------------------------------

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
    pub async fn all_states(&self) -> Result<std::collections::HashMap<JobName, (JobState, Revision)>, StoreError> {
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

    /// Publishes a run that needs no tick claim (a retry of a claimed tick);
    /// returns its fencing token.
    pub async fn start_run(&self, job: &JobName, run: &RunningEntry, lease: LeaseId) -> Result<Revision, StoreError> {
        self.store
            .put(&self.running_key(job, run.run_id), encode(run)?, Some(lease))
            .await
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

    fn running_key(&self, job: &JobName, run_id: RunId) -> String {
        self.key(Family::Running, &format!("{job}/{run_id}"))
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

    /// Runs requested and not yet started, of one job or of all jobs.
    pub async fn triggers(&self, job: Option<&JobName>) -> Result<Vec<(JobName, TriggerRequest)>, StoreError> {
        let range = self.store.range(&self.per_job_prefix(Family::Trigger, job)).await?;
        Ok(range.kvs.iter().filter_map(|kv| self.decode_trigger(kv)).collect())
    }

    /// Runs in progress, of one job or of all jobs.
    pub async fn running(&self, job: Option<&JobName>) -> Result<Vec<(JobName, RunningEntry)>, StoreError> {
        let range = self.store.range(&self.per_job_prefix(Family::Running, job)).await?;
        Ok(range.kvs.iter().filter_map(|kv| self.decode_running(kv)).collect())
    }

    /// The prefix of a `<family>/<job>/<id>` family: one job's keys, or all.
    fn per_job_prefix(&self, family: Family, job: Option<&JobName>) -> String {
        match job {
            Some(job) => self.key(family, &format!("{job}/")),
            None => self.prefix_of(family),
        }
    }

    /// The job and run id named by a `running/` key.
    pub fn decode_running_key(&self, key: &str) -> Option<(JobName, RunId)> {
        let rest = self.strip(Family::Running, key)?;
        let (job, run_id) = rest.split_once('/')?;
        Some((JobName::new(job).ok()?, run_id.parse().ok()?))
    }

    /// Whether a worker holds its lease (its entry exists).
    /// The ids of the workers whose registration (and so whose lease) is
    /// alive now, read from the store: one read however many are asked
    /// about. Taken from the keys, so an entry whose value cannot be decoded
    /// still counts as alive.
    pub async fn live_workers(&self) -> Result<HashSet<String>, StoreError> {
        let range = self.store.range(&self.prefix_of(Family::Workers)).await?;
        Ok(range
            .kvs
            .iter()
            .filter_map(|kv| self.strip(Family::Workers, &kv.key))
            .map(str::to_owned)
            .collect())
    }

    /// Decodes a `running/` key-value, skipping anything malformed. The
    /// entry's fence is filled in from the key when the entry has none.
    pub fn decode_running(&self, kv: &KeyValue) -> Option<(JobName, RunningEntry)> {
        let rest = self.strip(Family::Running, &kv.key)?;
        let (job, _) = rest.split_once('/')?;
        let job = JobName::new(job).ok()?;
        let mut entry: RunningEntry = serde_json::from_slice(&kv.value).ok()?;
        entry.fence.get_or_insert(kv.create_revision);
        Some((job, entry))
    }

    // ---- workers ------------------------------------------------------------

    /// Publishes (or refreshes) a worker under its lease.
    pub async fn register_worker(&self, info: &WorkerInfo, lease: LeaseId) -> Result<Revision, StoreError> {
        self.store
            .put(&self.key(Family::Workers, &info.id), encode(info)?, Some(lease))
            .await
    }

    pub async fn list_workers(&self) -> Result<Vec<WorkerInfo>, StoreError> {
        let range = self.store.range(&self.prefix_of(Family::Workers)).await?;
        Ok(range
            .kvs
            .iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect())
    }

    // ---- kill and trigger requests -------------------------------------------

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

    /// Decodes a `kill/` key.
    pub fn decode_kill(&self, key: &str) -> Option<KillRequest> {
        let rest = self.strip(Family::Kill, key)?;
        let (job, which) = rest.split_once('/')?;
        let job = JobName::new(job).ok()?;
        let target = if which == "all" {
            KillTarget::All
        } else {
            KillTarget::Run(which.parse().ok()?)
        };
        Some(KillRequest { job, target })
    }

    /// Stores a "run now" request; returns its key.
    pub async fn request_trigger(&self, job: &JobName, requested_by: Role) -> Result<String, StoreError> {
        self.put_trigger(job, &TriggerRequest::manual(requested_by)).await
    }

    /// Stores a request to start a run of `job`; returns its key.
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

    // ---- async results --------------------------------------------------------

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

    /// Decodes a `results/` key-value.
    pub fn decode_result(&self, kv: &KeyValue) -> Option<(JobName, RunId, RunReport)> {
        let rest = self.strip(Family::Results, &kv.key)?;
        let (job, run_id) = rest.split_once('/')?;
        Some((
            JobName::new(job).ok()?,
            run_id.parse().ok()?,
            serde_json::from_slice(&kv.value).ok()?,
        ))
    }

    /// Removes a result its worker has taken.
    pub async fn delete_result(&self, job: &JobName, run_id: RunId) -> Result<(), StoreError> {
        self.store
            .delete(&self.key(Family::Results, &format!("{job}/{run_id}")))
            .await
            .map(|_| ())
    }

    /// The running entry of a run, found by its id alone.
    pub async fn find_running(&self, run_id: RunId) -> Result<Option<(JobName, RunningEntry)>, StoreError> {
        Ok(self.running(None).await?.into_iter().find(|(_, e)| e.run_id == run_id))
    }

    /// Decodes a `trigger/` key-value into its job and request.
    pub fn decode_trigger(&self, kv: &KeyValue) -> Option<(JobName, TriggerRequest)> {
        let rest = self.strip(Family::Trigger, &kv.key)?;
        let (job, _) = rest.split_once('/')?;
        Some((JobName::new(job).ok()?, serde_json::from_slice(&kv.value).ok()?))
    }

    // ---- modules --------------------------------------------------------------
    //
    // Bytes are split into chunks of at most MAX_VALUE_BYTES (etcd refuses
    // requests over 1.5 MiB), each its own write; the meta key is written last
    // and is the commit marker: a module without it does not exist. Metas live
    // apart from the data so listing modules never reads their bytes.

    fn module_meta_key(&self, digest: &ModuleDigest) -> String {
        self.key(Family::Modules, &format!("meta/{}", digest.hex()))
    }

    fn module_chunk_key(&self, digest: &ModuleDigest, index: u32) -> String {
        self.key(Family::Modules, &format!("data/{}/{index:06}", digest.hex()))
    }

    /// Whether a module is stored (its commit marker exists).
    pub async fn module_exists(&self, digest: &ModuleDigest) -> Result<bool, StoreError> {
        Ok(self.store.get(&self.module_meta_key(digest)).await?.is_some())
    }

    /// Stores a module under its digest (the caller has checked that `digest`
    /// is the bytes' digest). Idempotent: an existing module is left as is.
    /// Returns the meta and whether this call created it.
    pub async fn put_module(
        &self,
        digest: &ModuleDigest,
        bytes: &[u8],
        kind: ModuleKind,
    ) -> Result<(ModuleMeta, bool), StoreError> {
        if let Some(meta) = self.module_meta(digest).await? {
            return Ok((meta, false));
        }
        let mut chunks = 0u32;
        for (index, chunk) in bytes.chunks(super::MAX_VALUE_BYTES).enumerate() {
            let index = u32::try_from(index).map_err(|_| StoreError::Invalid("module has too many chunks".into()))?;
            self.store
                .put(&self.module_chunk_key(digest, index), chunk.to_vec(), None)
                .await?;
            chunks = index + 1;
        }
        let meta = ModuleMeta {
            size: bytes.len() as u64,
            chunks,
            kind,
            uploaded_at: Timestamp::now(),
        };
        let key = self.module_meta_key(digest);
        let response = self
            .store
            .txn(
                Txn::new()
                    .when([Compare::missing(key.clone())])
                    .and_then([TxnOp::put(key, encode(&meta)?)]),
            )
            .await?;
        if response.succeeded {
            return Ok((meta, true));
        }
        // A concurrent upload of the same bytes committed first.
        Ok((self.module_meta(digest).await?.unwrap_or(meta), false))
    }

    /// A stored module's meta.
    pub async fn module_meta(&self, digest: &ModuleDigest) -> Result<Option<ModuleMeta>, StoreError> {
        match self.store.get(&self.module_meta_key(digest)).await? {
            None => Ok(None),
            Some(kv) => serde_json::from_slice(&kv.value)
                .map(Some)
                .map_err(|err| StoreError::Other(format!("meta of module {digest} is not valid JSON: {err}"))),
        }
    }

    /// A stored module's bytes, verified against its digest; `None` if it is
    /// not stored. Chunks are read one by one so no response is larger than
    /// a chunk.
    pub async fn module_bytes(&self, digest: &ModuleDigest) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(meta) = self.module_meta(digest).await? else {
            return Ok(None);
        };
        let mut bytes = Vec::with_capacity(usize::try_from(meta.size).unwrap_or(0));
        for index in 0..meta.chunks {
            let kv = self
                .store
                .get(&self.module_chunk_key(digest, index))
                .await?
                .ok_or_else(|| {
                    StoreError::Other(format!("module {digest} is missing chunk {index} of {}", meta.chunks))
                })?;
            bytes.extend_from_slice(&kv.value);
        }
        if bytes.len() as u64 != meta.size || ModuleDigest::of(&bytes) != *digest {
            return Err(StoreError::Other(format!(
                "module {digest} is corrupt: its bytes do not match its digest"
            )));
        }
        Ok(Some(bytes))
    }

    /// Every stored module with its meta.
    pub async fn list_modules(&self) -> Result<Vec<(ModuleDigest, ModuleMeta)>, StoreError> {
        let prefix = self.key(Family::Modules, "meta/");
        let range = self.store.range(&prefix).await?;
        Ok(range
            .kvs
            .iter()
            .filter_map(|kv| {
                let hex = kv.key.strip_prefix(&prefix)?;
                let digest = ModuleDigest::new(&format!("sha256:{hex}")).ok()?;
                Some((digest, serde_json::from_slice(&kv.value).ok()?))
            })
            .collect())
    }

    /// Deletes a module: the commit marker first (so it stops existing at
    /// once), then its chunks. Returns whether it existed.
    pub async fn delete_module(&self, digest: &ModuleDigest) -> Result<bool, StoreError> {
        let existed = self.store.delete(&self.module_meta_key(digest)).await?;
        let data = self.key(Family::Modules, &format!("data/{}/", digest.hex()));
        self.store
            .txn(Txn::new().and_then([TxnOp::DeletePrefix { prefix: data }]))
            .await?;
        Ok(existed)
    }

    /// A watcher over one key family that survives compaction and stream errors.
    pub fn watcher(&self, family: Family) -> PrefixWatcher {
        PrefixWatcher {
            store: self.store.clone(),
            prefix: self.prefix_of(family),
            stream: None,
            revision: 0,
        }
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|err| StoreError::Other(format!("cannot encode value: {err}")))
}

/// What a [`PrefixWatcher`] yields.
#[derive(Debug)]
pub enum WatchUpdate {
    /// The full current contents of the prefix (first, and after any watch
    /// failure): the receiver replaces its view and diffs.
    Snapshot(Vec<KeyValue>),
    /// Changes since the previous update, in revision order.
    Events(Vec<WatchEvent>),
}

/// Lists a prefix, then watches it from the listed revision; when the watch
/// fails (compaction, a broken stream, a slow consumer) it lists again. So a
/// consumer never silently misses a change: it gets events or a fresh snapshot.
pub struct PrefixWatcher {
    store: Arc<dyn KvStore>,
    prefix: String,
    stream: Option<WatchStream>,
    revision: Revision,
}

impl PrefixWatcher {
    /// The next update. Store errors are returned (the caller decides how long
    /// to back off); the following call starts over with a snapshot.
    pub async fn next(&mut self) -> Result<WatchUpdate, StoreError> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                let range = self.store.range(&self.prefix).await?;
                self.revision = range.revision;
                self.stream = Some(self.store.watch(&self.prefix, range.revision).await?);
                return Ok(WatchUpdate::Snapshot(range.kvs));
            };
            match stream.next().await {
                Some(Ok(events)) => {
                    if let Some(last) = events.last() {
                        self.revision = last.revision();
                    }
                    if !events.is_empty() {
                        return Ok(WatchUpdate::Events(events));
                    }
                }
                Some(Err(err)) => {
                    self.stream = None;
                    if !matches!(err, StoreError::Compacted { .. }) {
                        return Err(err);
                    }
                    tracing::info!(prefix = %self.prefix, %err, "watch fell behind; listing again");
                }
                None => {
                    self.stream = None;
                    return Err(StoreError::Unavailable(format!("watch on {} ended", self.prefix)));
                }
            }
        }
    }
}
