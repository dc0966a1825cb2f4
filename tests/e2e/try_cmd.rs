//! `sandcron try`: every example guest and every hostile test guest run
//! once through the command, ending with the status, exit code and summary
//! a worker's run would have.

use std::path::PathBuf;
use std::process::Command;

use sandcron_tests::workspace_root;

use crate::{BIN, guest_wat};

/// Runs `sandcron try` with `args`; returns (exit status, stdout, stderr).
fn try_run(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(BIN)
        .arg("try")
        .args(args)
        .output()
        .expect("run sandcron try");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The summary line `key` (e.g. `status`) of a run's stderr.
fn summary(stderr: &str, key: &str) -> String {
    let tail = stderr.rsplit("---- sandcron try ----").next().unwrap_or_default();
    tail.lines()
        .find_map(|line| line.strip_prefix(key).map(str::trim).map(str::to_owned))
        .unwrap_or_else(|| panic!("no {key} in the summary:\n{stderr}"))
}

/// A test guest assembled into a file of its own.
fn wat_file(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    let path = dir.path().join(format!("{name}.wasm"));
    std::fs::write(&path, guest_wat(name)).expect("write guest");
    path
}

#[test]
fn every_example_guest_runs_and_succeeds() {
    for example in ["rust-module", "rust-component", "c", "assemblyscript", "python"] {
        let file = workspace_root().join(format!("target/guests/{example}.wasm"));
        let (code, out, err) = try_run(&[file.to_str().expect("path"), "--env", "GREETING=hi"]);
        assert_eq!(code, 0, "{example}: {err}");
        assert!(out.contains(&format!("hello from {example}")), "{example}: {out}");
        assert_eq!(summary(&err, "status"), "succeeded", "{example}");
        assert!(
            summary(&err, "fuel used").parse::<u64>().is_ok_and(|fuel| fuel > 0),
            "{example}"
        );
        assert!(!summary(&err, "peak memory").is_empty());
    }
}

#[test]
fn hostile_guests_end_with_their_status_and_exit_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    // (guest, extra flags, status, exit status of `sandcron try`)
    let cases: [(&str, &[&str], &str, i32); 9] = [
        ("hello", &[], "succeeded", 0),
        ("exit3", &[], "failed", 3),
        ("loop", &["--fuel", "5000000"], "out_of_fuel", 125),
        (
            "loop",
            &["--timeout", "1", "--fuel", "100000000000000"],
            "timed_out",
            124,
        ),
        ("memory_bomb", &["--memory-mb", "8"], "out_of_memory", 125),
        ("recursion", &[], "failed", 1),
        ("table_bomb", &[], "failed", 1),
        ("component_err", &[], "failed", 1),
        ("component_loop", &["--fuel", "5000000"], "out_of_fuel", 125),
    ];
    for (guest, flags, status, code) in cases {
        let file = wat_file(&dir, guest);
        let mut args = vec![file.to_str().expect("path")];
        args.extend_from_slice(flags);
        let (got, _, err) = try_run(&args);
        assert_eq!(summary(&err, "status"), status, "{guest} {flags:?}:\n{err}");
        assert_eq!(got, code, "{guest} {flags:?}:\n{err}");
    }

    // A flood is cut at the output limit, with the marker.
    let flood = wat_file(&dir, "flood");
    let (code, out, err) = try_run(&[flood.to_str().expect("path"), "--output-kb", "4"]);
    assert_eq!(code, 0, "{err}");
    assert!(summary(&err, "output").contains("cut at the limit"), "{err}");
    assert!(out.len() < 8 * 1024, "{} bytes printed", out.len());

    // What an upload would refuse is refused before anything runs.
    let forbidden = wat_file(&dir, "host_import");
    let (code, out, err) = try_run(&[forbidden.to_str().expect("path")]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("would be refused at upload") && err.contains("env::"),
        "{err}"
    );
    assert!(out.is_empty());
    let not_command = wat_file(&dir, "component_not_command");
    let (code, _, err) = try_run(&[not_command.to_str().expect("path")]);
    assert_eq!(code, 2);
    assert!(err.contains("wasi:cli/run"), "{err}");
}

#[test]
fn a_job_file_gives_the_limits_env_and_args_and_flags_override() {
    let dir = tempfile::tempdir().expect("temp dir");
    let guest = wat_file(&dir, "env_args");
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        "name = \"nightly\"\nschedule = \"@daily\"\n[kind.wasm]\nmodule = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\n\
         args = [\"from-file\"]\nenv = { REGION = \"eu\" }\nlimits = { fuel = 50_000_000, memory_mb = 16, timeout_s = 5, output_kb = 64 }\n",
    )
    .expect("job file");
    let (code, out, err) = try_run(&[
        guest.to_str().expect("path"),
        "--job",
        job.to_str().expect("path"),
        "--env",
        "EXTRA=1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("nightly"), "argv[0] is the job's name: {out}");
    assert!(out.contains("from-file"), "{out}");
    assert!(out.contains("REGION=eu") && out.contains("EXTRA=1"), "{out}");
    assert!(out.contains("SANDCRON_JOB=nightly"), "{out}");

    // A core module cannot be given the network.
    let (code, _, err) = try_run(&[guest.to_str().expect("path"), "--egress", "https://api.example.com"]);
    assert_eq!(code, 2);
    assert!(err.contains("only components"), "{err}");
    // Bad flags say which.
    let (code, _, err) = try_run(&[guest.to_str().expect("path"), "--env", "NOEQUALS"]);
    assert_eq!(code, 2);
    assert!(err.contains("--env \"NOEQUALS\""), "{err}");
}
