//! How driver errors become `LogStoreError`s: which failures a retry may
//! fix, and which write errors are duplicate keys (the one server error code
//! this store acts on, because a replayed write is a duplicate and counts as
//! success).

use mongodb::error::{Error as DriverError, ErrorKind, WriteFailure};

use crate::logstore::LogStoreError;

/// MongoDB's duplicate-key error: the one code this store acts on.
pub(super) const DUPLICATE_KEY: i32 = 11000;

/// Whether every error of a failed insert is a duplicate key (a chunk that is
/// already stored), and nothing else went wrong.
pub(super) fn only_duplicates(e: &DriverError) -> bool {
    match &*e.kind {
        ErrorKind::InsertMany(failure) => {
            failure.write_concern_error.is_none()
                && failure
                    .write_errors
                    .as_ref()
                    .is_some_and(|errors| !errors.is_empty() && errors.iter().all(|w| w.code == DUPLICATE_KEY))
        }
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        _ => false,
    }
}

pub(super) fn is_duplicate_key(e: &DriverError) -> bool {
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        // A real MongoDB may answer a failed upsert with a command error.
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        _ => false,
    }
}

/// Sorts driver errors into the store's: what a retry may fix (the server is
/// unreachable, busy or failing over) is `Unavailable`; a request the driver
/// refuses outright is `Invalid`; the rest is `Other`. Codes are not
/// consulted (nx-27017 sends none); the driver's kinds and labels are.
pub(super) fn store_error(e: DriverError) -> LogStoreError {
    let retryable = e.contains_label("RetryableWriteError") || e.contains_label("SystemOverloadedError");
    match &*e.kind {
        ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Shutdown => LogStoreError::Unavailable(e.to_string()),
        _ if retryable => LogStoreError::Unavailable(e.to_string()),
        ErrorKind::InvalidArgument { .. } => LogStoreError::Invalid(e.to_string()),
        _ => LogStoreError::Other(e.to_string()),
    }
}
