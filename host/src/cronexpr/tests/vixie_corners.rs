//! Owns the hand-written tests for the corners the croniter fixture leaves out, asserting Vixie cron's (and this dialect's) behaviour.

use super::super::CronExpr;
use super::fires;

#[test]
fn star_step_in_a_day_field_means_and() {
    // Day-of-month `*/2` begins with `*`, so it is star-flagged and combines
    // with Monday by AND: odd days that are Mondays. (croniter would use OR.)
    assert_eq!(
        fires("0 0 */2 * 1", "UTC", "2026-01-01T00:00:00Z", 4),
        [
            "2026-01-05T00:00:00Z",
            "2026-01-19T00:00:00Z",
            "2026-02-09T00:00:00Z",
            "2026-02-23T00:00:00Z",
        ]
    );
    // Day-of-week `*/2` (Sunday, Tuesday, Thursday, Saturday) with the 1st.
    assert_eq!(
        fires("0 0 1 * */2", "UTC", "2026-01-01T00:00:00Z", 4),
        [
            "2026-02-01T00:00:00Z",
            "2026-03-01T00:00:00Z",
            "2026-08-01T00:00:00Z",
            "2026-09-01T00:00:00Z",
        ]
    );
    // Both star-flagged: AND as well.
    assert_eq!(
        fires("0 0 */10 * */3", "UTC", "2026-01-01T00:00:00Z", 2),
        ["2026-01-11T00:00:00Z", "2026-01-21T00:00:00Z"]
    );
}

#[test]
fn restricted_day_fields_mean_or() {
    assert_eq!(
        fires("0 0 1,15 * 1", "UTC", "2026-01-01T00:00:00Z", 4),
        [
            "2026-01-05T00:00:00Z",
            "2026-01-12T00:00:00Z",
            "2026-01-15T00:00:00Z",
            "2026-01-19T00:00:00Z",
        ]
    );
    // `1-31` does not begin with `*`, so it is not star-flagged: OR with
    // Monday matches every day.
    assert_eq!(
        fires("0 0 1-31 * 1", "UTC", "2026-01-01T00:00:00Z", 2),
        ["2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"]
    );
    // `?` is a star, so this is Mondays only.
    assert_eq!(
        fires("0 0 ? * 1", "UTC", "2026-01-01T00:00:00Z", 2),
        ["2026-01-05T00:00:00Z", "2026-01-12T00:00:00Z"]
    );
    assert_eq!(
        fires("0 0 29 2 ?", "UTC", "2026-01-01T00:00:00Z", 2),
        ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]
    );
}

#[test]
fn equal_ranges_are_single_values() {
    assert_eq!(
        fires("5-5 * * * *", "UTC", "2026-01-01T00:00:00Z", 2),
        ["2026-01-01T00:05:00Z", "2026-01-01T01:05:00Z"]
    );
    assert_eq!(
        fires("0 0 1 JAN-JAN *", "UTC", "2026-01-01T00:00:00Z", 2),
        ["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"]
    );
    // 2026-01-04 is a Sunday.
    assert_eq!(
        fires("0 0 * * SUN-SUN", "UTC", "2026-01-01T00:00:00Z", 1),
        ["2026-01-04T00:00:00Z"]
    );
    assert_eq!(
        fires("0 0 * * 7-7", "UTC", "2026-01-01T00:00:00Z", 1),
        ["2026-01-04T00:00:00Z"]
    );
}

#[test]
fn wrapping_ranges_are_rejected() {
    let cases = [
        ("0 22-2 * * *", "hour field \"22-2\": range start 22 is after end 2"),
        (
            "0 0 * NOV-FEB *",
            "month field \"NOV-FEB\": range start 11 is after end 2",
        ),
        (
            "0 0 * * SAT-MON",
            "day-of-week field \"SAT-MON\": range start 6 is after end 1",
        ),
        ("0 0 * * 7-1", "day-of-week field \"7-1\": range start 7 is after end 1"),
    ];
    for (text, expected) in cases {
        assert_eq!(
            CronExpr::parse(text).map(|_| ()).map_err(|e| e.to_string()),
            Err(expected.to_string())
        );
    }
}

#[test]
fn weekday_start_with_step_never_wraps() {
    // 2026-01-04 is a Sunday; `7/2` is Sunday alone.
    assert_eq!(
        fires("0 0 * * 7/2", "UTC", "2026-01-01T00:00:00Z", 2),
        ["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"]
    );
    // `1/2` is Monday, Wednesday and Friday.
    assert_eq!(
        fires("0 0 * * 1/2", "UTC", "2026-01-04T00:00:00Z", 4),
        [
            "2026-01-05T00:00:00Z",
            "2026-01-07T00:00:00Z",
            "2026-01-09T00:00:00Z",
            "2026-01-12T00:00:00Z",
        ]
    );
}

#[test]
fn years_up_to_2199() {
    assert_eq!(
        fires("0 0 0 1 1 * 2150", "UTC", "2026-01-01T00:00:00Z", 2),
        ["2150-01-01T00:00:00Z"]
    );
    assert_eq!(
        fires("0 0 0 29 2 * 2196", "UTC", "2026-01-01T00:00:00Z", 2),
        ["2196-02-29T00:00:00Z"]
    );
    assert_eq!(
        fires("0 0 0 29 2 * 2196", "America/New_York", "2026-01-01T00:00:00Z", 2),
        ["2196-02-29T05:00:00Z"]
    );
    assert_eq!(
        fires("0 0 0 1 1 * */50", "UTC", "1960-01-01T00:00:00Z", 6),
        [
            "1970-01-01T00:00:00Z",
            "2020-01-01T00:00:00Z",
            "2070-01-01T00:00:00Z",
            "2120-01-01T00:00:00Z",
            "2170-01-01T00:00:00Z",
        ]
    );
    assert_eq!(
        fires("0 0 0 1 1 * 2100/25", "UTC", "2026-01-01T00:00:00Z", 6),
        [
            "2100-01-01T00:00:00Z",
            "2125-01-01T00:00:00Z",
            "2150-01-01T00:00:00Z",
            "2175-01-01T00:00:00Z",
        ]
    );
    // 2100 is not a leap year, so Feb 29 skips from 2096 to 2104.
    assert_eq!(
        fires("0 0 29 2 *", "UTC", "2096-03-01T00:00:00Z", 1),
        ["2104-02-29T00:00:00Z"]
    );
}

#[test]
fn nothing_fires_after_2199_or_on_impossible_dates() {
    let empty: Vec<String> = Vec::new();
    assert_eq!(fires("0 0 1 1 *", "UTC", "2199-06-01T00:00:00Z", 1), empty);
    assert_eq!(
        fires("59 23 31 12 *", "UTC", "2199-06-01T00:00:00Z", 2),
        ["2199-12-31T23:59:00Z"]
    );
    // Local year 2199 in Tokyo ends before UTC's.
    assert_eq!(fires("0 12 31 12 *", "Asia/Tokyo", "2199-12-31T04:00:00Z", 1), empty);
    for never in [
        "0 0 30 2 *",
        "0 0 31 4,6,9,11 *",
        "0 0 0 30 2 * *",
        "0 0 0 29 2 * 2197-2199",
        "0 0 0 31 2 * 2030",
    ] {
        for tz in ["UTC", "America/New_York", "Australia/Lord_Howe"] {
            assert_eq!(fires(never, tz, "2026-01-01T00:00:00Z", 1), empty, "{never} in {tz}");
        }
    }
    // The extremes of jiff's range are handled without overflow.
    let expr = CronExpr::parse("* * * * * *").unwrap_or_else(|e| panic!("{e}"));
    let utc = jiff::tz::TimeZone::UTC;
    assert_eq!(expr.next_after(jiff::Timestamp::MAX, &utc), None);
    assert!(expr.next_after(jiff::Timestamp::MIN, &utc).is_some());
    let every = CronExpr::parse("@every 3660d").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(every.next_after(jiff::Timestamp::MAX, &utc), None);
    assert!(every.next_after(jiff::Timestamp::MIN, &utc).is_some());
}
