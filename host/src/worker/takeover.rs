//! What a worker decides when it takes a job up (start, restart, ownership
//! change, resume, schedule change), as a pure function of the job, the claim
//! state it read and the clock: which records another lease may have left
//! unwritten, whether the queued catch-up ticks stay this worker's or are
//! abandoned, and what one claim must account for. `state/recovery.rs` does
//! the I/O around it (reading the state, resolving claims whose answer was
//! lost, claiming, recording).

use jiff::Timestamp;

use crate::coord::{JobState, PlanInputs};
use crate::job::Job;
use crate::schedule::{self, CatchupLimits, CatchupPlan};

/// The decision for one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Takeover {
    /// The state's last claim, made by another lease, recorded its tick
    /// `skipped`: that record may exist only in the other worker's sink.
    pub(super) foreign_skip: Option<Timestamp>,
    /// The state carries another lease's catch-up plan, whose records may
    /// exist only in the other worker's sink (re-derived from these inputs
    /// for the state's `last_tick`).
    pub(super) foreign_plan: Option<PlanInputs>,
    /// The queued catch-up ticks stay this worker's: it made the claim and
    /// still holds the same queue. Otherwise its own queue is dropped.
    pub(super) keep_queue: bool,
    pub(super) last_tick: Option<Timestamp>,
    pub(super) last_skipped: bool,
    /// The catch-up plan for the ticks that passed unclaimed.
    pub(super) plan: CatchupPlan,
    /// What to claim; `None` when nothing passed unclaimed and nothing was
    /// abandoned (schedule `plan.next` normally).
    pub(super) claim: Option<TakeoverClaim>,
}

/// One claim that accounts for the whole gap: the state jumps to the plan's
/// horizon and the first catch-up run is published with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TakeoverClaim {
    /// Keeps the state's word on its last tick when the claim only takes
    /// over abandoned ticks.
    pub(super) skipped: bool,
    /// The catch-up ticks the claim lists as queued, oldest first: the kept
    /// queue, then the plan's runs after the first (none for a broadcast job,
    /// whose catch-up ticks are handed out once the claim is won).
    pub(super) queue: Vec<Timestamp>,
    /// The catch-up run published with the claim (never for a broadcast job).
    pub(super) first_run: Option<Timestamp>,
    /// Another claimant's queued ticks, recorded `missed` once the claim wins.
    pub(super) abandoned: Vec<Timestamp>,
    /// What the plan was made from when it has records to write, so that a
    /// later owner can write them if this worker dies first.
    pub(super) inputs: Option<PlanInputs>,
}

/// Decides the takeover of `job` given its claim state (`None`: never
/// claimed), this worker's lease and its own queue of catch-up ticks.
pub(super) fn decide(
    job: &Job,
    state: Option<&JobState>,
    own_lease: i64,
    own_queue: &[Timestamp],
    now: Timestamp,
    limits: CatchupLimits,
) -> Takeover {
    let foreign = state.filter(|s| s.lease != Some(own_lease));
    let foreign_skip = foreign.filter(|s| s.skipped).map(|s| s.last_tick);
    let foreign_plan = foreign.and_then(|s| s.plan.clone());
    // Queued catch-up ticks the state lists are this worker's to run only if
    // it made the claim and still holds the same queue; otherwise their
    // claimant stopped or gave the job up, and they are recorded `missed`
    // once this worker's claim wins.
    let listed = state.map(|s| s.catchup.clone()).unwrap_or_default();
    let keep_queue = state.is_some_and(|s| s.lease == Some(own_lease)) && listed == own_queue;
    let (kept, abandoned) = if keep_queue {
        (listed, Vec::new())
    } else {
        (Vec::new(), listed)
    };
    let last_skipped = state.is_some_and(|s| s.skipped);
    let last_tick = state.map(|s| s.last_tick);
    let after = last_tick.map_or(job.meta.active_since, |t| t.max(job.meta.active_since));
    let plan = schedule::plan_catchup(&job.schedule, job.spec.catchup, after, now, limits);
    let claim = (!plan.is_empty() || !abandoned.is_empty()).then(|| {
        let has_records = !plan.missed.is_empty() || plan.missed_summary.is_some() || !abandoned.is_empty();
        let inputs = has_records.then(|| PlanInputs {
            job_revision: job.revision,
            after,
            now,
            missed_records: limits.missed_records,
            runs: limits.runs,
            grace_ms: u64::try_from(limits.grace.as_millis()).unwrap_or(u64::MAX),
            scan: limits.scan,
            abandoned: abandoned.clone(),
        });
        let (first_run, mut queue) = if job.spec.broadcast {
            (None, kept)
        } else {
            (plan.run.first().copied(), kept)
        };
        if !job.spec.broadcast {
            queue.extend(plan.run.iter().skip(1));
        }
        TakeoverClaim {
            skipped: plan.is_empty() && last_skipped,
            queue,
            first_run,
            abandoned,
            inputs,
        }
    });
    Takeover {
        foreign_skip,
        foreign_plan,
        keep_queue,
        last_tick,
        last_skipped,
        plan,
        claim,
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::job::{Catchup, CatchupPolicy, Job, JobKind, JobSpec, ShellJob};

    const OWN: i64 = 7;
    const OTHER: i64 = 9;

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    /// An every-minute job, active since 10:00, with the given catch-up policy.
    fn job(policy: CatchupPolicy, broadcast: bool) -> Job {
        let kind = JobKind::Shell(ShellJob {
            command: "true".into(),
            env: Default::default(),
            timeout_s: 1,
            output_kb: 1,
        });
        let spec = JobSpec {
            catchup: Catchup { policy, window_s: 3600 },
            broadcast,
            ..JobSpec::new("0 * * * * *", kind)
        };
        Job::for_test("j", spec, ts("2026-01-01T10:00:00Z"))
    }

    fn state(last_tick: &str, lease: i64) -> JobState {
        JobState {
            last_tick: ts(last_tick),
            lease: Some(lease),
            skipped: false,
            catchup: Vec::new(),
            plan: None,
        }
    }

    fn decide_at(job: &Job, state: Option<&JobState>, own_queue: &[Timestamp], now: &str) -> Takeover {
        decide(job, state, OWN, own_queue, ts(now), CatchupLimits::default())
    }

    #[test]
    fn a_job_claimed_up_to_now_needs_no_claim_and_schedules_its_next_tick() {
        let job = job(CatchupPolicy::Skip, false);
        let found = state("2026-01-01T10:05:00Z", OWN);
        let takeover = decide_at(&job, Some(&found), &[], "2026-01-01T10:05:30Z");
        assert_eq!(takeover.claim, None);
        assert_eq!(takeover.plan.next, Some(ts("2026-01-01T10:06:00Z")));
        assert_eq!((takeover.foreign_skip, takeover.foreign_plan), (None, None));
        assert!(takeover.keep_queue, "an empty queue of its own is kept");
    }

    #[test]
    fn a_new_job_plans_from_when_it_became_active() {
        let job = job(CatchupPolicy::Skip, false);
        let takeover = decide_at(&job, None, &[], "2026-01-01T10:03:30Z");
        assert_eq!(takeover.last_tick, None);
        // 10:01, 10:02 and 10:03 passed unclaimed; with `skip` they are missed.
        assert_eq!(
            takeover.plan.missed,
            vec![
                ts("2026-01-01T10:01:00Z"),
                ts("2026-01-01T10:02:00Z"),
                ts("2026-01-01T10:03:00Z")
            ]
        );
        let claim = takeover.claim.expect("a claim");
        assert_eq!(claim.first_run, None);
        let inputs = claim
            .inputs
            .expect("missed records make the plan's inputs travel with the claim");
        assert_eq!(inputs.after, ts("2026-01-01T10:00:00Z"));
        assert_eq!(inputs.job_revision, job.revision);
    }

    #[test]
    fn all_policy_runs_the_first_missed_tick_and_queues_the_rest() {
        let job = job(CatchupPolicy::All, false);
        let found = state("2026-01-01T10:00:00Z", OWN);
        let takeover = decide_at(&job, Some(&found), &[], "2026-01-01T10:03:30Z");
        let claim = takeover.claim.expect("a claim");
        assert_eq!(claim.first_run, Some(ts("2026-01-01T10:01:00Z")));
        assert_eq!(
            claim.queue,
            vec![ts("2026-01-01T10:02:00Z"), ts("2026-01-01T10:03:00Z")]
        );
        assert_eq!(claim.inputs, None, "every tick runs: no records to carry");
    }

    #[test]
    fn a_broadcast_job_publishes_no_run_and_queues_nothing() {
        let job = job(CatchupPolicy::All, true);
        let found = state("2026-01-01T10:00:00Z", OWN);
        let takeover = decide_at(&job, Some(&found), &[], "2026-01-01T10:02:30Z");
        let claim = takeover.claim.expect("a claim");
        assert_eq!((claim.first_run, claim.queue.is_empty()), (None, true));
        assert_eq!(
            takeover.plan.run.len(),
            2,
            "the shards are handed out once the claim wins"
        );
    }

    #[test]
    fn another_leases_skip_and_plan_are_to_be_confirmed() {
        let job = job(CatchupPolicy::Skip, false);
        let inputs = PlanInputs {
            job_revision: job.revision,
            after: ts("2026-01-01T10:00:00Z"),
            now: ts("2026-01-01T10:04:00Z"),
            missed_records: 1000,
            runs: 100,
            grace_ms: 1000,
            scan: 1_000_000,
            abandoned: Vec::new(),
        };
        let mut found = state("2026-01-01T10:04:00Z", OTHER);
        found.skipped = true;
        found.plan = Some(inputs.clone());
        let takeover = decide_at(&job, Some(&found), &[], "2026-01-01T10:04:10Z");
        assert_eq!(takeover.foreign_skip, Some(ts("2026-01-01T10:04:00Z")));
        assert_eq!(takeover.foreign_plan, Some(inputs.clone()));
        assert!(takeover.last_skipped);

        // The same state under this worker's own lease: its own sink has them.
        found.lease = Some(OWN);
        let own = decide_at(&job, Some(&found), &[], "2026-01-01T10:04:10Z");
        assert_eq!((own.foreign_skip, own.foreign_plan), (None, None));
    }

    #[test]
    fn a_queue_listed_by_another_lease_is_abandoned_and_claimed_even_with_nothing_new() {
        let job = job(CatchupPolicy::All, false);
        let queued = vec![ts("2026-01-01T10:02:00Z"), ts("2026-01-01T10:03:00Z")];
        let mut found = state("2026-01-01T10:05:00Z", OTHER);
        found.catchup = queued.clone();
        found.skipped = true;
        let takeover = decide_at(&job, Some(&found), &[], "2026-01-01T10:05:20Z");
        assert!(!takeover.keep_queue);
        assert!(takeover.plan.is_empty());
        let claim = takeover.claim.expect("abandoned ticks need a claim of their own");
        assert_eq!(claim.abandoned, queued);
        assert!(claim.queue.is_empty());
        assert!(
            claim.skipped,
            "a claim for abandoned ticks only keeps the state's word on its last tick"
        );
        assert_eq!(claim.inputs.expect("abandoned ticks are records").abandoned, queued);
    }

    #[test]
    fn its_own_queue_is_kept_only_when_the_state_lists_the_same_ticks() {
        let job = job(CatchupPolicy::All, false);
        let queued = vec![ts("2026-01-01T10:02:00Z"), ts("2026-01-01T10:03:00Z")];
        let mut found = state("2026-01-01T10:05:00Z", OWN);
        found.catchup = queued.clone();
        let kept = decide_at(&job, Some(&found), &queued, "2026-01-01T10:05:20Z");
        assert!(kept.keep_queue);
        assert_eq!(kept.claim, None, "nothing new passed and nothing was abandoned");

        // Its memory disagrees with the state (a claim of another worker ran
        // in between): the listed ticks are abandoned.
        let other_queue = [ts("2026-01-01T10:03:00Z")];
        let dropped = decide_at(&job, Some(&found), &other_queue, "2026-01-01T10:05:20Z");
        assert!(!dropped.keep_queue);
        assert_eq!(dropped.claim.expect("a claim").abandoned, queued);
    }

    #[test]
    fn a_kept_queue_comes_before_the_new_plans_runs() {
        let job = job(CatchupPolicy::All, false);
        let queued = vec![ts("2026-01-01T10:02:00Z")];
        let mut found = state("2026-01-01T10:05:00Z", OWN);
        found.catchup = queued.clone();
        let takeover = decide_at(&job, Some(&found), &queued, "2026-01-01T10:07:30Z");
        let claim = takeover.claim.expect("a claim");
        assert_eq!(claim.first_run, Some(ts("2026-01-01T10:06:00Z")));
        assert_eq!(
            claim.queue,
            vec![ts("2026-01-01T10:02:00Z"), ts("2026-01-01T10:07:00Z")]
        );
        // The state advances to now less the grace (1 s): every tick up to
        // there is accounted for by this claim.
        assert_eq!(takeover.plan.horizon, ts("2026-01-01T10:07:29Z"));
    }
}
