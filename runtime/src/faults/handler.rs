//! The SIGBUS/SIGSEGV handler: serves coherence faults, chains everything else.
//!
//! A fault inside the managed heap goes to [`Space::handle_fault`]. Anything else (or a
//! managed-heap fault coherence says is genuine) goes to the handler that was installed
//! before ours — Rust's stack-overflow handler, a JVM's, a sanitizer's, or the program's own
//! (the `LD_PRELOAD` shim routes the program's later `sigaction` calls here through
//! [`set_chained`]) — or, if that is `SIG_DFL`/`SIG_IGN`, the default action is restored and
//! the access re-executed, so a genuine segfault still kills the process with its signal.
//!
//! Contract: the handler is async-signal-safe. It reads the chained actions through a
//! seqlock (no lock), allocates nothing, and only waits on a block's migration bit.
//!
//! [`Space::handle_fault`]: crate::coherence::Space::handle_fault

use crate::coherence::{self, FaultOutcome};
use std::cell::UnsafeCell;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::*};

/// A chained action, written by normal code, read by the handler (seqlock: odd = writing).
struct Chained {
    seq: AtomicU32,
    action: UnsafeCell<libc::sigaction>,
    /// `seq + 1` of the action the handler delivered once with `SA_RESETHAND`, which the
    /// kernel would have reset to `SIG_DFL` on delivery: that action reads as `SIG_DFL` from
    /// then on. A new action has another `seq`, so it never reads as fired; `0`: none fired.
    /// Written by the handler (no lock: it cannot take `INSTALL`), read with the action.
    fired: AtomicU32,
}

// SAFETY: `action` is only written under the INSTALL mutex with `seq` odd, and only read by
// the seqlock protocol in `chained_action`, which retries on a concurrent write.
unsafe impl Sync for Chained {}

// SAFETY: sigaction is plain old data; all-zero is SIG_DFL with an empty mask.
static CHAINED: [Chained; 2] = unsafe { std::mem::zeroed() };
static INSTALLED: AtomicBool = AtomicBool::new(false);
static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Signals the CPU raises at an instruction: never blocked while our handler runs (blocked,
/// the kernel would kill the process instead of delivering them).
const SYNCHRONOUS: [i32; 6] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE, libc::SIGTRAP, libc::SIGSYS];

/// The signals a device fault raises (either backend): the program must never hold them
/// blocked, or a fault on a block a kernel left on the device kills the process (the kernel
/// resets a blocked fault signal to its default action). POSIX leaves faults raised while
/// they are blocked undefined, so the shim keeps them out of every mask the program sets
/// (`interpose::open_fault_signals`) and out of the mask of the program's handlers.
pub const FAULT_SIGNALS: [i32; 2] = [libc::SIGSEGV, libc::SIGBUS];

/// `mask` without the [`FAULT_SIGNALS`]. Async-signal-safe.
pub fn without_fault_signals(mut mask: libc::sigset_t) -> libc::sigset_t {
    for s in FAULT_SIGNALS {
        // SAFETY: `mask` is a valid sigset_t.
        unsafe { libc::sigdelset(&mut mask, s) };
    }
    mask
}

/// Set this thread's signal mask with the system call itself (async-signal-safe, and past
/// the shim's `pthread_sigmask`); returns the previous one.
fn set_thread_mask(mask: &libc::sigset_t) -> libc::sigset_t {
    // SAFETY: a zeroed sigset_t is valid.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid sets; the kernel's sigset is 8 bytes on Linux.
    unsafe { libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, mask as *const libc::sigset_t, &mut old as *mut libc::sigset_t, 8usize) };
    old
}

fn slot(sig: i32) -> Option<&'static Chained> {
    match sig {
        libc::SIGSEGV => Some(&CHAINED[0]),
        libc::SIGBUS => Some(&CHAINED[1]),
        _ => None,
    }
}

/// The action recorded for `c`, as the kernel would have it now (`SIG_DFL` once an
/// `SA_RESETHAND` action fired), and the sequence number it was read at. Async-signal-safe.
fn chained_action(c: &Chained) -> (libc::sigaction, u32) {
    let (a, seq) = recorded_action(c);
    if c.fired.load(Acquire) == seq.wrapping_add(1) {
        // SAFETY: a zeroed sigaction is SIG_DFL with an empty mask and no flags.
        return (unsafe { std::mem::zeroed() }, seq);
    }
    (a, seq)
}

/// The action last written for `c` (seqlock read) and its sequence number.
fn recorded_action(c: &Chained) -> (libc::sigaction, u32) {
    loop {
        let s1 = c.seq.load(Acquire);
        if s1 & 1 == 1 {
            std::hint::spin_loop();
            continue;
        }
        // SAFETY: a racy read of POD, validated by the sequence check below.
        let a = unsafe { std::ptr::read_volatile(c.action.get()) };
        std::sync::atomic::fence(Acquire);
        if c.seq.load(Relaxed) == s1 {
            return (a, s1);
        }
    }
}

fn write_chained(c: &Chained, a: &libc::sigaction) {
    c.seq.fetch_add(1, AcqRel);
    // SAFETY: writers are serialised by INSTALL; readers retry while seq is odd.
    unsafe { std::ptr::write_volatile(c.action.get(), *a) };
    c.seq.fetch_add(1, Release);
}

/// Is our handler installed?
pub fn is_installed() -> bool {
    INSTALLED.load(Acquire)
}

/// Install the handler for SIGSEGV and SIGBUS (idempotent), saving the current actions as
/// the ones to chain to.
pub fn install() -> io::Result<()> {
    let _g = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    if INSTALLED.load(Acquire) {
        return Ok(());
    }
    for sig in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: a zeroed sigaction is valid; we fill handler, flags and an empty mask.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = on_fault as *const () as usize;
        // Every asynchronous signal waits while a fault is served: a handler of the
        // program's (a profiler's SIGPROF, a timeout's SIGALRM) that ran on top of ours would
        // find the block's migration bit held by its own thread (a fault there is fatal),
        // and one that siglongjmp'ed out would leave the bit held for good (the next access
        // or launch waits forever). The fault signals stay open (SA_NODEFER too), so a fault
        // nested in a handler of the program's that `chain` calls is served.
        act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART | libc::SA_NODEFER;
        // SAFETY: act.sa_mask is a valid sigset_t.
        unsafe { libc::sigfillset(&mut act.sa_mask) };
        for s in SYNCHRONOUS {
            // SAFETY: as above.
            unsafe { libc::sigdelset(&mut act.sa_mask, s) };
        }
        // SAFETY: as above.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: installing a valid action; `old` receives the previous one.
        if unsafe { real_sigaction(sig, &act, &mut old) } != 0 {
            return Err(io::Error::last_os_error());
        }
        write_chained(slot(sig).expect("SEGV/BUS"), &old);
    }
    INSTALLED.store(true, Release);
    Ok(())
}

/// Record `act` as the program's action for `sig` (SIGSEGV/SIGBUS) without replacing our
/// handler; return the previously recorded one. Used by the shim's `sigaction`.
pub fn set_chained(sig: i32, act: Option<&libc::sigaction>) -> Option<libc::sigaction> {
    let c = slot(sig)?;
    if !INSTALLED.load(Acquire) {
        return None;
    }
    let _g = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let (old, _) = chained_action(c);
    if let Some(a) = act {
        write_chained(c, a);
    }
    Some(old)
}

/// `sigaction` as libc implements it, bypassing any interposition (the shim interposes the
/// symbol, so calling `libc::sigaction` from here would loop back into it).
///
/// # Safety
/// As `sigaction(2)`.
pub unsafe fn real_sigaction(sig: i32, act: *const libc::sigaction, old: *mut libc::sigaction) -> i32 {
    type F = unsafe extern "C" fn(i32, *const libc::sigaction, *mut libc::sigaction) -> i32;
    static REAL: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let mut f = REAL.load(Acquire);
    if f == 0 {
        // SAFETY: looking up a libc symbol by a NUL-terminated name.
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, c"sigaction".as_ptr()) } as usize;
        if f == 0 {
            // Not interposed (no shim loaded): libc's own.
            f = libc::sigaction as *const () as usize;
        }
        REAL.store(f, Release);
    }
    // SAFETY: `f` is libc's sigaction (by dlsym or directly).
    let f: F = unsafe { std::mem::transmute(f) };
    // SAFETY: the caller's contract.
    unsafe { f(sig, act, old) }
}

#[cfg(target_arch = "x86_64")]
fn is_write(ctx: *mut libc::c_void) -> bool {
    // SAFETY: the kernel passes a valid ucontext_t to SA_SIGINFO handlers.
    let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
    // Page-fault error code: bit 1 set for a write access.
    uc.uc_mcontext.gregs[libc::REG_ERR as usize] & 2 != 0
}

#[cfg(not(target_arch = "x86_64"))]
fn is_write(_ctx: *mut libc::c_void) -> bool {
    // Unknown: treat as a write (always correct, sometimes more work).
    true
}

extern "C" fn on_fault(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // The interrupted code may be between a system call and its read of errno: keep it.
    let saved_errno = unimem_alloc::os::errno();
    // SAFETY: the kernel passes a valid siginfo_t.
    let addr = unsafe { (*info).si_addr() } as usize;
    if let Some(space) = coherence::space() {
        match space.handle_fault(addr, is_write(ctx)) {
            FaultOutcome::Handled => {
                unimem_alloc::os::set_errno(saved_errno);
                return;
            }
            FaultOutcome::NotOurs => {}
            FaultOutcome::Fatal(msg) => {
                let mut l = unimem_alloc::os::Line::new();
                l.s(msg).s(" at ").hex(addr);
                unimem_alloc::os::fatal(&mut l);
            }
        }
    }
    unimem_alloc::os::set_errno(saved_errno);
    chain(sig, info, ctx);
}

fn chain(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let Some(c) = slot(sig) else { return };
    let (prev, seq) = chained_action(c);
    let h = prev.sa_sigaction;
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        // About to die: if the address is in the managed heap, say what coherence saw.
        // SAFETY: the kernel passes a valid siginfo_t.
        let addr = unsafe { (*info).si_addr() } as usize;
        if let Some((space, b)) = coherence::space().and_then(|s| s.block_of(addr).map(|b| (s, b))) {
            let w = space.word(b);
            let mut l = unimem_alloc::os::Line::new();
            l.s("unimem: unserved fault (signal ").dec(sig as usize).s(") at ").hex(addr).s(" in the managed heap: block ").dec(b);
            l.s(" state word ").hex(w as usize).s(if space.protector().is_tracked(addr) { ", tracked" } else { ", untracked" });
            l.print();
        } else if let Some((b, baddr)) = coherence::lost_in_fork(addr, 1) {
            let mut l = unimem_alloc::os::Line::new();
            l.s("unimem: this process is the child of a fork, and ").hex(addr).s(" lies in block ").dec(b).s(" (").hex(baddr);
            l.s("), which was on the device when the process forked and could not be brought home (the parent printed why): this process has no copy of it");
            l.print();
        }
        // Restore the default action and return: the access re-executes and the kernel
        // delivers the signal with its default effect (core dump / exit 128+sig).
        // SAFETY: a zeroed sigaction is SIG_DFL.
        let dfl: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: installing SIG_DFL.
        unsafe { real_sigaction(sig, &dfl, std::ptr::null_mut()) };
        return;
    }
    // The program's handler runs with the mask the kernel would have given it: the
    // interrupted code's, plus its action's `sa_mask`, plus `sig` unless `SA_NODEFER`; our
    // handler blocks every asynchronous signal, which the program's must not inherit (it
    // may longjmp out and expect SIGALRM again). The fault signals stay open, as everywhere
    // (a fault in the program's handler on a block a kernel left on the device is served;
    // a genuine one re-enters the handler as under SA_NODEFER rather than killing).
    // SAFETY: the kernel passes a valid ucontext_t to SA_SIGINFO handlers.
    let mut mask = unsafe { (*(ctx as *const libc::ucontext_t)).uc_sigmask };
    for s in 1..=64 {
        // SAFETY: valid sets; sigismember is a pure function of them.
        if unsafe { libc::sigismember(&prev.sa_mask, s) } == 1 {
            // SAFETY: as above.
            unsafe { libc::sigaddset(&mut mask, s) };
        }
    }
    if prev.sa_flags & libc::SA_NODEFER == 0 {
        // SAFETY: as above.
        unsafe { libc::sigaddset(&mut mask, sig) };
    }
    // SA_RESETHAND: the kernel resets the action to SIG_DFL as it delivers the signal, so
    // the handler runs once and the next fault kills (or finds what the program installed
    // meanwhile). Only if no new action was recorded since it was read.
    if prev.sa_flags & libc::SA_RESETHAND != 0 {
        c.fired.store(seq.wrapping_add(1), Release);
    }
    let ours = set_thread_mask(&without_fault_signals(mask));
    if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with SA_SIGINFO, so it has this type.
        let f: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) = unsafe { std::mem::transmute(h) };
        f(sig, info, ctx);
    } else {
        // SAFETY: a plain handler.
        let f: extern "C" fn(i32) = unsafe { std::mem::transmute(h) };
        f(sig);
    }
    set_thread_mask(&ours);
}
