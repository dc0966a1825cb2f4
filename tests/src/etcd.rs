//! Real etcd servers for tests: one member ([`EtcdServer`], optionally
//! behind TLS) or a cluster of several ([`EtcdCluster`]), each on free
//! loopback ports with a temporary data directory, started from Debian's
//! `etcd-server` 3.4 binary, stopped, killed and restarted on demand for
//! outage tests, and killed on drop.
//!
//! What it must not do: touch a system etcd (the Debian package may run one
//! on 2379), inherit `ETCD_*` settings from the environment, or leave a
//! process behind. A test whose server dies prints the server's log tail.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::ChildProcess;

/// How long a member may take to become healthy (elect a leader, serve).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a member may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Attempts at starting with freshly picked ports: a port found free can be
/// taken by another test process before etcd binds it.
const START_ATTEMPTS: usize = 4;

/// The etcd binary: `$SANDCRON_ETCD_BIN`, or `etcd` from `PATH`. (Not an
/// `ETCD_*` variable: etcd reads those as flags.)
fn etcd_bin() -> String {
    std::env::var("SANDCRON_ETCD_BIN").unwrap_or_else(|_| "etcd".to_owned())
}

/// One running etcd member with its own data directory and ports.
pub struct EtcdServer {
    /// Declared before `_dir`, so that it is dropped first: on a panic it
    /// prints its log tail from there.
    member: Member,
    _dir: tempfile::TempDir,
}

/// The PEM files of a TLS server: a throwaway CA, and a client certificate
/// it signed (the server requires one).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

impl EtcdServer {
    /// Starts a one-member cluster and waits until it serves requests.
    pub fn start() -> EtcdServer {
        let dir = temp_dir("sandcron-etcd-");
        let mut members = start_members(dir.path(), 1, None);
        let member = members.remove(0);
        EtcdServer { member, _dir: dir }
    }

    /// Starts a one-member cluster that serves clients over TLS only and
    /// requires a client certificate (`--client-cert-auth`); the certificates
    /// are made with the `openssl` command.
    pub fn start_tls() -> EtcdServer {
        let dir = temp_dir("sandcron-etcd-tls-");
        let tls = generate_tls(dir.path());
        let mut members = start_members(dir.path(), 1, Some(&tls));
        let member = members.remove(0);
        EtcdServer { member, _dir: dir }
    }

    /// `http://127.0.0.1:<client port>` (`https://` with TLS), the same
    /// across restarts.
    pub fn endpoint(&self) -> String {
        self.member.endpoint()
    }

    /// The certificates of a server started with [`start_tls`](Self::start_tls).
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.member.tls.as_ref()
    }

    /// Whether the process is running (it may still be starting).
    pub fn is_running(&self) -> bool {
        self.member.process.is_running()
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.member.process.pid()
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) {
        self.member.stop();
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        self.member.kill9();
    }

    /// Starts the server again on the same ports and data directory (after
    /// `stop` or `kill9`) and waits until it serves requests.
    pub fn start_again(&mut self) {
        self.member.spawn();
        if let Err(problem) = self.member.wait_healthy(Instant::now() + START_TIMEOUT) {
            panic!(
                "etcd did not come back: {problem}; log:\n{}",
                self.member.process.log_tail()
            );
        }
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        self.member.process.log_text()
    }
}

/// A cluster of etcd members on loopback, all healthy once `start` returns.
pub struct EtcdCluster {
    /// Declared before `_dir`, as in [`EtcdServer`].
    members: Vec<Member>,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts a cluster of `size` members and waits until every one serves.
    pub fn start(size: usize) -> EtcdCluster {
        assert!(size > 0, "a cluster needs at least one member");
        let dir = temp_dir("sandcron-etcd-cluster-");
        let members = start_members(dir.path(), size, None);
        EtcdCluster { members, _dir: dir }
    }

    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// Every member's client URL, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    pub fn endpoint(&self, member: usize) -> String {
        self.members[member].endpoint()
    }

    /// The index of the current leader, once the running members agree on
    /// one (waits for an election, up to the start timeout).
    pub fn leader(&self) -> usize {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(leader) = self.agreed_leader() {
                return leader;
            }
            assert!(
                Instant::now() < deadline,
                "the etcd cluster elected no leader within {START_TIMEOUT:?}; logs:\n{}",
                log_tails(&self.members)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills member `member` with SIGKILL.
    pub fn kill_member(&mut self, member: usize) {
        self.members[member].kill9();
    }

    /// Stops member `member` with SIGTERM.
    pub fn stop_member(&mut self, member: usize) {
        self.members[member].stop();
    }

    /// Starts a stopped or killed member again on its data directory and
    /// waits until it serves (it needs a leader, so a quorum must be up).
    pub fn restart_member(&mut self, member: usize) {
        let restarted = &mut self.members[member];
        restarted.spawn();
        if let Err(problem) = restarted.wait_healthy(Instant::now() + START_TIMEOUT) {
            panic!(
                "etcd member {member} did not come back: {problem}; logs:\n{}",
                log_tails(&self.members)
            );
        }
    }

    fn agreed_leader(&self) -> Option<usize> {
        let statuses: Vec<(usize, u64, u64)> = self
            .members
            .iter()
            .enumerate()
            .filter(|(_, member)| member.process.is_running())
            .filter_map(|(index, member)| member.status().map(|(id, leader)| (index, id, leader)))
            .collect();
        let (index, leader_id, _) = statuses.iter().find(|(_, id, leader)| *leader != 0 && id == leader)?;
        let agreeing = statuses.iter().filter(|(_, _, leader)| leader == leader_id).count();
        (agreeing * 2 > self.members.len()).then_some(*index)
    }
}

/// Every member's log tail under its name.
fn log_tails(members: &[Member]) -> String {
    members
        .iter()
        .map(|member| format!("---- {} ----\n{}", member.name, member.process.log_tail()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One etcd process and everything needed to start it again.
struct Member {
    name: String,
    client_port: u16,
    /// Plain-HTTP `/health` for a TLS member (`--listen-metrics-urls`).
    health_port: Option<u16>,
    tls: Option<TlsFiles>,
    /// `etcd` with this member's flags; the same on every start.
    process: ChildProcess,
}

/// Where a member listens and the cluster it belongs to.
struct MemberPlan<'a> {
    name: String,
    client_port: u16,
    peer_port: u16,
    health_port: Option<u16>,
    tls: Option<&'a TlsFiles>,
    /// `name=peer-url,...` for every member of its cluster.
    initial_cluster: &'a str,
    token: &'a str,
    data_dir: PathBuf,
    log: PathBuf,
}

/// Starts `size` members under `dir` and waits until all are healthy,
/// picking new ports when one was taken meanwhile.
fn start_members(dir: &Path, size: usize, tls: Option<&TlsFiles>) -> Vec<Member> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut members = plan_members(dir, size, attempt, tls);
        for member in &mut members {
            member.spawn();
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let problem = members.iter_mut().find_map(|member| {
            member
                .wait_healthy(deadline)
                .err()
                .map(|problem| (member.name.clone(), problem))
        });
        let Some((name, problem)) = problem else {
            return members;
        };
        let port_taken = members
            .iter()
            .any(|member| member.process.log_text().contains("address already in use"));
        let logs = log_tails(&members);
        for member in &mut members {
            member.process.kill9();
        }
        if !port_taken || attempt >= START_ATTEMPTS {
            panic!("etcd member {name} did not start (attempt {attempt}): {problem}; logs:\n{logs}");
        }
    }
}

/// Members with fresh ports and empty data directories.
fn plan_members(dir: &Path, size: usize, attempt: usize, tls: Option<&TlsFiles>) -> Vec<Member> {
    // All listeners are held until every port is picked, so one plan never
    // hands out the same port twice. Each member takes a client and a peer
    // port, and a health port under TLS.
    let listeners: Vec<TcpListener> = (0..size * 3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port"))
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|listener| listener.local_addr().expect("local address").port())
        .collect();
    drop(listeners);
    let names: Vec<String> = (0..size).map(|i| format!("m{i}")).collect();
    let initial_cluster = names
        .iter()
        .enumerate()
        .map(|(i, name)| format!("{name}=http://127.0.0.1:{}", ports[2 * i + 1]))
        .collect::<Vec<_>>()
        .join(",");
    // A token unique to this cluster, so members of clusters started by
    // other tests can never join it.
    let token = format!("sandcron-test-{}-{}-{attempt}", std::process::id(), ports[0]);
    names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let data_dir = dir.join(format!("{name}.data"));
            // A failed attempt may have left a member directory behind.
            if data_dir.exists() {
                std::fs::remove_dir_all(&data_dir).expect("remove an old data dir");
            }
            Member::new(MemberPlan {
                log: dir.join(format!("{name}.log")),
                data_dir,
                name,
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                health_port: tls.map(|_| ports[2 * size + i]),
                tls,
                initial_cluster: &initial_cluster,
                token: &token,
            })
        })
        .collect()
}

impl Member {
    /// Prepares the member's `etcd` command (it is started by `spawn`).
    fn new(plan: MemberPlan<'_>) -> Member {
        let client_url = endpoint(plan.client_port, plan.tls.is_some());
        let peer_url = format!("http://127.0.0.1:{}", plan.peer_port);
        let mut command = Command::new(etcd_bin());
        command
            .arg("--name")
            .arg(&plan.name)
            .arg("--data-dir")
            .arg(&plan.data_dir)
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(plan.initial_cluster)
            .arg("--initial-cluster-token")
            .arg(plan.token)
            .arg("--initial-cluster-state")
            .arg("new")
            .args(["--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn"])
            .args(tls_args(plan.tls, plan.health_port));
        for (variable, _) in std::env::vars_os() {
            if variable.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(variable);
            }
        }
        let name = format!("etcd member {} at {client_url}", plan.name);
        Member {
            process: ChildProcess::new(&name, command, &plan.log).expect("etcd log file"),
            name: plan.name,
            client_port: plan.client_port,
            health_port: plan.health_port,
            tls: plan.tls.cloned(),
        }
    }

    fn endpoint(&self) -> String {
        endpoint(self.client_port, self.tls.is_some())
    }

    fn spawn(&mut self) {
        self.process.start().unwrap_or_else(|error| {
            panic!(
                "{error}; install it with `apt-get install etcd-server` \
                 or point SANDCRON_ETCD_BIN at an etcd 3.4+ binary"
            )
        });
    }

    /// Waits until the member answers `/health` with `true`; `Err` says why not.
    fn wait_healthy(&mut self, deadline: Instant) -> Result<(), String> {
        loop {
            if let Some(status) = self.process.exited() {
                return Err(format!("etcd exited with {status}"));
            }
            if !self.process.is_running() {
                return Err("not running".to_owned());
            }
            let health_port = self.health_port.unwrap_or(self.client_port);
            if http(health_port, "GET", "/health", "").is_some_and(|body| body.contains("\"health\":\"true\"")) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("not healthy within {START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// (this member's id, the leader's id as it sees it; 0 for none).
    fn status(&self) -> Option<(u64, u64)> {
        let body = http(self.client_port, "POST", "/v3/maintenance/status", "{}")?;
        let status: Value = serde_json::from_str(&body).ok()?;
        // The JSON gateway writes 64-bit integers as strings.
        let number = |value: &Value| match value {
            Value::String(text) => text.parse().ok(),
            other => other.as_u64(),
        };
        Some((
            number(&status["header"]["member_id"])?,
            number(&status["leader"]).unwrap_or(0),
        ))
    }

    fn stop(&mut self) {
        if let Err(error) = self.process.stop(STOP_TIMEOUT) {
            panic!("{error}");
        }
    }

    fn kill9(&mut self) {
        self.process.kill9();
    }
}

/// `http://127.0.0.1:<port>`, or `https://` with TLS.
fn endpoint(client_port: u16, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://127.0.0.1:{client_port}")
}

/// The flags that serve clients over TLS only, with `/health` on plain HTTP.
fn tls_args(tls: Option<&TlsFiles>, health_port: Option<u16>) -> Vec<String> {
    let (Some(tls), Some(health_port)) = (tls, health_port) else {
        return Vec::new();
    };
    let path = |path: &PathBuf| path.display().to_string();
    vec![
        "--cert-file".into(),
        path(&tls.server_cert),
        "--key-file".into(),
        path(&tls.server_key),
        "--trusted-ca-file".into(),
        path(&tls.ca),
        "--client-cert-auth".into(),
        "--listen-metrics-urls".into(),
        format!("http://127.0.0.1:{health_port}"),
    ]
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as
/// P-256 keys (quick to make), written under `dir`.
fn generate_tls(dir: &Path) -> TlsFiles {
    let file = |name: &str| dir.join(name);
    let files = TlsFiles {
        ca: file("ca.pem"),
        client_cert: file("client.pem"),
        client_key: file("client.key"),
        server_cert: file("server.pem"),
        server_key: file("server.key"),
    };
    let key_options = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let ca_key = file("ca.key");
    openssl(
        &["req", "-x509", "-days", "2", "-subj", "/CN=sandcron test CA"],
        &key_options,
        &[("-keyout", &ca_key), ("-out", &files.ca)],
    );
    for (name, cert, key, extensions) in [
        (
            "127.0.0.1",
            &files.server_cert,
            &files.server_key,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        ),
        (
            "sandcron",
            &files.client_cert,
            &files.client_key,
            "extendedKeyUsage=clientAuth\n",
        ),
    ] {
        let request = file(&format!("{name}.csr"));
        let extensions_file = file(&format!("{name}.ext"));
        std::fs::write(&extensions_file, extensions).expect("write certificate extensions");
        let subject = format!("/CN={name}");
        openssl(
            &["req", "-subj", &subject],
            &key_options,
            &[("-keyout", key), ("-out", &request)],
        );
        openssl(
            &["x509", "-req", "-days", "2", "-CAcreateserial"],
            &[],
            &[
                ("-in", &request),
                ("-CA", &files.ca),
                ("-CAkey", &ca_key),
                ("-extfile", &extensions_file),
                ("-out", cert),
            ],
        );
    }
    files
}

fn openssl(args: &[&str], more: &[&str], paths: &[(&str, &PathBuf)]) {
    let mut command = Command::new("openssl");
    command.args(args).args(more);
    for (flag, path) in paths {
        command.arg(flag).arg(path);
    }
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run openssl ({error}); install it with `apt-get install openssl`"));
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().expect("temp dir")
}

/// A minimal HTTP/1.0 exchange with a member's client port (which also
/// serves `/health` and the JSON gateway), so the harness needs no async
/// runtime. Returns the body of a 200 response.
fn http(port: u16, method: &str, path: &str, body: &str) -> Option<String> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    stream.set_write_timeout(Some(Duration::from_secs(3))).ok()?;
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_owned())
}
