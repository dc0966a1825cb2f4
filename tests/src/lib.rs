//! Black-box test harness: starts the real `sandcron` binary (and the real
//! servers it talks to, each a [`process::ChildProcess`]) on free loopback
//! ports with temporary data directories, talks to it over HTTP, and waits
//! on conditions with deadlines instead of sleeping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod cluster;
pub mod etcd;
pub mod mongo;
pub mod process;
pub mod receiver;
pub mod smtp;
pub mod soak;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::process::ChildProcess;

/// How long a `sandcron dev` may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a `sandcron dev` may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace root (this package is `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// A WASM job body; `limits` as the API takes them (`None`: the defaults).
pub fn wasm_job(schedule: &str, digest: &str, limits: Option<Value>) -> Value {
    let mut wasm = json!({"module": digest});
    if let Some(limits) = limits {
        wasm["limits"] = limits;
    }
    json!({"schedule": schedule, "kind": {"wasm": wasm}})
}

/// A running `sandcron dev` process with its own data directory.
pub struct Dev {
    /// Declared before `data`, so that it is dropped first: on a panic it
    /// prints its log tail from the data directory.
    process: ChildProcess,
    data: tempfile::TempDir,
    /// `http://127.0.0.1:<port>`
    pub base: String,
}

impl Dev {
    /// Starts `bin dev --listen 127.0.0.1:0 --data <temp> --no-demo <extra>`.
    pub fn start(bin: &str, extra: &[&str]) -> Dev {
        let mut args = vec!["--no-demo"];
        args.extend_from_slice(extra);
        Self::start_exactly(bin, &args)
    }

    /// Starts `bin dev --listen 127.0.0.1:0 --data <temp> <extra>` (with the
    /// demo job unless `extra` says `--no-demo`).
    pub fn start_exactly(bin: &str, extra: &[&str]) -> Dev {
        let data = tempfile::Builder::new()
            .prefix("sandcron-e2e-")
            .tempdir()
            .expect("temp dir");
        let mut command = Command::new(bin);
        command
            .arg("dev")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data")
            .arg(data.path().join("data"))
            .args(extra)
            .env("SANDCRON_LOG", "info,sandcron=debug");
        let process = ChildProcess::new("sandcron dev", command, &data.path().join("sandcron.log")).expect("log file");
        let mut dev = Dev {
            process,
            data,
            base: String::new(),
        };
        dev.spawn();
        dev
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid().expect("running")
    }

    fn spawn(&mut self) {
        let ready = self
            .process
            .start_until_ready("sandcron dev listening on ", START_TIMEOUT)
            .unwrap_or_else(|err| panic!("{err}"));
        self.base = ready.split_whitespace().next().unwrap_or_default().to_owned();
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        self.process.log_text()
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let status = self.process.stop(STOP_TIMEOUT).unwrap_or_else(|err| panic!("{err}"));
        status.and_then(|status| status.code())
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// Starts the process again on the same data directory (a new port).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts it again after `stop` or `kill9`.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    pub fn api(&self) -> Api {
        Api::new(&self.base, None)
    }

    pub fn api_with_token(&self, token: &str) -> Api {
        Api::new(&self.base, Some(token))
    }
}

/// A response: status code and JSON body (`Value::Null` when empty, a string
/// when not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    /// Asserts the status and returns the body.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.body);
        self.body
    }

    /// Asserts that the status is one of `statuses` and returns the body.
    #[track_caller]
    pub fn expect_one_of(self, statuses: &[u16]) -> Value {
        assert!(
            statuses.contains(&self.status),
            "status {} is not one of {statuses:?}; body: {}",
            self.status,
            self.body
        );
        self.body
    }

    /// Asserts an error reply: its status, code, and a fragment of its message.
    #[track_caller]
    pub fn expect_error(self, status: u16, code: &str, message_part: &str) -> Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.body);
        let error = &self.body["error"];
        assert_eq!(error["code"], code, "unexpected code; body: {}", self.body);
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(message_part),
            "message {message:?} lacks {message_part:?}"
        );
        self.body
    }
}

/// A JSON client for one server.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// An HTTP client builder for tests: installs the TLS provider reqwest
/// needs first (rustls with ring, as the binary does).
pub fn http_client() -> reqwest::ClientBuilder {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let _other_provider = rustls::crypto::ring::default_provider().install_default();
    });
    // Masters close keep-alive connections idle for 10 s
    // (`api::HEADER_READ_TIMEOUT`); reusing one just then fails the request.
    reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(5))
}

impl Api {
    pub fn new(base: &str, token: Option<&str>) -> Self {
        Self {
            http: http_client().timeout(Duration::from_secs(90)).build().expect("client"),
            base: base.to_owned(),
            token: token.map(str::to_owned),
        }
    }

    pub async fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        Self::reply(request).await
    }

    /// Sends raw bytes with a content type (for malformed-body tests).
    pub async fn raw(&self, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        Self::reply(request).await
    }

    async fn reply(request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Reply { status, body }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.request("PUT", path, Some(body)).await
    }

    pub async fn post(&self, path: &str) -> Reply {
        self.request("POST", path, None).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.request("DELETE", path, None).await
    }

    /// Uploads a module or component as `application/wasm`; returns its
    /// digest, whether the upload stored it or it was stored already.
    pub async fn upload_module(&self, bytes: Vec<u8>) -> String {
        let body = self
            .raw("POST", "/api/v1/modules", "application/wasm", bytes)
            .await
            .expect_one_of(&[201, 200]);
        body["digest"].as_str().expect("digest").to_owned()
    }

    /// Creates or replaces the secret `name` (`PUT /api/v1/secrets/{name}`,
    /// the value as a text body; needs the admin role).
    pub async fn put_secret(&self, name: &str, value: &str) {
        self.raw(
            "PUT",
            &format!("/api/v1/secrets/{name}"),
            "text/plain",
            value.as_bytes().to_vec(),
        )
        .await
        .expect_one_of(&[200, 201]);
    }

    /// Every job, as `GET /api/v1/jobs` lists them.
    pub async fn jobs(&self) -> Vec<Value> {
        let jobs = self.get("/api/v1/jobs").await.expect(200);
        jobs.as_array().cloned().expect("a list of jobs")
    }

    /// Every run of `job` (all pages), newest tick first.
    pub async fn runs(&self, job: &str) -> Vec<Value> {
        let mut runs = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/runs?job={job}&limit=1000");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let page = self.get(&path).await.expect(200);
            runs.extend(page["runs"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return runs,
            }
        }
    }

    /// The whole output of a run as (stream, text) pairs in order.
    pub async fn output(&self, run_id: &str) -> Vec<(String, String)> {
        let page = self
            .get(&format!("/api/v1/runs/{run_id}/output?limit=5000"))
            .await
            .expect(200);
        page["chunks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["stream"].as_str().unwrap_or_default().to_owned(),
                    c["data"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or panics naming `what`
/// after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Processes (by pid) whose process group is `pgid`, from /proc.
pub fn processes_in_group(pgid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command: state ppid pgrp ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid) && fields.first() != Some(&"Z") {
            found.push(pid);
        }
    }
    found
}

/// Sends only the head of a request that declares a `length`-byte body and
/// returns the first bytes of the answer: a server that refuses oversized
/// bodies answers from the headers alone. (Sent through an HTTP client, the
/// body races the early answer and the client may see a broken pipe.)
pub fn answer_to_declared_length(base: &str, method: &str, path: &str, content_type: &str, length: u64) -> String {
    use std::io::{Read as _, Write as _};
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    )
    .expect("write the request head");
    let mut head = [0u8; 1024];
    let read = stream.read(&mut head).expect("an answer before the body");
    String::from_utf8_lossy(&head[..read]).into_owned()
}
