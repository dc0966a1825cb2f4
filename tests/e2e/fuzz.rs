//! API fuzzing: schemathesis (PyPI, installed by scripts/test.sh) generates
//! requests from `/api/v1/openapi.json` against a real `sandcron dev` with
//! auth, and checks every answer: no 5xx, status codes documented, bodies
//! and content types as described. A minute of it runs in the test command;
//! each run uses a new seed (printed), so coverage grows over time.

use std::path::PathBuf;
use std::process::Command;

use sandcron_tests::workspace_root;

use crate::{dev, tokens_config};

/// The release `scripts/install-fuzz-tools.sh` installs.
const SCHEMATHESIS_VERSION: &str = "4.32.5";
const TOKEN: &str = "fuzz-admin-token-0123456789";

fn schemathesis_dir() -> PathBuf {
    match std::env::var_os("SANDCRON_SCHEMATHESIS") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root()
            .join("target/test-tools/pip")
            .join(format!("schemathesis-{SCHEMATHESIS_VERSION}")),
    }
}

#[test]
fn schemathesis_finds_no_server_error_and_no_undocumented_answer() {
    let st = schemathesis_dir();
    assert!(
        st.join("bin/st").exists(),
        "schemathesis is not installed at {}: run scripts/install-fuzz-tools.sh (scripts/test.sh does)",
        st.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let config = tokens_config(dir.path(), &[("fuzz", "admin", TOKEN)]);
    let server = dev(&["--config", &config]);
    let output = Command::new(st.join("bin/st"))
        .env("PYTHONPATH", &st)
        // It keeps a cache in its working directory.
        .current_dir(dir.path())
        .args(["run", &format!("{}/api/v1/openapi.json", server.base)])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
        ])
        // Raw .wasm bodies are beyond its generators; uploads have their
        // own tests (wasm.rs, hostile.rs).
        .args(["--exclude-operation-id", "upload"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "25", "--workers", "2", "--max-time", "60"])
        .output()
        .expect("run schemathesis");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "schemathesis found problems:\n{report}");
    assert!(report.contains("passed"), "{report}");
    let log = server.log_text();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
    assert!(!log.contains(TOKEN), "the token leaked into the log");
}
