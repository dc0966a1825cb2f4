//! The HTTP API (axum): routes, state, auth, errors, OpenAPI, and serving
//! with graceful shutdown.
//!
//! The API reads and writes only through `coord::Coordinator` and the
//! `LogStore` trait; it never touches wasmtime or a store driver.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, OriginalUri, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::Token;
use crate::coord::Coordinator;
use crate::logstore::LogStore;
use crate::metrics::Metrics;
use crate::module::ModuleInspector;

pub mod audit;
pub mod auth;
mod body;
pub use body::BODY_IDLE_TIMEOUT;
mod console;
mod error;
mod guard;
pub mod jobs;
pub mod modules;
pub mod openapi;
mod query;
pub mod runs;
pub mod secrets;
pub mod state;
pub mod system;
#[cfg(test)]
mod tests;

pub use auth::Caller;
pub use error::{ApiError, ApiJson, ApiQuery, ErrorBody};
pub use jobs::{JobStatus, JobView};

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub coord: Coordinator,
    pub logs: Arc<dyn LogStore>,
    pub tokens: Arc<[Token]>,
    pub metrics: Arc<Metrics>,
    /// Whether this server accepts shell jobs at all (its workers may run native processes).
    pub shell_jobs: bool,
    /// Cancelled at shutdown, so long-polls answer at once instead of holding it up.
    pub shutdown: CancellationToken,
    /// Validates uploaded modules (implemented by the WASM engine).
    pub modules: Arc<dyn ModuleInspector>,
    /// The alert channels configured for this installation, by name (what
    /// jobs' `alerts.channels` may name); empty: not known here, any name
    /// is accepted.
    pub alert_channels: Arc<[String]>,
    /// Seals the secrets admins write; `None`: no key file, no secrets.
    pub secrets: Option<Arc<crate::secret::Keyring>>,
    /// Where every write through the API is recorded.
    pub audit: audit::AuditLog,
    /// What callers may store.
    pub quotas: crate::config::Quotas,
}

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub max_body_bytes: usize,
    /// Host names a server without tokens answers besides `localhost` and
    /// address literals (`server.allowed_hosts`).
    pub allowed_hosts: Vec<String>,
}

/// The whole application: API, probes, metrics, OpenAPI and the console.
pub fn router(state: AppState, http: &HttpConfig) -> Router {
    let api = Router::new()
        .route("/jobs", get(jobs::list))
        .route("/jobs/{name}", put(jobs::put).get(jobs::get).delete(jobs::delete))
        .route("/jobs/{name}/pause", post(jobs::pause))
        .route("/jobs/{name}/resume", post(jobs::resume))
        .route("/jobs/{name}/run", post(jobs::run_now))
        .route("/jobs/{name}/kill", post(jobs::kill))
        .route("/jobs/{name}/state", get(state::list).delete(state::clear))
        .route("/jobs/{name}/state/{key}", get(state::get).delete(state::delete_key))
        .route(
            "/modules",
            post(modules::upload)
                .get(modules::list)
                // Room for the multipart framing around the largest module.
                .layer(DefaultBodyLimit::max(module_body_limit(
                    state.modules.max_module_bytes(),
                ))),
        )
        .route("/modules/{digest}", get(modules::get).delete(modules::delete))
        .route("/runs", get(runs::list))
        .route("/runs/{run_id}", get(runs::get))
        .route("/runs/{run_id}/output", get(runs::output))
        .route("/runs/{run_id}/result", post(runs::report))
        .route("/runs/{run_id}/rerun", post(runs::rerun))
        .route("/secrets", get(secrets::list))
        .route("/secrets/rekey", post(secrets::rekey))
        .route("/secrets/{name}", put(secrets::put).delete(secrets::delete))
        .route("/audit", get(audit::list))
        .route("/workers", get(system::workers))
        .route("/alerts/channels", get(system::alert_channels))
        .route("/cron/next", get(system::cron_next))
        .route("/whoami", get(auth::whoami))
        .route("/openapi.json", get(openapi::serve))
        .fallback(api_not_found)
        .method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .fallback(console::fallback)
        .layer(DefaultBodyLimit::max(http.max_body_bytes))
        .layer(middleware::from_fn(body::idle_deadline))
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .layer(middleware::from_fn_with_state(
            Arc::new(guard::LocalGuard {
                allowed_hosts: http.allowed_hosts.clone(),
                tokens: !state.tokens.is_empty(),
            }),
            guard::guard,
        ))
        .with_state(state)
}

fn module_body_limit(max_module_bytes: u64) -> usize {
    usize::try_from(max_module_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(64 * 1024)
}

async fn api_not_found(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    state.metrics.http_requests.fetch_add(1, Ordering::Relaxed);
    let response = next.run(request).await;
    if response.status().is_server_error() {
        state.metrics.http_errors.fetch_add(1, Ordering::Relaxed);
    }
    response
}

/// How long a client may take to send a request's headers. A slow or
/// stalled client (slowloris) is disconnected after this; it never holds a
/// connection slot for long.
///
/// hyper runs this timer while a keep-alive connection waits for its next
/// request too, so it is also the idle timeout of keep-alive connections:
/// clients and proxies that pool connections must drop idle ones sooner, or
/// a request sent just as the master closes the connection fails.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The most connections a server holds open at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// Serves `app` on `listener` until `shutdown` is cancelled, then finishes
/// in-flight requests.
///
/// HTTP/1.1 through hyper directly rather than `axum::serve`, because that
/// has no header-read timeout.
pub async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let mut connections = tokio::task::JoinSet::new();
    let closing = CancellationToken::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        // At most MAX_CONNECTIONS at once: the next waits in the kernel's
        // accept queue until one closes.
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_closed) => break,
            },
        };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
            // Reap finished connections as we go.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors, say: back off rather than spin.
                tracing::warn!(%err, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // Handlers see the peer's address as `ConnectInfo` (the audit log
        // records it).
        let tower = TowerToHyperService::new(app.clone());
        let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            hyper::service::Service::call(&tower, request)
        });
        let closing = closing.clone();
        connections.spawn(async move {
            let _slot = slot;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(%err, "connection ended with an error");
                    }
                    return;
                }
                () = closing.cancelled() => connection.as_mut().graceful_shutdown(),
            }
            if let Err(err) = connection.await {
                tracing::debug!(%err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    closing.cancel();
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// A plain-text success body, for probes.
pub(crate) fn text(status: StatusCode, body: &'static str) -> Response {
    (status, body).into_response()
}
