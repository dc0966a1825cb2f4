//! A probe for the host's `wasi:config/store` and the environment it sets.
//! Each argument is one action; each prints lines a test can match.
//!
//! Actions:
//! - `config` — every `wasi:config` entry, sorted, as `config KEY=VALUE`;
//! - `env` — every environment variable, sorted, as `env KEY=VALUE`;
//! - `get KEY` — one `wasi:config` value, as `get KEY=VALUE` or `(none)`;
//! - `leak KEY` — prints the `wasi:config` value KEY the ways a careless
//!   job might: whole on stdout and stderr, split across two writes, as a
//!   result value, and base64-encoded (which masking cannot recognise).

wit_bindgen::generate!({
    path: "../../../host/wit/config",
    world: "wasi:config/imports",
    generate_all,
});

use std::io::Write as _;

use wasi::config::store;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut words = args.iter().map(String::as_str);
    while let Some(action) = words.next() {
        match action {
            "config" => {
                let mut all = store::get_all().unwrap_or_else(|err| fail(&format!("get-all: {err:?}")));
                all.sort();
                for (key, value) in all {
                    println!("config {key}={value}");
                }
            }
            "env" => {
                let mut vars: Vec<(String, String)> = std::env::vars().collect();
                vars.sort();
                for (key, value) in vars {
                    println!("env {key}={value}");
                }
            }
            "get" => {
                let key = words.next().unwrap_or_else(|| fail("get: missing KEY"));
                match store::get(key) {
                    Ok(Some(value)) => println!("get {key}={value}"),
                    Ok(None) => println!("get {key}=(none)"),
                    Err(err) => fail(&format!("get {key}: {err:?}")),
                }
            }
            "leak" => {
                let key = words.next().unwrap_or_else(|| fail("leak: missing KEY"));
                let value = match store::get(key) {
                    Ok(Some(value)) => value,
                    other => fail(&format!("leak {key}: no value ({other:?})")),
                };
                leak(key, &value);
            }
            other => fail(&format!("unknown action {other:?}")),
        }
    }
}

fn leak(key: &str, value: &str) {
    let mut stdout = std::io::stdout();
    println!("whole {key}={value}");
    eprintln!("stderr {key}={value}");
    let half = value.len() / 2;
    let (left, right) = value.split_at(half);
    // Two writes, each flushed: the host sees the value in two pieces.
    let _ = write!(stdout, "split {key}={left}");
    let _ = stdout.flush();
    let _ = writeln!(stdout, "{right}");
    let _ = stdout.flush();
    println!("base64 {key}={}", base64(value.as_bytes()));
    println!("::sandcron::result {{\"{key}\": \"{value}\"}}");
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn fail(message: &str) -> ! {
    eprintln!("config-probe: {message}");
    std::process::exit(1);
}
