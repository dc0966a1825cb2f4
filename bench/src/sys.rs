//! What the benchmark reads from the system: a process's resident memory and
//! CPU time from /proc, the machine description and load, and where the
//! release binary is.

use std::path::{Path, PathBuf};
use std::process::Command;

use sandcron_tests::workspace_root;

/// The release `sandcron` binary `just bench` builds first
/// (`$SANDCRON_BENCH_BIN` overrides it).
pub fn sandcron_bin() -> PathBuf {
    match std::env::var_os("SANDCRON_BENCH_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => workspace_root().join("target/release/sandcron"),
    }
}

/// Resident set size of a process (`"self"` or a pid), KiB; 0 if unknown.
pub fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// User plus system CPU seconds of a process (`"self"` or a pid).
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the command: state(0) ppid(1) … utime(11) stime(12), in clock
    // ticks, which Linux fixes at 100 per second (USER_HZ).
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

/// The 1, 5 and 15 minute load averages, as `uptime` prints them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line: cores, CPU model, memory, kernel.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown CPU", |(_, model)| model.trim())
        .to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!(
        "{} cores (`nproc`), {model}, {mem_gib:.1} GiB RAM, Linux {kernel}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    )
}

/// Size of a file in bytes (0 when missing).
pub fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// glibc's view of this process's heap, MiB: (in use, freed but kept).
/// RSS minus the first is what the allocator holds on to (freed chunks
/// between live ones, per-thread arenas) rather than what sandcron keeps.
pub fn heap_mib() -> (f64, f64) {
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    sandcron::heap::stats().map_or((f64::NAN, f64::NAN), |heap| (mib(heap.in_use), mib(heap.free)))
}

/// CPU seconds the whole machine has spent busy (every core, anything but
/// idle and I/O wait), from the first line of /proc/stat.
pub fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .map(|rest| rest.split_whitespace().filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_default();
    // user nice system idle iowait irq softirq steal …, in USER_HZ (100/s).
    let busy: f64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    busy / 100.0
}
