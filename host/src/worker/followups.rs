//! What a run starts when it ends: its retry, written as a trigger request
//! (after the job's backoff), or else its dependents. Stored in the
//! transaction that removes the run's `running/` entry (`worker/task.rs`),
//! or, for a `lost` run, by the owner that records it.

use jiff::Timestamp;

use crate::coord::{RunningEntry, TriggerRequest};
use crate::ids::JobName;
use crate::job::Job;
use crate::run::{ParentRun, RunStatus, Trigger};
use crate::schedule;

/// How many dependency links a chain of runs may have. Cycles are refused
/// when jobs are saved; this stops one that slipped through (two masters
/// saving the two halves of a cycle at the same moment) from running forever.
pub(super) const MAX_DEPENDENCY_DEPTH: u32 = 16;

/// The runs a run that ended with `status` at `now` starts, as trigger
/// requests: its retry (after the job's backoff), or else its dependents.
pub(super) fn follow_ups(
    job: &Job,
    entry: &RunningEntry,
    status: RunStatus,
    now: Timestamp,
) -> Vec<(JobName, TriggerRequest)> {
    match retry_of(job, entry, status, now) {
        Some(retry) => vec![(job.name.clone(), retry)],
        None => dependents_of(job, entry, status),
    }
}

/// The retry of a run that ended with `status` at `now`, if the job's retry
/// policy asks for one: the same tick, the next attempt, not before the
/// backoff has passed; a shard is retried on the worker it ran on.
fn retry_of(job: &Job, entry: &RunningEntry, status: RunStatus, now: Timestamp) -> Option<TriggerRequest> {
    // Runs someone asked for by hand (run now, re-run) are not retried:
    // whoever asked sees how it ended and can ask again.
    if !status.is_retryable() || matches!(entry.trigger, Trigger::Manual | Trigger::Rerun) {
        return None;
    }
    let delay = schedule::retry_delay(&job.spec.retry, entry.attempt)?;
    let delay = jiff::SignedDuration::try_from(delay).unwrap_or(jiff::SignedDuration::ZERO);
    tracing::info!(attempt = entry.attempt + 1, ?delay, "retry scheduled");
    Some(TriggerRequest {
        requested_at: crate::run::whole_millisecond(now),
        requested_by: format!("retry of run {}", entry.run_id),
        trigger: Trigger::Retry,
        tick: Some(entry.tick),
        parent: entry.parent.clone(),
        depth: entry.depth,
        shard: entry.shard,
        target_worker: entry.shard.map(|_| entry.worker.clone()),
        attempt: entry.attempt + 1,
        not_before: Some(crate::run::whole_millisecond(now.saturating_add(delay).unwrap_or(now))),
        rerun_of: None,
    })
}

/// The jobs a run that ended with `status`, and is not retried, starts:
/// `on_success` after a success; `on_failure` after a failure.
fn dependents_of(job: &Job, entry: &RunningEntry, status: RunStatus) -> Vec<(JobName, TriggerRequest)> {
    let targets = if status == RunStatus::Succeeded {
        &job.spec.on_success
    } else if status.is_failure() {
        &job.spec.on_failure
    } else {
        return Vec::new();
    };
    if targets.is_empty() {
        return Vec::new();
    }
    if entry.depth >= MAX_DEPENDENCY_DEPTH {
        tracing::warn!(
            depth = entry.depth,
            "a chain of {MAX_DEPENDENCY_DEPTH} dependent runs ends here; its dependents are not started"
        );
        return Vec::new();
    }
    tracing::info!(dependents = ?targets, "starting dependent jobs");
    targets
        .iter()
        .map(|target| {
            let request = TriggerRequest {
                requested_at: crate::run::whole_millisecond(Timestamp::now()),
                requested_by: format!("job {}", job.name),
                trigger: Trigger::Dependency,
                tick: None,
                parent: Some(ParentRun {
                    job: job.name.clone(),
                    run_id: entry.run_id,
                    status,
                }),
                depth: entry.depth + 1,
                shard: None,
                target_worker: None,
                attempt: 1,
                not_before: None,
                rerun_of: None,
            };
            (target.clone(), request)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::ids::RunId;
    use crate::job::{JobKind, JobSpec, RetryPolicy, ShellJob};

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn job(max_retries: u32) -> Job {
        let now = ts("2026-01-01T00:00:00Z");
        let kind = JobKind::Shell(ShellJob {
            command: "false".into(),
            env: BTreeMap::new(),
            timeout_s: 1,
            output_kb: 1,
        });
        let spec = JobSpec {
            retry: RetryPolicy {
                max: max_retries,
                backoff_s: 10,
                max_backoff_s: 3600,
            },
            on_failure: vec![JobName::new("page-someone").unwrap()].into(),
            ..JobSpec::new("@daily", kind)
        };
        Job::for_test("flaky", spec, now)
    }

    fn entry(trigger: Trigger, attempt: u32) -> RunningEntry {
        RunningEntry {
            tick: ts("2026-01-02T00:00:00Z"),
            attempt,
            claimed_at: ts("2026-01-02T00:00:00Z"),
            fence: Some(7),
            ..crate::testkit::sample_entry("w1", trigger)
        }
    }

    #[test]
    fn a_failure_with_retries_left_stores_its_retry_not_its_dependents() {
        let now = ts("2026-01-02T00:00:01Z");
        let first = entry(Trigger::Schedule, 1);
        let follow = follow_ups(&job(2), &first, RunStatus::Failed, now);
        assert_eq!(follow.len(), 1, "{follow:?}");
        let (target, retry) = &follow[0];
        assert_eq!(target.as_str(), "flaky");
        assert_eq!(retry.trigger, Trigger::Retry);
        assert_eq!((retry.tick, retry.attempt), (Some(first.tick), 2));
        assert_eq!(retry.not_before, Some(ts("2026-01-02T00:00:11Z")), "after the backoff");
        assert_eq!(
            retry.target_worker, None,
            "the job's owner takes it, whoever that is then"
        );
        // The second retry waits twice as long.
        let second = follow_ups(&job(2), &entry(Trigger::Retry, 2), RunStatus::Lost, now);
        assert_eq!(second[0].1.not_before, Some(ts("2026-01-02T00:00:21Z")));
    }

    #[test]
    fn the_last_attempt_and_manual_runs_start_dependents_instead() {
        let now = ts("2026-01-02T00:00:01Z");
        for (entry, max) in [
            (entry(Trigger::Retry, 3), 2),
            (entry(Trigger::Manual, 1), 2),
            (entry(Trigger::Rerun, 1), 2),
            (entry(Trigger::Schedule, 1), 0),
        ] {
            let follow = follow_ups(&job(max), &entry, RunStatus::Failed, now);
            let targets: Vec<&str> = follow.iter().map(|(job, _)| job.as_str()).collect();
            assert_eq!(
                targets,
                vec!["page-someone"],
                "{:?} attempt {}",
                entry.trigger,
                entry.attempt
            );
            assert_eq!(follow[0].1.trigger, Trigger::Dependency);
        }
        // A success is never retried.
        assert!(follow_ups(&job(2), &entry(Trigger::Schedule, 1), RunStatus::Succeeded, now).is_empty());
    }

    #[test]
    fn a_shard_is_retried_on_the_worker_it_ran_on() {
        let mut shard = entry(Trigger::Schedule, 1);
        shard.shard = Some(crate::run::Shard {
            index: 1,
            count: 3,
            group: RunId::generate(),
        });
        let follow = follow_ups(&job(1), &shard, RunStatus::TimedOut, ts("2026-01-02T00:00:01Z"));
        assert_eq!(follow[0].1.shard, shard.shard);
        assert_eq!(follow[0].1.target_worker.as_deref(), Some("w1"));
    }
}
