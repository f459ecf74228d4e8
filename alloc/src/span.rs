//! Span descriptors: the out-of-line metadata of every run of slices.
//!
//! A *run* is a maximal range of slices with one purpose: a small-object span, a large
//! allocation, or free space. Its descriptor lives at `metas[first_slice]` in a metadata
//! mapping outside the arena, so **nothing the allocator needs is ever stored in the
//! memory it hands out**: the runtime may protect, migrate or discard any block without
//! the allocator noticing, and the allocator never faults on managed memory.
//!
//! # Small-span bitmaps and their concurrency rules
//! - `free_bits` (1 = free, available to the owner): written only by the owning thread
//!   (relaxed loads and stores, no read-modify-write), read racily by other threads for
//!   diagnostics (double-free detection, `lookup`).
//! - `remote_bits` (1 = freed by another thread, not yet collected): set by any thread
//!   with `fetch_or`; the owner moves them into `free_bits` with `swap(0)`.
//! - `hot` (owner-written, read racily by others): 0, or the address of one free object
//!   whose bits are clear in both bitmaps. The owner's next allocation takes it; a local
//!   free makes its object hot if `hot` is 0 and otherwise sets its bit in `free_bits` (the
//!   word its double-free test has just read), leaving `hot` alone. So a thread that frees
//!   and allocates in turn touches neither bitmap and gets the same cache-hot object back,
//!   and a run of frees costs one bitmap update each (an earlier design made every free's
//!   object hot and moved the previous one into the bitmap: two bitmap words a free).
//! - An object is *live* iff its bit is clear in both bitmaps and it is not `hot`. A set
//!   bit in both, or a remote bit on the hot object, is impossible (the owner checks at
//!   collection and reports a double free).
//! - `free_count` (owner-only) counts the set bits of `free_bits` only while the span is not
//!   its owner's current span: allocation (which only takes from the current span) and
//!   frees into the current span skip it, and the owner recounts it from the bitmap when
//!   the span stops being current (refill, thread exit). `pop` needs no count: it stops at
//!   the last bitmap word holding objects.
//! - `in_pending`: true iff the span is in exactly one heap's pending stack (or being
//!   pushed). Set by a remote freer with `swap(true)`; cleared only by the thread that
//!   popped it, *after* reading `next_pending`. Re-initialising a descriptor never
//!   touches it (a late remote freer may still be pushing the old span).

use crate::sizeclass::{Class, BITMAP_WORDS, CLASSES, MAX_OBJECTS};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering::*};

#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// Not the first slice of any run (a dormant descriptor). Invariant: a descriptor
    /// has another kind only at the first slice of a run (the free fast path finds a
    /// one-slice span's descriptor from the address alone by relying on it).
    None = 0,
    /// Free slices in a region's page heap (protected by the region lock).
    Free = 1,
    /// A small-object span owned by a thread heap.
    Small = 2,
    /// One large allocation.
    Large = 3,
}

/// Which list of its owner a small span is on (owner-only).
pub const LIST_NONE: u8 = 0;
pub const LIST_PARTIAL: u8 = 1;
pub const LIST_FULL: u8 = 2;
pub const LIST_CURRENT: u8 = 3;

/// The value of [`Span::owner_thread`] when no thread owns the span (never a thread serial:
/// serials count up from 1, and 0 is a thread's until it has one).
pub const NO_THREAD: usize = usize::MAX;

/// Field order matters: everything the allocation and free fast paths read (kind, start,
/// size, magic, capacity, owner thread, counters, list, hot) is in the first 64-byte cache
/// line.
#[repr(C, align(64))]
pub struct Span {
    // ---- identity: written while the run is created (under the region lock, before the
    // page map publishes it), read-only while it lives.
    pub kind: AtomicU8,
    pub class: AtomicU8,
    /// Region index (0 = managed, 1 = internal).
    pub region: AtomicU8,
    /// Free runs: `region::DIRTY | region::NONZERO` bits.
    pub free_state: AtomicU8,
    /// Small: objects in the span.
    pub capacity: AtomicU32,
    pub start: AtomicUsize,
    pub slices: AtomicU32,
    /// Owner-only: every `free_bits` word below `cursor` is zero; always < `BITMAP_WORDS`.
    pub cursor: AtomicU32,
    /// Large: the requested size. Small: the class size.
    pub size: AtomicUsize,
    /// Small: the class's reciprocal for `offset / size` (see `sizeclass::divide`).
    pub magic: AtomicU64,

    // ---- small spans
    /// The serial of the thread whose heap owns the span (`heap::thread_serial`), or
    /// [`NO_THREAD`]; written with `owner` by the thread taking the span (creation,
    /// adoption: its own serial) or giving it up (release, thread exit: `NO_THREAD`), read
    /// racily by any thread. A thread reads its own serial here iff its heap of the span's
    /// region is `owner`: serials are never reused (not even by a thread that reuses an
    /// exited one's stack and TLS, nor after fork), and every thread writes only its own
    /// serial or `NO_THREAD`, so it cannot read its serial in a span it gave up. The free
    /// fast path decides "local" with this one compare.
    pub owner_thread: AtomicUsize,
    /// Owner-only: number of set bits in `free_bits` (`hot` is not counted), kept only
    /// while the span is not its owner's current span (`list != LIST_CURRENT`): the fast
    /// paths, which only allocate from and (mostly) free into the current span, skip the
    /// update. The owner recounts ([`Span::recount`]) when a span stops being current
    /// (`ThreadHeap::refill`, thread exit); `collect_remote` adds to it only for a
    /// span that is not current.
    pub free_count: AtomicU32,
    /// Owner-only: which owner list the span is on (LIST_*).
    pub list: AtomicU8,
    pub in_pending: AtomicBool,
    /// Large runs: zero-filled at allocation time (calloc can skip the memset).
    pub zeroed: AtomicBool,
    /// Owner-written: 0, or a free object in neither bitmap, the next one the owner
    /// allocates (see the module comment).
    pub hot: AtomicUsize,
    /// The owning `ThreadHeap`, null when orphaned (its thread exited) or released. Read
    /// by remote freers (whose stack to push on) and the owner's slow paths.
    pub owner: AtomicPtr<u8>,
    pub next_pending: AtomicPtr<Span>,
    /// Owner-only (small spans) or region-lock (free runs): doubly linked list links.
    pub prev: AtomicPtr<Span>,
    pub next: AtomicPtr<Span>,
    /// Free runs with `region::DIRTY` (region lock): from when the run counts as free
    /// (coarse monotonic ns, `os::coarse_now_ns`, or `u64::MAX` until the region next reads
    /// the clock; a merged run has its youngest part's), and the links of the region's age
    /// list, which orders them by it (see `region.rs`, "Purge policy"). These
    /// three fill the rest of the second cache line, beside the bin links.
    pub freed_at: AtomicU64,
    pub age_prev: AtomicPtr<Span>,
    pub age_next: AtomicPtr<Span>,
    /// Keeps the bitmaps on cache-line boundaries (asserted below).
    _pad: u64,
    pub free_bits: [AtomicU64; BITMAP_WORDS],
    pub remote_bits: [AtomicU64; BITMAP_WORDS],
}

// The metadata mapping holds one descriptor per slice of the arena (1152 bytes, 18 cache
// lines, most of them the two bitmaps). Adding a field must not grow it unnoticed.
const _: () = assert!(core::mem::size_of::<Span>() == 1152);
// The fast paths' fields share the first cache line (the last of them is `hot`).
const _: () = assert!(core::mem::offset_of!(Span, hot) + 8 <= 64);
// Each bitmap starts a cache line, so a word never shares a line with the other bitmap's
// or with the list links.
const _: () = assert!(core::mem::offset_of!(Span, free_bits) % 64 == 0 && core::mem::offset_of!(Span, remote_bits) % 64 == 0);

/// Object `idx`'s bitmap word and its bit in it (`idx` < `MAX_OBJECTS`; the modulo only
/// lets the compiler drop the bounds check).
#[inline(always)]
fn word_bit(idx: usize) -> (usize, u64) {
    ((idx / 64) % BITMAP_WORDS, 1u64 << (idx % 64))
}

impl Span {
    #[inline(always)]
    pub fn kind(&self) -> Kind {
        match self.kind.load(Relaxed) {
            1 => Kind::Free,
            2 => Kind::Small,
            3 => Kind::Large,
            _ => Kind::None,
        }
    }
    #[inline(always)]
    pub fn start(&self) -> usize {
        self.start.load(Relaxed)
    }
    #[inline(always)]
    pub fn slices(&self) -> usize {
        self.slices.load(Relaxed) as usize
    }
    #[inline(always)]
    pub fn class(&self) -> &'static Class {
        &CLASSES[self.class.load(Relaxed) as usize]
    }

    /// Turn this descriptor into a fresh small span of `class` owned by `owner`, the heap
    /// of the thread with serial `thread`, all objects free. Called by the creating thread
    /// before the page map publishes it.
    pub fn init_small(&self, class: usize, owner: *mut u8, thread: usize) {
        let c = &CLASSES[class];
        self.kind.store(Kind::Small as u8, Relaxed);
        self.class.store(class as u8, Relaxed);
        self.size.store(c.size as usize, Relaxed);
        self.magic.store(c.magic, Relaxed);
        self.capacity.store(c.capacity, Relaxed);
        self.owner.store(owner, Relaxed);
        self.owner_thread.store(thread, Relaxed);
        self.free_count.store(c.capacity, Relaxed);
        self.cursor.store(0, Relaxed);
        self.hot.store(0, Relaxed);
        self.list.store(LIST_NONE, Relaxed);
        self.prev.store(ptr::null_mut(), Relaxed);
        self.next.store(ptr::null_mut(), Relaxed);
        let cap = c.capacity as usize;
        for w in 0..BITMAP_WORDS {
            let lo = w * 64;
            let bits = if lo + 64 <= cap {
                u64::MAX
            } else if lo >= cap {
                0
            } else {
                (1u64 << (cap - lo)) - 1
            };
            self.free_bits[w].store(bits, Relaxed);
            debug_assert_eq!(self.remote_bits[w].load(Relaxed), 0, "stale remote frees in a new span");
        }
    }

    /// Object index of `offset` (exact for offsets inside the span).
    #[inline(always)]
    pub fn index_of(&self, offset: usize) -> usize {
        self.locate(offset).0
    }

    /// Object index of `offset` inside the span, and whether `offset` is that object's
    /// start (one multiply, see `sizeclass::divide`).
    #[inline(always)]
    pub fn locate(&self, offset: usize) -> (usize, bool) {
        crate::sizeclass::divide(offset, self.magic.load(Relaxed))
    }

    /// Owner-only: take one free object (its address), or 0 when the span has none (the
    /// address is never 0: it is in the arena). Takes `hot` if set, else the lowest free
    /// object of the cursor's word.
    #[inline(always)]
    pub fn pop(&self) -> usize {
        self.pop_or(Span::pop_scan)
    }

    /// [`Span::pop`], calling `empty(self, w)` for its result when neither `hot` nor the
    /// cursor's word `w` has a free object (`pop_scan` looks further). Every path of the
    /// allocation fast path ends in a return of an address or a tail call.
    #[inline(always)]
    pub fn pop_or(&self, empty: impl FnOnce(&Span, usize) -> usize) -> usize {
        let hot = self.hot.load(Relaxed);
        if hot != 0 {
            self.hot.store(0, Relaxed);
            return hot;
        }
        let w = self.cursor.load(Relaxed) as usize % BITMAP_WORDS; // < BITMAP_WORDS already
        let bits = self.free_bits[w].load(Relaxed);
        if bits == 0 {
            return empty(self, w);
        }
        self.free_bits[w].store(bits & (bits - 1), Relaxed);
        let idx = w * 64 + bits.trailing_zeros() as usize;
        self.start() + idx * self.size.load(Relaxed)
    }

    /// [`Span::pop`] when the cursor's word `w` is empty: move the cursor to the next word
    /// with a free object, if the span has one, and take it (0 if none). Words past the
    /// span's last object are never scanned (the scan does not read `free_count`, which the
    /// current span does not keep).
    #[cold]
    #[inline(never)]
    pub fn pop_scan(&self, w: usize) -> usize {
        let words = self.words();
        for w in w + 1..words {
            if self.free_bits[w].load(Relaxed) != 0 {
                self.cursor.store(w as u32, Relaxed);
                return self.pop();
            }
        }
        0
    }

    /// The number of bitmap words holding the span's objects.
    #[inline(always)]
    fn words(&self) -> usize {
        (self.capacity.load(Relaxed) as usize).div_ceil(64).min(BITMAP_WORDS)
    }

    /// Owner-only: set `free_count` from the bitmap (when the span stops being current).
    pub fn recount(&self) {
        let n: u32 = self.free_bits[..self.words()].iter().map(|b| b.load(Relaxed).count_ones()).sum();
        self.free_count.store(n, Relaxed);
    }

    /// Owner-only: free object `idx`, at address `p`: it becomes `hot` if there is none,
    /// else it enters `free_bits` (the word its double-free test just read), so a run of
    /// frees never moves an earlier object out of `hot`. Returns false if it was already
    /// free (a double free), leaving the span unchanged. `free_count` is not updated: the
    /// caller does it for a span that is not current (see [`Span::count_free`]). The remote
    /// bitmap (another cache line) is only read when remote frees are pending: a remote free
    /// sets its bit before `in_pending`, and pending bits are collected before `in_pending`
    /// can be seen clear by the owner.
    #[inline(always)]
    pub fn free_local(&self, idx: usize, p: usize) -> bool {
        debug_assert!(idx < MAX_OBJECTS);
        let (w, bit) = word_bit(idx);
        let hot = self.hot.load(Relaxed);
        if hot == p {
            return false;
        }
        let bits = self.free_bits[w].load(Relaxed);
        if bits & bit != 0 || (self.in_pending.load(Relaxed) && self.remote_bits[w].load(Relaxed) & bit != 0) {
            return false;
        }
        // `hot` is stored on every free, changed or not: storing it only when it was 0 made
        // free/alloc pairs of some classes 2.4x slower and not others, which moved with
        // the code layout (alloc_driver pairs_256 3.7 -> 8.9 us; docs/PERFORMANCE.md).
        self.hot.store(if hot == 0 { p } else { hot }, Relaxed);
        if hot != 0 {
            self.free_bits[w].store(bits | bit, Relaxed);
            if (w as u32) < self.cursor.load(Relaxed) {
                self.cursor.store(w as u32, Relaxed);
            }
        }
        true
    }

    /// Owner-only, after [`Span::free_local`] of the object at `p` into a span that is not
    /// current: count it in `free_count` if it went into the bitmap (not made `hot`).
    #[inline(always)]
    pub fn count_free(&self, p: usize) {
        if self.hot.load(Relaxed) != p {
            self.free_count.store(self.free_count.load(Relaxed) + 1, Relaxed);
        }
    }

    /// Racy outside the owner: the index of the hot object, if any.
    #[inline(always)]
    fn hot_index(&self) -> Option<usize> {
        let hot = self.hot.load(Relaxed);
        (hot != 0).then(|| self.index_of(hot.wrapping_sub(self.start())))
    }

    /// Any thread but the owner: record a free of object `idx`. Returns false on a
    /// detected double free (already remote-freed, or free in the owner's view).
    pub fn free_remote(&self, idx: usize) -> bool {
        let (w, bit) = word_bit(idx);
        if self.free_bits[w].load(Relaxed) & bit != 0 || self.hot_index() == Some(idx) {
            return false;
        }
        // Release: the owner's collection (Acquire swap) sees everything this thread
        // wrote into the object before freeing it.
        let prev = self.remote_bits[w].fetch_or(bit, AcqRel);
        prev & bit == 0
    }

    /// Owner-only: move remote frees into `free_bits`. Returns the number collected, or
    /// `Err(idx)` naming an object freed twice.
    pub fn collect_remote(&self) -> Result<u32, usize> {
        let hot = self.hot_index();
        let mut n = 0;
        let mut lowest = u32::MAX;
        for w in 0..BITMAP_WORDS {
            if self.remote_bits[w].load(Relaxed) == 0 {
                continue;
            }
            let r = self.remote_bits[w].swap(0, Acquire);
            let f = self.free_bits[w].load(Relaxed);
            if r & f != 0 {
                return Err(w * 64 + (r & f).trailing_zeros() as usize);
            }
            if let Some(h) = hot.filter(|&h| h / 64 == w && r & (1 << (h % 64)) != 0) {
                return Err(h);
            }
            self.free_bits[w].store(f | r, Relaxed);
            n += r.count_ones();
            lowest = lowest.min(w as u32);
        }
        if n > 0 {
            if self.list.load(Relaxed) != LIST_CURRENT {
                self.free_count.store(self.free_count.load(Relaxed) + n, Relaxed);
            }
            if lowest < self.cursor.load(Relaxed) {
                self.cursor.store(lowest, Relaxed);
            }
        }
        Ok(n)
    }

    /// Racy view for diagnostics and `lookup`: is object `idx` currently allocated?
    pub fn is_live(&self, idx: usize) -> bool {
        let (w, bit) = word_bit(idx);
        (self.free_bits[w].load(Relaxed) | self.remote_bits[w].load(Relaxed)) & bit == 0 && self.hot_index() != Some(idx)
    }

    /// Racy view: the free objects of bitmap word `w` (a set bit each), `hot` being the
    /// hot object's index as read once by the caller.
    #[inline(always)]
    fn free_word(&self, w: usize, hot: Option<usize>) -> u64 {
        let bits = self.free_bits[w].load(Relaxed) | self.remote_bits[w].load(Relaxed);
        match hot {
            Some(h) if h / 64 == w => bits | 1 << (h % 64),
            _ => bits,
        }
    }

    /// Racy view, like [`Span::is_live`]: calls `f(a, b)` for each maximal run `a..b` of
    /// allocated objects within `lo..hi`, in order. Tests 64 objects per bitmap word.
    pub fn live_runs(&self, lo: usize, hi: usize, mut f: impl FnMut(usize, usize)) {
        // The first object of the run being built, if one is open.
        let mut open: Option<usize> = None;
        let hot = self.hot_index();
        let mut idx = lo;
        while idx < hi {
            let (w, bit) = (idx / 64, idx % 64);
            let n = (hi - idx).min(64 - bit);
            let free = self.free_word(w, hot);
            // Bit k of `live`: object idx + at + k is allocated (for k < n - at).
            let mut live = !(free >> bit);
            let mut at = 0;
            while at < n {
                let step = match open {
                    None => live.trailing_zeros() as usize,
                    Some(_) => live.trailing_ones() as usize,
                }
                .min(n - at);
                at += step;
                live = live.checked_shr(step as u32).unwrap_or(0);
                if at < n {
                    match open.take() {
                        None => open = Some(idx + at),
                        Some(a) => f(a, idx + at),
                    }
                }
            }
            idx += n;
        }
        if let Some(a) = open {
            f(a, hi);
        }
    }

    /// Racy view, like [`Span::is_live`]: is any of the objects `lo..hi` allocated? Tests
    /// 64 objects per bitmap word.
    pub fn any_live(&self, lo: usize, hi: usize) -> bool {
        let hot = self.hot_index();
        let mut idx = lo;
        while idx < hi {
            let (w, bit) = (idx / 64, idx % 64);
            let n = (hi - idx).min(64 - bit);
            let mask = (u64::MAX >> (64 - n)) << bit;
            let free = self.free_word(w, hot);
            if !free & mask != 0 {
                return true;
            }
            idx += n;
        }
        false
    }

    /// Owner-only, not for the current span (whose `free_count` is not kept): is every
    /// object free?
    #[inline(always)]
    pub fn is_all_free(&self) -> bool {
        debug_assert_ne!(self.list.load(Relaxed), LIST_CURRENT, "free_count is not kept for the current span");
        self.free_count.load(Relaxed) + (self.hot.load(Relaxed) != 0) as u32 == self.capacity.load(Relaxed)
    }

    /// Owner-only, not for the current span: is any object free?
    pub fn has_free(&self) -> bool {
        debug_assert_ne!(self.list.load(Relaxed), LIST_CURRENT, "free_count is not kept for the current span");
        self.free_count.load(Relaxed) > 0 || self.hot.load(Relaxed) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sizeclass::class_of;

    /// A zeroed descriptor (every field's all-zero value is valid) made a span of `size`
    /// at a made-up address: these tests never touch the objects.
    fn span(size: usize) -> Box<Span> {
        // SAFETY: `Span` is atomics and padding only; all-zero is a valid value.
        let s: Box<Span> = Box::new(unsafe { core::mem::zeroed() });
        s.start.store(1 << 30, Relaxed);
        s.init_small(class_of(size), ptr::null_mut(), 1);
        s
    }

    /// The current span's `free_count` is not kept: `pop` ends at the last word holding
    /// objects, and `recount` restores the count from the bitmap when the span stops being
    /// current.
    #[test]
    fn free_count_is_recounted_when_no_longer_current() {
        for size in [16, 256, 1024, 4096] {
            let s = span(size);
            s.list.store(LIST_CURRENT, Relaxed);
            let cap = s.capacity.load(Relaxed) as usize;
            let taken: Vec<usize> = (0..cap).map(|_| s.pop()).collect();
            assert!(taken.iter().all(|&p| p != 0), "size {size}: a pop failed before the span was full");
            assert_eq!(s.pop(), 0, "size {size}: pop past the last object");
            // Free every third object (the first becomes hot, the rest go to the bitmap).
            let mut freed = 0;
            for (i, &p) in taken.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
                assert!(s.free_local(i, p));
                assert!(!s.free_local(i, p), "size {size}: double free of {i} not caught");
                freed += 1;
            }
            s.recount();
            s.list.store(LIST_FULL, Relaxed);
            assert_eq!(s.free_count.load(Relaxed) as usize, freed - 1, "size {size}: hot is not counted");
            assert!(s.has_free() && !s.is_all_free());
            // Free the rest as a non-current span does (free_local, then count_free).
            for (i, &p) in taken.iter().enumerate().filter(|(i, _)| i % 3 != 0) {
                assert!(s.free_local(i, p));
                s.count_free(p);
            }
            assert!(s.is_all_free(), "size {size}");
        }
    }
}
