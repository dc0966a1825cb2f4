//! The deployment kit in `deploy/`: the example configurations pass
//! `--check-config` without showing a secret, and broken ones fail naming the
//! key; the systemd units pass `systemd-analyze verify` and its security
//! rating; nginx accepts the proxy configuration; and the units' choice of
//! MemoryDenyWriteExecute= (on for masters, off for workers) is what the
//! binary actually needs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use sandcron_tests::{wait_for, wasm_job, workspace_root};

use crate::cluster::{Stores, wait_for_workers};
use crate::guest_wat;

fn deploy(file: &str) -> PathBuf {
    workspace_root().join("deploy").join(file)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|err| panic!("cannot write {}: {err}", path.display()));
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a tool and returns its output; a tool that cannot start fails the
/// test with what to install.
fn run(command: &mut Command, package: &str) -> Output {
    command.output().unwrap_or_else(|err| {
        panic!("cannot run {command:?} ({err}); install it: apt-get install {package} (scripts/install-test-deps.sh)")
    })
}

/// A self-signed certificate and its key, as `openssl req` makes them.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let output = run(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-days",
                "1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        "openssl",
    );
    assert!(output.status.success(), "openssl: {}", text(&output.stderr));
    (cert, key)
}

/// `deploy/<role>.toml` as installed under `etc` instead of /etc/sandcron,
/// with the TLS files it names present there (valid PEM).
fn installed_config(role: &str, etc: &Path) -> PathBuf {
    let tls = etc.join("tls");
    std::fs::create_dir_all(&tls).expect("tls dir");
    let (cert, key) = self_signed(etc);
    for (name, from) in [
        ("etcd-ca.pem", &cert),
        ("etcd-client.pem", &cert),
        ("etcd-client-key.pem", &key),
    ] {
        std::fs::copy(from, tls.join(name)).expect("copy pem");
    }
    let original = read(&deploy(&format!("{role}.toml")));
    assert!(
        original.contains("\"/etc/sandcron/tls/"),
        "{role}.toml names its TLS files"
    );
    let path = etc.join(format!("{role}.toml"));
    write(
        &path,
        &original.replace("\"/etc/sandcron/", &format!("\"{}/", etc.display())),
    );
    path
}

/// `sandcron <role> --config <config> --check-config` with only the given
/// SANDCRON_* variables (the test's own environment may hold others).
fn check_config(role: &str, config: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(crate::BIN);
    command.arg(role).arg("--config").arg(config).arg("--check-config");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SANDCRON_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    command.output().expect("run sandcron")
}

fn table<'a>(config: &'a toml::Table, key: &str) -> &'a toml::Table {
    config[key].as_table().unwrap_or_else(|| panic!("[{key}]"))
}

fn string<'a>(table: &'a toml::Table, key: &str) -> &'a str {
    table[key].as_str().unwrap_or_else(|| panic!("{key} is a string"))
}

/// Every secret in an example file: the etcd password and the token hashes.
fn secrets(config: &toml::Table) -> Vec<String> {
    let mut secrets = vec![string(table(config, "etcd"), "password").to_owned()];
    if let Some(tokens) = config
        .get("auth")
        .and_then(|a| a.get("tokens"))
        .and_then(|t| t.as_array())
    {
        for token in tokens {
            let token = token.as_table().expect("token table");
            assert!(!token.contains_key("token"), "the examples keep only hashes of tokens");
            secrets.push(string(token, "sha256").to_owned());
        }
    }
    secrets
}

#[test]
fn the_example_configurations_pass_check_config_and_show_no_secret() {
    let dir = tempfile::tempdir().expect("temp dir");
    for role in ["master", "worker"] {
        let etc = dir.path().join(role);
        let path = installed_config(role, &etc);
        let config: toml::Table = read(&path).parse().expect("the example is TOML");
        let etcd = table(&config, "etcd");
        // The stores in the examples do not exist: a real start would fail
        // to reach them, the check does not try.
        let output = check_config(role, &path, &[]);
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        assert_eq!(output.status.code(), Some(0), "{role}: {stdout}{stderr}");
        assert!(stdout.contains("configuration is valid"), "{role}: {stdout}");
        assert!(stdout.contains(&format!("role             {role}")), "{stdout}");
        let endpoints = etcd["endpoints"].as_array().expect("endpoints");
        assert_eq!(endpoints.len(), 3, "a 3-member etcd");
        for endpoint in endpoints {
            assert!(
                stdout.contains(endpoint.as_str().expect("endpoint")),
                "{role}: {stdout}"
            );
        }
        assert!(stdout.contains(string(etcd, "prefix")), "{stdout}");
        assert!(
            stdout.contains("etcd tls         on, with a client certificate"),
            "{stdout}"
        );
        assert!(stdout.contains("mongodb hosts    db1,db2,db3"), "{stdout}");
        assert!(
            stdout.contains(string(table(&config, "mongodb"), "database")),
            "{stdout}"
        );
        for secret in secrets(&config) {
            assert!(
                !stdout.contains(&secret) && !stderr.contains(&secret),
                "{role} shows {secret:?}: {stdout}"
            );
        }
        match role {
            "master" => {
                assert!(stdout.contains("listen           0.0.0.0:8070"), "{stdout}");
                assert!(
                    stdout.contains("3: ops (admin), ci (operator), grafana (viewer)"),
                    "{stdout}"
                );
            }
            _ => {
                let worker = table(&config, "worker");
                for key in [
                    "id",
                    "capacity",
                    "allow_native",
                    "lease_ttl_s",
                    "drain_timeout_s",
                    "listen",
                ] {
                    let value = &worker[key];
                    let shown = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
                    assert!(stdout.contains(&format!("{key:<16} {shown}")), "{key}: {stdout}");
                }
                assert!(stdout.contains("labels           disk=ssd, zone=eu-1"), "{stdout}");
                assert!(stdout.contains("allow_native     false"), "{stdout}");
            }
        }

        // The environment counts as in a real start, and a URI with
        // credentials shows only its hosts.
        let uri = "mongodb://sandcron:mongo-secret-pw@db4:27017,db5:27017/?replicaSet=rs1&authSource=admin";
        let output = check_config(
            role,
            &path,
            &[
                ("SANDCRON_MONGODB_URI", uri),
                ("SANDCRON_ETCD_ENDPOINTS", "https://10.9.0.1:2379,https://10.9.0.2:2379"),
            ],
        );
        let stdout = text(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{stdout}{}", text(&output.stderr));
        assert!(stdout.contains("mongodb hosts    db4:27017,db5:27017"), "{stdout}");
        assert!(
            stdout.contains("etcd endpoints   https://10.9.0.1:2379, https://10.9.0.2:2379"),
            "{stdout}"
        );
        assert!(
            !stdout.contains("mongo-secret-pw") && !stdout.contains("sandcron:"),
            "{stdout}"
        );
    }
}

#[test]
fn check_config_fails_with_status_2_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cases = 0;
    for role in ["master", "worker"] {
        let etc = dir.path().join(role);
        let path = installed_config(role, &etc);
        let good = read(&path);
        let broken = path.with_file_name("broken.toml");
        let edits: Vec<(&str, String, &str)> = match role {
            "master" => vec![
                (
                    "max_body_kb = 1024",
                    "max_bdy_kb = 1024".into(),
                    "unknown field `max_bdy_kb`",
                ),
                ("prefix = \"/sandcron/\"", "prefix = \"sandcron\"".into(), "etcd.prefix"),
                (
                    "sha256 = \"37b1",
                    "sha256 = \"7b1".into(),
                    "auth.tokens \"ops\": sha256: expected 64 hex digits",
                ),
                ("role = \"admin\"", "role = \"root\"".into(), "unknown variant `root`"),
                (
                    "listen = \"0.0.0.0:8070\"",
                    "listen = \"0.0.0.0\"".into(),
                    "listen address",
                ),
            ],
            _ => vec![
                ("capacity = 16", "capcity = 16".into(), "unknown field `capcity`"),
                ("lease_ttl_s = 10", "lease_ttl_s = 1".into(), "worker.lease_ttl_s"),
                ("capacity = 16", "capacity = 0".into(), "worker capacity"),
                ("id = \"worker-1\"", "id = \"worker 1\"".into(), "worker.id"),
                ("uri = \"mongodb://", "uri = \"postgres://".into(), "MongoDB URI"),
                (
                    "password = \"change-me-etcd-password\"",
                    String::new(),
                    "etcd.username and etcd.password go together",
                ),
                (
                    "[worker]",
                    format!("[worker]\ndirs = {{ data = \"{}/nonexistent\" }}", etc.display()),
                    "worker.dirs.data",
                ),
            ],
        };
        for (from, to, expected) in edits {
            assert!(good.contains(from), "{role}.toml contains {from:?}");
            write(&broken, &good.replacen(from, &to, 1));
            let output = check_config(role, &broken, &[]);
            let stderr = text(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{role}, {to:?}: {stderr}");
            assert!(
                stderr.contains(expected),
                "{role}, {to:?}: expected {expected:?} in {stderr}"
            );
            assert!(output.stdout.is_empty(), "no summary for an invalid file");
            cases += 1;
        }
        // The TLS files must exist and be PEM.
        let ca = etc.join("tls/etcd-ca.pem");
        write(&ca, "not a certificate\n");
        let stderr = text(&check_config(role, &path, &[]).stderr);
        assert!(
            stderr.contains("etcd.ca_file") && stderr.contains("is not a PEM file"),
            "{stderr}"
        );
        std::fs::remove_file(&ca).expect("remove");
        let output = check_config(role, &path, &[]);
        assert_eq!(output.status.code(), Some(2));
        assert!(
            text(&output.stderr).contains("etcd.ca_file: cannot read"),
            "{}",
            text(&output.stderr)
        );
        // A bad override from the environment is reported as well.
        std::fs::copy(etc.join("cert.pem"), &ca).expect("restore");
        let output = check_config(role, &path, &[("SANDCRON_ETCD_ENDPOINTS", "10.0.0.1:2379")]);
        assert_eq!(output.status.code(), Some(2));
        assert!(
            text(&output.stderr).contains("etcd endpoint \"10.0.0.1:2379\" must start with http"),
            "{}",
            text(&output.stderr)
        );
        cases += 3;
    }
    assert_eq!(cases, 18);
}

/// The units with the binary that was just built in place of
/// /usr/local/bin/sandcron (verify insists that ExecStart= exists).
fn units_with_test_binary(dir: &Path) -> Vec<PathBuf> {
    ["sandcron-master.service", "sandcron-worker.service"]
        .iter()
        .map(|name| {
            let original = read(&deploy(&format!("systemd/{name}")));
            assert!(original.contains("ExecStart=/usr/local/bin/sandcron "), "{name}");
            assert!(original.contains("ExecStartPre=/usr/local/bin/sandcron "), "{name}");
            let path = dir.join(name);
            write(&path, &original.replace("/usr/local/bin/sandcron", crate::BIN));
            path
        })
        .collect()
}

/// `systemd-analyze verify` on unit files (no running systemd needed). It
/// exits 0 on warnings such as an unknown key or a value it cannot parse
/// (it ignores the line), so any line about our units fails the test too.
/// `--recursive-errors=no` leaves the machine's own units
/// (network-online.target, …) out of it. User=sandcron needs no such user
/// here: verify does not resolve users, it checks syntax, values and that
/// the commands exist.
fn verify(units: &[PathBuf]) -> (bool, Vec<String>) {
    let output = run(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no", "--generators=no", "--recursive-errors=no"])
            .args(units),
        "systemd",
    );
    let complaints = text(&output.stdout)
        .lines()
        .chain(text(&output.stderr).lines())
        .filter(|line| line.contains("sandcron-"))
        .map(str::to_owned)
        .collect();
    (output.status.success(), complaints)
}

/// `TimeoutStopSec=90s` → 90.
fn seconds(unit: &str, key: &str) -> u64 {
    let value = unit
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key}= is set"));
    value
        .trim_end_matches('s')
        .parse()
        .unwrap_or_else(|_| panic!("{key}={value}"))
}

fn has_line(unit: &str, line: &str) -> bool {
    unit.lines().any(|l| l.trim() == line)
}

#[test]
fn the_systemd_units_verify_cleanly_and_are_hardened() {
    let dir = tempfile::tempdir().expect("temp dir");
    let units = units_with_test_binary(dir.path());
    let (ok, complaints) = verify(&units);
    assert!(ok && complaints.is_empty(), "systemd-analyze verify: {complaints:#?}");

    // The check is not blind: a misspelt key is reported, though verify
    // still exits 0.
    let typo = dir.path().join("typo").join("sandcron-master.service");
    std::fs::create_dir_all(typo.parent().expect("parent")).expect("dir");
    write(&typo, &read(&units[0]).replace("ProtectHome=yes", "ProtectHom=yes"));
    let (_, complaints) = verify(std::slice::from_ref(&typo));
    assert!(
        complaints.iter().any(|line| line.contains("ProtectHom")),
        "{complaints:#?}"
    );

    // systemd's own exposure rating (0 = locked down, 10 = unprotected):
    // both units at 2.0 or better ("OK").
    for unit in &units {
        let output = run(
            Command::new("systemd-analyze")
                .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
                .arg(unit),
            "systemd",
        );
        let report = text(&output.stdout);
        assert!(
            output.status.success(),
            "{}: exposure above 2.0:\n{report}{}",
            unit.display(),
            text(&output.stderr)
        );
    }

    let master = read(&units[0]);
    let worker = read(&units[1]);
    for unit in [&master, &worker] {
        for line in [
            "User=sandcron",
            "KillSignal=SIGTERM",
            "KillMode=mixed",
            "Restart=on-failure",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "CapabilityBoundingSet=",
            "SystemCallFilter=@system-service",
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
            "EnvironmentFile=-/etc/default/sandcron",
        ] {
            assert!(has_line(unit, line), "{line} in {unit}");
        }
        assert!(
            unit.lines()
                .any(|l| l.starts_with("ExecStartPre=") && l.ends_with(" --check-config")),
            "the units check the configuration first"
        );
    }
    // wasmtime needs writable-then-executable memory on workers only (see
    // the test below).
    assert!(has_line(&master, "MemoryDenyWriteExecute=yes"));
    assert!(has_line(&worker, "MemoryDenyWriteExecute=no"));
    // The worker's stop waits for the drain, the kill grace and the flush.
    let config: toml::Table = read(&deploy("worker.toml")).parse().expect("TOML");
    let worker_config = table(&config, "worker");
    let drain = worker_config["drain_timeout_s"].as_integer().expect("drain") as u64;
    let grace = worker_config["kill_grace_s"].as_integer().expect("grace") as u64;
    let stop = seconds(&worker, "TimeoutStopSec");
    assert!(
        stop >= drain + grace + 10,
        "TimeoutStopSec={stop} leaves no room after drain_timeout_s={drain} + kill_grace_s={grace}"
    );
    let data = "/var/lib/sandcron";
    assert!(has_line(&worker, &format!("ReadWritePaths={data}")));
    assert!(worker.contains(&format!(" --data {data}")));
    assert_eq!(string(&config, "data_dir"), data);
}

/// The number of the first `directive` in an nginx configuration, written
/// with `unit` (`proxy_read_timeout 75s;` gives 75 for 's').
fn directive_number(config: &str, directive: &str, unit: char) -> u64 {
    config
        .split(&format!("{directive} "))
        .nth(1)
        .and_then(|rest| rest.split(unit).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {directive} in {unit} units"))
}

#[test]
fn nginx_accepts_the_proxy_configuration() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = self_signed(dir.path());
    let original = read(&deploy("nginx/sandcron.conf"));
    let placeholders = ("/etc/ssl/sandcron/fullchain.pem", "/etc/ssl/sandcron/privkey.pem");
    assert!(original.contains(placeholders.0) && original.contains(placeholders.1));
    let with_certs = original
        .replace(placeholders.0, &cert.display().to_string())
        .replace(placeholders.1, &key.display().to_string());
    // A minimal nginx.conf around it; every path nginx writes is in the
    // temporary directory, so neither root nor the package's service is
    // needed.
    let nginx_test = |site: &str| -> Output {
        let site_path = dir.path().join("sandcron.conf");
        write(&site_path, site);
        let tmp = dir.path().display().to_string();
        let main = dir.path().join("nginx.conf");
        write(
            &main,
            &format!(
                "pid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\nevents {{}}\nhttp {{\n    access_log off;\n    \
                 client_body_temp_path {tmp}/body;\n    proxy_temp_path {tmp}/proxy;\n    fastcgi_temp_path \
                 {tmp}/fastcgi;\n    uwsgi_temp_path {tmp}/uwsgi;\n    scgi_temp_path {tmp}/scgi;\n    include \
                 {};\n}}\n",
                site_path.display()
            ),
        );
        run(
            Command::new("nginx")
                .arg("-t")
                .arg("-c")
                .arg(&main)
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log")),
            "nginx",
        )
    };
    let output = nginx_test(&with_certs);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "nginx -t:\n{stderr}");
    assert!(stderr.contains("test is successful"), "{stderr}");
    // nginx really reads the file: with the placeholder certificates (which
    // do not exist here) it fails.
    let output = nginx_test(&original);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains(placeholders.0),
        "{}",
        text(&output.stderr)
    );

    // The follow long-poll (host/src/api/runs.rs: wait_s at most 60 s)
    // passes unbuffered and is never cut off by nginx first.
    let follow = original
        .split("location ~ ^/api/v1/runs/[^/]+/output$ {")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .expect("a location for the output long-poll");
    assert!(follow.contains("proxy_buffering off;"), "{follow}");
    let read_timeout = directive_number(follow, "proxy_read_timeout", 's');
    assert!(
        read_timeout > 60,
        "proxy_read_timeout {read_timeout}s <= the longest long-poll"
    );
    // Room for the largest upload: 64 MiB plus the 64 KiB of multipart framing.
    let body_mb = directive_number(&original, "client_max_body_size", 'm');
    assert!(body_mb * 1024 >= 64 * 1024 + 64, "client_max_body_size {body_mb}m");
    // Pooled connections to the masters are dropped before a master closes
    // them as idle.
    let keepalive_timeout = directive_number(&original, "keepalive_timeout", 's');
    assert!(
        Duration::from_secs(keepalive_timeout) < sandcron::api::HEADER_READ_TIMEOUT,
        "keepalive_timeout {keepalive_timeout}s is not below the masters' idle timeout"
    );
    for directive in [
        "proxy_http_version 1.1;",
        "proxy_set_header Connection \"\";",
        "proxy_set_header Authorization $http_authorization;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_next_upstream error timeout http_502 http_503;",
        "return 301 https://$host$request_uri;",
    ] {
        assert!(original.contains(directive), "{directive}");
    }
}

/// Runs the binary with the kernel's memory-deny-write-execute
/// (`prctl(PR_SET_MDWE)`, Linux 6.3+; inherited across exec): it refuses to
/// make writable memory executable, which is what systemd's
/// MemoryDenyWriteExecute=yes forbids too (with seccomp, in systemd 252).
fn mdwe_wrapper(dir: &Path) -> String {
    let script = dir.join("mdwe.py");
    write(
        &script,
        "import ctypes, os, sys\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1\n\
         if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:\n\
         \x20   sys.exit('prctl(PR_SET_MDWE) failed (Linux 6.3 or newer needed): ' + os.strerror(ctypes.get_errno()))\n\
         os.execv(sys.argv[1], sys.argv[1:])\n",
    );
    let wrapper = dir.join("sandcron-mdwe");
    write(
        &wrapper,
        &format!("#!/bin/sh\nexec python3 {} {} \"$@\"\n", script.display(), crate::BIN),
    );
    let status = Command::new("chmod").arg("+x").arg(&wrapper).status().expect("chmod");
    assert!(status.success());
    wrapper.display().to_string()
}

#[tokio::test]
async fn masters_run_with_memory_deny_write_execute_and_workers_cannot() {
    let stores = Stores::start();
    let tools = tempfile::tempdir().expect("temp dir");
    let mut env = stores.env("mdwe");
    env.bin = mdwe_wrapper(tools.path());

    // The master checks core modules and components at upload without
    // compiling them, and serves the API and console as usual.
    let master = env.master("master", "");
    let api = master.api();
    let mut digests = Vec::new();
    for guest in ["hello", "component_hello"] {
        let reply = api
            .raw("POST", "/api/v1/modules", "application/wasm", guest_wat(guest))
            .await;
        assert_eq!(reply.status, 201, "{guest}: {}", reply.body);
        digests.push(reply.body["digest"].as_str().expect("digest").to_owned());
    }
    let job = wasm_job("@yearly", &digests[0], None);
    api.put("/api/v1/jobs/hello", &job).await.expect(201);
    assert_eq!(api.get("/readyz").await.status, 200);

    // The control: a worker under the same restriction cannot compile, so
    // the restriction is real, and the worker unit must not set it.
    let mut restricted = env.worker("restricted", "");
    wait_for_workers(&api, 1).await;
    let status = api.post("/api/v1/jobs/hello/run").await.status;
    assert_eq!(status, 202);
    let run = wait_for("the run on the restricted worker", Duration::from_secs(60), || async {
        api.runs("hello").await.into_iter().find(|r| r["status"] != "running")
    })
    .await;
    assert_eq!(run["status"], "failed", "{run}");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("cannot compile module") && error.contains("executable"),
        "{run}"
    );
    restricted.proc.stop();

    // Without it, the same job runs.
    env.bin = crate::BIN.to_owned();
    let _worker = env.worker("plain", "");
    wait_for("the plain worker alone", Duration::from_secs(30), || async {
        let workers = api.get("/api/v1/workers").await.body;
        let ids: Vec<&str> = workers.as_array()?.iter().filter_map(|w| w["id"].as_str()).collect();
        (ids == ["plain"]).then_some(())
    })
    .await;
    assert_eq!(api.post("/api/v1/jobs/hello/run").await.status, 202);
    let run = wait_for("the run on the plain worker", Duration::from_secs(60), || async {
        api.runs("hello")
            .await
            .into_iter()
            .find(|r| r["worker"] == "plain" && r["status"] != "running")
    })
    .await;
    assert_eq!(run["status"], "succeeded", "{run}");
}
