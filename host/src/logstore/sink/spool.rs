//! The spool file: an append-only file of JSON lines, one `LogBatch` each,
//! where batches wait while the store is down or behind. It owns the file
//! format, the lock that keeps a second process out, the repair of a line
//! torn by a crash, reading the head batches back merged, and when its
//! batches were appended (for the lag); when to append and replay is the
//! pipeline's business (`replay.rs`).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::unix_micros;
use crate::logstore::LogBatch;

/// Appends closer together than this share one entry of `Spool::appended`.
const APPENDED_RESOLUTION_MICROS: u64 = 1_000_000;

pub(super) enum Appended {
    Yes,
    /// The batch would take the file past `spool_max_bytes`.
    Full,
}

/// The spool: an append-only file of JSON lines, one `LogBatch` each,
/// fsync'd before a batch counts as safe. Bytes `head..end` wait for replay;
/// everything before `head` is in the store. The head offset lives only in
/// memory, so after a crash the whole file is replayed again, which the
/// store's idempotency makes harmless.
pub(super) struct Spool {
    pub(super) path: PathBuf,
    /// Opened for appending (every write lands at the end whatever else
    /// happens) and read positionally, so no shared cursor needs guarding.
    file: Arc<File>,
    head: u64,
    pub(super) end: u64,
    max_bytes: u64,
    /// The head batch, decoded, while it is not being replayed.
    head_batch: Option<(LogBatch, u64)>,
    /// In a run of I/O failures, which is logged once, not per retry.
    failing: bool,
    /// When batches were appended: (offset where a batch starts, Unix
    /// microseconds), oldest first. An entry stands for every batch up to
    /// the next one's offset, and a new entry is made only once the last is
    /// a second old and a thousandth of the spool's age, so the lag is known
    /// to about that and the list stays short (some thousands of entries
    /// for a spool a month old) however many batches the spool holds.
    appended: VecDeque<(u64, u64)>,
}

impl Spool {
    pub(super) async fn open(path: PathBuf, max_bytes: u64) -> io::Result<Self> {
        let opened = path.clone();
        let (file, end) = blocking(move || {
            if let Some(parent) = opened.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            let file = OpenOptions::new().read(true).append(true).create(true).open(&opened)?;
            // Two processes appending to one spool would interleave batches.
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        "the spool is in use by another process",
                    ));
                }
                // Some network filesystems cannot lock; the spool still works.
                Err(std::fs::TryLockError::Error(e)) if e.kind() == io::ErrorKind::Unsupported => {
                    tracing::warn!(error = %e, "cannot lock the log spool; make sure no other process uses it");
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
            let end = repair_tail(&file)?;
            Ok((file, end))
        })
        .await?;
        // A spool left by an earlier process does not say when its batches
        // were appended: its age counts from now.
        let appended = if end > 0 {
            VecDeque::from([(0, unix_micros())])
        } else {
            VecDeque::new()
        };
        Ok(Self {
            path,
            file: Arc::new(file),
            head: 0,
            end,
            max_bytes,
            head_batch: None,
            failing: false,
            appended,
        })
    }

    /// When the oldest batch not yet replayed was appended (Unix
    /// microseconds, to within `APPENDED_RESOLUTION_MICROS` or a thousandth
    /// of the spool's age); `None` when the spool is empty.
    pub(super) fn oldest_micros(&self) -> Option<u64> {
        if self.is_empty() {
            return None;
        }
        self.appended.front().map(|&(_, at)| at)
    }

    fn note_appended(&mut self, start: u64) {
        let now = unix_micros();
        if self.is_empty() {
            self.appended.clear();
        }
        let oldest = self.appended.front().map_or(now, |&(_, at)| at);
        let resolution = APPENDED_RESOLUTION_MICROS.max(now.saturating_sub(oldest) / 1000);
        if self
            .appended
            .back()
            .is_none_or(|&(_, last)| now.saturating_sub(last) >= resolution)
        {
            self.appended.push_back((start, now));
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.head >= self.end
    }

    pub(super) fn pending_bytes(&self) -> u64 {
        self.end.saturating_sub(self.head)
    }

    pub(super) async fn append(&mut self, batch: &LogBatch) -> io::Result<Appended> {
        if batch.is_empty() {
            return Ok(Appended::Yes);
        }
        let mut line = serde_json::to_vec(batch).map_err(io::Error::other)?;
        line.push(b'\n');
        if self.end.saturating_add(line.len() as u64) > self.max_bytes {
            return Ok(Appended::Full);
        }
        let file = Arc::clone(&self.file);
        let expected = self.end;
        let length = line.len() as u64;
        let appended = blocking(move || {
            // A failed append may have left part of a line behind; close it
            // off so the next batch starts on a line of its own.
            let start = if file.metadata()?.len() == expected {
                expected
            } else {
                repair_tail(&file)?
            };
            (&*file).write_all(&line)?;
            file.sync_data()?;
            Ok(start + line.len() as u64)
        })
        .await;
        let end = self.note("append to", appended)?;
        // Noted before `end` moves, so that an empty spool reads as empty.
        self.note_appended(end - length);
        self.end = end;
        Ok(Appended::Yes)
    }

    /// The batches at the head, merged into one of at most `max_docs`
    /// documents and about `max_bytes` (at least one batch, whatever its
    /// size), and where the batch after them starts; `None` once the spool
    /// is replayed. Merging lets the replay write as much at once as direct
    /// writes do, however small the batches that were spooled, so that a
    /// spool filled while the store was behind can catch up. Lines that do
    /// not decode (the torn tail of a crash) are logged and skipped.
    pub(super) async fn take_head(&mut self, max_docs: usize, max_bytes: usize) -> io::Result<Option<(LogBatch, u64)>> {
        if let Some(head) = self.head_batch.take() {
            return Ok(Some(head));
        }
        let (file, path, offset, end) = (Arc::clone(&self.file), self.path.clone(), self.head, self.end);
        let read = blocking(move || read_head(&file, &path, offset, end, max_docs, max_bytes)).await;
        let head = self.note("read", read)?;
        self.head = head.skipped_to;
        Ok(head.batch)
    }

    /// Logs the first failure of a run of them, and the recovery after it,
    /// rather than every retry.
    fn note<T>(&mut self, action: &str, result: io::Result<T>) -> io::Result<T> {
        match &result {
            Ok(_) if self.failing => {
                self.failing = false;
                tracing::info!(path = %self.path.display(), "the log spool works again");
            }
            Ok(_) => {}
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::error!(path = %self.path.display(), error = %e, "cannot {action} the log spool; retrying");
            }
            Err(_) => {}
        }
        result
    }

    pub(super) fn put_back_head(&mut self, batch: LogBatch, next: u64) {
        self.head_batch = Some((batch, next));
    }

    pub(super) fn advance(&mut self, next: u64) {
        self.head = next;
        self.head_batch = None;
        // An entry stands for the batches up to the next entry's offset.
        while self.appended.get(1).is_some_and(|&(start, _)| start <= next) {
            self.appended.pop_front();
        }
    }

    pub(super) async fn truncate(&mut self) -> io::Result<()> {
        let file = Arc::clone(&self.file);
        let truncated = blocking(move || {
            file.set_len(0)?;
            file.sync_data()
        })
        .await;
        self.note("truncate", truncated)?;
        self.head = 0;
        self.end = 0;
        self.head_batch = None;
        self.appended.clear();
        Ok(())
    }
}

/// What `read_head` found: the merged batch and where the next one starts,
/// and where the spool's head now is (past blank and unreadable lines).
struct Head {
    batch: Option<(LogBatch, u64)>,
    skipped_to: u64,
}

/// Reads the batches from `offset` on, merging them while they fit in
/// `max_docs` and `max_bytes`; stops before an unreadable line that follows
/// a readable one (the next read skips it).
fn read_head(
    file: &File,
    path: &Path,
    mut offset: u64,
    end: u64,
    max_docs: usize,
    max_bytes: usize,
) -> io::Result<Head> {
    let mut merged: Option<LogBatch> = None;
    let mut bytes = 0;
    let mut skipped_to = offset;
    while offset < end {
        let (line, next) = read_line(file, offset, end)?;
        if line.iter().all(u8::is_ascii_whitespace) {
            if merged.is_none() {
                skipped_to = next;
            }
            offset = next;
            continue;
        }
        match (serde_json::from_slice::<LogBatch>(&line), &mut merged) {
            (Ok(batch), None) => {
                bytes = line.len();
                merged = Some(batch);
            }
            (Ok(batch), Some(head)) => {
                if head.len() + batch.len() > max_docs || bytes + line.len() > max_bytes {
                    break;
                }
                bytes += line.len();
                head.runs.extend(batch.runs);
                head.chunks.extend(batch.chunks);
            }
            (Err(e), None) => {
                tracing::error!(path = %path.display(), offset, error = %e, "skipping an unreadable spool line");
                skipped_to = next;
            }
            (Err(_), Some(_)) => break,
        }
        offset = next;
    }
    Ok(Head {
        batch: merged.map(|batch| (batch, offset)),
        skipped_to,
    })
}

/// Makes sure the file ends with a newline (a crash mid-append leaves a
/// partial line, which then stands alone and is skipped at replay) and
/// returns its length.
fn repair_tail(file: &File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8];
    file.read_exact_at(&mut last, len - 1)?;
    if last[0] == b'\n' {
        return Ok(len);
    }
    tracing::warn!("the log spool ends in a partial batch (a crash while spooling?); it will be skipped");
    let mut writer = file;
    writer.write_all(b"\n")?;
    file.sync_data()?;
    Ok(len + 1)
}

/// The line starting at `offset` (without its newline) and the offset after
/// it, reading no further than `end`.
fn read_line(file: &File, mut offset: u64, end: u64) -> io::Result<(Vec<u8>, u64)> {
    let mut line = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while offset < end {
        let want = usize::try_from(end - offset).unwrap_or(usize::MAX).min(buf.len());
        let n = file.read_at(&mut buf[..want], offset)?;
        if n == 0 {
            break;
        }
        if let Some(newline) = buf[..n].iter().position(|b| *b == b'\n') {
            line.extend_from_slice(&buf[..newline]);
            return Ok((line, offset + newline as u64 + 1));
        }
        line.extend_from_slice(&buf[..n]);
        offset += n as u64;
    }
    Ok((line, end))
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(io::Error::other)?
}
