//! The HTTP executor: calls a URL when an `http` job fires and records the
//! response — status line, headers and the body up to the job's output cap —
//! as the run's output.
//!
//! Every address a destination resolves to is checked against the worker's
//! [`EgressPolicy`] inside the client's resolver, so the connection goes only
//! to an address that passed; address literals are checked before the
//! request. Redirects are not followed (a redirect could lead anywhere) and
//! proxies from the environment are not used (they would bypass the check).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

use super::egress::EgressPolicy;
use super::{ExecRequest, Executor, KillSwitch, RunOutcome, RunOutput};
use crate::job::{HttpJob, JobKind};
use crate::run::{RunStatus, StreamKind};

/// How long connecting may take, within the job's own timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `http` jobs.
#[derive(Debug, Clone)]
pub struct HttpExecutor {
    client: reqwest::Client,
    policy: Arc<EgressPolicy>,
}

impl HttpExecutor {
    /// An executor whose requests may reach only what `policy` allows.
    pub fn new(policy: EgressPolicy) -> anyhow::Result<Self> {
        crate::tls::install_crypto_provider();
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .dns_resolver(CheckedResolver { policy: policy.clone() })
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("sandcron/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            // Each run opens its own connection: runs are seconds to days
            // apart, and a pooled connection the server closes just as a run
            // reuses it would fail that run for nothing.
            .pool_max_idle_per_host(0)
            .build()?;
        Ok(Self { client, policy })
    }

    async fn call(&self, request: &ExecRequest, http: &HttpJob, output: &mut RunOutput) -> RunOutcome {
        let url = match reqwest::Url::parse(&http.url) {
            Ok(url) => url,
            Err(err) => return RunOutcome::new(RunStatus::Failed).with_error(format!("invalid URL: {err}")),
        };
        // Address literals never reach the resolver: check them here.
        let literal = url
            .host_str()
            .map(|host| host.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|host| host.parse::<IpAddr>().ok());
        if let Some(address) = literal
            && let Err(denied) = self.policy.check(&address.to_string(), address)
        {
            return RunOutcome::new(RunStatus::Failed).with_error(format!("destination not allowed: {denied}"));
        }
        let method = match reqwest::Method::from_bytes(http.method.as_bytes()) {
            Ok(method) => method,
            Err(_) => {
                return RunOutcome::new(RunStatus::Failed).with_error(format!("invalid method {:?}", http.method));
            }
        };
        let headers = match request_headers(request, http) {
            Ok(headers) => headers,
            Err(err) => return RunOutcome::new(RunStatus::Failed).with_error(err),
        };
        output
            .write(StreamKind::Stdout, format!("> {method} {url}\n").as_bytes())
            .await;
        let mut builder = self.client.request(method, url).headers(headers);
        if let Some(body) = &http.body {
            match crate::secret::expand(body, &request.secrets.values) {
                Ok(body) => builder = builder.body(body),
                Err(err) => {
                    return RunOutcome::new(RunStatus::Failed).with_error(format!("kind.http.body: {err}"));
                }
            }
        }
        let started = Instant::now();
        let mut response = match builder.send().await {
            Ok(response) => response,
            Err(err) => {
                let message = error_chain(&err);
                output
                    .write(StreamKind::Stderr, format!("request failed: {message}\n").as_bytes())
                    .await;
                return RunOutcome::new(RunStatus::Failed).with_error(format!("request failed: {message}"));
            }
        };
        let status = response.status();
        let mut head = format!(
            "< {:?} {} ({} ms)\n",
            response.version(),
            status,
            started.elapsed().as_millis()
        );
        for (name, value) in response.headers() {
            head.push_str(&format!("< {name}: {}\n", String::from_utf8_lossy(value.as_bytes())));
        }
        head.push('\n');
        output.write(StreamKind::Stdout, head.as_bytes()).await;
        // The body is read only up to the output cap; the rest is not
        // downloaded (the connection is dropped).
        loop {
            if output.is_truncated() {
                break;
            }
            match response.chunk().await {
                Ok(Some(chunk)) => output.write(StreamKind::Stdout, &chunk).await,
                Ok(None) => break,
                Err(err) => {
                    let message = error_chain(&err);
                    output
                        .write(
                            StreamKind::Stderr,
                            format!("\nreading the body failed: {message}\n").as_bytes(),
                        )
                        .await;
                    return RunOutcome::new(RunStatus::Failed)
                        .with_error(format!("HTTP {status}: reading the body failed: {message}"));
                }
            }
        }
        output.finish().await;
        let expected = if http.expect_status.is_empty() {
            status.is_success()
        } else {
            http.expect_status.contains(&status.as_u16())
        };
        if expected {
            RunOutcome::new(RunStatus::Succeeded)
        } else {
            let wanted = if http.expect_status.is_empty() {
                "2xx".to_owned()
            } else {
                http.expect_status
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            RunOutcome::new(RunStatus::Failed).with_error(format!("HTTP {status}; expected {wanted}"))
        }
    }
}

#[async_trait]
impl Executor for HttpExecutor {
    async fn execute(&self, request: &ExecRequest, output: &mut RunOutput, kill: &KillSwitch) -> RunOutcome {
        let JobKind::Http(http) = &request.kind else {
            return RunOutcome::new(RunStatus::Failed).with_error("the HTTP executor runs http jobs only");
        };
        let timeout = Duration::from_secs(http.timeout_s);
        tokio::select! {
            outcome = tokio::time::timeout(timeout, self.call(request, http, output)) => match outcome {
                Ok(outcome) => outcome,
                Err(_) => {
                    output.finish().await;
                    RunOutcome::new(RunStatus::TimedOut)
                        .with_error(format!("no complete response within {} s", http.timeout_s))
                }
            },
            reason = kill.pulled() => RunOutcome::stopped(reason),
        }
    }
}

/// The job's headers plus sandcron's: `X-Sandcron-Job`, `-Run-Id`, `-Tick`,
/// `-Trigger`, `-Attempt`, `-Fence` and, where they apply, the parent run,
/// the shard and the async-completion token — the same values shell and
/// WASM jobs get as `SANDCRON_*` variables. `${secret:NAME}` in a value is
/// filled in, and such a header is marked sensitive.
fn request_headers(request: &ExecRequest, http: &HttpJob) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for (name, value) in &http.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("invalid header name {name:?}"))?;
        let filled = crate::secret::expand(value, &request.secrets.values)
            .map_err(|err| format!("kind.http.headers.{name}: {err}"))?;
        let mut header = HeaderValue::from_str(&filled).map_err(|_| format!("invalid value for header {name}"))?;
        if filled != *value {
            header.set_sensitive(true);
        }
        headers.append(name, header);
    }
    for (variable, value) in request.sandcron_env() {
        let name = header_for_variable(&variable);
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("invalid header name {name:?}"))?;
        let mut value = HeaderValue::from_str(&value).map_err(|_| format!("invalid value for header {name}"))?;
        if variable == "SANDCRON_RUN_TOKEN" {
            value.set_sensitive(true);
        }
        headers.insert(name, value);
    }
    Ok(headers)
}

/// `SANDCRON_RUN_ID` → `X-Sandcron-Run-Id`.
pub fn header_for_variable(variable: &str) -> String {
    let words = variable.split('_').map(|word| {
        let lower = word.to_ascii_lowercase();
        let mut chars = lower.chars();
        match chars.next() {
            Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
            None => String::new(),
        }
    });
    std::iter::once("X".to_owned())
        .chain(words)
        .collect::<Vec<_>>()
        .join("-")
}

/// An error with its causes, which is where reqwest says what went wrong
/// ("connection refused", the allow-list's refusal, a certificate problem).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Resolves names and keeps only the addresses the policy allows.
struct CheckedResolver {
    policy: Arc<EgressPolicy>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut first_denial = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|address| match policy.check(&host, address.ip()) {
                    Ok(()) => true,
                    Err(denied) => {
                        first_denial.get_or_insert(denied);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let reason = match first_denial {
                    Some(denied) => format!("destination not allowed: {denied}"),
                    None => format!("{host} did not resolve to any address"),
                };
                return Err(reason.into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_become_headers() {
        assert_eq!(header_for_variable("SANDCRON_RUN_ID"), "X-Sandcron-Run-Id");
        assert_eq!(header_for_variable("SANDCRON_JOB"), "X-Sandcron-Job");
        assert_eq!(
            header_for_variable("SANDCRON_PARENT_RUN_ID"),
            "X-Sandcron-Parent-Run-Id"
        );
    }
}
