//! One child process of the harness (a sandcron binary, etcd, nx-27017,
//! aiosmtpd): started from a `Command` with its output appended to a log
//! file, started again with the same command after a stop, stopped with
//! SIGTERM and a deadline, killed with SIGKILL, and killed on drop, after
//! printing its log tail when a test panics.
//!
//! What it must not do: leave a process behind, or wait without a deadline.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Log lines printed when a test panics, and carried by start and stop errors.
const LOG_TAIL_LINES: usize = 80;

/// A process started from a command it keeps, so it can be started again.
pub struct ChildProcess {
    /// What messages and the log header call it (`sandcron dev`, `w1`, …).
    name: String,
    command: Command,
    log: PathBuf,
    log_file: File,
    child: Option<Child>,
}

impl ChildProcess {
    /// Prepares `command` (not started yet) with stdin closed and stderr
    /// appended to `log`, which is created if need be.
    pub fn new(name: &str, mut command: Command, log: &Path) -> io::Result<ChildProcess> {
        let log_file = OpenOptions::new().create(true).append(true).open(log)?;
        command.stdin(Stdio::null()).stderr(log_file.try_clone()?);
        Ok(ChildProcess {
            name: name.to_owned(),
            command,
            log: log.to_owned(),
            log_file,
            child: None,
        })
    }

    /// Starts the process with its stdout appended to the log too.
    pub fn start(&mut self) -> io::Result<()> {
        self.command.stdout(self.log_file.try_clone()?);
        self.child = Some(self.spawn()?);
        Ok(())
    }

    /// Starts the process and waits up to `timeout` for a stdout line that
    /// starts with `prefix`; returns what follows the prefix. If no such
    /// line comes, the process is killed and the error carries its log tail.
    pub fn start_until_ready(&mut self, prefix: &str, timeout: Duration) -> io::Result<String> {
        self.command.stdout(Stdio::piped());
        let mut child = self.spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("stdout is not piped"))?;
        self.child = Some(child);
        let prefix = prefix.to_owned();
        let (ready, ready_line) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix(&prefix) {
                    // Fails once nobody waits any more; the loop goes on
                    // draining stdout so that the process never blocks on
                    // a full pipe.
                    let _ = ready.send(rest.to_owned());
                }
            }
        });
        match ready_line.recv_timeout(timeout) {
            Ok(rest) => Ok(rest),
            Err(_) => {
                self.kill9();
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} did not start within {timeout:?}; log:\n{}",
                        self.name,
                        self.log_tail()
                    ),
                ))
            }
        }
    }

    fn spawn(&mut self) -> io::Result<Child> {
        assert!(self.child.is_none(), "{} is still running", self.name);
        let program = self.command.get_program().to_string_lossy().into_owned();
        self.command
            .spawn()
            .map_err(|err| io::Error::new(err.kind(), format!("cannot start {program}: {err}")))
    }

    /// Whether it was started and has not been stopped, killed or seen to
    /// exit since.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (SIGSTOP, SIGCONT, …) if it is running.
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            // It may have exited meanwhile: then there is nobody to tell.
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
    }

    /// Its exit status if it has exited by itself (it is then no longer
    /// running); `None` while it runs or when it was not started.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Sends SIGTERM and waits up to `within` for the exit; returns the exit
    /// status (`None` when it was not running). One that outlives the
    /// deadline is killed with SIGKILL, and the error carries its log tail.
    pub fn stop(&mut self, within: Duration) -> io::Result<Option<ExitStatus>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        // An error means it is gone already; `try_wait` tells.
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + within;
        let (kind, problem) = loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(Some(status)),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Ok(None) => break (io::ErrorKind::TimedOut, format!("did not stop within {within:?}")),
                Err(err) => break (err.kind(), format!("could not be waited for ({err})")),
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        let message = format!("{} {problem}; log:\n{}", self.name, self.log_tail());
        Err(io::Error::new(kind, message))
    }

    /// Kills it with SIGKILL, as a crash would (a paused process too), and
    /// reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors mean it is gone already.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the log.
    pub fn log_tail(&self) -> String {
        let log = self.log_text();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- {} log (last {LOG_TAIL_LINES} lines) ----\n{}",
                self.name,
                self.log_tail()
            );
        }
        self.kill9();
    }
}
