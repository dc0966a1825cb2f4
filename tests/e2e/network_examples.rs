//! The example guests that call an HTTP service (`examples/js-http`,
//! `examples/python-http` and `examples/rust-http`, built by
//! `scripts/build-guests.sh`), end to end: each runs as a job against a
//! local service, and the test checks what it printed, what reached the
//! service (its summary, with the run's fence and id) and what the run's
//! egress ledger says; then that a job without the service in its egress
//! fails without reaching it.

use std::time::Duration;

use sandcron_tests::Api;
use sandcron_tests::receiver::Receiver;
use serde_json::json;

use crate::{built_guest, dev, entries, lines, run_now};

/// The examples, each in its own language and toolchain.
const EXAMPLES: [&str; 3] = ["js-http", "python-http", "rust-http"];

/// How long a run may take to end. Generous because a worker compiles the
/// JavaScript and Python components (15–19 MB: an engine or an interpreter
/// inside) at their first run, about 30 s each on a 2-core machine.
const FIRST_RUN: Duration = Duration::from_secs(300);

/// Creates the job `name` running the example `guest` with `API_BASE` set
/// to `base` and `egress` as its list.
async fn example_job(api: &Api, name: &str, guest: &str, base: &str, egress: &[&str]) {
    let digest = api.upload_module(built_guest(guest)).await;
    let wasm = json!({
        "module": digest,
        "env": {"API_BASE": base},
        "egress": egress,
        "limits": {"timeout_s": 120},
    });
    let body = json!({"schedule": "0 0 1 1 *", "kind": {"wasm": wasm}});
    api.put(&format!("/api/v1/jobs/{name}"), &body).await.expect(201);
}

#[tokio::test]
async fn the_http_examples_report_their_summary_fenced_and_only_where_egress_allows() {
    let service = Receiver::start().await;
    let dev = dev(&[]);
    let api = dev.api();
    let base = format!("http://{}", service.addr);

    for guest in EXAMPLES {
        let job = format!("example-{guest}");
        example_job(&api, &job, guest, &base, &[&base]).await;
        let run = run_now(&api, &job, FIRST_RUN).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        let out = lines(&api, &run).await;
        assert_eq!(out, [format!("{guest}: 3 items worth 42, reported (200)")], "{run}");

        // One summary reached the service, carrying this run's fence and id.
        let reports: Vec<_> = service
            .requests_to("/report")
            .into_iter()
            .filter(|report| report.json()["guest"] == guest)
            .collect();
        assert_eq!(reports.len(), 1, "{guest}: {reports:?}");
        let report = &reports[0];
        assert_eq!(report.method, "POST");
        let summary = report.json();
        assert_eq!(summary["count"], 3, "{guest}: {summary}");
        assert_eq!(summary["total"], 42, "{guest}: {summary}");
        let fence = run["fence"].as_i64().expect("a fence");
        assert!(fence > 0, "{run}");
        assert_eq!(
            report.header("x-sandcron-fence"),
            Some(fence.to_string().as_str()),
            "{guest}"
        );
        assert_eq!(report.header("x-sandcron-run"), run["run_id"].as_str(), "{guest}");

        // The ledger holds the two calls, each with what it carried.
        let ledger = entries(&run);
        assert_eq!(ledger.len(), 2, "{run}");
        let (listing, posted) = (&ledger[0], &ledger[1]);
        assert_eq!(listing["method"], "GET", "{listing}");
        assert_eq!(listing["target"], base, "{listing}");
        assert_eq!(listing["path"], "/items", "{listing}");
        assert_eq!(listing["outcome"], "ok", "{listing}");
        assert_eq!(listing["status"], 200, "{listing}");
        assert!(listing["bytes_in"].as_u64() > Some(0), "{listing}");
        assert_eq!(posted["method"], "POST", "{posted}");
        assert_eq!(posted["path"], "/report", "{posted}");
        assert_eq!(posted["outcome"], "ok", "{posted}");
        assert_eq!(posted["status"], 200, "{posted}");
        assert_eq!(posted["bytes_out"], report.body.len(), "{posted}");
        assert!(posted["bytes_in"].as_u64() > Some(0), "{posted}");
    }
    assert_eq!(service.requests_to("/items").len(), EXAMPLES.len());
    assert_eq!(service.requests_to("/report").len(), EXAMPLES.len());

    // The same guest with the service left out of its egress: the host
    // refuses the first call, the guest says so and fails the run.
    let before = service.requests().len();
    example_job(&api, "example-unlisted", "rust-http", &base, &[]).await;
    let run = run_now(&api, "example-unlisted", FIRST_RUN).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(lines(&api, &run).await.is_empty(), "{run}");
    let output = api.output(run["run_id"].as_str().expect("id")).await;
    let errors: String = output
        .iter()
        .filter(|(stream, _)| stream == "stderr")
        .map(|(_, text)| text.as_str())
        .collect();
    assert!(
        errors.contains("rust-http: GET ") && errors.contains("HttpRequestDenied"),
        "{errors}"
    );
    let ledger = entries(&run);
    assert_eq!(ledger.len(), 1, "{run}");
    assert_eq!(ledger[0]["method"], "GET");
    assert_eq!(ledger[0]["path"], "/items");
    assert_eq!(ledger[0]["outcome"], "refused");
    let reason = ledger[0]["error"].as_str().unwrap_or_default();
    assert!(reason.contains("not in the job's egress"), "{reason}");
    assert_eq!(service.requests().len(), before, "nothing new reached the service");
}
