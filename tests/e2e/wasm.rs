//! WASM jobs end to end: uploads and their validation, the example guests in
//! five languages, kills, limits and hostile guests, the dev demo job.

use std::time::{Duration, Instant};

use sandcron_tests::{Api, Dev, wait_for, wasm_job};
use serde_json::{Value, json};

use crate::{built_guest as example, dev, guest_wat};

/// Creates `name` with `body`, runs it now and waits for its run to end.
async fn run_once(api: &Api, name: &str, body: &Value, timeout: Duration) -> Value {
    api.put(&format!("/api/v1/jobs/{name}"), body).await.expect(201);
    api.post(&format!("/api/v1/jobs/{name}/run")).await.expect(202);
    wait_for(&format!("the run of {name} to end"), timeout, || async {
        api.runs(name).await.into_iter().find(|r| r["status"] != "running")
    })
    .await
}

fn stdout(output: &[(String, String)]) -> String {
    output
        .iter()
        .filter(|(stream, _)| stream == "stdout")
        .map(|(_, text)| text.as_str())
        .collect()
}

#[tokio::test]
async fn every_example_guest_runs_from_an_upload() {
    let dev = dev(&[]);
    let api = dev.api();
    // (example, greeting name, result value if it sets one)
    let cases = [
        ("rust-module", "rust-module", Some(json!({"ok": true, "attempt": 1}))),
        ("rust-component", "rust-component", None),
        ("c", "c", Some(json!({"lang": "c", "attempt": 1}))),
        (
            "assemblyscript",
            "assemblyscript",
            Some(json!({"lang": "assemblyscript"})),
        ),
        ("python", "python", None),
    ];
    // Every example is uploaded and scheduled every two seconds.
    for (example_name, _, _) in &cases {
        let digest = api.upload_module(example(example_name)).await;
        let job = format!("ex-{example_name}");
        api.put(&format!("/api/v1/jobs/{job}"), &wasm_job("@every 2s", &digest, None))
            .await
            .expect(201);
    }
    for (example_name, lang, result) in cases {
        let job = format!("ex-{example_name}");
        // The Python component compiles for a while on first use; ticks
        // meanwhile are skipped (overlap: forbid).
        let run = wait_for(
            &format!("a scheduled run of {job}"),
            Duration::from_secs(180),
            || async {
                api.runs(&job)
                    .await
                    .into_iter()
                    .find(|r| r["status"] != "running" && r["status"] != "skipped")
            },
        )
        .await;
        api.post(&format!("/api/v1/jobs/{job}/pause")).await.expect(200);
        assert_eq!(run["status"], "succeeded", "{example_name}: {run}");
        assert_eq!(run["trigger"], "schedule");
        assert_eq!(run["exit_code"], 0);
        assert!(
            run["fuel_used"].as_u64().unwrap() > 0,
            "{example_name}: fuel is recorded"
        );
        assert!(
            run["peak_memory"].as_u64().unwrap() > 0,
            "{example_name}: memory is recorded"
        );
        let output = api.output(run["run_id"].as_str().unwrap()).await;
        let text = stdout(&output);
        let first = text.lines().next().unwrap_or_default();
        assert_eq!(
            first,
            format!("hello from {lang}: job={job} tick={}", run["tick"].as_str().unwrap()),
            "{text}"
        );
        if let Some(expected) = result {
            assert_eq!(run["result"], expected, "{example_name}");
        }
    }
    // The modules list names the jobs using each.
    let modules = api.get("/api/v1/modules").await.expect(200);
    assert_eq!(modules.as_array().unwrap().len(), 5);
    for module in modules.as_array().unwrap() {
        assert_eq!(module["jobs"].as_array().unwrap().len(), 1, "{module}");
    }
    // A component reports failure as exit status 1.
    let digest = api.upload_module(example("rust-component")).await;
    let mut failing = wasm_job("@yearly", &digest, None);
    failing["kind"]["wasm"]["args"] = json!(["fail"]);
    let run = run_once(&api, "component-fails", &failing, Duration::from_secs(60)).await;
    assert_eq!(
        (run["status"].as_str(), run["exit_code"].as_i64()),
        (Some("failed"), Some(1)),
        "{run}"
    );
}

#[tokio::test]
async fn a_wasm_job_runs_every_second_and_its_output_is_visible_while_it_runs() {
    let dev = dev(&[]);
    let api = dev.api();
    let hello = api.upload_module(guest_wat("hello")).await;
    api.put("/api/v1/jobs/every", &wasm_job("@every 1s", &hello, None))
        .await
        .expect(201);
    let runs = wait_for("three runs", Duration::from_secs(20), || async {
        let runs: Vec<Value> = api
            .runs("every")
            .await
            .into_iter()
            .filter(|r| r["status"] == "succeeded")
            .collect();
        (runs.len() >= 3).then_some(runs)
    })
    .await;
    for run in &runs {
        assert_eq!(stdout(&api.output(run["run_id"].as_str().unwrap()).await), "hello\n");
    }
    api.delete("/api/v1/jobs/every").await.expect(204);

    // A guest that prints, then sleeps in a host call: the output is there
    // while it is still running.
    let sleeper = api.upload_module(guest_wat("sleep")).await;
    api.put("/api/v1/jobs/sleeper", &wasm_job("@yearly", &sleeper, None))
        .await
        .expect(201);
    api.post("/api/v1/jobs/sleeper/run").await.expect(202);
    let run_id = wait_for("output while running", Duration::from_secs(20), || async {
        let run = api.runs("sleeper").await.into_iter().next()?;
        let id = run["run_id"].as_str()?.to_owned();
        (run["status"] == "running" && stdout(&api.output(&id).await) == "sleeping\n").then_some(id)
    })
    .await;
    // Killed while blocked in poll_oneoff.
    api.post(&format!("/api/v1/jobs/sleeper/kill?run_id={run_id}"))
        .await
        .expect(202);
    let run = wait_for("the sleeper to end", Duration::from_secs(10), || async {
        let run = api.get(&format!("/api/v1/runs/{run_id}")).await.expect(200);
        (run["status"] != "running").then_some(run)
    })
    .await;
    assert_eq!(run["status"], "killed", "{run}");
}

#[tokio::test]
async fn a_kill_ends_a_cpu_bound_guest() {
    let dev = dev(&[]);
    let api = dev.api();
    let spin = api.upload_module(guest_wat("spin")).await;
    let body = wasm_job(
        "@yearly",
        &spin,
        Some(json!({"fuel": 1_000_000_000_000_000u64, "timeout_s": 600})),
    );
    api.put("/api/v1/jobs/spin", &body).await.expect(201);
    api.post("/api/v1/jobs/spin/run").await.expect(202);
    let run_id = wait_for("the guest to spin", Duration::from_secs(20), || async {
        let run = api.runs("spin").await.into_iter().next()?;
        let id = run["run_id"].as_str()?.to_owned();
        (stdout(&api.output(&id).await) == "spinning\n").then_some(id)
    })
    .await;
    let requested = Instant::now();
    api.post("/api/v1/jobs/spin/kill").await.expect(202);
    let run = wait_for("the kill", Duration::from_secs(10), || async {
        let run = api.get(&format!("/api/v1/runs/{run_id}")).await.expect(200);
        (run["status"] != "running").then_some(run)
    })
    .await;
    eprintln!(
        "kill request → recorded end of a spinning guest: {:?}",
        requested.elapsed()
    );
    assert_eq!(run["status"], "killed", "{run}");
    assert!(run["fuel_used"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn hostile_guests_end_in_their_own_status_without_disturbing_others() {
    let dev = dev(&[]);
    let api = dev.api();
    let hello = api.upload_module(guest_wat("hello")).await;
    api.put("/api/v1/jobs/bystander", &wasm_job("@every 1s", &hello, None))
        .await
        .expect(201);
    let lots_of_fuel = 1_000_000_000_000_000u64;
    // (job, guest, limits, expected status, text the error or output must contain)
    let cases = [
        ("fuel", "loop", json!({"fuel": 1_000_000}), "out_of_fuel", ""),
        (
            "slow",
            "loop",
            json!({"fuel": lots_of_fuel, "timeout_s": 1}),
            "timed_out",
            "timed out",
        ),
        ("memory", "memory_bomb", json!({"memory_mb": 16}), "out_of_memory", ""),
        ("table", "table_bomb", json!({}), "failed", ""),
        ("recursion", "recursion", json!({}), "failed", "stack overflow"),
        ("files", "files", json!({}), "failed", ""),
    ];
    let mut digests = Vec::new();
    for (job, guest, limits, _, _) in &cases {
        let digest = api.upload_module(guest_wat(guest)).await;
        api.put(
            &format!("/api/v1/jobs/{job}"),
            &wasm_job("@yearly", &digest, Some(limits.clone())),
        )
        .await
        .expect(201);
        digests.push(digest);
    }
    for (job, ..) in &cases {
        api.post(&format!("/api/v1/jobs/{job}/run")).await.expect(202);
    }
    for (job, _, _, status, text) in &cases {
        let run = wait_for(&format!("{job} to end"), Duration::from_secs(60), || async {
            api.runs(job).await.into_iter().find(|r| r["status"] != "running")
        })
        .await;
        assert_eq!(run["status"], *status, "{job}: {run}");
        let error = run["error"].as_str().unwrap_or_default().to_lowercase();
        assert!(error.contains(text), "{job}: error {error:?} lacks {text:?}");
    }
    // Files: every escape was refused (the guest exits 2 then) and said so.
    let files = api.runs("files").await.remove(0);
    assert_eq!(files["exit_code"], 2, "{files}");
    let text = stdout(&api.output(files["run_id"].as_str().unwrap()).await);
    assert!(
        text.contains("/etc/passwd: errno") && text.contains("../x: errno"),
        "{text}"
    );
    // The bystander keeps running every second, untouched by its neighbours.
    let bystander = wait_for("the bystander to keep running", Duration::from_secs(20), || async {
        let runs = api.runs("bystander").await;
        (runs.iter().filter(|r| r["status"] == "succeeded").count() >= 3).then_some(runs)
    })
    .await;
    assert!(
        bystander
            .iter()
            .all(|r| ["succeeded", "running", "skipped"].contains(&r["status"].as_str().unwrap())),
        "{bystander:?}"
    );
}

#[tokio::test]
async fn a_stdout_flood_is_cut_at_the_cap_and_env_is_isolated() {
    let dev = dev(&[]);
    let api = dev.api();
    let flood = api.upload_module(guest_wat("flood")).await;
    let run = run_once(
        &api,
        "flood",
        &wasm_job("@yearly", &flood, Some(json!({"output_kb": 64}))),
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["truncated"], true);
    assert_eq!(run["output_bytes"], 65536);
    let env = api.upload_module(guest_wat("env_args")).await;
    let mut body = wasm_job("@yearly", &env, None);
    body["kind"]["wasm"]["args"] = json!(["one", "two"]);
    body["kind"]["wasm"]["env"] = json!({"GIVEN": "yes"});
    let run = run_once(&api, "env", &body, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let text = stdout(&api.output(run["run_id"].as_str().unwrap()).await);
    let (args, env) = text.split_once("--\n").expect("args, then environment");
    assert_eq!(args, "env\none\ntwo\n", "argv[0] is the job name");
    let names: Vec<&str> = env
        .lines()
        .map(|line| line.split('=').next().unwrap_or_default())
        .collect();
    for expected in [
        "GIVEN",
        "SANDCRON_JOB",
        "SANDCRON_RUN_ID",
        "SANDCRON_TICK",
        "SANDCRON_ATTEMPT",
        "SANDCRON_FENCE",
    ] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    for forbidden in ["PATH", "HOME", "SANDCRON_LOG"] {
        assert!(
            !names.contains(&forbidden),
            "the host's {forbidden} leaked into the guest"
        );
    }
}

#[tokio::test]
async fn uploads_are_validated_with_a_precise_reason() {
    let dev = dev(&[]);
    let api = dev.api();
    let post = |content_type: &'static str, body: Vec<u8>| {
        let api = api.clone();
        async move { api.raw("POST", "/api/v1/modules", content_type, body).await }
    };
    post("application/wasm", b"MZ\x90\x00 not wasm".to_vec())
        .await
        .expect_error(422, "invalid", "bad magic");
    post("application/wasm", Vec::new())
        .await
        .expect_error(422, "invalid", "bad magic");
    let mut garbage = b"\0asm\x01\0\0\0".to_vec();
    garbage.extend_from_slice(&[0x01, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00]);
    post("application/wasm", garbage)
        .await
        .expect_error(422, "invalid", "invalid WebAssembly");
    post("application/wasm", guest_wat("host_import")).await.expect_error(
        422,
        "invalid",
        "imports other than WASI are not allowed: env::host_fn",
    );
    post("application/wasm", guest_wat("component_not_command"))
        .await
        .expect_error(422, "invalid", "not a command");
    post("application/wasm", guest_wat("component_forbidden_import"))
        .await
        .expect_error(422, "invalid", "imports other than WASI");
    // 100 MB declared: refused from the headers, before the body is sent.
    let head =
        sandcron_tests::answer_to_declared_length(&dev.base, "POST", "/api/v1/modules", "application/wasm", 100 << 20);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("larger than the limit"), "{head}");
    post("text/plain", guest_wat("hello"))
        .await
        .expect_error(415, "unsupported_media_type", "application/wasm");

    // Multipart: the field must be called "module".
    let boundary = "sandcron-test-boundary";
    let multipart = |field: &str, bytes: &[u8]| {
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"x.wasm\"\r\nContent-Type: application/wasm\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        body
    };
    let content_type = "multipart/form-data; boundary=sandcron-test-boundary";
    let hello = guest_wat("hello");
    api.raw("POST", "/api/v1/modules", content_type, multipart("file", &hello))
        .await
        .expect_error(422, "invalid", "no field named \"module\"");
    let created = api
        .raw("POST", "/api/v1/modules", content_type, multipart("module", &hello))
        .await
        .expect(201);
    assert_eq!(created["kind"], "module");
    assert_eq!(created["created"], true);
    assert_eq!(created["size"], hello.len());
    // Uploading the same bytes again is harmless.
    let again = api
        .raw("POST", "/api/v1/modules", "application/wasm", hello.clone())
        .await
        .expect(200);
    assert_eq!(
        (again["digest"].clone(), again["created"].clone()),
        (created["digest"].clone(), json!(false))
    );
    let digest = created["digest"].as_str().unwrap().to_owned();
    let component = api.upload_module(guest_wat("component_hello")).await;
    assert_eq!(
        api.get(&format!("/api/v1/modules/{component}")).await.expect(200)["kind"],
        "component"
    );

    // A module in use cannot be deleted; an unused one can.
    api.put("/api/v1/jobs/user", &wasm_job("@yearly", &digest, None))
        .await
        .expect(201);
    api.delete(&format!("/api/v1/modules/{digest}"))
        .await
        .expect_error(409, "conflict", "used by jobs: user");
    api.delete(&format!("/api/v1/modules/{component}")).await.expect(204);
    api.get(&format!("/api/v1/modules/{component}"))
        .await
        .expect_error(404, "not_found", "is not stored");
    api.get("/api/v1/modules/sha256:nope")
        .await
        .expect_error(422, "invalid", "64 lower-case hex digits");
}

#[tokio::test]
async fn the_dev_demo_job_is_a_wasm_module_that_runs_at_once() {
    let dev = Dev::start_exactly(crate::BIN, &[]);
    let api = dev.api();
    let job = api.get("/api/v1/jobs/hello").await.expect(200);
    assert!(job["kind"]["wasm"].is_object(), "{job}");
    let run = wait_for("the demo's first run", Duration::from_secs(30), || async {
        api.runs("hello").await.into_iter().find(|r| r["status"] == "succeeded")
    })
    .await;
    let text = stdout(&api.output(run["run_id"].as_str().unwrap()).await);
    assert_eq!(
        text,
        format!(
            "hello from sandcron's WebAssembly sandbox: job hello, tick {}\n",
            run["tick"].as_str().unwrap()
        )
    );
}

#[tokio::test]
async fn a_worker_gets_a_job_s_module_ready_when_it_takes_the_job_on() {
    let dev = dev(&[]);
    let api = dev.api();
    let digest = api.upload_module(example("rust-component")).await;
    api.put("/api/v1/jobs/warmed", &wasm_job("@yearly", &digest, None))
        .await
        .expect(201);
    // No run yet: the worker compiles the module because it owns the job.
    wait_for(
        "the worker to get the module ready",
        Duration::from_secs(120),
        || async {
            dev.log_text()
                .lines()
                .any(|line| line.contains("module ready ahead of its first run") && line.contains(&digest))
                .then_some(())
        },
    )
    .await;
    assert!(api.runs("warmed").await.is_empty());
    api.post("/api/v1/jobs/warmed/run").await.expect(202);
    let run = wait_for("the run to end", Duration::from_secs(60), || async {
        api.runs("warmed").await.into_iter().find(|r| r["status"] != "running")
    })
    .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(run.get("module_wait_ms").is_none(), "the module was ready: {run}");
}
