//! Interposed calls that report on, or set, the process and the system through a struct the
//! kernel writes or reads: `uname`, `getrusage`, `sysinfo`, `times`, the resource limits
//! (`getrlimit`, `setrlimit`, `prlimit`, each also `...64`), interval timers (`setitimer`,
//! `getitimer`) and timer descriptors (`timerfd_settime`, `timerfd_gettime`). A struct in
//! an old heap block that a kernel moved to the device would otherwise fail with `EFAULT`
//! (docs/ARCHITECTURE.md, "System calls, fork, free").
//!
//! The names are glibc's (2.36), which passes these structs to the kernel as they are on
//! 64-bit targets; none has a `_FORTIFY_SOURCE` form. `...64` are the names of
//! `-D_FILE_OFFSET_BITS=64`, the same functions on 64-bit targets. POSIX timers
//! (`timer_settime`, `timer_gettime`) are left out: glibc exports them in three versions,
//! the oldest (x86-64's `GLIBC_2.2.5`) taking timer ids of another kind, and one
//! unversioned wrapper would receive the calls of programs bound to every version and pass
//! them all to the newest.

use super::prepare_one;
use libc::{__rlimit_resource_t, c_int, clock_t, itimerspec, itimerval, pid_t, rlimit, rlimit64, rusage, tms, utsname};

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
