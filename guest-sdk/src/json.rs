//! The little JSON this crate needs without dependencies: scalar [`Value`]s,
//! string escaping, flat objects, and a validator for caller-supplied JSON text.
//!
//! It is not a JSON library: it writes scalars and flat objects and checks
//! that text is one well-formed JSON value. Anything richer goes through the
//! `serde` feature.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// One scalar JSON value: what a log field or a simple result holds.
///
/// Build it with `.into()` (or [`Value::from`]) from strings, integers,
/// floats, booleans and `Option`s of those; `None` becomes `null`.
///
/// ```
/// use sandcron_guest::Value;
///
/// assert_eq!(Value::from("a \"quoted\" word").to_json(), r#""a \"quoted\" word""#);
/// assert_eq!(Value::from(-3).to_json(), "-3");
/// assert_eq!(Value::from(2.5).to_json(), "2.5");
/// assert_eq!(Value::from(true).to_json(), "true");
/// assert_eq!(Value::from(None::<u32>).to_json(), "null");
/// // JSON has no NaN or infinity: they are written as null.
/// assert_eq!(Value::from(f64::NAN).to_json(), "null");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer (so `u64::MAX` survives).
    UInt(u64),
    /// A float; non-finite values are written as `null`.
    Float(f64),
    /// A string, escaped on output.
    Str(Cow<'a, str>),
}

impl Value<'_> {
    /// The value as JSON text.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    /// Appends the value as JSON text to `out`.
    pub fn write_json(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(n) => push_display(out, n),
            Value::UInt(n) => push_display(out, n),
            // `Debug` keeps the float-ness ("1.0") and uses exponents for very
            // large or small numbers ("1e300"): both are valid JSON numbers.
            Value::Float(x) if x.is_finite() => push_debug(out, x),
            Value::Float(_) => out.push_str("null"),
            Value::Str(s) => write_string(out, s),
        }
    }
}

impl fmt::Display for Value<'_> {
    /// Formats the value as JSON text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

impl From<bool> for Value<'_> {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

/// Integers widen without loss: the signed ones into `Int`, the unsigned
/// ones into `UInt`.
macro_rules! from_integer {
    ($variant:ident($wide:ty): $($t:ty),*) => {$(
        impl From<$t> for Value<'_> {
            fn from(n: $t) -> Self {
                Value::$variant(<$wide>::from(n))
            }
        }
    )*};
}
from_integer!(Int(i64): i8, i16, i32, i64);
from_integer!(UInt(u64): u8, u16, u32, u64);

impl From<isize> for Value<'_> {
    fn from(n: isize) -> Self {
        // isize is at most 64 bits on every target Rust supports today; the
        // fallback keeps this total without a panic.
        i64::try_from(n).map_or(Value::Null, Value::Int)
    }
}

impl From<usize> for Value<'_> {
    fn from(n: usize) -> Self {
        u64::try_from(n).map_or(Value::Null, Value::UInt)
    }
}

impl From<f32> for Value<'_> {
    fn from(x: f32) -> Self {
        Value::Float(f64::from(x))
    }
}

impl From<f64> for Value<'_> {
    fn from(x: f64) -> Self {
        Value::Float(x)
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(s: &'a str) -> Self {
        Value::Str(Cow::Borrowed(s))
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(s: &'a String) -> Self {
        Value::Str(Cow::Borrowed(s.as_str()))
    }
}

impl From<String> for Value<'_> {
    fn from(s: String) -> Self {
        Value::Str(Cow::Owned(s))
    }
}

impl<'a> From<Cow<'a, str>> for Value<'a> {
    fn from(s: Cow<'a, str>) -> Self {
        Value::Str(s)
    }
}

impl From<char> for Value<'_> {
    fn from(c: char) -> Self {
        Value::Str(Cow::Owned(c.to_string()))
    }
}

impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// Appends `s` to `out` as a JSON string literal, quotes included.
///
/// Escapes `"`, `\` and every control character below U+0020 (the named
/// escapes where JSON has them, `\u00XX` otherwise); everything else,
/// non-ASCII included, is copied as UTF-8.
///
/// ```
/// let mut out = String::new();
/// sandcron_guest::json::write_string(&mut out, "tab\there\nnul\0 é");
/// assert_eq!(out, r#""tab\there\nnul\u0000 é""#);
/// ```
pub fn write_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut clean_from = 0;
    for (i, byte) in s.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // Every byte that needs escaping is ASCII, so `i` is a char boundary.
        out.push_str(&s[clean_from..i]);
        if escape.is_empty() {
            push_display(out, format_args!("\\u{byte:04x}"));
        } else {
            out.push_str(escape);
        }
        clean_from = i + 1;
    }
    out.push_str(&s[clean_from..]);
    out.push('"');
}

/// Appends a flat JSON object built from `fields` to `out`, in order.
///
/// ```
/// let mut out = String::new();
/// sandcron_guest::json::write_object(&mut out, &[("ok", true.into()), ("rows", 42.into())]);
/// assert_eq!(out, r#"{"ok":true,"rows":42}"#);
/// ```
pub fn write_object(out: &mut String, fields: &[(&str, Value<'_>)]) {
    out.push('{');
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, key);
        out.push(':');
        value.write_json(out);
    }
    out.push('}');
}

/// Why [`validate`] rejected a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// Byte offset of the problem in the text.
    pub offset: usize,
    /// What was wrong there.
    pub reason: &'static str,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid JSON at byte {}: {}", self.offset, self.reason)
    }
}

impl std::error::Error for JsonError {}

/// Nesting deeper than this is rejected rather than risking the guest's
/// (small, fixed) stack; serde_json uses the same limit.
const MAX_DEPTH: usize = 128;

/// Checks that `text` is exactly one well-formed JSON value (RFC 8259),
/// optionally surrounded by whitespace.
///
/// ```
/// use sandcron_guest::json::validate;
///
/// assert!(validate(r#" {"ok": true, "items": [1, 2.5e3, "x", null]} "#).is_ok());
/// assert!(validate("{'single': 'quotes'}").is_err());
/// assert!(validate("[1, 2,]").is_err());
/// assert!(validate("1 2").is_err());
/// ```
pub fn validate(text: &str) -> Result<(), JsonError> {
    let mut parser = Validator {
        bytes: text.as_bytes(),
        pos: 0,
    };
    parser.skip_whitespace();
    parser.value(0)?;
    parser.skip_whitespace();
    if parser.pos != parser.bytes.len() {
        return Err(parser.error("trailing characters after the value"));
    }
    Ok(())
}

struct Validator<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Validator<'_> {
    fn error(&self, reason: &'static str) -> JsonError {
        JsonError {
            offset: self.pos,
            reason,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect_literal(&mut self, literal: &'static [u8]) -> Result<(), JsonError> {
        if self.bytes[self.pos..].starts_with(literal) {
            self.pos += literal.len();
            Ok(())
        } else {
            Err(self.error("unknown literal"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), JsonError> {
        match self.peek() {
            None => Err(self.error("expected a value, found the end")),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string(),
            Some(b't') => self.expect_literal(b"true"),
            Some(b'f') => self.expect_literal(b"false"),
            Some(b'n') => self.expect_literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("expected a value")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<(), JsonError> {
        self.members(depth, b'}', "expected ',' or '}' in an object", |parser| {
            if parser.peek() != Some(b'"') {
                return Err(parser.error("expected a string key"));
            }
            parser.string()?;
            parser.skip_whitespace();
            if parser.peek() != Some(b':') {
                return Err(parser.error("expected ':' after a key"));
            }
            parser.pos += 1;
            parser.skip_whitespace();
            parser.value(depth)
        })
    }

    fn array(&mut self, depth: usize) -> Result<(), JsonError> {
        self.members(depth, b']', "expected ',' or ']' in an array", |parser| {
            parser.value(depth)
        })
    }

    /// What objects and arrays share: the opening bracket at `pos`, then
    /// `member`s separated by commas up to `close`; `unseparated` is the
    /// error for anything else after a member.
    fn members(
        &mut self,
        depth: usize,
        close: u8,
        unseparated: &'static str,
        mut member: impl FnMut(&mut Self) -> Result<(), JsonError>,
    ) -> Result<(), JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        self.pos += 1;
        self.skip_whitespace();
        if self.peek() == Some(close) {
            self.pos += 1;
            return Ok(());
        }
        loop {
            member(self)?;
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_whitespace();
                }
                Some(byte) if byte == close => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.error(unseparated)),
            }
        }
    }

    fn string(&mut self) -> Result<(), JsonError> {
        self.pos += 1;
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.pos += 1,
                        Some(b'u') => {
                            self.pos += 1;
                            for _ in 0..4 {
                                if !self.peek().is_some_and(|b| b.is_ascii_hexdigit()) {
                                    return Err(self.error("expected four hex digits after \\u"));
                                }
                                self.pos += 1;
                            }
                        }
                        _ => return Err(self.error("unknown escape")),
                    }
                }
                Some(0x00..=0x1f) => return Err(self.error("unescaped control character in a string")),
                // The input is a &str, so multi-byte sequences are valid UTF-8.
                Some(_) => self.pos += 1,
            }
        }
    }

    fn number(&mut self) -> Result<(), JsonError> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("expected a digit")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return Err(self.error("expected a digit after '.'"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return Err(self.error("expected a digit in the exponent"));
            }
            self.digits();
        }
        Ok(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
    }
}

fn push_display(out: &mut String, value: impl fmt::Display) {
    // Writing into a String cannot fail.
    let _infallible = write!(out, "{value}");
}

fn push_debug(out: &mut String, value: impl fmt::Debug) {
    let _infallible = write!(out, "{value:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> String {
        let mut out = String::new();
        write_string(&mut out, s);
        out
    }

    #[test]
    fn escapes_every_control_character() {
        for byte in 0u8..0x20 {
            let text = string(&char::from(byte).to_string());
            assert!(text.bytes().all(|b| b >= 0x20), "{byte:#x} -> {text}");
            assert!(validate(&text).is_ok(), "{text}");
        }
        assert_eq!(string("\u{1f}"), r#""\u001f""#);
        assert_eq!(string("\u{7f}"), "\"\u{7f}\"");
    }

    #[test]
    fn escapes_quotes_and_backslashes_and_keeps_unicode() {
        assert_eq!(string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(string("ünïcødé ✓ 🦀"), "\"ünïcødé ✓ 🦀\"");
        assert_eq!(string(""), r#""""#);
    }

    #[test]
    fn numbers_are_valid_json() {
        for x in [
            0.0,
            -0.0,
            1.0,
            0.1,
            1e300,
            1e-300,
            f64::MAX,
            f64::MIN_POSITIVE,
            123_456.789,
        ] {
            let text = Value::from(x).to_json();
            assert!(validate(&text).is_ok(), "{x} -> {text}");
        }
        assert_eq!(Value::from(u64::MAX).to_json(), "18446744073709551615");
        assert_eq!(Value::from(i64::MIN).to_json(), "-9223372036854775808");
        assert_eq!(Value::from(f64::INFINITY).to_json(), "null");
    }

    #[test]
    fn validator_accepts_rfc_8259_examples() {
        for ok in [
            "0",
            "-0.5e-3",
            "\"\\u00e9\\n\"",
            "[]",
            "{}",
            "[[[]]]",
            r#"{"a":[1,{"b":null}],"c":"\/"}"#,
            " \n\t true \r\n",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn validator_rejects_malformed_text() {
        for bad in [
            "",
            " ",
            "01",
            "1.",
            ".5",
            "-",
            "+1",
            "1e",
            "nul",
            "True",
            "[1,]",
            "{\"a\"}",
            "{\"a\":1,}",
            "{a:1}",
            "\"\t\"",
            "\"\\x\"",
            "\"\\u12\"",
            "\"open",
            "[",
            "{}{}",
            "NaN",
        ] {
            assert!(validate(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn validator_limits_depth() {
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(validate(&deep).map_err(|e| e.reason), Err("nested too deeply"));
        let fine = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert_eq!(validate(&fine), Ok(()));
    }
}
