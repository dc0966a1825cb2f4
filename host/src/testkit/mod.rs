//! What tests share, here and in the other crates of the workspace (the
//! benchmarks enable the `testkit` feature): the conformance suites every
//! backend must pass — `kv_suite` (the `KvStore` primitives),
//! `coordinator_suite` (sandcron's operations over any `KvStore`, with
//! `kvstate_suite` for jobs' key-value state) and `logstore_suite` (the
//! `LogStore` contract, with `audit_suite` for the audit log) — a sample
//! run record,
//! two log stores that stand in for a real one where a test or benchmark
//! must isolate something else: [`Discard`] keeps nothing, [`Hanging`]
//! never answers, and [`Tap`], a log store in front of another that steps
//! into some of its calls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod audit_suite;
pub mod coordinator_suite;
pub mod kv_suite;
pub mod kvstate_suite;
pub mod logstore_suite;
mod records;
mod stores;

pub use records::{sample_entry, sample_record};
pub use stores::{Call, Discard, Hanging, Tap};
