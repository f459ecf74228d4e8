//! Per-block state words and the migration bit: the HMM `mmu_interval_read_begin/retry`
//! protocol in user space.
//!
//! Each block of the managed region has one `AtomicU64`:
//!
//! ```text
//!  63            32 31        4    3       2     1..0
//! [ sequence      | 0 ...     | WAITERS | BUSY | state ]
//! ```
//! - `state`: [`State::Host`] (0, host copy valid, host RW), [`State::Shared`] (1, both valid,
//!   host read-only), [`State::Device`] (2, device copy valid and dirty, host absent),
//!   [`State::InPlace`] (3, host copy valid and RW, mapped in place for kernels).
//! - `BUSY`: the migration bit. Whoever sets it (CAS from a word without it) owns the block's
//!   transition; nobody else changes the block's protection, its device copy or its state.
//! - `sequence`: incremented by every completed transition. A reader that sampled a word,
//!   did work, and finds a different word afterwards retries (the work raced a transition).
//!
//! Waiting: a thread that finds `BUSY` sets `WAITERS` and waits on the word's low 32 bits
//! with `FUTEX_WAIT` (async-signal-safe); [`BlockStates::unlock`] wakes all waiters, and
//! makes the system call only when `WAITERS` was set (the uncontended fault path makes none). Words live in a
//! dedicated anonymous mapping (never in the managed heap), zero = Host, sequence 0.

use std::sync::atomic::{AtomicU64, Ordering::*};

/// Who holds the valid copy of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Host copy valid; host pages read-write; no device copy (or a stale one to reap).
    Host = 0,
    /// Host and device copies equal; host pages read-only.
    Shared = 1,
    /// Device copy valid (and newer); host pages absent.
    Device = 2,
    /// Host copy valid, host pages read-write, and the device page table maps the block to
    /// those very pages (in-place mode, `device/mirror.rs`): kernels read and write the host
    /// copy, so there is no device copy to keep coherent.
    InPlace = 3,
}

/// The migration bit.
pub const BUSY: u64 = 1 << 2;
/// Someone sleeps on this block's word.
const WAITERS: u64 = 1 << 3;
const STATE_MASK: u64 = 3;
const SEQ_SHIFT: u32 = 32;

/// Decode the state of a word.
pub fn state_of(w: u64) -> State {
    match w & STATE_MASK {
        0 => State::Host,
        1 => State::Shared,
        2 => State::Device,
        _ => State::InPlace,
    }
}

/// The sequence number of a word.
pub fn seq_of(w: u64) -> u32 {
    (w >> SEQ_SHIFT) as u32
}

/// The state table.
pub struct BlockStates {
    words: *const AtomicU64,
    len: usize,
}

// SAFETY: the words are atomics in a mapping that lives as long as the table; all access is
// through atomic operations.
unsafe impl Send for BlockStates {}
// SAFETY: as above.
unsafe impl Sync for BlockStates {}

impl BlockStates {
    /// A table of `len` blocks, all Host.
    pub fn new(len: usize) -> std::io::Result<BlockStates> {
        let bytes = (len * 8).max(4096);
        // SAFETY: a fresh anonymous mapping; zero-filled, which is a valid AtomicU64 array.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), bytes, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, -1, 0)
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(BlockStates { words: p as *const AtomicU64, len })
    }

    /// Number of blocks.
    pub fn blocks(&self) -> usize {
        self.len
    }

    /// The word of block `b`. Signal-safe.
    #[inline]
    pub fn word(&self, b: usize) -> &AtomicU64 {
        assert!(b < self.len, "block {b} outside the state table ({} blocks)", self.len);
        // SAFETY: in bounds (checked above) of a live mapping of `len` words.
        unsafe { &*self.words.add(b) }
    }

    /// Current word of block `b`.
    #[inline]
    pub fn load(&self, b: usize) -> u64 {
        self.word(b).load(Acquire)
    }

    /// Try to take block `b`'s migration bit. Returns the word before, or `None` if busy.
    /// Signal-safe.
    #[inline]
    pub fn try_lock(&self, b: usize) -> Option<u64> {
        let w = self.word(b).load(Acquire);
        if w & BUSY != 0 {
            return None;
        }
        self.word(b).compare_exchange(w, w | BUSY, Acquire, Relaxed).ok()
    }

    /// Take block `b`'s migration bit, waiting while someone else holds it. Signal-safe.
    pub fn lock(&self, b: usize) -> u64 {
        loop {
            if let Some(w) = self.try_lock(b) {
                return w;
            }
            self.wait_while_busy(b);
        }
    }

    /// Sleep until block `b` is not busy (or spuriously). Signal-safe.
    pub fn wait_while_busy(&self, b: usize) {
        let mut w = self.word(b).load(Acquire);
        if w & BUSY == 0 {
            return;
        }
        if w & WAITERS == 0 {
            match self.word(b).compare_exchange(w, w | WAITERS, AcqRel, Acquire) {
                Ok(_) => w |= WAITERS,
                Err(_) => return, // changed: let the caller look again
            }
        }
        // The low half of the word holds BUSY and the state (little-endian: it is the first
        // u32 in memory). FUTEX_WAIT returns at once if it changed.
        let low = self.word(b) as *const AtomicU64 as *const u32;
        // SAFETY: waiting on an aligned u32 inside our mapping.
        unsafe {
            libc::syscall(libc::SYS_futex, low, libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG, w as u32, std::ptr::null::<libc::timespec>());
        }
    }

    /// Release block `b` in state `s`, bumping its sequence number and waking waiters.
    /// The caller holds the migration bit. Signal-safe.
    pub fn unlock(&self, b: usize, s: State) {
        let w = self.word(b).load(Relaxed);
        debug_assert!(w & BUSY != 0, "unlock of block {b} without the migration bit");
        let next = ((seq_of(w).wrapping_add(1) as u64) << SEQ_SHIFT) | s as u64;
        let old = self.word(b).swap(next, AcqRel);
        if old & WAITERS != 0 {
            let low = self.word(b) as *const AtomicU64 as *const u32;
            // SAFETY: waking waiters of an aligned u32 inside our mapping.
            unsafe {
                libc::syscall(libc::SYS_futex, low, libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, i32::MAX);
            }
        }
    }
}

impl Drop for BlockStates {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping; no references outlive the table.
        unsafe { libc::munmap(self.words as *mut _, (self.len * 8).max(4096)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_unlock_bumps_sequence_and_sets_state() {
        let t = BlockStates::new(16).unwrap();
        assert_eq!(state_of(t.load(3)), State::Host);
        let w = t.lock(3);
        assert_eq!(seq_of(w), 0);
        assert!(t.try_lock(3).is_none());
        t.unlock(3, State::Device);
        let w = t.load(3);
        assert_eq!((state_of(w), seq_of(w), w & BUSY), (State::Device, 1, 0));
    }

    #[test]
    fn waiters_wake_on_unlock() {
        let t = std::sync::Arc::new(BlockStates::new(4).unwrap());
        t.lock(1);
        let t2 = t.clone();
        let h = std::thread::spawn(move || {
            let w = t2.lock(1);
            t2.unlock(1, State::Host);
            state_of(w)
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        t.unlock(1, State::Shared);
        assert_eq!(h.join().unwrap(), State::Shared);
        assert_eq!(seq_of(t.load(1)), 2);
    }
}
