//! A heap with hundreds of thousands of blocks in alternating states stays far below
//! `vm.max_map_count`: with userfaultfd, protection is per page-table entry and does not
//! split mappings. (4 KiB blocks keep the test's memory small: 256 Ki blocks = 1 GiB.)

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
        coherence::install(dev, Some(FaultMode::Uffd)).unwrap()
    };
    let v = vec![1u8; BLOCKS * BLOCK];
    let base = v.as_ptr() as usize;
    let before = map_count();
    for i in (0..BLOCKS).step_by(2) {
        space.to_device(base + i * BLOCK, BLOCK, i % 4 == 0).unwrap();
    }
    let after = map_count();
    let max: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count").unwrap().trim().parse().unwrap();
    let first = space.block_of(base).unwrap();
    assert_eq!(space.state(first), State::Device);
    assert_eq!(space.state(first + 1), State::Host);
    assert_eq!(space.state(first + 2), State::Shared);
    eprintln!("mappings: {before} before, {after} with {} blocks in alternating states (limit {max})", BLOCKS / 2);
    assert!(after < before + 1000, "mappings grew from {before} to {after}");
    assert!(after < max / 10);
    // Everything still reads correctly.
    assert!(v.iter().step_by(4093).all(|&b| b == 1));
}
