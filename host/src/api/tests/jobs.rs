//! `/api/v1/jobs` in process: create, replace, read, list, pause and resume,
//! delete, run now and kill; roles, preconditions and every bad input with
//! its precise 4xx.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};

use super::{ADMIN, OPERATOR, TestApi, VIEWER, shell_job, wasm_job};

#[tokio::test]
async fn a_wasm_job_is_created_read_listed_replaced_and_deleted() {
    let api = TestApi::new();
    let digest = api.upload_demo().await;
    let created = api
        .call(Method::PUT, "/api/v1/jobs/nightly", Some(OPERATOR), wasm_job(&digest))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(created["name"], "nightly");
    assert_eq!(created["schedule"], "0 * * * *");
    assert_eq!(created["timezone"], "UTC", "the default zone");
    assert_eq!(created["status"], "unschedulable", "no worker is alive: {created}");

    let read = api.get("/api/v1/jobs/nightly").await.expect(StatusCode::OK);
    assert_eq!(read["revision"], created["revision"]);
    let listed = api.get("/api/v1/jobs").await.expect(StatusCode::OK);
    let names: Vec<&str> = listed
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|j| j["name"].as_str())
        .collect();
    assert_eq!(names, ["nightly"]);

    let mut changed = wasm_job(&digest);
    changed["schedule"] = json!("*/5 * * * *");
    let replaced = api
        .call(Method::PUT, "/api/v1/jobs/nightly", Some(OPERATOR), changed)
        .await
        .expect(StatusCode::OK);
    assert_eq!(replaced["schedule"], "*/5 * * * *");
    assert_ne!(replaced["revision"], created["revision"]);

    api.call(Method::DELETE, "/api/v1/jobs/nightly", Some(OPERATOR), Value::Null)
        .await
        .expect(StatusCode::NO_CONTENT);
    api.get("/api/v1/jobs/nightly")
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found", "nightly");
}

#[tokio::test]
async fn bad_job_bodies_get_a_precise_422_naming_the_field() {
    let api = TestApi::new();
    let digest = api.upload_demo().await;
    let cases = [
        (
            json!({"schedule": "61 * * * *", "kind": {"wasm": {"module": digest}}}),
            "schedule",
            "minute",
        ),
        (
            json!({"schedule": "0 * * * *", "timezone": "Mars/Olympus", "kind": {"wasm": {"module": digest}}}),
            "timezone",
            "Mars/Olympus",
        ),
        (
            json!({"schedule": "0 * * * *", "kind": {"wasm": {"module": format!("sha256:{}", "0".repeat(64))}}}),
            "kind.wasm.module",
            "not uploaded",
        ),
    ];
    for (body, field, part) in cases {
        let error = api
            .call(Method::PUT, "/api/v1/jobs/bad", Some(OPERATOR), body.clone())
            .await
            .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", part);
        assert_eq!(error["field"], field, "{body}");
    }
    api.get("/api/v1/jobs/bad").await.expect(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn malformed_requests_are_400_or_415_and_bad_names_are_refused() {
    let api = TestApi::new();
    let malformed = Request::builder()
        .method(Method::PUT)
        .uri("/api/v1/jobs/broken")
        .header(header::AUTHORIZATION, format!("Bearer {OPERATOR}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"schedule\": "))
        .expect("request");
    api.send(malformed)
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request", "");
    let unknown_field = json!({"schedule": "0 * * * *", "kind": {"shell": {"command": "true"}}, "colour": "red"});
    api.call(Method::PUT, "/api/v1/jobs/broken", Some(ADMIN), unknown_field)
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "colour");
    let not_json = Request::builder()
        .method(Method::PUT)
        .uri("/api/v1/jobs/broken")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("schedule=0"))
        .expect("request");
    api.send(not_json)
        .await
        .expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "");
    for name in ["Upper", "-dash-first", "has%20space", &"x".repeat(64)] {
        let reply = api
            .call(
                Method::PUT,
                &format!("/api/v1/jobs/{name}"),
                Some(ADMIN),
                shell_job("true"),
            )
            .await;
        assert!(
            matches!(reply.status, StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY),
            "{name}: {reply:?}"
        );
        assert!(
            reply.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{reply:?}"
        );
    }
}

#[tokio::test]
async fn roles_decide_who_may_write_what() {
    let api = TestApi::new();
    let digest = api.upload_demo().await;
    api.call(Method::GET, "/api/v1/jobs", None, Value::Null)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized", "missing bearer token");
    api.call(Method::GET, "/api/v1/jobs", Some("not-a-configured-token"), Value::Null)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized", "invalid token");
    api.call(Method::PUT, "/api/v1/jobs/w", Some(VIEWER), wasm_job(&digest))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden", "operator role");
    api.call(Method::PUT, "/api/v1/jobs/s", Some(OPERATOR), shell_job("true"))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden", "admin role");
    api.call(Method::PUT, "/api/v1/jobs/s", Some(ADMIN), shell_job("true"))
        .await
        .expect(StatusCode::CREATED);
    // An operator may not replace or delete an admin's shell job either.
    api.call(Method::PUT, "/api/v1/jobs/s", Some(OPERATOR), wasm_job(&digest))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden", "replacing a shell job");
    api.call(Method::DELETE, "/api/v1/jobs/s", Some(OPERATOR), Value::Null)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden", "deleting a shell job");
}

#[tokio::test]
async fn shell_jobs_are_refused_where_no_worker_may_run_them() {
    let api = TestApi::with(|state| state.shell_jobs = false);
    api.call(Method::PUT, "/api/v1/jobs/s", Some(ADMIN), shell_job("true"))
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden", "shell jobs are disabled");
}

#[tokio::test]
async fn preconditions_guard_against_lost_updates() {
    let api = TestApi::new();
    let put = |precondition: (&'static str, String)| {
        Request::builder()
            .method(Method::PUT)
            .uri("/api/v1/jobs/guarded")
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header(precondition.0, precondition.1)
            .body(Body::from(shell_job("true").to_string()))
            .expect("request")
    };
    let created = api
        .send(put(("if-none-match", "*".into())))
        .await
        .expect(StatusCode::CREATED);
    api.send(put(("if-none-match", "*".into()))).await.expect_error(
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
        "already exists",
    );
    let revision = created["revision"].as_i64().expect("revision");
    let replaced = api
        .send(put(("if-match", revision.to_string())))
        .await
        .expect(StatusCode::OK);
    // The revision read first is stale now.
    api.send(put(("if-match", revision.to_string()))).await.expect_error(
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
        &format!("is at revision {}, not {revision}", replaced["revision"]),
    );
    api.send(put(("if-match", "soon".into())))
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request", "If-Match");
    assert!(replaced["revision"].as_i64() > Some(revision));

    // A delete under If-Match deletes exactly that version.
    let delete = |header: (&'static str, String)| {
        Request::builder()
            .method(Method::DELETE)
            .uri("/api/v1/jobs/guarded")
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
            .header(header.0, header.1)
            .body(Body::empty())
            .expect("request")
    };
    api.send(delete(("if-match", revision.to_string()))).await.expect_error(
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
        "not",
    );
    api.send(delete(("if-none-match", "*".into()))).await.expect_error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        "send If-Match",
    );
    api.get("/api/v1/jobs/guarded").await.expect(StatusCode::OK);
    api.send(delete(("if-match", replaced["revision"].to_string())))
        .await
        .expect(StatusCode::NO_CONTENT);
    api.get("/api/v1/jobs/guarded").await.expect(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn pause_and_resume_flip_the_flag_and_keep_the_author() {
    let api = TestApi::new();
    api.call(Method::PUT, "/api/v1/jobs/p", Some(ADMIN), shell_job("true"))
        .await
        .expect(StatusCode::CREATED);
    let paused = api
        .call(Method::POST, "/api/v1/jobs/p/pause", Some(OPERATOR), Value::Null)
        .await
        .expect(StatusCode::OK);
    assert_eq!(paused["paused"], true);
    assert_eq!(paused["status"], "paused");
    assert_eq!(
        paused["meta"]["written_by"], "admin",
        "pausing does not change who wrote the job"
    );
    let resumed = api
        .call(Method::POST, "/api/v1/jobs/p/resume", Some(OPERATOR), Value::Null)
        .await
        .expect(StatusCode::OK);
    assert_eq!(resumed["paused"], false);
    api.call(Method::POST, "/api/v1/jobs/p/pause", Some(VIEWER), Value::Null)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden", "pausing a job");
    api.call(Method::POST, "/api/v1/jobs/nope/pause", Some(OPERATOR), Value::Null)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found", "nope");
}

#[tokio::test]
async fn run_now_stores_a_request_and_kill_needs_a_running_run() {
    let api = TestApi::new();
    let digest = api.upload_demo().await;
    api.call(Method::PUT, "/api/v1/jobs/now", Some(OPERATOR), wasm_job(&digest))
        .await
        .expect(StatusCode::CREATED);
    api.call(Method::POST, "/api/v1/jobs/now/run", Some(OPERATOR), Value::Null)
        .await
        .expect_error(StatusCode::CONFLICT, "conflict", "no live workers");
    api.register_worker("w1").await;
    let requested = api
        .call(Method::POST, "/api/v1/jobs/now/run", Some(OPERATOR), Value::Null)
        .await
        .expect(StatusCode::ACCEPTED);
    assert!(requested.is_object(), "{requested}");
    let view = api.get("/api/v1/jobs/now").await.expect(StatusCode::OK);
    let pending = view["pending"].as_array().expect("pending runs listed");
    assert_eq!(pending.len(), 1, "{view}");
    assert_eq!(pending[0]["trigger"], "manual");

    api.call(Method::POST, "/api/v1/jobs/now/kill", Some(OPERATOR), Value::Null)
        .await
        .expect_error(StatusCode::CONFLICT, "conflict", "");
    api.call(Method::POST, "/api/v1/jobs/now/run", Some(VIEWER), Value::Null)
        .await
        .expect_error(StatusCode::FORBIDDEN, "forbidden", "");
    api.call(Method::POST, "/api/v1/jobs/absent/run", Some(OPERATOR), Value::Null)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found", "absent");
}

#[tokio::test]
async fn a_job_started_by_another_cannot_be_deleted_first() {
    let api = TestApi::new();
    api.call(Method::PUT, "/api/v1/jobs/child", Some(ADMIN), shell_job("true"))
        .await
        .expect(StatusCode::CREATED);
    let mut parent = shell_job("true");
    parent["on_success"] = json!(["child"]);
    api.call(Method::PUT, "/api/v1/jobs/parent", Some(ADMIN), parent)
        .await
        .expect(StatusCode::CREATED);
    api.call(Method::DELETE, "/api/v1/jobs/child", Some(ADMIN), Value::Null)
        .await
        .expect_error(StatusCode::CONFLICT, "conflict", "started by parent");
    // A cycle is refused when it is written.
    let mut back = shell_job("true");
    back["on_failure"] = json!(["parent"]);
    api.call(Method::PUT, "/api/v1/jobs/child", Some(ADMIN), back)
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "cycle");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_format() {
    let api = TestApi::new();
    api.get("/api/v1/nothing-here")
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found", "no route");
    api.call(Method::PATCH, "/api/v1/jobs/x", Some(ADMIN), json!({}))
        .await
        .expect_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "PATCH");
}

#[tokio::test]
async fn egress_entries_are_checked_one_by_one_and_only_components_get_them() {
    let api = TestApi::new();
    let digest = api.upload_demo().await;
    let cases = [
        ("api.example.com", "needs a scheme"),
        ("https://example.com:99999", "port"),
        ("https://*", "wildcard"),
        ("https://example.com/v1?key=1", "path"),
        ("tcp://db.internal", "needs a port"),
    ];
    for (entry, part) in cases {
        let mut body = wasm_job(&digest);
        body["kind"]["wasm"]["egress"] = json!(["https://fine.example.com", entry]);
        let error = api
            .call(Method::PUT, "/api/v1/jobs/net", Some(OPERATOR), body)
            .await
            .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", part);
        assert_eq!(error["field"], "kind.wasm.egress[1]", "{entry}");
        assert!(error["message"].as_str().unwrap_or_default().contains(entry), "{error}");
    }
    let mut limits = wasm_job(&digest);
    limits["kind"]["wasm"]["network"] = json!({"requests": 0});
    let error = api
        .call(Method::PUT, "/api/v1/jobs/net", Some(OPERATOR), limits)
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "");
    assert_eq!(error["field"], "kind.wasm.network.requests");

    // The demo module is a core module: no network interface to grant.
    let mut core = wasm_job(&digest);
    core["kind"]["wasm"]["egress"] = json!(["https://api.example.com"]);
    let error = api
        .call(Method::PUT, "/api/v1/jobs/net", Some(OPERATOR), core)
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "only components");
    assert_eq!(error["field"], "kind.wasm.egress");
    api.get("/api/v1/jobs/net").await.expect(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_time_zone_is_stored_as_the_iana_database_spells_it() {
    let api = TestApi::new();
    let mut body = shell_job("true");
    body["timezone"] = json!("europe/berlin");
    let created = api
        .call(Method::PUT, "/api/v1/jobs/tz", Some(ADMIN), body)
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(created["timezone"], "Europe/Berlin");
    let mut unknown = shell_job("true");
    unknown["timezone"] = json!("Europe/Atlantis");
    let error = api
        .call(Method::PUT, "/api/v1/jobs/tz", Some(ADMIN), unknown)
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "Europe/Atlantis");
    assert_eq!(error["field"], "timezone");
}

#[tokio::test]
async fn the_job_list_comes_in_pages_linked_by_a_next_header() {
    let api = TestApi::new();
    let digest = api.upload_demo().await;
    for name in ["a-1", "b-2", "a-3", "a-4", "c-5", "a-6"] {
        api.call(
            Method::PUT,
            &format!("/api/v1/jobs/{name}"),
            Some(OPERATOR),
            wasm_job(&digest),
        )
        .await
        .expect(StatusCode::CREATED);
    }
    // Pages of two among the names containing "a-", following `Link`.
    let mut uri = "/api/v1/jobs?q=a-&limit=2".to_string();
    let mut pages = Vec::new();
    loop {
        let reply = api.get(&uri).await;
        let link = reply.headers.get(header::LINK).map(|v| v.to_str().unwrap().to_string());
        let body = reply.expect(StatusCode::OK);
        let names: Vec<String> = body
            .as_array()
            .expect("a list")
            .iter()
            .map(|j| j["name"].as_str().unwrap().to_string())
            .collect();
        pages.push(names);
        match link {
            Some(link) => {
                assert!(link.ends_with(">; rel=\"next\""), "{link}");
                uri = link.trim_start_matches('<').split('>').next().unwrap().to_string();
                assert!(uri.contains("q=a-") && uri.contains("limit=2"), "filters kept: {uri}");
            }
            None => break,
        }
    }
    assert_eq!(pages, [vec!["a-1", "a-3"], vec!["a-4", "a-6"]]);
    // Without a limit, everything fits in the default page: no link.
    let reply = api.get("/api/v1/jobs").await;
    assert!(reply.headers.get(header::LINK).is_none());
    assert_eq!(reply.expect(StatusCode::OK).as_array().unwrap().len(), 6);
    // A status filter pages over the matching jobs only.
    api.call(Method::POST, "/api/v1/jobs/c-5/pause", Some(OPERATOR), Value::Null)
        .await
        .expect(StatusCode::OK);
    let paused = api.get("/api/v1/jobs?status=paused&limit=1").await;
    assert!(paused.headers.get(header::LINK).is_none(), "one paused job, one page");
    assert_eq!(paused.expect(StatusCode::OK)[0]["name"], "c-5");
    for bad in ["0", "1001"] {
        api.get(&format!("/api/v1/jobs?limit={bad}")).await.expect_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "between 1 and 1000",
        );
    }
    api.get("/api/v1/jobs?limit=many")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request", "limit");
}

#[tokio::test]
async fn the_job_list_leaves_last_runs_out_when_asked() {
    let api = TestApi::new();
    let digest = api.upload_demo().await;
    api.call(Method::PUT, "/api/v1/jobs/ran", Some(OPERATOR), wasm_job(&digest))
        .await
        .expect(StatusCode::CREATED);
    let job = crate::ids::JobName::new("ran").unwrap();
    let mut batch = crate::logstore::LogBatch::default();
    batch.runs.push(crate::testkit::sample_record(
        &job,
        "2026-03-01T00:00:00Z".parse().unwrap(),
        crate::run::RunStatus::Succeeded,
        1,
    ));
    api.state.logs.write(&batch).await.expect("seeded");
    let with = api.get("/api/v1/jobs").await.expect(StatusCode::OK);
    assert_eq!(with[0]["last_run"]["status"], "succeeded", "{with}");
    let without = api.get("/api/v1/jobs?last_run=false").await.expect(StatusCode::OK);
    assert_eq!(without[0]["name"], "ran");
    assert!(without[0].get("last_run").is_none_or(Value::is_null), "{without}");
    assert_ne!(without[0]["history_unavailable"], true, "not an outage: {without}");
    // The next page's address keeps the choice.
    let reply = api.get("/api/v1/jobs?last_run=false&limit=1").await;
    assert!(reply.headers.get(header::LINK).is_none(), "one job, one page");
    api.get("/api/v1/jobs?last_run=sometimes")
        .await
        .expect_error(StatusCode::BAD_REQUEST, "bad_request", "last_run");
}
