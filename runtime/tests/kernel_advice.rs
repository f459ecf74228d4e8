//! Remembered advice (`unimem::advise`): read-mostly ranges are made resident before every
//! launch, preferred-host ranges come home after every launch, `Clear` and freeing the memory
//! end the advice (memory reused by a new allocation does not inherit it; objects freed among
//! advised ones keep it while their block holds live allocations, so frees do not fill the
//! table). Each check compares against the same step without advice, so that it
//! fails if the advice is not applied. Runs with blocks migrating (`UNIMEM_IN_PLACE=off`):
//! in place, advice has nothing to move. Device-test rule of `unimem::device::test_support`.

#![allow(clippy::useless_vec)] // kernels need heap (managed) memory, not stack arrays

mod kernel_common;

use kernel_common::{kernel, serial_migrating as serial};
use unimem::{Advice, Args};

#[global_allocator]
static A: unimem::Allocator = unimem::Allocator;


/// `out[id] = table[id]`, where the table is reached through a pointer stored in a box (so
/// it is not a launch argument, and only advice or history makes it resident beforehand).
const GATHER: &str = "
fn gather(id: u32) {
    let table = unimem_load_ptr(unimem_arg_ptr(0u));
    let out = unimem_arg_ptr(2u);
    unimem_store_u32(out + u64(id) * 4lu, unimem_load_u32(table + u64(id) * 4lu));
}
";

const N: usize = 1 << 16; // 256 KiB: several blocks

/// A fresh kernel object (no launch history), one launch over `table`; returns its device
/// faults after checking the result.
fn gather_once(test: &str, table: &[u32]) -> Option<u64> {
    let k = kernel(test, GATHER, "gather")?;
    let holder = Box::new(table.as_ptr() as u64);
    let out = vec![0u32; N];
    let r = k.launch(N as u32, &Args::new().ptr(&*holder).ptr(&out[..])).unwrap();
    assert_eq!(out[..], table[..], "{test}");
    Some(r.device_faults)
}

/// CPU writes to every word: device copies become stale and the blocks are the host's.
fn rewrite(table: &mut [u32], salt: u32) {
    for (i, w) in table.iter_mut().enumerate() {
        *w = (i as u32).wrapping_mul(2654435761) ^ salt;
    }
}

#[test]
fn read_mostly_advice_is_applied_at_every_launch_until_cleared() {
    let _s = serial();
    let test = "read_mostly_advice_is_applied_at_every_launch_until_cleared";
    let mut table = vec![0u32; N];
    rewrite(&mut table, 1);
    let Some(cold) = gather_once(test, &table) else { return };
    assert!(cold > 0, "without advice the table faults in");
    unimem::advise(table.as_ptr().cast(), N * 4, Advice::ReadMostly).unwrap();
    for salt in 2..4 {
        rewrite(&mut table, salt);
        let faults = gather_once(test, &table).unwrap();
        assert_eq!(faults, 0, "launch after CPU writes, salt {salt}: the advised table was made resident first");
    }
    unimem::advise(table.as_ptr().cast(), N * 4, Advice::Clear).unwrap();
    rewrite(&mut table, 9);
    assert!(gather_once(test, &table).unwrap() > 0, "after Clear the table faults in again");
}

#[test]
fn preferred_host_advice_brings_kernel_writes_home_after_every_launch() {
    let _s = serial();
    let test = "preferred_host_advice_brings_kernel_writes_home_after_every_launch";
    let mut table = vec![0u32; N];
    rewrite(&mut table, 5);
    let Some(k) = kernel(test, GATHER, "gather") else { return };
    let holder = Box::new(table.as_ptr() as u64);
    let out = vec![0u32; N];
    // CPU faults taken by reading `out` after a launch (only those: small objects such as the
    // launch's own argument vectors may share a block with `holder`, which is on the device).
    let faults_reading_out = || {
        k.launch(N as u32, &Args::new().ptr(&*holder).ptr(&out[..])).unwrap();
        let before = unimem::stats();
        let sum: u64 = out.iter().map(|&w| u64::from(w)).sum();
        assert_eq!(sum, table.iter().map(|&w| u64::from(w)).sum::<u64>());
        unimem::stats().since(&before).cpu_faults()
    };
    assert!(faults_reading_out() > 0, "without advice, the kernel's writes are on the device");
    unimem::advise(out.as_ptr().cast(), N * 4, Advice::PreferredHost).unwrap();
    for launch in 0..2 {
        assert_eq!(faults_reading_out(), 0, "launch {launch}: written blocks came home with the launch");
    }
    unimem::advise(out.as_ptr().cast(), N * 4, Advice::Clear).unwrap();
    assert!(faults_reading_out() > 0);
}

#[test]
fn advice_ends_with_the_memory_and_is_refused_outside_the_heap() {
    let _s = serial();
    let test = "advice_ends_with_the_memory_and_is_refused_outside_the_heap";
    let table = vec![7u32; N];
    let Some(_) = gather_once(test, &table) else { return };
    let (start, end) = (table.as_ptr() as usize, table.as_ptr() as usize + N * 4);
    unimem::advise(table.as_ptr().cast(), N * 4, Advice::ReadMostly).unwrap();
    let advised = |s: usize, e: usize| unimem::advice::ranges().iter().any(|r| r.start < e && s < r.end);
    assert!(advised(start, end));
    drop(table);
    assert!(!advised(start, end), "freeing the memory ends its advice");
    // Memory reused at the same address (same size) starts without advice: it faults in.
    let mut other = vec![1u32; N];
    rewrite(&mut other, 3);
    assert!(gather_once(test, &other).unwrap() > 0);
    let on_stack = [0u32; 4];
    let e = unimem::advise(on_stack.as_ptr().cast(), 16, Advice::ReadMostly).unwrap_err().to_string();
    assert!(e.contains(&format!("{:#x}", on_stack.as_ptr() as usize)), "{e}");
}

/// Objects freed among advised neighbours do not fill the advice table: advice acts on
/// blocks, so a hole inside an advised range splits it only where a block is left without
/// live allocations. Before, each free split the range, and after 4096 of them the table was
/// full: later `advise` calls failed ("4096 address ranges already carry advice").
#[test]
fn freeing_objects_among_advised_ones_keeps_the_table_small() {
    let _s = serial();
    let test = "freeing_objects_among_advised_ones_keeps_the_table_small";
    let Some(_) = kernel(test, GATHER, "gather") else { return };
    // 20 000 objects of a size class nothing else here uses (208 bytes), about 64 blocks.
    let objects: Vec<Box<[u64; 26]>> = (0..20_000u64).map(|i| Box::new([i; 26])).collect();
    let (lo, hi) = objects.iter().map(|b| b.as_ptr() as usize).fold((usize::MAX, 0), |(l, h), p| (l.min(p), h.max(p + 208)));
    let overlapping = |s: usize, e: usize| unimem::advice::ranges().into_iter().filter(|r| r.start < e && s < r.end).collect::<Vec<_>>();
    // The blocks holding the objects. Others in [lo, hi) may be free already when the advice
    // is given (another thread's allocation, such as the test harness's output buffer, freed
    // while the objects were made): those keep the advice, as no free empties them.
    let bs = unimem::runtime().unwrap().block_size();
    let object_blocks: std::collections::BTreeSet<usize> = objects.iter().map(|b| b.as_ptr() as usize & !(bs - 1)).chain(objects.iter().map(|b| (b.as_ptr() as usize + 207) & !(bs - 1))).collect();
    unimem::advise(lo as *const u8, hi - lo, Advice::ReadMostly).unwrap();
    // Free every other object: 10 000 holes, none leaving a block empty.
    let (freed, kept): (Vec<_>, Vec<_>) = objects.into_iter().enumerate().partition(|(i, _)| i % 2 == 1);
    drop(freed);
    let ranges = overlapping(lo, hi);
    assert!(ranges.len() <= 2, "{} ranges after 10 000 frees: {:?}", ranges.len(), &ranges[..ranges.len().min(4)]);
    for (_, b) in &kept {
        let p = b.as_ptr() as usize;
        assert!(ranges.iter().any(|r| r.start <= p && p + 208 <= r.end), "a live advised object lost its advice at {p:#x}");
    }
    // Advice can still be given, and taken back.
    let other = vec![0u32; N];
    unimem::advise(other.as_ptr().cast(), N * 4, Advice::PreferredHost).unwrap();
    unimem::advise(other.as_ptr().cast(), N * 4, Advice::Clear).unwrap();
    // Freeing the middle half empties blocks: they lose their advice (the range splits).
    let mut kept = kept;
    let tail = kept.split_off(kept.len() * 3 / 4);
    let middle = kept.split_off(kept.len() / 3);
    let blocks_of = |objects: &[(usize, Box<[u64; 26]>)]| objects.iter().map(|(_, b)| b.as_ptr() as usize & !(bs - 1)).collect::<Vec<_>>();
    let emptied_but_advised = |blocks: &[usize]| {
        let emptied: Vec<usize> = blocks.iter().copied().filter(|&b| !unimem_alloc::any_live(b, bs)).collect();
        assert!(!emptied.is_empty(), "the frees emptied no block");
        emptied.into_iter().find(|&b| !overlapping(b, b + bs).is_empty())
    };
    let middle_blocks = blocks_of(&middle);
    drop(middle);
    assert_eq!(emptied_but_advised(&middle_blocks), None, "a block emptied by frees kept its advice");
    // Freeing the rest leaves advice only where a block still holds a live allocation.
    let rest_blocks = [blocks_of(&kept), blocks_of(&tail)].concat();
    drop((kept, tail));
    assert_eq!(emptied_but_advised(&rest_blocks), None);
    for r in overlapping(lo, hi) {
        for b in object_blocks.range(r.start..r.end) {
            assert!(unimem_alloc::any_live(*b, bs), "advice left on freed memory: block {b:#x} of {r:?}");
        }
    }
    unimem::advise(lo as *const u8, hi - lo, Advice::Clear).unwrap();
}
