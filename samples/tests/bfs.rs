//! The BFS sample as a test: levels computed by one launch per level over a graph whose
//! adjacency lists are separate boxed slices (reached only through pointers), checked against
//! a CPU BFS; then the CPU adds edges and the search runs again. Device-test rule of
//! `unimem::device::test_support`.

use unimem::device::test_support::runtime_or_skip;
use unimem_samples::bfs::{gpu_bfs, Graph};

#[global_allocator]
static A: unimem::Allocator = unimem::Allocator;

#[test]
fn bfs_levels() {
    let mut g = Graph::random(50_000, 3);
    let Some(levels) = runtime_or_skip("bfs_levels", gpu_bfs(&mut g, 0)) else { return };
    let expect = g.cpu_levels(0);
    let got = g.levels();
    assert_eq!(got, expect);
    assert_eq!(levels, expect.iter().max().unwrap() + 1, "one launch per level");
    // From another source, after the first search (everything warm).
    gpu_bfs(&mut g, 777).unwrap();
    let got = g.levels();
    assert_eq!(got, g.cpu_levels(777));
    // The CPU adds edges (new adjacency slices the device has not seen) and searches again.
    for k in 0..10 {
        g.add_edge(k * 5000 + 1, ((k * 5000 + 25_000) % 50_000) as u32);
    }
    gpu_bfs(&mut g, 0).unwrap();
    let got = g.levels();
    assert_eq!(got, g.cpu_levels(0));
}
