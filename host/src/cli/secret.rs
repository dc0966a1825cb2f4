//! `sandcron secret set|ls|rm|rekey|keygen`: write-only secrets over
//! `/api/v1/secrets`. `set` reads the value from standard input, never from
//! the command line (where `ps` and shell history would see it); `keygen`
//! makes a key file locally and talks to no server.

use std::io::{Read as _, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;

use super::client::Client;
use super::{print_table, text};
use crate::secret::Keyring;

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create or replace a secret; the value is read from standard input
    /// (one trailing newline is dropped). Admins only.
    Set {
        name: String,
        /// Keep a trailing newline as part of the value.
        #[arg(long)]
        keep_newline: bool,
    },
    /// List secrets: names, who wrote each when, the jobs that use it.
    Ls {
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a secret no job uses.
    Rm { name: String },
    /// Seal every secret again under the key file's first key (a key
    /// rotation's second step; see docs/secrets.md).
    Rekey,
    /// Make a new key file (mode 0600), or print a new key line to put first
    /// in an existing key file. Talks to no server.
    Keygen {
        /// Write a new key file here (refuses to overwrite one).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub(super) async fn run(client: &Client, command: SecretCommand, out: &mut impl Write) -> anyhow::Result<()> {
    match command {
        SecretCommand::Set { name, keep_newline } => {
            let mut value = Vec::new();
            std::io::stdin()
                .read_to_end(&mut value)
                .context("cannot read the value from standard input")?;
            if !keep_newline {
                strip_newline(&mut value);
            }
            if value.is_empty() {
                bail!("no value on standard input (try: sandcron secret set {name} < file)");
            }
            let answer = client.put_text(&format!("/secrets/{name}"), value).await?;
            let users = jobs(&answer);
            writeln!(
                out,
                "secret {name} stored (sealed with key {}){}",
                text(&answer["key_id"]),
                if users.is_empty() {
                    String::new()
                } else {
                    format!("; the next runs of {users} get the new value")
                }
            )?;
        }
        SecretCommand::Ls { json } => {
            let secrets = client.get("/secrets").await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&secrets)?)?;
                return Ok(());
            }
            let rows: Vec<Vec<String>> = secrets
                .as_array()
                .into_iter()
                .flatten()
                .map(|secret| {
                    vec![
                        text(&secret["name"]).to_owned(),
                        text(&secret["updated_at"]).to_owned(),
                        text(&secret["written_by"]).to_owned(),
                        text(&secret["key_id"]).to_owned(),
                        jobs(secret),
                    ]
                })
                .collect();
            print_table(
                out,
                &["NAME", "UPDATED", "BY", "KEY", "JOBS"],
                &[false, false, false, false, false],
                &rows,
            )?;
        }
        SecretCommand::Rm { name } => {
            client.delete(&format!("/secrets/{name}")).await?;
            writeln!(out, "secret {name} deleted")?;
        }
        SecretCommand::Rekey => {
            let answer = client.post("/secrets/rekey").await?;
            let resealed = answer["resealed"].as_array().map_or(0, Vec::len);
            writeln!(
                out,
                "{resealed} secret(s) sealed again under key {}; {} already were",
                text(&answer["key_id"]),
                answer["current"]
            )?;
            let failed = answer["failed"].as_array().cloned().unwrap_or_default();
            for failure in &failed {
                writeln!(
                    out,
                    "cannot re-seal {}: {}",
                    text(&failure["name"]),
                    text(&failure["error"])
                )?;
            }
            if !failed.is_empty() {
                bail!(
                    "{} secret(s) could not be opened with the server's key file",
                    failed.len()
                );
            }
        }
        SecretCommand::Keygen { out: path } => keygen(path, out)?,
    }
    Ok(())
}

/// `secret keygen`: talks to no server.
fn keygen(out_path: Option<PathBuf>, out: &mut impl Write) -> anyhow::Result<()> {
    match out_path {
        Some(path) => {
            if path.exists() {
                bail!("{} exists; a key file is never overwritten", path.display());
            }
            let (keyring, _) = Keyring::load_or_create(&path)?;
            writeln!(
                out,
                "wrote {} (key {}); give every master and worker this file ([secrets] key_file)",
                path.display(),
                keyring.sealing_id()
            )?;
        }
        None => write!(out, "{}", Keyring::new_key_line()?)?,
    }
    Ok(())
}

fn jobs(secret: &serde_json::Value) -> String {
    secret["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect::<Vec<_>>()
        .join(", ")
}

fn strip_newline(value: &mut Vec<u8>) {
    if value.ends_with(b"\n") {
        value.pop();
        if value.ends_with(b"\r") {
            value.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_trailing_newline_is_dropped() {
        for (given, kept) in [
            ("token\n", "token"),
            ("token\r\n", "token"),
            ("token\n\n", "token\n"),
            ("token", "token"),
            ("\n", ""),
        ] {
            let mut value = given.as_bytes().to_vec();
            super::strip_newline(&mut value);
            assert_eq!(value, kept.as_bytes(), "{given:?}");
        }
    }
}
