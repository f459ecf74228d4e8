//! A region's page heap: hands out and takes back runs of slices.
//!
//! Each heap (managed, internal) owns one contiguous region of the reservation. Slices
//! below `top` have been used at least once; slices at or above it are untouched (and
//! therefore zero). Memory is committed (made read-write) in [`COMMIT_CHUNK`] steps from
//! the bottom, so the committed part of a region stays one mapping.
//!
//! # Invariants (all protected by the region's lock)
//! - Every slice in `[first, top)` is in exactly one run: free, small or large.
//! - A free run has `Kind::Free` at `metas[start]`; the page map entries of its first and
//!   last slices name it and its interior entries are 0. Free runs are never adjacent
//!   (they are merged when freed) and each is on exactly one bin list.
//! - An allocated run has every page-map entry naming it (set before it is returned).
//! - A free run's `free_state` has [`DIRTY`] (resident, counted in `dirty_bytes`, a purge
//!   candidate) and/or [`NONZERO`] (may hold old data; without it the run reads as zero).
//!   `dirty_bytes` is the total size of free runs with `DIRTY` set.
//! - A run the purge filter refuses (the runtime has protections on it) loses `DIRTY` but
//!   keeps `NONZERO`, so it is not rescanned until it merges with freshly freed memory.

use crate::arena::Arena;
use crate::os;
use crate::sizeclass::{SLICE, SLICE_SHIFT};
use crate::span::{Kind, Span};
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering::*};

/// Free-run state bits (`Span::free_state`).
pub const DIRTY: u8 = 1;
pub const NONZERO: u8 = 2;

/// The purge filter: `fn(start, len) -> bool`, "may these pages be returned to the OS?".
/// 0 = no filter. Set by the runtime, which must not lose pages it has protections on.
static PURGE_FILTER: AtomicUsize = AtomicUsize::new(0);

pub fn set_purge_filter(f: fn(usize, usize) -> bool) {
    PURGE_FILTER.store(f as usize, Release);
}

fn purge_allowed(start: usize, len: usize) -> bool {
    let f = PURGE_FILTER.load(Acquire);
    if f == 0 {
        return true;
    }
    // SAFETY: only `set_purge_filter` stores non-zero values, and it stores a valid
    // `fn(usize, usize) -> bool`.
    let f: fn(usize, usize) -> bool = unsafe { core::mem::transmute(f) };
    f(start, len)
}

/// Minimum time between two threshold-triggered purges of a region.
pub const PURGE_INTERVAL_NS: u64 = 10_000_000;

/// How much is committed at a time when the heap grows.
pub const COMMIT_CHUNK: usize = 32 << 20;
const NUM_BINS: usize = 40;

pub struct Region {
    /// First and end slice index (into the arena-wide page map) of this region.
    pub first: usize,
    pub end: usize,
    /// Slices below `top` have been handed out at least once.
    pub top: usize,
    /// Slices below `committed` are read-write.
    pub committed: usize,
    pub dirty_bytes: usize,
    pub purge_threshold: usize,
    /// When `maybe_purge` last purged (monotonic ns).
    last_purge_ns: u64,
    bins: [*mut Span; NUM_BINS],
}

// SAFETY: the raw pointers are descriptors in the arena's metadata mapping, which lives
// for the whole process; the region is only reached under its mutex.
unsafe impl Send for Region {}

fn bin_of(slices: usize) -> usize {
    if slices <= 16 {
        slices - 1
    } else {
        let lg = (usize::BITS - 1 - slices.leading_zeros()) as usize; // >= 4
        (16 + (lg - 4) * 2 + ((slices >> (lg - 1)) & 1)).min(NUM_BINS - 1)
    }
}

impl Region {
    pub const fn empty() -> Self {
        Region { first: 0, end: 0, top: 0, committed: 0, dirty_bytes: 0, purge_threshold: 0, last_purge_ns: 0, bins: [ptr::null_mut(); NUM_BINS] }
    }

    pub fn init(&mut self, first: usize, end: usize, purge_threshold: usize) {
        *self = Region::empty();
        self.first = first;
        self.end = end;
        self.top = first;
        self.committed = first;
        self.purge_threshold = purge_threshold;
    }

    fn push_bin(&mut self, a: &Arena, s: usize) {
        let span = a.meta(s);
        let b = bin_of(span.slices());
        let head = self.bins[b];
        span.prev.store(ptr::null_mut(), Relaxed);
        span.next.store(head, Relaxed);
        if !head.is_null() {
            // SAFETY: bin lists hold live descriptors (region invariant).
            unsafe { (*head).prev.store(span as *const _ as *mut _, Relaxed) };
        }
        self.bins[b] = span as *const _ as *mut _;
    }

    fn unlink_bin(&mut self, span: &Span) {
        let (p, n) = (span.prev.load(Relaxed), span.next.load(Relaxed));
        if p.is_null() {
            self.bins[bin_of(span.slices())] = n;
        } else {
            // SAFETY: list neighbours are live descriptors (region invariant).
            unsafe { (*p).next.store(n, Relaxed) };
        }
        if !n.is_null() {
            // SAFETY: as above.
            unsafe { (*n).prev.store(p, Relaxed) };
        }
    }

    /// Record a free run `[s, s+n)` (not yet merged, page map not yet updated).
    fn add_free(&mut self, a: &Arena, s: usize, n: usize, state: u8) {
        let m = a.meta(s);
        m.kind.store(Kind::Free as u8, Relaxed);
        m.start.store(a.slice_addr(s), Relaxed);
        m.slices.store(n as u32, Relaxed);
        m.free_state.store(state, Relaxed);
        a.set_map(s, s);
        a.set_map(s + n - 1, s);
        if state & DIRTY != 0 {
            self.dirty_bytes += n * SLICE;
        }
        self.push_bin(a, s);
    }

    fn take_free(&mut self, a: &Arena, s: usize) -> (usize, u8) {
        let m = a.meta(s);
        self.unlink_bin(m);
        let n = m.slices();
        let state = m.free_state.load(Relaxed);
        if state & DIRTY != 0 {
            self.dirty_bytes -= n * SLICE;
        }
        m.kind.store(Kind::None as u8, Relaxed);
        a.set_map(s, usize::MAX);
        a.set_map(s + n - 1, usize::MAX);
        (n, state)
    }

    /// Allocate a run of `n` slices whose start address is a multiple of `align` (a power
    /// of two; `SLICE` or less means no constraint). Returns the first slice index and
    /// whether the memory is known to be zero. The caller initialises `metas[s]` and the
    /// page map before publishing the run. `None` when the region is exhausted.
    pub fn alloc_run(&mut self, a: &Arena, n: usize, align: usize) -> Option<(usize, bool)> {
        let extra = if align > SLICE { align / SLICE - 1 } else { 0 };
        let want = n.checked_add(extra)?;
        // First fit over the bins from the smallest that can hold `want`.
        let mut found = None;
        'bins: for b in bin_of(want.max(1))..NUM_BINS {
            let mut cur = self.bins[b];
            while !cur.is_null() {
                // SAFETY: bin lists hold live descriptors.
                let span = unsafe { &*cur };
                if span.slices() >= want {
                    found = Some(a.slice_of(span.start()));
                    break 'bins;
                }
                cur = span.next.load(Relaxed);
            }
        }
        let (s, total, state) = match found {
            Some(s) => {
                let (total, state) = self.take_free(a, s);
                (s, total, state)
            }
            None => {
                let s = self.top;
                if s.checked_add(want)? > self.end {
                    return None;
                }
                if !self.commit_to(a, s + want) {
                    return None;
                }
                self.top = s + want;
                (s, want, 0)
            }
        };
        // Carve the aligned part out of [s, s+total); give back the prefix and suffix.
        let addr = a.slice_addr(s);
        let aligned = if align > SLICE { (addr + align - 1) & !(align - 1) } else { addr };
        let first = a.slice_of(aligned);
        if first > s {
            self.insert_free(a, s, first - s, state);
        }
        if first + n < s + total {
            self.insert_free(a, first + n, s + total - first - n, state);
        }
        Some((first, state & NONZERO == 0))
    }

    /// Make sure slices below `end` are committed. The committed end stays a multiple of
    /// [`COMMIT_CHUNK`] from the region start (or the region end), so the runtime can treat
    /// any aligned sub-chunk granule as wholly committed or not.
    fn commit_to(&mut self, a: &Arena, end: usize) -> bool {
        if end <= self.committed {
            return true;
        }
        let chunk_slices = COMMIT_CHUNK >> SLICE_SHIFT;
        let target = (self.first + (end - self.first).div_ceil(chunk_slices) * chunk_slices).min(self.end);
        // SAFETY: [committed, target) lies inside this region of the reservation and nothing
        // there is in use (it is above `top`).
        if unsafe { os::commit(a.slice_addr(self.committed), (target - self.committed) * SLICE) }.is_err() {
            return false;
        }
        self.committed = target;
        a.note_committed(self.first, target);
        true
    }

    /// Return run `[s, s+n)` (already unpublished from users: its descriptor is about to
    /// be reused). Merges with free neighbours and may purge.
    pub fn free_run(&mut self, a: &Arena, s: usize, n: usize) {
        for i in s..s + n {
            a.set_map(i, usize::MAX);
        }
        a.meta(s).kind.store(Kind::None as u8, Relaxed);
        self.insert_free(a, s, n, DIRTY | NONZERO);
        if self.dirty_bytes > self.purge_threshold {
            self.maybe_purge();
        }
        #[cfg(feature = "expensive-checks")]
        self.validate(a);
    }

    /// Make `[s, s+n)` (in no run, page map entries 0) a free run, merged with free
    /// neighbours so that free runs are never adjacent.
    fn insert_free(&mut self, a: &Arena, s: usize, n: usize, state: u8) {
        let (mut start, mut len, mut state) = (s, n, state);
        if start > self.first {
            if let Some(l) = a.map_get(start - 1) {
                if a.meta(l).kind() == Kind::Free {
                    let (ln, ld) = self.take_free(a, l);
                    start = l;
                    len += ln;
                    state |= ld;
                }
            }
        }
        if start + len < self.top {
            if let Some(r) = a.map_get(start + len) {
                if r == start + len && a.meta(r).kind() == Kind::Free {
                    let (rn, rd) = self.take_free(a, r);
                    len += rn;
                    state |= rd;
                }
            }
        }
        self.add_free(a, start, len, state);
    }

    /// Shrink allocated run `[s, s+n)` to `keep` slices, freeing the tail.
    pub fn shrink_run(&mut self, a: &Arena, s: usize, n: usize, keep: usize) {
        debug_assert!(keep >= 1 && keep < n);
        self.free_run(a, s + keep, n - keep);
    }

    /// Try to grow allocated run `[s, s+n)` in place to `want` slices by taking the free
    /// run right after it. Returns true on success (page map updated).
    pub fn grow_run(&mut self, a: &Arena, s: usize, n: usize, want: usize) -> bool {
        let next = s + n;
        let need = want - n;
        let fits_in_free = next < self.top
            && a.map_get(next) == Some(next)
            && a.meta(next).kind() == Kind::Free
            && a.meta(next).slices() >= need;
        if fits_in_free {
            let (fl, fd) = self.take_free(a, next);
            if fl > need {
                self.add_free(a, next + need, fl - need, fd);
            }
        } else if next == self.top && next + need <= self.end {
            // Extend into never-used space at the top.
            if !self.commit_to(a, next + need) {
                return false;
            }
            self.top = next + need;
        } else {
            return false;
        }
        for i in next..next + need {
            a.set_map(i, s);
        }
        true
    }

    /// Return the pages of every dirty free run to the OS.
    pub fn purge(&mut self) {
        self.purge_down_to(0);
    }

    /// Return dirty free runs to the OS, largest first (the least likely to be reused
    /// whole soon), until at most `target` dirty bytes remain.
    pub fn purge_down_to(&mut self, target: usize) {
        for b in (0..NUM_BINS).rev() {
            let mut cur = self.bins[b];
            while !cur.is_null() && self.dirty_bytes > target {
                // SAFETY: bin lists hold live descriptors.
                let span = unsafe { &*cur };
                if span.free_state.load(Relaxed) & DIRTY != 0 {
                    let (start, len) = (span.start(), span.slices() * SLICE);
                    if purge_allowed(start, len) {
                        // SAFETY: a free run is committed memory nobody may read.
                        unsafe { os::purge(start, len) };
                        span.free_state.store(0, Relaxed);
                    } else {
                        span.free_state.store(NONZERO, Relaxed);
                    }
                    self.dirty_bytes -= len;
                }
                cur = span.next.load(Relaxed);
            }
        }
    }

    /// Called when a free pushes `dirty_bytes` over the threshold: purge down to half the
    /// threshold, at most once per [`PURGE_INTERVAL_NS`] (a heap that frees and reallocates
    /// the same memory in bursts keeps it resident instead of faulting it back in, as
    /// mimalloc's purge delay does), unless dirty memory exceeds four times the threshold.
    fn maybe_purge(&mut self) {
        let now = os::now_ns();
        if now.saturating_sub(self.last_purge_ns) < PURGE_INTERVAL_NS && self.dirty_bytes <= self.purge_threshold.saturating_mul(4) {
            return;
        }
        self.last_purge_ns = now;
        self.purge_down_to(self.purge_threshold / 2);
    }

    /// Expensive validator of the invariants above (tests, `expensive-checks`).
    pub fn validate(&self, a: &Arena) {
        let mut s = self.first;
        let mut dirty = 0;
        let mut prev_free = false;
        while s < self.top {
            let m = a.meta(s);
            let n = m.slices();
            assert!(n >= 1 && s + n <= self.top, "run at slice {s} has bad length {n}");
            assert_eq!(a.slice_of(m.start()), s);
            match m.kind() {
                Kind::Free => {
                    assert!(!prev_free, "adjacent free runs at slice {s}");
                    assert_eq!(a.map_get(s), Some(s));
                    assert_eq!(a.map_get(s + n - 1), Some(s));
                    for i in s + 1..s + n - 1 {
                        assert_eq!(a.map_get(i), None, "interior of free run");
                    }
                    if m.free_state.load(Relaxed) & DIRTY != 0 {
                        dirty += n * SLICE;
                    }
                    prev_free = true;
                }
                Kind::Small | Kind::Large => {
                    for i in s..s + n {
                        assert_eq!(a.map_get(i), Some(s), "page map of run at slice {s}");
                    }
                    prev_free = false;
                }
                Kind::None => panic!("slice {s} starts no run"),
            }
            for i in s + 1..s + n {
                assert_eq!(a.meta(i).kind(), Kind::None, "slice {i} inside the run at slice {s} has a live descriptor");
            }
            s += n;
        }
        assert_eq!(dirty, self.dirty_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::bin_of;

    #[test]
    fn bins_are_monotonic() {
        let mut last = 0;
        for n in 1..100_000 {
            let b = bin_of(n);
            assert!(b >= last && b < super::NUM_BINS);
            last = b;
        }
    }
}
