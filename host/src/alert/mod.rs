//! Alerts: when runs go wrong, tell someone — by webhook (JSON, signed with
//! HMAC-SHA256), in a Slack or Feishu chat, or by email (SMTP with TLS);
//! every channel retries with backoff.
//!
//! The [`Alerter`] task is fed through [`AlertHandle`] (non-blocking: a full
//! queue drops the alert and counts it, it never holds up scheduling) with
//! [`AlertInput`]s: the worker hands it every terminal run record it
//! writes, and the overrun timer of each run of a job with
//! `alerts.expected_duration_s`; a master hands it the dead-man alerts it
//! finds due (`deadman` decides, `launch/deadman.rs` watches). The task
//! applies the rules (`rules`, pure), then delivers each alert to its
//! channels, retrying with backoff. What an alert says is in `payload`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{Semaphore, mpsc};

use crate::job::Job;
use crate::run::RunRecord;

mod chat;
mod deadman;
mod email;
mod feishu;
mod payload;
mod post;
mod rules;
mod slack;
mod webhook;

pub use deadman::{DeadmanDecision, DeadmanFacts, DeadmanMark, decide};
pub use email::{EmailChannel, SmtpTls};
pub use feishu::{FeishuChannel, feishu_sign};
pub use payload::{AlertPayload, NoSuccessFacts, OverrunFacts, RateFacts, RunFacts};
pub use rules::{Alert, AlertRules, GlobalRule};
pub use slack::SlackChannel;
pub use webhook::{WebhookChannel, signature};

/// Where alerts go, by name.
#[derive(Debug, Clone)]
pub enum Channel {
    Webhook(WebhookChannel),
    Email(EmailChannel),
    Slack(SlackChannel),
    Feishu(FeishuChannel),
}

impl Channel {
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Webhook(_) => "webhook",
            Channel::Email(_) => "email",
            Channel::Slack(_) => "slack",
            Channel::Feishu(_) => "feishu",
        }
    }
}

/// The validated `[alerts]` configuration.
#[derive(Debug, Clone, Default)]
pub struct AlertsConfig {
    pub channels: BTreeMap<String, Channel>,
    pub rules: Vec<GlobalRule>,
    /// The same alert (job, rule, status) at most once per interval.
    pub min_interval: Duration,
    /// The console's public address, for links in alerts.
    pub console_url: Option<String>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct AlertStats {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub suppressed: AtomicU64,
    pub dropped: AtomicU64,
}

/// What the alert task is handed.
#[derive(Debug)]
pub enum AlertInput {
    /// A run of the job ended with this record: the rules decide.
    Run { job: Arc<Job>, record: RunRecord },
    /// A run of the job that started at `started_at` is still running
    /// past its `expected_duration_s` (sent by the run's overrun timer).
    Overrun {
        job: Arc<Job>,
        record: RunRecord,
        started_at: Timestamp,
    },
    /// The job has not succeeded within its `no_success_within_s`, as a
    /// master decided and won the right to say.
    NoSuccess { job: Arc<Job>, facts: NoSuccessFacts },
}

/// Where workers and masters hand the alert task its inputs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AlertHandle {
    tx: mpsc::Sender<AlertInput>,
    stats: Arc<AlertStats>,
    /// Whether global rules exist (then every job's runs matter).
    global_rules: bool,
}

impl AlertHandle {
    /// Queues `record` for the alert rules; never waits. Only ended runs of
    /// jobs some rule covers travel (successes too: they count in failure
    /// rates).
    pub fn notify(&self, job: &Arc<Job>, record: &RunRecord) {
        if !record.status.is_terminal() || (job.spec.alerts.is_none() && !self.global_rules) {
            return;
        }
        self.send(AlertInput::Run {
            job: job.clone(),
            record: record.clone(),
        });
    }

    /// Starts the overrun timer of a run that has just started (`record`
    /// has its `started_at`): when the job's rule sets
    /// `expected_duration_s`, the run's alert is queued if it is still
    /// running then. The timer stops when the returned guard is dropped
    /// (when the run ends). `None`, at no cost, for any other job.
    pub fn overrun_timer(&self, job: &Arc<Job>, record: &RunRecord) -> Option<OverrunTimer> {
        let expected = job.spec.alerts.as_ref()?.expected_duration()?;
        let started_at = record.started_at?;
        let waited = Timestamp::now().duration_since(started_at).unsigned_abs();
        // A weak sender: a pending timer does not keep the alert task alive.
        let tx = self.tx.downgrade();
        let stats = self.stats.clone();
        let input = AlertInput::Overrun {
            job: job.clone(),
            record: record.clone(),
            started_at,
        };
        let timer = tokio::spawn(async move {
            tokio::time::sleep(expected.saturating_sub(waited)).await;
            let sent = tx.upgrade().is_some_and(|tx| tx.try_send(input).is_ok());
            if !sent {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        });
        Some(OverrunTimer(timer.abort_handle()))
    }

    /// Queues a dead-man alert a master decided is due; never waits.
    pub fn no_success(&self, job: &Arc<Job>, facts: NoSuccessFacts) {
        self.send(AlertInput::NoSuccess {
            job: job.clone(),
            facts,
        });
    }

    fn send(&self, input: AlertInput) {
        if self.tx.try_send(input).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A run's overrun timer; dropping it (the run ended) stops it.
#[derive(Debug)]
pub struct OverrunTimer(tokio::task::AbortHandle);

impl Drop for OverrunTimer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How many alerts may wait for the rules; beyond it they are dropped (and
/// counted) rather than slowing the worker.
const QUEUE: usize = 4096;

/// How many deliveries run at once.
const CONCURRENT_DELIVERIES: usize = 16;

/// Deliveries still in progress at shutdown get this long.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The alert task: rules plus delivery.
pub struct Alerter {
    config: AlertsConfig,
    rx: mpsc::Receiver<AlertInput>,
    stats: Arc<AlertStats>,
}

impl Alerter {
    /// The task and the handle that feeds it.
    pub fn new(config: AlertsConfig) -> (Alerter, AlertHandle) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(AlertStats::default());
        let global_rules = !config.rules.is_empty();
        (
            Alerter {
                config,
                rx,
                stats: stats.clone(),
            },
            AlertHandle {
                tx,
                stats,
                global_rules,
            },
        )
    }

    pub fn stats(&self) -> Arc<AlertStats> {
        self.stats.clone()
    }

    /// Runs until every handle is dropped (the worker has ended and its
    /// last records are in), then gives deliveries in flight a few seconds.
    pub async fn run(mut self) -> anyhow::Result<()> {
        let mut rules = AlertRules::new(
            self.config.rules.clone(),
            self.config.min_interval,
            self.config.console_url.clone(),
        );
        let channels = Arc::new(self.config.channels.clone());
        let deliveries = Arc::new(Semaphore::new(CONCURRENT_DELIVERIES));
        let mut tasks = tokio::task::JoinSet::new();
        let client = post::client()?;
        loop {
            let Some(input) = self.rx.recv().await else {
                break;
            };
            while tasks.try_join_next().is_some() {}
            let before = rules.suppressed_total();
            let now = Timestamp::now();
            let (job, alerts) = match input {
                AlertInput::Run { job, record } => {
                    let alerts = rules.observe(&job, &record, now);
                    (job, alerts)
                }
                AlertInput::Overrun {
                    job,
                    record,
                    started_at,
                } => {
                    let alerts = rules.overrun(&job, &record, started_at, now).into_iter().collect();
                    (job, alerts)
                }
                AlertInput::NoSuccess { job, facts } => {
                    let alerts = rules.no_success(&job, facts, now).into_iter().collect();
                    (job, alerts)
                }
            };
            self.stats
                .suppressed
                .fetch_add(rules.suppressed_total().saturating_sub(before), Ordering::Relaxed);
            for alert in alerts {
                let run = alert.payload.run.as_ref().map(|run| run.run_id.as_str());
                tracing::info!(job = %job.name, run, event = alert.payload.event, channels = ?alert.channels, "alert: {}", alert.payload.summary());
                for name in &alert.channels {
                    let Some(channel) = channels.get(name).cloned() else {
                        tracing::warn!(job = %job.name, channel = %name, "alert channel is not configured in this process's [alerts]");
                        self.stats.failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let payload = alert.payload.clone();
                    let stats = self.stats.clone();
                    let client = client.clone();
                    let name = name.clone();
                    let Ok(permit) = deliveries.clone().acquire_owned().await else {
                        break;
                    };
                    tasks.spawn(async move {
                        let _permit = permit;
                        let delivered = match &channel {
                            Channel::Webhook(hook) => hook.deliver(&client, &payload).await,
                            Channel::Email(mail) => mail.deliver(&payload).await,
                            Channel::Slack(slack) => slack.deliver(&client, &payload).await,
                            Channel::Feishu(feishu) => feishu.deliver(&client, &payload).await,
                        };
                        match delivered {
                            Ok(()) => {
                                stats.sent.fetch_add(1, Ordering::Relaxed);
                                tracing::debug!(channel = %name, alert = %payload.id, "alert delivered");
                            }
                            Err(err) => {
                                stats.failed.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(channel = %name, alert = %payload.id, %err, "alert not delivered");
                            }
                        }
                    });
                }
            }
        }
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async { while tasks.join_next().await.is_some() {} });
        if drained.await.is_err() {
            tracing::warn!(
                left = tasks.len(),
                "alert deliveries still in progress at shutdown were abandoned"
            );
        }
        Ok(())
    }
}

/// Delivery attempts per alert and channel.
pub(crate) const ATTEMPTS: u32 = 5;

/// The wait before attempt `n` (n ≥ 1): 1, 2, 4, 8 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(5))
}
