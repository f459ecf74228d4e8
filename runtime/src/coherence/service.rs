//! The fault service thread: CPU faults on devices whose memory the CPU cannot read.
//!
//! The fault handler may not call the device (Vulkan takes locks and allocates). When a
//! block's device copy has no host view (frames in device-local memory, the staging copy
//! path), the handler — already holding the block's migration bit — posts the block to one
//! of [`SLOTS`] request slots, rings the doorbell, and sleeps on the slot with `FUTEX_WAIT`
//! (async-signal-safe). The service thread downloads the block into a bounce buffer, fills
//! the host pages atomically, and marks the slot done; the handler then finishes the
//! transition and releases the bit.
//!
//! Slot protocol (`state`): FREE -> CLAIMED (handler, CAS) -> POSTED (handler) -> DONE or
//! FAILED (service thread) -> FREE (handler). Only the claiming handler writes `block` and
//! `writable`, before POSTED (Release); the service thread reads them after (Acquire).

use super::space::Space;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::*};

/// Concurrent fault requests; a handler finding all busy waits for one to free up.
pub const SLOTS: usize = 64;

const FREE: u32 = 0;
const CLAIMED: u32 = 1;
const POSTED: u32 = 2;
const DONE: u32 = 3;
const FAILED: u32 = 4;

struct Slot {
    state: AtomicU32,
    block: AtomicUsize,
    writable: AtomicBool,
}

/// The request slots and the doorbell the service thread sleeps on.
pub struct Service {
    slots: [Slot; SLOTS],
    doorbell: AtomicU32,
    running: AtomicBool,
}

pub(super) fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: waiting on an aligned u32 we own; returns on wake, mismatch or signal.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG, expected, std::ptr::null::<libc::timespec>());
    }
}

pub(super) fn futex_wake(word: &AtomicU32) {
    // SAFETY: waking waiters of an aligned u32 we own.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, i32::MAX);
    }
}

impl Service {
    /// An idle service (no thread yet).
    pub fn new() -> Service {
        Service {
            slots: std::array::from_fn(|_| Slot { state: AtomicU32::new(FREE), block: AtomicUsize::new(0), writable: AtomicBool::new(false) }),
            doorbell: AtomicU32::new(0),
            running: AtomicBool::new(false),
        }
    }

    /// Start the service thread for `space` (once).
    pub fn start(&'static self, space: &'static Space) -> std::io::Result<()> {
        if self.running.swap(true, AcqRel) {
            return Ok(());
        }
        let _internal = unimem_alloc::InternalScope::new();
        std::thread::Builder::new().name("unimem-faults".into()).spawn(move || {
            // Everything this thread allocates is runtime memory.
            unimem_alloc::set_thread_always_internal(true);
            self.run(space)
        })?;
        Ok(())
    }

    /// Is the service thread running?
    pub fn is_running(&self) -> bool {
        self.running.load(Acquire)
    }

    fn run(&self, space: &Space) -> ! {
        loop {
            let seen = self.doorbell.load(Acquire);
            for slot in &self.slots {
                if slot.state.load(Acquire) == POSTED {
                    let ok = space.service_fill(slot.block.load(Relaxed), slot.writable.load(Relaxed));
                    slot.state.store(if ok { DONE } else { FAILED }, Release);
                    futex_wake(&slot.state);
                }
            }
            futex_wait(&self.doorbell, seen);
        }
    }

    /// From the fault handler, holding block `b`'s migration bit: have the service thread
    /// fill `b`'s host pages from the device, and wait. Returns whether it succeeded.
    /// Async-signal-safe.
    pub fn fill(&self, b: usize, writable: bool) -> bool {
        if !self.is_running() {
            return false;
        }
        let slot = loop {
            if let Some(s) = self.slots.iter().find(|s| s.state.compare_exchange(FREE, CLAIMED, Acquire, Relaxed).is_ok()) {
                break s;
            }
            // All slots busy: wait for the service thread to finish one.
            let seen = self.doorbell.load(Acquire);
            futex_wait(&self.doorbell, seen);
        };
        slot.block.store(b, Relaxed);
        slot.writable.store(writable, Relaxed);
        slot.state.store(POSTED, Release);
        self.doorbell.fetch_add(1, Release);
        futex_wake(&self.doorbell);
        loop {
            match slot.state.load(Acquire) {
                POSTED => futex_wait(&slot.state, POSTED),
                s => {
                    slot.state.store(FREE, Release);
                    // A handler may be waiting for a free slot.
                    self.doorbell.fetch_add(1, Release);
                    futex_wake(&self.doorbell);
                    return s == DONE;
                }
            }
        }
    }
}

impl Default for Service {
    fn default() -> Self {
        Service::new()
    }
}
