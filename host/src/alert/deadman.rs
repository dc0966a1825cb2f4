//! Dead-man alerts (`alerts.no_success_within_s`): whether a job that must
//! succeed at least once per period is overdue, and for which period.
//! Pure: the time, the job's facts and what the coordination store holds
//! are arguments; the masters' task (`deadman_watch`) reads and writes them.
//!
//! The count starts at the *reference*: the end of the job's last
//! successful run, or the moment the job became active (created, resumed,
//! given a new schedule: `JobMeta::active_since`), whichever is later.
//! When `now - reference >= period` the alert for period number
//! `k = floor((now - reference) / period)` is due — so a job that stays
//! silent alerts once per period, the first time one period after the
//! reference. Masters that were away for several periods send one alert
//! (for the latest `k`), not one per period missed.
//!
//! Several masters decide the same thing at about the same time; only the
//! one whose compare-and-swap of the job's [`DeadmanMark`] (`<prefix>
//! deadman/<job>`) succeeds delivers. A mark records the reference and the
//! last period alerted, so period `k` is alerted at most once, whatever
//! the masters' clocks say (a master behind the others computes a smaller
//! `k`, which the mark already covers).

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// What the coordination store keeps per job with a dead-man rule: the
/// last alert raised, as the compare-and-swap that raised it wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadmanMark {
    /// The reference the alert counted from.
    pub since: Timestamp,
    /// The period it was for.
    pub period_s: u64,
    /// The period number alerted (`k`).
    pub periods: u64,
}

/// The facts one decision is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadmanFacts {
    pub now: Timestamp,
    /// `alerts.no_success_within_s`.
    pub period_s: u64,
    /// When the job became active (`JobMeta::active_since`).
    pub active_since: Timestamp,
    /// The end of the job's last successful run, if the run history has one.
    pub last_success: Option<Timestamp>,
    /// The mark the store holds for the job, if any.
    pub stored: Option<DeadmanMark>,
}

/// What to do about one job now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadmanDecision {
    /// Not overdue: nothing can be due before `next_check` (the reference
    /// only moves forward).
    NotDue { next_check: Timestamp },
    /// Overdue, but the alert for this period has been raised already
    /// (by this master or another); the next period starts at `next_check`.
    AlreadyRaised { next_check: Timestamp },
    /// Overdue: store `mark` (only if the stored mark is still the one
    /// read), and if that succeeds, raise the alert for `mark.periods`.
    Due { mark: DeadmanMark, next_check: Timestamp },
}

/// Decides whether the dead-man alert of one job is due at `facts.now`.
pub fn decide(facts: &DeadmanFacts) -> DeadmanDecision {
    let period_s = facts.period_s.max(1);
    let period = SignedDuration::from_secs(i64::try_from(period_s).unwrap_or(i64::MAX / 2));
    // A stored mark's reference was a true reference when it was written,
    // and references only move forward: it still bounds this one from
    // below even if the run it came from has left the history since.
    let reference = [
        Some(facts.active_since),
        facts.last_success,
        facts.stored.map(|mark| mark.since),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(facts.active_since);
    let at_period = |k: u64| {
        let offset = SignedDuration::from_secs(i64::try_from(k.saturating_mul(period_s)).unwrap_or(i64::MAX / 2));
        reference.checked_add(offset).unwrap_or(Timestamp::MAX)
    };
    let elapsed = facts.now.duration_since(reference);
    if elapsed < period {
        return DeadmanDecision::NotDue {
            next_check: at_period(1),
        };
    }
    let periods = u64::try_from(elapsed.as_secs()).unwrap_or(0) / period_s;
    if let Some(mark) = facts.stored
        && mark.since == reference
        && mark.period_s == period_s
        && mark.periods >= periods
    {
        return DeadmanDecision::AlreadyRaised {
            next_check: at_period(mark.periods + 1),
        };
    }
    DeadmanDecision::Due {
        mark: DeadmanMark {
            since: reference,
            period_s,
            periods,
        },
        next_check: at_period(periods + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("timestamp")
    }

    fn facts(now: i64, last_success: Option<i64>, stored: Option<DeadmanMark>) -> DeadmanFacts {
        DeadmanFacts {
            now: at(now),
            period_s: 60,
            active_since: at(0),
            last_success: last_success.map(at),
            stored,
        }
    }

    fn mark(since: i64, periods: u64) -> DeadmanMark {
        DeadmanMark {
            since: at(since),
            period_s: 60,
            periods,
        }
    }

    #[test]
    fn a_job_is_not_due_within_a_period_of_its_activation_or_last_success() {
        assert_eq!(
            decide(&facts(59, None, None)),
            DeadmanDecision::NotDue { next_check: at(60) }
        );
        // A success moves the count; a success older than the activation
        // does not (the job was resumed since).
        assert_eq!(
            decide(&facts(100, Some(50), None)),
            DeadmanDecision::NotDue { next_check: at(110) }
        );
        assert_eq!(
            decide(&facts(59, Some(-1000), None)),
            DeadmanDecision::NotDue { next_check: at(60) }
        );
    }

    #[test]
    fn an_overdue_job_is_due_once_per_period() {
        // One period after activation without a success: period 1.
        let first = decide(&facts(60, None, None));
        assert_eq!(
            first,
            DeadmanDecision::Due {
                mark: mark(0, 1),
                next_check: at(120)
            }
        );
        // Within the same period, with the mark stored: already raised.
        assert_eq!(
            decide(&facts(119, None, Some(mark(0, 1)))),
            DeadmanDecision::AlreadyRaised { next_check: at(120) }
        );
        // The next period is due again.
        assert_eq!(
            decide(&facts(120, None, Some(mark(0, 1)))),
            DeadmanDecision::Due {
                mark: mark(0, 2),
                next_check: at(180)
            }
        );
    }

    #[test]
    fn a_master_behind_the_others_does_not_raise_an_earlier_period_again() {
        // Another master (clock ahead) raised period 3; this one thinks it is period 2.
        assert_eq!(
            decide(&facts(150, None, Some(mark(0, 3)))),
            DeadmanDecision::AlreadyRaised { next_check: at(240) }
        );
    }

    #[test]
    fn periods_missed_while_no_master_ran_give_one_alert_for_the_latest() {
        assert_eq!(
            decide(&facts(605, None, Some(mark(0, 1)))),
            DeadmanDecision::Due {
                mark: mark(0, 10),
                next_check: at(660)
            }
        );
    }

    #[test]
    fn a_success_after_an_alert_starts_a_new_count() {
        // Alerted for period 2 since 0; the job then succeeded at 130.
        let stored = Some(mark(0, 2));
        assert_eq!(
            decide(&facts(150, Some(130), stored)),
            DeadmanDecision::NotDue { next_check: at(190) }
        );
        // A period after that success without another: period 1 of the new count.
        assert_eq!(
            decide(&facts(190, Some(130), stored)),
            DeadmanDecision::Due {
                mark: mark(130, 1),
                next_check: at(250)
            }
        );
    }

    #[test]
    fn a_stored_reference_outlives_the_run_it_came_from() {
        // The success at 130 has been purged from the history, but the mark
        // written after it remembers it: no alert for the older silence.
        assert_eq!(
            decide(&facts(150, None, Some(mark(130, 1)))),
            DeadmanDecision::NotDue { next_check: at(190) }
        );
    }

    #[test]
    fn a_changed_period_counts_anew_from_the_same_reference() {
        let mut changed = facts(125, None, Some(mark(0, 2)));
        changed.period_s = 30;
        assert_eq!(
            decide(&changed),
            DeadmanDecision::Due {
                mark: DeadmanMark {
                    since: at(0),
                    period_s: 30,
                    periods: 4
                },
                next_check: at(150)
            }
        );
    }

    #[test]
    fn a_success_in_the_future_of_a_slow_clock_is_not_overdue() {
        assert_eq!(
            decide(&facts(100, Some(105), None)),
            DeadmanDecision::NotDue { next_check: at(165) }
        );
    }
}
