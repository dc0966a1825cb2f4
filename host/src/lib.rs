//! sandcron: a distributed cron whose jobs run in a WebAssembly sandbox.
//!
//! Crate map, bottom-up (one concept per module; ARCHITECTURE.md has the
//! invariants, `host/tests/tidy.rs` checks which module may use which):
//!
//! - [`ids`], [`auth`]: validated identifiers; roles and tokens;
//!   [`compact`]: the smaller in-memory forms of what every job carries
//!   (rare fields boxed, shared strings).
//! - [`secret`]: sealing secret values under the key file, masking them in
//!   output, `${secret:NAME}` references.
//! - [`cronexpr`]: the cron dialect, next-fire computation, time zones and
//!   DST. No I/O, no clock.
//! - [`module`], [`job`], [`run`]: the data model — job binaries, job specs
//!   and their validation, run records and output chunks; [`kvstate`]: a
//!   job's key-value state as every layer sees it (keys, quotas, errors);
//!   [`audit`]: the audit log's entries (who wrote what through the API).
//! - [`schedule`], [`placement`], [`check`]: pure policy — the timer queue,
//!   overlap, catch-up and retry; which worker owns a job; the run-history
//!   checker. No I/O, no clock.
//! - [`coord`]: the coordination store contract (etcd-shaped), its embedded
//!   and etcd implementations, and the sandcron key layout and operations.
//! - [`logstore`]: the log-store contract, its SQLite and MongoDB
//!   implementations, and the batching, spooling sink.
//! - [`exec`]: executors (native process groups, the WASM sandbox, HTTP
//!   calls within an egress allow-list) and output capture. Never touches a
//!   store.
//! - [`alert`]: alert rules (pure) and their delivery by webhook and email;
//!   [`metrics`]: counters and their Prometheus rendering; [`heap`]: what
//!   the allocator holds, and giving its free pages back.
//! - [`config`]: file, environment and flags, validated in one place; the
//!   only module that reads the environment.
//! - [`worker`]: watch → schedule → claim → execute → report.
//! - [`api`]: the HTTP API and the embedded web console.
//! - [`launch`]: what each process starts (`master`, `worker`, `dev`);
//!   [`cli`]: the command line and its HTTP client.
//! - [`crypto`] and [`tls`]: HMAC, random tokens, the process's TLS provider.
//! - `testkit` (feature `testkit`): what tests share.

pub mod alert;
pub mod api;
pub mod audit;
pub mod auth;
pub mod check;
pub mod cli;
pub mod compact;
pub mod config;
pub mod coord;
pub mod cronexpr;
pub mod crypto;
pub mod exec;
pub mod heap;
pub mod ids;
pub mod job;
pub mod kvstate;
pub mod launch;
pub mod logstore;
pub mod metrics;
pub mod module;
pub mod placement;
pub mod run;
pub mod schedule;
pub mod secret;
mod sync;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod tls;
pub mod worker;
