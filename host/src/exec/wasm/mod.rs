//! The WebAssembly executor: WASI modules (p1) and components (p2) in
//! wasmtime, one engine per process, modules compiled once per digest and
//! cached in memory and on disk, and every run in a fresh, deny-by-default
//! sandbox with fuel, memory, wall-time and output limits.
//!
//! Map:
//! - [`WasmEngine`] (this file): configuration, the module cache's loading
//!   logic, statistics; [`WasmExecutor`] runs jobs on it.
//! - `engine`: the wasmtime `Engine` (pooling allocator, fuel, epochs), the
//!   epoch ticker thread and the WASI linkers.
//! - `cache`: prepared modules in memory; `artifact`: compiled artifacts on
//!   disk (the only `unsafe` in sandcron, behind a MAC check).
//! - `executor`: [`WasmExecutor`], the `Executor` of WASM jobs, and getting
//!   modules ready ahead of runs (`warm`).
//! - `run`: one run — store, WASI context, supervision, outcome.
//! - `stream`: guest stdout/stderr into the run's output, bounded.
//! - `limits`: the per-run resource limiter.
//! - `inspect`: upload-time validation ([`ModuleInspector`]).
//! - `network`: what a component may reach on the network; `keyvalue`: its
//!   job's key-value state (`wasi:keyvalue`).
//!
//! It never touches a store: module bytes come from a [`ModuleSource`], a
//! component's key-value state goes through a [`StateStore`] (given with
//! [`WasmExecutor::with_state`]; without one, opening a bucket fails), output
//! goes into the [`RunOutput`] it is given.
//!
//! How runs end:
//! - `succeeded`: `_start` returned or called `proc_exit(0)`; a component's
//!   `wasi:cli/run` returned `ok`.
//! - `failed`: a non-zero `proc_exit` (its `exit_code`), a trap (its message,
//!   e.g. `wasm trap: call stack exhausted`), a module that cannot be fetched,
//!   compiled or linked, or an unknown directory grant. Components carry no
//!   exit code: `run` returning `err` (or `wasi:cli/exit` with `err`) is
//!   `failed` with exit code 1.
//! - `out_of_fuel`, `timed_out`, `killed`.
//! - `out_of_memory`: the run failed after a memory or table growth was
//!   refused at its limit (a guest that recovers from the refusal and exits 0
//!   still succeeds).
//!
//! The timeout counts from the start of the guest: waiting for a first
//! compilation or for a free pool slot does not count, but a kill ends those
//! waits too. `fuel_used` is exact for runs that return or trap; for a run
//! stopped in the middle of a loop it may miss the last fuel slice (compiled
//! code writes its fuel count back at calls and every few tens of millions of
//! units).

mod artifact;
mod cache;
mod engine;
mod executor;
mod inspect;
mod keyvalue;
mod limits;
mod network;
mod provided;
mod sandbox;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Semaphore;

use self::artifact::{ArtifactStore, Compiled, Rejected};
use self::cache::{CoreEntry, Loaded, ModuleCache, Prepared};
use self::engine::{EngineParts, EpochTicker};
use self::keyvalue::StateAccess;
use self::network::NetworkGrant;
use self::sandbox::{Preopen, SandboxPlan};
use super::ExecRequest;
use crate::exec::egress::EgressPolicy;
use crate::ids::ModuleDigest;
use crate::job::WasmJob;
use crate::module::{ModuleError, ModuleInfo, ModuleInspector, ModuleKind};

pub use self::cache::{LoadedFrom, ModuleStats};
pub use self::executor::WasmExecutor;

/// The worker's WASM settings: caps on what jobs may ask for, and sizes.
#[derive(Debug, Clone)]
pub struct WasmConfig {
    /// Runs this worker executes at once; sizes the instance pool. More runs
    /// wait for a slot.
    pub capacity: usize,
    /// The most linear memory a run may have (all its memories together); a
    /// job's `memory_mb` is clamped to it. At most 4096 (a 32-bit memory).
    pub max_memory_mb: u64,
    /// The most fuel a run may have; a job's `fuel` is clamped to it.
    pub max_fuel: u64,
    /// The longest a run may take; a job's `timeout_s` is clamped to it.
    pub max_timeout_s: u64,
    /// The largest binary accepted at upload.
    pub max_module_bytes: u64,
    /// Where compiled artifacts are kept across restarts; `None` compiles
    /// every module once per process.
    pub cache_dir: Option<PathBuf>,
    /// Host directories jobs may mount, by grant name (`DirMount::grant`).
    pub dirs: BTreeMap<String, DirGrant>,
    /// Which addresses a component may reach at all (the worker's
    /// `http_allow`); a job's `egress` narrows it to names and ports.
    pub egress_policy: EgressPolicy,
}

impl Default for WasmConfig {
    fn default() -> Self {
        Self {
            capacity: 16,
            max_memory_mb: 4096,
            max_fuel: u64::MAX,
            max_timeout_s: crate::job::limits::MAX_TIMEOUT_S,
            max_module_bytes: 64 << 20,
            cache_dir: None,
            dirs: BTreeMap::new(),
            egress_policy: EgressPolicy::public_only(),
        }
    }
}

/// A host directory the worker lets jobs mount (`[worker] dirs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    pub path: PathBuf,
    /// Whether a job may mount it writable (it is read-only otherwise,
    /// whatever the job asks).
    pub writable: bool,
    /// The jobs that may mount it: names, or prefixes ending in `*`; empty:
    /// every job.
    pub jobs: Vec<String>,
}

impl DirGrant {
    /// A grant every job may mount, writable or not.
    pub fn open(path: PathBuf) -> Self {
        Self {
            path,
            writable: true,
            jobs: Vec::new(),
        }
    }

    /// Whether job `name` may mount it.
    pub fn admits(&self, name: &str) -> bool {
        self.jobs.is_empty()
            || self.jobs.iter().any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == pattern,
            })
    }
}

/// Where the executor gets a module's bytes the first time it runs it (the
/// worker implements this over the coordination store).
#[async_trait]
pub trait ModuleSource: Send + Sync + 'static {
    /// The bytes of a stored module.
    async fn module_bytes(&self, digest: &ModuleDigest) -> anyhow::Result<Vec<u8>>;
}

/// Why a module could not be made ready to run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrepareError {
    #[error("cannot fetch module {digest}: {message}")]
    Fetch { digest: ModuleDigest, message: String },
    #[error("the bytes of module {0} do not match its digest")]
    DigestMismatch(ModuleDigest),
    #[error("module {0} is neither a WebAssembly module nor a component")]
    NotWasm(ModuleDigest),
    #[error("cannot compile module {digest}: {message}")]
    Compile { digest: ModuleDigest, message: String },
    #[error("cannot link module {digest} against WASI: {message}")]
    Link { digest: ModuleDigest, message: String },
}

/// Counters of the engine's module cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Modules compiled from WebAssembly.
    pub compiled: u64,
    /// Modules loaded from an artifact on disk.
    pub loaded_from_disk: u64,
    /// Artifacts on disk refused (damaged, foreign or tampered with) and
    /// replaced by a compilation.
    pub rejected_artifacts: u64,
    /// Runs started.
    pub runs: u64,
}

#[derive(Default)]
struct Counters {
    compiled: AtomicU64,
    loaded_from_disk: AtomicU64,
    rejected_artifacts: AtomicU64,
    runs: AtomicU64,
}

/// The process's WebAssembly engine: compiled modules, the instance pool and
/// the epoch ticker. Create one per process and share it.
pub struct WasmEngine {
    config: WasmConfig,
    parts: EngineParts,
    artifacts: Option<Arc<ArtifactStore>>,
    cache: ModuleCache,
    /// One permit per pool slot: a run beyond `capacity` waits here rather
    /// than failing to find room in the pool.
    slots: Semaphore,
    /// Compilations ahead of a first run (`warm`), one at a time: they use
    /// a core each and must not crowd out runs.
    warming: Arc<Semaphore>,
    /// Modules a warm-up is queued or running for: one task per module,
    /// however many jobs use it.
    warm_queue: std::sync::Mutex<std::collections::HashSet<ModuleDigest>>,
    counters: Counters,
    max_memory_bytes: u64,
    /// Declared last so it stops after everything else is dropped.
    _ticker: EpochTicker,
}

impl std::fmt::Debug for WasmEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmEngine")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl WasmEngine {
    pub fn new(config: WasmConfig) -> anyhow::Result<Arc<WasmEngine>> {
        let parts = EngineParts::new(&config)?;
        let artifacts = match &config.cache_dir {
            Some(dir) => match ArtifactStore::open(dir, &parts.engine) {
                Ok(store) => Some(Arc::new(store)),
                Err(err) => {
                    // A worker without a disk cache still works, only slower
                    // to start each module after a restart.
                    tracing::warn!(dir = %dir.display(), "compiled-module cache disabled: {err:#}");
                    None
                }
            },
            None => None,
        };
        let ticker = EpochTicker::start(&parts.engine)?;
        Ok(Arc::new(WasmEngine {
            max_memory_bytes: engine::max_memory_bytes(&config),
            slots: Semaphore::new(config.capacity.max(1)),
            warming: Arc::new(Semaphore::new(1)),
            warm_queue: Default::default(),
            config,
            parts,
            artifacts,
            cache: ModuleCache::default(),
            counters: Counters::default(),
            _ticker: ticker,
        }))
    }

    /// An executor running modules fetched from `source`.
    pub fn executor(self: &Arc<Self>, source: Arc<dyn ModuleSource>) -> WasmExecutor {
        WasmExecutor {
            engine: Arc::clone(self),
            source,
            state: None,
        }
    }

    pub fn config(&self) -> &WasmConfig {
        &self.config
    }

    /// Compiles `bytes` (or loads its artifact from disk) now and keeps it
    /// ready, so the first run does not wait; for benchmarks and to warm the
    /// cache.
    pub async fn prepare(&self, digest: &ModuleDigest, bytes: Vec<u8>) -> Result<ModuleKind, PrepareError> {
        let loaded = self.load(digest, Bytes::Given(bytes)).await?;
        Ok(loaded.prepared.kind())
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            compiled: self.counters.compiled.load(Ordering::Relaxed),
            loaded_from_disk: self.counters.loaded_from_disk.load(Ordering::Relaxed),
            rejected_artifacts: self.counters.rejected_artifacts.load(Ordering::Relaxed),
            runs: self.counters.runs.load(Ordering::Relaxed),
        }
    }

    /// Usage figures of a module in the memory cache.
    pub fn module_stats(&self, digest: &ModuleDigest) -> Option<ModuleStats> {
        self.cache.get(digest).map(|loaded| loaded.stats())
    }

    /// The prepared module of `digest`, loading it once however many callers
    /// ask at the same time.
    async fn load(&self, digest: &ModuleDigest, bytes: Bytes<'_>) -> Result<Arc<Loaded>, PrepareError> {
        let slot = self.cache.slot(digest);
        slot.cell
            .get_or_try_init(|| async {
                let (compiled, from, took) = self.compile_or_restore(digest, bytes).await?;
                let prepared = self.link(digest, compiled)?;
                Ok(Arc::new(Loaded::new(prepared, from, took)))
            })
            .await
            .cloned()
    }

    /// Machine code for `digest`: this worker's artifact from disk if it has a
    /// trusted one, else compiled (and the artifact written). The blocking
    /// work (5 ms to seconds) runs off the async runtime's threads.
    async fn compile_or_restore(
        &self,
        digest: &ModuleDigest,
        bytes: Bytes<'_>,
    ) -> Result<(Compiled, LoadedFrom, Duration), PrepareError> {
        let engine = self.parts.engine.clone();
        if let Some(artifacts) = &self.artifacts {
            let (artifacts, engine, key) = (Arc::clone(artifacts), engine.clone(), digest.clone());
            let restored = tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                let result = artifacts.load(&engine, &key);
                if let Err(Rejected::Untrusted(_) | Rejected::Deserialize(_)) = &result {
                    artifacts.remove(&key);
                }
                (result, started.elapsed())
            })
            .await;
            match restored {
                Ok((Ok(compiled), took)) => {
                    self.counters.loaded_from_disk.fetch_add(1, Ordering::Relaxed);
                    return Ok((compiled, LoadedFrom::Disk, took));
                }
                Ok((Err(Rejected::Missing), _)) => {}
                Ok((Err(rejected), _)) => {
                    self.counters.rejected_artifacts.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(module = %digest, "recompiling: {rejected}");
                }
                Err(join) => tracing::error!(module = %digest, "loading an artifact panicked: {join}"),
            }
        }

        let bytes = match bytes {
            Bytes::Given(bytes) => bytes,
            Bytes::From(source) => source.module_bytes(digest).await.map_err(|err| PrepareError::Fetch {
                digest: digest.clone(),
                message: format!("{err:#}"),
            })?,
        };
        let artifacts = self.artifacts.clone();
        let key = digest.clone();
        let compiled = tokio::task::spawn_blocking(move || compile(&engine, &key, &bytes, artifacts.as_deref()))
            .await
            .map_err(|join| PrepareError::Compile {
                digest: digest.clone(),
                message: format!("the compiler panicked: {join}"),
            })??;
        self.counters.compiled.fetch_add(1, Ordering::Relaxed);
        Ok(compiled)
    }

    fn link(&self, digest: &ModuleDigest, compiled: Compiled) -> Result<Prepared, PrepareError> {
        let link_error = |err: wasmtime::Error| PrepareError::Link {
            digest: digest.clone(),
            message: format!("{err:#}"),
        };
        match compiled {
            Compiled::Module(module) => {
                let entry = CoreEntry::of(&module);
                let pre = self.parts.core_linker.instantiate_pre(&module).map_err(link_error)?;
                Ok(Prepared::Core { pre, entry })
            }
            Compiled::Component(component) => {
                let pre = self
                    .parts
                    .component_linker
                    .instantiate_pre(&component)
                    .map_err(link_error)?;
                let pre = wasmtime_wasi::p2::bindings::CommandPre::new(pre).map_err(link_error)?;
                Ok(Prepared::Component { pre })
            }
        }
    }

    /// What `job` may do here: its limits clamped to the worker's caps, its
    /// directory mounts resolved against the worker's grants.
    fn plan(&self, request: &ExecRequest, job: &WasmJob) -> Result<SandboxPlan, String> {
        let mut args = Vec::with_capacity(job.args.len() + 1);
        args.push(request.job.to_string());
        args.extend(job.args.iter().cloned());
        // The environment is what the job declares, its secrets if it asks
        // for them there, and the run context unless it opts out; a
        // component reads all three through wasi:config as well.
        let secrets = request.secret_env()?;
        let context = request.sandcron_env();
        let mut env: BTreeMap<String, String> = (*job.env).clone();
        if job.secrets_as_env {
            env.extend(secrets.clone());
        }
        if job.context_env {
            env.extend(context.clone());
        }
        let mut config = (*job.config).clone();
        config.extend(secrets);
        config.extend(context);
        let mut preopens = Vec::with_capacity(job.dirs.len());
        for mount in &job.dirs {
            let Some(grant) = self.config.dirs.get(&mount.grant) else {
                return Err(format!(
                    "directory grant {:?} (for {}) is not configured on this worker",
                    mount.grant, mount.guest_path
                ));
            };
            if !grant.admits(request.job.as_str()) {
                return Err(format!(
                    "directory grant {:?} is only for jobs {} on this worker",
                    mount.grant,
                    grant.jobs.join(", ")
                ));
            }
            if mount.writable && !grant.writable {
                return Err(format!(
                    "directory grant {:?} is read-only on this worker; the job mounts it writable at {}",
                    mount.grant, mount.guest_path
                ));
            }
            preopens.push(Preopen {
                host_path: grant.path.clone(),
                guest_path: mount.guest_path.clone(),
                writable: mount.writable,
            });
        }
        let limits = &job.limits;
        let memory_bytes = limits.memory_mb.saturating_mul(1 << 20).min(self.max_memory_bytes);
        Ok(SandboxPlan {
            args,
            env: env.into_iter().collect(),
            config: config.into_iter().collect(),
            preopens,
            fuel: limits.fuel.min(self.config.max_fuel),
            memory_bytes: usize::try_from(memory_bytes).unwrap_or(usize::MAX),
            timeout: Duration::from_secs(limits.timeout_s.min(self.config.max_timeout_s)),
            network: NetworkGrant::new(&job.egress, *job.network, self.config.egress_policy.clone()),
            state: StateAccess {
                store: None,
                job: request.job.clone(),
                fence: request.fence,
            },
        })
    }
}

impl ModuleInspector for WasmEngine {
    fn inspect(&self, bytes: &[u8]) -> Result<ModuleInfo, ModuleError> {
        inspect::inspect(
            self.parts.engine.get_wasm_features(),
            self.config.max_module_bytes,
            &self.parts.provided,
            bytes,
        )
    }

    fn max_module_bytes(&self) -> u64 {
        self.config.max_module_bytes
    }
}

/// Where `load` gets bytes if it has to compile.
enum Bytes<'a> {
    Given(Vec<u8>),
    From(&'a dyn ModuleSource),
}

/// Checks and compiles `bytes`; writes the artifact when there is a store.
fn compile(
    engine: &wasmtime::Engine,
    digest: &ModuleDigest,
    bytes: &[u8],
    artifacts: Option<&ArtifactStore>,
) -> Result<(Compiled, LoadedFrom, Duration), PrepareError> {
    // The cache is keyed by digest: bytes that do not hash to it must never
    // be cached under it.
    if ModuleDigest::of(bytes) != *digest {
        return Err(PrepareError::DigestMismatch(digest.clone()));
    }
    let started = Instant::now();
    let compile_error = |err: wasmtime::Error| PrepareError::Compile {
        digest: digest.clone(),
        message: format!("{err:#}"),
    };
    let compiled = if wasmparser::Parser::is_component(bytes) {
        Compiled::Component(wasmtime::component::Component::new(engine, bytes).map_err(compile_error)?)
    } else if wasmparser::Parser::is_core_wasm(bytes) {
        Compiled::Module(wasmtime::Module::new(engine, bytes).map_err(compile_error)?)
    } else {
        return Err(PrepareError::NotWasm(digest.clone()));
    };
    let took = started.elapsed();
    if let Some(artifacts) = artifacts
        && let Err(err) = artifacts.store(digest, &compiled)
    {
        tracing::warn!(module = %digest, "cannot cache the compiled module: {err:#}");
    }
    Ok((compiled, LoadedFrom::Compiled, took))
}
