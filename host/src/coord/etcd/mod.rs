//! The etcd v3 backend of the coordination store: [`EtcdStore`] adapts the
//! `etcd-client` crate to [`KvStore`], so a cluster of sandcron workers and
//! masters coordinates through a real etcd (3.4 or later).
//!
//! What it must not do: let an etcd or tonic type cross its API; block a
//! caller longer than the request timeout; retry a write that etcd may
//! already have applied; send a value over
//! [`MAX_VALUE_BYTES`](crate::coord::MAX_VALUE_BYTES) to etcd
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
//!
//! The configuration, the connection and the [`KvStore`] implementation
//! live here; `failover` runs each call against the endpoints in turn,
//! `errors` decides what an etcd or transport failure means (retry
//! elsewhere, or which [`StoreError`]), `convert` maps the contract's types
//! to etcd-client's and back, and `watch` turns an etcd watch into the
//! contract's per-revision batches.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Certificate, ConnectOptions, GetOptions, Identity, PutOptions, TlsOptions};
use tokio::sync::OnceCell;

use self::convert::{check_value, check_values, etcd_txn, header_revision, key_value};
use self::errors::{Failure, is_lease_not_found, lease_failure, server_message};
use self::failover::{Member, Retry};
use self::watch::{open_watch, watch_stream};
use crate::coord::{
    KeyValue, KvStore, LeaseId, RangeResult, Revision, StoreError, Txn, TxnOp, TxnResponse, WatchStream,
};

mod convert;
mod errors;
mod failover;
#[cfg(test)]
mod tests;
mod watch;

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

/// HTTP/2 keep-alive pings detect a member that vanished without closing
/// the connection. etcd closes connections that ping more often than its
/// `--grpc-keepalive-min-time` (5 s by default).
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);

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
        let opened = self
            .call("watch", Retry::Always, |clients| {
                let watch = clients.watch.clone();
                open_watch(watch, prefix, start)
            })
            .await?;
        Ok(watch_stream(prefix, start, opened))
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
