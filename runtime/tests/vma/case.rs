//! A heap with hundreds of thousands of blocks in alternating states stays below
//! `vm.max_map_count`. With userfaultfd, protection is per page-table entry and does not
//! split mappings at all; with mprotect, a budget keeps blocks beyond a third of the limit
//! on the host. (4 KiB blocks keep the test's memory small: 256 Ki blocks = 1 GiB.)
//! Shared by `coherence_vma_uffd` and `coherence_vma_mprotect`, which set `MODE`.

use std::sync::Arc;
use unimem::coherence::{self, FakeDevice, State};
use unimem::faults::protect::FaultMode;

#[global_allocator]
static A: unimem::Allocator = unimem::Allocator;

fn map_count() -> usize {
    std::fs::read_to_string("/proc/self/maps").unwrap().lines().count()
}

#[test]
fn alternating_block_states_do_not_explode_mappings() {
    const BLOCK: usize = 4096;
    const BLOCKS: usize = 256 * 1024;
    let space = {
        let _i = unimem::InternalScope::new();
        unimem::alloc::init();
        let (_, len) = unimem::alloc::managed_range();
        let dev = Arc::new(FakeDevice::new(BLOCK, BLOCKS / 2 + 16, len / BLOCK));
        coherence::install(dev, Some(super::MODE)).unwrap()
    };
    let v = vec![1u8; BLOCKS * BLOCK];
    let base = v.as_ptr() as usize;
    let before = map_count();
    let mut left_on_host = 0;
    for i in (0..BLOCKS).step_by(2) {
        left_on_host += space.to_device(base + i * BLOCK, BLOCK, i % 4 == 0).unwrap();
    }
    let after = map_count();
    let max: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count").unwrap().trim().parse().unwrap();
    let first = space.block_of(base).unwrap();
    assert_eq!(space.state(first), State::Device);
    assert_eq!(space.state(first + 1), State::Host);
    assert_eq!(space.state(first + 2), State::Shared);
    eprintln!("mappings: {before} before, {after} with {} blocks in alternating states, {left_on_host} left on the host (limit {max})", BLOCKS / 2);
    if super::MODE == FaultMode::Uffd {
        assert!(after < before + 1000, "mappings grew from {before} to {after}");
        assert_eq!(left_on_host, 0);
    } else {
        assert!(after < max * 3 / 4, "{after} mappings: too close to the limit {max}");
        assert!(left_on_host > 0, "the budget should have kept some blocks on the host");
        // The process can still map memory.
        let big = vec![3u8; 64 << 20];
        assert_eq!(big[12345], 3);
    }
    // Everything still reads correctly.
    assert!(v.iter().step_by(4093).all(|&b| b == 1));
}
