//! Shared measurement helpers: sample statistics (median, p99, min–max),
//! ratios, and the markdown report every section prints into.

use std::fmt::Write as _;

/// Summary of a set of samples (any unit; the caller knows which).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub count: usize,
    pub median: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
}

impl Stats {
    /// Nearest-rank percentiles over the samples; `None` when there are none.
    pub fn of(samples: &[f64]) -> Option<Stats> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Stats {
            count: sorted.len(),
            median: percentile(&sorted, 0.5),
            p99: percentile(&sorted, 0.99),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
        })
    }

    /// Durations as milliseconds.
    pub fn of_durations(samples: &[std::time::Duration]) -> Option<Stats> {
        let ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        Self::of(&ms)
    }
}

/// The `p` quantile (0..=1) of sorted samples by nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A quantity for a table cell, in the unit that reads best.
pub fn ms(value: f64) -> String {
    if !value.is_finite() {
        "–".to_owned()
    } else if value < 0.1 {
        format!("{:.1} µs", value * 1e3)
    } else if value < 10.0 {
        format!("{value:.2} ms")
    } else if value < 10_000.0 {
        format!("{value:.0} ms")
    } else {
        format!("{:.1} s", value / 1e3)
    }
}

/// A rate for a table cell.
pub fn rate(per_second: f64) -> String {
    if !per_second.is_finite() {
        "–".to_owned()
    } else if per_second >= 10_000.0 {
        format!("{:.1}k/s", per_second / 1e3)
    } else {
        format!("{per_second:.0}/s")
    }
}

/// Mebibytes from KiB.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// `ours / theirs` as `1.23×`, or `–` when either is missing.
/// The cells of a per-run row: label, runs, median, p99, then one ratio of
/// the median to each of `against` (medians of the comparisons).
pub fn run_row(label: &str, stats: Option<Stats>, runs: usize, against: &[f64]) -> Vec<String> {
    let median = stats.map_or(f64::NAN, |s| s.median);
    let mut row = vec![
        label.to_owned(),
        runs.to_string(),
        stats.map_or("–".into(), |s| ms(s.median)),
        stats.map_or("–".into(), |s| ms(s.p99)),
    ];
    row.extend(against.iter().map(|theirs| ratio(median, *theirs)));
    row
}

pub fn ratio(ours: f64, theirs: f64) -> String {
    if ours.is_finite() && theirs.is_finite() && theirs != 0.0 {
        let r = ours / theirs;
        // Two significant digits below 0.1 (a µs figure against a ms one).
        let digits = if r > 0.0 && r < 0.1 {
            (-r.log10()).floor() as usize + 2
        } else {
            2
        };
        format!("{r:.digits$}×")
    } else {
        "–".to_owned()
    }
}

/// "median (p99; min–max)" in milliseconds.
pub fn spread(stats: Option<Stats>) -> String {
    match stats {
        Some(s) => format!("{} (p99 {}; {}–{})", ms(s.median), ms(s.p99), ms(s.min), ms(s.max)),
        None => "–".to_owned(),
    }
}

/// The report: everything printed is also kept, to be written to a file.
#[derive(Debug, Default)]
pub struct Report {
    text: String,
}

impl Report {
    /// Prints a line (and keeps it).
    pub fn line(&mut self, line: impl AsRef<str>) {
        let line = line.as_ref();
        #[allow(clippy::print_stdout)]
        {
            println!("{line}");
        }
        let _ = writeln!(self.text, "{line}");
    }

    /// A `##` heading with a blank line after it.
    pub fn heading(&mut self, title: &str) {
        self.line(format!("\n## {title}\n"));
    }

    /// A paragraph followed by a blank line.
    pub fn note(&mut self, text: impl AsRef<str>) {
        self.line(format!("{}\n", text.as_ref()));
    }

    /// A markdown table; the first column is left-aligned, the rest right.
    pub fn table(&mut self, header: &[&str], rows: &[Vec<String>]) {
        self.line(format!("| {} |", header.join(" | ")));
        let aligns: Vec<&str> = (0..header.len()).map(|i| if i == 0 { "---" } else { "---:" }).collect();
        self.line(format!("| {} |", aligns.join(" | ")));
        for row in rows {
            self.line(format!("| {} |", row.join(" | ")));
        }
        self.line("");
    }

    /// Keeps text already printed (by a child process) without printing it.
    pub fn keep(&mut self, text: &str) {
        self.text.push_str(text);
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let stats = Stats::of(&samples).unwrap_or_else(|| unreachable!());
        assert_eq!(stats.median, 51.0);
        assert_eq!(stats.p99, 99.0);
        assert_eq!((stats.min, stats.max, stats.count), (1.0, 100.0, 100));
        assert!(Stats::of(&[]).is_none());
    }

    #[test]
    fn ratio_of_missing_is_a_dash() {
        assert_eq!(ratio(2.0, 1.0), "2.00×");
        assert_eq!(ratio(f64::NAN, 1.0), "–");
        assert_eq!(ratio(1.0, 0.0), "–");
        assert_eq!(ratio(7.4, 6910.0), "0.0011×");
    }
}
