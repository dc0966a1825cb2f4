//! `sandcron state ls|get|rm JOB [KEY]`: a job's key-value state (what its
//! runs keep through `wasi:keyvalue`), over `/api/v1/jobs/{name}/state`.
//! `get` writes the raw value to stdout, nothing else, so it pipes.

use std::io::Write;

use anyhow::bail;
use clap::Subcommand;

use super::client::Client;
use super::{print_table, text};

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// List a job's keys with their sizes, and its totals and quota.
    Ls {
        job: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write one value to stdout, as raw bytes.
    Get { job: String, key: String },
    /// Delete one key, or with --all every key, of a job's state.
    Rm {
        job: String,
        key: Option<String>,
        /// Delete every key (the state's fence stays: older runs still
        /// cannot write).
        #[arg(long, conflicts_with = "key")]
        all: bool,
    },
}

pub(super) async fn run(client: &Client, command: StateCommand, out: &mut impl Write) -> anyhow::Result<()> {
    match command {
        StateCommand::Ls { job, json } => {
            let state = client.get(&format!("/jobs/{}/state", segment(&job))).await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&state)?)?;
                return Ok(());
            }
            let rows: Vec<Vec<String>> = state["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|entry| {
                    vec![
                        text(&entry["key"]).to_owned(),
                        entry["size"].to_string(),
                        entry["revision"].to_string(),
                    ]
                })
                .collect();
            print_table(out, &["KEY", "SIZE", "REVISION"], &[false, true, true], &rows)?;
            let total = &state["total"];
            let mut summary = format!("{} keys, {} bytes (keys and values)", total["keys"], total["bytes"]);
            let quota = &state["quota"];
            if quota.is_object() {
                summary.push_str(&format!(
                    "; quota {} keys, {} bytes per value, {} bytes in all",
                    quota["max_keys"], quota["max_value_bytes"], quota["max_job_bytes"]
                ));
            }
            match state["fence"].as_i64() {
                Some(fence) => summary.push_str(&format!("; owned by the run with fence {fence}")),
                None => summary.push_str("; no run has used it yet"),
            }
            writeln!(out, "{summary}")?;
        }
        StateCommand::Get { job, key } => {
            let value = client
                .get_bytes(&format!("/jobs/{}/state/{}", segment(&job), segment(&key)))
                .await?;
            out.write_all(&value)?;
            out.flush()?;
        }
        StateCommand::Rm {
            job, key: Some(key), ..
        } => {
            client
                .delete(&format!("/jobs/{}/state/{}", segment(&job), segment(&key)))
                .await?;
            writeln!(out, "key {key:?} of job {job} deleted")?;
        }
        StateCommand::Rm { job, key: None, all } => {
            if !all {
                bail!("give the KEY to delete, or --all to delete every key of job {job}'s state");
            }
            let cleared = client.delete(&format!("/jobs/{}/state", segment(&job))).await?;
            writeln!(out, "{} keys of job {job} deleted", cleared["deleted"])?;
        }
    }
    Ok(())
}

/// `text` as one URL path segment: everything but unreserved characters
/// percent-encoded (a key may hold `/`, `?`, `#` or spaces).
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_travel_as_one_path_segment() {
        assert_eq!(super::segment("count"), "count");
        assert_eq!(super::segment("../a b/?#%"), "..%2Fa%20b%2F%3F%23%25");
        assert_eq!(super::segment("é"), "%C3%A9");
    }
}
