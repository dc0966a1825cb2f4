//! The key file and the sealing of secret values: AES-256-GCM (`ring`), a
//! fresh 96-bit random nonce per value, and the secret's name as associated
//! data, so a sealed value cannot be moved to another name unnoticed.
//!
//! A key file holds one key per line, 64 hex digits; `#` starts a comment.
//! The first key seals; every key opens, so a key is rotated by putting the
//! new key first, re-sealing (`sandcron secret rekey`), then deleting the old
//! line. A key is named by its id, the first 8 hex digits of a SHA-256 over
//! it, which every sealed value carries: a value sealed under a key the file
//! lacks is reported by id, never tried against the wrong key.

use std::path::Path;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::SecretValue;
use crate::crypto;
use crate::ids::SecretName;

/// The key file `sandcron dev` creates in its data directory.
pub const KEY_FILE_NAME: &str = "secrets.key";

/// A key's public name: 8 hex digits.
pub type KeyId = String;

struct Key {
    id: KeyId,
    key: LessSafeKey,
}

/// The keys of a key file, the first one sealing.
pub struct Keyring {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("keys", &self.ids()).finish()
    }
}

/// A sealed secret value as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedValue {
    /// The id of the key that sealed it.
    pub key_id: KeyId,
    /// 12 bytes, hex.
    pub nonce: String,
    /// Ciphertext and tag, hex.
    pub sealed: String,
}

/// Why a key file or a sealed value could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("cannot read the secrets key file {path}: {message}")]
    Read { path: String, message: String },
    #[error("the secrets key file {path} can be read by other users (mode {mode:o}); run `chmod 600 {path}`")]
    Exposed { path: String, mode: u32 },
    #[error("the secrets key file {path}, line {line}: {message}")]
    Malformed { path: String, line: usize, message: String },
    #[error("the secrets key file {path} holds no key")]
    Empty { path: String },
    #[error("cannot create the secrets key file {path}: {message}")]
    Create { path: String, message: String },
    #[error(
        "secret {name} is sealed with key {key_id}, which is not in the key file (its keys: {known}); \
         configure the key file the secrets were written with"
    )]
    UnknownKey { name: String, key_id: KeyId, known: String },
    #[error("secret {name} does not open with key {key_id}: the key is wrong or the stored value was altered")]
    Authentication { name: String, key_id: KeyId },
    #[error("secret {name} is stored in an unreadable form: {message}")]
    Corrupt { name: String, message: String },
}

impl Keyring {
    /// Parses the text of a key file; `path` only names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, KeyringError> {
        let mut keys = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let malformed = |message: String| KeyringError::Malformed {
                path: path.to_owned(),
                line: index + 1,
                message,
            };
            let bytes = unhex(line).ok_or_else(|| malformed("a key is 64 hex digits".to_owned()))?;
            let bytes: [u8; 32] = bytes.try_into().map_err(|bytes: Vec<u8>| {
                malformed(format!("a key is 32 bytes (64 hex digits), not {}", bytes.len()))
            })?;
            let key = Key::new(&bytes);
            if keys.iter().any(|k: &Key| k.id == key.id) {
                return Err(malformed(format!("key {} is listed twice", key.id)));
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(KeyringError::Empty { path: path.to_owned() });
        }
        Ok(Self { keys })
    }

    /// Reads a key file, refusing one that other users can read.
    pub fn load(path: &Path) -> Result<Self, KeyringError> {
        let shown = path.display().to_string();
        let read_error = |err: std::io::Error| KeyringError::Read {
            path: shown.clone(),
            message: err.to_string(),
        };
        let metadata = std::fs::metadata(path).map_err(read_error)?;
        let mode = std::os::unix::fs::PermissionsExt::mode(&metadata.permissions()) & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyringError::Exposed { path: shown, mode });
        }
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        Self::parse(&text, &shown)
    }

    /// Loads `path`, creating it with a new key (mode 0600) if it does not
    /// exist yet; returns the keyring and whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), KeyringError> {
        if path.exists() {
            return Ok((Self::load(path)?, false));
        }
        let shown = path.display().to_string();
        let create_error = |message: String| KeyringError::Create {
            path: shown.clone(),
            message,
        };
        let line = Self::new_key_line().map_err(|err| create_error(err.to_string()))?;
        let mut options = std::fs::OpenOptions::new();
        std::os::unix::fs::OpenOptionsExt::mode(options.write(true).create_new(true), 0o600);
        let mut file = options.open(path).map_err(|err| create_error(err.to_string()))?;
        std::io::Write::write_all(&mut file, line.as_bytes()).map_err(|err| create_error(err.to_string()))?;
        file.sync_all().map_err(|err| create_error(err.to_string()))?;
        Ok((Self::parse(&line, &shown)?, true))
    }

    /// A new random key, as a key-file line with a comment naming its id.
    pub fn new_key_line() -> std::io::Result<String> {
        let bytes = crypto::random_bytes::<32>()?;
        let id = key_id(&bytes);
        Ok(format!(
            "# sandcron secrets key {id}, made {}\n{}\n",
            jiff::Timestamp::now().strftime("%Y-%m-%d"),
            crypto::hex(&bytes)
        ))
    }

    /// The ids of the keys, the sealing key first.
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// The id of the key new values are sealed with.
    pub fn sealing_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Seals `value` as the value of secret `name`.
    pub fn seal(&self, name: &SecretName, value: &SecretValue) -> std::io::Result<SealedValue> {
        let key = &self.keys[0];
        let nonce_bytes = crypto::random_bytes::<12>()?;
        let mut in_out = value.as_bytes().to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aad(name)),
                &mut in_out,
            )
            .map_err(|_| std::io::Error::other("sealing failed"))?;
        Ok(SealedValue {
            key_id: key.id.clone(),
            nonce: crypto::hex(&nonce_bytes),
            sealed: crypto::hex(&in_out),
        })
    }

    /// Opens the stored value of secret `name`.
    pub fn open(&self, name: &SecretName, sealed: &SealedValue) -> Result<SecretValue, KeyringError> {
        let corrupt = |message: &str| KeyringError::Corrupt {
            name: name.to_string(),
            message: message.to_owned(),
        };
        let key = self
            .keys
            .iter()
            .find(|k| k.id == sealed.key_id)
            .ok_or_else(|| KeyringError::UnknownKey {
                name: name.to_string(),
                key_id: sealed.key_id.clone(),
                known: self.ids().join(", "),
            })?;
        let nonce: [u8; 12] = unhex(&sealed.nonce)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| corrupt("its nonce is not 12 bytes of hex"))?;
        let mut in_out = unhex(&sealed.sealed).ok_or_else(|| corrupt("its ciphertext is not hex"))?;
        let plain = key
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad(name)), &mut in_out)
            .map_err(|_| KeyringError::Authentication {
                name: name.to_string(),
                key_id: key.id.clone(),
            })?;
        Ok(SecretValue::new(plain.to_vec()))
    }
}

impl Key {
    fn new(bytes: &[u8; 32]) -> Self {
        #[allow(clippy::expect_used)] // AES-256 takes any 32 bytes
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte AES-256 key");
        Self {
            id: key_id(bytes),
            key: LessSafeKey::new(unbound),
        }
    }
}

fn key_id(bytes: &[u8; 32]) -> KeyId {
    let digest = Sha256::new()
        .chain_update(b"sandcron secrets key id\0")
        .chain_update(bytes)
        .finalize();
    crypto::hex(&digest[..4])
}

fn aad(name: &SecretName) -> Vec<u8> {
    format!("sandcron secret\0{name}").into_bytes()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
