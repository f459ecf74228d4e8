//! Interposed libc entry points: system calls on device-owned buffers, and signal handlers
//! installed after ours.
//!
//! - **I/O**: the kernel does not raise a signal when a system call touches a page that is
//!   absent or write-protected under userfaultfd (or `mprotect`); it returns `EFAULT`. So
//!   before `read`, `write`, `pread`, `pwrite`, `readv`, `writev`, `preadv`, `pwritev`, `send`,
//!   `recv`, `sendto`, `recvfrom`, `sendmsg`, `recvmsg`, `fread` and `fwrite` run, the
//!   buffers are made host
//!   accessible (device-owned blocks come home; for reads into the buffer, Shared blocks
//!   become Host). One state load per block when nothing needs doing, nothing at all when
//!   coherence is not installed.
//! - **Signals**: `sigaction` and `signal` for SIGSEGV/SIGBUS record the program's handler as
//!   the one ours chains to, instead of replacing ours, once coherence is installed.
//!
//! These are `#[no_mangle]` definitions: in `libunimem.so` they interpose libc for C programs
//! under `LD_PRELOAD`; in a Rust executable that links this crate they take precedence over
//! libc's for every call the program (and std) makes. Calls libc makes internally (e.g.
//! `fread` reading into its own buffer) are not interposed; see docs/ARCHITECTURE.md.

#![allow(clippy::missing_safety_doc)]

use crate::coherence;
use crate::faults::handler;
use libc::{c_int, c_void, iovec, msghdr, size_t, sockaddr, socklen_t, ssize_t};
use std::sync::atomic::{AtomicUsize, Ordering::*};

/// Resolve the next definition of `name` (libc's) once.
fn next(cache: &AtomicUsize, name: &std::ffi::CStr) -> usize {
    let f = cache.load(Acquire);
    if f != 0 {
        return f;
    }
    // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name.
    let f = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
    if f == 0 {
        let mut l = unimem_alloc::os::Line::new();
        l.s("unimem: cannot find libc's ").s(name.to_str().unwrap_or("?")).s(" (dlsym RTLD_NEXT failed)");
        unimem_alloc::os::fatal(&mut l);
    }
    cache.store(f, Release);
    f
}

macro_rules! real {
    ($name:ident : fn($($t:ty),*) -> $r:ty) => {{
        static CACHE: AtomicUsize = AtomicUsize::new(0);
        let f = next(&CACHE, {
            // NUL-terminated symbol name.
            const N: &str = concat!(stringify!($name), "\0");
            // SAFETY: N ends with exactly one NUL.
            unsafe { std::ffi::CStr::from_bytes_with_nul_unchecked(N.as_bytes()) }
        });
        // SAFETY: `f` is libc's definition of this very function, with this signature.
        unsafe { std::mem::transmute::<usize, unsafe extern "C" fn($($t),*) -> $r>(f) }
    }};
}

/// Make `[p, p+len)` safe for the kernel to read (`kernel_writes` false) or write. On a
/// coherence error the buffer is left as it is and the system call reports `EFAULT`.
#[inline]
fn prepare(p: *const c_void, len: usize, kernel_writes: bool) {
    if len == 0 {
        return;
    }
    if let Some(s) = coherence::space() {
        if s.block_of(p as usize).is_some() {
            if let Err(e) = s.make_host_accessible(p as usize, len, kernel_writes) {
                let _i = unimem_alloc::InternalScope::new();
                eprintln!("unimem: cannot make the buffer {p:?}+{len} host-accessible for a system call: {e}");
            }
        }
    }
}

fn prepare_iov(iov: *const iovec, n: c_int, kernel_writes: bool) {
    if iov.is_null() || n <= 0 {
        return;
    }
    // SAFETY: the caller passes `n` valid iovecs (the system call's own contract).
    let iov = unsafe { std::slice::from_raw_parts(iov, n as usize) };
    for v in iov {
        prepare(v.iov_base, v.iov_len, kernel_writes);
    }
}

fn prepare_msg(msg: *const msghdr, kernel_writes: bool) {
    if msg.is_null() {
        return;
    }
    // SAFETY: the caller passes a valid msghdr (the system call's own contract).
    let m = unsafe { &*msg };
    prepare_iov(m.msg_iov, m.msg_iovlen as c_int, kernel_writes);
    prepare(m.msg_control, m.msg_controllen, kernel_writes);
    prepare(m.msg_name, m.msg_namelen as usize, kernel_writes);
}

/// `read(2)`.
#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    prepare(buf, n, true);
    let f = real!(read: fn(c_int, *mut c_void, size_t) -> ssize_t);
    // SAFETY: forwarding the caller's arguments to libc's definition.
    unsafe { f(fd, buf, n) }
}

/// `write(2)`.
#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    prepare(buf, n, false);
    let f = real!(write: fn(c_int, *const c_void, size_t) -> ssize_t);
    // SAFETY: forwarding the caller's arguments to libc's definition.
    unsafe { f(fd, buf, n) }
}

/// `pread(2)`.
#[no_mangle]
pub unsafe extern "C" fn pread(fd: c_int, buf: *mut c_void, n: size_t, off: libc::off_t) -> ssize_t {
    prepare(buf, n, true);
    let f = real!(pread: fn(c_int, *mut c_void, size_t, libc::off_t) -> ssize_t);
    // SAFETY: forwarding the caller's arguments to libc's definition.
    unsafe { f(fd, buf, n, off) }
}

/// `pread64`.
#[no_mangle]
pub unsafe extern "C" fn pread64(fd: c_int, buf: *mut c_void, n: size_t, off: libc::off64_t) -> ssize_t {
    prepare(buf, n, true);
    let f = real!(pread64: fn(c_int, *mut c_void, size_t, libc::off64_t) -> ssize_t);
    // SAFETY: forwarding the caller's arguments to libc's definition.
    unsafe { f(fd, buf, n, off) }
}

/// `pwrite(2)`.
#[no_mangle]
pub unsafe extern "C" fn pwrite(fd: c_int, buf: *const c_void, n: size_t, off: libc::off_t) -> ssize_t {
    prepare(buf, n, false);
    let f = real!(pwrite: fn(c_int, *const c_void, size_t, libc::off_t) -> ssize_t);
    // SAFETY: forwarding the caller's arguments to libc's definition.
    unsafe { f(fd, buf, n, off) }
}

/// `pwrite64`.
#[no_mangle]
pub unsafe extern "C" fn pwrite64(fd: c_int, buf: *const c_void, n: size_t, off: libc::off64_t) -> ssize_t {
    prepare(buf, n, false);
    let f = real!(pwrite64: fn(c_int, *const c_void, size_t, libc::off64_t) -> ssize_t);
    // SAFETY: forwarding the caller's arguments to libc's definition.
    unsafe { f(fd, buf, n, off) }
}

/// `readv(2)`.
#[no_mangle]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    prepare_iov(iov, n, true);
    let f = real!(readv: fn(c_int, *const iovec, c_int) -> ssize_t);
    // SAFETY: forwarding the caller's arguments to libc's definition.
    unsafe { f(fd, iov, n) }
}

/// `writev(2)`.
#[no_mangle]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    prepare_iov(iov, n, false);
    let f = real!(writev: fn(c_int, *const iovec, c_int) -> ssize_t);
    // SAFETY: forwarding the caller's arguments to libc's definition.
    unsafe { f(fd, iov, n) }
}

/// `preadv(2)`.
#[no_mangle]
pub unsafe extern "C" fn preadv(fd: c_int, iov: *const iovec, n: c_int, off: libc::off_t) -> ssize_t {
    prepare_iov(iov, n, true);
    let f = real!(preadv: fn(c_int, *const iovec, c_int, libc::off_t) -> ssize_t);
    // SAFETY: forwarding the caller's arguments to libc's definition.
    unsafe { f(fd, iov, n, off) }
}

/// `pwritev(2)`.
#[no_mangle]
pub unsafe extern "C" fn pwritev(fd: c_int, iov: *const iovec, n: c_int, off: libc::off_t) -> ssize_t {
    prepare_iov(iov, n, false);
    let f = real!(pwritev: fn(c_int, *const iovec, c_int, libc::off_t) -> ssize_t);
    // SAFETY: forwarding the caller's arguments to libc's definition.
    unsafe { f(fd, iov, n, off) }
}

/// `send(2)`.
#[no_mangle]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t {
    prepare(buf, n, false);
    let f = real!(send: fn(c_int, *const c_void, size_t, c_int) -> ssize_t);
    // SAFETY: forwarding the caller's arguments to libc's definition.
    unsafe { f(fd, buf, n, flags) }
}

/// `recv(2)`.
#[no_mangle]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t {
    prepare(buf, n, true);
    let f = real!(recv: fn(c_int, *mut c_void, size_t, c_int) -> ssize_t);
    // SAFETY: forwarding the caller's arguments to libc's definition.
    unsafe { f(fd, buf, n, flags) }
}

/// `sendto(2)`.
#[no_mangle]
pub unsafe extern "C" fn sendto(fd: c_int, buf: *const c_void, n: size_t, flags: c_int, to: *const sockaddr, tolen: socklen_t) -> ssize_t {
    prepare(buf, n, false);
    prepare(to as *const c_void, tolen as usize, false);
    let f = real!(sendto: fn(c_int, *const c_void, size_t, c_int, *const sockaddr, socklen_t) -> ssize_t);
    // SAFETY: forwarding the caller's arguments to libc's definition.
    unsafe { f(fd, buf, n, flags, to, tolen) }
}

/// `recvfrom(2)`.
#[no_mangle]
pub unsafe extern "C" fn recvfrom(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int, from: *mut sockaddr, fromlen: *mut socklen_t) -> ssize_t {
    prepare(buf, n, true);
    if !fromlen.is_null() {
        prepare(fromlen as *const c_void, std::mem::size_of::<socklen_t>(), true);
        // SAFETY: the caller passes a valid socklen_t when non-null.
        prepare(from as *const c_void, unsafe { *fromlen } as usize, true);
    }
    let f = real!(recvfrom: fn(c_int, *mut c_void, size_t, c_int, *mut sockaddr, *mut socklen_t) -> ssize_t);
    // SAFETY: forwarding the caller's arguments to libc's definition.
    unsafe { f(fd, buf, n, flags, from, fromlen) }
}

/// `sendmsg(2)`.
#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    prepare(msg as *const c_void, std::mem::size_of::<msghdr>(), false);
    prepare_msg(msg, false);
    let f = real!(sendmsg: fn(c_int, *const msghdr, c_int) -> ssize_t);
    // SAFETY: forwarding the caller's arguments to libc's definition.
    unsafe { f(fd, msg, flags) }
}

/// `recvmsg(2)`.
#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    prepare(msg as *const c_void, std::mem::size_of::<msghdr>(), true);
    prepare_msg(msg, true);
    let f = real!(recvmsg: fn(c_int, *mut msghdr, c_int) -> ssize_t);
    // SAFETY: forwarding the caller's arguments to libc's definition.
    unsafe { f(fd, msg, flags) }
}

/// `sigaction(2)`: SIGSEGV/SIGBUS actions become the ones our handler chains to.
#[no_mangle]
pub unsafe extern "C" fn sigaction(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int {
    if (sig == libc::SIGSEGV || sig == libc::SIGBUS) && handler::is_installed() {
        // SAFETY: `act` is null or a valid sigaction (the caller's contract).
        let new = unsafe { act.as_ref() };
        if let Some(prev) = handler::set_chained(sig, new) {
            if !old.is_null() {
                // SAFETY: `old` is a valid out-pointer (the caller's contract).
                unsafe { *old = prev };
            }
            return 0;
        }
    }
    // SAFETY: forwarding the caller's arguments to libc.
    unsafe { handler::real_sigaction(sig, act, old) }
}

/// `signal(2)` with glibc's BSD semantics (`SA_RESTART`, handler stays installed).
#[no_mangle]
pub unsafe extern "C" fn signal(sig: c_int, h: libc::sighandler_t) -> libc::sighandler_t {
    // SAFETY: a zeroed sigaction is valid; we set handler, flags and an empty mask.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = h;
    act.sa_flags = libc::SA_RESTART;
    // SAFETY: as above.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to locals.
    if unsafe { sigaction(sig, &act, &mut old) } != 0 {
        return libc::SIG_ERR;
    }
    old.sa_sigaction
}

/// `fread(3)`: glibc reads large requests straight into the caller's buffer with its
/// internal `read`, which is not interposed, so the buffer is prepared here.
#[no_mangle]
pub unsafe extern "C" fn fread(buf: *mut c_void, size: size_t, n: size_t, f: *mut libc::FILE) -> size_t {
    prepare(buf, size.saturating_mul(n), true);
    let real = real!(fread: fn(*mut c_void, size_t, size_t, *mut libc::FILE) -> size_t);
    // SAFETY: forwarding the caller's arguments to libc's definition.
    unsafe { real(buf, size, n, f) }
}

/// `fwrite(3)`: as `fread`, for glibc's direct writes of large requests.
#[no_mangle]
pub unsafe extern "C" fn fwrite(buf: *const c_void, size: size_t, n: size_t, f: *mut libc::FILE) -> size_t {
    prepare(buf, size.saturating_mul(n), false);
    let real = real!(fwrite: fn(*const c_void, size_t, size_t, *mut libc::FILE) -> size_t);
    // SAFETY: forwarding the caller's arguments to libc's definition.
    unsafe { real(buf, size, n, f) }
}
