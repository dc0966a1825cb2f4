//! The timer queue and the scheduling policies: overlap, catch-up and retry
//! backoff. (Which worker schedules a job is `placement`'s.)
//!
//! Everything here is pure: no I/O, and no clock of its own — the current time
//! is always an argument. That keeps every policy unit-testable at any instant
//! and leaves the worker as the only place that talks to stores.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::cronexpr::Schedule;
use crate::job::{Catchup, CatchupPolicy, Overlap, RetryPolicy};

mod lead;
pub use lead::ClaimLead;

/// A min-heap of deadlines keyed by `K`, one deadline per key.
///
/// `set` and `pop_due` are O(log n). Replaced or removed deadlines stay in the
/// heap as stale entries (recognised by a generation number) and are skipped
/// when they surface; the heap is rebuilt when stale entries outnumber live
/// ones, so memory stays proportional to the number of keys.
#[derive(Debug)]
pub struct TimerQueue<K> {
    heap: BinaryHeap<Reverse<(Timestamp, u64, K)>>,
    live: HashMap<K, (Timestamp, u64)>,
    next_generation: u64,
}

impl<K: Clone + Eq + Hash + Ord> Default for TimerQueue<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Clone + Eq + Hash + Ord> TimerQueue<K> {
    pub fn new() -> Self {
        Self {
            heap: BinaryHeap::new(),
            live: HashMap::new(),
            next_generation: 0,
        }
    }

    /// Makes room for `additional` more keys at once, so that scheduling a
    /// large set of jobs does not grow (and leave behind) the tables step
    /// by step.
    pub fn reserve(&mut self, additional: usize) {
        self.heap.reserve(additional);
        self.live.reserve(additional);
    }

    /// Sets (or replaces) the deadline of `key`.
    pub fn set(&mut self, key: K, due: Timestamp) {
        let generation = self.next_generation;
        self.next_generation += 1;
        self.live.insert(key.clone(), (due, generation));
        self.heap.push(Reverse((due, generation, key)));
        self.compact_if_sparse();
    }

    /// Removes the deadline of `key`; returns whether it had one.
    pub fn remove(&mut self, key: &K) -> bool {
        let removed = self.live.remove(key).is_some();
        if removed {
            self.compact_if_sparse();
        }
        removed
    }

    pub fn get(&self, key: &K) -> Option<Timestamp> {
        self.live.get(key).map(|(due, _)| *due)
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The earliest deadline.
    pub fn next_due(&mut self) -> Option<Timestamp> {
        self.drop_stale_top();
        self.heap.peek().map(|Reverse((due, _, _))| *due)
    }

    /// Removes and returns the earliest key whose deadline is at or before `now`.
    pub fn pop_due(&mut self, now: Timestamp) -> Option<(K, Timestamp)> {
        self.drop_stale_top();
        let Reverse((due, _, _)) = self.heap.peek()?;
        if *due > now {
            return None;
        }
        let Reverse((due, _, key)) = self.heap.pop()?;
        self.live.remove(&key);
        Some((key, due))
    }

    fn drop_stale_top(&mut self) {
        while let Some(Reverse((_, generation, key))) = self.heap.peek() {
            match self.live.get(key) {
                Some((_, live_generation)) if live_generation == generation => return,
                _ => {
                    self.heap.pop();
                }
            }
        }
    }

    fn compact_if_sparse(&mut self) {
        if self.heap.len() > 64 && self.heap.len() > 2 * self.live.len() {
            self.heap = self
                .live
                .iter()
                .map(|(key, (due, generation))| Reverse((*due, *generation, key.clone())))
                .collect();
        }
    }
}

/// What a tick does about runs of the same job that are still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlapDecision {
    Start,
    /// Record the tick as `skipped`.
    Skip,
    /// Kill the running runs, then start.
    ReplaceAndStart,
}

pub fn overlap_decision(policy: Overlap, running: usize) -> OverlapDecision {
    match (policy, running) {
        (_, 0) | (Overlap::Allow, _) => OverlapDecision::Start,
        (Overlap::Forbid, _) => OverlapDecision::Skip,
        (Overlap::Replace, _) => OverlapDecision::ReplaceAndStart,
    }
}

/// How a recovering owner handles the ticks that passed unclaimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatchupPlan {
    /// Ticks to run now as `catchup` runs, oldest first.
    pub run: Vec<Timestamp>,
    /// Ticks to record as `missed`, one record each, oldest first.
    pub missed: Vec<Timestamp>,
    /// Missed ticks beyond the per-tick record limit, recorded as one summary
    /// record: every tick of the schedule in `first..=last`, `count` of them
    /// (`None` when counting was cut short — then the record still stands for
    /// every tick in the range).
    pub missed_summary: Option<MissedSummary>,
    /// The instant the claim state advances to: every tick at or before it is
    /// accounted for by this plan.
    pub horizon: Timestamp,
    /// The first tick after the horizon: the next tick to schedule normally.
    pub next: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissedSummary {
    pub first: Timestamp,
    pub last: Timestamp,
    pub count: Option<u64>,
}

impl CatchupPlan {
    pub fn is_empty(&self) -> bool {
        self.run.is_empty() && self.missed.is_empty() && self.missed_summary.is_none()
    }
}

/// Bounds on catch-up work, from the worker configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchupLimits {
    /// Missed ticks recorded one by one before the rest are summarised.
    pub missed_records: u64,
    /// Most ticks one `all` recovery runs.
    pub runs: u64,
    /// Ticks at most this overdue are not "missed": they are due now and are
    /// run normally (a job created a moment ago, a worker that restarted fast).
    pub grace: Duration,
    /// Most ticks examined one by one; beyond it the rest are summarised by range.
    pub scan: u64,
}

impl Default for CatchupLimits {
    fn default() -> Self {
        Self {
            missed_records: 1000,
            runs: 100,
            grace: Duration::from_secs(1),
            scan: 1_000_000,
        }
    }
}

/// Plans the ticks in `(after, now - grace]`. The policy decides which run and
/// which are recorded missed; nothing in the interval is left unaccounted.
/// Ticks in `(now - grace, now]` are not part of the plan: `next` points at the
/// first of them so they run as ordinary ticks.
pub fn plan_catchup(
    schedule: &Schedule,
    catchup: Catchup,
    after: Timestamp,
    now: Timestamp,
    limits: CatchupLimits,
) -> CatchupPlan {
    let grace = SignedDuration::try_from(limits.grace).unwrap_or(SignedDuration::ZERO);
    let cutoff = now.checked_sub(grace).unwrap_or(now).max(after);
    let window = SignedDuration::from_secs(i64::try_from(catchup.window_s).unwrap_or(i64::MAX));
    let window_start = now.checked_sub(window).unwrap_or(Timestamp::MIN);

    // Ticks are examined in order; only the newest `keep` of them can be run,
    // so only those need remembering individually.
    let keep = match catchup.policy {
        CatchupPolicy::Skip => 0,
        CatchupPolicy::Latest => 1,
        CatchupPolicy::All => usize::try_from(limits.runs).unwrap_or(usize::MAX),
    };
    let mut missed = Vec::new();
    let mut summary: Option<MissedSummary> = None;
    let mut runnable: std::collections::VecDeque<Timestamp> = std::collections::VecDeque::new();
    let mut record_missed = |tick: Timestamp, missed: &mut Vec<Timestamp>| {
        if (missed.len() as u64) < limits.missed_records {
            missed.push(tick);
        } else {
            let entry = summary.get_or_insert(MissedSummary {
                first: tick,
                last: tick,
                count: Some(0),
            });
            entry.last = tick;
            entry.count = entry.count.map(|c| c + 1);
        }
    };

    let mut scanned = 0u64;
    let mut cursor = after;
    let mut next = None;
    let mut cut_short = false;
    while let Some(tick) = schedule.next_after(cursor) {
        if tick > cutoff {
            next = Some(tick);
            break;
        }
        scanned += 1;
        if scanned > limits.scan {
            cut_short = true;
            break;
        }
        cursor = tick;
        if keep > 0 && tick >= window_start {
            runnable.push_back(tick);
            if runnable.len() > keep
                && let Some(oldest) = runnable.pop_front()
            {
                record_missed(oldest, &mut missed);
            }
        } else {
            record_missed(tick, &mut missed);
        }
    }
    if cut_short {
        // Too many ticks to walk one by one: the rest of the interval becomes
        // one summary record that stands for every tick in it. Runnable ticks
        // seen so far are older than the rest, so they are missed too.
        for tick in runnable.drain(..) {
            record_missed(tick, &mut missed);
        }
        let first = summary.map_or(cursor, |s| s.first);
        summary = Some(MissedSummary {
            first,
            last: cutoff,
            count: None,
        });
        next = schedule.next_after(cutoff);
    }
    missed.sort();
    let run: Vec<Timestamp> = runnable.into_iter().collect();
    CatchupPlan {
        run,
        missed,
        missed_summary: summary,
        horizon: cutoff,
        next,
    }
}

/// The delay before retry number `attempt + 1`, after attempt `attempt`
/// (1-based) failed; `None` when the policy allows no more attempts.
pub fn retry_delay(policy: &RetryPolicy, attempt: u32) -> Option<Duration> {
    if attempt == 0 || attempt > policy.max {
        return None;
    }
    let factor = 1u64.checked_shl(attempt - 1).unwrap_or(u64::MAX);
    let delay = policy.backoff_s.saturating_mul(factor).min(policy.max_backoff_s);
    Some(Duration::from_secs(delay))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    #[test]
    fn timer_queue_pops_in_deadline_order_and_honours_replacement() {
        let mut queue = TimerQueue::new();
        queue.set("b", ts("2026-01-01T00:00:02Z"));
        queue.set("a", ts("2026-01-01T00:00:01Z"));
        queue.set("c", ts("2026-01-01T00:00:03Z"));
        queue.set("a", ts("2026-01-01T00:00:05Z"));
        assert!(queue.remove(&"c"));
        assert!(!queue.remove(&"c"));
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.next_due(), Some(ts("2026-01-01T00:00:02Z")));
        assert_eq!(queue.pop_due(ts("2026-01-01T00:00:01Z")), None);
        assert_eq!(
            queue.pop_due(ts("2026-01-01T00:00:10Z")),
            Some(("b", ts("2026-01-01T00:00:02Z")))
        );
        assert_eq!(
            queue.pop_due(ts("2026-01-01T00:00:10Z")),
            Some(("a", ts("2026-01-01T00:00:05Z")))
        );
        assert_eq!(queue.pop_due(ts("2026-01-01T00:00:10Z")), None);
        assert!(queue.is_empty());
    }

    #[test]
    fn timer_queue_memory_stays_proportional_to_live_keys() {
        let mut queue = TimerQueue::new();
        let base = ts("2026-01-01T00:00:00Z");
        for round in 0..100i64 {
            for key in 0..100u32 {
                queue.set(key, base + SignedDuration::from_secs(round * 100 + i64::from(key)));
            }
        }
        assert_eq!(queue.len(), 100);
        assert!(
            queue.heap.len() <= 2 * 100 + 1,
            "heap holds {} entries",
            queue.heap.len()
        );
        let mut popped = 0;
        while queue.pop_due(base + SignedDuration::from_hours(100)).is_some() {
            popped += 1;
        }
        assert_eq!(popped, 100);
    }

    #[test]
    fn overlap_policies() {
        assert_eq!(overlap_decision(Overlap::Forbid, 0), OverlapDecision::Start);
        assert_eq!(overlap_decision(Overlap::Forbid, 1), OverlapDecision::Skip);
        assert_eq!(overlap_decision(Overlap::Allow, 3), OverlapDecision::Start);
        assert_eq!(overlap_decision(Overlap::Replace, 0), OverlapDecision::Start);
        assert_eq!(overlap_decision(Overlap::Replace, 2), OverlapDecision::ReplaceAndStart);
    }

    fn every_minute() -> Schedule {
        Schedule::new("* * * * *", "UTC").expect("schedule")
    }

    fn limits() -> CatchupLimits {
        CatchupLimits {
            missed_records: 1000,
            runs: 100,
            grace: Duration::from_secs(1),
            scan: 1_000_000,
        }
    }

    #[test]
    fn catchup_skip_records_every_missed_tick() {
        let plan = plan_catchup(
            &every_minute(),
            Catchup {
                policy: CatchupPolicy::Skip,
                window_s: 3600,
            },
            ts("2026-01-01T00:00:00Z"),
            ts("2026-01-01T00:05:30Z"),
            limits(),
        );
        assert!(plan.run.is_empty());
        let expected: Vec<_> = (1..=5).map(|m| ts(&format!("2026-01-01T00:0{m}:00Z"))).collect();
        assert_eq!(plan.missed, expected);
        assert_eq!(plan.horizon, ts("2026-01-01T00:05:29Z"));
        assert_eq!(plan.next, Some(ts("2026-01-01T00:06:00Z")));
    }

    #[test]
    fn catchup_latest_runs_the_newest_tick_in_the_window() {
        let plan = plan_catchup(
            &every_minute(),
            Catchup {
                policy: CatchupPolicy::Latest,
                window_s: 120,
            },
            ts("2026-01-01T00:00:00Z"),
            ts("2026-01-01T00:05:30Z"),
            limits(),
        );
        assert_eq!(plan.run, vec![ts("2026-01-01T00:05:00Z")]);
        assert_eq!(plan.missed.len(), 4);
        assert_eq!(plan.missed.last(), Some(&ts("2026-01-01T00:04:00Z")));

        // Outside the window nothing runs; everything is recorded.
        let plan = plan_catchup(
            &every_minute(),
            Catchup {
                policy: CatchupPolicy::Latest,
                window_s: 10,
            },
            ts("2026-01-01T00:00:00Z"),
            ts("2026-01-01T00:05:30Z"),
            limits(),
        );
        assert!(plan.run.is_empty());
        assert_eq!(plan.missed.len(), 5);
    }

    #[test]
    fn catchup_all_runs_each_tick_in_order_up_to_the_limit() {
        let plan = plan_catchup(
            &every_minute(),
            Catchup {
                policy: CatchupPolicy::All,
                window_s: 3600,
            },
            ts("2026-01-01T00:00:00Z"),
            ts("2026-01-01T00:05:30Z"),
            CatchupLimits { runs: 3, ..limits() },
        );
        assert_eq!(
            plan.run,
            vec![
                ts("2026-01-01T00:03:00Z"),
                ts("2026-01-01T00:04:00Z"),
                ts("2026-01-01T00:05:00Z")
            ]
        );
        assert_eq!(
            plan.missed,
            vec![ts("2026-01-01T00:01:00Z"), ts("2026-01-01T00:02:00Z")]
        );
    }

    #[test]
    fn catchup_leaves_ticks_within_grace_to_the_normal_path() {
        let plan = plan_catchup(
            &Schedule::new("@every 1s", "UTC").expect("schedule"),
            Catchup::default(),
            ts("2026-01-01T00:00:00Z"),
            ts("2026-01-01T00:00:00.500Z"),
            limits(),
        );
        assert!(plan.is_empty());
        assert_eq!(plan.next, Some(ts("2026-01-01T00:00:01Z")));
    }

    #[test]
    fn catchup_summarises_beyond_the_record_limit_and_accounts_for_every_tick() {
        let plan = plan_catchup(
            &Schedule::new("@every 1s", "UTC").expect("schedule"),
            Catchup {
                policy: CatchupPolicy::Latest,
                window_s: 60,
            },
            ts("2026-01-01T00:00:00Z"),
            ts("2026-01-01T01:00:00Z"),
            CatchupLimits {
                missed_records: 10,
                ..limits()
            },
        );
        assert_eq!(plan.run, vec![ts("2026-01-01T00:59:59Z")]);
        assert_eq!(plan.missed.len(), 10);
        let summary = plan.missed_summary.expect("summary");
        assert_eq!(summary.first, ts("2026-01-01T00:00:11Z"));
        assert_eq!(summary.last, ts("2026-01-01T00:59:58Z"));
        // 3599 ticks in (00:00:00, 00:59:59]: one run, ten records, the rest summarised.
        assert_eq!(summary.count, Some(3599 - 1 - 10));
    }

    #[test]
    fn catchup_scan_limit_summarises_the_rest_by_range() {
        let plan = plan_catchup(
            &Schedule::new("@every 1s", "UTC").expect("schedule"),
            Catchup::default(),
            ts("2026-01-01T00:00:00Z"),
            ts("2026-01-02T00:00:00Z"),
            CatchupLimits {
                missed_records: 5,
                scan: 100,
                ..limits()
            },
        );
        assert_eq!(plan.missed.len(), 5);
        let summary = plan.missed_summary.expect("summary");
        assert_eq!(summary.count, None);
        assert_eq!(summary.first, ts("2026-01-01T00:00:06Z"));
        assert_eq!(summary.last, ts("2026-01-01T23:59:59Z"));
        assert_eq!(plan.next, Some(ts("2026-01-02T00:00:00Z")));
    }

    #[test]
    fn retry_backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            max: 4,
            backoff_s: 5,
            max_backoff_s: 12,
        };
        let delays: Vec<_> = (0..=5).map(|attempt| retry_delay(&policy, attempt)).collect();
        assert_eq!(
            delays,
            vec![
                None,
                Some(Duration::from_secs(5)),
                Some(Duration::from_secs(10)),
                Some(Duration::from_secs(12)),
                Some(Duration::from_secs(12)),
                None
            ]
        );
        let huge = RetryPolicy {
            max: 100,
            backoff_s: 3600,
            max_backoff_s: 86400,
        };
        assert_eq!(retry_delay(&huge, 90), Some(Duration::from_secs(86400)));
    }
}
