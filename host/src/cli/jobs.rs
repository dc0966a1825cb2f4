//! `sandcron job …` and `sandcron module …`: job files (TOML or JSON, read
//! and checked here so a mistake is reported at its key and line) and the
//! job and module commands over the API.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;

use super::client::Client;
use super::{print_table, text};

#[derive(Debug, Subcommand)]
pub enum ModuleCommand {
    /// Upload a .wasm file; prints its digest.
    Push {
        file: PathBuf,
        /// A label shown beside the digest (default: the file's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// List stored modules and the jobs that use them.
    Ls,
    /// Delete a module no job uses.
    Rm { digest: String },
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Create or replace a job from a TOML or JSON file.
    Apply {
        /// The job file (`name` plus the fields of the job body).
        #[arg(short, long)]
        file: PathBuf,
        /// The job name, if the file has none.
        #[arg(long)]
        name: Option<String>,
        /// Upload this .wasm first and make the job run it (sets kind.wasm.module).
        #[arg(long)]
        module: Option<PathBuf>,
    },
    /// List jobs.
    Ls {
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one job as JSON.
    Get { name: String },
    /// Delete a job (killing its running runs).
    Rm { name: String },
    /// Stop scheduling a job.
    Pause { name: String },
    /// Schedule a paused job again.
    Resume { name: String },
}

pub(super) async fn job(client: &Client, command: JobCommand, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    match command {
        JobCommand::Apply { file, name, module } => {
            let (name, mut body) = read_job_file(&file, name)?;
            if let Some(path) = module {
                let uploaded = push_module(client, &path, None).await?;
                let digest = uploaded["digest"].clone();
                let kind = body
                    .as_object_mut()
                    .and_then(|o| o.get_mut("kind"))
                    .and_then(|k| k.as_object_mut());
                match kind.and_then(|k| k.get_mut("wasm")).and_then(|w| w.as_object_mut()) {
                    Some(wasm) => {
                        wasm.insert("module".to_owned(), digest);
                    }
                    None => body["kind"] = serde_json::json!({"wasm": {"module": digest}}),
                }
                let done = if uploaded["created"] == true {
                    "uploaded"
                } else {
                    "already stored"
                };
                writeln!(out, "module {} {done}", module_title(&uploaded))?;
            }
            let view = client.put(&format!("/jobs/{name}"), &body).await?;
            writeln!(out, "job {name} saved (revision {})", view["revision"])?;
        }
        JobCommand::Ls { json } => {
            let jobs = client.get_all("/jobs").await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&jobs)?)?;
                return Ok(());
            }
            writeln!(
                out,
                "{:<24}  {:<6}  {:<14}  {:<20}  {:<26}  LAST",
                "NAME", "KIND", "STATUS", "SCHEDULE", "NEXT"
            )?;
            for job in jobs.as_array().into_iter().flatten() {
                let kind = job["kind"]
                    .as_object()
                    .and_then(|k| k.keys().next().cloned())
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{:<24}  {:<6}  {:<14}  {:<20}  {:<26}  {}",
                    text(&job["name"]),
                    kind,
                    text(&job["status"]),
                    text(&job["schedule"]),
                    text(&job["next_run"]),
                    job["last_run"]["status"].as_str().unwrap_or("-")
                )?;
            }
        }
        JobCommand::Get { name } => {
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&client.get(&format!("/jobs/{name}")).await?)?
            )?;
        }
        JobCommand::Rm { name } => {
            client.delete(&format!("/jobs/{name}")).await?;
            writeln!(out, "job {name} deleted")?;
        }
        JobCommand::Pause { name } => {
            client.post(&format!("/jobs/{name}/pause")).await?;
            writeln!(out, "job {name} paused")?;
        }
        JobCommand::Resume { name } => {
            client.post(&format!("/jobs/{name}/resume")).await?;
            writeln!(out, "job {name} resumed")?;
        }
    }
    Ok(())
}

/// Uploads the module at `path`, labelled `name` or else the file's name.
async fn push_module(client: &Client, path: &std::path::Path, name: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file_name = path.file_name().map(|name| name.to_string_lossy());
    let label = name.or(file_name.as_deref());
    let query: Vec<(&str, &str)> = label.map(|label| ("name", label)).into_iter().collect();
    client.post_wasm("/modules", &query, bytes).await
}

/// "sha256:… (report.wasm)" or the digest alone.
fn module_title(uploaded: &serde_json::Value) -> String {
    match uploaded["name"].as_str() {
        Some(name) => format!("{} ({name})", text(&uploaded["digest"])),
        None => text(&uploaded["digest"]).to_owned(),
    }
}

pub(super) async fn module(
    client: &Client,
    command: ModuleCommand,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    match command {
        ModuleCommand::Push { file, name } => {
            let uploaded = push_module(client, &file, name.as_deref()).await?;
            let note = if uploaded["created"] == true {
                ""
            } else {
                " (already stored)"
            };
            writeln!(
                out,
                "{} {} {} bytes{note}",
                module_title(&uploaded),
                text(&uploaded["kind"]),
                uploaded["size"]
            )?;
        }
        ModuleCommand::Ls => {
            let modules = client.get("/modules").await?;
            let rows: Vec<Vec<String>> = modules
                .as_array()
                .into_iter()
                .flatten()
                .map(|module| {
                    let list = |key: &str| {
                        let items: Vec<&str> = module[key]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|item| item.as_str())
                            .collect();
                        if items.is_empty() {
                            "-".to_owned()
                        } else {
                            items.join(",")
                        }
                    };
                    vec![
                        text(&module["digest"]).to_owned(),
                        module["name"].as_str().unwrap_or("-").to_owned(),
                        text(&module["kind"]).to_owned(),
                        module["size"].to_string(),
                        list("capabilities"),
                        list("jobs"),
                    ]
                })
                .collect();
            print_table(
                out,
                &["DIGEST", "NAME", "KIND", "SIZE", "NETWORK", "JOBS"],
                &[false, false, false, true, false, false],
                &rows,
            )?;
        }
        ModuleCommand::Rm { digest } => {
            client.delete(&format!("/modules/{digest}")).await?;
            writeln!(out, "module {digest} deleted")?;
        }
    }
    Ok(())
}

/// The TOML text with its top-level `name = …` line turned into a comment:
/// what is left is the job spec, on the same lines as in the file.
fn without_name(text: &str) -> String {
    let mut in_root = true;
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with('[') {
                in_root = false;
            }
            let is_name = in_root
                && trimmed
                    .strip_prefix("name")
                    .is_some_and(|rest| rest.trim_start().starts_with('='));
            if is_name { format!("# {line}") } else { line.to_owned() }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads a job file (TOML, or JSON when it ends in `.json`) into its name
/// and the body of `PUT /jobs/{name}`.
pub fn read_job_file(path: &std::path::Path, name: Option<String>) -> anyhow::Result<(String, serde_json::Value)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut body: serde_json::Value = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?
    } else {
        let table: toml::Table =
            toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
        // Checked here as a job, so that a mistake is reported at its key
        // and line in this file rather than in the JSON the server gets.
        // (A wasm job's `module` may come from --module instead.)
        if let Err(err) = toml::from_str::<crate::job::JobSpec>(&without_name(&text))
            && !err.message().contains("missing field `module`")
        {
            bail!("{}: {}", path.display(), err.to_string().trim_end());
        }
        serde_json::to_value(table)?
    };
    let object = body
        .as_object_mut()
        .with_context(|| format!("{} must hold one job (a table)", path.display()))?;
    let in_file = object.remove("name").and_then(|n| n.as_str().map(str::to_owned));
    let name = name
        .or(in_file)
        .with_context(|| format!("{} has no `name`; add one or pass --name", path.display()))?;
    Ok((name, body))
}
