//! unimem-alloc: the shared-virtual-address arena and the allocator over it.
//!
//! Every allocation of a program using unimem comes from one reserved address range, so
//! the runtime can later migrate any block of it to a device and back. Two heaps share
//! the reservation: the **managed** heap (application data, migratable) and the
//! **internal** heap (the runtime's own memory and the Vulkan driver's, never migrated).
//! A thread allocates internally while inside an [`InternalScope`], or always if it was
//! marked with [`set_thread_always_internal`] (the shim does this for threads created
//! while internal).
//!
//! Allocator metadata never lives in the memory handed out (see `span.rs`), so the runtime
//! may protect, migrate or discard any block without touching allocator state.
//!
//! Module map: `os` (system calls), `options` (the `UNIMEM_*` table), `sizeclass`
//! (classes and span geometry), `lock` (futex mutex), `span` (descriptors and bitmaps),
//! `region` (page heap of slices), `arena` (the reservation and its metadata),
//! `heap` (thread heaps: fast paths, remote frees, thread exit).

#![warn(unsafe_op_in_unsafe_fn)]

mod arena;
mod heap;
pub mod lock;
pub mod options;
pub mod os;
mod region;
pub mod sizeclass;
mod span;

use arena::{ARENA, INTERNAL, MANAGED};
use core::alloc::{GlobalAlloc, Layout};
use core::ptr;
use heap::Block;
use sizeclass::{class_for_aligned, CLASSES, MAX_SMALL, MIN_ALIGN, SLICE};
use span::Kind;

pub use heap::{internal_enter, internal_exit, is_internal, set_thread_always_internal};
pub use heap::set_free_hook;
pub use region::set_purge_filter;

/// Which heap an address belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HeapKind {
    Managed,
    Internal,
}

/// Largest request accepted; anything above fails like an exhausted heap. Keeps every
/// size computation below overflow.
pub const MAX_REQUEST: usize = isize::MAX as usize / 2;

/// Allocate `size` bytes, 16-byte aligned, in the heap this thread uses now.
/// Null when the heap is exhausted or `size` is absurd (the shim sets `ENOMEM`).
#[inline]
pub fn alloc(size: usize) -> *mut u8 {
    // `heap::alloc_current` tests `MAX_REQUEST` only for sizes above the small classes.
    heap::alloc_current(size)
}

/// Allocate `size` zero-filled bytes.
pub fn alloc_zeroed(size: usize) -> *mut u8 {
    let p = alloc(size);
    if !p.is_null() {
        zero_fresh(p, size);
    }
    p
}

fn zero_fresh(p: *mut u8, size: usize) {
    if size > MAX_SMALL {
        if let Some(span) = ARENA.span_of(p as usize) {
            if span.kind() == Kind::Large && span.zeroed.load(core::sync::atomic::Ordering::Relaxed) {
                return; // never-used or purged pages read as zero
            }
        }
    }
    // SAFETY: `p` was just allocated with at least `size` bytes.
    unsafe { ptr::write_bytes(p, 0, size) };
}

/// Allocate `size` bytes aligned to `align` (a power of two; any size up to half the
/// arena). Null on exhaustion or if `align` is not a power of two.
pub fn alloc_aligned(size: usize, align: usize) -> *mut u8 {
    if !align.is_power_of_two() || size > MAX_REQUEST || align > MAX_REQUEST {
        return ptr::null_mut();
    }
    if align <= MIN_ALIGN {
        return alloc(size);
    }
    let region = heap::current_region();
    match class_for_aligned(size, align) {
        Some(c) => heap::alloc_in(region, CLASSES[c].size as usize),
        None => heap::alloc_large(region, size.max(MAX_SMALL + 1), align.max(SLICE)),
    }
}

/// Free `p`. Null is ignored. A pointer that is not a live allocation of this arena
/// aborts the process with a message naming it (never silent corruption).
///
/// # Safety
/// No one may use the block after this call.
#[inline]
pub unsafe fn free(p: *mut u8) {
    match ARENA.offset_of(p as usize) {
        Some(rel) => heap::free_at("free", p as usize, rel),
        None => free_foreign(p),
    }
}

/// [`free`] of a pointer outside the arena: null is ignored, anything else aborts.
#[cold]
#[inline(never)]
fn free_foreign(p: *mut u8) {
    if !p.is_null() {
        heap::invalid_pointer("free", p as usize, "is not an allocation of the unimem heap", None);
    }
}

/// Resize `p` to `new` bytes keeping its contents (up to the smaller size) and its heap.
/// `p` null allocates. Returns null on exhaustion, leaving `p` untouched. An invalid `p`
/// aborts as in [`free`].
///
/// # Safety
/// `p` is null or a block of this allocator that no other thread uses during the call;
/// on success the old block must not be used again.
pub unsafe fn realloc(p: *mut u8, new: usize) -> *mut u8 {
    // SAFETY: forwarded contract.
    unsafe { realloc_aligned(p, new, MIN_ALIGN) }
}

/// [`realloc`] keeping an alignment of `align`.
///
/// # Safety
/// As for [`realloc`].
pub unsafe fn realloc_aligned(p: *mut u8, new: usize, align: usize) -> *mut u8 {
    if p.is_null() {
        return alloc_aligned(new, align);
    }
    if new > MAX_REQUEST {
        return ptr::null_mut();
    }
    let addr = p as usize;
    if !ARENA.owns(addr) {
        heap::invalid_pointer("realloc", addr, "is not an allocation of the unimem heap", None);
    }
    let block = heap::classify("realloc", addr);
    let old = heap::usable(&block);
    match block {
        Block::Small { span, idx, .. } => {
            if !span.is_live(idx) {
                heap::double_free("realloc", addr);
            }
            if new <= old && new >= old / 2 {
                return p;
            }
        }
        Block::Large { span } => {
            if new > MAX_SMALL && heap::resize_large_in_place(span, new) {
                return p;
            }
        }
    }
    let region = if addr < ARENA.managed_range().0 + ARENA.managed_range().1 { MANAGED } else { INTERNAL };
    let q = if align <= MIN_ALIGN {
        heap::alloc_in(region, new)
    } else {
        match class_for_aligned(new, align) {
            Some(c) => heap::alloc_in(region, CLASSES[c].size as usize),
            None => heap::alloc_large(region, new.max(MAX_SMALL + 1), align.max(SLICE)),
        }
    };
    if q.is_null() {
        return q;
    }
    // SAFETY: `p` was validated as a live block of `old` usable bytes (and the caller
    // guarantees nobody else uses it); `q` is fresh with at least `new` bytes.
    unsafe { ptr::copy_nonoverlapping(p, q, old.min(new)) };
    heap::free("realloc", addr);
    q
}

/// Bytes usable at `p` (at least what was asked for). 0 for null.
pub fn usable_size(p: *const u8) -> usize {
    if p.is_null() {
        return 0;
    }
    if !ARENA.owns(p as usize) {
        heap::invalid_pointer("malloc_usable_size", p as usize, "is not an allocation of the unimem heap", None);
    }
    heap::usable(&heap::classify("malloc_usable_size", p as usize))
}

/// Is `p` in the managed (migratable) heap? One compare; false before the first allocation.
#[inline(always)]
pub fn contains(p: *const u8) -> bool {
    ARENA.contains(p as usize)
}

/// Is `p` in either heap of this arena?
#[inline(always)]
pub fn owns(p: *const u8) -> bool {
    ARENA.owns(p as usize)
}

/// Which heap `p` belongs to, if any.
pub fn heap_of(p: *const u8) -> Option<HeapKind> {
    if ARENA.contains(p as usize) {
        Some(HeapKind::Managed)
    } else if ARENA.owns(p as usize) {
        Some(HeapKind::Internal)
    } else {
        None
    }
}

/// The managed region `(base, len)`; `(0, 0)` before initialisation.
pub fn managed_range() -> (usize, usize) {
    ARENA.managed_range()
}

/// Bytes of the managed region committed from its start: `[base, base + n)` is mapped
/// read-write and stays so for the life of the process (purged pages read as zero), so a
/// device may import it in place. 0 before initialisation.
pub fn managed_committed() -> usize {
    ARENA.managed_committed()
}

/// Make sure the arena exists (it is otherwise created by the first allocation).
pub fn init() -> bool {
    ARENA.ensure_init()
}

/// The live allocation containing address `p` (any interior pointer): `(base, usable size)`.
/// Racy against concurrent frees of that allocation, exact otherwise.
pub fn lookup(p: *const u8) -> Option<(usize, usize)> {
    let addr = p as usize;
    let span = ARENA.span_of(addr)?;
    match span.kind() {
        Kind::Small => {
            let class = span.class();
            let idx = class.index_of(addr - span.start());
            (idx < class.capacity as usize && span.is_live(idx))
                .then(|| (span.start() + idx * class.size as usize, class.size as usize))
        }
        Kind::Large => Some((span.start(), span.slices() * SLICE)),
        _ => None,
    }
}

/// Call `f(base, usable size)` for every live allocation overlapping `[start, start+len)`,
/// in address order. Racy against concurrent allocation in that range (the runtime calls
/// it on blocks it is migrating, where that is excluded by the coherence protocol).
pub fn for_each_live(start: usize, len: usize, mut f: impl FnMut(usize, usize)) {
    walk_spans(start, len, |piece| {
        match piece {
            Piece::Small(span, lo, hi) => {
                let size = span.class().size as usize;
                for idx in (lo..hi).filter(|&idx| span.is_live(idx)) {
                    f(span.start() + idx * size, size);
                }
            }
            Piece::Large(base, size) => f(base, size),
        }
        false
    });
}

/// Call `f(start, len)` for each maximal run of adjacent live allocations overlapping
/// `[start, start+len)`, in address order: [`for_each_live`] with neighbours merged, which
/// costs a bitmap test per 64 small objects instead of a call per object (for scanning the
/// live contents of a block). Racy in the same way.
pub fn for_each_live_run(start: usize, len: usize, mut f: impl FnMut(usize, usize)) {
    walk_spans(start, len, |piece| {
        match piece {
            Piece::Small(span, lo, hi) => {
                let size = span.class().size as usize;
                span.live_runs(lo, hi, |a, b| f(span.start() + a * size, (b - a) * size));
            }
            Piece::Large(base, size) => f(base, size),
        }
        false
    });
}

/// True when a live allocation overlaps `[start, start+len)`: [`for_each_live`] finding
/// anything, but stopping at the first, and testing 64 small objects per bitmap word. The
/// runtime asks this on every free of memory a kernel used, so it must not cost a scan of
/// every object of the block. Racy in the same way.
pub fn any_live(start: usize, len: usize) -> bool {
    let mut any = false;
    walk_spans(start, len, |piece| {
        any = match piece {
            Piece::Small(span, lo, hi) => span.any_live(lo, hi),
            Piece::Large(..) => true,
        };
        any
    });
    any
}

/// What [`walk_spans`] visits.
enum Piece<'a> {
    /// A small-object span and the indices `lo..hi` of its objects overlapping the range.
    Small(&'a span::Span, usize, usize),
    /// A large allocation: its base and size.
    Large(usize, usize),
}

/// Visits the spans overlapping `[start, start+len)` in address order, calling `visit` on
/// each small-object span or large allocation; stops when `visit` returns true.
fn walk_spans(start: usize, len: usize, mut visit: impl FnMut(Piece<'_>) -> bool) {
    if len == 0 || !ARENA.owns(start) {
        return;
    }
    let end = start.saturating_add(len);
    let mut addr = start & !(SLICE - 1);
    while addr < end && ARENA.owns(addr) {
        let s = ARENA.slice_of(addr);
        let Some(first) = ARENA.map_get(s) else {
            addr += SLICE;
            continue;
        };
        let span = ARENA.meta(first);
        let run_end = span.start() + span.slices() * SLICE;
        let stop = match span.kind() {
            Kind::Small => {
                let class = span.class();
                let size = class.size as usize;
                let lo = class.index_of(start.max(span.start()) - span.start());
                // Objects starting before `end`: ceil((end - span start) / size).
                let hi = end
                    .saturating_sub(span.start())
                    .div_ceil(size)
                    .min(class.capacity as usize);
                lo < hi && visit(Piece::Small(span, lo, hi))
            }
            Kind::Large => visit(Piece::Large(span.start(), span.slices() * SLICE)),
            _ => false,
        };
        if stop {
            return;
        }
        addr = run_end.max(addr + SLICE);
    }
}

/// While alive, this thread allocates from the internal heap. Nestable.
pub struct InternalScope(());

impl InternalScope {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        internal_enter();
        InternalScope(())
    }
}

impl Drop for InternalScope {
    fn drop(&mut self) {
        internal_exit();
    }
}

/// Memory figures of the arena.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub managed_committed: usize,
    pub internal_committed: usize,
    /// Bytes ever handed out as slices (high-water mark) per heap.
    pub managed_used: usize,
    pub internal_used: usize,
    /// Free bytes still resident (not yet purged).
    pub dirty: usize,
    /// Small spans of exited threads waiting to be adopted.
    pub orphan_spans: usize,
}

pub fn stats() -> Stats {
    if !ARENA.is_ready() {
        return Stats::default();
    }
    let m = ARENA.regions[MANAGED].lock();
    let (mc, mu, md) = ((m.committed - m.first) * SLICE, (m.top - m.first) * SLICE, m.dirty_bytes);
    drop(m);
    let i = ARENA.regions[INTERNAL].lock();
    let (ic, iu, id) = ((i.committed - i.first) * SLICE, (i.top - i.first) * SLICE, i.dirty_bytes);
    drop(i);
    Stats { managed_committed: mc, internal_committed: ic, managed_used: mu, internal_used: iu, dirty: md + id, orphan_spans: heap::orphan_count() }
}

/// Return every free, resident page of both heaps to the OS now.
pub fn purge() {
    if ARENA.is_ready() {
        for r in &ARENA.regions {
            r.lock().purge();
        }
    }
}

/// Check every structural invariant of both page heaps (slow; tests).
pub fn validate() {
    if ARENA.is_ready() {
        for r in &ARENA.regions {
            r.lock().validate(&ARENA);
        }
    }
}

/// The Rust global allocator: `#[global_allocator] static A: unimem::Allocator = unimem::Allocator;`
pub struct Allocator;

// SAFETY: alloc returns blocks of at least `layout.size()` bytes aligned to
// `layout.align()`, distinct while live; dealloc/realloc accept exactly those blocks.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MIN_ALIGN {
            alloc(layout.size())
        } else {
            alloc_aligned(layout.size(), layout.align())
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MIN_ALIGN {
            alloc_zeroed(layout.size())
        } else {
            let p = alloc_aligned(layout.size(), layout.align());
            if !p.is_null() {
                zero_fresh(p, layout.size());
            }
            p
        }
    }

    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, _layout: Layout) {
        heap::free("dealloc", p as usize);
    }

    #[inline]
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc's contract gives us exclusive use of `p`.
        unsafe { realloc_aligned(p, new, layout.align()) }
    }
}
