//! Owns the hand-checked daylight-saving tests: gaps and folds in New York, London and Lord Howe, with every expected instant written out.
//!
//! Transitions used (checked against the bundled tzdb):
//! * America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT at 07:00Z, and
//!   2026-11-01 02:00 EDT -> 01:00 EST at 06:00Z.
//! * Europe/London: 2026-03-29 01:00 GMT -> 02:00 BST at 01:00Z, and
//!   2026-10-25 02:00 BST -> 01:00 GMT at 01:00Z.
//! * Australia/Lord_Howe: 2026-04-05 02:00 (+11) -> 01:30 (+10:30) at
//!   2026-04-04T15:00Z, and 2026-10-04 02:00 (+10:30) -> 02:30 (+11) at
//!   2026-10-03T15:30Z.

use jiff::SignedDuration;

use super::super::CronExpr;
use super::{fires, ts, zone};

const NY: &str = "America/New_York";
const LONDON: &str = "Europe/London";
const LORD_HOWE: &str = "Australia/Lord_Howe";

#[test]
fn transitions_are_where_the_tests_expect_them() {
    let expected = [
        (NY, "2026-01-01T00:00:00Z", "2026-03-08T07:00:00Z", -5 * 3600, -4 * 3600),
        (NY, "2026-03-09T00:00:00Z", "2026-11-01T06:00:00Z", -4 * 3600, -5 * 3600),
        (LONDON, "2026-01-01T00:00:00Z", "2026-03-29T01:00:00Z", 0, 3600),
        (LONDON, "2026-03-30T00:00:00Z", "2026-10-25T01:00:00Z", 3600, 0),
        (
            LORD_HOWE,
            "2026-01-01T00:00:00Z",
            "2026-04-04T15:00:00Z",
            39_600,
            37_800,
        ),
        (
            LORD_HOWE,
            "2026-04-05T00:00:00Z",
            "2026-10-03T15:30:00Z",
            37_800,
            39_600,
        ),
    ];
    for (name, from, at, before, after) in expected {
        let tz = zone(name);
        let transition = tz.following(ts(from)).next();
        let Some(transition) = transition else {
            panic!("{name}: no transition after {from}");
        };
        assert_eq!(transition.timestamp().to_string(), at, "{name}");
        assert_eq!(transition.offset().seconds(), after, "{name}");
        let just_before = transition.timestamp() - SignedDuration::from_secs(1);
        assert_eq!(tz.to_offset(just_before).seconds(), before, "{name}");
    }
}

#[test]
fn new_york_fixed_time_in_the_gap_fires_at_the_transition() {
    // 02:30 does not exist on 2026-03-08; the job runs at 03:00 EDT.
    assert_eq!(
        fires("30 2 * * *", NY, "2026-03-07T00:00:00Z", 3),
        ["2026-03-07T07:30:00Z", "2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z",]
    );
    // Starting one second before the transition, and exactly on it.
    assert_eq!(
        fires("30 2 * * *", NY, "2026-03-08T06:59:59Z", 1),
        ["2026-03-08T07:00:00Z"]
    );
    assert_eq!(
        fires("30 2 * * *", NY, "2026-03-08T07:00:00Z", 1),
        ["2026-03-09T06:30:00Z"]
    );
    // Six-field form with seconds.
    assert_eq!(
        fires("15 30 2 * * *", NY, "2026-03-08T00:00:00Z", 2),
        ["2026-03-08T07:00:00Z", "2026-03-09T06:30:15Z"]
    );
}

#[test]
fn new_york_skipped_matches_collapse_into_one_fire() {
    assert_eq!(
        fires("0,15,30,45 2 * * *", NY, "2026-03-08T00:00:00Z", 3),
        ["2026-03-08T07:00:00Z", "2026-03-09T06:00:00Z", "2026-03-09T06:15:00Z",]
    );
    // 02:00 is skipped and 03:00 exists: both land on the same instant, once.
    assert_eq!(
        fires("0 2,3 * * *", NY, "2026-03-08T00:00:00Z", 3),
        ["2026-03-08T07:00:00Z", "2026-03-09T06:00:00Z", "2026-03-09T07:00:00Z",]
    );
    // A fixed-time job with seconds: every second of 02:00-02:00:59 collapses.
    assert_eq!(
        fires("0-59 0 2 * * *", NY, "2026-03-08T06:00:00Z", 2),
        ["2026-03-08T07:00:00Z", "2026-03-09T06:00:00Z"]
    );
}

#[test]
fn new_york_wildcards_skip_the_gap() {
    assert_eq!(
        fires("*/15 * * * *", NY, "2026-03-08T06:30:00Z", 4),
        [
            "2026-03-08T06:45:00Z",
            "2026-03-08T07:00:00Z",
            "2026-03-08T07:15:00Z",
            "2026-03-08T07:30:00Z",
        ]
    );
    for hourly in ["0 * * * *", "@hourly"] {
        assert_eq!(
            fires(hourly, NY, "2026-03-08T05:30:00Z", 3),
            ["2026-03-08T06:00:00Z", "2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z",],
            "{hourly}"
        );
    }
    // The minute field is a wildcard, so nothing fires on the day 02:00 is skipped.
    assert_eq!(
        fires("*/10 2 * * *", NY, "2026-03-08T00:00:00Z", 2),
        ["2026-03-09T06:00:00Z", "2026-03-09T06:10:00Z"]
    );
}

#[test]
fn new_york_fixed_time_in_the_fold_fires_once() {
    // 01:30 happens twice on 2026-11-01; the job runs at the first (EDT).
    assert_eq!(
        fires("30 1 * * *", NY, "2026-10-31T00:00:00Z", 3),
        ["2026-10-31T05:30:00Z", "2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z",]
    );
    assert_eq!(
        fires("15 30 1 * * *", NY, "2026-11-01T00:00:00Z", 2),
        ["2026-11-01T05:30:15Z", "2026-11-02T06:30:15Z"]
    );
    // 02:00 is not repeated (the clock goes from 01:59:59 EDT to 01:00 EST),
    // so its only occurrence, 02:00 EST, fires.
    assert_eq!(
        fires("0 2 * * *", NY, "2026-11-01T00:00:00Z", 1),
        ["2026-11-01T07:00:00Z"]
    );
}

#[test]
fn new_york_wildcards_repeat_the_fold() {
    assert_eq!(
        fires("*/15 * * * *", NY, "2026-11-01T05:40:00Z", 6),
        [
            "2026-11-01T05:45:00Z",
            "2026-11-01T06:00:00Z",
            "2026-11-01T06:15:00Z",
            "2026-11-01T06:30:00Z",
            "2026-11-01T06:45:00Z",
            "2026-11-01T07:00:00Z",
        ]
    );
    for hourly in ["0 * * * *", "@hourly"] {
        assert_eq!(
            fires(hourly, NY, "2026-11-01T04:30:00Z", 3),
            ["2026-11-01T05:00:00Z", "2026-11-01T06:00:00Z", "2026-11-01T07:00:00Z",],
            "{hourly}"
        );
    }
    // Six fields with a wildcard seconds field: both passes of 01:30.
    assert_eq!(
        fires("*/20 30 1 * * *", NY, "2026-11-01T00:00:00Z", 7),
        [
            "2026-11-01T05:30:00Z",
            "2026-11-01T05:30:20Z",
            "2026-11-01T05:30:40Z",
            "2026-11-01T06:30:00Z",
            "2026-11-01T06:30:20Z",
            "2026-11-01T06:30:40Z",
            "2026-11-02T06:30:00Z",
        ]
    );
}

#[test]
fn new_york_search_starting_inside_the_second_pass_of_the_fold() {
    // 06:30Z is 01:30 EST, the second pass; 01:45 EST is a repeat and must
    // not fire for a fixed-time job.
    assert_eq!(
        fires("45 1 * * *", NY, "2026-11-01T06:30:00Z", 1),
        ["2026-11-02T06:45:00Z"]
    );
    assert_eq!(
        fires("30 1 * * *", NY, "2026-11-01T06:10:00Z", 1),
        ["2026-11-02T06:30:00Z"]
    );
    assert_eq!(
        fires("0 45 1 * * *", NY, "2026-11-01T06:00:00Z", 1),
        ["2026-11-02T06:45:00Z"]
    );
    // After the repeated hour, ordinary times fire as usual.
    assert_eq!(
        fires("0 2 * * *", NY, "2026-11-01T06:30:00Z", 1),
        ["2026-11-01T07:00:00Z"]
    );
    // A wildcard job started in the second pass fires in it.
    assert_eq!(
        fires("*/15 1 * * *", NY, "2026-11-01T06:30:00Z", 2),
        ["2026-11-01T06:45:00Z", "2026-11-02T06:00:00Z"]
    );
}

#[test]
fn london_gap_and_fold() {
    assert_eq!(
        fires("30 1 * * *", LONDON, "2026-03-28T12:00:00Z", 2),
        ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
    );
    assert_eq!(
        fires("*/15 * * * *", LONDON, "2026-03-29T00:40:00Z", 3),
        ["2026-03-29T00:45:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:15:00Z",]
    );
    // 01:00 GMT is skipped; 02:00 BST is the next hour mark.
    assert_eq!(
        fires("@hourly", LONDON, "2026-03-29T00:30:00Z", 2),
        ["2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z"]
    );
    assert_eq!(
        fires("30 1 * * *", LONDON, "2026-10-24T12:00:00Z", 2),
        ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
    );
    assert_eq!(
        fires("0 * * * *", LONDON, "2026-10-24T23:30:00Z", 3),
        ["2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z",]
    );
    assert_eq!(
        fires("*/30 1 * * *", LONDON, "2026-10-24T23:59:00Z", 5),
        [
            "2026-10-25T00:00:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-25T01:00:00Z",
            "2026-10-25T01:30:00Z",
            "2026-10-26T01:00:00Z",
        ]
    );
    // The search starts inside the second pass of 01:00-01:59 GMT.
    assert_eq!(
        fires("45 1 * * *", LONDON, "2026-10-25T01:20:00Z", 1),
        ["2026-10-26T01:45:00Z"]
    );
}

#[test]
fn lord_howe_half_hour_fold() {
    // 01:30-01:59 repeats on 2026-04-05.
    assert_eq!(
        fires("45 1 * * *", LORD_HOWE, "2026-04-04T00:00:00Z", 2),
        ["2026-04-04T14:45:00Z", "2026-04-05T15:15:00Z"]
    );
    // 01:15 happens only once (before the fold).
    assert_eq!(
        fires("15 1 * * *", LORD_HOWE, "2026-04-04T00:00:00Z", 2),
        ["2026-04-04T14:15:00Z", "2026-04-05T14:45:00Z"]
    );
    assert_eq!(
        fires("*/15 * * * *", LORD_HOWE, "2026-04-04T14:40:00Z", 4),
        [
            "2026-04-04T14:45:00Z",
            "2026-04-04T15:00:00Z",
            "2026-04-04T15:15:00Z",
            "2026-04-04T15:30:00Z",
        ]
    );
    // Hour marks: 01:00 (+11), then 02:00 (+10:30); the clock never shows
    // 02:00 at +11.
    assert_eq!(
        fires("0 * * * *", LORD_HOWE, "2026-04-04T13:30:00Z", 3),
        ["2026-04-04T14:00:00Z", "2026-04-04T15:30:00Z", "2026-04-04T16:30:00Z",]
    );
    // Started in the second pass at 01:35 (+10:30).
    assert_eq!(
        fires("45 1 * * *", LORD_HOWE, "2026-04-04T15:05:00Z", 1),
        ["2026-04-05T15:15:00Z"]
    );
    assert_eq!(
        fires("*/15 1 * * *", LORD_HOWE, "2026-04-04T15:05:00Z", 2),
        ["2026-04-04T15:15:00Z", "2026-04-05T14:30:00Z"]
    );
}

#[test]
fn lord_howe_half_hour_gap() {
    // 02:00-02:29 is skipped on 2026-10-04.
    assert_eq!(
        fires("15 2 * * *", LORD_HOWE, "2026-10-03T00:00:00Z", 2),
        ["2026-10-03T15:30:00Z", "2026-10-04T15:15:00Z"]
    );
    assert_eq!(
        fires("0,15 2 * * *", LORD_HOWE, "2026-10-03T00:00:00Z", 3),
        ["2026-10-03T15:30:00Z", "2026-10-04T15:00:00Z", "2026-10-04T15:15:00Z",]
    );
    // 02:30 exists (it is the first instant after the gap): one fire.
    assert_eq!(
        fires("30 2 * * *", LORD_HOWE, "2026-10-03T00:00:00Z", 2),
        ["2026-10-03T15:30:00Z", "2026-10-04T15:30:00Z"]
    );
    assert_eq!(
        fires("*/15 * * * *", LORD_HOWE, "2026-10-03T15:10:00Z", 3),
        ["2026-10-03T15:15:00Z", "2026-10-03T15:30:00Z", "2026-10-03T15:45:00Z",]
    );
    // 02:00 does not exist; the next hour mark is 03:00 (+11).
    assert_eq!(
        fires("0 * * * *", LORD_HOWE, "2026-10-03T14:45:00Z", 2),
        ["2026-10-03T16:00:00Z", "2026-10-03T17:00:00Z"]
    );
}

#[test]
fn every_ignores_time_zones_and_is_epoch_aligned() {
    let expr = CronExpr::parse("@every 90s").unwrap_or_else(|e| panic!("{e}"));
    let ny = zone(NY);
    let utc = zone("UTC");
    for after in [
        "2026-03-08T06:59:00Z",
        "2026-11-01T05:59:59.5Z",
        "1969-12-31T23:59:59.9Z",
    ] {
        let a: Vec<_> = expr.iter_after(ts(after), &ny).take(5).collect();
        let b: Vec<_> = expr.iter_after(ts(after), &utc).take(5).collect();
        assert_eq!(a, b);
        for t in a {
            assert_eq!(t.as_second().rem_euclid(90), 0);
        }
    }
    assert_eq!(
        fires("@every 1h30m", NY, "2026-03-08T06:59:00Z", 3),
        ["2026-03-08T07:30:00Z", "2026-03-08T09:00:00Z", "2026-03-08T10:30:00Z",]
    );
    assert_eq!(
        fires("@every 90s", "UTC", "1969-12-31T23:59:59.9Z", 2),
        ["1970-01-01T00:00:00Z", "1970-01-01T00:01:30Z"]
    );
    assert_eq!(
        fires("@every 90s", "UTC", "1970-01-01T00:01:30Z", 1),
        ["1970-01-01T00:03:00Z"]
    );
    // Nothing fires after 2199.
    assert_eq!(
        fires("@every 1d", "UTC", "2199-12-31T00:00:00Z", 3),
        Vec::<String>::new()
    );
    assert_eq!(
        fires("@every 1h", "UTC", "2199-12-31T22:30:00Z", 3),
        ["2199-12-31T23:00:00Z"]
    );
}

#[test]
fn sub_second_starts_give_whole_seconds_strictly_after() {
    assert_eq!(
        fires("* * * * * *", "UTC", "2026-01-01T00:00:00.999Z", 2),
        ["2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z"]
    );
    assert_eq!(
        fires("* * * * *", "UTC", "2026-01-01T00:00:00.5Z", 1),
        ["2026-01-01T00:01:00Z"]
    );
    assert_eq!(
        fires("* * * * * *", "UTC", "1969-12-31T23:59:59.5Z", 1),
        ["1970-01-01T00:00:00Z"]
    );
    assert_eq!(
        fires("* * * * * *", "UTC", "1969-12-31T23:59:58.5Z", 1),
        ["1969-12-31T23:59:59Z"]
    );
}
