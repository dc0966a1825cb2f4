//! A real SMTP server for the email-alert tests: aiosmtpd (PyPI, pinned to
//! [`AIOSMTPD_VERSION`]) on a free loopback port, requiring STARTTLS with a
//! self-signed certificate made by `openssl`, storing what it receives in a
//! maildir the test reads back. Killed on drop.
//!
//! aiosmtpd is installed by `scripts/install-smtp-test-server.sh` into
//! `target/test-tools/pip/aiosmtpd-<version>/`; `SANDCRON_AIOSMTPD` points
//! elsewhere.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The aiosmtpd release the tests are written against.
pub const AIOSMTPD_VERSION: &str = "1.4.6";

const START_TIMEOUT: Duration = Duration::from_secs(30);

fn aiosmtpd_dir() -> PathBuf {
    match std::env::var_os("SANDCRON_AIOSMTPD") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target/test-tools/pip")
            .join(format!("aiosmtpd-{AIOSMTPD_VERSION}")),
    }
}

/// One running SMTP server.
pub struct SmtpSink {
    pub port: u16,
    /// PEM of the server's self-signed certificate (trust it as a CA).
    pub cert_pem: PathBuf,
    maildir: PathBuf,
    log: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

/// One message the sink received.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The whole message as received (headers and body).
    pub raw: String,
}

impl Mail {
    /// The value of a header (first occurrence), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.raw.split("\n\n").next().unwrap_or_default().replace("\r\n", "\n");
        let mut value: Option<String> = None;
        for line in head.lines() {
            if let Some(current) = value.as_mut() {
                if line.starts_with([' ', '\t']) {
                    current.push(' ');
                    current.push_str(line.trim());
                    continue;
                }
                break;
            }
            if let Some((key, rest)) = line.split_once(':')
                && key.eq_ignore_ascii_case(name)
            {
                value = Some(rest.trim().to_owned());
            }
        }
        value
    }
}

impl SmtpSink {
    /// Starts a server that requires STARTTLS, with a fresh certificate for
    /// `localhost`.
    pub fn start() -> SmtpSink {
        let dir = tempfile::Builder::new()
            .prefix("sandcron-smtp-")
            .tempdir()
            .expect("temp dir");
        let cert_pem = dir.path().join("cert.pem");
        let key_pem = dir.path().join("key.pem");
        let status = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
            ])
            .args(["-addext", "subjectAltName=DNS:localhost"])
            .arg("-keyout")
            .arg(&key_pem)
            .arg("-out")
            .arg(&cert_pem)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run openssl");
        assert!(status.success(), "openssl could not make a certificate");
        let maildir = dir.path().join("maildir");
        let log = dir.path().join("aiosmtpd.log");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--tlscert")
            .arg(&cert_pem)
            .arg("--tlskey")
            .arg(&key_pem)
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .env("PYTHONPATH", aiosmtpd_dir())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(std::fs::File::options().append(true).open(&log).expect("log"))
            .spawn()
            .expect("start aiosmtpd (run scripts/install-smtp-test-server.sh)");
        let sink = SmtpSink {
            port,
            cert_pem,
            maildir,
            log,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not listen within {START_TIMEOUT:?}; log:\n{}",
                sink.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        sink
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<Mail> {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = ["new", "cur"]
            .iter()
            .filter_map(|sub| std::fs::read_dir(self.maildir.join(sub)).ok())
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
            .collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, path)| std::fs::read_to_string(path).ok())
            .map(|raw| Mail { raw })
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
