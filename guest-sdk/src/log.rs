//! Structured log lines: one JSON object per line on stderr, which sandcron
//! captures with the run's output.
//!
//! A line looks like
//! `{"level":"info","msg":"rows exported","job":"nightly","run_id":"01k…","rows":42}`:
//! `level` and `msg` first, then `job` and `run_id` (from `SANDCRON_JOB` and
//! `SANDCRON_RUN_ID`, left out when not set), then the caller's fields in order.
//! A field named like one of those four is written with a leading `_`
//! (`_level`) so that a line never has two equal keys.

use std::fmt;
use std::io::Write as _;
use std::sync::OnceLock;

use crate::context::vars;
use crate::json::{self, Value};

/// How severe a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Routine progress.
    Info,
    /// Something odd that the run survived.
    Warn,
    /// Something that failed.
    Error,
}

impl Level {
    /// The name written into the `level` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Writes an `info` line to stderr.
///
/// ```
/// use sandcron_guest::log;
///
/// log::info("rows exported", &[("rows", 42.into()), ("table", "orders".into()), ("dry_run", false.into())]);
/// ```
pub fn info(msg: &str, fields: &[(&str, Value<'_>)]) {
    log(Level::Info, msg, fields);
}

/// Writes a `warn` line to stderr.
pub fn warn(msg: &str, fields: &[(&str, Value<'_>)]) {
    log(Level::Warn, msg, fields);
}

/// Writes an `error` line to stderr.
pub fn error(msg: &str, fields: &[(&str, Value<'_>)]) {
    log(Level::Error, msg, fields);
}

/// Writes a line at `level` to stderr.
///
/// A line that cannot be written is dropped: stderr is where a failure would
/// be reported, so there is nowhere left to report it. Use [`try_log`] to
/// see the error.
pub fn log(level: Level, msg: &str, fields: &[(&str, Value<'_>)]) {
    let _dropped = try_log(level, msg, fields);
}

/// Writes a line at `level` to stderr and returns any I/O error.
pub fn try_log(level: Level, msg: &str, fields: &[(&str, Value<'_>)]) -> std::io::Result<()> {
    let line = format_line(level, msg, identity(), fields);
    // One write of the whole line, so lines from several threads never interleave.
    let mut stderr = std::io::stderr().lock();
    stderr.write_all(line.as_bytes())?;
    stderr.flush()
}

/// The run's identity stamped on every line, read once from the environment.
#[derive(Debug, Default)]
struct Identity {
    job: Option<String>,
    run_id: Option<String>,
}

fn identity() -> &'static Identity {
    static IDENTITY: OnceLock<Identity> = OnceLock::new();
    IDENTITY.get_or_init(|| Identity {
        job: std::env::var(vars::JOB).ok(),
        run_id: std::env::var(vars::RUN_ID).ok(),
    })
}

const RESERVED: [&str; 4] = ["level", "msg", "job", "run_id"];

fn format_line(level: Level, msg: &str, identity: &Identity, fields: &[(&str, Value<'_>)]) -> String {
    let mut line = String::with_capacity(64 + msg.len() + 16 * fields.len());
    line.push_str("{\"level\":");
    json::write_string(&mut line, level.as_str());
    line.push_str(",\"msg\":");
    json::write_string(&mut line, msg);
    for (key, value) in [("job", &identity.job), ("run_id", &identity.run_id)] {
        if let Some(value) = value {
            line.push_str(",\"");
            line.push_str(key);
            line.push_str("\":");
            json::write_string(&mut line, value);
        }
    }
    for (key, value) in fields {
        line.push(',');
        if RESERVED.contains(key) {
            json::write_string(&mut line, &format!("_{key}"));
        } else {
            json::write_string(&mut line, key);
        }
        line.push(':');
        value.write_json(&mut line);
    }
    line.push_str("}\n");
    line
}

/// Writes an `info` line: `info!("msg", key = value, ...)`.
///
/// Keys are identifiers; values are anything that converts into a
/// [`Value`](crate::Value) (strings, integers, floats, booleans, options).
///
/// ```
/// let table = String::from("orders");
/// sandcron_guest::info!("rows exported", rows = 42, table = &table, ratio = 0.5);
/// sandcron_guest::warn!("slow query", millis = 1200u64);
/// sandcron_guest::error!("upload failed", status = 503, retry = true);
/// ```
#[macro_export]
macro_rules! info {
    ($msg:expr $(, $key:ident = $value:expr)* $(,)?) => {
        $crate::log::info($msg, &[$((stringify!($key), $crate::Value::from($value))),*])
    };
}

/// Writes a `warn` line: `warn!("msg", key = value, ...)`. See [`info!`].
#[macro_export]
macro_rules! warn {
    ($msg:expr $(, $key:ident = $value:expr)* $(,)?) => {
        $crate::log::warn($msg, &[$((stringify!($key), $crate::Value::from($value))),*])
    };
}

/// Writes an `error` line: `error!("msg", key = value, ...)`. See [`info!`].
#[macro_export]
macro_rules! error {
    ($msg:expr $(, $key:ident = $value:expr)* $(,)?) => {
        $crate::log::error($msg, &[$((stringify!($key), $crate::Value::from($value))),*])
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_one_json_object_per_line() {
        let identity = Identity {
            job: Some("nightly".into()),
            run_id: Some("01k".into()),
        };
        let line = format_line(
            Level::Warn,
            "line one\nline \"two\"",
            &identity,
            &[
                ("rows", 3.into()),
                ("ratio", 0.25.into()),
                ("ok", true.into()),
                ("note", None::<&str>.into()),
            ],
        );
        assert_eq!(
            line,
            "{\"level\":\"warn\",\"msg\":\"line one\\nline \\\"two\\\"\",\"job\":\"nightly\",\"run_id\":\"01k\",\
             \"rows\":3,\"ratio\":0.25,\"ok\":true,\"note\":null}\n"
        );
        assert_eq!(line.matches('\n').count(), 1);
        assert_eq!(json::validate(&line), Ok(()));
    }

    #[test]
    fn leaves_out_an_unknown_identity_and_renames_reserved_keys() {
        let line = format_line(
            Level::Info,
            "m",
            &Identity::default(),
            &[("job", "mine".into()), ("x\"y", 1.into())],
        );
        assert_eq!(
            line,
            "{\"level\":\"info\",\"msg\":\"m\",\"_job\":\"mine\",\"x\\\"y\":1}\n"
        );
    }
}
