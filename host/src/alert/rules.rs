//! Which run outcomes raise alerts: a job's own rule and the installation's
//! global rules, failure rates over a window, deduplication and rate
//! limiting. Pure: the current time is an argument, nothing is sent here.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

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

/// The JSON body of a webhook alert (and the facts of the email and chat alerts).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertPayload {
    /// Unique per alert; a receiver can drop redeliveries by it.
    pub id: String,
    /// `run` (a run ended with an alerting status) or `failure_rate`.
    pub event: &'static str,
    /// `job` (the job's own rule) or `global[N]` (the Nth global rule).
    pub rule: String,
    pub job: String,
    pub status: RunStatus,
    pub run_id: String,
    pub tick: Timestamp,
    pub trigger: String,
    pub attempt: u32,
    pub worker: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<RateFacts>,
    /// Alerts of the same kind for this job suppressed by rate limiting
    /// since the previous one was sent.
    pub suppressed: u64,
    /// A link to the run in the console, when the installation's console URL is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub sent_at: Timestamp,
}

/// What a failure-rate alert measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RateFacts {
    pub failed: u32,
    pub runs: u32,
    pub window_s: u64,
    pub threshold: f64,
}

impl AlertPayload {
    /// A one-line summary, for logs and email subjects.
    pub fn summary(&self) -> String {
        match &self.failure_rate {
            Some(rate) => format!(
                "job {}: {} of the last {} runs failed in {} s (threshold {:.0} %)",
                self.job,
                rate.failed,
                rate.runs,
                rate.window_s,
                rate.threshold * 100.0
            ),
            None => format!("job {}: run {} {}", self.job, self.run_id, self.status),
        }
    }
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
        if !record.status.is_terminal() || !self.first_sight(record) {
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
                    id: RunId::generate().to_string(),
                    event,
                    rule,
                    job: job.name.to_string(),
                    status: record.status,
                    run_id: record.run_id.to_string(),
                    tick: record.tick,
                    trigger: record.trigger.as_str().to_owned(),
                    attempt: record.attempt,
                    worker: record.worker.clone(),
                    error: record.error.clone(),
                    failure_rate: facts,
                    suppressed,
                    url: self
                        .console_url
                        .as_ref()
                        .map(|base| format!("{base}/#/runs/{}", record.run_id)),
                    sent_at: now,
                },
            });
        }
        alerts
    }

    /// How many alerts were suppressed so far, across all keys (for metrics
    /// and tests).
    pub fn suppressed_total(&self) -> u64 {
        self.limits.values().map(|(_, n)| n).sum()
    }

    fn first_sight(&mut self, record: &RunRecord) -> bool {
        let key = (record.run_id, record.status);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobAlerts, JobRecord};

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("timestamp")
    }

    fn job(alerts: Option<JobAlerts>) -> Job {
        let spec: crate::job::JobSpec = serde_json::from_value(serde_json::json!({
            "schedule": "@every 1s",
            "kind": {"shell": {"command": "true"}},
        }))
        .expect("spec");
        let mut spec = spec;
        spec.alerts = alerts;
        let record = JobRecord {
            spec,
            meta: crate::job::JobMeta {
                created_at: at(0),
                updated_at: at(0),
                active_since: at(0),
                written_by: crate::auth::Role::Admin,
            },
        };
        JobRecord::decode(
            JobName::new("backup").expect("name"),
            &serde_json::to_vec(&record).expect("json"),
            1,
        )
        .expect("job")
    }

    fn run(job: &Job, status: RunStatus) -> RunRecord {
        RunRecord::not_run(job, at(0), status, "w1", 7, "boom".into())
    }

    fn own(on: &[RunStatus], rate: Option<FailureRate>) -> Option<JobAlerts> {
        Some(JobAlerts {
            on: on.to_vec(),
            failure_rate: rate,
            channels: vec!["ops".into()],
        })
    }

    fn minutes(n: u64) -> std::time::Duration {
        std::time::Duration::from_secs(60 * n)
    }

    #[test]
    fn a_matching_status_raises_one_alert_per_run() {
        let job = job(own(&[RunStatus::Failed, RunStatus::Lost], None));
        let mut rules = AlertRules::new(Vec::new(), minutes(0), Some("https://cron.example/".into()));
        let failed = run(&job, RunStatus::Failed);
        let alerts = rules.observe(&job, &failed, at(1));
        assert_eq!(alerts.len(), 1);
        let alert = &alerts[0];
        assert_eq!(alert.channels, vec!["ops".to_owned()]);
        assert_eq!(alert.payload.event, "run");
        assert_eq!(alert.payload.rule, "job");
        assert_eq!(alert.payload.status, RunStatus::Failed);
        assert_eq!(alert.payload.error.as_deref(), Some("boom"));
        assert_eq!(
            alert.payload.url.as_deref(),
            Some(format!("https://cron.example/#/runs/{}", failed.run_id).as_str())
        );
        // The same record again (a replay) raises nothing.
        assert!(rules.observe(&job, &failed, at(2)).is_empty());
        // Statuses the rule does not name raise nothing.
        assert!(rules.observe(&job, &run(&job, RunStatus::Succeeded), at(3)).is_empty());
        assert!(rules.observe(&job, &run(&job, RunStatus::Killed), at(3)).is_empty());
    }

    #[test]
    fn a_running_record_never_alerts() {
        let job = job(own(&[RunStatus::Failed], None));
        let mut rules = AlertRules::new(Vec::new(), minutes(0), None);
        assert!(rules.observe(&job, &run(&job, RunStatus::Running), at(1)).is_empty());
    }

    #[test]
    fn repeats_within_the_interval_are_suppressed_and_counted() {
        let job = job(own(&[RunStatus::Failed], None));
        let mut rules = AlertRules::new(Vec::new(), minutes(5), None);
        assert_eq!(rules.observe(&job, &run(&job, RunStatus::Failed), at(0)).len(), 1);
        for second in 1..=3 {
            assert!(
                rules
                    .observe(&job, &run(&job, RunStatus::Failed), at(second))
                    .is_empty()
            );
        }
        assert_eq!(rules.suppressed_total(), 3);
        // Another status is another kind of alert.
        let lost = rules.observe(&job, &run(&job, RunStatus::Lost), at(4));
        assert!(lost.is_empty(), "lost is not in the rule");
        let next = rules.observe(&job, &run(&job, RunStatus::Failed), at(301));
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].payload.suppressed, 3);
    }

    #[test]
    fn global_rules_apply_to_every_job_and_merge_channels_per_rule() {
        let job = job(own(&[RunStatus::Missed], None));
        let global = vec![
            GlobalRule {
                on: vec![RunStatus::Missed, RunStatus::Lost],
                failure_rate: None,
                channels: vec!["pager".into(), "mail".into()],
            },
            GlobalRule {
                on: vec![RunStatus::Lost],
                failure_rate: None,
                channels: vec!["mail".into()],
            },
        ];
        let mut rules = AlertRules::new(global, minutes(0), None);
        let alerts = rules.observe(&job, &run(&job, RunStatus::Missed), at(1));
        let got: Vec<(&str, Vec<String>)> = alerts
            .iter()
            .map(|a| (a.payload.rule.as_str(), a.channels.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("global[0]", vec!["mail".to_owned(), "pager".to_owned()]),
                ("job", vec!["ops".to_owned()]),
            ]
        );
        let lost = rules.observe(&job, &run(&job, RunStatus::Lost), at(2));
        assert_eq!(lost.len(), 2, "both global rules name lost: {lost:?}");
    }

    #[test]
    fn a_failure_rate_alerts_when_the_threshold_is_crossed() {
        let rate = FailureRate {
            threshold: 0.5,
            window_s: 60,
            min_runs: 4,
        };
        let job = job(own(&[], Some(rate)));
        let mut rules = AlertRules::new(Vec::new(), minutes(10), None);
        let mut raised = Vec::new();
        // ok, fail, ok, fail: 2 of 4 at the fourth run.
        for (second, status) in [
            (0, RunStatus::Succeeded),
            (1, RunStatus::Failed),
            (2, RunStatus::Succeeded),
            (3, RunStatus::Failed),
        ] {
            raised.extend(rules.observe(&job, &run(&job, status), at(second)));
        }
        assert_eq!(raised.len(), 1, "{raised:?}");
        let facts = raised[0].payload.failure_rate.expect("facts");
        assert_eq!((facts.failed, facts.runs), (2, 4));
        assert_eq!(raised[0].payload.event, "failure_rate");
        assert!(raised[0].payload.summary().contains("2 of the last 4 runs failed"));
    }

    #[test]
    fn a_failure_rate_forgets_runs_outside_its_window_and_ignores_ticks_not_run() {
        let rate = FailureRate {
            threshold: 1.0,
            window_s: 60,
            min_runs: 2,
        };
        let job = job(own(&[], Some(rate)));
        let mut rules = AlertRules::new(Vec::new(), minutes(0), None);
        assert!(rules.observe(&job, &run(&job, RunStatus::Failed), at(0)).is_empty());
        // Skipped and missed ticks are not runs.
        assert!(rules.observe(&job, &run(&job, RunStatus::Skipped), at(10)).is_empty());
        assert!(rules.observe(&job, &run(&job, RunStatus::Missed), at(11)).is_empty());
        // The first failure has left the window: 1 of 1 is below min_runs.
        assert!(rules.observe(&job, &run(&job, RunStatus::Failed), at(100)).is_empty());
        let alerts = rules.observe(&job, &run(&job, RunStatus::Failed), at(101));
        assert_eq!(alerts.len(), 1);
        let facts = alerts[0].payload.failure_rate.expect("facts");
        assert_eq!((facts.failed, facts.runs), (2, 2));
    }

    #[test]
    fn jobs_without_rules_cost_nothing() {
        let job = job(None);
        let mut rules = AlertRules::new(Vec::new(), minutes(0), None);
        assert!(rules.observe(&job, &run(&job, RunStatus::Failed), at(0)).is_empty());
        assert!(rules.windows.is_empty());
    }
}
