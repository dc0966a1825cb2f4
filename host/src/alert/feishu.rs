//! Feishu (Lark) alerts: a text message to a custom bot's webhook,
//! `{"msg_type": "text", "content": {"text": ...}}`, signed when the bot
//! has a secret. The webhook's URL is its credential: it is never logged.
//!
//! Feishu's signature: `sign` = base64(HMAC-SHA256 keyed with
//! `"<timestamp>\n<secret>"`, over the empty message), with `timestamp` (Unix
//! seconds, as a string) beside it in the body. Feishu refuses a timestamp
//! more than an hour from its clock, so each attempt signs anew.

use std::time::Duration;

use serde_json::{Value, json};

use super::AlertPayload;
use super::chat::ChatText;
use super::post::{Target, check_chat_url, origin, post_with_retries};
use crate::crypto;

/// A Feishu custom bot.
#[derive(Clone)]
pub struct FeishuChannel {
    url: String,
    secret: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for FeishuChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeishuChannel")
            .field("url", &format!("{}/<secret>", origin(&self.url)))
            .field("secret", &self.secret.as_ref().map(|_| "<secret>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Feishu's answers are a small JSON object; more than this is not one.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

impl FeishuChannel {
    /// A channel posting to `url` (`https://`, or `http://` to a loopback
    /// address only), signing with `secret` when there is one. Errors name
    /// the field (`url: …`, `secret: …`).
    pub fn new(url: &str, secret: Option<&str>, timeout: Duration) -> Result<FeishuChannel, String> {
        check_chat_url(url).map_err(|err| format!("url: {err}"))?;
        if secret.is_some_and(|secret| secret.trim().is_empty()) {
            return Err("secret: it is empty; leave it out for a bot without signature verification".into());
        }
        Ok(FeishuChannel {
            url: url.to_owned(),
            secret: secret.map(str::to_owned),
            timeout,
        })
    }

    /// Sends `alert` with the shared retry policy. Feishu answers HTTP 200
    /// even when it refuses a message (a bad signature, a keyword the bot
    /// requires): a non-zero `code` in its answer is a failure, and final.
    pub async fn deliver(&self, client: &reqwest::Client, alert: &AlertPayload) -> Result<(), String> {
        let text = feishu_text(alert);
        let shown = format!("Feishu webhook {}", origin(&self.url));
        let target = Target {
            url: &self.url,
            shown: &shown,
            timeout: self.timeout,
            alert_id: &alert.id,
        };
        let response = post_with_retries(client, &target, |request, timestamp| {
            let signed = self.secret.as_deref().map(|secret| (timestamp, secret));
            request
                .header("content-type", "application/json")
                .body(feishu_body(&text, signed).to_string())
        })
        .await?;
        let answer = read_answer(response).await;
        match refusal(&answer) {
            Some(refused) => Err(format!("{shown} refused the message: {refused}")),
            None => Ok(()),
        }
    }
}

/// Feishu's `sign` for a message sent at `timestamp` (Unix seconds) by a
/// bot whose secret is `secret`.
pub fn feishu_sign(secret: &str, timestamp: i64) -> String {
    base64(&crypto::hmac_sha256(format!("{timestamp}\n{secret}").as_bytes(), b""))
}

/// The alert as Feishu text. Feishu reads `<at user_id="all">` in a text
/// message as a mention of everyone, so angle brackets (which only an
/// error message can bring) become their full-width look-alikes: a guest
/// cannot page a whole group through its error.
fn feishu_text(alert: &AlertPayload) -> String {
    ChatText::new(alert).plain().replace('<', "＜").replace('>', "＞")
}

/// The message, with `timestamp` and `sign` when `signed` gives the time
/// and the secret.
fn feishu_body(text: &str, signed: Option<(i64, &str)>) -> Value {
    let mut body = json!({"msg_type": "text", "content": {"text": text}});
    if let Some((timestamp, secret)) = signed {
        body["timestamp"] = Value::String(timestamp.to_string());
        body["sign"] = Value::String(feishu_sign(secret, timestamp));
    }
    body
}

/// The start of a 2xx answer's body (enough for Feishu's JSON), lossily.
async fn read_answer(mut response: reqwest::Response) -> Vec<u8> {
    let mut answer = Vec::new();
    while answer.len() < MAX_ANSWER_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => answer.extend_from_slice(&chunk),
            // The message was accepted (2xx); an answer cut short says
            // nothing against it.
            Ok(None) | Err(_) => break,
        }
    }
    answer
}

/// Why Feishu refused the message, if its answer says it did: `{"code":
/// 19021, "msg": "sign match fail…"}`. An answer that is not Feishu's JSON
/// (a relay answering 200 `ok`) is taken as accepted.
fn refusal(answer: &[u8]) -> Option<String> {
    let answer: Value = serde_json::from_slice(answer).ok()?;
    let code = answer.get("code").or_else(|| answer.get("StatusCode"))?.as_i64()?;
    if code == 0 {
        return None;
    }
    let message = answer
        .get("msg")
        .or_else(|| answer.get("StatusMessage"))
        .and_then(Value::as_str)
        .unwrap_or("no message");
    Some(format!("{message} (code {code})"))
}

/// Standard base64 with padding (RFC 4648 §4), for the 32 bytes of a sign.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let group = chunk
            .iter()
            .enumerate()
            .fold(0u32, |group, (i, byte)| group | (u32::from(*byte) << (16 - 8 * i)));
        for position in 0..4 {
            if position <= chunk.len() {
                let index = (group >> (18 - 6 * position)) & 0x3f;
                out.push(char::from(ALPHABET[index as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::chat::tests::failed_alert;

    #[test]
    fn the_sign_matches_feishus_documented_algorithm() {
        // Computed independently, with Feishu's own Python sample:
        //   key = "1800000000\nfeishu-test-secret".encode()
        //   base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest())
        assert_eq!(
            feishu_sign("feishu-test-secret", 1_800_000_000),
            "nxacB1nGQ8pQNffcSyhcGuzbYXwnYvmdVhRHTmgxtsE="
        );
        assert_ne!(
            feishu_sign("feishu-test-secret", 1_800_000_001),
            feishu_sign("feishu-test-secret", 1_800_000_000)
        );
    }

    #[test]
    fn base64_follows_the_rfc_vectors() {
        for (bytes, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(bytes.as_bytes()), encoded, "{bytes:?}");
        }
    }

    #[test]
    fn the_text_cannot_mention_anyone() {
        let mut alert = failed_alert();
        alert.error = Some(r#"<at user_id="all">everyone</at>"#.into());
        let text = feishu_text(&alert);
        assert!(text.contains(r#"error: ＜at user_id="all"＞everyone＜/at＞"#), "{text}");
        assert!(!text.contains('<'), "{text}");
    }

    #[test]
    fn the_body_is_a_text_message_signed_only_with_a_secret() {
        let text = feishu_text(&failed_alert());
        assert_eq!(
            feishu_body(&text, None),
            json!({"msg_type": "text", "content": {"text": text}})
        );
        assert_eq!(
            feishu_body(&text, Some((1_800_000_000, "feishu-test-secret"))),
            json!({
                "msg_type": "text",
                "content": {"text": text},
                "timestamp": "1800000000",
                "sign": "nxacB1nGQ8pQNffcSyhcGuzbYXwnYvmdVhRHTmgxtsE=",
            })
        );
        assert!(text.starts_with("sandcron: job nightly failed\nrun 01JRUN"), "{text}");
        assert!(text.ends_with("https://cron.example.com/#/runs/01JRUN"), "{text}");
    }

    #[test]
    fn a_dead_man_alert_is_a_text_message_too() {
        let text = feishu_text(&crate::alert::chat::tests::no_success_alert());
        assert!(
            text.starts_with("sandcron: job nightly has not succeeded within 10 min\n"),
            "{text}"
        );
        assert!(text.contains("selector ＜zone＞=eu"), "{text}");
        assert!(text.ends_with("https://cron.example.com/#/jobs/nightly"), "{text}");
        let body = feishu_body(&text, Some((1_800_000_000, "feishu-test-secret")));
        assert_eq!(body["msg_type"], "text");
        assert_eq!(body["sign"], "nxacB1nGQ8pQNffcSyhcGuzbYXwnYvmdVhRHTmgxtsE=");
    }

    #[test]
    fn a_non_zero_code_is_a_refusal() {
        assert_eq!(
            refusal(br#"{"StatusCode":0,"StatusMessage":"success","code":0,"msg":"success"}"#),
            None
        );
        assert_eq!(
            refusal(br#"{"code":19021,"data":{},"msg":"sign match fail or timestamp is not within one hour"}"#),
            Some("sign match fail or timestamp is not within one hour (code 19021)".to_owned())
        );
        assert_eq!(refusal(b"ok\n"), None);
    }

    #[test]
    fn secrets_are_checked_and_never_shown() {
        let hook = "https://open.feishu.cn/open-apis/bot/v2/hook/0123-abcd";
        assert!(FeishuChannel::new(hook, Some(" "), Duration::from_secs(5)).is_err());
        assert!(FeishuChannel::new("http://open.feishu.cn/x", None, Duration::from_secs(5)).is_err());
        let channel = FeishuChannel::new(hook, Some("hunter2"), Duration::from_secs(5)).expect("valid");
        let debug = format!("{channel:?}");
        assert!(!debug.contains("hunter2") && !debug.contains("0123-abcd"), "{debug}");
    }
}
