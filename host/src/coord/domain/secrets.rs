//! Secrets: one key per secret holding its sealed value (never the value)
//! and who wrote it when. Sealing and opening are the caller's (the master
//! seals, the worker opens, both with the installation's key file); this
//! file only stores what it is given.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::keys::Family;
use super::{Coordinator, encode};
use crate::coord::{Compare, Revision, StoreError, Txn, TxnOp};
use crate::ids::SecretName;
use crate::secret::SealedValue;

/// A secret as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredSecret {
    #[serde(flatten)]
    pub sealed: SealedValue,
    pub updated_at: Timestamp,
    /// The name of the token that wrote it.
    pub written_by: String,
}

impl Coordinator {
    fn secret_key(&self, name: &SecretName) -> String {
        self.key(Family::Secrets, name.as_str())
    }

    /// Writes a secret; returns the write's revision.
    pub async fn put_secret(&self, name: &SecretName, secret: &StoredSecret) -> Result<Revision, StoreError> {
        self.store.put(&self.secret_key(name), encode(secret)?, None).await
    }

    /// Writes a secret only if it is still at `revision` (re-sealing under a
    /// new key must not undo a concurrent write); returns whether it did.
    pub async fn replace_secret(
        &self,
        name: &SecretName,
        secret: &StoredSecret,
        revision: Revision,
    ) -> Result<bool, StoreError> {
        let key = self.secret_key(name);
        let response = self
            .store
            .txn(
                Txn::new()
                    .when([Compare::mod_revision_is(key.clone(), revision)])
                    .and_then([TxnOp::put(key, encode(secret)?)]),
            )
            .await?;
        Ok(response.succeeded)
    }

    /// One secret and its revision.
    pub async fn get_secret(&self, name: &SecretName) -> Result<Option<(StoredSecret, Revision)>, StoreError> {
        let Some(kv) = self.store.get(&self.secret_key(name)).await? else {
            return Ok(None);
        };
        let secret = decode(name, &kv.value)?;
        Ok(Some((secret, kv.mod_revision)))
    }

    /// Every secret, by name, with its revision.
    pub async fn list_secrets(&self) -> Result<Vec<(SecretName, StoredSecret, Revision)>, StoreError> {
        let range = self.store.range(&self.prefix_of(Family::Secrets)).await?;
        let mut secrets = Vec::with_capacity(range.kvs.len());
        for kv in &range.kvs {
            let Some(name) = self
                .strip(Family::Secrets, &kv.key)
                .and_then(|rest| SecretName::new(rest).ok())
            else {
                continue;
            };
            secrets.push((name.clone(), decode(&name, &kv.value)?, kv.mod_revision));
        }
        Ok(secrets)
    }

    /// Whether any secret is stored (a process without the key refuses to
    /// start if so).
    pub async fn has_secrets(&self) -> Result<bool, StoreError> {
        Ok(!self.store.range(&self.prefix_of(Family::Secrets)).await?.kvs.is_empty())
    }

    /// Deletes a secret; returns whether it existed.
    pub async fn delete_secret(&self, name: &SecretName) -> Result<bool, StoreError> {
        self.store.delete(&self.secret_key(name)).await
    }
}

fn decode(name: &SecretName, bytes: &[u8]) -> Result<StoredSecret, StoreError> {
    serde_json::from_slice(bytes).map_err(|err| StoreError::Other(format!("stored secret {name} is not valid: {err}")))
}
