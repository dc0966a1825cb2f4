//! The web console: `GET /api/v1/whoami`, which the console reads to offer
//! only what the caller's role allows, and the console itself driven in a
//! real browser — `tests/browser/console.test.mjs` (npm `playwright-core`
//! with Debian's chromium) against real `sandcron dev` servers.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sandcron_tests::workspace_root;

use crate::{dev, guest_wat, tokens_config};

const VIEWER: &str = "console-viewer-token-0123456789";
const OPERATOR: &str = "console-operator-token-0123456789";
const ADMIN: &str = "console-admin-token-0123456789";

/// The longest the browser test may take before it is killed.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(300);

/// (name, role, token) of a viewer, an operator and an admin.
const TOKENS: [(&str, &str, &str); 3] = [
    ("watcher", "viewer", VIEWER),
    ("ops", "operator", OPERATOR),
    ("root", "admin", ADMIN),
];

#[tokio::test]
async fn whoami_names_the_callers_role() {
    let open = dev(&[]);
    let me = open.api().get("/api/v1/whoami").await.expect(200);
    assert_eq!(
        me,
        serde_json::json!({"name": "local", "role": "admin", "tokens_required": false, "shell_jobs": true})
    );

    let no_native = dev(&["--no-native"]);
    let me = no_native.api().get("/api/v1/whoami").await.expect(200);
    assert_eq!(me["shell_jobs"], false);

    let dir = tempfile::tempdir().unwrap();
    let config = tokens_config(dir.path(), &TOKENS);
    let guarded = dev(&["--config", &config]);
    guarded
        .api()
        .get("/api/v1/whoami")
        .await
        .expect_error(401, "unauthorized", "missing bearer token");
    guarded
        .api_with_token("not-a-token-at-all")
        .get("/api/v1/whoami")
        .await
        .expect_error(401, "unauthorized", "invalid token");
    let viewer = guarded.api_with_token(VIEWER).get("/api/v1/whoami").await.expect(200);
    assert_eq!(viewer["name"], "watcher");
    assert_eq!(viewer["role"], "viewer");
    assert_eq!(viewer["tokens_required"], true);
    let operator = guarded.api_with_token(OPERATOR).get("/api/v1/whoami").await.expect(200);
    assert_eq!(operator["role"], "operator");
    let admin = guarded.api_with_token(ADMIN).get("/api/v1/whoami").await.expect(200);
    assert_eq!(admin["role"], "admin");

    // It is described with the other routes.
    let doc = open.api().get("/api/v1/openapi.json").await.expect(200);
    assert!(doc["paths"]["/api/v1/whoami"]["get"].is_object());
}

#[test]
fn the_console_works_in_a_real_browser() {
    let root = workspace_root();
    let browser_dir = root.join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed; run `npm ci` in tests/browser (scripts/test.sh does)"
    );
    let example = root.join("target/guests/rust-module.wasm");
    // A component that makes the network calls its arguments ask for, so a
    // run has an egress ledger to show.
    let net_probe = root.join("target/guests/net-probe.wasm");
    // A component that keeps key-value state, so a job's page has state to show.
    let kv_probe = root.join("target/guests/kv-probe.wasm");
    for guest in [&example, &net_probe, &kv_probe] {
        assert!(
            guest.is_file(),
            "{} is missing; build the guests with scripts/build-guests.sh",
            guest.display()
        );
    }
    let artifacts = root.join("target/console-test");
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    // A module the server must refuse (it imports a host function that is
    // not WASI), and one that prints a line and then sleeps for a minute.
    let assemble = |name: &str| {
        let path = artifacts.join(format!("{name}.wasm"));
        std::fs::write(&path, guest_wat(name)).expect("write module");
        path
    };
    let refused = assemble("host_import");
    let sleeper = assemble("sleep");

    let open = dev(&[]);
    let dir = tempfile::tempdir().unwrap();
    let config = tokens_config(dir.path(), &TOKENS);
    let guarded = dev(&["--config", &config]);

    let log_path = artifacts.join("node.log");
    let log = std::fs::File::create(&log_path).expect("node log");
    let mut command = Command::new("node");
    command
        .arg("--test-reporter=spec")
        .arg("console.test.mjs")
        .current_dir(&browser_dir)
        .env("SANDCRON_URL", &open.base)
        .env("SANDCRON_AUTH_URL", &guarded.base)
        .env("SANDCRON_VIEWER_TOKEN", VIEWER)
        .env("SANDCRON_OPERATOR_TOKEN", OPERATOR)
        .env("SANDCRON_ADMIN_TOKEN", ADMIN)
        .env("SANDCRON_EXAMPLE_WASM", &example)
        .env("SANDCRON_NET_PROBE_WASM", &net_probe)
        .env("SANDCRON_KV_PROBE_WASM", &kv_probe)
        .env("SANDCRON_REFUSED_WASM", &refused)
        .env("SANDCRON_SLEEP_WASM", &sleeper)
        .env("ARTIFACT_DIR", &artifacts)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log);
    // SANDCRON_DOCS_SCREENSHOTS=1 also refreshes the README's screenshots.
    if std::env::var_os("SANDCRON_DOCS_SCREENSHOTS").is_some() {
        command.env("DOCS_SCREENSHOTS_DIR", root.join("docs/console"));
    }
    let started = Instant::now();
    let mut child = command
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start node (install nodejs; scripts/test.sh does): {err}"));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break Some(status);
        }
        if started.elapsed() > BROWSER_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    match status {
        Some(status) if status.success() => {
            println!("{output}");
            println!("browser tests took {:.1} s", started.elapsed().as_secs_f64());
        }
        Some(status) => panic!(
            "the browser tests failed ({status}); screenshots in {}\n{output}",
            artifacts.display()
        ),
        None => panic!("the browser tests did not finish within {BROWSER_TIMEOUT:?}\n{output}"),
    }
}
