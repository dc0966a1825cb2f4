//! Reporting an async run's outcome (feature `client`): what the service an
//! async job called uses to tell sandcron how the work ended.
//!
//! A job with `completion = "async"` hands its work to a service (an HTTP
//! job calls it; a shell or WASM job can pass its variables on). The run
//! stays `running` until the service reports, with the run's token, to the
//! run's result URL — both given to the job (`X-Sandcron-Run-Token` and
//! `X-Sandcron-Result-Url` headers for HTTP jobs, `SANDCRON_RUN_TOKEN` and
//! `SANDCRON_RESULT_URL` otherwise). This is that report, blocking, over
//! HTTP or HTTPS (the system's certificate roots).
//!
//! ```no_run
//! use sandcron_guest::client::{Report, report_result};
//!
//! // Received from sandcron with the request that started the work:
//! let result_url = "https://cron.example.com/api/v1/runs/01kakx3v7r8bq2m4v5w6x7y8z9/result";
//! let token = "scr_…";
//! // … the long work …
//! let report = Report::succeeded()
//!     .with_result_json(r#"{"rows": 42}"#)
//!     .with_output("exported 42 rows\n");
//! report_result(result_url, token, &report)?;
//! # Ok::<(), sandcron_guest::client::ReportError>(())
//! ```
//!
//! The same with curl:
//!
//! ```text
//! curl -X POST "$SANDCRON_RESULT_URL" -H "X-Sandcron-Run-Token: $SANDCRON_RUN_TOKEN" \
//!      -H 'Content-Type: application/json' -d '{"status": "succeeded", "result": {"rows": 42}}'
//! ```

use std::fmt;
use std::time::Duration;

use crate::json;

/// The outcome of an async run, as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    succeeded: bool,
    exit_code: Option<i32>,
    error: Option<String>,
    result_json: Option<String>,
    output: Option<String>,
}

impl Report {
    /// The work succeeded.
    pub fn succeeded() -> Self {
        Self {
            succeeded: true,
            exit_code: None,
            error: None,
            result_json: None,
            output: None,
        }
    }

    /// The work failed, for `reason` (stored as the run's error).
    pub fn failed(reason: impl Into<String>) -> Self {
        Self {
            succeeded: false,
            error: Some(reason.into()),
            ..Self::succeeded()
        }
    }

    /// An exit code to record with the run.
    pub fn with_exit_code(mut self, code: i32) -> Self {
        self.exit_code = Some(code);
        self
    }

    /// A JSON value stored as the run's result (at most 64 KiB); checked
    /// when the report is sent.
    pub fn with_result_json(mut self, json: impl Into<String>) -> Self {
        self.result_json = Some(json.into());
        self
    }

    /// Text appended to the run's output (at most 1 MiB).
    pub fn with_output(mut self, text: impl Into<String>) -> Self {
        self.output = Some(text.into());
        self
    }

    /// The request body sandcron expects.
    pub fn to_json(&self) -> Result<String, ReportError> {
        let mut out = String::from("{\"status\":");
        json::write_string(&mut out, if self.succeeded { "succeeded" } else { "failed" });
        if let Some(code) = self.exit_code {
            out.push_str(&format!(",\"exit_code\":{code}"));
        }
        if let Some(error) = &self.error {
            out.push_str(",\"error\":");
            json::write_string(&mut out, error);
        }
        if let Some(result) = &self.result_json {
            json::validate(result).map_err(|err| ReportError::InvalidResult(err.to_string()))?;
            out.push_str(",\"result\":");
            out.push_str(result);
        }
        if let Some(output) = &self.output {
            out.push_str(",\"output\":");
            json::write_string(&mut out, output);
        }
        out.push('}');
        Ok(out)
    }
}

/// Why a report did not go through.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReportError {
    /// The result is not valid JSON.
    InvalidResult(String),
    /// sandcron could not be reached (network, TLS, timeout): worth retrying.
    Unreachable(String),
    /// sandcron answered with an error: `status` and its message. 401/403:
    /// wrong or missing token; 404: the run is not running any more (it
    /// timed out, was killed, or ended); 409: already reported.
    Refused {
        /// The HTTP status.
        status: u16,
        /// sandcron's error body.
        message: String,
    },
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportError::InvalidResult(err) => write!(f, "the result is not valid JSON: {err}"),
            ReportError::Unreachable(err) => write!(f, "cannot reach sandcron: {err}"),
            ReportError::Refused { status, message } => write!(f, "sandcron refused the report ({status}): {message}"),
        }
    }
}

impl std::error::Error for ReportError {}

/// Reports `report` for the run whose result URL is `result_url`, with the
/// run's `token`. Waits at most 30 seconds.
pub fn report_result(result_url: &str, token: &str, report: &Report) -> Result<(), ReportError> {
    let body = report.to_json()?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(result_url)
        .header("content-type", "application/json")
        .header("x-sandcron-run-token", token)
        .send(body.as_bytes())
        .map_err(|err| ReportError::Unreachable(err.to_string()))?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(());
    }
    let message = response
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|err| format!("(unreadable answer: {err})"));
    Err(ReportError::Refused { status, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_encode_as_sandcron_expects() {
        let report = Report::succeeded()
            .with_result_json(r#"{"rows": 42}"#)
            .with_output("line \"one\"\n");
        assert_eq!(
            report.to_json().unwrap(),
            r#"{"status":"succeeded","result":{"rows": 42},"output":"line \"one\"\n"}"#
        );
        let failed = Report::failed("quota exceeded").with_exit_code(3);
        assert_eq!(
            failed.to_json().unwrap(),
            r#"{"status":"failed","exit_code":3,"error":"quota exceeded"}"#
        );
        let bad = Report::succeeded().with_result_json("{nope");
        assert!(matches!(bad.to_json(), Err(ReportError::InvalidResult(_))));
    }

    #[test]
    fn an_unreachable_server_is_an_error_worth_retrying() {
        // Port 1 on loopback: nothing listens there.
        let err = report_result("http://127.0.0.1:1/api/v1/runs/x/result", "scr_x", &Report::succeeded()).unwrap_err();
        assert!(matches!(err, ReportError::Unreachable(_)), "{err}");
    }
}
