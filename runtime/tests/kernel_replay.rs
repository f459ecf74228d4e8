//! Replay under a tiny device pool (8 blocks of 64 KiB): every launch takes device faults,
//! replays and evicts; results must equal a fault-free run, including kernels that read their
//! own writes and use atomics; an invocation that needs more blocks at once than the pool
//! holds fails with a clear error. Device-test rule of `unimem::device::test_support`.

#![allow(clippy::useless_vec)] // kernels need heap (managed) memory, not stack arrays

mod kernel_common;

use std::sync::MutexGuard;

use kernel_common::{build, free, kernel};
use unimem::Args;

#[global_allocator]
static A: unimem::Allocator = unimem::Allocator;

const FRAMES: usize = 8;

fn serial() -> MutexGuard<'static, ()> {
    // Before the runtime starts: the pool is read from the environment once.
    std::env::set_var("UNIMEM_DEVICE_MEMORY", format!("{}", FRAMES * 65536));
    std::env::set_var("UNIMEM_BLOCK_SIZE", "65536");
    kernel_common::serial_migrating()
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

/// Reads the first word of `pad` and of each of `k` blocks through the pointers in `hops`.
const HOPS: &str = "
fn hops(id: u32) {
    let pad = unimem_arg_ptr(0u);
    let hops = unimem_arg_ptr(2u);
    let k = unimem_arg_u32(4u);
    let out = unimem_arg_ptr(6u);
    var s = unimem_load_u32(pad);
    for (var i = 0u; i < k; i++) {
        s += unimem_load_u32(unimem_load_ptr(hops + u64(i) * 8lu));
    }
    unimem_store_u32(out, s);
}
";

#[test]
fn an_invocation_that_fits_the_pool_completes_whatever_the_arguments_pin() {
    let _s = serial();
    let Some(k) = kernel("an_invocation_that_fits_the_pool_completes_whatever_the_arguments_pin", HOPS, "hops") else { return };
    // The first argument spans the whole pool (its first half is pinned: kept resident
    // through the launch's rounds), of which the kernel reads one block; the invocation
    // needs 7 blocks of the 8 (pad's first, `hops`'s, `out`'s and 4 others), so it fits
    // only if running alone it may evict pinned blocks it does not use.
    let pad = vec![3u32; FRAMES * 65536 / 4];
    let blocks: Vec<Vec<u32>> = (0..4).map(|i| vec![10 + i as u32; 65536 / 4]).collect();
    let hops: Vec<u64> = blocks.iter().map(|b| b.as_ptr() as u64).collect();
    for launch in 0..2 {
        let out = vec![0u32; 65536 / 4];
        let r = k.launch(1, &Args::new().ptr(&pad[..]).ptr(&hops[..]).u32(hops.len() as u32).ptr(&out[..]));
        let r = r.unwrap_or_else(|e| panic!("launch {launch}: {e}"));
        assert!(r.device_faults > 0, "launch {launch}: the blocks must fault in: {r:?}");
        assert_eq!(out[0], 3 + 10 + 11 + 12 + 13, "launch {launch}");
    }
}

/// Invocation `id` stores 40 words (more than the private store log) at a fixed stride.
const STRIDED: &str = "
fn strided(id: u32) {
    let out = unimem_arg_ptr(0u);
    let stride = u64(unimem_arg_u32(2u));
    for (var k = 0u; k < 40u; k++) {
        unimem_store_u32(out + (u64(id) * 40lu + u64(k)) * stride, id * 1000u + k);
    }
}
";

/// Stores at a fixed stride (consecutive words; a field of an array of 16- or 64-byte
/// structs) fit a spill round's first store table, 128 entries for 40 words: each
/// invocation runs in one spill round. Before, the table's hash folded high bits into the
/// low ones and clustered such words, so some 8-entry probe run filled, the table doubled
/// and those invocations ran again (most launches, by a simulation of the hash).
#[test]
fn strided_stores_fit_the_first_spill_table() {
    let _s = serial();
    let Some(k) = kernel("strided_stores_fit_the_first_spill_table", STRIDED, "strided") else { return };
    let n = 100u32;
    for stride in [4u32, 16, 64] {
        let words = (n * 40 * stride / 4) as usize;
        let out = vec![0u32; words];
        let r = k.launch(n, &Args::new().ptr(&out[..]).u32(stride)).unwrap();
        assert_eq!(r.device_faults, 0, "stride {stride}: the output fits the pool: {r:?}");
        for id in 0..n {
            for w in 0..40 {
                assert_eq!(out[((id * 40 + w) * stride / 4) as usize], id * 1000 + w, "stride {stride}, invocation {id}, word {w}");
            }
        }
        assert_eq!(r.escalated, u64::from(n), "stride {stride}: each invocation ran once in a spill round: {r:?}");
    }
}

/// 40 stores (more than the 32-word store log), then a load from `far`.
const OVERFLOW: &str = "
fn overflow(id: u32) {
    let out = unimem_arg_ptr(0u);
    for (var i = 0u; i < 40u; i++) {
        unimem_store_u32(out + u64(i) * 4lu, i + 1u);
    }
    // The address comes disguised (complemented), so that the launch does not take it for a
    // pointer and prefetch its block.
    let far = ~unimem_arg_u64(2u);
    unimem_store_u32(out + 160lu, unimem_load_u32(far));
}
";

#[test]
fn a_fault_after_the_store_log_overflowed_is_replayed_exactly() {
    let _s = serial();
    let test = "a_fault_after_the_store_log_overflowed_is_replayed_exactly";
    let Some(k) = kernel(test, OVERFLOW, "overflow") else { return };
    let out = vec![0u32; 64];
    let far = vec![7u32; 1 << 16]; // its own blocks, which no argument points to: not prefetched
    let far_addr = far.as_ptr() as u64;
    unimem::prefetch(far.as_ptr().cast(), 4, unimem::Location::Host).unwrap();
    let r = k.launch(1, &Args::new().ptr(&out[..]).u64(!far_addr)).unwrap();
    assert!(r.escalated >= 2 && r.device_faults >= 1, "overflowed, then faulted in a spill round: {r:?}");
    assert_eq!(out[..40], (1..=40).collect::<Vec<u32>>()[..]);
    assert_eq!(out[40], 7);
    assert!(out[41..].iter().all(|&w| w == 0));
}

/// Invocation `id` walks its segment of a list and writes running sums into its own slice of
/// `out` (`seg` words), reading each previous sum back (its own write): `seg` logged stores,
/// far more than the private log, with device faults in the middle.
const PREFIX: &str = "
fn prefix(id: u32) {
    let starts = unimem_arg_ptr(0u);
    let out = unimem_arg_ptr(2u) + u64(id) * u64(unimem_arg_u32(4u)) * 4lu;
    let seg = unimem_arg_u32(4u);
    var p = unimem_load_ptr(starts + u64(id) * 8lu);
    unimem_store_u32(out, unimem_load_u32(p));
    p = unimem_load_ptr(p + 8lu);
    for (var k = 1u; k < seg && p != 0lu && unimem_running(); k++) {
        let slot = out + u64(k) * 4lu;
        unimem_store_u32(slot, unimem_load_u32(slot - 4lu) + unimem_load_u32(p));
        p = unimem_load_ptr(p + 8lu);
    }
}
";

#[test]
fn invocations_storing_hundreds_of_words_replay_exactly() {
    let _s = serial();
    let test = "invocations_storing_hundreds_of_words_replay_exactly";
    let Some(k) = kernel(test, PREFIX, "prefix") else { return };
    let (len, seg) = (60_000usize, 600usize);
    let nodes = build(len, value);
    let starts: Vec<u64> = nodes.iter().step_by(seg).map(|&p| p as u64).collect();
    let n = starts.len();
    for launch in 0..2 {
        let out = vec![u32::MAX; len];
        let r = k.launch(n as u32, &Args::new().ptr(&starts[..]).ptr(&out[..]).u32(seg as u32)).unwrap();
        eprintln!("launch {launch}: {r:?}");
        assert!(r.escalated >= n as u64, "every invocation overflowed its private log: {r:?}");
        assert!(r.device_faults > 0 && r.rounds > 2, "{r:?}");
        let mut sum = 0u32;
        for (i, &got) in out.iter().enumerate() {
            sum = if i % seg == 0 { value(i) } else { sum + value(i) };
            assert_eq!(got, sum, "launch {launch}: word {i}");
        }
    }
    free(nodes);
}

/// Each invocation takes a ticket (one atomic), then adds every node of its segment into a
/// histogram and a total (two atomics per node: far more than the atomic log), faulting
/// along the way, and finally stores its ticket and 40 more words (more than the private
/// store log: escalated for its atomics first, it then needs a store table too).
const TICKETS: &str = "
fn tickets(id: u32) {
    let starts = unimem_arg_ptr(0u);
    let hist = unimem_arg_ptr(2u);
    let seg = unimem_arg_u32(4u);
    let counters = unimem_arg_ptr(6u);
    let out = unimem_arg_ptr(8u);
    let ticket = unimem_atomic_add_u32(counters, 1u);
    var p = unimem_load_ptr(starts + u64(id) * 8lu);
    for (var k = 0u; k < seg && p != 0lu && unimem_running(); k++) {
        let v = unimem_load_u32(p);
        unimem_atomic_add_u32(hist + u64(v % 16u) * 4lu, 1u);
        unimem_atomic_add_u32(counters + 4lu, v);
        p = unimem_load_ptr(p + 8lu);
    }
    unimem_store_u32(out + u64(id) * 4lu, ticket);
    let scratch = unimem_arg_ptr(10u) + u64(id) * 160lu;
    for (var j = 0u; j < 40u; j++) {
        unimem_store_u32(scratch + u64(j) * 4lu, ticket + j);
    }
}
";

#[test]
fn invocations_running_hundreds_of_atomics_apply_each_once() {
    let _s = serial();
    let test = "invocations_running_hundreds_of_atomics_apply_each_once";
    let Some(k) = kernel(test, TICKETS, "tickets") else { return };
    let (len, seg) = (60_000usize, 300usize);
    let nodes = build(len, value);
    let starts: Vec<u64> = nodes.iter().step_by(seg).map(|&p| p as u64).collect();
    let n = starts.len();
    let mut hist_expect = vec![0u32; 16];
    for i in 0..len {
        hist_expect[value(i) as usize % 16] += 1;
    }
    let total: u32 = (0..len).map(value).sum();
    for launch in 0..2 {
        let hist = vec![0u32; 16];
        let counters = vec![0u32; 2];
        let out = vec![u32::MAX; n];
        let scratch = vec![u32::MAX; 40 * n];
        let r = k
            .launch(n as u32, &Args::new().ptr(&starts[..]).ptr(&hist[..]).u32(seg as u32).ptr(&counters[..]).ptr(&out[..]).ptr(&scratch[..]))
            .unwrap();
        eprintln!("launch {launch}: {r:?}");
        assert!(r.escalated >= n as u64 && r.device_faults > 0, "{r:?}");
        assert_eq!(hist, hist_expect, "launch {launch}: each histogram atomic applied once");
        assert_eq!(counters, vec![n as u32, total], "launch {launch}: tickets issued, total");
        let mut tickets = out.clone();
        tickets.sort_unstable();
        assert_eq!(tickets, (0..n as u32).collect::<Vec<_>>(), "launch {launch}: a replay returns the saved ticket");
        for i in 0..n {
            let expect: Vec<u32> = (0..40).map(|j| out[i] + j).collect();
            assert_eq!(scratch[40 * i..40 * (i + 1)], expect[..], "launch {launch}: invocation {i}'s stores");
        }
    }
    free(nodes);
}

/// Invocation `id` reads the node `ptrs[id]` points to (nodes in random order over 32 blocks)
/// and stores its value in `out[id]` (a third block): three blocks each, of which the pool
/// keeps only a few once the arguments are pinned.
const GATHER: &str = "
fn gather(id: u32) {
    let p = unimem_load_ptr(unimem_arg_ptr(0u) + u64(id) * 8lu);
    unimem_store_u32(unimem_arg_ptr(2u) + u64(id) * 4lu, unimem_load_u32(p));
}
";

/// Random gathers over four times the pool complete in a few dozen rounds: every invocation
/// needs a pointer's block, a node's and the output's, and paced rounds (`pacing.rs`) load
/// them together (29-30 rounds measured; 202-233 before pacing, when the blocks one round
/// loaded served many invocations the next only by chance). A heuristic tried before pacing
/// ran fewer invocations per round once faults mostly hit evicted blocks, and took 23 732
/// rounds here.
#[test]
fn random_gathers_over_an_oversubscribed_pool_complete() {
    let _s = serial();
    let Some(k) = kernel("random_gathers_over_an_oversubscribed_pool_complete", GATHER, "gather") else { return };
    let n = 32 * 65536 / 64;
    let mut nodes: Vec<Box<[u32; 16]>> = (0..n).map(|i| Box::new([i as u32 * 7 + 1; 16])).collect();
    kernel_common::shuffle(&mut nodes, 0x9e37_79b9);
    let ptrs: Vec<u64> = nodes.iter().map(|b| b.as_ptr() as u64).collect();
    let out = vec![0u32; n];
    let r = k.launch(n as u32, &Args::new().ptr(&ptrs[..]).ptr(&out[..])).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{r:?}");
    for i in 0..n {
        assert_eq!(out[i], nodes[i][0], "invocation {i}");
    }
    assert!(r.rounds < 120, "{r:?}");
}

/// Invocation `id` adds 1 to `per` pseudo-random bins (xorshift from its id) of a histogram
/// of `nb` words: atomics only, each to a block it may not have, one after the other.
const SCATTER: &str = "
fn scatter(id: u32) {
    let bins = unimem_arg_ptr(0u);
    let nb = unimem_arg_u32(2u);
    let per = unimem_arg_u32(3u);
    var x = id * 2654435761u + 12345u;
    for (var i = 0u; i < per; i++) {
        x ^= x << 13u; x ^= x >> 17u; x ^= x << 5u;
        unimem_atomic_add_u32(bins + u64(x % nb) * 4lu, 1u);
    }
}
";

/// Invocations whose atomics spread over eight times the pool need one block at a time: an
/// atomic applied is remembered, so each round in which an invocation saves more results is
/// progress. Found by a user's test: solo rounds counted only completions and new blocks, so
/// 100 invocations of 40 atomics each failed with "invocation 0 cannot complete ... needs more
/// memory at once than the device pool holds" (invocation 0 alone completes), and 20 000 of
/// them ran out of rounds (solo rounds ran the ordinary invocations one at a time until each
/// was escalated, about 6 rounds each, before any escalated one ran).
#[test]
fn invocations_whose_atomics_need_one_block_at_a_time_complete() {
    let _s = serial();
    let test = "invocations_whose_atomics_need_one_block_at_a_time_complete";
    let Some(k) = kernel(test, SCATTER, "scatter") else { return };
    let nb = 1u32 << 20; // 4 MiB of bins: 64 blocks
    let xorshift = |mut x: u32| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    for (n, per) in [(1u32, 40u32), (300, 40), (2000, 6)] {
        let bins = vec![0u32; nb as usize];
        let r = k.launch(n, &Args::new().ptr(&bins[..]).u32(nb).u32(per)).unwrap_or_else(|e| panic!("{n} invocations of {per} atomics: {e}"));
        eprintln!("{n} x {per}: {r:?}");
        let mut expect = vec![0u32; nb as usize];
        for id in 0..n {
            let mut x = id.wrapping_mul(2_654_435_761).wrapping_add(12345);
            for _ in 0..per {
                x = xorshift(x);
                expect[(x % nb) as usize] += 1;
            }
        }
        let wrong = (0..nb as usize).filter(|&i| bins[i] != expect[i]).count();
        assert_eq!(wrong, 0, "{n} invocations of {per} atomics: each atomic applied once");
    }
}
