//! The spool file: an append-only file of JSON lines, one `LogBatch` each,
//! where batches wait while the store is down. It owns the file format, the
//! lock that keeps a second process out, and the repair of a line torn by a
//! crash; when to append and replay is the pipeline's business (`replay.rs`).

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::Arc;

use crate::logstore::LogBatch;

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
        Ok(Self {
            path,
            file: Arc::new(file),
            head: 0,
            end,
            max_bytes,
            head_batch: None,
            failing: false,
        })
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
        self.end = self.note("append to", appended)?;
        Ok(Appended::Yes)
    }

    /// The batch at the head and where the next one starts; `None` once the
    /// spool is replayed. Lines that do not decode (the torn tail of a crash)
    /// are logged and skipped.
    pub(super) async fn take_head(&mut self) -> io::Result<Option<(LogBatch, u64)>> {
        if let Some(head) = self.head_batch.take() {
            return Ok(Some(head));
        }
        while self.head < self.end {
            let (file, offset, end) = (Arc::clone(&self.file), self.head, self.end);
            let read = blocking(move || read_line(&file, offset, end)).await;
            let (line, next) = self.note("read", read)?;
            if line.iter().all(u8::is_ascii_whitespace) {
                self.head = next;
                continue;
            }
            match serde_json::from_slice::<LogBatch>(&line) {
                Ok(batch) => return Ok(Some((batch, next))),
                Err(e) => {
                    let path = self.path.display();
                    tracing::error!(%path, offset, error = %e, "skipping an unreadable spool line");
                    self.head = next;
                }
            }
        }
        Ok(None)
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
        Ok(())
    }
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
