//! `sandcron check-history`: reads jobs, running entries, run records and
//! output through a master's API, and prints the checker's report.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use anyhow::Context;
use futures::StreamExt as _;
use jiff::Timestamp;

use super::client::Client;
use crate::check::{History, JobFacts, Report, StoredOutput, Violation};
use crate::cronexpr::Schedule;
use crate::ids::RunId;
use crate::run::RunRecord;

/// Output reads in flight at once.
const OUTPUT_CONCURRENCY: usize = 8;

/// Reads what `check` needs for the window `since..=until`.
pub(super) async fn read(
    client: &Client,
    since: Timestamp,
    until: Timestamp,
    only: Option<&str>,
    output_sample: Option<usize>,
) -> anyhow::Result<History> {
    // Running entries first: a run that ends after this read is then seen
    // terminal below, and one that starts after it is not judged.
    let running_read_at = Timestamp::now();
    // Without last runs: at 10k jobs a page of them is thousands of
    // log-store queries, and the check reads the runs itself below.
    let views = client.get_all("/jobs?last_run=false").await?;
    let mut jobs = Vec::new();
    let mut running = BTreeSet::new();
    for view in views.as_array().into_iter().flatten() {
        let name = view["name"].as_str().context("a job view without a name")?.to_owned();
        for entry in view["running"].as_array().into_iter().flatten() {
            if let Some(id) = entry["run_id"].as_str().and_then(|id| id.parse::<RunId>().ok()) {
                running.insert(id);
            }
        }
        if only.is_some_and(|only| only != name) {
            continue;
        }
        let schedule = Schedule::new(
            view["schedule"].as_str().unwrap_or_default(),
            view["timezone"].as_str().unwrap_or("UTC"),
        )
        .with_context(|| format!("job {name}: its schedule does not parse"))?;
        let active_since = view["meta"]["active_since"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .with_context(|| format!("job {name}: no meta.active_since"))?;
        jobs.push(JobFacts {
            name,
            schedule,
            active_since,
            paused: view["paused"].as_bool().unwrap_or(false),
        });
    }

    let mut runs: Vec<RunRecord> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![
            ("since", since.to_string()),
            ("until", until.to_string()),
            ("limit", "1000".to_owned()),
        ];
        query.extend(only.map(|job| ("job", job.to_owned())));
        query.extend(cursor.take().map(|c| ("cursor", c)));
        let page = client.get_query("/runs", &query).await?;
        for run in page["runs"].as_array().into_iter().flatten() {
            runs.push(serde_json::from_value(run.clone()).context("a run record the checker cannot read")?);
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }

    let mut output = BTreeMap::new();
    let sample = output_sample.unwrap_or(usize::MAX).min(runs.len());
    if sample > 0 {
        // Every k-th run, so a sample covers the whole window.
        let step = runs.len().div_ceil(sample);
        let reads = futures::stream::iter(runs.iter().step_by(step).map(|run| run.run_id))
            .map(|id| async move { (id, stored_output(client, id).await) })
            .buffer_unordered(OUTPUT_CONCURRENCY);
        let results: Vec<(RunId, anyhow::Result<StoredOutput>)> = reads.collect().await;
        for (id, stored) in results {
            output.insert(id, stored?);
        }
    }
    Ok(History {
        jobs,
        runs,
        output,
        running,
        running_read_at,
        since,
        until,
    })
}

async fn stored_output(client: &Client, run_id: RunId) -> anyhow::Result<StoredOutput> {
    let mut stored = StoredOutput::default();
    let mut after: Option<u64> = None;
    loop {
        let mut query = vec![("limit", "5000".to_owned())];
        query.extend(after.map(|a| ("after", a.to_string())));
        let page = client.get_query(&format!("/runs/{run_id}/output"), &query).await?;
        let chunks = page["chunks"].as_array().cloned().unwrap_or_default();
        if chunks.is_empty() {
            return Ok(stored);
        }
        for chunk in &chunks {
            let data = chunk["data"].as_str().unwrap_or_default();
            // The truncation marker is sandcron's, not the guest's.
            if !(chunk["stream"] == "stderr" && data.starts_with("\n[sandcron: output truncated at ")) {
                stored.bytes += data.len() as u64;
            }
            stored.seqs.extend(chunk["seq"].as_u64());
        }
        after = page["next_after"].as_u64().or(stored.seqs.last().copied());
    }
}

/// The report for people.
pub(super) fn print(out: &mut impl Write, report: &Report, since: Timestamp, until: Timestamp) -> anyhow::Result<()> {
    writeln!(out, "window          {since} .. {until}")?;
    writeln!(out, "jobs            {}", report.jobs)?;
    writeln!(out, "ticks expected  {}", report.ticks_expected)?;
    writeln!(out, "run records     {}", report.runs)?;
    writeln!(out, "executed        {}", report.executed)?;
    writeln!(out, "skipped/missed  {}", report.recorded_not_run)?;
    writeln!(out, "output checked  {} runs", report.output_checked)?;
    writeln!(out, "output chunks   {}", report.chunks)?;
    for kind in [
        "duplicate",
        "unrecorded",
        "not_terminal",
        "output_gap",
        "output_short",
        "stale_fence",
    ] {
        writeln!(out, "{:<15} {}", kind.replace('_', " "), report.count(kind))?;
    }
    for note in &report.notes {
        writeln!(out, "note: {note}")?;
    }
    for violation in report.violations.iter().take(50) {
        writeln!(out, "VIOLATION {}", describe(violation))?;
    }
    if report.violations.len() > 50 {
        writeln!(out, "… and {} more (use --json)", report.violations.len() - 50)?;
    }
    if report.violations.is_empty() {
        writeln!(out, "OK: no violations")?;
    }
    Ok(())
}

fn describe(violation: &Violation) -> String {
    match violation {
        Violation::Duplicate { job, tick, runs } => {
            format!("{job} tick {tick} ran {} times: {}", runs.len(), runs.join(", "))
        }
        Violation::Unrecorded { job, tick } => format!("{job} tick {tick} was neither run nor recorded"),
        Violation::NotTerminal { job, run_id } => {
            format!("{job} run {run_id} is recorded running but no worker holds it")
        }
        Violation::OutputGap { job, run_id, missing } => format!("{job} run {run_id} output misses seqs {missing:?}"),
        Violation::OutputShort {
            job,
            run_id,
            recorded_bytes,
            stored_bytes,
        } => format!("{job} run {run_id} recorded {recorded_bytes} bytes of output but {stored_bytes} are stored"),
        Violation::StaleFence {
            job,
            tick,
            fence,
            previous_fence,
        } => format!("{job} tick {tick} has fence {fence}, not above the previous tick's {previous_fence}"),
    }
}
