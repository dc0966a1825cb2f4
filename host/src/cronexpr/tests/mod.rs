//! Owns the test suite of the cron expression module and the helpers its parts share.

mod cron_crate;
mod dst;
mod explain;
mod oracle;
mod parse;
mod reference;
mod vixie_corners;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::{CronExpr, parse_timezone};

/// Parses an RFC 3339 instant written in a test.
pub(crate) fn ts(text: &str) -> Timestamp {
    text.parse().unwrap_or_else(|e| panic!("bad instant {text:?}: {e}"))
}

/// Looks a zone up through the module's own lookup, as a job would.
pub(crate) fn zone(name: &str) -> TimeZone {
    parse_timezone(name).unwrap_or_else(|e| panic!("{e}"))
}

/// The first `count` fires of `expr` after `after` in zone `tz`, as RFC 3339
/// UTC strings, so that expectations can be written out literally.
pub(crate) fn fires(expr: &str, tz: &str, after: &str, count: usize) -> Vec<String> {
    let expr = CronExpr::parse(expr).unwrap_or_else(|e| panic!("{expr:?}: {e}"));
    let tz = zone(tz);
    expr.iter_after(ts(after), &tz)
        .take(count)
        .map(|t| t.to_string())
        .collect()
}

/// A tiny deterministic PRNG (xorshift64*), so the randomized tests need no
/// extra crate and always see the same inputs.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `low..=high`.
    pub(crate) fn range(&mut self, low: u32, high: u32) -> u32 {
        low + (self.next_u64() % u64::from(high - low + 1)) as u32
    }

    /// True with probability `percent` / 100.
    pub(crate) fn chance(&mut self, percent: u32) -> bool {
        self.range(0, 99) < percent
    }
}
