//! `sandcron-guest`: what a Rust sandcron job imports.
//!
//! A sandcron job is a WASI program: a core module built for
//! `wasm32-wasip1` or a component built for `wasm32-wasip2`. It gets no
//! files, no network and no host functions beyond WASI; what sandcron tells
//! it arrives as environment variables, and what it tells sandcron leaves as
//! output. This crate is the typed side of that contract:
//!
//! - [`context`]: the run context ([`Context`]) — job, run id, tick, trigger,
//!   attempt and the claim's fencing token — from the `SANDCRON_*` variables.
//! - [`log`]: structured log lines, one JSON object per line on stderr
//!   ([`info!`], [`warn!`], [`error!`] or the functions).
//! - [`result`]: the run's result, a JSON value recorded with the run
//!   ([`set_result_json`], [`set_result_value`], [`set_result_object`], and
//!   `set_result` with the `serde` feature).
//! - [`json`]: the small JSON writer and validator the others use.
//! - `client` (feature `client`): how the service an async job called
//!   reports the run's outcome (`report_result`); for services, not guests.
//!
//! It has no dependencies unless the `serde` feature is on, and builds for
//! the host as well as for WASI, so job logic can be unit-tested natively.
//!
//! # A whole job
//!
//! ```no_run
//! // Build with: cargo build --release --target wasm32-wasip1
//! use sandcron_guest::{Context, info, set_result_object};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let ctx = Context::from_env()?;
//!     info!("exporting", tick = ctx.tick(), attempt = ctx.attempt());
//!     let rows = 42; // ... the job's real work, fenced with ctx.fence() ...
//!     set_result_object(&[("rows", rows.into()), ("tick", ctx.tick().into())])?;
//!     Ok(())
//! }
//! ```
//!
//! Exit status is the run's status: exit 0 (return `Ok` from `main`) and the
//! run `succeeded`; a non-zero exit or a panic and it `failed`, which the
//! job's retry policy may retry with a new run whose [`Context::attempt`] is
//! one higher.

#[cfg(feature = "client")]
pub mod client;
pub mod context;
pub mod json;
pub mod log;
pub mod result;

pub use context::{Context, ContextError, Parent, Trigger};
pub use json::Value;
#[cfg(feature = "serde")]
pub use result::set_result;
pub use result::{ResultError, set_result_json, set_result_object, set_result_value};

// Compiles and runs the README's examples with the doctests, so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
