//! `sandcron::heap` against the real allocator, in a process of its own so
//! that no other test allocates while it measures the resident set.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use sandcron::heap::{release, resident, stats};

#[test]
fn a_release_hands_freed_pages_back() {
    let (Some(before), Some(_)) = (stats(), resident()) else {
        // Not glibc on Linux: nothing to measure.
        assert!(release().is_none());
        return;
    };
    // 64 MiB in 16 KiB blocks (below the mmap threshold, so they come
    // from the heap), every other one freed: holes glibc keeps.
    let mut blocks: Vec<Vec<u8>> = (0..4096).map(|i| vec![i as u8; 16 << 10]).collect();
    let mut kept = Vec::new();
    for (i, block) in blocks.drain(..).enumerate() {
        if i % 2 == 0 {
            kept.push(block);
        }
    }
    let freed = stats().map_or(0, |s| s.free);
    assert!(freed >= before.free + (16 << 20), "the holes are free heap: {freed}");
    let resident_before = resident().unwrap_or(0);
    assert!(release().is_some());
    let resident_after = resident().unwrap_or(u64::MAX);
    assert!(
        resident_after + (16 << 20) <= resident_before,
        "{resident_before} → {resident_after}: at least 16 of the ~32 MiB of holes given back"
    );
    assert_eq!(kept.len(), 2048);
    assert!(kept.iter().all(|block| block.len() == 16 << 10));
}
