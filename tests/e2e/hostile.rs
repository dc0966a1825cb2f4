//! The hostile-input catalogue: requests built to crash, stall or exhaust
//! the server. Each must get a precise 4xx (or be served normally) while the
//! server keeps answering everyone else.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::{dev, shell_job};

/// The server still serves a plain request promptly.
async fn still_serves(api: &sandcron_tests::Api) {
    api.get("/api/v1/jobs").await.expect(200);
}

fn raw_http(base: &str, request: &[u8]) -> String {
    let address = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.write_all(request).expect("write");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn hostile_bodies_get_precise_errors() {
    let dev = dev(&[]);
    let api = dev.api();

    // Deeply nested JSON: refused by the parser's depth limit, not the stack.
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    api.raw("PUT", "/api/v1/jobs/deep", "application/json", nested.into_bytes())
        .await
        .expect_one_of(&[400, 422]);
    let nested_object = format!(
        "{{\"schedule\": \"@daily\", \"kind\": {{\"shell\": {{\"command\": \"true\"}}}}, \"selector\": {}{}}}",
        "{\"a\":".repeat(5_000),
        "1".to_owned() + &"}".repeat(5_000)
    );
    api.raw(
        "PUT",
        "/api/v1/jobs/deep",
        "application/json",
        nested_object.into_bytes(),
    )
    .await
    .expect_one_of(&[400, 422]);

    // Invalid UTF-8 inside a JSON string.
    let mut body = br#"{"schedule": "@daily", "kind": {"shell": {"command": ""#.to_vec();
    body.extend_from_slice(&[0xff, 0xfe, 0x80]);
    body.extend_from_slice(br#""}}}"#);
    api.raw("PUT", "/api/v1/jobs/utf8", "application/json", body)
        .await
        .expect_error(400, "bad_request", "malformed JSON");

    // A huge cron list, a long expression, far-future years, zero periods.
    let list: Vec<String> = (0..60).cycle().take(5_000).map(|n| n.to_string()).collect();
    let huge = shell_job(&format!("{} * * * *", list.join(",")), "true");
    api.put("/api/v1/jobs/huge", &huge)
        .await
        .expect_error(422, "invalid", "bytes long, the limit is 1024");
    for (schedule, message) in [
        ("0 0 0 1 1 * 2999", "out of range"),
        ("0 0 0 1 1 * 1900-1950", "out of range"),
        ("@every 0s", "at least 1s"),
        ("@every 100000d", "at most"),
        ("*/0 * * * *", "step must be at least 1"),
        ("0 0 31 2 *", "never fires"),
    ] {
        let error = api
            .put("/api/v1/jobs/odd", &shell_job(schedule, "true"))
            .await
            .expect_error(422, "invalid", message);
        assert_eq!(error["error"]["field"], "schedule", "{schedule}");
    }
    // The latest year allowed still works, and fires then.
    let far = api
        .put("/api/v1/jobs/far", &shell_job("0 0 0 1 1 * 2199", "true"))
        .await
        .expect(201);
    assert!(far["next_run"].as_str().unwrap().starts_with("2199-01-01"), "{far}");

    // Names with traversal or control characters never reach the store.
    for name in ["..", "%2E%2E", "a%00b", "a%0Ab", "%E2%80%AEevil"] {
        let reply = api
            .put(&format!("/api/v1/jobs/{name}"), &shell_job("@daily", "true"))
            .await;
        assert!(
            reply.status == 422 || reply.status == 404,
            "{name}: {} {}",
            reply.status,
            reply.body
        );
    }
    let names: Vec<String> = api
        .jobs()
        .await
        .iter()
        .map(|j| j["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, vec!["far"], "only the valid job was stored");

    still_serves(&api).await;
}

#[tokio::test]
async fn hostile_multipart_uploads_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("small.toml");
    std::fs::write(&config, "[server]\nmax_module_mb = 1\n").unwrap();
    let dev = dev(&["--config", config.to_str().unwrap()]);
    let api = dev.api();
    let boundary = "XyZ";
    // Many tiny parts before the module, and a part that claims a huge size.
    let mut body = Vec::new();
    for i in 0..10_000 {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"junk{i}\"\r\n\r\nx\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let content_type = format!("multipart/form-data; boundary={boundary}");
    api.raw("POST", "/api/v1/modules", &content_type, body)
        .await
        .expect_one_of(&[400, 422]);
    // A body declared larger than the limit is refused from its headers
    // alone: the answer comes before a byte of the body is sent.
    let head = sandcron_tests::answer_to_declared_length(&dev.base, "POST", "/api/v1/modules", &content_type, 3 << 20);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("payload_too_large"), "{head}");
    // A multipart body with no closing boundary.
    let body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"module\"\r\n\r\n\0asm").into_bytes();
    api.raw("POST", "/api/v1/modules", &content_type, body)
        .await
        .expect_one_of(&[400, 422]);
    still_serves(&api).await;
}

#[tokio::test]
async fn a_slow_client_is_cut_off_and_does_not_hold_up_others() {
    let dev = dev(&[]);
    let api = dev.api();
    let address = dev.base.trim_start_matches("http://").to_owned();
    // Slowloris: headers that never end.
    let mut slow = TcpStream::connect(&address).expect("connect");
    slow.write_all(b"GET /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    // A well-behaved client is served meanwhile.
    still_serves(&api).await;
    // The server closes the connection after its header timeout.
    slow.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    let closed = loop {
        match slow.read(&mut buffer) {
            Ok(0) => break true,
            Ok(_) => break true,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break false,
        }
    };
    assert!(closed, "the server never closed a connection whose headers never ended");
    assert!(
        started.elapsed() < Duration::from_secs(59),
        "closed by the server, not by our read timeout"
    );
    // A request line alone, then nothing: same.
    let reply = raw_http(&dev.base, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    // A body announced and then stalled: the request is answered with an
    // error once no byte has come for the body's idle timeout, and the
    // connection does not stay open.
    let mut stalled = TcpStream::connect(&address).expect("connect");
    stalled
        .write_all(
            b"PUT /api/v1/jobs/stalled HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
              Content-Length: 200\r\n\r\n{\"schedule\": ",
        )
        .unwrap();
    still_serves(&api).await;
    stalled.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stalled.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => answer.extend_from_slice(&buffer[..read]),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let waited = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 4"),
        "a client error for the stalled body: {answer}"
    );
    assert!(
        waited >= sandcron::api::BODY_IDLE_TIMEOUT / 2 && waited < Duration::from_secs(59),
        "answered after {waited:?}"
    );
    assert!(
        api.get("/api/v1/jobs/stalled").await.status == 404,
        "nothing was created"
    );
}

#[tokio::test]
async fn thousands_of_follow_streams_neither_crash_nor_starve_the_server() {
    let dev = dev(&[]);
    let api = dev.api();
    // It outlives the test however slowly the followers are served (under a
    // loaded machine 2,000 of them took over 30 s), so the kill below finds
    // it running.
    api.put("/api/v1/jobs/long", &shell_job("@yearly", "sleep 600"))
        .await
        .expect(201);
    api.post("/api/v1/jobs/long/run").await.expect(202);
    let run = sandcron_tests::wait_for("the run to start", Duration::from_secs(20), || async {
        api.runs("long").await.into_iter().next()
    })
    .await;
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/runs/{run_id}/output?follow=true&wait_s=5");
    let mut followers = Vec::new();
    for _ in 0..2_000 {
        let api = sandcron_tests::Api::new(&dev.base, None);
        let path = path.clone();
        followers.push(tokio::spawn(async move { api.get(&path).await.status }));
    }
    // While they wait, the server answers others.
    still_serves(&api).await;
    let mut statuses = std::collections::BTreeMap::new();
    for follower in followers {
        *statuses.entry(follower.await.unwrap()).or_insert(0) += 1;
    }
    // Each follower got its answer: the output so far, or a clear 503 when
    // the server sheds load; never a dropped connection.
    assert!(statuses.keys().all(|s| *s == 200 || *s == 503), "{statuses:?}");
    assert!(statuses.get(&200).copied().unwrap_or(0) > 0, "{statuses:?}");
    still_serves(&api).await;
    api.post("/api/v1/jobs/long/kill").await.expect(202);
}
