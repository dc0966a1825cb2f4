//! Real MongoDB-wire servers for tests: [`MongoServer`] runs nx-27017 (PyPI,
//! pinned to [`NX27017_VERSION`]), a MongoDB wire-protocol server on SQLite,
//! on a free loopback port with its own data directory, waits until it
//! answers a ping over the wire, stops, kills and restarts it on demand for
//! outage tests, and kills it on drop.
//!
//! nx-27017 is installed by `scripts/install-mongo-test-server.sh` into
//! `target/test-tools/pip/nx-27017-<version>/` (a `pip install --target`
//! folder, put on `PYTHONPATH`); `SANDCRON_NX27017` points elsewhere. It is
//! always started with `--data-dir` (one SQLite file per database) or
//! `--data-dir memory`, never on a single file, which would not keep
//! databases apart.
//!
//! What it must not do: touch a system MongoDB on 27017, or leave a process
//! behind. A test whose server misbehaves prints the server's log tail.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::ChildProcess;
use crate::workspace_root;

/// The nx-27017 release the tests are written against.
pub const NX27017_VERSION: &str = "0.8.1";

/// How long a server may take to answer its first ping (Python imports
/// included; a loaded machine running other builds is slow).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Attempts at starting with a freshly picked port: a port found free can be
/// taken by another test process before the server binds it.
const START_ATTEMPTS: usize = 4;

/// Starts nx-27017's command-line entry point. (The package has no
/// `__main__`, and `python3 -m nx_27017.nx_27017` warns about a module
/// imported twice.)
const LAUNCHER: &str = "import sys; from nx_27017.nx_27017 import main; sys.argv[0] = 'nx-27017'; sys.exit(main())";

/// The folder nx-27017 is installed in: `$SANDCRON_NX27017`, or where the
/// install script puts it, `<workspace>/target/test-tools/pip/nx-27017-<version>`.
pub fn nx27017_dir() -> PathBuf {
    match std::env::var_os("SANDCRON_NX27017") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root()
            .join("target/test-tools/pip")
            .join(format!("nx-27017-{NX27017_VERSION}")),
    }
}

/// One running nx-27017 process with its own port and data directory.
pub struct MongoServer {
    port: u16,
    in_memory: bool,
    pid_file: PathBuf,
    /// nx-27017, its stdout and stderr going to `nx.stderr`. Declared before
    /// `_dir`, so that it is dropped first: on a panic it prints its log
    /// tail from there.
    process: ChildProcess,
    _dir: tempfile::TempDir,
}

impl MongoServer {
    /// Starts a server on a temporary data directory and waits until it
    /// answers a ping. It can be stopped and started again with its data.
    pub fn start() -> MongoServer {
        Self::start_with(false)
    }

    /// Starts a server whose databases live in memory (`--data-dir memory`):
    /// a little faster, gone when it stops, so no `start_again`.
    pub fn start_in_memory() -> MongoServer {
        Self::start_with(true)
    }

    fn start_with(in_memory: bool) -> MongoServer {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let dir = tempfile::Builder::new()
                .prefix("sandcron-mongo-")
                .tempdir()
                .expect("temp dir");
            let port = free_port();
            let pid_file = dir.path().join("nx.pid");
            let mut server = MongoServer {
                port,
                in_memory,
                process: nx27017(dir.path(), port, in_memory, &pid_file),
                pid_file,
                _dir: dir,
            };
            server.spawn();
            let Err(problem) = server.wait_ready(Instant::now() + START_TIMEOUT) else {
                return server;
            };
            let port_taken = server.log_text().contains("address already in use");
            let tail = server.log_tail();
            server.kill9();
            if !port_taken || attempt >= START_ATTEMPTS {
                panic!("nx-27017 did not start (attempt {attempt}): {problem}; log:\n{tail}");
            }
        }
    }

    /// A connection string for this server, the same across restarts.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Whether the process is running (it may still be starting).
    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    /// Stops the server with SIGTERM and waits for it to exit (SIGKILL
    /// after the stop timeout).
    pub fn stop(&mut self) {
        if self.process.stop(STOP_TIMEOUT).is_err() {
            // nx-27017's shutdown can hang on open client connections; its
            // data is in SQLite, which a kill does not lose.
            eprintln!("nx-27017 did not stop within {STOP_TIMEOUT:?}; killed it");
        }
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// Starts the server again on the same port and data directory (after
    /// `stop` or `kill9`) and waits until it answers a ping.
    pub fn start_again(&mut self) {
        assert!(!self.in_memory, "an in-memory nx-27017 cannot be started again");
        self.spawn();
        if let Err(problem) = self.wait_ready(Instant::now() + START_TIMEOUT) {
            panic!("nx-27017 did not come back: {problem}; log:\n{}", self.log_tail());
        }
    }

    /// The server's log so far (what it wrote to stderr: its log lines and
    /// any Python traceback).
    pub fn log_text(&self) -> String {
        self.process.log_text()
    }

    /// The last lines of the log.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    fn spawn(&mut self) {
        // A pid file left by a killed server could name a live process by
        // now, which nx-27017 would take for itself already running.
        let _ = std::fs::remove_file(&self.pid_file);
        self.process.start().unwrap_or_else(|error| {
            panic!("{error}, for nx-27017; install Python 3 and run scripts/install-mongo-test-server.sh")
        });
    }

    /// Waits until the server answers a ping; `Err` says why not.
    fn wait_ready(&mut self, deadline: Instant) -> Result<(), String> {
        if !nx27017_dir().join("nx_27017").is_dir() {
            return Err(format!(
                "nx-27017 is not installed in {} (set SANDCRON_NX27017 or run scripts/install-mongo-test-server.sh)",
                nx27017_dir().display()
            ));
        }
        loop {
            if let Some(status) = self.process.exited() {
                return Err(format!("nx-27017 exited with {status}"));
            }
            if !self.process.is_running() {
                return Err("not running".to_owned());
            }
            let problem = match ping(self.port) {
                Ok(()) => return Ok(()),
                Err(problem) => problem,
            };
            if Instant::now() >= deadline {
                return Err(format!("no ping answer within {START_TIMEOUT:?} ({problem})"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// nx-27017 on `port`, with its files in `dir` (not started yet).
fn nx27017(dir: &Path, port: u16, in_memory: bool, pid_file: &Path) -> ChildProcess {
    let data_dir = if in_memory {
        "memory".into()
    } else {
        dir.join("data").into_os_string()
    };
    let mut command = Command::new("python3");
    command
        .arg("-c")
        .arg(LAUNCHER)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--log-file")
        .arg(dir.join("nx.log"))
        .arg("--pid-file")
        .arg(pid_file)
        .env("PYTHONPATH", nx27017_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        // Relative paths it might fall back on land in the temp dir.
        .current_dir(dir);
    let name = format!("nx-27017 on port {port}");
    ChildProcess::new(&name, command, &dir.join("nx.stderr")).expect("nx-27017 log file")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a free loopback port")
        .port()
}

/// Sends `{ping: 1, $db: "admin"}` as an OP_MSG and checks the reply says
/// `ok: 1` — a real round trip through the server's command path, with no
/// driver (the harness has no MongoDB dependency).
pub fn ping(port: u16) -> Result<(), String> {
    const OP_MSG: i32 = 2013;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream =
        TcpStream::connect_timeout(&address, Duration::from_secs(1)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;

    let mut body = Vec::new();
    body.extend_from_slice(&0u32.to_le_bytes()); // flag bits
    body.push(0); // section kind 0: the command document
    body.extend_from_slice(&bson_document(&[
        (0x10, "ping", 1i32.to_le_bytes().to_vec()),
        (0x02, "$db", bson_string("admin")),
    ]));
    let mut message = Vec::new();
    message.extend_from_slice(&(16 + body.len() as i32).to_le_bytes());
    message.extend_from_slice(&1i32.to_le_bytes()); // request id
    message.extend_from_slice(&0i32.to_le_bytes()); // response to
    message.extend_from_slice(&OP_MSG.to_le_bytes());
    message.extend_from_slice(&body);
    stream.write_all(&message).map_err(|e| format!("send: {e}"))?;

    let mut header = [0u8; 16];
    stream.read_exact(&mut header).map_err(|e| format!("read reply: {e}"))?;
    let length = i32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let opcode = i32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    if opcode != OP_MSG || !(21..=16 * 1024 * 1024).contains(&length) {
        return Err(format!("unexpected reply (opcode {opcode}, length {length})"));
    }
    let mut reply = vec![0u8; length as usize - 16];
    stream.read_exact(&mut reply).map_err(|e| format!("read reply: {e}"))?;
    // flag bits (4), section kind (1), then the reply document.
    let document = reply.get(5..).ok_or("short reply")?;
    match bson_ok(document) {
        Some(true) => Ok(()),
        Some(false) => Err("ping answered ok: 0".to_owned()),
        None => Err("ping reply has no ok field".to_owned()),
    }
}

fn bson_string(text: &str) -> Vec<u8> {
    let mut bytes = ((text.len() + 1) as i32).to_le_bytes().to_vec();
    bytes.extend_from_slice(text.as_bytes());
    bytes.push(0);
    bytes
}

fn bson_document(elements: &[(u8, &str, Vec<u8>)]) -> Vec<u8> {
    let mut content = Vec::new();
    for (kind, name, value) in elements {
        content.push(*kind);
        content.extend_from_slice(name.as_bytes());
        content.push(0);
        content.extend_from_slice(value);
    }
    content.push(0);
    let mut document = ((content.len() + 4) as i32).to_le_bytes().to_vec();
    document.extend_from_slice(&content);
    document
}

/// The top-level `ok` of a BSON document (a double or an integer), walking
/// the elements before it; `None` when absent or unreadable.
fn bson_ok(document: &[u8]) -> Option<bool> {
    let i32_at = |at: usize| -> Option<usize> {
        let bytes = document.get(at..at + 4)?;
        usize::try_from(i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])).ok()
    };
    let end = i32_at(0)?.min(document.len());
    let mut at = 4;
    while at < end {
        let kind = document[at];
        if kind == 0 {
            return None;
        }
        let name_end = at + 1 + document.get(at + 1..end)?.iter().position(|b| *b == 0)?;
        let name = &document[at + 1..name_end];
        let value = name_end + 1;
        if name == b"ok" {
            return match kind {
                0x01 => Some(f64::from_le_bytes(document.get(value..value + 8)?.try_into().ok()?) == 1.0),
                0x10 => Some(i32_at(value)? == 1),
                0x12 => Some(i64::from_le_bytes(document.get(value..value + 8)?.try_into().ok()?) == 1),
                0x08 => Some(*document.get(value)? == 1),
                _ => None,
            };
        }
        at = value
            + match kind {
                0x01 | 0x09 | 0x11 | 0x12 => 8,
                0x02 | 0x0D | 0x0E => 4 + i32_at(value)?,
                0x03 | 0x04 => i32_at(value)?,
                0x05 => 5 + i32_at(value)?,
                0x07 => 12,
                0x08 => 1,
                0x0A | 0x7F | 0xFF => 0,
                0x10 => 4,
                0x13 => 16,
                _ => return None,
            };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_is_found_whatever_its_type_and_position() {
        let ok_double = bson_document(&[(0x01, "ok", 1f64.to_le_bytes().to_vec())]);
        assert_eq!(bson_ok(&ok_double), Some(true));
        let after_others = bson_document(&[
            (0x02, "errmsg", bson_string("boom")),
            (0x08, "flag", vec![1]),
            (0x12, "n", 7i64.to_le_bytes().to_vec()),
            (0x10, "ok", 0i32.to_le_bytes().to_vec()),
        ]);
        assert_eq!(bson_ok(&after_others), Some(false));
        assert_eq!(bson_ok(&bson_document(&[])), None);
        assert_eq!(bson_ok(&[1, 2]), None);
    }
}
