//! The egress ledger of a run: what a WASM job did on the network — each
//! HTTP request, TCP connection and name lookup, allowed or refused — kept
//! with the run's record so an operator can see exactly what a job talked
//! to. Bounded: the first [`MAX_LEDGER_ENTRIES`] entries are kept one by
//! one, the totals count every call.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Entries kept one by one; later calls are only counted.
pub const MAX_LEDGER_ENTRIES: usize = 1000;

/// A run's network activity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EgressLedger {
    /// The first calls, in the order they started.
    pub entries: Vec<EgressEntry>,
    pub totals: EgressTotals,
}

/// Every call of the run, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EgressTotals {
    /// Requests, connections and lookups attempted (refused ones included).
    pub calls: u64,
    pub refused: u64,
    pub failed: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// Calls counted here but not kept as entries.
    pub dropped_entries: u64,
}

/// What kind of call an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EgressKind {
    /// An outgoing HTTP request (`wasi:http/outgoing-handler`).
    Http,
    /// A TCP connection (`wasi:sockets`).
    Tcp,
    /// A name lookup (`wasi:sockets/ip-name-lookup`).
    Lookup,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EgressOutcome {
    /// Completed (an HTTP response of any status, a connection closed).
    Ok,
    /// Allowed, but failed: refused by the peer, timed out, cut at a limit.
    Error,
    /// Not allowed: not in the job's `egress`, forbidden by the worker's
    /// policy, or over a limit before it started.
    Refused,
}

impl EgressOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            EgressOutcome::Ok => "ok",
            EgressOutcome::Error => "error",
            EgressOutcome::Refused => "refused",
        }
    }
}

/// One call. Never holds a query string, a header or a body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EgressEntry {
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    pub kind: EgressKind,
    /// The HTTP method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// `scheme://host:port` (or the name looked up).
    pub target: String,
    /// The HTTP path, without its query string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The address actually connected to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    pub outcome: EgressOutcome,
    /// The HTTP status of the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it failed or was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub duration_ms: u64,
}

impl EgressLedger {
    /// Adds a finished call: counted always, kept while there is room.
    pub fn push(&mut self, entry: EgressEntry) {
        let totals = &mut self.totals;
        totals.calls += 1;
        match entry.outcome {
            EgressOutcome::Ok => {}
            EgressOutcome::Error => totals.failed += 1,
            EgressOutcome::Refused => totals.refused += 1,
        }
        totals.bytes_out = totals.bytes_out.saturating_add(entry.bytes_out);
        totals.bytes_in = totals.bytes_in.saturating_add(entry.bytes_in);
        if self.entries.len() < MAX_LEDGER_ENTRIES {
            self.entries.push(entry);
        } else {
            totals.dropped_entries += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.totals.calls == 0
    }

    /// The ledger with `mask` applied to every text a guest chose (targets
    /// of lookups, paths, error messages), so a secret the guest put in a
    /// URL path is not kept.
    pub fn masked(mut self, mask: impl Fn(&str) -> String) -> Self {
        for entry in &mut self.entries {
            entry.target = mask(&entry.target);
            entry.path = entry.path.as_deref().map(&mask);
            entry.error = entry.error.as_deref().map(&mask);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(outcome: EgressOutcome, bytes: u64) -> EgressEntry {
        EgressEntry {
            at: Timestamp::UNIX_EPOCH,
            kind: EgressKind::Http,
            method: Some("GET".into()),
            target: "https://api.example.com:443".into(),
            path: Some("/v1".into()),
            address: None,
            outcome,
            status: None,
            error: None,
            bytes_out: bytes,
            bytes_in: bytes * 2,
            duration_ms: 1,
        }
    }

    #[test]
    fn the_ledger_keeps_the_first_entries_and_counts_every_call() {
        let mut ledger = EgressLedger::default();
        assert!(ledger.is_empty());
        for index in 0..MAX_LEDGER_ENTRIES + 5 {
            let outcome = match index % 3 {
                0 => EgressOutcome::Ok,
                1 => EgressOutcome::Error,
                _ => EgressOutcome::Refused,
            };
            ledger.push(entry(outcome, 10));
        }
        let calls = (MAX_LEDGER_ENTRIES + 5) as u64;
        assert_eq!(ledger.entries.len(), MAX_LEDGER_ENTRIES);
        assert_eq!(ledger.totals.calls, calls);
        assert_eq!(ledger.totals.dropped_entries, 5);
        assert_eq!(ledger.totals.failed + ledger.totals.refused, calls - calls.div_ceil(3));
        assert_eq!(
            (ledger.totals.bytes_out, ledger.totals.bytes_in),
            (calls * 10, calls * 20)
        );
    }
}
