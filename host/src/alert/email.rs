//! Email alerts over SMTP (lettre): STARTTLS (default), implicit TLS, or —
//! only when configured so explicitly — plain text; optional login.

use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::payload::seconds;
use super::{ATTEMPTS, AlertPayload, backoff};

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Connect in plain text, then STARTTLS; refuse to go on without it (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption at all: only for a relay on the same host or network.
    None,
}

/// An email channel.
#[derive(Clone)]
pub struct EmailChannel {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM of extra CA certificates to trust (a private CA).
    pub ca_pem: Option<Vec<u8>>,
    pub from: String,
    pub to: Vec<String>,
    pub timeout: Duration,
}

impl std::fmt::Debug for EmailChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailChannel")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<secret>"))
            .field("from", &self.from)
            .field("to", &self.to)
            .finish()
    }
}

impl EmailChannel {
    /// Checks the addresses and TLS settings once, at start-up.
    pub fn validate(&self) -> Result<(), String> {
        self.from
            .parse::<Mailbox>()
            .map_err(|err| format!("from {:?}: {err}", self.from))?;
        if self.to.is_empty() {
            return Err("to: name at least one recipient".into());
        }
        for to in &self.to {
            to.parse::<Mailbox>().map_err(|err| format!("to {to:?}: {err}"))?;
        }
        self.transport().map(|_| ())
    }

    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
        crate::tls::install_crypto_provider();
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(self.host.as_str())
            .port(self.port)
            .timeout(Some(self.timeout));
        let parameters = || -> Result<TlsParameters, String> {
            let mut parameters = TlsParameters::builder(self.host.clone());
            if let Some(pem) = &self.ca_pem {
                let certificate = Certificate::from_pem(pem).map_err(|err| format!("ca_file: {err}"))?;
                parameters = parameters.add_root_certificate(certificate);
            }
            parameters.build_rustls().map_err(|err| format!("TLS settings: {err}"))
        };
        builder = match self.tls {
            SmtpTls::Starttls => builder.tls(Tls::Required(parameters()?)),
            SmtpTls::Tls => builder.tls(Tls::Wrapper(parameters()?)),
            SmtpTls::None => builder.tls(Tls::None),
        };
        if let (Some(username), Some(password)) = (&self.username, &self.password) {
            builder = builder.credentials(Credentials::new(username.clone(), password.clone()));
        }
        Ok(builder.build())
    }

    fn message(&self, alert: &AlertPayload) -> Result<Message, String> {
        let mut builder = Message::builder()
            .from(self.from.parse::<Mailbox>().map_err(|err| err.to_string())?)
            .subject(format!("[sandcron] {}", alert.summary()))
            // The alert's id, the same on every attempt: a message resent
            // because its acknowledgement was lost is recognisably the same.
            .message_id(Some(format!("<{}@sandcron>", alert.id)))
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            builder = builder.to(to.parse::<Mailbox>().map_err(|err| err.to_string())?);
        }
        builder.body(text_body(alert)).map_err(|err| err.to_string())
    }

    /// Sends `alert` to every recipient, retrying failures with backoff.
    pub async fn deliver(&self, alert: &AlertPayload) -> Result<(), String> {
        let transport = self.transport()?;
        let message = self.message(alert)?;
        let mut last_error = String::new();
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                tokio::time::sleep(backoff(attempt - 1)).await;
            }
            match transport.send(message.clone()).await {
                Ok(_) => return Ok(()),
                Err(err) => {
                    last_error = format!("SMTP {}:{}: {err}", self.host, self.port);
                    // A permanent refusal (5xx) will not change on retry.
                    if err.is_permanent() {
                        return Err(last_error);
                    }
                }
            }
            tracing::debug!(alert = %alert.id, attempt, error = %last_error, "email attempt failed");
        }
        Err(format!("{last_error} (after {ATTEMPTS} attempts)"))
    }
}

/// The plain-text body of an alert email.
fn text_body(alert: &AlertPayload) -> String {
    let mut body = format!("{}\n\n", alert.summary());
    let mut line = |name: &str, value: &str| body.push_str(&format!("{name:<10} {value}\n"));
    line("job", &alert.job);
    line("event", alert.event);
    if let Some(run) = &alert.run {
        line("status", run.status.as_str());
        line("run", &run.run_id);
        line("tick", &run.tick.to_string());
        line("trigger", &run.trigger);
        line("attempt", &run.attempt.to_string());
        line("worker", &run.worker);
    }
    if let Some(overrun) = &alert.overrun {
        line("started", &overrun.started_at.to_string());
        line("running", &seconds(overrun.running_s));
        line(
            "expected",
            &format!("at most {} (the run is not stopped)", seconds(overrun.expected_s)),
        );
    }
    if let Some(silence) = &alert.no_success {
        line("period", &seconds(silence.period_s));
        line(
            "last ok",
            &silence.last_success.map_or_else(
                || "never (as far as the run history goes)".to_owned(),
                |at| at.to_string(),
            ),
        );
        line("since", &silence.since.to_string());
        line("periods", &silence.periods.to_string());
        line("why", &silence.reason);
    }
    if let Some(error) = &alert.error {
        line("error", error);
    }
    line("rule", &alert.rule);
    if alert.suppressed > 0 {
        line(
            "suppressed",
            &format!("{} similar alerts since the last one", alert.suppressed),
        );
    }
    if let Some(url) = &alert.url {
        line("console", url);
    }
    line("alert id", &alert.id);
    body
}
