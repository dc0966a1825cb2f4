//! The run-history checker: turns sandcron's promises into a verdict over
//! recorded history. For each job it compares the ticks its schedule
//! expected in a window with the run records the log store holds, and
//! reports every violation:
//!
//! - a tick accepted twice (two executions of one (job, tick));
//! - a tick neither run nor recorded (`skipped` / `missed`);
//! - a run record stuck in `running` although no worker runs it;
//! - a gap in a run's output sequence (a lost chunk), or an ended run whose
//!   stored output is shorter than the output it recorded (a lost tail);
//! - a scheduled run whose fencing token is not above the one of the tick
//!   before it (a result written under a stale claim).
//!
//! The logic here is pure; `sandcron check-history` feeds it from a master's
//! API, and tests feed it directly.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::cronexpr::Schedule;
use crate::ids::RunId;
use crate::run::{RunRecord, RunStatus, Trigger};

/// The most expected ticks one job may contribute; beyond it the window is
/// too wide for a tick-by-tick check and the report says so.
pub const MAX_TICKS_PER_JOB: usize = 1_000_000;

/// What the checker knows about one job.
#[derive(Debug, Clone)]
pub struct JobFacts {
    pub name: String,
    pub schedule: Schedule,
    /// Ticks at or before this instant are not expected (the job was created,
    /// resumed or rescheduled then).
    pub active_since: Timestamp,
    /// A paused job expects no ticks.
    pub paused: bool,
}

/// Everything one check looks at.
#[derive(Debug, Clone)]
pub struct History {
    pub jobs: Vec<JobFacts>,
    /// Run records of the window, any order.
    pub runs: Vec<RunRecord>,
    /// What the store holds of each run's output, for the runs whose output
    /// was read (runs not in the map are not checked for losses).
    pub output: BTreeMap<RunId, StoredOutput>,
    /// Runs a worker still holds (the coordination store's running entries),
    /// read before `runs`.
    pub running: BTreeSet<RunId>,
    /// When `running` was read: a run started after it may be missing there.
    pub running_read_at: Timestamp,
    /// The window: ticks from `since` (exclusive) up to `until` (exclusive,
    /// like the runs query).
    pub since: Timestamp,
    pub until: Timestamp,
}

/// A run's output as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredOutput {
    /// Chunk sequence numbers, in any order.
    pub seqs: Vec<u64>,
    /// Bytes of guest output (the truncation marker not included).
    pub bytes: u64,
}

/// One broken promise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    /// One (job, tick) executed more than once.
    Duplicate {
        job: String,
        tick: Timestamp,
        runs: Vec<String>,
    },
    /// A tick the schedule expected, with no run or record.
    Unrecorded { job: String, tick: Timestamp },
    /// A run record still `running` that no worker holds.
    NotTerminal { job: String, run_id: String },
    /// A run's output sequence skips numbers.
    OutputGap {
        job: String,
        run_id: String,
        missing: Vec<u64>,
    },
    /// An ended run recorded more output than the store holds.
    OutputShort {
        job: String,
        run_id: String,
        recorded_bytes: u64,
        stored_bytes: u64,
    },
    /// A scheduled run whose fence is not above the previous tick's.
    StaleFence {
        job: String,
        tick: Timestamp,
        fence: i64,
        previous_fence: i64,
    },
}

/// The per-job figures and the violations.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub jobs: usize,
    pub ticks_expected: u64,
    pub runs: u64,
    /// Runs that executed (not `skipped` or `missed` records).
    pub executed: u64,
    /// Ticks accounted for by `skipped` or `missed` records.
    pub recorded_not_run: u64,
    pub chunks: u64,
    /// Runs whose output was read and checked.
    pub output_checked: u64,
    pub violations: Vec<Violation>,
    /// Things the checker could not check, in words.
    pub notes: Vec<String>,
}

impl Report {
    pub fn count(&self, kind: &str) -> usize {
        self.violations
            .iter()
            .filter(|v| {
                matches!(
                    (kind, v),
                    ("duplicate", Violation::Duplicate { .. })
                        | ("unrecorded", Violation::Unrecorded { .. })
                        | ("not_terminal", Violation::NotTerminal { .. })
                        | ("output_gap", Violation::OutputGap { .. })
                        | ("output_short", Violation::OutputShort { .. })
                        | ("stale_fence", Violation::StaleFence { .. })
                )
            })
            .count()
    }
}

/// Whether a record stands for an execution of its tick (rather than a
/// record that the tick was skipped or missed).
fn executed(run: &RunRecord) -> bool {
    !matches!(run.status, RunStatus::Skipped | RunStatus::Missed)
}

/// Whether a record answers for a scheduled tick (manual runs and retries
/// do not: a retry re-runs a tick that was already accepted once).
fn for_schedule(run: &RunRecord) -> bool {
    matches!(run.trigger, Trigger::Schedule | Trigger::Catchup)
}

/// Checks `history`; the report lists every violation.
pub fn check(history: &History) -> Report {
    let mut report = Report {
        jobs: history.jobs.len(),
        ..Report::default()
    };
    let mut by_job: BTreeMap<&str, Vec<&RunRecord>> = BTreeMap::new();
    for run in &history.runs {
        by_job.entry(run.job.as_str()).or_default().push(run);
    }
    report.runs = history.runs.len() as u64;
    for job in &history.jobs {
        let runs = by_job.remove(job.name.as_str()).unwrap_or_default();
        check_job(history, job, &runs, &mut report);
    }
    // Runs of jobs that no longer exist are still checked for duplicates,
    // stuck records and output, just not against a schedule.
    for (name, runs) in by_job {
        check_runs(history, name, &runs, &mut report);
    }
    for output in history.output.values() {
        report.chunks += output.seqs.len() as u64;
    }
    report.output_checked = history.output.len() as u64;
    report
}

fn check_job(history: &History, job: &JobFacts, runs: &[&RunRecord], report: &mut Report) {
    check_runs(history, &job.name, runs, report);
    if job.paused {
        report.notes.push(format!("{}: paused, ticks not checked", job.name));
        return;
    }
    let mut covered: BTreeSet<Timestamp> = BTreeSet::new();
    let mut ranges: Vec<(Timestamp, Timestamp)> = Vec::new();
    for run in runs.iter().filter(|r| for_schedule(r)) {
        covered.insert(run.tick);
        if let Some(until) = run.missed_until {
            ranges.push((run.tick, until));
        }
    }
    let start = history.since.max(job.active_since);
    let mut tick = job.schedule.next_after(start);
    let mut expected = 0usize;
    while let Some(t) = tick.filter(|t| *t < history.until) {
        expected += 1;
        if expected > MAX_TICKS_PER_JOB {
            report.notes.push(format!(
                "{}: over {MAX_TICKS_PER_JOB} ticks in the window; stopped there",
                job.name
            ));
            break;
        }
        if !covered.contains(&t) && !ranges.iter().any(|(from, to)| (*from..=*to).contains(&t)) {
            report.violations.push(Violation::Unrecorded {
                job: job.name.clone(),
                tick: t,
            });
        }
        tick = job.schedule.next_after(t);
    }
    report.ticks_expected += expected as u64;
}

fn check_runs(history: &History, job: &str, runs: &[&RunRecord], report: &mut Report) {
    let mut per_tick: BTreeMap<Timestamp, Vec<&RunRecord>> = BTreeMap::new();
    // Shards of broadcast ticks: one run per (tick, shard) is due; their
    // fences are not ordered (each shard is taken on its own).
    let mut per_shard: BTreeMap<(Timestamp, u32), Vec<&RunRecord>> = BTreeMap::new();
    for run in runs {
        if executed(run) {
            report.executed += 1;
        } else {
            report.recorded_not_run += run.missed_count.unwrap_or(1);
        }
        if for_schedule(run) && executed(run) {
            match run.shard {
                Some(shard) => per_shard.entry((run.tick, shard.index)).or_default().push(run),
                None => per_tick.entry(run.tick).or_default().push(run),
            }
        }
        let started_before_read = run
            .started_at
            .is_none_or(|at| at < history.running_read_at - SignedDuration::from_secs(1));
        if run.status == RunStatus::Running && !history.running.contains(&run.run_id) && started_before_read {
            report.violations.push(Violation::NotTerminal {
                job: job.to_owned(),
                run_id: run.run_id.to_string(),
            });
        }
        if let Some(output) = history.output.get(&run.run_id) {
            let missing = gaps(&output.seqs);
            if !missing.is_empty() {
                report.violations.push(Violation::OutputGap {
                    job: job.to_owned(),
                    run_id: run.run_id.to_string(),
                    missing,
                });
            }
            // A `lost` record is written by another worker, which cannot
            // know how much the run printed.
            let ended = run.status.is_terminal() && executed(run) && run.status != RunStatus::Lost;
            if ended && output.bytes < run.output_bytes {
                report.violations.push(Violation::OutputShort {
                    job: job.to_owned(),
                    run_id: run.run_id.to_string(),
                    recorded_bytes: run.output_bytes,
                    stored_bytes: output.bytes,
                });
            }
        }
    }
    for ((tick, _), runs) in &per_shard {
        if runs.len() > 1 {
            report.violations.push(Violation::Duplicate {
                job: job.to_owned(),
                tick: *tick,
                runs: runs.iter().map(|r| r.run_id.to_string()).collect(),
            });
        }
    }
    let mut previous: Option<i64> = None;
    for (tick, runs) in &per_tick {
        if runs.len() > 1 {
            report.violations.push(Violation::Duplicate {
                job: job.to_owned(),
                tick: *tick,
                runs: runs.iter().map(|r| r.run_id.to_string()).collect(),
            });
        }
        let fence = runs.iter().map(|r| r.fence).min().unwrap_or_default();
        if let Some(previous_fence) = previous
            && fence <= previous_fence
        {
            report.violations.push(Violation::StaleFence {
                job: job.to_owned(),
                tick: *tick,
                fence,
                previous_fence,
            });
        }
        previous = Some(runs.iter().map(|r| r.fence).max().unwrap_or_default());
    }
}

/// The sequence numbers missing from `seqs` (which should be 0, 1, 2 …).
fn gaps(seqs: &[u64]) -> Vec<u64> {
    let present: BTreeSet<u64> = seqs.iter().copied().collect();
    let Some(&last) = present.last() else {
        return Vec::new();
    };
    (0..last).filter(|s| !present.contains(s)).take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::JobName;
    use crate::testkit::sample_record;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn job(name: &str) -> JobFacts {
        JobFacts {
            name: name.to_owned(),
            schedule: Schedule::new("* * * * * *", "UTC").unwrap(),
            active_since: at(0),
            paused: false,
        }
    }

    fn run(job: &str, tick: i64, status: RunStatus, fence: i64) -> RunRecord {
        let mut run = sample_record(&JobName::new(job).unwrap(), at(tick), status, 1);
        run.fence = fence;
        run.trigger = Trigger::Schedule;
        run.started_at = Some(at(tick));
        run
    }

    fn history(jobs: Vec<JobFacts>, runs: Vec<RunRecord>) -> History {
        History {
            jobs,
            runs,
            output: BTreeMap::new(),
            running: BTreeSet::new(),
            running_read_at: at(100),
            since: at(0),
            until: at(6),
        }
    }

    fn clean_runs() -> Vec<RunRecord> {
        (1..=5).map(|t| run("a", t, RunStatus::Succeeded, t * 10)).collect()
    }

    #[test]
    fn a_clean_history_has_no_violations() {
        let report = check(&history(vec![job("a")], clean_runs()));
        assert_eq!(report.violations, vec![]);
        assert_eq!(report.ticks_expected, 5);
        assert_eq!(report.executed, 5);
    }

    #[test]
    fn broadcast_shards_are_one_run_each_per_tick() {
        let group = crate::ids::RunId::generate();
        let shard = |t: i64, index: u32, fence: i64| {
            let mut r = run("a", t, RunStatus::Succeeded, fence);
            r.shard = Some(crate::run::Shard { index, count: 2, group });
            r
        };
        // Two shards per tick, taken in any order: no violation.
        let runs: Vec<RunRecord> = (1..=5)
            .flat_map(|t| [shard(t, 0, 100 - t), shard(t, 1, 200 + t)])
            .collect();
        let report = check(&history(vec![job("a")], runs.clone()));
        assert_eq!(report.violations, vec![]);
        // The same shard of a tick twice is a duplicate.
        let mut twice = runs;
        twice.push(shard(3, 1, 300));
        let report = check(&history(vec![job("a")], twice));
        assert_eq!(report.count("duplicate"), 1, "{:?}", report.violations);
    }

    #[test]
    fn a_tick_accepted_twice_is_a_duplicate() {
        let mut runs = clean_runs();
        runs.push(run("a", 3, RunStatus::Succeeded, 31));
        let report = check(&history(vec![job("a")], runs));
        assert_eq!(report.count("duplicate"), 1, "{:?}", report.violations);
        // A retry of a tick is no duplicate.
        let mut runs = clean_runs();
        let mut retry = run("a", 3, RunStatus::Succeeded, 31);
        retry.trigger = Trigger::Retry;
        runs.push(retry);
        assert_eq!(check(&history(vec![job("a")], runs)).violations, vec![]);
    }

    #[test]
    fn a_tick_with_no_record_is_unrecorded_and_a_missed_range_covers_ticks() {
        let mut runs = clean_runs();
        runs.retain(|r| r.tick != at(2) && r.tick != at(3));
        let report = check(&history(vec![job("a")], runs.clone()));
        assert_eq!(
            report.violations,
            vec![
                Violation::Unrecorded {
                    job: "a".into(),
                    tick: at(2)
                },
                Violation::Unrecorded {
                    job: "a".into(),
                    tick: at(3)
                },
            ]
        );
        let mut missed = run("a", 2, RunStatus::Missed, 25);
        missed.missed_until = Some(at(3));
        missed.missed_count = Some(2);
        runs.push(missed);
        let report = check(&history(vec![job("a")], runs));
        assert_eq!(report.violations, vec![]);
        assert_eq!(report.recorded_not_run, 2);
    }

    #[test]
    fn ticks_before_active_since_and_of_paused_jobs_are_not_expected() {
        let mut late = job("a");
        late.active_since = at(3);
        let runs: Vec<RunRecord> = clean_runs().into_iter().filter(|r| r.tick > at(3)).collect();
        assert_eq!(check(&history(vec![late], runs)).violations, vec![]);
        let mut paused = job("a");
        paused.paused = true;
        assert_eq!(check(&history(vec![paused], vec![])).violations, vec![]);
    }

    #[test]
    fn a_running_record_nobody_holds_is_not_terminal() {
        let mut runs = clean_runs();
        runs[4].status = RunStatus::Running;
        let stuck = runs[4].run_id;
        let mut h = history(vec![job("a")], runs);
        assert_eq!(check(&h).count("not_terminal"), 1);
        h.running.insert(stuck);
        assert_eq!(check(&h).count("not_terminal"), 0, "a held run is fine");
        h.running.clear();
        h.running_read_at = at(5);
        assert_eq!(check(&h).count("not_terminal"), 0, "started after the read: unknown");
    }

    #[test]
    fn output_gaps_are_found() {
        let runs = clean_runs();
        let mut h = history(vec![job("a")], runs.clone());
        let seqs = |seqs: &[u64]| StoredOutput {
            seqs: seqs.to_vec(),
            bytes: 0,
        };
        h.output.insert(runs[0].run_id, seqs(&[0, 1, 2]));
        h.output.insert(runs[1].run_id, seqs(&[0, 2, 3, 5]));
        let report = check(&h);
        assert_eq!(
            report.violations,
            vec![Violation::OutputGap {
                job: "a".into(),
                run_id: runs[1].run_id.to_string(),
                missing: vec![1, 4]
            }]
        );
        assert_eq!(report.chunks, 7);
    }

    #[test]
    fn an_ended_run_with_less_output_stored_than_recorded_lost_its_tail() {
        let mut runs = clean_runs();
        runs[0].output_bytes = 12;
        runs[1].output_bytes = 12;
        runs[2].output_bytes = 12;
        runs[2].status = RunStatus::Lost;
        let mut h = history(vec![job("a")], runs.clone());
        for (index, bytes) in [(0, 12), (1, 6), (2, 0)] {
            h.output
                .insert(runs[index].run_id, StoredOutput { seqs: vec![0], bytes });
        }
        let report = check(&h);
        assert_eq!(
            report.violations,
            vec![Violation::OutputShort {
                job: "a".into(),
                run_id: runs[1].run_id.to_string(),
                recorded_bytes: 12,
                stored_bytes: 6
            }],
            "a lost run is not judged"
        );
    }

    #[test]
    fn a_fence_not_above_the_previous_tick_s_is_stale() {
        let mut runs = clean_runs();
        runs[3].fence = 25;
        let report = check(&history(vec![job("a")], runs));
        assert_eq!(report.count("stale_fence"), 1, "{:?}", report.violations);
    }

    #[test]
    fn runs_of_deleted_jobs_are_still_checked_for_duplicates() {
        let mut runs = clean_runs();
        runs.push(run("a", 3, RunStatus::Succeeded, 31));
        let report = check(&history(vec![], runs));
        assert_eq!(report.count("duplicate"), 1);
        assert_eq!(report.count("unrecorded"), 0);
    }
}
