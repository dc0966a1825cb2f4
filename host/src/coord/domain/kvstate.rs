//! A job's key-value state (what its guests reach through `wasi:keyvalue`),
//! stored under the job's own prefix, within quotas, every write fenced.
//!
//! ```text
//! <prefix>kv/<job>/meta        { fence, keys, bytes, quota } (JSON)
//! <prefix>kv/<job>/k/<key>     a value; <key> percent-encoded (kvstate)
//! ```
//!
//! The fence: a run opening the state registers its fence (the revision of
//! its claim, monotonic across the cluster) in `meta` by compare-and-swap,
//! unless a newer run already did, and every write is one transaction that
//! compares `meta`'s revision with the one the write read and refuses when
//! `meta.fence` is past the run's. The newest run that touched the state
//! owns it: a run whose claim was superseded (its worker froze past its
//! lease and another worker ran a newer tick), or an older run overlapping
//! a newer one, gets [`StateError::Superseded`] and cannot overwrite newer
//! state. Every write also requires the job to exist, so a run of a deleted
//! job cannot leave state behind.
//!
//! Every change of a job's state changes `meta` in the same transaction
//! (its counters, or only its revision), so comparing `meta`'s revision
//! serialises all writes of one job; the counters are exact. Reads are not
//! fenced: a superseded run may still read.
//!
//! Operators read, list and delete state without a fence (`state_listing`,
//! `state_value`, `state_remove`, `state_clear`); clearing keeps `meta` and
//! its fence, so an old run still cannot write afterwards. Deleting the job
//! deletes everything (`jobs.rs`).

use serde::{Deserialize, Serialize};

use super::{Coordinator, encode};
use crate::coord::{Compare, KeyValue, Revision, StoreError, Txn, TxnOp};
use crate::ids::JobName;
use crate::kvstate::{KEYS_PER_PAGE, KeyPage, StateError, StateKey, StateQuota, StateUsage, incremented};

/// How many times a write re-reads and retries after a conflicting write
/// of the same job's state before it gives up.
const MAX_ATTEMPTS: usize = 32;

/// The record under `kv/<job>/meta`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMeta {
    /// The newest fence that touched the state: only runs with this fence
    /// (or a newer one) may write.
    pub fence: i64,
    #[serde(flatten)]
    pub usage: StateUsage,
    /// The quota the last write was checked against (a worker's setting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<StateQuota>,
}

/// A stored key, as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEntry {
    pub key: StateKey,
    /// The value's length.
    pub size: u64,
    /// The revision of the key's last write.
    pub revision: Revision,
}

/// Everything about one job's state but the values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateListing {
    /// `None` when no run has touched the state yet.
    pub meta: Option<StateMeta>,
    pub entries: Vec<StateEntry>,
}

/// What a fenced write decided, given the state it read.
struct Change<T> {
    usage: StateUsage,
    /// The write to the value's key, if any.
    op: Option<TxnOp>,
    answer: T,
}

impl Coordinator {
    fn state_prefix(&self, job: &JobName) -> String {
        format!("{}kv/{job}/", self.prefix)
    }

    fn state_meta_key(&self, job: &JobName) -> String {
        format!("{}meta", self.state_prefix(job))
    }

    fn state_values_prefix(&self, job: &JobName) -> String {
        format!("{}k/", self.state_prefix(job))
    }

    fn state_value_key(&self, job: &JobName, key: &StateKey) -> String {
        format!("{}{}", self.state_values_prefix(job), key.encoded())
    }

    /// The whole of a job's state, for `delete_job`.
    pub(super) fn state_prefix_of(&self, job: &JobName) -> String {
        self.state_prefix(job)
    }

    /// The meta record and its revision (0 and the default when none).
    async fn state_meta(&self, job: &JobName) -> Result<(StateMeta, Revision), StoreError> {
        match self.store.get(&self.state_meta_key(job)).await? {
            None => Ok((StateMeta::default(), 0)),
            Some(kv) => {
                let meta = serde_json::from_slice(&kv.value).map_err(|err| {
                    StoreError::Other(format!("the state record of job {job} is not valid JSON: {err}"))
                })?;
                Ok((meta, kv.mod_revision))
            }
        }
    }

    /// A run with `fence` starts using the job's state: its fence becomes
    /// the state's, unless a newer run's already is ([`StateError::Superseded`]).
    pub async fn state_open(&self, job: &JobName, fence: i64, quota: &StateQuota) -> Result<(), StateError> {
        self.fenced_write(job, fence, quota, None, |meta, _| {
            Ok(Change {
                usage: meta.usage,
                op: None,
                answer: (),
            })
        })
        .await
    }

    /// A value, or `None`. Not fenced.
    pub async fn state_get(&self, job: &JobName, key: &StateKey) -> Result<Option<Vec<u8>>, StateError> {
        let kv = self
            .store
            .get(&self.state_value_key(job, key))
            .await
            .map_err(unavailable)?;
        // Moved, not copied, when no one else holds the value (etcd).
        Ok(kv.map(|kv| Vec::from(kv.value)))
    }

    /// Sets `key` to `value` under the run's fence, within the quota.
    pub async fn state_set(
        &self,
        job: &JobName,
        fence: i64,
        quota: &StateQuota,
        key: &StateKey,
        value: Vec<u8>,
    ) -> Result<(), StateError> {
        let value_key = self.state_value_key(job, key);
        self.fenced_write(job, fence, quota, Some(key), |meta, old| {
            let usage = quota.after_set(meta.usage, key, old.map(|old| old.len() as u64), value.len() as u64)?;
            Ok(Change {
                usage,
                op: Some(TxnOp::put(value_key.clone(), value.clone())),
                answer: (),
            })
        })
        .await
    }

    /// Deletes `key` under the run's fence; deleting a missing key is no
    /// error (but still refused to a superseded run).
    pub async fn state_delete(
        &self,
        job: &JobName,
        fence: i64,
        quota: &StateQuota,
        key: &StateKey,
    ) -> Result<(), StateError> {
        let value_key = self.state_value_key(job, key);
        self.fenced_write(job, fence, quota, Some(key), |meta, old| {
            Ok(match old {
                Some(old) => Change {
                    usage: meta.usage.after_delete(key, old.len() as u64),
                    op: Some(TxnOp::delete(value_key.clone())),
                    answer: (),
                },
                None => Change {
                    usage: meta.usage,
                    op: None,
                    answer: (),
                },
            })
        })
        .await
    }

    /// Adds `delta` to the counter at `key` (a missing key counts from 0),
    /// atomically and under the run's fence; returns the new value.
    pub async fn state_increment(
        &self,
        job: &JobName,
        fence: i64,
        quota: &StateQuota,
        key: &StateKey,
        delta: u64,
    ) -> Result<u64, StateError> {
        let value_key = self.state_value_key(job, key);
        self.fenced_write(job, fence, quota, Some(key), |meta, old| {
            let (value, bytes) = incremented(key, old, delta)?;
            let usage = quota.after_set(meta.usage, key, old.map(|old| old.len() as u64), bytes.len() as u64)?;
            Ok(Change {
                usage,
                op: Some(TxnOp::put(value_key.clone(), bytes)),
                answer: value,
            })
        })
        .await
    }

    /// One page of the job's keys in key order, from `cursor` (a position
    /// returned by the previous page; `None`: the first page). Not fenced.
    pub async fn state_keys(&self, job: &JobName, cursor: Option<u64>) -> Result<KeyPage, StateError> {
        let keys = self.stored_entries(job).await.map_err(unavailable)?;
        let start = usize::try_from(cursor.unwrap_or(0))
            .unwrap_or(usize::MAX)
            .min(keys.len());
        let end = start.saturating_add(KEYS_PER_PAGE).min(keys.len());
        Ok(KeyPage {
            keys: keys[start..end].iter().map(|entry| entry.key.clone()).collect(),
            cursor: (end < keys.len()).then_some(end as u64),
        })
    }

    /// The job's keys with their sizes and revisions, and its meta record.
    pub async fn state_listing(&self, job: &JobName) -> Result<StateListing, StoreError> {
        let (meta, revision) = self.state_meta(job).await?;
        Ok(StateListing {
            meta: (revision > 0).then_some(meta),
            entries: self.stored_entries(job).await?,
        })
    }

    /// A value and the revision of its last write.
    pub async fn state_value(&self, job: &JobName, key: &StateKey) -> Result<Option<(Vec<u8>, Revision)>, StoreError> {
        let kv = self.store.get(&self.state_value_key(job, key)).await?;
        Ok(kv.map(|kv| (Vec::from(kv.value), kv.mod_revision)))
    }

    /// An operator deletes one key (no fence: operators are not runs);
    /// returns whether it existed.
    pub async fn state_remove(&self, job: &JobName, key: &StateKey) -> Result<bool, StoreError> {
        let value_key = self.state_value_key(job, key);
        for _ in 0..MAX_ATTEMPTS {
            let (meta, meta_revision) = self.state_meta(job).await?;
            let Some(old) = self.store.get(&value_key).await? else {
                return Ok(false);
            };
            let meta = StateMeta {
                usage: meta.usage.after_delete(key, old.value.len() as u64),
                ..meta
            };
            let txn = Txn::new()
                .when([
                    Compare::mod_revision_is(self.state_meta_key(job), meta_revision),
                    Compare::mod_revision_is(value_key.clone(), old.mod_revision),
                ])
                .and_then([
                    TxnOp::put(self.state_meta_key(job), encode(&meta)?),
                    TxnOp::delete(value_key.clone()),
                ]);
            if self.store.txn(txn).await?.succeeded {
                return Ok(true);
            }
        }
        Err(StoreError::Unavailable(format!(
            "the state of job {job} kept changing; try again"
        )))
    }

    /// An operator deletes every key of the job's state; the fence stays,
    /// so a superseded run still cannot write. Returns how many keys went.
    pub async fn state_clear(&self, job: &JobName) -> Result<u64, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let (meta, meta_revision) = self.state_meta(job).await?;
            if meta_revision == 0 {
                // No run ever touched the state: nothing to keep either.
                let removed = self.stored_entries(job).await?.len() as u64;
                self.store
                    .txn(Txn::new().and_then([TxnOp::DeletePrefix {
                        prefix: self.state_values_prefix(job),
                    }]))
                    .await?;
                return Ok(removed);
            }
            let cleared = StateMeta {
                usage: StateUsage::default(),
                ..meta
            };
            let txn = Txn::new()
                .when([Compare::mod_revision_is(self.state_meta_key(job), meta_revision)])
                .and_then([
                    TxnOp::put(self.state_meta_key(job), encode(&cleared)?),
                    TxnOp::DeletePrefix {
                        prefix: self.state_values_prefix(job),
                    },
                ]);
            if self.store.txn(txn).await?.succeeded {
                return Ok(meta.usage.keys);
            }
        }
        Err(StoreError::Unavailable(format!(
            "the state of job {job} kept changing; try again"
        )))
    }

    /// The decoded keys under the job's values prefix (malformed ones skipped).
    async fn stored_entries(&self, job: &JobName) -> Result<Vec<StateEntry>, StoreError> {
        let prefix = self.state_values_prefix(job);
        let range = self.store.range(&prefix).await?;
        Ok(range
            .kvs
            .iter()
            .filter_map(|kv: &KeyValue| {
                let key = StateKey::decode(kv.key.strip_prefix(&prefix)?)?;
                Some(StateEntry {
                    key,
                    size: kv.value.len() as u64,
                    revision: kv.mod_revision,
                })
            })
            .collect())
    }

    /// The one shape of every fenced write: read `meta` (and the value at
    /// `key`), refuse if a newer fence owns the state, let `decide` compute
    /// the change, and commit it with `meta` (fence and counters) in one
    /// transaction that holds only if `meta` is unchanged and the job still
    /// exists; re-read and retry on a conflict.
    async fn fenced_write<T>(
        &self,
        job: &JobName,
        fence: i64,
        quota: &StateQuota,
        key: Option<&StateKey>,
        decide: impl Fn(&StateMeta, Option<&[u8]>) -> Result<Change<T>, StateError>,
    ) -> Result<T, StateError> {
        let meta_key = self.state_meta_key(job);
        let job_key = self.key(super::Family::Jobs, job.as_str());
        for _ in 0..MAX_ATTEMPTS {
            let (meta, meta_revision) = self.state_meta(job).await.map_err(unavailable)?;
            if meta.fence > fence {
                return Err(StateError::Superseded {
                    fence,
                    newer: meta.fence,
                });
            }
            let old = match key {
                Some(key) => self
                    .store
                    .get(&self.state_value_key(job, key))
                    .await
                    .map_err(unavailable)?,
                None => None,
            };
            let change = decide(&meta, old.as_ref().map(|kv| &kv.value[..]))?;
            let next = StateMeta {
                fence,
                usage: change.usage,
                quota: Some(*quota),
            };
            if change.op.is_none() && next == meta && meta_revision > 0 {
                // Nothing to write, and the fence is already this run's.
                return Ok(change.answer);
            }
            let mut ops = vec![TxnOp::put(meta_key.clone(), encode(&next).map_err(unavailable)?)];
            ops.extend(change.op);
            let txn = Txn::new()
                .when([
                    Compare::exists(job_key.clone()),
                    Compare::mod_revision_is(meta_key.clone(), meta_revision),
                ])
                .and_then(ops);
            if self.store.txn(txn).await.map_err(unavailable)?.succeeded {
                return Ok(change.answer);
            }
            if self.store.get(&job_key).await.map_err(unavailable)?.is_none() {
                return Err(StateError::JobGone(job.to_string()));
            }
        }
        Err(StateError::Unavailable(format!(
            "the state of job {job} kept changing under {MAX_ATTEMPTS} attempts to write it"
        )))
    }
}

fn unavailable(err: StoreError) -> StateError {
    StateError::Unavailable(err.to_string())
}
