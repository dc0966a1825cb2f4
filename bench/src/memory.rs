//! What one scheduled job costs in memory, structure by structure: a
//! counting allocator (`Counting`, the bench binary's global allocator)
//! measures the bytes live after building N of each structure, on the
//! measuring thread only, so that the other sections pay one thread-local
//! check per allocation and nothing more.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use sandcron::coord::{Coordinator, KeyValue, KvStore};
use sandcron::ids::{JobName, ModuleDigest};
use sandcron::job::JobKind;
use sandcron::metrics::Metrics;
use sandcron::schedule::TimerQueue;

use crate::inproc::{job_record, shell_kind, wasm_kind};
use crate::scale::schedule_text;

thread_local! {
    /// Bytes allocated minus bytes freed on this thread while counting: as
    /// requested, and as glibc's heap holds them (`chunk`).
    static LIVE: Cell<(isize, isize)> = const { Cell::new((0, 0)) };
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

/// The heap an allocation of `size` bytes takes with glibc's malloc: an
/// 8-byte header, 16-byte alignment, 32 bytes at least; from 128 KiB on,
/// its own mapping of whole pages.
fn chunk(size: usize) -> isize {
    let size = if size >= 128 * 1024 {
        (size + 16).next_multiple_of(4096)
    } else {
        (size + 8).next_multiple_of(16).max(32)
    };
    size as isize
}

/// The system allocator, counting on threads that asked for it.
pub struct Counting;

/// Counts an allocation of `added` bytes and a free of `removed` bytes.
fn note(added: usize, removed: usize) {
    // `try_with`: the thread-locals may be gone while a thread exits.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = LIVE.try_with(|live| {
                let (requested, heap) = live.get();
                let chunks = |size: usize| if size == 0 { 0 } else { chunk(size) };
                live.set((
                    requested + added as isize - removed as isize,
                    heap + chunks(added) - chunks(removed),
                ));
            });
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
        note(layout.size(), 0);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(0, layout.size());
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size, layout.size());
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// What one structure costs per job: bytes requested, and the heap glibc
/// gives them.
pub struct Structure {
    pub what: &'static str,
    pub requested: f64,
    pub heap: f64,
}

/// Heap bytes that `build` leaves live on this thread (what it returns
/// included), per item of `count`: (requested, heap).
fn live_bytes_per<T>(count: usize, build: impl FnOnce() -> T) -> ((f64, f64), T) {
    COUNTING.with(|on| on.set(true));
    let before = LIVE.with(Cell::get);
    let built = build();
    let after = LIVE.with(Cell::get);
    COUNTING.with(|on| on.set(false));
    let per = |delta: isize| delta as f64 / count as f64;
    ((per(after.0 - before.0), per(after.1 - before.1)), built)
}

/// `jobs` records of the scale mix running `kind`, as a store holds them.
fn records(jobs: usize, kind: &JobKind) -> anyhow::Result<Vec<KeyValue>> {
    (0..jobs)
        .map(|i| {
            let record = job_record(&schedule_text(i), kind.clone());
            Ok(KeyValue {
                key: format!("/m/jobs/job-{i:06}"),
                value: serde_json::to_vec(&record)?.into(),
                create_revision: 1,
                mod_revision: 1,
                lease: None,
            })
        })
        .collect()
}

/// Bytes per job of each structure a worker keeps, for `jobs` jobs of the
/// scale mix (in UTC), shell jobs and WASM jobs.
pub fn per_job(jobs: usize) -> anyhow::Result<Vec<Structure>> {
    let coord = Coordinator::new(
        sandcron::coord::embedded::EmbeddedStore::in_memory() as Arc<dyn KvStore>,
        "/m/",
    );
    let mut out = Vec::new();
    let mut names = Vec::new();
    let digest = ModuleDigest::of(b"\0asm\x01\0\0\0");
    for (kind, stored, parsed) in [
        (
            shell_kind("true"),
            "shell job record as stored (key + JSON value)",
            "parsed shell job (`Arc<Job>`: spec, meta, compiled schedule)",
        ),
        (
            wasm_kind(&digest),
            "WASM job record as stored (key + JSON value)",
            "parsed WASM job (`Arc<Job>`)",
        ),
    ] {
        let records = records(jobs, &kind)?;
        let bytes = records.iter().map(|kv| kv.key.len() + kv.value.len()).sum::<usize>() as f64 / jobs as f64;
        out.push(Structure {
            what: stored,
            requested: bytes,
            heap: f64::NAN,
        });
        let ((requested, heap), built) = live_bytes_per(jobs, || {
            records
                .iter()
                .filter_map(|kv| coord.decode_job(kv)?.ok())
                .map(Arc::new)
                .collect::<Vec<_>>()
        });
        anyhow::ensure!(built.len() == jobs, "only {} of {jobs} records decoded", built.len());
        out.push(Structure {
            what: parsed,
            requested,
            heap,
        });
        names = built.iter().map(|job| job.name.clone()).collect::<Vec<JobName>>();
    }
    let now = jiff::Timestamp::now();
    let ((requested, heap), queue) = live_bytes_per(jobs, || {
        let mut queue = TimerQueue::new();
        for name in &names {
            queue.set(name.clone(), now);
        }
        queue
    });
    drop(queue);
    out.push(Structure {
        what: "timer queue entry (heap entry + live map, name twice)",
        requested,
        heap,
    });
    let metrics = Metrics::new();
    let ((requested, heap), ()) = live_bytes_per(jobs, || {
        for name in &names {
            metrics.job_succeeded(name, now);
        }
    });
    out.push(Structure {
        what: "last-success metric entry (after a job's first success)",
        requested,
        heap,
    });
    Ok(out)
}
