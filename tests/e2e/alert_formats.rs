//! Chat alert formats end to end against `sandcron dev`: a Slack and a
//! Feishu channel (the local receiver standing in for both) get their own
//! JSON for a failed run, Feishu's signed; bad chat URLs are refused by
//! name at start-up; and `/metrics` carries a job's last success and the
//! live workers.

use std::time::Duration;

use sandcron_tests::receiver::Receiver;
use sandcron_tests::{Dev, wait_for};
use serde_json::json;

use crate::{BIN, dev, run_now, shell_job};

const WAIT: Duration = Duration::from_secs(30);

/// `sandcron dev` with `config` (TOML) as its configuration file.
fn dev_with_config(config: &str) -> (Dev, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sandcron.toml");
    std::fs::write(&path, config).expect("config");
    (Dev::start(BIN, &["--config", path.to_str().expect("utf-8")]), dir)
}

async fn metrics_text(dev: &Dev) -> String {
    sandcron_tests::http_client()
        .build()
        .unwrap()
        .get(format!("{}/metrics", dev.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn slack_and_feishu_channels_get_their_own_json_and_feishu_is_signed() {
    let chats = Receiver::start().await;
    let secret = "feishu-bot-secret";
    let config = format!(
        r#"
[alerts]
console_url = "https://cron.example.com"
[alerts.channels.team]
slack = {{ url = "{slack}" }}
[alerts.channels.lark]
feishu = {{ url = "{feishu}", secret = "{secret}" }}
"#,
        slack = chats.url("/services/T0/B0/slack-token"),
        feishu = chats.url("/open-apis/bot/v2/hook/feishu-token"),
    );
    let (dev, _dir) = dev_with_config(&config);
    let api = dev.api();
    let mut job = shell_job("@yearly", "exit 2");
    job["alerts"] = json!({"on": ["failed"], "channels": ["team", "lark"]});
    api.put("/api/v1/jobs/nightly", &job).await.expect(201);
    let channels = api.get("/api/v1/alerts/channels").await.expect(200);
    assert_eq!(channels, json!({"channels": ["lark", "team"]}));

    let run = run_now(&api, "nightly", WAIT).await;
    assert_eq!(run["status"], "failed", "{run}");
    let run_id = run["run_id"].as_str().unwrap();
    let link = format!("https://cron.example.com/#/runs/{run_id}");

    let slack = wait_for("the Slack message", WAIT, || async {
        chats.requests_to("/services/T0/B0/slack-token").into_iter().next()
    })
    .await;
    assert_eq!(slack.method, "POST");
    assert_eq!(slack.header("content-type"), Some("application/json"));
    let message = slack.json();
    assert_eq!(message["text"], "sandcron: job nightly failed", "{message}");
    let blocks = message["blocks"].as_array().expect("blocks");
    assert_eq!(blocks.len(), 2, "{message}");
    assert_eq!(blocks[0]["type"], "section");
    assert_eq!(blocks[0]["text"]["type"], "mrkdwn");
    let facts = blocks[0]["text"]["text"].as_str().unwrap();
    assert!(facts.starts_with("*sandcron: job nightly failed*\n"), "{facts}");
    assert!(
        facts.contains(&format!("run {run_id} (failed) · attempt 1 · manual")),
        "{facts}"
    );
    assert_eq!(
        blocks[1]["text"]["text"],
        format!("<{link}|Open the run in the console>"),
        "{message}"
    );

    let feishu = wait_for("the Feishu message", WAIT, || async {
        chats
            .requests_to("/open-apis/bot/v2/hook/feishu-token")
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(feishu.header("content-type"), Some("application/json"));
    let message = feishu.json();
    let fields: Vec<&str> = message.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(fields, ["content", "msg_type", "sign", "timestamp"], "{message}");
    assert_eq!(message["msg_type"], "text");
    let text = message["content"]["text"].as_str().unwrap();
    assert!(text.starts_with("sandcron: job nightly failed\n"), "{text}");
    assert!(text.contains(run_id), "{text}");
    assert!(text.ends_with(&link), "{text}");
    // Feishu's scheme: the timestamp in seconds, as a string, and the sign
    // over it; a receiver checks both.
    let timestamp: i64 = message["timestamp"].as_str().expect("a string").parse().unwrap();
    let now = jiff::Timestamp::now().as_second();
    assert!((now - 120..=now).contains(&timestamp), "{timestamp} vs {now}");
    assert_eq!(message["sign"], sandcron::alert::feishu_sign(secret, timestamp));

    let metrics = wait_for("both deliveries to be counted", WAIT, || async {
        let text = metrics_text(&dev).await;
        text.contains("sandcron_alerts_total{outcome=\"sent\"} 2")
            .then_some(text)
    })
    .await;
    assert!(
        metrics.contains("sandcron_alerts_total{outcome=\"failed\"} 0"),
        "{metrics}"
    );
    let received = chats.requests();
    assert_eq!(received.len(), 2, "one message per channel: {received:?}");
}

#[tokio::test]
async fn chat_channels_with_unsafe_urls_or_empty_secrets_are_refused_by_name() {
    let cases = [
        (
            r#"slack = { url = "http://hooks.slack.com/services/T0/B0/x" }"#,
            "alerts.channels.chat.slack.url",
            "must be https://",
        ),
        (
            r#"feishu = { url = "https://open.feishu.cn/open-apis/bot/v2/hook/x", secret = "" }"#,
            "alerts.channels.chat.feishu.secret",
            "empty",
        ),
        (
            r#"feishu = { url = "ftp://open.feishu.cn/x" }"#,
            "alerts.channels.chat.feishu.url",
            "https://",
        ),
        (
            r#"slack = { url = "https://hooks.slack.com/x" }
email = { smtp_host = "localhost", from = "a@example.com", to = ["b@example.com"] }"#,
            "alerts.channels.chat",
            "exactly one of webhook, email, slack or feishu",
        ),
    ];
    for (channel, key, problem) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, format!("[alerts.channels.chat]\n{channel}\n")).unwrap();
        let output = std::process::Command::new(BIN)
            .args(["dev", "--no-demo", "--listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .arg("--data")
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{channel}: {stderr}");
        assert!(stderr.contains(key) && stderr.contains(problem), "{channel}: {stderr}");
    }
}

#[tokio::test]
async fn metrics_show_a_jobs_last_success_and_the_live_workers() {
    let dev = dev(&[]);
    let api = dev.api();
    api.put("/api/v1/jobs/fresh", &shell_job("@yearly", "true"))
        .await
        .expect(201);
    let before = jiff::Timestamp::now().as_millisecond() as f64 / 1e3;
    let run = run_now(&api, "fresh", WAIT).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let metrics = metrics_text(&dev).await;
    let at: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("sandcron_job_last_success_timestamp_seconds{job=\"fresh\"} "))
        .unwrap_or_else(|| panic!("no last-success series for fresh: {metrics}"))
        .parse()
        .unwrap();
    let after = jiff::Timestamp::now().as_millisecond() as f64 / 1e3;
    assert!(before - 1.0 <= at && at <= after, "{before} <= {at} <= {after}");
    assert!(
        metrics.contains("# TYPE sandcron_job_last_success_timestamp_seconds gauge"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|line| line == "sandcron_live_workers 1"),
        "{metrics}"
    );
    // A deleted job's series goes with it.
    api.delete("/api/v1/jobs/fresh").await.expect(204);
    wait_for("the deleted job's series to go", WAIT, || async {
        (!metrics_text(&dev).await.contains("job=\"fresh\"")).then_some(())
    })
    .await;
}
