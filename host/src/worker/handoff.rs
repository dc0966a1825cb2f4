//! Least-loaded hand-off, the run's side: a run waits for one of its
//! worker's slots, and while none is free it is offered to the other
//! workers; a worker that takes one reserves a slot first, so it never waits.
//!
//! The owner claims the tick as always (the claim stays the fence). A run
//! that finds every slot busy, and that another live worker could run, is
//! offered (`handoff/<job>/<run_id>`, `coord/domain/handoff.rs`) and then
//! ends one of three ways, decided by which transaction removes the offer:
//!
//! - a slot frees here first: the worker withdraws the offer and runs it;
//! - another worker takes it first (its transaction rewrote the run's
//!   `running/` entry with its id): this task ends without recording
//!   anything — the run's records are the taker's;
//! - the offer went with this worker's lease (a lost lease): the run's
//!   entry went too, so the scheduling loop records it `lost`, unless a
//!   taker's record of it is stored already.
//!
//! Shards (addressed to one worker) and catch-up runs (queued one after
//! another on their claimant) are never offered; neither is a run that
//! was itself taken over, so a run moves at most once. The worker side of
//! taking offers is `state/handoff.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc, oneshot};

use crate::coord::{Coordinator, KillTarget, LeaseId, Revision, RunningEntry, StoreError};
use crate::exec::{KillSwitch, StopReason};
use crate::job::Job;
use crate::metrics::Metrics;
use crate::run::Trigger;

/// Where a run task gets its slot.
pub(super) struct Capacity {
    pub(super) semaphore: Arc<Semaphore>,
    /// A slot reserved before the run was taken from another worker.
    pub(super) held: Option<OwnedSemaphorePermit>,
    /// Where the run is offered while no slot is free; `None`: it only waits.
    /// Boxed, like the wait for an offer: every run task carries this, few
    /// use it (see `task::carry_out`).
    pub(super) offer: Option<Box<Offer>>,
}

/// How the wait for a slot ended.
pub(super) enum Slot {
    /// The run has its slot here.
    Free(OwnedSemaphorePermit),
    /// Killed before it started (by a request, or at the drain deadline).
    Stopped(StopReason),
    /// The run is not this task's any more: another worker took it, or (its
    /// offer gone with the lease) the scheduling loop accounts for it. The
    /// task records nothing and leaves the `running/` entry alone.
    Elsewhere,
}

/// What the offer of a run needs.
pub(super) struct Offer {
    pub(super) coord: Coordinator,
    pub(super) job: Arc<Job>,
    /// The run's entry as published, with its fence.
    pub(super) entry: RunningEntry,
    /// The worker's current lease (replaced when it re-registers).
    pub(super) lease: Arc<AtomicI64>,
    /// Set while the run may be offered: a re-registering worker does not
    /// publish the entry of such a run again, since a taker may own it now.
    pub(super) offered: Arc<AtomicBool>,
    /// The worker's id of the taker, sent by the scheduling loop when it
    /// sees the run's entry name another worker.
    pub(super) taken: oneshot::Receiver<String>,
    /// Where a run whose offer vanished goes.
    pub(super) events: mpsc::Sender<HandoffEvent>,
    /// Counts the offers (`sandcron_runs_offered_total`).
    pub(super) metrics: Arc<Metrics>,
}

/// What the hand-off tells the scheduling loop.
pub(super) enum HandoffEvent {
    /// An attempt to take the offer under `key` ended; `taken` if it won.
    Attempt { key: String, taken: Option<Taken> },
    /// A run this worker offered lost its offer and its `running/` entry
    /// with this worker's lease before either side ran it.
    Vanished { job: Arc<Job>, entry: RunningEntry },
}

/// A run this worker took from another, with the slot reserved for it.
pub(super) struct Taken {
    pub(super) job: Arc<Job>,
    /// The entry the take wrote (this worker's id, the run's fence).
    pub(super) entry: RunningEntry,
    pub(super) fence: Revision,
    pub(super) permit: OwnedSemaphorePermit,
    /// The worker that offered it.
    pub(super) from: String,
}

/// Whether a run may be offered at all (see the module comment); the
/// cluster's side — another worker able to run it — is
/// `placement::others_can_run`.
pub(super) fn offerable(entry: &RunningEntry) -> bool {
    entry.shard.is_none() && entry.trigger != Trigger::Catchup
}

/// Who has a run whose offer is gone, from the offering worker's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Settled {
    /// This worker runs it.
    Here,
    /// The named worker took it.
    TakenBy(String),
    /// Offer and entry went with this worker's lease.
    Vanished,
}

/// Decides, once a slot freed or a kill arrived, who has an offered run:
/// `withdrawn` is whether this worker's withdrawal removed the offer;
/// `entry` is the run's `running/` entry as read after a withdrawal that
/// found no offer. Only a take rewrites the entry with another worker's id,
/// so an entry still naming `me` means the withdrawal's first attempt went
/// through unanswered.
pub(super) fn settle(withdrawn: bool, entry: Option<&RunningEntry>, me: &str) -> Settled {
    match (withdrawn, entry) {
        (true, _) => Settled::Here,
        (false, Some(entry)) if entry.worker != me => Settled::TakenBy(entry.worker.clone()),
        (false, Some(_)) => Settled::Here,
        (false, None) => Settled::Vanished,
    }
}

impl Capacity {
    /// Waits for a slot; a kill while waiting ends the run before it starts.
    pub(super) async fn wait(self, kill: &KillSwitch) -> Slot {
        let Capacity { semaphore, held, offer } = self;
        if let Some(permit) = held {
            return Slot::Free(permit);
        }
        match semaphore.clone().try_acquire_owned() {
            Ok(permit) => return Slot::Free(permit),
            Err(TryAcquireError::Closed) => return Slot::Stopped(StopReason::Shutdown),
            Err(TryAcquireError::NoPermits) => {}
        }
        match offer {
            Some(offer) => Box::pin(offer.wait(semaphore, kill)).await,
            None => Box::pin(wait_here(semaphore, kill)).await,
        }
    }
}

/// Waits for a slot of this worker (or a kill).
async fn wait_here(semaphore: Arc<Semaphore>, kill: &KillSwitch) -> Slot {
    tokio::select! {
        permit = semaphore.acquire_owned() => match permit {
            Ok(permit) => Slot::Free(permit),
            // The semaphore is never closed; if it were, no slot would come.
            Err(_) => Slot::Stopped(StopReason::Shutdown),
        },
        reason = kill.pulled() => Slot::Stopped(reason),
    }
}

/// What ended the wait of an offered run.
enum Woke {
    Slot(Option<OwnedSemaphorePermit>),
    Kill(StopReason),
}

impl Offer {
    async fn wait(self: Box<Self>, semaphore: Arc<Semaphore>, kill: &KillSwitch) -> Slot {
        let Offer {
            coord,
            job,
            entry,
            lease,
            offered,
            mut taken,
            events,
            metrics,
        } = *self;
        // Set before the offer is written, so that no re-registration
        // publishes the entry again once a taker may own it.
        offered.store(true, Ordering::SeqCst);
        match coord
            .offer_run(&job.name, &entry, LeaseId(lease.load(Ordering::Relaxed)))
            .await
        {
            Ok(Some(_)) => {
                metrics.runs_offered.fetch_add(1, Ordering::Relaxed);
                tracing::info!("no free slot; the run is offered to the other workers");
            }
            Ok(None) => {
                // Its entry is gone already: the lease went before the offer.
                let _gone = events.send(HandoffEvent::Vanished { job, entry }).await;
                return Slot::Elsewhere;
            }
            // Written or not, the withdrawal below tells.
            Err(err) => tracing::warn!(%err, "cannot offer the run to other workers; it waits for a slot here"),
        }
        let mut taken_open = true;
        let woke = loop {
            tokio::select! {
                permit = semaphore.clone().acquire_owned() => break Woke::Slot(permit.ok()),
                reason = kill.pulled() => break Woke::Kill(reason),
                taker = &mut taken, if taken_open => match taker {
                    Ok(taker) => {
                        tracing::info!(%taker, "run handed off to a worker with a free slot");
                        return Slot::Elsewhere;
                    }
                    // The loop stopped watching for it; the withdrawal tells.
                    Err(_) => taken_open = false,
                },
            }
        };
        let settled = settle_offer(&coord, &job, &entry).await;
        match (&settled, woke) {
            (Settled::Here, Woke::Slot(Some(permit))) => {
                offered.store(false, Ordering::SeqCst);
                tracing::info!("a slot freed here first; the offer is withdrawn");
                return Slot::Free(permit);
            }
            (Settled::Here, Woke::Slot(None)) => {
                offered.store(false, Ordering::SeqCst);
                return wait_here(semaphore, kill).await;
            }
            (Settled::Here, Woke::Kill(reason)) => {
                offered.store(false, Ordering::SeqCst);
                return Slot::Stopped(reason);
            }
            (Settled::TakenBy(taker), Woke::Kill(StopReason::Killed)) => {
                // The kill was meant for the run, which now runs there.
                tracing::info!(%taker, "run handed off as it was killed; passing the kill on");
                if let Err(err) = coord.request_kill(&job.name, KillTarget::Run(entry.run_id)).await {
                    tracing::warn!(%taker, %err, "cannot pass the kill on to the worker that took the run");
                }
            }
            (Settled::TakenBy(taker), _) => tracing::info!(%taker, "run handed off to a worker with a free slot"),
            (Settled::Vanished, _) => {
                let _gone = events.send(HandoffEvent::Vanished { job, entry }).await;
            }
        }
        Slot::Elsewhere
    }
}

/// Withdraws an offer and reads who has the run when the offer was gone,
/// retrying while the store does not answer: the run must not start here
/// before it is known that no taker has it.
async fn settle_offer(coord: &Coordinator, job: &Job, entry: &RunningEntry) -> Settled {
    let mut delay = Duration::from_millis(200);
    loop {
        let attempt: Result<Settled, StoreError> = async {
            if coord.withdraw_offer(&job.name, entry.run_id).await? {
                return Ok(Settled::Here);
            }
            let found = coord.running_entry(&job.name, entry.run_id).await?;
            Ok(settle(false, found.as_ref(), &entry.worker))
        }
        .await;
        match attempt {
            Ok(settled) => return settled,
            Err(err) => {
                tracing::warn!(%err, "cannot withdraw the run's offer; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// One try at taking an offered run, run beside the scheduling loop.
pub(super) struct TakeAttempt {
    pub(super) coord: Coordinator,
    /// The offer's key.
    pub(super) key: String,
    pub(super) job: Arc<Job>,
    /// The offered entry (the offering worker's id, the run's fence).
    pub(super) offered: RunningEntry,
    /// This worker's id and lease.
    pub(super) me: String,
    pub(super) lease: LeaseId,
    pub(super) semaphore: Arc<Semaphore>,
    /// The least-loaded preference (`placement::handoff_delay`).
    pub(super) delay: Duration,
    /// Cancelled when the worker starts draining: it takes no more runs.
    pub(super) stopping: tokio_util::sync::CancellationToken,
}

impl TakeAttempt {
    /// Waits its delay, reserves a slot and takes the run by transaction.
    pub(super) async fn run(self) -> HandoffEvent {
        let key = self.key.clone();
        let taken = self.take().await;
        HandoffEvent::Attempt { key, taken }
    }

    async fn take(self) -> Option<Taken> {
        tokio::select! {
            () = self.stopping.cancelled() => return None,
            () = tokio::time::sleep(self.delay) => {}
        }
        let fence = self.offered.fence?;
        // The slot first: a taken run never waits.
        let permit = self.semaphore.clone().try_acquire_owned().ok()?;
        let mut entry = RunningEntry {
            worker: self.me.clone(),
            fence: Some(fence),
            ..self.offered.clone()
        };
        if self.job.spec.completion == crate::job::Completion::Async {
            // The offering worker's token stays with it; the service this run
            // calls gets a token of this worker's, whose hash the entry carries.
            let token = super::results::new_run_token()?;
            entry.result_token_sha256 = Some(crate::crypto::sha256_hex(token.as_bytes()));
            entry.result_token = Some(token);
        }
        if self.stopping.is_cancelled() {
            return None;
        }
        match self.coord.take_offer(&self.job.name, &entry, self.lease).await {
            Ok(true) => Some(Taken {
                job: self.job,
                entry,
                fence,
                permit,
                from: self.offered.worker,
            }),
            Ok(false) => {
                tracing::debug!(job = %self.job.name, run = %entry.run_id, "another worker got the offered run first");
                None
            }
            Err(err) => {
                tracing::warn!(job = %self.job.name, run = %entry.run_id, %err, "cannot take an offered run");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::ids::RunId;
    use crate::run::Shard;

    fn entry(worker: &str, trigger: Trigger) -> RunningEntry {
        RunningEntry {
            fence: Some(42),
            ..crate::testkit::sample_entry(worker, trigger)
        }
    }

    #[test]
    fn shards_and_catch_up_runs_are_never_offered() {
        for trigger in [Trigger::Schedule, Trigger::Manual, Trigger::Retry, Trigger::Dependency] {
            assert!(offerable(&entry("a", trigger)), "{trigger:?}");
        }
        assert!(
            !offerable(&entry("a", Trigger::Catchup)),
            "catch-up runs queue on their claimant"
        );
        let mut shard = entry("a", Trigger::Schedule);
        shard.shard = Some(Shard {
            index: 0,
            count: 2,
            group: RunId::generate(),
        });
        assert!(!offerable(&shard), "a shard is addressed to its worker");
    }

    #[test]
    fn an_offer_is_settled_by_the_transaction_that_removed_it() {
        let mine = entry("a", Trigger::Schedule);
        let theirs = RunningEntry {
            worker: "b".into(),
            ..mine.clone()
        };
        // The withdrawal removed the offer: nobody else can have taken it.
        assert_eq!(settle(true, None, "a"), Settled::Here);
        assert_eq!(settle(true, Some(&theirs), "a"), Settled::Here);
        // The offer was gone, and the entry names the taker.
        assert_eq!(settle(false, Some(&theirs), "a"), Settled::TakenBy("b".into()));
        // Gone, and the entry is still ours: only an unanswered withdrawal
        // removes an offer without rewriting the entry.
        assert_eq!(settle(false, Some(&mine), "a"), Settled::Here);
        // Gone with the entry: the lease took both (or a taker ran it and
        // ended); it is not run here.
        assert_eq!(settle(false, None, "a"), Settled::Vanished);
    }
}
