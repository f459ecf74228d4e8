//! A temporary fault trap for the probes: installs a SIGSEGV or SIGBUS handler that resolves
//! faults on *one* page, runs a closure that touches it, and restores the previous handler.
//!
//! This is probe machinery, not the runtime's fault handler (that one lives with the fault
//! backends and is installed once). It follows the same rules, though:
//! - the handler is async-signal-safe: it only reads atomics and makes raw syscalls
//!   (`mprotect`, `ioctl`, `mmap`, `sigaction`), never allocates, never locks;
//! - a fault outside the probe page is chained: the handler reinstalls the previous action
//!   and returns, so the faulting instruction re-runs under the previous handler (Rust's
//!   stack-overflow guard, a sanitizer, or the default action: a real crash stays a crash);
//! - the handler saves and restores `errno`.
//!
//! Only one trap exists at a time (`TRAP_LOCK`); the statics below are written under it
//! before the handler is installed and read by the handler.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::uffd_abi::{UffdioCopy, UFFDIO_COPY};

/// How the handler resolves a fault on the probe page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolve {
    /// `mprotect(page, PROT_READ | PROT_WRITE)` (the signal + mprotect mechanism).
    Mprotect,
    /// `ioctl(uffd, UFFDIO_COPY, page <- source)` (userfaultfd in SIGBUS mode).
    UffdCopy {
        /// The userfaultfd.
        fd: i32,
        /// A page-sized source buffer.
        source: usize,
    },
}

/// What happened while the trap was armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrapResult {
    /// Faults on the probe page the handler saw.
    pub hits: usize,
    /// 0, or the errno of a failed resolution (the handler then mapped a fresh zero page
    /// over the probe page so the touching code could continue).
    pub resolve_errno: i32,
}

static TRAP_LOCK: Mutex<()> = Mutex::new(());

// Handler inputs and outputs. Written with `Relaxed` under `TRAP_LOCK` before `sigaction`
// installs the handler (the syscall orders them before any fault the handler sees); read
// back after the touching code ran on this same thread.
static PAGE: AtomicUsize = AtomicUsize::new(0);
static PAGE_LEN: AtomicUsize = AtomicUsize::new(0);
static MODE: AtomicU8 = AtomicU8::new(0); // 1 = mprotect, 2 = uffd copy
static UFFD: AtomicI32 = AtomicI32::new(-1);
static SOURCE: AtomicUsize = AtomicUsize::new(0);
static HITS: AtomicUsize = AtomicUsize::new(0);
static RESOLVE_ERRNO: AtomicI32 = AtomicI32::new(0);

/// The action that was installed before ours, for chaining and restoring.
struct SavedAction(UnsafeCell<MaybeUninit<libc::sigaction>>);
// SAFETY: written only under `TRAP_LOCK` before our handler is installed, read by the
// handler (possibly on another thread, which is why it must be Sync) and by `arm` after
// restoring; never written while the handler can run.
unsafe impl Sync for SavedAction {}
static PREVIOUS: SavedAction = SavedAction(UnsafeCell::new(MaybeUninit::uninit()));

/// The calling thread's errno. Async-signal-safe.
fn errno() -> i32 {
    // SAFETY: `__errno_location` returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's errno. Async-signal-safe.
fn set_errno(value: i32) {
    // SAFETY: as in `errno`.
    unsafe { *libc::__errno_location() = value };
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let saved_errno = errno();
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers of SIGSEGV/SIGBUS.
    let addr = unsafe { (*info).si_addr() } as usize;
    let page = PAGE.load(Ordering::Relaxed);
    let len = PAGE_LEN.load(Ordering::Relaxed);
    if page == 0 || addr < page || addr >= page + len {
        // Not ours: put the previous action back and return; the instruction faults again
        // and the previous handler (or the default action) deals with it.
        // SAFETY: PREVIOUS was initialised by `arm` before this handler was installed.
        unsafe { libc::sigaction(sig, (*PREVIOUS.0.get()).as_ptr(), std::ptr::null_mut()) };
        set_errno(saved_errno);
        return;
    }
    HITS.fetch_add(1, Ordering::Relaxed);
    let failed_errno = match MODE.load(Ordering::Relaxed) {
        1 => {
            // SAFETY: `page..page+len` is the probe mapping, owned by the probe.
            let r = unsafe {
                libc::mprotect(
                    page as *mut libc::c_void,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                )
            };
            if r == 0 {
                0
            } else {
                errno()
            }
        }
        _ => {
            let mut copy = UffdioCopy {
                dst: page as u64,
                src: SOURCE.load(Ordering::Relaxed) as u64,
                len: len as u64,
                mode: 0,
                copy: 0,
            };
            // SAFETY: the fd is a live userfaultfd with the page registered; `copy` is a
            // valid `struct uffdio_copy` for the duration of the call.
            let r =
                unsafe { libc::ioctl(UFFD.load(Ordering::Relaxed), UFFDIO_COPY as _, &mut copy) };
            let e = if r == 0 { 0 } else { errno() };
            // EEXIST: the page got filled meanwhile; that resolves the fault too.
            if e == libc::EEXIST {
                0
            } else {
                e
            }
        }
    };
    if failed_errno != 0 {
        RESOLVE_ERRNO.store(failed_errno, Ordering::Relaxed);
        // Never leave the faulting code looping: replace the page with a plain one.
        // SAFETY: MAP_FIXED over our own probe mapping.
        unsafe {
            libc::mmap(
                page as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
    }
    set_errno(saved_errno);
}

/// Arms a handler for `signal` (SIGSEGV or SIGBUS) that resolves faults on
/// `page..page+len` as `resolve` says, runs `touch`, then restores the previous handler.
///
/// # Safety
/// `page..page+len` must be a mapping owned by the caller that nothing else uses during the
/// call; for `Resolve::UffdCopy`, `fd` must be a userfaultfd in SIGBUS mode with the range
/// registered for missing faults, and `source` must point at `len` readable bytes.
pub unsafe fn arm(
    signal: libc::c_int,
    page: usize,
    len: usize,
    resolve: Resolve,
    touch: impl FnOnce(),
) -> std::io::Result<TrapResult> {
    let _guard = TRAP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    PAGE.store(page, Ordering::Relaxed);
    PAGE_LEN.store(len, Ordering::Relaxed);
    HITS.store(0, Ordering::Relaxed);
    RESOLVE_ERRNO.store(0, Ordering::Relaxed);
    match resolve {
        Resolve::Mprotect => MODE.store(1, Ordering::Relaxed),
        Resolve::UffdCopy { fd, source } => {
            MODE.store(2, Ordering::Relaxed);
            UFFD.store(fd, Ordering::Relaxed);
            SOURCE.store(source, Ordering::Relaxed);
        }
    }

    // SAFETY: an all-zero sigaction is a valid starting value (empty mask, no flags).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler as *const () as usize;
    action.sa_flags = libc::SA_SIGINFO;
    // SAFETY: `action.sa_mask` is a valid sigset_t.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: PREVIOUS is only written here, under TRAP_LOCK, before our handler runs; the
    // kernel fills it with the current action as it installs ours.
    let r = unsafe { libc::sigaction(signal, &action, (*PREVIOUS.0.get()).as_mut_ptr()) };
    if r != 0 {
        PAGE.store(0, Ordering::Relaxed);
        return Err(std::io::Error::last_os_error());
    }

    touch();

    // SAFETY: PREVIOUS holds the action saved above; reinstalling it is always valid.
    unsafe { libc::sigaction(signal, (*PREVIOUS.0.get()).as_ptr(), std::ptr::null_mut()) };
    PAGE.store(0, Ordering::Relaxed);
    Ok(TrapResult {
        hits: HITS.load(Ordering::Relaxed),
        resolve_errno: RESOLVE_ERRNO.load(Ordering::Relaxed),
    })
}
