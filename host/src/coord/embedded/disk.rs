//! The persistent half of the store: the SQLite file (opened, locked for
//! this process and loaded at start) and the group-commit thread that
//! writes each revision's changes to it, one transaction and one fsync per
//! batch of queued revisions.
//!
//! What it must not do: acknowledge a write before the commit holding it;
//! keep accepting writes after a commit failed or the thread stopped.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock, mpsc as std_mpsc};
use std::thread;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, params};
use tokio::sync::oneshot;

use super::state::Entry;
use crate::coord::{Revision, StoreError};

/// How long `open` waits for another holder of the file to let go of it: long
/// enough for a previous `sandcron dev` that is still exiting, short enough to
/// tell a user promptly that the data directory is in use.
const LOCK_WAIT: Duration = Duration::from_secs(1);

/// The most transactions one SQLite commit takes, so one commit stays short.
const MAX_GROUP_COMMIT: usize = 1024;

/// The on-disk format this code writes, kept in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;

pub(super) type CommitReceiver = oneshot::Receiver<Result<(), StoreError>>;

/// The persistent half: a queue to the disk-writer thread.
pub(super) struct Disk {
    /// Written under the state lock, so commits arrive in revision order.
    pub(super) queue: std_mpsc::Sender<DiskCommit>,
    /// Set once by the writer when a commit fails or the writer stops.
    pub(super) failure: Arc<OnceLock<String>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Disk {
    /// Starts the writer thread on `connection`, loaded at `revision`; also
    /// returns the newest revision it has committed, which it keeps current.
    pub(super) fn start(connection: Connection, revision: Revision) -> Result<(Disk, Arc<AtomicI64>), StoreError> {
        let failure = Arc::new(OnceLock::new());
        let durable = Arc::new(AtomicI64::new(revision));
        let (queue, commits) = std_mpsc::channel();
        let thread = {
            let failure = Arc::clone(&failure);
            let durable = Arc::clone(&durable);
            thread::Builder::new()
                .name("sandcron-kv-disk".to_owned())
                .spawn(move || run_disk_writer(connection, commits, failure, durable))
                .map_err(|e| StoreError::Unavailable(format!("cannot start the embedded store disk writer: {e}")))?
        };
        let disk = Disk {
            queue,
            failure,
            thread: Some(thread),
        };
        Ok((disk, durable))
    }

    /// Queues one revision. Writes that touch disk get a receiver resolved
    /// after their commit; a revision that only touched leased keys is not
    /// waited for (it is recorded so revisions never go backwards after a
    /// restart, but nothing durable refers to it).
    pub(super) fn enqueue(
        &self,
        revision: Revision,
        writes: Vec<DiskWrite>,
    ) -> Result<Option<CommitReceiver>, StoreError> {
        let (committed, receiver) = if writes.is_empty() {
            (None, None)
        } else {
            let (sender, receiver) = oneshot::channel();
            (Some(sender), Some(receiver))
        };
        self.queue
            .send(DiskCommit {
                revision,
                writes,
                committed,
            })
            .map_err(|_| {
                let reason = self.failure.get_or_init(|| "the disk writer stopped".into());
                StoreError::Unavailable(format!("embedded store cannot persist writes: {reason}"))
            })?;
        Ok(receiver)
    }

    pub(super) fn close(self) {
        let Disk { queue, thread, .. } = self;
        drop(queue);
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("embedded store disk writer panicked");
        }
    }
}

pub(super) struct DiskCommit {
    revision: Revision,
    writes: Vec<DiskWrite>,
    committed: Option<oneshot::Sender<Result<(), StoreError>>>,
}

pub(super) enum DiskWrite {
    Put { key: String, entry: Entry },
    Delete { key: String },
}

/// Group commit: takes every queued revision, commits them in one SQLite
/// transaction (one fsync), then acknowledges each waiting writer.
fn run_disk_writer(
    mut connection: Connection,
    commits: std_mpsc::Receiver<DiskCommit>,
    failure: Arc<OnceLock<String>>,
    durable: Arc<AtomicI64>,
) {
    let _stopped = MarkStopped(Arc::clone(&failure));
    while let Ok(first) = commits.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP_COMMIT {
            match commits.try_recv() {
                Ok(commit) => group.push(commit),
                Err(_) => break,
            }
        }
        let outcome = match failure.get() {
            Some(reason) => Err(reason.clone()),
            None => write_group(&mut connection, &group).map_err(|e| format!("sqlite commit failed: {e}")),
        };
        match &outcome {
            Ok(()) => {
                if let Some(last) = group.last() {
                    durable.store(last.revision, Ordering::Release);
                }
            }
            Err(reason) => {
                tracing::error!(%reason, "embedded store write not persisted; refusing further writes");
                failure.get_or_init(|| reason.clone());
            }
        }
        for commit in group {
            if let Some(committed) = commit.committed {
                let reply = outcome.clone().map_err(|reason| {
                    StoreError::Unavailable(format!("embedded store cannot persist writes: {reason}"))
                });
                if committed.send(reply).is_err() {
                    // The writer stopped waiting (its future was dropped); the
                    // outcome is the same either way.
                    tracing::trace!(revision = commit.revision, "commit acknowledged to nobody");
                }
            }
        }
    }
}

/// Marks the store unwritable if the writer thread ends for any reason
/// (including a panic), so writes fail fast instead of queueing forever.
struct MarkStopped(Arc<OnceLock<String>>);

impl Drop for MarkStopped {
    fn drop(&mut self) {
        self.0.get_or_init(|| "the disk writer stopped".into());
    }
}

fn write_group(connection: &mut Connection, group: &[DiskCommit]) -> rusqlite::Result<()> {
    let transaction = connection.transaction()?;
    {
        let mut put = transaction.prepare_cached(
            "INSERT OR REPLACE INTO kv (key, value, create_revision, mod_revision) \
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut delete = transaction.prepare_cached("DELETE FROM kv WHERE key = ?1")?;
        for commit in group {
            for write in &commit.writes {
                match write {
                    DiskWrite::Put { key, entry } => {
                        put.execute(params![
                            key,
                            &entry.value[..],
                            entry.create_revision,
                            entry.mod_revision
                        ])?;
                    }
                    DiskWrite::Delete { key } => {
                        delete.execute([key])?;
                    }
                }
            }
        }
        if let Some(last) = group.last() {
            transaction
                .prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'revision'")?
                .execute([last.revision])?;
        }
    }
    transaction.commit()
}

/// Opens (or creates) the database, locks it for this process and loads it.
pub(super) fn open_database(path: &Path) -> Result<(Connection, Revision, BTreeMap<String, Entry>), StoreError> {
    let failed = |action: &'static str| move |e: rusqlite::Error| sqlite_error(path, action, e);
    let connection = Connection::open(path).map_err(failed("open"))?;
    connection.busy_timeout(LOCK_WAIT).map_err(failed("configure"))?;
    // One process owns the file: a second `sandcron dev` on the same data
    // directory fails instead of forking the revision history. Exclusive
    // locking also lets WAL run without its shared-memory index.
    connection
        .pragma_update(None, "locking_mode", "EXCLUSIVE")
        .map_err(failed("configure"))?;
    let journal: String = connection
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(failed("lock"))?;
    if !journal.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Other(format!(
            "{}: cannot use write-ahead logging (journal mode {journal})",
            path.display()
        )));
    }
    // FULL: an acknowledged write survives power loss too; group commit keeps
    // the fsync per batch, not per write.
    connection
        .pragma_update(None, "synchronous", "FULL")
        .map_err(failed("configure"))?;
    let version: i64 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(failed("read"))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Other(format!(
            "{} was written by a newer sandcron (format {version}, this one reads {SCHEMA_VERSION})",
            path.display()
        )));
    }
    connection
        .execute_batch(&format!(
            "BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS kv (
                 key TEXT PRIMARY KEY NOT NULL,
                 value BLOB NOT NULL,
                 create_revision INTEGER NOT NULL,
                 mod_revision INTEGER NOT NULL
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
             INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0);
             PRAGMA user_version = {SCHEMA_VERSION};
             COMMIT;"
        ))
        .map_err(failed("initialise"))?;
    let (revision, keys) = load(&connection).map_err(failed("load"))?;
    Ok((connection, revision, keys))
}

fn load(connection: &Connection) -> rusqlite::Result<(Revision, BTreeMap<String, Entry>)> {
    let mut revision: Revision =
        connection.query_row("SELECT value FROM meta WHERE name = 'revision'", [], |row| row.get(0))?;
    let mut keys = BTreeMap::new();
    let mut statement = connection.prepare("SELECT key, value, create_revision, mod_revision FROM kv")?;
    let rows = statement.query_map([], |row| {
        let entry = Entry {
            value: bytes::Bytes::from(row.get::<_, Vec<u8>>(1)?),
            create_revision: row.get(2)?,
            mod_revision: row.get(3)?,
            lease: None,
        };
        Ok((row.get::<_, String>(0)?, entry))
    })?;
    for row in rows {
        let (key, entry) = row?;
        // The revision is written in the same transaction as the keys; this
        // only guards against a hand-edited file sending revisions backwards.
        revision = revision.max(entry.mod_revision);
        keys.insert(key, entry);
    }
    Ok((revision, keys))
}

fn sqlite_error(path: &Path, action: &str, error: rusqlite::Error) -> StoreError {
    let busy = matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    );
    if busy {
        StoreError::Unavailable(format!(
            "{} is in use by another sandcron process (is `sandcron dev` already running here?)",
            path.display()
        ))
    } else {
        StoreError::Other(format!(
            "cannot {action} the embedded store {}: {error}",
            path.display()
        ))
    }
}
