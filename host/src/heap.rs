//! The process heap as glibc's allocator holds it, and handing its freed
//! pages back to the system.
//!
//! glibc keeps what a process frees inside its arenas, and on its own returns
//! memory to the kernel only from the top of an arena. A worker that takes
//! up 100k jobs at once decodes ~75 MB of job records in between the jobs
//! it keeps; once the records are dropped, glibc held ~100 MiB of free heap
//! that stayed resident (bench §4: RSS 250 MiB of which 131 MiB in use).
//! [`release`] gives the free pages back (`malloc_trim`): the worker calls
//! it after taking up many jobs at once, and [`keeper`] looks every
//! [`KEEPER_PERIOD`] in every process and releases once the resident
//! memory that is not heap in use has grown by [`RELEASE_SLACK`] since its
//! last release (or the start), with at least as much free heap.
//!
//! With another allocator or libc these do nothing and [`stats`] is `None`.

use std::time::{Duration, Instant};

/// How often [`keeper`] looks.
pub const KEEPER_PERIOD: Duration = Duration::from_secs(15);

/// Growth of the resident memory beyond the heap in use from which
/// [`keeper`] releases.
pub const RELEASE_SLACK: u64 = 16 << 20;

/// What the allocator holds, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapStats {
    /// Allocated and not freed (including large blocks mapped on their own).
    pub in_use: u64,
    /// Freed and kept by the allocator (resident or, after [`release`], not).
    pub free: u64,
}

/// The allocator's figures, where the allocator is glibc's.
pub fn stats() -> Option<HeapStats> {
    glibc::stats()
}

/// Gives the allocator's free pages back to the system; returns how long it
/// took, or `None` where there is nothing to call.
pub fn release() -> Option<Duration> {
    let started = Instant::now();
    glibc::trim().then(|| started.elapsed())
}

/// This process's resident set, in bytes (Linux; `None` elsewhere).
pub fn resident() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages.saturating_mul(glibc::page_size()))
}

/// Whether a [`release`] is worth a walk of the heap: resident memory
/// beyond the heap in use (`resident`) is [`RELEASE_SLACK`] above what it
/// was after the last release (`floor`: code, stacks, the WASM engine's
/// mappings), and glibc holds at least that much free heap to give back.
pub fn worth_releasing(heap: HeapStats, resident: u64, floor: u64) -> bool {
    beyond_heap(heap, resident).saturating_sub(floor) >= RELEASE_SLACK && heap.free >= RELEASE_SLACK
}

/// Resident memory that is not heap in use.
fn beyond_heap(heap: HeapStats, resident: u64) -> u64 {
    resident.saturating_sub(heap.in_use)
}

/// Every [`KEEPER_PERIOD`], releases the free heap when it is worth it.
/// Runs until its task is dropped.
pub async fn keeper() {
    let mut every = tokio::time::interval(KEEPER_PERIOD);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Resident memory that is not heap in use, as of the start (the first
    // tick is immediate) or the last release.
    let mut floor = None;
    loop {
        every.tick().await;
        let (Some(heap), Some(rss)) = (stats(), resident()) else {
            return;
        };
        let last = *floor.get_or_insert(beyond_heap(heap, rss));
        if worth_releasing(heap, rss, last) {
            release_logged("periodic").await;
            if let (Some(heap), Some(rss)) = (stats(), resident()) {
                floor = Some(beyond_heap(heap, rss));
            }
        }
    }
}

/// [`release`] off the async threads, logged with what it gave back.
pub async fn release_logged(why: &'static str) {
    let before = resident();
    let Ok(Some(took)) = tokio::task::spawn_blocking(release).await else {
        return;
    };
    let mib = |bytes: Option<u64>| bytes.map_or(f64::NAN, |b| b as f64 / f64::from(1 << 20));
    tracing::debug!(
        why,
        resident_before_mib = mib(before),
        resident_after_mib = mib(resident()),
        took_ms = took.as_secs_f64() * 1e3,
        "returned free heap to the system"
    );
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod glibc {
    use crate::heap::HeapStats;

    pub(super) fn stats() -> Option<HeapStats> {
        // SAFETY: `mallinfo2` takes no arguments and returns its counters by
        // value (glibc 2.33 or later; Debian 12 ships 2.36).
        let info = unsafe { libc::mallinfo2() };
        let bytes = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        Some(HeapStats {
            in_use: bytes(info.uordblks).saturating_add(bytes(info.hblkhd)),
            free: bytes(info.fordblks),
        })
    }

    pub(super) fn trim() -> bool {
        // SAFETY: `malloc_trim` takes a byte count to keep (none) and works on
        // the allocator's own free chunks under the allocator's own locks.
        unsafe { libc::malloc_trim(0) };
        true
    }

    pub(super) fn page_size() -> u64 {
        // SAFETY: `sysconf` reads a constant of the running system.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(size).unwrap_or(4096)
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod glibc {
    use crate::heap::HeapStats;

    pub(super) fn stats() -> Option<HeapStats> {
        None
    }

    pub(super) fn trim() -> bool {
        false
    }

    pub(super) fn page_size() -> u64 {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releasing_needs_resident_growth_beyond_the_heap_and_free_heap() {
        let mib = |n: u64| n << 20;
        let heap = |in_use, free| HeapStats {
            in_use: mib(in_use),
            free: mib(free),
        };
        // Started with 25 MiB that is not heap; after a bulk take-up 131 MiB
        // in use, 48 free, 208 resident.
        assert!(worth_releasing(heap(131, 48), mib(208), mib(25)));
        // Already released: resident memory back near heap + floor.
        assert!(!worth_releasing(heap(131, 48), mib(160), mib(25)));
        // Resident memory that is not free heap (a guest's linear memory).
        assert!(!worth_releasing(heap(131, 4), mib(400), mib(25)));
        // A floor that rose (the engine's mappings) is not slack.
        assert!(!worth_releasing(heap(131, 48), mib(208), mib(70)));
    }
}
