//! Watches: opening one etcd watch (and waiting for etcd's first answer),
//! and turning its responses into the contract's stream of per-revision
//! batches, which ends after the first error (a compaction, a cancellation,
//! a broken stream) so that the caller re-lists and watches again.

use std::collections::VecDeque;

use etcd_client::{EventType, WatchClient, WatchOptions, WatchResponse, WatchResponseStream};
use futures::StreamExt;

use super::convert::{key_string, key_value};
use super::errors::{Failure, map_error};
use crate::coord::{Revision, StoreError, WatchEvent, WatchStream};

/// Opens one etcd watch and waits for etcd's first answer, so that a dead or
/// leaderless member fails here (and the call moves on) rather than later in
/// the stream.
pub(super) async fn open_watch(
    mut client: WatchClient,
    prefix: &str,
    start: Revision,
) -> Result<(etcd_client::WatchRequestSender, WatchResponseStream, WatchResponse), Failure> {
    let options = WatchOptions::new().with_prefix().with_start_revision(start);
    let (requests, mut responses) = client.watch(prefix, Some(options)).await?.split();
    match responses.message().await? {
        Some(first) => Ok((requests, responses, first)),
        None => Err(Failure::Etcd(etcd_client::Error::WatchError(
            "etcd closed the watch stream before answering".into(),
        ))),
    }
}

/// The stream a `watch` call returns, over the watch [`open_watch`] opened
/// from `start` (`after + 1`).
pub(super) fn watch_stream(
    prefix: &str,
    start: Revision,
    (requests, responses, first): (etcd_client::WatchRequestSender, WatchResponseStream, WatchResponse),
) -> WatchStream {
    let state = WatchState {
        prefix: prefix.to_owned(),
        start,
        first: Some(first),
        responses,
        _requests: requests,
        pending: VecDeque::new(),
        finished: false,
    };
    Box::pin(futures::stream::unfold(state, |mut state| async move {
        let item = state.next_item().await?;
        Some((item, state))
    }))
}

/// One `watch` call's etcd watch, turned into per-revision batches.
struct WatchState {
    prefix: String,
    /// The start revision asked for (`after + 1`).
    start: Revision,
    /// etcd's first answer, read while opening.
    first: Option<WatchResponse>,
    responses: WatchResponseStream,
    /// Kept open: closing the request side could end the watch.
    _requests: etcd_client::WatchRequestSender,
    pending: VecDeque<Vec<WatchEvent>>,
    /// Set after an error: the stream then ends.
    finished: bool,
}

impl WatchState {
    async fn next_item(&mut self) -> Option<Result<Vec<WatchEvent>, StoreError>> {
        loop {
            if let Some(batch) = self.pending.pop_front() {
                return Some(Ok(batch));
            }
            if self.finished {
                return None;
            }
            let response = match self.first.take() {
                Some(first) => first,
                None => match self.responses.next().await {
                    Some(Ok(response)) => response,
                    Some(Err(error)) => return self.fail(map_error("watch", &error)),
                    None => {
                        let error = format!("etcd ended the watch on {}", self.prefix);
                        return self.fail(StoreError::Unavailable(error));
                    }
                },
            };
            if response.compact_revision() != 0 {
                return self.fail(StoreError::Compacted {
                    requested: self.start,
                    compact_revision: response.compact_revision(),
                });
            }
            if response.canceled() {
                let error = format!(
                    "etcd cancelled the watch on {}: {}",
                    self.prefix,
                    response.cancel_reason()
                );
                return self.fail(StoreError::Unavailable(error));
            }
            // Creation and progress answers carry no events.
            self.pending.extend(revision_batches(&response));
        }
    }

    fn fail(&mut self, error: StoreError) -> Option<Result<Vec<WatchEvent>, StoreError>> {
        self.finished = true;
        Some(Err(error))
    }
}

/// A watch response's events, one batch per revision. etcd never splits a
/// revision across responses (this adapter does not ask it to fragment).
fn revision_batches(response: &WatchResponse) -> Vec<Vec<WatchEvent>> {
    let mut batches: Vec<Vec<WatchEvent>> = Vec::new();
    for event in response.events() {
        let Some(kv) = event.kv() else {
            continue;
        };
        let event = match event.event_type() {
            EventType::Put => WatchEvent::Put(key_value(kv.clone())),
            // A delete's kv carries the deleting revision as its mod revision.
            EventType::Delete => WatchEvent::Delete {
                key: key_string(kv.key().to_vec()),
                revision: kv.mod_revision(),
            },
        };
        match batches.last_mut() {
            Some(batch) if batch.first().is_some_and(|first| first.revision() == event.revision()) => {
                batch.push(event);
            }
            _ => batches.push(vec![event]),
        }
    }
    batches
}
