//! Stored modules: chunked bytes under `modules/data/` and a commit marker
//! under `modules/meta/`, written last. Storing is idempotent, reading
//! verifies the bytes against their digest, deleting removes the marker
//! first.

use jiff::Timestamp;

use super::keys::Family;
use super::records::ModuleMeta;
use super::{Coordinator, encode};
use crate::coord::{Compare, MAX_VALUE_BYTES, StoreError, Txn, TxnOp};
use crate::ids::ModuleDigest;
use crate::module::{Capability, ModuleKind};

impl Coordinator {
    // Bytes are split into chunks of at most MAX_VALUE_BYTES (etcd refuses
    // requests over 1.5 MiB), each its own write; the meta key is written last
    // and is the commit marker: a module without it does not exist. Metas live
    // apart from the data so listing modules never reads their bytes.

    fn module_meta_key(&self, digest: &ModuleDigest) -> String {
        self.key(Family::Modules, &format!("meta/{}", digest.hex()))
    }

    fn module_chunk_key(&self, digest: &ModuleDigest, index: u32) -> String {
        self.key(Family::Modules, &format!("data/{}/{index:06}", digest.hex()))
    }

    /// Whether a module is stored (its commit marker exists).
    pub async fn module_exists(&self, digest: &ModuleDigest) -> Result<bool, StoreError> {
        Ok(self.store.get(&self.module_meta_key(digest)).await?.is_some())
    }

    /// Stores a module under its digest (the caller has checked that `digest`
    /// is the bytes' digest). Idempotent: an existing module's bytes are left
    /// as they are, and only its label changes when `name` gives a new one.
    /// Returns the meta and whether this call created it.
    pub async fn put_module(
        &self,
        digest: &ModuleDigest,
        bytes: &[u8],
        kind: ModuleKind,
        capabilities: Vec<Capability>,
        name: Option<&str>,
    ) -> Result<(ModuleMeta, bool), StoreError> {
        if let Some(meta) = self.module_meta(digest).await? {
            return Ok((self.relabel_module(digest, meta, name).await?, false));
        }
        let mut chunks = 0u32;
        for (index, chunk) in bytes.chunks(MAX_VALUE_BYTES).enumerate() {
            let index = u32::try_from(index).map_err(|_| StoreError::Invalid("module has too many chunks".into()))?;
            self.store
                .put(&self.module_chunk_key(digest, index), chunk.to_vec(), None)
                .await?;
            chunks = index + 1;
        }
        let meta = ModuleMeta {
            size: bytes.len() as u64,
            chunks,
            kind,
            uploaded_at: Timestamp::now(),
            capabilities,
            name: name.map(str::to_owned),
        };
        let key = self.module_meta_key(digest);
        let response = self
            .store
            .txn(
                Txn::new()
                    .when([Compare::missing(key.clone())])
                    .and_then([TxnOp::put(key, encode(&meta)?)]),
            )
            .await?;
        if response.succeeded {
            return Ok((meta, true));
        }
        // A concurrent upload of the same bytes committed first.
        match self.module_meta(digest).await? {
            Some(stored) => Ok((self.relabel_module(digest, stored, name).await?, false)),
            None => Ok((meta, false)),
        }
    }

    /// Gives a stored module the label `name` when it has another one. The
    /// write is conditional on the meta read, so a concurrent delete is not
    /// undone; losing that race (or a concurrent relabel) keeps what is stored.
    async fn relabel_module(
        &self,
        digest: &ModuleDigest,
        meta: ModuleMeta,
        name: Option<&str>,
    ) -> Result<ModuleMeta, StoreError> {
        let Some(name) = name.filter(|name| meta.name.as_deref() != Some(*name)) else {
            return Ok(meta);
        };
        let key = self.module_meta_key(digest);
        let Some(kv) = self.store.get(&key).await? else {
            return Ok(meta);
        };
        let stored: ModuleMeta = serde_json::from_slice(&kv.value)
            .map_err(|err| StoreError::Other(format!("meta of module {digest} is not valid JSON: {err}")))?;
        if stored.name.as_deref() == Some(name) {
            return Ok(stored);
        }
        let relabelled = ModuleMeta {
            name: Some(name.to_owned()),
            ..stored
        };
        let response = self
            .store
            .txn(
                Txn::new()
                    .when([Compare::mod_revision_is(key.clone(), kv.mod_revision)])
                    .and_then([TxnOp::put(key, encode(&relabelled)?)]),
            )
            .await?;
        if response.succeeded {
            return Ok(relabelled);
        }
        Ok(self.module_meta(digest).await?.unwrap_or(relabelled))
    }

    /// A stored module's meta.
    pub async fn module_meta(&self, digest: &ModuleDigest) -> Result<Option<ModuleMeta>, StoreError> {
        match self.store.get(&self.module_meta_key(digest)).await? {
            None => Ok(None),
            Some(kv) => serde_json::from_slice(&kv.value)
                .map(Some)
                .map_err(|err| StoreError::Other(format!("meta of module {digest} is not valid JSON: {err}"))),
        }
    }

    /// A stored module's bytes, verified against its digest; `None` if it is
    /// not stored. Chunks are read one by one so no response is larger than
    /// a chunk.
    pub async fn module_bytes(&self, digest: &ModuleDigest) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(meta) = self.module_meta(digest).await? else {
            return Ok(None);
        };
        let mut bytes = Vec::with_capacity(usize::try_from(meta.size).unwrap_or(0));
        for index in 0..meta.chunks {
            let kv = self
                .store
                .get(&self.module_chunk_key(digest, index))
                .await?
                .ok_or_else(|| {
                    StoreError::Other(format!("module {digest} is missing chunk {index} of {}", meta.chunks))
                })?;
            bytes.extend_from_slice(&kv.value);
        }
        if bytes.len() as u64 != meta.size || ModuleDigest::of(&bytes) != *digest {
            return Err(StoreError::Other(format!(
                "module {digest} is corrupt: its bytes do not match its digest"
            )));
        }
        Ok(Some(bytes))
    }

    /// Every stored module with its meta.
    pub async fn list_modules(&self) -> Result<Vec<(ModuleDigest, ModuleMeta)>, StoreError> {
        let prefix = self.key(Family::Modules, "meta/");
        let range = self.store.range(&prefix).await?;
        Ok(range
            .kvs
            .iter()
            .filter_map(|kv| {
                let hex = kv.key.strip_prefix(&prefix)?;
                let digest = ModuleDigest::new(&format!("sha256:{hex}")).ok()?;
                Some((digest, serde_json::from_slice(&kv.value).ok()?))
            })
            .collect())
    }

    /// Deletes a module: the commit marker first (so it stops existing at
    /// once), then its chunks. Returns whether it existed.
    pub async fn delete_module(&self, digest: &ModuleDigest) -> Result<bool, StoreError> {
        let existed = self.store.delete(&self.module_meta_key(digest)).await?;
        let data = self.key(Family::Modules, &format!("data/{}/", digest.hex()));
        self.store
            .txn(Txn::new().and_then([TxnOp::DeletePrefix { prefix: data }]))
            .await?;
        Ok(existed)
    }
}
