//! The process's one wasmtime `Engine` — fuel, epoch interruption, the pooling
//! allocator sized from the worker's capacity — the epoch ticker thread, and
//! the WASI linkers (p1 for core modules; p2 plus `wasi:http`, the host's
//! own checked name lookup and its `wasi:keyvalue` for components).
//!
//! Nothing here reads the environment: wasmtime's own environment switches
//! (backtrace details) are pinned off.

use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, WasmBacktraceDetails};

use super::WasmConfig;
use super::limits::{INSTANCES_PER_RUN, MEMORIES_PER_RUN, TABLE_ELEMENTS, TABLES_PER_RUN};
use super::provided::Provided;
use super::sandbox::{ComponentState, CoreState};
use super::{keyvalue, network};

/// How often the epoch advances: the granularity of timeouts and kills, and
/// how long a CPU-bound guest runs before it yields its runtime thread.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The largest linear memory a 32-bit guest can have, and what the pool's
/// memory slots are reserved for.
const MAX_MEMORY_BYTES: u64 = 4 << 30;

/// Stack for the guest's own frames. Deep enough for real programs; a runaway
/// recursion hits it quickly and ends with a stack-overflow trap.
const MAX_WASM_STACK: usize = 1 << 20;

/// The host stack the guest (and the WASI calls it makes) runs on; it must be
/// larger than `MAX_WASM_STACK` to leave room for the host's frames.
const ASYNC_STACK: usize = 2 << 20;

/// The wasmtime engine and the linkers that every run shares.
pub(super) struct EngineParts {
    pub(super) engine: Engine,
    pub(super) core_linker: wasmtime::Linker<CoreState>,
    pub(super) component_linker: wasmtime::component::Linker<ComponentState>,
    /// What the linkers provide, for upload checks.
    pub(super) provided: Provided,
}

impl EngineParts {
    pub(super) fn new(config: &WasmConfig) -> anyhow::Result<Self> {
        let engine = Engine::new(&engine_config(config)?).map_err(anyhow::Error::from)?;
        let mut core_linker = wasmtime::Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut core_linker, |state: &mut CoreState| &mut state.wasi)
            .map_err(anyhow::Error::from)
            .context("cannot link WASI preview 1")?;
        let mut component_linker = wasmtime::component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut component_linker)
            .map_err(anyhow::Error::from)
            .context("cannot link WASI preview 2")?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut component_linker)
            .map_err(anyhow::Error::from)
            .context("cannot link wasi:http")?;
        wasmtime_wasi_config::add_to_linker(&mut component_linker, ComponentState::config)
            .map_err(anyhow::Error::from)
            .context("cannot link wasi:config/store")?;
        network::add_name_lookup_to_linker(&mut component_linker, ComponentState::name_lookup)
            .map_err(anyhow::Error::from)
            .context("cannot link the checked wasi:sockets/ip-name-lookup")?;
        keyvalue::add_to_linker(&mut component_linker, ComponentState::keyvalue)
            .map_err(anyhow::Error::from)
            .context("cannot link wasi:keyvalue")?;
        let provided = Provided::of(&engine, &core_linker);
        Ok(Self {
            engine,
            core_linker,
            component_linker,
            provided,
        })
    }
}

/// The largest linear memory a job may ask for, in bytes: the worker's cap,
/// itself capped at what a 32-bit memory can address.
pub(super) fn max_memory_bytes(config: &WasmConfig) -> u64 {
    config
        .max_memory_mb
        .saturating_mul(1 << 20)
        .clamp(1 << 16, MAX_MEMORY_BYTES)
}

fn engine_config(config: &WasmConfig) -> anyhow::Result<Config> {
    let runs = u32::try_from(config.capacity.max(1)).context("capacity is too large")?;
    let per_run = |count: usize| -> anyhow::Result<u32> {
        let count = u32::try_from(count).context("pool size overflows")?;
        runs.checked_mul(count).context("pool size overflows")
    };
    let max_memory = usize::try_from(max_memory_bytes(config)).context("memory limit overflows")?;

    // The pool holds `capacity` runs at their largest: each run may use up to
    // INSTANCES/MEMORIES/TABLES_PER_RUN (the limiter enforces the same
    // numbers). Memory slots are address space, not RAM: every slot reserves
    // 4 GiB plus guards, committed only as guests touch it.
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(runs)
        .total_core_instances(per_run(INSTANCES_PER_RUN)?)
        .total_memories(per_run(MEMORIES_PER_RUN)?)
        .total_tables(per_run(TABLES_PER_RUN)?)
        // One fiber stack per running guest, plus slack for a stack whose
        // store is being torn down while the next run starts.
        .total_stacks(runs.saturating_mul(2))
        .max_core_instances_per_component(u32::try_from(INSTANCES_PER_RUN)?)
        .max_memories_per_component(u32::try_from(MEMORIES_PER_RUN)?)
        .max_tables_per_component(u32::try_from(TABLES_PER_RUN)?)
        .max_memories_per_module(2)
        .max_tables_per_module(4)
        .table_elements(TABLE_ELEMENTS)
        .max_memory_size(max_memory)
        // VMContexts of big guests (thousands of functions) exceed the 1 MiB
        // default; these are upper bounds of address space, not allocations.
        .max_core_instance_size(4 << 20)
        .max_component_instance_size(4 << 20)
        .table_keep_resident(16 << 10);
    // Keep the low pages of reused memories resident and reset them in place
    // rather than unmapping them, so small guests (most cron jobs) start
    // without page faults. With PAGEMAP_SCAN (Linux 6.7+) only the pages a run
    // dirtied are reset, so a larger window is cheap: a trivial Rust guest runs
    // in ~11 µs instead of ~22 µs. Without it every kept byte is reset by
    // memset on each run, so the window stays small. Either way a memory slot
    // keeps at most this much resident between runs.
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(Enabled::Yes).linear_memory_keep_resident(1 << 20);
    } else {
        pool.linear_memory_keep_resident(64 << 10);
    }

    let mut wasm = Config::new();
    wasm.consume_fuel(true)
        .epoch_interruption(true)
        .wasm_component_model(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .async_stack_size(ASYNC_STACK)
        .wasm_backtrace_details(WasmBacktraceDetails::Disable)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Ok(wasm)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a dedicated OS thread,
/// until dropped. A thread, not a tokio task: guests occupy runtime threads
/// between their yields, and a ticker starved by them would never wake them.
pub(super) struct EpochTicker {
    stop: Option<std_mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub(super) fn start(engine: &Engine) -> anyhow::Result<Self> {
        let (stop, stopped) = std_mpsc::channel::<()>();
        let engine = engine.weak();
        let thread = std::thread::Builder::new()
            .name("sandcron-epoch".to_owned())
            .spawn(move || {
                // Ends when the sender is dropped (the engine is going away).
                while let Err(std_mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EPOCH_TICK) {
                    match engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .context("cannot start the epoch ticker thread")?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the epoch ticker thread panicked");
        }
    }
}
