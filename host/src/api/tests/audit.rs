//! The audit log through the API: every write route records one entry with
//! who, what, which target and the job revisions; refused and invalid
//! writes record nothing; a secret's value never appears; reading needs the
//! operator role, filters and pages; and entries wait in the outbox while
//! the log store is down, then arrive.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use jiff::Timestamp;
use serde_json::{Value, json};

use super::{ADMIN, AUDIT_RETENTION, OPERATOR, TestApi, VIEWER, wasm_job};
use crate::api::audit::AuditLog;
use crate::audit::AuditEntry;
use crate::auth::Role;
use crate::ids::{JobName, RunId};
use crate::kvstate::{StateKey, StateQuota};
use crate::logstore::sqlite::SqliteLogStore;
use crate::logstore::{AuditQuery, LogStore, LogStoreError};
use crate::run::Trigger;
use crate::testkit::{Call, Tap};

/// A value no audit entry may ever hold.
const SECRET_VALUE: &str = "hunter2-audit-must-never-see-this-8d21";

impl TestApi {
    /// The audit log as `token` reads it with `query` (after this server's
    /// entries were moved into the log store).
    async fn audit(&self, query: &str, token: &str) -> super::Reply {
        self.call(Method::GET, &format!("/api/v1/audit{query}"), Some(token), Value::Null)
            .await
    }

    /// The entries of the whole audit log, newest first.
    async fn audit_entries(&self) -> Vec<Value> {
        let page = self.audit("?limit=1000", OPERATOR).await.expect(StatusCode::OK);
        page["entries"].as_array().cloned().unwrap_or_default()
    }

    /// Stores a secret as the admin.
    async fn put_secret(&self, name: &str, value: &str) -> super::Reply {
        let request = Request::builder()
            .method(Method::PUT)
            .uri(format!("/api/v1/secrets/{name}"))
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from(value.to_owned()))
            .expect("request");
        self.send(request).await
    }

    /// Publishes a running run of `job` (as a worker would) and returns its id.
    async fn start_run(&self, job: &str) -> RunId {
        let run_id = RunId::generate();
        self.publish_running(job, run_id, "w1", Trigger::Manual).await;
        run_id
    }
}

/// The fields an entry must have: (actor, role, action, target).
#[track_caller]
fn assert_entry(entry: &Value, actor: &str, role: &str, action: &str, target: &str) {
    assert_eq!(entry["actor"], actor, "{entry}");
    assert_eq!(entry["role"], role, "{entry}");
    assert_eq!(entry["action"], action, "{entry}");
    assert_eq!(entry["target"], target, "{entry}");
    assert!(entry["id"].as_str().is_some_and(|id| id.len() == 26), "{entry}");
    assert!(entry["at"].as_str().is_some(), "{entry}");
    assert!(entry["expire_at"].as_str().is_some(), "{entry}");
}

#[tokio::test]
async fn every_write_route_records_who_did_what_to_which_revision() {
    let api = TestApi::new();
    api.register_worker("w1").await;
    // Modules.
    let digest = api.upload_demo().await;
    // Jobs: create, replace, pause twice, resume.
    let created = api
        .call(Method::PUT, "/api/v1/jobs/audited", Some(OPERATOR), wasm_job(&digest))
        .await
        .expect(StatusCode::CREATED);
    let r1 = created["revision"].as_i64().expect("revision");
    let mut body = wasm_job(&digest);
    body["schedule"] = json!("*/5 * * * *");
    body["description"] = json!("now every five minutes");
    let replaced = api
        .call(Method::PUT, "/api/v1/jobs/audited", Some(OPERATOR), body)
        .await
        .expect(StatusCode::OK);
    let r2 = replaced["revision"].as_i64().expect("revision");
    let paused = api
        .call(Method::POST, "/api/v1/jobs/audited/pause", Some(OPERATOR), Value::Null)
        .await
        .expect(StatusCode::OK);
    let r3 = paused["revision"].as_i64().expect("revision");
    api.call(Method::POST, "/api/v1/jobs/audited/pause", Some(ADMIN), Value::Null)
        .await
        .expect(StatusCode::OK);
    let resumed = api
        .call(Method::POST, "/api/v1/jobs/audited/resume", Some(OPERATOR), Value::Null)
        .await
        .expect(StatusCode::OK);
    let r4 = resumed["revision"].as_i64().expect("revision");
    // Run now and kill.
    let requested = api
        .call(Method::POST, "/api/v1/jobs/audited/run", Some(OPERATOR), Value::Null)
        .await
        .expect(StatusCode::ACCEPTED);
    let running = api.start_run("audited").await;
    api.call(
        Method::POST,
        &format!("/api/v1/jobs/audited/kill?run_id={running}"),
        Some(OPERATOR),
        Value::Null,
    )
    .await
    .expect(StatusCode::ACCEPTED);
    // State: one key deleted, then all.
    let job = JobName::new("audited").expect("name");
    let quota = StateQuota::default();
    let coord = &api.state.coord;
    coord.state_open(&job, 1, &quota).await.expect("open");
    for key in ["count", "last"] {
        let key = StateKey::new(key).expect("key");
        coord
            .state_set(&job, 1, &quota, &key, b"1".to_vec())
            .await
            .expect("set");
    }
    api.call(
        Method::DELETE,
        "/api/v1/jobs/audited/state/count",
        Some(OPERATOR),
        Value::Null,
    )
    .await
    .expect(StatusCode::NO_CONTENT);
    api.call(
        Method::DELETE,
        "/api/v1/jobs/audited/state",
        Some(OPERATOR),
        Value::Null,
    )
    .await
    .expect(StatusCode::OK);
    // Secrets: set, replace, re-seal, delete.
    for status in [StatusCode::CREATED, StatusCode::OK] {
        let reply = api.put_secret("billing-api", SECRET_VALUE).await;
        assert_eq!(reply.status, status, "{reply:?}");
    }
    api.call(Method::POST, "/api/v1/secrets/rekey", Some(ADMIN), Value::Null)
        .await
        .expect(StatusCode::OK);
    api.call(Method::DELETE, "/api/v1/secrets/billing-api", Some(ADMIN), Value::Null)
        .await
        .expect(StatusCode::NO_CONTENT);
    // Delete the job, then its module.
    api.call(Method::DELETE, "/api/v1/jobs/audited", Some(OPERATOR), Value::Null)
        .await
        .expect(StatusCode::NO_CONTENT);
    api.call(
        Method::DELETE,
        &format!("/api/v1/modules/{digest}"),
        Some(OPERATOR),
        Value::Null,
    )
    .await
    .expect(StatusCode::NO_CONTENT);

    let entries = api.audit_entries().await;
    let actions: Vec<&str> = entries
        .iter()
        .rev()
        .map(|e| e["action"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        actions,
        [
            "module_upload",
            "job_create",
            "job_replace",
            "job_pause",
            "job_pause",
            "job_resume",
            "run_now",
            "kill",
            "state_delete",
            "state_clear",
            "secret_set",
            "secret_set",
            "secret_rekey",
            "secret_delete",
            "job_delete",
            "module_delete",
        ],
        "one entry per write, newest first"
    );
    let by = |n: usize| &entries[entries.len() - 1 - n];
    assert_entry(by(0), "operator", "operator", "module_upload", &digest);
    let size = crate::launch::DEMO_MODULE.len();
    assert_eq!(by(0)["detail"], format!("module, {size} bytes, stored"));
    assert_entry(by(1), "operator", "operator", "job_create", "audited");
    assert_eq!(by(1)["job"], "audited");
    assert!(by(1).get("revision_before").is_none(), "{}", by(1));
    assert_eq!(by(1)["revision_after"], r1);
    assert_eq!(by(1)["detail"], "wasm job");
    assert_entry(by(2), "operator", "operator", "job_replace", "audited");
    assert_eq!(
        (by(2)["revision_before"].clone(), by(2)["revision_after"].clone()),
        (json!(r1), json!(r2))
    );
    assert_eq!(by(2)["changed"], json!(["description", "schedule"]));
    assert_entry(by(3), "operator", "operator", "job_pause", "audited");
    assert_eq!(
        (by(3)["revision_before"].clone(), by(3)["revision_after"].clone()),
        (json!(r2), json!(r3))
    );
    // Pausing a paused job changes nothing, and says so.
    assert_entry(by(4), "admin", "admin", "job_pause", "audited");
    assert_eq!(
        (by(4)["revision_before"].clone(), by(4)["revision_after"].clone()),
        (json!(r3), json!(r3))
    );
    assert_eq!(by(4)["detail"], "already paused");
    assert_eq!(
        (by(5)["revision_before"].clone(), by(5)["revision_after"].clone()),
        (json!(r3), json!(r4))
    );
    assert_entry(by(6), "operator", "operator", "run_now", "audited");
    assert_eq!(by(6)["runs"], json!([requested["run_id"]]));
    assert_entry(by(7), "operator", "operator", "kill", "audited");
    assert_eq!(by(7)["runs"], json!([running.to_string()]));
    assert_entry(by(8), "operator", "operator", "state_delete", "count");
    assert_eq!(by(8)["job"], "audited");
    assert_entry(by(9), "operator", "operator", "state_clear", "audited");
    assert_eq!(by(9)["detail"], "1 key deleted");
    assert_entry(by(10), "admin", "admin", "secret_set", "billing-api");
    assert!(
        by(10)["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("created, sealed under key ")
    );
    assert!(by(11)["detail"].as_str().unwrap_or_default().starts_with("replaced, "));
    assert_entry(
        by(12),
        "admin",
        "admin",
        "secret_rekey",
        api.state.secrets.as_ref().expect("keys").sealing_id(),
    );
    assert_eq!(by(12)["detail"], "0 re-sealed, 1 already current, 0 failed");
    assert_entry(by(13), "admin", "admin", "secret_delete", "billing-api");
    assert_entry(by(14), "operator", "operator", "job_delete", "audited");
    assert_eq!(by(14)["revision_before"], r4);
    assert!(by(14).get("revision_after").is_none(), "{}", by(14));
    assert_entry(by(15), "operator", "operator", "module_delete", &digest);

    // Never a secret's value, nor a job's body, anywhere in the audit log.
    let text = Value::Array(entries.clone()).to_string();
    assert!(!text.contains(SECRET_VALUE), "a secret value reached the audit log");
    assert!(
        !text.contains("now every five minutes"),
        "a job's body reached the audit log"
    );
    // Nor in what waits in the outbox (nothing does now), nor in the store.
    assert!(api.state.coord.audit_outbox().await.expect("outbox").entries.is_empty());
    let stored = api
        .state
        .logs
        .audit(&AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        })
        .await
        .expect("stored");
    assert_eq!(stored.entries.len(), 16);
    assert!(
        !serde_json::to_string(&stored.entries)
            .expect("json")
            .contains(SECRET_VALUE)
    );
}

#[tokio::test]
async fn refused_and_invalid_writes_record_nothing() {
    let api = TestApi::new();
    let digest = api.upload_demo().await;
    api.call(Method::PUT, "/api/v1/jobs/kept", Some(OPERATOR), wasm_job(&digest))
        .await
        .expect(StatusCode::CREATED);
    let before = api.audit_entries().await.len();
    api.call(Method::POST, "/api/v1/jobs/kept/pause", Some(VIEWER), Value::Null)
        .await
        .expect(StatusCode::FORBIDDEN);
    api.call(
        Method::PUT,
        "/api/v1/jobs/kept",
        Some(OPERATOR),
        json!({"schedule": "61 * * * *", "kind": {"wasm": {"module": digest}}}),
    )
    .await
    .expect(StatusCode::UNPROCESSABLE_ENTITY);
    api.call(Method::DELETE, "/api/v1/jobs/absent", Some(OPERATOR), Value::Null)
        .await
        .expect(StatusCode::NOT_FOUND);
    api.call(Method::PUT, "/api/v1/secrets/s", Some(OPERATOR), Value::Null)
        .await
        .expect(StatusCode::FORBIDDEN);
    api.call(Method::POST, "/api/v1/jobs/kept/kill", Some(OPERATOR), Value::Null)
        .await
        .expect(StatusCode::CONFLICT);
    assert_eq!(api.audit_entries().await.len(), before, "failed writes leave no entry");
}

#[tokio::test]
async fn reading_the_audit_log_needs_the_operator_role_and_checks_its_parameters() {
    let api = TestApi::new();
    api.audit("", VIEWER).await.expect_error(
        StatusCode::FORBIDDEN,
        "forbidden",
        "reading the audit log needs the operator role",
    );
    api.call(Method::GET, "/api/v1/audit", None, Value::Null)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized", "");
    api.audit("", ADMIN).await.expect(StatusCode::OK);
    let page = api.audit("", OPERATOR).await.expect(StatusCode::OK);
    assert_eq!(page, json!({"entries": [], "next_cursor": null}));
    for (query, field) in [
        ("?action=job_rename", "action"),
        ("?job=Not%20A%20Job", "job"),
        ("?since=yesterday", "since"),
        ("?until=2026-13-01T00:00:00Z", "until"),
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?cursor=garbage", "cursor"),
    ] {
        let error = api
            .audit(query, OPERATOR)
            .await
            .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "");
        assert_eq!(error["field"], field, "{query}: {error}");
    }
    api.audit("?colour=red", OPERATOR)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request", "colour");
}

#[tokio::test]
async fn the_audit_log_filters_and_pages_newest_first() {
    let api = TestApi::new();
    let digest = api.upload_demo().await;
    for (name, token) in [("a", OPERATOR), ("b", ADMIN), ("c", OPERATOR)] {
        api.call(
            Method::PUT,
            &format!("/api/v1/jobs/{name}"),
            Some(token),
            wasm_job(&digest),
        )
        .await
        .expect(StatusCode::CREATED);
        api.call(
            Method::POST,
            &format!("/api/v1/jobs/{name}/pause"),
            Some(token),
            Value::Null,
        )
        .await
        .expect(StatusCode::OK);
    }
    let all = api.audit_entries().await;
    assert_eq!(all.len(), 7);
    let ids: Vec<&str> = all.iter().map(|e| e["id"].as_str().unwrap_or_default()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted, "newest first");

    let names = |page: &Value| -> Vec<String> {
        page["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                format!(
                    "{}:{}",
                    e["action"].as_str().unwrap_or("?"),
                    e["target"].as_str().unwrap_or("?")
                )
            })
            .collect()
    };
    let page = api.audit("?job=b", OPERATOR).await.expect(StatusCode::OK);
    assert_eq!(names(&page), ["job_pause:b", "job_create:b"]);
    let page = api.audit("?actor=admin", OPERATOR).await.expect(StatusCode::OK);
    assert_eq!(names(&page), ["job_pause:b", "job_create:b"]);
    let page = api.audit("?action=job_create", OPERATOR).await.expect(StatusCode::OK);
    assert_eq!(names(&page), ["job_create:c", "job_create:b", "job_create:a"]);
    let page = api
        .audit(&format!("?target={digest}"), OPERATOR)
        .await
        .expect(StatusCode::OK);
    assert_eq!(names(&page), [format!("module_upload:{digest}")]);
    let page = api
        .audit("?actor=operator&action=job_pause", OPERATOR)
        .await
        .expect(StatusCode::OK);
    assert_eq!(names(&page), ["job_pause:c", "job_pause:a"]);
    // Time bounds: an entry's instant includes it as `since` and excludes
    // it as `until` (entries may share a millisecond).
    let instant = |e: &Value| e["at"].as_str().and_then(|t| t.parse::<Timestamp>().ok()).expect("at");
    let middle = instant(&all[3]);
    let page = api
        .audit(&format!("?since={middle}"), OPERATOR)
        .await
        .expect(StatusCode::OK);
    let later = all.iter().filter(|e| instant(e) >= middle).count();
    assert_eq!(page["entries"].as_array().map(Vec::len), Some(later));
    assert!(later >= 4);
    let page = api
        .audit(&format!("?until={middle}&limit=1000"), OPERATOR)
        .await
        .expect(StatusCode::OK);
    assert_eq!(page["entries"].as_array().map(Vec::len), Some(all.len() - later));

    // Pages of 3 walk everything once, in order.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(cursor) => format!("?limit=3&cursor={cursor}"),
            None => "?limit=3".to_owned(),
        };
        let page = api.audit(&query, OPERATOR).await.expect(StatusCode::OK);
        let entries = page["entries"].as_array().cloned().unwrap_or_default();
        assert!(entries.len() <= 3);
        seen.extend(entries);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, all);
}

#[tokio::test]
async fn the_caller_s_forwarded_for_header_is_recorded() {
    let api = TestApi::new();
    let request = Request::builder()
        .method(Method::PUT)
        .uri("/api/v1/secrets/fwd")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .header("x-forwarded-for", "203.0.113.9, 10.0.0.1")
        .body(Body::from("value"))
        .expect("request");
    assert_eq!(api.send(request).await.status, StatusCode::CREATED);
    let entries = api.audit_entries().await;
    assert_eq!(entries[0]["forwarded_for"], "203.0.113.9, 10.0.0.1");
    // In process there is no connection, so no peer address.
    assert!(entries[0].get("remote").is_none(), "{}", entries[0]);
}

/// A SQLite log store whose audit log can be switched off.
struct Switchable {
    inner: Arc<SqliteLogStore>,
    down: AtomicBool,
}

impl Switchable {
    fn check(&self) -> Result<(), LogStoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(LogStoreError::Unavailable("switched off".to_owned()))
        } else {
            Ok(())
        }
    }
}

/// The audit log and the last runs (what the job list reads) fail while
/// switched off; everything else goes on.
#[async_trait]
impl Tap for Switchable {
    fn inner(&self) -> &dyn LogStore {
        &*self.inner
    }

    async fn before(&self, call: Call<'_>) -> Result<(), LogStoreError> {
        match call {
            Call::LastRuns | Call::WriteAudit(_) | Call::Audit => self.check(),
            _ => Ok(()),
        }
    }
}

#[tokio::test]
async fn entries_wait_in_the_outbox_while_the_log_store_is_down() {
    let store = Arc::new(Switchable {
        inner: SqliteLogStore::in_memory().expect("store"),
        down: AtomicBool::new(false),
    });
    let api = TestApi::with(|state| {
        state.logs = store.clone();
        // A fresh registry: the first audit log's figures are attached to the other.
        state.metrics = crate::metrics::Metrics::new();
        state.audit = AuditLog::new(state.coord.clone(), store.clone(), AUDIT_RETENTION, &state.metrics);
    });
    let digest = api.upload_demo().await;
    store.down.store(true, Ordering::SeqCst);
    // Writes go on; the audit log answers that it is unavailable.
    api.call(Method::PUT, "/api/v1/jobs/outage", Some(OPERATOR), wasm_job(&digest))
        .await
        .expect(StatusCode::CREATED);
    api.call(Method::POST, "/api/v1/jobs/outage/pause", Some(OPERATOR), Value::Null)
        .await
        .expect(StatusCode::OK);
    api.audit("", OPERATOR)
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "");
    assert!(
        api.state.audit.flush().await.is_err(),
        "the move fails while the store is down"
    );
    let waiting = api.state.coord.audit_outbox().await.expect("outbox");
    let waiting: Vec<&str> = waiting.entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(waiting, ["module_upload", "job_create", "job_pause"]);
    let metrics = api.state.metrics.render();
    assert!(metrics.contains("sandcron_audit_backlog 3"), "{metrics}");
    assert!(metrics.contains("sandcron_audit_dropped_total 0"), "{metrics}");

    // Back: the next read finds them all, and the outbox is empty.
    store.down.store(false, Ordering::SeqCst);
    let entries = api.audit_entries().await;
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap_or("?")).collect();
    assert_eq!(actions, ["job_pause", "job_create", "module_upload"]);
    assert!(api.state.coord.audit_outbox().await.expect("outbox").entries.is_empty());
    let metrics = api.state.metrics.render();
    assert!(metrics.contains("sandcron_audit_backlog 0"), "{metrics}");
    assert!(metrics.contains("sandcron_audit_stored_total 3"), "{metrics}");
    assert!(metrics.contains("sandcron_audit_recorded_total 3"), "{metrics}");
    // Moving again stores nothing twice.
    assert_eq!(api.state.audit.flush().await.expect("flush"), 0);
    assert_eq!(api.audit_entries().await.len(), 3);
}

#[tokio::test]
async fn the_mover_moves_entries_left_by_another_master_and_stops_on_shutdown() {
    let api = TestApi::new();
    // An entry another master put in the outbox before it stopped.
    let left = AuditEntry::new(
        Timestamp::now(),
        "ci",
        Role::Operator,
        crate::audit::AuditAction::Kill,
        "orphan",
    );
    api.state.coord.put_audit(&left).await.expect("put");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mover = tokio::spawn(api.state.audit.clone().run(shutdown.clone()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let stored = api.state.logs.audit(&AuditQuery::default()).await.expect("audit");
        if stored.entries.iter().any(|e| e.id == left.id) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the mover did not move the entry");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    mover.await.expect("joined").expect("mover ends cleanly");
}
