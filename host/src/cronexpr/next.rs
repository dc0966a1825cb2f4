//! Owns next-fire computation: civil calendar arithmetic, the field-by-field match search, and the walk over a zone's offset segments with Vixie's DST rules.
//!
//! Local datetimes are handled as "local seconds": the seconds since
//! 1970-01-01T00:00:00 on the zone's wall clock, so that `local = instant +
//! offset`. Inside one offset segment that mapping is a bijection, which is
//! what lets the search work on the wall clock and convert back by
//! subtracting the offset.

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::{Fields, MAX_YEAR};

pub(crate) const SECS_PER_DAY: i64 = 86_400;

/// The last local second anything may fire at: 2199-12-31T23:59:59.
pub(crate) const MAX_LOCAL: i64 = days_from_civil(MAX_YEAR as i64 + 1, 1, 1) * SECS_PER_DAY - 1;

/// A span longer than any difference between two UTC offsets jiff can
/// represent (each lies within ±25:59:59). Skipping ahead by whole segments
/// is only sound at least this far from the starting instant, because
/// closer to it a fold could bring the wall clock back before the start.
const JUMP_MARGIN: i64 = 3 * SECS_PER_DAY;

/// Past this instant no wall clock on Earth can still show year 2199.
const LAST_INSTANT: i64 = MAX_LOCAL + JUMP_MARGIN;

/// A defensive bound on the number of segments one search visits. Real
/// zones need a handful thanks to the jump; this only stops a pathological
/// custom zone with transitions every few seconds from looping for long.
const MAX_SEGMENTS: u32 = 100_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
pub(crate) const fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

pub(crate) fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

pub(crate) fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The weekday of a day count, Sunday = 0 (1970-01-01 was a Thursday).
pub(crate) fn weekday_from_days(days: i64) -> u32 {
    (days + 4).rem_euclid(7) as u32
}

/// The lowest set bit of `mask` at position `from` or above.
fn next_bit(mask: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let remaining = mask & (!0u64 << from);
    if remaining == 0 {
        None
    } else {
        Some(remaining.trailing_zeros())
    }
}

/// Bit `d` is set for every day `d` of the month that matches, with Vixie's
/// rule: AND when either day field is star-flagged, OR otherwise.
fn day_mask(fields: &Fields, year: i64, month: u32) -> u64 {
    let valid = ((1u64 << (days_in_month(year, month) + 1)) - 1) & !1;
    let first_weekday = weekday_from_days(days_from_civil(year, month, 1));
    // Day `d` falls on weekday `(first_weekday + d - 1) % 7`, and the pattern
    // repeats the weekday bits, so shifting it lines weekdays up with days.
    let by_weekday = ((fields.dow_pattern >> first_weekday) << 1) & valid;
    let by_day = fields.days_of_month & valid;
    if fields.dom_star || fields.dow_star {
        by_day & by_weekday
    } else {
        by_day | by_weekday
    }
}

/// The first local second at or after `local` whose wall-clock fields all
/// match, or `None` when there is none through year 2199.
///
/// Each step either accepts a field or moves that field to its next
/// candidate value and resets the smaller fields, so the cost is a few steps
/// per year visited; years are skipped wholesale through the bit sets.
pub(crate) fn next_local_match(fields: &Fields, local: i64) -> Option<i64> {
    if local > MAX_LOCAL {
        return None;
    }
    let (mut year, mut month, mut day) = civil_from_days(local.div_euclid(SECS_PER_DAY));
    let second_of_day = local.rem_euclid(SECS_PER_DAY) as u32;
    let mut hour = second_of_day / 3_600;
    let mut minute = second_of_day / 60 % 60;
    let mut second = second_of_day % 60;
    loop {
        if year > i64::from(MAX_YEAR) {
            return None;
        }
        if let Some(years) = &fields.years {
            let wanted = years.next_at_or_after(year)?;
            if wanted != year {
                (year, month, day, hour, minute, second) = (wanted, 1, 1, 0, 0, 0);
            }
        }
        let Some(next_month) = next_bit(fields.months, month) else {
            (year, month, day, hour, minute, second) = (year + 1, 1, 1, 0, 0, 0);
            continue;
        };
        if next_month != month {
            (month, day, hour, minute, second) = (next_month, 1, 0, 0, 0);
        }
        let Some(next_day) = next_bit(day_mask(fields, year, month), day) else {
            // Month 13 finds no month bit above and so rolls the year over.
            (month, day, hour, minute, second) = (month + 1, 1, 0, 0, 0);
            continue;
        };
        if next_day != day {
            (day, hour, minute, second) = (next_day, 0, 0, 0);
        }
        let Some(next_hour) = next_bit(fields.hours, hour) else {
            // A day past the month's end finds no day bit and rolls over.
            (day, hour, minute, second) = (day + 1, 0, 0, 0);
            continue;
        };
        if next_hour != hour {
            (hour, minute, second) = (next_hour, 0, 0);
        }
        let Some(next_minute) = next_bit(fields.minutes, minute) else {
            (hour, minute, second) = (hour + 1, 0, 0);
            continue;
        };
        if next_minute != minute {
            (minute, second) = (next_minute, 0);
        }
        let Some(next_second) = next_bit(fields.seconds, second) else {
            (minute, second) = (minute + 1, 0);
            continue;
        };
        let days = days_from_civil(year, month, day);
        return Some(days * SECS_PER_DAY + i64::from(hour) * 3_600 + i64::from(minute) * 60 + i64::from(next_second));
    }
}

/// Whole seconds at or below `instant`.
fn floor_second(instant: Timestamp) -> i64 {
    let secs = instant.as_second();
    if instant.subsec_nanosecond() < 0 {
        secs - 1
    } else {
        secs
    }
}

fn offset_at(tz: &TimeZone, instant: i64) -> Option<i64> {
    let ts = Timestamp::from_second(instant).ok()?;
    Some(i64::from(tz.to_offset(ts).seconds()))
}

/// The transition that began the segment containing `instant` (at or
/// before it), with the offset in force just before that transition.
fn segment_start(tz: &TimeZone, instant: i64) -> Option<(i64, i64)> {
    // `preceding` yields transitions strictly before its argument, so asking
    // one second later also finds a transition at `instant` itself.
    let probe = Timestamp::from_second(instant.checked_add(1)?).ok()?;
    let transition = tz.preceding(probe).next()?;
    let at = transition.timestamp().as_second();
    let before = offset_at(tz, at.checked_sub(1)?)?;
    Some((at, before))
}

/// The next fire of a calendar expression strictly after `after` in `tz`.
pub(crate) fn next_calendar(fields: &Fields, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
    let mut instant = floor_second(after).checked_add(1)?;
    for _ in 0..MAX_SEGMENTS {
        if instant > LAST_INSTANT {
            return None;
        }
        let here = Timestamp::from_second(instant).ok()?;
        let offset = i64::from(tz.to_offset(here).seconds());
        let mut local = instant + offset;
        if fields.fixed_time
            && let Some((at, before)) = segment_start(tz, instant)
        {
            if before > offset {
                // The segment began with a fold: a fixed-time job already
                // fired for the repeated wall-clock times at their first
                // occurrence, before the fold.
                local = local.max(at + before);
            } else if before < offset
                && at == instant
                && next_local_match(fields, at + before).is_some_and(|m| m < at + offset)
            {
                // This instant ends a gap that skipped a matching wall-clock
                // time, so a fixed-time job fires now, at the first instant
                // after the gap. Every other match in the same gap collapses
                // into this one fire, because the search then continues on
                // the far side of the gap. The walk below lands on the first
                // instant of every segment it does not jump over, and a jump
                // only skips stretches without matches, so every gap that
                // matters is seen here.
                return Some(here);
            }
        }
        let found = next_local_match(fields, local);
        let Some(transition) = tz.following(here).next() else {
            // The offset never changes again, so the wall clock maps straight
            // back to the instant.
            return Timestamp::from_second(found? - offset).ok();
        };
        let segment_end = transition.timestamp().as_second();
        if let Some(matched) = found
            && matched - offset < segment_end
        {
            return Timestamp::from_second(matched - offset).ok();
        }
        if segment_end - instant >= JUMP_MARGIN {
            // From `instant + JUMP_MARGIN` on, the wall clock stays above the
            // start of this search whatever the offsets do, and until
            // `matched - offset - JUMP_MARGIN` it stays below the match, so no
            // instant in between can fire, not even through a gap. With no
            // match at all nothing can ever fire again.
            let matched = found?;
            instant = segment_end.max(matched - offset - JUMP_MARGIN);
        } else {
            instant = segment_end;
        }
    }
    None
}

/// The next tick of `@every period` strictly after `after`: the next multiple
/// of the period since the Unix epoch.
pub(crate) fn next_every(period: i64, after: Timestamp) -> Option<Timestamp> {
    let secs = floor_second(after);
    let next = secs.div_euclid(period).checked_add(1)?.checked_mul(period)?;
    if next > MAX_LOCAL {
        return None;
    }
    Timestamp::from_second(next).ok()
}
