//! Owns the parsing tests: accepted syntax, error kinds and the exact error messages.

use jiff::SignedDuration;

use super::super::{CronError, CronExpr, CronField, Kind, MAX_EXPR_LEN, Schedule, ScheduleError, parse_timezone};
use super::fires;

fn err(text: &str) -> CronError {
    match CronExpr::parse(text) {
        Ok(expr) => panic!("{text:?} parsed as {expr:?}"),
        Err(e) => e,
    }
}

fn msg(text: &str) -> String {
    err(text).to_string()
}

fn fields(text: &str) -> super::super::Fields {
    match CronExpr::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}")).kind {
        Kind::Calendar(fields) => fields,
        Kind::Every(_) => panic!("{text:?} is @every"),
    }
}

fn bits(values: &[u32]) -> u64 {
    values.iter().fold(0, |acc, v| acc | (1u64 << v))
}

#[test]
fn error_messages_name_the_field_and_reason() {
    let cases = [
        ("61 * * * *", "minute field \"61\": 61 is out of range 0-59"),
        ("* * * *", "expected 5, 6 or 7 fields, found 4"),
        ("* * * * * * * *", "expected 5, 6 or 7 fields, found 8"),
        ("0 0 * * MON-FOO", "day-of-week field \"MON-FOO\": unknown name \"FOO\""),
        ("0 */0 * * *", "hour field \"*/0\": step must be at least 1"),
        (
            "0 0 5-2 * *",
            "day-of-month field \"5-2\": range start 5 is after end 2",
        ),
        ("@fortnightly", "unknown macro \"@fortnightly\""),
        ("@every 0s", "@every duration \"0s\": must be at least 1s"),
        ("60 * * * * *", "second field \"60\": 60 is out of range 0-59"),
        ("0 24 * * *", "hour field \"24\": 24 is out of range 0-23"),
        ("0 0 0 * *", "day-of-month field \"0\": 0 is out of range 1-31"),
        ("0 0 32 * *", "day-of-month field \"32\": 32 is out of range 1-31"),
        ("0 0 * 13 *", "month field \"13\": 13 is out of range 1-12"),
        ("0 0 * 0 *", "month field \"0\": 0 is out of range 1-12"),
        ("0 0 * * 8", "day-of-week field \"8\": 8 is out of range 0-7"),
        (
            "0 0 0 * * * 1969",
            "year field \"1969\": 1969 is out of range 1970-2199",
        ),
        (
            "0 0 0 * * * 2200",
            "year field \"2200\": 2200 is out of range 1970-2199",
        ),
        ("0 0 * FOO *", "month field \"FOO\": unknown name \"FOO\""),
        ("0 0 * * JAN", "day-of-week field \"JAN\": unknown name \"JAN\""),
        ("0 0 * MON *", "month field \"MON\": unknown name \"MON\""),
        ("x * * * *", "minute field \"x\": \"x\" is not a number"),
        ("1,,2 * * * *", "minute field \"1,,2\": empty list item"),
        ("1, * * * *", "minute field \"1,\": empty list item"),
        ("-5 * * * *", "minute field \"-5\": range \"-5\" is missing its start"),
        ("5- * * * *", "minute field \"5-\": range \"5-\" is missing its end"),
        ("*/ * * * *", "minute field \"*/\": step is missing after \"/\""),
        ("*/x * * * *", "minute field \"*/x\": step \"x\" is not a number"),
        (
            "*/5/2 * * * *",
            "minute field \"*/5/2\": \"*/5/2\" has more than one \"/\"",
        ),
        (
            "? * * * *",
            "minute field \"?\": \"?\" is only allowed in the day-of-month and day-of-week fields",
        ),
        (
            "0 0 ?,1 * *",
            "day-of-month field \"?,1\": \"?\" must stand alone as the whole field",
        ),
        (
            "99999999999 * * * *",
            "minute field \"99999999999\": 99999999999 is out of range 0-59",
        ),
        (
            "0 0 L * *",
            "day-of-month field \"L\": the Quartz \"L\" (last day) syntax is not supported",
        ),
        (
            "0 0 LW * *",
            "day-of-month field \"LW\": the Quartz \"L\" (last day) syntax is not supported",
        ),
        (
            "0 0 15W * *",
            "day-of-month field \"15W\": the Quartz \"W\" (nearest weekday) syntax is not supported",
        ),
        (
            "0 0 * * 5L",
            "day-of-week field \"5L\": the Quartz \"L\" (last day) syntax is not supported",
        ),
        (
            "0 0 * * FRIL",
            "day-of-week field \"FRIL\": the Quartz \"L\" (last day) syntax is not supported",
        ),
        (
            "0 0 * * 5#3",
            "day-of-week field \"5#3\": the Quartz \"#\" (nth weekday of the month) syntax is not supported",
        ),
        (
            "@reboot",
            "@reboot is not supported: sandcron schedules have no notion of a machine boot",
        ),
        ("@daily now", "macro \"@daily\" takes no arguments"),
        ("@every 3661d", "@every duration \"3661d\": must be at most 3660d"),
        ("@every 3660d 1s", "@every duration \"3660d 1s\": must be at most 3660d"),
        (
            "@every 99999999999999999d",
            "@every duration \"99999999999999999d\": must be at most 3660d",
        ),
        (
            "@every 90",
            "@every duration \"90\": missing unit after 90 (use d, h, m or s)",
        ),
        (
            "@every 5x",
            "@every duration \"5x\": unknown unit \"x\" after 5 (use d, h, m or s)",
        ),
        (
            "@every 1.5s",
            "@every duration \"1.5s\": unknown unit \".\" after 1 (use d, h, m or s)",
        ),
        (
            "@every h",
            "@every duration \"h\": expected a number at \"h\" (write parts like 1h30m)",
        ),
        (
            "@every",
            "@every duration \"\": a duration such as \"90s\" or \"1h30m\" is required",
        ),
        ("", "cron expression is empty"),
        (" \t ", "cron expression is empty"),
    ];
    for (text, expected) in cases {
        assert_eq!(msg(text), expected, "for {text:?}");
    }
}

#[test]
fn messages_are_lowercase_without_trailing_period() {
    for text in ["61 * * * *", "@fortnightly", "", "* *", "@every 0s", "@reboot"] {
        let message = msg(text);
        assert!(!message.ends_with('.'), "{message}");
        let first = message.chars().next().unwrap_or(' ');
        assert!(!first.is_ascii_uppercase(), "{message}");
    }
}

#[test]
fn error_field_accessor() {
    assert_eq!(err("61 * * * *").field(), Some(CronField::Minute));
    assert_eq!(err("0 61 * * * *").field(), Some(CronField::Minute));
    assert_eq!(err("61 0 * * * *").field(), Some(CronField::Second));
    assert_eq!(err("0 0 0 * * * 1900").field(), Some(CronField::Year));
    assert_eq!(err("0 0 * * 9").field(), Some(CronField::DayOfWeek));
    assert_eq!(err("0 0 * 0 *").field(), Some(CronField::Month));
    assert_eq!(err("0 0 0 * *").field(), Some(CronField::DayOfMonth));
    assert_eq!(err("0 25 * * *").field(), Some(CronField::Hour));
    assert_eq!(err("* *").field(), None);
    assert_eq!(err("@nope").field(), None);
    let names: Vec<String> = [
        CronField::Second,
        CronField::Minute,
        CronField::Hour,
        CronField::DayOfMonth,
        CronField::Month,
        CronField::DayOfWeek,
        CronField::Year,
    ]
    .iter()
    .map(|f| f.to_string())
    .collect();
    assert_eq!(
        names,
        [
            "second",
            "minute",
            "hour",
            "day-of-month",
            "month",
            "day-of-week",
            "year"
        ]
    );
}

#[test]
fn hostile_input_is_rejected_early() {
    let long = "1,".repeat(MAX_EXPR_LEN);
    assert!(matches!(err(&long), CronError::TooLong { .. }));
    let many = format!("{} * * * *", vec!["1"; 101].join(","));
    assert_eq!(
        msg(&many),
        format!(
            "minute field \"{}\": more than 100 list items",
            vec!["1"; 101].join(",")
        )
    );
    // One hundred items is still fine.
    let hundred = format!("{} * * * *", vec!["1"; 100].join(","));
    assert!(CronExpr::parse(&hundred).is_ok());
    assert!(CronExpr::parse("*/4294967296 * * * *").is_err());
    assert!(CronExpr::parse("*/4294967295 * * * *").is_err());
    assert_eq!(fields("*/999999999 * * * *").minutes, bits(&[0]));
}

#[test]
fn field_syntax() {
    let f = fields("1,2,10-12,20-30/5,45/7 * * * *");
    assert_eq!(f.minutes, bits(&[1, 2, 10, 11, 12, 20, 25, 30, 45, 52, 59]));
    assert_eq!(f.seconds, bits(&[0]));
    assert_eq!(fields("*/15 * * * *").minutes, bits(&[0, 15, 30, 45]));
    assert_eq!(fields("0 */5 * * *").hours, bits(&[0, 5, 10, 15, 20]));
    assert_eq!(fields("0 0 */10 * *").days_of_month, bits(&[1, 11, 21, 31]));
    assert_eq!(fields("0 0 * */5 *").months, bits(&[1, 6, 11]));
    assert_eq!(fields("0 0 * 3/4 *").months, bits(&[3, 7, 11]));
    // A step larger than the span selects only the start, as in Vixie cron.
    assert_eq!(fields("*/90 * * * *").minutes, bits(&[0]));
    assert_eq!(fields("5-10/60 * * * *").minutes, bits(&[5]));
    assert_eq!(fields("59/15 * * * *").minutes, bits(&[59]));
    // Leading zeros are plain numbers.
    assert_eq!(fields("05 007 * * *").hours, bits(&[7]));
}

#[test]
fn names_are_case_insensitive_and_work_in_ranges_and_lists() {
    assert_eq!(fields("0 0 * jan,Mar,DEC *").months, bits(&[1, 3, 12]));
    assert_eq!(fields("0 0 * JUN-aug *").months, bits(&[6, 7, 8]));
    assert_eq!(fields("0 0 * Jan/3 *").months, bits(&[1, 4, 7, 10]));
    assert_eq!(fields("0 0 * * mon-FRI").days_of_week, bits(&[1, 2, 3, 4, 5]));
    assert_eq!(fields("0 0 * * sun,Wed,SAT").days_of_week, bits(&[0, 3, 6]));
    assert_eq!(fields("0 0 * * MON-5/2").days_of_week, bits(&[1, 3, 5]));
    assert_eq!(fields("0 0 * 1-MAR *").months, bits(&[1, 2, 3]));
}

#[test]
fn day_of_week_seven_is_sunday() {
    assert_eq!(fields("0 0 * * 7").days_of_week, bits(&[0]));
    assert_eq!(fields("0 0 * * 5-7").days_of_week, bits(&[0, 5, 6]));
    assert_eq!(fields("0 0 * * 0-7").days_of_week, bits(&[0, 1, 2, 3, 4, 5, 6]));
    assert_eq!(fields("0 0 * * 1-7/2").days_of_week, bits(&[0, 1, 3, 5]));
    // SUN at the end of a range reads as 7.
    assert_eq!(fields("0 0 * * FRI-SUN").days_of_week, bits(&[0, 5, 6]));
    assert_eq!(fields("0 0 * * 0-SUN").days_of_week, bits(&[0]));
    assert_eq!(fields("0 0 * * SUN-SUN").days_of_week, bits(&[0]));
    // `a/n` stops at Saturday; `7/n` is Sunday alone.
    assert_eq!(fields("0 0 * * 1/2").days_of_week, bits(&[1, 3, 5]));
    assert_eq!(fields("0 0 * * 7/2").days_of_week, bits(&[0]));
    assert_eq!(fields("0 0 * * */2").days_of_week, bits(&[0, 2, 4, 6]));
    // 2026-01-04 was a Sunday: 7 fires on it.
    assert_eq!(
        fires("0 12 * * 7", "UTC", "2026-01-01T00:00:00Z", 2),
        ["2026-01-04T12:00:00Z", "2026-01-11T12:00:00Z"]
    );
}

#[test]
fn question_mark_is_a_star_in_day_fields() {
    let f = fields("0 0 ? * MON");
    assert!(f.dom_star);
    assert!(!f.dow_star);
    let g = fields("0 0 1 * ?");
    assert!(g.dow_star);
    assert_eq!(g.days_of_week, bits(&[0, 1, 2, 3, 4, 5, 6]));
    assert_eq!(
        fires("0 0 ? * MON", "UTC", "2026-01-01T00:00:00Z", 2),
        ["2026-01-05T00:00:00Z", "2026-01-12T00:00:00Z"]
    );
}

#[test]
fn star_flags_follow_the_text() {
    let f = fields("0 0 */2 * 1-5");
    assert!(f.dom_star && !f.dow_star);
    let g = fields("0 0 1-31 * *");
    assert!(!g.dom_star && g.dow_star);
    let h = fields("0 0 1 * 1");
    assert!(!h.dom_star && !h.dow_star);
}

#[test]
fn field_counts_and_fixed_time() {
    let five = fields("30 2 * * *");
    assert_eq!(five.field_count, 5);
    assert_eq!(five.seconds, bits(&[0]));
    assert!(five.fixed_time);
    let six = fields("15 30 2 * * *");
    assert_eq!(six.field_count, 6);
    assert_eq!(six.seconds, bits(&[15]));
    assert_eq!(six.minutes, bits(&[30]));
    assert!(six.years.is_none());
    let seven = fields("0 0 0 1 1 * 2030,2040-2042");
    assert_eq!(seven.field_count, 7);
    let years = seven.years.map(|y| y.years()).unwrap_or_default();
    assert_eq!(years, [2030, 2040, 2041, 2042]);

    let fixed = [
        "30 2 * * *",
        "0,30 0-23 * * *",
        "0 0-59 9 * * *",
        "@daily",
        "@weekly",
        "@monthly",
        "@yearly",
        "@annually",
        "@midnight",
    ];
    for text in fixed {
        assert!(CronExpr::parse(text).is_ok_and(|e| e.is_fixed_time()), "{text}");
    }
    let wildcard = [
        "*/15 * * * *",
        "0 * * * *",
        "@hourly",
        "* 0 2 * * *",
        "0 */5 2 * * *",
        "@every 1h",
        "* * * * *",
    ];
    for text in wildcard {
        assert!(CronExpr::parse(text).is_ok_and(|e| !e.is_fixed_time()), "{text}");
    }
}

#[test]
fn macros_expand_to_their_fields() {
    let pairs = [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@DAILY", "0 0 * * *"),
        ("  @Hourly\t", "0 * * * *"),
    ];
    for (name, equivalent) in pairs {
        assert_eq!(fields(name), fields(equivalent), "{name}");
    }
    assert_eq!(
        CronExpr::parse("  @Hourly\t").map(|e| e.to_string()),
        Ok("@Hourly".to_string())
    );
}

#[test]
fn every_durations() {
    let cases = [
        ("@every 90s", 90),
        ("@every 1h30m", 5_400),
        ("@every 1h 30m", 5_400),
        ("@every 2d", 172_800),
        ("@every 1d2h3m4s", 93_784),
        ("@every 1s", 1),
        ("@every 3660d", 3_660 * 86_400),
        ("@EVERY 15M", 900),
        ("@every\t\t5m ", 300),
        ("@every 0h1s", 1),
    ];
    for (text, secs) in cases {
        let expr = CronExpr::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(expr.interval(), Some(SignedDuration::from_secs(secs)), "{text}");
        assert!(!expr.is_fixed_time());
    }
    assert_eq!(CronExpr::parse("0 0 * * *").map(|e| e.interval()), Ok(None));
}

#[test]
fn whitespace_between_and_around_fields() {
    let a = CronExpr::parse(" \t0   12\t*  *   1-5 \n").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.as_str(), "0   12\t*  *   1-5");
    let b = CronExpr::parse("0 12 * * 1-5").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.kind, b.kind);
    // A newline inside the text is not a field separator.
    assert!(CronExpr::parse("0 12 *\n* 1-5").is_err());
}

#[test]
fn from_str_display_and_serde() {
    let expr: CronExpr = "*/5 * * * *".parse().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(expr.to_string(), "*/5 * * * *");
    let json = serde_json::to_string(&expr).unwrap_or_default();
    assert_eq!(json, "\"*/5 * * * *\"");
    let back: CronExpr = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, expr);
    assert!(serde_json::from_str::<CronExpr>("\"61 * * * *\"").is_err());
}

#[test]
fn schedules_and_time_zones() {
    let s = Schedule::new("30 2 * * *", "america/new_york").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.timezone_name(), "America/New_York");
    assert_eq!(s.expr().as_str(), "30 2 * * *");
    assert_eq!(
        s.next_after(super::ts("2026-03-08T00:00:00Z")).map(|t| t.to_string()),
        Some("2026-03-08T07:00:00Z".to_string())
    );
    let got: Vec<String> = s
        .iter_after(super::ts("2026-03-08T00:00:00Z"))
        .take(2)
        .map(|t| t.to_string())
        .collect();
    assert_eq!(got, ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"]);

    let utc = Schedule::new("@daily", "UTC").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(utc.timezone_name(), "UTC");
    assert!(parse_timezone("utc").is_ok());
    assert!(parse_timezone("Europe/London").is_ok());

    let mars = Schedule::new("@daily", "Mars/Olympus").map(|_| ());
    assert_eq!(mars, Err(ScheduleError::UnknownTimeZone("Mars/Olympus".to_string())));
    assert_eq!(
        parse_timezone("Mars/Olympus").map(|_| ()).map_err(|e| e.to_string()),
        Err("unknown time zone \"Mars/Olympus\"".to_string())
    );
    assert!(parse_timezone("").is_err());
    assert!(parse_timezone("   ").is_err());
    assert!(parse_timezone("Etc/Unknown").is_err());
    assert!(parse_timezone(&"A".repeat(129)).is_err());
    // POSIX TZ strings are not zone names.
    assert!(parse_timezone("EST5EDT,M3.2.0,M11.1.0").is_err());

    let bad_expr = Schedule::new("61 * * * *", "UTC").map(|_| ());
    assert_eq!(
        bad_expr.map_err(|e| e.to_string()),
        Err("minute field \"61\": 61 is out of range 0-59".to_string())
    );
}
