//! Owns sandcron's cron expression dialect: parsing, next-fire computation in IANA time zones, and English descriptions.
//!
//! The module does no I/O and never reads a clock: every computation takes the
//! reference instant as an argument, so that all workers of a cluster derive
//! identical ticks from identical inputs.
//!
//! # Dialect
//!
//! * **5 fields** are classic Vixie cron, exactly:
//!   `minute hour day-of-month month day-of-week`. The seconds are implicitly `0`.
//! * **6 fields** add a leading seconds field:
//!   `second minute hour day-of-month month day-of-week`.
//! * **7 fields** add a leading seconds field and a trailing years field:
//!   `second minute hour day-of-month month day-of-week year`. Years run from 1970
//!   through 2199 inclusive.
//!
//! Field ranges: second and minute 0–59, hour 0–23, day-of-month 1–31, month
//! 1–12, day-of-week 0–7 where both 0 and 7 mean Sunday (so `5-7` is Friday,
//! Saturday and Sunday), year 1970–2199.
//!
//! Every field is a comma-separated list of items, and each item is one of:
//!
//! * `*`: every value of the field;
//! * `*/n`: every `n`th value starting at the field's minimum;
//! * `v`: the single value `v`;
//! * `a-b`: the values `a` through `b` inclusive (`a` must not be after `b`);
//! * `a-b/n`: every `n`th value from `a` through `b`;
//! * `a/n`: a common extension meaning `a-max/n`, where `max` is the field's
//!   maximum. For day-of-week the maximum used here is 6 (Saturday), so
//!   `1/2` is Monday, Wednesday and Friday and never wraps into the next
//!   week's Sunday; `7/n` is just Sunday.
//!
//! Months accept the names `JAN`–`DEC` and days of the week `SUN`–`SAT`,
//! case-insensitively, wherever a number is allowed, including inside ranges
//! and lists. As the end of a day-of-week range, `SUN` means 7, so `FRI-SUN`
//! reads like `5-7`. A step larger than the field's span is accepted, as in
//! Vixie cron, and selects only the range's start.
//!
//! `?` is accepted as a synonym for `*` in the day-of-month and day-of-week
//! fields only (for Quartz users), and only as the whole field.
//!
//! **Day matching follows Vixie cron.** The day-of-month and day-of-week fields
//! are each flagged "star" when the field's text begins with `*` (or is `?`), so
//! `*` and `*/2` are star while `1-31` is not. When either field is star, a day
//! matches when both fields match (in effect the starred field restricts with
//! AND); when both are restricted, a day matches when either field matches (OR).
//!
//! Macros (case-insensitive): `@yearly` and `@annually` (`0 0 1 1 *`),
//! `@monthly` (`0 0 1 * *`), `@weekly` (`0 0 * * 0`), `@daily` and `@midnight`
//! (`0 0 * * *`), `@hourly` (`0 * * * *`), and `@every <duration>`, where the
//! duration is a sequence of `<integer><unit>` parts with units `d`, `h`, `m` and
//! `s` (for example `@every 90s`, `@every 1h30m`, `@every 2d`, `@every 1h 30m`),
//! from 1s through 3660d, whole seconds only. `@every` ticks fall on the
//! multiples of the duration since the Unix epoch, so every worker computes the
//! same ticks no matter when it started, and they are pure elapsed time,
//! unaffected by time zones. `@reboot` and Quartz's `L`, `W` and `#` are
//! rejected as unsupported.
//!
//! Fields are separated by any run of spaces and tabs; leading and trailing
//! whitespace is ignored. Expressions longer than [`MAX_EXPR_LEN`] bytes, or with
//! more than [`MAX_LIST_ITEMS`] items in one field, are rejected early so hostile
//! input costs little.
//!
//! # Time zones and daylight saving time
//!
//! Ticks are computed in the job's zone. An expression is **fixed-time** when
//! none of its second, minute and hour fields begins with `*` (for 5 fields the
//! implicit seconds field counts as the fixed `0`); `@yearly`, `@monthly`,
//! `@weekly` and `@daily` are fixed-time, `@hourly` is not. Following Vixie cron
//! (man 8 cron):
//!
//! * A **fixed-time** expression fires once per matching local time even across
//!   a transition. A matching local time skipped by a spring-forward gap fires
//!   at the first instant after the gap, which is the transition instant itself
//!   (several skipped matches of one gap collapse into that single instant), and
//!   a local time repeated by a fall-back fold fires only at its first
//!   occurrence.
//! * A **wildcard** expression follows real elapsed time: it does not fire for
//!   skipped local times and fires for both occurrences of repeated ones.
//! * `@every` is pure elapsed time.
//!
//! Fire times are whole seconds strictly after the given instant. Nothing fires
//! after local year 2199 (for `@every`, after UTC year 2199). A years field
//! limits fires to 1970 onwards; without one, earlier instants work too.
//!
//! The fold rule treats the wall-clock times of the span just before a fold as
//! their first occurrence. That holds in every zone of the tzdb, where offset
//! segments last far longer than the hour or half hour a clock goes back.
//!
//! # Algorithm
//!
//! The search walks the zone's offset segments (the spans between two
//! transitions). Inside a segment local time and instants correspond one to
//! one, so the next matching local datetime is found by a field-by-field
//! "next match at or after" search over bit sets, which costs a handful of
//! steps per call rather than a scan over minutes or seconds. Gaps and folds
//! are handled at the segment boundaries, and long stretches without matches
//! are skipped in one jump.
//!
//! Zones are looked up in the tzdb bundled into the binary (see
//! [`parse_timezone`]) so that every worker of a cluster uses the same rules.

mod explain;
mod next;
mod parse;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use jiff::tz::{TimeZone, TimeZoneDatabase};
use jiff::{SignedDuration, Timestamp};

use crate::compact::SharedCache;

/// The longest expression text accepted, in bytes.
pub const MAX_EXPR_LEN: usize = 1024;

/// The most comma-separated items accepted in one field.
pub const MAX_LIST_ITEMS: usize = 100;

/// The first year a years field may name.
pub const MIN_YEAR: i32 = 1970;

/// The last year in which anything fires.
pub const MAX_YEAR: i32 = 2199;

/// The longest time zone name accepted, in bytes.
pub const MAX_TIMEZONE_NAME_LEN: usize = 128;

/// One field of a cron expression, used to say where a parse error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CronField {
    /// The seconds field of 6- and 7-field expressions.
    Second,
    /// The minutes field.
    Minute,
    /// The hours field.
    Hour,
    /// The day-of-month field.
    DayOfMonth,
    /// The month field.
    Month,
    /// The day-of-week field.
    DayOfWeek,
    /// The years field of 7-field expressions.
    Year,
}

impl CronField {
    /// The lowercase name used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            CronField::Second => "second",
            CronField::Minute => "minute",
            CronField::Hour => "hour",
            CronField::DayOfMonth => "day-of-month",
            CronField::Month => "month",
            CronField::DayOfWeek => "day-of-week",
            CronField::Year => "year",
        }
    }
}

impl fmt::Display for CronField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a cron expression was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// The text was empty or only whitespace.
    #[error("cron expression is empty")]
    Empty,
    /// The text exceeded [`MAX_EXPR_LEN`].
    #[error("cron expression is {len} bytes long, the limit is {max}")]
    TooLong {
        /// The length of the rejected text in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The text had the wrong number of fields.
    #[error("expected 5, 6 or 7 fields, found {found}")]
    FieldCount {
        /// How many fields were found.
        found: usize,
    },
    /// One field was malformed.
    #[error("{field} field \"{text}\": {reason}")]
    Field {
        /// The field at fault.
        field: CronField,
        /// The field's text as written.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The text started with `@` but named no known macro.
    #[error("unknown macro \"{name}\"")]
    UnknownMacro {
        /// The macro as written.
        name: String,
    },
    /// A macro other than `@every` was followed by more text.
    #[error("macro \"{name}\" takes no arguments")]
    MacroArgument {
        /// The macro as written.
        name: String,
    },
    /// A recognised but deliberately unsupported feature, such as `@reboot`.
    #[error("{feature} is not supported: {why}")]
    Unsupported {
        /// The feature as written.
        feature: String,
        /// Why sandcron does not support it.
        why: String,
    },
    /// The duration of `@every` was malformed or out of range.
    #[error("@every duration \"{text}\": {reason}")]
    Every {
        /// The duration as written.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl CronError {
    /// The field an error is about, when it is about one field.
    pub fn field(&self) -> Option<CronField> {
        match self {
            CronError::Field { field, .. } => Some(*field),
            _ => None,
        }
    }
}

/// A set of years from [`MIN_YEAR`] through [`MAX_YEAR`], one bit per year.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct YearSet {
    bits: [u64; 4],
}

impl YearSet {
    pub(crate) fn new() -> YearSet {
        YearSet { bits: [0; 4] }
    }

    pub(crate) fn insert(&mut self, year: i32) {
        if (MIN_YEAR..=MAX_YEAR).contains(&year) {
            let i = (year - MIN_YEAR) as usize;
            self.bits[i / 64] |= 1u64 << (i % 64);
        }
    }

    pub(crate) fn contains(&self, year: i64) -> bool {
        if !(i64::from(MIN_YEAR)..=i64::from(MAX_YEAR)).contains(&year) {
            return false;
        }
        let i = (year - i64::from(MIN_YEAR)) as usize;
        self.bits[i / 64] & (1u64 << (i % 64)) != 0
    }

    /// The first year in the set at or after `year`.
    pub(crate) fn next_at_or_after(&self, year: i64) -> Option<i64> {
        let start = year.max(i64::from(MIN_YEAR));
        if start > i64::from(MAX_YEAR) {
            return None;
        }
        let mut i = (start - i64::from(MIN_YEAR)) as usize;
        while i < 256 {
            let word = self.bits[i / 64] & (!0u64 << (i % 64));
            if word != 0 {
                let found = (i / 64) * 64 + word.trailing_zeros() as usize;
                return Some(i64::from(MIN_YEAR) + found as i64);
            }
            i = (i / 64 + 1) * 64;
        }
        None
    }

    /// All years in the set, ascending.
    pub(crate) fn years(&self) -> Vec<i32> {
        (MIN_YEAR..=MAX_YEAR).filter(|y| self.contains(i64::from(*y))).collect()
    }

    pub(crate) fn is_full(&self) -> bool {
        (MIN_YEAR..=MAX_YEAR).all(|y| self.contains(i64::from(y)))
    }
}

/// The parsed fields of a calendar expression, as bit sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fields {
    /// Bit `s` is set when second `s` matches.
    pub(crate) seconds: u64,
    /// Bit `m` is set when minute `m` matches.
    pub(crate) minutes: u64,
    /// Bit `h` is set when hour `h` matches.
    pub(crate) hours: u64,
    /// Bit `d` (1–31) is set when day-of-month `d` matches.
    pub(crate) days_of_month: u64,
    /// Bit `m` (1–12) is set when month `m` matches.
    pub(crate) months: u64,
    /// Bit `w` (0–6, Sunday = 0) is set when weekday `w` matches.
    pub(crate) days_of_week: u64,
    /// The day-of-week bits repeated seven times, so that a month's weekday
    /// mask is one shift away whatever weekday the month starts on.
    pub(crate) dow_pattern: u64,
    /// `None` when the expression has no years field.
    pub(crate) years: Option<YearSet>,
    /// Vixie's DOM_STAR flag: the day-of-month text begins with `*` (or is `?`).
    pub(crate) dom_star: bool,
    /// Vixie's DOW_STAR flag: the day-of-week text begins with `*` (or is `?`).
    pub(crate) dow_star: bool,
    /// None of the second, minute and hour fields begins with `*`.
    pub(crate) fixed_time: bool,
    /// How many fields the text had (macros count as 5).
    pub(crate) field_count: u8,
}

/// What an expression denotes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A calendar expression (five to seven fields or a calendar macro).
    Calendar(Fields),
    /// `@every`: a period in whole seconds, aligned to the Unix epoch.
    Every(i64),
}

/// A parsed cron expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronExpr {
    text: String,
    kind: Kind,
}

impl CronExpr {
    /// Parses an expression in the dialect described in the module docs.
    pub fn parse(text: &str) -> Result<CronExpr, CronError> {
        let (text, kind) = parse::parse(text)?;
        Ok(CronExpr { text, kind })
    }

    /// The original text, trimmed.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the expression is fixed-time in Vixie's sense (see the module
    /// docs); `@every` is not, since it is pure elapsed time.
    pub fn is_fixed_time(&self) -> bool {
        match &self.kind {
            Kind::Calendar(fields) => fields.fixed_time,
            Kind::Every(_) => false,
        }
    }

    /// The period of an `@every` expression.
    pub fn interval(&self) -> Option<SignedDuration> {
        match &self.kind {
            Kind::Calendar(_) => None,
            Kind::Every(secs) => Some(SignedDuration::from_secs(*secs)),
        }
    }

    /// The first fire strictly after `after`, in zone `tz`; `None` if it never
    /// fires again (nothing fires after year 2199).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        match &self.kind {
            Kind::Calendar(fields) => next::next_calendar(fields, after, tz),
            Kind::Every(period) => next::next_every(*period, after),
        }
    }

    /// The fires strictly after `after`, in order, until the expression stops
    /// firing.
    pub fn iter_after<'a>(&'a self, after: Timestamp, tz: &'a TimeZone) -> impl Iterator<Item = Timestamp> + 'a {
        let mut cursor = Some(after);
        std::iter::from_fn(move || {
            let next = self.next_after(cursor?, tz);
            cursor = next;
            next
        })
    }

    /// An English description, such as "at 02:30 every day" or
    /// "every 15 minutes".
    pub fn explain(&self) -> String {
        match &self.kind {
            Kind::Calendar(fields) => explain::explain_calendar(fields),
            Kind::Every(period) => explain::explain_every(*period),
        }
    }
}

impl FromStr for CronExpr {
    type Err = CronError;

    fn from_str(s: &str) -> Result<CronExpr, CronError> {
        CronExpr::parse(s)
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Expressions travel as their text, so that what a user wrote is what is
/// stored and shown back.
impl serde::Serialize for CronExpr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for CronExpr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<CronExpr, D::Error> {
        let text = String::deserialize(deserializer)?;
        CronExpr::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Why a [`Schedule`] could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression was rejected.
    #[error(transparent)]
    Cron(#[from] CronError),
    /// The zone name is not in the bundled tzdb.
    #[error("unknown time zone \"{0}\"")]
    UnknownTimeZone(String),
}

/// A cron expression bound to its IANA zone, the unit a job carries.
///
/// The compiled expression is shared by every schedule spelled the same way
/// (a process-wide cache, see [`SharedCache`]): 100k jobs on `0 * * * *`
/// keep one copy, and a schedule is two pointers.
#[derive(Clone, Debug)]
pub struct Schedule {
    expr: Arc<CronExpr>,
    /// From the bundled tzdb, so it knows its IANA name (kept once, there).
    timezone: TimeZone,
}

impl Schedule {
    /// Parses `expr` and looks `timezone` up in the bundled tzdb.
    pub fn new(expr: &str, timezone: &str) -> Result<Schedule, ScheduleError> {
        static COMPILED: SharedCache<CronExpr> = SharedCache::new();
        let expr = COMPILED.get_or_build(expr, || CronExpr::parse(expr).map(Arc::new))?;
        let timezone = parse_timezone(timezone)?;
        Ok(Schedule { expr, timezone })
    }

    /// The expression.
    pub fn expr(&self) -> &CronExpr {
        &self.expr
    }

    /// The zone the expression is evaluated in.
    pub fn timezone(&self) -> &TimeZone {
        &self.timezone
    }

    /// The zone's IANA name, as spelled by the tzdb.
    pub fn timezone_name(&self) -> &str {
        // The canonical spelling from the database, so that "utc" and "UTC"
        // name the same zone in listings; every zone of the bundled tzdb has
        // one.
        self.timezone.iana_name().unwrap_or("UTC")
    }

    /// The first fire strictly after `after`; `None` if it never fires again.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        self.expr.next_after(after, &self.timezone)
    }

    /// The fires strictly after `after`, in order.
    pub fn iter_after(&self, after: Timestamp) -> impl Iterator<Item = Timestamp> + '_ {
        self.expr.iter_after(after, &self.timezone)
    }
}

/// The tzdb compiled into the binary. It is used even when other crates enable
/// jiff's system-zoneinfo features, because workers reading different system
/// databases could compute different ticks for the same job.
fn bundled_tzdb() -> &'static TimeZoneDatabase {
    static DB: OnceLock<TimeZoneDatabase> = OnceLock::new();
    DB.get_or_init(TimeZoneDatabase::bundled)
}

/// Looks up an IANA zone name (case-insensitively) in the bundled tzdb.
/// `UTC` works; empty, overlong and unknown names are rejected, and so is
/// `Etc/Unknown`, which jiff would otherwise accept as a stand-in for UTC.
pub fn parse_timezone(name: &str) -> Result<TimeZone, ScheduleError> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.len() > MAX_TIMEZONE_NAME_LEN || trimmed.eq_ignore_ascii_case("Etc/Unknown") {
        return Err(ScheduleError::UnknownTimeZone(truncate_for_message(name)));
    }
    bundled_tzdb()
        .get(trimmed)
        .map_err(|_| ScheduleError::UnknownTimeZone(trimmed.to_string()))
}

/// The IANA spelling of a zone name looked up case-insensitively
/// (`europe/berlin` is `Europe/Berlin`), so that a stored job names its
/// zone as the database does.
pub fn canonical_timezone(name: &str) -> Result<String, ScheduleError> {
    let zone = parse_timezone(name)?;
    Ok(zone.iana_name().unwrap_or(name.trim()).to_owned())
}

/// Keeps error messages short when a hostile caller sends a huge name.
fn truncate_for_message(text: &str) -> String {
    const KEEP: usize = MAX_TIMEZONE_NAME_LEN;
    if text.len() <= KEEP {
        return text.to_string();
    }
    let mut end = KEEP;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}
