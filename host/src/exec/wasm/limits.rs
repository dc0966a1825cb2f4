//! The per-run resource limiter: linear memory (all memories of a run
//! together), table elements and instance counts, and the record of whether a
//! limit was hit, so a guest that dies after a refused allocation ends
//! `out_of_memory` rather than with the generic trap its allocator raised.

use wasmtime::ResourceLimiter;

/// Core instances, memories and tables one run may create. A core module uses
/// one of each; a component (componentize-py's Python has a dozen core
/// instances, several memories and tables) uses more. The pool is sized from
/// the same numbers (see `engine.rs`), so a run within them always finds room.
pub(super) const INSTANCES_PER_RUN: usize = 32;
pub(super) const MEMORIES_PER_RUN: usize = 8;
pub(super) const TABLES_PER_RUN: usize = 16;

/// Table elements one table may hold. Large enough for big guests' function
/// tables (an interpreter compiled to wasm has tens of thousands of functions),
/// small enough that a `table.grow` bomb stays cheap: an element is a pointer,
/// so the worst case is a few MiB of host memory per table.
pub(super) const TABLE_ELEMENTS: usize = 200_000;

/// Which limit stopped a run's growth first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LimitHit {
    Memory,
    Table,
}

#[derive(Debug)]
pub(super) struct RunLimiter {
    /// Linear memory a run may hold in all its memories together, in bytes.
    memory_limit: usize,
    /// Bytes of linear memory currently held (memories never shrink, so this
    /// is also the peak).
    memory_used: usize,
    hit: Option<LimitHit>,
}

impl RunLimiter {
    pub(super) fn new(memory_limit: usize) -> Self {
        Self {
            memory_limit,
            memory_used: 0,
            hit: None,
        }
    }

    /// The most linear memory the run held at once, in bytes.
    pub(super) fn peak_memory(&self) -> u64 {
        self.memory_used as u64
    }

    /// The first limit the run ran into, if any.
    pub(super) fn hit(&self) -> Option<LimitHit> {
        self.hit
    }

    pub(super) fn memory_limit(&self) -> usize {
        self.memory_limit
    }

    fn record(&mut self, hit: LimitHit) {
        self.hit.get_or_insert(hit);
    }
}

impl ResourceLimiter for RunLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // `current` is 0 when a memory is created, so creation and growth are
        // both counted against the run's total.
        let growth = desired.saturating_sub(current);
        let total = self.memory_used.saturating_add(growth);
        if total > self.memory_limit {
            self.record(LimitHit::Memory);
            return Ok(false);
        }
        self.memory_used = total;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        // Growth this limiter allowed can still fail (the pool's slot is
        // smaller than the request); to the guest it is the same as a refusal.
        tracing::debug!(%error, "guest memory growth failed");
        self.record(LimitHit::Memory);
        Ok(())
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > TABLE_ELEMENTS {
            self.record(LimitHit::Table);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        tracing::debug!(%error, "guest table growth failed");
        self.record(LimitHit::Table);
        Ok(())
    }

    fn instances(&self) -> usize {
        INSTANCES_PER_RUN
    }

    fn tables(&self) -> usize {
        TABLES_PER_RUN
    }

    fn memories(&self) -> usize {
        MEMORIES_PER_RUN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_counted_across_memories_and_refused_past_the_limit() {
        let mut limiter = RunLimiter::new(10 * 65536);
        assert!(limiter.memory_growing(0, 4 * 65536, None).unwrap());
        assert!(limiter.memory_growing(0, 4 * 65536, None).unwrap(), "a second memory");
        assert!(limiter.memory_growing(4 * 65536, 6 * 65536, None).unwrap());
        assert_eq!(limiter.peak_memory(), 10 * 65536);
        assert_eq!(limiter.hit(), None);
        assert!(!limiter.memory_growing(6 * 65536, 7 * 65536, None).unwrap());
        assert_eq!(limiter.hit(), Some(LimitHit::Memory));
        assert_eq!(limiter.peak_memory(), 10 * 65536, "a refused growth is not counted");
    }

    #[test]
    fn tables_are_bounded() {
        let mut limiter = RunLimiter::new(0);
        assert!(limiter.table_growing(0, TABLE_ELEMENTS, None).unwrap());
        assert!(!limiter.table_growing(TABLE_ELEMENTS, TABLE_ELEMENTS + 1, None).unwrap());
        assert_eq!(limiter.hit(), Some(LimitHit::Table));
    }
}
