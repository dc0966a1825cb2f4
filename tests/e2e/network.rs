//! WASM jobs on the network, end to end: the test guest `net-probe` (a
//! component built by `scripts/build-guests.sh`) makes the calls its
//! arguments ask for against a local HTTP service and a TCP echo server the
//! test starts, and every test checks three things: what the guest saw,
//! what reached the service, and what the run's egress ledger says.

use std::time::Duration;

use sandcron_tests::receiver::Receiver;
use sandcron_tests::{Api, Dev};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::{built_guest, dev, entries, lines, run_now};

/// A job running `net-probe` with `args`, allowed `egress`, with `network`
/// limits when given; returns the ended run.
async fn probe(api: &Api, name: &str, args: &[&str], egress: &[&str], network: Option<Value>) -> Value {
    let digest = api.upload_module(built_guest("net-probe")).await;
    let mut wasm = json!({"module": digest, "args": args, "egress": egress});
    if let Some(network) = network {
        wasm["network"] = network;
    }
    let body = json!({"schedule": "0 0 1 1 *", "kind": {"wasm": wasm}});
    api.put(&format!("/api/v1/jobs/{name}"), &body).await.expect(201);
    run_now(api, name, Duration::from_secs(60)).await
}

#[tokio::test]
async fn listed_destinations_are_reached_and_everything_else_is_refused_and_recorded() {
    let service = Receiver::start().await;
    let dev = dev(&[]);
    let api = dev.api();
    let port = service.addr.port();
    let listed = format!("http://127.0.0.1:{port}");
    let allowed = format!("{listed}/report?token=not-for-the-ledger");
    let by_name = format!("http://localhost:{port}/");
    let run = probe(
        &api,
        "net-listed",
        &["get", &allowed, "get", "https://example.com/", "get", &by_name],
        &[&listed],
        None,
    )
    .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let out = lines(&api, &run).await;
    assert!(out[0].starts_with(&format!("get {allowed} ok 200")), "{out:?}");
    assert!(
        out[1].contains("error") && out[1].contains("HttpRequestDenied"),
        "{out:?}"
    );
    assert!(
        out[2].contains("error") && out[2].contains("HttpRequestDenied"),
        "{out:?}"
    );
    // Only the listed call reached the service.
    assert_eq!(service.requests().len(), 1);

    let ledger = entries(&run);
    assert_eq!(ledger.len(), 3, "{run}");
    assert_eq!(ledger[0]["outcome"], "ok");
    assert_eq!(ledger[0]["status"], 200);
    assert_eq!(ledger[0]["method"], "GET");
    assert_eq!(ledger[0]["target"], listed);
    assert_eq!(ledger[0]["path"], "/report", "no query string in the ledger");
    assert_eq!(ledger[0]["address"], format!("127.0.0.1:{port}"));
    assert!(ledger[0]["bytes_in"].as_u64() > Some(0));
    assert_eq!(ledger[1]["outcome"], "refused");
    assert!(
        ledger[1]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not in the job's egress")
    );
    assert_eq!(ledger[2]["target"], format!("http://localhost:{port}"));
    assert_eq!(ledger[2]["outcome"], "refused", "a name is not its address");
    assert_eq!(run["egress"]["totals"]["calls"], 3);
    assert_eq!(run["egress"]["totals"]["refused"], 2);
    assert!(!run.to_string().contains("not-for-the-ledger"));

    let metrics = api.get("/metrics").await;
    let text = metrics.body.as_str().unwrap_or_default().to_owned();
    assert!(text.contains("sandcron_egress_total{outcome=\"refused\"} 2"), "{text}");
    assert!(text.contains("sandcron_egress_total{outcome=\"ok\"} 1"), "{text}");
}

#[tokio::test]
async fn a_job_without_egress_reaches_nothing_and_its_run_goes_on() {
    let service = Receiver::start().await;
    let dev = dev(&[]);
    let api = dev.api();
    let url = service.url("/");
    let run = probe(&api, "net-none", &["get", &url, "get", &url], &[], None).await;
    assert_eq!(
        run["status"], "succeeded",
        "the refusal is the guest's error, not the run's"
    );
    let out = lines(&api, &run).await;
    assert_eq!(out.len(), 2, "the guest went on after the first refusal: {out:?}");
    assert!(out.iter().all(|line| line.contains("HttpRequestDenied")), "{out:?}");
    assert!(service.requests().is_empty());
    let ledger = entries(&run);
    assert_eq!(ledger.len(), 2);
    assert!(ledger.iter().all(|entry| entry["outcome"] == "refused"));
}

#[tokio::test]
async fn ports_schemes_and_redirects_are_held_to_the_list() {
    let service = Receiver::start().await;
    let other = Receiver::start().await;
    let dev = dev(&[]);
    let api = dev.api();
    let listed = format!("http://127.0.0.1:{}", service.addr.port());
    let wrong_port = other.url("/");
    let wrong_scheme = format!("https://127.0.0.1:{}/", service.addr.port());
    let redirect = service.url(&format!("/redirect/127.0.0.1:{}", other.addr.port()));
    let run = probe(
        &api,
        "net-rules",
        &["get", &wrong_port, "get", &wrong_scheme, "get", &redirect],
        &[&listed],
        None,
    )
    .await;
    let out = lines(&api, &run).await;
    assert!(out[0].contains("HttpRequestDenied"), "another port: {out:?}");
    assert!(
        out[1].contains("HttpRequestDenied"),
        "https when only http is listed: {out:?}"
    );
    assert!(
        out[2].contains("ok 302"),
        "the redirect reaches the guest, not followed: {out:?}"
    );
    assert!(other.requests().is_empty(), "the redirect target was never called");
    let ledger = entries(&run);
    assert_eq!(ledger.len(), 3);
    assert_eq!(ledger[2]["status"], 302);
}

#[tokio::test]
async fn a_public_only_worker_refuses_names_and_literals_of_private_places() {
    let service = Receiver::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("worker.toml");
    std::fs::write(&config, "[worker]\nhttp_allow = [\"public\"]\n").expect("config");
    let dev = Dev::start(crate::BIN, &["--config", config.to_str().expect("path")]);
    let api = dev.api();
    let port = service.addr.port();
    let by_name = format!("http://localhost:{port}/");
    let run = probe(
        &api,
        "net-public",
        &["get", &by_name, "get", "http://169.254.169.254/latest/meta-data/"],
        &[&format!("http://localhost:{port}"), "http://169.254.169.254"],
        None,
    )
    .await;
    let out = lines(&api, &run).await;
    assert!(out[0].contains("DestinationIpProhibited"), "{out:?}");
    assert!(out[1].contains("DestinationIpProhibited"), "{out:?}");
    assert!(service.requests().is_empty());
    let ledger = entries(&run);
    let reason = |index: usize| ledger[index]["error"].as_str().unwrap_or_default().to_owned();
    assert!(reason(0).contains("loopback"), "{}", reason(0));
    assert!(
        reason(1).contains("link-local") || reason(1).contains("metadata"),
        "{}",
        reason(1)
    );
}

#[tokio::test]
async fn limits_stop_loops_huge_bodies_and_silent_servers_without_harming_the_host() {
    let service = Receiver::start().await;
    let dev = dev(&[]);
    let api = dev.api();
    let listed = format!("http://127.0.0.1:{}", service.addr.port());

    // A 1 GiB response against a 1 MiB budget: cut at the budget, streamed.
    let one_gib = service.url("/stream/1073741824");
    let fine = service.url("/");
    let run = probe(
        &api,
        "net-bytes",
        &["get", &one_gib, "get", &fine],
        &[&listed],
        Some(json!({"bytes_in": 1_048_576})),
    )
    .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let out = lines(&api, &run).await;
    assert!(
        out[0].contains("error") && out[0].contains("size exceeds limit"),
        "{out:?}"
    );
    assert!(
        out[1].contains("error"),
        "the run's budget is spent for every later call: {out:?}"
    );
    let ledger = entries(&run);
    assert_eq!(ledger[0]["outcome"], "error");
    let received = ledger[0]["bytes_in"].as_u64().unwrap_or_default();
    assert!((1_000_000..2_000_000).contains(&received), "{}", ledger[0]);
    // The host held no body whole: the sandbox's memory stayed small.
    assert!(run["peak_memory"].as_u64() < Some(64 << 20), "{run}");

    // A server that never answers, calls at once beyond the limit, and a
    // loop beyond the run's number of calls.
    let hang = service.url("/hang");
    let slow = service.url("/slow/800");
    let run = probe(
        &api,
        "net-calls",
        &["get", &hang, "parallel", &slow, "4", "gets", &fine, "30"],
        &[&listed],
        Some(json!({"requests": 11, "concurrent": 2, "first_byte_timeout_s": 2})),
    )
    .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let out = lines(&api, &run).await;
    assert!(
        out[0].contains("error") && out[0].contains("ConnectionReadTimeout"),
        "{out:?}"
    );
    assert!(
        out[1].starts_with(&format!("parallel {slow} ok 2 of 4")),
        "two at once: {out:?}"
    );
    // 11 calls in all: 1 + 4 before, so 6 of the 30 go through.
    assert!(out[2].starts_with(&format!("gets {fine} ok 6 of 30")), "{out:?}");
    let ledger = entries(&run);
    assert_eq!(ledger[0]["outcome"], "error");
    assert!(
        ledger[0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no response within 2 s")
    );
    let refused: Vec<&Value> = ledger.iter().filter(|e| e["outcome"] == "refused").collect();
    assert!(
        refused
            .iter()
            .any(|e| e["error"].as_str().unwrap_or_default().contains("at once"))
    );
    assert!(
        refused
            .iter()
            .any(|e| e["error"].as_str().unwrap_or_default().contains("limit of 11"))
    );
    assert_eq!(run["egress"]["totals"]["calls"], 1 + 4 + 30);
}

/// A line-echo TCP server on a free loopback port; answers `echo: <line>`.
async fn echo_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                if BufReader::new(read).read_line(&mut line).await.is_ok() {
                    let _ = write.write_all(format!("echo: {line}").as_bytes()).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn tcp_reaches_listed_hosts_through_the_hosts_own_lookup_only() {
    let echo = echo_server().await;
    let other = echo_server().await;
    let dev = dev(&[]);
    let api = dev.api();
    let listed = format!("localhost:{}", echo.port());
    let unlisted_port = format!("localhost:{}", other.port());
    let run = probe(
        &api,
        "net-tcp",
        &[
            "tcp",
            &listed,
            "hello",
            "tcp",
            &unlisted_port,
            "sneaky",
            "tcp",
            "exfiltrate.example.com:80",
            "x",
        ],
        &[&format!("tcp://{listed}")],
        None,
    )
    .await;
    let out = lines(&api, &run).await;
    assert_eq!(out[0], format!("tcp {listed} ok echo: hello"), "{out:?}");
    assert!(out[1].contains("error"), "another port: {out:?}");
    assert!(
        out[2].contains("error"),
        "an unlisted name is not even looked up: {out:?}"
    );
    let ledger = entries(&run);
    let kinds: Vec<(&str, &str)> = ledger
        .iter()
        .map(|e| (e["kind"].as_str().unwrap_or(""), e["outcome"].as_str().unwrap_or("")))
        .collect();
    assert!(kinds.contains(&("lookup", "ok")), "{kinds:?}");
    assert!(kinds.contains(&("tcp", "ok")), "{kinds:?}");
    assert!(kinds.contains(&("tcp", "refused")), "{kinds:?}");
    let lookup_refused = ledger
        .iter()
        .find(|e| e["kind"] == "lookup" && e["outcome"] == "refused")
        .expect("the unlisted lookup is recorded");
    assert_eq!(lookup_refused["target"], "exfiltrate.example.com");
}
