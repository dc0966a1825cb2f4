//! `wasi:keyvalue@0.2.0-draft` for components — `store`, `atomics` and
//! `batch` — implemented by the host over the run's [`StateStore`] port
//! (the WIT is `host/wit/keyvalue`, bound here with async imports).
//!
//! One bucket per job: `open("")` and `open("default")` open it, any other
//! identifier is `no-such-store`. Opening registers the run's fence, so a
//! run superseded by a newer one gets an error at `open` or at its next
//! write. Keys are checked (`kvstate::StateKey`: not empty, at most 256
//! bytes) and are data, never paths. Every refusal — a bad key, a quota, a
//! superseded fence, the store being away — is `error.other` with the
//! reason, never a trap. `batch` calls are the single calls in a row, as
//! the WIT allows (no atomicity). Core modules (WASI preview 1) have no way
//! to import any of this.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable, ResourceTableError};

use self::bindings::wasi::keyvalue::{atomics, batch, store};
use crate::exec::state::StateStore;
use crate::ids::JobName;
use crate::kvstate::{StateError, StateKey};

#[allow(unreachable_pub, clippy::all)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "wit/keyvalue",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::Bucket,
        },
        trappable_error_type: {
            "wasi:keyvalue/store.error" => super::KvError,
        },
    });
}

/// What a run's `wasi:keyvalue` reaches: its job's state through `store`
/// (`None`: this executor has no state store), fenced by `fence`.
#[derive(Clone)]
pub(in crate::exec::wasm) struct StateAccess {
    pub(in crate::exec::wasm) store: Option<Arc<dyn StateStore>>,
    pub(in crate::exec::wasm) job: JobName,
    pub(in crate::exec::wasm) fence: i64,
}

impl std::fmt::Debug for StateAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateAccess")
            .field("store", &self.store.is_some())
            .field("job", &self.job)
            .field("fence", &self.fence)
            .finish()
    }
}

/// An open bucket: the job's state (the run's access says which). `pub`
/// because the bindings re-export it.
#[allow(unreachable_pub)]
pub struct Bucket;

/// The error of the bindings: a WIT `error`, or a trap (a bad resource
/// handle is the guest's bug, not a state error). `pub` because the
/// bindings re-export it.
#[allow(unreachable_pub)]
pub enum KvError {
    NoSuchStore,
    Other(String),
    Trap(wasmtime::Error),
}

impl From<ResourceTableError> for KvError {
    fn from(err: ResourceTableError) -> Self {
        KvError::Trap(err.into())
    }
}

impl From<StateError> for KvError {
    fn from(err: StateError) -> Self {
        KvError::Other(err.to_string())
    }
}

/// The store data the bindings work on.
pub(in crate::exec::wasm) struct KeyValueView<'a> {
    pub(in crate::exec::wasm) table: &'a mut ResourceTable,
    pub(in crate::exec::wasm) access: &'a StateAccess,
}

/// Marks [`KeyValueView`] as the data of the bindings.
struct KeyValue;

impl HasData for KeyValue {
    type Data<'a> = KeyValueView<'a>;
}

/// Adds `wasi:keyvalue/{store,atomics,batch}` to `linker`.
pub(in crate::exec::wasm) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> KeyValueView<'_>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, KeyValue>(linker, view)?;
    atomics::add_to_linker::<T, KeyValue>(linker, view)?;
    batch::add_to_linker::<T, KeyValue>(linker, view)?;
    Ok(())
}

impl KeyValueView<'_> {
    /// The state store, once the guest shows an open bucket.
    fn store(&self, bucket: &Resource<Bucket>) -> Result<&Arc<dyn StateStore>, KvError> {
        self.table.get(bucket)?;
        self.access
            .store
            .as_ref()
            .ok_or_else(|| KvError::Other("key-value state is not available to this run".to_owned()))
    }
}

fn state_key(key: &str) -> Result<StateKey, KvError> {
    Ok(StateKey::new(key)?)
}

impl store::Host for KeyValueView<'_> {
    async fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, KvError> {
        if !(identifier.is_empty() || identifier == "default") {
            return Err(KvError::NoSuchStore);
        }
        let Some(store) = &self.access.store else {
            return Err(KvError::Other(
                "key-value state is not available to this run".to_owned(),
            ));
        };
        store.open(&self.access.job, self.access.fence).await?;
        Ok(self.table.push(Bucket)?)
    }

    fn convert_error(&mut self, err: KvError) -> wasmtime::Result<store::Error> {
        match err {
            KvError::NoSuchStore => Ok(store::Error::NoSuchStore),
            KvError::Other(message) => Ok(store::Error::Other(message)),
            KvError::Trap(trap) => Err(trap),
        }
    }
}

impl store::HostBucket for KeyValueView<'_> {
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> Result<Option<Vec<u8>>, KvError> {
        let key = state_key(&key)?;
        let store = self.store(&bucket)?;
        Ok(store.get(&self.access.job, self.access.fence, &key).await?)
    }

    async fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> Result<(), KvError> {
        let key = state_key(&key)?;
        let store = self.store(&bucket)?;
        Ok(store.set(&self.access.job, self.access.fence, &key, value).await?)
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Result<(), KvError> {
        let key = state_key(&key)?;
        let store = self.store(&bucket)?;
        Ok(store.delete(&self.access.job, self.access.fence, &key).await?)
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Result<bool, KvError> {
        let key = state_key(&key)?;
        let store = self.store(&bucket)?;
        Ok(store.exists(&self.access.job, self.access.fence, &key).await?)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Result<store::KeyResponse, KvError> {
        let store = self.store(&bucket)?;
        let page = store.list_keys(&self.access.job, self.access.fence, cursor).await?;
        Ok(store::KeyResponse {
            keys: page.keys.iter().map(|key| key.as_str().to_owned()).collect(),
            cursor: page.cursor,
        })
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for KeyValueView<'_> {
    async fn increment(&mut self, bucket: Resource<Bucket>, key: String, delta: u64) -> Result<u64, KvError> {
        let key = state_key(&key)?;
        let store = self.store(&bucket)?;
        Ok(store
            .increment(&self.access.job, self.access.fence, &key, delta)
            .await?)
    }
}

impl batch::Host for KeyValueView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, KvError> {
        let store = self.store(&bucket)?;
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            let checked = state_key(&key)?;
            let value = store.get(&self.access.job, self.access.fence, &checked).await?;
            found.push(value.map(|value| (key, value)));
        }
        Ok(found)
    }

    async fn set_many(&mut self, bucket: Resource<Bucket>, key_values: Vec<(String, Vec<u8>)>) -> Result<(), KvError> {
        let store = self.store(&bucket)?;
        for (key, value) in key_values {
            let key = state_key(&key)?;
            store.set(&self.access.job, self.access.fence, &key, value).await?;
        }
        Ok(())
    }

    async fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> Result<(), KvError> {
        let store = self.store(&bucket)?;
        for key in keys {
            let key = state_key(&key)?;
            store.delete(&self.access.job, self.access.fence, &key).await?;
        }
        Ok(())
    }
}
