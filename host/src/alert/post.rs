//! Alerts over HTTP: the one client and the one retry policy every HTTP
//! channel (webhook, Slack, Feishu) delivers with. The channels only say
//! what each attempt sends; how often and how long to try is decided here.

use std::time::Duration;

use super::{ATTEMPTS, backoff};

/// The HTTP client alerts are sent with.
pub(super) fn client() -> anyhow::Result<reqwest::Client> {
    crate::tls::install_crypto_provider();
    Ok(reqwest::Client::builder()
        .user_agent(concat!("sandcron/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        // Alerts are rare: a fresh connection each time, never one the
        // receiver may be closing just then.
        .pool_max_idle_per_host(0)
        .build()?)
}

/// Where one alert goes: the URL, and how it is named in errors and logs
/// (a chat webhook's URL is its credential, so those name only its origin).
pub(super) struct Target<'a> {
    pub(super) url: &'a str,
    pub(super) shown: &'a str,
    pub(super) timeout: Duration,
    pub(super) alert_id: &'a str,
}

/// POSTs to `target` until a 2xx answer, which it returns. `attempt` builds
/// each attempt from the bare request and the Unix time of that attempt (so
/// a signature over the time stays fresh on a retry). Server errors,
/// timeouts, 408 and 429 are retried with backoff; other 4xx answers are
/// final (the request will not improve).
pub(super) async fn post_with_retries(
    client: &reqwest::Client,
    target: &Target<'_>,
    mut attempt: impl FnMut(reqwest::RequestBuilder, i64) -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, String> {
    let shown = target.shown;
    let mut last_error = String::new();
    for number in 1..=ATTEMPTS {
        if number > 1 {
            tokio::time::sleep(backoff(number - 1)).await;
        }
        let timestamp = jiff::Timestamp::now().as_second();
        let request = attempt(client.post(target.url).timeout(target.timeout), timestamp);
        match request.send().await {
            Ok(response) if response.status().is_success() => return Ok(response),
            Ok(response) => {
                let status = response.status();
                last_error = format!("{shown} answered {status}");
                if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
                    return Err(last_error);
                }
            }
            // Without the URL: reqwest's errors quote it, and a chat
            // webhook's URL is a secret.
            Err(err) => last_error = format!("cannot reach {shown}: {}", err.without_url()),
        }
        tracing::debug!(alert = %target.alert_id, attempt = number, error = %last_error, "alert attempt failed");
    }
    Err(format!("{last_error} (after {ATTEMPTS} attempts)"))
}

/// `url` without its path, query and credentials (`https://hooks.slack.com`),
/// for errors and logs about a channel whose URL is its secret.
pub(super) fn origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => parsed.origin().ascii_serialization(),
        Err(_) => "<invalid URL>".to_owned(),
    }
}

/// Checks a chat webhook's URL: `https://`, or `http://` only to a loopback
/// address (a local relay, or a test receiver). The URL is the credential
/// of a Slack or Feishu webhook, so it never travels in clear text over a
/// network.
pub(super) fn check_chat_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|err| format!("{url:?} is not a URL: {err}"))?;
    let Some(host) = parsed.host_str() else {
        return Err(format!("{url:?} has no host"));
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(host) => Ok(()),
        "http" => Err(format!(
            "{url:?} must be https:// (http:// is only accepted to a loopback address)"
        )),
        _ => Err(format!("{url:?} must be an https:// URL")),
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_urls_are_https_or_loopback_http() {
        check_chat_url("https://hooks.slack.com/services/T0/B0/x").expect("https");
        check_chat_url("http://127.0.0.1:8080/hook").expect("loopback v4");
        check_chat_url("http://[::1]:8080/hook").expect("loopback v6");
        check_chat_url("http://localhost/hook").expect("localhost");
        let err = check_chat_url("http://hooks.example.com/x").expect_err("plain http");
        assert!(err.contains("must be https://"), "{err}");
        assert!(check_chat_url("ftp://hooks.example.com/x").is_err());
        assert!(check_chat_url("not a url").is_err());
    }

    #[test]
    fn the_origin_leaves_out_the_secret_path() {
        assert_eq!(
            origin("https://open.feishu.cn/open-apis/bot/v2/hook/0123-secret"),
            "https://open.feishu.cn"
        );
        assert_eq!(origin("http://127.0.0.1:9/x?token=y"), "http://127.0.0.1:9");
    }
}
