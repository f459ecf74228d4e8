//! Concurrent stress: threads swap random blocks in and out of a shared table, so most
//! frees are remote frees racing with their owner's allocations, spans move between
//! lists, and threads exit mid-way (orphans, adoption). Every block carries a pattern
//! derived from its address and size that is checked before it is freed.

use std::sync::atomic::{AtomicUsize, Ordering::*};
use std::sync::Arc;
use unimem_alloc as ua;

const SLOTS: usize = 4096;

fn pattern(p: usize, size: usize) -> u8 {
    ((p >> 4) ^ size ^ (size >> 8)) as u8 | 1
}

fn fill(p: usize, size: usize) {
    // SAFETY: fresh block of at least `size` bytes.
    unsafe { std::ptr::write_bytes(p as *mut u8, pattern(p, size), size.min(256)) };
}

/// Check a block taken out of the table and free it. Its first word holds its size; the
/// pattern covers the rest of its first 256 bytes.
fn check_and_free(entry: usize) {
    if entry == 0 {
        return;
    }
    // SAFETY: a live block, now owned by this thread alone.
    let stored = unsafe { *(entry as *const usize) };
    let n = stored.min(256);
    // SAFETY: as above.
    let body = unsafe { std::slice::from_raw_parts((entry + 8) as *const u8, n.saturating_sub(8)) };
    let want = pattern(entry, stored);
    assert!(body.iter().all(|&b| b == want), "block {entry:#x} of {stored} bytes corrupted");
    assert!(ua::usable_size(entry as *const u8) >= stored);
    // SAFETY: removed from the table, so nobody else can reach it.
    unsafe { ua::free(entry as *mut u8) };
}

fn worker(table: Arc<Vec<AtomicUsize>>, seed: u64, ops: usize) {
    let mut x = seed | 1;
    for _ in 0..ops {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let slot = (x as usize) % SLOTS;
        let size = match x >> 60 {
            0 => 16 + (x >> 20) as usize % 300_000,
            1..=3 => 16 + (x >> 20) as usize % 8192,
            _ => 16 + (x >> 20) as usize % 512,
        };
        let p = ua::alloc(size) as usize;
        assert_ne!(p, 0);
        fill(p, size);
        // SAFETY: the block has at least 16 bytes; the first word records the size.
        unsafe { *(p as *mut usize) = size };
        let old = table[slot].swap(p, AcqRel);
        check_and_free(old);
    }
}

#[test]
fn threads_swapping_blocks_never_corrupt() {
    let table: Arc<Vec<AtomicUsize>> = Arc::new((0..SLOTS).map(|_| AtomicUsize::new(0)).collect());
    let ops = if cfg!(debug_assertions) { 20_000 } else { 150_000 };
    for wave in 0..3u64 {
        let hs: Vec<_> = (0..4u64)
            .map(|t| {
                let table = table.clone();
                std::thread::spawn(move || worker(table, 0x9e37_79b9_7f4a_7c15 ^ (wave * 8 + t + 1), ops))
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    }
    for e in table.iter() {
        check_and_free(e.swap(0, AcqRel));
    }
    ua::validate();
}
