//! The arena: one address-space reservation per process, split into the managed region
//! (application data, migratable) and the internal region (runtime and driver memory,
//! never migrated), plus the metadata that describes it.
//!
//! ```text
//!  base                      managed_end                         base + len
//!  | managed region (UNIMEM_ARENA_SIZE) | internal region (UNIMEM_INTERNAL_HEAP_SIZE) |
//! ```
//! `contains(p)` (is `p` managed?) and `owns(p)` (is `p` any heap's?) are each one
//! subtract and one compare. Outside the reservation, in separate mappings:
//! - the page map: one `AtomicU32` per 64 KiB slice, `first slice of its run + 1`, or 0;
//! - the span descriptors: one [`Span`] per slice, used when that slice starts a run.
//!
//! Initialisation happens once, on the first allocation, and never allocates.

use crate::lock::Mutex;
use crate::options;
use crate::os;
use crate::region::Region;
use crate::sizeclass::{NUM_CLASSES, SLICE, SLICE_SHIFT};
use crate::span::Span;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU8, AtomicUsize, Ordering::*};

pub const MANAGED: usize = 0;
pub const INTERNAL: usize = 1;

pub struct Arena {
    base: AtomicUsize,
    len: AtomicUsize,
    managed_len: AtomicUsize,
    /// Bytes of the managed region committed (read-write) from its start. Only grows
    /// (purging drops pages but keeps them mapped read-write): everything below
    /// `base + managed_committed` may be read at any time without a fault.
    managed_committed: AtomicUsize,
    map: AtomicPtr<AtomicU32>,
    metas: AtomicPtr<Span>,
    /// The page heap of each region.
    pub regions: [Mutex<Region>; 2],
    /// Small spans whose thread exited, per region and class, linked through `next`.
    /// Adopted by the next thread that needs a span of that class.
    pub orphans: Mutex<Orphans>,
    state: AtomicU8,
}

/// Heads of the orphan lists, `[region][class]`.
pub struct Orphans(pub [[*mut Span; NUM_CLASSES]; 2]);

// SAFETY: the lists hold pointers to descriptors in the process-lifetime metadata
// mapping; they are only touched under the `orphans` mutex.
unsafe impl Send for Orphans {}

const UNINIT: u8 = 0;
const INITIALISING: u8 = 1;
const READY: u8 = 2;
const FAILED: u8 = 3;

pub static ARENA: Arena = Arena {
    base: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    managed_len: AtomicUsize::new(0),
    managed_committed: AtomicUsize::new(0),
    map: AtomicPtr::new(ptr::null_mut()),
    metas: AtomicPtr::new(ptr::null_mut()),
    regions: [Mutex::new(Region::empty()), Mutex::new(Region::empty())],
    orphans: Mutex::new(Orphans([[ptr::null_mut(); NUM_CLASSES]; 2])),
    state: AtomicU8::new(UNINIT),
};

impl Arena {
    /// Is `p` in the managed (migratable) region? One compare.
    #[inline(always)]
    pub fn contains(&self, p: usize) -> bool {
        p.wrapping_sub(self.base.load(Acquire)) < self.managed_len.load(Relaxed)
    }

    /// Is `p` in either region?
    #[inline(always)]
    pub fn owns(&self, p: usize) -> bool {
        p.wrapping_sub(self.base.load(Acquire)) < self.len.load(Relaxed)
    }

    /// `p`'s offset from the reservation's start, if `p` is in either region (null is not).
    #[inline(always)]
    pub fn offset_of(&self, p: usize) -> Option<usize> {
        let rel = p.wrapping_sub(self.base.load(Acquire));
        (rel < self.len.load(Relaxed)).then_some(rel)
    }

    /// The reservation's start (0 before initialisation).
    #[inline(always)]
    pub fn base(&self) -> usize {
        self.base.load(Relaxed)
    }

    pub fn managed_range(&self) -> (usize, usize) {
        (self.base.load(Acquire), self.managed_len.load(Relaxed))
    }

    /// Bytes committed from the managed region's start (see the field).
    pub fn managed_committed(&self) -> usize {
        self.managed_committed.load(Acquire)
    }

    /// Region code calls this after committing slices below `end` of the region starting at
    /// slice `first`; only the managed region (slice 0) is recorded.
    pub fn note_committed(&self, first: usize, end: usize) {
        if first == 0 {
            self.managed_committed.fetch_max((end << SLICE_SHIFT).min(self.managed_len.load(Relaxed)), Release);
        }
    }

    #[inline(always)]
    pub fn slice_of(&self, addr: usize) -> usize {
        (addr - self.base.load(Relaxed)) >> SLICE_SHIFT
    }

    #[inline(always)]
    pub fn slice_addr(&self, s: usize) -> usize {
        self.base.load(Relaxed) + (s << SLICE_SHIFT)
    }

    /// The descriptor slot of slice `s`.
    #[inline(always)]
    pub fn meta(&self, s: usize) -> &Span {
        // SAFETY: `s` is a slice index of the reservation (callers derive it from an
        // owned address or a region bound) and the metas mapping has one zero-initialised
        // (valid: all-atomic) Span per slice for the life of the process.
        unsafe { &*self.metas.load(Relaxed).add(s) }
    }

    /// The first slice of the run covering slice `s`, if any (racy outside the region
    /// lock: a concurrent free may change it).
    #[inline(always)]
    pub fn map_get(&self, s: usize) -> Option<usize> {
        // SAFETY: as in `meta`, for the page map.
        let v = unsafe { (*self.map.load(Relaxed).add(s)).load(Acquire) };
        if v == 0 {
            None
        } else {
            Some(v as usize - 1)
        }
    }

    /// Point slice `s` at the run starting at `run` (`usize::MAX`: at nothing).
    #[inline(always)]
    pub fn set_map(&self, s: usize, run: usize) {
        let v = if run == usize::MAX { 0 } else { run as u32 + 1 };
        // SAFETY: as in `map_get`.
        unsafe { (*self.map.load(Relaxed).add(s)).store(v, Release) };
    }

    /// The descriptor of the allocated run holding address `p` (any heap), if any.
    #[inline(always)]
    pub fn span_of(&self, p: usize) -> Option<&Span> {
        if !self.owns(p) {
            return None;
        }
        self.map_get(self.slice_of(p)).map(|s| self.meta(s))
    }

    pub fn is_ready(&self) -> bool {
        self.state.load(Acquire) == READY
    }

    /// Initialise on first use. Returns false if the reservation failed (every
    /// allocation then returns NULL). Safe to call concurrently and re-entrantly.
    #[cold]
    pub fn ensure_init(&self) -> bool {
        match self.state.load(Acquire) {
            READY => return true,
            FAILED => return false,
            _ => {}
        }
        if self.state.compare_exchange(UNINIT, INITIALISING, Acquire, Acquire).is_err() {
            loop {
                match self.state.load(Acquire) {
                    READY => return true,
                    FAILED => return false,
                    _ => core::hint::spin_loop(),
                }
            }
        }
        let ok = self.init();
        self.state.store(if ok { READY } else { FAILED }, Release);
        if ok {
            crate::heap::after_init();
        }
        ok
    }

    fn init(&self) -> bool {
        let round = |v: u64| ((v as usize) + SLICE - 1) & !(SLICE - 1);
        let managed = round(options::get(options::ARENA_SIZE));
        let internal = round(options::get(options::INTERNAL_HEAP_SIZE));
        let purge = options::get(options::PURGE_THRESHOLD) as usize;
        let delay_ms = options::get(options::PURGE_DELAY);
        let total = managed + internal;
        let slices = total >> SLICE_SHIFT;
        // Reserve one extra slice to align the base to a slice boundary.
        let raw = match os::reserve(total + SLICE) {
            Ok(r) => r,
            Err(e) => {
                os::Line::new().s("unimem: cannot reserve the arena (").dec(total).s(" bytes, errno ").dec(e as usize).s("); set UNIMEM_ARENA_SIZE lower").print();
                return false;
            }
        };
        let base = (raw + SLICE - 1) & !(SLICE - 1);
        let map = os::map_metadata(slices * core::mem::size_of::<AtomicU32>());
        let metas = os::map_metadata(slices * core::mem::size_of::<Span>());
        let (map, metas) = match (map, metas) {
            (Ok(m), Ok(s)) => (m, s),
            _ => {
                os::Line::new().s("unimem: cannot map allocator metadata for a ").dec(total).s("-byte arena").print();
                return false;
            }
        };
        self.map.store(map as *mut AtomicU32, Relaxed);
        self.metas.store(metas as *mut Span, Relaxed);
        self.managed_len.store(managed, Relaxed);
        self.len.store(total, Relaxed);
        // SAFETY: initialisation is single-threaded (state INITIALISING excludes others).
        unsafe {
            self.regions[MANAGED].get_unlocked().init(0, managed >> SLICE_SHIFT, purge, delay_ms * 1_000_000);
            self.regions[INTERNAL].get_unlocked().init(managed >> SLICE_SHIFT, slices, purge, delay_ms * 1_000_000);
        }
        self.base.store(base, Release);
        if options::get(options::VERBOSE) != 0 {
            let mut l = os::Line::new();
            l.s("unimem: arena ").hex(base).s(" managed ").dec(managed >> 20).s(" MiB, internal ").dec(internal >> 20);
            l.s(" MiB, purge threshold ").dec(purge).s(" bytes, purge delay ").dec(delay_ms as usize);
            l.s(" ms, slice ").dec(SLICE).print();
        }
        true
    }

    /// `pthread_atfork` prepare: take every global lock so the child starts with
    /// consistent allocator state. Order: orphans, then regions (same as everywhere).
    pub fn fork_prepare(&self) {
        self.orphans.force_lock();
        self.regions[MANAGED].force_lock();
        self.regions[INTERNAL].force_lock();
    }

    /// `pthread_atfork` parent and child: release what `fork_prepare` took.
    ///
    /// # Safety
    /// Only after `fork_prepare` on this thread.
    pub unsafe fn fork_release(&self) {
        // SAFETY: this thread took all three in fork_prepare.
        unsafe {
            self.regions[INTERNAL].force_unlock();
            self.regions[MANAGED].force_unlock();
            self.orphans.force_unlock();
        }
    }
}
