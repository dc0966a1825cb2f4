//! What an alert says: the JSON body of a webhook alert, whose facts the
//! email and chat formats put in words — the run it is about, what a
//! failure rate measured, how long an overrun run has been running, why a
//! job has gone without a success — and the one-line summary.

use jiff::Timestamp;
use serde::Serialize;

use crate::ids::RunId;
use crate::run::{RunRecord, RunStatus};

/// The JSON body of a webhook alert (and the facts of the email and chat alerts).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertPayload {
    /// Unique per alert; a receiver can drop redeliveries by it.
    pub id: String,
    /// `run` (a run ended with an alerting status), `failure_rate`,
    /// `overrun` (a run is still running past its expected duration) or
    /// `no_success` (the job has not succeeded within its period).
    pub event: &'static str,
    /// `job` (the job's own rule) or `global[N]` (the Nth global rule).
    pub rule: String,
    pub job: String,
    /// The run the alert is about: every event but `no_success` has one.
    /// Its fields sit at the top level of the JSON (`status`, `run_id`, …).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<RateFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overrun: Option<OverrunFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_success: Option<NoSuccessFacts>,
    /// Alerts of the same kind for this job suppressed by rate limiting
    /// since the previous one was sent.
    pub suppressed: u64,
    /// A link to the run (or, for `no_success`, the job) in the console,
    /// when the installation's console URL is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub sent_at: Timestamp,
}

/// The run an alert is about.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunFacts {
    pub status: RunStatus,
    pub run_id: String,
    pub tick: Timestamp,
    pub trigger: String,
    pub attempt: u32,
    pub worker: String,
}

impl RunFacts {
    fn of(record: &RunRecord) -> RunFacts {
        RunFacts {
            status: record.status,
            run_id: record.run_id.to_string(),
            tick: record.tick,
            trigger: record.trigger.as_str().to_owned(),
            attempt: record.attempt,
            worker: record.worker.clone(),
        }
    }
}

/// What a failure-rate alert measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RateFacts {
    pub failed: u32,
    pub runs: u32,
    pub window_s: u64,
    pub threshold: f64,
}

/// What an overrun warning saw: the run started at `started_at` and was
/// still running `running_s` seconds later, past `expected_s`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OverrunFacts {
    pub expected_s: u64,
    pub running_s: u64,
    pub started_at: Timestamp,
}

/// What a dead-man alert found: no run of the job succeeded in the
/// `periods` whole periods of `period_s` since `since`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoSuccessFacts {
    pub period_s: u64,
    /// When a run of the job last succeeded (its end), as far as the run
    /// history goes; absent when it never did.
    pub last_success: Option<Timestamp>,
    /// Where the count starts: the last success, or when the job (or its
    /// rule) became active, whichever is later.
    pub since: Timestamp,
    /// Whole periods since `since` (1 for the first alert; a later alert of
    /// the same silence has a higher number).
    pub periods: u64,
    /// Why the job may not be running, in words ("no live worker can run
    /// it: no live workers", "its last run … failed: …").
    pub reason: String,
}

impl AlertPayload {
    /// A payload about `record` (a run of `job`), with nothing
    /// event-specific yet; linking to the run when the console's address
    /// (`console`, without a trailing slash) is known.
    pub(super) fn about_run(
        event: &'static str,
        rule: String,
        job: &str,
        record: &RunRecord,
        console: Option<&str>,
        now: Timestamp,
    ) -> AlertPayload {
        AlertPayload {
            id: RunId::generate().to_string(),
            event,
            rule,
            job: job.to_owned(),
            run: Some(RunFacts::of(record)),
            error: None,
            failure_rate: None,
            overrun: None,
            no_success: None,
            suppressed: 0,
            url: console.map(|base| format!("{base}/#/runs/{}", record.run_id)),
            sent_at: now,
        }
    }

    /// The dead-man alert of `job` (the job's own rule), linking to the job.
    pub(super) fn no_success(job: &str, facts: NoSuccessFacts, console: Option<&str>, now: Timestamp) -> AlertPayload {
        AlertPayload {
            id: RunId::generate().to_string(),
            event: "no_success",
            rule: "job".to_owned(),
            job: job.to_owned(),
            run: None,
            error: None,
            failure_rate: None,
            overrun: None,
            no_success: Some(facts),
            suppressed: 0,
            url: console.map(|base| format!("{base}/#/jobs/{job}")),
            sent_at: now,
        }
    }

    /// A one-line summary, for logs and email subjects.
    pub fn summary(&self) -> String {
        if let Some(rate) = &self.failure_rate {
            return format!(
                "job {}: {} of the last {} runs failed in {} s (threshold {:.0} %)",
                self.job,
                rate.failed,
                rate.runs,
                rate.window_s,
                rate.threshold * 100.0
            );
        }
        if let Some(overrun) = &self.overrun {
            return format!(
                "job {}: run {} is still running after {} (expected at most {})",
                self.job,
                self.run.as_ref().map_or("?", |run| run.run_id.as_str()),
                seconds(overrun.running_s),
                seconds(overrun.expected_s)
            );
        }
        if let Some(silence) = &self.no_success {
            return format!(
                "job {}: no successful run within {}",
                self.job,
                seconds(silence.period_s)
            );
        }
        match &self.run {
            Some(run) => format!("job {}: run {} {}", self.job, run.run_id, run.status),
            None => format!("job {}: {}", self.job, self.event),
        }
    }
}

/// A number of seconds as people say it: `45 s`, `10 min`, `2 h`, `3 d`,
/// or mixed (`1 h 30 min`) down to the second.
pub(crate) fn seconds(total: u64) -> String {
    if total < 60 {
        return format!("{total} s");
    }
    let mut parts = Vec::new();
    let mut left = total;
    for (size, unit) in [(86_400, "d"), (3600, "h"), (60, "min"), (1, "s")] {
        if left >= size {
            parts.push(format!("{} {unit}", left / size));
            left %= size;
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_read_as_people_say_them() {
        assert_eq!(seconds(10), "10 s");
        assert_eq!(seconds(60), "1 min");
        assert_eq!(seconds(90), "1 min 30 s");
        assert_eq!(seconds(3600), "1 h");
        assert_eq!(seconds(86_400 + 1800), "1 d 30 min");
    }
}
