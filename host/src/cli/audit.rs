//! `sandcron audit`: the audit log over `GET /api/v1/audit`, newest first,
//! as a table or as one JSON object per line. Follows `next_cursor` until
//! `--limit` entries are printed or the log has no more.
//!
//! Every text an entry carries (a state key, a detail, a header a caller
//! sent) is printed with its control characters escaped, as `sandcron logs`
//! does: a caller must not be able to drive an operator's terminal.

use std::io::Write;

use anyhow::bail;
use clap::Args;
use jiff::Timestamp;
use serde_json::Value;

use super::client::Client;
use super::{escape_controls, instant_or_ago, print_table};
use crate::audit::AuditAction;

/// The most entries the API answers in one page.
const PAGE_LIMIT: usize = 1000;

/// The filters and output format of `sandcron audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only entries about this job.
    #[arg(long)]
    job: Option<String>,
    /// Only entries made with this token name.
    #[arg(long)]
    actor: Option<String>,
    /// Only this action: job_create, job_replace, job_delete, job_pause,
    /// job_resume, run_now, rerun, kill, module_upload, module_delete,
    /// secret_set, secret_delete, secret_rekey, state_delete, state_clear.
    #[arg(long)]
    action: Option<AuditAction>,
    /// Only entries about this target (a job name, module digest, secret
    /// name, state key).
    #[arg(long)]
    target: Option<String>,
    /// Entries at or after this instant (RFC 3339, or a duration ago such as
    /// 90s, 15m, 2h, 1d).
    #[arg(long)]
    since: Option<String>,
    /// Entries before this instant (RFC 3339, or a duration ago).
    #[arg(long)]
    until: Option<String>,
    /// Print at most this many entries (pages are followed until then).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print each entry as the API's JSON, one object per line.
    #[arg(long)]
    json: bool,
}

pub(super) async fn run(client: &Client, args: AuditArgs, out: &mut impl Write) -> anyhow::Result<()> {
    if args.limit == 0 {
        bail!("--limit must be at least 1");
    }
    let now = Timestamp::now();
    let since = args
        .since
        .as_deref()
        .map(|text| instant_or_ago(text, now, "--since"))
        .transpose()?;
    let until = args
        .until
        .as_deref()
        .map(|text| instant_or_ago(text, now, "--until"))
        .transpose()?;
    if let (Some(since), Some(until)) = (since, until)
        && until <= since
    {
        bail!("--until ({until}) must be after --since ({since})");
    }
    let mut filters: Vec<(&str, String)> = Vec::new();
    filters.extend(args.job.map(|job| ("job", job)));
    filters.extend(args.actor.map(|actor| ("actor", actor)));
    filters.extend(args.action.map(|action| ("action", action.as_str().to_owned())));
    filters.extend(args.target.map(|target| ("target", target)));
    filters.extend(since.map(|since| ("since", since.to_string())));
    filters.extend(until.map(|until| ("until", until.to_string())));
    let (entries, more) = collect(args.limit, async |cursor, page_limit| {
        let mut query = filters.clone();
        query.push(("limit", page_limit.to_string()));
        query.extend(cursor.map(|cursor| ("cursor", cursor)));
        client.get_query("/audit", &query).await
    })
    .await?;
    if args.json {
        for entry in &entries {
            // serde_json escapes control characters inside strings.
            writeln!(out, "{entry}")?;
        }
    } else {
        print(out, &entries)?;
    }
    if more {
        out.flush()?;
        eprintln!(
            "[{} entries shown; more match: raise --limit or narrow with --since/--until]",
            entries.len()
        );
    }
    Ok(())
}

/// Up to `limit` entries, newest first, from the pages `fetch(cursor,
/// page_limit)` answers, following `next_cursor`; and whether more match.
async fn collect(
    limit: usize,
    mut fetch: impl AsyncFnMut(Option<String>, usize) -> anyhow::Result<Value>,
) -> anyhow::Result<(Vec<Value>, bool)> {
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let wanted = (limit - entries.len()).min(PAGE_LIMIT);
        let page = fetch(cursor.take(), wanted).await?;
        let mut got = page["entries"].as_array().cloned().unwrap_or_default();
        let empty = got.is_empty();
        got.truncate(wanted);
        entries.extend(got);
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        // An empty page with a cursor would loop forever: a server bug, but
        // not one to hang on.
        if cursor.is_none() || empty {
            return Ok((entries, false));
        }
        if entries.len() >= limit {
            return Ok((entries, true));
        }
    }
}

/// The entries as a table, in the order given.
fn print(out: &mut impl Write, entries: &[Value]) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = entries.iter().map(row).collect();
    print_table(
        out,
        &["TIME", "ACTOR", "ACTION", "TARGET", "REVISIONS", "DETAIL"],
        &[false; 6],
        &rows,
    )
}

/// One entry as a table row.
fn row(entry: &Value) -> Vec<String> {
    let at = entry["at"].as_str().unwrap_or("-");
    let time = match at.parse::<Timestamp>() {
        Ok(at) => at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => cell(at),
    };
    let mut target = cell(entry["target"].as_str().unwrap_or("-"));
    // A state key's job is not its target; say which it is.
    if let Some(job) = entry["job"].as_str()
        && entry["target"].as_str() != Some(job)
    {
        target.push_str(&format!(" (job {})", cell(job)));
    }
    vec![
        time,
        format!(
            "{} ({})",
            cell(entry["actor"].as_str().unwrap_or("-")),
            cell(entry["role"].as_str().unwrap_or("-"))
        ),
        cell(entry["action"].as_str().unwrap_or("-")),
        target,
        revisions(entry["revision_before"].as_i64(), entry["revision_after"].as_i64()),
        detail(entry),
    ]
}

/// `r12→r13`; `→r12` for a create, `r13→` for a delete, `r13` when the
/// write left the revision as it was (run now, pausing a paused job).
fn revisions(before: Option<i64>, after: Option<i64>) -> String {
    match (before, after) {
        (Some(before), Some(after)) if before == after => format!("r{after}"),
        (Some(before), Some(after)) => format!("r{before}→r{after}"),
        (None, Some(after)) => format!("→r{after}"),
        (Some(before), None) => format!("r{before}→"),
        (None, None) => String::new(),
    }
}

/// The detail in words, the fields a replace changed and the runs concerned.
fn detail(entry: &Value) -> String {
    let list = |field: &str| -> Vec<String> {
        entry[field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(cell)
            .collect()
    };
    let mut parts = Vec::new();
    parts.extend(entry["detail"].as_str().map(cell));
    let changed = list("changed");
    if !changed.is_empty() {
        parts.push(format!("changed {}", changed.join(", ")));
    }
    let runs = list("runs");
    match runs.as_slice() {
        [] => {}
        [run] => parts.push(format!("run {run}")),
        runs => parts.push(format!("runs {}", runs.join(", "))),
    }
    parts.join("; ")
}

/// `text` for one table cell: control characters escaped as `sandcron logs`
/// escapes them, and newlines and tabs too (they would break the row).
fn cell(text: &str) -> String {
    escape_controls(text).replace('\n', "\\x0a").replace('\t', "\\x09")
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;

    /// A log of `total` entries (`e<total-1>` newest) served in pages.
    fn log(total: usize) -> Vec<Value> {
        (0..total).rev().map(|n| json!({"id": format!("e{n}")})).collect()
    }

    /// Collects from `log` as the API would page it; returns the entries'
    /// ids, whether more matched, and the page sizes asked for.
    async fn collect_from(log: &[Value], limit: usize) -> (Vec<String>, bool, Vec<usize>) {
        let asked = Mutex::new(Vec::new());
        let (entries, more) = collect(limit, async |cursor: Option<String>, page_limit: usize| {
            asked.lock().unwrap().push(page_limit);
            let start = cursor.map_or(0, |c| c.parse::<usize>().unwrap());
            let end = (start + page_limit).min(log.len());
            let next = (end < log.len()).then(|| end.to_string());
            Ok(json!({"entries": log[start..end], "next_cursor": next}))
        })
        .await
        .unwrap();
        let ids = entries.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
        (ids, more, asked.into_inner().unwrap())
    }

    #[tokio::test]
    async fn pages_are_followed_until_the_limit_or_the_last_page() {
        let (ids, more, asked) = collect_from(&log(5), 50).await;
        assert_eq!(ids, ["e4", "e3", "e2", "e1", "e0"]);
        assert!(!more);
        assert_eq!(asked, [50]);

        let (ids, more, asked) = collect_from(&log(2500), 2200).await;
        assert_eq!(ids.len(), 2200);
        assert_eq!(ids.first().map(String::as_str), Some("e2499"));
        assert_eq!(ids.last().map(String::as_str), Some("e300"));
        assert!(more);
        assert_eq!(asked, [1000, 1000, 200]);

        // Exactly the whole log: the last page says there is no more.
        let (ids, more, asked) = collect_from(&log(2000), 2000).await;
        assert_eq!(ids.len(), 2000);
        assert!(!more);
        assert_eq!(asked, [1000, 1000]);
    }

    #[tokio::test]
    async fn an_empty_page_with_a_cursor_ends_the_walk() {
        let (entries, more) = collect(10, async |_, _| Ok(json!({"entries": [], "next_cursor": "X"})))
            .await
            .unwrap();
        assert!(entries.is_empty());
        assert!(!more);
    }

    #[test]
    fn revisions_read_as_before_and_after() {
        assert_eq!(revisions(Some(12), Some(13)), "r12→r13");
        assert_eq!(revisions(None, Some(12)), "→r12");
        assert_eq!(revisions(Some(13), None), "r13→");
        assert_eq!(revisions(Some(13), Some(13)), "r13");
        assert_eq!(revisions(None, None), "");
    }

    #[test]
    fn a_row_says_who_did_what_and_escapes_what_callers_wrote() {
        let entry = json!({
            "id": "01JF0000000000000000000000",
            "at": "2026-12-06T18:31:29.123Z",
            "actor": "ci",
            "role": "operator",
            "action": "job_replace",
            "target": "nightly",
            "job": "nightly",
            "revision_before": 12,
            "revision_after": 13,
            "changed": ["description", "schedule"],
        });
        assert_eq!(
            row(&entry),
            [
                "2026-12-06T18:31:29Z",
                "ci (operator)",
                "job_replace",
                "nightly",
                "r12→r13",
                "changed description, schedule"
            ]
        );
        let entry = json!({
            "at": "2026-12-06T18:31:29Z",
            "actor": "ops",
            "role": "operator",
            "action": "state_delete",
            "target": "key\u{1b}]0;pwned\u{7}\nFAKE ROW\t!",
            "job": "counter",
            "detail": "one run",
            "runs": ["01JF0000000000000000000001"],
        });
        let cells = row(&entry);
        assert_eq!(cells[3], "key\\x1b]0;pwned\\x07\\x0aFAKE ROW\\x09! (job counter)");
        assert_eq!(cells[5], "one run; run 01JF0000000000000000000001");
        assert!(
            cells.iter().all(|cell| !cell.chars().any(char::is_control)),
            "{cells:?}"
        );
    }

    #[test]
    fn the_table_lists_entries_under_their_headers() {
        let entries = [
            json!({"at": "2026-12-06T18:31:30Z", "actor": "root", "role": "admin", "action": "secret_set",
                "target": "db", "detail": "created, sealed under key k1"}),
            json!({"at": "2026-12-06T18:31:29Z", "actor": "ops", "role": "operator", "action": "job_create",
                "target": "nightly", "job": "nightly", "revision_after": 7, "detail": "wasm job"}),
        ];
        let mut out = Vec::new();
        print(&mut out, &entries).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "TIME                  ACTOR           ACTION      TARGET   REVISIONS  DETAIL\n\
             2026-12-06T18:31:30Z  root (admin)    secret_set  db                  created, sealed under key k1\n\
             2026-12-06T18:31:29Z  ops (operator)  job_create  nightly  →r7        wasm job\n"
        );
    }
}
