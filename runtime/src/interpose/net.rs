//! Interposed socket calls past data transfer (`send`, `recv` and their kin are in the parent
//! module): the addresses `bind` and `connect` read, those `accept`, `getsockname` and
//! `getpeername` write (with their lengths, read and updated), option values, and the
//! message arrays of `sendmmsg` and `recvmmsg`. A buffer in an old heap block that a kernel
//! moved to the device would otherwise fail with `EFAULT` (docs/ARCHITECTURE.md, "System
//! calls, fork, free").
//!
//! The names are glibc's (2.36); none of these has a `_FORTIFY_SOURCE` form. On 64-bit
//! targets `recvmmsg` passes its timeout to the kernel as it is (which writes back the time
//! left) and `getsockopt` its value; 32-bit ones convert some of them in user space, where a
//! fault is handled as any.

use super::{prepare, prepare_msg, prepare_one, prepare_sized_out, UIO_MAXIOV};
use crate::coherence;
use libc::{c_int, c_uint, c_void, mmsghdr, sockaddr, socklen_t, timespec};

/// An address the kernel reads.
fn addr_in(addr: *const sockaddr, len: socklen_t) {
    prepare(addr.cast(), len as usize, false);
}

/// An array of `n` `mmsghdr`s (the kernel writes each `msg_len`; at most `UIO_MAXIOV` are
/// used) and each message as `sendmsg` (`kernel_writes` false) or `recvmsg` takes it.
fn mmsgs(v: *mut mmsghdr, n: c_uint, kernel_writes: bool) {
    if v.is_null() || coherence::space().is_none() {
        return;
    }
    let n = (n as usize).min(UIO_MAXIOV);
    prepare(v.cast(), std::mem::size_of::<mmsghdr>() * n, true);
    for i in 0..n {
        // `msg_hdr` is an `mmsghdr`'s first field. The caller passes `n` valid messages (the
        // system call's contract); `prepare_msg` reads the one at this address.
        prepare_msg(v.wrapping_add(i).cast(), kernel_writes);
    }
}

wrap! {
    /// `bind(2)`.
    fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int { addr_in(addr, len) }
    /// `connect(2)`.
    fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int { addr_in(addr, len) }
    /// `accept(2)`: the peer's address and its length, when given.
    fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int { prepare_sized_out(addr.cast(), len) }
    /// `accept4(2)`.
    fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int { prepare_sized_out(addr.cast(), len) }
    /// `getsockname(2)`.
    fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int { prepare_sized_out(addr.cast(), len) }
    /// `getpeername(2)`.
    fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int { prepare_sized_out(addr.cast(), len) }
    /// `getsockopt(2)`: the value and its length.
    fn getsockopt(fd: c_int, level: c_int, name: c_int, value: *mut c_void, len: *mut socklen_t) -> c_int { prepare_sized_out(value, len) }
    /// `setsockopt(2)`.
    fn setsockopt(fd: c_int, level: c_int, name: c_int, value: *const c_void, len: socklen_t) -> c_int { prepare(value, len as usize, false) }
    /// `sendmmsg(2)`.
    fn sendmmsg(fd: c_int, v: *mut mmsghdr, n: c_uint, flags: c_int) -> c_int { mmsgs(v, n, false) }
    /// `recvmmsg(2)`: the messages, and the timeout, which the kernel updates.
    fn recvmmsg(fd: c_int, v: *mut mmsghdr, n: c_uint, flags: c_int, timeout: *mut timespec) -> c_int {
        mmsgs(v, n, true);
        prepare_one(timeout, true);
    }
}
