//! What one scheduled job costs in memory, structure by structure: a
//! counting allocator (`Counting`, the bench binary's global allocator)
//! measures the bytes live after building N of each structure, on the
//! measuring thread only, so that the other sections pay one thread-local
//! check per allocation and nothing more.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use sandcron::coord::{Coordinator, KeyValue, KvStore};
use sandcron::ids::JobName;
use sandcron::schedule::TimerQueue;

use crate::inproc::{job_record, shell_kind};
use crate::scale::schedule_text;

thread_local! {
    /// Bytes allocated minus bytes freed on this thread while counting.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

/// The system allocator, counting on threads that asked for it.
pub struct Counting;

fn note(delta: isize) {
    // `try_with`: the thread-locals may be gone while a thread exits.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = LIVE.try_with(|live| live.set(live.get() + delta));
        }
    });
}

// SAFETY: every call is passed straight to `System`; the counters are
// thread-locals that never allocate. A global allocator cannot be written
// without `unsafe`; this one lives in the bench harness only, never in the
// shipped binary.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as isize));
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size as isize - layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Heap bytes that `build` leaves live on this thread (what it returns
/// included), per item of `count`.
fn live_bytes_per<T>(count: usize, build: impl FnOnce() -> T) -> (f64, T) {
    COUNTING.with(|on| on.set(true));
    let before = LIVE.with(Cell::get);
    let built = build();
    let after = LIVE.with(Cell::get);
    COUNTING.with(|on| on.set(false));
    ((after - before) as f64 / count as f64, built)
}

/// Bytes per job of each structure a worker keeps, for `jobs` jobs of the
/// scale mix (shell jobs in UTC): (structure, bytes per job).
pub fn per_job(jobs: usize) -> anyhow::Result<Vec<(&'static str, f64)>> {
    let coord = Coordinator::new(
        sandcron::coord::embedded::EmbeddedStore::in_memory() as Arc<dyn KvStore>,
        "/m/",
    );
    let records: Vec<KeyValue> = (0..jobs)
        .map(|i| {
            let record = job_record(&schedule_text(i), shell_kind("true"));
            Ok(KeyValue {
                key: format!("/m/jobs/job-{i:06}"),
                value: serde_json::to_vec(&record)?.into(),
                create_revision: 1,
                mod_revision: 1,
                lease: None,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let stored = records.iter().map(|kv| kv.key.len() + kv.value.len()).sum::<usize>() as f64 / jobs as f64;
    let (parsed, built) = live_bytes_per(jobs, || {
        records
            .iter()
            .filter_map(|kv| coord.decode_job(kv)?.ok())
            .map(Arc::new)
            .collect::<Vec<_>>()
    });
    anyhow::ensure!(built.len() == jobs, "only {} of {jobs} records decoded", built.len());
    let names: Vec<JobName> = built.iter().map(|job| job.name.clone()).collect();
    let now = jiff::Timestamp::now();
    let (timers, queue) = live_bytes_per(jobs, || {
        let mut queue = TimerQueue::new();
        for name in &names {
            queue.set(name.clone(), now);
        }
        queue
    });
    drop((queue, built));
    Ok(vec![
        ("job record as stored (key + JSON value; the store's copy)", stored),
        ("parsed job (`Arc<Job>`: spec, meta, compiled schedule)", parsed),
        ("timer queue entry (heap entry + live map, name twice)", timers),
    ])
}
