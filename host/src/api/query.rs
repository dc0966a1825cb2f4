//! The query-string values routes share, read one way: an optional
//! filter, an instant, and the time window and page size of the
//! cursor-paged lists (`/runs`, `/audit`), so that a bad value is refused
//! alike, naming its parameter, wherever it is given.
//!
//! The query structs themselves stay with their routes: each refuses the
//! parameters it does not know (`deny_unknown_fields`), which serde cannot
//! combine with a flattened common part.

use std::fmt::Display;

use jiff::Timestamp;

use super::ApiError;

/// The default and the largest page of a cursor-paged list.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// The time window and page size of a cursor-paged list, checked.
#[derive(Debug)]
pub(super) struct Window {
    pub(super) since: Option<Timestamp>,
    pub(super) until: Option<Timestamp>,
    pub(super) limit: usize,
}

impl Window {
    /// `since` and `until` (RFC 3339) and `limit` (1–1000, default 100),
    /// as the query string gave them.
    pub(super) fn parse(since: Option<&str>, until: Option<&str>, limit: Option<usize>) -> Result<Self, ApiError> {
        Ok(Self {
            since: since.map(|t| parse_time("since", t)).transpose()?,
            until: until.map(|t| parse_time("until", t)).transpose()?,
            limit: ApiError::count("limit", limit, DEFAULT_LIMIT, MAX_LIMIT)?,
        })
    }
}

/// An optional filter named `field`, read with `parse`; a value it refuses
/// is answered with its reason (for the enumerations: the valid names).
pub(super) fn filter<T, E: Display>(
    field: &str,
    text: Option<&str>,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<Option<T>, ApiError> {
    text.map(parse)
        .transpose()
        .map_err(|err| ApiError::invalid(field, err.to_string()))
}

/// An RFC 3339 instant given as `field`.
pub(super) fn parse_time(field: &str, text: &str) -> Result<Timestamp, ApiError> {
    text.parse()
        .map_err(|err| ApiError::invalid(field, format!("{text:?} is not an RFC 3339 instant: {err}")))
}
