//! Validated identifier newtypes: job and secret names, run and audit ids,
//! module digests, worker ids.
//!
//! Each is checked once at construction (and on deserialisation), so an invalid
//! identifier cannot exist anywhere else in the program.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::compact::Interned;

/// Why an identifier was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidId(String);

impl InvalidId {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// A job name: `[a-z0-9][a-z0-9_-]{0,62}`. It is also the suffix of the job's
/// coordination keys, which is why the alphabet is so narrow.
///
/// Shared, not copied: a worker keeps a job's name in its job map, its
/// timer queue (twice), its metrics and the job itself, and a clone is a
/// reference count, not another allocation per structure and job.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobName(std::sync::Arc<str>);

impl JobName {
    pub const MAX_LEN: usize = 63;

    pub fn new(name: &str) -> Result<Self, InvalidId> {
        check_key_name("job", name, Self::MAX_LEN)?;
        Ok(Self(name.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A secret's name: the same alphabet as a job name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct SecretName(String);

impl SecretName {
    pub const MAX_LEN: usize = 63;

    pub fn new(name: &str) -> Result<Self, InvalidId> {
        check_key_name("secret", name, Self::MAX_LEN)?;
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The rule of names that end coordination keys: `[a-z0-9][a-z0-9_-]*`, at
/// most `max` characters; `what` names the thing in the message.
fn check_key_name(what: &str, name: &str, max: usize) -> Result<(), InvalidId> {
    if name.is_empty() {
        return Err(InvalidId::new(format!("{what} name is empty")));
    }
    if name.len() > max {
        return Err(InvalidId::new(format!(
            "{what} name is {} characters long; the limit is {max}",
            name.chars().count(),
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        return Err(InvalidId::new(format!(
            "{what} name {name:?} contains {bad:?}; use lower-case letters, digits, '-' and '_'"
        )));
    }
    let first = name.as_bytes()[0];
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(InvalidId::new(format!(
            "{what} name {name:?} must start with a lower-case letter or a digit"
        )));
    }
    Ok(())
}

/// A run id: a ULID, so run ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(ulid::Ulid);

impl RunId {
    /// A fresh id for a run starting now (millisecond time prefix, random tail).
    pub fn generate() -> Self {
        Self(ulid::Ulid::generate())
    }

    /// A deterministic id for a given instant and discriminator.
    pub fn from_parts(unix_ms: u64, random: u128) -> Self {
        Self(ulid::Ulid::from_parts(unix_ms, random))
    }

    /// The id of the record that `job`'s tick was skipped. A tick is claimed
    /// at most once, so the job and tick name it; every worker that writes
    /// the record (the claimant; a later owner re-recording a skip the
    /// claimant may have died before writing) derives the same id, so the log
    /// store keeps one record.
    pub fn for_skip(job: &JobName, tick: jiff::Timestamp) -> Self {
        Self::derived(&format!("skip\0{job}"), tick)
    }

    /// The id of the `missed` record of a queued catch-up tick of `job` that
    /// never started (its claimant stopped or gave the job up). A tick is
    /// queued at most once, so the job and tick name it; every worker that
    /// records it derives the same id.
    pub fn for_unstarted_catchup(job: &JobName, tick: jiff::Timestamp) -> Self {
        Self::derived(&format!("unstarted-catchup\0{job}"), tick)
    }

    /// The id of the `missed` record a catch-up plan writes for `tick` of
    /// `job` (or of its summary record, at the summary's first tick). Plans
    /// cover disjoint stretches of a job's ticks, so the job and tick name
    /// it; the claimant and a later owner re-deriving the plan agree on it.
    pub fn for_missed(job: &JobName, tick: jiff::Timestamp) -> Self {
        Self::derived(&format!("missed\0{job}"), tick)
    }

    /// An id that sorts with `tick`, its random part a hash of `what`.
    fn derived(what: &str, tick: jiff::Timestamp) -> Self {
        use sha2::Digest as _;
        let ms = tick.as_millisecond();
        let hash = sha2::Sha256::digest(format!("{what}\0{ms}"));
        let mut tail = [0; 16];
        tail.copy_from_slice(&hash[..16]);
        Self::from_parts(u64::try_from(ms).unwrap_or(0), u128::from_be_bytes(tail))
    }

    pub fn unix_ms(&self) -> u64 {
        self.0.timestamp_ms()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for RunId {
    type Err = InvalidId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ulid::Ulid::from_string(s)
            .map(Self)
            .map_err(|_| InvalidId::new(format!("run id {s:?} is not a ULID")))
    }
}

impl Serialize for RunId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RunId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An audit entry's id: a ULID whose time part is the entry's instant, so
/// ids sort by time (and, within a millisecond, at random).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AuditId(ulid::Ulid);

impl AuditId {
    /// A fresh id for an entry recorded at `at`. Within one process, ids of
    /// the same millisecond increase in the order they are made, so the
    /// entries of quick successive writes keep their order.
    pub fn at(at: jiff::Timestamp) -> Self {
        static LAST: std::sync::Mutex<u128> = std::sync::Mutex::new(0);
        let ms = u64::try_from(at.as_millisecond()).unwrap_or(0);
        let fresh = ulid::Ulid::from_parts(ms, rand_tail()).0;
        let mut last = crate::sync::lock(&LAST);
        // The time part is the top 48 bits: same millisecond, not after the
        // last id made in it, so one more than that.
        let id = if fresh >> 80 == *last >> 80 && fresh <= *last {
            *last + 1
        } else {
            fresh
        };
        *last = id;
        Self(ulid::Ulid(id))
    }

    /// A deterministic id, for tests.
    pub fn from_parts(unix_ms: u64, random: u128) -> Self {
        Self(ulid::Ulid::from_parts(unix_ms, random))
    }

    pub fn unix_ms(&self) -> u64 {
        self.0.timestamp_ms()
    }
}

/// The random part of a fresh ULID.
fn rand_tail() -> u128 {
    ulid::Ulid::generate().random()
}

impl fmt::Display for AuditId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for AuditId {
    type Err = InvalidId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ulid::Ulid::from_string(s)
            .map(Self)
            .map_err(|_| InvalidId::new(format!("audit id {s:?} is not a ULID")))
    }
}

impl Serialize for AuditId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AuditId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A module digest, `sha256:` followed by 64 lower-case hex digits. Interned:
/// the jobs that run the same module share one copy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ModuleDigest(Interned);

impl ModuleDigest {
    pub fn new(text: &str) -> Result<Self, InvalidId> {
        let hex = text
            .strip_prefix("sha256:")
            .ok_or_else(|| InvalidId::new(format!("module digest {text:?} must start with \"sha256:\"")))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(InvalidId::new(format!(
                "module digest {text:?} must be \"sha256:\" and 64 lower-case hex digits"
            )));
        }
        Ok(Self(Interned::new(text)))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        let hash = sha2::Sha256::digest(bytes);
        let mut text = String::with_capacity(71);
        text.push_str("sha256:");
        for byte in hash {
            text.push_str(&format!("{byte:02x}"));
        }
        Self(Interned::from(text))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The hex part, used in key paths and file names.
    pub fn hex(&self) -> &str {
        &self.0.as_str()["sha256:".len()..]
    }
}

/// A worker id: 1–128 characters from `[A-Za-z0-9._-]`, default hostname plus a
/// random suffix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct WorkerId(String);

impl WorkerId {
    pub fn new(text: &str) -> Result<Self, InvalidId> {
        if text.is_empty() || text.len() > 128 {
            return Err(InvalidId::new("worker id must be 1 to 128 characters"));
        }
        if let Some(bad) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(InvalidId::new(format!(
                "worker id {text:?} contains {bad:?}; use letters, digits, '.', '_' and '-'"
            )));
        }
        Ok(Self(text.to_owned()))
    }

    /// `<hostname>-<6 random characters>`, made safe for the alphabet above.
    pub fn generate(hostname: &str) -> Self {
        let mut base: String = hostname
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .take(100)
            .collect();
        if base.is_empty() {
            base.push_str("worker");
        }
        let suffix = ulid::Ulid::generate().to_string().to_ascii_lowercase();
        Self(format!("{base}-{}", &suffix[suffix.len() - 6..]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! text_id_impls {
    ($ty:ident) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $ty {
            type Err = InvalidId;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                Self::new(&text).map_err(serde::de::Error::custom)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

text_id_impls!(JobName);

impl Serialize for JobName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}
text_id_impls!(SecretName);
text_id_impls!(ModuleDigest);
text_id_impls!(WorkerId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_follow_the_key_alphabet() {
        for good in ["a", "0", "backup-db", "a_b-c9", &"x".repeat(63)] {
            assert!(JobName::new(good).is_ok(), "{good} should be valid");
        }
        let cases = [
            ("", "empty"),
            ("Backup", "contains 'B'"),
            ("a/b", "contains '/'"),
            ("..", "contains '.'"),
            ("-a", "must start"),
            ("_a", "must start"),
            ("a b", "contains ' '"),
            ("a\u{0}", "contains '\\0'"),
        ];
        for (bad, expected) in cases {
            let err = JobName::new(bad).expect_err(bad).to_string();
            assert!(err.contains(expected), "{bad:?}: {err}");
        }
        let err = JobName::new(&"x".repeat(64)).expect_err("too long").to_string();
        assert_eq!(err, "job name is 64 characters long; the limit is 63");
    }

    #[test]
    fn job_names_are_validated_when_deserialised() {
        let err = serde_json::from_str::<JobName>("\"../etc\"").expect_err("traversal");
        assert!(err.to_string().contains("contains '.'"), "{err}");
    }

    #[test]
    fn module_digests_are_sha256_hex() {
        let digest = ModuleDigest::of(b"hello");
        assert_eq!(
            digest.as_str(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(ModuleDigest::new(digest.as_str()), Ok(digest.clone()));
        assert_eq!(digest.hex().len(), 64);
        assert!(ModuleDigest::new("md5:abc").is_err());
        assert!(ModuleDigest::new(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(ModuleDigest::new("sha256:abc").is_err());
    }

    #[test]
    fn run_ids_round_trip_and_sort_by_time() {
        let early = RunId::from_parts(1_000, 7);
        let late = RunId::from_parts(2_000, 1);
        assert!(early < late);
        assert!(early.to_string() < late.to_string());
        let parsed: RunId = early.to_string().parse().expect("round trip");
        assert_eq!(parsed, early);
        assert_eq!(parsed.unix_ms(), 1_000);
        assert!("not-a-ulid".parse::<RunId>().is_err());
    }

    #[test]
    fn tick_record_ids_are_the_same_for_every_writer_and_differ_per_job_and_tick() {
        let job = JobName::new("backup").expect("name");
        let other = JobName::new("report").expect("name");
        let tick: jiff::Timestamp = "2026-12-03T10:00:05Z".parse().expect("tick");
        let id = RunId::for_skip(&job, tick);
        assert_eq!(id, RunId::for_skip(&job, tick));
        assert_eq!(id.unix_ms(), tick.as_millisecond() as u64, "sorts with its tick");
        assert_ne!(id, RunId::for_skip(&other, tick));
        assert_ne!(id, RunId::for_skip(&job, tick + jiff::SignedDuration::from_secs(1)));
        let unstarted = RunId::for_unstarted_catchup(&job, tick);
        assert_eq!(unstarted, RunId::for_unstarted_catchup(&job, tick));
        assert_ne!(unstarted, id);
        assert_ne!(unstarted, RunId::for_unstarted_catchup(&other, tick));
    }

    #[test]
    fn worker_ids_are_sanitised_hostnames_with_a_suffix() {
        let id = WorkerId::generate("my host.example");
        assert!(id.as_str().starts_with("my-host.example-"), "{id}");
        assert!(WorkerId::new(id.as_str()).is_ok());
        assert!(WorkerId::new("a/b").is_err());
        assert!(WorkerId::new("").is_err());
    }
}
