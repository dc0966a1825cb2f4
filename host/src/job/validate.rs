//! Job validation in one place: the schedule and zone parse and fire, names,
//! sizes and ranges are within [`limits`], the kind's own fields are sound,
//! integrations (completion, dependents, broadcast, alerts — whose rule is
//! checked in `alerts`) agree with each other, and dependents form no cycle. Every error names the JSON path of
//! the field it is about.

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::cronexpr::{CronError, Schedule, ScheduleError};
use crate::ids::JobName;

use super::egress::{EgressTarget, NetworkLimits};
use super::{HTTP_METHODS, HttpJob, JobError, JobKind, JobSpec};

/// Upper bounds that keep one job's spec small enough for any store.
pub mod limits {
    pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
    pub const MAX_ARGS: usize = 1024;
    pub const MAX_ARG_BYTES: usize = 16 * 1024;
    pub const MAX_ENV: usize = 256;
    pub const MAX_ENV_VALUE_BYTES: usize = 16 * 1024;
    pub const MAX_DESCRIPTION_CHARS: usize = 2048;
    pub const MAX_SELECTOR: usize = 32;
    pub const MAX_TIMEOUT_S: u64 = 7 * 24 * 3600;
    pub const MAX_OUTPUT_KB: u64 = 64 * 1024;
    pub const MAX_MEMORY_MB: u64 = 4096;
    pub const MAX_RETRIES: u32 = 100;
    pub const MAX_BACKOFF_S: u64 = 24 * 3600;
    pub const MAX_CATCHUP_WINDOW_S: u64 = 31 * 24 * 3600;
    pub const MAX_URL_BYTES: usize = 8 * 1024;
    pub const MAX_HEADERS: usize = 64;
    pub const MAX_HEADER_VALUE_BYTES: usize = 8 * 1024;
    pub const MAX_HTTP_BODY_BYTES: usize = 256 * 1024;
    pub const MAX_DEPENDENTS: usize = 32;
    pub const MAX_ALERT_CHANNELS: usize = 16;
    /// `alerts.no_success_within_s`: at least 10 s (masters check every
    /// few seconds), at most a year.
    pub const MIN_NO_SUCCESS_WITHIN_S: u64 = 10;
    pub const MAX_NO_SUCCESS_WITHIN_S: u64 = 365 * 24 * 3600;
    pub const MAX_EGRESS_ENTRIES: usize = 64;
    pub const MAX_SECRETS: usize = 64;
    pub const MAX_EGRESS_REQUESTS: u64 = 100_000;
    pub const MAX_EGRESS_CONCURRENT: u64 = 256;
    pub const MAX_EGRESS_BYTES: u64 = 64 << 30;
    pub const MAX_EGRESS_TIMEOUT_S: u64 = 3600;
}

impl JobSpec {
    /// Checks everything a store cannot: the schedule and zone parse and fire,
    /// names and sizes are within limits. Returns the parsed schedule.
    pub fn validate(&self, now: Timestamp) -> Result<Schedule, JobError> {
        let schedule = Schedule::new(&self.schedule, &self.timezone).map_err(|err| match err {
            ScheduleError::Cron(cron) => JobError::new("schedule", describe_cron_error(&cron)),
            other @ ScheduleError::UnknownTimeZone(_) => JobError::new("timezone", other.to_string()),
        })?;
        if schedule.next_after(now).is_none() {
            return Err(JobError::new(
                "schedule",
                format!("{:?} never fires after {now}", self.schedule),
            ));
        }
        match &self.kind {
            JobKind::Wasm(wasm) => {
                if wasm.args.len() > limits::MAX_ARGS {
                    return Err(JobError::new(
                        "kind.wasm.args",
                        format!("at most {} arguments are allowed", limits::MAX_ARGS),
                    ));
                }
                for (index, arg) in wasm.args.iter().enumerate() {
                    check_text(&format!("kind.wasm.args[{index}]"), arg, limits::MAX_ARG_BYTES)?;
                }
                check_env("kind.wasm.env", &wasm.env)?;
                if wasm.dirs.len() > 16 {
                    return Err(JobError::new("kind.wasm.dirs", "at most 16 directories are allowed"));
                }
                for (index, dir) in wasm.dirs.iter().enumerate() {
                    let field = format!("kind.wasm.dirs[{index}]");
                    check_label(&format!("{field}.grant"), &dir.grant)?;
                    let path_ok = dir.guest_path.starts_with('/')
                        && dir.guest_path.len() <= 256
                        && !dir.guest_path.split('/').any(|part| part == ".." || part == ".")
                        && !dir.guest_path.contains('\0');
                    if !path_ok {
                        return Err(JobError::new(
                            format!("{field}.guest_path"),
                            "must be an absolute path without '.' or '..' components",
                        ));
                    }
                }
                let limits_ = &wasm.limits;
                if limits_.fuel == 0 {
                    return Err(JobError::new("kind.wasm.limits.fuel", "must be at least 1"));
                }
                check_range(
                    "kind.wasm.limits.memory_mb",
                    limits_.memory_mb,
                    1,
                    limits::MAX_MEMORY_MB,
                )?;
                check_range(
                    "kind.wasm.limits.timeout_s",
                    limits_.timeout_s,
                    1,
                    limits::MAX_TIMEOUT_S,
                )?;
                check_range(
                    "kind.wasm.limits.output_kb",
                    limits_.output_kb,
                    1,
                    limits::MAX_OUTPUT_KB,
                )?;
                check_egress(&wasm.egress, &wasm.network)?;
                check_config(&wasm.config)?;
                for alias in self.secrets.keys() {
                    if wasm.config.contains_key(alias) {
                        return Err(JobError::new(
                            format!("secrets.{alias}"),
                            "is also a key of kind.wasm.config; a wasi:config key names one value",
                        ));
                    }
                    if wasm.secrets_as_env && wasm.env.contains_key(alias) {
                        return Err(JobError::new(
                            format!("secrets.{alias}"),
                            "is also set in kind.wasm.env (secrets_as_env puts secrets there)",
                        ));
                    }
                }
            }
            JobKind::Shell(shell) => {
                if shell.command.trim().is_empty() {
                    return Err(JobError::new("kind.shell.command", "must not be empty"));
                }
                check_text("kind.shell.command", &shell.command, limits::MAX_COMMAND_BYTES)?;
                check_env("kind.shell.env", &shell.env)?;
                if let Some(alias) = self.secrets.keys().find(|alias| shell.env.contains_key(*alias)) {
                    return Err(JobError::new(
                        format!("secrets.{alias}"),
                        "is also set in kind.shell.env; a variable holds one value",
                    ));
                }
                check_range("kind.shell.timeout_s", shell.timeout_s, 1, limits::MAX_TIMEOUT_S)?;
                check_range("kind.shell.output_kb", shell.output_kb, 1, limits::MAX_OUTPUT_KB)?;
            }
            JobKind::Http(http) => {
                check_http(http)?;
                if let Some(alias) = self.secrets.keys().next() {
                    return Err(JobError::new(
                        format!("secrets.{alias}"),
                        "HTTP jobs name secrets where they are used: ${secret:NAME} in kind.http.headers and kind.http.body",
                    ));
                }
            }
        }
        self.check_secrets()?;
        self.validate_integrations()?;
        if self.retry.max > limits::MAX_RETRIES {
            return Err(JobError::new(
                "retry.max",
                format!("must be at most {}", limits::MAX_RETRIES),
            ));
        }
        check_range("retry.backoff_s", self.retry.backoff_s, 1, limits::MAX_BACKOFF_S)?;
        check_range(
            "retry.max_backoff_s",
            self.retry.max_backoff_s,
            self.retry.backoff_s,
            limits::MAX_BACKOFF_S,
        )?;
        check_range(
            "catchup.window_s",
            self.catchup.window_s,
            0,
            limits::MAX_CATCHUP_WINDOW_S,
        )?;
        if self.selector.len() > limits::MAX_SELECTOR {
            return Err(JobError::new(
                "selector",
                format!("at most {} labels are allowed", limits::MAX_SELECTOR),
            ));
        }
        for (key, value) in &self.selector {
            check_label(&format!("selector.{key}"), key)?;
            check_label(&format!("selector.{key}"), value)?;
        }
        if let Some(days) = self.retention_days {
            check_range("retention_days", u64::from(days), 1, 3650)?;
        }
        if self.description.chars().count() > limits::MAX_DESCRIPTION_CHARS {
            return Err(JobError::new(
                "description",
                format!("must be at most {} characters", limits::MAX_DESCRIPTION_CHARS),
            ));
        }
        Ok(schedule)
    }
}

impl JobSpec {
    /// The names a job gives its secrets. Whether the secrets exist needs
    /// the store: the API checks it when the job is saved.
    fn check_secrets(&self) -> Result<(), JobError> {
        if self.secrets.len() > limits::MAX_SECRETS {
            return Err(JobError::new(
                "secrets",
                format!("at most {} secrets are allowed", limits::MAX_SECRETS),
            ));
        }
        for alias in self.secrets.keys() {
            check_variable_name(&format!("secrets.{alias}"), alias)?;
        }
        Ok(())
    }

    /// Completion, dependents, broadcast and alerts. Whether the dependents
    /// exist and form no cycle needs the other jobs: see [`check_dependency_cycles`].
    fn validate_integrations(&self) -> Result<(), JobError> {
        if let Some(timeout) = self.result_timeout_s {
            if self.completion.is_sync() {
                return Err(JobError::new(
                    "result_timeout_s",
                    "applies only to jobs with completion \"async\"",
                ));
            }
            check_range("result_timeout_s", timeout, 1, limits::MAX_TIMEOUT_S)?;
        }
        for (field, names) in [("on_success", &self.on_success), ("on_failure", &self.on_failure)] {
            if names.len() > limits::MAX_DEPENDENTS {
                return Err(JobError::new(
                    field,
                    format!("at most {} jobs are allowed", limits::MAX_DEPENDENTS),
                ));
            }
            for (index, name) in names.iter().enumerate() {
                if names[..index].contains(name) {
                    return Err(JobError::new(
                        format!("{field}[{index}]"),
                        format!("{name} is listed twice"),
                    ));
                }
            }
        }
        if self.broadcast && self.dependents().next().is_some() {
            let field = if self.on_success.is_empty() {
                "on_failure"
            } else {
                "on_success"
            };
            return Err(JobError::new(
                field,
                "a broadcast job cannot start dependent jobs: each of its shards ends on its own",
            ));
        }
        if self.broadcast && !self.completion.is_sync() {
            return Err(JobError::new(
                "completion",
                "a broadcast job cannot use async completion",
            ));
        }
        if let Some(alerts) = &self.alerts {
            super::alerts::check(alerts, self)?;
        }
        Ok(())
    }
}

fn check_http(http: &HttpJob) -> Result<(), JobError> {
    if !HTTP_METHODS.contains(&http.method.as_str()) {
        return Err(JobError::new(
            "kind.http.method",
            format!("{:?} is not one of {}", http.method, HTTP_METHODS.join(", ")),
        ));
    }
    if http.url.len() > limits::MAX_URL_BYTES {
        return Err(JobError::new(
            "kind.http.url",
            format!("must be at most {} bytes", limits::MAX_URL_BYTES),
        ));
    }
    let url = reqwest::Url::parse(&http.url).map_err(|err| JobError::new("kind.http.url", format!("{err}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(JobError::new(
            "kind.http.url",
            format!("the scheme must be http or https, not {:?}", url.scheme()),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(JobError::new("kind.http.url", "must name a host"));
    }
    if http.headers.len() > limits::MAX_HEADERS {
        return Err(JobError::new(
            "kind.http.headers",
            format!("at most {} headers are allowed", limits::MAX_HEADERS),
        ));
    }
    for (name, value) in &http.headers {
        let field = format!("kind.http.headers.{name}");
        crate::secret::references(value).map_err(|err| JobError::new(field.clone(), err.to_string()))?;
        let token = !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(JobError::new(
                field,
                "header names are letters, digits and !#$%&'*+-.^_`|~",
            ));
        }
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("x-sandcron-") {
            return Err(JobError::new(
                field,
                "the X-Sandcron- prefix is reserved for headers sandcron sets",
            ));
        }
        if matches!(
            lower.as_str(),
            "host" | "content-length" | "transfer-encoding" | "connection" | "upgrade" | "te" | "trailer"
        ) {
            return Err(JobError::new(field, "this header is set by the HTTP client"));
        }
        if value.len() > limits::MAX_HEADER_VALUE_BYTES {
            return Err(JobError::new(
                field,
                format!("must be at most {} bytes", limits::MAX_HEADER_VALUE_BYTES),
            ));
        }
        if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(JobError::new(
                field,
                "header values must not contain control characters",
            ));
        }
    }
    if let Some(body) = &http.body {
        check_text("kind.http.body", body, limits::MAX_HTTP_BODY_BYTES)?;
        crate::secret::references(body).map_err(|err| JobError::new("kind.http.body", err.to_string()))?;
    }
    check_range("kind.http.timeout_s", http.timeout_s, 1, limits::MAX_TIMEOUT_S)?;
    check_range("kind.http.output_kb", http.output_kb, 1, limits::MAX_OUTPUT_KB)?;
    for (index, status) in http.expect_status.iter().enumerate() {
        check_range(
            &format!("kind.http.expect_status[{index}]"),
            u64::from(*status),
            100,
            599,
        )?;
    }
    Ok(())
}

/// Checks that `name`'s dependents exist and that adding its edges to the
/// stored jobs' makes no cycle. `others` are the other jobs' dependents (the
/// stored version of `name` itself is replaced by `spec`).
pub fn check_dependency_cycles<'a>(
    name: &JobName,
    spec: &JobSpec,
    others: impl IntoIterator<Item = (&'a JobName, Vec<JobName>)>,
) -> Result<(), JobError> {
    let mut graph: BTreeMap<JobName, Vec<JobName>> = others
        .into_iter()
        .filter(|(other, _)| *other != name)
        .map(|(other, dependents)| (other.clone(), dependents))
        .collect();
    for (field, names) in [("on_success", &spec.on_success), ("on_failure", &spec.on_failure)] {
        for (index, dependent) in names.iter().enumerate() {
            if dependent != name && !graph.contains_key(dependent) {
                return Err(JobError::new(
                    format!("{field}[{index}]"),
                    format!("there is no job named {dependent}"),
                ));
            }
        }
    }
    graph.insert(name.clone(), spec.dependents().cloned().collect());
    // A cycle through `name` is a path from one of its dependents back to it.
    let mut stack: Vec<(JobName, Vec<JobName>)> = vec![(name.clone(), vec![name.clone()])];
    let mut seen = std::collections::BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in graph.get(&at).into_iter().flatten() {
            let mut longer = path.clone();
            longer.push(next.clone());
            if next == name {
                let field = if spec.on_success.contains(&longer[1]) {
                    "on_success"
                } else {
                    "on_failure"
                };
                let cycle: Vec<String> = longer.iter().map(JobName::to_string).collect();
                return Err(JobError::new(
                    field,
                    format!("dependencies would form a cycle: {}", cycle.join(" -> ")),
                ));
            }
            if seen.insert(next.clone()) {
                stack.push((next.clone(), longer));
            }
        }
    }
    Ok(())
}

/// A WASM job's `egress` entries parse (each error names its entry) and
/// its network limits are in range.
fn check_egress(egress: &[String], network: &NetworkLimits) -> Result<(), JobError> {
    if egress.len() > limits::MAX_EGRESS_ENTRIES {
        return Err(JobError::new(
            "kind.wasm.egress",
            format!("at most {} entries are allowed", limits::MAX_EGRESS_ENTRIES),
        ));
    }
    for (index, entry) in egress.iter().enumerate() {
        entry
            .parse::<EgressTarget>()
            .map_err(|reason| JobError::new(format!("kind.wasm.egress[{index}]"), format!("{entry:?}: {reason}")))?;
    }
    let checks = [
        ("requests", u64::from(network.requests), limits::MAX_EGRESS_REQUESTS),
        (
            "concurrent",
            u64::from(network.concurrent),
            limits::MAX_EGRESS_CONCURRENT,
        ),
        ("bytes_out", network.bytes_out, limits::MAX_EGRESS_BYTES),
        ("bytes_in", network.bytes_in, limits::MAX_EGRESS_BYTES),
        (
            "connect_timeout_s",
            network.connect_timeout_s,
            limits::MAX_EGRESS_TIMEOUT_S,
        ),
        (
            "first_byte_timeout_s",
            network.first_byte_timeout_s,
            limits::MAX_EGRESS_TIMEOUT_S,
        ),
    ];
    for (name, value, max) in checks {
        check_range(&format!("kind.wasm.network.{name}"), value, 1, max)?;
    }
    Ok(())
}

fn describe_cron_error(err: &CronError) -> String {
    err.to_string()
}

fn check_text(field: &str, text: &str, max_bytes: usize) -> Result<(), JobError> {
    if text.len() > max_bytes {
        return Err(JobError::new(field, format!("must be at most {max_bytes} bytes")));
    }
    if text.contains('\0') {
        return Err(JobError::new(field, "must not contain NUL characters"));
    }
    Ok(())
}

fn check_env(field: &str, env: &BTreeMap<String, String>) -> Result<(), JobError> {
    if env.len() > limits::MAX_ENV {
        return Err(JobError::new(
            field,
            format!("at most {} variables are allowed", limits::MAX_ENV),
        ));
    }
    for (key, value) in env {
        let path = format!("{field}.{key}");
        check_variable_name(&path, key)?;
        check_text(&path, value, limits::MAX_ENV_VALUE_BYTES)?;
    }
    Ok(())
}

/// An environment variable's name (also the name a job gives a secret).
fn check_variable_name(field: &str, key: &str) -> Result<(), JobError> {
    let valid_name = key
        .chars()
        .enumerate()
        .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
    if key.is_empty() || key.len() > 128 || !valid_name {
        return Err(JobError::new(
            field,
            "variable names are letters, digits and '_', not starting with a digit",
        ));
    }
    if key.starts_with("SANDCRON_") {
        return Err(JobError::new(
            field,
            "the SANDCRON_ prefix is reserved for variables sandcron sets",
        ));
    }
    Ok(())
}

/// A WASM job's `config`: bounded, keys printable and not the run context's.
fn check_config(config: &BTreeMap<String, String>) -> Result<(), JobError> {
    if config.len() > limits::MAX_ENV {
        return Err(JobError::new(
            "kind.wasm.config",
            format!("at most {} keys are allowed", limits::MAX_ENV),
        ));
    }
    for (key, value) in config {
        let field = format!("kind.wasm.config.{key}");
        if key.is_empty() || key.len() > 128 || key.chars().any(char::is_control) {
            return Err(JobError::new(
                field,
                "keys are 1 to 128 characters without control characters",
            ));
        }
        if key.starts_with("SANDCRON_") {
            return Err(JobError::new(
                field,
                "the SANDCRON_ prefix is reserved for the run context",
            ));
        }
        check_text(&field, value, limits::MAX_ENV_VALUE_BYTES)?;
    }
    Ok(())
}

pub(super) fn check_range(field: &str, value: u64, min: u64, max: u64) -> Result<(), JobError> {
    if value < min || value > max {
        return Err(JobError::new(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ));
    }
    Ok(())
}

pub(super) fn check_label(field: &str, text: &str) -> Result<(), JobError> {
    let valid = !text.is_empty()
        && text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if !valid {
        return Err(JobError::new(
            field,
            format!("label {text:?} must be 1 to 63 characters of letters, digits, '.', '_', '-' and '/'"),
        ));
    }
    Ok(())
}
