//! [`PrefixWatcher`]: a watch over one key family that lists the family
//! again whenever the watch fails, so its consumer never silently misses a
//! change.

use std::sync::Arc;

use futures::StreamExt;

use super::Coordinator;
use super::keys::Family;
use crate::coord::{KeyValue, KvStore, Revision, StoreError, WatchEvent, WatchStream};

impl Coordinator {
    /// A watcher over one key family that survives compaction and stream errors.
    pub fn watcher(&self, family: Family) -> PrefixWatcher {
        PrefixWatcher {
            store: self.store.clone(),
            prefix: self.prefix_of(family),
            stream: None,
            revision: 0,
        }
    }
}

/// What a [`PrefixWatcher`] yields.
#[derive(Debug)]
pub enum WatchUpdate {
    /// The full current contents of the prefix (first, and after any watch
    /// failure): the receiver replaces its view and diffs.
    Snapshot(Vec<KeyValue>),
    /// Changes since the previous update, in revision order.
    Events(Vec<WatchEvent>),
}

/// Lists a prefix, then watches it from the listed revision; when the watch
/// fails (compaction, a broken stream, a slow consumer) it lists again. So a
/// consumer never silently misses a change: it gets events or a fresh snapshot.
pub struct PrefixWatcher {
    store: Arc<dyn KvStore>,
    prefix: String,
    stream: Option<WatchStream>,
    revision: Revision,
}

impl PrefixWatcher {
    /// The next update. Store errors are returned (the caller decides how long
    /// to back off); the following call starts over with a snapshot.
    pub async fn next(&mut self) -> Result<WatchUpdate, StoreError> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                let range = self.store.range(&self.prefix).await?;
                self.revision = range.revision;
                self.stream = Some(self.store.watch(&self.prefix, range.revision).await?);
                return Ok(WatchUpdate::Snapshot(range.kvs));
            };
            match stream.next().await {
                Some(Ok(events)) => {
                    if let Some(last) = events.last() {
                        self.revision = last.revision();
                    }
                    if !events.is_empty() {
                        return Ok(WatchUpdate::Events(events));
                    }
                }
                Some(Err(err)) => {
                    self.stream = None;
                    if !matches!(err, StoreError::Compacted { .. }) {
                        return Err(err);
                    }
                    tracing::info!(prefix = %self.prefix, %err, "watch fell behind; listing again");
                }
                None => {
                    self.stream = None;
                    return Err(StoreError::Unavailable(format!("watch on {} ended", self.prefix)));
                }
            }
        }
    }
}
