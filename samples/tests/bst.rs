//! The BST sample as a test: a tree of boxed nodes looked up by a kernel, checked against the
//! CPU; the CPU inserts and changes keys and the kernel runs again. Device-test rule of
//! `unimem::device::test_support`.

use unimem::device::test_support::runtime_or_skip;
use unimem_samples::bst::{key, Lookups};

#[global_allocator]
static A: unimem::Allocator = unimem::Allocator;

#[test]
fn bst_lookups() {
    let Some(mut l) = runtime_or_skip("bst_lookups", Lookups::new(100_000, 20_000)) else { return };
    let cold = l.launch_and_check().unwrap();
    // Migrating, the tree arrives by device faults; in place it is mapped before the dispatch.
    let in_place = unimem::vulkan_runtime().unwrap().1.in_place();
    assert_eq!(cold.device_faults > 0, !in_place, "{cold:?}");
    assert!(!in_place || cold.prefetched_blocks > 0, "{cold:?}");
    let warm = l.launch_and_check().unwrap();
    assert_eq!(warm.device_faults, 0, "{warm:?}");
    // The CPU changes values and inserts keys that were absent; the kernel sees both.
    for j in (7..20_000).step_by(8 * 97) {
        l.tree.insert(key(100_000 + j), 424_242);
    }
    for i in (0..100_000).step_by(5000) {
        l.tree.insert(key(i), 99);
    }
    let after = l.launch_and_check().unwrap();
    assert!(l.out.contains(&424_242) && l.out.contains(&99), "{after:?}");
}
