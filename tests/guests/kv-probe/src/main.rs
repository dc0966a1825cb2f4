//! A probe for the host's `wasi:keyvalue`. Each argument group is one
//! action on the job's bucket (`open("default")`, done before the first
//! action); each prints one line starting with the action and its key, then
//! `=` and the answer or `error:` and the reason, so a test can match lines.
//! The run exits 1 when any action failed, 0 otherwise.
//!
//! Actions:
//! - `get KEY` — the value as text, or `(none)`;
//! - `set KEY VALUE`, `del KEY`, `exists KEY`;
//! - `incr KEY DELTA` — the counter's new value;
//! - `list` — every key, over all pages, comma-separated, and the pages;
//! - `fill PREFIX COUNT BYTES` — COUNT keys PREFIX0.. of BYTES bytes each,
//!   stopping at the first refusal;
//! - `wait KEY` — polls until KEY exists (read errors are retried), for
//!   tests that must hold a run at a known point;
//! - `open NAME` — opens another bucket by name (to see it refused).

wit_bindgen::generate!({
    path: "../../../host/wit/keyvalue",
    world: "wasi:keyvalue/imports",
    generate_all,
});

use std::time::Duration;

use wasi::keyvalue::store::{self, Bucket, Error};
use wasi::keyvalue::{atomics, batch};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let fence = std::env::var("SANDCRON_FENCE").unwrap_or_default();
    println!("probe fence={fence}");
    let mut failed = false;
    let mut words = args.iter().map(String::as_str);
    let bucket = match store::open("default") {
        Ok(bucket) => bucket,
        Err(err) => {
            println!("open default error: {}", describe(&err));
            std::process::exit(1);
        }
    };
    while let Some(action) = words.next() {
        let mut next = || words.next().unwrap_or_else(|| panic!("{action}: missing argument"));
        let (line, ok) = match action {
            "get" => {
                let key = next();
                report(
                    format!("get {key}"),
                    bucket.get(key).map(|value| shown(value.as_deref())),
                )
            }
            "set" => {
                let (key, value) = (next(), next());
                report(
                    format!("set {key}"),
                    bucket.set(key, value.as_bytes()).map(|()| "ok".to_owned()),
                )
            }
            "del" => {
                let key = next();
                report(format!("del {key}"), bucket.delete(key).map(|()| "ok".to_owned()))
            }
            "exists" => {
                let key = next();
                report(
                    format!("exists {key}"),
                    bucket.exists(key).map(|found| found.to_string()),
                )
            }
            "incr" => {
                let key = next();
                let delta: u64 = next().parse().expect("incr: DELTA is a number");
                report(
                    format!("incr {key}"),
                    atomics::increment(&bucket, key, delta).map(|value| value.to_string()),
                )
            }
            "list" => report("list".to_owned(), list(&bucket)),
            "getmany" => {
                let keys: Vec<String> = next().split(',').map(str::to_owned).collect();
                report(
                    "getmany".to_owned(),
                    batch::get_many(&bucket, &keys).map(|found| {
                        found
                            .iter()
                            .map(|pair| match pair {
                                Some((key, value)) => format!("{key}:{}", shown(Some(value))),
                                None => "-".to_owned(),
                            })
                            .collect::<Vec<_>>()
                            .join(",")
                    }),
                )
            }
            "fill" => {
                let prefix = next();
                let count: usize = next().parse().expect("fill: COUNT is a number");
                let bytes: usize = next().parse().expect("fill: BYTES is a number");
                let value = vec![b'x'; bytes];
                let mut stored = 0;
                let mut result = Ok(String::new());
                for i in 0..count {
                    if let Err(err) = bucket.set(&format!("{prefix}{i}"), &value) {
                        result = Err(err);
                        break;
                    }
                    stored += 1;
                }
                report(
                    format!("fill {prefix} stored {stored}"),
                    result.map(|_| "ok".to_owned()),
                )
            }
            "wait" => {
                let key = next();
                loop {
                    match bucket.get(key) {
                        Ok(Some(_)) => break,
                        Ok(None) => {}
                        Err(err) => println!("wait {key} retrying: {}", describe(&err)),
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                (format!("wait {key} = found"), true)
            }
            "open" => {
                let name = next();
                report(format!("open {name}"), store::open(name).map(|_| "ok".to_owned()))
            }
            other => panic!("unknown action {other:?}"),
        };
        println!("{line}");
        failed |= !ok;
    }
    if failed {
        std::process::exit(1);
    }
}

fn list(bucket: &Bucket) -> Result<String, Error> {
    let mut keys = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = bucket.list_keys(cursor)?;
        pages += 1;
        keys.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(format!("{} ({} keys, {pages} pages)", keys.join(","), keys.len()))
}

fn shown(value: Option<&[u8]>) -> String {
    match value {
        Some(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        None => "(none)".to_owned(),
    }
}

fn report(what: String, result: Result<String, Error>) -> (String, bool) {
    match result {
        Ok(answer) => (format!("{what} = {answer}"), true),
        Err(err) => (format!("{what} error: {}", describe(&err)), false),
    }
}

fn describe(err: &Error) -> String {
    match err {
        Error::NoSuchStore => "no-such-store".to_owned(),
        Error::AccessDenied => "access-denied".to_owned(),
        Error::Other(message) => message.clone(),
    }
}
