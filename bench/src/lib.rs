//! `sandcron-bench`: the harness behind `just bench`. It measures sandcron
//! side by side with its peers and prints markdown tables, each figure with
//! its ratio to a comparison measured in the same run. Benchmarks print;
//! they never pass or fail on speed.
//!
//! One module per row of the report:
//! - [`executors`]: per-run cost of the executors, and compile vs cache.
//! - [`dispatch`]: tick due → run recorded in the sink, in process.
//! - [`lateness`]: fire lateness, embedded, cluster and APScheduler.
//! - [`scale`]: 100k jobs on one worker; timer queue costs; memory per job
//!   by structure ([`memory`]).
//! - [`claims`]: runs per second with 3 workers vs raw etcd transactions.
//! - [`logs`]: sink throughput vs raw `insert_many`; write → visible.
//! - [`kill`]: API kill → run ended.
//! - [`footprint`]: idle RSS, binary size, cold start.
//! - [`network`]: a component's HTTP GET vs a shell job's `curl`.
//!
//! Shared pieces: [`report`] (statistics, tables), [`sys`] (/proc, machine),
//! [`inproc`] (in-process workers and probe stores), [`servers`] (etcd,
//! nx-27017 and sandcron processes, started as the tests start them).

pub mod claims;
pub mod dispatch;
pub mod executors;
pub mod firstrun;
pub mod footprint;
pub mod inproc;
pub mod kill;
pub mod lateness;
pub mod logs;
pub mod memory;
pub mod network;
pub mod report;
pub mod rustpeer;
pub mod scale;
pub mod servers;
pub mod sys;

/// What every section gets: the mode and the report to print into.
#[derive(Debug, Default)]
pub struct Ctx {
    /// `--quick`: shorter windows and fewer repetitions (under 5 minutes).
    pub quick: bool,
    pub report: report::Report,
}

impl Ctx {
    /// `quick` in quick mode, else `full`.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }
}

/// The sections in report order, by the name `--only` takes.
pub const SECTIONS: [&str; 9] = [
    "executors",
    "dispatch",
    "lateness",
    "scale",
    "claims",
    "logs",
    "kill",
    "footprint",
    "network",
];
