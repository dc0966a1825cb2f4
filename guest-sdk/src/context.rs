//! The run context: which job, run, tick, trigger, attempt and fencing token
//! this run is, read from the `SANDCRON_*` environment variables the host sets.
//!
//! Parsing is separate from reading the environment ([`Context::from_lookup`])
//! so that code using a context can be tested without touching the process
//! environment (which Rust 2024 makes `unsafe` to change).

use std::fmt;
use std::str::FromStr;

/// The names of the environment variables sandcron sets for every run.
pub mod vars {
    /// The job's name, e.g. `nightly-report`.
    pub const JOB: &str = "SANDCRON_JOB";
    /// The run's id: unique, time-ordered (a lowercase ULID).
    pub const RUN_ID: &str = "SANDCRON_RUN_ID";
    /// The scheduled instant this run is for, RFC 3339 in UTC (`2026-11-22T00:00:00Z`).
    pub const TICK: &str = "SANDCRON_TICK";
    /// Why the run started: `schedule`, `manual`, `catchup`, `retry`,
    /// `dependency` or `rerun`.
    pub const TRIGGER: &str = "SANDCRON_TRIGGER";
    /// Which attempt at this tick this run is, starting at 1.
    pub const ATTEMPT: &str = "SANDCRON_ATTEMPT";
    /// The claim's fencing token (see [`Context::fence`](crate::Context::fence)).
    pub const FENCE: &str = "SANDCRON_FENCE";

    /// All of them, in the order [`Context`](crate::Context) reads them.
    pub const ALL: [&str; 6] = [JOB, RUN_ID, TICK, TRIGGER, ATTEMPT, FENCE];

    /// For a run started by another job's run (`on_success` / `on_failure`): that job.
    pub const PARENT_JOB: &str = "SANDCRON_PARENT_JOB";
    /// The run that started this one.
    pub const PARENT_RUN_ID: &str = "SANDCRON_PARENT_RUN_ID";
    /// How the parent run ended (`succeeded`, `failed`, …).
    pub const PARENT_STATUS: &str = "SANDCRON_PARENT_STATUS";
    /// For a shard of a broadcast job: which one, from 0.
    pub const SHARD_INDEX: &str = "SANDCRON_SHARD_INDEX";
    /// For a shard of a broadcast job: how many shards the tick has.
    pub const SHARD_COUNT: &str = "SANDCRON_SHARD_COUNT";
    /// For a run of an async job: the token its result must be reported with.
    pub const RUN_TOKEN: &str = "SANDCRON_RUN_TOKEN";
    /// For a run of an async job: where its result is reported.
    pub const RESULT_URL: &str = "SANDCRON_RESULT_URL";
}

/// What sandcron tells a run about itself.
///
/// ```
/// use sandcron_guest::{Context, Trigger};
///
/// let env = [
///     ("SANDCRON_JOB", "nightly-report"),
///     ("SANDCRON_RUN_ID", "01kakx3v7r8bq2m4v5w6x7y8z9"),
///     ("SANDCRON_TICK", "2026-11-22T00:00:00Z"),
///     ("SANDCRON_TRIGGER", "retry"),
///     ("SANDCRON_ATTEMPT", "2"),
///     ("SANDCRON_FENCE", "4711"),
/// ];
/// let lookup = |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
/// let ctx = Context::from_lookup(lookup)?;
///
/// assert_eq!(ctx.job(), "nightly-report");
/// assert_eq!(ctx.tick(), "2026-11-22T00:00:00Z");
/// assert_eq!(ctx.tick_unix(), 1_795_305_600);
/// assert_eq!(ctx.trigger(), Trigger::Retry);
/// assert_eq!(ctx.attempt(), 2);
/// assert_eq!(ctx.fence(), 4711);
/// # Ok::<(), sandcron_guest::ContextError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    job: String,
    run_id: String,
    tick: String,
    tick_unix: i64,
    trigger: Trigger,
    attempt: u32,
    fence: i64,
    parent: Option<Parent>,
    shard: Option<(u32, u32)>,
    report: Option<(String, Option<String>)>,
}

/// The run that started this one (see [`Context::parent`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    /// The parent's job.
    pub job: String,
    /// The parent run's id.
    pub run_id: String,
    /// How it ended: `succeeded` (for `on_success`) or a failure (`on_failure`).
    pub status: String,
}

impl Context {
    /// Reads the context from the environment sandcron sets for every run.
    ///
    /// Every variable in [`vars::ALL`] must be present and valid; the error
    /// names the first one that is not. Outside sandcron (a plain
    /// `wasmtime run`, a unit test) use [`Context::from_env_or_defaults`] or
    /// [`Context::from_lookup`].
    pub fn from_env() -> Result<Context, ContextError> {
        Context::from_lookup(read_env)
    }

    /// Like [`Context::from_env`], but a variable that is not set takes a
    /// local default instead of being an error: job `local`, run id `local`,
    /// tick `1970-01-01T00:00:00Z`, trigger `manual`, attempt 1, fence 0.
    ///
    /// Meant for running a guest by hand (`wasmtime run --env SANDCRON_JOB=x
    /// job.wasm`). A variable that is set but invalid is still an error.
    /// Fence 0 is below every fence sandcron hands out, so a local run can
    /// never win against a real one at a fenced external system.
    ///
    /// ```
    /// use sandcron_guest::{Context, Trigger};
    ///
    /// let ctx = Context::from_lookup_or_defaults(|name| (name == "SANDCRON_JOB").then(|| "demo".to_string()))?;
    /// assert_eq!((ctx.job(), ctx.run_id(), ctx.attempt(), ctx.fence()), ("demo", "local", 1, 0));
    /// assert_eq!(ctx.trigger(), Trigger::Manual);
    /// # Ok::<(), sandcron_guest::ContextError>(())
    /// ```
    pub fn from_env_or_defaults() -> Result<Context, ContextError> {
        Context::from_lookup_or_defaults(read_env)
    }

    /// Parses a context from any source of variables: `lookup` gets a name
    /// from [`vars`] and returns its value, or `None` if it is not set.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Context, ContextError> {
        let mut ctx = Context::parse(|var| lookup(var).ok_or(ContextError::Missing { var }))?;
        ctx.read_optional(&lookup)?;
        Ok(ctx)
    }

    /// The variables only some runs get: parent, shard, async report.
    fn read_optional(&mut self, lookup: &impl Fn(&str) -> Option<String>) -> Result<(), ContextError> {
        if let (Some(job), Some(run_id)) = (lookup(vars::PARENT_JOB), lookup(vars::PARENT_RUN_ID)) {
            self.parent = Some(Parent {
                job,
                run_id,
                status: lookup(vars::PARENT_STATUS).unwrap_or_default(),
            });
        }
        if let (Some(index), Some(count)) = (lookup(vars::SHARD_INDEX), lookup(vars::SHARD_COUNT)) {
            let index_n = index
                .parse::<u32>()
                .map_err(|_| ContextError::invalid(vars::SHARD_INDEX, &index, "not a whole number"))?;
            let count_n = match count.parse::<u32>() {
                Ok(n) if n > index_n => n,
                _ => {
                    return Err(ContextError::invalid(
                        vars::SHARD_COUNT,
                        &count,
                        "not a whole number above the shard index",
                    ));
                }
            };
            self.shard = Some((index_n, count_n));
        }
        if let Some(token) = lookup(vars::RUN_TOKEN) {
            self.report = Some((token, lookup(vars::RESULT_URL)));
        }
        Ok(())
    }

    /// [`Context::from_lookup`] with the defaults of [`Context::from_env_or_defaults`].
    pub fn from_lookup_or_defaults(lookup: impl Fn(&str) -> Option<String>) -> Result<Context, ContextError> {
        let mut ctx = Context::parse(|var| {
            Ok(lookup(var).unwrap_or_else(|| {
                match var {
                    vars::JOB | vars::RUN_ID => "local",
                    vars::TICK => "1970-01-01T00:00:00Z",
                    vars::TRIGGER => Trigger::Manual.as_str(),
                    vars::ATTEMPT => "1",
                    vars::FENCE => "0",
                    // `parse` asks only for the names in `vars`.
                    _ => "",
                }
                .to_owned()
            }))
        })?;
        ctx.read_optional(&lookup)?;
        Ok(ctx)
    }

    fn parse(get: impl Fn(&'static str) -> Result<String, ContextError>) -> Result<Context, ContextError> {
        let job = get(vars::JOB)?;
        if job.is_empty() {
            return Err(ContextError::invalid(vars::JOB, &job, "empty"));
        }
        let run_id = get(vars::RUN_ID)?;
        if run_id.is_empty() {
            return Err(ContextError::invalid(vars::RUN_ID, &run_id, "empty"));
        }
        let tick = get(vars::TICK)?;
        let tick_unix = parse_rfc3339(&tick).map_err(|reason| ContextError::invalid(vars::TICK, &tick, reason))?;
        let trigger = get(vars::TRIGGER)?;
        if trigger.is_empty() {
            return Err(ContextError::invalid(vars::TRIGGER, &trigger, "empty"));
        }
        // A host newer than this SDK may start runs for reasons it does not
        // know yet: such a run still gets its context, with `Other`.
        let trigger = trigger.parse().unwrap_or(Trigger::Other);
        let attempt = get(vars::ATTEMPT)?;
        let attempt = match attempt.parse::<u32>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(ContextError::invalid(
                    vars::ATTEMPT,
                    &attempt,
                    "not a whole number from 1",
                ));
            }
        };
        let fence = get(vars::FENCE)?;
        let fence = fence
            .parse::<i64>()
            .map_err(|_| ContextError::invalid(vars::FENCE, &fence, "not a 64-bit integer"))?;
        Ok(Context {
            job,
            run_id,
            tick,
            tick_unix,
            trigger,
            attempt,
            fence,
            parent: None,
            shard: None,
            report: None,
        })
    }

    /// For a run another job's run started: that run.
    pub fn parent(&self) -> Option<&Parent> {
        self.parent.as_ref()
    }

    /// For a shard of a broadcast tick: `(index, count)`, index from 0.
    /// Split the work by it, e.g. take the items whose hash modulo `count`
    /// is `index`.
    pub fn shard(&self) -> Option<(u32, u32)> {
        self.shard
    }

    /// For a run of an async job: the token its outcome must be reported
    /// with. Hand it (and [`Context::result_url`]) to the service that
    /// finishes the work; keep it out of logs.
    pub fn run_token(&self) -> Option<&str> {
        self.report.as_ref().map(|(token, _)| token.as_str())
    }

    /// For a run of an async job: where its outcome is reported, when the
    /// worker knows the API's address.
    pub fn result_url(&self) -> Option<&str> {
        self.report.as_ref().and_then(|(_, url)| url.as_deref())
    }

    /// The job's name.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// This run's id: unique across all runs, and ordered by start time.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The scheduled instant this run is for, as sandcron wrote it (RFC 3339).
    ///
    /// It is the tick, not the time the run started: a catch-up or a retry
    /// runs later than its tick, and a job that processes "the data of the
    /// previous hour" should derive that hour from here, not from the clock.
    pub fn tick(&self) -> &str {
        &self.tick
    }

    /// [`Context::tick`] as Unix seconds (fractions of a second dropped).
    pub fn tick_unix(&self) -> i64 {
        self.tick_unix
    }

    /// Why this run started.
    pub fn trigger(&self) -> Trigger {
        self.trigger
    }

    /// Which attempt at this tick this is: 1 for the first run, 2 for the
    /// first retry, and so on.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The claim's fencing token.
    ///
    /// When a worker claims a tick it does so in one compare-and-swap
    /// transaction in the coordination store, and the fence is that
    /// transaction's revision. Revisions only grow, so a later claim always
    /// carries a larger fence than an earlier one.
    ///
    /// That is what makes it useful against stale writers. A run can outlive
    /// its claim: its worker can be paused (a long GC, `SIGSTOP`, a network
    /// partition) past its lease while another worker takes over the job and
    /// runs a newer tick. When the old run wakes up, nothing inside it can
    /// tell it is stale — but the external system it writes to can, if every
    /// write carries the fence and the system refuses fences lower than the
    /// highest it has accepted. In SQL that is one conditional update:
    ///
    /// ```sql
    /// UPDATE report SET body = $1, fence = $2 WHERE id = $3 AND fence <= $2
    /// ```
    ///
    /// Zero rows updated means a newer run has already written: stop and
    /// exit non-zero. `<=` (not `<`) lets one run write several times.
    /// Object stores and key-value stores do the same with a conditional put
    /// on a stored fence, or by writing the fence into the object's key.
    ///
    /// ```
    /// /// A stand-in for an external store that keeps the highest fence it accepted.
    /// struct Store { fence: i64, body: String }
    ///
    /// impl Store {
    ///     fn write(&mut self, fence: i64, body: &str) -> Result<(), &'static str> {
    ///         if fence < self.fence {
    ///             return Err("stale writer: a newer run holds the job");
    ///         }
    ///         self.fence = fence;
    ///         self.body = body.to_owned();
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let mut store = Store { fence: 0, body: String::new() };
    /// store.write(41, "from the run that was paused").unwrap();
    /// store.write(57, "from the newer run").unwrap();
    /// // The paused run wakes up and writes again with its old fence: refused.
    /// assert!(store.write(41, "late and stale").is_err());
    /// assert_eq!(store.body, "from the newer run");
    /// ```
    pub fn fence(&self) -> i64 {
        self.fence
    }
}

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Trigger {
    /// Its tick came due.
    Schedule,
    /// Someone asked for it ("run now").
    Manual,
    /// A tick missed during an outage, run afterwards under the job's catch-up policy.
    Catchup,
    /// A retry of a failed or timed-out run of the same tick.
    Retry,
    /// Started by another job's run (`on_success` / `on_failure`); see [`Context::parent`].
    Dependency,
    /// An earlier run started again for its tick (`sandcron rerun`): the
    /// tick is that run's, not the time of the request.
    Rerun,
    /// A reason this version of the SDK does not know (the host is newer);
    /// `SANDCRON_TRIGGER` has its name.
    Other,
}

impl Trigger {
    /// The name sandcron uses for it (`schedule`, `manual`, `catchup`, `retry`, `dependency`, `rerun`).
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Catchup => "catchup",
            Trigger::Retry => "retry",
            Trigger::Dependency => "dependency",
            Trigger::Rerun => "rerun",
            Trigger::Other => "other",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Trigger {
    type Err = UnknownTrigger;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "schedule" => Ok(Trigger::Schedule),
            "manual" => Ok(Trigger::Manual),
            "catchup" => Ok(Trigger::Catchup),
            "retry" => Ok(Trigger::Retry),
            "dependency" => Ok(Trigger::Dependency),
            "rerun" => Ok(Trigger::Rerun),
            _ => Err(UnknownTrigger),
        }
    }
}

/// A string that names no [`Trigger`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownTrigger;

impl fmt::Display for UnknownTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown trigger")
    }
}

impl std::error::Error for UnknownTrigger {}

/// Why a [`Context`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContextError {
    /// The variable is not set: the program is probably not running under sandcron.
    Missing {
        /// Its name, one of [`vars`].
        var: &'static str,
    },
    /// The variable is set but its value is not what sandcron writes.
    Invalid {
        /// Its name, one of [`vars`].
        var: &'static str,
        /// The value found (lossily decoded if it was not UTF-8).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl ContextError {
    fn invalid(var: &'static str, value: &str, reason: &'static str) -> Self {
        ContextError::Invalid {
            var,
            value: value.to_owned(),
            reason,
        }
    }

    /// The variable the error is about.
    pub fn var(&self) -> &'static str {
        match self {
            ContextError::Missing { var } | ContextError::Invalid { var, .. } => var,
        }
    }
}

impl fmt::Display for ContextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContextError::Missing { var } => write!(f, "environment variable {var} is not set"),
            ContextError::Invalid { var, value, reason } => {
                write!(f, "environment variable {var} has an invalid value {value:?}: {reason}")
            }
        }
    }
}

impl std::error::Error for ContextError {}

/// Reads one variable; a value that is not UTF-8 is passed on lossily so that
/// the parser reports it as invalid rather than as missing.
fn read_env(name: &str) -> Option<String> {
    std::env::var_os(name).map(|value| value.to_string_lossy().into_owned())
}

/// Parses an RFC 3339 timestamp (`2026-11-22T00:00:00Z`,
/// `2026-11-22T01:00:00.250+01:00`) into Unix seconds, fractions dropped.
fn parse_rfc3339(text: &str) -> Result<i64, &'static str> {
    const FORMAT: &str = "not an RFC 3339 timestamp";
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' {
        return Err(FORMAT);
    }
    if b[16] != b':' {
        return Err(FORMAT);
    }
    let num = |range: std::ops::Range<usize>| -> Result<i64, &'static str> {
        let digits = &b[range];
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err(FORMAT);
        }
        Ok(digits.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err("no such date");
    }
    // 60 is a leap second; RFC 3339 allows it and Unix time folds it into the next minute.
    if hour > 23 || minute > 59 || second > 60 {
        return Err("no such time of day");
    }
    let mut rest = &b[19..];
    if let Some((b'.', fraction)) = rest.split_first() {
        let digits = fraction.iter().take_while(|d| d.is_ascii_digit()).count();
        if digits == 0 {
            return Err(FORMAT);
        }
        rest = &fraction[digits..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let offset_text = [*h1, *h2, *m1, *m2];
            if !offset_text.iter().all(u8::is_ascii_digit) {
                return Err(FORMAT);
            }
            let hours = i64::from(h1 - b'0') * 10 + i64::from(h2 - b'0');
            let minutes = i64::from(m1 - b'0') * 10 + i64::from(m2 - b'0');
            if hours > 23 || minutes > 59 {
                return Err("no such offset");
            }
            let seconds = hours * 3600 + minutes * 60;
            if *sign == b'-' { -seconds } else { seconds }
        }
        _ => return Err(FORMAT),
    };
    let days = days_from_civil(year, month, day);
    Ok(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_env(overrides: &[(&str, Option<&str>)]) -> impl Fn(&str) -> Option<String> {
        let mut env: Vec<(String, Option<String>)> = [
            (vars::JOB, "job"),
            (vars::RUN_ID, "01kakx3v7r8bq2m4v5w6x7y8z9"),
            (vars::TICK, "2026-11-22T00:00:00Z"),
            (vars::TRIGGER, "schedule"),
            (vars::ATTEMPT, "1"),
            (vars::FENCE, "12"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Some(v.to_owned())))
        .collect();
        for (name, value) in overrides {
            for entry in &mut env {
                if entry.0 == *name {
                    entry.1 = value.map(str::to_owned);
                }
            }
        }
        move |name| env.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.clone())
    }

    #[test]
    fn reads_every_variable() {
        let ctx = Context::from_lookup(full_env(&[])).unwrap();
        assert_eq!(ctx.run_id(), "01kakx3v7r8bq2m4v5w6x7y8z9");
        assert_eq!(ctx.trigger(), Trigger::Schedule);
        assert_eq!((ctx.attempt(), ctx.fence()), (1, 12));
    }

    #[test]
    fn reads_parent_shard_and_report_when_set() {
        let base = full_env(&[(vars::TRIGGER, Some("dependency"))]);
        let extra = [
            (vars::PARENT_JOB, "extract"),
            (vars::PARENT_RUN_ID, "01kakx3v7r8bq2m4v5w6x7y8z0"),
            (vars::PARENT_STATUS, "succeeded"),
            (vars::SHARD_INDEX, "2"),
            (vars::SHARD_COUNT, "3"),
            (vars::RUN_TOKEN, "scr_abc"),
            (vars::RESULT_URL, "https://cron.example/api/v1/runs/x/result"),
        ];
        let lookup = |name: &str| {
            extra
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
                .or_else(|| base(name))
        };
        let ctx = Context::from_lookup(lookup).unwrap();
        assert_eq!(ctx.trigger(), Trigger::Dependency);
        let parent = ctx.parent().unwrap();
        assert_eq!((parent.job.as_str(), parent.status.as_str()), ("extract", "succeeded"));
        assert_eq!(ctx.shard(), Some((2, 3)));
        assert_eq!(ctx.run_token(), Some("scr_abc"));
        assert_eq!(ctx.result_url(), Some("https://cron.example/api/v1/runs/x/result"));
        // A plain run has none of them.
        let plain = Context::from_lookup(full_env(&[])).unwrap();
        assert_eq!((plain.parent(), plain.shard(), plain.run_token()), (None, None, None));
        // A shard index at or beyond the count is refused.
        let bad = |name: &str| match name {
            vars::SHARD_INDEX => Some("3".to_owned()),
            vars::SHARD_COUNT => Some("3".to_owned()),
            _ => full_env(&[])(name),
        };
        assert_eq!(Context::from_lookup(bad).unwrap_err().var(), vars::SHARD_COUNT);
    }

    #[test]
    fn names_the_missing_or_invalid_variable() {
        for var in vars::ALL {
            let err = Context::from_lookup(full_env(&[(var, None)])).unwrap_err();
            assert_eq!(err, ContextError::Missing { var });
            assert_eq!(err.to_string(), format!("environment variable {var} is not set"));
        }
        for (var, bad) in [
            (vars::JOB, ""),
            (vars::RUN_ID, ""),
            (vars::TICK, "yesterday"),
            (vars::TRIGGER, ""),
            (vars::ATTEMPT, "0"),
            (vars::ATTEMPT, "-1"),
            (vars::FENCE, "1.5"),
        ] {
            let err = Context::from_lookup(full_env(&[(var, Some(bad))])).unwrap_err();
            assert_eq!(err.var(), var, "{err}");
            assert!(matches!(err, ContextError::Invalid { .. }), "{err}");
        }
    }

    #[test]
    fn every_trigger_the_host_sets_parses_by_its_name() {
        for name in ["schedule", "manual", "catchup", "retry", "dependency", "rerun"] {
            let trigger: Trigger = name.parse().unwrap();
            assert_eq!(trigger.as_str(), name);
        }
        let rerun = Context::from_lookup(full_env(&[(vars::TRIGGER, Some("rerun"))])).unwrap();
        assert_eq!(rerun.trigger(), Trigger::Rerun);
        assert!("nope".parse::<Trigger>().is_err());
        // A trigger a newer host sets does not keep a guest from running.
        let newer = Context::from_lookup(full_env(&[(vars::TRIGGER, Some("from-the-future"))])).unwrap();
        assert_eq!(newer.trigger(), Trigger::Other);
    }

    #[test]
    fn defaults_fill_only_missing_variables() {
        let ctx = Context::from_lookup_or_defaults(|_| None).unwrap();
        assert_eq!(
            (ctx.job(), ctx.tick(), ctx.tick_unix()),
            ("local", "1970-01-01T00:00:00Z", 0)
        );
        let err = Context::from_lookup_or_defaults(|name| (name == vars::FENCE).then(|| "x".to_owned()));
        assert_eq!(err.map_err(|e| e.var()), Err(vars::FENCE));
    }

    #[test]
    fn parses_rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339("2026-11-22T00:00:00Z"), Ok(1_795_305_600));
        assert_eq!(parse_rfc3339("2026-11-22T00:00:00.999999999Z"), Ok(1_795_305_600));
        assert_eq!(parse_rfc3339("2026-11-22t01:30:00+01:30"), Ok(1_795_305_600));
        assert_eq!(parse_rfc3339("2026-11-21 22:00:00-02:00"), Ok(1_795_305_600));
        assert_eq!(parse_rfc3339("2024-02-29T12:00:00Z"), Ok(1_709_208_000));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Ok(-1));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00Z"), Ok(951_868_800));
        for bad in [
            "",
            "2026-11-22",
            "2026-11-22T00:00:00",
            "2026-11-22T00:00:00.Z",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T00:00:00+1:00",
            "2026-11-22T00:00:00Zjunk",
            "+2026-11-22T00:00:00Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "accepted {bad:?}");
        }
    }
}
