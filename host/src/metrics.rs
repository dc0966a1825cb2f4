//! Process metrics and their Prometheus text rendering.
//!
//! A handful of atomics, written by the worker and the API and read by
//! `/metrics`; no registry crate is needed for this few. The one per-job
//! series (last success) holds only jobs that exist: the worker forgets a
//! job's entry when the job is deleted.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;

use crate::alert::AlertStats;
use crate::ids::JobName;
use crate::logstore::sink::SinkStats;
use crate::run::{EgressLedger, EgressOutcome, RunStatus};

/// Upper bounds (seconds) of the fire-lateness histogram buckets.
const LATENESS_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

#[derive(Debug, Default)]
pub struct Metrics {
    runs_by_status: [AtomicU64; RunStatus::ALL.len()],
    lateness_buckets: [AtomicU64; LATENESS_BUCKETS.len()],
    lateness_count: AtomicU64,
    lateness_sum_micros: AtomicU64,
    pub jobs_scheduled: AtomicU64,
    pub runs_running: AtomicU64,
    pub runs_waiting_for_capacity: AtomicU64,
    /// Runs this worker offered to others, all its slots being in use.
    pub runs_offered: AtomicU64,
    /// Runs this worker took over from a worker with no free slot.
    pub runs_taken_over: AtomicU64,
    pub claims_lost: AtomicU64,
    pub http_requests: AtomicU64,
    pub http_errors: AtomicU64,
    /// WASM network calls (requests, connections, lookups) by outcome: ok,
    /// error, refused.
    egress: [AtomicU64; 3],
    /// Per job: when a run of it last succeeded on this process (Unix
    /// seconds, with milliseconds). Bounded by the jobs that exist: see
    /// [`Metrics::forget_job`].
    last_success: Mutex<BTreeMap<JobName, f64>>,
    /// Workers holding their lease, as this process last saw them;
    /// [`NOT_MEASURED`] until it looks.
    live_workers: AtomicU64,
    sink: std::sync::OnceLock<Arc<SinkStats>>,
    alerts: std::sync::OnceLock<Arc<AlertStats>>,
    audit: std::sync::OnceLock<Arc<AuditStats>>,
}

/// The audit log's figures on a process that serves the API.
#[derive(Debug, Default)]
pub struct AuditStats {
    /// Entries recorded (put in the outbox, or straight into the log store).
    pub recorded: AtomicU64,
    /// Entries this process moved from the outbox into the log store.
    pub stored: AtomicU64,
    /// Entries that could be kept nowhere (outbox full, or both stores
    /// failed): each is in the server log, at error level.
    pub dropped: AtomicU64,
    /// Entries waiting in the outbox when this process last looked.
    pub backlog: AtomicU64,
}

/// `live_workers` before anything counted them: the gauge is left out of
/// `/metrics` rather than reported as a misleading 0.
const NOT_MEASURED: u64 = u64::MAX;

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            live_workers: AtomicU64::new(NOT_MEASURED),
            ..Self::default()
        })
    }

    /// Records that a run of `job` succeeded, ending at `at`.
    pub fn job_succeeded(&self, job: &JobName, at: Timestamp) {
        let seconds = at.as_millisecond() as f64 / 1e3;
        let mut last = crate::sync::lock(&self.last_success);
        let entry = last.entry(job.clone()).or_insert(seconds);
        // Runs can end out of order (a long one after a short one).
        *entry = entry.max(seconds);
    }

    /// Drops `job`'s series (the job was deleted), so the per-job series
    /// stay as many as the jobs.
    pub fn forget_job(&self, job: &JobName) {
        crate::sync::lock(&self.last_success).remove(job);
    }

    /// Sets how many workers hold their lease (the coordination store's
    /// worker list, as this process last read it).
    pub fn set_live_workers(&self, count: usize) {
        self.live_workers
            .store(u64::try_from(count).unwrap_or(NOT_MEASURED - 1), Ordering::Relaxed);
    }

    /// Makes the sink's queue and spool figures part of `/metrics`.
    pub fn attach_sink(&self, stats: Arc<SinkStats>) {
        let _already = self.sink.set(stats);
    }

    /// Makes the alert counters part of `/metrics`.
    pub fn attach_alerts(&self, stats: Arc<AlertStats>) {
        let _already = self.alerts.set(stats);
    }

    /// Makes the audit log's figures part of `/metrics`.
    pub fn attach_audit(&self, stats: Arc<AuditStats>) {
        let _already = self.audit.set(stats);
    }

    pub fn run_ended(&self, status: RunStatus) {
        self.runs_ended(status, 1);
    }

    /// Counts `count` runs (or recorded ticks) that ended with `status`.
    pub fn runs_ended(&self, status: RunStatus, count: u64) {
        if let Some(index) = RunStatus::ALL.iter().position(|s| *s == status) {
            self.runs_by_status[index].fetch_add(count, Ordering::Relaxed);
        }
    }

    /// Counts the network calls of an ended run.
    pub fn egress_recorded(&self, ledger: &EgressLedger) {
        let totals = &ledger.totals;
        let ok = totals.calls.saturating_sub(totals.failed + totals.refused);
        for (counter, count) in self.egress.iter().zip([ok, totals.failed, totals.refused]) {
            counter.fetch_add(count, Ordering::Relaxed);
        }
    }

    /// Records how late a run started relative to its scheduled instant.
    pub fn observe_lateness(&self, seconds: f64) {
        let seconds = seconds.max(0.0);
        for (bucket, bound) in self.lateness_buckets.iter().zip(LATENESS_BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.lateness_count.fetch_add(1, Ordering::Relaxed);
        self.lateness_sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.push_str("# HELP sandcron_runs_total Runs ended on this process, by final status.\n");
        out.push_str("# TYPE sandcron_runs_total counter\n");
        for (status, count) in RunStatus::ALL.iter().zip(&self.runs_by_status) {
            if status.is_terminal() {
                let _ = writeln!(out, "sandcron_runs_total{{status=\"{status}\"}} {}", get(count));
            }
        }
        out.push_str("# HELP sandcron_fire_lateness_seconds Start of a scheduled run minus its tick.\n");
        out.push_str("# TYPE sandcron_fire_lateness_seconds histogram\n");
        for (bound, bucket) in LATENESS_BUCKETS.iter().zip(&self.lateness_buckets) {
            let _ = writeln!(
                out,
                "sandcron_fire_lateness_seconds_bucket{{le=\"{bound}\"}} {}",
                get(bucket)
            );
        }
        let count = get(&self.lateness_count);
        let _ = writeln!(out, "sandcron_fire_lateness_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "sandcron_fire_lateness_seconds_sum {}",
            get(&self.lateness_sum_micros) as f64 / 1e6
        );
        let _ = writeln!(out, "sandcron_fire_lateness_seconds_count {count}");
        out.push_str("# HELP sandcron_egress_total WASM network calls (requests, connections, lookups), by outcome.\n");
        out.push_str("# TYPE sandcron_egress_total counter\n");
        let outcomes = [EgressOutcome::Ok, EgressOutcome::Error, EgressOutcome::Refused];
        for (outcome, count) in outcomes.iter().zip(&self.egress) {
            let _ = writeln!(
                out,
                "sandcron_egress_total{{outcome=\"{}\"}} {}",
                outcome.as_str(),
                get(count)
            );
        }
        let gauges: [(&str, &str, &AtomicU64); 6] = [
            (
                "sandcron_jobs_scheduled",
                "Jobs this worker schedules.",
                &self.jobs_scheduled,
            ),
            (
                "sandcron_runs_running",
                "Runs executing on this worker.",
                &self.runs_running,
            ),
            (
                "sandcron_runs_waiting_for_capacity",
                "Claimed runs waiting for a free slot.",
                &self.runs_waiting_for_capacity,
            ),
            (
                "sandcron_runs_offered_total",
                "Runs offered to other workers because every slot here was in use.",
                &self.runs_offered,
            ),
            (
                "sandcron_runs_taken_over_total",
                "Runs taken over from a worker whose slots were all in use.",
                &self.runs_taken_over,
            ),
            (
                "sandcron_claims_lost_total",
                "Claims another worker won first.",
                &self.claims_lost,
            ),
        ];
        for (name, help, value) in gauges {
            let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}", get(value));
        }
        if let Some(heap) = crate::heap::stats() {
            let _ = writeln!(
                out,
                "# HELP sandcron_heap_in_use_bytes Heap allocated and not freed (glibc's allocator).\n\
                 # TYPE sandcron_heap_in_use_bytes gauge\nsandcron_heap_in_use_bytes {}\n\
                 # HELP sandcron_heap_free_bytes Heap freed and kept by the allocator; resident until given back.\n\
                 # TYPE sandcron_heap_free_bytes gauge\nsandcron_heap_free_bytes {}",
                heap.in_use, heap.free
            );
        }
        let live_workers = get(&self.live_workers);
        if live_workers != NOT_MEASURED {
            let _ = writeln!(
                out,
                "# HELP sandcron_live_workers Workers holding their lease in the coordination store.\n\
                 # TYPE sandcron_live_workers gauge\nsandcron_live_workers {live_workers}"
            );
        }
        let last_success = crate::sync::lock(&self.last_success).clone();
        if !last_success.is_empty() {
            out.push_str(
                "# HELP sandcron_job_last_success_timestamp_seconds When a run of the job last succeeded on this \
                 process (Unix time).\n# TYPE sandcron_job_last_success_timestamp_seconds gauge\n",
            );
            for (job, seconds) in &last_success {
                // Job names are [a-z0-9_-] (see `JobName`): nothing to escape.
                let _ = writeln!(
                    out,
                    "sandcron_job_last_success_timestamp_seconds{{job=\"{job}\"}} {seconds}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP sandcron_http_requests_total API requests served.\n# TYPE sandcron_http_requests_total counter\nsandcron_http_requests_total {}",
            get(&self.http_requests)
        );
        let _ = writeln!(
            out,
            "# HELP sandcron_http_errors_total API requests answered 5xx.\n# TYPE sandcron_http_errors_total counter\nsandcron_http_errors_total {}",
            get(&self.http_errors)
        );
        if let Some(sink) = self.sink.get() {
            let spool_lag = u64::try_from(sink.spool_lag().as_micros()).unwrap_or(u64::MAX);
            let sink_metrics: [(&str, &str, &str, u64); 8] = [
                (
                    "sandcron_sink_queue_depth",
                    "gauge",
                    "Log events waiting in the sink.",
                    get(&sink.queued),
                ),
                (
                    "sandcron_sink_written_total",
                    "counter",
                    "Log events written to the store.",
                    get(&sink.written),
                ),
                (
                    "sandcron_sink_write_errors_total",
                    "counter",
                    "Failed log-store writes.",
                    get(&sink.write_errors),
                ),
                (
                    "sandcron_sink_spool_bytes",
                    "gauge",
                    "Bytes waiting in the local spool.",
                    get(&sink.spooled_bytes),
                ),
                (
                    "sandcron_sink_spool_lag_seconds",
                    "gauge",
                    "Age of the oldest batch waiting in the local spool (0 when it is empty).",
                    spool_lag,
                ),
                (
                    "sandcron_sink_last_flush_seconds",
                    "gauge",
                    "Duration of the last batch write.",
                    get(&sink.last_flush_micros),
                ),
                (
                    "sandcron_sink_backpressure",
                    "gauge",
                    "1 while runs wait for room in the log sink (its spool's disk budget spent, or no spool).",
                    u64::from(sink.backpressure()),
                ),
                (
                    "sandcron_sink_backpressure_seconds_total",
                    "counter",
                    "Time runs spent waiting for room in the log sink, summed over runs, counted as each wait ends.",
                    get(&sink.held_micros),
                ),
            ];
            for (name, kind, help, value) in sink_metrics {
                let value = if name.ends_with("_seconds") || name.ends_with("_seconds_total") {
                    value as f64 / 1e6
                } else {
                    value as f64
                };
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
            }
            let _ = writeln!(
                out,
                "# HELP sandcron_sink_spooled_batches_total Log batches written to the local spool, by why: the log \
                 store was down, or behind.\n# TYPE sandcron_sink_spooled_batches_total counter\n\
                 sandcron_sink_spooled_batches_total{{reason=\"down\"}} {}\n\
                 sandcron_sink_spooled_batches_total{{reason=\"behind\"}} {}",
                get(&sink.spooled_down),
                get(&sink.spooled_behind),
            );
        }
        if let Some(alerts) = self.alerts.get() {
            let _ = writeln!(
                out,
                "# HELP sandcron_alerts_total Alert deliveries, by outcome: sent, failed (after retries), \
                 suppressed (rate limit), dropped (queue full).\n# TYPE sandcron_alerts_total counter"
            );
            for (outcome, counter) in [
                ("sent", &alerts.sent),
                ("failed", &alerts.failed),
                ("suppressed", &alerts.suppressed),
                ("dropped", &alerts.dropped),
            ] {
                let _ = writeln!(out, "sandcron_alerts_total{{outcome=\"{outcome}\"}} {}", get(counter));
            }
        }
        if let Some(audit) = self.audit.get() {
            let audit_metrics: [(&str, &str, &str, &AtomicU64); 4] = [
                (
                    "sandcron_audit_recorded_total",
                    "counter",
                    "Audit entries recorded by this process.",
                    &audit.recorded,
                ),
                (
                    "sandcron_audit_stored_total",
                    "counter",
                    "Audit entries this process moved into the log store.",
                    &audit.stored,
                ),
                (
                    "sandcron_audit_dropped_total",
                    "counter",
                    "Audit entries that could be kept nowhere (each is in the server log).",
                    &audit.dropped,
                ),
                (
                    "sandcron_audit_backlog",
                    "gauge",
                    "Audit entries waiting for the log store.",
                    &audit.backlog,
                ),
            ];
            for (name, kind, help, value) in audit_metrics {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}", get(value));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_lands_in_cumulative_buckets() {
        let metrics = Metrics::new();
        metrics.observe_lateness(0.003);
        metrics.observe_lateness(2.0);
        metrics.run_ended(RunStatus::Killed);
        let text = metrics.render();
        assert!(
            text.contains("sandcron_fire_lateness_seconds_bucket{le=\"0.0025\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("sandcron_fire_lateness_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sandcron_fire_lateness_seconds_bucket{le=\"5\"} 2"),
            "{text}"
        );
        assert!(text.contains("sandcron_fire_lateness_seconds_count 2"), "{text}");
        assert!(text.contains("sandcron_runs_total{status=\"killed\"} 1"), "{text}");
        assert!(!text.contains("status=\"running\""), "running is not a final status");
    }

    #[test]
    fn the_heap_gauges_are_the_allocators_figures_where_it_has_them() {
        let text = Metrics::new().render();
        let sample = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok())
        };
        match crate::heap::stats() {
            Some(heap) => {
                // This test's own allocations keep the heap in use above zero.
                assert!(heap.in_use > 0);
                assert!(sample("sandcron_heap_in_use_bytes").is_some_and(|v| v > 0), "{text}");
                assert!(sample("sandcron_heap_free_bytes").is_some(), "{text}");
            }
            None => assert!(!text.contains("sandcron_heap_"), "{text}"),
        }
    }

    #[test]
    fn last_success_is_per_job_keeps_the_latest_and_forgets_deleted_jobs() {
        let metrics = Metrics::new();
        let at = |ms: i64| Timestamp::from_millisecond(ms).expect("timestamp");
        let nightly = JobName::new("nightly").expect("name");
        let hourly = JobName::new("hourly").expect("name");
        assert!(
            !metrics.render().contains("sandcron_job_last_success"),
            "no series before a success"
        );
        metrics.job_succeeded(&nightly, at(1_800_000_000_250));
        metrics.job_succeeded(&nightly, at(1_799_999_000_000));
        metrics.job_succeeded(&hourly, at(1_800_000_100_000));
        let text = metrics.render();
        assert!(
            text.contains("sandcron_job_last_success_timestamp_seconds{job=\"nightly\"} 1800000000.25\n"),
            "a run that ended earlier does not move it back: {text}"
        );
        assert!(
            text.contains("sandcron_job_last_success_timestamp_seconds{job=\"hourly\"} 1800000100\n"),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE sandcron_job_last_success_timestamp_seconds gauge")
                .count(),
            1
        );
        metrics.forget_job(&nightly);
        let text = metrics.render();
        assert!(!text.contains("job=\"nightly\""), "{text}");
        assert!(text.contains("job=\"hourly\""), "{text}");
    }

    #[test]
    fn live_workers_appear_once_counted() {
        let metrics = Metrics::new();
        assert!(
            !metrics.render().contains("sandcron_live_workers"),
            "not a misleading 0"
        );
        metrics.set_live_workers(3);
        assert!(
            metrics
                .render()
                .contains("# TYPE sandcron_live_workers gauge\nsandcron_live_workers 3\n")
        );
        metrics.set_live_workers(0);
        assert!(metrics.render().contains("\nsandcron_live_workers 0\n"));
    }

    #[test]
    fn the_sink_reports_its_spool_lag_backpressure_and_why_it_spooled() {
        let metrics = Metrics::new();
        let sink = Arc::new(SinkStats::default());
        metrics.attach_sink(Arc::clone(&sink));
        let text = metrics.render();
        assert!(text.contains("\nsandcron_sink_spool_lag_seconds 0\n"), "{text}");
        assert!(text.contains("\nsandcron_sink_backpressure 0\n"), "{text}");
        let an_hour_ago = Timestamp::now().as_microsecond() - 3_600_000_000;
        sink.spool_oldest_micros
            .store(u64::try_from(an_hour_ago).expect("after 1970"), Ordering::Relaxed);
        sink.held.store(2, Ordering::Relaxed);
        sink.held_micros.store(1_500_000, Ordering::Relaxed);
        sink.spooled_down.store(3, Ordering::Relaxed);
        sink.spooled_behind.store(4, Ordering::Relaxed);
        let text = metrics.render();
        let lag: f64 = text
            .lines()
            .find_map(|line| line.strip_prefix("sandcron_sink_spool_lag_seconds "))
            .and_then(|value| value.parse().ok())
            .expect("a lag sample");
        assert!((3600.0..3700.0).contains(&lag), "{text}");
        assert!(text.contains("\nsandcron_sink_backpressure 1\n"), "{text}");
        assert!(
            text.contains("\nsandcron_sink_backpressure_seconds_total 1.5\n"),
            "{text}"
        );
        assert!(
            text.contains("sandcron_sink_spooled_batches_total{reason=\"down\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("sandcron_sink_spooled_batches_total{reason=\"behind\"} 4\n"),
            "{text}"
        );
    }
}
