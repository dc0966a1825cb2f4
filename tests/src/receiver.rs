//! An HTTP server for the tests of HTTP jobs and webhooks: records every
//! request it gets and answers by path, on a free loopback port.
//!
//! - `/status/{code}` answers `code`;
//! - `/flaky/{n}` answers 503 to its first `n` requests, then 200;
//! - `/slow/{ms}` answers 200 after `ms` milliseconds (a slow service);
//! - `/big/{bytes}` answers 200 with a body of `bytes` bytes;
//! - `/stream/{bytes}` answers 200 and streams `bytes` bytes in 64 KiB
//!   chunks, never holding more than one (for bodies of gigabytes);
//! - `/hang` never answers;
//! - `/redirect/{host:port}` answers 302 to `http://{host:port}/`;
//! - `/items?after=ID&limit=N` answers a JSON list of the items whose id
//!   is above `ID` (default 0), at most `N` (default all), for the example
//!   guests: five in all, the first three worth 42 together, the last two 19;
//! - `/echo` answers the request line, headers and body it got, as text;
//! - anything else answers 200 `ok`.
//!
//! Started with [`Receiver::start_with_bearer`], it answers 401 to a request
//! to `/items` or `/report` without `Authorization: Bearer <token>`, as a
//! service does when a job's secret is wrong.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query, as sent.
    pub uri: String,
    /// Header names in lower case; repeated headers joined with ", ".
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "request body is not JSON ({err}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    per_path: Mutex<HashMap<String, u32>>,
    /// The bearer token `/items` and `/report` require, if any.
    bearer: Option<String>,
}

/// The items `/items` pages through: (id, name, price, quantity).
const ITEMS: [(u64, &str, u64, u64); 5] = [
    (1, "apples", 3, 4),
    (2, "pears", 5, 2),
    (3, "plums", 2, 10),
    (4, "figs", 4, 3),
    (5, "quinces", 7, 1),
];

/// The running receiver; stops when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts on 127.0.0.1 and a free port.
    pub async fn start() -> Receiver {
        Receiver::serve(Shared::default()).await
    }

    /// Starts like [`Receiver::start`], but answers 401 to a request to
    /// `/items` or `/report` that does not carry `Authorization: Bearer
    /// <token>`.
    pub async fn start_with_bearer(token: &str) -> Receiver {
        Receiver::serve(Shared {
            bearer: Some(token.to_owned()),
            ..Shared::default()
        })
        .await
    }

    async fn serve(shared: Shared) -> Receiver {
        let shared = Arc::new(shared);
        let app = Router::new().fallback(answer).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, shared, task }
    }

    /// `http://127.0.0.1:<port><path>`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything received so far, oldest first.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.received.lock().expect("lock").clone()
    }

    /// Requests whose path (without the query) is `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| r.uri.split('?').next() == Some(path))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 64 * 1024 * 1024).await.unwrap_or_default();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let uri = parts.uri.to_string();
    let path = parts.uri.path().to_owned();
    shared.received.lock().expect("lock").push(Received {
        method: parts.method.to_string(),
        uri,
        headers,
        body: body.to_vec(),
    });
    let count = {
        let mut counts = shared.per_path.lock().expect("lock");
        let count = counts.entry(path.clone()).or_default();
        *count += 1;
        *count
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let (Some(token), ["items" | "report"]) = (&shared.bearer, segments.as_slice()) {
        let expected = format!("Bearer {token}");
        if parts.headers.get("authorization").map(|v| v.as_bytes()) != Some(expected.as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", "Bearer")],
                "a valid bearer token is required\n",
            )
                .into_response();
        }
    }
    match segments.as_slice() {
        ["status", code] => {
            let code = code.parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok());
            let code = code.unwrap_or(StatusCode::BAD_REQUEST);
            (code, format!("status {}\n", code.as_u16())).into_response()
        }
        ["flaky", n] => {
            let failures: u32 = n.parse().unwrap_or(0);
            if count <= failures {
                (StatusCode::SERVICE_UNAVAILABLE, "not yet\n").into_response()
            } else {
                (StatusCode::OK, "ok\n").into_response()
            }
        }
        ["slow", ms] => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
            (StatusCode::OK, "slow ok\n").into_response()
        }
        ["big", bytes] => {
            let size: usize = bytes.parse().unwrap_or(0);
            Response::new(Body::from(vec![b'x'; size]))
        }
        ["stream", bytes] => {
            const CHUNK: usize = 64 * 1024;
            let size: usize = bytes.parse().unwrap_or(0);
            let chunks = futures::stream::iter((0..size.div_ceil(CHUNK)).map(move |index| {
                let len = CHUNK.min(size - index * CHUNK);
                Ok::<_, std::convert::Infallible>(Bytes::from(vec![b'x'; len]))
            }));
            Response::new(Body::from_stream(chunks))
        }
        ["hang"] => {
            std::future::pending::<()>().await;
            StatusCode::OK.into_response()
        }
        ["redirect", target] => (
            StatusCode::FOUND,
            [("location", format!("http://{target}/"))],
            "moved\n",
        )
            .into_response(),
        // What a careless service does: repeats the request, credentials and all.
        ["echo"] => {
            let mut text = format!("{} {}\n", parts.method, parts.uri);
            for (name, value) in &parts.headers {
                text.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())));
            }
            text.push('\n');
            text.push_str(&String::from_utf8_lossy(&body));
            (StatusCode::OK, [("content-type", "text/plain")], text).into_response()
        }
        ["items"] => items_after(parts.uri.query().unwrap_or_default()),
        _ => (
            StatusCode::OK,
            [("content-type", "text/plain"), ("x-receiver", "sandcron-tests")],
            "ok\n",
        )
            .into_response(),
    }
}

/// `/items`: the items after the query's `after`, at most `limit` of them.
fn items_after(query: &str) -> Response {
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.parse::<u64>())
    };
    let (after, limit) = match (param("after").unwrap_or(Ok(0)), param("limit").unwrap_or(Ok(u64::MAX))) {
        (Ok(after), Ok(limit)) => (after, limit),
        _ => return (StatusCode::BAD_REQUEST, "after and limit are whole numbers\n").into_response(),
    };
    let items: Vec<serde_json::Value> = ITEMS
        .iter()
        .filter(|(id, ..)| *id > after)
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(|(id, name, price, quantity)| {
            serde_json::json!({"id": id, "name": name, "price": price, "quantity": quantity})
        })
        .collect();
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        serde_json::json!({ "items": items }).to_string(),
    )
        .into_response()
}
