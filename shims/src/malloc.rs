//! The C allocation API, with glibc's semantics, over `unimem_alloc`.
//!
//! Each function forwards to one core call; what is written here is only C's contract
//! around it, which the core deliberately leaves to the shim:
//! - `errno`: the core returns null without touching `errno`; every null returned here for
//!   lack of memory (or an absurd size) sets `ENOMEM`. `posix_memalign` reports through its
//!   return value and leaves `errno` as it was; `free` never changes `errno` (POSIX 2024,
//!   glibc >= 2.33): the core keeps it around its only calls that can change it (the
//!   lock's futex calls and the runtime's free hook), off the fast path.
//! - size arithmetic that can overflow (`calloc`, `reallocarray`, `pvalloc`) is checked
//!   here and fails with `ENOMEM`, never wraps;
//! - glibc's choices where C leaves room: `realloc(p, 0)` frees `p` and returns null;
//!   `malloc(0)` returns a unique pointer; `memalign` rounds a non-power-of-two alignment
//!   up. `aligned_alloc` follows C17/C23 and glibc >= 2.38 (null + `EINVAL` for an
//!   alignment that is not a power of two), not glibc 2.36, which treats it as `memalign`.
//!
//! Pointers the core does not own (stack, globals, another allocator's blocks), interior
//! pointers and double frees abort in the core with one line naming the address.
//!
//! glibc's public `__libc_*` entry points (glibc 2.36 exports `__libc_malloc`, `free`,
//! `calloc`, `realloc`, `memalign`, `valloc`, `pvalloc`) and the obsolete `cfree` are the
//! same functions under the names some programs call directly.

use core::ptr;
use libc::{c_int, c_void, size_t, EINVAL, ENOMEM};
use unimem_alloc::os;

/// What every allocation returns without asking: the C ABI's `max_align_t` on x86-64 and
/// aarch64, and the core's minimum.
const MIN_ALIGN: usize = 16;

#[cold]
fn fail(e: c_int) -> *mut c_void {
    os::set_errno(e);
    ptr::null_mut()
}

/// A core result of `size` bytes for C: null becomes null plus `ENOMEM`; a block is made
/// host-writable first ([`fresh`]).
#[inline(always)]
fn or_enomem(p: *mut u8, size: usize) -> *mut c_void {
    if p.is_null() {
        fail(ENOMEM)
    } else {
        fresh(p, size)
    }
}

/// Every allocation handed to C code is host-writable, whatever a kernel left in its blocks:
/// libc fills some of its allocations with system calls (a `FILE` buffer), which fail with
/// `EFAULT` on a block without host access instead of faulting it home.
#[inline(always)]
fn fresh(p: *mut u8, size: usize) -> *mut c_void {
    if unimem_rt::coherence::space().is_none() {
        return p.cast(); // no block has left the host yet
    }
    fresh_with_runtime(p, size)
}

/// [`fresh`] once the runtime runs (out of line, so that without a runtime `malloc` only
/// tests one pointer).
#[inline(never)]
fn fresh_with_runtime(p: *mut u8, size: usize) -> *mut c_void {
    unimem_rt::interpose::fresh_allocation(p, size);
    p.cast()
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions; it reads a value the dynamic linker set.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        os::OS_PAGE
    }
}

#[no_mangle]
pub extern "C" fn malloc(size: size_t) -> *mut c_void {
    or_enomem(unimem_alloc::alloc(size), size)
}

/// # Safety
/// `p` is null or a live block of this allocator that the caller gives up.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: the caller's contract; a pointer that is not a live block aborts in the core,
    // which also keeps errno as it was.
    unsafe { unimem_alloc::free(p.cast()) };
}

#[no_mangle]
pub extern "C" fn calloc(n: size_t, size: size_t) -> *mut c_void {
    match n.checked_mul(size) {
        Some(total) => or_enomem(unimem_alloc::alloc_zeroed(total), total),
        None => fail(ENOMEM),
    }
}

/// # Safety
/// `p` is null or a live block of this allocator that no other thread uses during the
/// call; on success (or when `size` is 0) the old block must not be used again.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: size_t) -> *mut c_void {
    if size == 0 && !p.is_null() {
        // SAFETY: the caller gives `p` up (glibc's realloc(p, 0) is free(p)).
        unsafe { free(p) };
        return ptr::null_mut();
    }
    // SAFETY: the caller's contract, forwarded.
    or_enomem(unsafe { unimem_alloc::realloc(p.cast(), size) }, size)
}

/// # Safety
/// As for [`realloc`].
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: size_t, size: size_t) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: the caller's contract, forwarded.
        Some(total) => unsafe { realloc(p, total) },
        None => fail(ENOMEM),
    }
}

/// glibc's `memalign`: an alignment up to 16 is plain `malloc`; any other is rounded up
/// to a power of two; one above `SIZE_MAX / 2 + 1` is `EINVAL`.
#[no_mangle]
pub extern "C" fn memalign(align: size_t, size: size_t) -> *mut c_void {
    if align <= MIN_ALIGN {
        return malloc(size);
    }
    if align > usize::MAX / 2 + 1 {
        return fail(EINVAL);
    }
    or_enomem(unimem_alloc::alloc_aligned(size, align.next_power_of_two()), size)
}

/// C17: the alignment must be a power of two (null + `EINVAL` otherwise); any size.
#[no_mangle]
pub extern "C" fn aligned_alloc(align: size_t, size: size_t) -> *mut c_void {
    if !align.is_power_of_two() {
        return fail(EINVAL);
    }
    or_enomem(unimem_alloc::alloc_aligned(size, align.max(MIN_ALIGN)), size)
}

/// POSIX: `EINVAL` unless `align` is a power-of-two multiple of `sizeof(void *)`,
/// `ENOMEM` on exhaustion (`*out` untouched on both); `errno` is never changed.
///
/// # Safety
/// `out` must be valid for a pointer write.
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(
    out: *mut *mut c_void,
    align: size_t,
    size: size_t,
) -> c_int {
    if !align.is_power_of_two() || !align.is_multiple_of(core::mem::size_of::<*mut c_void>()) {
        return EINVAL;
    }
    let saved = os::errno();
    let p = unimem_alloc::alloc_aligned(size, align.max(MIN_ALIGN));
    os::set_errno(saved);
    if p.is_null() {
        return ENOMEM;
    }
    // SAFETY: the caller passes a writable `void **`.
    unsafe { out.write(fresh(p, size)) };
    0
}

#[no_mangle]
pub extern "C" fn valloc(size: size_t) -> *mut c_void {
    memalign(page_size(), size)
}

/// `valloc` with the size rounded up to whole pages.
#[no_mangle]
pub extern "C" fn pvalloc(size: size_t) -> *mut c_void {
    let page = page_size();
    match size.checked_add(page - 1) {
        Some(s) => memalign(page, s & !(page - 1)),
        None => fail(ENOMEM),
    }
}

/// # Safety
/// `p` is null or a live block of this allocator.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> size_t {
    unimem_alloc::usable_size(p.cast())
}

/// glibc's `malloc_trim`: give free resident pages back to the OS. Returns 1 (some memory
/// may have been released), as glibc does when it could release anything.
#[no_mangle]
pub extern "C" fn malloc_trim(_pad: size_t) -> c_int {
    unimem_alloc::purge();
    1
}

// C23 sized deallocation: the size and alignment are hints this allocator does not need.

/// # Safety
/// As for [`free`].
#[no_mangle]
pub unsafe extern "C" fn free_sized(p: *mut c_void, _size: size_t) {
    // SAFETY: forwarded.
    unsafe { free(p) }
}

/// # Safety
/// As for [`free`].
#[no_mangle]
pub unsafe extern "C" fn free_aligned_sized(p: *mut c_void, _align: size_t, _size: size_t) {
    // SAFETY: forwarded.
    unsafe { free(p) }
}

// glibc's other names for the same functions.

#[no_mangle]
pub extern "C" fn __libc_malloc(size: size_t) -> *mut c_void {
    malloc(size)
}

/// # Safety
/// As for [`free`].
#[no_mangle]
pub unsafe extern "C" fn __libc_free(p: *mut c_void) {
    // SAFETY: forwarded.
    unsafe { free(p) }
}

/// # Safety
/// As for [`free`].
#[no_mangle]
pub unsafe extern "C" fn cfree(p: *mut c_void) {
    // SAFETY: forwarded.
    unsafe { free(p) }
}

#[no_mangle]
pub extern "C" fn __libc_calloc(n: size_t, size: size_t) -> *mut c_void {
    calloc(n, size)
}

/// # Safety
/// As for [`realloc`].
#[no_mangle]
pub unsafe extern "C" fn __libc_realloc(p: *mut c_void, size: size_t) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { realloc(p, size) }
}

#[no_mangle]
pub extern "C" fn __libc_memalign(align: size_t, size: size_t) -> *mut c_void {
    memalign(align, size)
}

#[no_mangle]
pub extern "C" fn __libc_valloc(size: size_t) -> *mut c_void {
    valloc(size)
}

#[no_mangle]
pub extern "C" fn __libc_pvalloc(size: size_t) -> *mut c_void {
    pvalloc(size)
}
