//! Interposed calls on paths and file metadata: the kernel reads a path (a NUL-terminated
//! string, made host-readable by `prepare_str`) and writes a `struct stat`, a link's
//! target or the working directory into the caller's buffer; and calls on descriptors that
//! pass a struct (`ioctl`, `fcntl`'s locks and owners). A path or a struct in an old
//! heap block that a kernel moved to the device would otherwise fail with `EFAULT`
//! (docs/ARCHITECTURE.md, "System calls, fork, free").
//!
//! The names are the ones programs link to (glibc 2.36, `nm -D` on programs compiled here):
//! `stat`, `lstat`, `fstat` and `fstatat` are functions since glibc 2.33 (programs built
//! against older headers call `__xstat` and its kin, which glibc still exports);
//! `-D_FILE_OFFSET_BITS=64` makes them `stat64`, `open64`, `creat64`, `truncate64`, ...;
//! `-D_FORTIFY_SOURCE` turns `open` without a mode into `__open_2`, and `readlink` and
//! `getcwd` into `__readlink_chk` and `__getcwd_chk` when the buffer's size is known.
//!
//! `open` and `openat` are variadic in C (`int open(const char *, int, ...)`): the mode is
//! received as a fixed `mode_t` and forwarded as a variadic argument (the `;` form of
//! `wrap!`, whose comment gives the ABI argument; x86-64 and aarch64 only).

use super::{prepare, prepare_one, prepare_str};
use libc::{c_char, c_int, c_uint, c_ulong, c_void, dev_t, gid_t, mode_t, off64_t, off_t, size_t, ssize_t, timespec, timeval, uid_t};

/// A path the kernel reads and a `T` it writes (`stat` and its kin).
fn path_and_out<T>(path: *const c_char, out: *mut T) {
    prepare_str(path);
    prepare_one(out, true);
}

/// A path and a `T` the kernel reads (each null or valid).
fn path_and_in<T>(path: *const c_char, data: *const T) {
    prepare_str(path);
    prepare_one(data, false);
}

/// A path the kernel reads and `len` bytes it writes (`readlink` and its kin).
fn path_and_out_bytes(path: *const c_char, out: *mut c_char, len: size_t) {
    prepare_str(path);
    prepare(out.cast(), len, true);
}

/// Two strings the kernel reads: paths (`rename` and its kin), a path and an attribute's
/// name (`removexattr`).
fn two_paths(a: *const c_char, b: *const c_char) {
    prepare_str(a);
    prepare_str(b);
}

wrap! {
    /// `open(2)`.
    fn open(path: *const c_char, flags: c_int; mode: mode_t) -> c_int { prepare_str(path) }
    /// `open64`.
    fn open64(path: *const c_char, flags: c_int; mode: mode_t) -> c_int { prepare_str(path) }
    /// `openat(2)`.
    fn openat(dirfd: c_int, path: *const c_char, flags: c_int; mode: mode_t) -> c_int { prepare_str(path) }
    /// `openat64`.
    fn openat64(dirfd: c_int, path: *const c_char, flags: c_int; mode: mode_t) -> c_int { prepare_str(path) }
    /// `open` without a mode under `_FORTIFY_SOURCE`.
    fn __open_2(path: *const c_char, flags: c_int) -> c_int { prepare_str(path) }
    /// `open64` without a mode under `_FORTIFY_SOURCE`.
    fn __open64_2(path: *const c_char, flags: c_int) -> c_int { prepare_str(path) }
    /// `openat` without a mode under `_FORTIFY_SOURCE`.
    fn __openat_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int { prepare_str(path) }
    /// `openat64` without a mode under `_FORTIFY_SOURCE`.
    fn __openat64_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int { prepare_str(path) }
    /// `creat(2)`.
    fn creat(path: *const c_char, mode: mode_t) -> c_int { prepare_str(path) }
    /// `creat64`.
    fn creat64(path: *const c_char, mode: mode_t) -> c_int { prepare_str(path) }
    /// `access(2)`.
    fn access(path: *const c_char, mode: c_int) -> c_int { prepare_str(path) }
    /// `faccessat(2)`.
    fn faccessat(dirfd: c_int, path: *const c_char, mode: c_int, flags: c_int) -> c_int { prepare_str(path) }
    /// `mkdir(2)`.
    fn mkdir(path: *const c_char, mode: mode_t) -> c_int { prepare_str(path) }
    /// `mkdirat(2)`.
    fn mkdirat(dirfd: c_int, path: *const c_char, mode: mode_t) -> c_int { prepare_str(path) }
    /// `rmdir(2)`.
    fn rmdir(path: *const c_char) -> c_int { prepare_str(path) }
    /// `unlink(2)`.
    fn unlink(path: *const c_char) -> c_int { prepare_str(path) }
    /// `unlinkat(2)`.
    fn unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int { prepare_str(path) }
    /// `rename(2)`.
    fn rename(old: *const c_char, new: *const c_char) -> c_int { two_paths(old, new) }
    /// `renameat(2)`.
    fn renameat(old_dirfd: c_int, old: *const c_char, new_dirfd: c_int, new: *const c_char) -> c_int { two_paths(old, new) }
    /// `renameat2(2)`.
    fn renameat2(old_dirfd: c_int, old: *const c_char, new_dirfd: c_int, new: *const c_char, flags: c_uint) -> c_int { two_paths(old, new) }
    /// `link(2)`.
    fn link(old: *const c_char, new: *const c_char) -> c_int { two_paths(old, new) }
    /// `symlink(2)`.
    fn symlink(target: *const c_char, path: *const c_char) -> c_int { two_paths(target, path) }
    /// `chdir(2)`.
    fn chdir(path: *const c_char) -> c_int { prepare_str(path) }
    /// `chmod(2)`.
    fn chmod(path: *const c_char, mode: mode_t) -> c_int { prepare_str(path) }
    /// `chown(2)`.
    fn chown(path: *const c_char, uid: uid_t, gid: gid_t) -> c_int { prepare_str(path) }
    /// `truncate(2)`.
    fn truncate(path: *const c_char, len: off_t) -> c_int { prepare_str(path) }
    /// `truncate64`.
    fn truncate64(path: *const c_char, len: off64_t) -> c_int { prepare_str(path) }
    /// `utimensat(2)`: the path and the two times (null: now).
    fn utimensat(dirfd: c_int, path: *const c_char, times: *const [timespec; 2], flags: c_int) -> c_int {
        prepare_str(path);
        prepare_one(times, false);
    }
    /// `readlink(2)`.
    fn readlink(path: *const c_char, buf: *mut c_char, size: size_t) -> ssize_t { path_and_out_bytes(path, buf, size) }
    /// `readlinkat(2)`.
    fn readlinkat(dirfd: c_int, path: *const c_char, buf: *mut c_char, size: size_t) -> ssize_t { path_and_out_bytes(path, buf, size) }
    /// `readlink` under `_FORTIFY_SOURCE`.
    fn __readlink_chk(path: *const c_char, buf: *mut c_char, size: size_t, buflen: size_t) -> ssize_t { path_and_out_bytes(path, buf, size) }
    /// `readlinkat` under `_FORTIFY_SOURCE`.
    fn __readlinkat_chk(dirfd: c_int, path: *const c_char, buf: *mut c_char, size: size_t, buflen: size_t) -> ssize_t { path_and_out_bytes(path, buf, size) }
    /// `getcwd(3)` (a null `buf` is allocated by libc, fresh and host-writable).
    fn getcwd(buf: *mut c_char, size: size_t) -> *mut c_char { prepare(buf.cast(), size, true) }
    /// `getcwd` under `_FORTIFY_SOURCE`.
    fn __getcwd_chk(buf: *mut c_char, size: size_t, buflen: size_t) -> *mut c_char { prepare(buf.cast(), size, true) }

    /// `fchmodat(2)`.
    fn fchmodat(dirfd: c_int, path: *const c_char, mode: mode_t, flags: c_int) -> c_int { prepare_str(path) }
    /// `fchownat(2)`.
    fn fchownat(dirfd: c_int, path: *const c_char, uid: uid_t, gid: gid_t, flags: c_int) -> c_int { prepare_str(path) }
    /// `lchown(2)`.
    fn lchown(path: *const c_char, uid: uid_t, gid: gid_t) -> c_int { prepare_str(path) }
    /// `linkat(2)`.
    fn linkat(old_dirfd: c_int, old: *const c_char, new_dirfd: c_int, new: *const c_char, flags: c_int) -> c_int { two_paths(old, new) }
    /// `symlinkat(2)`.
    fn symlinkat(target: *const c_char, dirfd: c_int, path: *const c_char) -> c_int { two_paths(target, path) }
    /// `futimens(3)`: the two times (null: now).
    fn futimens(fd: c_int, times: *const [timespec; 2]) -> c_int { prepare_one(times, false) }
    /// `utime(2)`: the path and the times (null: now). glibc 2.36 converts the times in user
    /// space (where a fault is handled), older ones passed them to the kernel.
    fn utime(path: *const c_char, times: *const libc::utimbuf) -> c_int { path_and_in(path, times) }
    /// `utimes(2)`.
    fn utimes(path: *const c_char, times: *const [timeval; 2]) -> c_int { path_and_in(path, times) }
    /// `lutimes(3)`.
    fn lutimes(path: *const c_char, times: *const [timeval; 2]) -> c_int { path_and_in(path, times) }
    /// `futimesat(2)`.
    fn futimesat(dirfd: c_int, path: *const c_char, times: *const [timeval; 2]) -> c_int { path_and_in(path, times) }
    /// `mknod(2)` (a function since glibc 2.33).
    fn mknod(path: *const c_char, mode: mode_t, dev: dev_t) -> c_int { prepare_str(path) }
    /// `mknodat(2)`.
    fn mknodat(dirfd: c_int, path: *const c_char, mode: mode_t, dev: dev_t) -> c_int { prepare_str(path) }
    /// `mknod` of programs built against glibc before 2.33 (`*dev` is read in user space,
    /// prepared as `utime`'s times are).
    fn __xmknod(ver: c_int, path: *const c_char, mode: mode_t, dev: *const dev_t) -> c_int { path_and_in(path, dev) }
    /// `mknodat` of programs built against glibc before 2.33.
    fn __xmknodat(ver: c_int, dirfd: c_int, path: *const c_char, mode: mode_t, dev: *const dev_t) -> c_int { path_and_in(path, dev) }
    /// `mkfifo(3)`.
    fn mkfifo(path: *const c_char, mode: mode_t) -> c_int { prepare_str(path) }
    /// `mkfifoat(3)`.
    fn mkfifoat(dirfd: c_int, path: *const c_char, mode: mode_t) -> c_int { prepare_str(path) }
    /// `inotify_add_watch(2)`.
    fn inotify_add_watch(fd: c_int, path: *const c_char, mask: u32) -> c_int { prepare_str(path) }
    /// `chroot(2)`.
    fn chroot(path: *const c_char) -> c_int { prepare_str(path) }
    /// `acct(2)` (null: off).
    fn acct(path: *const c_char) -> c_int { prepare_str(path) }
    /// `swapon(2)`.
    fn swapon(path: *const c_char, flags: c_int) -> c_int { prepare_str(path) }
    /// `swapoff(2)`.
    fn swapoff(path: *const c_char) -> c_int { prepare_str(path) }

    /// `getdents64(2)`: the directory entries.
    fn getdents64(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t { prepare(buf, n, true) }
    /// `getdirentries(3)`: the entries, and the position written in user space (`*base`).
    fn getdirentries(fd: c_int, buf: *mut c_char, n: size_t, base: *mut off_t) -> ssize_t { prepare(buf.cast(), n, true) }
    /// `getdirentries64`.
    fn getdirentries64(fd: c_int, buf: *mut c_char, n: size_t, base: *mut off64_t) -> ssize_t { prepare(buf.cast(), n, true) }
}

// ---- File systems and extended attributes ----

/// An attribute's name, which the kernel reads, and its value, `size` bytes it reads
/// (`setxattr`) or writes (`getxattr`).
fn xattr(name: *const c_char, value: *const c_void, size: size_t, kernel_writes: bool) {
    prepare_str(name);
    prepare(value, size, kernel_writes);
}

/// As [`xattr`], with a path.
fn path_xattr(path: *const c_char, name: *const c_char, value: *const c_void, size: size_t, kernel_writes: bool) {
    prepare_str(path);
    xattr(name, value, size, kernel_writes);
}

wrap! {
    /// `statfs(2)`.
    fn statfs(path: *const c_char, buf: *mut libc::statfs) -> c_int { path_and_out(path, buf) }
    /// `statfs64`.
    fn statfs64(path: *const c_char, buf: *mut libc::statfs64) -> c_int { path_and_out(path, buf) }
    /// `fstatfs(2)`.
    fn fstatfs(fd: c_int, buf: *mut libc::statfs) -> c_int { prepare_one(buf, true) }
    /// `fstatfs64`.
    fn fstatfs64(fd: c_int, buf: *mut libc::statfs64) -> c_int { prepare_one(buf, true) }
    /// `statvfs(3)` (glibc fills `buf` in user space from a `statfs` of its own).
    fn statvfs(path: *const c_char, buf: *mut libc::statvfs) -> c_int { path_and_out(path, buf) }
    /// `statvfs64`.
    fn statvfs64(path: *const c_char, buf: *mut libc::statvfs64) -> c_int { path_and_out(path, buf) }

    /// `getxattr(2)`.
    fn getxattr(path: *const c_char, name: *const c_char, value: *mut c_void, size: size_t) -> ssize_t { path_xattr(path, name, value, size, true) }
    /// `lgetxattr(2)`.
    fn lgetxattr(path: *const c_char, name: *const c_char, value: *mut c_void, size: size_t) -> ssize_t { path_xattr(path, name, value, size, true) }
    /// `fgetxattr(2)`.
    fn fgetxattr(fd: c_int, name: *const c_char, value: *mut c_void, size: size_t) -> ssize_t { xattr(name, value, size, true) }
    /// `setxattr(2)`.
    fn setxattr(path: *const c_char, name: *const c_char, value: *const c_void, size: size_t, flags: c_int) -> c_int { path_xattr(path, name, value, size, false) }
    /// `lsetxattr(2)`.
    fn lsetxattr(path: *const c_char, name: *const c_char, value: *const c_void, size: size_t, flags: c_int) -> c_int { path_xattr(path, name, value, size, false) }
    /// `fsetxattr(2)`.
    fn fsetxattr(fd: c_int, name: *const c_char, value: *const c_void, size: size_t, flags: c_int) -> c_int { xattr(name, value, size, false) }
    /// `listxattr(2)`: the path, and the list of names written.
    fn listxattr(path: *const c_char, list: *mut c_char, size: size_t) -> ssize_t { path_and_out_bytes(path, list, size) }
    /// `llistxattr(2)`.
    fn llistxattr(path: *const c_char, list: *mut c_char, size: size_t) -> ssize_t { path_and_out_bytes(path, list, size) }
    /// `flistxattr(2)`.
    fn flistxattr(fd: c_int, list: *mut c_char, size: size_t) -> ssize_t { prepare(list.cast(), size, true) }
    /// `removexattr(2)`.
    fn removexattr(path: *const c_char, name: *const c_char) -> c_int { two_paths(path, name) }
    /// `lremovexattr(2)`.
    fn lremovexattr(path: *const c_char, name: *const c_char) -> c_int { two_paths(path, name) }
    /// `fremovexattr(2)`.
    fn fremovexattr(fd: c_int, name: *const c_char) -> c_int { prepare_str(name) }
}

// ---- The stat family: a path in, a struct out ----

wrap! {
    /// `stat(2)`.
    fn stat(path: *const c_char, buf: *mut libc::stat) -> c_int { path_and_out(path, buf) }
    /// `stat64`.
    fn stat64(path: *const c_char, buf: *mut libc::stat64) -> c_int { path_and_out(path, buf) }
    /// `lstat(2)`.
    fn lstat(path: *const c_char, buf: *mut libc::stat) -> c_int { path_and_out(path, buf) }
    /// `lstat64`.
    fn lstat64(path: *const c_char, buf: *mut libc::stat64) -> c_int { path_and_out(path, buf) }
    /// `fstat(2)`.
    fn fstat(fd: c_int, buf: *mut libc::stat) -> c_int { prepare_one(buf, true) }
    /// `fstat64`.
    fn fstat64(fd: c_int, buf: *mut libc::stat64) -> c_int { prepare_one(buf, true) }
    /// `fstatat(2)`.
    fn fstatat(dirfd: c_int, path: *const c_char, buf: *mut libc::stat, flags: c_int) -> c_int { path_and_out(path, buf) }
    /// `fstatat64`.
    fn fstatat64(dirfd: c_int, path: *const c_char, buf: *mut libc::stat64, flags: c_int) -> c_int { path_and_out(path, buf) }
    /// `statx(2)`.
    fn statx(dirfd: c_int, path: *const c_char, flags: c_int, mask: c_uint, buf: *mut libc::statx) -> c_int { path_and_out(path, buf) }
    /// `stat` of programs built against glibc before 2.33.
    fn __xstat(ver: c_int, path: *const c_char, buf: *mut libc::stat) -> c_int { path_and_out(path, buf) }
    /// `stat64` of programs built against glibc before 2.33.
    fn __xstat64(ver: c_int, path: *const c_char, buf: *mut libc::stat64) -> c_int { path_and_out(path, buf) }
    /// `lstat` of programs built against glibc before 2.33.
    fn __lxstat(ver: c_int, path: *const c_char, buf: *mut libc::stat) -> c_int { path_and_out(path, buf) }
    /// `lstat64` of programs built against glibc before 2.33.
    fn __lxstat64(ver: c_int, path: *const c_char, buf: *mut libc::stat64) -> c_int { path_and_out(path, buf) }
    /// `fstat` of programs built against glibc before 2.33.
    fn __fxstat(ver: c_int, fd: c_int, buf: *mut libc::stat) -> c_int { prepare_one(buf, true) }
    /// `fstat64` of programs built against glibc before 2.33.
    fn __fxstat64(ver: c_int, fd: c_int, buf: *mut libc::stat64) -> c_int { prepare_one(buf, true) }
    /// `fstatat` of programs built against glibc before 2.33.
    fn __fxstatat(ver: c_int, dirfd: c_int, path: *const c_char, buf: *mut libc::stat, flags: c_int) -> c_int { path_and_out(path, buf) }
    /// `fstatat64` of programs built against glibc before 2.33.
    fn __fxstatat64(ver: c_int, dirfd: c_int, path: *const c_char, buf: *mut libc::stat64, flags: c_int) -> c_int { path_and_out(path, buf) }
}

/// Bytes made host-accessible for an `ioctl` request that does not encode its argument's size
/// (the requests older than the `_IOC` encoding: `FIONREAD`, `TCGETS`, `TIOCGWINSZ`, the
/// socket ones taking a `struct ifreq`, ...): their structs are smaller (`termios` 60 bytes,
/// `ifreq` 40), so this covers them; the kernel may write all of it.
pub const IOCTL_UNSIZED_BYTES: usize = 256;

/// What `ioctl` request `request` does to the memory its argument points to: `(bytes, kernel
/// writes)`. Requests in the `_IOC` encoding (Linux's generic one: 2 direction bits at 30, 14
/// size bits at 16) say it; `_IOC_READ` is the kernel writing to the caller. Others (the
/// direction and size bits clear) may read and write up to [`IOCTL_UNSIZED_BYTES`]. An
/// argument that is a number, not a pointer, is outside the managed heap (or if it is not,
/// its blocks only come home early).
pub fn ioctl_extent(request: c_ulong) -> (usize, bool) {
    let size = ((request >> 16) & 0x3fff) as usize;
    let dir = (request >> 30) & 3;
    match (dir, size) {
        (0, 0) => (IOCTL_UNSIZED_BYTES, true),
        (_, size) => (size, dir & 2 != 0),
    }
}

/// `fcntl` commands the `libc` crate does not name (Linux's `<fcntl.h>`): the owner of a
/// descriptor's signals as a `struct f_owner_ex` (two ints), and write-lifetime hints (a u64).
const F_GETOWN_EX: c_int = 16;
const F_SETOWN_EX: c_int = 15;
const F_GET_RW_HINT: c_int = 1035;
const F_SET_RW_HINT: c_int = 1036;
const F_GET_FILE_RW_HINT: c_int = 1037;
const F_SET_FILE_RW_HINT: c_int = 1038;

/// The struct a `fcntl` command `cmd` reads or writes through its argument, `(bytes, kernel
/// writes)`, or `None` for the commands whose argument is a number.
pub fn fcntl_extent(cmd: c_int) -> Option<(usize, bool)> {
    match cmd {
        libc::F_GETLK | libc::F_OFD_GETLK => Some((std::mem::size_of::<libc::flock>(), true)),
        libc::F_SETLK | libc::F_SETLKW | libc::F_OFD_SETLK | libc::F_OFD_SETLKW => Some((std::mem::size_of::<libc::flock>(), false)),
        F_GETOWN_EX => Some((8, true)),
        F_SETOWN_EX => Some((8, false)),
        F_GET_RW_HINT | F_GET_FILE_RW_HINT => Some((8, true)),
        F_SET_RW_HINT | F_SET_FILE_RW_HINT => Some((8, false)),
        _ => None,
    }
}

/// The struct behind `fcntl` command `cmd`'s argument, made host-accessible ([`fcntl_extent`]).
fn fcntl_arg(cmd: c_int, arg: *mut c_void) {
    if let Some((len, writes)) = fcntl_extent(cmd) {
        prepare(arg, len, writes)
    }
}

wrap! {
    /// `ioctl(2)` (glibc: `int ioctl(int, unsigned long, ...)`): the argument as
    /// [`ioctl_extent`] says.
    fn ioctl(fd: c_int, request: c_ulong; arg: *mut c_void) -> c_int {
        let (len, writes) = ioctl_extent(request);
        prepare(arg, len, writes)
    }
    /// `fcntl(2)`: the struct some commands pass ([`fcntl_extent`]); numbers pass as they are.
    fn fcntl(fd: c_int, cmd: c_int; arg: *mut c_void) -> c_int { fcntl_arg(cmd, arg) }
    /// `fcntl64`: `fcntl` under `-D_FILE_OFFSET_BITS=64` (glibc 2.28+).
    fn fcntl64(fd: c_int, cmd: c_int; arg: *mut c_void) -> c_int { fcntl_arg(cmd, arg) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_requests_give_their_arguments_size_and_direction() {
        // FIONREAD (0x541b) predates the encoding; TIOCGWINSZ too.
        assert_eq!(ioctl_extent(libc::FIONREAD as c_ulong), (IOCTL_UNSIZED_BYTES, true));
        assert_eq!(ioctl_extent(libc::TIOCGWINSZ as c_ulong), (IOCTL_UNSIZED_BYTES, true));
        // _IOR('f', 1, long) (FS_IOC_GETFLAGS): 8 bytes written by the kernel.
        let getflags: c_ulong = (2 << 30) | (8 << 16) | ((b'f' as c_ulong) << 8) | 1;
        assert_eq!(ioctl_extent(getflags), (8, true));
        // _IOW('f', 2, long) (FS_IOC_SETFLAGS): 8 bytes read by the kernel.
        let setflags: c_ulong = (1 << 30) | (8 << 16) | ((b'f' as c_ulong) << 8) | 2;
        assert_eq!(ioctl_extent(setflags), (8, false));
        // _IOWR with a 16 KiB struct (the largest the encoding holds, less one).
        let wr: c_ulong = (3 << 30) | (0x3fff << 16) | 7;
        assert_eq!(ioctl_extent(wr), (0x3fff, true));
    }

    #[test]
    fn fcntl_commands_with_structs_are_known() {
        assert_eq!(fcntl_extent(libc::F_GETLK), Some((std::mem::size_of::<libc::flock>(), true)));
        assert_eq!(fcntl_extent(libc::F_SETLKW), Some((std::mem::size_of::<libc::flock>(), false)));
        assert_eq!(fcntl_extent(F_GETOWN_EX), Some((8, true)));
        assert_eq!(fcntl_extent(F_SETOWN_EX), Some((8, false)));
        for cmd in [libc::F_GETFL, libc::F_SETFL, libc::F_DUPFD_CLOEXEC, libc::F_SETFD, libc::F_GETPIPE_SZ] {
            assert_eq!(fcntl_extent(cmd), None, "{cmd}");
        }
    }
}
