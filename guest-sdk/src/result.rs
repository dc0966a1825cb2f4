//! The run's result: a JSON value the host records with the run, sent as one
//! line on stdout of the form `::sandcron::result <json>`.
//!
//! The line is ordinary output as far as WASI is concerned; sandcron picks it
//! out of stdout, keeps the JSON on the run record and shows it in the
//! console's jobs table. The JSON is at most [`MAX_RESULT_BYTES`] long and
//! must be a single line (this module turns the newlines of pretty-printed
//! JSON into spaces). Set the result once, at the end of the run.
//!
//! Because the marker has to start a line, do not leave a partial line on
//! stdout (a `print!` without a newline) just before setting a result.

use std::fmt;
use std::io::Write as _;

use crate::json::{self, JsonError, Value};

/// What starts the result line on stdout; the JSON follows, then `\n`.
pub const RESULT_PREFIX: &str = "::sandcron::result ";

/// The largest result, in bytes of JSON text: 64 KiB.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;

/// Records `json` (JSON text you produced) as the run's result.
///
/// The text is checked to be exactly one JSON value of at most
/// [`MAX_RESULT_BYTES`]; surrounding whitespace is trimmed and newlines
/// inside it (which valid JSON has only between tokens) become spaces.
///
/// ```
/// sandcron_guest::set_result_json(r#"{"exported": 42, "tables": ["orders", "refunds"]}"#)?;
/// assert!(sandcron_guest::set_result_json("{not json}").is_err());
/// # Ok::<(), sandcron_guest::ResultError>(())
/// ```
pub fn set_result_json(json: &str) -> Result<(), ResultError> {
    let line = result_line(json)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(line.as_bytes()).map_err(ResultError::Io)?;
    stdout.flush().map_err(ResultError::Io)
}

/// Records one scalar (string, number, boolean, null) as the run's result.
///
/// ```
/// sandcron_guest::set_result_value(1234)?;
/// sandcron_guest::set_result_value("nothing to do")?;
/// # Ok::<(), sandcron_guest::ResultError>(())
/// ```
pub fn set_result_value<'a>(value: impl Into<Value<'a>>) -> Result<(), ResultError> {
    set_result_json(&value.into().to_json())
}

/// Records a flat JSON object, keys in the order given, as the run's result.
///
/// ```
/// sandcron_guest::set_result_object(&[("ok", true.into()), ("attempt", 1.into()), ("note", "first try".into())])?;
/// // prints: ::sandcron::result {"ok":true,"attempt":1,"note":"first try"}
/// # Ok::<(), sandcron_guest::ResultError>(())
/// ```
pub fn set_result_object(fields: &[(&str, Value<'_>)]) -> Result<(), ResultError> {
    let mut text = String::new();
    json::write_object(&mut text, fields);
    set_result_json(&text)
}

/// Records any `Serialize` value as the run's result (feature `serde`).
///
/// ```
/// #[derive(serde::Serialize)]
/// struct Report { exported: u64, tables: Vec<&'static str> }
///
/// sandcron_guest::set_result(&Report { exported: 42, tables: vec!["orders"] })?;
/// # Ok::<(), sandcron_guest::ResultError>(())
/// ```
#[cfg(feature = "serde")]
pub fn set_result<T: serde::Serialize + ?Sized>(value: &T) -> Result<(), ResultError> {
    let text = serde_json::to_string(value).map_err(ResultError::Serialize)?;
    set_result_json(&text)
}

/// Why a result was not recorded.
#[derive(Debug)]
#[non_exhaustive]
pub enum ResultError {
    /// The text is not one well-formed JSON value.
    InvalidJson(JsonError),
    /// The JSON is longer than [`MAX_RESULT_BYTES`].
    TooLarge {
        /// Its length in bytes.
        len: usize,
    },
    /// Writing to stdout failed.
    Io(std::io::Error),
    /// serde_json could not serialize the value.
    #[cfg(feature = "serde")]
    Serialize(serde_json::Error),
}

impl fmt::Display for ResultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResultError::InvalidJson(_) => f.write_str("the result is not valid JSON"),
            ResultError::TooLarge { len } => {
                write!(
                    f,
                    "the result is {len} bytes of JSON, more than the {MAX_RESULT_BYTES} allowed"
                )
            }
            ResultError::Io(_) => f.write_str("could not write the result to stdout"),
            #[cfg(feature = "serde")]
            ResultError::Serialize(_) => f.write_str("could not serialize the result"),
        }
    }
}

impl std::error::Error for ResultError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ResultError::InvalidJson(err) => Some(err),
            ResultError::TooLarge { .. } => None,
            ResultError::Io(err) => Some(err),
            #[cfg(feature = "serde")]
            ResultError::Serialize(err) => Some(err),
        }
    }
}

/// The exact line [`set_result_json`] writes, newline included.
fn result_line(json: &str) -> Result<String, ResultError> {
    let json = json.trim_matches([' ', '\t', '\n', '\r']);
    if json.len() > MAX_RESULT_BYTES {
        return Err(ResultError::TooLarge { len: json.len() });
    }
    json::validate(json).map_err(ResultError::InvalidJson)?;
    let mut line = String::with_capacity(RESULT_PREFIX.len() + json.len() + 1);
    line.push_str(RESULT_PREFIX);
    // Raw newlines in valid JSON are whitespace between tokens (inside a
    // string they must be escaped), so replacing them changes no value.
    line.extend(json.chars().map(|c| if c == '\n' || c == '\r' { ' ' } else { c }));
    line.push('\n');
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_one_line_with_the_prefix() {
        let line = result_line("{\r\n  \"ok\": true,\n  \"text\": \"a\\nb\"\n}\n").unwrap();
        assert_eq!(line, "::sandcron::result {    \"ok\": true,   \"text\": \"a\\nb\" }\n");
        assert_eq!(result_line("42").unwrap(), "::sandcron::result 42\n");
    }

    #[test]
    fn rejects_invalid_and_oversized_json() {
        assert!(matches!(result_line(""), Err(ResultError::InvalidJson(_))));
        assert!(matches!(result_line("{\"a\":1} {}"), Err(ResultError::InvalidJson(_))));
        let at_limit = format!("\"{}\"", "x".repeat(MAX_RESULT_BYTES - 2));
        assert!(result_line(&at_limit).is_ok());
        let over = format!("\"{}\"", "x".repeat(MAX_RESULT_BYTES - 1));
        let err = result_line(&over).unwrap_err();
        assert!(
            matches!(err, ResultError::TooLarge { len } if len == MAX_RESULT_BYTES + 1),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "the result is 65537 bytes of JSON, more than the 65536 allowed"
        );
    }
}
