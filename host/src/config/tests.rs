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

/// The per-item sizes `Quotas::worst_case_bytes` uses are measured here from
/// the real encodings (each with room for etcd's own bookkeeping of a key:
/// revisions, lease, B-tree), and the defaults keep the worst case under
/// etcd's default 2 GiB quota with at least 512 MiB left for history.
#[test]
fn the_quotas_bound_what_the_api_can_put_in_etcd() {
    use crate::coord::TriggerRequest;
    let name = "j".repeat(63);
    let prefix = "/sandcron/";
    // One pending run, with every optional field.
    let trigger: TriggerRequest = serde_json::from_value(serde_json::json!({
        "requested_at": "2026-12-06T12:00:00.123456789Z",
        "requested_by": "t".repeat(128),
        "trigger": "dependency",
        "tick": "2026-12-06T12:00:00.123456789Z",
        "parent": {"job": name, "run_id": "01JD0000000000000000000000", "status": "succeeded"},
        "depth": 16,
        "shard": {"index": 999, "count": 1000, "group": "01JD0000000000000000000000"},
        "target_worker": "w".repeat(63),
        "attempt": 100,
        "not_before": "2026-12-06T12:00:00.123456789Z",
    }))
    .expect("a trigger");
    let trigger_bytes = serde_json::to_vec(&trigger).expect("encodes").len()
        + format!("{prefix}trigger/{name}/01JD0000000000000000000000").len();
    assert!(2 * trigger_bytes as u64 <= TRIGGER_BYTES, "{trigger_bytes}");

    // A job's bookkeeping and claim state, with a full catch-up queue.
    let ticks: Vec<String> = (0..100).map(|_| "2026-12-06T12:00:00.123456789Z".to_owned()).collect();
    let claim = serde_json::json!({"last_tick": ticks[0], "lease": i64::MAX, "skipped": true, "catchup": ticks});
    let meta = serde_json::json!({"created_at": ticks[0], "updated_at": ticks[0], "active_since": ticks[0],
        "written_by": "operator"});
    let job_overhead = claim.to_string().len()
        + meta.to_string().len()
        + format!("{prefix}jobs/{name}").len()
        + format!("{prefix}state/{name}").len();
    assert!(2 * job_overhead as u64 <= JOB_OVERHEAD_BYTES, "{job_overhead}");

    // A state key: the store key around the counted key, percent-encoded
    // at its worst (every byte outside the plain alphabet).
    let key = crate::kvstate::StateKey::new(&"/".repeat(256)).expect("a key");
    let store_key = format!("{prefix}kv/{name}/k/{}", key.encoded());
    let key_overhead = store_key.len() - 256;
    assert!(key_overhead as u64 + 64 <= STATE_KEY_OVERHEAD_BYTES, "{key_overhead}");

    // A secret at the value limit, sealed.
    let ring =
        crate::secret::Keyring::parse(&crate::secret::Keyring::new_key_line().expect("key"), "k").expect("keyring");
    let secret_name = crate::ids::SecretName::new(&name).expect("name");
    let sealed = ring
        .seal(
            &secret_name,
            &crate::secret::SecretValue::new(vec![b'x'; crate::secret::MAX_SECRET_BYTES]),
        )
        .expect("seal");
    let stored = crate::coord::StoredSecret {
        sealed,
        updated_at: jiff::Timestamp::now(),
        written_by: "t".repeat(128),
    };
    let secret_bytes = serde_json::to_vec(&stored).expect("encodes").len() + format!("{prefix}secrets/{name}").len();
    assert!(secret_bytes as u64 <= SECRET_BYTES, "{secret_bytes}");

    let worst = Quotas::default().worst_case_bytes(&crate::kvstate::StateQuota::default());
    assert!(worst <= (2048 - 512) << 20, "{} MiB", worst >> 20);
}

#[test]
fn directory_grants_are_paths_or_tables_the_worker_controls() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().display();
    let file = parse_file(&format!(
        "[worker.dirs]\nopen = {path:?}\nreports = {{ path = {path:?}, jobs = [\"report-*\", \"audit\"] }}\n\
         scratch = {{ path = {path:?}, writable = true }}\n"
    ))
    .expect("parses");
    let grants = super::settings::checked_dirs(&file.worker.dirs).expect("valid");
    assert!(
        grants["open"].writable && grants["open"].jobs.is_empty(),
        "a bare path keeps its meaning"
    );
    assert!(!grants["reports"].writable, "a table grant is read-only unless it says");
    assert_eq!(grants["reports"].jobs, ["report-*", "audit"]);
    assert!(grants["scratch"].writable);
    let bad = parse_file(&format!(
        "[worker.dirs]\nx = {{ path = {path:?}, jobs = [\"Bad Name\"] }}\n"
    ))
    .expect("parses");
    let err = super::settings::checked_dirs(&bad.worker.dirs)
        .expect_err("bad pattern")
        .to_string();
    assert!(err.contains("neither a job name nor a prefix"), "{err}");
}

#[test]
fn a_webhook_channel_is_signed_unless_it_says_unsigned() {
    let channel = |fields: &str| {
        let file = parse_file(&format!(
            "[alerts.channels.ops]\nwebhook = {{ url = \"https://hooks.example.com/x\"{fields} }}\n"
        ))
        .expect("parses");
        super::settings::alerts(&file.alerts).map(|_| ())
    };
    channel(", secret = \"a-long-enough-secret\"").expect("signed");
    channel(", unsigned = true").expect("explicitly unsigned");
    let err = channel("").expect_err("no secret").to_string();
    assert!(err.contains("alerts.channels.ops.webhook.secret is required"), "{err}");
    let err = channel(", secret = \"short\"").expect_err("short").to_string();
    assert!(err.contains("at least 16 characters"), "{err}");
    let err = channel(", secret = \"a-long-enough-secret\", unsigned = true")
        .expect_err("both")
        .to_string();
    assert!(err.contains("contradict"), "{err}");
}

#[test]
fn a_stopping_worker_replays_its_spool_for_30_s_unless_told() {
    let logs = |text: &str| super::settings::logs(&parse_file(text).expect("parses").logs);
    assert_eq!(logs("").expect("default").shutdown_replay, Duration::from_secs(30));
    assert_eq!(
        logs("[logs]\nshutdown_replay_s = 0\n").expect("zero").shutdown_replay,
        Duration::ZERO
    );
    assert_eq!(
        logs("[logs]\nshutdown_replay_s = 600\n")
            .expect("longer")
            .shutdown_replay,
        Duration::from_secs(600)
    );
    let err = logs("[logs]\nshutdown_replay_s = 86401\n")
        .expect_err("too long")
        .to_string();
    assert!(
        err.contains("logs.shutdown_replay_s must be between 0 and 86400, got 86401"),
        "{err}"
    );
}
