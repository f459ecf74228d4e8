//! The `unimem_*` C API: the definitions behind `shims/include/unimem.h`.
//!
//! The header is the product; this file must match it declaration for declaration (the
//! `header` integration test compares the header's functions and constants with what
//! `libunimem.so` exports). Every function here may be called at any time, including
//! before the first allocation, and the queries accept any pointer value.

use libc::{c_int, c_void};

/// Values of `unimem_heap_of` (`enum unimem_heap` in the header).
pub const UNIMEM_HEAP_NONE: c_int = 0;
pub const UNIMEM_HEAP_MANAGED: c_int = 1;
pub const UNIMEM_HEAP_INTERNAL: c_int = 2;

/// 1 if `p` lies in the managed (migratable) heap's address range, else 0.
#[no_mangle]
pub extern "C" fn unimem_is_managed(p: *const c_void) -> c_int {
    unimem_alloc::contains(p.cast()) as c_int
}

/// Which heap's address range `p` lies in: one of the `UNIMEM_HEAP_*` values.
#[no_mangle]
pub extern "C" fn unimem_heap_of(p: *const c_void) -> c_int {
    match unimem_alloc::heap_of(p.cast()) {
        Some(unimem_alloc::HeapKind::Managed) => UNIMEM_HEAP_MANAGED,
        Some(unimem_alloc::HeapKind::Internal) => UNIMEM_HEAP_INTERNAL,
        None => UNIMEM_HEAP_NONE,
    }
}

/// From now until the matching `unimem_internal_exit`, this thread allocates from the
/// internal heap, and threads it creates are internal for life. Nestable.
#[no_mangle]
pub extern "C" fn unimem_internal_enter() {
    unimem_alloc::internal_enter();
}

/// Undo one `unimem_internal_enter`. Calling it without a matching enter is a program
/// error (debug builds abort with a message; release builds ignore it).
#[no_mangle]
pub extern "C" fn unimem_internal_exit() {
    unimem_alloc::internal_exit();
}

/// 1 if this thread allocates from the internal heap now, else 0.
#[no_mangle]
pub extern "C" fn unimem_is_internal() -> c_int {
    unimem_alloc::is_internal() as c_int
}
