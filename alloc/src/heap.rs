//! Thread heaps: per-thread ownership of small spans, the allocation and free paths,
//! remote (cross-thread) frees, and thread exit.
//!
//! # Ownership model (mimalloc's, with out-of-line bitmaps)
//! Every small span is owned by one [`ThreadHeap`] (one per thread and region) or is an
//! orphan. Only the owner allocates from it and only the owner changes its `free_bits`,
//! lists and counters, so the fast paths take no lock and no atomic read-modify-write.
//! Another thread freeing into it sets a bit in `remote_bits` and, if the span is not
//! already pending, pushes it onto the owner's `pending` stack; the owner collects when it
//! next runs out of objects of that class.
//!
//! # Per-class lists (owner-only)
//! `current[c]` is where allocation happens. Other spans are on `partial[c]` (some free
//! objects) or `full[c]` (none, as far as the owner knows). A span that becomes entirely
//! free through a local free is returned to the region, unless it is `current`.
//!
//! # Thread exit
//! A pthread key destructor abandons the heap: spans with live objects become orphans
//! (owner null, on the arena's orphan list of their class), empty spans go back to the
//! region, and the heap returns to the pool. Heaps are never unmapped, so a stale
//! `owner` pointer read by a late remote freer still points at a valid (reused or idle)
//! heap; draining treats a span it does not own as someone else's and passes it on.
//! Known limit: a remote free that races with its owner's exit can leave the span marked
//! pending on an idle heap; its remote frees are then collected when the span is adopted,
//! but later remote frees wait for that too (memory held, never corrupted).
//!
//! # Locks
//! Fast paths: none. Slow paths: `ARENA.orphans` and a region lock, in that order, never
//! the reverse; the heap pool lock alone. No lock is held while user memory is touched
//! (`memcpy` in realloc, `memset` in calloc run without locks).

use crate::arena::{Orphans, ARENA, INTERNAL, MANAGED};
use crate::lock::Mutex;
use crate::os;
use crate::sizeclass::{class_of, CLASSES, MAX_SMALL, NUM_CLASSES, SLICE, SLICE_SHIFT};
use crate::span::{Kind, Span, LIST_CURRENT, LIST_FULL, LIST_NONE, LIST_PARTIAL, NO_THREAD};
use core::cell::Cell;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering::*};

#[repr(C)]
pub struct ThreadHeap {
    region: usize,
    /// The serial of the thread this heap belongs to (see `Tls::thread`); what its spans
    /// carry in `Span::owner_thread`.
    thread: usize,
    current: [AtomicPtr<Span>; NUM_CLASSES],
    partial: [AtomicPtr<Span>; NUM_CLASSES],
    full: [AtomicPtr<Span>; NUM_CLASSES],
    /// Spans with remote frees to collect (Treiber stack through `Span::next_pending`).
    pending: AtomicPtr<Span>,
    /// Pool link while the heap is idle.
    next_idle: AtomicPtr<ThreadHeap>,
}

// ---------------------------------------------------------------------------------------
// Thread-local state. All-zero at thread start, with no destructor, so it works at any point
// of a thread's life, including inside other TLS destructors.

/// One thread's allocator state. Every field's all-zero value is its initial value (null
/// heaps, depth 0, false), which the x86-64 storage below relies on.
#[repr(C)]
struct Tls {
    heaps: [Cell<*mut ThreadHeap>; 2],
    /// `heaps[self.region()]`, kept up to date by every change of either (so the allocation
    /// fast path reads one TLS word).
    cur: Cell<*mut ThreadHeap>,
    /// This thread's serial, given with its first heap (0 until then) from `NEXT_SERIAL`
    /// and kept for the thread's life, even past `thread_exit`: unique over the process's
    /// life, so a span can name its owning thread with it (`Span::owner_thread`) and the
    /// free fast path compares it without finding the heap.
    thread: Cell<usize>,
    /// Nesting depth of `InternalScope`s.
    depth: Cell<u32>,
    /// Set for threads created while internal: every allocation goes internal.
    always_internal: Cell<bool>,
    registered: Cell<bool>,
}

/// On x86-64 Linux the state lives in static TLS (the initial-exec model: one load of the
/// variable's offset, one `%fs`-relative access), which `thread_local!` cannot ask for on
/// stable Rust: in a shared object (`libunimem.so`) it would use the general-dynamic model,
/// a call to `__tls_get_addr` on every malloc and free. Static TLS is what the dynamic
/// linker gives libraries loaded at startup (LD_PRELOAD, direct dependencies) and, from a
/// reserve, to a few bytes of a library loaded later with dlopen.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod storage {
    use super::Tls;

    core::arch::global_asm!(
        ".pushsection .tbss,\"awT\",@nobits",
        ".p2align 3",
        ".globl unimem_alloc_tls",
        ".hidden unimem_alloc_tls",
        ".type unimem_alloc_tls, @object",
        ".size unimem_alloc_tls, 40",
        "unimem_alloc_tls:",
        ".zero 40",
        ".popsection",
    );
    const _: () = assert!(core::mem::size_of::<Tls>() <= 40 && core::mem::align_of::<Tls>() <= 8);

    /// This thread's state.
    #[inline(always)]
    pub(super) fn tls() -> &'static Tls {
        let p: usize;
        // SAFETY: the initial-exec sequence for a TLS symbol of this object: `%fs:0` holds
        // the thread pointer, and the GOT entry the offset of this thread's copy from it.
        unsafe {
            core::arch::asm!(
                "mov {p}, qword ptr fs:[0]",
                "add {p}, qword ptr [rip + unimem_alloc_tls@GOTTPOFF]",
                p = out(reg) p,
                options(pure, readonly, nostack, preserves_flags),
            );
        }
        // SAFETY: 40 zero-initialised, 8-aligned bytes per thread, alive as long as the
        // thread, and all-zero is a valid `Tls`. `Tls` is not `Sync`, so the reference
        // cannot leave this thread.
        unsafe { &*(p as *const Tls) }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod storage {
    use super::Tls;
    use core::cell::Cell;
    use core::ptr;

    thread_local! {
        static TLS: Tls = const {
            Tls {
                heaps: [Cell::new(ptr::null_mut()), Cell::new(ptr::null_mut())],
                cur: Cell::new(ptr::null_mut()),
                thread: Cell::new(0),
                depth: Cell::new(0),
                always_internal: Cell::new(false),
                registered: Cell::new(false),
            }
        };
    }

    /// This thread's state.
    #[inline(always)]
    pub(super) fn tls() -> &'static Tls {
        // SAFETY: const-initialised without a destructor, the slot lives as long as the
        // thread; `Tls` is not `Sync`, so the reference cannot leave this thread.
        TLS.with(|t| unsafe { &*(t as *const Tls) })
    }
}

use storage::tls;

/// This thread's serial (see `Tls::thread`).
#[inline(always)]
fn thread_serial() -> usize {
    tls().thread.get()
}

impl Tls {
    /// The region this thread allocates in now.
    #[inline(always)]
    fn region(&self) -> usize {
        if self.depth.get() != 0 || self.always_internal.get() {
            INTERNAL
        } else {
            MANAGED
        }
    }

    /// Re-establish `cur`'s invariant after `heaps`, `depth` or `always_internal` changed.
    #[inline(always)]
    fn refresh(&self) {
        self.cur.set(self.heaps[self.region()].get());
    }
}

/// The region this thread allocates in now.
#[inline(always)]
pub fn current_region() -> usize {
    tls().region()
}

pub fn internal_enter() {
    let t = tls();
    t.depth.set(t.depth.get() + 1);
    t.refresh();
}

/// Leave an internal scope. An exit without a matching enter is ignored (the C API
/// documents it as a program error; it must not take the process down).
pub fn internal_exit() {
    let t = tls();
    t.depth.set(t.depth.get().saturating_sub(1));
    t.refresh();
}

pub fn set_thread_always_internal(on: bool) {
    let t = tls();
    t.always_internal.set(on);
    t.refresh();
}

pub fn is_internal() -> bool {
    current_region() == INTERNAL
}

// ---------------------------------------------------------------------------------------
// The heap pool and thread registration.

struct Pool {
    idle: *mut ThreadHeap,
    bump: usize,
    end: usize,
}
// SAFETY: the pool hands out pointers into process-lifetime metadata mappings; it is only
// reached under its mutex.
unsafe impl Send for Pool {}

static POOL: Mutex<Pool> = Mutex::new(Pool { idle: ptr::null_mut(), bump: 0, end: 0 });
static KEY: AtomicUsize = AtomicUsize::new(usize::MAX);
/// The next thread serial (see `Tls::thread`). 64 bits do not wrap.
static NEXT_SERIAL: AtomicUsize = AtomicUsize::new(1);

const POOL_CHUNK: usize = 1 << 20;

fn heap_new(region: usize) -> *mut ThreadHeap {
    let mut pool = POOL.lock();
    let h = if !pool.idle.is_null() {
        let h = pool.idle;
        // SAFETY: idle heaps are valid ThreadHeaps in the metadata mapping.
        pool.idle = unsafe { (*h).next_idle.load(Relaxed) };
        h
    } else {
        let size = core::mem::size_of::<ThreadHeap>();
        if pool.bump + size > pool.end {
            match os::map_metadata(POOL_CHUNK) {
                Ok(m) => {
                    pool.bump = m;
                    pool.end = m + POOL_CHUNK;
                }
                Err(_) => return ptr::null_mut(),
            }
        }
        let h = pool.bump as *mut ThreadHeap;
        pool.bump += size.next_multiple_of(64);
        h
    };
    drop(pool);
    // SAFETY: `h` is zeroed fresh metadata or an idle heap that no thread owns; writing the
    // region here and the thread serial in `heap_for` is the only non-zero initialisation
    // (idle heaps have empty lists).
    unsafe {
        ptr::addr_of_mut!((*h).region).write(region);
    }
    h
}

extern "C" fn thread_exit(_: *mut libc::c_void) {
    let t = tls();
    t.registered.set(false);
    let heaps = [t.heaps[MANAGED].replace(ptr::null_mut()), t.heaps[INTERNAL].replace(ptr::null_mut())];
    t.refresh();
    for h in heaps {
        if !h.is_null() {
            // SAFETY: `h` is this thread's heap; after the replace (and the refresh of
            // `cur`) nobody else can reach it as an owner.
            unsafe { abandon(&*h) };
        }
    }
}

/// Called once when the arena becomes ready (allocation works from here on).
pub fn after_init() {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: creating a key with a valid extern "C" destructor.
    if unsafe { libc::pthread_key_create(&mut key, Some(thread_exit)) } == 0 {
        KEY.store(key as usize, Release);
    }
    extern "C" fn prepare() {
        POOL.force_lock();
        ARENA.fork_prepare();
    }
    extern "C" fn release() {
        // SAFETY: `prepare` ran on this thread before fork.
        unsafe {
            ARENA.fork_release();
            POOL.force_unlock();
        }
    }
    // SAFETY: registering plain extern "C" handlers.
    unsafe { libc::pthread_atfork(Some(prepare), Some(release), Some(release)) };
}

#[cold]
#[inline(never)]
fn heap_for(region: usize) -> *mut ThreadHeap {
    if !ARENA.ensure_init() {
        return ptr::null_mut();
    }
    let t = tls();
    let h = t.heaps[region].get();
    if !h.is_null() {
        return h;
    }
    let h = heap_new(region);
    if h.is_null() {
        return h;
    }
    if t.thread.get() == 0 {
        t.thread.set(NEXT_SERIAL.fetch_add(1, Relaxed));
    }
    // SAFETY: as in `heap_new`: nobody else reaches `h` yet.
    unsafe { ptr::addr_of_mut!((*h).thread).write(t.thread.get()) };
    t.heaps[region].set(h);
    t.refresh();
    if !t.registered.get() {
        let key = KEY.load(Acquire);
        if key != usize::MAX {
            t.registered.set(true);
            // SAFETY: a valid key; the value only has to be non-null for the destructor
            // to run (it finds the heaps through TLS).
            unsafe { libc::pthread_setspecific(key as libc::pthread_key_t, ptr::dangling::<libc::c_void>()) };
        }
    }
    h
}

#[inline(always)]
fn my_heap(region: usize) -> *mut ThreadHeap {
    tls().heaps[region & 1].get()
}

// ---------------------------------------------------------------------------------------
// Owner-side list operations. Every function below that takes `&ThreadHeap` must be
// called by the heap's owning thread.

impl ThreadHeap {
    fn head(&self, list: u8, c: usize) -> &AtomicPtr<Span> {
        if list == LIST_PARTIAL {
            &self.partial[c]
        } else {
            &self.full[c]
        }
    }

    fn push(&self, list: u8, span: &Span) {
        let c = span.class.load(Relaxed) as usize;
        let head = self.head(list, c);
        let h = head.load(Relaxed);
        span.prev.store(ptr::null_mut(), Relaxed);
        span.next.store(h, Relaxed);
        if !h.is_null() {
            // SAFETY: owner lists hold this heap's live spans.
            unsafe { (*h).prev.store(span as *const _ as *mut _, Relaxed) };
        }
        head.store(span as *const _ as *mut _, Relaxed);
        span.list.store(list, Relaxed);
    }

    fn unlink(&self, span: &Span) {
        let list = span.list.load(Relaxed);
        let c = span.class.load(Relaxed) as usize;
        if list == LIST_CURRENT {
            self.current[c].store(ptr::null_mut(), Relaxed);
        } else if list != LIST_NONE {
            let (p, n) = (span.prev.load(Relaxed), span.next.load(Relaxed));
            if p.is_null() {
                self.head(list, c).store(n, Relaxed);
            } else {
                // SAFETY: owner lists hold this heap's live spans.
                unsafe { (*p).next.store(n, Relaxed) };
            }
            if !n.is_null() {
                // SAFETY: as above.
                unsafe { (*n).prev.store(p, Relaxed) };
            }
        }
        span.list.store(LIST_NONE, Relaxed);
    }

    fn set_current(&self, span: &Span) {
        let c = span.class.load(Relaxed) as usize;
        self.unlink(span);
        self.current[c].store(span as *const _ as *mut _, Relaxed);
        span.list.store(LIST_CURRENT, Relaxed);
    }

    /// Return an unlinked, all-free span to its region.
    fn release(&self, span: &Span) {
        span.owner_thread.store(NO_THREAD, Relaxed);
        span.owner.store(ptr::null_mut(), Release);
        let s = ARENA.slice_of(span.start());
        ARENA.regions[self.region].lock().free_run(&ARENA, s, span.slices());
    }

    /// Collect a pending span's remote frees and file it on the right list.
    fn absorb(&self, span: &Span, keep_empty: &mut u32) {
        if collect_remote(span) == 0 {
            return;
        }
        let list = span.list.load(Relaxed);
        if list != LIST_CURRENT && span.is_all_free() {
            if *keep_empty == 0 {
                self.unlink(span);
                self.release(span);
                return;
            }
            *keep_empty -= 1;
        }
        if list == LIST_FULL {
            self.unlink(span);
            self.push(LIST_PARTIAL, span);
        }
    }

    /// Take everything on the pending stack and absorb what this heap owns.
    fn drain_pending(&self) {
        let mut cur = self.pending.swap(ptr::null_mut(), Acquire);
        let mut keep_empty = 1;
        while !cur.is_null() {
            // SAFETY: only descriptors are ever pushed, and they live for the process.
            let span = unsafe { &*cur };
            cur = span.next_pending.load(Relaxed);
            span.in_pending.store(false, Release);
            let owner = span.owner.load(Acquire);
            if span.kind() != Kind::Small {
                continue; // released and reused since it was pushed
            }
            if owner == self as *const _ as *mut u8 {
                self.absorb(span, &mut keep_empty);
            } else if !owner.is_null() {
                notify_owner(span); // stale push: pass it to the real owner
            }
        }
    }

    /// Find or make a span with a free object of class `c` and allocate from it.
    #[cold]
    #[inline(never)]
    fn refill(&self, c: usize) -> *mut u8 {
        let cur = self.current[c].load(Relaxed);
        if !cur.is_null() {
            // SAFETY: current spans are live spans of this heap.
            let span = unsafe { &*cur };
            // Remote frees announce themselves with `in_pending` (set after their bits, and
            // the span is then on the pending stack, drained below): without it there is
            // nothing to collect yet, and a scan of the whole remote bitmap is saved.
            if !span.in_pending.load(Acquire) || collect_remote(span) == 0 {
                self.unlink(span);
                // It stops being current: its `free_count` is kept again (zero here).
                span.recount();
                self.push(LIST_FULL, span);
            }
        }
        if !self.pending.load(Relaxed).is_null() {
            self.drain_pending();
        }
        if self.current[c].load(Relaxed).is_null() {
            let p = self.partial[c].load(Relaxed);
            if !p.is_null() {
                // SAFETY: partial-list spans are live spans of this heap.
                self.set_current(unsafe { &*p });
            } else if let Some(span) = self.adopt(c) {
                self.set_current(span);
            } else if let Some(span) = self.new_span(c) {
                self.set_current(span);
            } else {
                return ptr::null_mut();
            }
        }
        // SAFETY: just set, and it has a free object (fresh, partial, or collected).
        let span = unsafe { &*self.current[c].load(Relaxed) };
        span.pop() as *mut u8
    }

    /// Adopt an orphan span of class `c` that has free objects.
    fn adopt(&self, c: usize) -> Option<&'static Span> {
        loop {
            let span = {
                let mut o = ARENA.orphans.lock();
                let head = o.0[self.region][c];
                if head.is_null() {
                    return None;
                }
                // SAFETY: orphan lists hold live small spans.
                let span: &'static Span = unsafe { &*head };
                o.0[self.region][c] = span.next.load(Relaxed);
                span
            };
            span.owner.store(self as *const _ as *mut u8, Release);
            span.owner_thread.store(self.thread, Relaxed);
            span.list.store(LIST_NONE, Relaxed);
            collect_remote(span);
            if span.has_free() {
                return Some(span);
            }
            self.push(LIST_FULL, span);
        }
    }

    fn new_span(&self, c: usize) -> Option<&'static Span> {
        let class = &CLASSES[c];
        let mut region = ARENA.regions[self.region].lock();
        let (s, _) = region.alloc_run(&ARENA, class.slices as usize, SLICE)?;
        let span: &'static Span = ARENA.meta(s);
        span.start.store(ARENA.slice_addr(s), Relaxed);
        span.slices.store(class.slices, Relaxed);
        span.region.store(self.region as u8, Relaxed);
        span.init_small(c, self as *const _ as *mut u8, self.thread);
        for i in s..s + class.slices as usize {
            ARENA.set_map(i, s);
        }
        #[cfg(feature = "expensive-checks")]
        region.validate(&ARENA);
        drop(region);
        Some(span)
    }
}

/// Owner-only: [`Span::collect_remote`], aborting on a double free it finds. Returns the
/// number of objects collected.
fn collect_remote(span: &Span) -> u32 {
    span.collect_remote().unwrap_or_else(|idx| double_free("free", span.start() + idx * span.size.load(Relaxed)))
}

/// Tell a span's owner it has remote frees (if nobody has yet).
fn notify_owner(span: &Span) {
    if span.in_pending.swap(true, AcqRel) {
        return;
    }
    let owner = span.owner.load(Acquire) as *const ThreadHeap;
    if owner.is_null() {
        // Orphan: whoever adopts it collects. Allow the next free to notify again.
        span.in_pending.store(false, Release);
        return;
    }
    // SAFETY: heaps are never unmapped, so even a stale owner is a valid ThreadHeap.
    let pending = unsafe { &(*owner).pending };
    let me = span as *const _ as *mut Span;
    let mut head = pending.load(Relaxed);
    loop {
        span.next_pending.store(head, Relaxed);
        match pending.compare_exchange_weak(head, me, Release, Relaxed) {
            Ok(_) => return,
            Err(h) => head = h,
        }
    }
}

/// Abandon a heap whose thread is exiting (see the module comment).
///
/// # Safety
/// `h` must be the calling thread's heap, already removed from its TLS.
unsafe fn abandon(h: &ThreadHeap) {
    h.drain_pending();
    let mut orphans: [*mut Span; NUM_CLASSES] = [ptr::null_mut(); NUM_CLASSES];
    #[allow(clippy::needless_range_loop)] // `c` indexes four per-class arrays
    for c in 0..NUM_CLASSES {
        for list in [h.current[c].load(Relaxed), h.partial[c].load(Relaxed), h.full[c].load(Relaxed)] {
            let mut cur = list;
            while !cur.is_null() {
                // SAFETY: owner lists hold this heap's live spans.
                let span = unsafe { &*cur };
                cur = if span.list.load(Relaxed) == LIST_CURRENT { ptr::null_mut() } else { span.next.load(Relaxed) };
                collect_remote(span);
                if span.list.load(Relaxed) == LIST_CURRENT {
                    span.recount(); // not kept while current
                }
                span.list.store(LIST_NONE, Relaxed);
                if span.is_all_free() {
                    h.release(span);
                } else {
                    span.owner_thread.store(NO_THREAD, Relaxed);
                    span.owner.store(ptr::null_mut(), Release);
                    span.next.store(orphans[c], Relaxed);
                    orphans[c] = span as *const _ as *mut _;
                }
            }
        }
        h.current[c].store(ptr::null_mut(), Relaxed);
        h.partial[c].store(ptr::null_mut(), Relaxed);
        h.full[c].store(ptr::null_mut(), Relaxed);
    }
    {
        let mut o: crate::lock::Guard<'_, Orphans> = ARENA.orphans.lock();
        for (c, &first) in orphans.iter().enumerate() {
            let mut cur = first;
            while !cur.is_null() {
                // SAFETY: spans just collected above.
                let span = unsafe { &*cur };
                cur = span.next.load(Relaxed);
                span.next.store(o.0[h.region][c], Relaxed);
                o.0[h.region][c] = span as *const _ as *mut _;
            }
        }
    }
    let mut pool = POOL.lock();
    h.next_idle.store(pool.idle, Relaxed);
    pool.idle = h as *const _ as *mut _;
}

// ---------------------------------------------------------------------------------------
// Errors the program causes. Each aborts with one line naming the address: continuing
// would corrupt the heap silently.

#[cold]
pub fn double_free(op: &str, p: usize) -> ! {
    let mut l = os::Line::new();
    l.s("unimem: ").s(op).s("(): double free of ").hex(p).s(" (the object is already free)");
    os::fatal(&mut l)
}

#[cold]
pub fn invalid_pointer(op: &str, p: usize, why: &str, inside: Option<(usize, usize)>) -> ! {
    let mut l = os::Line::new();
    l.s("unimem: ").s(op).s("(): ").hex(p).s(" ").s(why);
    if let Some((b, s)) = inside {
        l.s(" (it lies inside the ").dec(s).s("-byte allocation at ").hex(b).s(")");
    }
    os::fatal(&mut l)
}

// ---------------------------------------------------------------------------------------
// The paths used by the public API.

/// Allocate `size` bytes (16-aligned) in the heap this thread uses now (one TLS access).
#[inline(always)]
pub fn alloc_current(size: usize) -> *mut u8 {
    alloc_from(tls().cur.get(), size, current_region)
}

/// Allocate `size` bytes (16-aligned) in `region`. Null on exhaustion.
#[inline(always)]
pub fn alloc_in(region: usize, size: usize) -> *mut u8 {
    alloc_from(my_heap(region), size, || region)
}

/// Allocate `size` bytes from `h`, this thread's heap of `region()` (null if it has none
/// yet); `region()` is asked only off the fast path. Null on exhaustion or above
/// `MAX_REQUEST` (tested only above the small sizes).
#[inline(always)]
fn alloc_from(h: *mut ThreadHeap, size: usize, region: impl FnOnce() -> usize) -> *mut u8 {
    if size <= MAX_SMALL {
        let c = class_of(size);
        if !h.is_null() {
            // SAFETY: the TLS heap is owned by this thread.
            return unsafe { &*h }.alloc_small(c);
        }
        return alloc_small_first(region(), c);
    }
    if size > crate::MAX_REQUEST {
        return ptr::null_mut();
    }
    alloc_large(region(), size, SLICE)
}

impl ThreadHeap {
    /// Owner-only: an object of class `c`, from the current span or else the slow path.
    #[inline(always)]
    fn alloc_small(&self, c: usize) -> *mut u8 {
        let cur = self.current[c].load(Relaxed);
        if cur.is_null() {
            return self.refill(c);
        }
        // SAFETY: current spans are live spans of this heap.
        unsafe { &*cur }.pop_or(|span, w| self.alloc_scan(span, w, c)) as *mut u8
    }

    /// [`ThreadHeap::alloc_small`] when the current span's `hot` and cursor word are empty:
    /// the rest of the span, else the slow path.
    #[cold]
    #[inline(never)]
    fn alloc_scan(&self, span: &Span, w: usize, c: usize) -> usize {
        match span.pop_scan(w) {
            0 => self.refill(c) as usize,
            p => p,
        }
    }
}

#[cold]
#[inline(never)]
fn alloc_small_first(region: usize, c: usize) -> *mut u8 {
    let h = heap_for(region);
    if h.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: just created for this thread.
    unsafe { &*h }.refill(c)
}

/// A large allocation: a run of whole slices, start aligned to `align` (>= SLICE).
pub fn alloc_large(region: usize, size: usize, align: usize) -> *mut u8 {
    if !ARENA.ensure_init() {
        return ptr::null_mut();
    }
    let Some(n) = size.checked_add(SLICE - 1).map(|v| v / SLICE) else {
        return ptr::null_mut();
    };
    let mut r = ARENA.regions[region].lock();
    let Some((s, zeroed)) = r.alloc_run(&ARENA, n.max(1), align) else {
        return ptr::null_mut();
    };
    let span = ARENA.meta(s);
    span.kind.store(Kind::Large as u8, Relaxed);
    span.region.store(region as u8, Relaxed);
    span.start.store(ARENA.slice_addr(s), Relaxed);
    span.slices.store(n.max(1) as u32, Relaxed);
    span.size.store(size, Relaxed);
    span.owner.store(ptr::null_mut(), Relaxed);
    span.zeroed.store(zeroed, Relaxed);
    for i in s..s + n.max(1) {
        ARENA.set_map(i, s);
    }
    #[cfg(feature = "expensive-checks")]
    r.validate(&ARENA);
    ARENA.slice_addr(s) as *mut u8
}

/// What `p` is, for free and realloc: validated or the process aborts naming `op`.
pub enum Block {
    Small { span: &'static Span, idx: usize },
    Large { span: &'static Span },
}

#[inline(always)]
pub fn classify(op: &str, p: usize) -> Block {
    let s = ARENA.slice_of(p);
    let Some(first) = ARENA.map_get(s) else { not_an_allocation(op, p) };
    let span: &'static Span = ARENA.meta(first);
    if span.kind.load(Relaxed) == Kind::Small as u8 {
        let (idx, at_start) = span.locate(p - span.start());
        if !at_start || idx >= span.capacity.load(Relaxed) as usize {
            not_an_object_start(op, p, span, idx);
        }
        return Block::Small { span, idx };
    }
    classify_large(op, p, span)
}

#[cold]
#[inline(never)]
fn not_an_allocation(op: &str, p: usize) -> ! {
    invalid_pointer(op, p, "is not an allocation (no live allocation covers it; a double free of a large block looks like this too)", None)
}

#[cold]
#[inline(never)]
fn not_an_object_start(op: &str, p: usize, span: &Span, idx: usize) -> ! {
    let class = span.class();
    let inside = (idx < class.capacity as usize && span.is_live(idx)).then(|| (span.start() + idx * class.size as usize, class.size as usize));
    invalid_pointer(op, p, "is not the start of an allocation", inside)
}

fn classify_large(op: &str, p: usize, span: &'static Span) -> Block {
    match span.kind() {
        Kind::Large => {
            if span.start() != p {
                invalid_pointer(op, p, "is not the start of an allocation", Some((span.start(), span.slices() * SLICE)));
            }
            Block::Large { span }
        }
        _ => not_an_allocation(op, p),
    }
}

/// Called after a managed-heap block is freed, with its address and usable size: the
/// runtime discards device copies of blocks that no longer hold live data. 0 = none.
static FREE_HOOK: AtomicUsize = AtomicUsize::new(0);

pub fn set_free_hook(f: fn(usize, usize)) {
    FREE_HOOK.store(f as usize, Release);
}

/// The hook is tested first: without one (the allocator alone) a free reads neither the
/// region nor the size; with one, frees of the managed region call it anyway.
#[inline(always)]
fn run_free_hook(region: impl FnOnce() -> usize, p: usize, size: impl FnOnce() -> usize) {
    let f = FREE_HOOK.load(Relaxed);
    if f != 0 && region() == MANAGED {
        call_free_hook(f, p, size());
    }
}

#[inline(never)]
fn call_free_hook(f: usize, p: usize, size: usize) {
    // SAFETY: only `set_free_hook` stores non-zero values: valid `fn(usize, usize)`s.
    let f: fn(usize, usize) = unsafe { core::mem::transmute(f) };
    // `free` must not change errno (POSIX), and the hook may make system calls; the
    // allocator's own paths keep it (see lock.rs), so this is the only place to.
    let saved = os::errno();
    f(p, size);
    os::set_errno(saved);
}

/// Free `p`, which `owns()` has accepted.
#[inline(always)]
pub fn free(op: &str, p: usize) {
    free_at(op, p, p.wrapping_sub(ARENA.base()));
}

/// Free `p`, which `owns()` has accepted, at offset `rel` from the arena's base.
///
/// Shaped for the common case, a thread freeing into a one-slice span it owns: the span's
/// descriptor is found from `p` alone (a one-slice span's descriptor is its slice's, and
/// only the first slice of a run has a descriptor of a kind other than `None`), so the
/// page map is not read; that path makes no call but the (tail) call of the free hook, so
/// it needs no saved registers; everything else is a tail call into an out-of-line
/// function that finishes the job, hook included.
#[inline(always)]
pub fn free_at(op: &str, p: usize, rel: usize) {
    let span = ARENA.meta(rel >> SLICE_SHIFT);
    if span.kind.load(Relaxed) != Kind::Small as u8 {
        return free_via_map(op, p, rel);
    }
    // `p` lies in the span's first slice, and slices are SLICE-aligned.
    free_small(op, p, span, rel & (SLICE - 1));
}

/// [`free_at`] when `p`'s slice is not the first of a small span: a later slice of one,
/// or a large block (or not an allocation at all).
#[inline(never)]
fn free_via_map(op: &str, p: usize, rel: usize) {
    let Some(first) = ARENA.map_get(rel >> SLICE_SHIFT) else { not_an_allocation(op, p) };
    let span: &'static Span = ARENA.meta(first);
    if span.kind.load(Relaxed) != Kind::Small as u8 {
        return free_large_checked(op, p, span);
    }
    free_small(op, p, span, p - span.start());
}

/// Free `p`, at offset `off` in small span `span`.
///
/// A span is this thread's iff it carries this thread's serial (`Span::owner_thread`), so
/// the heap is not looked up here. The aborts are tail calls of functions typed `()`, so
/// that no path needs a stack frame.
#[inline(always)]
fn free_small(op: &str, p: usize, span: &'static Span, off: usize) {
    let (idx, at_start) = span.locate(off);
    if !at_start || idx >= span.capacity.load(Relaxed) as usize {
        return not_an_object_start_at(op, p, span, idx);
    }
    if span.owner_thread.load(Relaxed) != thread_serial() {
        return free_remote(op, span, idx, p);
    }
    if !span.free_local(idx, p) {
        return double_free_at(op, p);
    }
    if span.list.load(Relaxed) != LIST_CURRENT {
        return free_relist(span, p);
    }
    run_free_hook(|| span.region.load(Relaxed) as usize, p, || span.size.load(Relaxed));
}

/// [`not_an_object_start`] typed `()`, for a tail call from [`free_small`].
#[cold]
#[inline(never)]
fn not_an_object_start_at(op: &str, p: usize, span: &Span, idx: usize) {
    not_an_object_start(op, p, span, idx)
}

/// [`double_free`] typed `()`, for a tail call from [`free_small`].
#[cold]
#[inline(never)]
fn double_free_at(op: &str, p: usize) {
    double_free(op, p)
}

#[inline(never)]
fn free_large_checked(op: &str, p: usize, span: &'static Span) {
    let Block::Large { span } = classify_large(op, p, span) else { unreachable!("classify_large returns Large or aborts") };
    let (region, len) = (span.region.load(Relaxed) as usize, span.slices() * SLICE);
    free_large(op, span);
    run_free_hook(|| region, p, || len);
}

/// After a local free of `p` into a span that is not current: count it in `free_count`
/// (which [`Span::free_local`] leaves to its caller); a full span becomes partial;
/// an all-free partial span goes back to its region. Then the free hook.
#[inline(never)]
fn free_relist(span: &Span, p: usize) {
    let (region, size) = (span.region.load(Relaxed) as usize & 1, span.size.load(Relaxed));
    // SAFETY: this thread's serial is on the span, so its heap of the span's region owns
    // it (see `Span::owner_thread`), and a thread's own heaps are live.
    let heap = unsafe { &*my_heap(region) };
    debug_assert_eq!(span.owner.load(Relaxed), heap as *const _ as *mut u8);
    span.count_free(p);
    match span.list.load(Relaxed) {
        LIST_FULL => {
            heap.unlink(span);
            heap.push(LIST_PARTIAL, span);
        }
        LIST_PARTIAL if span.is_all_free() => {
            heap.unlink(span);
            heap.release(span);
        }
        _ => {}
    }
    run_free_hook(|| region, p, || size);
}

/// A free of `p`, object `idx`, into a span this thread does not own. Then the free hook.
#[inline(never)]
fn free_remote(op: &str, span: &Span, idx: usize, p: usize) {
    let (region, size) = (span.region.load(Relaxed) as usize & 1, span.size.load(Relaxed));
    if !span.free_remote(idx) {
        double_free(op, p);
    }
    notify_owner(span);
    run_free_hook(|| region, p, || size);
}

fn free_large(op: &str, span: &'static Span) {
    let region = span.region.load(Relaxed) as usize;
    let s = ARENA.slice_of(span.start());
    let mut r = ARENA.regions[region].lock();
    // Re-check under the lock: a racing free of the same block must not free it twice.
    if ARENA.map_get(s) != Some(s) || span.kind() != Kind::Large {
        drop(r);
        double_free(op, span.start());
    }
    span.kind.store(Kind::None as u8, Relaxed);
    r.free_run(&ARENA, s, span.slices());
}

/// Usable size of a validated block.
pub fn usable(b: &Block) -> usize {
    match b {
        Block::Small { span, .. } => span.size.load(Relaxed),
        Block::Large { span } => span.slices() * SLICE,
    }
}

/// Try to resize a large block in place to `new` bytes. True on success.
pub fn resize_large_in_place(span: &'static Span, new: usize) -> bool {
    let n = span.slices();
    let Some(want) = new.checked_add(SLICE - 1).map(|v| (v / SLICE).max(1)) else {
        return false;
    };
    let s = ARENA.slice_of(span.start());
    let region = span.region.load(Relaxed) as usize;
    if want == n {
        span.size.store(new, Relaxed);
        return true;
    }
    let mut r = ARENA.regions[region].lock();
    if want < n {
        span.slices.store(want as u32, Relaxed);
        r.shrink_run(&ARENA, s, n, want);
    } else if r.grow_run(&ARENA, s, n, want) {
        span.slices.store(want as u32, Relaxed);
    } else {
        return false;
    }
    span.size.store(new, Relaxed);
    true
}

/// Number of spans with live objects waiting for adoption (tests, stats).
pub fn orphan_count() -> usize {
    let o = ARENA.orphans.lock();
    let mut n = 0;
    for region in o.0.iter() {
        for &head in region.iter() {
            let mut cur = head;
            while !cur.is_null() {
                n += 1;
                // SAFETY: orphan lists hold live spans (read under the orphans lock).
                cur = unsafe { (*cur).next.load(Relaxed) };
            }
        }
    }
    n
}
