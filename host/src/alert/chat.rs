//! The short human text of an alert in a chat message (Slack, Feishu): a
//! headline, a few lines of facts, and the console link when one is
//! configured. Pure: the formats are built from it, nothing is sent here.

use super::AlertPayload;
use super::payload::seconds;
use crate::run::RunStatus;

/// An alert as a person reads it in a chat.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ChatText {
    /// `sandcron: job nightly failed`: what happened, to which job.
    pub(super) headline: String,
    /// The run, the error, the suppressed count: one fact per line.
    pub(super) lines: Vec<String>,
    /// The run in the console (`[alerts] console_url`).
    pub(super) link: Option<String>,
}

/// Errors longer than this are cut: a chat message points to the run, it
/// does not replace its log.
const MAX_ERROR_CHARS: usize = 300;

impl ChatText {
    pub(super) fn new(alert: &AlertPayload) -> ChatText {
        let headline = match (&alert.failure_rate, &alert.overrun, &alert.no_success, &alert.run) {
            (Some(rate), ..) => format!(
                "sandcron: job {} is failing: {} of the last {} runs failed in {} s (threshold {:.0} %)",
                alert.job,
                rate.failed,
                rate.runs,
                rate.window_s,
                rate.threshold * 100.0
            ),
            (None, Some(overrun), ..) => format!(
                "sandcron: job {} is still running after {} (expected at most {})",
                alert.job,
                seconds(overrun.running_s),
                seconds(overrun.expected_s)
            ),
            (None, None, Some(silence), _) => format!(
                "sandcron: job {} has not succeeded within {}",
                alert.job,
                seconds(silence.period_s)
            ),
            (None, None, None, Some(run)) => format!("sandcron: job {} {}", alert.job, what_happened(run.status)),
            (None, None, None, None) => format!("sandcron: job {}: {}", alert.job, alert.event),
        };
        let mut lines = Vec::new();
        if let Some(run) = &alert.run {
            lines.push(format!(
                "run {} ({}) · attempt {} · {} · worker {}",
                run.run_id, run.status, run.attempt, run.trigger, run.worker
            ));
        }
        if let Some(overrun) = &alert.overrun {
            lines.push(format!("started {} · not stopped", overrun.started_at));
        }
        if let Some(silence) = &alert.no_success {
            lines.push(match silence.last_success {
                Some(at) => format!("last success: {at}"),
                None => "last success: never (as far as the run history goes)".to_owned(),
            });
            if silence.periods > 1 {
                lines.push(format!(
                    "{} periods without a success since {}",
                    silence.periods, silence.since
                ));
            }
            lines.push(format!("why: {}", cut(silence.reason.trim(), MAX_ERROR_CHARS)));
        }
        if let Some(error) = &alert.error {
            lines.push(format!("error: {}", cut(error.trim(), MAX_ERROR_CHARS)));
        }
        if alert.suppressed > 0 {
            lines.push(format!(
                "{} similar alerts were suppressed since the last one",
                alert.suppressed
            ));
        }
        ChatText {
            headline,
            lines,
            link: alert.url.clone(),
        }
    }

    /// As plain text: the headline, the facts, then the link, one per line.
    pub(super) fn plain(&self) -> String {
        let mut text = self.headline.clone();
        for line in self.lines.iter().chain(&self.link) {
            text.push('\n');
            text.push_str(line);
        }
        text
    }
}

/// What a run that ended with `status` did, after "job NAME".
fn what_happened(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Failed => "failed",
        RunStatus::TimedOut => "timed out",
        RunStatus::Killed => "was killed",
        RunStatus::OutOfFuel => "ran out of fuel",
        RunStatus::OutOfMemory => "ran out of memory",
        RunStatus::Skipped => "skipped a tick (its previous run was still running)",
        RunStatus::Missed => "missed a tick",
        RunStatus::Lost => "lost a run (its worker disappeared)",
        // Not alertable, but a rule's payload can still say so plainly.
        RunStatus::Succeeded => "succeeded",
        RunStatus::Running => "is running",
    }
}

/// `text` cut to at most `max` characters, with `…` when it was longer.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::alert::{NoSuccessFacts, OverrunFacts, RateFacts, RunFacts};

    /// A failed run's alert, with a console link and a long error.
    pub(in crate::alert) fn failed_alert() -> AlertPayload {
        let at = jiff::Timestamp::from_second(1_800_000_000).expect("timestamp");
        AlertPayload {
            id: "01JALERT".into(),
            event: "run",
            rule: "job".into(),
            job: "nightly".into(),
            run: Some(RunFacts {
                status: RunStatus::Failed,
                run_id: "01JRUN".into(),
                tick: at,
                trigger: "schedule".into(),
                attempt: 2,
                worker: "w1".into(),
            }),
            error: Some("exit status 2: <disk> & more".into()),
            failure_rate: None,
            overrun: None,
            no_success: None,
            suppressed: 3,
            url: Some("https://cron.example.com/#/runs/01JRUN".into()),
            sent_at: at,
        }
    }

    #[test]
    fn a_failed_run_reads_as_one_headline_and_its_facts() {
        let text = ChatText::new(&failed_alert());
        assert_eq!(text.headline, "sandcron: job nightly failed");
        assert_eq!(
            text.plain(),
            "sandcron: job nightly failed\n\
             run 01JRUN (failed) · attempt 2 · schedule · worker w1\n\
             error: exit status 2: <disk> & more\n\
             3 similar alerts were suppressed since the last one\n\
             https://cron.example.com/#/runs/01JRUN"
        );
    }

    /// A dead-man alert: no run, the job's link.
    pub(in crate::alert) fn no_success_alert() -> AlertPayload {
        let at = jiff::Timestamp::from_second(1_800_000_000).expect("timestamp");
        AlertPayload {
            id: "01JALERT".into(),
            event: "no_success",
            run: None,
            error: None,
            suppressed: 0,
            no_success: Some(NoSuccessFacts {
                period_s: 600,
                last_success: None,
                since: at,
                periods: 3,
                reason: "no live worker can run it: no live worker matches the selector <zone>=eu".into(),
            }),
            url: Some("https://cron.example.com/#/jobs/nightly".into()),
            ..failed_alert()
        }
    }

    #[test]
    fn an_overrun_says_how_long_the_run_has_been_running() {
        let mut alert = failed_alert();
        alert.event = "overrun";
        alert.error = None;
        alert.suppressed = 0;
        if let Some(run) = alert.run.as_mut() {
            run.status = RunStatus::Running;
        }
        alert.overrun = Some(OverrunFacts {
            expected_s: 600,
            running_s: 601,
            started_at: jiff::Timestamp::from_second(1_800_000_000).expect("timestamp"),
        });
        assert_eq!(
            ChatText::new(&alert).plain(),
            "sandcron: job nightly is still running after 10 min 1 s (expected at most 10 min)\n\
             run 01JRUN (running) · attempt 2 · schedule · worker w1\n\
             started 2027-01-15T08:00:00Z · not stopped\n\
             https://cron.example.com/#/runs/01JRUN"
        );
    }

    #[test]
    fn a_dead_man_alert_says_when_the_job_last_succeeded_and_why() {
        assert_eq!(
            ChatText::new(&no_success_alert()).plain(),
            "sandcron: job nightly has not succeeded within 10 min\n\
             last success: never (as far as the run history goes)\n\
             3 periods without a success since 2027-01-15T08:00:00Z\n\
             why: no live worker can run it: no live worker matches the selector <zone>=eu\n\
             https://cron.example.com/#/jobs/nightly"
        );
    }

    #[test]
    fn a_failure_rate_says_how_many_failed_and_long_errors_are_cut() {
        let mut alert = failed_alert();
        alert.failure_rate = Some(RateFacts {
            failed: 2,
            runs: 4,
            window_s: 600,
            threshold: 0.5,
        });
        alert.error = Some("é".repeat(1000));
        alert.suppressed = 0;
        alert.url = None;
        let text = ChatText::new(&alert);
        assert_eq!(
            text.headline,
            "sandcron: job nightly is failing: 2 of the last 4 runs failed in 600 s (threshold 50 %)"
        );
        assert_eq!(text.lines.len(), 2, "{text:?}");
        assert_eq!(text.lines[1].chars().count(), "error: ".len() + MAX_ERROR_CHARS + 1);
        assert!(text.lines[1].ends_with('…'));
        assert_eq!(text.link, None);
    }
}
