//! Reaching a destination the run is allowed to reach: the name resolved by
//! the host, every address checked against the worker's policy, a TCP
//! connection to an address that passed (with the run's connect timeout),
//! and TLS on top for `https` with the system's roots.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::Refusal;
use crate::exec::egress::EgressPolicy;

/// The addresses `host` resolves to (or the literal itself) that `policy`
/// allows, with `port`. The names are resolved here, by the host, and the
/// connection must go to one of these addresses.
pub(super) async fn allowed_addresses(
    policy: &EgressPolicy,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, Refusal> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let resolved: Vec<SocketAddr> = match literal.parse::<IpAddr>() {
        Ok(address) => vec![SocketAddr::new(address, port)],
        Err(_) => match tokio::net::lookup_host((host, port)).await {
            Ok(addresses) => addresses.collect(),
            Err(err) => return Err(Refusal::Unresolvable(format!("{host} does not resolve: {err}"))),
        },
    };
    let mut denied = None;
    let allowed: Vec<SocketAddr> = resolved
        .iter()
        .filter(|address| match policy.check(host, address.ip()) {
            Ok(()) => true,
            Err(reason) => {
                denied.get_or_insert(reason);
                false
            }
        })
        .copied()
        .collect();
    match (allowed.is_empty(), denied) {
        (false, _) => Ok(allowed),
        (true, Some(reason)) => Err(Refusal::Address(reason.to_string())),
        (true, None) => Err(Refusal::Unresolvable(format!("{host} did not resolve to any address"))),
    }
}

/// Why a connection was not made.
#[derive(Debug)]
pub(super) enum ConnectError {
    TimedOut,
    Refused(std::io::Error),
}

/// Connects to the first of `addresses` that answers within `timeout` in all.
pub(super) async fn connect(
    addresses: &[SocketAddr],
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), ConnectError> {
    let attempt = async {
        let mut last = None;
        for address in addresses {
            match TcpStream::connect(address).await {
                Ok(stream) => {
                    // Small requests and responses: no Nagle delay.
                    let _best_effort = stream.set_nodelay(true);
                    return Ok((stream, *address));
                }
                Err(err) => last = Some(err),
            }
        }
        Err(ConnectError::Refused(
            last.unwrap_or_else(|| std::io::Error::other("no address to connect to")),
        ))
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(Err(ConnectError::TimedOut))
}

/// TLS over `stream` for `host`, verified against the system's roots.
pub(super) async fn tls(stream: TcpStream, host: &str) -> Result<TlsStream<TcpStream>, String> {
    let connector = tls_connector()?;
    let name = rustls::pki_types::ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_owned())
        .map_err(|err| format!("{host} is not a name TLS can verify: {err}"))?;
    connector
        .connect(name, stream)
        .await
        .map_err(|err| format!("TLS with {host} failed: {err}"))
}

/// One TLS client configuration for every run: the system's roots (through
/// the platform verifier, which on Linux also honours `SSL_CERT_FILE`),
/// HTTP/1.1 only.
fn tls_connector() -> Result<TlsConnector, String> {
    static CONNECTOR: OnceLock<Result<TlsConnector, String>> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            crate::tls::install_crypto_provider();
            use rustls_platform_verifier::ConfigVerifierExt as _;
            let mut config = rustls::ClientConfig::with_platform_verifier()
                .map_err(|err| format!("cannot load the system's TLS roots: {err}"))?;
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(TlsConnector::from(Arc::new(config)))
        })
        .clone()
}
