//! The example guests that call an HTTP service (`examples/js-http`,
//! `examples/python-http` and `examples/rust-http`, built by
//! `scripts/build-guests.sh`), end to end against `sandcron dev`: each runs
//! as a job that takes the service's token from a secret and its address
//! from its config, twice. The first run reads the first page of items, the
//! second goes on from the cursor the first kept in the job's key-value
//! state; the test checks what each printed, what reached the service (the
//! queries, the bearer token, the summary with the run's fence and id), the
//! egress ledger and the state. Then that a wrong secret fails the run on
//! the service's 401 without moving the cursor, and that a job without the
//! service in its egress fails without reaching it.

use std::time::Duration;

use sandcron_tests::Api;
use sandcron_tests::receiver::{Received, Receiver};
use serde_json::{Value, json};

use crate::{built_guest, dev, entries, lines, run_now};

/// The examples, each in its own language and toolchain.
const EXAMPLES: [&str; 3] = ["js-http", "python-http", "rust-http"];

/// The token the service wants, stored as the secret `items-token`.
const TOKEN: &str = "items-S3cr3t-7d41c9e2";
/// Another value, stored as the secret `stale-token`.
const WRONG_TOKEN: &str = "stale-S3cr3t-0b8f3a61";

/// What the runs of each example read of the service's five items, one
/// after the other: (the cursor before, the cursor after, how many items,
/// their total value). The first reads from the start, the second goes on
/// from the cursor the first kept.
const PAGES: [(u64, u64, u64, u64); 2] = [(0, 3, 3, 42), (3, 5, 2, 19)];

/// How long a run may take to end. Generous because a worker compiles the
/// JavaScript and Python components (15–19 MB: an engine or an interpreter
/// inside) at their first run, about 30 s each on a 2-core machine.
const FIRST_RUN: Duration = Duration::from_secs(300);

/// Creates the job `name` running the example `guest` with the secret
/// `secret` as `API_TOKEN`, `base` as its config's `API_BASE` and `egress`
/// as its list.
async fn example_job(api: &Api, name: &str, guest: &str, secret: &str, base: &str, egress: &[&str]) {
    let digest = api.upload_module(built_guest(guest)).await;
    let wasm = json!({
        "module": digest,
        "config": {"API_BASE": base},
        "egress": egress,
        "limits": {"timeout_s": 120},
    });
    let body = json!({
        "schedule": "0 0 1 1 *",
        "secrets": {"API_TOKEN": secret},
        "kind": {"wasm": wasm},
    });
    api.put(&format!("/api/v1/jobs/{name}"), &body).await.expect(201);
}

/// Runs `job` now; returns its record and the requests the service got
/// while it ran.
async fn run_with_requests(api: &Api, service: &Receiver, job: &str) -> (Value, Vec<Received>) {
    let before = service.requests().len();
    let run = run_now(api, job, FIRST_RUN).await;
    (run, service.requests().split_off(before))
}

/// Each request as `METHOD /path?query`.
fn calls(requests: &[Received]) -> Vec<String> {
    requests.iter().map(|r| format!("{} {}", r.method, r.uri)).collect()
}

/// A run's whole output, both streams.
async fn output(api: &Api, run: &Value) -> String {
    let chunks = api.output(run["run_id"].as_str().expect("id")).await;
    chunks.into_iter().map(|(_, text)| text).collect()
}

/// A run's stderr.
async fn errors(api: &Api, run: &Value) -> String {
    let chunks = api.output(run["run_id"].as_str().expect("id")).await;
    chunks
        .into_iter()
        .filter(|(stream, _)| stream == "stderr")
        .map(|(_, text)| text)
        .collect()
}

/// The keys of `job`'s state.
async fn state_keys(api: &Api, job: &str) -> Vec<Value> {
    let state = api.get(&format!("/api/v1/jobs/{job}/state")).await.expect(200);
    state["keys"].as_array().cloned().unwrap_or_default()
}

/// Checks one run that read a page of items and reported it: its lines, the
/// two calls the service got (with the token, the fence and the run id),
/// its ledger, and that its output never shows the token.
async fn check_page(api: &Api, guest: &str, run: &Value, requests: &[Received], page: (u64, u64, u64, u64)) {
    let (after, cursor, count, total) = page;
    assert_eq!(run["status"], "succeeded", "{guest}: {run}");
    assert_eq!(run["secrets"], json!(["items-token"]), "{guest}: {run}");
    assert_eq!(
        lines(api, run).await,
        [
            format!("{guest}: {count} items worth {total}, reported (200)"),
            format!("{guest}: cursor {after} -> {cursor}"),
        ],
        "{run}"
    );
    assert_eq!(
        calls(requests),
        [format!("GET /items?after={after}&limit=3"), "POST /report".to_owned()],
        "{guest}"
    );
    for request in requests {
        let bearer = format!("Bearer {TOKEN}");
        assert_eq!(
            request.header("authorization"),
            Some(bearer.as_str()),
            "{guest}: {request:?}"
        );
    }
    let report = &requests[1];
    assert_eq!(report.json(), json!({"guest": guest, "count": count, "total": total}));
    let fence = run["fence"].as_i64().expect("a fence");
    assert!(fence > 0, "{run}");
    assert_eq!(
        report.header("x-sandcron-fence"),
        Some(fence.to_string().as_str()),
        "{guest}"
    );
    assert_eq!(report.header("x-sandcron-run"), run["run_id"].as_str(), "{guest}");
    let out = output(api, run).await;
    assert!(!out.contains(TOKEN), "{guest} printed the token: {out}");

    // The ledger holds the two calls (paths without their query).
    let ledger = entries(run);
    assert_eq!(ledger.len(), 2, "{run}");
    let (listing, posted) = (&ledger[0], &ledger[1]);
    assert_eq!(listing["method"], "GET", "{listing}");
    assert_eq!(listing["path"], "/items", "{listing}");
    assert_eq!(listing["outcome"], "ok", "{listing}");
    assert_eq!(listing["status"], 200, "{listing}");
    assert!(listing["bytes_in"].as_u64() > Some(0), "{listing}");
    assert_eq!(posted["method"], "POST", "{posted}");
    assert_eq!(posted["path"], "/report", "{posted}");
    assert_eq!(posted["status"], 200, "{posted}");
    assert_eq!(posted["bytes_out"], report.body.len(), "{posted}");
}

#[tokio::test]
async fn the_http_examples_read_new_items_with_their_secret_and_keep_a_cursor_between_runs() {
    let service = Receiver::start_with_bearer(TOKEN).await;
    let dev = dev(&[]);
    let api = dev.api();
    let base = format!("http://{}", service.addr);
    api.put_secret("items-token", TOKEN).await;
    api.put_secret("stale-token", WRONG_TOKEN).await;

    for guest in EXAMPLES {
        let job = format!("example-{guest}");
        example_job(&api, &job, guest, "items-token", &base, &[&base]).await;
        let mut fence = 0;
        for page in PAGES {
            let (run, requests) = run_with_requests(&api, &service, &job).await;
            check_page(&api, guest, &run, &requests, page).await;
            assert!(run["fence"].as_i64() > Some(fence), "a newer fence: {run}");
            fence = run["fence"].as_i64().unwrap_or_default();
            // The state holds the cursor, the id of the last item reported.
            let keys = state_keys(&api, &job).await;
            assert_eq!(keys.len(), 1, "{keys:?}");
            assert_eq!(keys[0]["key"], "cursor", "{keys:?}");
            assert_eq!(keys[0]["size"], 1, "\"{}\": {keys:?}", page.1);
        }
    }

    // A wrong token: the service refuses the listing (401), the guest says
    // so and fails the run, and neither reports nor keeps a cursor.
    for guest in EXAMPLES {
        let job = format!("stale-{guest}");
        example_job(&api, &job, guest, "stale-token", &base, &[&base]).await;
        let (run, requests) = run_with_requests(&api, &service, &job).await;
        assert_eq!(run["status"], "failed", "{guest}: {run}");
        assert_eq!(calls(&requests), ["GET /items?after=0&limit=3"], "{guest}");
        let bearer = format!("Bearer {WRONG_TOKEN}");
        assert_eq!(requests[0].header("authorization"), Some(bearer.as_str()), "{guest}");
        let stderr = errors(&api, &run).await;
        let expected = format!("{guest}: GET {base}/items?after=0&limit=3 answered 401");
        assert!(stderr.contains(&expected), "{guest}: {stderr}");
        assert!(stderr.contains("the service refused the token"), "{guest}: {stderr}");
        assert!(lines(&api, &run).await.is_empty(), "{run}");
        assert!(!output(&api, &run).await.contains(WRONG_TOKEN), "{guest}");
        assert_eq!(entries(&run)[0]["status"], 401, "{run}");
        assert!(state_keys(&api, &job).await.is_empty(), "{guest}: no cursor kept");
    }

    // The same guest with the service left out of its egress: the host
    // refuses the first call, the guest says so and fails the run.
    example_job(&api, "example-unlisted", "rust-http", "items-token", &base, &[]).await;
    let (run, requests) = run_with_requests(&api, &service, "example-unlisted").await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(lines(&api, &run).await.is_empty(), "{run}");
    let stderr = errors(&api, &run).await;
    assert!(
        stderr.contains("rust-http: GET ") && stderr.contains("HttpRequestDenied"),
        "{stderr}"
    );
    let ledger = entries(&run);
    assert_eq!(ledger.len(), 1, "{run}");
    assert_eq!(ledger[0]["method"], "GET");
    assert_eq!(ledger[0]["path"], "/items");
    assert_eq!(ledger[0]["outcome"], "refused");
    let reason = ledger[0]["error"].as_str().unwrap_or_default();
    assert!(reason.contains("not in the job's egress"), "{reason}");
    assert!(requests.is_empty(), "nothing reached the service: {requests:?}");
}
