//! Owns the English descriptions of parsed expressions returned by `CronExpr::explain`.

use super::{Fields, MAX_YEAR, MIN_YEAR};

const MONTH_NAMES: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAY_NAMES: [&str; 8] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Up to this many distinct clock times are listed one by one ("at 09:00
/// and 17:30") rather than described field by field.
const MAX_LISTED_TIMES: usize = 8;

/// The values whose bits are set in `mask`, from `low` through `high`.
fn values(mask: u64, low: u32, high: u32) -> Vec<u32> {
    (low..=high).filter(|v| mask & (1u64 << v) != 0).collect()
}

fn is_full(mask: u64, low: u32, high: u32) -> bool {
    (low..=high).all(|v| mask & (1u64 << v) != 0)
}

/// `Some(n)` when the values are exactly `low, low + n, low + 2n, ...` up to
/// `high` with `n >= 2`, the shape `*/n` produces.
fn uniform_step(vals: &[u32], low: u32, high: u32) -> Option<u32> {
    uniform_step_of_at_least(vals, low, high, 2)
}

/// Like `uniform_step`, for fields where a step over only a few values reads
/// worse than the list ("in January and July" beats "in every 6th month").
fn uniform_step_of_at_least(vals: &[u32], low: u32, high: u32, min_count: usize) -> Option<u32> {
    if vals.len() < min_count.max(2) || vals[0] != low {
        return None;
    }
    let step = vals[1] - vals[0];
    if step < 2 {
        return None;
    }
    let expected: Vec<u32> = (low..=high).step_by(step as usize).collect();
    (expected == vals).then_some(step)
}

fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// Joins phrases as English does: "a", "a and b", "a, b and c".
fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {}", init.join(", "), last),
    }
}

/// Describes sorted values, collapsing runs of three or more into
/// "a through b".
fn list(vals: &[u32], name: &dyn Fn(u32) -> String) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < vals.len() {
        let mut j = i;
        while j + 1 < vals.len() && vals[j + 1] == vals[j] + 1 {
            j += 1;
        }
        if j - i >= 2 {
            parts.push(format!("{} through {}", name(vals[i]), name(vals[j])));
        } else {
            for v in &vals[i..=j] {
                parts.push(name(*v));
            }
        }
        i = j + 1;
    }
    join_and(&parts)
}

fn number(v: u32) -> String {
    v.to_string()
}

fn plural(count: usize, singular: &str, plural: &str) -> String {
    if count == 1 {
        singular.to_string()
    } else {
        plural.to_string()
    }
}

/// Weekdays, counting Sunday as 7 when that reads better ("Friday through
/// Sunday" rather than "Sunday, Friday and Saturday").
fn weekday_list(mask: u64) -> String {
    let plain = values(mask, 0, 6);
    let name = |v: u32| WEEKDAY_NAMES[v as usize].to_string();
    if plain.first() == Some(&0) && plain.last() == Some(&6) && plain.len() < 7 {
        let mut rotated: Vec<u32> = plain[1..].to_vec();
        rotated.push(7);
        let runs = |vals: &[u32]| vals.windows(2).filter(|w| w[1] != w[0] + 1).count();
        if runs(&rotated) < runs(&plain) {
            return list(&rotated, &name);
        }
    }
    list(&plain, &name)
}

/// Describes a calendar expression.
pub(crate) fn explain_calendar(fields: &Fields) -> String {
    let mut parts: Vec<String> = Vec::new();
    let seconds = values(fields.seconds, 0, 59);
    let minutes = values(fields.minutes, 0, 59);
    let hours = values(fields.hours, 0, 23);
    let listed_times = seconds.len() * minutes.len() * hours.len();
    let clock_times = !is_full(fields.seconds, 0, 59)
        && !is_full(fields.minutes, 0, 59)
        && !is_full(fields.hours, 0, 23)
        && listed_times <= MAX_LISTED_TIMES;
    if clock_times {
        let show_seconds = seconds != [0];
        let mut times = Vec::new();
        for h in &hours {
            for m in &minutes {
                for s in &seconds {
                    times.push(if show_seconds {
                        format!("{h:02}:{m:02}:{s:02}")
                    } else {
                        format!("{h:02}:{m:02}")
                    });
                }
            }
        }
        parts.push(format!("at {}", join_and(&times)));
    } else {
        parts.extend(time_phrases(&seconds, &minutes, &hours));
    }

    let (day_phrase, month_consumed) = day_phrase(fields);
    match day_phrase {
        Some(phrase) => parts.push(phrase),
        None if clock_times => parts.push("every day".to_string()),
        None => {}
    }
    if !month_consumed && !is_full(fields.months, 1, 12) {
        parts.push(month_phrase(fields.months));
    }
    if let Some(years) = &fields.years
        && !years.is_full()
    {
        parts.push(year_phrase(&years.years()));
    }
    parts.join(" ")
}

/// The seconds, minutes and hours as phrases, for expressions that do not
/// reduce to a short list of clock times.
fn time_phrases(seconds: &[u32], minutes: &[u32], hours: &[u32]) -> Vec<String> {
    let mut parts = Vec::new();
    let all_seconds = seconds.len() == 60;
    let all_minutes = minutes.len() == 60;
    let all_hours = hours.len() == 24;
    let second_step = uniform_step(seconds, 0, 59);
    let minute_step = uniform_step(minutes, 0, 59);
    let hour_step = uniform_step_of_at_least(hours, 0, 23, 3);

    // Whether the phrase so far repeats through every hour by itself
    // ("every 15 minutes"), in which case an unrestricted hour needs no words.
    let repeats_within_hour;
    if seconds == [0] {
        repeats_within_hour = all_minutes || minute_step.is_some();
        parts.push(if all_minutes {
            "every minute".to_string()
        } else if let Some(step) = minute_step {
            format!("every {step} minutes")
        } else {
            format!(
                "at {} {}",
                plural(minutes.len(), "minute", "minutes"),
                list(minutes, &number)
            )
        });
    } else {
        let repeating_seconds = all_seconds || second_step.is_some();
        parts.push(if all_seconds {
            "every second".to_string()
        } else if let Some(step) = second_step {
            format!("every {step} seconds")
        } else {
            format!(
                "at {} {}",
                plural(seconds.len(), "second", "seconds"),
                list(seconds, &number)
            )
        });
        let joiner = if repeating_seconds { "during" } else { "of" };
        if all_minutes {
            if !repeating_seconds {
                parts.push("of every minute".to_string());
            }
        } else if let Some(step) = minute_step {
            parts.push(format!("{joiner} every {} minute", ordinal(step)));
        } else {
            parts.push(format!(
                "{joiner} {} {}",
                plural(minutes.len(), "minute", "minutes"),
                list(minutes, &number)
            ));
        }
        repeats_within_hour = all_minutes || minute_step.is_some();
    }

    let joiner = if repeats_within_hour { "during" } else { "past" };
    if all_hours {
        if !repeats_within_hour {
            parts.push("past every hour".to_string());
        }
    } else if let Some(step) = hour_step {
        parts.push(format!("{joiner} every {} hour", ordinal(step)));
    } else {
        parts.push(format!(
            "{joiner} {} {}",
            plural(hours.len(), "hour", "hours"),
            list(hours, &number)
        ));
    }
    parts
}

/// The day restriction under Vixie's rule, and whether it already named the
/// month ("on January 1").
fn day_phrase(fields: &Fields) -> (Option<String>, bool) {
    let dom_full = is_full(fields.days_of_month, 1, 31);
    let dow_full = is_full(fields.days_of_week, 0, 6);
    let days = values(fields.days_of_month, 1, 31);
    let dom_text = || {
        if let Some(step) = uniform_step_of_at_least(&days, 1, 31, 3) {
            format!("every {} day of the month", ordinal(step))
        } else {
            format!(
                "{} {} of the month",
                plural(days.len(), "day", "days"),
                list(&days, &number)
            )
        }
    };
    if !fields.dom_star && !fields.dow_star {
        // Both fields restricted: a day matches when either does, so a full
        // field on either side means every day.
        if dom_full || dow_full {
            return (None, false);
        }
        let text = format!("on {} or on {}", dom_text(), weekday_list(fields.days_of_week));
        return (Some(text), false);
    }
    match (dom_full, dow_full) {
        (true, true) => (None, false),
        (true, false) => (Some(format!("on {}", weekday_list(fields.days_of_week))), false),
        (false, true) => {
            let months = values(fields.months, 1, 12);
            if let ([day], [month]) = (days.as_slice(), months.as_slice()) {
                let text = format!("on {} {}", MONTH_NAMES[*month as usize - 1], day);
                return (Some(text), true);
            }
            (Some(format!("on {}", dom_text())), false)
        }
        (false, false) => (
            Some(format!(
                "on {} if it falls on {}",
                dom_text(),
                weekday_list(fields.days_of_week)
            )),
            false,
        ),
    }
}

fn month_phrase(mask: u64) -> String {
    let months = values(mask, 1, 12);
    if let Some(step) = uniform_step_of_at_least(&months, 1, 12, 3) {
        return format!("in every {} month", ordinal(step));
    }
    let name = |v: u32| MONTH_NAMES[v as usize - 1].to_string();
    format!("in {}", list(&months, &name))
}

fn year_phrase(years: &[i32]) -> String {
    // A progression that runs to the last supported year reads as a step
    // ("in every 2nd year from 2026"), the shape `2026/2` produces.
    if let [first, second, ..] = years
        && years.len() >= 3
    {
        let step = second - first;
        let progression = years.iter().zip(0..).all(|(year, i)| *year == first + step * i);
        if step >= 2 && progression && years[years.len() - 1] + step > MAX_YEAR {
            return format!("in every {} year from {first}", ordinal(step as u32));
        }
    }
    let offsets: Vec<u32> = years.iter().map(|y| (y - MIN_YEAR) as u32).collect();
    let name = |v: u32| (v as i32 + MIN_YEAR).to_string();
    format!("in {}", list(&offsets, &name))
}

/// Describes an `@every` period in its largest whole unit.
pub(crate) fn explain_every(period: i64) -> String {
    let (count, unit) = if period % 86_400 == 0 {
        (period / 86_400, "day")
    } else if period % 3_600 == 0 {
        (period / 3_600, "hour")
    } else if period % 60 == 0 {
        (period / 60, "minute")
    } else {
        (period, "second")
    };
    if count == 1 {
        format!("every {unit} (aligned to the Unix epoch)")
    } else {
        format!("every {count} {unit}s (aligned to the Unix epoch)")
    }
}
