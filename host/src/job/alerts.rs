//! A job's alert rule (`alerts`), checked: channels, statuses, a failure
//! rate, a dead-man period (`no_success_within_s`) and an expected
//! duration (`expected_duration_s`); and the failure-rate check the global
//! rules share.

use super::validate::{check_label, check_range, limits};
use super::{FailureRate, JobAlerts, JobError, JobSpec};

/// Checks `alerts`, the rule of `spec`.
pub(super) fn check(alerts: &JobAlerts, spec: &JobSpec) -> Result<(), JobError> {
    if alerts.channels.is_empty() {
        return Err(JobError::new("alerts.channels", "name at least one channel"));
    }
    if alerts.channels.len() > limits::MAX_ALERT_CHANNELS {
        return Err(JobError::new(
            "alerts.channels",
            format!("at most {} channels are allowed", limits::MAX_ALERT_CHANNELS),
        ));
    }
    for (index, channel) in alerts.channels.iter().enumerate() {
        check_label(&format!("alerts.channels[{index}]"), channel)?;
    }
    for (index, status) in alerts.on.iter().enumerate() {
        if !status.is_alertable() {
            return Err(JobError::new(
                format!("alerts.on[{index}]"),
                format!(
                    "{status} is not an alertable status; use failed, timed_out, killed, out_of_fuel, out_of_memory, skipped, missed or lost"
                ),
            ));
        }
    }
    if alerts.on.is_empty()
        && alerts.failure_rate.is_none()
        && alerts.no_success_within_s.is_none()
        && alerts.expected_duration_s.is_none()
    {
        return Err(JobError::new(
            "alerts.on",
            "name the statuses to alert on, or set a failure_rate, no_success_within_s or expected_duration_s",
        ));
    }
    if let Some(rate) = &alerts.failure_rate {
        check_failure_rate("alerts.failure_rate", rate)?;
    }
    if let Some(period) = alerts.no_success_within_s {
        check_seconds(
            "alerts.no_success_within_s",
            period,
            limits::MIN_NO_SUCCESS_WITHIN_S,
            limits::MAX_NO_SUCCESS_WITHIN_S,
            "the longest a job may go without a successful run",
        )?;
    }
    if let Some(expected) = alerts.expected_duration_s {
        check_seconds(
            "alerts.expected_duration_s",
            expected,
            1,
            limits::MAX_TIMEOUT_S,
            "how long a run may take before an overrun warning",
        )?;
        // An async run goes on waiting for its report after its
        // call ends; any other run ends by its timeout.
        let timeout = spec.kind.timeout_s();
        if spec.completion.is_sync() && expected >= timeout {
            return Err(JobError::new(
                "alerts.expected_duration_s",
                format!(
                    "must be below the run's timeout_s ({timeout} s): a run is stopped at its timeout, \
                     so it could never overrun {expected} s"
                ),
            ));
        }
    }
    Ok(())
}

/// Checks a failure-rate rule (a job's or a global one).
pub fn check_failure_rate(field: &str, rate: &FailureRate) -> Result<(), JobError> {
    if !(rate.threshold > 0.0 && rate.threshold <= 1.0) {
        return Err(JobError::new(
            format!("{field}.threshold"),
            format!("must be above 0 and at most 1, got {}", rate.threshold),
        ));
    }
    check_range(&format!("{field}.window_s"), rate.window_s, 10, 7 * 24 * 3600)?;
    check_range(&format!("{field}.min_runs"), u64::from(rate.min_runs), 1, 10_000)?;
    Ok(())
}

/// A number of seconds within `min..=max`; the error says what the field
/// is and gives the bounds in readable units.
fn check_seconds(field: &str, value: u64, min: u64, max: u64, what: &str) -> Result<(), JobError> {
    if value < min || value > max {
        return Err(JobError::new(
            field,
            format!(
                "{what}, in seconds: must be between {min} ({}) and {max} ({}), got {value}",
                readable_seconds(min),
                readable_seconds(max)
            ),
        ));
    }
    Ok(())
}

/// `86400` as `1 day`, `600` as `10 minutes`: the largest unit that
/// divides it.
fn readable_seconds(seconds: u64) -> String {
    let units = [
        (365 * 86_400, "year"),
        (86_400, "day"),
        (3600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    let (size, name) = units
        .into_iter()
        .find(|(size, _)| seconds >= *size && seconds.is_multiple_of(*size))
        .unwrap_or((1, "second"));
    let count = seconds / size;
    format!("{count} {name}{}", if count == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;

    fn now() -> Timestamp {
        "2026-11-22T00:00:00Z".parse().expect("timestamp")
    }

    /// A shell job (timeout 60 s) with `alerts`, validated.
    fn validate(alerts: serde_json::Value) -> Result<(), JobError> {
        let spec: JobSpec = serde_json::from_value(serde_json::json!({
            "schedule": "@hourly",
            "kind": {"shell": {"command": "true", "timeout_s": 60}},
            "alerts": alerts,
        }))
        .expect("parses");
        spec.validate(now()).map(|_| ())
    }

    #[test]
    fn a_dead_man_period_alone_is_a_rule_within_ten_seconds_and_a_year() {
        validate(serde_json::json!({"no_success_within_s": 10, "channels": ["ops"]})).expect("10 s");
        validate(serde_json::json!({"no_success_within_s": 365 * 86_400, "channels": ["ops"]})).expect("a year");
        let short = validate(serde_json::json!({"no_success_within_s": 9, "channels": ["ops"]})).expect_err("9 s");
        assert_eq!(short.field, "alerts.no_success_within_s");
        assert!(
            short
                .message
                .contains("between 10 (10 seconds) and 31536000 (1 year), got 9"),
            "{short}"
        );
        let long = validate(serde_json::json!({"no_success_within_s": 365 * 86_400 + 1, "channels": ["ops"]}))
            .expect_err("over a year");
        assert_eq!(long.field, "alerts.no_success_within_s");
    }

    #[test]
    fn an_expected_duration_must_be_below_the_timeout_of_a_sync_run() {
        validate(serde_json::json!({"expected_duration_s": 59, "channels": ["ops"]})).expect("below the timeout");
        let err = validate(serde_json::json!({"expected_duration_s": 60, "channels": ["ops"]})).expect_err("at it");
        assert_eq!(err.field, "alerts.expected_duration_s");
        assert!(err.message.contains("below the run's timeout_s (60 s)"), "{err}");
        let zero = validate(serde_json::json!({"expected_duration_s": 0, "channels": ["ops"]})).expect_err("zero");
        assert!(zero.message.contains("between 1 (1 second)"), "{zero}");
        // An async run waits for its report past its call's timeout.
        let spec: JobSpec = serde_json::from_value(serde_json::json!({
            "schedule": "@hourly",
            "kind": {"http": {"url": "https://example.com/start", "timeout_s": 5}},
            "completion": "async",
            "alerts": {"expected_duration_s": 600, "channels": ["ops"]},
        }))
        .expect("parses");
        spec.validate(now()).expect("async");
    }

    #[test]
    fn a_rule_still_needs_something_to_alert_on() {
        let err = validate(serde_json::json!({"channels": ["ops"]})).expect_err("nothing");
        assert_eq!(err.field, "alerts.on");
        assert!(err.message.contains("no_success_within_s"), "{err}");
    }

    #[test]
    fn seconds_read_in_the_largest_whole_unit() {
        assert_eq!(readable_seconds(1), "1 second");
        assert_eq!(readable_seconds(10), "10 seconds");
        assert_eq!(readable_seconds(600), "10 minutes");
        assert_eq!(readable_seconds(90), "90 seconds");
        assert_eq!(readable_seconds(7 * 86_400), "7 days");
        assert_eq!(readable_seconds(365 * 86_400), "1 year");
    }
}
