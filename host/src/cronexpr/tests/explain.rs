//! Owns the tests of the English descriptions.

use super::super::CronExpr;

fn explain(text: &str) -> String {
    CronExpr::parse(text)
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
        .explain()
}

#[test]
fn descriptions() {
    let cases = [
        ("30 2 * * *", "at 02:30 every day"),
        ("*/15 * * * *", "every 15 minutes"),
        ("* * * * *", "every minute"),
        ("* * * * * *", "every second"),
        ("0 * * * 1-5", "at minute 0 past every hour on Monday through Friday"),
        ("@every 90s", "every 90 seconds (aligned to the Unix epoch)"),
        ("@every 1h30m", "every 90 minutes (aligned to the Unix epoch)"),
        ("@every 2d", "every 2 days (aligned to the Unix epoch)"),
        ("@every 1h", "every hour (aligned to the Unix epoch)"),
        ("@daily", "at 00:00 every day"),
        ("@hourly", "at minute 0 past every hour"),
        ("@weekly", "at 00:00 on Sunday"),
        ("@monthly", "at 00:00 on day 1 of the month"),
        ("@yearly", "at 00:00 on January 1"),
        ("0 9 * * 1-5", "at 09:00 on Monday through Friday"),
        ("0,30 9,17 * * *", "at 09:00, 09:30, 17:00 and 17:30 every day"),
        ("15 30 2 * * *", "at 02:30:15 every day"),
        ("0 */2 * * *", "at minute 0 past every 2nd hour"),
        ("*/5 9-17 * * *", "every 5 minutes during hours 9 through 17"),
        ("*/30 * 9-17 * * *", "every 30 seconds during hours 9 through 17"),
        ("30 * * * * *", "at second 30 of every minute"),
        ("10-20 * * * * *", "at seconds 10 through 20 of every minute"),
        ("0 0 * * 5-7", "at 00:00 on Friday through Sunday"),
        ("0 0 * * 0-6", "at 00:00 every day"),
        ("0 0 1,15 * 1", "at 00:00 on days 1 and 15 of the month or on Monday"),
        ("0 0 1-31 * 1", "at 00:00 every day"),
        (
            "0 0 */2 * 1",
            "at 00:00 on every 2nd day of the month if it falls on Monday",
        ),
        ("0 0 1 */3 *", "at 00:00 on day 1 of the month in every 3rd month"),
        ("0 12 * jan,jul *", "at 12:00 every day in January and July"),
        ("0 0 0 29 2 * 2196", "at 00:00 on February 29 in 2196"),
        ("0 0 12 * * * 2026-2028", "at 12:00 every day in 2026 through 2028"),
        (
            "0 0 0 1 1 * 2026/2",
            "at 00:00 on January 1 in every 2nd year from 2026",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(explain(text), expected, "for {text:?}");
    }
}

#[test]
fn every_description_is_nonempty_and_lowercase() {
    for text in [
        "1-5,7 */3 1,2 FEB-MAR,JUL 1-5 ",
        "0-59 0-23 1-31 1-12 0-7",
        "0 0 0 1 1 * 1970-2199",
    ] {
        let description = explain(text);
        assert!(!description.is_empty());
        assert!(
            description.starts_with(|c: char| c.is_ascii_lowercase()),
            "{description}"
        );
        assert!(!description.ends_with('.'), "{description}");
    }
}
