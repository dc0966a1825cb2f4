//! The command line: local cron helpers and the client subcommands against a
//! running server.

use std::time::Duration;

use sandcron_tests::wait_for;

use crate::dev;

fn sandcron(args: &[&str], server: Option<&str>) -> (i32, String, String) {
    crate::cli(args, server)
}

#[test]
fn cron_next_prints_rfc3339_instants_in_the_zone() {
    let (code, out, err) = sandcron(
        &[
            "cron",
            "next",
            "0 9 * * MON-FRI",
            "--tz",
            "Europe/Berlin",
            "--after",
            "2026-11-20T12:00:00Z",
            "--count",
            "3",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "2026-11-23T09:00:00+01:00\n2026-11-24T09:00:00+01:00\n2026-11-25T09:00:00+01:00\n"
    );
    // The spring-forward gap: a fixed-time job fires at the first instant after it.
    let (_, out, _) = sandcron(
        &[
            "cron",
            "next",
            "30 2 * * *",
            "--tz",
            "America/New_York",
            "--after",
            "2026-03-07T12:00:00Z",
            "--count",
            "2",
        ],
        None,
    );
    assert_eq!(out, "2026-03-08T03:00:00-04:00\n2026-03-09T02:30:00-04:00\n");
}

#[test]
fn cron_errors_point_at_the_field() {
    let (code, _, err) = sandcron(&["cron", "next", "0 25 * * *"], None);
    assert_eq!(code, 1);
    assert!(err.contains("hour field \"25\": 25 is out of range 0-23"), "{err}");
    let (code, _, err) = sandcron(&["cron", "next", "@daily", "--tz", "Atlantis/Capital"], None);
    assert_eq!(code, 1);
    assert!(err.contains("unknown time zone \"Atlantis/Capital\""), "{err}");
}

#[test]
fn cron_explain_says_when_it_fires() {
    let (code, out, _) = sandcron(&["cron", "explain", "*/15 * * * *"], None);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "every 15 minutes");
}

#[tokio::test]
async fn job_apply_list_run_logs_and_remove_through_the_cli() {
    let dev = dev(&[]);
    let server = dev.base.clone();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("greet.toml");
    std::fs::write(
        &file,
        "name = \"greet\"\nschedule = \"@yearly\"\ndescription = \"says hello\"\n[kind.shell]\ncommand = \"echo hello from the cli\"\n",
    )
    .unwrap();
    let file = file.to_string_lossy().into_owned();
    let (code, out, err) = sandcron(&["job", "apply", "-f", &file], Some(&server));
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("job greet saved (revision "), "{out}");
    let (code, out, _) = sandcron(&["job", "ls"], Some(&server));
    assert_eq!(code, 0);
    assert!(out.lines().nth(1).unwrap().starts_with("greet "), "{out}");
    let (code, out, err) = sandcron(&["run", "greet"], Some(&server));
    assert_eq!(code, 0, "{err}");
    let run_id = out
        .strip_prefix("run ")
        .and_then(|rest| rest.strip_suffix(" of greet requested\n"))
        .unwrap_or_else(|| panic!("run names its run: {out:?}"))
        .to_owned();
    let api = dev.api();
    wait_for("the run to succeed", Duration::from_secs(20), || async {
        api.runs("greet")
            .await
            .iter()
            .any(|r| r["status"] == "succeeded" && r["run_id"] == run_id.as_str())
            .then_some(())
    })
    .await;
    let (code, out, err) = sandcron(&["logs", &run_id, "--follow"], Some(&server));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hello from the cli\n");
    assert!(err.contains("succeeded"), "{err}");
    let (code, out, _) = sandcron(&["logs", "greet"], Some(&server));
    assert_eq!((code, out.as_str()), (0, "hello from the cli\n"));
    let (code, _, err) = sandcron(&["logs", "nosuch"], Some(&server));
    assert_eq!(code, 1);
    assert!(err.contains("job nosuch does not exist"), "{err}");
    // Global flags may come first; run --follow prints the run live and
    // exits with its outcome.
    let (code, out, err) = sandcron(&["--server", &server, "run", "greet", "--follow"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("hello from the cli\n"), "{out}");
    assert!(err.contains("succeeded"), "{err}");
    let (code, out, _) = sandcron(&["runs", "--job", "greet"], Some(&server));
    assert_eq!(code, 0);
    assert!(out.contains("manual") && out.contains("succeeded"), "{out}");
    let (code, out, _) = sandcron(&["workers"], Some(&server));
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "a header and the one dev worker: {out}");
    // A bad file is a clear error naming the field, and a non-zero exit.
    std::fs::write(
        dir.path().join("bad.toml"),
        "name = \"bad\"\nschedule = \"61 * * * *\"\n[kind.shell]\ncommand = \"true\"\n",
    )
    .unwrap();
    let (code, _, err) = sandcron(
        &["job", "apply", "-f", &dir.path().join("bad.toml").to_string_lossy()],
        Some(&server),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("minute field \"61\"") && err.contains("field schedule; HTTP 422"),
        "{err}"
    );
    // A mistake in the TOML is reported at its key and line in the file.
    std::fs::write(
        dir.path().join("typo.toml"),
        "name = \"typo\"\nschedule = \"@daily\"\ncolour = \"red\"\n[kind.shell]\ncommand = \"true\"\n",
    )
    .unwrap();
    let (code, _, err) = sandcron(
        &["job", "apply", "-f", &dir.path().join("typo.toml").to_string_lossy()],
        Some(&server),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("line 3") && err.contains("unknown field `colour`"),
        "{err}"
    );
    let (code, _, _) = sandcron(&["job", "rm", "greet"], Some(&server));
    assert_eq!(code, 0);
    let (code, _, err) = sandcron(&["job", "get", "greet"], Some(&server));
    assert_eq!(code, 1);
    assert!(err.contains("job greet does not exist (HTTP 404)"), "{err}");
}

#[tokio::test]
async fn module_push_and_job_apply_with_a_module() {
    let dev = dev(&[]);
    let server = dev.base.clone();
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("hello.wasm");
    std::fs::write(&wasm, crate::guest_wat("hello")).unwrap();
    let wasm = wasm.to_string_lossy().into_owned();
    let (code, out, err) = sandcron(&["module", "push", &wasm], Some(&server));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("sha256:") && out.contains(" (hello.wasm) module "),
        "{out}"
    );
    // The same bytes under a name of the user's: stored once, relabelled.
    let (_, again, _) = sandcron(&["module", "push", &wasm, "--name", "greeter-v1"], Some(&server));
    assert!(
        again.contains(" (greeter-v1) ") && again.trim_end().ends_with("(already stored)"),
        "{again}"
    );
    // A job file without a module, completed by --module.
    let job = dir.path().join("greeter.toml");
    std::fs::write(
        &job,
        "name = \"greeter\"\nschedule = \"@yearly\"\n[kind.wasm]\nargs = [\"x\"]\n",
    )
    .unwrap();
    let (code, out, err) = sandcron(
        &["job", "apply", "-f", &job.to_string_lossy(), "--module", &wasm],
        Some(&server),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("module sha256:") && out.contains("job greeter saved"),
        "{out}"
    );
    // The module was pushed above: apply says so rather than "uploaded".
    assert!(out.contains(" already stored\n"), "{out}");
    let (code, out, _) = sandcron(&["module", "ls"], Some(&server));
    assert_eq!(code, 0);
    assert!(
        out.lines().next().unwrap().starts_with("DIGEST") && out.contains(" NAME "),
        "{out}"
    );
    let row = out
        .lines()
        .find(|line| line.ends_with("greeter"))
        .unwrap_or_else(|| panic!("{out}"));
    // `job apply --module` relabels it with the file's name again.
    assert!(row.contains(" hello.wasm "), "{out}");
    let (code, _, err) = sandcron(&["run", "greeter"], Some(&server));
    assert_eq!(code, 0, "{err}");
    let api = dev.api();
    wait_for("the run to succeed", Duration::from_secs(20), || async {
        api.runs("greeter")
            .await
            .iter()
            .any(|r| r["status"] == "succeeded")
            .then_some(())
    })
    .await;
    let (code, out, _) = sandcron(&["logs", "greeter"], Some(&server));
    assert_eq!((code, out.as_str()), (0, "hello\n"));
    // A file that is not WebAssembly: the reason, and a non-zero exit.
    let bogus = dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"#!/bin/sh\n").unwrap();
    let (code, _, err) = sandcron(&["module", "push", &bogus.to_string_lossy()], Some(&server));
    assert_eq!(code, 1);
    assert!(err.contains("bad magic number") && err.contains("HTTP 422"), "{err}");
}
