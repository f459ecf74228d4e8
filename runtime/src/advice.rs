//! Remembered advice: which address ranges the program advised with [`crate::advise`], and
//! what each launch does with them.
//!
//! Advice attaches to an address range of the managed heap and lasts until `Advice::Clear`
//! covers it or the allocator frees the memory under it: [`freed`] (called from the
//! allocator's free hook) clips the freed bytes out of the table, so memory reused by a new
//! allocation does not inherit advice, with one exception: a small hole inside a range
//! (an object freed among advised neighbours) does not split it unless it leaves a block
//! without live allocations, since advice acts on whole blocks and the block keeps it for
//! the neighbours. What each advice does:
//!
//! | advice | when given | at every launch |
//! |---|---|---|
//! | `ReadMostly`, `Mirror` | read-duplicated on the device (Shared) | made resident read-duplicated before the first round, kept most recently used during replays |
//! | `PreferredDevice` | moved to the device | moved to the device before the first round, kept most recently used |
//! | `PreferredHost` | brought home | after the launch, blocks the kernel pulled to the device are brought home, so the CPU does not fault on them |
//!
//! The table is a short sorted list of disjoint ranges (advice is given per data structure,
//! not per object) in a fixed array of [`MAX_RANGES`] entries, so that the free hook never
//! allocates; advising beyond that is an error. Advice is a hint: when a free splits a range
//! and the table is full, the part after the hole is dropped.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

use crate::api::Advice;

/// Most distinct advised ranges.
pub const MAX_RANGES: usize = 4096;

/// An advised range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advised {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
    /// The advice (never `Clear`).
    pub advice: Advice,
}

const NONE: Advised = Advised { start: 0, end: 0, advice: Advice::Clear };

/// Disjoint advised ranges, sorted by `start`. Invariant: in `ranges[..len]`, no two entries
/// overlap, no entry is empty, none holds `Advice::Clear`.
#[derive(Debug)]
pub struct AdviceTable {
    len: usize,
    ranges: [Advised; MAX_RANGES],
}

impl Default for AdviceTable {
    fn default() -> AdviceTable {
        AdviceTable::new()
    }
}

/// The table is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableFull;

impl AdviceTable {
    /// An empty table.
    pub const fn new() -> AdviceTable {
        AdviceTable { len: 0, ranges: [NONE; MAX_RANGES] }
    }

    /// Sets `[start, end)` to `advice` (`Clear` removes advice there), replacing what
    /// overlapping entries said about it. Adjacent ranges with the same advice merge.
    pub fn set(&mut self, start: usize, end: usize, advice: Advice) -> Result<(), TableFull> {
        if start >= end {
            return Ok(());
        }
        let mut next: Vec<Advised> = Vec::with_capacity(self.len + 2);
        for r in self.ranges() {
            if r.end <= start || r.start >= end {
                next.push(*r);
                continue;
            }
            if r.start < start {
                next.push(Advised { end: start, ..*r });
            }
            if r.end > end {
                next.push(Advised { start: end, ..*r });
            }
        }
        if advice != Advice::Clear {
            next.push(Advised { start, end, advice });
        }
        next.sort_unstable_by_key(|r| r.start);
        let mut merged: Vec<Advised> = Vec::with_capacity(next.len());
        for r in next {
            match merged.last_mut() {
                Some(m) if m.end == r.start && m.advice == r.advice => m.end = r.end,
                _ => merged.push(r),
            }
        }
        if merged.len() > MAX_RANGES {
            return Err(TableFull);
        }
        self.ranges[..merged.len()].copy_from_slice(&merged);
        self.len = merged.len();
        Ok(())
    }

    /// Removes advice from `[start, end)` without allocating (the free hook's path): a range
    /// inside it goes, one that overlaps an end is trimmed. A range the hole falls strictly
    /// inside is split only if `split` (the free hook: the hole covers a block left without
    /// live allocations), keeping both sides while the table has room, else only the left
    /// one; otherwise it stays whole.
    pub fn clip(&mut self, start: usize, end: usize, split: bool) {
        let mut i = 0;
        while i < self.len {
            let r = self.ranges[i];
            if r.end <= start || r.start >= end {
                i += 1;
                continue;
            }
            let (left, right) = (r.start < start, r.end > end);
            match (left, right) {
                (true, true) if !split => {}
                (false, false) => {
                    self.ranges.copy_within(i + 1..self.len, i);
                    self.len -= 1;
                    continue;
                }
                (true, false) => self.ranges[i].end = start,
                (false, true) => self.ranges[i].start = end,
                (true, true) => {
                    self.ranges[i].end = start;
                    if self.len < MAX_RANGES {
                        self.ranges.copy_within(i + 1..self.len, i + 2);
                        self.ranges[i + 1] = Advised { start: end, ..r };
                        self.len += 1;
                        i += 1;
                    }
                }
            }
            i += 1;
        }
    }

    /// Whether any advised range overlaps `[start, end)` (a binary search).
    pub fn overlaps(&self, start: usize, end: usize) -> bool {
        let r = self.ranges();
        let i = r.partition_point(|a| a.end <= start);
        i < r.len() && r[i].start < end
    }

    /// The advised ranges, sorted.
    pub fn ranges(&self) -> &[Advised] {
        &self.ranges[..self.len]
    }
}

/// The process's table. Lock rules: no allocation of managed memory and no block lock is
/// taken while it is held (so the free hook may take it), never taken in the fault handler.
/// The free hook reads the allocator's live bitmaps under it (`any_live`, lock-free).
static TABLE: Mutex<AdviceTable> = Mutex::new(AdviceTable::new());
/// Entries in `TABLE` (written under its lock), read without it by the free hook so that
/// frees cost one load while nothing is advised.
static ADVISED: AtomicUsize = AtomicUsize::new(0);

/// Sets advice on `[start, end)` (see [`AdviceTable::set`]). Call inside an `InternalScope`.
pub fn set(start: usize, end: usize, advice: Advice) -> Result<(), TableFull> {
    let mut t = lock();
    let r = t.set(start, end, advice);
    ADVISED.store(t.len, Relaxed);
    r
}

/// The advised ranges now.
pub fn ranges() -> Vec<Advised> {
    lock().ranges().to_vec()
}

/// The allocator freed `[addr, addr+size)` in a heap of `block_size` blocks (a power of
/// two). Advice acts on blocks, so the table follows them: the freed bytes, together with
/// the blocks they touch that hold no live allocation any more, lose their advice, except
/// that a hole strictly inside an advised range splits it only where it covers such a block.
/// A small object freed among advised neighbours thus leaves its range whole (its block
/// keeps the advice for them); freeing one object per table entry would otherwise fill the
/// table. Called from the free hook, on any thread: never allocates; takes the table lock
/// only while something is advised.
pub fn freed(addr: usize, size: usize, block_size: usize) {
    if ADVISED.load(Relaxed) == 0 || size == 0 {
        return;
    }
    let end = addr.saturating_add(size);
    let (first, last) = (addr & !(block_size - 1), (end - 1) & !(block_size - 1));
    let mut t = lock();
    if !t.overlaps(first, last.saturating_add(block_size)) {
        return;
    }
    // Blocks strictly between the first and the last lie inside the freed bytes: dead.
    let dead = |b: usize| !unimem_alloc::any_live(b, block_size);
    let dead_start = if dead(first) { first } else { first.saturating_add(block_size) };
    let dead_end = if dead(last) { last.saturating_add(block_size) } else { last };
    let (start, end, split) = if dead_start < dead_end { (addr.min(dead_start), end.max(dead_end), true) } else { (addr, end, false) };
    t.clip(start, end, split);
    ADVISED.store(t.len, Relaxed);
}

fn lock() -> MutexGuard<'static, AdviceTable> {
    TABLE.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Advice::*;

    fn spans(t: &AdviceTable) -> Vec<(usize, usize, Advice)> {
        t.ranges().iter().map(|r| (r.start, r.end, r.advice)).collect()
    }

    #[test]
    fn later_advice_replaces_the_overlap_and_splits_the_rest() {
        let mut t = AdviceTable::new();
        t.set(100, 200, ReadMostly).unwrap();
        t.set(150, 250, PreferredHost).unwrap();
        assert_eq!(spans(&t), vec![(100, 150, ReadMostly), (150, 250, PreferredHost)]);
        t.set(120, 130, PreferredDevice).unwrap();
        assert_eq!(spans(&t), vec![(100, 120, ReadMostly), (120, 130, PreferredDevice), (130, 150, ReadMostly), (150, 250, PreferredHost)]);
    }

    #[test]
    fn clear_removes_and_same_advice_merges() {
        let mut t = AdviceTable::new();
        t.set(0, 100, Mirror).unwrap();
        t.set(100, 200, Mirror).unwrap();
        assert_eq!(spans(&t), vec![(0, 200, Mirror)]);
        t.set(50, 150, Clear).unwrap();
        assert_eq!(spans(&t), vec![(0, 50, Mirror), (150, 200, Mirror)]);
        t.set(0, 1000, Clear).unwrap();
        assert!(t.ranges().is_empty());
        t.set(10, 10, Mirror).unwrap();
        assert!(t.ranges().is_empty(), "empty ranges are ignored");
    }

    #[test]
    fn the_table_is_bounded() {
        let mut t = AdviceTable::new();
        for i in 0..MAX_RANGES {
            t.set(i * 10, i * 10 + 5, ReadMostly).unwrap();
        }
        assert_eq!(t.set(MAX_RANGES * 10, MAX_RANGES * 10 + 5, ReadMostly), Err(TableFull));
        assert_eq!(t.ranges().len(), MAX_RANGES, "a refused call changes nothing");
        t.set(0, 5, Clear).unwrap();
        t.set(MAX_RANGES * 10, MAX_RANGES * 10 + 5, ReadMostly).unwrap();
        // A hole in a full table keeps the left part only.
        t.clip(MAX_RANGES * 10 + 1, MAX_RANGES * 10 + 2, true);
        assert_eq!(t.ranges().last().map(|r| (r.start, r.end)), Some((MAX_RANGES * 10, MAX_RANGES * 10 + 1)));
    }

    #[test]
    fn freeing_clips_trims_splits_and_removes() {
        let mut t = AdviceTable::new();
        t.set(100, 200, ReadMostly).unwrap();
        t.set(300, 400, PreferredHost).unwrap();
        t.set(500, 600, Mirror).unwrap();
        t.clip(140, 160, false);
        assert_eq!(spans(&t)[0], (100, 200, ReadMostly), "a hole strictly inside splits only when allowed");
        t.clip(140, 160, true);
        t.clip(350, 450, false);
        t.clip(500, 600, false);
        assert_eq!(spans(&t), vec![(100, 140, ReadMostly), (160, 200, ReadMostly), (300, 350, PreferredHost)]);
        assert!(t.overlaps(150, 170) && t.overlaps(0, 101) && t.overlaps(349, 1000));
        assert!(!t.overlaps(140, 160) && !t.overlaps(0, 100) && !t.overlaps(200, 300) && !t.overlaps(350, 1000));
        t.clip(0, 1000, false);
        assert!(t.ranges().is_empty() && !t.overlaps(0, usize::MAX));
    }
}
