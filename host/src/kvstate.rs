//! A job's key-value state (`wasi:keyvalue`) as every layer sees it: the
//! key a guest gives, validated ([`StateKey`]) and encoded into one segment
//! of a store key; the quotas and their arithmetic ([`StateQuota`],
//! [`StateUsage`]); the errors a guest sees ([`StateError`]); a page of a
//! key listing ([`KeyPage`]); and the counter format of `increment`.
//!
//! No I/O: `coord` stores the state under the job's prefix and fences its
//! writes, `exec` serves it to guests through a port, `api` shows it.
//!
//! A key is data, never a path: every byte outside `[A-Za-z0-9._-]` is
//! percent-encoded (`/` becomes `%2F`, `%` itself `%25`), so a key cannot
//! leave the job's prefix and two different keys never share a store key.

use serde::{Deserialize, Serialize};

/// The longest key a guest may use, in bytes (UTF-8).
pub const MAX_KEY_BYTES: usize = 256;

/// Keys a `list-keys` call returns at most; the cursor continues.
pub const KEYS_PER_PAGE: usize = 100;

/// A key a guest (or an operator) named, checked: not empty, at most
/// [`MAX_KEY_BYTES`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StateKey(String);

impl StateKey {
    pub fn new(key: &str) -> Result<Self, StateError> {
        if key.is_empty() {
            return Err(StateError::InvalidKey("the key is empty".to_owned()));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(StateError::InvalidKey(format!(
                "the key is {} bytes long; the limit is {MAX_KEY_BYTES}",
                key.len()
            )));
        }
        Ok(Self(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its length in bytes: what it costs in the job's byte quota.
    pub fn len(&self) -> u64 {
        self.0.len() as u64
    }

    /// Never true (an empty key cannot be made); for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key as one segment of a store key: bytes outside
    /// `[A-Za-z0-9._-]` percent-encoded, upper-case hex.
    pub fn encoded(&self) -> String {
        let mut out = String::with_capacity(self.0.len());
        for byte in self.0.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-') {
                out.push(char::from(byte));
            } else {
                out.push('%');
                out.push(hex_digit(byte >> 4));
                out.push(hex_digit(byte & 0x0f));
            }
        }
        out
    }

    /// The key a segment made by [`encoded`](Self::encoded) stands for;
    /// `None` for anything `encoded` cannot have produced.
    pub fn decode(segment: &str) -> Option<StateKey> {
        let bytes = segment.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut at = 0;
        while at < bytes.len() {
            let byte = bytes[at];
            if byte == b'%' {
                let high = bytes.get(at + 1).copied().and_then(hex_value)?;
                let low = bytes.get(at + 2).copied().and_then(hex_value)?;
                let decoded = high << 4 | low;
                // A byte that needs no escape was never escaped.
                if decoded.is_ascii_alphanumeric() || matches!(decoded, b'.' | b'_' | b'-') {
                    return None;
                }
                out.push(decoded);
                at += 3;
            } else if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-') {
                out.push(byte);
                at += 1;
            } else {
                return None;
            }
        }
        StateKey::new(&String::from_utf8(out).ok()?).ok()
    }
}

impl std::fmt::Display for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789ABCDEF"[usize::from(nibble & 0x0f)])
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// How much state one job may keep. A key costs its own length plus its
/// value's in `max_job_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StateQuota {
    pub max_keys: u64,
    pub max_value_bytes: u64,
    pub max_job_bytes: u64,
}

impl Default for StateQuota {
    fn default() -> Self {
        Self {
            max_keys: 128,
            max_value_bytes: 64 * 1024,
            max_job_bytes: 64 * 1024,
        }
    }
}

/// What a job's state holds: its keys, and their bytes (keys and values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StateUsage {
    pub keys: u64,
    pub bytes: u64,
}

impl StateQuota {
    /// The usage after `key` is set to a value of `new_len` bytes, replacing
    /// one of `old_len` bytes (`None`: the key is new), or the quota it
    /// breaks. A write that grows neither the key count nor the bytes is
    /// always allowed (a quota lowered after the state was written does not
    /// lock the job out of shrinking it); a value over the per-value limit
    /// never is.
    pub fn after_set(
        &self,
        usage: StateUsage,
        key: &StateKey,
        old_len: Option<u64>,
        new_len: u64,
    ) -> Result<StateUsage, StateError> {
        if new_len > self.max_value_bytes {
            return Err(StateError::ValueTooLarge {
                size: new_len,
                limit: self.max_value_bytes,
            });
        }
        let keys = match old_len {
            Some(_) => usage.keys,
            None => usage.keys.saturating_add(1),
        };
        if old_len.is_none() && keys > self.max_keys {
            return Err(StateError::TooManyKeys { limit: self.max_keys });
        }
        let freed = old_len.map_or(0, |old| key.len().saturating_add(old));
        let bytes = usage
            .bytes
            .saturating_sub(freed)
            .saturating_add(key.len())
            .saturating_add(new_len);
        if bytes > self.max_job_bytes && bytes > usage.bytes {
            return Err(StateError::JobTooLarge {
                size: bytes,
                limit: self.max_job_bytes,
            });
        }
        Ok(StateUsage { keys, bytes })
    }
}

impl StateUsage {
    /// The usage after `key`, holding `len` bytes, is deleted.
    pub fn after_delete(self, key: &StateKey, len: u64) -> StateUsage {
        StateUsage {
            keys: self.keys.saturating_sub(1),
            bytes: self.bytes.saturating_sub(key.len().saturating_add(len)),
        }
    }
}

/// A counter's value after `increment` adds `delta` to `current` (`None`:
/// the key does not exist, so the counter starts at 0). Counters are stored
/// as decimal ASCII (`"42"`), as wasmtime's own in-memory store keeps them,
/// so `get` reads them as text.
pub fn incremented(key: &StateKey, current: Option<&[u8]>, delta: u64) -> Result<(u64, Vec<u8>), StateError> {
    let start = match current {
        None => 0,
        Some(bytes) => std::str::from_utf8(bytes)
            .ok()
            .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|text| text.parse::<u64>().ok())
            .ok_or_else(|| StateError::NotACounter(key.clone()))?,
    };
    let value = start
        .checked_add(delta)
        .ok_or_else(|| StateError::Overflow(key.clone()))?;
    Ok((value, value.to_string().into_bytes()))
}

/// One page of a job's keys, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<StateKey>,
    /// Where the next page starts; `None` after the last.
    pub cursor: Option<u64>,
}

/// Why a state operation did not happen. A guest sees the message as
/// `wasi:keyvalue/store.error.other`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("invalid key: {0}")]
    InvalidKey(String),
    #[error("value is {size} bytes; the limit per value is {limit} bytes")]
    ValueTooLarge { size: u64, limit: u64 },
    #[error("quota exceeded: the job's state already holds {limit} keys, the most it may")]
    TooManyKeys { limit: u64 },
    #[error("quota exceeded: the job's state would hold {size} bytes (keys and values); the limit is {limit} bytes")]
    JobTooLarge { size: u64, limit: u64 },
    /// A newer run (a later claim) touched the state: this run may no
    /// longer write it.
    #[error("superseded by a newer run (fence {newer}); this run (fence {fence}) may no longer write the job's state")]
    Superseded { fence: i64, newer: i64 },
    #[error("the value of key {:?} is not a counter (decimal digits)", .0.as_str())]
    NotACounter(StateKey),
    #[error("the counter {:?} would overflow a u64", .0.as_str())]
    Overflow(StateKey),
    #[error("job {0} does not exist (was it deleted?)")]
    JobGone(String),
    /// The coordination store failed or stayed contended; worth retrying.
    #[error("the state store is unavailable: {0}")]
    Unavailable(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> StateKey {
        StateKey::new(text).unwrap()
    }

    #[test]
    fn keys_are_checked() {
        assert_eq!(
            StateKey::new(""),
            Err(StateError::InvalidKey("the key is empty".to_owned()))
        );
        assert!(StateKey::new(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        let long = StateKey::new(&"k".repeat(MAX_KEY_BYTES + 1)).unwrap_err();
        assert_eq!(
            long.to_string(),
            "invalid key: the key is 257 bytes long; the limit is 256"
        );
        // Bytes, not characters: 86 three-byte characters are 258 bytes.
        assert!(StateKey::new(&"€".repeat(86)).is_err());
    }

    #[test]
    fn a_key_is_data_never_a_path() {
        assert_eq!(key("count").encoded(), "count");
        assert_eq!(key("a.b_c-D9").encoded(), "a.b_c-D9");
        assert_eq!(key("../other/secret").encoded(), "..%2Fother%2Fsecret");
        assert_eq!(key("/").encoded(), "%2F");
        assert_eq!(key("100%").encoded(), "100%25");
        assert_eq!(key("a b\u{0}").encoded(), "a%20b%00");
        assert_eq!(key("é").encoded(), "%C3%A9");
        for text in ["../other/secret", "100%", "é€ x", "..", "%2F", "meta", "a/b/../c"] {
            let encoded = key(text).encoded();
            assert!(!encoded.contains('/'), "{encoded}");
            assert_eq!(StateKey::decode(&encoded), Some(key(text)), "{text}");
        }
        // Different keys, different segments: `%` itself is escaped.
        assert_ne!(key("%2F").encoded(), key("/").encoded());
    }

    #[test]
    fn only_what_encoding_produces_decodes() {
        for segment in ["", "a/b", "%2f", "%2", "%G0", "%41", "a b", "%FF"] {
            assert_eq!(StateKey::decode(segment), None, "{segment:?}");
        }
        assert_eq!(StateKey::decode(&"k".repeat(MAX_KEY_BYTES + 1)), None);
    }

    #[test]
    fn quotas_count_keys_values_and_bytes() {
        let quota = StateQuota {
            max_keys: 2,
            max_value_bytes: 10,
            max_job_bytes: 30,
        };
        let empty = StateUsage::default();
        let one = quota.after_set(empty, &key("ab"), None, 10).unwrap();
        assert_eq!(one, StateUsage { keys: 1, bytes: 12 });
        assert_eq!(
            quota.after_set(empty, &key("ab"), None, 11),
            Err(StateError::ValueTooLarge { size: 11, limit: 10 })
        );
        // Replacing a value: the old bytes are freed first.
        let replaced = quota.after_set(one, &key("ab"), Some(10), 4).unwrap();
        assert_eq!(replaced, StateUsage { keys: 1, bytes: 6 });
        let two = quota.after_set(one, &key("cd"), None, 10).unwrap();
        assert_eq!(two, StateUsage { keys: 2, bytes: 24 });
        assert_eq!(
            quota.after_set(two, &key("e"), None, 0),
            Err(StateError::TooManyKeys { limit: 2 })
        );
        // Replacing a value with one of the same size changes nothing.
        assert_eq!(quota.after_set(two, &key("cd"), Some(10), 10), Ok(two));
        let full = StateQuota {
            max_job_bytes: 25,
            ..quota
        };
        // Exactly at the limit fits.
        assert_eq!(
            full.after_set(StateUsage { keys: 2, bytes: 20 }, &key("cd"), Some(5), 10),
            Ok(StateUsage { keys: 2, bytes: 25 })
        );
        assert_eq!(
            full.after_set(StateUsage { keys: 2, bytes: 20 }, &key("cd"), Some(4), 10),
            Err(StateError::JobTooLarge { size: 26, limit: 25 })
        );
        // Deleting frees the key and its bytes.
        assert_eq!(two.after_delete(&key("cd"), 10), one);
    }

    #[test]
    fn a_lowered_quota_still_lets_a_job_shrink_its_state() {
        let quota = StateQuota {
            max_keys: 1,
            max_value_bytes: 100,
            max_job_bytes: 10,
        };
        let over = StateUsage { keys: 3, bytes: 90 };
        assert_eq!(
            quota.after_set(over, &key("k"), Some(29), 5),
            Ok(StateUsage { keys: 3, bytes: 66 })
        );
        assert_eq!(
            quota.after_set(over, &key("k"), Some(29), 40),
            Err(StateError::JobTooLarge { size: 101, limit: 10 })
        );
        assert_eq!(
            quota.after_set(over, &key("new"), None, 0),
            Err(StateError::TooManyKeys { limit: 1 })
        );
    }

    #[test]
    fn counters_are_decimal_text() {
        let count = key("count");
        assert_eq!(incremented(&count, None, 5), Ok((5, b"5".to_vec())));
        assert_eq!(incremented(&count, Some(b"41"), 1), Ok((42, b"42".to_vec())));
        assert_eq!(incremented(&count, Some(b"7"), 0), Ok((7, b"7".to_vec())));
        for bad in [&b""[..], b"x", b"-1", b" 1", b"1.5", b"\xff"] {
            assert_eq!(
                incremented(&count, Some(bad), 1),
                Err(StateError::NotACounter(count.clone())),
                "{bad:?}"
            );
        }
        assert_eq!(
            incremented(&count, Some(u64::MAX.to_string().as_bytes()), 1),
            Err(StateError::Overflow(count.clone()))
        );
        assert_eq!(
            StateError::NotACounter(count).to_string(),
            "the value of key \"count\" is not a counter (decimal digits)"
        );
    }
}
