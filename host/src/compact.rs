//! Smaller in-memory forms for what every worker keeps once per job: a job
//! model field that is empty (or at its default) in almost every job, and
//! strings that most jobs share.
//!
//! - [`Rare<T>`] holds such a field in one pointer, and nothing on the heap
//!   while it is at its usual value (an empty map, list or string, or a
//!   default), instead of the 24–40 bytes of `T` in every job. It reads as a
//!   `T` (`Deref`) and is (de)serialised exactly as `T`, so the JSON shape of
//!   the model does not change.
//! - [`Interned`] is a shared string: a schedule, time zone or module digest
//!   that 100k jobs spell the same way is kept once; [`SharedCache`] shares
//!   what is built from such a string (a compiled schedule) the same way.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value type with a usual value that most jobs have.
pub trait Usual: Default + 'static {
    /// The usual value, shared.
    fn usual() -> &'static Self;
    /// Whether this is the usual value (stored as no allocation at all).
    fn is_usual(&self) -> bool;
}

impl<T: 'static> Usual for Vec<T> {
    fn usual() -> &'static Self {
        const { &Vec::new() }
    }
    fn is_usual(&self) -> bool {
        self.is_empty()
    }
}

impl<K: 'static, V: 'static> Usual for BTreeMap<K, V> {
    fn usual() -> &'static Self {
        const { &BTreeMap::new() }
    }
    fn is_usual(&self) -> bool {
        self.is_empty()
    }
}

impl Usual for String {
    fn usual() -> &'static Self {
        const { &String::new() }
    }
    fn is_usual(&self) -> bool {
        self.is_empty()
    }
}

/// A field that is at its usual value in almost every job: `None` then,
/// boxed otherwise. Reads (and writes, through `DerefMut`) as a `T`;
/// compares, prints and (de)serialises as the `T` it stands for.
#[derive(Clone, Default)]
pub struct Rare<T>(Option<Box<T>>);

impl<T: Usual> Rare<T> {
    /// Whether the field is at its usual value (for `skip_serializing_if`).
    pub fn is_usual(&self) -> bool {
        (**self).is_usual()
    }

    /// The value, by value.
    pub fn into_inner(self) -> T {
        self.0.map(|boxed| *boxed).unwrap_or_default()
    }
}

impl<T: Usual> From<T> for Rare<T> {
    fn from(value: T) -> Self {
        if value.is_usual() {
            Rare(None)
        } else {
            Rare(Some(Box::new(value)))
        }
    }
}

impl<T: Usual> Deref for Rare<T> {
    type Target = T;

    fn deref(&self) -> &T {
        match self.0.as_deref() {
            Some(value) => value,
            None => T::usual(),
        }
    }
}

impl<T: Usual> DerefMut for Rare<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.get_or_insert_with(Box::default)
    }
}

impl<T: Usual + FromIterator<A>, A> FromIterator<A> for Rare<T> {
    fn from_iter<I: IntoIterator<Item = A>>(items: I) -> Self {
        Rare::from(items.into_iter().collect::<T>())
    }
}

impl<T: Usual + PartialEq> PartialEq for Rare<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Usual + Eq> Eq for Rare<T> {}

impl<T: Usual + fmt::Debug> fmt::Debug for Rare<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl<'a, T: Usual> IntoIterator for &'a Rare<T>
where
    &'a T: IntoIterator,
{
    type Item = <&'a T as IntoIterator>::Item;
    type IntoIter = <&'a T as IntoIterator>::IntoIter;

    fn into_iter(self) -> Self::IntoIter {
        (**self).into_iter()
    }
}

impl<T: Usual + Serialize> Serialize for Rare<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(serializer)
    }
}

impl<'de, T: Usual + Deserialize<'de>> Deserialize<'de> for Rare<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Rare::from)
    }
}

/// A string kept once per process however many jobs spell it: schedules,
/// time zones, module digests. Compares, prints and (de)serialises as the string.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Interned(Arc<str>);

/// The strings handed out, each while anything holds it.
static STRINGS: SharedCache<str> = SharedCache::new();

impl Interned {
    /// The shared copy of `text`.
    pub fn new(text: &str) -> Self {
        let shared = STRINGS.get_or_build(text, || Ok::<_, std::convert::Infallible>(Arc::from(text)));
        Interned(shared.unwrap_or_else(|never| match never {}))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for Interned {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Interned {
    fn from(text: &str) -> Self {
        Interned::new(text)
    }
}

impl From<String> for Interned {
    fn from(text: String) -> Self {
        Interned::new(&text)
    }
}

impl PartialEq<&str> for Interned {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl fmt::Debug for Interned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Interned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl Serialize for Interned {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Interned {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Interned;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Interned, E> {
                Ok(Interned::new(text))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// Values built from a string (a compiled schedule from its text, an
/// interned string from itself), each shared while anything holds it.
/// Values nothing else holds are dropped when the table has doubled since it
/// last did so, which keeps it at most about twice the values in use.
pub struct SharedCache<V: ?Sized> {
    entries: Mutex<Option<CacheEntries<V>>>,
}

struct CacheEntries<V: ?Sized> {
    values: HashMap<Box<str>, Arc<V>>,
    prune_at: usize,
}

impl<V: ?Sized> Default for SharedCache<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: ?Sized> SharedCache<V> {
    pub const fn new() -> Self {
        Self {
            entries: Mutex::new(None),
        }
    }

    /// The shared value for `key`, built by `build` (outside the lock) when
    /// there is none; an error is returned and not kept.
    pub fn get_or_build<E>(&self, key: &str, build: impl FnOnce() -> Result<Arc<V>, E>) -> Result<Arc<V>, E> {
        if let Some(value) = self.entries().as_ref().and_then(|entries| entries.values.get(key)) {
            return Ok(value.clone());
        }
        let built = build()?;
        let mut guard = self.entries();
        let entries = guard.get_or_insert_with(|| CacheEntries {
            values: HashMap::new(),
            prune_at: MIN_PRUNE_AT,
        });
        if let Some(value) = entries.values.get(key) {
            return Ok(value.clone());
        }
        if entries.values.len() >= entries.prune_at {
            entries.values.retain(|_, value| Arc::strong_count(value) > 1);
            entries.prune_at = next_prune_at(entries.values.len());
        }
        entries.values.insert(key.into(), built.clone());
        Ok(built)
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Option<CacheEntries<V>>> {
        crate::sync::lock(&self.entries)
    }
}

/// A table smaller than this is never pruned.
const MIN_PRUNE_AT: usize = 64;

/// When a table of `len` live entries is pruned next: once it has doubled.
fn next_prune_at(len: usize) -> usize {
    (len * 2).max(MIN_PRUNE_AT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interned_count() -> usize {
        STRINGS.entries().as_ref().map_or(0, |entries| entries.values.len())
    }

    #[test]
    fn a_rare_field_takes_no_heap_at_its_usual_value() {
        assert_eq!(std::mem::size_of::<Rare<BTreeMap<String, String>>>(), 8);
        let empty: Rare<Vec<String>> = Vec::new().into();
        assert!(empty.0.is_none() && empty.is_usual() && empty.is_empty());
        let full: Rare<Vec<String>> = vec!["a".to_owned()].into();
        assert!(full.0.is_some() && !full.is_usual());
        assert_eq!(full.as_slice(), ["a"]);
        assert_eq!(full.clone().into_inner(), vec!["a".to_owned()]);
        assert_eq!(empty.into_inner(), Vec::<String>::new());
    }

    #[test]
    fn a_rare_field_compares_prints_and_serialises_as_its_value() {
        let mut written: Rare<BTreeMap<String, String>> = Rare::default();
        written.insert("k".to_owned(), "v".to_owned());
        written.remove("k");
        // Written through and emptied again: boxed, but equal to the usual value.
        assert!(written.0.is_some());
        assert_eq!(written, Rare::default());
        assert!(written.is_usual());
        assert_eq!(format!("{written:?}"), "{}");
        assert_eq!(serde_json::to_string(&written).unwrap(), "{}");

        let parsed: Rare<BTreeMap<String, String>> = serde_json::from_str("{}").unwrap();
        assert!(parsed.0.is_none());
        let parsed: Rare<BTreeMap<String, String>> = serde_json::from_str(r#"{"a":"b"}"#).unwrap();
        assert_eq!(serde_json::to_string(&parsed).unwrap(), r#"{"a":"b"}"#);
        assert_eq!((&parsed).into_iter().count(), 1);
        let collected: Rare<Vec<u16>> = [200u16, 204].into_iter().collect();
        assert_eq!(*collected, vec![200, 204]);
        assert!(serde_json::from_str::<Rare<Vec<u16>>>(r#"["x"]"#).is_err());
    }

    #[test]
    fn interned_strings_are_shared_and_dropped_when_unused() {
        let a = Interned::new("compact-test 0 0 * * *");
        let b: Interned = serde_json::from_str(r#""compact-test 0 0 * * *""#).unwrap();
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(a, "compact-test 0 0 * * *");
        assert_eq!(serde_json::to_string(&b).unwrap(), r#""compact-test 0 0 * * *""#);
        assert_eq!(
            format!("{a} {a:?}"),
            r#"compact-test 0 0 * * * "compact-test 0 0 * * *""#
        );
        assert!(serde_json::from_str::<Interned>("7").is_err());

        // Ten thousand strings nobody keeps: the table is pruned as it grows
        // (other tests intern a few strings meanwhile).
        for i in 0..10_000 {
            drop(Interned::new(&format!("compact-test unique {i}")));
        }
        assert!(interned_count() < 1_000, "{} strings kept", interned_count());
        // What is still held survives pruning.
        assert!(Arc::ptr_eq(&a.0, &Interned::new("compact-test 0 0 * * *").0));
    }

    #[test]
    fn a_shared_cache_builds_once_and_keeps_no_errors() {
        let cache: SharedCache<String> = SharedCache::new();
        let mut builds = 0;
        let first = cache
            .get_or_build::<()>("k", || {
                builds += 1;
                Ok(Arc::new("v".to_owned()))
            })
            .unwrap();
        let second = cache.get_or_build::<()>("k", || unreachable!("built once")).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(builds, 1);
        assert_eq!(cache.get_or_build::<&str>("bad", || Err("no")), Err("no"));
        assert_eq!(
            *cache
                .get_or_build::<()>("bad", || Ok(Arc::new("later".to_owned())))
                .unwrap(),
            "later"
        );

        drop((first, second));
        for i in 0..1_000 {
            cache
                .get_or_build::<()>(&format!("k{i}"), || Ok(Arc::new(String::new())))
                .unwrap();
        }
        let kept = cache.entries().as_ref().map_or(0, |entries| entries.values.len());
        assert!(kept <= 2 * MIN_PRUNE_AT, "{kept} entries kept");
    }
}
