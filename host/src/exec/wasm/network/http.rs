//! `wasi:http/outgoing-handler` for a run: every request a component sends
//! goes through [`HttpHooks::send_request`], which checks it against the
//! job's `egress` and the run's limits, resolves and checks the address
//! itself, connects (TLS for `https`), sends the request with hyper and
//! streams the response back, writing one ledger entry per request. No
//! redirect is followed on the guest's behalf, no proxy is used, and a
//! refusal is an `ErrorCode` the guest sees, never a host failure.

use std::future::Future;
use std::sync::Arc;

use http::uri::Scheme;
use http_body_util::BodyExt;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::body::{MeteredRequest, MeteredResponse, drain};
use super::connect::{ConnectError, allowed_addresses, connect, tls};
use super::{Call, Refusal, RunNetwork, shorter};
use crate::job::EgressScheme;
use crate::run::EgressKind;

/// The future `send_request` returns, as `wasmtime-wasi-http` wants it.
type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

/// The `wasi:http` hooks of one run.
#[derive(Debug)]
pub(in crate::exec::wasm) struct HttpHooks {
    network: Arc<RunNetwork>,
}

impl HttpHooks {
    pub(in crate::exec::wasm) fn new(network: Arc<RunNetwork>) -> Self {
        Self { network }
    }
}

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_done: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> SendFuture {
        let network = Arc::clone(&self.network);
        Box::new(send(network, request, options))
    }

    /// A guest with no scheme in its request means `https`.
    fn default_scheme(&mut self) -> Option<Scheme> {
        Some(Scheme::HTTPS)
    }
}

/// `error`, for a request refused or failed before it was sent; its body
/// is drained (see `body::drain`).
fn refuse(request: http::Request<WasiBody>, error: Error) -> Error {
    drain(request.into_body());
    error
}

/// Where a request goes, as the ledger and the checks see it.
struct Destination {
    scheme: EgressScheme,
    host: String,
    port: u16,
}

impl Destination {
    fn of(uri: &http::Uri) -> Result<Self, String> {
        let scheme = match uri.scheme_str() {
            Some("https") => EgressScheme::Https,
            Some("http") => EgressScheme::Http,
            other => return Err(format!("scheme {other:?} is not http or https")),
        };
        let host = uri
            .host()
            .filter(|host| !host.is_empty())
            .ok_or("the request has no host")?;
        let port = uri.port_u16().unwrap_or(match scheme {
            EgressScheme::Https => 443,
            _ => 80,
        });
        Ok(Self {
            scheme,
            host: host.to_owned(),
            port,
        })
    }

    fn target(&self) -> String {
        format!("{}://{}:{}", self.scheme.as_str(), self.host, self.port)
    }
}

async fn send(
    network: Arc<RunNetwork>,
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
> {
    let destination = match Destination::of(request.uri()) {
        Ok(destination) => destination,
        Err(reason) => {
            let call = Call::start(&network, EgressKind::Http, request.uri().to_string());
            call.refuse(&Refusal::NotListed(reason));
            return Err(refuse(request, Error::HttpRequestUriInvalid));
        }
    };
    let mut call = Call::start(&network, EgressKind::Http, destination.target());
    call.entry().method = Some(request.method().to_string());
    call.entry().path = Some(request.uri().path().to_owned());

    let grant = network.grant();
    if !grant.lists(destination.scheme, &destination.host, destination.port) {
        let listed: Vec<String> = grant.targets.iter().map(ToString::to_string).collect();
        let refusal = Refusal::NotListed(format!(
            "{} is not in the job's egress [{}]",
            destination.target(),
            listed.join(", ")
        ));
        call.refuse(&refusal);
        return Err(refuse(request, Error::HttpRequestDenied));
    }
    match network.admit() {
        Ok(permit) => call.hold(permit),
        Err(refusal) => {
            call.refuse(&refusal);
            return Err(refuse(request, Error::ConnectionLimitReached));
        }
    }
    let addresses = match allowed_addresses(&grant.policy, &destination.host, destination.port).await {
        Ok(addresses) => addresses,
        Err(refusal) => {
            let error = match &refusal {
                Refusal::Unresolvable(_) => Error::DnsError {
                    rcode: Some("name unresolvable".to_owned()),
                    info_code: None,
                },
                _ => Error::DestinationIpProhibited,
            };
            call.refuse(&refusal);
            return Err(refuse(request, error));
        }
    };
    let limits = *network.limits();
    let connect_timeout = shorter(limits.connect_timeout_s, options.and_then(|o| o.connect_timeout));
    let (stream, address) = match connect(&addresses, connect_timeout).await {
        Ok(connected) => connected,
        Err(ConnectError::TimedOut) => {
            call.fail(format!("no connection within {} s", connect_timeout.as_secs()));
            return Err(refuse(request, Error::ConnectionTimeout));
        }
        Err(ConnectError::Refused(err)) => {
            call.fail(format!("connection failed: {err}"));
            return Err(refuse(request, Error::ConnectionRefused));
        }
    };
    call.entry().address = Some(address.to_string());

    // The request line carries only the path and query (no proxy).
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str)
        .to_owned();
    *request.uri_mut() = match http::Uri::builder().path_and_query(path).build() {
        Ok(uri) => uri,
        Err(_) => {
            call.fail("the request's path is not valid");
            return Err(refuse(request, Error::HttpRequestUriInvalid));
        }
    };
    let request = request.map(|body| MeteredRequest::new(body, call.send_meter()));

    let handshake = async {
        match destination.scheme {
            EgressScheme::Https => {
                let stream = tls(stream, &destination.host)
                    .await
                    .map_err(|err| (err, Error::TlsProtocolError))?;
                http1::handshake(TokioIo::new(stream))
                    .await
                    .map(|(sender, conn)| (sender, Box::pin(conn) as ConnFuture))
                    .map_err(|err| (format!("HTTP handshake failed: {err}"), Error::HttpProtocolError))
            }
            _ => http1::handshake(TokioIo::new(stream))
                .await
                .map(|(sender, conn)| (sender, Box::pin(conn) as ConnFuture))
                .map_err(|err| (format!("HTTP handshake failed: {err}"), Error::HttpProtocolError)),
        }
    };
    let (mut sender, connection) = match tokio::time::timeout(connect_timeout, handshake).await {
        Ok(Ok(handshake)) => handshake,
        Ok(Err((reason, error))) => {
            call.fail(reason);
            return Err(error);
        }
        Err(_) => {
            call.fail(format!(
                "no TLS or HTTP handshake within {} s",
                connect_timeout.as_secs()
            ));
            return Err(Error::ConnectionTimeout);
        }
    };
    // The connection is driven beside the request (hyper needs both); the
    // call, which holds the run's slot, lives in the response body.
    let io = wasmtime_wasi::runtime::spawn(async move { connection.await.map_err(Error::from) });

    let first_byte = shorter(limits.first_byte_timeout_s, options.and_then(|o| o.first_byte_timeout));
    let response = match tokio::time::timeout(first_byte, sender.send_request(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(err)) => {
            let body_too_large = std::error::Error::source(&err)
                .and_then(|source| source.downcast_ref::<Error>())
                .is_some_and(|source| matches!(source, Error::HttpRequestBodySize(_)));
            if body_too_large {
                call.fail(format!(
                    "the request body passed the run's limit of {} bytes sent",
                    limits.bytes_out
                ));
                return Err(Error::HttpRequestBodySize(Some(limits.bytes_out)));
            }
            call.fail(format!("the request failed: {err}"));
            return Err(Error::from(err));
        }
        Err(_) => {
            call.fail(format!("no response within {} s", first_byte.as_secs()));
            return Err(Error::ConnectionReadTimeout);
        }
    };
    call.entry().status = Some(response.status().as_u16());
    let between_bytes = shorter(
        limits.first_byte_timeout_s,
        options.and_then(|o| o.between_bytes_timeout),
    );
    let response = response.map(|body| MeteredResponse::new(body, call, between_bytes).boxed_unsync());
    let io = Box::new(io) as Box<dyn Future<Output = Result<(), Error>> + Send>;
    Ok((response, io))
}

/// A hyper connection driver, plain or over TLS.
type ConnFuture = std::pin::Pin<Box<dyn Future<Output = Result<(), hyper::Error>> + Send>>;
