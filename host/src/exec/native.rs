//! The native executor: `sh -c` in its own process group with a cleared
//! environment, output streamed as it is produced, a timeout, and a kill of the
//! whole group (SIGTERM, then SIGKILL after a grace period).
//!
//! A run ends when its shell exits; processes it left behind in its process
//! group are terminated the same way, so no run leaves anything running.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::{ChildStderr, ChildStdout, Command};
use tokio::time::Instant;

use super::{ExecRequest, Executor, KillSwitch, RunOutcome, RunOutput};
use crate::job::JobKind;
use crate::run::{RunStatus, StreamKind};

/// PATH for native runs when the worker passes none through.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How long output may keep arriving after the group is gone before the pipes
/// are abandoned (a process that escaped the group could hold them forever).
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct NativeExecutor {
    /// Variables passed through from the worker's own environment.
    inherited_env: BTreeMap<String, String>,
    /// SIGTERM → SIGKILL grace period.
    kill_grace: Duration,
}

impl NativeExecutor {
    pub fn new(inherited_env: BTreeMap<String, String>, kill_grace: Duration) -> Self {
        Self {
            inherited_env,
            kill_grace,
        }
    }

    fn environment(
        &self,
        request: &ExecRequest,
        job_env: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut env = self.inherited_env.clone();
        env.entry("PATH".to_owned()).or_insert_with(|| DEFAULT_PATH.to_owned());
        env.extend(job_env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend(request.secret_env()?);
        env.extend(request.sandcron_env());
        Ok(env)
    }
}

#[async_trait]
impl Executor for NativeExecutor {
    async fn execute(&self, request: &ExecRequest, output: &mut RunOutput, kill: &KillSwitch) -> RunOutcome {
        let JobKind::Shell(shell) = &request.kind else {
            return RunOutcome::new(RunStatus::Failed).with_error("the native executor runs shell jobs only");
        };
        let environment = match self.environment(request, &shell.env) {
            Ok(environment) => environment,
            Err(reason) => return RunOutcome::new(RunStatus::Failed).with_error(reason),
        };
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(&shell.command)
            .env_clear()
            .envs(environment)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => {
                return RunOutcome::new(RunStatus::Failed).with_error(format!("cannot start /bin/sh: {err}"));
            }
        };
        // With process_group(0) the group id is the child's pid.
        let Some(group) = child.id().and_then(|pid| i32::try_from(pid).ok()).map(Pid::from_raw) else {
            return RunOutcome::new(RunStatus::Failed).with_error("the shell exited before it could be tracked");
        };
        let mut pipes = Pipes::new(child.stdout.take(), child.stderr.take());
        let deadline = Instant::now() + Duration::from_secs(shell.timeout_s);

        // Phase 1: the shell runs; output streams; a kill or the timeout stops it.
        let mut stopped: Option<RunOutcome> = None;
        let exit = loop {
            tokio::select! {
                status = child.wait() => break status,
                read = pipes.read() => {
                    if let Some((stream, bytes)) = read {
                        output.write(stream, &bytes).await;
                    }
                }
                reason = kill.pulled(), if stopped.is_none() => {
                    stopped = Some(RunOutcome::stopped(reason));
                    terminate_group(group, self.kill_grace, &mut child).await;
                }
                () = tokio::time::sleep_until(deadline), if stopped.is_none() => {
                    stopped = Some(RunOutcome::new(RunStatus::TimedOut)
                        .with_error(format!("timed out after {} s", shell.timeout_s)));
                    terminate_group(group, self.kill_grace, &mut child).await;
                }
            }
        };

        // Phase 2: the shell is gone. Anything it left in its group is stopped
        // too, then the pipes are read to their end (bounded).
        if group_exists(group) {
            tracing::debug!(job = %request.job, run = %request.run_id, "terminating processes left in the group");
            terminate_group_without_leader(group, self.kill_grace).await;
        }
        let drain_deadline = Instant::now() + self.kill_grace + DRAIN_AFTER_KILL;
        while !pipes.is_closed() {
            tokio::select! {
                read = pipes.read() => {
                    if let Some((stream, bytes)) = read {
                        output.write(stream, &bytes).await;
                    }
                }
                () = tokio::time::sleep_until(drain_deadline) => {
                    tracing::warn!(job = %request.job, run = %request.run_id, "output pipes still open after the run; abandoning them");
                    break;
                }
            }
        }
        output.finish().await;

        if let Some(outcome) = stopped {
            return outcome;
        }
        match exit {
            Ok(status) => exit_outcome(status),
            Err(err) => RunOutcome::new(RunStatus::Failed).with_error(format!("cannot wait for the shell: {err}")),
        }
    }
}

fn exit_outcome(status: std::process::ExitStatus) -> RunOutcome {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) => RunOutcome {
            exit_code: Some(0),
            ..RunOutcome::new(RunStatus::Succeeded)
        },
        (Some(code), _) => RunOutcome {
            exit_code: Some(code),
            ..RunOutcome::new(RunStatus::Failed).with_error(format!("exited with status {code}"))
        },
        (None, Some(signal)) => {
            let name = Signal::try_from(signal).map(|s| s.as_str()).unwrap_or("unknown");
            RunOutcome::new(RunStatus::Failed).with_error(format!("killed by signal {signal} ({name})"))
        }
        (None, None) => RunOutcome::new(RunStatus::Failed).with_error("ended without a status"),
    }
}

/// SIGTERM to the group, SIGKILL if the leader has not exited after `grace`.
async fn terminate_group(group: Pid, grace: Duration, child: &mut tokio::process::Child) {
    signal_group(group, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        signal_group(group, Signal::SIGKILL);
    }
}

/// The same, for a group whose leader already exited: poll for the group to
/// empty, since there is no child to wait on.
async fn terminate_group_without_leader(group: Pid, grace: Duration) {
    signal_group(group, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while group_exists(group) {
        if Instant::now() >= deadline {
            signal_group(group, Signal::SIGKILL);
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn signal_group(group: Pid, signal: Signal) {
    match killpg(group, signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(err) => tracing::warn!(%group, ?signal, %err, "cannot signal process group"),
    }
}

/// Whether any live process is left in `group`. Signal 0 probes without
/// sending, but it also finds zombies: a killed member whose parent (the
/// shell, gone) left it to PID 1 stays a zombie until PID 1 reaps it, which
/// some inits do only every second or two. A zombie holds no pipes and does
/// nothing, so `/proc` is asked whether any member is more than that.
fn group_exists(group: Pid) -> bool {
    if killpg(group, None).is_err() {
        return false;
    }
    // No /proc to ask: a member that answers signal 0 counts.
    live_members(group.as_raw()).unwrap_or(true)
}

/// Whether `/proc` lists a process of process group `group` that is not a
/// zombie; `None` when `/proc` cannot be read.
fn live_members(group: i32) -> Option<bool> {
    let entries = std::fs::read_dir("/proc").ok()?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((state, pgrp)) = parse_stat(&stat)
            && pgrp == group
            && state != 'Z'
        {
            return Some(true);
        }
    }
    Some(false)
}

/// State and process group from a `/proc/<pid>/stat` line: `pid (comm)
/// state ppid pgrp …`, where `comm` may hold spaces and parentheses.
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Both output pipes of a child, read concurrently.
struct Pipes {
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    buffer_out: Box<[u8; 8192]>,
    buffer_err: Box<[u8; 8192]>,
}

impl Pipes {
    fn new(stdout: Option<ChildStdout>, stderr: Option<ChildStderr>) -> Self {
        Self {
            stdout,
            stderr,
            buffer_out: Box::new([0; 8192]),
            buffer_err: Box::new([0; 8192]),
        }
    }

    fn is_closed(&self) -> bool {
        self.stdout.is_none() && self.stderr.is_none()
    }

    /// The next piece of output from either pipe; `None` when a pipe closed
    /// (that pipe is then dropped). Pends forever once both are closed, so it
    /// can sit in a `select!` beside the process exit.
    async fn read(&mut self) -> Option<(StreamKind, Vec<u8>)> {
        let Self {
            stdout,
            stderr,
            buffer_out,
            buffer_err,
        } = self;
        let out = async {
            match stdout.as_mut() {
                Some(pipe) => pipe.read(&mut buffer_out[..]).await,
                None => std::future::pending().await,
            }
        };
        let err = async {
            match stderr.as_mut() {
                Some(pipe) => pipe.read(&mut buffer_err[..]).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = out => match read {
                Ok(n) if n > 0 => Some((StreamKind::Stdout, buffer_out[..n].to_vec())),
                _ => { *stdout = None; None }
            },
            read = err => match read {
                Ok(n) if n > 0 => Some((StreamKind::Stderr, buffer_err[..n].to_vec())),
                _ => { *stderr = None; None }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::StopReason;
    use crate::ids::{JobName, RunId};
    use crate::job::ShellJob;
    use crate::run::Trigger;

    fn request(command: &str, timeout_s: u64) -> ExecRequest {
        ExecRequest {
            job: JobName::new("test").expect("name"),
            run_id: RunId::generate(),
            tick: jiff::Timestamp::UNIX_EPOCH,
            trigger: Trigger::Manual,
            attempt: 1,
            fence: 7,
            kind: JobKind::Shell(ShellJob {
                command: command.to_owned(),
                env: BTreeMap::from([("GREETING".to_owned(), "hi".to_owned())]),
                timeout_s,
                output_kb: 1,
            }),
            parent: None,
            shard: None,
            report_to: None,
            secrets: Default::default(),
        }
    }

    #[test]
    fn stat_lines_give_state_and_group() {
        assert_eq!(parse_stat("42 (sleep) Z 1 40 40 0 -1"), Some(('Z', 40)));
        assert_eq!(parse_stat("7 (my (odd) name) S 1 7 7 0"), Some(('S', 7)));
        assert_eq!(parse_stat("garbage"), None);
    }

    fn executor() -> NativeExecutor {
        NativeExecutor::new(BTreeMap::new(), Duration::from_millis(500))
    }

    #[tokio::test]
    async fn exit_codes_become_statuses() {
        let kill = KillSwitch::new();
        let mut out = RunOutput::discard(RunId::generate(), 1024);
        let ok = executor().execute(&request("true", 10), &mut out, &kill).await;
        assert_eq!((ok.status, ok.exit_code), (RunStatus::Succeeded, Some(0)));
        let failed = executor().execute(&request("exit 3", 10), &mut out, &kill).await;
        assert_eq!((failed.status, failed.exit_code), (RunStatus::Failed, Some(3)));
        let signalled = executor().execute(&request("kill -9 $$", 10), &mut out, &kill).await;
        assert_eq!(signalled.status, RunStatus::Failed);
        assert!(
            signalled.error.as_deref().unwrap_or("").contains("SIGKILL"),
            "{signalled:?}"
        );
    }

    #[tokio::test]
    async fn the_environment_is_cleared_but_for_listed_variables() {
        let kill = KillSwitch::new();
        let mut out = RunOutput::discard(RunId::generate(), 1024);
        // `env` must show only PATH, the job's variable and SANDCRON_*.
        let outcome = executor()
            .execute(
                &request(
                    "test \"$GREETING\" = hi && test \"$SANDCRON_FENCE\" = 7 && test -z \"$HOME\" \
                     && test \"$(env | grep -cv -e ^PATH= -e ^GREETING= -e ^SANDCRON_ -e ^PWD= -e ^SHLVL= -e ^_=)\" = 0",
                    10,
                ),
                &mut out,
                &kill,
            )
            .await;
        assert_eq!(outcome.status, RunStatus::Succeeded, "{outcome:?}");
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_group() {
        let kill = KillSwitch::new();
        let mut out = RunOutput::discard(RunId::generate(), 1024);
        let outcome = executor()
            .execute(&request("sleep 30 & sleep 30", 1), &mut out, &kill)
            .await;
        assert_eq!(outcome.status, RunStatus::TimedOut);
    }

    #[tokio::test]
    async fn a_kill_ignoring_sigterm_still_ends_with_sigkill() {
        let kill = KillSwitch::new();
        let mut out = RunOutput::discard(RunId::generate(), 1024);
        let switch = kill.clone();
        let killer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            switch.pull(StopReason::Killed);
        });
        let outcome = executor()
            .execute(&request("trap '' TERM; sleep 30", 60), &mut out, &kill)
            .await;
        killer.await.expect("killer");
        assert_eq!(outcome.status, RunStatus::Killed);
    }

    #[tokio::test]
    async fn output_is_cut_at_the_limit() {
        let kill = KillSwitch::new();
        let mut out = RunOutput::discard(RunId::generate(), 1024);
        let outcome = executor()
            .execute(&request("yes | head -c 100000", 10), &mut out, &kill)
            .await;
        assert_eq!(outcome.status, RunStatus::Succeeded);
        assert!(out.is_truncated());
        assert_eq!(out.bytes_written(), 1024);
    }
}
