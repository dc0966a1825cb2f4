//! What a WASM job declares it may reach: `egress` entries such as
//! `https://api.example.com`, `https://*.example.org:8443` or
//! `tcp://db.internal:5432` (scheme, a host name or a `*.` suffix, an
//! optional port — the scheme's default otherwise), and the network limits
//! of one run. Pure: parsing and matching only. Which *addresses* a worker
//! lets any job reach is the worker's policy (`exec::egress`), checked on
//! the resolved address at connect time; a destination must pass both.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The protocols an egress entry can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EgressScheme {
    Http,
    Https,
    Tcp,
}

impl EgressScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            EgressScheme::Http => "http",
            EgressScheme::Https => "https",
            EgressScheme::Tcp => "tcp",
        }
    }

    /// The port an entry without one means; `tcp://` entries need theirs.
    fn default_port(self) -> Option<u16> {
        match self {
            EgressScheme::Http => Some(80),
            EgressScheme::Https => Some(443),
            EgressScheme::Tcp => None,
        }
    }
}

/// Which hosts an entry covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EgressHost {
    /// Exactly this name (lower case, no trailing dot) or address literal.
    Exact(String),
    /// `*.example.com`: any name below `example.com`, not the name itself.
    Below(String),
}

/// One parsed `egress` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EgressTarget {
    pub scheme: EgressScheme,
    pub host: EgressHost,
    pub port: u16,
}

impl EgressTarget {
    /// Whether this entry allows `scheme://host:port`. `host` is compared
    /// case-insensitively and without a trailing dot.
    pub fn allows(&self, scheme: EgressScheme, host: &str, port: u16) -> bool {
        if self.scheme != scheme || self.port != port {
            return false;
        }
        let host = normalize_host(host);
        match &self.host {
            EgressHost::Exact(name) => *name == host,
            EgressHost::Below(suffix) => {
                host.len() > suffix.len() + 1
                    && host.ends_with(suffix.as_str())
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            }
        }
    }

    /// Whether the host part names `host` exactly (for TCP name lookups,
    /// where no port is known yet).
    pub fn names_host(&self, host: &str) -> bool {
        self.scheme == EgressScheme::Tcp
            && matches!(&self.host, EgressHost::Exact(name) if *name == normalize_host(host))
    }
}

impl fmt::Display for EgressTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.host {
            EgressHost::Exact(name) if name.contains(':') => format!("[{name}]"),
            EgressHost::Exact(name) => name.clone(),
            EgressHost::Below(suffix) => format!("*.{suffix}"),
        };
        write!(f, "{}://{host}:{}", self.scheme.as_str(), self.port)
    }
}

impl FromStr for EgressTarget {
    type Err = String;

    /// Parses an entry; the error says what is wrong with it.
    fn from_str(entry: &str) -> Result<Self, String> {
        let entry = entry.trim();
        let Some((scheme, rest)) = entry.split_once("://") else {
            return Err("needs a scheme: https://, http:// or tcp://".to_owned());
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "https" => EgressScheme::Https,
            "http" => EgressScheme::Http,
            "tcp" => EgressScheme::Tcp,
            other => return Err(format!("scheme {other:?} is not one of https, http, tcp")),
        };
        // A single trailing slash is harmless; anything after it is a path.
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err("names a destination, not a URL: leave out any path, query or fragment".to_owned());
        }
        if rest.contains('@') {
            return Err("must not contain credentials (user@host)".to_owned());
        }
        let (host, port) = split_host_port(rest)?;
        let port = match port {
            Some(text) => match text.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(format!("port {text:?} is not a number from 1 to 65535")),
            },
            None => scheme
                .default_port()
                .ok_or_else(|| "a tcp:// entry needs a port, e.g. tcp://db.internal:5432".to_owned())?,
        };
        let host = if let Some(suffix) = host.strip_prefix("*.") {
            let suffix = normalize_host(suffix);
            check_name(&suffix)?;
            if !suffix.contains('.') {
                return Err(format!(
                    "*.{suffix} covers a whole top-level domain; name a domain of its own"
                ));
            }
            EgressHost::Below(suffix)
        } else if host == "*" || host.contains('*') {
            return Err("a wildcard may only be a leading *. before a domain (*.example.com)".to_owned());
        } else if let Ok(address) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
        {
            EgressHost::Exact(address.to_string())
        } else {
            let name = normalize_host(host);
            check_name(&name)?;
            EgressHost::Exact(name)
        };
        Ok(EgressTarget { scheme, host, port })
    }
}

/// Splits `host[:port]`, with IPv6 literals in brackets.
fn split_host_port(text: &str) -> Result<(&str, Option<&str>), String> {
    if text.is_empty() {
        return Err("needs a host".to_owned());
    }
    if let Some(rest) = text.strip_prefix('[') {
        let Some((address, after)) = rest.split_once(']') else {
            return Err("an IPv6 address needs its closing ]".to_owned());
        };
        return match after {
            "" => Ok((&text[..address.len() + 2], None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((&text[..address.len() + 2], Some(port))),
                None => Err(format!("unexpected {after:?} after the address")),
            },
        };
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Ok((host, Some(port))),
        Some(_) => Err("an IPv6 address must be written in brackets: tcp://[::1]:5432".to_owned()),
        None => Ok((text, None)),
    }
}

fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `name` (lower case, no trailing dot) is a DNS host name: labels
/// of 1–63 letters, digits and inner hyphens, 253 characters in all.
pub fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn check_name(name: &str) -> Result<(), String> {
    if is_host_name(name) {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid host name"))
    }
}

/// What one run may do on the network, beyond where it may connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkLimits {
    /// HTTP requests and TCP connections in all.
    pub requests: u32,
    /// Requests and connections open at once.
    pub concurrent: u32,
    /// Bytes sent, all requests together.
    pub bytes_out: u64,
    /// Bytes received, all responses together.
    pub bytes_in: u64,
    /// Longest wait for a connection.
    pub connect_timeout_s: u64,
    /// Longest wait for the first byte of a response.
    pub first_byte_timeout_s: u64,
}

impl crate::compact::Usual for NetworkLimits {
    fn usual() -> &'static Self {
        static USUAL: std::sync::LazyLock<NetworkLimits> = std::sync::LazyLock::new(NetworkLimits::default);
        &USUAL
    }

    fn is_usual(&self) -> bool {
        self == Self::usual()
    }
}

impl Default for NetworkLimits {
    fn default() -> Self {
        Self {
            requests: 100,
            concurrent: 8,
            bytes_out: 10 << 20,
            bytes_in: 100 << 20,
            connect_timeout_s: 10,
            first_byte_timeout_s: 30,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(entry: &str) -> EgressTarget {
        entry.parse().unwrap_or_else(|e| panic!("{entry}: {e}"))
    }

    #[test]
    fn entries_parse_with_default_ports_and_normalised_hosts() {
        let https = target("https://API.Example.com.");
        assert_eq!(https.to_string(), "https://api.example.com:443");
        assert_eq!(target("http://example.com/").to_string(), "http://example.com:80");
        assert_eq!(
            target("https://*.example.org:8443").to_string(),
            "https://*.example.org:8443"
        );
        assert_eq!(target("tcp://db.internal:5432").to_string(), "tcp://db.internal:5432");
        assert_eq!(target("tcp://[::1]:6379").to_string(), "tcp://[::1]:6379");
        assert_eq!(target("http://127.0.0.1:8080").to_string(), "http://127.0.0.1:8080");
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        let cases = [
            ("api.example.com", "needs a scheme"),
            ("ftp://example.com", "is not one of"),
            ("https://example.com:0", "port \"0\""),
            ("https://example.com:99999", "port \"99999\""),
            ("https://example.com:http", "port \"http\""),
            ("https://*", "wildcard"),
            ("https://*.com", "top-level domain"),
            ("https://api.*.example.com", "wildcard"),
            ("https://example.com/v1/data", "path"),
            ("https://example.com?key=1", "query"),
            ("https://user:pw@example.com", "credentials"),
            ("tcp://db.internal", "needs a port"),
            ("tcp://::1:5432", "brackets"),
            ("https://", "needs a host"),
            ("https://exa_mple.com", "not a valid host name"),
        ];
        for (entry, part) in cases {
            let err = entry.parse::<EgressTarget>().expect_err(entry);
            assert!(err.contains(part), "{entry}: {err:?} lacks {part:?}");
        }
    }

    #[test]
    fn matching_needs_scheme_host_and_port() {
        let api = target("https://api.example.com");
        assert!(api.allows(EgressScheme::Https, "api.example.com", 443));
        assert!(api.allows(EgressScheme::Https, "API.EXAMPLE.COM.", 443));
        assert!(
            !api.allows(EgressScheme::Http, "api.example.com", 443),
            "http when only https is listed"
        );
        assert!(
            !api.allows(EgressScheme::Https, "api.example.com", 8443),
            "another port"
        );
        assert!(!api.allows(EgressScheme::Https, "evil.example.com", 443));
        assert!(!api.allows(EgressScheme::Https, "api.example.com.evil.net", 443));

        let below = target("https://*.example.org:8443");
        assert!(below.allows(EgressScheme::Https, "a.example.org", 8443));
        assert!(below.allows(EgressScheme::Https, "a.b.example.org", 8443));
        assert!(
            !below.allows(EgressScheme::Https, "example.org", 8443),
            "not the domain itself"
        );
        assert!(
            !below.allows(EgressScheme::Https, "badexample.org", 8443),
            "a label boundary"
        );

        let db = target("tcp://db.internal:5432");
        assert!(db.allows(EgressScheme::Tcp, "db.internal", 5432));
        assert!(db.names_host("DB.internal"));
        assert!(!db.names_host("cache.internal"));
        assert!(
            !target("https://db.internal").names_host("db.internal"),
            "only tcp entries resolve names"
        );
    }
}
