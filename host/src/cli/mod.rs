//! The command line: `sandcron dev`, the local `cron` helpers, and client
//! subcommands that mirror the HTTP API.

use std::io::Write as _;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use jiff::Timestamp;

use crate::config::{ClientArgs, DevArgs, MasterArgs, WorkerArgs};
use crate::cronexpr::{CronExpr, parse_timezone};

mod audit;
mod client;
mod history;
mod jobs;
mod rerun;
mod secret;
mod state;
mod trial;

pub use trial::{TryArgs, run as run_try};

use audit::AuditArgs;
use client::Client;
pub use jobs::read_job_file;
use jobs::{JobCommand, ModuleCommand};
use secret::SecretCommand;
use state::StateCommand;

/// sandcron: a distributed cron whose jobs run in a WebAssembly sandbox.
#[derive(Debug, Parser)]
#[command(name = "sandcron", version, about, max_term_width = 100)]
pub struct Cli {
    /// Where the client commands go and with which token; global, so they
    /// may come before or after the subcommand (`sandcron --server URL job ls`).
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run master and worker in one process on embedded stores (no etcd or MongoDB needed).
    Dev(DevArgs),
    /// Run a master: the HTTP API and console of a cluster (etcd + MongoDB). Stateless; run several.
    Master(MasterArgs),
    /// Run a worker of a cluster: it schedules, claims and executes jobs.
    Worker(WorkerArgs),
    /// Run a .wasm once, here, in the sandbox a worker uses (same checks,
    /// limits and network rules), and print how it ended.
    ///
    /// A component's key-value state (wasi:keyvalue) starts empty, is kept
    /// in memory with a worker's default quotas, and is lost when it exits.
    #[command(name = "try")]
    Try(TryArgs),
    /// Work with cron expressions locally.
    #[command(subcommand)]
    Cron(CronCommand),
    /// Create, list, change and delete jobs.
    Job {
        #[command(subcommand)]
        command: JobCommand,
    },
    /// Upload and list WebAssembly modules.
    Module {
        #[command(subcommand)]
        command: ModuleCommand,
    },
    /// Write, list and delete secrets (values are never shown), and manage
    /// their key file.
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Read, list and delete a job's key-value state (wasi:keyvalue).
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Run a job now, once.
    Run {
        job: String,
        /// Print the run's output as it is written, until it ends; the exit
        /// status then says whether it succeeded.
        #[arg(short, long)]
        follow: bool,
    },
    /// Run a job again for the tick of one of its runs (which has ended):
    /// the new run has trigger rerun and names the original.
    Rerun {
        /// The run to re-run (as `sandcron runs` lists them).
        run_id: String,
        /// Print the new run's output as it is written, until it ends; the
        /// exit status then says whether it succeeded.
        #[arg(short, long)]
        follow: bool,
    },
    /// Kill a job's running runs (or one of them).
    Kill {
        job: String,
        /// Kill only this run.
        #[arg(long)]
        run: Option<String>,
    },
    /// Print the output of a run, or of a job's latest run.
    Logs {
        /// A run id, or a job name (its latest run).
        target: String,
        /// Keep printing output as the run produces it, until it ends; for a
        /// job, each next run too, until Ctrl-C.
        #[arg(short, long)]
        follow: bool,
        /// Print control characters as they are (by default they are shown
        /// escaped, so a job cannot drive your terminal).
        #[arg(long)]
        raw: bool,
    },
    /// List runs, newest tick first.
    Runs {
        #[arg(long)]
        job: Option<String>,
        #[arg(long)]
        status: Option<String>,
        /// Only the runs of this worker (an id as `sandcron workers` lists them).
        #[arg(long)]
        worker: Option<String>,
        /// Only runs started so: schedule, manual, catchup, retry, dependency
        /// or rerun.
        #[arg(long)]
        trigger: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Check recorded run history against the guarantees: every tick of every
    /// job run or recorded once, no run stuck, no output gap, no stale fence.
    /// Exits 1 when it finds a violation.
    CheckHistory {
        /// Start of the window (RFC 3339, or seconds ago like `600s`).
        #[arg(long)]
        since: String,
        /// End of the window (default: 10 seconds ago, so recent ticks have
        /// had time to be recorded).
        #[arg(long)]
        until: Option<String>,
        /// Only this job.
        #[arg(long)]
        job: Option<String>,
        /// Skip reading every run's output (no gap check; much faster).
        #[arg(long)]
        no_output: bool,
        /// Read the output of at most this many runs, spread evenly over the
        /// window (default: every run).
        #[arg(long)]
        output_sample: Option<usize>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List live workers.
    Workers,
    /// Read the audit log: who wrote what through the API, when, newest
    /// first (operators and admins).
    Audit(AuditArgs),
}

#[derive(Debug, Subcommand)]
pub enum CronCommand {
    /// Print the next fire times, one RFC 3339 instant per line.
    Next {
        expr: String,
        /// IANA time zone.
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// Start after this RFC 3339 instant (default: now).
        #[arg(long)]
        after: Option<String>,
        #[arg(long, default_value_t = 5)]
        count: usize,
    },
    /// Say in words when an expression fires.
    Explain { expr: String },
}

/// Runs a client or local subcommand (everything but `dev`).
pub async fn run_client(command: Command, client: ClientArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        Command::Dev(_) | Command::Master(_) | Command::Worker(_) | Command::Try(_) => {
            bail!("not a client command")
        }
        Command::Cron(CronCommand::Next { expr, tz, after, count }) => {
            let expr = CronExpr::parse(&expr)?;
            let zone = parse_timezone(&tz)?;
            let after = match after {
                Some(text) => text
                    .parse::<Timestamp>()
                    .with_context(|| format!("--after {text:?} is not an RFC 3339 instant"))?,
                None => Timestamp::now(),
            };
            for instant in expr.iter_after(after, &zone).take(count) {
                writeln!(
                    out,
                    "{}",
                    instant.to_zoned(zone.clone()).strftime("%Y-%m-%dT%H:%M:%S%:z")
                )?;
            }
        }
        Command::Cron(CronCommand::Explain { expr }) => {
            let expr = CronExpr::parse(&expr)?;
            writeln!(out, "{}", expr.explain())?;
        }
        Command::Job { command } => jobs::job(&Client::new(&client)?, command, &mut out).await?,
        Command::Module { command } => jobs::module(&Client::new(&client)?, command, &mut out).await?,
        Command::State { command } => state::run(&Client::new(&client)?, command, &mut out).await?,
        Command::Secret { command } => secret::run(&Client::new(&client)?, command, &mut out).await?,
        Command::Audit(args) => audit::run(&Client::new(&client)?, args, &mut out).await?,
        Command::Run { job, follow } => {
            let client = Client::new(&client)?;
            let body = client.post(&format!("/jobs/{job}/run")).await?;
            let run_id = body["run_id"].as_str();
            match run_id {
                Some(run_id) => writeln!(out, "run {run_id} of {job} requested")?,
                None => writeln!(out, "run of {job} requested (one run per worker)")?,
            }
            if let Some(note) = body.get("note").and_then(|n| n.as_str()) {
                writeln!(out, "note: {note}")?;
            }
            if let (true, Some(run_id)) = (follow, run_id) {
                drop(out);
                return follow_to_its_end(&client, run_id).await;
            }
        }
        Command::Rerun { run_id, follow } => {
            return rerun::run(&Client::new(&client)?, &run_id, follow, out).await;
        }
        Command::Kill { job, run } => {
            let path = match &run {
                Some(run) => format!("/jobs/{job}/kill?run_id={run}"),
                None => format!("/jobs/{job}/kill"),
            };
            let body = Client::new(&client)?.post(&path).await?;
            for run in body["runs"].as_array().into_iter().flatten() {
                writeln!(out, "killing {}", run.as_str().unwrap_or_default())?;
            }
        }
        Command::Logs { target, follow, raw } => logs(&Client::new(&client)?, &target, follow, raw).await?,
        Command::Runs {
            job,
            status,
            worker,
            trigger,
            limit,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(job.map(|j| ("job", j)));
            query.extend(status.map(|s| ("status", s)));
            query.extend(worker.map(|w| ("worker", w)));
            query.extend(trigger.map(|t| ("trigger", t)));
            let page = Client::new(&client)?.get_query("/runs", &query).await?;
            writeln!(
                out,
                "{:<26}  {:<20}  {:<25}  {:<9}  {:<13}  EXIT",
                "RUN", "JOB", "TICK", "TRIGGER", "STATUS"
            )?;
            for run in page["runs"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "{:<26}  {:<20}  {:<25}  {:<9}  {:<13}  {}",
                    text(&run["run_id"]),
                    text(&run["job"]),
                    text(&run["tick"]),
                    text(&run["trigger"]),
                    text(&run["status"]),
                    run["exit_code"].as_i64().map(|c| c.to_string()).unwrap_or_default()
                )?;
            }
        }
        Command::CheckHistory {
            since,
            until,
            job,
            no_output,
            output_sample,
            json,
        } => {
            let now = Timestamp::now();
            let since = instant_or_ago(&since, now, "--since")?;
            let until = match until {
                Some(text) => instant_or_ago(&text, now, "--until")?,
                None => now - jiff::SignedDuration::from_secs(10),
            };
            if until <= since {
                bail!("--until ({until}) must be after --since ({since})");
            }
            let client = Client::new(&client)?;
            let sample = if no_output { Some(0) } else { output_sample };
            let history = history::read(&client, since, until, job.as_deref(), sample).await?;
            let report = crate::check::check(&history);
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
            } else {
                history::print(&mut out, &report, since, until)?;
            }
            if !report.violations.is_empty() {
                out.flush()?;
                std::process::exit(1);
            }
        }
        Command::Workers => {
            let workers = Client::new(&client)?.get("/workers").await?;
            let rows: Vec<Vec<String>> = workers
                .as_array()
                .into_iter()
                .flatten()
                .map(|w| {
                    let native = if w["allow_native"].as_bool() == Some(true) {
                        "yes"
                    } else {
                        "no"
                    };
                    vec![
                        text(&w["id"]).to_owned(),
                        text(&w["hostname"]).to_owned(),
                        format!("{}/{}", w["slots_in_use"], w["capacity"]),
                        w["waiting"].to_string(),
                        log_backlog_cell(&w["log_backlog"]),
                        native.to_owned(),
                        format!("{}s", w["uptime_s"]),
                    ]
                })
                .collect();
            print_table(
                &mut out,
                &[
                    "WORKER",
                    "HOST",
                    "SLOTS IN USE",
                    "WAITING",
                    "LOG BACKLOG",
                    "NATIVE",
                    "UPTIME",
                ],
                &[false, false, true, true, false, false, true],
                &rows,
            )?;
        }
    }
    Ok(())
}

/// A worker's log backlog in the `workers` table: `-` when nothing waits
/// for the log store (or the worker published nothing), else the spool's
/// size and how far behind it is, and `held` while runs wait for the sink.
fn log_backlog_cell(backlog: &serde_json::Value) -> String {
    let bytes = backlog["spool_bytes"].as_u64().unwrap_or(0);
    let spooled = (bytes > 0).then(|| {
        let mib = bytes as f64 / f64::from(1 << 20);
        format!("{mib:.1}MiB {}s behind", backlog["spool_lag_s"].as_u64().unwrap_or(0))
    });
    let held = (backlog["backpressure"].as_bool() == Some(true)).then_some("runs held");
    match (spooled, held) {
        (Some(spooled), Some(held)) => format!("{spooled}, {held}"),
        (Some(spooled), None) => spooled,
        (None, Some(held)) => held.to_owned(),
        (None, None) => "-".to_owned(),
    }
}

/// Prints `rows` under `headers`, each column as wide as its widest cell,
/// numbers (`right`) aligned right.
fn print_table(
    out: &mut impl std::io::Write,
    headers: &[&str],
    right: &[bool],
    rows: &[Vec<String>],
) -> std::io::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        cells
            .iter()
            .enumerate()
            .map(|(index, cell)| {
                let pad = widths[index].saturating_sub(cell.chars().count());
                match (right.get(index).copied().unwrap_or(false), index == last) {
                    (true, _) => format!("{}{cell}", " ".repeat(pad)),
                    (false, true) => (*cell).to_owned(),
                    (false, false) => format!("{cell}{}", " ".repeat(pad)),
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    writeln!(out, "{}", line(headers.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// An RFC 3339 instant, or a duration before `now` such as `90s`, `15m`, `2h`.
fn instant_or_ago(text: &str, now: Timestamp, flag: &str) -> anyhow::Result<Timestamp> {
    if let Ok(at) = text.parse::<Timestamp>() {
        return Ok(at);
    }
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let seconds: i64 = match (number.parse::<i64>(), unit) {
        (Ok(n), "s") => n,
        (Ok(n), "m") => n * 60,
        (Ok(n), "h") => n * 3600,
        (Ok(n), "d") => n * 86_400,
        _ => bail!("{flag} {text:?} is neither an RFC 3339 instant nor a duration like 90s, 15m, 2h or 1d"),
    };
    Ok(now - jiff::SignedDuration::from_secs(seconds))
}

fn text(value: &serde_json::Value) -> &str {
    value.as_str().unwrap_or("-")
}

/// `sandcron logs RUN_ID|JOB [--follow]`: a run's output; a job's latest
/// run's, and with `--follow` every later run's as it starts, until Ctrl-C.
async fn logs(client: &Client, target: &str, follow: bool, raw: bool) -> anyhow::Result<()> {
    if target.parse::<crate::ids::RunId>().is_ok() {
        print_run(client, target, follow, raw).await?;
        return Ok(());
    }
    if client.get_optional(&format!("/jobs/{target}")).await?.is_none() {
        bail!("job {target} does not exist (sandcron job ls lists the jobs)");
    }
    let latest = latest_run(client, target).await?;
    if !follow {
        let run_id = latest.with_context(|| format!("job {target} has no runs yet"))?;
        print_run(client, &run_id, false, raw).await?;
        return Ok(());
    }
    let mut shown = latest;
    if let Some(run_id) = &shown {
        print_run(client, run_id, true, raw).await?;
    } else {
        eprintln!("[waiting for the first run of {target}; Ctrl-C to stop]");
    }
    loop {
        let next = latest_run(client, target).await?;
        if next.is_some() && next != shown {
            if let Some(run_id) = &next {
                eprintln!("[run {run_id}]");
                print_run(client, run_id, true, raw).await?;
            }
            shown = next;
        } else {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
}

/// A job's output with its control characters (but newlines and tabs)
/// written visibly as `\xNN`: output is written by untrusted code, and an
/// escape sequence could otherwise rewrite the terminal or its title.
fn escape_controls(data: &str) -> std::borrow::Cow<'_, str> {
    let control = |c: char| (c.is_control() && c != '\n' && c != '\t') || ('\u{80}'..='\u{9f}').contains(&c);
    if !data.chars().any(control) {
        return data.into();
    }
    data.chars()
        .map(|c| {
            if control(c) {
                format!("\\x{:02x}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// The newest run of `job`, if it has any.
async fn latest_run(client: &Client, job: &str) -> anyhow::Result<Option<String>> {
    let page = client
        .get_query("/runs", &[("job", job.to_owned()), ("limit", "1".to_owned())])
        .await?;
    Ok(page["runs"][0]["run_id"].as_str().map(str::to_owned))
}

/// `--follow` of a run just requested: its output until it ends; an error
/// (a non-zero exit) unless it succeeded.
async fn follow_to_its_end(client: &Client, run_id: &str) -> anyhow::Result<()> {
    wait_for_run(client, run_id).await?;
    let status = print_run(client, run_id, true, false).await?;
    if status != "succeeded" {
        bail!("run {run_id} ended {status}");
    }
    Ok(())
}

/// Waits until a requested run has been taken by a worker and recorded.
async fn wait_for_run(client: &Client, run_id: &str) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut told = false;
    while client.get_optional(&format!("/runs/{run_id}")).await?.is_none() {
        if std::time::Instant::now() > deadline {
            bail!("run {run_id} has not started within 2 minutes: is a worker that can run it alive?");
        }
        if !told {
            eprintln!("[waiting for a worker to start run {run_id}]");
            told = true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    Ok(())
}

/// Prints a run's output (following it with `follow` until it ends); returns
/// its status when known.
async fn print_run(client: &Client, run_id: &str, follow: bool, raw: bool) -> anyhow::Result<String> {
    let mut after: Option<u64> = None;
    loop {
        let mut query = vec![("limit", "5000".to_owned())];
        if let Some(after) = after {
            query.push(("after", after.to_string()));
        }
        if follow {
            query.push(("follow", "true".to_owned()));
        }
        let page = client.get_query(&format!("/runs/{run_id}/output"), &query).await?;
        for chunk in page["chunks"].as_array().into_iter().flatten() {
            let data = chunk["data"].as_str().unwrap_or_default();
            let data = if raw { data.into() } else { escape_controls(data) };
            if chunk["stream"] == "stderr" {
                let mut err = std::io::stderr().lock();
                err.write_all(data.as_bytes())?;
                err.flush()?;
            } else {
                let mut out = std::io::stdout().lock();
                out.write_all(data.as_bytes())?;
                out.flush()?;
            }
        }
        after = page["next_after"].as_u64().or(after);
        let done = page["done"].as_bool().unwrap_or(true);
        let status = text(&page["status"]).to_owned();
        if done || (!follow && page["chunks"].as_array().is_none_or(|c| c.len() < 5000)) {
            if follow || done {
                eprintln!("[run {run_id} {status}]");
            }
            return Ok(status);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(super::escape_controls("plain\ttext\n"), "plain\ttext\n");
        assert_eq!(
            super::escape_controls("\u{1b}]0;pwned\u{7}red"),
            "\\x1b]0;pwned\\x07red"
        );
        assert_eq!(super::escape_controls("a\rb\u{9b}c"), "a\\x0db\\x9bc");
    }

    #[test]
    fn a_log_backlog_cell_says_what_waits_and_whether_runs_are_held() {
        use serde_json::{Value, json};
        let cell = |backlog: Value| super::log_backlog_cell(&backlog);
        assert_eq!(cell(Value::Null), "-", "published none");
        assert_eq!(
            cell(json!({"spool_bytes": 0, "spool_lag_s": 0, "backpressure": false})),
            "-"
        );
        assert_eq!(
            cell(json!({"spool_bytes": 12_900_000, "spool_lag_s": 4, "backpressure": false})),
            "12.3MiB 4s behind"
        );
        assert_eq!(
            cell(json!({"spool_bytes": 1 << 20, "spool_lag_s": 90, "backpressure": true})),
            "1.0MiB 90s behind, runs held"
        );
        assert_eq!(
            cell(json!({"spool_bytes": 0, "spool_lag_s": 0, "backpressure": true})),
            "runs held"
        );
    }
}
