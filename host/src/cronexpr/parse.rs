//! Owns the parsing of cron expression text (fields, names, macros and `@every` durations) into bit sets.

use super::{CronError, CronField, Fields, Kind, MAX_EXPR_LEN, MAX_LIST_ITEMS, YearSet};

/// Seconds in the units `@every` accepts.
const SECS_PER_MINUTE: i64 = 60;
const SECS_PER_HOUR: i64 = 3_600;
const SECS_PER_DAY: i64 = 86_400;

/// The longest `@every` period: 3660 days, a little over ten years.
pub(crate) const MAX_EVERY_SECS: i64 = 3_660 * SECS_PER_DAY;

/// Numbers with more digits than this are out of every field's range, and
/// refusing them before conversion keeps the arithmetic free of overflow.
const MAX_DIGITS: usize = 9;

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DOW_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// The static description of one field's syntax.
struct Spec {
    field: CronField,
    min: u32,
    max: u32,
    /// Where `a/n` stops: the field's maximum, except for day-of-week where it
    /// is Saturday so that the step never wraps into the next week's Sunday.
    step_max: u32,
    /// Names for the values `name_base`, `name_base + 1`, ...
    names: &'static [&'static str],
    name_base: u32,
}

const SECOND: Spec = Spec {
    field: CronField::Second,
    min: 0,
    max: 59,
    step_max: 59,
    names: &[],
    name_base: 0,
};
const MINUTE: Spec = Spec {
    field: CronField::Minute,
    min: 0,
    max: 59,
    step_max: 59,
    names: &[],
    name_base: 0,
};
const HOUR: Spec = Spec {
    field: CronField::Hour,
    min: 0,
    max: 23,
    step_max: 23,
    names: &[],
    name_base: 0,
};
const DAY_OF_MONTH: Spec = Spec {
    field: CronField::DayOfMonth,
    min: 1,
    max: 31,
    step_max: 31,
    names: &[],
    name_base: 0,
};
const MONTH: Spec = Spec {
    field: CronField::Month,
    min: 1,
    max: 12,
    step_max: 12,
    names: &MONTH_NAMES,
    name_base: 1,
};
const DAY_OF_WEEK: Spec = Spec {
    field: CronField::DayOfWeek,
    min: 0,
    max: 7,
    step_max: 6,
    names: &DOW_NAMES,
    name_base: 0,
};
const YEAR: Spec = Spec {
    field: CronField::Year,
    min: super::MIN_YEAR as u32,
    max: super::MAX_YEAR as u32,
    step_max: super::MAX_YEAR as u32,
    names: &[],
    name_base: 0,
};

/// One parsed field: the matching values (bit `v - min` for value `v`) and
/// whether its text begins with a wildcard.
struct ParsedField {
    /// Bit `v - spec.min` is set for every matching value `v`.
    bits: [u64; 4],
    star: bool,
}

/// Parses a whole expression, returning its trimmed text and meaning.
pub(crate) fn parse(text: &str) -> Result<(String, Kind), CronError> {
    if text.len() > MAX_EXPR_LEN {
        return Err(CronError::TooLong {
            len: text.len(),
            max: MAX_EXPR_LEN,
        });
    }
    let trimmed = text.trim_matches(|c: char| c.is_ascii_whitespace());
    if trimmed.is_empty() {
        return Err(CronError::Empty);
    }
    let kind = if trimmed.starts_with('@') {
        parse_macro(trimmed)?
    } else {
        let fields: Vec<&str> = trimmed.split([' ', '\t']).filter(|part| !part.is_empty()).collect();
        parse_fields(&fields)?
    };
    Ok((trimmed.to_string(), kind))
}

fn parse_fields(parts: &[&str]) -> Result<Kind, CronError> {
    let (second, rest, year) = match parts.len() {
        5 => ("0", parts, None),
        6 => (parts[0], &parts[1..], None),
        7 => (parts[0], &parts[1..6], Some(parts[6])),
        found => return Err(CronError::FieldCount { found }),
    };
    let [minute, hour, dom, month, dow] = [rest[0], rest[1], rest[2], rest[3], rest[4]];

    let seconds = parse_field(second, &SECOND)?;
    let minutes = parse_field(minute, &MINUTE)?;
    let hours = parse_field(hour, &HOUR)?;
    let days_of_month = parse_field(dom, &DAY_OF_MONTH)?;
    let months = parse_field(month, &MONTH)?;
    let days_of_week = parse_field(dow, &DAY_OF_WEEK)?;
    let years = match year {
        Some(text) => {
            let parsed = parse_field(text, &YEAR)?;
            let mut set = YearSet::new();
            for offset in 0..=(YEAR.max - YEAR.min) {
                if bit_is_set(&parsed.bits, offset) {
                    set.insert((YEAR.min + offset) as i32);
                }
            }
            Some(set)
        }
        None => None,
    };

    // Day-of-week bit 7 is Sunday again, so it folds onto bit 0.
    let mut dow_bits = days_of_week.bits[0] & 0x7f;
    if days_of_week.bits[0] & 0x80 != 0 {
        dow_bits |= 1;
    }
    let mut dow_pattern = 0u64;
    for week in 0..7 {
        dow_pattern |= dow_bits << (7 * week);
    }

    Ok(Kind::Calendar(Fields {
        seconds: seconds.bits[0],
        minutes: minutes.bits[0],
        hours: hours.bits[0],
        // Bit positions equal values: day-of-month and month values start at 1.
        days_of_month: days_of_month.bits[0] << 1,
        months: months.bits[0] << 1,
        days_of_week: dow_bits,
        dow_pattern,
        years,
        dom_star: days_of_month.star,
        dow_star: days_of_week.star,
        fixed_time: !(seconds.star || minutes.star || hours.star),
        field_count: parts.len() as u8,
    }))
}

fn bit_is_set(bits: &[u64; 4], offset: u32) -> bool {
    let i = offset as usize;
    i < 256 && bits[i / 64] & (1u64 << (i % 64)) != 0
}

fn set_bit(bits: &mut [u64; 4], offset: u32) {
    let i = offset as usize;
    if i < 256 {
        bits[i / 64] |= 1u64 << (i % 64);
    }
}

/// Parses one field against its spec.
fn parse_field(text: &str, spec: &Spec) -> Result<ParsedField, CronError> {
    let fail = |reason: String| CronError::Field {
        field: spec.field,
        text: text.to_string(),
        reason,
    };
    let is_day_field = matches!(spec.field, CronField::DayOfMonth | CronField::DayOfWeek);
    if text == "?" {
        if !is_day_field {
            return Err(fail(
                "\"?\" is only allowed in the day-of-month and day-of-week fields".to_string(),
            ));
        }
        let mut bits = [0u64; 4];
        for value in spec.min..=spec.max {
            set_bit(&mut bits, value - spec.min);
        }
        return Ok(ParsedField { bits, star: true });
    }
    if text.split(',').nth(MAX_LIST_ITEMS).is_some() {
        return Err(fail(format!("more than {MAX_LIST_ITEMS} list items")));
    }
    let mut bits = [0u64; 4];
    for item in text.split(',') {
        let (start, end, step) = parse_item(item, spec).map_err(fail)?;
        let mut value = start;
        while value <= end {
            set_bit(&mut bits, value - spec.min);
            // Steps beyond the span simply end the loop; the sum cannot
            // overflow because both operands are below a billion.
            value += step;
        }
    }
    Ok(ParsedField {
        bits,
        star: text.starts_with('*'),
    })
}

/// Parses one list item into an inclusive range and a step.
fn parse_item(item: &str, spec: &Spec) -> Result<(u32, u32, u32), String> {
    if item.is_empty() {
        return Err("empty list item".to_string());
    }
    if item.contains('#') {
        return Err(quartz_reason(spec, item));
    }
    if item.contains('?') {
        return Err("\"?\" must stand alone as the whole field".to_string());
    }
    let (range, step) = match item.split_once('/') {
        Some((range, step_text)) => {
            if step_text.contains('/') {
                return Err(format!("\"{item}\" has more than one \"/\""));
            }
            (range, Some(parse_step(step_text)?))
        }
        None => (item, None),
    };
    if range == "*" {
        return Ok((spec.min, spec.max, step.unwrap_or(1)));
    }
    if range.is_empty() {
        return Err(format!("\"{item}\" is missing the value before \"/\""));
    }
    if let Some((first, last)) = range.split_once('-') {
        if first.is_empty() {
            return Err(format!("range \"{range}\" is missing its start"));
        }
        if last.is_empty() {
            return Err(format!("range \"{range}\" is missing its end"));
        }
        let start = parse_value(first, spec)?;
        let mut end = parse_value(last, spec)?;
        // As the end of a day-of-week range, SUN means 7 so that FRI-SUN
        // reads like 5-7; a range starting at Sunday keeps it as 0.
        if spec.field == CronField::DayOfWeek && end == 0 && start > 0 && is_name(last) {
            end = 7;
        }
        if start > end {
            return Err(format!("range start {start} is after end {end}"));
        }
        return Ok((start, end, step.unwrap_or(1)));
    }
    let value = parse_value(range, spec)?;
    match step {
        // `a/n` means `a-max/n`; a start past the step maximum (day-of-week 7)
        // stands for itself.
        Some(step) => Ok((value, spec.step_max.max(value), step)),
        None => Ok((value, value, 1)),
    }
}

fn parse_step(text: &str) -> Result<u32, String> {
    if text.is_empty() {
        return Err("step is missing after \"/\"".to_string());
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("step \"{text}\" is not a number"));
    }
    let digits = text.trim_start_matches('0');
    if digits.is_empty() {
        return Err("step must be at least 1".to_string());
    }
    if digits.len() > MAX_DIGITS {
        return Err(format!("step {text} is too large"));
    }
    digits.parse::<u32>().map_err(|_| format!("step {text} is too large"))
}

fn is_name(token: &str) -> bool {
    token.bytes().all(|b| b.is_ascii_alphabetic())
}

/// Parses a number or name and checks it against the field's range.
fn parse_value(token: &str, spec: &Spec) -> Result<u32, String> {
    let range_text = format!("{}-{}", spec.min, spec.max);
    if token.bytes().all(|b| b.is_ascii_digit()) {
        let digits = token.trim_start_matches('0');
        if digits.len() > MAX_DIGITS {
            return Err(format!("{token} is out of range {range_text}"));
        }
        let value = if digits.is_empty() {
            0
        } else {
            digits
                .parse::<u32>()
                .map_err(|_| format!("{token} is out of range {range_text}"))?
        };
        if value < spec.min || value > spec.max {
            return Err(format!("{value} is out of range {range_text}"));
        }
        return Ok(value);
    }
    if let Some(index) = spec.names.iter().position(|name| name.eq_ignore_ascii_case(token)) {
        return Ok(spec.name_base + index as u32);
    }
    if looks_like_quartz(spec, token) {
        return Err(quartz_reason(spec, token));
    }
    if spec.names.is_empty() {
        Err(format!("\"{token}\" is not a number"))
    } else {
        Err(format!("unknown name \"{token}\""))
    }
}

/// Whether a token that is neither a number nor a name uses Quartz's `L` or
/// `W`, so that the error can say the syntax is unsupported rather than
/// merely unknown.
fn looks_like_quartz(spec: &Spec, token: &str) -> bool {
    let upper = token.to_ascii_uppercase();
    match spec.field {
        CronField::DayOfMonth => {
            upper == "L"
                || upper == "LW"
                || (upper.len() > 1
                    && upper.ends_with('W')
                    && upper[..upper.len() - 1].bytes().all(|b| b.is_ascii_digit()))
        }
        CronField::DayOfWeek => {
            upper == "L"
                || (upper.len() > 1
                    && upper.ends_with('L')
                    && (upper[..upper.len() - 1].bytes().all(|b| b.is_ascii_digit())
                        || DOW_NAMES.contains(&&upper[..upper.len() - 1])))
        }
        _ => false,
    }
}

fn quartz_reason(spec: &Spec, token: &str) -> String {
    let upper = token.to_ascii_uppercase();
    if upper.contains('#') {
        if spec.field == CronField::DayOfWeek {
            "the Quartz \"#\" (nth weekday of the month) syntax is not supported".to_string()
        } else {
            format!("\"{token}\" is not a valid value")
        }
    } else if spec.field == CronField::DayOfMonth && upper.ends_with('W') && upper != "LW" {
        "the Quartz \"W\" (nearest weekday) syntax is not supported".to_string()
    } else {
        "the Quartz \"L\" (last day) syntax is not supported".to_string()
    }
}

/// The calendar macros and the 5-field expressions they stand for.
const MACROS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

fn parse_macro(text: &str) -> Result<Kind, CronError> {
    let (name, rest) = match text.find([' ', '\t']) {
        Some(at) => (&text[..at], text[at..].trim_matches([' ', '\t'])),
        None => (text, ""),
    };
    let lower = name.to_ascii_lowercase();
    if lower == "@every" {
        return parse_every(rest).map(Kind::Every);
    }
    if lower == "@reboot" {
        return Err(CronError::Unsupported {
            feature: name.to_string(),
            why: "sandcron schedules have no notion of a machine boot".to_string(),
        });
    }
    let Some((_, fields)) = MACROS.iter().find(|(macro_name, _)| *macro_name == lower) else {
        return Err(CronError::UnknownMacro {
            name: truncate(name, 64),
        });
    };
    if !rest.is_empty() {
        return Err(CronError::MacroArgument { name: name.to_string() });
    }
    let parts: Vec<&str> = fields.split(' ').collect();
    parse_fields(&parts)
}

/// Keeps an echoed token short in error messages.
fn truncate(text: &str, keep: usize) -> String {
    if text.len() <= keep {
        return text.to_string();
    }
    let mut end = keep;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// Parses an `@every` duration such as `90s`, `1h30m` or `1h 30m` into seconds.
fn parse_every(text: &str) -> Result<i64, CronError> {
    let fail = |reason: String| CronError::Every {
        text: text.to_string(),
        reason,
    };
    if text.is_empty() {
        return Err(fail("a duration such as \"90s\" or \"1h30m\" is required".to_string()));
    }
    let bytes = text.as_bytes();
    let mut total: i64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b' ' || bytes[i] == b'\t' {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            let shown: String = text[start..].chars().take(1).collect();
            return Err(fail(format!(
                "expected a number at \"{shown}\" (write parts like 1h30m)"
            )));
        }
        let number = &text[start..i];
        if i >= bytes.len() {
            return Err(fail(format!("missing unit after {number} (use d, h, m or s)")));
        }
        let unit_secs = match bytes[i] {
            b'd' | b'D' => SECS_PER_DAY,
            b'h' | b'H' => SECS_PER_HOUR,
            b'm' | b'M' => SECS_PER_MINUTE,
            b's' | b'S' => 1,
            _ => {
                let shown: String = text[i..].chars().take(1).collect();
                return Err(fail(format!(
                    "unknown unit \"{shown}\" after {number} (use d, h, m or s)"
                )));
            }
        };
        i += 1;
        let digits = number.trim_start_matches('0');
        let value: i64 = if digits.is_empty() {
            0
        } else if digits.len() > 12 {
            return Err(fail("must be at most 3660d".to_string()));
        } else {
            digits.parse().map_err(|_| fail("must be at most 3660d".to_string()))?
        };
        total = value
            .checked_mul(unit_secs)
            .and_then(|secs| total.checked_add(secs))
            .ok_or_else(|| fail("must be at most 3660d".to_string()))?;
        if total > MAX_EVERY_SECS {
            return Err(fail("must be at most 3660d".to_string()));
        }
    }
    if total < 1 {
        return Err(fail("must be at least 1s".to_string()));
    }
    Ok(total)
}
