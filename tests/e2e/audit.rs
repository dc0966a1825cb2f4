//! The audit log end to end, on a real cluster (etcd, a MongoDB-wire server,
//! a master with three tokens and a worker): the writes of an operator and an
//! admin come back from `GET /api/v1/audit` newest first with who made them
//! and the job revisions they went between, filtered by job and actor, in
//! cursor pages that cover everything once; a viewer may not read it; the
//! `sandcron audit` command prints the same entries as a table and as JSON
//! lines; and no entry holds the secret's value or the job's body.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use sandcron_tests::cluster::metric_sample;
use sandcron_tests::{Api, wait_for, wasm_job};
use serde_json::{Value, json};

use crate::cluster::{Stores, wait_for_workers};
use crate::{BIN, guest_wat};

const VIEWER: &str = "viewer-token-audit-e2e-0123";
const OPERATOR: &str = "operator-token-audit-e2e-0123";
const ADMIN: &str = "admin-token-audit-e2e-0123";

/// A value no audit entry may hold.
const SECRET_VALUE: &str = "audit-e2e-S3cr3t-4f1d9c";
/// Text only the job's body holds: an entry names changed fields, never values.
const BODY_MARKER: &str = "audit-e2e-body-7a3e55";

const JOB: &str = "audited";

/// `[[auth.tokens]]` for the viewer `ro`, the operator `ops` and the admin `root`.
fn tokens_toml() -> String {
    [
        ("ro", "viewer", VIEWER),
        ("ops", "operator", OPERATOR),
        ("root", "admin", ADMIN),
    ]
    .iter()
    .map(|(name, role, token)| format!("[[auth.tokens]]\nname = \"{name}\"\nrole = \"{role}\"\ntoken = \"{token}\"\n"))
    .collect()
}

/// Every entry of the audit log, newest first, as `api` reads it in one page.
async fn all_entries(api: &Api, query: &str) -> Vec<Value> {
    let page = api.get(&format!("/api/v1/audit?limit=1000{query}")).await.expect(200);
    assert!(page["next_cursor"].is_null(), "{page}");
    page["entries"].as_array().cloned().expect("entries")
}

fn actions(entries: &[Value]) -> Vec<&str> {
    entries.iter().map(|e| e["action"].as_str().unwrap_or("?")).collect()
}

fn ids(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect()
}

/// The entry with `action` (there is one of each here).
#[track_caller]
fn entry<'a>(entries: &'a [Value], action: &str) -> &'a Value {
    let found: Vec<&Value> = entries.iter().filter(|e| e["action"] == action).collect();
    assert_eq!(found.len(), 1, "one {action} entry: {entries:?}");
    found[0]
}

/// Runs `sandcron --server <base> audit <args>` with the operator's token;
/// returns its exit code, stdout and stderr.
fn sandcron_audit(base: &str, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(BIN)
        .arg("--server")
        .arg(base)
        .arg("audit")
        .args(args)
        .env("SANDCRON_TOKEN", OPERATOR)
        .env_remove("SANDCRON_SERVER")
        .output()
        .expect("run sandcron audit");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_audit_log_records_every_write_and_reads_back_filtered_paged_and_through_the_cli() {
    let stores = Stores::start();
    let env = stores.env("audit");
    let key = env.dir.join("secrets.key");
    let keygen = Command::new(BIN)
        .args(["secret", "keygen", "--out"])
        .arg(&key)
        .output()
        .expect("keygen");
    assert!(keygen.status.success(), "{}", String::from_utf8_lossy(&keygen.stderr));
    let secrets = format!("[secrets]\nkey_file = {:?}\n", key.display().to_string());
    let master = env.master("master", &format!("{}{secrets}", tokens_toml()));
    let _worker = env.worker("w1", &format!("lease_ttl_s = 3\n{secrets}"));
    let viewer = Api::new(&master.base, Some(VIEWER));
    let operator = Api::new(&master.base, Some(OPERATOR));
    let admin = Api::new(&master.base, Some(ADMIN));
    wait_for_workers(&viewer, 1).await;

    // The writes: the operator uploads, creates, pauses and runs; the admin
    // replaces and deletes the job, and sets and deletes a secret.
    let digest = operator.upload_module(guest_wat("hello")).await;
    let mut body = wasm_job("0 0 1 1 *", &digest, None);
    body["description"] = json!(format!("first version {BODY_MARKER}"));
    let created = operator.put(&format!("/api/v1/jobs/{JOB}"), &body).await.expect(201);
    body["schedule"] = json!("0 0 2 1 *");
    body["description"] = json!(format!("second version {BODY_MARKER}"));
    let replaced = admin.put(&format!("/api/v1/jobs/{JOB}"), &body).await.expect(200);
    let paused = operator.post(&format!("/api/v1/jobs/{JOB}/pause")).await.expect(200);
    let revision = |view: &Value| view["revision"].as_i64().expect("revision");
    let (r1, r2, r3) = (revision(&created), revision(&replaced), revision(&paused));
    assert!(r1 < r2 && r2 < r3, "{r1} {r2} {r3}");
    let requested = operator.post(&format!("/api/v1/jobs/{JOB}/run")).await.expect(202);
    let run_id = requested["run_id"].as_str().expect("run id").to_owned();
    // The run ends before the job goes, so that the delete kills nothing.
    let run = wait_for(&format!("run {run_id} to end"), Duration::from_secs(60), || async {
        let run = viewer.get(&format!("/api/v1/runs/{run_id}")).await;
        (run.status == 200 && run.body["status"] != "running").then_some(run.body)
    })
    .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    admin.delete(&format!("/api/v1/jobs/{JOB}")).await.expect(204);
    admin.put_secret("billing-api", SECRET_VALUE).await;
    admin.delete("/api/v1/secrets/billing-api").await.expect(204);

    // (a) Every write, newest first, by whom, between which revisions.
    let expected = [
        "secret_delete",
        "secret_set",
        "job_delete",
        "run_now",
        "job_pause",
        "job_replace",
        "job_create",
        "module_upload",
    ];
    let entries = wait_for("the eight audit entries", Duration::from_secs(30), || async {
        let entries = all_entries(&operator, "").await;
        (entries.len() >= expected.len()).then_some(entries)
    })
    .await;
    assert_eq!(actions(&entries), expected);
    let mut sorted = ids(&entries);
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids(&entries), sorted, "ids descend");
    for entry in &entries {
        let (actor, role) = match entry["action"].as_str() {
            Some("module_upload" | "job_create" | "job_pause" | "run_now") => ("ops", "operator"),
            _ => ("root", "admin"),
        };
        assert_eq!(
            (&entry["actor"], &entry["role"]),
            (&json!(actor), &json!(role)),
            "{entry}"
        );
        // The peer of the connection: the test, on loopback.
        assert!(
            entry["remote"].as_str().is_some_and(|r| r.starts_with("127.0.0.1:")),
            "{entry}"
        );
        assert!(entry["expire_at"].as_str().is_some(), "{entry}");
    }
    assert_eq!(entry(&entries, "module_upload")["target"], digest);
    let create = entry(&entries, "job_create");
    let replace = entry(&entries, "job_replace");
    let pause = entry(&entries, "job_pause");
    let run_now = entry(&entries, "run_now");
    let delete = entry(&entries, "job_delete");
    for job_entry in [create, replace, pause, run_now, delete] {
        assert_eq!((&job_entry["target"], &job_entry["job"]), (&json!(JOB), &json!(JOB)));
    }
    assert!(create.get("revision_before").is_none(), "{create}");
    assert_eq!(create["revision_after"], r1);
    assert_eq!(
        replace["revision_before"], create["revision_after"],
        "a create's after is the replace's before"
    );
    assert_eq!(replace["revision_after"], r2);
    assert_eq!(replace["changed"], json!(["description", "schedule"]));
    assert_eq!(
        (&pause["revision_before"], &pause["revision_after"]),
        (&json!(r2), &json!(r3))
    );
    assert_eq!(
        (&run_now["revision_before"], &run_now["revision_after"]),
        (&json!(r3), &json!(r3))
    );
    assert_eq!(run_now["runs"], json!([run_id]));
    assert_eq!(delete["revision_before"], r3);
    assert!(delete.get("revision_after").is_none(), "{delete}");
    assert_eq!(entry(&entries, "secret_set")["target"], "billing-api");
    assert_eq!(entry(&entries, "secret_delete")["target"], "billing-api");

    // (b) Filters.
    let by_job = all_entries(&operator, &format!("&job={JOB}")).await;
    assert_eq!(
        actions(&by_job),
        ["job_delete", "run_now", "job_pause", "job_replace", "job_create"]
    );
    let by_admin = all_entries(&operator, "&actor=root").await;
    assert_eq!(
        actions(&by_admin),
        ["secret_delete", "secret_set", "job_delete", "job_replace"]
    );
    let both = all_entries(&admin, &format!("&job={JOB}&actor=ops")).await;
    assert_eq!(actions(&both), ["run_now", "job_pause", "job_create"]);
    assert!(all_entries(&operator, "&actor=ro").await.is_empty());

    // (c) Pages of two walk every entry once, in order.
    let mut walked = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/api/v1/audit?limit=2&cursor={cursor}"),
            None => "/api/v1/audit?limit=2".to_owned(),
        };
        let page = operator.get(&path).await.expect(200);
        let page_entries = page["entries"].as_array().cloned().expect("entries");
        assert!(page_entries.len() <= 2, "{page}");
        walked.extend(page_entries);
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let walked_ids = ids(&walked);
    let distinct: BTreeSet<&String> = walked_ids.iter().collect();
    assert_eq!(distinct.len(), walked_ids.len(), "no entry twice: {walked_ids:?}");
    assert_eq!(walked_ids, ids(&entries));
    assert_eq!(pages, 4);

    // (d) Viewers may not read it.
    viewer.get("/api/v1/audit").await.expect_error(
        403,
        "forbidden",
        "reading the audit log needs the operator role; token \"ro\" has the viewer role",
    );

    // (e) The CLI: a table of the job's entries, and the same as JSON lines.
    let (code, out, err) = sandcron_audit(&master.base, &["--job", JOB]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["TIME", "ACTOR", "ACTION", "TARGET", "REVISIONS", "DETAIL"]);
    for (line, action) in lines[1..].iter().zip(actions(&by_job)) {
        assert!(line.contains(&format!(" {action} ")), "{action}: {line}");
    }
    assert!(
        lines[1].contains("root (admin)") && lines[1].contains(&format!("r{r3}→")),
        "{out}"
    );
    assert!(
        lines[2].contains("ops (operator)") && lines[2].contains(&run_id),
        "{out}"
    );
    assert!(lines[4].contains(&format!("r{r1}→r{r2}")), "{out}");
    assert!(lines[4].contains("changed description, schedule"), "{out}");
    assert!(lines[5].contains(&format!("→r{r1}")), "{out}");
    let (code, out, err) = sandcron_audit(&master.base, &["--job", JOB, "--json"]);
    assert_eq!(code, 0, "{err}");
    let parsed: Vec<Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert_eq!(parsed, by_job);
    // A limit below what matches: the newest entries, and a word on stderr.
    let (code, out, err) = sandcron_audit(&master.base, &["--since", "1h", "--limit", "3", "--json"]);
    assert_eq!(code, 0, "{err}");
    let parsed: Vec<Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).expect("json"))
        .collect();
    assert_eq!(parsed, entries[..3]);
    assert!(err.contains("more match"), "{err}");
    let (code, _, err) = sandcron_audit(&master.base, &["--action", "job_rename"]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown audit action \"job_rename\""), "{err}");

    // (f) Neither the secret's value nor the job's body in any entry.
    let text = Value::Array(entries.clone()).to_string();
    assert!(
        !text.contains(SECRET_VALUE),
        "a secret value reached the audit log: {text}"
    );
    assert!(
        !text.contains(BODY_MARKER),
        "a job's body reached the audit log: {text}"
    );

    // Nothing was dropped, and everything recorded has reached MongoDB.
    let metrics = viewer.get("/metrics").await.expect(200);
    let metrics = metrics.as_str().expect("metrics text");
    assert_eq!(
        metric_sample(metrics, "sandcron_audit_recorded_total"),
        Some(8.0),
        "{metrics}"
    );
    assert_eq!(
        metric_sample(metrics, "sandcron_audit_dropped_total"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(metric_sample(metrics, "sandcron_audit_backlog"), Some(0.0), "{metrics}");
}
