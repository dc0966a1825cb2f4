//! The in-memory cache of prepared modules: one slot per digest, filled once
//! however many runs of a new digest start together, least recently used
//! evicted past [`MAX_MODULES`]. Each slot also keeps the module's usage
//! figures (runs, fuel, memory, how it was loaded) for benchmarks and
//! operators.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use wasmtime::{InstancePre, ModuleExport};
use wasmtime_wasi::p2::bindings::CommandPre;

use super::sandbox::{ComponentState, CoreState};
use crate::ids::ModuleDigest;
use crate::module::ModuleKind;

/// Prepared modules kept in memory. Each holds its machine code (from a few
/// hundred KiB to tens of MiB for an interpreter); a worker runs far fewer
/// distinct modules than this.
const MAX_MODULES: usize = 128;

/// A module ready to instantiate: compiled, linked against WASI, exports
/// resolved.
pub(super) enum Prepared {
    /// A core module linked against WASI p1.
    Core {
        pre: InstancePre<CoreState>,
        /// What a run calls after instantiation.
        entry: CoreEntry,
    },
    /// A component linked against WASI p2, exporting `wasi:cli/run`.
    Component { pre: CommandPre<ComponentState> },
}

impl Prepared {
    pub(super) fn kind(&self) -> ModuleKind {
        match self {
            Prepared::Core { .. } => ModuleKind::Module,
            Prepared::Component { .. } => ModuleKind::Component,
        }
    }
}

/// The function a core module's run calls.
pub(super) enum CoreEntry {
    /// A command's `_start`.
    Start(ModuleExport),
    /// A reactor's `_initialize` (for guests whose work is their
    /// initialisation, such as AssemblyScript's top-level code).
    Initialize(ModuleExport),
    /// Neither: the run is the instantiation itself (a `start` section).
    None,
}

impl CoreEntry {
    pub(super) fn of(module: &wasmtime::Module) -> Self {
        if let Some(start) = module.get_export_index("_start") {
            CoreEntry::Start(start)
        } else if let Some(initialize) = module.get_export_index("_initialize") {
            CoreEntry::Initialize(initialize)
        } else {
            CoreEntry::None
        }
    }
}

/// How a module's code got into memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadedFrom {
    /// Compiled from its WebAssembly bytes.
    Compiled,
    /// Deserialized from this worker's artifact on disk.
    Disk,
}

/// Usage figures of one prepared module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleStats {
    pub kind: ModuleKind,
    pub loaded_from: LoadedFrom,
    /// Compilation or deserialization time.
    pub load_time: Duration,
    /// Runs started since the module was loaded.
    pub runs: u64,
    /// Fuel and peak linear memory (bytes) of the latest finished run, and the
    /// largest seen.
    pub last_fuel_used: u64,
    pub max_fuel_used: u64,
    pub last_peak_memory: u64,
    pub max_peak_memory: u64,
}

/// A prepared module and its usage counters.
pub(super) struct Loaded {
    pub(super) prepared: Prepared,
    loaded_from: LoadedFrom,
    load_time: Duration,
    runs: AtomicU64,
    last_fuel_used: AtomicU64,
    max_fuel_used: AtomicU64,
    last_peak_memory: AtomicU64,
    max_peak_memory: AtomicU64,
}

impl Loaded {
    pub(super) fn new(prepared: Prepared, loaded_from: LoadedFrom, load_time: Duration) -> Self {
        Self {
            prepared,
            loaded_from,
            load_time,
            runs: AtomicU64::new(0),
            last_fuel_used: AtomicU64::new(0),
            max_fuel_used: AtomicU64::new(0),
            last_peak_memory: AtomicU64::new(0),
            max_peak_memory: AtomicU64::new(0),
        }
    }

    pub(super) fn run_started(&self) {
        self.runs.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn run_finished(&self, fuel_used: u64, peak_memory: u64) {
        self.last_fuel_used.store(fuel_used, Ordering::Relaxed);
        self.max_fuel_used.fetch_max(fuel_used, Ordering::Relaxed);
        self.last_peak_memory.store(peak_memory, Ordering::Relaxed);
        self.max_peak_memory.fetch_max(peak_memory, Ordering::Relaxed);
    }

    pub(super) fn stats(&self) -> ModuleStats {
        ModuleStats {
            kind: self.prepared.kind(),
            loaded_from: self.loaded_from,
            load_time: self.load_time,
            runs: self.runs.load(Ordering::Relaxed),
            last_fuel_used: self.last_fuel_used.load(Ordering::Relaxed),
            max_fuel_used: self.max_fuel_used.load(Ordering::Relaxed),
            last_peak_memory: self.last_peak_memory.load(Ordering::Relaxed),
            max_peak_memory: self.max_peak_memory.load(Ordering::Relaxed),
        }
    }
}

/// One digest's place in the cache; filled at most once.
pub(super) struct Slot {
    pub(super) cell: OnceCell<Arc<Loaded>>,
    last_used: AtomicU64,
}

#[derive(Default)]
pub(super) struct ModuleCache {
    slots: Mutex<HashMap<ModuleDigest, Arc<Slot>>>,
    clock: AtomicU64,
}

impl ModuleCache {
    /// The slot of `digest`, created (evicting the least recently used slot
    /// when full) if it is not there.
    pub(super) fn slot(&self, digest: &ModuleDigest) -> Arc<Slot> {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut slots = crate::sync::lock(&self.slots);
        if let Some(slot) = slots.get(digest) {
            slot.last_used.store(now, Ordering::Relaxed);
            return Arc::clone(slot);
        }
        if slots.len() >= MAX_MODULES {
            // Runs in progress keep their own `Arc`; eviction only stops new
            // runs from finding the module here.
            let oldest = slots
                .iter()
                .min_by_key(|(_, slot)| slot.last_used.load(Ordering::Relaxed))
                .map(|(digest, _)| digest.clone());
            if let Some(oldest) = oldest {
                slots.remove(&oldest);
            }
        }
        let slot = Arc::new(Slot {
            cell: OnceCell::new(),
            last_used: AtomicU64::new(now),
        });
        slots.insert(digest.clone(), Arc::clone(&slot));
        slot
    }

    /// The loaded module of `digest`, if it is in memory.
    pub(super) fn get(&self, digest: &ModuleDigest) -> Option<Arc<Loaded>> {
        let slots = crate::sync::lock(&self.slots);
        slots.get(digest).and_then(|slot| slot.cell.get().cloned())
    }
}
