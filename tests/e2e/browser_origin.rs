//! A tokenless `sandcron dev` against hostile web pages, in a real browser:
//! `tests/browser/cross-origin.test.mjs` (npm `playwright-core` with
//! Debian's chromium) serves a page from another origin and a DNS-rebound
//! one, has them fire every write they can at the server, and checks that
//! nothing changed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sandcron_tests::workspace_root;

use crate::{dev, shell_job};

#[tokio::test]
async fn pages_from_other_origins_and_rebound_names_change_nothing() {
    let root = workspace_root();
    let browser_dir = root.join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed; run `npm ci` in tests/browser (scripts/test.sh does)"
    );
    let server = dev(&[]);
    // A shell job: what an attacker would most like to run or replace.
    server
        .api()
        .put("/api/v1/jobs/target", &shell_job("0 0 1 1 *", "true"))
        .await
        .expect(201);
    let artifacts = root.join("target/browser-origin-test");
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    let log_path = artifacts.join("node.log");
    let log = std::fs::File::create(&log_path).expect("node log");
    let mut child = Command::new("node")
        .arg("--test-reporter=spec")
        .arg("cross-origin.test.mjs")
        .current_dir(&browser_dir)
        .env("SANDCRON_URL", &server.base)
        .env("ARTIFACT_DIR", &artifacts)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start node (install nodejs; scripts/test.sh does): {err}"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("the browser test took over 2 minutes; see {}", log_path.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(status.success(), "{output}");
    assert!(output.contains("pass 2") && output.contains("fail 0"), "{output}");
}
