//! Build and run with `scripts/build-guests.sh rust-http` and then a sandcron
//! job whose config sets `API_BASE`, whose secrets give `API_TOKEN` and whose
//! egress lists the service (see README.md).
//!
//! A sandcron job as a WASI 0.2 component that works with an HTTP service:
//! it reads the items added since its last run from
//! `$API_BASE/items?after=CURSOR&limit=3` with the service's token, sums
//! them up, POSTs the summary to `$API_BASE/report` with the run's fencing
//! token, keeps the id of the last item in the job's key-value state as the
//! next run's cursor, and prints two lines. The job's config, its secrets
//! and the run context come through `wasi:config/store`, the state through
//! `wasi:keyvalue/store` (bindings generated from `wit/world.wit`).
//! `wstd` sends the requests through `wasi:http/outgoing-handler`, so the
//! host checks each against the job's egress and records it in the run's
//! ledger. Any failure (a refused call, an error status, a body that is not
//! the expected JSON, a state write refused) is printed on stderr and fails
//! the run.

wit_bindgen::generate!({ path: "wit", world: "job", generate_all });

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use wasi::config::store as config;
use wasi::keyvalue::store::{self as state, Bucket};
use wstd::http::{Body, Client, Request, StatusCode};

const NAME: &str = "rust-http";
/// Items read per run at most; the next run goes on from where this one ended.
const PAGE_SIZE: u32 = 3;
/// The key of the job's state that holds the id of the last item reported.
const CURSOR_KEY: &str = "cursor";

#[wstd::main]
async fn main() -> ExitCode {
    match summarize().await {
        Ok(()) => ExitCode::SUCCESS,
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
    id: u64,
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

async fn summarize() -> Result<()> {
    let base = required("API_BASE", "the job's config gives the service base URL")?;
    let base = base.trim_end_matches('/');
    let token = required("API_TOKEN", "the job's secrets give the service's token")?;
    let authorization = format!("Bearer {token}");
    let client = Client::new();

    let bucket = state::open("default")
        .map_err(state_error)
        .context("opening the job state")?;
    let after = read_cursor(&bucket)?;
    let url = format!("{base}/items?after={after}&limit={PAGE_SIZE}");
    // No body, as a stream that ends at once: `Body::empty()` would still
    // write zero bytes to the request's body stream, which fails (a
    // "connection reset") once a service that closes its connections after
    // each answer has answered and the host has closed that stream.
    let request = Request::get(&url)
        .header("authorization", &authorization)
        .body(Body::from_stream(futures_lite::stream::empty::<Vec<u8>>()))?;
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
    let cursor = listing.items.iter().map(|item| item.id).fold(after, u64::max);

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
        .header("authorization", &authorization)
        .header("content-type", "application/json")
        // A known length, so the body goes out in one piece rather than chunked.
        .header("content-length", body.len())
        .header("x-sandcron-fence", config_value("SANDCRON_FENCE")?.unwrap_or_default())
        .header("x-sandcron-run", config_value("SANDCRON_RUN_ID")?.unwrap_or_default())
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
    println!("{NAME}: {count} items worth {total}, reported ({})", status.as_u16());

    // Only once the report is in: a run that fails before this line leaves
    // the cursor where it was, and the next run reads the same items again.
    // The write is fenced: a superseded run cannot move the cursor back.
    bucket
        .set(CURSOR_KEY, cursor.to_string().as_bytes())
        .map_err(state_error)
        .with_context(|| format!("saving the cursor {cursor}"))?;
    println!("{NAME}: cursor {after} -> {cursor}");
    Ok(())
}

/// A `wasi:config` value: from the job's `config`, its secrets or the run
/// context (`SANDCRON_*`).
fn config_value(key: &str) -> Result<Option<String>> {
    config::get(key).with_context(|| format!("reading {key} from wasi:config"))
}

fn required(key: &str, why: &str) -> Result<String> {
    match config_value(key)? {
        Some(value) if !value.is_empty() => Ok(value),
        _ => bail!("{key} is not set ({why})"),
    }
}

/// The id of the last item a run reported, 0 before the first.
fn read_cursor(bucket: &Bucket) -> Result<u64> {
    let Some(stored) = bucket
        .get(CURSOR_KEY)
        .map_err(state_error)
        .context("reading the cursor")?
    else {
        return Ok(0);
    };
    let text = String::from_utf8_lossy(&stored);
    match text.parse() {
        Ok(id) if text.bytes().all(|b| b.is_ascii_digit()) => Ok(id),
        _ => bail!("the stored cursor {text:?} is not an item id"),
    }
}

/// The host's reason, as the WIT error carries it (`quota exceeded: …`).
fn state_error(error: state::Error) -> anyhow::Error {
    match error {
        state::Error::Other(reason) => anyhow::Error::msg(reason),
        state::Error::NoSuchStore => anyhow::Error::msg("no such store"),
        state::Error::AccessDenied => anyhow::Error::msg("access denied"),
    }
}

fn check_status(method: &str, url: &str, status: StatusCode) -> Result<()> {
    if status == StatusCode::UNAUTHORIZED {
        bail!("{method} {url} answered {status} (the service refused the token: check the secret API_TOKEN names)");
    }
    if !status.is_success() {
        bail!("{method} {url} answered {status}");
    }
    Ok(())
}
