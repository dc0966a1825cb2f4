//! A probe for the host's network rules. Each argument group is one action;
//! each action prints one line starting with its name, then `ok` or `error`
//! and the detail, so a test can match lines. The run exits 0 whatever the
//! calls did (the host, not the guest, is under test).
//!
//! Actions:
//! - `get URL` — GET, prints the status and the body's length;
//! - `gets URL N` — N GETs one after another, prints how many succeeded;
//! - `parallel URL N` — N GETs at once, prints how many succeeded;
//! - `post URL BYTES` — POST a body of BYTES bytes, prints the status;
//! - `tcp HOST:PORT TEXT` — connect, send TEXT and a newline, print the reply.

use wstd::http::{Body, BodyExt, Client, Method, Request};
use wstd::io::{AsyncRead, AsyncWrite};
use wstd::net::TcpStream;

#[wstd::main]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut words = args.iter().map(String::as_str);
    while let Some(action) = words.next() {
        let mut next = || words.next().ok_or_else(|| format!("{action}: missing argument"));
        match action {
            "get" => {
                let url = next()?;
                println!("get {url} {}", describe(get(url.to_owned()).await));
            }
            "gets" => {
                let url = next()?;
                let count: usize = next()?.parse().map_err(|_| "gets: N is not a number")?;
                let mut ok = 0;
                let mut last_error = String::new();
                for _ in 0..count {
                    match get(url.to_owned()).await {
                        Ok(_) => ok += 1,
                        Err(err) => last_error = one_line(&err),
                    }
                }
                println!("gets {url} ok {ok} of {count} {last_error}");
            }
            "parallel" => {
                let url = next()?;
                let count: usize = next()?.parse().map_err(|_| "parallel: N is not a number")?;
                let calls = (0..count).map(|_| get(url.to_owned()));
                let results = futures_join_all(calls).await;
                let ok = results.iter().filter(|result| result.is_ok()).count();
                let errors: Vec<&String> = results.iter().filter_map(|result| result.as_ref().err()).collect();
                println!(
                    "parallel {url} ok {ok} of {count} {}",
                    errors.first().map_or(String::new(), |e| one_line(e))
                );
            }
            "post" => {
                let url = next()?;
                let bytes: usize = next()?.parse().map_err(|_| "post: BYTES is not a number")?;
                println!("post {url} {}", describe(post(url, bytes).await));
            }
            "tcp" => {
                let address = next()?;
                let text = next()?;
                println!("tcp {address} {}", describe(tcp(address, text).await));
            }
            other => return Err(format!("unknown action {other:?}")),
        }
    }
    Ok(())
}

fn describe(result: Result<String, String>) -> String {
    match result {
        Ok(detail) => format!("ok {detail}"),
        Err(error) => format!("error {}", one_line(&error)),
    }
}

/// Error chains print over several lines; the tests match one line each.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

async fn get(url: String) -> Result<String, String> {
    let request = Request::get(url).body(Body::empty()).map_err(|e| e.to_string())?;
    let response = Client::new().send(request).await.map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .into_boxed_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e:?}"))?
        .to_bytes();
    Ok(format!("{status} {} bytes", body.len()))
}

async fn post(url: &str, bytes: usize) -> Result<String, String> {
    let request = Request::builder()
        .method(Method::POST)
        .uri(url)
        .body(Body::from(vec![b'x'; bytes]))
        .map_err(|e| e.to_string())?;
    let response = Client::new().send(request).await.map_err(|e| format!("{e:?}"))?;
    Ok(format!("{}", response.status().as_u16()))
}

async fn tcp(address: &str, text: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(address).await.map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(format!("{text}\n").as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.map_err(|e| format!("read: {e}"))?;
    Ok(String::from_utf8_lossy(&reply).trim().to_owned())
}

/// Runs the futures concurrently and collects their results in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + 'static,
    F::Output: 'static,
{
    let handles: Vec<_> = futures.map(wstd::runtime::spawn).collect();
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        results.push(handle.await);
    }
    results
}
