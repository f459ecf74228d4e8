//! The BFS sample with blocks migrating into a device pool far smaller than the graph
//! (`UNIMEM_IN_PLACE=off`, 16 frames of 64 KiB for about 3 MiB of vertices and adjacency
//! slices): launches take device faults, evict, and restart invocations whose atomic logs
//! filled, so invocations that already claimed vertices and took frontier slots run again.
//! The levels must still equal the CPU's (each vertex appended to a frontier once). Device-test
//! rule of `unimem::device::test_support`.

use unimem::device::test_support::runtime_or_skip;
use unimem_samples::bfs::{gpu_bfs, Graph};

#[global_allocator]
static A: unimem::Allocator = unimem::Allocator;

#[test]
fn bfs_levels_with_replays() {
    // Before the runtime starts: it reads these once.
    std::env::set_var("UNIMEM_IN_PLACE", "off");
    std::env::set_var("UNIMEM_BLOCK_SIZE", "65536");
    std::env::set_var("UNIMEM_DEVICE_MEMORY", format!("{}", 16 * 65536));
    let mut g = Graph::random(50_000, 4);
    let before = unimem::stats();
    let Some(levels) = runtime_or_skip("bfs_levels_with_replays", gpu_bfs(&mut g, 0)) else { return };
    let d = unimem::stats().since(&before);
    let expect = g.cpu_levels(0);
    assert!(g.levels() == expect, "levels differ from the CPU's");
    assert_eq!(levels, expect.iter().max().unwrap() + 1, "one launch per level");
    assert!(d.device_faults > 0 && d.evictions > 0, "the pool must be too small for the graph: {d:?}");
    assert!(d.replay_rounds > 0, "no invocation was replayed: {d:?}");
    // After the CPU adds edges (new slices the device has not seen), from another source.
    for k in 0..10 {
        g.add_edge(k * 5000 + 1, ((k * 5000 + 25_000) % 50_000) as u32);
    }
    gpu_bfs(&mut g, 777).unwrap();
    assert!(g.levels() == g.cpu_levels(777), "levels differ from the CPU's after the change");
}
