//! The schema of the SQLite log store, as a list of migrations applied in
//! order and never edited, and the settings every connection gets (WAL for
//! the writer, read-only readers, a busy timeout). Kept in one place so that
//! what a database file holds, and how it was opened, is read in one sitting.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::pool::Failure;

/// How long a connection waits for a lock held by another process (a second
/// `sandcron dev` on the same directory, a `sqlite3` shell) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema, one entry per version; entry `n` takes a database from version
/// `n` to `n + 1`. Append new entries — never edit old ones.
pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE runs (
    run_id     TEXT    NOT NULL PRIMARY KEY,
    job        TEXT    NOT NULL,
    tick       INTEGER NOT NULL, -- unix milliseconds
    status     TEXT    NOT NULL,
    fence      INTEGER NOT NULL,
    started_at INTEGER,          -- unix milliseconds
    record     TEXT    NOT NULL  -- the full RunRecord as JSON
);
CREATE INDEX runs_by_job ON runs (job, tick DESC, run_id DESC);
CREATE INDEX runs_by_status ON runs (status, tick DESC, run_id DESC);
CREATE INDEX runs_by_tick ON runs (tick DESC, run_id DESC);
CREATE TABLE output (
    run_id TEXT    NOT NULL,
    seq    INTEGER NOT NULL,
    stream TEXT    NOT NULL,
    at     INTEGER NOT NULL,     -- unix microseconds
    data   TEXT    NOT NULL,
    PRIMARY KEY (run_id, seq)
);
"#,
    // Version 2: retention. The record JSON carries `expire_at` already; the
    // runs column exists for `purge`, the output column to give chunks
    // theirs back. Existing rows get NULL: they never expire by date and are
    // purged by tick, as before.
    r#"
ALTER TABLE runs ADD COLUMN expire_at INTEGER;   -- unix milliseconds; NULL: no expiry
ALTER TABLE output ADD COLUMN expire_at INTEGER; -- unix microseconds, like `at`
CREATE INDEX runs_by_expiry ON runs (expire_at);
"#,
    // Version 3: the audit log. Each entry is its full JSON next to the
    // columns its queries filter on; `id` is a ULID, so sorting by it is
    // sorting by time.
    r#"
CREATE TABLE audit (
    id        TEXT    NOT NULL PRIMARY KEY,
    at        INTEGER NOT NULL, -- unix milliseconds
    actor     TEXT    NOT NULL,
    action    TEXT    NOT NULL,
    target    TEXT    NOT NULL,
    job       TEXT,
    expire_at INTEGER,          -- unix milliseconds; NULL: no expiry
    entry     TEXT    NOT NULL  -- the full AuditEntry as JSON
);
CREATE INDEX audit_by_job ON audit (job, id DESC);
CREATE INDEX audit_by_actor ON audit (actor, id DESC);
CREATE INDEX audit_by_target ON audit (target, id DESC);
CREATE INDEX audit_by_expiry ON audit (expire_at);
"#,
    // Version 4: run history by worker and by trigger. Both were only in the
    // record JSON; existing rows get them from there, so the filters find old
    // runs too. `trigger` is quoted: it is an SQL keyword.
    r#"
ALTER TABLE runs ADD COLUMN worker TEXT;
ALTER TABLE runs ADD COLUMN "trigger" TEXT;
UPDATE runs SET worker = json_extract(record, '$.worker'), "trigger" = json_extract(record, '$.trigger');
CREATE INDEX runs_by_worker ON runs (worker, tick DESC, run_id DESC);
CREATE INDEX runs_by_trigger ON runs ("trigger", tick DESC, run_id DESC);
"#,
];

pub(super) fn configure(conn: &Connection, writer: bool) -> Result<(), Failure> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(64);
    if writer {
        // WAL lets the readers run while the writer commits; an in-memory
        // database answers "memory", which is fine.
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        // NORMAL in WAL mode loses at most the last commits on power loss,
        // never consistency; the sink's replays cover the rest.
        conn.execute_batch("PRAGMA synchronous = NORMAL;")?;
    } else {
        conn.execute_batch("PRAGMA query_only = ON;")?;
    }
    Ok(())
}

pub(super) fn migrate(conn: &mut Connection) -> Result<(), Failure> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);")?;
    let current: Option<i64> = tx
        .query_row("SELECT version FROM schema_version", [], |row| row.get(0))
        .optional()?;
    let known = MIGRATIONS.len();
    let current = match current {
        None => 0,
        Some(v) => usize::try_from(v).map_err(|_| Failure::corrupt(format!("schema version {v} is not valid")))?,
    };
    if current > known {
        return Err(Failure::corrupt(format!(
            "the log store has schema version {current}, newer than this sandcron knows ({known}); upgrade sandcron"
        )));
    }
    for migration in &MIGRATIONS[current..] {
        tx.execute_batch(migration)?;
    }
    if current == 0 {
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [known as i64])?;
    } else if current < known {
        tx.execute("UPDATE schema_version SET version = ?1", [known as i64])?;
    }
    tx.commit()?;
    Ok(())
}
