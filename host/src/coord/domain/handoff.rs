//! Hand-off offers: a run whose worker has no free slot is offered to the
//! other workers under `handoff/<job>/<run_id>` (its `running/` entry as
//! the value, on the offering worker's lease), and exactly one of the
//! offering worker and the takers gets it.
//!
//! Why a run cannot run twice: the offer key is created once per run, by
//! the worker that published the run, and leaves the store in exactly one
//! transaction — a taker's, which also rewrites the run's `running/` entry
//! with the taker's id and lease ([`Coordinator::take_offer`]), or the
//! offering worker's own withdrawal ([`Coordinator::withdraw_offer`]), or
//! with that worker's lease (and then the run's entry goes with it). Each
//! side runs the run only if its transaction removed the offer. The claim's
//! fence stays the run's fence: the taker runs it under the revision of the
//! claim that published it, carried in the offered entry.

use super::keys::Family;
use super::records::RunningEntry;
use super::{Coordinator, encode};
use crate::coord::{Compare, KeyValue, LeaseId, Revision, StoreError, Txn, TxnOp};
use crate::ids::{JobName, RunId};

impl Coordinator {
    /// Offers a run to other workers: puts `entry` (which carries the run's
    /// fence) under the run's offer key on `lease`, if the run's `running/`
    /// entry still exists. Returns the offer's revision, or `None` when the
    /// run's entry is gone (nothing to offer).
    pub async fn offer_run(
        &self,
        job: &JobName,
        entry: &RunningEntry,
        lease: LeaseId,
    ) -> Result<Option<Revision>, StoreError> {
        let response = self
            .store
            .txn(
                Txn::new()
                    .when([Compare::exists(self.running_key(job, entry.run_id))])
                    .and_then([TxnOp::put_leased(
                        self.handoff_key(job, entry.run_id),
                        encode(entry)?,
                        lease,
                    )]),
            )
            .await?;
        Ok(response.succeeded.then_some(response.revision))
    }

    /// Takes an offered run: if the offer is still there and the run's entry
    /// still exists, deletes the offer and rewrites the run's `running/`
    /// entry as `entry` (the taker's id, the run's fence) on the taker's
    /// `lease`, in one transaction. `true`: the run is the taker's to run;
    /// `false`: someone else removed the offer first, and the taker must
    /// not run it.
    pub async fn take_offer(&self, job: &JobName, entry: &RunningEntry, lease: LeaseId) -> Result<bool, StoreError> {
        let offer = self.handoff_key(job, entry.run_id);
        let running = self.running_key(job, entry.run_id);
        let response = self
            .store
            .txn(
                Txn::new()
                    .when([Compare::exists(offer.clone()), Compare::exists(running.clone())])
                    .and_then([TxnOp::delete(offer), TxnOp::put_leased(running, encode(entry)?, lease)]),
            )
            .await?;
        Ok(response.succeeded)
    }

    /// The offering worker takes its offer back (a slot of its own freed):
    /// deletes the offer if it is still there. `true`: the run stays the
    /// offering worker's; `false`: the offer was gone — taken, or gone with
    /// the worker's lease ([`Coordinator::running_entry`] tells which).
    pub async fn withdraw_offer(&self, job: &JobName, run_id: RunId) -> Result<bool, StoreError> {
        let offer = self.handoff_key(job, run_id);
        let response = self
            .store
            .txn(
                Txn::new()
                    .when([Compare::exists(offer.clone())])
                    .and_then([TxnOp::delete(offer)]),
            )
            .await?;
        Ok(response.succeeded)
    }

    /// The `running/` entry of one run, if it exists.
    pub async fn running_entry(&self, job: &JobName, run_id: RunId) -> Result<Option<RunningEntry>, StoreError> {
        let Some(kv) = self.store.get(&self.running_key(job, run_id)).await? else {
            return Ok(None);
        };
        Ok(self.decode_running(&kv).map(|(_, entry)| entry))
    }

    /// Whether a kill request for this one run is stored: a taker checks
    /// once it has the run, as the offering worker passes a kill that
    /// crossed the take on by such a request, which may arrive before the
    /// taker's switch for the run exists.
    pub async fn kill_requested(&self, job: &JobName, run_id: RunId) -> Result<bool, StoreError> {
        Ok(self
            .store
            .get(&self.key(Family::Kill, &format!("{job}/{run_id}")))
            .await?
            .is_some())
    }

    /// Decodes a `handoff/` key-value into the job and the offered run's
    /// entry, skipping anything malformed.
    pub fn decode_offer(&self, kv: &KeyValue) -> Option<(JobName, RunningEntry)> {
        let rest = self.strip(Family::Handoff, &kv.key)?;
        let (job, run_id) = rest.split_once('/')?;
        let job = JobName::new(job).ok()?;
        let entry: RunningEntry = serde_json::from_slice(&kv.value).ok()?;
        // The fence is what the taker runs under: an offer without one, or
        // whose key and value disagree, is not taken.
        (entry.fence.is_some() && run_id.parse::<RunId>().ok() == Some(entry.run_id)).then_some((job, entry))
    }

    /// The job and run an offer key names (for deletes, which carry no value).
    pub fn decode_offer_key(&self, key: &str) -> Option<(JobName, RunId)> {
        let rest = self.strip(Family::Handoff, key)?;
        let (job, run_id) = rest.split_once('/')?;
        Some((JobName::new(job).ok()?, run_id.parse().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::coord::KvStore;
    use crate::coord::embedded::EmbeddedStore;

    /// A scheduled run's entry.
    fn entry(worker: &str, fence: Option<Revision>) -> RunningEntry {
        RunningEntry {
            fence,
            ..crate::testkit::sample_entry(worker, crate::run::Trigger::Schedule)
        }
    }

    /// An owner with a published run, and the offer of it.
    async fn offered(coord: &Coordinator, owner_lease: LeaseId) -> (JobName, RunningEntry) {
        let job = JobName::new("busy").unwrap();
        let mut published = entry("owner", None);
        let fence = coord.start_run(&job, &published, owner_lease).await.unwrap();
        published.fence = Some(fence);
        let offer = coord.offer_run(&job, &published, owner_lease).await.unwrap();
        assert!(offer.is_some(), "the run's entry exists, so it is offered");
        (job, published)
    }

    fn taken_by(entry: &RunningEntry, worker: &str) -> RunningEntry {
        RunningEntry {
            worker: worker.to_owned(),
            ..entry.clone()
        }
    }

    #[tokio::test]
    async fn exactly_one_of_the_owner_and_the_takers_gets_an_offered_run() {
        let store: Arc<dyn KvStore> = EmbeddedStore::in_memory();
        let coord = Coordinator::new(store.clone(), "/handoff-race/");
        let owner_lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
        let (b, c) = (
            store.lease_grant(Duration::from_secs(30)).await.unwrap(),
            store.lease_grant(Duration::from_secs(30)).await.unwrap(),
        );
        let (job, published) = offered(&coord, owner_lease).await;
        let range = store.range(&coord.prefix_of(Family::Handoff)).await.unwrap();
        assert_eq!(range.kvs.len(), 1);
        let (seen_job, seen) = coord.decode_offer(&range.kvs[0]).expect("a valid offer");
        assert_eq!((seen_job, seen.clone()), (job.clone(), published.clone()));

        // Two takers and the owner race; the first transaction wins.
        assert!(coord.take_offer(&job, &taken_by(&seen, "b"), b).await.unwrap());
        assert!(!coord.take_offer(&job, &taken_by(&seen, "c"), c).await.unwrap());
        assert!(!coord.withdraw_offer(&job, seen.run_id).await.unwrap());
        let running = coord.running_entry(&job, seen.run_id).await.unwrap().expect("entry");
        assert_eq!(running.worker, "b");
        assert_eq!(
            running.fence, published.fence,
            "the claim's fence stays the run's fence"
        );
        // The entry now lives on the taker's lease: the owner's going does
        // not take it along.
        store.lease_revoke(owner_lease).await.unwrap();
        assert!(coord.running_entry(&job, seen.run_id).await.unwrap().is_some());
        store.lease_revoke(b).await.unwrap();
        assert!(coord.running_entry(&job, seen.run_id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_withdrawn_offer_cannot_be_taken_and_an_owner_s_lease_takes_its_offers_along() {
        let store: Arc<dyn KvStore> = EmbeddedStore::in_memory();
        let coord = Coordinator::new(store.clone(), "/handoff-withdraw/");
        let owner_lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
        let taker = store.lease_grant(Duration::from_secs(30)).await.unwrap();
        let (job, published) = offered(&coord, owner_lease).await;
        assert!(coord.withdraw_offer(&job, published.run_id).await.unwrap());
        assert!(!coord.take_offer(&job, &taken_by(&published, "b"), taker).await.unwrap());
        assert_eq!(
            coord
                .running_entry(&job, published.run_id)
                .await
                .unwrap()
                .map(|e| e.worker),
            Some("owner".to_owned())
        );

        // Offered again and the owner dies: offer and entry go together, so
        // no taker can start a run that the owner's successor records lost.
        let (job, again) = offered(&coord, owner_lease).await;
        store.lease_revoke(owner_lease).await.unwrap();
        assert!(!coord.take_offer(&job, &taken_by(&again, "b"), taker).await.unwrap());
        assert!(coord.running_entry(&job, again.run_id).await.unwrap().is_none());
        // A run whose entry is gone is not offered.
        let owner_lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
        assert_eq!(coord.offer_run(&job, &again, owner_lease).await.unwrap(), None);
    }

    #[test]
    fn offers_without_a_fence_or_with_a_mismatched_key_are_skipped() {
        let store: Arc<dyn KvStore> = EmbeddedStore::in_memory();
        let coord = Coordinator::new(store, "/p/");
        let good = entry("a", Some(7));
        let kv = |run_id: RunId, value: &RunningEntry| KeyValue {
            key: format!("/p/handoff/job/{run_id}"),
            value: serde_json::to_vec(value).unwrap().into(),
            create_revision: 9,
            mod_revision: 9,
            lease: None,
        };
        assert!(coord.decode_offer(&kv(good.run_id, &good)).is_some());
        assert!(coord.decode_offer(&kv(RunId::generate(), &good)).is_none());
        assert!(coord.decode_offer(&kv(good.run_id, &entry("a", None))).is_none());
        assert_eq!(
            coord.decode_offer_key(&format!("/p/handoff/job/{}", good.run_id)),
            Some((JobName::new("job").unwrap(), good.run_id))
        );
    }
}
