//! Interposed calls that start programs, wait for children, or wait for events, on buffers
//! the kernel reads or fills: `execve`'s path, argument and environment strings (the kernel
//! copies them before the old image goes; a fault there makes `execve` fail with `EFAULT`
//! and return), the exit status `waitpid` writes, the `pollfd` array `poll` reads and
//! writes, the time `nanosleep` reads and the remainder it writes when a signal interrupts
//! it, the descriptors `pipe` writes.
//!
//! `execv`, `execvp`, `system`, `popen` and `posix_spawnp` pass on (or search) `environ`: its
//! array and strings are in the C heap once the program called `setenv` or `putenv`, so
//! they are prepared too. `posix_spawn` needs more: glibc blocks every signal around it,
//! and its child, which shares our memory, applies the attributes and file actions with
//! them still blocked. A fault there cannot reach the handler and kills the process (the
//! parent writes `*pid` before it unblocks) or the child (it reads the attributes and the
//! file actions): all of those are prepared (`spawn_state`). A `fork`ed child needs none of this (the fork handler
//! brought every block home), but `posix_spawn`, `system`, `popen` and `vfork` run no fork
//! handler.

use super::{prepare, prepare_one, prepare_str, prepare_strv};
use crate::coherence;
use libc::{c_char, c_int, c_void, clockid_t, epoll_event, fd_set, id_t, idtype_t, nfds_t, pid_t, pollfd, posix_spawn_file_actions_t, posix_spawnattr_t, rusage, sigset_t, siginfo_t, size_t, timespec, timeval};

/// The environment (`environ`'s array and strings), which the kernel reads for a program
/// started without an explicit one.
pub(super) fn prepare_environ() {
    extern "C" {
        static environ: *const *const c_char;
    }
    // SAFETY: libc's `environ`, read as libc itself reads it for these calls.
    prepare_strv(unsafe { environ });
}

/// A path, and the argument and environment arrays, that the kernel reads.
fn program(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) {
    prepare_str(path);
    prepare_strv(argv);
    prepare_strv(envp);
}

/// `program` with the environment in `environ`.
fn program_in_environ(path: *const c_char, argv: *const *const c_char) {
    prepare_str(path);
    prepare_strv(argv);
    prepare_environ();
}

/// glibc's `posix_spawn_file_actions_t` (spawn.h; the `libc` crate's fields are private).
#[repr(C)]
struct FileActions {
    allocated: c_int,
    used: c_int,
    actions: *const u8,
    pad: [c_int; 16],
}

/// What `posix_spawn` touches with every signal blocked, where a fault is fatal (the
/// handler cannot run): the parent writes `*pid`; the child (which shares our memory) reads
/// the attributes and the file actions, an array glibc allocates with `malloc`, and the
/// kernel reads the paths the actions own (`addopen`, `addchdir_np`). The array's layout
/// is libc's, so the allocations its words point to the start of are prepared as those
/// paths. Nothing before coherence is installed.
fn spawn_state(pid: *mut pid_t, actions: *const posix_spawn_file_actions_t, attr: *const posix_spawnattr_t) {
    if coherence::space().is_none() {
        return;
    }
    prepare_one(pid, true);
    prepare_one(attr, false);
    if actions.is_null() {
        return;
    }
    prepare_one(actions, false);
    // SAFETY: the caller passes initialised file actions (posix_spawn's contract), whose
    // public layout `FileActions` mirrors; host-readable now.
    let array = unsafe { (*actions.cast::<FileActions>()).actions };
    let Some((base, len)) = unimem_alloc::lookup(array) else { return };
    prepare(base as *const c_void, len, false);
    for word in (base..base + len).step_by(std::mem::size_of::<usize>()) {
        // SAFETY: an aligned word of a live allocation (the caller's file actions),
        // host-readable now.
        let p = unsafe { *(word as *const usize) };
        if let Some((start, size)) = unimem_alloc::lookup(p as *const u8) {
            if start == p {
                prepare(p as *const c_void, size, false);
            }
        }
    }
}

/// An array of `n` `pollfd`s, which the kernel reads and writes.
fn pollfds(fds: *mut pollfd, n: nfds_t) {
    prepare(fds.cast(), std::mem::size_of::<pollfd>().saturating_mul(n as usize), true);
}

wrap! {
    /// `execve(2)`.
    fn execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int { program(path, argv, envp) }
    /// `execv(3)`.
    fn execv(path: *const c_char, argv: *const *const c_char) -> c_int { program_in_environ(path, argv) }
    /// `execvp(3)` (libc builds each candidate path in its own buffer).
    fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int { program_in_environ(file, argv) }
    /// `execvpe(3)`.
    fn execvpe(file: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int { program(file, argv, envp) }
    /// `fexecve(3)`.
    fn fexecve(fd: c_int, argv: *const *const c_char, envp: *const *const c_char) -> c_int {
        prepare_strv(argv);
        prepare_strv(envp);
    }
    /// `posix_spawn(3)`.
    fn posix_spawn(pid: *mut pid_t, path: *const c_char, actions: *const posix_spawn_file_actions_t, attr: *const posix_spawnattr_t,
                   argv: *const *mut c_char, envp: *const *mut c_char) -> c_int {
        program(path, argv.cast(), envp.cast());
        spawn_state(pid, actions, attr);
    }
    /// `posix_spawnp(3)`: its child searches `PATH` in `environ` too.
    fn posix_spawnp(pid: *mut pid_t, file: *const c_char, actions: *const posix_spawn_file_actions_t, attr: *const posix_spawnattr_t,
                    argv: *const *mut c_char, envp: *const *mut c_char) -> c_int {
        program(file, argv.cast(), envp.cast());
        spawn_state(pid, actions, attr);
        prepare_environ();
    }
    /// `system(3)`: libc spawns `sh -c command` with `environ`.
    fn system(command: *const c_char) -> c_int {
        prepare_str(command);
        prepare_environ();
    }

    /// `wait(2)`.
    fn wait(status: *mut c_int) -> pid_t { prepare_one(status, true) }
    /// `waitpid(2)`.
    fn waitpid(pid: pid_t, status: *mut c_int, options: c_int) -> pid_t { prepare_one(status, true) }
    /// `wait3(2)`.
    fn wait3(status: *mut c_int, options: c_int, usage: *mut rusage) -> pid_t { status_and_usage(status, usage) }
    /// `wait4(2)`.
    fn wait4(pid: pid_t, status: *mut c_int, options: c_int, usage: *mut rusage) -> pid_t { status_and_usage(status, usage) }
    /// `waitid(2)`.
    fn waitid(idtype: idtype_t, id: id_t, info: *mut siginfo_t, options: c_int) -> c_int { prepare_one(info, true) }

    /// `pipe(2)`.
    fn pipe(fds: *mut [c_int; 2]) -> c_int { prepare_one(fds, true) }
    /// `pipe2(2)`.
    fn pipe2(fds: *mut [c_int; 2], flags: c_int) -> c_int { prepare_one(fds, true) }

    /// `poll(2)`.
    fn poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int { pollfds(fds, n) }
    /// `ppoll(2)`.
    fn ppoll(fds: *mut pollfd, n: nfds_t, timeout: *const timespec, mask: *const sigset_t) -> c_int { ppoll_args(fds, n, timeout, mask) }
    /// `poll` under `_FORTIFY_SOURCE`.
    fn __poll_chk(fds: *mut pollfd, n: nfds_t, timeout: c_int, fdslen: size_t) -> c_int { pollfds(fds, n) }
    /// `ppoll` under `_FORTIFY_SOURCE`.
    fn __ppoll_chk(fds: *mut pollfd, n: nfds_t, timeout: *const timespec, mask: *const sigset_t, fdslen: size_t) -> c_int { ppoll_args(fds, n, timeout, mask) }
    /// `select(2)`: the sets, and the timeout Linux updates.
    fn select(n: c_int, r: *mut fd_set, w: *mut fd_set, e: *mut fd_set, timeout: *mut timeval) -> c_int {
        fd_sets(r, w, e);
        prepare_one(timeout, true);
    }
    /// `pselect(2)`.
    fn pselect(n: c_int, r: *mut fd_set, w: *mut fd_set, e: *mut fd_set, timeout: *const timespec, mask: *const sigset_t) -> c_int {
        fd_sets(r, w, e);
        timeout_and_mask(timeout, mask);
    }
    /// `epoll_ctl(2)`.
    fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, event: *mut epoll_event) -> c_int { prepare_one(event, false) }
    /// `epoll_wait(2)`.
    fn epoll_wait(epfd: c_int, events: *mut epoll_event, max: c_int, timeout: c_int) -> c_int { epoll_events(events, max) }
    /// `epoll_pwait(2)`: the events, and the signal mask.
    fn epoll_pwait(epfd: c_int, events: *mut epoll_event, max: c_int, timeout: c_int, mask: *const sigset_t) -> c_int {
        epoll_events(events, max);
        prepare_one(mask, false);
    }
    /// `epoll_pwait2(2)`: the events, the timeout and the signal mask.
    fn epoll_pwait2(epfd: c_int, events: *mut epoll_event, max: c_int, timeout: *const timespec, mask: *const sigset_t) -> c_int {
        epoll_events(events, max);
        timeout_and_mask(timeout, mask);
    }

    /// `nanosleep(2)`: the time, and the remainder written when a signal interrupts it.
    fn nanosleep(req: *const timespec, rem: *mut timespec) -> c_int { sleep_times(req, rem) }
    /// `clock_nanosleep(2)`.
    fn clock_nanosleep(clock: clockid_t, flags: c_int, req: *const timespec, rem: *mut timespec) -> c_int { sleep_times(req, rem) }
}

/// The `max` events `epoll_wait` and its kin may write.
fn epoll_events(events: *mut epoll_event, max: c_int) {
    prepare(events.cast(), std::mem::size_of::<epoll_event>().saturating_mul(max.max(0) as usize), true);
}

/// `wait3`'s and `wait4`'s outputs.
fn status_and_usage(status: *mut c_int, usage: *mut rusage) {
    prepare_one(status, true);
    prepare_one(usage, true);
}

/// `ppoll`'s arguments: descriptors read and written, a timeout and a mask read.
fn ppoll_args(fds: *mut pollfd, n: nfds_t, timeout: *const timespec, mask: *const sigset_t) {
    pollfds(fds, n);
    timeout_and_mask(timeout, mask);
}

/// A timeout and a signal mask the kernel reads (`ppoll`, `pselect`, `epoll_pwait2`).
fn timeout_and_mask(timeout: *const timespec, mask: *const sigset_t) {
    prepare_one(timeout, false);
    prepare_one(mask, false);
}

/// A sleep's time, read, and its remainder, written when a signal interrupts it.
fn sleep_times(req: *const timespec, rem: *mut timespec) {
    prepare_one(req, false);
    prepare_one(rem, true);
}

/// The three sets of `select` (each null or read and written by the kernel).
fn fd_sets(r: *mut fd_set, w: *mut fd_set, e: *mut fd_set) {
    for set in [r, w, e] {
        prepare_one(set, true);
    }
}
