//! Slack alerts: a message to an incoming webhook, `{"text", "blocks"}` —
//! the alert's headline as the notification text, its facts and the console
//! link as blocks. The webhook's URL is its credential: it is never logged.

use std::time::Duration;

use serde_json::{Value, json};

use super::AlertPayload;
use super::chat::ChatText;
use super::post::{Target, check_chat_url, origin, post_with_retries};

/// A Slack incoming webhook.
#[derive(Clone)]
pub struct SlackChannel {
    url: String,
    timeout: Duration,
}

impl std::fmt::Debug for SlackChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackChannel")
            .field("url", &format!("{}/<secret>", origin(&self.url)))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl SlackChannel {
    /// A channel posting to `url`: `https://`, or `http://` to a loopback
    /// address only.
    pub fn new(url: &str, timeout: Duration) -> Result<SlackChannel, String> {
        check_chat_url(url)?;
        Ok(SlackChannel {
            url: url.to_owned(),
            timeout,
        })
    }

    /// Sends `alert` with the shared retry policy. Slack answers 200 `ok`,
    /// or a 4xx naming what is wrong (`no_service`, `invalid_payload`).
    pub async fn deliver(&self, client: &reqwest::Client, alert: &AlertPayload) -> Result<(), String> {
        let body = slack_body(alert).to_string();
        let shown = format!("Slack webhook {}", origin(&self.url));
        let target = Target {
            url: &self.url,
            shown: &shown,
            timeout: self.timeout,
            alert_id: &alert.id,
        };
        post_with_retries(client, &target, |request, _| {
            request.header("content-type", "application/json").body(body.clone())
        })
        .await
        .map(|_| ())
    }
}

/// The message: `text` (what notifications and old clients show) and the
/// same facts laid out as blocks, in Slack's `mrkdwn`.
fn slack_body(alert: &AlertPayload) -> Value {
    let text = ChatText::new(alert);
    let mut facts = format!("*{}*", escape(&text.headline));
    for line in &text.lines {
        facts.push('\n');
        facts.push_str(&escape(line));
    }
    let mut blocks = vec![json!({"type": "section", "text": {"type": "mrkdwn", "text": facts}})];
    if let Some(link) = &text.link {
        // A dead-man alert is about the job, not a run.
        let what = if alert.run.is_some() { "run" } else { "job" };
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": format!("<{}|Open the {what} in the console>", escape(link))},
        }));
    }
    json!({"text": text.headline, "blocks": blocks})
}

/// Escapes the three characters `mrkdwn` gives meaning to (`&`, `<`, `>`),
/// so an error message cannot turn into a link or a mention.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::chat::tests::failed_alert;

    #[test]
    fn the_body_has_a_plain_text_and_escaped_blocks() {
        let body = slack_body(&failed_alert());
        assert_eq!(
            body,
            json!({
                "text": "sandcron: job nightly failed",
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn", "text":
                        "*sandcron: job nightly failed*\n\
                         run 01JRUN (failed) · attempt 2 · schedule · worker w1\n\
                         error: exit status 2: &lt;disk&gt; &amp; more\n\
                         3 similar alerts were suppressed since the last one"}},
                    {"type": "section", "text": {"type": "mrkdwn", "text":
                        "<https://cron.example.com/#/runs/01JRUN|Open the run in the console>"}},
                ],
            })
        );
    }

    #[test]
    fn a_dead_man_alert_links_the_job_and_escapes_its_reason() {
        let body = slack_body(&crate::alert::chat::tests::no_success_alert());
        assert_eq!(body["text"], "sandcron: job nightly has not succeeded within 10 min");
        let facts = body["blocks"][0]["text"]["text"].as_str().expect("facts");
        assert!(
            facts.contains("why: no live worker can run it: no live worker matches the selector &lt;zone&gt;=eu"),
            "{facts}"
        );
        assert_eq!(
            body["blocks"][1]["text"]["text"],
            "<https://cron.example.com/#/jobs/nightly|Open the job in the console>"
        );
    }

    #[test]
    fn without_a_console_url_there_is_no_link_block() {
        let mut alert = failed_alert();
        alert.url = None;
        let body = slack_body(&alert);
        assert_eq!(body["blocks"].as_array().map(Vec::len), Some(1), "{body}");
    }

    #[test]
    fn the_url_is_checked_and_never_shown() {
        let err =
            SlackChannel::new("http://hooks.slack.com/services/T/B/x", Duration::from_secs(5)).expect_err("plain http");
        assert!(err.contains("https://"), "{err}");
        let channel =
            SlackChannel::new("https://hooks.slack.com/services/T/B/x", Duration::from_secs(5)).expect("valid");
        let debug = format!("{channel:?}");
        assert!(
            debug.contains("https://hooks.slack.com") && !debug.contains("/T/B/x"),
            "{debug}"
        );
    }
}
