//! Secrets: values an admin stores once and jobs use by name, never shown
//! again. This room holds what does not need a store: the sealing of values
//! under the installation's key file (`keyring`), the masking of values in
//! run output (`mask`), and the `${secret:NAME}` references of HTTP jobs
//! (`template`). The coordination store keeps only sealed values
//! (`coord/domain/secrets.rs`); workers open them at run time.

mod keyring;
mod mask;
mod template;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use keyring::{KEY_FILE_NAME, KeyId, Keyring, KeyringError, SealedValue};
pub use mask::{MIN_MASKED_BYTES, Masker, mask_text};
pub use template::{TemplateError, expand, references};

use crate::ids::SecretName;

/// The largest secret value accepted (64 KiB).
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// A secret's value in memory. It has no `Serialize` and its `Debug` hides
/// it, so it cannot slip into a record, a view or a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Vec<u8>);

impl SecretValue {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The value as text, when it is UTF-8 (environment variables and
    /// `wasi:config` values are strings).
    pub fn as_text(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<secret, {} bytes>", self.0.len())
    }
}

/// The secrets one run received: what each of its names (an environment
/// variable, a `wasi:config` key or, for HTTP jobs, the secret's own name)
/// resolved to, and the stored names they came from.
#[derive(Debug, Clone, Default)]
pub struct RunSecrets {
    /// By the name the job uses for it.
    pub values: BTreeMap<String, SecretValue>,
    /// The stored secrets used, for the run record.
    pub used: Vec<SecretName>,
}

impl RunSecrets {
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// A masker for every value of this run.
    pub fn masker(&self) -> Masker {
        Masker::new(self.values.values().map(SecretValue::as_bytes))
    }
}
