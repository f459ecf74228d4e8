//! The list demo as a test (smaller: 200 000 nodes): results equal the CPU's, the warm launch
//! takes no device fault, and after a small CPU change only the changed blocks move (in
//! place, nothing moves at all, and the list is mapped once).
//! Device-test rule of `unimem::device::test_support`.

use unimem::device::test_support::runtime_or_skip;
use unimem_samples::list::{launch_and_check, SegmentSums};

#[global_allocator]
static A: unimem::Allocator = unimem::Allocator;

#[test]
fn list_demo() {
    let Some(mut s) = runtime_or_skip("list_demo", SegmentSums::new(200_000, 2000)) else { return };
    let cold = launch_and_check(&mut s).unwrap();
    let in_place = unimem::vulkan_runtime().unwrap().1.in_place();
    // Migrating, the list arrives by device faults; in place, the launch maps every live block
    // before its dispatch (mapping copies nothing), so it takes none.
    assert_eq!(cold.launch.device_faults > 0, !in_place, "{cold:?}");
    let warm = launch_and_check(&mut s).unwrap();
    assert_eq!(warm.launch.device_faults, 0, "{warm:?}");
    assert_eq!(warm.launch.rounds, 1, "{warm:?}");
    let changed = s.mutate(20_000);
    assert_eq!(changed, 10);
    let after = launch_and_check(&mut s).unwrap();
    assert_eq!(after.launch.device_faults, 0, "{after:?}");
    if in_place {
        // The kernel reads the host pages: nothing moves, and the change maps nothing new.
        for step in [&cold, &warm, &after] {
            assert_eq!(step.stats.bytes_to_device, 0, "{step:?}");
        }
        assert!(cold.stats.mapped_in_place > 0, "{cold:?}");
        // The list stays mapped: the launch after the change maps at most the blocks the CPU
        // allocated into meanwhile (the check's own vectors), not the list again.
        assert!(after.stats.mapped_in_place * 10 < cold.stats.mapped_in_place, "{after:?} vs {cold:?}");
        return;
    }
    let block = unimem::runtime().unwrap().block_size() as u64;
    assert!(
        after.stats.bytes_to_device <= (changed as u64 + 4) * block,
        "only the changed blocks move: {after:?}"
    );
    assert!(after.stats.bytes_to_device * 4 < cold.stats.bytes_to_device, "{after:?} vs {cold:?}");
}
