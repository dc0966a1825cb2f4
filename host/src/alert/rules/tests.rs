//! The alert rules' tests: run alerts, rate limiting, global rules,
//! failure rates, overrun warnings and dead-man alerts.

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
    spec.alerts = alerts.map(Box::new);
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
        no_success_within_s: None,
        expected_duration_s: None,
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
    assert_eq!(
        alert.payload.run.as_ref().map(|run| run.status),
        Some(RunStatus::Failed)
    );
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
fn a_run_alert_keeps_its_json_fields_at_the_top_level() {
    let job = job(own(&[RunStatus::Failed], None));
    let mut rules = AlertRules::new(Vec::new(), minutes(0), None);
    let alerts = rules.observe(&job, &run(&job, RunStatus::Failed), at(1));
    let json = serde_json::to_value(&alerts[0].payload).expect("json");
    let fields: Vec<&str> = json.as_object().expect("object").keys().map(String::as_str).collect();
    assert_eq!(
        fields,
        [
            "attempt",
            "error",
            "event",
            "id",
            "job",
            "rule",
            "run_id",
            "sent_at",
            "status",
            "suppressed",
            "tick",
            "trigger",
            "worker"
        ]
    );
    assert_eq!(json["status"], "failed");
    assert_eq!(json["worker"], "w1");
}

fn with_overrun(expected_s: u64) -> Job {
    let mut alerts = own(&[], None).expect("rule");
    alerts.expected_duration_s = Some(expected_s);
    job(Some(alerts))
}

#[test]
fn an_overrun_warns_once_per_run_and_is_rate_limited() {
    let job = with_overrun(60);
    let mut rules = AlertRules::new(Vec::new(), minutes(5), Some("https://cron.example".into()));
    let running = run(&job, RunStatus::Running);
    assert!(rules.overrun(&job, &running, at(0), at(58)).is_none(), "not yet");
    let alert = rules.overrun(&job, &running, at(0), at(61)).expect("overran");
    assert_eq!(alert.channels, vec!["ops".to_owned()]);
    assert_eq!(alert.payload.event, "overrun");
    assert_eq!(
        alert.payload.overrun,
        Some(OverrunFacts {
            expected_s: 60,
            running_s: 61,
            started_at: at(0)
        })
    );
    let facts = alert.payload.run.as_ref().expect("the run");
    assert_eq!(
        (facts.status, facts.run_id.clone()),
        (RunStatus::Running, running.run_id.to_string())
    );
    assert_eq!(
        alert.payload.url.as_deref(),
        Some(format!("https://cron.example/#/runs/{}", running.run_id).as_str())
    );
    assert!(
        alert
            .payload
            .summary()
            .contains("is still running after 1 min 1 s (expected at most 1 min)")
    );
    let json = serde_json::to_value(&alert.payload).expect("json");
    assert_eq!(json["status"], "running");
    assert_eq!(json["overrun"]["expected_s"], 60);
    // The same run never warns twice; another run within the interval
    // is suppressed, and counted in the next one.
    assert!(rules.overrun(&job, &running, at(0), at(120)).is_none());
    let second = run(&job, RunStatus::Running);
    assert!(rules.overrun(&job, &second, at(100), at(170)).is_none());
    let third = run(&job, RunStatus::Running);
    let later = rules
        .overrun(&job, &third, at(300), at(400))
        .expect("after the interval");
    assert_eq!(later.payload.suppressed, 1);
    // A failed run of the job is its own kind of alert, not held back.
    let mut failing = with_overrun(60);
    if let Some(alerts) = failing.spec.alerts.as_mut() {
        alerts.on = vec![RunStatus::Failed];
    }
    assert_eq!(
        rules
            .observe(&failing, &run(&failing, RunStatus::Failed), at(401))
            .len(),
        1
    );
}

#[test]
fn jobs_without_an_expected_duration_never_overrun() {
    let job = job(own(&[RunStatus::Failed], None));
    let mut rules = AlertRules::new(Vec::new(), minutes(0), None);
    assert!(
        rules
            .overrun(&job, &run(&job, RunStatus::Running), at(0), at(100_000))
            .is_none()
    );
    assert!(rules.seen.is_empty());
}

#[test]
fn a_dead_man_alert_names_the_job_period_and_reason_and_carries_no_run() {
    let mut alerts = own(&[], None).expect("rule");
    alerts.no_success_within_s = Some(3600);
    alerts.channels = vec!["pager".into(), "ops".into(), "pager".into()];
    let job = job(Some(alerts));
    let rules = AlertRules::new(Vec::new(), minutes(5), Some("https://cron.example/".into()));
    let facts = NoSuccessFacts {
        period_s: 3600,
        last_success: None,
        since: at(0),
        periods: 2,
        reason: "no live worker can run it: no live workers".into(),
    };
    let alert = rules.no_success(&job, facts.clone(), at(7300)).expect("alert");
    assert_eq!(alert.channels, vec!["ops".to_owned(), "pager".to_owned()]);
    assert_eq!(alert.payload.event, "no_success");
    assert_eq!(alert.payload.run, None);
    assert_eq!(alert.payload.url.as_deref(), Some("https://cron.example/#/jobs/backup"));
    assert_eq!(alert.payload.summary(), "job backup: no successful run within 1 h");
    let json = serde_json::to_value(&alert.payload).expect("json");
    assert!(json.get("run_id").is_none() && json.get("status").is_none(), "{json}");
    assert_eq!(json["no_success"]["period_s"], 3600);
    assert_eq!(json["no_success"]["last_success"], serde_json::Value::Null);
    assert_eq!(
        json["no_success"]["reason"],
        "no live worker can run it: no live workers"
    );
    // Not rate limited: the masters send it at most once per period.
    assert!(rules.no_success(&job, facts.clone(), at(7301)).is_some());
    // A job whose rule has no period raises none.
    let plain = self::job(own(&[RunStatus::Failed], None));
    assert!(rules.no_success(&plain, facts, at(7300)).is_none());
}

#[test]
fn jobs_without_rules_cost_nothing() {
    let job = job(None);
    let mut rules = AlertRules::new(Vec::new(), minutes(0), None);
    assert!(rules.observe(&job, &run(&job, RunStatus::Failed), at(0)).is_empty());
    assert!(rules.windows.is_empty());
}
