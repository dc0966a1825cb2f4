//! Build and run with `scripts/build-guests.sh rust-http` and then a sandcron
//! job whose env sets `API_BASE` and whose egress lists it (see README.md).
//!
//! A sandcron job as a WASI 0.2 component that works with an HTTP service:
//! it GETs `$API_BASE/items`, sums them up, POSTs the summary to
//! `$API_BASE/report` with the run's fencing token, and prints one line.
//! `wstd` sends the requests through `wasi:http/outgoing-handler`, so the
//! host checks each against the job's egress and records it in the run's
//! ledger. Any failure (a refused call, an error status, a body that is not
//! the expected JSON) is printed on stderr and fails the run.

use std::env;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use wstd::http::{Body, Client, Request, StatusCode};

const NAME: &str = "rust-http";

#[wstd::main]
async fn main() -> ExitCode {
    match summarize().await {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            // `{:#}` prints the context chain on one line: what failed, then why.
            eprintln!("{NAME}: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// What `GET /items` answers.
#[derive(Deserialize)]
struct Listing {
    items: Vec<Item>,
}

/// The fields of an item the summary needs; the others are ignored. Prices
/// are whole numbers (cents, say): money in floating point rounds.
#[derive(Deserialize)]
struct Item {
    price: u64,
    quantity: u64,
}

/// What `POST /report` sends.
#[derive(Serialize)]
struct Report {
    guest: &'static str,
    count: usize,
    total: u64,
}

async fn summarize() -> Result<String> {
    let base = env::var("API_BASE").context("API_BASE is not set (the job env gives the service base URL)")?;
    let base = base.trim_end_matches('/');
    let client = Client::new();

    let url = format!("{base}/items");
    let request = Request::get(&url).body(Body::empty())?;
    let response = client.send(request).await.with_context(|| format!("GET {url}"))?;
    check_status("GET", &url, response.status())?;
    let listing: Listing = response
        .into_body()
        .json()
        .await
        .with_context(|| format!("GET {url}: not a list of items"))?;
    let count = listing.items.len();
    let total = listing
        .items
        .iter()
        .try_fold(0_u64, |sum, item| {
            item.price
                .checked_mul(item.quantity)
                .and_then(|value| sum.checked_add(value))
        })
        .with_context(|| format!("GET {url}: the total value overflows"))?;

    // Every write to an outside system carries the run's fencing token, so
    // the service can refuse a write from a run that has since been superseded.
    let url = format!("{base}/report");
    let report = Report {
        guest: NAME,
        count,
        total,
    };
    let body = serde_json::to_vec(&report)?;
    let request = Request::post(&url)
        .header("content-type", "application/json")
        // A known length, so the body goes out in one piece rather than chunked.
        .header("content-length", body.len())
        .header("x-sandcron-fence", env::var("SANDCRON_FENCE").unwrap_or_default())
        .header("x-sandcron-run", env::var("SANDCRON_RUN_ID").unwrap_or_default())
        .body(Body::from(body))?;
    let response = client.send(request).await.with_context(|| format!("POST {url}"))?;
    let status = response.status();
    // Read the answer to the end, so that the call is over before the run is.
    response
        .into_body()
        .contents()
        .await
        .with_context(|| format!("POST {url}: reading the answer"))?;
    check_status("POST", &url, status)?;
    Ok(format!(
        "{NAME}: {count} items worth {total}, reported ({})",
        status.as_u16()
    ))
}

fn check_status(method: &str, url: &str, status: StatusCode) -> Result<()> {
    if !status.is_success() {
        bail!("{method} {url} answered {status}");
    }
    Ok(())
}
