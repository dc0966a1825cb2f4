//! sandcron: a distributed cron whose jobs run in a WebAssembly sandbox.
//!
//! Crate map (one concept per module; see ARCHITECTURE.md for the invariants):
//!
//! - [`ids`], [`job`], [`run`]: the data model — validated identifiers, job
//!   specs and their validation, run records and output chunks.
//! - [`cronexpr`]: the cron dialect, next-fire computation, time zones and DST.
//!   No I/O, no clock.
//! - [`schedule`]: the timer queue and the policies (overlap, catch-up, retry,
//!   placement). No I/O, no clock.
//! - [`coord`]: the coordination store contract (etcd-shaped), its embedded
//!   implementation, and the sandcron key layout and operations on top.
//! - [`logstore`]: the log-store contract, its SQLite implementation, and the
//!   batching sink.
//! - [`exec`]: executors (native process groups, the WASM sandbox, HTTP
//!   calls within an egress allow-list) and output capture. Never touches a
//!   store.
//! - [`alert`]: alert rules (pure) and their delivery by webhook and email.
//! - [`worker`]: watch → schedule → claim → execute → report.
//! - [`api`]: the HTTP API and the embedded web console.
//! - [`config`]: file, environment and flags, validated in one place; the only
//!   module that reads the environment.
//! - [`launch`]: what each process starts (`master`, `worker`, `dev`).
//! - [`cli`]: the command line and its HTTP client.
//! - [`metrics`]: counters and their Prometheus rendering.
//! - [`crypto`] and [`tls`]: HMAC, random tokens, the process's TLS provider.

pub mod alert;
pub mod api;
pub mod auth;
pub mod check;
pub mod cli;
pub mod config;
pub mod coord;
pub mod cronexpr;
pub mod crypto;
pub mod exec;
pub mod ids;
pub mod job;
pub mod launch;
pub mod logstore;
pub mod metrics;
pub mod module;
pub mod placement;
pub mod run;
pub mod schedule;
mod sync;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod tls;
pub mod worker;
