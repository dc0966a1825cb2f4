//! Dead-man marks: `<prefix>deadman/<job>` holds the last dead-man alert
//! raised for a job (the alert room's `DeadmanMark`: the reference it
//! counted from, its period, the period number; stored as JSON, so this
//! room need not know the type). Masters write it by compare-and-swap on
//! the revision they read — the same fence as a claim — and only the one
//! whose write lands delivers the alert, so several masters raise each
//! period's alert once. A mark outliving its job or rule is harmless (a new
//! count starts later than it) and is swept by the masters.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Coordinator, encode};
use crate::coord::{Compare, Revision, StoreError, Txn, TxnOp};
use crate::ids::JobName;

impl Coordinator {
    fn deadman_prefix(&self) -> String {
        format!("{}deadman/", self.prefix)
    }

    fn deadman_key(&self, job: &str) -> String {
        format!("{}{job}", self.deadman_prefix())
    }

    /// A job's dead-man mark and the mod revision of its key (0: none). A
    /// value that does not decode reads as no mark, at its revision, so the
    /// next write replaces it.
    pub async fn deadman_mark<M: DeserializeOwned>(&self, job: &JobName) -> Result<(Option<M>, Revision), StoreError> {
        Ok(match self.store.get(&self.deadman_key(job.as_str())).await? {
            None => (None, 0),
            Some(kv) => (serde_json::from_slice(&kv.value).ok(), kv.mod_revision),
        })
    }

    /// Writes `mark` if the job's mark is still at `seen_revision` (0: there
    /// was none); whether it was written. Exactly one of several masters
    /// that read the same revision succeeds.
    pub async fn put_deadman_mark<M: Serialize>(
        &self,
        job: &JobName,
        mark: &M,
        seen_revision: Revision,
    ) -> Result<bool, StoreError> {
        let key = self.deadman_key(job.as_str());
        let response = self
            .store
            .txn(
                Txn::new()
                    .when([Compare::mod_revision_is(key.clone(), seen_revision)])
                    .and_then([TxnOp::put(key, encode(mark)?)]),
            )
            .await?;
        Ok(response.succeeded)
    }

    /// Every mark's job name (as stored, valid or not) and revision.
    pub async fn deadman_marks(&self) -> Result<Vec<(String, Revision)>, StoreError> {
        let prefix = self.deadman_prefix();
        let range = self.store.range(&prefix).await?;
        Ok(range
            .kvs
            .into_iter()
            .filter_map(|kv| Some((kv.key.strip_prefix(&prefix)?.to_owned(), kv.mod_revision)))
            .collect())
    }

    /// Deletes the mark of `job` (a name as [`Coordinator::deadman_marks`]
    /// lists it) if it is still at `seen_revision`; whether it did.
    pub async fn delete_deadman_mark(&self, job: &str, seen_revision: Revision) -> Result<bool, StoreError> {
        let key = self.deadman_key(job);
        let response = self
            .store
            .txn(
                Txn::new()
                    .when([Compare::mod_revision_is(key.clone(), seen_revision)])
                    .and_then([TxnOp::delete(key)]),
            )
            .await?;
        Ok(response.succeeded)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::*;
    use crate::coord::embedded::EmbeddedStore;

    fn mark(periods: u64) -> Value {
        json!({"since": "2027-01-15T08:00:00Z", "period_s": 60, "periods": periods})
    }

    #[tokio::test]
    async fn only_one_of_two_writers_at_the_same_revision_wins() {
        let store: Arc<dyn crate::coord::KvStore> = EmbeddedStore::in_memory();
        let coord = Coordinator::new(store, "/t/");
        let job = JobName::new("nightly").expect("name");
        assert_eq!(coord.deadman_mark::<Value>(&job).await.expect("read"), (None, 0));
        // Two masters read "no mark"; the first write wins, the second loses.
        assert!(coord.put_deadman_mark(&job, &mark(1), 0).await.expect("write"));
        assert!(!coord.put_deadman_mark(&job, &mark(1), 0).await.expect("write"));
        let (stored, revision) = coord.deadman_mark::<Value>(&job).await.expect("read");
        assert_eq!(stored, Some(mark(1)));
        assert!(
            coord
                .put_deadman_mark(&job, &mark(2), revision)
                .await
                .expect("next period")
        );
        let listed = coord.deadman_marks().await.expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, "nightly");
        // A delete at a stale revision does nothing; at the current one, it deletes.
        assert!(!coord.delete_deadman_mark("nightly", revision).await.expect("delete"));
        assert!(coord.delete_deadman_mark("nightly", listed[0].1).await.expect("delete"));
        assert!(coord.deadman_marks().await.expect("list").is_empty());
    }
}
