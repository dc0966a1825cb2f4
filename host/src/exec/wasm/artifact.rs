//! Compiled artifacts on disk: the file format, its authentication, and
//! atomic writes. The only place that turns bytes from disk into executable
//! code, and so the only `unsafe` in sandcron.
//!
//! An artifact file is a header followed by wasmtime's serialized module or
//! component. The header names the module digest, the kind, the engine's
//! compatibility hash and the SHA-256 of the serialized bytes, and carries an
//! HMAC-SHA256 of all of that under a key kept in the cache directory (mode
//! 0600, created by the first worker that uses the directory). A file is
//! deserialized only when its MAC verifies: only this worker (or another
//! holding the same key) can have written it, for this very digest and engine
//! configuration, and it has not changed since.

use std::fs;
use std::hash::{Hash as _, Hasher as _};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use wasmtime::Engine;

use crate::ids::ModuleDigest;
use crate::module::ModuleKind;

/// File magic; the last byte is the format version.
const MAGIC: [u8; 16] = *b"sandcron-cwasm\0\x01";
const KEY_FILE: &str = "artifact.key";
const KEY_LEN: usize = 32;
/// magic, kind, digest, compatibility hash, artifact length, artifact hash.
const SIGNED_LEN: usize = 16 + 1 + 32 + 8 + 8 + 32;
const HEADER_LEN: usize = SIGNED_LEN + 32;

/// A compiled module or component, ready to instantiate.
pub(super) enum Compiled {
    Module(wasmtime::Module),
    Component(wasmtime::component::Component),
}

impl Compiled {
    pub(super) fn kind(&self) -> ModuleKind {
        match self {
            Compiled::Module(_) => ModuleKind::Module,
            Compiled::Component(_) => ModuleKind::Component,
        }
    }

    fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        match self {
            Compiled::Module(module) => module.serialize(),
            Compiled::Component(component) => component.serialize(),
        }
    }
}

/// Why an artifact on disk was not used.
#[derive(Debug, thiserror::Error)]
pub(super) enum Rejected {
    #[error("no artifact")]
    Missing,
    #[error("artifact is damaged or was not written by this worker: {0}")]
    Untrusted(&'static str),
    #[error("cannot read artifact: {0}")]
    Io(#[from] io::Error),
    #[error("wasmtime refused the artifact: {0}")]
    Deserialize(String),
}

/// The artifact directory of one engine.
pub(super) struct ArtifactStore {
    dir: PathBuf,
    key: [u8; KEY_LEN],
    /// The engine's compatibility hash: artifacts of other wasmtime versions or
    /// configurations live beside these under other names and are never read.
    compat: u64,
}

impl ArtifactStore {
    /// Opens (creating) `dir` and its key.
    pub(super) fn open(dir: &Path, engine: &Engine) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let key = load_or_create_key(dir)?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            dir: dir.to_owned(),
            key,
            compat: hasher.finish(),
        })
    }

    fn path(&self, digest: &ModuleDigest) -> PathBuf {
        self.dir.join(format!("{}-{:016x}.cwasm", digest.hex(), self.compat))
    }

    /// Loads the artifact of `digest`, if a trusted one is on disk.
    pub(super) fn load(&self, engine: &Engine, digest: &ModuleDigest) -> Result<Compiled, Rejected> {
        let path = self.path(digest);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Err(Rejected::Missing),
            Err(err) => return Err(err.into()),
        };
        let (kind, artifact) = self.verify(digest, &bytes)?;
        deserialize(engine, kind, artifact)
    }

    /// Checks the header and MAC of an artifact file; returns the kind and the
    /// serialized bytes.
    fn verify<'a>(&self, digest: &ModuleDigest, file: &'a [u8]) -> Result<(ModuleKind, &'a [u8]), Rejected> {
        if file.len() < HEADER_LEN {
            return Err(Rejected::Untrusted("too short"));
        }
        let (header, artifact) = file.split_at(HEADER_LEN);
        let (signed, mac) = header.split_at(SIGNED_LEN);
        let expected = crate::crypto::hmac_sha256(&self.key, signed);
        if !bool::from(expected.ct_eq(mac)) {
            return Err(Rejected::Untrusted("bad MAC"));
        }
        // The MAC holds, so the header is ours; check it describes this file.
        let mut fields = Fields(signed);
        if fields.take(16) != MAGIC {
            return Err(Rejected::Untrusted("unknown format"));
        }
        let kind = match fields.take(1) {
            [0] => ModuleKind::Module,
            [1] => ModuleKind::Component,
            _ => return Err(Rejected::Untrusted("unknown kind")),
        };
        if fields.take(32) != digest_bytes(digest).as_slice() {
            return Err(Rejected::Untrusted("written for another module"));
        }
        if fields.u64() != self.compat {
            return Err(Rejected::Untrusted("written by another engine configuration"));
        }
        if fields.u64() != artifact.len() as u64 {
            return Err(Rejected::Untrusted("truncated"));
        }
        if fields.take(32) != Sha256::digest(artifact).as_slice() {
            return Err(Rejected::Untrusted("contents changed"));
        }
        Ok((kind, artifact))
    }

    /// Writes the artifact of `digest` atomically (a temporary file renamed
    /// into place), so readers see a whole file or none.
    pub(super) fn store(&self, digest: &ModuleDigest, compiled: &Compiled) -> anyhow::Result<()> {
        let artifact = compiled.serialize().map_err(anyhow::Error::from)?;
        let mut signed = Vec::with_capacity(SIGNED_LEN);
        signed.extend_from_slice(&MAGIC);
        signed.push(match compiled.kind() {
            ModuleKind::Module => 0,
            ModuleKind::Component => 1,
        });
        signed.extend_from_slice(&digest_bytes(digest));
        signed.extend_from_slice(&self.compat.to_le_bytes());
        signed.extend_from_slice(&(artifact.len() as u64).to_le_bytes());
        signed.extend_from_slice(&Sha256::digest(&artifact));
        let mac = crate::crypto::hmac_sha256(&self.key, &signed);
        let path = self.path(digest);
        write_atomically(&path, &[&signed, &mac, &artifact]).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Removes the artifact of `digest` (after it was refused).
    pub(super) fn remove(&self, digest: &ModuleDigest) {
        let path = self.path(digest);
        if let Err(err) = fs::remove_file(&path)
            && err.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), %err, "cannot remove a refused artifact");
        }
    }

    #[cfg(test)]
    pub(super) fn artifact_path(&self, digest: &ModuleDigest) -> PathBuf {
        self.path(digest)
    }
}

/// Turns verified bytes into code.
///
/// `deserialize` is `unsafe` because wasmtime maps the bytes as executable
/// machine code and trusts their metadata: bytes that did not come from
/// `serialize` of a compatible engine could do anything. It is sound here
/// because `ArtifactStore::verify` has just checked, against a MAC under a key
/// only this worker holds, that these exact bytes (already in memory, so
/// nothing can change them between the check and the load) are what
/// `ArtifactStore::store` serialized for this digest with an engine of the same
/// compatibility hash. wasmtime additionally checks its own version and
/// configuration header and refuses mismatches.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, kind: ModuleKind, artifact: &[u8]) -> Result<Compiled, Rejected> {
    let compiled = match kind {
        // SAFETY: see the function's documentation.
        ModuleKind::Module => unsafe { wasmtime::Module::deserialize(engine, artifact) }.map(Compiled::Module),
        // SAFETY: see the function's documentation.
        ModuleKind::Component => {
            unsafe { wasmtime::component::Component::deserialize(engine, artifact) }.map(Compiled::Component)
        }
    };
    compiled.map_err(|err| Rejected::Deserialize(err.to_string()))
}

/// Reads fixed-size fields off the front of a header.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, len: usize) -> &'a [u8] {
        let (field, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        field
    }

    fn u64(&mut self) -> u64 {
        let mut bytes = [0; 8];
        let field = self.take(8);
        bytes[..field.len()].copy_from_slice(field);
        u64::from_le_bytes(bytes)
    }
}

fn digest_bytes(digest: &ModuleDigest) -> [u8; 32] {
    let mut bytes = [0; 32];
    let hex = digest.hex().as_bytes();
    for (index, byte) in bytes.iter_mut().enumerate() {
        let nibble = |c: u8| match c {
            b'0'..=b'9' => c - b'0',
            _ => c.wrapping_sub(b'a').wrapping_add(10) & 0x0f,
        };
        *byte = nibble(hex[2 * index]) << 4 | nibble(hex[2 * index + 1]);
    }
    bytes
}

/// The directory's MAC key, created on first use. Creation is atomic (a
/// complete temporary file hard-linked into place, which fails if another
/// process won the race), so every user of the directory reads the same key.
fn load_or_create_key(dir: &Path) -> anyhow::Result<[u8; KEY_LEN]> {
    let path = dir.join(KEY_FILE);
    if !path.exists() {
        let key = crate::crypto::random_bytes::<KEY_LEN>().context("cannot read /dev/urandom")?;
        let temporary = temporary_path(&path);
        let written = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .and_then(|mut file| file.write_all(&key).and_then(|()| file.sync_all()));
        let linked = written.and_then(|()| fs::hard_link(&temporary, &path));
        let _ignored = fs::remove_file(&temporary);
        match linked {
            Ok(()) => return Ok(key),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err).with_context(|| format!("cannot create {}", path.display())),
        }
    }
    let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{} is not a {KEY_LEN}-byte key", path.display()))
}

fn temporary_path(path: &Path) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let unique = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".{}.{unique}.tmp", std::process::id()));
    path.with_file_name(name)
}

fn write_atomically(path: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let temporary = temporary_path(path);
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        for part in parts {
            file.write_all(part)?;
        }
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ignored = fs::remove_file(&temporary);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_convert_to_raw_bytes() {
        let digest = ModuleDigest::of(b"hello");
        let hex: String = digest_bytes(&digest).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, digest.hex());
    }

    #[test]
    fn the_key_is_created_once_and_shared() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_key(dir.path()).unwrap();
        let second = load_or_create_key(dir.path()).unwrap();
        assert_eq!(first, second);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
