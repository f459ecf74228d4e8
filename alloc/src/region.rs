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
//! - The *age list* (`age_head`..`age_tail`, linked through `Span::age_prev/age_next`)
//!   holds exactly the free runs with `DIRTY`, ordered by `Span::freed_at` (oldest first,
//!   equal stamps in any order); the runs stamped [`UNSTAMPED`] (freed since the clock was
//!   last read) are the youngest, at the tail. A run merged from dirty parts has the
//!   youngest part's stamp (so merging never makes memory look older than it is), and a
//!   run carved out of a dirty run keeps that run's stamp and its place.
//!
//! # Purge policy
//! Runs stay resident after they are freed, for reuse without page faults. A free that
//! leaves more than `purge_threshold` dirty bytes reads the clock, stamps the runs freed
//! since the last reading with it, and returns, at most once per [`PURGE_INTERVAL_NS`],
//! the runs stamped longer than `purge_delay_ns` ago, oldest first, down to half the
//! threshold: memory freed and reused within the delay is never purged (mimalloc's
//! `purge_delay`). A run's delay so starts at its free if the region held more than the
//! threshold then, else when it next does: later, never earlier, and the clock is read only
//! where it was before ages existed (over the threshold), not on every free. Beyond
//! [`HARD_LIMIT`] thresholds, a free purges oldest first regardless of age, down to half
//! that, so dirty memory stays bounded whatever the program does. Explicit callers
//! ([`Region::purge`], [`Region::purge_down_to`]) ignore ages. All of it runs under the
//! region lock, on the free path: no allocation, no other lock, one coarse clock read
//! (vDSO, no system call) per free over the threshold, and `madvise` only for the runs it
//! returns.

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

/// Minimum time between two age-based purges of a region.
pub const PURGE_INTERVAL_NS: u64 = 10_000_000;

/// Dirty memory beyond this many purge thresholds is purged at once, young or old.
pub const HARD_LIMIT: usize = 4;

/// The stamp of a dirty run freed since the region last read the clock (the youngest).
const UNSTAMPED: u64 = u64::MAX;

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
    /// Total size of the free runs with `DIRTY` (the runs on the age list).
    pub dirty_bytes: usize,
    /// Dirty bytes kept however long they stay free (`UNIMEM_PURGE_THRESHOLD`).
    pub purge_threshold: usize,
    /// How long a run beyond the threshold stays resident after it was freed
    /// (`UNIMEM_PURGE_DELAY`; 0: no wait).
    purge_delay_ns: u64,
    /// The step of the coarse clock the stamps are read from: a run is old enough when its
    /// stamp is more than `purge_delay_ns + stamp_step_ns` old (the clock lags by up to a
    /// step, so this never purges a run freed less than the delay ago).
    stamp_step_ns: u64,
    /// When `maybe_purge` last purged (coarse monotonic ns).
    last_purge_ns: u64,
    bins: [*mut Span; NUM_BINS],
    /// Oldest and youngest dirty free run (null when none): the age list.
    age_head: *mut Span,
    age_tail: *mut Span,
}

/// A dirty free run's stamp and where it enters the age list.
#[derive(Clone, Copy)]
struct Age {
    /// Coarse monotonic ns from when the run counts as free (see "Purge policy"), or
    /// [`UNSTAMPED`].
    stamp: u64,
    /// Where on the age list a run with this stamp goes.
    place: Place,
}

/// Where a dirty run enters the age list.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    /// At the tail: freshly freed memory, [`UNSTAMPED`] (the youngest).
    Tail,
    /// At the head: the place of the run this one was carved or merged from (same stamp),
    /// which was the oldest.
    Head,
    /// Right after this run, which is on the age list: the place of the run this one was
    /// carved or merged from (same stamp).
    After(*mut Span),
}

impl Age {
    /// What a clean run carries (not on the age list, so its age is never read).
    const CLEAN: Age = Age { stamp: 0, place: Place::Tail };

    /// Freshly freed memory: the youngest, stamped at the next clock reading.
    const FRESH: Age = Age { stamp: UNSTAMPED, place: Place::Tail };
}

/// What [`Region::take_free`] took.
struct Taken {
    /// The run's length in slices.
    n: usize,
    /// Its `free_state`.
    state: u8,
    /// If `DIRTY`: its stamp and the place it left on the age list (valid until the list
    /// changes again; [`younger`] keeps it valid across a merge).
    age: Age,
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

/// The age of a run merged from a piece (`state`, `age`) and the neighbour `t` just taken
/// off the lists (descriptor `gone`): the younger dirty one's stamp and place.
fn younger(state: u8, mut age: Age, gone: &Span, t: &Taken) -> Age {
    if age.place == Place::After(gone as *const Span as *mut Span) {
        // The piece's place was right after the run just taken: now it is that run's.
        age.place = t.age.place;
    }
    if t.state & DIRTY == 0 || (state & DIRTY != 0 && age.stamp >= t.age.stamp) {
        age
    } else {
        t.age
    }
}

impl Region {
    pub const fn empty() -> Self {
        Region {
            first: 0,
            end: 0,
            top: 0,
            committed: 0,
            dirty_bytes: 0,
            purge_threshold: 0,
            purge_delay_ns: 0,
            stamp_step_ns: 0,
            last_purge_ns: 0,
            bins: [ptr::null_mut(); NUM_BINS],
            age_head: ptr::null_mut(),
            age_tail: ptr::null_mut(),
        }
    }

    /// Set up the region of slices `[first, end)`, keeping `purge_threshold` dirty bytes
    /// resident, and more for `purge_delay_ns` after they were freed.
    pub fn init(&mut self, first: usize, end: usize, purge_threshold: usize, purge_delay_ns: u64) {
        *self = Region::empty();
        self.first = first;
        self.end = end;
        self.top = first;
        self.committed = first;
        self.purge_threshold = purge_threshold;
        self.purge_delay_ns = purge_delay_ns;
        self.stamp_step_ns = os::coarse_resolution_ns();
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

    /// Put dirty run `span` on the age list where `age` says (see [`Age`]).
    ///
    /// This and the four helpers below are inlined: out of line, the age list roughly
    /// doubled the instructions it adds to run allocation and free (callgrind, per
    /// iteration: `alloc_driver realloc_double` +480 instead of +215, `batch_lifo_1024`
    /// +690 instead of +380).
    #[inline(always)]
    fn link_age(&mut self, span: &Span, age: Age) {
        let me = span as *const Span as *mut Span;
        let (prev, next) = match age.place {
            Place::Tail => (self.age_tail, ptr::null_mut()),
            Place::Head => (ptr::null_mut(), self.age_head),
            // SAFETY: `p` is on the age list (the `Place` contract), a live descriptor.
            Place::After(p) => (p, unsafe { (*p).age_next.load(Relaxed) }),
        };
        let mut stamp = age.stamp;
        if !prev.is_null() {
            // SAFETY: age-list members are live descriptors (region invariant).
            let before = unsafe { (*prev).freed_at.load(Relaxed) };
            debug_assert!(age.place == Place::Tail || before <= stamp, "age list out of order");
            // At the tail, a fresh run is UNSTAMPED, the largest stamp; taking the larger
            // keeps the order whatever comes, and only makes a run look younger.
            stamp = stamp.max(before);
        }
        // SAFETY: as above.
        debug_assert!(next.is_null() || unsafe { (*next).freed_at.load(Relaxed) } >= stamp, "age list out of order");
        span.freed_at.store(stamp, Relaxed);
        span.age_prev.store(prev, Relaxed);
        span.age_next.store(next, Relaxed);
        self.age_relink(prev, next, me, me);
    }

    /// Take dirty run `span` off the age list; returns the run before it (null if none).
    #[inline(always)]
    fn unlink_age(&mut self, span: &Span) -> *mut Span {
        let (p, n) = (span.age_prev.load(Relaxed), span.age_next.load(Relaxed));
        self.age_relink(p, n, n, p);
        p
    }

    /// Between neighbours `prev` and `next` on the age list (null: the list's ends), make
    /// `prev` (or the head) lead to `after_prev` and `next` (or the tail) back to
    /// `before_next`.
    #[inline(always)]
    fn age_relink(&mut self, prev: *mut Span, next: *mut Span, after_prev: *mut Span, before_next: *mut Span) {
        if prev.is_null() {
            self.age_head = after_prev;
        } else {
            // SAFETY: age-list members are live descriptors (region invariant).
            unsafe { (*prev).age_next.store(after_prev, Relaxed) };
        }
        if next.is_null() {
            self.age_tail = before_next;
        } else {
            // SAFETY: as above.
            unsafe { (*next).age_prev.store(before_next, Relaxed) };
        }
    }

    /// Record a free run `[s, s+n)` (not yet merged, page map not yet updated); `age`
    /// matters only if `state` has `DIRTY`.
    #[inline(always)]
    fn add_free(&mut self, a: &Arena, s: usize, n: usize, state: u8, age: Age) {
        let m = a.meta(s);
        m.kind.store(Kind::Free as u8, Relaxed);
        m.start.store(a.slice_addr(s), Relaxed);
        m.slices.store(n as u32, Relaxed);
        m.free_state.store(state, Relaxed);
        a.set_map(s, s);
        a.set_map(s + n - 1, s);
        if state & DIRTY != 0 {
            self.dirty_bytes += n * SLICE;
            self.link_age(m, age);
        }
        self.push_bin(a, s);
    }

    /// Remove free run `s` from the bins (and the age list); the caller reuses or merges it.
    #[inline(always)]
    fn take_free(&mut self, a: &Arena, s: usize) -> Taken {
        let m = a.meta(s);
        self.unlink_bin(m);
        let n = m.slices();
        let state = m.free_state.load(Relaxed);
        let mut age = Age::CLEAN;
        if state & DIRTY != 0 {
            self.dirty_bytes -= n * SLICE;
            let prev = self.unlink_age(m);
            let place = if prev.is_null() { Place::Head } else { Place::After(prev) };
            age = Age { stamp: m.freed_at.load(Relaxed), place };
        }
        m.kind.store(Kind::None as u8, Relaxed);
        a.set_map(s, usize::MAX);
        a.set_map(s + n - 1, usize::MAX);
        Taken { n, state, age }
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
        let (s, total, state, age) = match found {
            Some(s) => {
                let t = self.take_free(a, s);
                (s, t.n, t.state, t.age)
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
                (s, want, 0, Age::CLEAN)
            }
        };
        // Carve the aligned part out of [s, s+total); give back the prefix and suffix.
        let addr = a.slice_addr(s);
        let aligned = if align > SLICE { (addr + align - 1) & !(align - 1) } else { addr };
        let first = a.slice_of(aligned);
        // Both pieces keep the run's stamp and its place on the age list (the suffix goes
        // before the prefix: equal stamps).
        if first > s {
            self.insert_free(a, s, first - s, state, age);
        }
        if first + n < s + total {
            self.insert_free(a, first + n, s + total - first - n, state, age);
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
    /// be reused). Merges with free neighbours and may purge (see "Purge policy").
    ///
    /// Contract (the free path of any thread, under `LD_PRELOAD` inside any program): the
    /// caller holds this region's lock and no other allocator lock it could need; no
    /// allocation, no lock; over the threshold one vDSO clock read, and `madvise` only
    /// when it purges.
    pub fn free_run(&mut self, a: &Arena, s: usize, n: usize) {
        for i in s..s + n {
            a.set_map(i, usize::MAX);
        }
        a.meta(s).kind.store(Kind::None as u8, Relaxed);
        self.insert_free(a, s, n, DIRTY | NONZERO, Age::FRESH);
        if self.dirty_bytes > self.purge_threshold {
            self.maybe_purge();
        }
        #[cfg(feature = "expensive-checks")]
        self.validate(a);
    }

    /// Make `[s, s+n)` (in no run, page map entries 0) a free run, merged with free
    /// neighbours so that free runs are never adjacent. `age` (meaningful if `state` has
    /// `DIRTY`) is the piece's; the merged run takes the youngest dirty part's stamp and
    /// place.
    fn insert_free(&mut self, a: &Arena, s: usize, n: usize, state: u8, age: Age) {
        let (mut start, mut len, mut state, mut age) = (s, n, state, age);
        if start > self.first {
            if let Some(l) = a.map_get(start - 1) {
                if a.meta(l).kind() == Kind::Free {
                    let t = self.take_free(a, l);
                    age = younger(state, age, a.meta(l), &t);
                    start = l;
                    len += t.n;
                    state |= t.state;
                }
            }
        }
        if start + len < self.top {
            if let Some(r) = a.map_get(start + len) {
                if r == start + len && a.meta(r).kind() == Kind::Free {
                    let t = self.take_free(a, r);
                    age = younger(state, age, a.meta(r), &t);
                    len += t.n;
                    state |= t.state;
                }
            }
        }
        self.add_free(a, start, len, state, age);
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
            let t = self.take_free(a, next);
            if t.n > need {
                // The rest keeps the run's stamp and place (it merges with nothing: its
                // right neighbour was the taken run's).
                self.add_free(a, next + need, t.n - need, t.state, t.age);
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
    /// whole soon), until at most `target` dirty bytes remain. Ages do not matter here: for
    /// explicit callers (`malloc_trim`, [`crate::purge`]).
    pub fn purge_down_to(&mut self, target: usize) {
        for b in (0..NUM_BINS).rev() {
            let mut cur = self.bins[b];
            while !cur.is_null() && self.dirty_bytes > target {
                // SAFETY: bin lists hold live descriptors.
                let span = unsafe { &*cur };
                if span.free_state.load(Relaxed) & DIRTY != 0 {
                    self.purge_run(span);
                }
                cur = span.next.load(Relaxed);
            }
        }
    }

    /// Stamp the [`UNSTAMPED`] runs (the youngest, at the tail of the age list) with `now`,
    /// which is later than every stamp already given (the clock is monotonic and read
    /// under this lock), so the list stays in order.
    fn stamp_fresh(&mut self, now: u64) {
        let mut cur = self.age_tail;
        while !cur.is_null() {
            // SAFETY: age-list members are live descriptors (region invariant).
            let span = unsafe { &*cur };
            if span.freed_at.load(Relaxed) != UNSTAMPED {
                break;
            }
            span.freed_at.store(now, Relaxed);
            cur = span.age_prev.load(Relaxed);
        }
    }

    /// Return dirty free runs to the OS oldest first, while more than `target` dirty bytes
    /// remain and the oldest run's stamp is at most `cutoff`.
    fn purge_oldest(&mut self, target: usize, cutoff: u64) {
        while self.dirty_bytes > target && !self.age_head.is_null() {
            // SAFETY: age-list members are live descriptors (region invariant).
            let span = unsafe { &*self.age_head };
            if span.freed_at.load(Relaxed) > cutoff {
                break;
            }
            self.purge_run(span);
        }
    }

    /// Return dirty free run `span` to the OS, unless the purge filter refuses (then it
    /// stays resident but is no longer a candidate). Either way it leaves the age list.
    fn purge_run(&mut self, span: &Span) {
        debug_assert!(span.kind() == Kind::Free && span.free_state.load(Relaxed) & DIRTY != 0);
        let (start, len) = (span.start(), span.slices() * SLICE);
        self.unlink_age(span);
        if purge_allowed(start, len) {
            // SAFETY: a free run is committed memory nobody may read.
            unsafe { os::purge(start, len) };
            span.free_state.store(0, Relaxed);
        } else {
            span.free_state.store(NONZERO, Relaxed);
        }
        self.dirty_bytes -= len;
    }

    /// Called when a free leaves more than the threshold dirty (see "Purge policy"): stamp
    /// the runs freed since the last call with the time. Then, beyond [`HARD_LIMIT`]
    /// thresholds, purge oldest first, whatever the age, down to half that. Otherwise, at
    /// most once per [`PURGE_INTERVAL_NS`], and only if the oldest run's stamp is older
    /// than the delay: purge the runs stamped that long ago, oldest first, down to half the
    /// threshold. A run freed and reused within the delay is never purged.
    fn maybe_purge(&mut self) {
        let now = os::coarse_now_ns();
        self.stamp_fresh(now);
        let hard = self.purge_threshold.saturating_mul(HARD_LIMIT);
        if self.dirty_bytes > hard {
            self.last_purge_ns = now;
            self.purge_oldest(hard / 2, u64::MAX);
            return;
        }
        if now.saturating_sub(self.last_purge_ns) < PURGE_INTERVAL_NS || self.age_head.is_null() {
            return;
        }
        let cutoff = match self.purge_delay_ns {
            0 => u64::MAX,
            d => now.saturating_sub(d + self.stamp_step_ns),
        };
        // SAFETY: age-list members are live descriptors (region invariant).
        if unsafe { (*self.age_head).freed_at.load(Relaxed) } > cutoff {
            return; // nothing old enough: the next free looks again
        }
        self.last_purge_ns = now;
        self.purge_oldest(self.purge_threshold / 2, cutoff);
    }

    /// Expensive validator of the invariants above (tests, `expensive-checks`).
    pub fn validate(&self, a: &Arena) {
        let mut s = self.first;
        let (mut dirty, mut dirty_runs) = (0, 0);
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
                        dirty_runs += 1;
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
        // The age list: exactly the dirty runs, oldest first, consistently linked.
        let (mut listed, mut listed_runs, mut prev, mut stamp) = (0, 0, ptr::null_mut::<Span>(), 0);
        let mut cur = self.age_head;
        while !cur.is_null() {
            // SAFETY: age-list members are live descriptors (the invariant under test).
            let span = unsafe { &*cur };
            assert_eq!(span.kind(), Kind::Free, "age list holds a run that is not free");
            assert!(span.free_state.load(Relaxed) & DIRTY != 0, "age list holds a clean run");
            assert_eq!(span.age_prev.load(Relaxed), prev, "age list back link");
            let t = span.freed_at.load(Relaxed);
            assert!(t >= stamp, "age list out of order: {t} after {stamp}");
            (stamp, prev) = (t, cur);
            listed += span.slices() * SLICE;
            listed_runs += 1;
            assert!(listed_runs <= dirty_runs, "age list longer than the dirty runs (a cycle?)");
            cur = span.age_next.load(Relaxed);
        }
        assert_eq!(self.age_tail, prev, "age list tail");
        assert_eq!((listed, listed_runs), (self.dirty_bytes, dirty_runs), "the age list holds every dirty run");
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
