//! The connection pool of the SQLite log store: a fixed set of connections,
//! each call run on tokio's blocking pool with one of them, and `Failure`,
//! the error type of those calls, which decides which SQLite errors the sink
//! may retry.

use std::sync::{Arc, Mutex};

use rusqlite::{Connection, ErrorCode};
use tokio::sync::Semaphore;

use crate::logstore::LogStoreError;

/// A fixed set of connections handed out one per call. The permit is taken
/// before the blocking task is spawned, so waiting callers queue as futures
/// rather than as parked threads of the blocking pool.
pub(super) struct Pool {
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Connection>>,
}

impl Pool {
    pub(super) fn new(connections: Vec<Connection>) -> Arc<Self> {
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(connections.len())),
            idle: Mutex::new(connections),
        })
    }

    pub(super) async fn run<T, F>(self: &Arc<Self>, work: F) -> Result<T, LogStoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Failure> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| LogStoreError::Other("log store is closed".to_owned()))?;
        let pool = Arc::clone(self);
        let task = tokio::task::spawn_blocking(move || {
            // Moved in so that the permit is released only once the
            // connection is back, even if the caller stopped waiting.
            let _permit = permit;
            let mut lease = Lease {
                pool: &pool,
                conn: pool.take(),
            };
            match lease.conn.as_mut() {
                Some(conn) => work(conn),
                None => Err(Failure::Store(LogStoreError::Other(
                    "log store connection was lost".to_owned(),
                ))),
            }
        });
        match task.await {
            Ok(result) => result.map_err(LogStoreError::from),
            Err(e) => Err(LogStoreError::Other(format!("log store task failed: {e}"))),
        }
    }

    fn take(&self) -> Option<Connection> {
        crate::sync::lock(&self.idle).pop()
    }
}

/// Returns its connection to the pool when dropped, even by a panic (a
/// transaction left open rolls back when its guard unwinds).
struct Lease<'a> {
    pool: &'a Pool,
    conn: Option<Connection>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            crate::sync::lock(&self.pool.idle).push(conn);
        }
    }
}

/// What goes wrong inside a pooled call: SQLite's error, or one of ours.
pub(super) enum Failure {
    Sql(rusqlite::Error),
    Store(LogStoreError),
}

impl Failure {
    pub(super) fn corrupt(message: String) -> Self {
        Failure::Store(LogStoreError::Other(message))
    }
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sql(e)
    }
}

impl From<LogStoreError> for Failure {
    fn from(e: LogStoreError) -> Self {
        Failure::Store(e)
    }
}

impl From<Failure> for LogStoreError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Store(e) => e,
            Failure::Sql(e) => {
                // Locks held elsewhere and I/O trouble (a full disk, say) can
                // clear up, so the sink retries them; anything else is a bug
                // or a damaged file and retrying will not help.
                let transient = matches!(
                    e.sqlite_error_code(),
                    Some(
                        ErrorCode::DatabaseBusy
                            | ErrorCode::DatabaseLocked
                            | ErrorCode::SystemIoFailure
                            | ErrorCode::DiskFull
                            | ErrorCode::CannotOpen
                            | ErrorCode::OutOfMemory
                    )
                );
                if transient {
                    LogStoreError::Unavailable(e.to_string())
                } else {
                    LogStoreError::Other(e.to_string())
                }
            }
        }
    }
}
