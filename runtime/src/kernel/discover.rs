//! Structure discovery before a launch (migrating mode): the blocks a kernel will reach
//! through the pointers stored in the data its arguments point to, found on the CPU and
//! prefetched, so that a cold launch over a pointer-rich structure (a 1M-node tree, a graph of
//! boxed adjacency lists) runs in one round instead of one round per level of faults.
//!
//! The walk is a conservative mark phase at block granularity, as a conservative garbage
//! collector scans a heap: every aligned 8-byte word of a live allocation in a scanned block
//! whose value is an address in the managed heap names a block, and named blocks holding a
//! live allocation are wanted. It over-approximates (an integer that happens to look like a
//! heap address costs one block of prefetch, never a wrong result: prefetching is a hint, and
//! device faults still catch whatever the walk missed) and never reads memory a kernel could
//! not have reached from the roots through such words.
//!
//! Which blocks are scanned:
//! - blocks in state `Host`, roots (the arguments' allocations) or found: they are about to
//!   move, so their pointers lead to blocks the kernel may need next, and scanning one costs
//!   less than the upload it precedes;
//! - resident roots whose host copy is readable (`Shared`), the first [`RESIDENT_ROOTS`] of
//!   them: a small table of pointers passed again (a list's segment starts) is rescanned at
//!   each launch, a large resident input array is not rescanned at every launch.
//!
//! A block already resident is wanted but not scanned otherwise: its neighbours were found
//! when it moved, or by the faults of an earlier launch (which `Kernel` remembers along with
//! what the walk found), so a warm launch scans little. A `Device` block is never scanned: its
//! host pages are absent, and reading them would bring it home.
//!
//! Cost: one pass over the live words of each scanned block (a 64 KiB block is 8192 words,
//! a few microseconds), bounded by `budget` blocks found.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::coherence::{Space, State};

/// The blocks reachable from the blocks `roots` through pointers in live allocations (see the
/// module documentation), in the order found (breadth first), excluding `roots` and `known`,
/// at most `budget`. Only blocks holding a live allocation are returned.
///
/// Racy against other threads by design: words are read with relaxed atomic loads and only
/// guide prefetching. Must not run while the calling thread holds a block's migration bit.
pub fn reachable(space: &Space, roots: &[u32], known: &[u32], budget: usize) -> Vec<u32> {
    let mut walk = Walk::new(space, budget);
    for &b in roots.iter().chain(known) {
        walk.mark(b);
    }
    let mut resident = RESIDENT_ROOTS;
    let mut queue: VecDeque<u32> = VecDeque::new();
    for &b in roots {
        match space.state(b as usize) {
            State::Host => queue.push_back(b),
            State::Shared | State::InPlace if resident > 0 => {
                resident -= 1;
                queue.push_back(b);
            }
            _ => {}
        }
    }
    while let Some(b) = queue.pop_front() {
        if walk.full() {
            break;
        }
        // Checked again: another thread may have moved it since (reading a Device block's
        // absent pages would bring it home).
        if space.state(b as usize) != State::Device {
            walk.scan(b, &mut queue);
        }
    }
    walk.found
}

/// Resident root blocks scanned per launch (see the module documentation): 1 MiB of
/// 64 KiB blocks, tens of microseconds.
pub const RESIDENT_ROOTS: usize = 16;

/// The walk's state: which blocks it has named (a bitmap over the space's blocks), and what
/// it found.
struct Walk<'a> {
    space: &'a Space,
    /// Bit `b`: block `b` was named (found, rejected, a root, or known).
    seen: Vec<u64>,
    found: Vec<u32>,
    budget: usize,
}

impl<'a> Walk<'a> {
    fn new(space: &'a Space, budget: usize) -> Walk<'a> {
        Walk { space, seen: vec![0; space.block_count().div_ceil(64)], found: Vec::new(), budget }
    }

    fn full(&self) -> bool {
        self.found.len() >= self.budget
    }

    /// Marks block `b` seen; true if it was not.
    fn mark(&mut self, b: u32) -> bool {
        let (w, bit) = (b as usize / 64, 1u64 << (b % 64));
        let Some(word) = self.seen.get_mut(w) else { return false };
        let new = *word & bit == 0;
        *word |= bit;
        new
    }

    /// Scans the live allocations of block `b`; wanted blocks they point to are found, and
    /// those still `Host` queued for scanning.
    fn scan(&mut self, b: u32, queue: &mut VecDeque<u32>) {
        let space = self.space;
        let (start, bs) = (space.block_addr(b as usize), space.block_size());
        let (base, len) = (space.block_addr(0) as u64, (space.block_count() * bs) as u64);
        let shift = bs.trailing_zeros();
        let mut named: Vec<u32> = Vec::new();
        unimem_alloc::for_each_live_run(start, bs, |a, size| {
            // The run's aligned words inside this block.
            let lo = a.max(start).next_multiple_of(8);
            let hi = (a + size).min(start + bs);
            if hi <= lo + 7 {
                return;
            }
            // SAFETY: `[lo, hi)` is inside live allocations of a block whose host copy is
            // readable (not Device when the caller checked: Host, Shared or InPlace), in the
            // committed heap, which stays mapped; 8-aligned; AtomicU64 has u64's layout. Other
            // threads may write these words: the loads are atomic, and their values only hints.
            let words = unsafe { std::slice::from_raw_parts(lo as *const AtomicU64, (hi - lo) / 8) };
            pointers_in(words, base, len, shift, |n| named.push(n));
        });
        for n in named {
            if self.full() {
                return;
            }
            if !self.mark(n) || !unimem_alloc::any_live(space.block_addr(n as usize), bs) {
                continue;
            }
            self.found.push(n);
            if space.state(n as usize) == State::Host {
                queue.push_back(n);
            }
        }
    }
}

/// Calls `hit(block)` for each word of `words` holding an address in `[base, base + len)`,
/// with its block number (`shift`: log2 of the block size); a run of words naming the same
/// block calls once.
fn pointers_in(words: &[AtomicU64], base: u64, len: u64, shift: u32, mut hit: impl FnMut(u32)) {
    let mut last = u32::MAX;
    for w in words {
        let off = w.load(Relaxed).wrapping_sub(base);
        if off < len {
            let b = (off >> shift) as u32;
            if b != last {
                last = b;
                hit(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_name_their_blocks_once_per_run_and_other_words_nothing() {
        let base = 0x7f00_0000_0000u64;
        let words: Vec<AtomicU64> = [
            base + 5,                // block 0
            base + 8,                // block 0 again: same run
            7,                       // a small integer
            base - 8,                // just below the heap
            base + (3 << 16) + 24,   // block 3
            base + (1 << 20),        // at the end of the heap (len = 1 MiB): outside
            base + (1 << 20) - 1,    // last byte: block 15
            base,                    // block 0 again, after another block: named again
        ]
        .into_iter()
        .map(AtomicU64::new)
        .collect();
        let mut hits = Vec::new();
        pointers_in(&words, base, 1 << 20, 16, |b| hits.push(b));
        assert_eq!(hits, [0, 3, 15, 0]);
    }
}
