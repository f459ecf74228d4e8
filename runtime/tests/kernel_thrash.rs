//! Oversubscription with small blocks: 4 KiB blocks, a pool of 256 frames (1 MiB), and
//! working sets several times the pool, where invocations that each need a few blocks used to
//! evict each other's blocks before they could use them (docs/MEMORY-MODEL.md, "Paced
//! rounds"). Device-test rule of `unimem::device::test_support`.

mod kernel_common;

use std::sync::MutexGuard;
use std::time::Instant;

use kernel_common::kernel;
use unimem::Args;

#[global_allocator]
static A: unimem::Allocator = unimem::Allocator;

const BLOCK: usize = 4096;
const FRAMES: usize = 256;

fn serial() -> MutexGuard<'static, ()> {
    // Before the runtime starts: the pool is read from the environment once.
    std::env::set_var("UNIMEM_DEVICE_MEMORY", format!("{}", FRAMES * BLOCK));
    std::env::set_var("UNIMEM_BLOCK_SIZE", format!("{BLOCK}"));
    kernel_common::serial_migrating()
}

/// Invocation `id` reads the node `ptrs[id]` points to and stores its first word in `out[id]`:
/// three blocks each (the pointer's, the node's, the output's).
const GATHER: &str = "
fn gather(id: u32) {
    let p = unimem_load_ptr(unimem_arg_ptr(0u) + u64(id) * 8lu);
    unimem_store_u32(unimem_arg_ptr(2u) + u64(id) * 4lu, unimem_load_u32(p));
}
";

/// `n` boxed 64-byte nodes (node `i` holds `i * 3 + 1`), in a fixed random order.
#[allow(clippy::vec_box)] // each node is an allocation of its own, as in a C program
fn shuffled_nodes(n: usize) -> Vec<Box<[u32; 16]>> {
    let mut nodes: Vec<Box<[u32; 16]>> = (0..n).map(|i| Box::new([i as u32 * 3 + 1; 16])).collect();
    kernel_common::shuffle(&mut nodes, 0x2545_f491);
    nodes
}

/// Random gathers over `times` the pool in 64-byte nodes (plus the pointer and output
/// arrays, 1.5 times the pool at 8 times) complete, with every result right, in fewer than
/// `max_rounds` rounds.
fn gathers_over(test: &str, times: usize, max_rounds: u32) {
    let _s = serial();
    let Some(k) = kernel(test, GATHER, "gather") else { return };
    let n = times * FRAMES * BLOCK / 64;
    let nodes = shuffled_nodes(n);
    let ptrs: Vec<u64> = nodes.iter().map(|b| b.as_ptr() as u64).collect();
    let out = vec![0u32; n];
    let before = unimem::stats();
    let t = Instant::now();
    let r = k.launch(n as u32, &Args::new().ptr(&ptrs[..]).ptr(&out[..])).unwrap_or_else(|e| panic!("{e}"));
    let took = t.elapsed();
    let after = unimem::stats();
    eprintln!(
        "{times}x the pool: {took:?}, {} MiB to the device, {} evictions; {r:?}",
        (after.bytes_to_device - before.bytes_to_device) >> 20,
        after.evictions - before.evictions
    );
    for i in 0..n {
        assert_eq!(out[i], nodes[i][0], "invocation {i}");
    }
    assert!(r.rounds < max_rounds, "{r:?}");
}

// Rounds measured (paced, 2026-11-21): 53 and 205; before pacing, 6 220 (4.5 s) and 32 419
// (41 s), 8 MiB of nodes in another layout gave up after 100 000 rounds.

#[test]
fn random_gathers_over_four_times_the_pool_complete() {
    gathers_over("random_gathers_over_four_times_the_pool_complete", 4, 600);
}

#[test]
fn random_gathers_over_eight_times_the_pool_complete() {
    gathers_over("random_gathers_over_eight_times_the_pool_complete", 8, 2000);
}
