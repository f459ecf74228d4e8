//! Interposed calls that report on, or set, the process and the system through a struct the
//! kernel writes or reads: `uname`, `getrusage`, `sysinfo`, `times`, the resource limits
//! (`getrlimit`, `setrlimit`, `prlimit`, each also `...64`), interval timers (`setitimer`,
//! `getitimer`), timer descriptors (`timerfd_settime`, `timerfd_gettime`), and signal
//! masks and sets (`sigprocmask`, `pthread_sigmask`, `sigpending`, `sigsuspend`, the
//! `sigwait` family, `signalfd`). A struct in an old heap block that a kernel moved to the
//! device would otherwise fail with `EFAULT` (docs/ARCHITECTURE.md, "System calls, fork,
//! free").
//!
//! Programs call the signal-mask functions in signal handlers too. A wrapper there does
//! what the handler's own access to a heap struct would make the fault handler do: nothing
//! but a state load while the struct is host-accessible, a migration home otherwise.
//! `sigaction` for signals other than SIGSEGV/SIGBUS needs nothing: glibc copies the
//! actions to and from a `kernel_sigaction` of its own in user space.
//!
//! The names are glibc's (2.36), which passes these structs to the kernel as they are on
//! 64-bit targets (`sigprocmask` copies the set first only when it holds one of glibc's own
//! signals); none has a `_FORTIFY_SOURCE` form. `...64` are the names of
//! `-D_FILE_OFFSET_BITS=64`, the same functions on 64-bit targets. POSIX timers
//! (`timer_settime`, `timer_gettime`) are left out: glibc exports them in three versions,
//! the oldest (x86-64's `GLIBC_2.2.5`) taking timer ids of another kind, and one
//! unversioned wrapper would receive the calls of programs bound to every version and pass
//! them all to the newest.

use super::prepare_one;
use libc::{__rlimit_resource_t, c_int, clock_t, itimerspec, itimerval, pid_t, rlimit, rlimit64, rusage, siginfo_t, sigset_t, timespec, tms, utsname};

/// A new value the kernel reads and the old one it writes (each null or valid).
fn new_and_old<T>(new: *const T, old: *mut T) {
    prepare_one(new, false);
    prepare_one(old, true);
}

wrap! {
    /// `uname(2)`.
    fn uname(buf: *mut utsname) -> c_int { prepare_one(buf, true) }
    /// `getrusage(2)`.
    fn getrusage(who: c_int, usage: *mut rusage) -> c_int { prepare_one(usage, true) }
    /// `sysinfo(2)`.
    fn sysinfo(info: *mut libc::sysinfo) -> c_int { prepare_one(info, true) }
    /// `times(2)`.
    fn times(buf: *mut tms) -> clock_t { prepare_one(buf, true) }

    /// `getrlimit(2)`.
    fn getrlimit(resource: __rlimit_resource_t, limit: *mut rlimit) -> c_int { prepare_one(limit, true) }
    /// `getrlimit64`.
    fn getrlimit64(resource: __rlimit_resource_t, limit: *mut rlimit64) -> c_int { prepare_one(limit, true) }
    /// `setrlimit(2)`.
    fn setrlimit(resource: __rlimit_resource_t, limit: *const rlimit) -> c_int { prepare_one(limit, false) }
    /// `setrlimit64`.
    fn setrlimit64(resource: __rlimit_resource_t, limit: *const rlimit64) -> c_int { prepare_one(limit, false) }
    /// `prlimit(2)`: the new limit and the old one.
    fn prlimit(pid: pid_t, resource: __rlimit_resource_t, new: *const rlimit, old: *mut rlimit) -> c_int { new_and_old(new, old) }
    /// `prlimit64`.
    fn prlimit64(pid: pid_t, resource: __rlimit_resource_t, new: *const rlimit64, old: *mut rlimit64) -> c_int { new_and_old(new, old) }

    /// `setitimer(2)`: the new timer and the old one.
    fn setitimer(which: c_int, new: *const itimerval, old: *mut itimerval) -> c_int { new_and_old(new, old) }
    /// `getitimer(2)`.
    fn getitimer(which: c_int, value: *mut itimerval) -> c_int { prepare_one(value, true) }
    /// `timerfd_settime(2)`: the new setting and the old one.
    fn timerfd_settime(fd: c_int, flags: c_int, new: *const itimerspec, old: *mut itimerspec) -> c_int { new_and_old(new, old) }
    /// `timerfd_gettime(2)`.
    fn timerfd_gettime(fd: c_int, value: *mut itimerspec) -> c_int { prepare_one(value, true) }
}

wrap! {
    /// `sigpending(2)`.
    fn sigpending(set: *mut sigset_t) -> c_int { prepare_one(set, true) }
    /// `sigtimedwait(2)`: the set, the signal's information and the timeout.
    fn sigtimedwait(set: *const sigset_t, info: *mut siginfo_t, timeout: *const timespec) -> c_int {
        set_and_info(set, info);
        prepare_one(timeout, false);
    }
    /// `sigwaitinfo(2)`.
    fn sigwaitinfo(set: *const sigset_t, info: *mut siginfo_t) -> c_int { set_and_info(set, info) }
    /// `sigwait(3)`: the set (libc writes `*sig` in user space; prepared as well).
    fn sigwait(set: *const sigset_t, sig: *mut c_int) -> c_int {
        prepare_one(set, false);
        prepare_one(sig, true);
    }
    /// `signalfd(2)`.
    fn signalfd(fd: c_int, mask: *const sigset_t, flags: c_int) -> c_int { prepare_one(mask, false) }
}

/// A set of signals the kernel reads and the information it writes about the one taken.
fn set_and_info(set: *const sigset_t, info: *mut siginfo_t) {
    prepare_one(set, false);
    prepare_one(info, true);
}

/// `set` without the fault signals, in a copy (null stays null). A thread that blocks
/// SIGBUS or SIGSEGV (a worker created with every signal blocked, a critical section under
/// `sigfillset`) would be killed by its first touch of a block a kernel left on the device:
/// the kernel resets a blocked fault signal to its default action. POSIX leaves such faults
/// undefined, so the fault signals are left out of every mask set, and only they.
fn open_faults(set: *const sigset_t, copy: &mut sigset_t) -> *const sigset_t {
    if set.is_null() {
        return set;
    }
    // SAFETY: `set` is a valid sigset_t (the caller's contract); reading it faults it home
    // if it is on the device, as any read would.
    *copy = crate::faults::handler::without_fault_signals(unsafe { set.read() });
    copy
}

/// libc's `sigprocmask` or `pthread_sigmask`.
type SetMask = unsafe extern "C" fn(c_int, *const sigset_t, *mut sigset_t) -> c_int;

/// Calls `f` (libc's `sigprocmask` or `pthread_sigmask`) with the new mask without the fault
/// signals (see [`open_faults`]), the old one prepared for the kernel to write.
///
/// # Safety
/// As `f`: `set` and `old` null or valid.
unsafe fn set_mask(f: SetMask, how: c_int, set: *const sigset_t, old: *mut sigset_t) -> c_int {
    prepare_one(old, true);
    // SAFETY: a zeroed sigset_t is valid.
    let mut copy: sigset_t = unsafe { std::mem::zeroed() };
    let set = open_faults(set, &mut copy);
    // SAFETY: libc's definition, with valid (or null) sets.
    unsafe { f(how, set, old) }
}

/// `sigprocmask(2)`: the new mask (without the fault signals, see [`open_faults`]) and the
/// old one.
#[no_mangle]
pub unsafe extern "C" fn sigprocmask(how: c_int, set: *const sigset_t, old: *mut sigset_t) -> c_int {
    let f = real!(sigprocmask: fn(c_int, *const sigset_t, *mut sigset_t) -> c_int);
    // SAFETY: the caller's arguments, to libc's definition.
    unsafe { set_mask(f, how, set, old) }
}

/// `pthread_sigmask(3)`, as [`sigprocmask`].
#[no_mangle]
pub unsafe extern "C" fn pthread_sigmask(how: c_int, set: *const sigset_t, old: *mut sigset_t) -> c_int {
    let f = real!(pthread_sigmask: fn(c_int, *const sigset_t, *mut sigset_t) -> c_int);
    // SAFETY: the caller's arguments, to libc's definition.
    unsafe { set_mask(f, how, set, old) }
}

/// `sigsuspend(2)`: the mask while it waits (handlers run under it) without the fault signals.
#[no_mangle]
pub unsafe extern "C" fn sigsuspend(mask: *const sigset_t) -> c_int {
    // SAFETY: a zeroed sigset_t is valid.
    let mut copy: sigset_t = unsafe { std::mem::zeroed() };
    let mask = open_faults(mask, &mut copy);
    let f = real!(sigsuspend: fn(*const sigset_t) -> c_int);
    // SAFETY: libc's definition, with a valid set.
    unsafe { f(mask) }
}

/// The mask a handler runs under, without the fault signals (a stop-the-world handler
/// installed with `sigfillset(&sa.sa_mask)` that reads the heap would be killed otherwise).
pub(crate) fn handler_mask_open(act: &libc::sigaction) -> libc::sigaction {
    let mut a = *act;
    a.sa_mask = crate::faults::handler::without_fault_signals(a.sa_mask);
    a
}
