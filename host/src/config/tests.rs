//! Configuration checks: unknown keys, precedence, validation messages.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::auth::Role;

use super::settings::tokens;
use super::*;

#[test]
fn unknown_keys_are_rejected_by_name() {
    let err = parse_file("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").expect_err("unknown");
    assert!(err.to_string().contains("unknown field `lisen`"), "{err}");
    let err = parse_file("[wroker]\n").expect_err("unknown table");
    assert!(err.to_string().contains("unknown field `wroker`"), "{err}");
}

#[test]
fn defaults_are_loopback_without_tokens_and_native_allowed() {
    let config = DevArgs::default().load().expect("defaults");
    assert_eq!(config.server.listen, DEFAULT_LISTEN.parse().expect("addr"));
    assert!(config.server.tokens.is_empty());
    assert!(config.worker.allow_native);
    assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    let config = DevArgs {
        no_native: true,
        ..DevArgs::default()
    }
    .load()
    .expect("no native");
    assert!(!config.worker.allow_native);
}

#[test]
fn a_public_bind_needs_tokens_or_insecure() {
    let args = DevArgs {
        listen: Some("0.0.0.0:8070".into()),
        ..DevArgs::default()
    };
    let err = args.load().expect_err("public bind");
    assert!(err.to_string().contains("without auth tokens"), "{err}");
    let args = DevArgs { insecure: true, ..args };
    assert!(args.load().is_ok());
}

#[test]
fn tokens_are_hashed_and_validated() {
    let file = parse_file("[[auth.tokens]]\nname = \"ci\"\nrole = \"operator\"\ntoken = \"0123456789abcdef\"\n")
        .expect("parses");
    let parsed = tokens(&file.auth).expect("valid");
    assert_eq!(parsed[0].role, Role::Operator);
    assert_eq!(parsed[0].sha256, <[u8; 32]>::from(Sha256::digest(b"0123456789abcdef")));
    assert!(
        !format!("{:?}", parsed[0]).contains("0123"),
        "debug output must not leak"
    );
    let file = parse_file("[[auth.tokens]]\nname = \"x\"\nrole = \"admin\"\ntoken = \"short\"\n").expect("parses");
    assert!(tokens(&file.auth).is_err());
    let file = parse_file("[[auth.tokens]]\nname = \"x\"\nrole = \"root\"\ntoken = \"0123456789abcdef\"\n")
        .expect_err("unknown role");
    assert!(file.to_string().contains("unknown variant `root`"), "{file}");
}

#[test]
fn roles_are_ordered() {
    assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("c.toml");
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn a_worker_needs_its_stores_and_does_not_run_native_processes_by_default() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = WorkerArgs {
        cluster: ClusterArgs {
            config: Some(write(dir.path(), "")),
            ..Default::default()
        },
        ..Default::default()
    };
    let err = args.load().expect_err("no etcd");
    assert!(err.to_string().contains("no etcd endpoints"), "{err}");
    let config = write(
        dir.path(),
        "[etcd]\nendpoints = [\"http://127.0.0.1:2379\", \"http://127.0.0.2:2379\"]\nprefix = \"/prod/\"\n\
         [mongodb]\nuri = \"mongodb://127.0.0.1:27017\"\n[worker]\ncapacity = 8\nlease_ttl_s = 5\n",
    );
    let args = WorkerArgs {
        cluster: ClusterArgs {
            config: Some(config.clone()),
            ..Default::default()
        },
        id: Some("w-1".into()),
        ..Default::default()
    };
    let loaded = args.load().expect("valid");
    assert!(
        !loaded.worker.allow_native,
        "cluster workers forbid native processes unless configured"
    );
    assert_eq!(loaded.worker.capacity, 8);
    assert_eq!(loaded.worker.id.as_deref(), Some("w-1"));
    assert_eq!(loaded.stores.etcd.endpoints.len(), 2);
    assert_eq!(loaded.stores.prefix, "/prod/");
    assert_eq!(loaded.stores.mongo.database, "sandcron");
    assert_eq!(loaded.lease_ttl, Duration::from_secs(5));
    // Flags (and their environment variables) override the file.
    let args = WorkerArgs {
        cluster: ClusterArgs {
            config: Some(config),
            etcd_endpoints: vec!["http://10.0.0.9:2379".into()],
            mongodb_uri: Some("mongodb://db:27017".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let loaded = args.load().expect("valid");
    assert_eq!(loaded.stores.etcd.endpoints, vec!["http://10.0.0.9:2379".to_owned()]);
    assert_eq!(loaded.stores.mongo.uri, "mongodb://db:27017");
}

#[test]
fn cluster_settings_are_checked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        (
            "[etcd]\nendpoints = [\"127.0.0.1:2379\"]\n[mongodb]\nuri = \"mongodb://x\"\n",
            "must start with http://",
        ),
        ("[etcd]\nendpoints = [\"http://x:1\"]\n", "no MongoDB URI"),
        (
            "[etcd]\nendpoints = [\"http://x:1\"]\n[mongodb]\nuri = \"postgres://x\"\n",
            "must start with mongodb://",
        ),
        (
            "[etcd]\nendpoints = [\"http://x:1\"]\nprefix = \"nope\"\n[mongodb]\nuri = \"mongodb://x\"\n",
            "etcd.prefix",
        ),
        (
            "[etcd]\nendpoints = [\"http://x:1\"]\nusername = \"u\"\n[mongodb]\nuri = \"mongodb://x\"\n",
            "go together",
        ),
        (
            "[etcd]\nendpoints = [\"http://x:1\"]\nca_file = \"/nonexistent/ca.pem\"\n[mongodb]\nuri = \"mongodb://x\"\n",
            "cannot read",
        ),
        (
            "[etcd]\nendpoints = [\"http://x:1\"]\n[mongodb]\nuri = \"mongodb://x\"\nport = 1\n",
            "unknown field `port`",
        ),
    ];
    for (text, expected) in cases {
        let args = MasterArgs {
            cluster: ClusterArgs {
                config: Some(write(dir.path(), text)),
                ..Default::default()
            },
            ..Default::default()
        };
        let err = format!("{:#}", args.load().expect_err(text));
        assert!(err.contains(expected), "{text}: {err}");
    }
}

#[test]
fn state_quotas_default_sanely_and_stay_within_one_store_write() {
    let defaults = super::settings::worker(&parse_file("").expect("parses").worker, false, 30).expect("defaults");
    assert_eq!(defaults.state_quota, crate::kvstate::StateQuota::default());
    let file = parse_file("[worker.state]\nmax_keys = 3\nmax_value_kb = 1\nmax_job_kb = 2\n").expect("parses");
    let quota = super::settings::worker(&file.worker, false, 30)
        .expect("valid")
        .state_quota;
    assert_eq!(
        (quota.max_keys, quota.max_value_bytes, quota.max_job_bytes),
        (3, 1024, 2048)
    );
    let file = parse_file("[worker.state]\nmax_value_kb = 1025\n").expect("parses");
    let err = super::settings::worker(&file.worker, false, 30).expect_err("too large");
    assert!(
        err.to_string()
            .contains("worker.state.max_value_kb must be between 1 and 1024"),
        "{err}"
    );
    let file = parse_file("[worker.state]\nmax_keys = 0\n").expect("parses");
    assert!(super::settings::worker(&file.worker, false, 30).is_err());
    let err = parse_file("[worker.state]\nmax_key = 3\n").expect_err("unknown");
    assert!(err.to_string().contains("unknown field `max_key`"), "{err}");
}
