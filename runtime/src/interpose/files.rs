//! Interposed calls on paths and file metadata: the kernel reads a path (a NUL-terminated
//! string, made host-readable by `prepare_str`) and writes a `struct stat`, a link's
//! target or the working directory into the caller's buffer. A path or a struct in an old
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
use libc::{c_char, c_int, c_uint, gid_t, mode_t, off64_t, off_t, size_t, ssize_t, timespec, uid_t};

/// A path the kernel reads and a `T` it writes (`stat` and its kin).
fn path_and_out<T>(path: *const c_char, out: *mut T) {
    prepare_str(path);
    prepare_one(out, true);
}

/// A path the kernel reads and `len` bytes it writes (`readlink` and its kin).
fn path_and_out_bytes(path: *const c_char, out: *mut c_char, len: size_t) {
    prepare_str(path);
    prepare(out.cast(), len, true);
}

/// Two paths the kernel reads (`rename` and its kin).
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
