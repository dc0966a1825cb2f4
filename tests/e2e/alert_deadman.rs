//! Dead-man alerts and overrun warnings end to end, against the test
//! receiver standing in for a webhook:
//!
//! - `sandcron dev` (embedded stores): a job whose runs always fail, with
//!   `no_success_within_s = 10`, raises exactly one dead-man alert per
//!   period, saying why; a job that succeeds raises none;
//! - a cluster of two masters and no worker on real etcd and MongoDB: the
//!   alert is raised although no worker is alive, once per period although
//!   two masters watch;
//! - a run that lasts longer than `expected_duration_s` raises one overrun
//!   warning naming the run, and still ends normally.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use sandcron_tests::receiver::{Received, Receiver};
use sandcron_tests::{Dev, wait_for};
use serde_json::{Value, json};

use crate::cluster::Stores;
use crate::{BIN, shell_job};

/// The dead-man period of the tests: the shortest allowed.
const PERIOD_S: u64 = 10;

const SECRET: &str = "a-webhook-secret-for-dead-man-alerts";

/// `[alerts]` with one signed webhook channel, `hook`, to `receiver`.
fn alerts_config(receiver: &Receiver) -> String {
    format!(
        "[alerts]\nconsole_url = \"https://cron.example.com\"\n[alerts.channels.hook]\nwebhook = {{ url = \"{}\", secret = \"{SECRET}\" }}\n",
        receiver.url("/alerts")
    )
}

/// `sandcron dev` with `config` (TOML) as its configuration file.
fn dev_with_config(config: &str) -> (Dev, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sandcron.toml");
    std::fs::write(&path, config).expect("config");
    (Dev::start(BIN, &["--config", path.to_str().expect("utf-8")]), dir)
}

/// The alerts of `event` for `job` the receiver got, oldest first.
fn alerts_of(receiver: &Receiver, event: &str, job: &str) -> Vec<(Received, Value)> {
    receiver
        .requests_to("/alerts")
        .into_iter()
        .map(|request| {
            let body = request.json();
            (request, body)
        })
        .filter(|(_, body)| body["event"] == event && body["job"] == job)
        .collect()
}

fn timestamp(value: &Value) -> Timestamp {
    value
        .as_str()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("not a timestamp: {value}"))
}

/// Waits until `job` has `count` dead-man alerts, then a few seconds more
/// for any duplicate to arrive; returns them all (on a slow machine, the
/// next period's may be among them).
async fn dead_man_alerts(receiver: &Receiver, job: &str, count: usize) -> Vec<Value> {
    let within = Duration::from_secs(PERIOD_S * (count as u64 + 2) + 20);
    wait_for(&format!("{count} dead-man alerts of {job}"), within, || async {
        (alerts_of(receiver, "no_success", job).len() >= count).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let alerts = alerts_of(receiver, "no_success", job);
    for (request, body) in &alerts {
        // Signed like every webhook alert.
        let stamp: i64 = request
            .header("x-sandcron-timestamp")
            .and_then(|t| t.parse().ok())
            .expect("timestamp header");
        assert_eq!(
            request.header("x-sandcron-signature"),
            Some(sandcron::alert::signature(SECRET, stamp, &request.body).as_str()),
            "{body}"
        );
        assert_eq!(request.header("x-sandcron-delivery"), body["id"].as_str());
    }
    alerts.into_iter().map(|(_, body)| body).collect()
}

/// Checks one dead-man alert per period: periods 1, 2, … each once, in
/// order, each sent once that many periods have passed since the count
/// started (and before the next period).
fn assert_one_per_period(job: &str, alerts: &[Value]) {
    let periods: Vec<u64> = alerts
        .iter()
        .map(|alert| alert["no_success"]["periods"].as_u64().expect("periods"))
        .collect();
    let expected: Vec<u64> = (1..=alerts.len() as u64).collect();
    assert_eq!(periods, expected, "{job}: one alert per period: {alerts:#?}");
    for alert in alerts {
        let facts = &alert["no_success"];
        assert_eq!(alert["rule"], "job");
        assert_eq!(facts["period_s"], PERIOD_S);
        let since = timestamp(&facts["since"]);
        let sent = timestamp(&alert["sent_at"]);
        let periods = facts["periods"].as_u64().unwrap();
        let due = since.as_second() + (periods * PERIOD_S) as i64;
        assert!(
            (due..due + PERIOD_S as i64).contains(&sent.as_second()),
            "{job}: period {periods} alerted at {sent}, due at {due}: {alert}"
        );
        // No run: no run fields.
        assert!(
            alert.get("run_id").is_none() && alert.get("status").is_none(),
            "{alert}"
        );
    }
}

#[tokio::test]
async fn dev_raises_one_dead_man_alert_per_period_for_a_job_that_never_succeeds() {
    let hooks = Receiver::start().await;
    let (dev, _dir) = dev_with_config(&alerts_config(&hooks));
    let api = dev.api();
    let rule = json!({"no_success_within_s": PERIOD_S, "channels": ["hook"]});
    let mut failing = shell_job("*/2 * * * * *", "exit 3");
    failing["alerts"] = rule.clone();
    let mut healthy = shell_job("*/2 * * * * *", "true");
    healthy["alerts"] = rule.clone();
    let created = Instant::now();
    api.put("/api/v1/jobs/failing", &failing).await.expect(201);
    api.put("/api/v1/jobs/healthy", &healthy).await.expect(201);

    let alerts = dead_man_alerts(&hooks, "failing", 2).await;
    assert!(
        created.elapsed() >= Duration::from_secs(2 * PERIOD_S),
        "two periods cannot have passed yet: {alerts:#?}"
    );
    assert_one_per_period("failing", &alerts);
    let first = &alerts[0];
    assert_eq!(first["no_success"]["last_success"], Value::Null, "{first}");
    assert_eq!(first["url"], "https://cron.example.com/#/jobs/failing");
    // The worker is alive and owns the job: the reason is its last run.
    let reason = first["no_success"]["reason"].as_str().expect("reason");
    assert!(
        reason.contains("owns it; its last run")
            && reason.contains("failed at")
            && reason.contains("exited with status 3"),
        "{reason}"
    );
    // A job that keeps succeeding never alerts.
    assert!(alerts_of(&hooks, "no_success", "healthy").is_empty());
    assert!(api.runs("healthy").await.iter().any(|run| run["status"] == "succeeded"));

    // The rule is stored and shown as written.
    let view = api.get("/api/v1/jobs/failing").await.expect(200);
    assert_eq!(view["alerts"]["no_success_within_s"], PERIOD_S, "{view}");
    // Bad periods are refused by name.
    let mut short = failing.clone();
    short["alerts"]["no_success_within_s"] = json!(5);
    let error = api.put("/api/v1/jobs/short", &short).await.expect(422);
    assert_eq!(error["error"]["field"], "alerts.no_success_within_s", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("between 10 (10 seconds) and 31536000 (1 year), got 5")),
        "{error}"
    );
}

#[tokio::test]
async fn two_masters_without_a_worker_raise_the_dead_man_alert_once_per_period() {
    let hooks = Receiver::start().await;
    let stores = Stores::start();
    let env = stores.env("deadman");
    let config = alerts_config(&hooks);
    let mut first = env.master("deadman-m1", &config);
    let mut second = env.master("deadman-m2", &config);
    let api = first.api();
    // The second master sees the same cluster: no live worker.
    assert_eq!(second.api().get("/api/v1/workers").await.expect(200), json!([]));
    let mut job = shell_job("* * * * * *", "true");
    job["alerts"] = json!({"no_success_within_s": PERIOD_S, "on": ["failed"], "channels": ["hook"]});
    api.put("/api/v1/jobs/orphan", &job).await.expect(201);

    dead_man_alerts(&hooks, "orphan", 2).await;
    // Both masters were watching all along; stopped, they raise no more.
    assert!(first.proc.is_running() && second.proc.is_running());
    assert_eq!(first.proc.stop(), Some(0));
    assert_eq!(second.proc.stop(), Some(0));
    let alerts: Vec<Value> = alerts_of(&hooks, "no_success", "orphan")
        .into_iter()
        .map(|(_, body)| body)
        .collect();
    assert!(alerts.len() >= 2, "{alerts:#?}");
    assert_one_per_period("orphan", &alerts);
    for alert in &alerts {
        assert_eq!(
            alert["no_success"]["reason"], "no live worker can run it: no live workers",
            "{alert}"
        );
        assert_eq!(alert["no_success"]["last_success"], Value::Null);
    }
    // Each period was raised by one master: the other lost the mark, and
    // said nothing.
    let raised = |log: String| log.matches("no successful run within the period").count();
    let (by_first, by_second) = (raised(first.proc.log_text()), raised(second.proc.log_text()));
    assert_eq!(
        by_first + by_second,
        alerts.len(),
        "raised {by_first} + {by_second} times"
    );
}

#[tokio::test]
async fn a_run_past_its_expected_duration_warns_once_and_still_succeeds() {
    let hooks = Receiver::start().await;
    let (dev, _dir) = dev_with_config(&alerts_config(&hooks));
    let api = dev.api();
    let mut job = shell_job("@yearly", "sleep 4; echo finished");
    job["alerts"] = json!({"expected_duration_s": 1, "channels": ["hook"]});
    api.put("/api/v1/jobs/slowpoke", &job).await.expect(201);
    let started = api.post("/api/v1/jobs/slowpoke/run").await.expect(202);
    let run_id = started["run_id"].as_str().expect("run id").to_owned();

    let warning = wait_for("the overrun warning", Duration::from_secs(30), || async {
        alerts_of(&hooks, "overrun", "slowpoke").into_iter().next()
    })
    .await
    .1;
    assert_eq!(warning["run_id"], run_id.as_str(), "{warning}");
    assert_eq!(warning["status"], "running", "{warning}");
    assert_eq!(warning["overrun"]["expected_s"], 1);
    assert!(
        warning["overrun"]["running_s"].as_u64().is_some_and(|s| s >= 1),
        "{warning}"
    );
    assert_eq!(warning["url"], format!("https://cron.example.com/#/runs/{run_id}"));
    // The run was not stopped: it ends as it would have.
    let ended = wait_for(&format!("run {run_id} to end"), Duration::from_secs(30), || async {
        let run = api.get(&format!("/api/v1/runs/{run_id}")).await.expect(200);
        (run["status"] != "running").then_some(run)
    })
    .await;
    assert_eq!(ended["status"], "succeeded", "{ended}");
    assert!(
        timestamp(&warning["sent_at"]) < timestamp(&ended["ended_at"]),
        "warned while it ran: {warning} {ended}"
    );
    wait_for("the run's output", Duration::from_secs(10), || async {
        (crate::lines(&api, &ended).await == ["finished"]).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(alerts_of(&hooks, "overrun", "slowpoke").len(), 1, "one warning per run");
    // A run that finishes in time does not warn.
    let mut quick = shell_job("@yearly", "true");
    quick["alerts"] = json!({"expected_duration_s": 5, "channels": ["hook"]});
    api.put("/api/v1/jobs/quick", &quick).await.expect(201);
    let run = crate::run_now(&api, "quick", Duration::from_secs(30)).await;
    assert_eq!(run["status"], "succeeded");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(alerts_of(&hooks, "overrun", "quick").is_empty());
}
