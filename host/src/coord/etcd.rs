//! The etcd v3 backend of the coordination store: [`EtcdStore`] adapts the
//! `etcd-client` crate to [`KvStore`], so a cluster of sandcron workers and
//! masters coordinates through a real etcd (3.4 or later).
//!
//! What it must not do: let an etcd or tonic type cross its API; block a
//! caller longer than the request timeout; retry a write that etcd may
//! already have applied; send a value over [`MAX_VALUE_BYTES`] to etcd
//! (which would take up to 1.5 MiB).
//!
//! Endpoints and failover: each endpoint gets its own gRPC channel, and calls
//! go to one preferred endpoint until it fails. The client does not use
//! etcd-client's balanced channel across all endpoints, because that channel
//! keeps handing requests to a dead member (each then fails) instead of
//! steering around it. A request that provably never reached etcd (the
//! connection could not be made, or the member has no leader) moves on to the
//! next endpoint; so does a read that failed any other transient way. A write
//! whose fate is unknown returns [`StoreError::Unavailable`] and only moves
//! the preference, so the caller re-reads and decides, as it must after any
//! compare-and-swap that may or may not have happened.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, Identity, KvClient,
    LeaseClient, MaintenanceClient, PutOptions, TlsOptions, WatchClient, WatchOptions, WatchResponse,
    WatchResponseStream,
};
use futures::StreamExt;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::coord::{
    CmpOp, Compare, KeyValue, KvStore, LeaseId, MAX_VALUE_BYTES, RangeResult, Revision, StoreError, Txn, TxnOp,
    TxnResponse, WatchEvent, WatchStream,
};

/// How to reach an etcd cluster.
#[derive(Clone)]
pub struct EtcdConfig {
    /// Client URLs of the members, `http://host:port` (or `https://` with
    /// [`tls`](Self::tls)). The first one is preferred until it fails.
    pub endpoints: Vec<String>,
    /// How long one connection attempt to a member may take, and how long
    /// [`EtcdStore::connect`] waits for any member to answer.
    pub dial_timeout: Duration,
    /// How long any one call may take, failover included; then it fails
    /// with [`StoreError::Unavailable`].
    pub request_timeout: Duration,
    /// etcd's role-based access control: both or neither.
    pub username: Option<String>,
    pub password: Option<String>,
    /// TLS for `https://` endpoints.
    pub tls: Option<EtcdTls>,
}

impl EtcdConfig {
    /// Plain-text endpoints with default timeouts (5 s each).
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            dial_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            username: None,
            password: None,
            tls: None,
        }
    }
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("dial_timeout", &self.dial_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish()
    }
}

/// TLS material, as PEM text. It is passed in rather than read from paths
/// here because only `config` reads files; it loads these from the paths in
/// the configuration.
#[derive(Clone)]
pub struct EtcdTls {
    /// The CA certificate(s) that signed the members' certificates. Required:
    /// this build carries no system root store.
    pub ca_pem: Vec<u8>,
    /// A client certificate and its key, for members started with
    /// `--client-cert-auth`.
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
    /// The name to verify the members' certificates against, when it is not
    /// the endpoint's host.
    pub server_name: Option<String>,
}

impl fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdTls")
            .field("ca_pem_bytes", &self.ca_pem.len())
            .field("client_cert", &self.client_cert_pem.is_some())
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// The [`KvStore`] over an etcd cluster: see the module documentation.
pub struct EtcdStore {
    members: Vec<Member>,
    /// Index into `members` of the endpoint calls start with.
    preferred: AtomicUsize,
    request_timeout: Duration,
    options: ConnectOptions,
}

/// The largest response accepted from etcd (a range or a watch batch).
/// tonic's default, 4 MiB, is only four module chunks; a larger response is
/// refused with [`StoreError::Other`].
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// HTTP/2 keep-alive pings detect a member that vanished without closing
/// the connection. etcd closes connections that ping more often than its
/// `--grpc-keepalive-min-time` (5 s by default).
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Pauses between rounds over the endpoints while a cluster has no leader.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// What etcd 3.4 says for a lease it does not know.
const LEASE_NOT_FOUND: &str = "requested lease not found";

impl EtcdStore {
    /// Connects to the cluster and checks that some member answers within
    /// the dial timeout. Fails with [`StoreError::Unavailable`] when none
    /// does, and with [`StoreError::Other`] for a configuration etcd cannot
    /// be reached with (no endpoints, a bad URL, half of the credentials).
    pub async fn connect(config: &EtcdConfig) -> Result<Arc<EtcdStore>, StoreError> {
        let options = connect_options(config)?;
        let members = config
            .endpoints
            .iter()
            .map(|endpoint| Member {
                endpoint: endpoint.clone(),
                clients: OnceCell::new(),
            })
            .collect();
        let store = Arc::new(EtcdStore {
            members,
            preferred: AtomicUsize::new(0),
            request_timeout: config.request_timeout,
            options,
        });
        store
            .call_within(config.dial_timeout, "connect", Retry::Always, |clients| {
                let mut maintenance = clients.maintenance.clone();
                async move {
                    maintenance.status().await?;
                    Ok(())
                }
            })
            .await?;
        Ok(store)
    }

    /// The configured endpoints.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|member| member.endpoint.clone()).collect()
    }

    /// Runs `attempt` against the preferred endpoint and, as far as `retry`
    /// allows, the others, within the request timeout.
    async fn call<T, F, Fut>(&self, what: &str, retry: Retry, attempt: F) -> Result<T, StoreError>
    where
        F: FnMut(&Clients) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        self.call_within(self.request_timeout, what, retry, attempt).await
    }

    async fn call_within<T, F, Fut>(
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

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints())
            .field("preferred", &self.preferred.load(Ordering::Relaxed))
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl KvStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.call("get", Retry::Always, |clients| {
            let mut kv = clients.kv.clone();
            async move {
                let mut response = kv.get(key, None).await?;
                Ok(response.take_kvs().into_iter().next().map(key_value))
            }
        })
        .await
    }

    async fn range(&self, prefix: &str) -> Result<RangeResult, StoreError> {
        self.call("range", Retry::Always, |clients| {
            let mut kv = clients.kv.clone();
            async move {
                // etcd returns a range sorted by key unless asked otherwise.
                let mut response = kv.get(prefix, Some(GetOptions::new().with_prefix())).await?;
                let revision = header_revision(response.header())?;
                let kvs = response.take_kvs().into_iter().map(key_value).collect();
                Ok(RangeResult { kvs, revision })
            }
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        check_values(&txn.success)?;
        check_values(&txn.failure)?;
        let lease = txn.success.iter().chain(&txn.failure).find_map(|op| match op {
            TxnOp::Put { lease, .. } => *lease,
            _ => None,
        });
        let request = etcd_txn(txn);
        self.call("txn", Retry::IfNotSent, |clients| {
            let mut kv = clients.kv.clone();
            let request = request.clone();
            async move {
                let response = kv.txn(request).await.map_err(|error| lease_failure(error, lease))?;
                Ok(TxnResponse {
                    succeeded: response.succeeded(),
                    revision: header_revision(response.header())?,
                })
            }
        })
        .await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        if after < 0 {
            return Err(StoreError::Invalid(format!("watch revision {after} is negative")));
        }
        // etcd watches from a start revision, inclusive; 0 would mean "now".
        let start = after
            .checked_add(1)
            .ok_or_else(|| StoreError::Invalid(format!("watch revision {after} is too large")))?;
        let (requests, responses, first) = self
            .call("watch", Retry::Always, |clients| {
                let watch = clients.watch.clone();
                open_watch(watch, prefix, start)
            })
            .await?;
        let state = WatchState {
            prefix: prefix.to_owned(),
            start,
            first: Some(first),
            responses,
            _requests: requests,
            pending: VecDeque::new(),
            finished: false,
        };
        Ok(Box::pin(futures::stream::unfold(state, |mut state| async move {
            let item = state.next_item().await?;
            Some((item, state))
        })))
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        if ttl.is_zero() {
            return Err(StoreError::Invalid("lease ttl must be positive".into()));
        }
        // etcd counts TTLs in whole seconds; round up so a lease never lives
        // shorter than asked.
        let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let seconds =
            i64::try_from(seconds).map_err(|_| StoreError::Invalid(format!("lease ttl {ttl:?} is too long")))?;
        self.call("lease grant", Retry::IfNotSent, |clients| {
            let mut lease = clients.lease.clone();
            async move {
                let response = lease.grant(seconds, None).await?;
                if !response.error().is_empty() {
                    return Err(Failure::Final(StoreError::Other(format!(
                        "etcd refused a lease: {}",
                        response.error()
                    ))));
                }
                Ok(LeaseId(response.id()))
            }
        })
        .await
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.call("lease keep-alive", Retry::Always, |clients| {
            let mut client = clients.lease.clone();
            async move {
                // One request on a fresh keep-alive stream: etcd-client
                // answers with an error when etcd reports TTL 0 (no lease).
                // The stream closes when the handles drop.
                match client.keep_alive(lease.0).await {
                    Ok(_) => Ok(()),
                    Err(etcd_client::Error::LeaseKeepAliveError(message)) if message.contains("not found") => {
                        Err(Failure::Final(StoreError::LeaseNotFound(lease)))
                    }
                    Err(error) => Err(lease_failure(error, Some(lease))),
                }
            }
        })
        .await
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.call("lease revoke", Retry::Always, |clients| {
            let mut client = clients.lease.clone();
            async move {
                match client.revoke(lease.0).await {
                    Ok(_) => Ok(()),
                    // Already gone (revoked or expired): the contract says fine.
                    Err(error) if is_lease_not_found(&error) => Ok(()),
                    Err(error) => Err(error.into()),
                }
            }
        })
        .await
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.call("compact", Retry::Always, |clients| {
            let mut kv = clients.kv.clone();
            async move {
                match kv.compact(revision, None).await {
                    Ok(_) => Ok(()),
                    Err(error) if server_message(&error).is_some_and(|m| m.contains("has been compacted")) => Ok(()),
                    Err(error) => Err(error.into()),
                }
            }
        })
        .await
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) -> Result<Revision, StoreError> {
        check_value(key, value.len())?;
        let options = lease.map(|lease| PutOptions::new().with_lease(lease.0));
        self.call("put", Retry::IfNotSent, |clients| {
            let mut kv = clients.kv.clone();
            let (value, options) = (value.clone(), options.clone());
            async move {
                let response = kv
                    .put(key, value, options)
                    .await
                    .map_err(|error| lease_failure(error, lease))?;
                header_revision(response.header())
            }
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.call("delete", Retry::IfNotSent, |clients| {
            let mut kv = clients.kv.clone();
            async move { Ok(kv.delete(key, None).await?.deleted() > 0) }
        })
        .await
    }
}

/// One endpoint and its clients, created on first use: with credentials,
/// creating them authenticates, which needs the member to be up.
struct Member {
    endpoint: String,
    clients: OnceCell<Clients>,
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
struct Clients {
    kv: KvClient,
    watch: WatchClient,
    lease: LeaseClient,
    maintenance: MaintenanceClient,
}

/// Which failures a call may retry on another endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads and idempotent writes: any transient failure.
    Always,
    /// Writes: only failures that prove etcd never received the request.
    IfNotSent,
}

/// Why one attempt failed.
enum Failure {
    /// From etcd or the transport; classified by [`classify`].
    Etcd(etcd_client::Error),
    /// Already mapped, and final.
    Final(StoreError),
}

impl From<etcd_client::Error> for Failure {
    fn from(error: etcd_client::Error) -> Self {
        Failure::Etcd(error)
    }
}

/// What a failure means for a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// etcd did not act on the request. `refused`: no connection could be
    /// made at all.
    NotSent { refused: bool },
    /// The request may have been applied (a timeout, a broken connection).
    MaybeSent,
    /// Retrying elsewhere would fail the same way.
    Final,
}

fn classify(error: &etcd_client::Error) -> Class {
    use etcd_client::Error;
    match error {
        Error::GRpcStatus(status) => classify_status(status),
        // Failures to use an already closed watch or keep-alive stream.
        Error::WatchError(_) | Error::LeaseKeepAliveError(_) | Error::IoError(_) => Class::MaybeSent,
        _ => Class::Final,
    }
}

fn classify_status(status: &tonic::Status) -> Class {
    use tonic::Code;
    if caused_by_connect_error(status) {
        return Class::NotSent { refused: true };
    }
    let message = status.message();
    match status.code() {
        // With `require_leader` a member without a leader turns requests
        // away before acting on them; "too many requests" is a refusal too.
        Code::Unavailable | Code::ResourceExhausted
            if message.contains("no leader")
                || message.contains("not capable")
                || message.contains("too many requests") =>
        {
            Class::NotSent { refused: false }
        }
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => Class::MaybeSent,
        // A local transport failure (the status carries its cause); etcd's
        // own Unknown and Internal answers carry none and are final.
        Code::Unknown | Code::Internal if std::error::Error::source(status).is_some() => Class::MaybeSent,
        _ => Class::Final,
    }
}

/// Whether the connection could not be made: tonic wraps such failures in
/// `ConnectError` somewhere in the status' source chain.
fn caused_by_connect_error(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// The final [`StoreError`] for a failure.
fn map_error(what: &str, error: &etcd_client::Error) -> StoreError {
    let description = describe(error);
    match classify(error) {
        Class::NotSent { .. } | Class::MaybeSent => {
            return StoreError::Unavailable(format!("{what}: {description}"));
        }
        Class::Final => {}
    }
    if let etcd_client::Error::GRpcStatus(status) = error
        && status.message().starts_with("etcdserver:")
    {
        // etcd reports some credential problems as invalid arguments; they
        // are not the request's fault.
        if is_auth_failure(status) {
            return StoreError::Other(format!("{what}: etcd refused the credentials: {}", status.message()));
        }
        match status.code() {
            // Too many operations, a key written twice in a txn, a request
            // too large, a revision in the future.
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => {
                return StoreError::Invalid(format!("{what}: {}", status.message()));
            }
            _ => {}
        }
    }
    StoreError::Other(format!("{what}: {description}"))
}

fn is_auth_failure(status: &tonic::Status) -> bool {
    let message = status.message();
    matches!(
        status.code(),
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
    ) || [
        "authentication failed",
        "user name is empty",
        "invalid auth token",
        "permission denied",
    ]
    .iter()
    .any(|fragment| message.contains(fragment))
}

/// A readable description: the status code and message, then its causes.
fn describe(error: &etcd_client::Error) -> String {
    let etcd_client::Error::GRpcStatus(status) = error else {
        return error.to_string();
    };
    let mut text = format!("{:?}: {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The message of an error etcd itself sent.
fn server_message(error: &etcd_client::Error) -> Option<&str> {
    match error {
        etcd_client::Error::GRpcStatus(status) if status.message().starts_with("etcdserver:") => Some(status.message()),
        _ => None,
    }
}

fn is_lease_not_found(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status)
        if status.code() == tonic::Code::NotFound && status.message().contains(LEASE_NOT_FOUND))
}

/// A put naming a lease etcd does not know becomes `LeaseNotFound(lease)`.
fn lease_failure(error: etcd_client::Error, lease: Option<LeaseId>) -> Failure {
    match lease {
        Some(lease) if is_lease_not_found(&error) => Failure::Final(StoreError::LeaseNotFound(lease)),
        _ => Failure::Etcd(error),
    }
}

fn connect_options(config: &EtcdConfig) -> Result<ConnectOptions, StoreError> {
    if config.endpoints.is_empty() {
        return Err(StoreError::Other("no etcd endpoints configured".into()));
    }
    for endpoint in &config.endpoints {
        let secure = endpoint.starts_with("https://");
        if !secure && !endpoint.starts_with("http://") {
            return Err(StoreError::Other(format!(
                "etcd endpoint {endpoint:?} must start with http:// or https://"
            )));
        }
        if secure != config.tls.is_some() {
            return Err(StoreError::Other(format!(
                "etcd endpoint {endpoint}: https:// endpoints need the TLS settings and http:// ones must not have them"
            )));
        }
    }
    let mut options = ConnectOptions::new()
        .with_connect_timeout(config.dial_timeout)
        .with_keep_alive(KEEP_ALIVE_INTERVAL, config.request_timeout.max(Duration::from_secs(1)))
        .with_keep_alive_while_idle(true)
        // A member cut off from the others refuses requests at once instead
        // of holding them until they time out, so calls move on to another.
        .with_require_leader(true);
    match (&config.username, &config.password) {
        (Some(user), Some(password)) => {
            options = options
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        (None, None) => {}
        _ => {
            return Err(StoreError::Other(
                "etcd username and password must be given together".into(),
            ));
        }
    }
    if let Some(tls) = &config.tls {
        let mut settings = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
        match (&tls.client_cert_pem, &tls.client_key_pem) {
            (Some(cert), Some(key)) => settings = settings.identity(Identity::from_pem(cert, key)),
            (None, None) => {}
            _ => {
                return Err(StoreError::Other(
                    "an etcd client certificate needs its key (and a key its certificate)".into(),
                ));
            }
        }
        if let Some(name) = &tls.server_name {
            settings = settings.domain_name(name.clone());
        }
        options = options.with_tls(settings);
    }
    Ok(options)
}

/// Values over the contract's limit are refused here: etcd itself would take
/// up to 1.5 MiB, and the embedded store refuses them too.
fn check_value(key: &str, len: usize) -> Result<(), StoreError> {
    if len > MAX_VALUE_BYTES {
        return Err(StoreError::Invalid(format!(
            "value of {key} is {len} bytes, more than the {MAX_VALUE_BYTES} allowed"
        )));
    }
    Ok(())
}

fn check_values(ops: &[TxnOp]) -> Result<(), StoreError> {
    for op in ops {
        if let TxnOp::Put { key, value, .. } = op {
            check_value(key, value.len())?;
        }
    }
    Ok(())
}

fn etcd_txn(txn: Txn) -> etcd_client::Txn {
    let compares: Vec<etcd_client::Compare> = txn.compares.into_iter().map(etcd_compare).collect();
    let success: Vec<etcd_client::TxnOp> = txn.success.into_iter().map(etcd_op).collect();
    let failure: Vec<etcd_client::TxnOp> = txn.failure.into_iter().map(etcd_op).collect();
    etcd_client::Txn::new()
        .when(compares)
        .and_then(success)
        .or_else(failure)
}

fn etcd_compare(compare: Compare) -> etcd_client::Compare {
    match compare {
        Compare::ModRevision { key, op, revision } => etcd_client::Compare::mod_revision(key, etcd_cmp(op), revision),
        Compare::CreateRevision { key, op, revision } => {
            etcd_client::Compare::create_revision(key, etcd_cmp(op), revision)
        }
    }
}

fn etcd_cmp(op: CmpOp) -> CompareOp {
    match op {
        CmpOp::Equal => CompareOp::Equal,
        CmpOp::NotEqual => CompareOp::NotEqual,
        CmpOp::Less => CompareOp::Less,
        CmpOp::Greater => CompareOp::Greater,
    }
}

fn etcd_op(op: TxnOp) -> etcd_client::TxnOp {
    match op {
        TxnOp::Put { key, value, lease } => {
            etcd_client::TxnOp::put(key, value, lease.map(|lease| PutOptions::new().with_lease(lease.0)))
        }
        TxnOp::Delete { key } => etcd_client::TxnOp::delete(key, None),
        TxnOp::DeletePrefix { prefix } => etcd_client::TxnOp::delete(prefix, Some(DeleteOptions::new().with_prefix())),
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision, Failure> {
    header
        .map(etcd_client::ResponseHeader::revision)
        .ok_or_else(|| Failure::Final(StoreError::Other("etcd answered without a response header".into())))
}

fn key_value(kv: etcd_client::KeyValue) -> KeyValue {
    let (create_revision, mod_revision, lease) = (kv.create_revision(), kv.mod_revision(), kv.lease());
    let (key, value) = kv.into_key_value();
    KeyValue {
        key: key_string(key),
        value,
        create_revision,
        mod_revision,
        lease: (lease != 0).then_some(LeaseId(lease)),
    }
}

/// sandcron writes only UTF-8 keys; a foreign key that is not is shown
/// lossily rather than failing a whole listing (decoding then skips it).
fn key_string(key: Vec<u8>) -> String {
    String::from_utf8(key).unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
}

/// Opens one etcd watch and waits for etcd's first answer, so that a dead or
/// leaderless member fails here (and the call moves on) rather than later in
/// the stream.
async fn open_watch(
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

#[cfg(test)]
mod tests {
    //! Against real etcd servers started by the `sandcron-tests` harness
    //! (Debian's `etcd-server`): the two conformance suites, an outage, a
    //! cluster losing its leader, and the client-side checks.

    use std::net::TcpListener;

    use futures::StreamExt;
    use jiff::{SignedDuration, Timestamp};
    use sandcron_tests::etcd::{EtcdCluster, EtcdServer};
    use sandcron_tests::wait_for;
    use tokio::time::timeout;

    use super::*;
    use crate::coord::{ClaimOutcome, ClaimRequest, Coordinator, conformance, suite};
    use crate::ids::JobName;

    const PROMPT: Duration = Duration::from_secs(10);

    fn config(endpoints: Vec<String>) -> EtcdConfig {
        EtcdConfig {
            dial_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            ..EtcdConfig::new(endpoints)
        }
    }

    async fn connect(endpoints: Vec<String>) -> Arc<EtcdStore> {
        match EtcdStore::connect(&config(endpoints)).await {
            Ok(store) => store,
            Err(error) => panic!("cannot connect to etcd: {error}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_primitive_conformance_suite_passes_against_etcd() {
        let server = EtcdServer::start();
        let store = connect(vec![server.endpoint()]).await;
        conformance::run_all(store, "/conformance/").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sandcron_suite_passes_against_etcd() {
        let server = EtcdServer::start();
        let store = connect(vec![server.endpoint()]).await;
        suite::run_all(store, "/sandcron/").await;
    }

    /// While etcd is down every call fails promptly with `Unavailable` and a
    /// watch reports the outage and ends; once etcd is back the same client
    /// works again and a watch from the last revision seen resumes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outage_is_unavailable_and_the_client_recovers_after_it() {
        let mut server = EtcdServer::start();
        let store = connect(vec![server.endpoint()]).await;
        let written = store.put("/outage/a", b"1".to_vec(), None).await.unwrap();
        let lease = store.lease_grant(Duration::from_secs(60)).await.unwrap();
        let mut watch = store.watch("/outage/", written - 1).await.unwrap();
        let batch = timeout(PROMPT, watch.next()).await.expect("the first event");
        let seen = match batch {
            Some(Ok(batch)) => batch.last().map(WatchEvent::revision).unwrap(),
            other => panic!("expected the put of /outage/a, got {other:?}"),
        };
        assert_eq!(seen, written);

        server.stop();
        match timeout(PROMPT, watch.next()).await {
            Ok(Some(Err(StoreError::Unavailable(_)))) => {}
            other => panic!("a watch must report the outage as Unavailable, got {other:?}"),
        }
        match timeout(PROMPT, watch.next()).await {
            Ok(None) => {}
            other => panic!("a watch must end after its error, got {other:?}"),
        }
        let started = Instant::now();
        let unavailable = |what: &str, result: Result<(), StoreError>| match result {
            Err(StoreError::Unavailable(_)) => {}
            other => panic!("{what} during an outage must be Unavailable, got {other:?}"),
        };
        unavailable("get", store.get("/outage/a").await.map(drop));
        unavailable("range", store.range("/outage/").await.map(drop));
        unavailable("put", store.put("/outage/b", b"x".to_vec(), None).await.map(drop));
        unavailable("delete", store.delete("/outage/a").await.map(drop));
        unavailable(
            "txn",
            store
                .txn(Txn::new().and_then([TxnOp::put("/outage/b", "x")]))
                .await
                .map(drop),
        );
        unavailable("watch", store.watch("/outage/", seen).await.map(drop));
        unavailable("lease grant", store.lease_grant(Duration::from_secs(5)).await.map(drop));
        unavailable("keep-alive", store.lease_keep_alive(lease).await);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "with nothing listening, calls must fail at once, not wait for their timeout ({:?})",
            started.elapsed()
        );

        server.start_again();
        let rewritten = wait_for("a put once etcd is back", PROMPT, || async {
            store.put("/outage/b", b"2".to_vec(), None).await.ok()
        })
        .await;
        assert_eq!(store.get("/outage/a").await.unwrap().unwrap().value, b"1");
        store.lease_keep_alive(lease).await.unwrap();
        let mut resumed = store.watch("/outage/", seen).await.unwrap();
        match timeout(PROMPT, resumed.next()).await {
            Ok(Some(Ok(batch))) => {
                assert_eq!(batch.len(), 1, "{batch:?}");
                assert_eq!((batch[0].key(), batch[0].revision()), ("/outage/b", rewritten));
            }
            other => panic!("a watch from the last revision seen must resume, got {other:?}"),
        }

        // A crash loses nothing etcd acknowledged.
        server.kill9();
        server.start_again();
        let kv = wait_for("a read after a crash", PROMPT, || async {
            store.get("/outage/b").await.ok()
        })
        .await;
        assert_eq!(
            kv.map(|kv| (kv.value, kv.mod_revision)),
            Some((b"2".to_vec(), rewritten))
        );
    }

    /// With the leader of a 3-member cluster killed, the client steers
    /// around the dead endpoint (its first) and puts, claims, keep-alives and
    /// watches succeed through the others; the member later catches up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cluster_keeps_serving_when_its_leader_dies() {
        let mut cluster = EtcdCluster::start(3);
        let leader = cluster.leader();
        let mut endpoints = cluster.endpoints();
        // The preferred endpoint is the first: make it the leader's.
        endpoints.swap(0, leader);
        let store = connect(endpoints).await;
        let coord = Coordinator::new(store.clone(), "/cluster/");
        let lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
        let job = JobName::new("survivor").unwrap();
        let tick = Timestamp::now();
        let claim = |seen_revision, tick| ClaimRequest {
            job: job.clone(),
            tick,
            seen_revision,
            run: None,
            lease,
            skipped: false,
            catchup: Vec::new(),
            plan: None,
        };
        let ClaimOutcome::Won { fence } = coord.claim(&[claim(0, tick)]).await.unwrap()[0] else {
            panic!("the first claim must win");
        };
        let before = store.put("/cluster/data/0", b"0".to_vec(), None).await.unwrap();

        cluster.kill_member(leader);
        let killed = Instant::now();
        // Writes sent while the others elect a new leader may fail, always
        // as Unavailable; one succeeds as soon as there is a leader.
        wait_for("a put after the leader died", Duration::from_secs(30), || async {
            match store.put("/cluster/data/1", b"1".to_vec(), None).await {
                Ok(revision) => Some(revision),
                Err(StoreError::Unavailable(_)) => None,
                Err(other) => panic!("a put during an election must be Unavailable, got {other:?}"),
            }
        })
        .await;
        let recovered_after = killed.elapsed();
        assert_ne!(cluster.leader(), leader, "a new leader must be elected");

        let mut watch = store.watch("/cluster/data/", before).await.unwrap();
        let mut last = 0;
        for i in 2..22 {
            last = store
                .put(&format!("/cluster/data/{i}"), i.to_string().into_bytes(), Some(lease))
                .await
                .unwrap_or_else(|error| panic!("put {i} with the leader dead: {error}"));
        }
        let mut seen_revision = fence;
        for second in 1..=10 {
            let tick = tick + SignedDuration::from_secs(second);
            match coord.claim(&[claim(seen_revision, tick)]).await.unwrap()[0] {
                ClaimOutcome::Won { fence } => seen_revision = fence,
                ClaimOutcome::Lost => panic!("claim {second} lost with nobody else claiming"),
            }
        }
        store.lease_keep_alive(lease).await.unwrap();
        let mut watched = Vec::new();
        while watched.last().map(WatchEvent::revision) != Some(last) {
            match timeout(PROMPT, watch.next()).await {
                Ok(Some(Ok(batch))) => watched.extend(batch),
                other => panic!("the watch stopped after {} events: {other:?}", watched.len()),
            }
        }
        assert_eq!(watched.len(), 21, "the put during the election and the 20 after it");

        cluster.restart_member(leader);
        let member = connect(vec![cluster.endpoint(leader)]).await;
        let kv = wait_for("the restarted member to catch up", PROMPT, || async {
            member.get("/cluster/data/21").await.ok().flatten()
        })
        .await;
        assert_eq!((kv.mod_revision, kv.lease), (last, Some(lease)));
        eprintln!("writes resumed {recovered_after:?} after the leader was killed");
    }

    /// Values over `MAX_VALUE_BYTES` are refused by the client: with etcd
    /// down, a request that reached the network would be `Unavailable`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oversized_values_are_refused_before_reaching_etcd() {
        let mut server = EtcdServer::start();
        let store = connect(vec![server.endpoint()]).await;
        server.stop();
        let huge = vec![7u8; MAX_VALUE_BYTES + 1];
        match store.put("/big", huge.clone(), None).await {
            Err(StoreError::Invalid(message)) => assert!(message.contains("/big"), "{message}"),
            other => panic!("an oversized put must be Invalid, got {other:?}"),
        }
        let txn = Txn::new()
            .and_then([TxnOp::put("/small", "v")])
            .or_else([TxnOp::put("/big", huge)]);
        match store.txn(txn).await {
            Err(StoreError::Invalid(_)) => {}
            other => panic!("a txn with an oversized value in either branch must be Invalid, got {other:?}"),
        }
        match store.put("/big", vec![7u8; MAX_VALUE_BYTES], None).await {
            Err(StoreError::Unavailable(_)) => {}
            other => panic!("a value at the limit is sent (and finds etcd down), got {other:?}"),
        }
    }

    /// With etcd's access control on, the client authenticates, is refused
    /// with wrong credentials, and re-authenticates by itself after etcd
    /// restarts (which forgets its tokens).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn credentials_authenticate_and_survive_a_restart() {
        let mut server = EtcdServer::start();
        let mut admin = Client::connect([server.endpoint()], None).await.unwrap();
        admin.user_add("root", "root-secret", None).await.unwrap();
        admin.user_grant_role("root", "root").await.unwrap();
        admin.auth_enable().await.unwrap();
        let with = |user: &str, password: &str| EtcdConfig {
            username: Some(user.to_owned()),
            password: Some(password.to_owned()),
            ..config(vec![server.endpoint()])
        };
        match EtcdStore::connect(&with("root", "wrong")).await {
            Err(StoreError::Other(message)) => assert!(message.contains("authentication failed"), "{message}"),
            other => panic!("wrong credentials must be refused, got {other:?}"),
        }
        let store = EtcdStore::connect(&with("root", "root-secret")).await.unwrap();
        let written = store.put("/auth/a", b"1".to_vec(), None).await.unwrap();

        server.stop();
        server.start_again();
        let kv = wait_for("a read with credentials after a restart", PROMPT, || async {
            store.get("/auth/a").await.ok().flatten()
        })
        .await;
        assert_eq!(kv.mod_revision, written);
        let mut watch = store.watch("/auth/", written - 1).await.unwrap();
        match timeout(PROMPT, watch.next()).await {
            Ok(Some(Ok(batch))) => assert_eq!(batch[0].revision(), written),
            other => panic!("a watch with credentials must work, got {other:?}"),
        }
    }

    /// Over TLS with a client certificate (the server requires one) every
    /// kind of call works; without the certificate the server refuses.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_with_a_client_certificate_works() {
        let server = EtcdServer::start_tls();
        let files = server.tls().unwrap();
        let read = |path: &std::path::Path| std::fs::read(path).unwrap();
        let tls = EtcdTls {
            ca_pem: read(&files.ca),
            client_cert_pem: Some(read(&files.client_cert)),
            client_key_pem: Some(read(&files.client_key)),
            server_name: None,
        };
        let secure = |tls: EtcdTls| EtcdConfig {
            tls: Some(tls),
            ..config(vec![server.endpoint()])
        };
        let store = EtcdStore::connect(&secure(tls.clone())).await.unwrap();
        let lease = store.lease_grant(Duration::from_secs(10)).await.unwrap();
        let written = store.put("/tls/a", b"1".to_vec(), Some(lease)).await.unwrap();
        store.lease_keep_alive(lease).await.unwrap();
        let mut watch = store.watch("/tls/", written - 1).await.unwrap();
        match timeout(PROMPT, watch.next()).await {
            Ok(Some(Ok(batch))) => assert_eq!(batch[0].revision(), written),
            other => panic!("a watch over TLS must work, got {other:?}"),
        }
        let anonymous = EtcdTls {
            client_cert_pem: None,
            client_key_pem: None,
            ..tls
        };
        match EtcdStore::connect(&secure(anonymous)).await {
            Err(StoreError::Unavailable(_) | StoreError::Other(_)) => {}
            other => panic!("a client without a certificate must be refused, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn connecting_with_no_member_listening_is_unavailable() {
        // A port that was free a moment ago: nothing listens on it.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let started = Instant::now();
        match EtcdStore::connect(&config(vec![format!("http://127.0.0.1:{port}")])).await {
            Err(StoreError::Unavailable(message)) => assert!(message.contains(&port.to_string()), "{message}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a refused connection fails at once"
        );
    }

    #[tokio::test]
    async fn configurations_etcd_cannot_be_reached_with_are_refused() {
        let plain = "http://127.0.0.1:2379".to_owned();
        let tls = EtcdTls {
            ca_pem: Vec::new(),
            client_cert_pem: None,
            client_key_pem: None,
            server_name: None,
        };
        let cases = [
            ("no endpoints", config(Vec::new())),
            ("no scheme", config(vec!["127.0.0.1:2379".to_owned()])),
            (
                "https without TLS settings",
                config(vec!["https://127.0.0.1:2379".to_owned()]),
            ),
            (
                "TLS settings on http",
                EtcdConfig {
                    tls: Some(tls.clone()),
                    ..config(vec![plain.clone()])
                },
            ),
            (
                "a certificate without its key",
                EtcdConfig {
                    tls: Some(EtcdTls {
                        client_cert_pem: Some(Vec::new()),
                        ..tls
                    }),
                    ..config(vec!["https://127.0.0.1:2379".to_owned()])
                },
            ),
            (
                "a user without a password",
                EtcdConfig {
                    username: Some("root".to_owned()),
                    ..config(vec![plain])
                },
            ),
        ];
        for (what, config) in cases {
            match EtcdStore::connect(&config).await {
                Err(StoreError::Other(_)) => {}
                other => panic!("{what}: expected a configuration error, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_password_stays_out_of_debug_output() {
        let config = EtcdConfig {
            username: Some("sandcron".into()),
            password: Some("hunter2".into()),
            ..EtcdConfig::new(["http://127.0.0.1:2379"])
        };
        let shown = format!("{config:?}");
        assert!(shown.contains("sandcron") && !shown.contains("hunter2"), "{shown}");
    }
}
