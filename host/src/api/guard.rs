//! What keeps web pages from driving a server, and the security headers of
//! every answer.
//!
//! A server without tokens (`sandcron dev`, a master on a trusted network)
//! treats every caller as admin, and shell jobs run commands. A web page the
//! user visits could otherwise drive it: a cross-site form POST or `fetch`
//! to `http://127.0.0.1:8070`, or — through DNS rebinding, a name of the
//! attacker's that resolves to 127.0.0.1 — requests the browser thinks are
//! same-origin. So, without tokens:
//!
//! - the `Host` header must be `localhost` (or a name below it), an address
//!   literal, or a name listed in `server.allowed_hosts` — a rebound name is
//!   none of these (403); an address cannot be rebound, and a page loaded
//!   from the server's own address is the server's own page;
//! - a request that changes anything (not GET, HEAD or OPTIONS) is refused
//!   when its `Origin` is present and is not this server's own, or when the
//!   browser says `Sec-Fetch-Site: cross-site` (or `same-site`: another port
//!   or subdomain is another site's page). Clients that are not browsers
//!   (the CLI, curl) send neither and pass.
//!
//! With tokens, a page cannot authenticate (it has no token and the API
//! reads no cookies), so only the headers apply. Every answer carries a
//! `Content-Security-Policy` with no inline script, `X-Frame-Options: DENY`,
//! `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{HOST, HeaderName, HeaderValue, ORIGIN};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// Which requests a tokenless server answers.
#[derive(Debug, Clone, Default)]
pub(super) struct LocalGuard {
    /// Host names (without a port) accepted besides `localhost` and address
    /// literals.
    pub(super) allowed_hosts: Vec<String>,
    /// Whether the server has tokens; without, the checks apply.
    pub(super) tokens: bool,
}

/// The console's content security policy: its own files only, no inline
/// script or style, no frames, no plugins.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

/// The middleware: checks the request (without tokens), then adds the
/// security headers to whatever is answered.
pub(super) async fn guard(State(guard): State<Arc<LocalGuard>>, request: Request, next: Next) -> Response {
    let mut response = match guard.refusal(request.method(), request.headers()) {
        Some(reason) => ApiError::Forbidden(reason).into_response(),
        None => next.run(request).await,
    };
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
    ] {
        headers.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    response
}

impl LocalGuard {
    /// Why a request must be refused, if it must.
    fn refusal(&self, method: &Method, headers: &HeaderMap) -> Option<String> {
        if self.tokens {
            return None;
        }
        let host = headers.get(HOST).and_then(|value| value.to_str().ok()).unwrap_or("");
        if !self.host_allowed(host) {
            return Some(format!(
                "host {host:?} is not this server's: a server without tokens answers only localhost, \
                 loopback addresses and the names in server.allowed_hosts"
            ));
        }
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return None;
        }
        if let Some(origin) = headers.get(ORIGIN).map(|value| value.to_str().unwrap_or("?")) {
            let own = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .is_some_and(|authority| authority.eq_ignore_ascii_case(host));
            if !own {
                return Some(format!(
                    "a page from {origin} may not change anything on this server (it has no tokens)"
                ));
            }
        }
        let site = headers.get("sec-fetch-site").and_then(|value| value.to_str().ok());
        if matches!(site, Some("cross-site" | "same-site")) {
            return Some(
                "a page from another site may not change anything on this server (it has no tokens)".to_owned(),
            );
        }
        None
    }

    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        if name.eq_ignore_ascii_case("localhost") || name.to_ascii_lowercase().ends_with(".localhost") {
            return true;
        }
        if name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok()
        {
            // An address literal cannot be rebound: a page that reaches this
            // server by its address is same-origin only with the server.
            return true;
        }
        self.allowed_hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(name))
    }
}

/// The host part of a `Host` header (`name`, `name:port`, `[v6]:port`).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(address, _)| &host[..=address.len()]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).expect("value"));
        }
        map
    }

    #[test]
    fn a_tokenless_server_answers_only_its_own_hosts() {
        let guard = LocalGuard {
            allowed_hosts: vec!["cron.lan".into()],
            tokens: false,
        };
        for host in [
            "localhost:8070",
            "LOCALHOST",
            "app.localhost:1",
            "127.0.0.1:8070",
            "127.8.9.1",
            "[::1]:8070",
            "cron.lan:8070",
            "10.0.0.5:8070",
        ] {
            assert_eq!(guard.refusal(&Method::GET, &headers(&[("host", host)])), None, "{host}");
        }
        for host in ["rebind.example:8070", "", "localhost.evil.com", "cron.lan.evil.com"] {
            let refused = guard.refusal(&Method::GET, &headers(&[("host", host)]));
            assert!(refused.is_some_and(|r| r.contains("not this server's")), "{host}");
        }
    }

    #[test]
    fn pages_of_other_origins_cannot_change_anything() {
        let guard = LocalGuard::default();
        let host = ("host", "127.0.0.1:8070");
        type Headers<'a> = &'a [(&'static str, &'a str)];
        let cases: [(Headers<'_>, Option<&str>); 6] = [
            (&[host], None),
            (&[host, ("origin", "http://127.0.0.1:8070")], None),
            (&[host, ("origin", "http://evil.example")], Some("may not change")),
            (&[host, ("origin", "http://127.0.0.1:9999")], Some("may not change")),
            (&[host, ("origin", "null")], Some("may not change")),
            (&[host, ("sec-fetch-site", "cross-site")], Some("another site")),
        ];
        for (request, refused) in cases {
            let answer = guard.refusal(&Method::POST, &headers(request));
            match refused {
                None => assert_eq!(answer, None, "{request:?}"),
                Some(part) => assert!(answer.is_some_and(|a| a.contains(part)), "{request:?}"),
            }
        }
        // Reading is fine from anywhere on the right host; with tokens the
        // page has no credentials, so nothing is checked.
        let cross = headers(&[
            host,
            ("origin", "http://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ]);
        assert_eq!(guard.refusal(&Method::GET, &cross), None);
        let with_tokens = LocalGuard {
            tokens: true,
            ..LocalGuard::default()
        };
        assert_eq!(with_tokens.refusal(&Method::POST, &cross), None);
    }
}
