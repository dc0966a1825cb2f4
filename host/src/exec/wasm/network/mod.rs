//! What a component may do on the network, and the one place that decides
//! it. A run gets a [`RunNetwork`]: the job's `egress` entries (where it may
//! connect, by scheme, name and port), the worker's address policy (which
//! addresses any job may reach, `exec::egress`), the run's limits, and its
//! ledger. Every HTTP request (`http.rs`) and every TCP connection and name
//! lookup (`sockets.rs`) asks it first, and the answer is made on the
//! address the host resolved itself, at connect time: a name that resolves
//! to a forbidden address is refused, and the connection goes to the address
//! that was checked (no window for DNS rebinding). Names are never resolved
//! by the guest. Every call, allowed or not, lands in the ledger.

mod body;
mod connect;
mod http;
mod sockets;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub(super) use self::http::HttpHooks;
pub(super) use self::sockets::{NameLookupView, Resolved, add_name_lookup_to_linker, tcp_connect_check};
use crate::exec::egress::EgressPolicy;
use crate::job::{EgressScheme, EgressTarget, NetworkLimits};
use crate::run::{EgressEntry, EgressKind, EgressLedger, EgressOutcome};

/// The network a run is granted.
#[derive(Debug, Clone)]
pub(super) struct NetworkGrant {
    /// The job's `egress` entries; empty: nothing may be reached.
    pub(super) targets: Vec<EgressTarget>,
    /// The worker's address policy.
    pub(super) policy: EgressPolicy,
    pub(super) limits: NetworkLimits,
}

impl NetworkGrant {
    /// The grant of a job with these entries (already validated) on a worker
    /// with this policy. An entry that does not parse grants nothing.
    pub(super) fn new(egress: &[String], limits: NetworkLimits, policy: EgressPolicy) -> Self {
        let targets = egress.iter().filter_map(|entry| entry.parse().ok()).collect();
        Self {
            targets,
            policy,
            limits,
        }
    }

    /// Whether the job lists `scheme://host:port`.
    fn lists(&self, scheme: EgressScheme, host: &str, port: u16) -> bool {
        self.targets.iter().any(|target| target.allows(scheme, host, port))
    }
}

/// One run's network state, shared by its HTTP hooks and socket checks.
#[derive(Debug)]
pub(super) struct RunNetwork {
    grant: NetworkGrant,
    /// Calls started, against `limits.requests`.
    started: AtomicU64,
    /// Connections open at once, against `limits.concurrent`.
    open: Arc<Semaphore>,
    bytes_out: AtomicU64,
    bytes_in: AtomicU64,
    ledger: Mutex<EgressLedger>,
}

/// Why a call was not made; the guest sees an error, the ledger the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The job's `egress` does not list the destination.
    NotListed(String),
    /// The worker's policy forbids every address the name resolved to.
    Address(String),
    /// The name does not resolve.
    Unresolvable(String),
    /// A per-run limit is reached.
    Limit(String),
}

impl Refusal {
    pub(super) fn reason(&self) -> &str {
        match self {
            Refusal::NotListed(reason)
            | Refusal::Address(reason)
            | Refusal::Unresolvable(reason)
            | Refusal::Limit(reason) => reason,
        }
    }
}

impl RunNetwork {
    pub(super) fn new(grant: NetworkGrant) -> Arc<Self> {
        let concurrent = usize::try_from(grant.limits.concurrent).unwrap_or(usize::MAX);
        Arc::new(Self {
            open: Arc::new(Semaphore::new(concurrent.min(Semaphore::MAX_PERMITS))),
            grant,
            started: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            ledger: Mutex::new(EgressLedger::default()),
        })
    }

    pub(super) fn grant(&self) -> &NetworkGrant {
        &self.grant
    }

    pub(super) fn limits(&self) -> &NetworkLimits {
        &self.grant.limits
    }

    /// The run's ledger as it stands.
    pub(super) fn ledger(&self) -> EgressLedger {
        crate::sync::lock(&self.ledger).clone()
    }

    /// Counts a call against the run's limits: one more in all, one more
    /// open at once. The permit is held while the call is open.
    pub(super) fn admit(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        let limits = self.limits();
        let started = self.started.fetch_add(1, Ordering::Relaxed);
        if started >= u64::from(limits.requests) {
            return Err(Refusal::Limit(format!(
                "the run's limit of {} requests and connections is reached",
                limits.requests
            )));
        }
        Arc::clone(&self.open).try_acquire_owned().map_err(|_| {
            Refusal::Limit(format!(
                "the run's limit of {} requests and connections open at once is reached",
                limits.concurrent
            ))
        })
    }

    /// Counts `bytes` sent; false once the run's budget is spent.
    fn send(&self, bytes: u64) -> bool {
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed).saturating_add(bytes) <= self.limits().bytes_out
    }

    /// Counts `bytes` received; false once the run's budget is spent.
    fn receive(&self, bytes: u64) -> bool {
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed).saturating_add(bytes) <= self.limits().bytes_in
    }

    fn record(&self, entry: EgressEntry) {
        crate::sync::lock(&self.ledger).push(entry);
    }
}

/// One call in progress: what the ledger will say about it. Recorded once,
/// when it is finished or dropped (a guest that drops a response body
/// midway still leaves an entry).
#[derive(Debug)]
pub(super) struct Call {
    network: Arc<RunNetwork>,
    entry: EgressEntry,
    /// Bytes sent, counted where the request body is written.
    sent: Arc<AtomicU64>,
    started: Instant,
    recorded: bool,
    /// The run's slot for one open call, held while the call is open (until
    /// its response body ends or the guest drops it) and given back the
    /// moment the call is dropped.
    open: Option<OwnedSemaphorePermit>,
}

impl Call {
    pub(super) fn start(network: &Arc<RunNetwork>, kind: EgressKind, target: String) -> Self {
        Self {
            network: Arc::clone(network),
            entry: EgressEntry {
                at: Timestamp::now(),
                kind,
                method: None,
                target,
                path: None,
                address: None,
                outcome: EgressOutcome::Ok,
                status: None,
                error: None,
                bytes_out: 0,
                bytes_in: 0,
                duration_ms: 0,
            },
            sent: Arc::new(AtomicU64::new(0)),
            started: Instant::now(),
            recorded: false,
            open: None,
        }
    }

    /// Keeps the run's slot for this call until the call is over.
    pub(super) fn hold(&mut self, permit: OwnedSemaphorePermit) {
        self.open = Some(permit);
    }

    pub(super) fn network(&self) -> &Arc<RunNetwork> {
        &self.network
    }

    pub(super) fn entry(&mut self) -> &mut EgressEntry {
        &mut self.entry
    }

    /// What counts this call's bytes sent, for wherever they are written.
    pub(super) fn send_meter(&self) -> SendMeter {
        SendMeter {
            network: Arc::clone(&self.network),
            sent: Arc::clone(&self.sent),
        }
    }

    /// Counts bytes received by this call; false once the run's budget is spent.
    pub(super) fn received(&mut self, bytes: u64) -> bool {
        self.entry.bytes_in += bytes;
        self.network.receive(bytes)
    }

    /// Records the call as refused, with the reason.
    pub(super) fn refuse(mut self, refusal: &Refusal) {
        self.entry.outcome = EgressOutcome::Refused;
        self.entry.error = Some(refusal.reason().to_owned());
        self.record();
    }

    /// Marks the call failed (unless it already is), with the reason.
    pub(super) fn fail(&mut self, error: impl Into<String>) {
        if self.entry.outcome == EgressOutcome::Ok {
            self.entry.outcome = EgressOutcome::Error;
            self.entry.error = Some(error.into());
        }
    }

    /// Records the call now.
    pub(super) fn finish(mut self) {
        self.record();
    }

    fn record(&mut self) {
        self.open = None;
        if !self.recorded {
            self.recorded = true;
            self.entry.duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.entry.bytes_out = self.sent.load(Ordering::Relaxed);
            self.network.record(self.entry.clone());
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.record();
    }
}

/// Counts the bytes one call sends, against the run's budget.
#[derive(Debug, Clone)]
pub(super) struct SendMeter {
    network: Arc<RunNetwork>,
    sent: Arc<AtomicU64>,
}

impl SendMeter {
    /// Counts `bytes`; false once the run's budget is spent.
    pub(super) fn count(&self, bytes: u64) -> bool {
        self.sent.fetch_add(bytes, Ordering::Relaxed);
        self.network.send(bytes)
    }

    pub(super) fn limit(&self) -> u64 {
        self.network.limits().bytes_out
    }
}

/// A timeout from the run's limits, shortened by the guest's own if smaller.
fn shorter(limit_s: u64, guest: Option<Duration>) -> Duration {
    let limit = Duration::from_secs(limit_s);
    guest.map_or(limit, |guest| guest.min(limit))
}
