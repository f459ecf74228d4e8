//! Interposed libc entry points: system calls on device-owned buffers, and signal handlers
//! installed after ours.
//!
//! - **System calls**: the kernel does not raise a signal when a system call touches a page
//!   that is absent or write-protected under userfaultfd (or `mprotect`); it returns
//!   `EFAULT`. So before the calls below run, the buffers they pass the kernel are made
//!   host-accessible (device-owned blocks come home; for buffers the kernel writes, Shared
//!   blocks become Host), with `prepare` for a buffer of known length, `prepare_str`
//!   for a NUL-terminated string (found block by block, each made readable before it is
//!   searched) and `prepare_strv` for `argv`/`envp` arrays. Before coherence is installed
//!   a wrapper costs one atomic load; after, one state load per block when nothing needs
//!   doing. `errno` is what libc's call leaves. The wrappers run on any thread; one that
//!   runs while a launch does twins a block it makes writable, as a CPU write fault does.
//!   - data I/O (here): `read`, `write`, `pread(64)`, `pwrite(64)`, `readv`, `writev`,
//!     `preadv`, `pwritev`, `send`, `recv`, `sendto`, `recvfrom`, `sendmsg`, `recvmsg`,
//!     `fread`, `fwrite`, `getrandom`, the offsets of `sendfile(64)`, `splice` and
//!     `copy_file_range`, `process_vm_readv` and `process_vm_writev`, and the
//!     `_FORTIFY_SOURCE` forms `__read_chk`, `__pread(64)_chk`, `__recv_chk`,
//!     `__recvfrom_chk`, `__fread_chk`;
//!   - paths, file metadata, file systems ([`files`]): the `open`, `stat`, `access`,
//!     `mkdir`, `unlink`, `rename`, `readlink`, `truncate`, `mknod`, `statfs`, `statvfs`
//!     and extended-attribute families, `chdir`, `chmod`, `chown`, `link`, `symlink` and
//!     their `at` forms, `lchown`, `utimensat`, `futimens`, `utime(s)`, `lutimes`,
//!     `futimesat`, `mkfifo(at)`, `inotify_add_watch`, `chroot`, `acct`, `swapon`,
//!     `swapoff`, `getcwd`, `getdents64`, `getdirentries(64)`, with their 64-bit,
//!     fortified and pre-2.33 (`__xstat`, `__xmknod`) names;
//!   - sockets ([`net`]): `bind`, `connect`, `accept(4)`, `getsockname`, `getpeername`,
//!     `getsockopt`, `setsockopt`, `sendmmsg`, `recvmmsg`;
//!   - programs and waiting ([`process`]): `execve`, `execv`, `execvp`, `execvpe`,
//!     `fexecve`, `posix_spawn(p)`, `system`, `wait`, `waitpid`, `wait3`, `wait4`, `waitid`,
//!     `pipe(2)`, `poll`, `ppoll`, `select`, `pselect`, `epoll_ctl`, `epoll_wait`,
//!     `epoll_pwait(2)`, `nanosleep`, `clock_nanosleep`;
//!   - the process and the system ([`system`]): `uname`, `getrusage`, `sysinfo`, `times`,
//!     `getrlimit`, `setrlimit`, `prlimit` (each also `...64`), `setitimer`, `getitimer`,
//!     `timerfd_settime`, `timerfd_gettime`, `sigprocmask`, `pthread_sigmask`, `sigpending`,
//!     `sigsuspend`, `sigtimedwait`, `sigwaitinfo`, `sigwait`, `signalfd`.
//! - **Signals**: `sigaction`, `signal`, `bsd_signal`, `sysv_signal`, `__sysv_signal` and
//!   `sigset` for SIGSEGV/SIGBUS record the program's handler as the one ours chains to,
//!   instead of replacing ours, once coherence is installed.
//! - **Page advice**: `madvise` that would drop pages of the managed heap zeroes them (or,
//!   for `MADV_FREE`, keeps them) instead ([`madvise`]).
//!
//! - **libc's stream buffers**: `fopen`, `opendir` and their kin open the stream, and
//!   allocate its buffer, in the internal heap, since libc refills and flushes it with
//!   system calls nothing can interpose ([`std_streams_internal`] does it for the standard
//!   streams); they prepare the path (`popen` the command and `environ`), which libc opens
//!   with its internal `open`; and [`fresh_allocation`] makes every block the C heap hands
//!   out host-writable.
//!
//! These are `#[no_mangle]` definitions: in `libunimem.so` they interpose libc for C programs
//! under `LD_PRELOAD`; in a Rust executable that links this crate they take precedence over
//! libc's for every call the program (and std) makes. Calls libc makes internally (e.g.
//! `fread` reading into its own buffer) are not interposed, nor are system calls this list
//! lacks; see docs/ARCHITECTURE.md, "System calls, fork, free", for what is not covered.

#![allow(clippy::missing_safety_doc)]

use crate::coherence;
use crate::faults::handler;
use libc::{c_char, c_int, c_uint, c_ulong, c_void, iovec, msghdr, off64_t, off_t, pid_t, size_t, sockaddr, socklen_t, ssize_t, FILE};
use std::sync::atomic::{AtomicUsize, Ordering::*};

/// The next definition of `name` (libc's), resolved on the first call and kept in `cache`.
#[inline]
fn next(cache: &AtomicUsize, name: &std::ffi::CStr) -> usize {
    let f = cache.load(Acquire);
    if f != 0 {
        return f;
    }
    resolve(cache, name)
}

/// [`next`]'s first call: `dlsym`, or a fatal error naming `name`.
#[cold]
fn resolve(cache: &AtomicUsize, name: &std::ffi::CStr) -> usize {
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

/// libc's definition of `name`, as a function pointer: `real!(read: fn(c_int, *mut c_void,
/// size_t) -> ssize_t)`; `fn(T, ...; ...) -> R` for a C variadic function (called with the
/// variadic convention).
macro_rules! real {
    ($name:ident : fn($($t:ty),*) -> $r:ty) => {
        real!(@ $name, unsafe extern "C" fn($($t),*) -> $r)
    };
    ($name:ident : fn($($t:ty),* ; ...) -> $r:ty) => {
        real!(@ $name, unsafe extern "C" fn($($t),*, ...) -> $r)
    };
    (@ $name:ident, $fty:ty) => {{
        static CACHE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let f = $crate::interpose::next(&CACHE, {
            // NUL-terminated symbol name.
            const N: &str = concat!(stringify!($name), "\0");
            // SAFETY: N ends with exactly one NUL.
            unsafe { std::ffi::CStr::from_bytes_with_nul_unchecked(N.as_bytes()) }
        });
        // SAFETY: `f` is libc's definition of this very function, with this signature.
        unsafe { std::mem::transmute::<usize, $fty>(f) }
    }};
}

/// Defines `#[no_mangle]` wrappers, each of which runs its block (making the buffers it names
/// host-accessible), then calls libc's definition with the same arguments and returns its
/// result; `errno` is what that call leaves (the block keeps it).
///
/// `fn name(a: A, b: B) -> R { ... }` forwards `a` and `b` as they are. `fn name(a: A; v: V)
/// -> R { ... }` is for a C function declared `R name(A a, ...)` whose variadic part is one
/// optional integer (`open`'s mode): the wrapper receives it as a fixed argument `v` and
/// forwards it as a variadic one. On x86-64 (System V) and aarch64 Linux (AAPCS64) a
/// variadic caller passes an `int`-sized integer in the same register as a named argument
/// of that position, so the fixed parameter reads what the caller passed; a caller that
/// passed nothing there leaves an unspecified register value, which libc ignores as it
/// would have (it reads the mode only for the flags that require one). Only those
/// architectures define such wrappers.
macro_rules! wrap {
    () => {};
    ($(#[$m:meta])* fn $name:ident($($a:ident: $t:ty),* ; $v:ident: $vt:ty) -> $r:ty $prepare:block $($rest:tt)*) => {
        $(#[$m])*
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $t),*, $v: $vt) -> $r {
            $prepare
            let f = real!($name: fn($($t),* ; ...) -> $r);
            // SAFETY: forwarding the caller's arguments to libc's definition, the optional
            // one as the caller passed it (see `wrap!`).
            unsafe { f($($a),*, $v) }
        }
        wrap!($($rest)*);
    };
    ($(#[$m:meta])* fn $name:ident($($a:ident: $t:ty),*) -> $r:ty $prepare:block $($rest:tt)*) => {
        $(#[$m])*
        #[no_mangle]
        pub unsafe extern "C" fn $name($($a: $t),*) -> $r {
            $prepare
            let f = real!($name: fn($($t),*) -> $r);
            // SAFETY: forwarding the caller's arguments to libc's definition.
            unsafe { f($($a),*) }
        }
        wrap!($($rest)*);
    };
}

pub mod files;
pub mod net;
pub mod process;
pub mod system;

/// Make `[p, p+len)` safe for the kernel to read (`kernel_writes` false) or write: blocks
/// of the managed heap on the device come home (for writes, read-only ones become
/// writable). Before coherence is installed this is one atomic load; after, one state load
/// per block when nothing needs doing. Keeps `errno`. On a coherence error the buffer is
/// left as it is (with a line on stderr) and the system call reports `EFAULT`.
#[inline(always)]
fn prepare(p: *const c_void, len: usize, kernel_writes: bool) {
    if let Some(s) = coherence::space() {
        prepare_in(s, p as usize, len, kernel_writes);
    }
}

/// [`prepare`] once coherence is installed (out of line: the wrappers inline only the
/// check above).
fn prepare_in(s: &coherence::Space, addr: usize, len: usize, kernel_writes: bool) {
    if len != 0 && !s.host_accessible(addr, len, kernel_writes) {
        make_accessible(s, addr, len, kernel_writes);
    }
}

/// [`prepare`]'s transitions, which make system calls: `errno` is saved around them.
#[cold]
fn make_accessible(s: &coherence::Space, addr: usize, len: usize, kernel_writes: bool) {
    let saved = unimem_alloc::os::errno();
    if let Err(e) = s.make_host_accessible(addr, len, kernel_writes) {
        let _i = unimem_alloc::InternalScope::new();
        eprintln!("unimem: cannot make the buffer {addr:#x}+{len} host-accessible for a system call: {e}");
    }
    unimem_alloc::os::set_errno(saved);
}

/// Make the NUL-terminated string at `p` (a path, an `execve` argument) safe for the kernel
/// to read. The string's length is found block by block, each block made host-readable
/// before it is searched for the NUL, so the search itself takes no fault. Before coherence
/// is installed this is one atomic load; a string outside the managed heap costs a compare
/// more, one in it a state load per block and the search.
#[inline]
fn prepare_str(p: *const c_char) {
    if let Some(s) = coherence::space() {
        if s.block_of(p as usize).is_some() {
            prepare_managed_str(s, p as usize);
        }
    }
}

/// [`prepare_str`] for a string starting at `addr` in the managed heap.
fn prepare_managed_str(s: &coherence::Space, mut addr: usize) {
    while let Some(b) = s.block_of(addr) {
        let end = s.block_addr(b) + s.block_size();
        prepare(addr as *const c_void, end - addr, false);
        // SAFETY: the caller passes a NUL-terminated string (the system call's contract)
        // that has not ended before `addr`, so block `b` holds a live allocation and is
        // committed memory, host-readable now (a racing migration makes the search fault,
        // and the fault handler brings the block home). `memchr` stops at the first NUL.
        if !unsafe { libc::memchr(addr as *const c_void, 0, end - addr) }.is_null() {
            return;
        }
        addr = end;
    }
}

/// Make a NULL-terminated array of strings (`argv`, `envp`), and its strings, safe for the
/// kernel to read. One atomic load before coherence is installed.
fn prepare_strv(v: *const *const c_char) {
    if coherence::space().is_none() || v.is_null() {
        return;
    }
    let mut e = v;
    loop {
        prepare(e.cast(), std::mem::size_of::<*const c_char>(), false);
        // SAFETY: `e` is an element of the caller's NULL-terminated array (the system
        // call's contract), host-readable now (or brought home by the fault handler).
        let p = unsafe { *e };
        if p.is_null() {
            return;
        }
        prepare_str(p);
        e = e.wrapping_add(1);
    }
}

/// [`prepare`] for one `T` at `p` (null is fine: outside the heap).
#[inline(always)]
fn prepare_one<T>(p: *const T, kernel_writes: bool) {
    prepare(p.cast(), std::mem::size_of::<T>(), kernel_writes);
}

/// Makes a fresh allocation `[p, p+len)` of the C heap writable on the host before the
/// program gets it (the shim's `malloc` family calls this). The memory is new, but its
/// block may hold other objects that a kernel left on the device or read-duplicated (Device
/// or Shared: no host access, or read-only), and libc fills some of its own allocations with
/// system calls it makes internally, past the `read` above: a `FILE`'s buffer, a `DIR`'s.
/// The kernel returns `EFAULT` for those instead of faulting (`fscanf` after a launch then
/// reads nothing). This does what the program's first write would do, at allocation; one
/// state load per block when nothing is needed, nothing before coherence is installed.
#[inline]
pub fn fresh_allocation(p: *const u8, len: usize) {
    prepare(p.cast(), len, true);
}

/// An array of `n` iovecs (which the kernel reads) and the buffers they describe.
fn prepare_iov(iov: *const iovec, n: c_int, kernel_writes: bool) {
    if iov.is_null() || n <= 0 || coherence::space().is_none() {
        return;
    }
    prepare(iov.cast(), std::mem::size_of::<iovec>().saturating_mul(n as usize), false);
    // SAFETY: the caller passes `n` valid iovecs (the system call's own contract),
    // host-readable now.
    let iov = unsafe { std::slice::from_raw_parts(iov, n as usize) };
    for v in iov {
        prepare(v.iov_base, v.iov_len, kernel_writes);
    }
}

/// A `msghdr` (which the kernel updates on receive) and everything it points to.
fn prepare_msg(msg: *const msghdr, kernel_writes: bool) {
    if msg.is_null() || coherence::space().is_none() {
        return;
    }
    prepare_one(msg, kernel_writes);
    // SAFETY: the caller passes a valid msghdr (the system call's own contract), host-readable now.
    let m = unsafe { &*msg };
    prepare_iov(m.msg_iov, m.msg_iovlen as c_int, kernel_writes);
    prepare(m.msg_control, m.msg_controllen, kernel_writes);
    prepare(m.msg_name, m.msg_namelen as usize, kernel_writes);
}

/// `splice`'s and `copy_file_range`'s offsets (each null or read and advanced).
fn offsets(a: *mut off64_t, b: *mut off64_t) {
    prepare_one(a, true);
    prepare_one(b, true);
}

/// `process_vm_readv`'s and `process_vm_writev`'s arrays and their buffers: ours
/// (`local_written`: the kernel writes them) and the other process's, in the other
/// direction. The other process's addresses are its own; they are ours when it is this
/// process (or a thread of it), which the kernel then reaches by remote page lookups that
/// return `EFAULT` as a system call's access does. So they are prepared as ours whatever the
/// pid: for another process that costs at most needless migrations home of blocks of ours
/// at the same addresses.
fn process_vm_iovs(local: *const iovec, n_local: c_ulong, remote: *const iovec, n_remote: c_ulong, local_written: bool) {
    // The kernel refuses more than UIO_MAXIOV before reading anything.
    if n_local as usize > UIO_MAXIOV || n_remote as usize > UIO_MAXIOV {
        return;
    }
    prepare_iov(local, n_local as c_int, local_written);
    prepare_iov(remote, n_remote as c_int, !local_written);
}

/// A buffer the kernel writes whose size is `*len`, which it reads and updates, when `len`
/// is given: `recvfrom`'s and `accept`'s address, `getsockopt`'s value.
fn prepare_sized_out(buf: *mut c_void, len: *mut socklen_t) {
    if !len.is_null() {
        prepare_one(len, true);
        // SAFETY: the caller passes a valid socklen_t when non-null (host-writable now).
        prepare(buf, unsafe { *len } as usize, true);
    }
}

/// The most iovecs (or messages) the kernel takes in one call (Linux's `UIO_MAXIOV`): it
/// refuses more (`readv`, `process_vm_readv`) or stops there (`sendmmsg`, `recvmmsg`).
const UIO_MAXIOV: usize = 1024;

wrap! {
    /// `read(2)`.
    fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t { prepare(buf, n, true) }
    /// `write(2)`.
    fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t { prepare(buf, n, false) }
    /// `pread(2)`.
    fn pread(fd: c_int, buf: *mut c_void, n: size_t, off: off_t) -> ssize_t { prepare(buf, n, true) }
    /// `pread64`.
    fn pread64(fd: c_int, buf: *mut c_void, n: size_t, off: off64_t) -> ssize_t { prepare(buf, n, true) }
    /// `pwrite(2)`.
    fn pwrite(fd: c_int, buf: *const c_void, n: size_t, off: off_t) -> ssize_t { prepare(buf, n, false) }
    /// `pwrite64`.
    fn pwrite64(fd: c_int, buf: *const c_void, n: size_t, off: off64_t) -> ssize_t { prepare(buf, n, false) }
    /// `readv(2)`.
    fn readv(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t { prepare_iov(iov, n, true) }
    /// `writev(2)`.
    fn writev(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t { prepare_iov(iov, n, false) }
    /// `preadv(2)`.
    fn preadv(fd: c_int, iov: *const iovec, n: c_int, off: off_t) -> ssize_t { prepare_iov(iov, n, true) }
    /// `pwritev(2)`.
    fn pwritev(fd: c_int, iov: *const iovec, n: c_int, off: off_t) -> ssize_t { prepare_iov(iov, n, false) }
    /// `send(2)`.
    fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t { prepare(buf, n, false) }
    /// `recv(2)`.
    fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t { prepare(buf, n, true) }
    /// `sendto(2)`.
    fn sendto(fd: c_int, buf: *const c_void, n: size_t, flags: c_int, to: *const sockaddr, tolen: socklen_t) -> ssize_t {
        prepare(buf, n, false);
        prepare(to.cast(), tolen as usize, false);
    }
    /// `recvfrom(2)`.
    fn recvfrom(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int, from: *mut sockaddr, fromlen: *mut socklen_t) -> ssize_t {
        prepare(buf, n, true);
        prepare_sized_out(from.cast(), fromlen);
    }
    /// `sendmsg(2)`.
    fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t { prepare_msg(msg, false) }
    /// `recvmsg(2)`.
    fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t { prepare_msg(msg, true) }
    /// `fread(3)`: glibc reads large requests straight into the caller's buffer with its
    /// internal `read`, which is not interposed, so the buffer is prepared here.
    fn fread(buf: *mut c_void, size: size_t, n: size_t, f: *mut FILE) -> size_t { prepare(buf, size.saturating_mul(n), true) }
    /// `fwrite(3)`: as `fread`, for glibc's direct writes of large requests.
    fn fwrite(buf: *const c_void, size: size_t, n: size_t, f: *mut FILE) -> size_t { prepare(buf, size.saturating_mul(n), false) }
    /// `getrandom(2)`.
    fn getrandom(buf: *mut c_void, n: size_t, flags: c_uint) -> ssize_t { prepare(buf, n, true) }
    /// `sendfile(2)`: the offset, read and advanced (null: the file's own).
    fn sendfile(out_fd: c_int, in_fd: c_int, off: *mut off_t, n: size_t) -> ssize_t { prepare_one(off, true) }
    /// `sendfile64`.
    fn sendfile64(out_fd: c_int, in_fd: c_int, off: *mut off64_t, n: size_t) -> ssize_t { prepare_one(off, true) }
    /// `splice(2)`: the two offsets, read and advanced.
    fn splice(fd_in: c_int, off_in: *mut off64_t, fd_out: c_int, off_out: *mut off64_t, n: size_t, flags: c_uint) -> ssize_t { offsets(off_in, off_out) }
    /// `copy_file_range(2)`.
    fn copy_file_range(fd_in: c_int, off_in: *mut off64_t, fd_out: c_int, off_out: *mut off64_t, n: size_t, flags: c_uint) -> ssize_t { offsets(off_in, off_out) }
    /// `process_vm_readv(2)`: our iovecs and their buffers (written), the other process's
    /// (read; see `process_vm_iovs`).
    fn process_vm_readv(pid: pid_t, local: *const iovec, n_local: c_ulong, remote: *const iovec, n_remote: c_ulong, flags: c_ulong) -> ssize_t {
        process_vm_iovs(local, n_local, remote, n_remote, true)
    }
    /// `process_vm_writev(2)`: ours read, the other process's written.
    fn process_vm_writev(pid: pid_t, local: *const iovec, n_local: c_ulong, remote: *const iovec, n_remote: c_ulong, flags: c_ulong) -> ssize_t {
        process_vm_iovs(local, n_local, remote, n_remote, false)
    }

    // `_FORTIFY_SOURCE` turns the calls above into these when the compiler knows the
    // buffer's size (`buflen`, checked by libc); libc's `read` below them is internal.

    /// `read` under `_FORTIFY_SOURCE`.
    fn __read_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t) -> ssize_t { prepare(buf, n, true) }
    /// `pread` under `_FORTIFY_SOURCE`.
    fn __pread_chk(fd: c_int, buf: *mut c_void, n: size_t, off: off_t, buflen: size_t) -> ssize_t { prepare(buf, n, true) }
    /// `pread64` under `_FORTIFY_SOURCE`.
    fn __pread64_chk(fd: c_int, buf: *mut c_void, n: size_t, off: off64_t, buflen: size_t) -> ssize_t { prepare(buf, n, true) }
    /// `recv` under `_FORTIFY_SOURCE`.
    fn __recv_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int) -> ssize_t { prepare(buf, n, true) }
    /// `recvfrom` under `_FORTIFY_SOURCE`.
    fn __recvfrom_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int, from: *mut sockaddr, fromlen: *mut socklen_t) -> ssize_t {
        prepare(buf, n, true);
        prepare_sized_out(from.cast(), fromlen);
    }
    /// `fread` under `_FORTIFY_SOURCE`.
    fn __fread_chk(buf: *mut c_void, buflen: size_t, size: size_t, n: size_t, f: *mut FILE) -> size_t { prepare(buf, size.saturating_mul(n), true) }
}

/// `madvise(2)`. On the managed heap, once coherence is installed, advice that drops pages
/// is carried out without dropping them, since a dropped page of a registered granule is
/// *missing* under userfaultfd (a system call on it fails with `EFAULT`) and a block a
/// kernel left on the device would come back with its old content: `MADV_DONTNEED` (and
/// `MADV_DONTNEED_LOCKED`) zero the range, as Linux makes it read; `MADV_FREE`, which lets
/// Linux keep the content, keeps it. The memory is not returned to the system. Everything
/// else, and every range outside the heap, goes to libc. A page dropped past this wrapper
/// (a raw system call) reads as zero at its next touch (`Protector::zero_if_missing`).
#[no_mangle]
pub unsafe extern "C" fn madvise(addr: *mut c_void, len: size_t, advice: c_int) -> c_int {
    /// `MADV_DONTNEED_LOCKED` (Linux 5.18).
    const MADV_DONTNEED_LOCKED: c_int = 24;
    let real = real!(madvise: fn(*mut c_void, size_t, c_int) -> c_int);
    let start = addr as usize;
    let drops = matches!(advice, libc::MADV_DONTNEED | MADV_DONTNEED_LOCKED | libc::MADV_FREE);
    // Misaligned or wrapping ranges are libc's to refuse (EINVAL).
    let end = start.checked_add(len).and_then(|e| e.checked_next_multiple_of(4096));
    let (Some(end), true, true, Some(_)) = (end, drops, start.is_multiple_of(4096), coherence::space()) else {
        // SAFETY: forwarding the caller's arguments to libc.
        return unsafe { real(addr, len, advice) };
    };
    let (base, _) = unimem_alloc::managed_range();
    let (lo, hi) = (start.max(base), end.min(base + unimem_alloc::managed_committed()));
    if lo >= hi {
        // SAFETY: as above.
        return unsafe { real(addr, len, advice) };
    }
    // The parts outside the committed heap go to libc.
    for (from, to) in [(start, lo), (hi, end)] {
        // SAFETY: as above, on a part of the caller's range.
        if from < to && unsafe { real(from as *mut c_void, to - from, advice) } != 0 {
            return -1;
        }
    }
    if advice != libc::MADV_FREE {
        // SAFETY: the caller gave up the range's content; it is committed heap memory, and a
        // block of it on the device comes home at the first store, as for any write.
        unsafe { std::ptr::write_bytes(lo as *mut u8, 0, hi - lo) };
    }
    0
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
    // Other signals' handlers run with the fault signals open (system::handler_mask_open).
    // SAFETY: `act` is null or a valid sigaction (the caller's contract).
    let open = unsafe { act.as_ref() }.map(system::handler_mask_open);
    let act = open.as_ref().map_or(act, |a| a as *const libc::sigaction);
    // SAFETY: forwarding the caller's arguments to libc.
    unsafe { handler::real_sigaction(sig, act, old) }
}

/// `signal(2)` with glibc's BSD semantics (`SA_RESTART`, handler stays installed).
#[no_mangle]
pub unsafe extern "C" fn signal(sig: c_int, h: libc::sighandler_t) -> libc::sighandler_t {
    install(sig, h, libc::SA_RESTART)
}

/// Installs `h` for `sig` with `flags` and an empty mask through [`sigaction`] (so a fault
/// signal's handler becomes the chained one); returns the previous handler or `SIG_ERR`.
fn install(sig: c_int, h: libc::sighandler_t, flags: c_int) -> libc::sighandler_t {
    // SAFETY: a zeroed sigaction is valid; we set handler, flags and an empty mask.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = h;
    act.sa_flags = flags;
    // SAFETY: as above.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to locals.
    if unsafe { sigaction(sig, &act, &mut old) } != 0 {
        return libc::SIG_ERR;
    }
    old.sa_sigaction
}

/// True for the signals whose handlers ours chains to, once it is installed.
fn chains(sig: c_int) -> bool {
    (sig == libc::SIGSEGV || sig == libc::SIGBUS) && handler::is_installed()
}

// glibc's other ways to set a handler call its internal `sigaction`, past ours: for SIGSEGV
// and SIGBUS they would replace our handler (the next device fault went to the program's).
// Other signals go to libc's definitions.

/// `bsd_signal(3)`: `signal` under its X/Open name.
#[no_mangle]
pub unsafe extern "C" fn bsd_signal(sig: c_int, h: libc::sighandler_t) -> libc::sighandler_t {
    if !chains(sig) {
        let f = real!(bsd_signal: fn(c_int, libc::sighandler_t) -> libc::sighandler_t);
        // SAFETY: forwarding the caller's arguments to libc.
        return unsafe { f(sig, h) };
    }
    install(sig, h, libc::SA_RESTART)
}

/// `sysv_signal(3)`: System V semantics, a handler that runs once and does not block its
/// signal (`SA_RESETHAND | SA_NODEFER`; ours chains to it once, then the action reads as
/// `SIG_DFL`, as the kernel would have reset it).
#[no_mangle]
pub unsafe extern "C" fn sysv_signal(sig: c_int, h: libc::sighandler_t) -> libc::sighandler_t {
    if !chains(sig) {
        let f = real!(sysv_signal: fn(c_int, libc::sighandler_t) -> libc::sighandler_t);
        // SAFETY: forwarding the caller's arguments to libc.
        return unsafe { f(sig, h) };
    }
    install(sig, h, libc::SA_RESETHAND | libc::SA_NODEFER)
}

/// `__sysv_signal`: what `signal` calls in a program compiled in strict ISO C mode
/// (`-std=c99` without `_DEFAULT_SOURCE`: glibc's `<signal.h>` renames it).
#[no_mangle]
pub unsafe extern "C" fn __sysv_signal(sig: c_int, h: libc::sighandler_t) -> libc::sighandler_t {
    // SAFETY: the same function in glibc, under its other name.
    unsafe { sysv_signal(sig, h) }
}

/// `sigset(3)` (System V): installs `disp` and unblocks the signal, or with `SIG_HOLD` blocks
/// it; returns `SIG_HOLD` if it was blocked, else the previous handler. The fault signals are
/// never blocked (`system.rs`), so for them `SIG_HOLD` only reports.
#[no_mangle]
pub unsafe extern "C" fn sigset(sig: c_int, disp: libc::sighandler_t) -> libc::sighandler_t {
    /// glibc's `SIG_HOLD`.
    const SIG_HOLD: libc::sighandler_t = 2;
    if !chains(sig) {
        let f = real!(sigset: fn(c_int, libc::sighandler_t) -> libc::sighandler_t);
        // SAFETY: forwarding the caller's arguments to libc.
        return unsafe { f(sig, disp) };
    }
    let Some(old) = handler::set_chained(sig, None) else { return libc::SIG_ERR };
    if disp == SIG_HOLD {
        return old.sa_sigaction;
    }
    install(sig, disp, 0)
}

    // ---- libc's own buffers: out of the managed heap ----
//
// glibc fills a stream's buffer with its internal `read` and empties it with its internal
// `write`, past the entry points above. A buffer in the managed heap shares its block with
// the program's objects; when a kernel writes one of those, the whole block goes to the
// device, and the next refill or flush of the stream fails with `EFAULT` (input reads as
// end of file, output is lost). So streams are opened, and their buffers allocated, in the
// internal heap, which never migrates; likewise a directory stream's buffer (`getdents64`).

extern "C" {
    /// glibc: allocates `f`'s buffer now as the first read or write would (the size from
    /// `st_blksize`, line buffering for a terminal), through `malloc`.
    fn _IO_doallocbuf(f: *mut libc::FILE);
    /// POSIX: a stream's lock (recursive), as stdio's own functions take it.
    fn flockfile(f: *mut libc::FILE);
    fn funlockfile(f: *mut libc::FILE);
}

/// Gives the stream `f` (if not null) its buffer now, in the internal heap (the caller is
/// inside an `InternalScope`). Returns `f`.
fn with_internal_buffer(f: *mut libc::FILE) -> *mut libc::FILE {
    if !f.is_null() {
        // SAFETY: `f` is a stream libc just opened (already on libc's list of streams, which
        // `fflush(NULL)` on another thread walks: hence the stream's lock, as glibc takes it
        // around its own calls); allocating its buffer is what its first use does, and
        // leaves its state otherwise unchanged.
        unsafe {
            flockfile(f);
            _IO_doallocbuf(f);
            funlockfile(f);
        }
    }
    f
}

/// Allocates the buffers of `stdin`, `stdout` and `stderr` in the internal heap, before the
/// program's first use of them would allocate them in the managed heap. The shim calls this
/// once, before `main`; a stream that already has a buffer keeps it. The buffering mode
/// (line-buffered on a terminal) is decided now, from the file descriptor as it is now.
pub fn std_streams_internal() {
    extern "C" {
        static stdin: *mut libc::FILE;
        static stdout: *mut libc::FILE;
        static stderr: *mut libc::FILE;
    }
    let _internal = unimem_alloc::InternalScope::new();
    // SAFETY: libc's standard streams, initialised before any constructor of a library
    // loaded after libc runs; `_IO_doallocbuf` does nothing to a stream with a buffer.
    unsafe {
        for f in [stdin, stdout, stderr] {
            with_internal_buffer(f);
        }
    }
}

/// Opens a stream as `open` does, with the stream and its buffer in the internal heap.
fn internal_stream(open: impl FnOnce() -> *mut libc::FILE) -> *mut libc::FILE {
    let _internal = unimem_alloc::InternalScope::new();
    with_internal_buffer(open())
}

/// `fopen(3)`, stream and buffer in the internal heap (libc opens `path` with its internal
/// `open`).
#[no_mangle]
pub unsafe extern "C" fn fopen(path: *const libc::c_char, mode: *const libc::c_char) -> *mut libc::FILE {
    prepare_str(path);
    let real = real!(fopen: fn(*const libc::c_char, *const libc::c_char) -> *mut libc::FILE);
    // SAFETY: forwarding the caller's arguments to libc's definition.
    internal_stream(|| unsafe { real(path, mode) })
}

/// `fopen64(3)`: as `fopen`.
#[no_mangle]
pub unsafe extern "C" fn fopen64(path: *const libc::c_char, mode: *const libc::c_char) -> *mut libc::FILE {
    prepare_str(path);
    let real = real!(fopen64: fn(*const libc::c_char, *const libc::c_char) -> *mut libc::FILE);
    // SAFETY: forwarding the caller's arguments to libc's definition.
    internal_stream(|| unsafe { real(path, mode) })
}

/// `fdopen(3)`: as `fopen`.
#[no_mangle]
pub unsafe extern "C" fn fdopen(fd: c_int, mode: *const libc::c_char) -> *mut libc::FILE {
    let real = real!(fdopen: fn(c_int, *const libc::c_char) -> *mut libc::FILE);
    // SAFETY: forwarding the caller's arguments to libc's definition.
    internal_stream(|| unsafe { real(fd, mode) })
}

/// `freopen(3)`: the reopened stream's new buffer in the internal heap.
#[no_mangle]
pub unsafe extern "C" fn freopen(path: *const libc::c_char, mode: *const libc::c_char, f: *mut libc::FILE) -> *mut libc::FILE {
    prepare_str(path);
    let real = real!(freopen: fn(*const libc::c_char, *const libc::c_char, *mut libc::FILE) -> *mut libc::FILE);
    // SAFETY: forwarding the caller's arguments to libc's definition.
    internal_stream(|| unsafe { real(path, mode, f) })
}

/// `freopen64(3)`: as `freopen`.
#[no_mangle]
pub unsafe extern "C" fn freopen64(path: *const libc::c_char, mode: *const libc::c_char, f: *mut libc::FILE) -> *mut libc::FILE {
    prepare_str(path);
    let real = real!(freopen64: fn(*const libc::c_char, *const libc::c_char, *mut libc::FILE) -> *mut libc::FILE);
    // SAFETY: forwarding the caller's arguments to libc's definition.
    internal_stream(|| unsafe { real(path, mode, f) })
}

/// `tmpfile(3)`: as `fopen`.
#[no_mangle]
pub unsafe extern "C" fn tmpfile() -> *mut libc::FILE {
    let real = real!(tmpfile: fn() -> *mut libc::FILE);
    // SAFETY: libc's definition, no arguments.
    internal_stream(|| unsafe { real() })
}

/// `tmpfile64(3)`: as `fopen`.
#[no_mangle]
pub unsafe extern "C" fn tmpfile64() -> *mut libc::FILE {
    let real = real!(tmpfile64: fn() -> *mut libc::FILE);
    // SAFETY: libc's definition, no arguments.
    internal_stream(|| unsafe { real() })
}

/// `popen(3)`: as `fopen`; the shell gets `command` and `environ` from the kernel.
#[no_mangle]
pub unsafe extern "C" fn popen(command: *const libc::c_char, mode: *const libc::c_char) -> *mut libc::FILE {
    prepare_str(command);
    process::prepare_environ();
    let real = real!(popen: fn(*const libc::c_char, *const libc::c_char) -> *mut libc::FILE);
    // SAFETY: forwarding the caller's arguments to libc's definition.
    internal_stream(|| unsafe { real(command, mode) })
}

/// `opendir(3)`: the directory stream and its buffer in the internal heap.
#[no_mangle]
pub unsafe extern "C" fn opendir(path: *const libc::c_char) -> *mut libc::DIR {
    prepare_str(path);
    let real = real!(opendir: fn(*const libc::c_char) -> *mut libc::DIR);
    let _internal = unimem_alloc::InternalScope::new();
    // SAFETY: forwarding the caller's arguments to libc's definition.
    unsafe { real(path) }
}

/// `fdopendir(3)`: as `opendir`.
#[no_mangle]
pub unsafe extern "C" fn fdopendir(fd: c_int) -> *mut libc::DIR {
    let real = real!(fdopendir: fn(c_int) -> *mut libc::DIR);
    let _internal = unimem_alloc::InternalScope::new();
    // SAFETY: forwarding the caller's arguments to libc's definition.
    unsafe { real(fd) }
}
