//! In-process tests of the HTTP API: the real router (`api::router`) over
//! the embedded coordination store, an in-memory SQLite log store and the
//! WASM engine's upload inspection, driven with `tower::ServiceExt::oneshot`
//! — no binary, no socket, so the inner loop of a handler change is a unit
//! test. The end-to-end suites (`tests/e2e`) cover the same routes over
//! HTTP against the real process.

mod audit;
mod guard;
mod jobs;
mod modules;
mod quotas;
mod rerun;
mod runs;
mod secrets;
mod workers;

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::audit::AuditLog;
use super::{AppState, HttpConfig, router};
use crate::auth::{Role, Token};
use crate::coord::Coordinator;
use crate::coord::embedded::EmbeddedStore;
use crate::exec::wasm::{WasmConfig, WasmEngine};
use crate::logstore::LogStore;
use crate::logstore::sqlite::SqliteLogStore;
use crate::metrics::Metrics;

/// How long test servers keep audit entries.
const AUDIT_RETENTION: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// The tokens every test server knows, one per role.
const ADMIN: &str = "admin-token-0000000001";
const OPERATOR: &str = "operator-token-000001";
const VIEWER: &str = "viewer-token-00000001";

/// One engine for every test: building one reserves its instance pool.
fn engine() -> Arc<WasmEngine> {
    static ENGINE: OnceLock<Arc<WasmEngine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            WasmEngine::new(WasmConfig {
                capacity: 1,
                max_module_bytes: 1 << 20,
                ..WasmConfig::default()
            })
            .expect("engine")
        })
        .clone()
}

fn token(name: &str, secret: &str, role: Role) -> Token {
    Token {
        name: name.to_owned(),
        role,
        sha256: Sha256::digest(secret.as_bytes()).into(),
    }
}

/// A server over fresh in-memory stores.
struct TestApi {
    app: Router,
    state: AppState,
}

/// A reply: status and body (JSON, or `Value::Null` when empty).
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Reply {
    /// Asserts the status and returns the body.
    #[track_caller]
    fn expect(self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "body: {}", self.body);
        self.body
    }

    /// Asserts an error reply: status, stable code, and a fragment of the
    /// message; returns the error object.
    #[track_caller]
    fn expect_error(self, status: StatusCode, code: &str, message_part: &str) -> Value {
        let body = self.expect(status);
        let error = body["error"].clone();
        assert_eq!(error["code"], code, "{body}");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains(message_part), "{message:?} lacks {message_part:?}");
        error
    }
}

impl TestApi {
    fn new() -> Self {
        Self::with(|_| {})
    }

    fn with(adjust: impl FnOnce(&mut AppState)) -> Self {
        let coord = Coordinator::new(EmbeddedStore::in_memory(), "/api-test/");
        let logs: Arc<dyn LogStore> = SqliteLogStore::in_memory().expect("log store");
        let metrics = Metrics::new();
        let audit = AuditLog::new(coord.clone(), logs.clone(), AUDIT_RETENTION, &metrics);
        let mut state = AppState {
            coord,
            logs,
            tokens: vec![
                token("admin", ADMIN, Role::Admin),
                token("operator", OPERATOR, Role::Operator),
                token("viewer", VIEWER, Role::Viewer),
            ]
            .into(),
            metrics,
            audit,
            shell_jobs: true,
            shutdown: CancellationToken::new(),
            modules: engine(),
            alert_channels: Vec::new().into(),
            secrets: Some(Arc::new(
                crate::secret::Keyring::parse(&crate::secret::Keyring::new_key_line().expect("random"), "test.key")
                    .expect("key"),
            )),
            quotas: crate::config::Quotas::default(),
        };
        adjust(&mut state);
        let app = router(
            state.clone(),
            &HttpConfig {
                max_body_bytes: 1 << 20,
                allowed_hosts: Vec::new(),
            },
        );
        TestApi { app, state }
    }

    /// Sends one request; `body` is sent as JSON when it is not null.
    async fn call(&self, method: Method, uri: &str, token: Option<&str>, body: Value) -> Reply {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = if body.is_null() {
            Body::empty()
        } else {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(body.to_string())
        };
        self.send(request.body(body).expect("request")).await
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Reply { status, headers, body }
    }

    async fn get(&self, uri: &str) -> Reply {
        self.call(Method::GET, uri, Some(VIEWER), Value::Null).await
    }

    /// A lease of its own, as a worker holds one.
    async fn lease(&self) -> crate::coord::LeaseId {
        self.state
            .coord
            .store()
            .lease_grant(std::time::Duration::from_secs(60))
            .await
            .expect("lease")
    }

    /// Publishes run `run_id` of `job` in progress on `worker`, as the
    /// worker that runs it does.
    async fn publish_running(&self, job: &str, run_id: crate::ids::RunId, worker: &str, trigger: crate::run::Trigger) {
        let entry = crate::coord::RunningEntry {
            run_id,
            ..crate::testkit::sample_entry(worker, trigger)
        };
        let lease = self.lease().await;
        self.state
            .coord
            .start_run(&crate::ids::JobName::new(job).expect("name"), &entry, lease)
            .await
            .expect("published");
    }

    /// Publishes a live worker (on a lease of its own) that runs every kind.
    async fn register_worker(&self, id: &str) {
        let lease = self.lease().await;
        let info = crate::placement::WorkerInfo {
            id: id.to_owned(),
            hostname: "test".to_owned(),
            version: "0".to_owned(),
            labels: Default::default(),
            allow_native: true,
            capacity: 1,
            started_at: jiff::Timestamp::now(),
            http: true,
        };
        self.state
            .coord
            .register_worker(&info, lease)
            .await
            .expect("registered");
    }

    /// Uploads the demo module as an operator; returns its digest.
    async fn upload_demo(&self) -> String {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/api/v1/modules")
            .header(header::AUTHORIZATION, format!("Bearer {OPERATOR}"))
            .header(header::CONTENT_TYPE, "application/wasm")
            .body(Body::from(crate::launch::DEMO_MODULE))
            .expect("request");
        let body = self.send(request).await;
        assert!(matches!(body.status, StatusCode::CREATED | StatusCode::OK), "{body:?}");
        body.body["digest"].as_str().expect("digest").to_owned()
    }
}

/// A wasm job body running `digest` every minute.
fn wasm_job(digest: &str) -> Value {
    serde_json::json!({
        "schedule": "0 * * * *",
        "kind": {"wasm": {"module": digest}},
    })
}

/// A shell job body.
fn shell_job(command: &str) -> Value {
    serde_json::json!({
        "schedule": "0 * * * *",
        "kind": {"shell": {"command": command}},
    })
}
