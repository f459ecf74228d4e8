//! The `unimem_*` C API: the definitions behind `shims/include/unimem.h`.
//!
//! The header is the product; this file must match it declaration for declaration (the
//! `header` integration test compares the header's functions and constants with what
//! `libunimem.so` exports). Every function here may be called at any time, including
//! before the first allocation, and the queries accept any pointer value.

use libc::{c_char, c_int, c_void, size_t};
use std::cell::RefCell;
use std::ffi::CString;

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

/// Values of `location` for `unimem_prefetch` (`enum unimem_location` in the header).
pub const UNIMEM_HOST: c_int = 0;
pub const UNIMEM_DEVICE: c_int = 1;

/// `unimem_stats` in the header: counters since the runtime started.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UnimemStats {
    pub cpu_faults: u64,
    pub device_faults: u64,
    pub replay_rounds: u64,
    pub launches: u64,
    pub bytes_to_device: u64,
    pub bytes_to_host: u64,
    pub evictions: u64,
    pub discards: u64,
    pub fault_ns: u64,
    pub mapped_in_place: u64,
    pub write_merges: u64,
}

thread_local! {
    /// This thread's last error message (internal heap).
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn fail(msg: String) -> c_int {
    let _internal = unimem_alloc::InternalScope::new();
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(c));
    -1
}

fn result(r: Result<(), unimem_rt::Error>) -> c_int {
    match r {
        Ok(()) => 0,
        Err(e) => fail(e.to_string()),
    }
}

/// Move the memory `[p, p+len)` to `location` (`UNIMEM_HOST` or `UNIMEM_DEVICE`). Starts the
/// runtime on first use. 0 on success, -1 with `unimem_last_error()` set otherwise; the
/// memory's contents are never lost. `len` 0: 0 for any `p` (nothing to do), once
/// `location` is valid.
#[no_mangle]
pub extern "C" fn unimem_prefetch(p: *const c_void, len: size_t, location: c_int) -> c_int {
    let loc = match location {
        UNIMEM_HOST => unimem_rt::Location::Host,
        UNIMEM_DEVICE => unimem_rt::Location::Device,
        other => return fail(format!("unimem_prefetch: location {other} is neither UNIMEM_HOST (0) nor UNIMEM_DEVICE (1)")),
    };
    result(unimem_rt::prefetch(p.cast(), len, loc))
}

/// Forget the contents of the whole blocks inside `[p, p+len)`: device copies are dropped
/// without copying anything back, and the memory reads as zero afterwards. 0 or -1; `len` 0:
/// 0 for any `p`.
#[no_mangle]
pub extern "C" fn unimem_discard(p: *mut c_void, len: size_t) -> c_int {
    result(unimem_rt::discard(p as *const u8, len))
}

/// Finish outstanding runtime work: wait for a launch running on another thread, then drop
/// device copies that CPU writes made stale. 0 or -1. 0 with nothing to do before the
/// runtime starts and in the child of a `fork` (no launch runs there).
#[no_mangle]
pub extern "C" fn unimem_sync() -> c_int {
    unimem_rt::sync();
    0
}

/// Fill `*out` with the runtime's counters (all zero before it starts). 0, or -1 if `out`
/// is null.
///
/// # Safety
/// `out` is NULL or points to a writable `unimem_stats`.
#[no_mangle]
pub unsafe extern "C" fn unimem_get_stats(out: *mut UnimemStats) -> c_int {
    if out.is_null() {
        return fail("unimem_get_stats: out is NULL".into());
    }
    let s = unimem_rt::stats();
    let v = UnimemStats {
        cpu_faults: s.cpu_faults(),
        device_faults: s.device_faults,
        replay_rounds: s.replay_rounds,
        launches: s.launches,
        bytes_to_device: s.bytes_to_device,
        bytes_to_host: s.bytes_to_host,
        evictions: s.evictions,
        discards: s.discards,
        fault_ns: s.fault_ns,
        mapped_in_place: s.mapped_in_place,
        write_merges: s.write_merges,
    };
    // SAFETY: `out` is non-null and, by the caller's contract, points to a unimem_stats.
    unsafe { out.write(v) };
    0
}

/// Values of `advice` for `unimem_advise` (`enum unimem_advice` in the header).
pub const UNIMEM_ADVISE_CLEAR: c_int = 0;
pub const UNIMEM_ADVISE_READ_MOSTLY: c_int = 1;
pub const UNIMEM_ADVISE_PREFERRED_HOST: c_int = 2;
pub const UNIMEM_ADVISE_PREFERRED_DEVICE: c_int = 3;
pub const UNIMEM_ADVISE_MIRROR: c_int = 4;

/// Advise where `[p, p+len)` should live; applied now and remembered (see `unimem::advise`).
/// 0 or -1; `len` 0: 0 for any `p` (nothing applied or remembered), once `advice` is valid.
#[no_mangle]
pub extern "C" fn unimem_advise(p: *const c_void, len: size_t, advice: c_int) -> c_int {
    use unimem_rt::Advice;
    let a = match advice {
        UNIMEM_ADVISE_CLEAR => Advice::Clear,
        UNIMEM_ADVISE_READ_MOSTLY => Advice::ReadMostly,
        UNIMEM_ADVISE_PREFERRED_HOST => Advice::PreferredHost,
        UNIMEM_ADVISE_PREFERRED_DEVICE => Advice::PreferredDevice,
        UNIMEM_ADVISE_MIRROR => Advice::Mirror,
        other => return fail(format!("unimem_advise: advice {other} is not one of the UNIMEM_ADVISE_* values (0..=4)")),
    };
    result(unimem_rt::advise(p.cast(), len, a))
}

/// `unimem_kernel` in the header: an opaque compiled kernel.
pub struct UnimemKernel(unimem_rt::Kernel);

/// Compile `wgsl`, which defines `fn <entry>(id: u32)`, on the accessor prelude. Starts the
/// runtime on first use. NULL with `unimem_last_error()` set on failure (no Vulkan device,
/// WGSL errors with the line).
///
/// # Safety
/// `wgsl` and `entry` are NUL-terminated strings (NULL is reported as an error).
#[no_mangle]
pub unsafe extern "C" fn unimem_kernel_create(wgsl: *const c_char, entry: *const c_char) -> *mut UnimemKernel {
    if wgsl.is_null() || entry.is_null() {
        fail("unimem_kernel_create: wgsl or entry is NULL".into());
        return std::ptr::null_mut();
    }
    // SAFETY: both are non-null NUL-terminated strings by the caller's contract.
    let (wgsl, entry) = unsafe { (std::ffi::CStr::from_ptr(wgsl), std::ffi::CStr::from_ptr(entry)) };
    let (Ok(wgsl), Ok(entry)) = (wgsl.to_str(), entry.to_str()) else {
        fail("unimem_kernel_create: wgsl and entry must be UTF-8".into());
        return std::ptr::null_mut();
    };
    match unimem_rt::Kernel::new(wgsl, entry) {
        Ok(k) => {
            let _internal = unimem_alloc::InternalScope::new();
            Box::into_raw(Box::new(UnimemKernel(k)))
        }
        Err(e) => {
            fail(e.to_string());
            std::ptr::null_mut()
        }
    }
}

/// Free a kernel from `unimem_kernel_create` (NULL is ignored).
///
/// # Safety
/// `k` is NULL or a kernel from `unimem_kernel_create` not destroyed yet.
#[no_mangle]
pub unsafe extern "C" fn unimem_kernel_destroy(k: *mut UnimemKernel) {
    if !k.is_null() {
        let _internal = unimem_alloc::InternalScope::new();
        // SAFETY: `k` came from Box::into_raw in unimem_kernel_create and is freed once.
        drop(unsafe { Box::from_raw(k) });
    }
}

/// Set how many accessor calls, and loop iterations, one invocation of `k` may make in one
/// round (`Kernel::set_max_steps`). 0 or -1.
///
/// # Safety
/// `k` is NULL (an error) or a live kernel.
#[no_mangle]
pub unsafe extern "C" fn unimem_kernel_set_max_steps(k: *mut UnimemKernel, steps: u32) -> c_int {
    if k.is_null() {
        return fail("unimem_kernel_set_max_steps: kernel is NULL".into());
    }
    // SAFETY: `k` is a live kernel by the caller's contract.
    unsafe { &(*k).0 }.set_max_steps(steps);
    0
}

/// Run invocations `0..n` of `k` with the `args_size` bytes at `args` (read by the kernel
/// with `unimem_arg_*(byte offset / 4)`; every aligned 8-byte word that points into a live
/// allocation is prefetched). Returns when all invocations completed. 0 or -1.
///
/// # Safety
/// `k` is a live kernel; `args` addresses `args_size` readable bytes (or is NULL with size 0).
#[no_mangle]
pub unsafe extern "C" fn unimem_launch(k: *mut UnimemKernel, n: u32, args: *const c_void, args_size: size_t) -> c_int {
    if k.is_null() {
        return fail("unimem_launch: kernel is NULL".into());
    }
    if args.is_null() && args_size != 0 {
        return fail("unimem_launch: args is NULL but args_size is not 0".into());
    }
    let bytes: &[u8] = if args_size == 0 {
        &[]
    } else {
        // SAFETY: non-null, `args_size` readable bytes by the caller's contract.
        unsafe { std::slice::from_raw_parts(args.cast(), args_size) }
    };
    // SAFETY: `k` is a live kernel by the caller's contract.
    let kernel = unsafe { &(*k).0 };
    result(kernel.launch_bytes(n, bytes).map(drop))
}

/// The message of this thread's last failed `unimem_*` call, or NULL if none failed. Valid
/// until the thread's next failing call.
#[no_mangle]
pub extern "C" fn unimem_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ref().map_or(std::ptr::null(), |c| c.as_ptr()))
}
