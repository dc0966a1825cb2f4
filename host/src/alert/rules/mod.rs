//! Which run outcomes raise alerts: a job's own rule and the installation's
//! global rules, failure rates over a window, deduplication and rate
//! limiting. Pure: the current time is an argument, nothing is sent here.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use jiff::{SignedDuration, Timestamp};

use super::payload::{AlertPayload, NoSuccessFacts, OverrunFacts, RateFacts};
use crate::ids::{JobName, RunId};
use crate::job::{FailureRate, Job};
use crate::run::{RunRecord, RunStatus};

/// A global rule from the configuration: applies to every job.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalRule {
    pub on: Vec<RunStatus>,
    pub failure_rate: Option<FailureRate>,
    pub channels: Vec<String>,
}

/// One alert to deliver, to every channel it names.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub channels: Vec<String>,
    pub payload: AlertPayload,
}

/// A rule as applied: its name, statuses, failure rate and channels.
type RuleView = (String, Vec<RunStatus>, Option<FailureRate>, Vec<String>);

/// Bounds on the state kept per job, so a flood of runs cannot grow it.
const MAX_WINDOW_RUNS: usize = 10_000;
const MAX_RECENT_RUNS: usize = 10_000;

/// The rules and their state: rate-limit timers, failure windows, and the
/// runs already alerted on.
#[derive(Debug)]
pub struct AlertRules {
    global: Vec<GlobalRule>,
    min_interval: SignedDuration,
    console_url: Option<String>,
    /// Per (job, rule, kind): when the last alert was sent and how many were
    /// suppressed since.
    limits: HashMap<(JobName, String, String), (Timestamp, u64)>,
    /// Per job: (ended at, failed) of recent runs, for failure rates.
    windows: HashMap<JobName, VecDeque<(Timestamp, bool)>>,
    /// Runs already alerted on (a record can be written more than once:
    /// `running` then final, or replayed), newest last.
    seen: HashSet<(RunId, RunStatus)>,
    seen_order: VecDeque<(RunId, RunStatus)>,
}

impl AlertRules {
    pub fn new(global: Vec<GlobalRule>, min_interval: std::time::Duration, console_url: Option<String>) -> Self {
        Self {
            global,
            min_interval: SignedDuration::try_from(min_interval).unwrap_or(SignedDuration::ZERO),
            console_url: console_url.map(|url| url.trim_end_matches('/').to_owned()),
            limits: HashMap::new(),
            windows: HashMap::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
        }
    }

    /// The alerts `record` (a run of `job` that ended) raises at `now`.
    pub fn observe(&mut self, job: &Job, record: &RunRecord, now: Timestamp) -> Vec<Alert> {
        if !record.status.is_terminal() || !self.first_sight((record.run_id, record.status)) {
            return Vec::new();
        }
        let mut rules: Vec<RuleView> = Vec::new();
        if let Some(own) = &job.spec.alerts {
            rules.push(("job".to_owned(), own.on.clone(), own.failure_rate, own.channels.clone()));
        }
        for (index, rule) in self.global.iter().enumerate() {
            rules.push((
                format!("global[{index}]"),
                rule.on.clone(),
                rule.failure_rate,
                rule.channels.clone(),
            ));
        }
        if rules.is_empty() {
            return Vec::new();
        }
        // Ticks that did not run are not runs: they do not enter the window.
        let counted = !matches!(record.status, RunStatus::Skipped | RunStatus::Missed);
        let window_rates: Vec<RateFacts> = if counted {
            let widest = rules
                .iter()
                .filter_map(|(_, _, rate, _)| rate.map(|r| r.window_s))
                .max();
            match widest {
                Some(widest) => self.push_window(&job.name, record, now, widest, &rules),
                None => Vec::new(),
            }
        } else {
            Vec::new()
        };
        // (rule, event) -> (channels, failure-rate facts)
        type Grouped = BTreeMap<(String, &'static str), (Vec<String>, Option<RateFacts>)>;
        let mut grouped: Grouped = BTreeMap::new();
        let mut rate_index = 0;
        for (rule, on, rate, channels) in &rules {
            if on.contains(&record.status) {
                let entry = grouped.entry((rule.clone(), "run")).or_default();
                entry.0.extend(channels.iter().cloned());
            }
            if let (Some(_), true) = (rate, counted) {
                let facts = window_rates.get(rate_index).copied();
                rate_index += 1;
                if let Some(facts) = facts.filter(|f| f.runs > 0) {
                    let entry = grouped.entry((rule.clone(), "failure_rate")).or_default();
                    entry.0.extend(channels.iter().cloned());
                    entry.1 = Some(facts);
                }
            }
        }
        let mut alerts = Vec::new();
        for ((rule, event), (mut channels, facts)) in grouped {
            channels.sort();
            channels.dedup();
            let kind = match event {
                "run" => record.status.as_str().to_owned(),
                _ => "failure_rate".to_owned(),
            };
            let Some(suppressed) = self.admit(&job.name, &rule, &kind, now) else {
                continue;
            };
            alerts.push(Alert {
                channels,
                payload: AlertPayload {
                    error: record.error.clone(),
                    failure_rate: facts,
                    suppressed,
                    ..self.run_payload(event, rule, job, record, now)
                },
            });
        }
        alerts
    }

    /// The overrun warning for `record`, a run of `job` that started at
    /// `started_at` and is still running at `now`, past the job's
    /// `expected_duration_s`: from the job's own rule, once per run, and
    /// rate limited like run alerts (kind `overrun`). `None` when the rule
    /// sets no expected duration, the run has not overrun yet, it already
    /// warned, or the rate limit holds it back.
    pub fn overrun(&mut self, job: &Job, record: &RunRecord, started_at: Timestamp, now: Timestamp) -> Option<Alert> {
        let own = job.spec.alerts.as_ref()?;
        let expected_s = own.expected_duration_s?;
        let running_s = u64::try_from(now.duration_since(started_at).as_secs()).unwrap_or(0);
        // A second of slack: the timer that asks sleeps on the monotonic
        // clock, `now` and `started_at` are wall-clock readings.
        if running_s.saturating_add(1) < expected_s || !self.first_sight((record.run_id, RunStatus::Running)) {
            return None;
        }
        let running_s = running_s.max(expected_s);
        let suppressed = self.admit(&job.name, "job", "overrun", now)?;
        Some(Alert {
            channels: sorted(&own.channels),
            payload: AlertPayload {
                overrun: Some(OverrunFacts {
                    expected_s,
                    running_s,
                    started_at,
                }),
                suppressed,
                ..self.run_payload("overrun", "job".to_owned(), job, record, now)
            },
        })
    }

    /// The dead-man alert of `job`, as a master decided it is due (see
    /// `deadman::decide`): from the job's own rule, to its channels. Not
    /// rate limited — the masters raise it at most once per period by
    /// construction, and a period is at least 10 s.
    pub fn no_success(&self, job: &Job, facts: NoSuccessFacts, now: Timestamp) -> Option<Alert> {
        let own = job.spec.alerts.as_ref()?;
        own.no_success_within_s?;
        Some(Alert {
            channels: sorted(&own.channels),
            payload: AlertPayload::no_success(job.name.as_str(), facts, self.console_url.as_deref(), now),
        })
    }

    /// A payload about `record`, with nothing event-specific yet.
    fn run_payload(
        &self,
        event: &'static str,
        rule: String,
        job: &Job,
        record: &RunRecord,
        now: Timestamp,
    ) -> AlertPayload {
        AlertPayload::about_run(event, rule, job.name.as_str(), record, self.console_url.as_deref(), now)
    }

    /// How many alerts were suppressed so far, across all keys (for metrics
    /// and tests).
    pub fn suppressed_total(&self) -> u64 {
        self.limits.values().map(|(_, n)| n).sum()
    }

    /// Whether `key` (a run and the status it was alerted on; `running`
    /// for an overrun) is new, remembering it.
    fn first_sight(&mut self, key: (RunId, RunStatus)) -> bool {
        if !self.seen.insert(key) {
            return false;
        }
        self.seen_order.push_back(key);
        if self.seen_order.len() > MAX_RECENT_RUNS
            && let Some(oldest) = self.seen_order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        true
    }

    /// Adds the run to the job's window and returns, for each rule with a
    /// failure rate (in order), the facts if that rule's threshold is
    /// crossed, or zero runs if it is not.
    fn push_window(
        &mut self,
        job: &JobName,
        record: &RunRecord,
        now: Timestamp,
        widest_s: u64,
        rules: &[RuleView],
    ) -> Vec<RateFacts> {
        let window = self.windows.entry(job.clone()).or_default();
        window.push_back((now, record.status.is_failure()));
        let horizon = now - SignedDuration::from_secs(i64::try_from(widest_s).unwrap_or(i64::MAX / 2));
        while window.front().is_some_and(|(at, _)| *at < horizon) || window.len() > MAX_WINDOW_RUNS {
            window.pop_front();
        }
        rules
            .iter()
            .filter_map(|(_, _, rate, _)| *rate)
            .map(|rate| {
                let since = now - SignedDuration::from_secs(i64::try_from(rate.window_s).unwrap_or(i64::MAX / 2));
                let (runs, failed) = window
                    .iter()
                    .filter(|(at, _)| *at >= since)
                    .fold((0u32, 0u32), |(runs, failed), (_, f)| {
                        (runs + 1, failed + u32::from(*f))
                    });
                // Only a failing run can cross the threshold, so an alert is
                // raised by the failure that tips the rate over, not by the
                // successes that follow while the rate is still high.
                let crossed = record.status.is_failure()
                    && runs >= rate.min_runs
                    && f64::from(failed) >= rate.threshold * f64::from(runs);
                RateFacts {
                    failed,
                    runs: if crossed { runs } else { 0 },
                    window_s: rate.window_s,
                    threshold: rate.threshold,
                }
            })
            .collect()
    }

    /// Rate limiting: `Some(suppressed)` if an alert for this key may go
    /// out now, `None` (and one more suppressed) if one went out less than
    /// `min_interval` ago.
    fn admit(&mut self, job: &JobName, rule: &str, kind: &str, now: Timestamp) -> Option<u64> {
        let key = (job.clone(), rule.to_owned(), kind.to_owned());
        match self.limits.get_mut(&key) {
            Some((last, suppressed)) if now.duration_since(*last) < self.min_interval => {
                *suppressed += 1;
                None
            }
            Some((last, suppressed)) => {
                let count = *suppressed;
                *last = now;
                *suppressed = 0;
                Some(count)
            }
            None => {
                self.limits.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

/// Channel names sorted, each once.
fn sorted(channels: &[String]) -> Vec<String> {
    let mut channels = channels.to_vec();
    channels.sort();
    channels.dedup();
    channels
}

#[cfg(test)]
mod tests;
