//! Job model and validation checks.

use jiff::Timestamp;

use super::*;

fn now() -> Timestamp {
    "2026-11-22T00:00:00Z".parse().expect("timestamp")
}

fn shell(json: serde_json::Value) -> Result<JobSpec, serde_json::Error> {
    serde_json::from_value(json)
}

#[test]
fn a_minimal_shell_job_gets_defaults() {
    let spec = shell(serde_json::json!({
        "schedule": "@every 1s",
        "kind": {"shell": {"command": "echo tick"}}
    }))
    .expect("parses");
    assert_eq!(spec.timezone, "UTC");
    assert_eq!(spec.overlap, Overlap::Forbid);
    assert_eq!(
        spec.catchup,
        Catchup {
            policy: CatchupPolicy::Skip,
            window_s: 3600
        }
    );
    assert_eq!(
        spec.retry,
        RetryPolicy {
            max: 0,
            backoff_s: 10,
            max_backoff_s: 3600
        }
    );
    let JobKind::Shell(kind) = &spec.kind else {
        panic!("shell")
    };
    assert_eq!((kind.timeout_s, kind.output_kb), (3600, 1024));
    assert!(spec.validate(now()).is_ok());
}

#[test]
fn the_design_example_body_parses() {
    let spec = shell(serde_json::json!({
        "schedule": "*/5 * * * * *", "timezone": "Europe/Berlin",
        "kind": {"wasm": {"module": format!("sha256:{}", "a".repeat(64)), "args": [], "env": {},
            "limits": {"fuel": 1000000000u64, "memory_mb": 64, "timeout_s": 30, "output_kb": 1024}}},
        "overlap": "forbid", "catchup": {"policy": "latest", "window_s": 300},
        "retry": {"max": 2, "backoff_s": 5}, "paused": false
    }))
    .expect("parses");
    assert_eq!(spec.retry.max_backoff_s, 3600);
    assert!(spec.validate(now()).is_ok());
}

#[test]
fn unknown_fields_and_wrong_types_are_rejected() {
    let err = shell(serde_json::json!({
        "schedule": "@daily", "kind": {"shell": {"command": "x"}}, "colour": "red"
    }))
    .expect_err("unknown field");
    assert!(err.to_string().contains("unknown field `colour`"), "{err}");
    let err = shell(serde_json::json!({
        "schedule": "@daily", "kind": {"shell": {"command": "x", "timeout_s": "soon"}}
    }))
    .expect_err("wrong type");
    assert!(err.to_string().contains("invalid type"), "{err}");
    let err = shell(serde_json::json!({"schedule": "@daily", "kind": {"python": {}}})).expect_err("unknown kind");
    assert!(err.to_string().contains("unknown variant `python`"), "{err}");
}

#[test]
fn validation_names_the_bad_field() {
    let base = serde_json::json!({"schedule": "@daily", "kind": {"shell": {"command": "x"}}});
    let cases: Vec<(serde_json::Value, &str, &str)> = vec![
        (
            serde_json::json!({"schedule": "61 * * * *"}),
            "schedule",
            "minute field",
        ),
        (
            serde_json::json!({"timezone": "Mars/Olympus"}),
            "timezone",
            "unknown time zone",
        ),
        (serde_json::json!({"schedule": "0 0 30 2 *"}), "schedule", "never fires"),
        (
            serde_json::json!({"kind": {"shell": {"command": "  "}}}),
            "kind.shell.command",
            "empty",
        ),
        (
            serde_json::json!({"kind": {"shell": {"command": "x", "timeout_s": 0}}}),
            "kind.shell.timeout_s",
            "between",
        ),
        (
            serde_json::json!({"kind": {"shell": {"command": "x", "env": {"SANDCRON_JOB": "y"}}}}),
            "kind.shell.env.SANDCRON_JOB",
            "reserved",
        ),
        (
            serde_json::json!({"kind": {"shell": {"command": "x", "env": {"1A": "y"}}}}),
            "kind.shell.env.1A",
            "variable names",
        ),
        (serde_json::json!({"retry": {"max": 1000}}), "retry.max", "at most"),
        (
            serde_json::json!({"retry": {"backoff_s": 100, "max_backoff_s": 10}}),
            "retry.max_backoff_s",
            "between",
        ),
        (
            serde_json::json!({"selector": {"zone": "eu west"}}),
            "selector.zone",
            "label",
        ),
    ];
    for (patch, field, message) in cases {
        let mut body = base.clone();
        for (key, value) in patch.as_object().expect("object") {
            body[key] = value.clone();
        }
        let spec = shell(body).expect("parses");
        let err = spec.validate(now()).expect_err(field);
        assert_eq!(err.field, field, "{err}");
        assert!(err.message.contains(message), "{err}");
    }
}

fn field_of(json: serde_json::Value) -> String {
    let spec: JobSpec = serde_json::from_value(json).expect("parses");
    spec.validate(now()).expect_err("invalid").field
}

#[test]
fn secrets_and_config_are_checked_at_their_fields() {
    let module = format!("sha256:{}", "a".repeat(64));
    let wasm = |extra: serde_json::Value, top: serde_json::Value| {
        let mut job = serde_json::json!({"schedule": "@daily", "kind": {"wasm": {"module": module}}});
        for (key, value) in extra.as_object().expect("object") {
            job["kind"]["wasm"][key] = value.clone();
        }
        for (key, value) in top.as_object().expect("object") {
            job[key] = value.clone();
        }
        job
    };
    let cases = [
        (
            wasm(serde_json::json!({}), serde_json::json!({"secrets": {"9BAD": "s"}})),
            "secrets.9BAD",
        ),
        (
            wasm(
                serde_json::json!({}),
                serde_json::json!({"secrets": {"SANDCRON_X": "s"}}),
            ),
            "secrets.SANDCRON_X",
        ),
        (
            wasm(
                serde_json::json!({"config": {"T": "x"}}),
                serde_json::json!({"secrets": {"T": "s"}}),
            ),
            "secrets.T",
        ),
        (
            wasm(
                serde_json::json!({"env": {"T": "x"}, "secrets_as_env": true}),
                serde_json::json!({"secrets": {"T": "s"}}),
            ),
            "secrets.T",
        ),
        (
            wasm(serde_json::json!({"config": {"": "x"}}), serde_json::json!({})),
            "kind.wasm.config.",
        ),
        (
            wasm(
                serde_json::json!({"config": {"SANDCRON_JOB": "x"}}),
                serde_json::json!({}),
            ),
            "kind.wasm.config.SANDCRON_JOB",
        ),
        (
            serde_json::json!({"schedule": "@daily", "secrets": {"T": "s"},
                "kind": {"http": {"url": "https://example.com/"}}}),
            "secrets.T",
        ),
        (
            serde_json::json!({"schedule": "@daily",
                "kind": {"http": {"url": "https://example.com/", "headers": {"A": "${secret:x"}}}}),
            "kind.http.headers.A",
        ),
    ];
    for (job, field) in cases {
        assert_eq!(field_of(job.clone()), field, "{job}");
    }
    // An env clash matters only when the secrets go into the environment.
    let fine = wasm(
        serde_json::json!({"env": {"T": "x"}, "config": {"region": "eu"}}),
        serde_json::json!({"secrets": {"T": "s"}}),
    );
    let spec: JobSpec = serde_json::from_value(fine).expect("parses");
    spec.validate(now()).expect("valid");
    // A secret name that breaks the name rule is refused when parsed.
    let err = serde_json::from_value::<JobSpec>(wasm(
        serde_json::json!({}),
        serde_json::json!({"secrets": {"T": "Bad/Name"}}),
    ))
    .expect_err("bad secret name");
    assert!(err.to_string().contains("secret name \"Bad/Name\""), "{err}");
}

#[test]
fn secret_references_name_each_secret_once_with_its_first_field() {
    let spec: JobSpec = serde_json::from_value(serde_json::json!({
        "schedule": "@daily",
        "kind": {"http": {
            "url": "https://example.com/",
            "headers": {"Authorization": "Bearer ${secret:api}", "X-Other": "${secret:api}${secret:second}"},
            "body": "${secret:third} ${secret:api}",
        }},
    }))
    .expect("parses");
    let references: Vec<(String, String)> = spec
        .secret_references()
        .into_iter()
        .map(|(field, name)| (field, name.to_string()))
        .collect();
    assert_eq!(
        references,
        [
            ("kind.http.headers.Authorization".to_owned(), "api".to_owned()),
            ("kind.http.headers.X-Other".to_owned(), "second".to_owned()),
            ("kind.http.body".to_owned(), "third".to_owned()),
        ]
    );
}

#[test]
fn a_wasm_job_written_without_the_new_fields_reads_back_unchanged() {
    let module = format!("sha256:{}", "b".repeat(64));
    let json = serde_json::json!({"schedule": "@daily", "kind": {"wasm": {"module": module}}});
    let spec: JobSpec = serde_json::from_value(json).expect("parses");
    let JobKind::Wasm(wasm) = &spec.kind else {
        panic!("wasm")
    };
    assert!(wasm.context_env && !wasm.secrets_as_env && wasm.config.is_empty());
    let written = serde_json::to_value(&spec).expect("serialises");
    for absent in ["config", "secrets_as_env", "context_env"] {
        assert!(
            written["kind"]["wasm"].get(absent).is_none(),
            "{absent} written: {written}"
        );
    }
    assert!(written.get("secrets").is_none(), "{written}");
}

#[test]
fn a_worker_s_caps_lower_a_job_s_limits_and_say_so() {
    let caps = RunCaps {
        timeout_s: 600,
        output_kb: 256,
        fuel: 1_000_000,
        memory_mb: 128,
    };
    let wasm = JobKind::Wasm(WasmJob::new(crate::ids::ModuleDigest::of(b"m")));
    let (clamped, notes) = wasm.clamped(&caps);
    let JobKind::Wasm(job) = clamped else { panic!("wasm") };
    assert_eq!(
        (
            job.limits.timeout_s,
            job.limits.output_kb,
            job.limits.fuel,
            job.limits.memory_mb
        ),
        (300, 256, 1_000_000, 64),
        "only what is above a cap is lowered"
    );
    assert_eq!(notes, ["output_kb 1024 → 256", "fuel 10000000000 → 1000000"]);
    let shell = JobKind::Shell(ShellJob {
        command: "true".into(),
        env: Default::default(),
        timeout_s: 3600,
        output_kb: 10,
    });
    let (clamped, notes) = shell.clamped(&caps);
    assert_eq!(clamped.timeout_s(), 600);
    assert_eq!(notes, ["timeout_s 3600 → 600"]);
    let (unchanged, notes) = shell.clamped(&RunCaps::default());
    assert_eq!(unchanged, shell);
    assert!(notes.is_empty());
}

/// The compact in-memory forms (`Rare`, `Interned`) write the JSON a plain
/// field would: empty collections where they were written before, absent
/// where they were skipped, and a full job reads back equal.
#[test]
fn compact_fields_keep_the_json_shape() {
    let module = format!("sha256:{}", "c".repeat(64));
    let plain = serde_json::json!({"schedule": "*/5 * * * *", "kind": {"wasm": {"module": module}}});
    let spec: JobSpec = serde_json::from_value(plain).expect("parses");
    let written = serde_json::to_value(&spec).expect("serialises");
    assert_eq!(written["schedule"], "*/5 * * * *");
    assert_eq!(written["timezone"], "UTC");
    assert_eq!(written["selector"], serde_json::json!({}));
    assert_eq!(written["description"], "");
    let wasm = &written["kind"]["wasm"];
    assert_eq!(wasm["args"], serde_json::json!([]));
    assert_eq!(wasm["env"], serde_json::json!({}));
    assert_eq!(wasm["dirs"], serde_json::json!([]));
    assert_eq!(wasm["network"]["requests"], 100);
    for absent in ["egress", "config"] {
        assert!(wasm.get(absent).is_none(), "{absent} written: {wasm}");
    }
    for absent in ["on_success", "on_failure", "secrets"] {
        assert!(written.get(absent).is_none(), "{absent} written: {written}");
    }

    let full = serde_json::json!({
        "schedule": "0 * * * *",
        "timezone": "Europe/Berlin",
        "selector": {"zone": "a"},
        "description": "hourly",
        "on_success": ["next-job"],
        "on_failure": ["page-someone"],
        "secrets": {"TOKEN": "api-token"},
        "kind": {"wasm": {
            "module": module,
            "args": ["x"],
            "env": {"A": "1"},
            "dirs": [{"grant": "data", "guest_path": "/data", "writable": true}],
            "egress": ["https://example.com"],
            "network": {"requests": 3},
            "config": {"k": "v"}
        }}
    });
    let spec: JobSpec = serde_json::from_value(full).expect("parses");
    let again: JobSpec = serde_json::from_value(serde_json::to_value(&spec).expect("serialises")).expect("reparses");
    assert_eq!(again, spec);
    assert_eq!(spec.selector.get("zone").map(String::as_str), Some("a"));
    let JobKind::Wasm(wasm) = &spec.kind else {
        panic!("wasm")
    };
    assert_eq!(wasm.network.requests, 3);
    assert_eq!(wasm.network.concurrent, NetworkLimits::default().concurrent);
    assert_eq!(wasm.dirs[0].guest_path, "/data");
}

/// A job as every worker keeps it (one per job in the cluster) stays
/// small; the bench's structure table measures its heap.
#[test]
fn a_parsed_job_is_compact() {
    assert!(
        std::mem::size_of::<Job>() <= 384,
        "Job is {} bytes",
        std::mem::size_of::<Job>()
    );
    assert!(
        std::mem::size_of::<JobKind>() <= 128,
        "JobKind is {} bytes",
        std::mem::size_of::<JobKind>()
    );
}
