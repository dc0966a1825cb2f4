//! Watches: the events of each revision, the history kept for watches that
//! resume from an older revision (bounded by events and bytes), the live
//! watchers and their bounded channels, and the stream a `watch` call
//! returns.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;

use super::state::{Entry, State};
use super::{EmbeddedStore, EmbeddedStoreBuilder};
use crate::coord::{Revision, StoreError, WatchEvent};

/// Bytes a history event costs beyond its key and value (a rough figure, so
/// that many tiny events still count against the byte budget).
const EVENT_OVERHEAD_BYTES: usize = 64;

pub(super) struct Watcher {
    pub(super) prefix: String,
    pub(super) sender: mpsc::Sender<Arc<RevisionEvents>>,
    /// Set to the first revision the watcher missed when its buffer was full.
    pub(super) lagged: Arc<AtomicI64>,
}

/// The events of one revision, shared by the history and every watcher.
#[derive(Debug)]
pub(super) struct RevisionEvents {
    pub(super) revision: Revision,
    pub(super) events: Vec<Event>,
    pub(super) bytes: usize,
}

#[derive(Debug)]
pub(super) enum Event {
    Put { key: String, entry: Entry },
    Delete { key: String },
}

impl Event {
    fn key(&self) -> &str {
        match self {
            Event::Put { key, .. } | Event::Delete { key } => key,
        }
    }

    pub(super) fn bytes(&self) -> usize {
        EVENT_OVERHEAD_BYTES
            + match self {
                Event::Put { key, entry } => key.len() + entry.value.len(),
                Event::Delete { key } => key.len(),
            }
    }
}

impl State {
    pub(super) fn notify_watchers(&mut self, batch: &Arc<RevisionEvents>) {
        self.watchers.retain(|_, watcher| {
            if !batch
                .events
                .iter()
                .any(|event| event.key().starts_with(&watcher.prefix))
            {
                return true;
            }
            match watcher.sender.try_send(Arc::clone(batch)) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // Dropping the sender ends the stream, which then reports
                    // the revision it missed instead of buffering without bound.
                    watcher.lagged.store(batch.revision, Ordering::Release);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }
}

/// Kept revisions, oldest first, bounded by event count and bytes.
pub(super) struct History {
    batches: VecDeque<Arc<RevisionEvents>>,
    events: usize,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
    /// Every revision after `floor` is still in `batches`.
    pub(super) floor: Revision,
}

impl History {
    pub(super) fn new(options: &EmbeddedStoreBuilder, floor: Revision) -> Self {
        History {
            batches: VecDeque::new(),
            events: 0,
            bytes: 0,
            max_events: options.history_events,
            max_bytes: options.history_bytes,
            floor,
        }
    }

    pub(super) fn push(&mut self, batch: Arc<RevisionEvents>) {
        self.events += batch.events.len();
        self.bytes += batch.bytes;
        self.batches.push_back(batch);
        while self.events > self.max_events || self.bytes > self.max_bytes {
            if !self.drop_oldest() {
                break;
            }
        }
    }

    pub(super) fn compact(&mut self, revision: Revision) {
        while self.batches.front().is_some_and(|batch| batch.revision <= revision) {
            self.drop_oldest();
        }
        self.floor = self.floor.max(revision);
    }

    fn drop_oldest(&mut self) -> bool {
        let Some(oldest) = self.batches.pop_front() else {
            return false;
        };
        self.events -= oldest.events.len();
        self.bytes -= oldest.bytes;
        self.floor = oldest.revision;
        true
    }

    /// The kept revisions after `after` touching `prefix`; `None` if some
    /// revision after `after` is no longer kept.
    pub(super) fn since(&self, prefix: &str, after: Revision) -> Option<VecDeque<Arc<RevisionEvents>>> {
        if after < self.floor {
            return None;
        }
        let start = self.batches.partition_point(|batch| batch.revision <= after);
        Some(
            self.batches
                .range(start..)
                .filter(|batch| batch.events.iter().any(|event| event.key().starts_with(prefix)))
                .cloned()
                .collect(),
        )
    }
}

/// The stream returned by `watch`: replayed history first, then live
/// revisions from the watcher's bounded channel.
pub(super) struct EmbeddedWatch {
    pub(super) id: u64,
    pub(super) prefix: String,
    pub(super) after: Revision,
    pub(super) replay: VecDeque<Arc<RevisionEvents>>,
    pub(super) live: mpsc::Receiver<Arc<RevisionEvents>>,
    pub(super) lagged: Arc<AtomicI64>,
    pub(super) store: Weak<EmbeddedStore>,
    pub(super) finished: bool,
}

impl EmbeddedWatch {
    fn events(&self, batch: &RevisionEvents) -> Vec<WatchEvent> {
        batch
            .events
            .iter()
            .filter(|event| event.key().starts_with(&self.prefix))
            .map(|event| match event {
                Event::Put { key, entry } => WatchEvent::Put(entry.to_key_value(key)),
                Event::Delete { key } => WatchEvent::Delete {
                    key: key.clone(),
                    revision: batch.revision,
                },
            })
            .collect()
    }
}

impl Stream for EmbeddedWatch {
    type Item = Result<Vec<WatchEvent>, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        while let Some(batch) = self.replay.pop_front() {
            let events = self.events(&batch);
            if !events.is_empty() {
                return Poll::Ready(Some(Ok(events)));
            }
        }
        loop {
            match self.live.poll_recv(cx) {
                Poll::Ready(Some(batch)) => {
                    let events = self.events(&batch);
                    if batch.revision > self.after && !events.is_empty() {
                        return Poll::Ready(Some(Ok(events)));
                    }
                }
                Poll::Ready(None) => {
                    self.finished = true;
                    let missed = self.lagged.load(Ordering::Acquire);
                    let error = if missed > 0 {
                        // The kv contract has no "lagged" error; `Compacted`
                        // means the same to a watcher: re-list, watch again.
                        StoreError::Compacted {
                            requested: missed,
                            compact_revision: missed,
                        }
                    } else {
                        StoreError::Unavailable("embedded store closed".into())
                    };
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for EmbeddedWatch {
    fn drop(&mut self) {
        if let Some(store) = self.store.upgrade() {
            crate::sync::lock(&store.state).watchers.remove(&self.id);
        }
    }
}
