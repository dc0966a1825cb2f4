//! Owns the brute-force oracles: naive second-by-second and minute-by-minute matchers, built from generated expression structures rather than the module's parser, compared with `next_after` in UTC and across real DST transitions.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};

use super::super::CronExpr;
use super::{Rng, ts, zone};

/// One list item as the generator built it.
#[derive(Clone, Copy, Debug)]
enum Item {
    /// `*` (step 1) or `*/n`.
    Star(u32),
    /// `v`.
    Value(u32),
    /// `a-b` (step 1) or `a-b/n`.
    Range(u32, u32, u32),
    /// `a/n`.
    From(u32, u32),
}

/// The bounds of a field: its values, and where `a/n` stops.
#[derive(Clone, Copy)]
struct Bounds {
    low: u32,
    high: u32,
    step_high: u32,
}

const SECOND: Bounds = Bounds {
    low: 0,
    high: 59,
    step_high: 59,
};
const MINUTE: Bounds = Bounds {
    low: 0,
    high: 59,
    step_high: 59,
};
const HOUR: Bounds = Bounds {
    low: 0,
    high: 23,
    step_high: 23,
};
const DOM: Bounds = Bounds {
    low: 1,
    high: 31,
    step_high: 31,
};
const MONTH: Bounds = Bounds {
    low: 1,
    high: 12,
    step_high: 12,
};
const DOW: Bounds = Bounds {
    low: 0,
    high: 7,
    step_high: 6,
};
const YEAR: Bounds = Bounds {
    low: 1970,
    high: 2199,
    step_high: 2199,
};

impl Item {
    fn text(self) -> String {
        match self {
            Item::Star(1) => "*".to_string(),
            Item::Star(step) => format!("*/{step}"),
            Item::Value(v) => v.to_string(),
            Item::Range(a, b, 1) => format!("{a}-{b}"),
            Item::Range(a, b, step) => format!("{a}-{b}/{step}"),
            Item::From(a, step) => format!("{a}/{step}"),
        }
    }

    /// Membership written straight from the dialect's definition.
    fn has(self, v: u32, bounds: Bounds) -> bool {
        match self {
            Item::Star(step) => v >= bounds.low && v <= bounds.high && (v - bounds.low).is_multiple_of(step),
            Item::Value(x) => v == x,
            Item::Range(a, b, step) => a <= v && v <= b && (v - a).is_multiple_of(step),
            Item::From(a, step) => a <= v && v <= bounds.step_high.max(a) && (v - a).is_multiple_of(step),
        }
    }
}

#[derive(Clone, Debug)]
struct Field(Vec<Item>);

impl Field {
    fn text(&self) -> String {
        self.0.iter().map(|i| i.text()).collect::<Vec<_>>().join(",")
    }

    fn has(&self, v: u32, bounds: Bounds) -> bool {
        self.0.iter().any(|i| i.has(v, bounds))
    }

    /// Vixie's flag: the field's text begins with `*`.
    fn starts_with_star(&self) -> bool {
        matches!(self.0.first(), Some(Item::Star(_)))
    }
}

/// A generated expression with its own naive matcher.
#[derive(Clone, Debug)]
struct Generated {
    second: Option<Field>,
    minute: Field,
    hour: Field,
    dom: Field,
    month: Field,
    dow: Field,
    year: Option<Field>,
}

impl Generated {
    fn text(&self) -> String {
        let mut parts = Vec::new();
        if let Some(second) = &self.second {
            parts.push(second.text());
        }
        for field in [&self.minute, &self.hour, &self.dom, &self.month, &self.dow] {
            parts.push(field.text());
        }
        if let Some(year) = &self.year {
            parts.push(year.text());
        }
        parts.join(" ")
    }

    fn fixed_time(&self) -> bool {
        let second_star = self.second.as_ref().is_some_and(Field::starts_with_star);
        !(second_star || self.minute.starts_with_star() || self.hour.starts_with_star())
    }

    /// Whether the wall-clock datetime matches every field, with Vixie's
    /// day rule.
    fn matches(&self, dt: DateTime) -> bool {
        let second_ok = match &self.second {
            Some(field) => field.has(dt.second() as u32, SECOND),
            None => dt.second() == 0,
        };
        let year_ok = match &self.year {
            Some(field) => field.has(dt.year() as u32, YEAR),
            None => true,
        };
        if !(second_ok
            && year_ok
            && self.minute.has(dt.minute() as u32, MINUTE)
            && self.hour.has(dt.hour() as u32, HOUR)
            && self.month.has(dt.month() as u32, MONTH))
        {
            return false;
        }
        let weekday = dt.weekday().to_sunday_zero_offset() as u32;
        let dom_ok = self.dom.has(dt.day() as u32, DOM);
        let dow_ok = self.dow.has(weekday, DOW) || (weekday == 0 && self.dow.has(7, DOW));
        if self.dom.starts_with_star() || self.dow.starts_with_star() {
            dom_ok && dow_ok
        } else {
            dom_ok || dow_ok
        }
    }
}

/// Picks a value, preferring `hints` (when given) half of the time.
fn pick(rng: &mut Rng, bounds: Bounds, hints: &[u32]) -> u32 {
    if !hints.is_empty() && rng.chance(50) {
        let h = hints[rng.range(0, hints.len() as u32 - 1) as usize];
        return h.clamp(bounds.low, bounds.high);
    }
    rng.range(bounds.low, bounds.high)
}

fn gen_item(rng: &mut Rng, bounds: Bounds, hints: &[u32]) -> Item {
    let span = bounds.high - bounds.low + 1;
    match rng.range(0, 9) {
        0..=3 => Item::Value(pick(rng, bounds, hints)),
        4..=5 => {
            let a = pick(rng, bounds, hints);
            let b = rng.range(a, bounds.high.min(a + span / 3 + 1));
            Item::Range(a, b, 1)
        }
        6..=7 => {
            let a = pick(rng, bounds, hints);
            let b = rng.range(a, bounds.high);
            Item::Range(a, b, rng.range(1, (b - a).max(1) + 2))
        }
        _ => Item::From(pick(rng, bounds, hints), rng.range(1, span / 2 + 2)),
    }
}

/// A field that is `*` with probability `star` percent, `*/n` sometimes, and
/// otherwise a list (which may contain a `*` item after its first one, so
/// that the star flag is seen to depend on the first character only).
fn gen_field(rng: &mut Rng, bounds: Bounds, star: u32, hints: &[u32]) -> Field {
    let span = bounds.high - bounds.low + 1;
    let roll = rng.range(0, 99);
    if roll < star {
        return Field(vec![Item::Star(1)]);
    }
    if roll < star + 12 {
        return Field(vec![Item::Star(rng.range(2, span / 2 + 1))]);
    }
    let count = [1, 1, 1, 2, 2, 3][rng.range(0, 5) as usize];
    let mut items: Vec<Item> = (0..count).map(|_| gen_item(rng, bounds, hints)).collect();
    if rng.chance(5) {
        items.push(Item::Star(rng.range(2, span / 2 + 1)));
    }
    Field(items)
}

struct Shape {
    seconds: bool,
    years: bool,
}

fn gen_expr(rng: &mut Rng, shape: &Shape, hour_hints: &[u32], year_hints: &[u32]) -> Generated {
    Generated {
        second: shape.seconds.then(|| gen_field(rng, SECOND, 25, &[0, 30, 59])),
        minute: gen_field(rng, MINUTE, 25, &[0, 15, 30, 45, 59]),
        hour: gen_field(rng, HOUR, 35, hour_hints),
        dom: gen_field(rng, DOM, 65, &[]),
        month: gen_field(rng, MONTH, 75, &[]),
        dow: gen_field(rng, DOW, 60, &[0, 7]),
        year: shape.years.then(|| {
            let mut field = gen_field(rng, YEAR, 30, year_hints);
            // Open-ended year items would rarely hit a short window.
            if rng.chance(60) {
                field.0.push(Item::Value(year_hints[0]));
            }
            field
        }),
    }
}

/// Every instant in `(from, to]` on a `step`-second grid at which a naive
/// reading of the rules says the expression fires.
///
/// Wildcard expressions fire whenever the wall clock matches. Fixed-time
/// ones fire at the first instant showing a matching wall-clock time, and
/// at the end of a gap that skipped over a matching wall-clock time.
fn oracle_fires(expr: &Generated, tz: &TimeZone, from: i64, to: i64, step: i64, limit: usize) -> Vec<i64> {
    let offset_at = |s: i64| {
        i64::from(
            tz.to_offset(Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH))
                .seconds(),
        )
    };
    let wall = |local: i64| Offset::UTC.to_datetime(Timestamp::from_second(local).unwrap_or(Timestamp::UNIX_EPOCH));
    let mut offsets: Vec<i64> = (-4..=4).map(|k| offset_at(from + k * 43_200)).collect();
    offsets.extend((-4..=4).map(|k| offset_at(to + k * 43_200)));
    offsets.sort_unstable();
    offsets.dedup();
    let fixed = expr.fixed_time();
    let mut out = Vec::new();
    let mut s = from - from.rem_euclid(step) + step;
    while s <= to && out.len() < limit {
        let offset = offset_at(s);
        let local = s + offset;
        let matches = expr.matches(wall(local));
        let fires = if !fixed {
            matches
        } else {
            // Was this wall-clock time already shown at an earlier instant?
            let seen_before = offsets
                .iter()
                .any(|&other| other != offset && local - other < s && offset_at(local - other) == other);
            let before = offset_at(s - 1);
            // Did a gap just skip over a matching wall-clock time?
            let gap_match = before < offset
                && (s + before..s + offset)
                    .step_by(step as usize)
                    .any(|x| expr.matches(wall(x)));
            (matches && !seen_before) || gap_match
        };
        if fires {
            out.push(s);
        }
        s += step;
    }
    out
}

fn module_fires(text: &str, tz: &TimeZone, from: i64, to: i64, limit: usize) -> Vec<i64> {
    let expr = CronExpr::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    let start = Timestamp::from_second(from).unwrap_or_else(|e| panic!("{e}"));
    expr.iter_after(start, tz)
        .map(|t| t.as_second())
        .take_while(|s| *s <= to)
        .take(limit)
        .collect()
}

fn show(seconds: &[i64]) -> Vec<String> {
    seconds
        .iter()
        .map(|s| Timestamp::from_second(*s).map(|t| t.to_string()).unwrap_or_default())
        .collect()
}

/// Compares the oracle with the module; returns how many fires agreed.
fn compare(expr: &Generated, tz: &TimeZone, tz_name: &str, from: i64, to: i64, step: i64) -> usize {
    const LIMIT: usize = 12;
    let text = expr.text();
    let expected = oracle_fires(expr, tz, from, to, step, LIMIT);
    let got = module_fires(&text, tz, from, to, LIMIT);
    assert_eq!(
        show(&got),
        show(&expected),
        "{text:?} in {tz_name} after {} (fixed-time: {})",
        show(&[from])[0],
        expr.fixed_time()
    );
    expected.len()
}

#[test]
fn brute_force_agrees_in_utc() {
    let mut rng = Rng::new(0x5eed_c0de);
    let utc = TimeZone::UTC;
    let low = ts("2000-01-01T00:00:00Z").as_second();
    let high = ts("2099-01-01T00:00:00Z").as_second();
    let mut fires = 0;
    let mut firing_exprs = 0;
    for round in 0..400 {
        // A years field needs the seconds field: seven fields in all.
        let shape = Shape {
            seconds: round % 2 == 1,
            years: round % 4 == 3,
        };
        let from = low + (rng.next_u64() % (high - low) as u64) as i64;
        let year = Offset::UTC
            .to_datetime(Timestamp::from_second(from).unwrap_or(Timestamp::UNIX_EPOCH))
            .year() as u32;
        let expr = gen_expr(&mut rng, &shape, &[], &[year]);
        let (window, step) = if shape.seconds { (86_400, 1) } else { (20 * 86_400, 60) };
        let found = compare(&expr, &utc, "UTC", from, from + window, step);
        fires += found;
        firing_exprs += usize::from(found > 0);
    }
    assert!(fires > 1_500, "only {fires} fires compared");
    assert!(firing_exprs > 200, "only {firing_exprs} expressions fired");
}

#[test]
fn brute_force_agrees_across_dst_transitions() {
    // Zones with hour, half-hour, midnight and whole-day transitions.
    let zones = [
        ("America/New_York", "2020-01-01T00:00:00Z", "2035-01-01T00:00:00Z"),
        ("Europe/London", "2020-01-01T00:00:00Z", "2035-01-01T00:00:00Z"),
        ("Australia/Lord_Howe", "2020-01-01T00:00:00Z", "2035-01-01T00:00:00Z"),
        ("America/Sao_Paulo", "2014-01-01T00:00:00Z", "2019-03-01T00:00:00Z"),
        ("Pacific/Apia", "2011-12-01T00:00:00Z", "2011-12-31T00:00:00Z"),
    ];
    let mut rng = Rng::new(0xd57_0001);
    let mut fires = 0;
    let mut fixed_fires = 0;
    for round in 0..500 {
        let (name, low, high) = zones[round % zones.len()];
        let tz = zone(name);
        let low = ts(low).as_second();
        let high = ts(high).as_second();
        let start = low + (rng.next_u64() % (high - low) as u64) as i64;
        let start_ts = Timestamp::from_second(start).unwrap_or(Timestamp::UNIX_EPOCH);
        let Some(transition) = tz.following(start_ts).next() else {
            panic!("{name} has no transition after {start_ts}");
        };
        let at = transition.timestamp().as_second();
        // Hours around the transition's wall-clock time make hits likely.
        let before = tz.to_offset(Timestamp::from_second(at - 1).unwrap_or(start_ts));
        let wall = before.to_datetime(transition.timestamp());
        let h = wall.hour() as u32;
        let hints = [h, (h + 23) % 24, (h + 1) % 24, (h + 22) % 24];
        let shape = Shape {
            seconds: round % 3 == 2,
            years: round % 6 == 5,
        };
        let expr = gen_expr(&mut rng, &shape, &hints, &[wall.year() as u32]);
        let (half_window, step) = if shape.seconds { (5_400, 1) } else { (2 * 86_400, 60) };
        // Start on, just before, or well before the transition.
        let from = at - [half_window, 1, 0, 1_800, 3_600][rng.range(0, 4) as usize];
        let found = compare(&expr, &tz, name, from, at + half_window, step);
        fires += found;
        if expr.fixed_time() {
            fixed_fires += found;
        }
    }
    assert!(fires > 2_000, "only {fires} fires compared");
    assert!(fixed_fires > 300, "only {fixed_fires} fixed-time fires compared");
}
