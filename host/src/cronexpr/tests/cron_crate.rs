//! Owns the comparison with the `cron` crate (0.17), a second implementation
//! written by other people, on the 6- and 7-field expressions whose meaning
//! both share: UTC, years 1970–2100, and at most one of day-of-month and
//! day-of-week restricted (the crate ANDs the two where Vixie cron ORs
//! them). Why the crate is not sandcron's parser is in ARCHITECTURE.md
//! ("Why not the `cron` crate"): it reads day-of-week 7 as Saturday, cannot
//! schedule past 2100, and breaks the documented DST rule.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::super::CronExpr;
use super::Rng;

/// One generated field, written both ways.
struct Field {
    sandcron: String,
    crate_text: String,
}

/// A list of 1–3 items over `low..=high`: values, ranges and stepped ranges
/// or stars. `shift` is added to every value in the crate's text (its
/// day-of-week counts from 1 = Sunday where sandcron's counts from 0).
fn field(rng: &mut Rng, low: u32, high: u32, shift: u32) -> Field {
    if rng.chance(30) {
        return Field {
            sandcron: "*".into(),
            crate_text: "*".into(),
        };
    }
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..rng.range(1, 3) {
        let a = rng.range(low, high);
        let b = rng.range(a, high);
        // Steps up to the field's width: the crate refuses larger ones.
        let step = rng.range(1, (high - low).max(1));
        let (item, shifted) = match rng.range(0, 3) {
            0 => (a.to_string(), (a + shift).to_string()),
            1 => (format!("{a}-{b}"), format!("{}-{}", a + shift, b + shift)),
            2 => (format!("{a}-{b}/{step}"), format!("{}-{}/{step}", a + shift, b + shift)),
            _ if shift == 0 => (format!("*/{step}"), format!("*/{step}")),
            _ => (a.to_string(), (a + shift).to_string()),
        };
        ours.push(item);
        theirs.push(shifted);
    }
    Field {
        sandcron: ours.join(","),
        crate_text: theirs.join(","),
    }
}

/// A 6- or 7-field expression in sandcron's dialect and the crate's.
fn expression(rng: &mut Rng) -> (String, String) {
    let seconds = field(rng, 0, 59, 0);
    let minutes = field(rng, 0, 59, 0);
    let hours = field(rng, 0, 23, 0);
    let months = field(rng, 1, 12, 0);
    // At most one day field restricted, so both read the same days.
    let star = || Field {
        sandcron: "*".into(),
        crate_text: "*".into(),
    };
    let (dom, dow) = match rng.range(0, 2) {
        0 => (field(rng, 1, 31, 0), star()),
        1 => (star(), field(rng, 0, 6, 1)),
        _ => (star(), star()),
    };
    let mut fields = vec![seconds, minutes, hours, dom, months, dow];
    if rng.chance(40) {
        fields.push(field(rng, 1970, 2100, 0));
    }
    let ours: Vec<&str> = fields.iter().map(|f| f.sandcron.as_str()).collect();
    let theirs: Vec<&str> = fields.iter().map(|f| f.crate_text.as_str()).collect();
    (ours.join(" "), theirs.join(" "))
}

#[test]
fn agrees_with_the_cron_crate_where_the_dialects_coincide() {
    const EXPRESSIONS: usize = 1500;
    const FIRES: usize = 6;
    const YEAR_2101: i64 = 4_133_980_800;
    let mut rng = Rng::new(0x5eed_c407);
    let mut mismatches = Vec::new();
    let mut compared = 0usize;
    for _ in 0..EXPRESSIONS {
        let (ours, theirs) = expression(&mut rng);
        let expr = CronExpr::parse(&ours).unwrap_or_else(|e| panic!("{ours:?} does not parse: {e}"));
        let schedule = cron::Schedule::from_str(&theirs)
            .unwrap_or_else(|e| panic!("the crate refuses {theirs:?} ({ours:?}): {e}"));
        // An instant between 1971 and 2090, on a whole second.
        let after_s = i64::from(rng.range(31_536_000, 3_786_825_600));
        let after = Timestamp::from_second(after_s).expect("in range");
        // The crate ends in 2100 (sandcron in 2199): only fires before 2101
        // are compared.
        let ours_fires: Vec<i64> = expr
            .iter_after(after, &TimeZone::UTC)
            .take(FIRES)
            .map(|t| t.as_second())
            .filter(|s| *s < YEAR_2101)
            .collect();
        let start = DateTime::<Utc>::from_timestamp(after_s, 0).expect("in range");
        let theirs_fires: Vec<i64> = schedule
            .after(&start)
            .take(FIRES)
            .map(|t| t.timestamp())
            .filter(|s| *s < YEAR_2101)
            .collect();
        compared += ours_fires.len();
        if ours_fires != theirs_fires {
            mismatches.push(format!(
                "{ours:?} (crate: {theirs:?}) after {after}: sandcron {ours_fires:?}, cron crate {theirs_fires:?}"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {EXPRESSIONS} expressions disagree; first ones:\n{}",
        mismatches.len(),
        mismatches.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(compared > EXPRESSIONS * FIRES / 2, "only {compared} fires compared");
}
