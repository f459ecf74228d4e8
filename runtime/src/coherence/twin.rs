//! Twins: merging what the CPU and a running kernel wrote to the same block.
//!
//! Coherence is block-granular (64 KiB by default), but programs share memory at the
//! granularity of their objects: while one thread launches a kernel that writes some objects
//! of a block, another thread may write *other* objects of the same block. Migrating, the
//! kernel writes the block's device copy and the CPU its host copy; keeping either copy whole
//! would lose the other side's writes. This is the false sharing that software distributed
//! shared memory met long ago, and the cure is theirs (TreadMarks' multiple-writer protocol):
//!
//! - when the CPU starts writing a block whose device copy a running kernel may write (a
//!   write fault on a Shared or Device block while a launch runs), the block's content at that
//!   moment — what both copies held in common — is saved in a **twin**;
//! - when the launch finds the kernel wrote that block (its dirty bit), the bytes where the
//!   device copy differs from the twin are the kernel's writes; they are copied into the host
//!   copy, which holds the CPU's writes, and the device copy is dropped (`Space::device_wrote`).
//!
//! Bytes both sides wrote are a data race; the kernel's value is kept.
//!
//! # Where twins live
//! One slot of a block's size per device frame, in one `MAP_NORESERVE` mapping. A twin is
//! only needed while its block has a device copy, so there can never be more twins than
//! frames; every path that drops a device copy drops its twin (`Space::drop_device_copy`).
//! Slots are taken lowest first; when the last launch ends, the memory of slots beyond the
//! first [`KEEP`] is returned to the OS, and those stay committed for the next launches:
//! measured on the fake device, a CPU write fault on a Shared block costs 6-7 us, 8-10 us
//! when it twins into a kept slot, and 34 us into fresh slot memory (first-touch page
//! faults).
//!
//! # Concurrency contract
//! - `make` runs in the fault handler (async-signal-safe: atomics and `memcpy` only), with
//!   the block's migration bit held; `take` and `drop_twin` run in normal context, also with
//!   the bit held; `release_all` runs when no launch is active.
//! - A twin is made only inside a [`Gate`] that saw a launch running. [`Twins::launch_begins`]
//!   waits for gates opened before it, so a CPU write fault either made a twin or finished its
//!   transition (and marked the device copy stale) before the launch reaps stale copies:
//!   there is no window in which a write escapes both.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::*};

/// Slots whose memory stays committed between launches (4 MiB with 64 KiB blocks).
pub const KEEP: usize = 64;

/// The twin slots of a space.
pub struct Twins {
    block_size: usize,
    /// `slots * block_size` bytes, `MAP_NORESERVE`.
    memory: *mut u8,
    slots: usize,
    /// Per block: its twin's slot + 1, or 0. A `MAP_NORESERVE` table of `blocks` words.
    of_block: *const AtomicU32,
    blocks: usize,
    /// Per slot: its block + 1, or 0 (free).
    owner: Box<[AtomicU32]>,
    /// Slots taken since the last launch ended.
    taken: AtomicUsize,
    /// One past the highest slot taken since the memory beyond [`KEEP`] was last returned.
    high: AtomicUsize,
    /// Launches running (kernels may write device copies).
    launches: AtomicU32,
    /// Gates open (fault handlers between deciding whether to twin and finishing).
    gates: AtomicU32,
}

// SAFETY: the mappings live as long as the table; slot memory is written only by the holder
// of the owning block's migration bit (`make`) and read by the same (`take`); the tables are
// atomics.
unsafe impl Send for Twins {}
// SAFETY: as above.
unsafe impl Sync for Twins {}

/// A twin taken for merging; its slot is freed on drop.
pub struct Twin<'a> {
    twins: &'a Twins,
    slot: usize,
}

impl Twin<'_> {
    /// The block's content when the CPU started writing it.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the slot is ours until drop; `make` finished writing it before publishing
        // it (Release in `make`, Acquire in `take`).
        unsafe { std::slice::from_raw_parts(self.twins.slot_ptr(self.slot), self.twins.block_size) }
    }
}

impl Drop for Twin<'_> {
    fn drop(&mut self) {
        self.twins.owner[self.slot].store(0, Release);
    }
}

/// A fault handler's pass through a transition to Host by a CPU write; see the module's
/// concurrency contract.
pub struct Gate<'a> {
    twins: &'a Twins,
    launch: bool,
}

impl Gate<'_> {
    /// A launch was running when the gate opened: twin the block.
    pub fn launch_running(&self) -> bool {
        self.launch
    }
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        self.twins.gates.fetch_sub(1, Release);
    }
}

fn map(bytes: usize) -> std::io::Result<*mut u8> {
    // SAFETY: a fresh private anonymous mapping; zero-filled.
    let p = unsafe {
        libc::mmap(std::ptr::null_mut(), bytes.max(4096), libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, -1, 0)
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(p as *mut u8)
}

impl Twins {
    /// Twin slots for `slots` device frames of `block_size` bytes, in a space of `blocks`.
    pub fn new(block_size: usize, slots: usize, blocks: usize) -> std::io::Result<Twins> {
        let memory = map(slots * block_size)?;
        let of_block = match map(blocks * 4) {
            Ok(p) => p as *const AtomicU32,
            Err(e) => {
                // SAFETY: unmapping what we just mapped.
                unsafe { libc::munmap(memory as *mut _, (slots * block_size).max(4096)) };
                return Err(e);
            }
        };
        Ok(Twins {
            block_size,
            memory,
            slots,
            of_block,
            blocks,
            owner: (0..slots).map(|_| AtomicU32::new(0)).collect(),
            taken: AtomicUsize::new(0),
            high: AtomicUsize::new(0),
            launches: AtomicU32::new(0),
            gates: AtomicU32::new(0),
        })
    }

    fn slot_ptr(&self, slot: usize) -> *mut u8 {
        debug_assert!(slot < self.slots);
        // SAFETY: inside the slot mapping.
        unsafe { self.memory.add(slot * self.block_size) }
    }

    fn entry(&self, b: usize) -> &AtomicU32 {
        assert!(b < self.blocks, "block {b} outside the twin table ({} blocks)", self.blocks);
        // SAFETY: in bounds of a live mapping of `blocks` zero-initialised words.
        unsafe { &*self.of_block.add(b) }
    }

    /// A launch starts: from now on CPU write faults on blocks with device copies make twins.
    /// Returns once every fault handler that decided otherwise has finished its transition.
    /// Called under the launch lock, before the launch reaps stale device copies.
    pub fn launch_begins(&self) {
        self.launches.fetch_add(1, SeqCst);
        while self.gates.load(SeqCst) != 0 {
            std::thread::yield_now();
        }
    }

    /// A launch ended (its last written blocks were claimed). When no launch runs any more,
    /// every twin left is dropped (their device copies are stale and reaped before the next
    /// launch) and the slots' memory is returned to the OS.
    pub fn launch_ends(&self) {
        if self.launches.fetch_sub(1, SeqCst) != 1 {
            return;
        }
        while self.gates.load(SeqCst) != 0 {
            std::thread::yield_now();
        }
        // Every twin left was claimed since the last pass here (the usual case: none).
        if self.taken.swap(0, AcqRel) == 0 {
            return;
        }
        for (slot, o) in self.owner.iter().enumerate() {
            let b = o.load(Acquire);
            if b != 0 && self.entry(b as usize - 1).compare_exchange(slot as u32 + 1, 0, AcqRel, Relaxed).is_ok() {
                o.store(0, Release);
            }
        }
        let high = self.high.load(Relaxed);
        if high > KEEP {
            self.high.store(KEEP, Relaxed);
            // SAFETY: no launch runs and no gate is open, so no twin is being written; the
            // slots hold nothing anyone still reads (a `Twin` being merged belongs to a
            // launch, and none runs).
            unsafe { unimem_alloc::os::madvise(self.slot_ptr(KEEP) as usize, (high - KEEP) * self.block_size, libc::MADV_DONTNEED) };
        }
    }

    /// Opens a gate for a CPU write's transition to Host. Signal-safe.
    pub fn gate(&self) -> Gate<'_> {
        self.gates.fetch_add(1, SeqCst);
        Gate { twins: self, launch: self.launches.load(SeqCst) != 0 }
    }

    /// Saves block `b`'s content, `src`, as its twin (replacing an older one). False when no
    /// slot is free. Signal-safe.
    ///
    /// # Safety
    /// The caller holds block `b`'s migration bit; `src` is readable for a block and nobody
    /// writes it until this returns (the block's host pages are still read-only).
    pub unsafe fn make(&self, b: usize, src: *const u8) -> bool {
        let e = self.entry(b);
        let slot = match e.load(Acquire) {
            0 => match self.claim(b) {
                Some(s) => s,
                None => return false,
            },
            s => s as usize - 1,
        };
        // SAFETY: the slot is ours (claimed for `b`, whose bit we hold); `src` per contract.
        unsafe { std::ptr::copy_nonoverlapping(src, self.slot_ptr(slot), self.block_size) };
        e.store(slot as u32 + 1, Release);
        true
    }

    /// The lowest free slot (the likeliest to have committed memory), now owned by block
    /// `b`. Signal-safe (a scan and a CAS).
    fn claim(&self, b: usize) -> Option<usize> {
        for slot in 0..self.slots {
            if self.owner[slot].compare_exchange(0, b as u32 + 1, AcqRel, Relaxed).is_ok() {
                self.taken.fetch_add(1, Relaxed);
                self.high.fetch_max(slot + 1, Relaxed);
                return Some(slot);
            }
        }
        None
    }

    /// Takes block `b`'s twin, if it has one. The caller holds the block's migration bit.
    pub fn take(&self, b: usize) -> Option<Twin<'_>> {
        match self.entry(b).swap(0, AcqRel) {
            0 => None,
            s => Some(Twin { twins: self, slot: s as usize - 1 }),
        }
    }

    /// Drops block `b`'s twin, if any (its device copy is gone). The caller holds the bit.
    pub fn drop_twin(&self, b: usize) {
        drop(self.take(b));
    }
}

impl Drop for Twins {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mappings; nothing refers to them any more.
        unsafe {
            libc::munmap(self.memory as *mut _, (self.slots * self.block_size).max(4096));
            libc::munmap(self.of_block as *mut _, (self.blocks * 4).max(4096));
        }
    }
}

/// Copies into `host` the bytes where `device` differs from `twin`: the kernel's writes since
/// the twin was taken. Other threads may be writing other bytes of `host` meanwhile, so only
/// the differing bytes are stored, each by itself (no read-modify-write of a neighbour).
/// Returns how many bytes were copied.
///
/// # Safety
/// `host` is writable for `twin.len()` bytes and its pages are present; `device` readable.
pub unsafe fn merge(host: *mut u8, device: &[u8], twin: &[u8]) -> usize {
    assert_eq!(device.len(), twin.len());
    let mut copied = 0;
    for (i, (d, t)) in device.chunks_exact(8).zip(twin.chunks_exact(8)).enumerate() {
        if d == t {
            continue;
        }
        for j in 0..8 {
            if d[j] != t[j] {
                // SAFETY: in bounds of `host` per contract; a single-byte volatile store
                // touches nothing but that byte.
                unsafe { std::ptr::write_volatile(host.add(i * 8 + j), d[j]) };
                copied += 1;
            }
        }
    }
    copied
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_copies_only_the_bytes_the_device_changed() {
        let twin: Vec<u8> = (0..64).collect();
        let mut device = twin.clone();
        device[3] = 200;
        device[40..48].copy_from_slice(&[9; 8]);
        let mut host = twin.clone();
        host[4] = 77; // the CPU's write, next to the device's
        host[60] = 1;
        // SAFETY: host is a live, writable Vec of the same length.
        let n = unsafe { merge(host.as_mut_ptr(), &device, &twin) };
        assert_eq!(n, 9);
        let mut expect: Vec<u8> = (0..64).collect();
        expect[3] = 200;
        expect[4] = 77;
        expect[40..48].copy_from_slice(&[9; 8]);
        expect[60] = 1;
        assert_eq!(host, expect);
    }

    #[test]
    fn twins_are_made_replaced_taken_and_released() {
        let bs = 4096;
        let t = Twins::new(bs, 2, 16).unwrap();
        let a = vec![1u8; bs];
        let b = vec![2u8; bs];
        let c = vec![3u8; bs];
        // SAFETY: the buffers are readable for a block; no migration bits exist in this
        // test, nobody else uses the table.
        unsafe {
            assert!(t.make(5, a.as_ptr()));
            assert!(t.make(5, b.as_ptr())); // replaces, same slot
            assert!(t.make(7, c.as_ptr()));
            assert!(!t.make(9, a.as_ptr()), "two slots, both taken");
        }
        assert_eq!(t.take(5).unwrap().bytes(), &b[..]);
        assert!(t.take(5).is_none());
        // The freed slot is reused.
        // SAFETY: as above.
        assert!(unsafe { t.make(9, a.as_ptr()) });
        t.drop_twin(9);
        t.launch_begins();
        t.launch_ends();
        assert!(t.take(7).is_none(), "the last launch's end drops every twin");
        let g = t.gate();
        assert!(!g.launch_running());
        drop(g);
        t.launch_begins();
        assert!(t.gate().launch_running());
        t.launch_ends();
    }
}
