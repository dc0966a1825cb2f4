//! A real SMTP server for the email-alert tests: aiosmtpd (PyPI, pinned to
//! [`AIOSMTPD_VERSION`]) on a free loopback port, requiring STARTTLS with a
//! certificate from a throw-away CA made by `openssl`, storing what it receives in a
//! maildir the test reads back. Killed on drop.
//!
//! aiosmtpd is installed by `scripts/install-smtp-test-server.sh` into
//! `target/test-tools/pip/aiosmtpd-<version>/`; `SANDCRON_AIOSMTPD` points
//! elsewhere.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::ChildProcess;
use crate::workspace_root;

/// The aiosmtpd release the tests are written against.
pub const AIOSMTPD_VERSION: &str = "1.4.6";

const START_TIMEOUT: Duration = Duration::from_secs(30);

fn aiosmtpd_dir() -> PathBuf {
    match std::env::var_os("SANDCRON_AIOSMTPD") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root()
            .join("target/test-tools/pip")
            .join(format!("aiosmtpd-{AIOSMTPD_VERSION}")),
    }
}

/// One running SMTP server.
pub struct SmtpSink {
    pub port: u16,
    /// PEM of the CA that signed the server's certificate (trust it).
    pub cert_pem: PathBuf,
    maildir: PathBuf,
    /// Declared before `_dir`, so that it is dropped first: on a panic it
    /// prints its log tail from there.
    process: ChildProcess,
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
        // A CA, and a server certificate for localhost signed by it: TLS
        // clients refuse a CA certificate used as the server's own.
        let ca_key = dir.path().join("ca.key");
        let ca_pem = dir.path().join("ca.pem");
        let key_pem = dir.path().join("server.key");
        let csr = dir.path().join("server.csr");
        let cert = dir.path().join("server.pem");
        let ext = dir.path().join("server.ext");
        std::fs::write(
            &ext,
            "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .expect("extensions file");
        let openssl = |args: &[&std::ffi::OsStr]| {
            let status = Command::new("openssl")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run openssl");
            assert!(status.success(), "openssl {args:?} failed");
        };
        let os = |s: &'static str| std::ffi::OsStr::new(s);
        openssl(&[
            os("req"),
            os("-x509"),
            os("-newkey"),
            os("rsa:2048"),
            os("-nodes"),
            os("-days"),
            os("1"),
            os("-subj"),
            os("/CN=sandcron test CA"),
            os("-keyout"),
            ca_key.as_os_str(),
            os("-out"),
            ca_pem.as_os_str(),
        ]);
        openssl(&[
            os("req"),
            os("-newkey"),
            os("rsa:2048"),
            os("-nodes"),
            os("-subj"),
            os("/CN=localhost"),
            os("-keyout"),
            key_pem.as_os_str(),
            os("-out"),
            csr.as_os_str(),
        ]);
        openssl(&[
            os("x509"),
            os("-req"),
            os("-in"),
            csr.as_os_str(),
            os("-CA"),
            ca_pem.as_os_str(),
            os("-CAkey"),
            ca_key.as_os_str(),
            os("-CAcreateserial"),
            os("-days"),
            os("1"),
            os("-extfile"),
            ext.as_os_str(),
            os("-out"),
            cert.as_os_str(),
        ]);
        let cert_pem = ca_pem;
        let maildir = dir.path().join("maildir");
        let log = dir.path().join("aiosmtpd.log");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut command = Command::new("python3");
        command
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--tlscert")
            .arg(&cert)
            .arg("--tlskey")
            .arg(&key_pem)
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .env("PYTHONPATH", aiosmtpd_dir())
            .env("PYTHONDONTWRITEBYTECODE", "1");
        let mut process = ChildProcess::new("aiosmtpd", command, &log).expect("log");
        process
            .start()
            .unwrap_or_else(|err| panic!("{err} (run scripts/install-smtp-test-server.sh)"));
        let sink = SmtpSink {
            port,
            cert_pem,
            maildir,
            process,
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
        self.process.log_text()
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
