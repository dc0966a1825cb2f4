//! One run of a prepared module: a fresh `Store` with a deny-by-default WASI
//! context, the limits (fuel, memory, wall time through the epoch callback),
//! supervision of the guest against the kill switch and the timeout while its
//! output streams into the run's `RunOutput`, and the classification of how
//! it ended into a [`RunOutcome`].

use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::cache::{CoreEntry, Prepared};
use super::keyvalue::{KeyValueView, StateAccess};
use super::limits::{LimitHit, RunLimiter, TABLE_ELEMENTS};
use super::network::{HttpHooks, NameLookupView, NetworkGrant, Resolved, RunNetwork, tcp_connect_check};
use super::stream::{CHANNEL_CAPACITY, Chunk, GuestOutput, Shared};
use crate::exec::{KillSwitch, RunOutcome, RunOutput, StopReason};
use crate::job::EgressScheme;
use crate::run::{RunStatus, StreamKind};

/// Fuel between two yields of a CPU-bound guest (some tens of milliseconds).
const FUEL_SLICE: u64 = 50_000_000;

/// Store data of a core module's run.
pub(super) struct CoreState {
    pub(super) wasi: WasiP1Ctx,
    pub(super) limiter: RunLimiter,
}

/// Store data of a component's run.
pub(super) struct ComponentState {
    ctx: WasiCtx,
    table: ResourceTable,
    limiter: RunLimiter,
    http: WasiHttpCtx,
    hooks: HttpHooks,
    network: Arc<RunNetwork>,
    resolved: Resolved,
    /// The job's key-value state (`wasi:keyvalue`).
    state: StateAccess,
    /// `wasi:config/store`: the plan's `config`.
    config: WasiConfigVariables,
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ComponentState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl ComponentState {
    /// What `wasi:config/store` reads.
    pub(super) fn config(&mut self) -> WasiConfig<'_> {
        WasiConfig::from(&self.config)
    }

    /// What the host's own `wasi:sockets/ip-name-lookup` works on.
    pub(super) fn name_lookup(&mut self) -> NameLookupView<'_> {
        NameLookupView {
            table: &mut self.table,
            network: &self.network,
            resolved: &self.resolved,
        }
    }

    /// What the host's `wasi:keyvalue` works on.
    pub(super) fn keyvalue(&mut self) -> KeyValueView<'_> {
        KeyValueView {
            table: &mut self.table,
            access: &self.state,
        }
    }
}

trait HasLimiter: Send + 'static {
    fn limiter(&mut self) -> &mut RunLimiter;
}

impl HasLimiter for CoreState {
    fn limiter(&mut self) -> &mut RunLimiter {
        &mut self.limiter
    }
}

impl HasLimiter for ComponentState {
    fn limiter(&mut self) -> &mut RunLimiter {
        &mut self.limiter
    }
}

/// What one run may do, resolved from the job and the worker's caps.
#[derive(Debug, Clone)]
pub(super) struct SandboxPlan {
    /// argv, starting with the job name.
    pub(super) args: Vec<String>,
    pub(super) env: Vec<(String, String)>,
    /// What a component reads through `wasi:config/store`: the job's
    /// `config`, its secrets and the run context.
    pub(super) config: Vec<(String, String)>,
    pub(super) preopens: Vec<Preopen>,
    pub(super) fuel: u64,
    pub(super) memory_bytes: usize,
    pub(super) timeout: Duration,
    /// Where a component may connect (nowhere unless the job lists it).
    pub(super) network: NetworkGrant,
    /// The job's key-value state, for components.
    pub(super) state: StateAccess,
}

#[derive(Debug, Clone)]
pub(super) struct Preopen {
    pub(super) host_path: PathBuf,
    pub(super) guest_path: String,
    pub(super) writable: bool,
}

/// A run's outcome plus what its output streams did (for tests and metrics).
#[derive(Debug, Clone)]
pub(super) struct SandboxReport {
    pub(super) outcome: RunOutcome,
    /// Guest output bytes sent to the `RunOutput`.
    pub(super) forwarded: u64,
    /// Guest output bytes dropped in the stream because the output was
    /// already cut at its limit.
    pub(super) discarded: u64,
}

/// How the guest's code returned, when it did.
enum Returned {
    /// `_start` returned, or a component's `run` returned `ok`.
    Success,
    /// A component's `run` returned `err` (components carry no exit code).
    ComponentError,
}

/// How supervision ended.
enum End {
    Finished(wasmtime::Result<Returned>),
    Stopped(StopReason),
    TimedOut,
}

/// Runs `prepared` under `plan`, streaming output into `output`.
pub(super) async fn execute(
    engine: &wasmtime::Engine,
    prepared: &Prepared,
    plan: &SandboxPlan,
    output: &mut RunOutput,
    kill: &KillSwitch,
) -> SandboxReport {
    let (tx, mut rx) = mpsc::channel(CHANNEL_CAPACITY);
    let shared = Arc::new(Shared::default());
    let mut wasi = match wasi_builder(plan, tx, &shared) {
        Ok(builder) => builder,
        Err(error) => {
            return SandboxReport {
                outcome: RunOutcome::new(RunStatus::Failed).with_error(error),
                forwarded: 0,
                discarded: 0,
            };
        }
    };
    let limiter = RunLimiter::new(plan.memory_bytes);
    let deadline = Instant::now() + plan.timeout;
    let mut ledger_of_run = None;
    let (end, measured) = match prepared {
        Prepared::Core { pre, entry } => {
            let state = CoreState {
                wasi: wasi.build_p1(),
                limiter,
            };
            let mut store = new_store(engine, state, plan, kill, deadline);
            let end = supervise(
                run_core(&mut store, pre, entry),
                &mut rx,
                &shared,
                output,
                kill,
                deadline,
            )
            .await;
            (end, Measured::of(store, plan.fuel))
        }
        Prepared::Component { pre } => {
            let network = RunNetwork::new(plan.network.clone());
            let resolved = Resolved::default();
            network_builder(&mut wasi, &network, &resolved);
            let state = ComponentState {
                ctx: wasi.build(),
                table: ResourceTable::new(),
                limiter,
                http: WasiHttpCtx::new(),
                hooks: HttpHooks::new(Arc::clone(&network)),
                network: Arc::clone(&network),
                resolved,
                state: plan.state.clone(),
                config: plan.config.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
            };
            let mut store = new_store(engine, state, plan, kill, deadline);
            let guest = async {
                let command = pre.instantiate_async(&mut store).await?;
                let result = command.wasi_cli_run().call_run(&mut store).await?;
                Ok(match result {
                    Ok(()) => Returned::Success,
                    Err(()) => Returned::ComponentError,
                })
            };
            let end = supervise(guest, &mut rx, &shared, output, kill, deadline).await;
            let measured = Measured::of(store, plan.fuel);
            let ledger = network.ledger();
            ledger_of_run = (!plan.network.targets.is_empty() || !ledger.is_empty()).then_some(ledger);
            (end, measured)
        }
    };
    // The store is gone, and with it every sender: what is queued is all there
    // is. `close` makes `recv` end once the queue is empty even so.
    rx.close();
    while let Some(chunk) = rx.recv().await {
        forward(output, &shared, chunk).await;
    }
    output.finish().await;

    let mut outcome = classify(end, &measured, plan, kill, deadline);
    outcome.fuel_used = Some(measured.fuel_used);
    outcome.peak_memory = Some(measured.peak_memory);
    outcome.egress = ledger_of_run;
    SandboxReport {
        outcome,
        forwarded: shared.forwarded(),
        discarded: shared.discarded(),
    }
}

/// What the store knew when the run ended.
struct Measured {
    fuel_used: u64,
    peak_memory: u64,
    hit: Option<LimitHit>,
    memory_limit: usize,
}

impl Measured {
    /// Reads the figures and drops the store (closing the output streams).
    fn of<T: HasLimiter>(mut store: Store<T>, fuel: u64) -> Self {
        let left = store.get_fuel().unwrap_or(0);
        let limiter = store.data_mut().limiter();
        Self {
            fuel_used: fuel.saturating_sub(left),
            peak_memory: limiter.peak_memory(),
            hit: limiter.hit(),
            memory_limit: limiter.memory_limit(),
        }
    }
}

fn wasi_builder(plan: &SandboxPlan, tx: mpsc::Sender<Chunk>, shared: &Arc<Shared>) -> Result<WasiCtxBuilder, String> {
    let mut builder = WasiCtxBuilder::new();
    // Deny by default: no inherited env, args or stdio (the builder's
    // defaults), empty stdin, and no network at all.
    builder
        .stdout(GuestOutput::new(StreamKind::Stdout, tx.clone(), Arc::clone(shared)))
        .stderr(GuestOutput::new(StreamKind::Stderr, tx, Arc::clone(shared)))
        .args(&plan.args)
        .envs(&plan.env)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    for preopen in &plan.preopens {
        let perms = if preopen.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        builder
            .preopened_dir(&preopen.host_path, &preopen.guest_path, perms)
            .map_err(|err| format!("cannot open directory for {}: {err}", preopen.guest_path))?;
    }
    Ok(builder)
}

/// A component's sockets: TCP connects checked against the run's network
/// (only when the job lists a `tcp://` entry); UDP and name lookups through
/// the system resolver stay off (lookups go through the host's own
/// `ip-name-lookup`, see `network::sockets`).
fn network_builder(builder: &mut WasiCtxBuilder, network: &Arc<RunNetwork>, resolved: &Resolved) {
    let tcp = network
        .grant()
        .targets
        .iter()
        .any(|target| target.scheme == EgressScheme::Tcp);
    if tcp {
        builder
            .allow_tcp(true)
            .socket_addr_check(tcp_connect_check(Arc::clone(network), Arc::clone(resolved)));
    }
}

fn new_store<T: HasLimiter>(
    engine: &wasmtime::Engine,
    state: T,
    plan: &SandboxPlan,
    kill: &KillSwitch,
    deadline: Instant,
) -> Store<T> {
    let mut store = Store::new(engine, state);
    store.limiter(|state| state.limiter());
    // Only fails when the engine has no fuel, and it always has.
    if let Err(error) = store.set_fuel(plan.fuel) {
        tracing::error!(%error, "cannot set fuel");
    }
    // Compiled code keeps its fuel count in a register and writes it back at
    // calls; a yield every FUEL_SLICE units also writes it back, so a run
    // stopped inside a loop still reports (nearly) the fuel it used.
    if let Err(error) = store.fuel_async_yield_interval(Some(FUEL_SLICE)) {
        tracing::error!(%error, "cannot set the fuel yield interval");
    }
    // Every tick a running guest checks the kill switch and the deadline, and
    // otherwise yields its runtime thread, so CPU-bound guests share threads
    // and `supervise` gets to look at the kill switch at least every tick.
    let kill = kill.clone();
    let deadline = deadline.into_std();
    store.epoch_deadline_callback(move |_| {
        if kill.is_pulled() || std::time::Instant::now() >= deadline {
            Ok(UpdateDeadline::Interrupt)
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    store.set_epoch_deadline(1);
    store
}

async fn run_core(
    store: &mut Store<CoreState>,
    pre: &wasmtime::InstancePre<CoreState>,
    entry: &CoreEntry,
) -> wasmtime::Result<Returned> {
    let instance = pre.instantiate_async(&mut *store).await?;
    let export = match entry {
        CoreEntry::Start(export) | CoreEntry::Initialize(export) => export,
        CoreEntry::None => return Ok(Returned::Success),
    };
    let func = instance
        .get_module_export(&mut *store, export)
        .and_then(wasmtime::Extern::into_func)
        .ok_or_else(|| wasmtime::format_err!("the module's entry point is not a function"))?;
    let func = func.typed::<(), ()>(&*store)?;
    func.call_async(&mut *store, ()).await?;
    Ok(Returned::Success)
}

/// Drives the guest while forwarding its output, until it returns, the kill
/// switch is pulled or the deadline passes. Dropping the guest's future (on
/// kill or timeout) abandons it wherever it is, in wasm or blocked in a host
/// call such as `poll_oneoff`.
async fn supervise(
    guest: impl Future<Output = wasmtime::Result<Returned>>,
    rx: &mut mpsc::Receiver<Chunk>,
    shared: &Shared,
    output: &mut RunOutput,
    kill: &KillSwitch,
    deadline: Instant,
) -> End {
    let mut guest = pin!(guest);
    let mut killed = pin!(kill.pulled());
    let mut timeout = pin!(tokio::time::sleep_until(deadline));
    loop {
        // Biased: a pulled kill switch or a passed deadline wins over output
        // and progress; output is taken before the guest is polled so a full
        // channel frees up first.
        let chunk = tokio::select! {
            biased;
            reason = &mut killed => return End::Stopped(reason),
            () = &mut timeout => return End::TimedOut,
            Some(chunk) = rx.recv() => chunk,
            result = &mut guest => return End::Finished(result),
        };
        // Writing may wait on the log sink; a kill does not.
        tokio::select! {
            biased;
            reason = &mut killed => return End::Stopped(reason),
            () = forward(output, shared, chunk) => {}
        }
    }
}

async fn forward(output: &mut RunOutput, shared: &Shared, chunk: Chunk) {
    output.write(chunk.stream, &chunk.bytes).await;
    if output.is_truncated() {
        shared.output_cut();
    }
}

fn classify(end: End, measured: &Measured, plan: &SandboxPlan, kill: &KillSwitch, deadline: Instant) -> RunOutcome {
    let error = match end {
        End::Stopped(reason) => return RunOutcome::stopped(reason),
        End::TimedOut => return timed_out(plan),
        End::Finished(Ok(Returned::Success)) => return exited(0),
        End::Finished(Ok(Returned::ComponentError)) => {
            return RunOutcome {
                exit_code: Some(1),
                ..RunOutcome::new(RunStatus::Failed).with_error("the component's run returned an error")
            };
        }
        End::Finished(Err(error)) => error,
    };
    if let Some(exit) = error.downcast_ref::<I32Exit>()
        && exit.0 == 0
    {
        return exited(0);
    }
    // The epoch callback interrupts for the same reasons `supervise` stops.
    if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        if let Some(reason) = kill.reason() {
            return RunOutcome::stopped(reason);
        }
        if Instant::now() >= deadline {
            return timed_out(plan);
        }
    }
    // A guest whose allocation was refused usually dies of it (Rust aborts,
    // C returns NULL and crashes): the limit is the cause worth reporting,
    // with how the guest died as a hint. Tables are not memory the job asked
    // for, so a table bomb is a plain failure.
    match measured.hit {
        Some(LimitHit::Memory) => {
            return RunOutcome::new(RunStatus::OutOfMemory).with_error(format!(
                "memory limit of {} MiB reached ({})",
                measured.memory_limit >> 20,
                headline(&error)
            ));
        }
        Some(LimitHit::Table) => {
            return RunOutcome::new(RunStatus::Failed).with_error(format!(
                "table limit of {TABLE_ELEMENTS} elements reached ({})",
                headline(&error)
            ));
        }
        None => {}
    }
    if error.downcast_ref::<Trap>() == Some(&Trap::OutOfFuel) {
        return RunOutcome::new(RunStatus::OutOfFuel).with_error(format!("ran out of fuel after {} units", plan.fuel));
    }
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return RunOutcome {
            exit_code: Some(exit.0),
            ..RunOutcome::new(RunStatus::Failed).with_error(format!("exited with status {}", exit.0))
        };
    }
    if let Some(pool) = error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        return RunOutcome::new(RunStatus::Failed).with_error(format!(
            "no room in this worker's instance pool ({pool}); the job uses more instances than a run slot holds"
        ));
    }
    RunOutcome::new(RunStatus::Failed).with_error(describe(&error))
}

fn exited(code: i32) -> RunOutcome {
    RunOutcome {
        exit_code: Some(code),
        ..RunOutcome::new(RunStatus::Succeeded)
    }
}

fn timed_out(plan: &SandboxPlan) -> RunOutcome {
    RunOutcome::new(RunStatus::TimedOut).with_error(format!("timed out after {} s", plan.timeout.as_secs()))
}

/// Longest error text kept (a deep recursion's backtrace is long).
const MAX_ERROR_CHARS: usize = 4096;

/// The first line of an error: the trap, named plainly.
fn headline(error: &wasmtime::Error) -> String {
    match error.downcast_ref::<Trap>() {
        Some(trap @ Trap::StackOverflow) => format!("stack overflow ({trap})"),
        Some(trap) => trap.to_string(),
        None => error.to_string(),
    }
}

/// A trap or error as one message: the headline, then wasmtime's context
/// (the wasm backtrace).
fn describe(error: &wasmtime::Error) -> String {
    let mut text = headline(error);
    let detail = format!("{error:?}");
    if !detail.is_empty() && detail != text {
        text.push('\n');
        text.push_str(&detail);
    }
    if text.len() > MAX_ERROR_CHARS {
        let mut cut = MAX_ERROR_CHARS;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n[…]");
    }
    text
}
