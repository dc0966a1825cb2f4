//! Calls with failover: each call goes to the preferred endpoint and, as far
//! as its [`Retry`] allows, on to the others, all within one deadline; the
//! preference moves away from an endpoint that fails. Also the endpoints'
//! clients, created on first use.
//!
//! What it must not do: retry a write on another endpoint unless the
//! failure proves etcd never received it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, KvClient, LeaseClient, MaintenanceClient, WatchClient};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::EtcdStore;
use super::errors::{Class, Failure, classify, describe, map_error};
use crate::coord::StoreError;

/// The largest response accepted from etcd (a range or a watch batch).
/// tonic's default, 4 MiB, is only four module chunks; a larger response is
/// refused with [`StoreError::Other`].
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// Pauses between rounds over the endpoints while a cluster has no leader.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

impl EtcdStore {
    /// Runs `attempt` against the preferred endpoint and, as far as `retry`
    /// allows, the others, within the request timeout.
    pub(super) async fn call<T, F, Fut>(&self, what: &str, retry: Retry, attempt: F) -> Result<T, StoreError>
    where
        F: FnMut(&Clients) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        self.call_within(self.request_timeout, what, retry, attempt).await
    }

    pub(super) async fn call_within<T, F, Fut>(
        &self,
        timeout: Duration,
        what: &str,
        retry: Retry,
        mut attempt: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut(&Clients) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let deadline = Instant::now() + timeout;
        let count = self.members.len();
        let mut backoff = FIRST_BACKOFF;
        let mut last_failure = String::new();
        loop {
            let first = self.preferred.load(Ordering::Relaxed) % count;
            // Whether every endpoint refused the connection this round: then
            // etcd is down (or unreachable) and waiting longer would not help.
            let mut all_refused = true;
            for step in 0..count {
                let index = (first + step) % count;
                let member = &self.members[index];
                let outcome = tokio::time::timeout_at(deadline, async {
                    let clients = member.clients(&self.options).await?;
                    attempt(clients).await
                })
                .await;
                let error = match outcome {
                    Ok(Ok(value)) => {
                        self.prefer(first, index);
                        return Ok(value);
                    }
                    Ok(Err(Failure::Final(error))) => return Err(error),
                    Ok(Err(Failure::Etcd(error))) => error,
                    Err(_) => {
                        // A member that accepts connections but never answers
                        // (stopped, partitioned): try another one next time.
                        self.prefer(index, index + 1);
                        let last = if last_failure.is_empty() {
                            String::new()
                        } else {
                            format!("; before that: {last_failure}")
                        };
                        return Err(StoreError::Unavailable(format!(
                            "etcd did not answer {what} within {timeout:?} (waiting on {}{last})",
                            member.endpoint
                        )));
                    }
                };
                let class = classify(&error);
                last_failure = format!("{}: {}", member.endpoint, describe(&error));
                match class {
                    Class::Final => return Err(map_error(what, &error)),
                    Class::NotSent { refused } => all_refused &= refused,
                    Class::MaybeSent => {
                        all_refused = false;
                        if retry == Retry::IfNotSent {
                            self.prefer(index, index + 1);
                            return Err(map_error(what, &error));
                        }
                    }
                }
                tracing::debug!(
                    endpoint = %member.endpoint,
                    what,
                    error = %describe(&error),
                    "etcd endpoint failed; trying the next"
                );
                self.prefer(index, index + 1);
            }
            if all_refused {
                return Err(StoreError::Unavailable(format!(
                    "no etcd endpoint reachable for {what}: {last_failure}"
                )));
            }
            // Some member answered but could not serve (no leader yet, a
            // timeout inside etcd): an election takes about a second, so
            // wait a little and go round again.
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreError::Unavailable(format!(
                    "etcd could not serve {what} within {timeout:?}: {last_failure}"
                )));
            }
            tokio::time::sleep_until((now + backoff).min(deadline)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Moves the preference from `from` to `to` unless another call moved it
    /// meanwhile.
    fn prefer(&self, from: usize, to: usize) {
        let count = self.members.len();
        let (from, to) = (from % count, to % count);
        if from != to
            && self
                .preferred
                .compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::debug!(endpoint = %self.members[to].endpoint, "now preferring this etcd endpoint");
        }
    }
}

/// One endpoint and its clients, created on first use: with credentials,
/// creating them authenticates, which needs the member to be up.
pub(super) struct Member {
    pub(super) endpoint: String,
    pub(super) clients: OnceCell<Clients>,
}

impl Member {
    async fn clients(&self, options: &ConnectOptions) -> Result<&Clients, Failure> {
        self.clients
            .get_or_try_init(|| async {
                let client = Client::connect([self.endpoint.as_str()], Some(options.clone())).await?;
                Ok::<_, Failure>(Clients {
                    kv: client.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES),
                    watch: client.watch_client().max_decoding_message_size(MAX_RESPONSE_BYTES),
                    lease: client.lease_client(),
                    maintenance: client.maintenance_client(),
                })
            })
            .await
    }
}

/// The clients of one endpoint. Each is a cheap handle on the endpoint's
/// one HTTP/2 connection; calls clone the one they need.
pub(super) struct Clients {
    pub(super) kv: KvClient,
    pub(super) watch: WatchClient,
    pub(super) lease: LeaseClient,
    pub(super) maintenance: MaintenanceClient,
}

/// Which failures a call may retry on another endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// Reads and idempotent writes: any transient failure.
    Always,
    /// Writes: only failures that prove etcd never received the request.
    IfNotSent,
}
