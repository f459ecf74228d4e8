//! Threads created by internal code stay internal for life.
//!
//! The runtime and the Vulkan driver run with the calling thread marked internal, so their
//! memory comes from the internal heap and never migrates. A driver that starts worker
//! threads from there (lavapipe starts a pool on device creation) would otherwise have
//! those workers allocate in the managed heap. This module interposes `pthread_create`:
//! when the creating thread is internal, the new thread starts in [`trampoline`], which
//! marks it always-internal before running the real start routine. A non-internal caller
//! goes straight to the real `pthread_create`, with no wrapper at all.
//!
//! The real function is found once with `dlsym(RTLD_NEXT, ..)`. `dlsym` may call `malloc`
//! or `calloc`, which is fine (they never create threads, so this cannot recurse); if it
//! returns this very wrapper (the library loaded in a way where nothing comes after it),
//! calling it would recurse forever, so that is reported and the process aborts.
//!
//! Not covered: threads created by libc internally (`thrd_create`, the POSIX timer and
//! AIO helpers call glibc's private entry point, not the `pthread_create` symbol).

use core::sync::atomic::{AtomicUsize, Ordering::*};
use libc::{c_int, c_void, pthread_attr_t, pthread_t};
use unimem_alloc::os;

/// A start routine as C declares it. Deliberately `extern "C"` (cannot unwind): the call
/// from [`trampoline`] then has no landing pad, so a forced unwind (`pthread_exit`,
/// cancellation) passes through the trampoline's frame to glibc's `start_thread`.
type StartFn = extern "C" fn(*mut c_void) -> *mut c_void;
type CreateFn =
    unsafe extern "C" fn(*mut pthread_t, *const pthread_attr_t, StartFn, *mut c_void) -> c_int;

/// The real `pthread_create`, 0 until resolved. Resolution is idempotent, so racing
/// threads may both resolve and store the same value.
static REAL: AtomicUsize = AtomicUsize::new(0);

fn real_pthread_create() -> CreateFn {
    let mut f = REAL.load(Acquire);
    if f == 0 {
        // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT searches the objects loaded
        // after this one.
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, c"pthread_create".as_ptr()) } as usize;
        if f == 0 || f == pthread_create as CreateFn as usize {
            os::fatal(
                os::Line::new()
                    .s("unimem: pthread_create: dlsym(RTLD_NEXT) found no other pthread_create")
                    .s(" (load libunimem.so with LD_PRELOAD, before libc)"),
            );
        }
        REAL.store(f, Release);
    }
    // SAFETY: `f` is the address of libc's pthread_create, whose C signature is CreateFn.
    unsafe { core::mem::transmute::<usize, CreateFn>(f) }
}

/// What the new thread needs to start: the program's routine and argument. Allocated in
/// the internal heap by the creator, freed by the new thread (or by the creator if
/// `pthread_create` fails).
#[repr(C)]
struct Start {
    routine: StartFn,
    arg: *mut c_void,
}

extern "C" fn trampoline(start: *mut c_void) -> *mut c_void {
    unimem_alloc::set_thread_always_internal(true);
    let start = start.cast::<Start>();
    // SAFETY: `start` is the live block `pthread_create` below filled in and handed to this
    // thread alone; nobody else reads or frees it.
    let Start { routine, arg } = unsafe { start.read() };
    // SAFETY: as above; this thread owns the block and frees it exactly once.
    unsafe { unimem_alloc::free(start.cast()) };
    routine(arg)
}

/// `pthread_create`, keeping threads created while internal internal (see the module
/// comment). Error codes are libc's; `EAGAIN` if the start block cannot be allocated.
///
/// # Safety
/// As for libc's `pthread_create`.
#[no_mangle]
pub unsafe extern "C" fn pthread_create(
    thread: *mut pthread_t,
    attr: *const pthread_attr_t,
    routine: StartFn,
    arg: *mut c_void,
) -> c_int {
    let real = real_pthread_create();
    if !unimem_alloc::is_internal() {
        // What glibc allocates for the new thread (its dynamic thread vector, read by every
        // TLS access of this library, including from the fault handler) must never
        // migrate: create the thread from the internal heap. The thread itself starts
        // managed, as its creator is.
        unimem_alloc::internal_enter();
        // SAFETY: the caller's arguments, forwarded unchanged.
        let r = unsafe { real(thread, attr, routine, arg) };
        unimem_alloc::internal_exit();
        return r;
    }
    // This thread is internal, so the start block comes from the internal heap.
    let start = unimem_alloc::alloc(core::mem::size_of::<Start>()).cast::<Start>();
    if start.is_null() {
        return libc::EAGAIN;
    }
    // SAFETY: `start` is a fresh block of the right size, 16-byte aligned.
    unsafe { start.write(Start { routine, arg }) };
    // SAFETY: the caller's thread and attr, forwarded; the trampoline takes ownership of
    // `start` if and only if creation succeeds.
    let r = unsafe { real(thread, attr, trampoline, start.cast()) };
    if r != 0 {
        // SAFETY: creation failed, so no thread received `start`; it is still ours.
        unsafe { unimem_alloc::free(start.cast()) };
    }
    r
}
