//! Webhook alerts: the alert as JSON in a POST, signed so the receiver can
//! tell it came from this installation, retried until a 2xx.
//!
//! Headers: `X-Sandcron-Delivery` (the alert id, the same on every retry),
//! `X-Sandcron-Timestamp` (Unix seconds) and `X-Sandcron-Signature:
//! sha256=<hex>`, the HMAC-SHA256 with the channel's secret of
//! `"<timestamp>.<body>"` — binding the time stops an old alert from being
//! replayed as new.

use std::time::Duration;

use super::{ATTEMPTS, AlertPayload, backoff};
use crate::crypto;

/// A webhook channel: where to POST, and the signing secret.
#[derive(Clone)]
pub struct WebhookChannel {
    pub url: String,
    pub secret: Option<String>,
    pub timeout: Duration,
}

impl std::fmt::Debug for WebhookChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookChannel")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<secret>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The value of `X-Sandcron-Signature` for `body` sent at `timestamp`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    format!(
        "sha256={}",
        crypto::hex(&crypto::hmac_sha256(secret.as_bytes(), &signed))
    )
}

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

impl WebhookChannel {
    /// Sends `alert`, retrying server errors, timeouts and 408/429 with
    /// backoff; other 4xx answers are final (the request will not improve).
    pub async fn deliver(&self, client: &reqwest::Client, alert: &AlertPayload) -> Result<(), String> {
        let body = serde_json::to_vec(alert).map_err(|err| format!("cannot encode the alert: {err}"))?;
        let mut last_error = String::new();
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                tokio::time::sleep(backoff(attempt - 1)).await;
            }
            let timestamp = jiff::Timestamp::now().as_second();
            let mut request = client
                .post(&self.url)
                .timeout(self.timeout)
                .header("content-type", "application/json")
                .header("x-sandcron-event", "alert")
                .header("x-sandcron-delivery", &alert.id)
                .header("x-sandcron-timestamp", timestamp.to_string())
                .body(body.clone());
            if let Some(secret) = &self.secret {
                request = request.header("x-sandcron-signature", signature(secret, timestamp, &body));
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => {
                    let status = response.status();
                    last_error = format!("{} answered {status}", self.url);
                    if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
                        return Err(last_error);
                    }
                }
                Err(err) => last_error = format!("cannot reach {}: {err}", self.url),
            }
            tracing::debug!(alert = %alert.id, attempt, error = %last_error, "webhook attempt failed");
        }
        Err(format!("{last_error} (after {ATTEMPTS} attempts)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_timestamp_and_body() {
        let a = signature("s3cret", 1_800_000_000, br#"{"job":"x"}"#);
        assert!(a.starts_with("sha256="));
        assert_eq!(a.len(), "sha256=".len() + 64);
        assert_ne!(a, signature("s3cret", 1_800_000_001, br#"{"job":"x"}"#));
        assert_ne!(a, signature("s3cret", 1_800_000_000, br#"{"job":"y"}"#));
        assert_ne!(a, signature("other", 1_800_000_000, br#"{"job":"x"}"#));
        // A receiver recomputes it the documented way.
        let expected = crypto::hex(&crypto::hmac_sha256(b"s3cret", br#"1800000000.{"job":"x"}"#));
        assert_eq!(a, format!("sha256={expected}"));
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let channel = WebhookChannel {
            url: "https://hooks.example/x".into(),
            secret: Some("hunter2".into()),
            timeout: Duration::from_secs(5),
        };
        assert!(!format!("{channel:?}").contains("hunter2"));
    }
}
