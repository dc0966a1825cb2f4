//! Filling batches: events taken from the channel go into the open batch,
//! which is sealed when it is full, when `flush_interval` has passed since
//! its first event, or when a `flush` asks for it. Sealed batches queue for
//! the pipeline's one write; this side never waits on the store.

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Event;
use super::pipeline::Pipeline;
use crate::logstore::LogBatch;

/// A batch and the `flush` calls waiting for it to be durable.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) batch: LogBatch,
    pub(super) waiters: Vec<oneshot::Sender<()>>,
    /// About the bytes the batch holds (see `Event::weight`).
    pub(super) bytes: usize,
}

impl Pending {
    pub(super) fn is_idle(&self) -> bool {
        self.batch.is_empty() && self.waiters.is_empty()
    }

    pub(super) fn done(self) {
        for waiter in self.waiters {
            // A flush caller that gave up waiting is no concern of ours.
            waiter.send(()).ok();
        }
    }
}

impl Pipeline {
    pub(super) fn take_buffer(&mut self) {
        let mut events = std::mem::take(&mut self.buffer);
        // Flushes taken together seal one batch, not one each: when many
        // runs end at once, their flushes share a write.
        let mut flush = false;
        for queued in events.drain(..) {
            // The event's room in the channel is given back as it leaves.
            let weight = queued.weight;
            match queued.event {
                Event::Record(run) => {
                    self.start_batch();
                    self.open.batch.runs.push(*run);
                }
                Event::Chunk(chunk) => {
                    self.start_batch();
                    self.open.batch.chunks.push(chunk);
                }
                Event::Flush(waiter) => {
                    self.open.waiters.push(waiter);
                    flush = true;
                    continue;
                }
            }
            self.open.bytes += weight;
            if self.open.batch.len() >= self.config.batch_docs || self.open.bytes >= self.config.batch_max_bytes {
                self.seal();
            }
        }
        if flush {
            self.seal();
        }
        // Handing the allocation back keeps the buffer from being regrown.
        self.buffer = events;
    }

    fn start_batch(&mut self) {
        if self.open.batch.is_empty() {
            self.open_deadline = Some(Instant::now() + self.config.flush_interval);
        }
    }

    pub(super) fn seal(&mut self) {
        if !self.open.is_idle() {
            let open = std::mem::take(&mut self.open);
            // A batch already waiting its turn takes the new one in, up to
            // `batch_docs` and `batch_max_bytes`: many small flushes (runs
            // ending together) then share a write instead of queueing one
            // write each.
            match self.sealed.back_mut() {
                Some(last)
                    if last.batch.len() + open.batch.len() <= self.config.batch_docs
                        && last.bytes + open.bytes <= self.config.batch_max_bytes =>
                {
                    last.bytes += open.bytes;
                    last.batch.runs.extend(open.batch.runs);
                    last.batch.chunks.extend(open.batch.chunks);
                    last.waiters.extend(open.waiters);
                }
                _ => self.sealed.push_back(open),
            }
        }
        self.open_deadline = None;
    }
}
