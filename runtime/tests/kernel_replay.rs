//! Replay under a tiny device pool (8 blocks of 64 KiB): every launch takes device faults,
//! replays and evicts; results must equal a fault-free run, including kernels that read their
//! own writes and use atomics; an invocation that needs more blocks at once than the pool
//! holds fails with a clear error. Device-test rule of `unimem::device::test_support`.

#![allow(clippy::useless_vec)] // kernels need heap (managed) memory, not stack arrays

mod kernel_common;

use std::sync::{Mutex, MutexGuard};

use kernel_common::{build, free, kernel};
use unimem::Args;

#[global_allocator]
static A: unimem::Allocator = unimem::Allocator;

static SERIAL: Mutex<()> = Mutex::new(());

const FRAMES: usize = 8;

fn serial() -> MutexGuard<'static, ()> {
    // Before the runtime starts: the pool is read from the environment once.
    std::env::set_var("UNIMEM_DEVICE_MEMORY", format!("{}", FRAMES * 65536));
    std::env::set_var("UNIMEM_BLOCK_SIZE", "65536");
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sums segments of a list, and also leaves per-invocation scratch that it reads back
/// (own writes) and a global atomic count of visited nodes.
const SUM: &str = "
fn sum(id: u32) {
    let starts = unimem_arg_ptr(0u);
    let out = unimem_arg_ptr(2u);
    let seg = unimem_arg_u32(4u);
    let counter = unimem_arg_ptr(6u);
    var p = unimem_load_ptr(starts + u64(id) * 8lu);
    let slot = out + u64(id) * 8lu;
    unimem_store_u32(slot, 0u);
    var k = 0u;
    for (; k < seg && p != 0lu && unimem_running(); k++) {
        unimem_store_u32(slot, unimem_load_u32(slot) + unimem_load_u32(p));
        p = unimem_load_ptr(p + 8lu);
    }
    unimem_store_u32(slot + 4lu, k);
    unimem_atomic_add_u32(counter, k);
}
";

fn value(i: usize) -> u32 {
    (i as u32).wrapping_mul(7) % 1009
}

#[test]
fn replay_with_a_tiny_pool_equals_a_fault_free_run() {
    let _s = serial();
    let Some(k) = kernel("replay_with_a_tiny_pool_equals_a_fault_free_run", SUM, "sum") else { return };
    // 100 000 nodes of 16 bytes: 25 blocks, three times the pool.
    let (len, seg) = (100_000usize, 50usize);
    let nodes = build(len, value);
    let starts: Vec<u64> = nodes.iter().step_by(seg).map(|&p| p as u64).collect();
    let n = starts.len();
    for launch in 0..3 {
        let out = vec![0u32; 2 * n];
        let counter = Box::new(0u32);
        let before = unimem::stats();
        let r = k
            .launch(n as u32, &Args::new().ptr(&starts[..]).ptr(&out[..]).u32(seg as u32).ptr(&*counter))
            .unwrap();
        let after = unimem::stats();
        eprintln!("launch {launch}: {r:?}");
        assert!(r.rounds > 1 && r.device_faults > 0, "{r:?}");
        assert_eq!(after.replay_rounds - before.replay_rounds, u64::from(r.rounds - 1));
        assert!(after.evictions > before.evictions, "the pool is too small to hold the list");
        for i in 0..n {
            let expect: u32 = (i * seg..((i + 1) * seg).min(len)).map(value).sum();
            assert_eq!(out[2 * i], expect, "launch {launch}: segment {i}");
            assert_eq!(out[2 * i + 1] as usize, seg.min(len - i * seg), "launch {launch}: segment {i} count");
        }
        assert_eq!(*counter as usize, len, "launch {launch}: each atomic applied once");
    }
    free(nodes);
}

#[test]
fn an_invocation_larger_than_the_pool_fails_clearly() {
    let _s = serial();
    let Some(k) = kernel("an_invocation_larger_than_the_pool_fails_clearly", SUM, "sum") else { return };
    let nodes = build(45_000, value); // 11 blocks in one walk; 8 frames, 3 pinned
    let starts = vec![nodes[0] as u64];
    let out = vec![0u32; 2];
    let counter = Box::new(0u32);
    k.set_max_steps(1 << 20);
    let e = k
        .launch(1, &Args::new().ptr(&starts[..]).ptr(&out[..]).u32(45_000).ptr(&*counter))
        .unwrap_err()
        .to_string();
    assert!(e.contains("kernel `sum`") && e.contains("invocation 0"), "{e}");
    assert!(e.contains("more memory at once than the device pool holds"), "{e}");
    // Still usable: a short walk.
    let out = vec![0u32; 2];
    k.launch(1, &Args::new().ptr(&starts[..]).ptr(&out[..]).u32(10).ptr(&*counter)).unwrap();
    assert_eq!(out[1], 10);
    free(nodes);
}

/// 40 stores (more than the 32-word store log), then a load from `far`.
const OVERFLOW: &str = "
fn overflow(id: u32) {
    let out = unimem_arg_ptr(0u);
    for (var i = 0u; i < 40u; i++) {
        unimem_store_u32(out + u64(i) * 4lu, i + 1u);
    }
    let far = unimem_arg_u64(2u);
    unimem_store_u32(out + 160lu, unimem_load_u32(far));
}
";

#[test]
fn a_fault_after_the_store_log_overflowed_is_an_error_not_a_duplicate() {
    let _s = serial();
    let test = "a_fault_after_the_store_log_overflowed_is_an_error_not_a_duplicate";
    let Some(k) = kernel(test, OVERFLOW, "overflow") else { return };
    let out = vec![0u32; 64];
    let far = vec![7u32; 1 << 16]; // its own blocks, not an argument: not prefetched
    let far_addr = far.as_ptr() as u64;
    unimem::prefetch(far.as_ptr().cast(), 4, unimem::Location::Host).unwrap();
    let e = k.launch(1, &Args::new().ptr(&out[..]).u64(far_addr)).unwrap_err().to_string();
    assert!(e.contains("cannot be replayed") && e.contains("invocation 0"), "{e}");
    assert!(e.contains(&format!("{far_addr:#x}")), "{e}");
    // With `far` resident, the same kernel completes.
    unimem::advise(far.as_ptr().cast(), 4, unimem::Advice::ReadMostly).unwrap();
    k.launch(1, &Args::new().ptr(&out[..]).u64(far_addr)).unwrap();
    assert_eq!(out[..40], (1..=40).collect::<Vec<u32>>()[..]);
    assert_eq!(out[40], 7);
}
