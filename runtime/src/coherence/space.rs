//! The coherent space: the managed region under block-granular coherence. Every state
//! transition of every block happens in this file, under that block's migration bit.
//!
//! | from \ event | device read / prefetch | device write (kernel dirty) | CPU read fault | CPU write fault | evict / to host | discard |
//! |---|---|---|---|---|---|---|
//! | Host   | upload -> Shared | — | (spurious) | (spurious) | — | reap stale copy |
//! | Shared | — | host absent -> Device | (spurious) | writable, copy stale -> Host | writable, drop copy -> Host | same |
//! | Device | — | — | fill RO -> Shared | fill RW, copy stale -> Host | fill RW, drop copy -> Host | zero-fill, drop -> Host |
//! | InPlace | — | — | (spurious) | (spurious) | — | unmap -> Host |
//!
//! In-place mode (a device that reads host memory in place, [`BlockDevice::in_place`]): a
//! device read or prefetch maps a Host block in place -> InPlace; nothing is copied or
//! protected, and no other transition happens (no Shared or Device block ever exists). The
//! host copy is the only copy; a free that leaves the block without live allocations unmaps
//! it, so kernels fault on freed memory as they do in migration mode.
//!
//! "Copy stale" (from the fault handler, which cannot call the device) sets a bit in
//! `stale`; [`Space::reap_stale`] drops those device copies before any upload or launch.
//!
//! While a launch runs ([`Space::launch`]), a CPU write to a Shared or Device block first
//! saves the block's content as a *twin* (`twin.rs`); if the kernel turns out to have written
//! the block too, [`Space::device_wrote`] merges the kernel's bytes into the host copy instead
//! of making it Device ("device write" on a Host block with a twin: merge, drop copy -> Host).
//! So a CPU thread and a kernel writing different objects of one block both keep their
//! writes.
//!
//! # Locking rules
//! - A block's migration bit (`state.rs`) is the only lock that guards its protection, its
//!   device copy and its state. Normal-context code takes bits of several blocks in
//!   ascending order; the fault handler takes at most one, with `try_lock`, and waits with
//!   `FUTEX_WAIT` (never spins on a lock a sleeping thread holds).
//! - Code holding a migration bit never touches the block's memory through a normal access
//!   (copies use host views, `UFFDIO_COPY` or `/proc/self/mem`), so it cannot fault on a
//!   block it holds. A thread that faults while holding a bit is reported and aborted instead
//!   of deadlocking.
//! - Device methods are called only from normal context, except `host_view`.
//! - Every normal-context operation runs inside an `InternalScope`: what coherence (and the
//!   device under it) allocates lives in the internal heap, which never migrates, so no
//!   runtime structure can be on a block the runtime is moving.

use super::backend::{BackendError, BlockDevice, BlockId};
use super::state::{state_of, BlockStates, State, BUSY};
use super::service::Service;
use super::stats::Counters;
use super::exclusion::{Exclusive, LaunchLock};
use super::twin::{self, Twins};
use crate::faults::protect::{FaultMode, Protector};
use std::cell::Cell;
use unimem_alloc::InternalScope;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};
use std::sync::Arc;

/// Why a coherence operation failed. Host-valid data is never lost by a failure.
#[derive(Debug, thiserror::Error)]
pub enum CoherenceError {
    /// The range is not in the managed heap.
    #[error("{addr:#x}+{len} is not in the managed heap ({base:#x}+{heap_len}); only memory from unimem's allocator can migrate")]
    NotManaged {
        /// Start of the range.
        addr: usize,
        /// Its length.
        len: usize,
        /// Managed heap base.
        base: usize,
        /// Managed heap length.
        heap_len: usize,
    },
    /// Changing host protection failed.
    #[error("cannot change host protection of block {block} ({addr:#x}): {source}")]
    Protect {
        /// The block.
        block: usize,
        /// Its address.
        addr: usize,
        /// The OS error.
        source: std::io::Error,
    },
    /// The device failed.
    #[error("device error while migrating: {0}")]
    Device(#[from] BackendError),
}

thread_local! {
    /// Migration bits this thread holds (normal context). A fault while non-zero would
    /// deadlock on our own bit.
    static HELD: Cell<u32> = const { Cell::new(0) };
    /// Last fault seen on a Host block in a mode where that can be genuine: (addr, word).
    static LAST_HOST_FAULT: Cell<(usize, u64)> = const { Cell::new((0, 0)) };
}

/// What the fault handler should do after [`Space::handle_fault`].
#[derive(Debug, PartialEq, Eq)]
pub enum FaultOutcome {
    /// Served: return and retry the access.
    Handled,
    /// Not a coherence fault: chain to the previous handler (or crash).
    NotOurs,
    /// A bug that cannot be served (message for stderr).
    Fatal(&'static str),
}

/// A kernel launch in progress, for coherence ([`Space::launch`]). Holds the launch lock.
pub struct LaunchScope<'a> {
    space: &'a Space,
    _exclusive: Exclusive<'a>,
}

impl Drop for LaunchScope<'_> {
    fn drop(&mut self) {
        self.space.twins.launch_ends();
    }
}

/// The managed region under coherence.
pub struct Space {
    base: usize,
    len: usize,
    shift: u32,
    states: BlockStates,
    device: Arc<dyn BlockDevice>,
    prot: Box<dyn Protector>,
    stale: Box<[AtomicU64]>,
    /// Bits set in `stale` since the last reap (so reaping an empty set costs one load).
    stale_pending: AtomicUsize,
    device_blocks: AtomicUsize,
    /// Twins of blocks the CPU wrote while a launch could write their device copies.
    twins: Twins,
    /// The launch lock: held by a launch, and by what must not move device copies under
    /// one (explicit migrations and reaping, `fork`; `exclusion.rs`).
    launch_lock: LaunchLock,
    /// Serves faults on device copies the CPU cannot read (see `service.rs`).
    pub(super) service: Service,
    /// Counters (faults, bytes, time).
    pub stats: Counters,
}

/// Whether a CPU access to a block whose state word is `w` (a write, with `for_write`)
/// must take the locked path of [`Space::make_host_accessible`]: the block has no host
/// copy, or only a read-only one for a write, or a transition is running.
#[inline]
fn needs_transition(w: u64, for_write: bool) -> bool {
    let s = state_of(w);
    w & BUSY != 0 || s == State::Device || (for_write && s == State::Shared)
}

impl Space {
    /// A space over `[base, base+len)` with blocks of `device.block_size()` bytes.
    pub fn new(base: usize, len: usize, device: Arc<dyn BlockDevice>, prot: Box<dyn Protector>) -> std::io::Result<Space> {
        let bs = device.block_size();
        assert!(bs.is_power_of_two() && bs >= 4096, "block size {bs} must be a power of two >= 4096");
        let blocks = len / bs;
        // In place there are no device copies, so nothing to twin.
        let twins = Twins::new(bs, if device.in_place() { 0 } else { device.capacity() }, blocks)?;
        Ok(Space {
            base,
            len: blocks * bs,
            shift: bs.trailing_zeros(),
            states: BlockStates::new(blocks)?,
            device,
            prot,
            stale: (0..blocks.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            stale_pending: AtomicUsize::new(0),
            device_blocks: AtomicUsize::new(0),
            twins,
            launch_lock: LaunchLock::new(),
            service: Service::new(),
            stats: Counters::default(),
        })
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> usize {
        1 << self.shift
    }

    /// The device.
    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.device
    }

    /// The protection backend.
    pub fn protector(&self) -> &dyn Protector {
        &*self.prot
    }

    /// Number of blocks the space covers (of the reserved heap, committed or not).
    pub fn block_count(&self) -> usize {
        self.len >> self.shift
    }

    /// Block number of `addr`, if managed.
    #[inline]
    pub fn block_of(&self, addr: usize) -> Option<usize> {
        let off = addr.wrapping_sub(self.base);
        (off < self.len).then_some(off >> self.shift)
    }

    /// Address of block `b`.
    #[inline]
    pub fn block_addr(&self, b: usize) -> usize {
        self.base + (b << self.shift)
    }

    /// Current state of block `b`.
    pub fn state(&self, b: usize) -> State {
        state_of(self.states.load(b))
    }

    /// The raw state word (state, busy bit, sequence) of block `b`.
    pub fn word(&self, b: usize) -> u64 {
        self.states.load(b)
    }

    /// True when the CPU, or a system call, may access all of `[addr, addr+len)` now with no
    /// transition: every block it overlaps in the managed heap is Host or mapped in place
    /// (or, when not `for_write`, Shared) and not mid-transition. True for a range not
    /// wholly in the managed heap, where [`Space::make_host_accessible`] does nothing either.
    /// One state load per block, lock-free: a racing transition can make the answer stale
    /// at once, as with any state read; callers then take the locked path
    /// ([`Space::make_host_accessible`]) or fault.
    #[inline]
    pub fn host_accessible(&self, addr: usize, len: usize, for_write: bool) -> bool {
        // `blocks_in`'s range without its error value, which cost about 2 ns more per
        // allocation when measured (malloc+free 24.2 against 22.3 ns, runtime installed).
        let (Some(first), Some(last)) = (self.block_of(addr), addr.checked_add(len.max(1) - 1).and_then(|l| self.block_of(l))) else {
            return true;
        };
        (first..=last).all(|b| !needs_transition(self.states.load(b), for_write))
    }

    /// Blocks overlapping `[addr, addr+len)` (the block of `addr` when `len` is 0). An error
    /// unless the whole range lies in the managed heap; so once this succeeded, `addr + len`
    /// does not overflow.
    pub fn blocks_in(&self, addr: usize, len: usize) -> Result<std::ops::Range<usize>, CoherenceError> {
        let last = addr.checked_add(len.max(1) - 1);
        match (self.block_of(addr), last.and_then(|l| self.block_of(l))) {
            (Some(f), Some(l)) => Ok(f..l + 1),
            _ => Err(CoherenceError::NotManaged { addr, len, base: self.base, heap_len: self.len }),
        }
    }

    /// [`Space::blocks_in`] less the blocks beyond the allocator's committed memory: those
    /// were never handed out (nothing to move or drop) and are not accessible (`PROT_NONE`
    /// until the allocator commits them, zero then). The space covers the managed region
    /// (`install`), whose committed part is a prefix that only grows, in steps of 32 MiB
    /// (`COMMIT_CHUNK`), a multiple of every block size (at most 16 MiB).
    pub fn committed_blocks_in(&self, addr: usize, len: usize) -> Result<std::ops::Range<usize>, CoherenceError> {
        let r = self.blocks_in(addr, len)?;
        let committed = unimem_alloc::managed_committed() >> self.shift;
        Ok(r.start..r.end.min(committed).max(r.start))
    }

    /// Number of blocks whose valid copy is only on the device.
    pub fn device_block_count(&self) -> usize {
        self.device_blocks.load(Relaxed)
    }

    fn lock(&self, b: usize) -> u64 {
        let w = self.states.lock(b);
        HELD.with(|h| h.set(h.get() + 1));
        w
    }

    /// [`Space::lock`] without waiting: `None` if someone holds the block.
    fn try_lock(&self, b: usize) -> Option<u64> {
        let w = self.states.try_lock(b)?;
        HELD.with(|h| h.set(h.get() + 1));
        Some(w)
    }

    fn unlock(&self, b: usize, from: State, to: State) {
        if from == State::Device && to != State::Device {
            self.device_blocks.fetch_sub(1, Relaxed);
        } else if from != State::Device && to == State::Device {
            self.device_blocks.fetch_add(1, Relaxed);
        }
        self.states.unlock(b, to);
        HELD.with(|h| h.set(h.get() - 1));
    }

    fn protect_err(&self, b: usize, source: std::io::Error) -> CoherenceError {
        CoherenceError::Protect { block: b, addr: self.block_addr(b), source }
    }

    fn errno_err(&self, b: usize, e: i32) -> CoherenceError {
        self.protect_err(b, std::io::Error::from_raw_os_error(e))
    }

    /// Drops block `b`'s device copy, and its twin with it. The caller holds the block.
    fn drop_device_copy(&self, b: usize) {
        self.device.discard(&[b as BlockId]);
        self.twins.drop_twin(b);
    }

    /// Saves block `b`'s content (`src`, still read-only) as its twin if a launch was running
    /// when `gate` opened. Signal-safe; the caller holds the block.
    fn twin_if_launch(&self, gate: &twin::Gate<'_>, b: usize, src: usize) {
        if gate.launch_running() {
            // False when no slot is free, which cannot happen while every dropped device copy
            // drops its twin (at most one twin per frame); the block's conflict, if any,
            // would then keep the device's version, counted in `write_conflicts`.
            // SAFETY: the caller holds the block and its host pages are present and
            // read-only (nobody writes them until the caller makes them writable).
            let _twinned = unsafe { self.twins.make(b, src as *const u8) };
        }
    }

    /// A kernel launch is about to run: until the returned scope ends, CPU writes to blocks
    /// with device copies are twinned, and [`Space::device_wrote`] merges blocks both sides
    /// wrote (`twin.rs`); explicit migrations ([`Space::exclusive`]) and `fork` wait. Open it
    /// before the launch reaps stale copies and makes blocks resident; end it after the
    /// launch's last [`Space::device_wrote`]. Waits for another launch's scope to end.
    pub fn launch(&self) -> LaunchScope<'_> {
        let exclusive = self.launch_lock.launch();
        self.twins.launch_begins();
        LaunchScope { space: self, _exclusive: exclusive }
    }

    /// Waits until no launch runs, and keeps launches from starting until the guard drops
    /// (passes through when this thread holds it already). Every public operation that
    /// moves or drops device copies takes it (`to_device`, `to_host`, `evict`, `discard`,
    /// `reap_stale`): doing that under a running dispatch (an eviction reusing a frame, a
    /// page-table entry cleared under the kernel, a copy with committed stores dropped)
    /// would make invocations fault, or lose stores they committed. Callers that do several
    /// such operations as one (`advise`) may hold it across them.
    pub fn exclusive(&self) -> Exclusive<'_> {
        self.launch_lock.exclusive()
    }

    /// The launch lock itself, for the `fork` handlers.
    pub(super) fn launch_lock(&self) -> &LaunchLock {
        &self.launch_lock
    }

    /// Forgets a stale mark of block `b` (its device copy is not to be reaped).
    fn clear_stale(&self, b: usize) {
        self.stale[b / 64].fetch_and(!(1 << (b % 64)), AcqRel);
    }

    fn mark_stale(&self, b: usize) {
        if self.stale[b / 64].fetch_or(1 << (b % 64), Release) & (1 << (b % 64)) == 0 {
            self.stale_pending.fetch_add(1, Release);
        }
    }

    /// Drop device copies that CPU writes made stale (the fault handler cannot call the
    /// device). Called before uploads and launches.
    pub fn reap_stale(&self) {
        if self.stale_pending.load(Acquire) == 0 {
            return;
        }
        let _no_launch = self.exclusive();
        if self.stale_pending.swap(0, AcqRel) == 0 {
            return;
        }
        let _internal = InternalScope::new();
        let mut reap = Vec::new();
        for (i, w) in self.stale.iter().enumerate() {
            if w.load(Relaxed) == 0 {
                continue;
            }
            let bits = w.swap(0, AcqRel);
            for j in 0..64 {
                if bits & (1 << j) != 0 {
                    reap.push(i * 64 + j);
                }
            }
        }
        for b in reap {
            let w = self.lock(b);
            let s = state_of(w);
            if s == State::Host {
                self.drop_device_copy(b);
            }
            self.unlock(b, s, s);
        }
    }

    /// Make the blocks overlapping `[addr, addr+len)` resident on the device: Host blocks are
    /// uploaded and become Shared (read duplication); with `for_write` they become Device
    /// (host copy dropped), as for a prefetch before a kernel that overwrites them. Blocks
    /// that do not fit even after evicting stay on the host; the count of those is returned.
    /// Blocks the allocator has not committed yet hold nothing and are skipped.
    pub fn to_device(&self, addr: usize, len: usize, for_write: bool) -> Result<usize, CoherenceError> {
        let _internal = InternalScope::new();
        let _no_launch = self.exclusive();
        let range = self.committed_blocks_in(addr, len)?;
        if self.device.in_place() {
            self.map_in_place(range)?;
            return Ok(0);
        }
        self.reap_stale();
        let bs = self.block_size();
        let mut left_on_host = 0;
        let blocks: Vec<usize> = range.collect();
        for batch in blocks.chunks(256) {
            let words: Vec<u64> = batch.iter().map(|&b| self.lock(b)).collect();
            let mut states: Vec<State> = words.iter().map(|&w| state_of(w)).collect();
            let mut frozen = vec![false; batch.len()];
            let r = self.to_device_batch(batch, &mut states, &mut frozen, for_write);
            for (i, &b) in batch.iter().enumerate() {
                if states[i] == State::Host && frozen[i] {
                    // Not uploaded (no room, or an error): host copy intact, make it
                    // writable again; a partial upload's copy is reaped before use.
                    let _ = self.prot.make_writable(self.block_addr(b), bs);
                    if r.is_err() {
                        self.mark_stale(b);
                    }
                }
                self.unlock(b, state_of(words[i]), states[i]);
            }
            left_on_host += r?;
        }
        Ok(left_on_host)
    }

    /// In-place mode's [`Space::to_device`]: Host blocks of `range` become InPlace.
    fn map_in_place(&self, range: std::ops::Range<usize>) -> Result<(), CoherenceError> {
        let todo: Vec<usize> = range.filter(|&b| self.state(b) != State::InPlace).collect();
        for batch in todo.chunks(256) {
            let words: Vec<u64> = batch.iter().map(|&b| self.lock(b)).collect();
            let host: Vec<BlockId> = batch.iter().zip(&words).filter(|(_, &w)| state_of(w) == State::Host).map(|(&b, _)| b as BlockId).collect();
            let r = self.device.map_in_place(&host);
            if r.is_ok() {
                self.stats.mapped_in_place.fetch_add(host.len() as u64, Relaxed);
            }
            for (&b, &w) in batch.iter().zip(&words) {
                let s = state_of(w);
                self.unlock(b, s, if r.is_ok() && s == State::Host { State::InPlace } else { s });
            }
            r?;
        }
        Ok(())
    }

    /// The body of [`Space::to_device`] for one batch of held blocks. `states` tracks each
    /// block's state as it progresses and `frozen` which Host blocks were made read-only, so
    /// the caller can release them correctly on error.
    fn to_device_batch(&self, batch: &[usize], states: &mut [State], frozen: &mut [bool], for_write: bool) -> Result<usize, CoherenceError> {
        let bs = self.block_size();
        self.prot.track(self.block_addr(batch[0]), batch.len() * bs).map_err(|e| self.protect_err(batch[0], e))?;
        let mut upload = Vec::new();
        let mut refused = 0;
        for (i, &b) in batch.iter().enumerate() {
            if states[i] == State::Host {
                match self.prot.make_read_only(self.block_addr(b), bs) {
                    Ok(()) => {
                        frozen[i] = true;
                        upload.push(b);
                    }
                    // mprotect out of mappings (vm.max_map_count): the block stays on the
                    // host, as when the device is full.
                    Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => refused += 1,
                    Err(e) => return Err(self.protect_err(b, e)),
                }
            }
        }
        let uploaded = self.upload_evicting(&upload, batch)?;
        for (i, &b) in batch.iter().enumerate() {
            if states[i] == State::Host && uploaded.contains(&b) {
                states[i] = State::Shared;
            }
            if for_write && states[i] == State::Shared {
                match self.prot.make_absent(self.block_addr(b), bs) {
                    Ok(()) => states[i] = State::Device,
                    Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => {} // stays Shared
                    Err(e) => return Err(self.protect_err(b, e)),
                }
            }
        }
        Ok(refused + upload.len() - uploaded.len())
    }

    /// Upload `blocks` (held by the caller), evicting other blocks when the pool is full.
    /// Returns the blocks that made it; the rest did not fit.
    fn upload_evicting(&self, blocks: &[usize], held: &[usize]) -> Result<Vec<usize>, CoherenceError> {
        let bs = self.block_size();
        let mut todo: Vec<usize> = blocks.to_vec();
        let mut done = Vec::new();
        while !todo.is_empty() {
            let n = todo.len().min(self.device.free_frames().max(1));
            let part: Vec<(BlockId, *const u8)> = todo[..n].iter().map(|&b| (b as BlockId, self.block_addr(b) as *const u8)).collect();
            // SAFETY: the host copies of held Host blocks are present and read-only.
            match unsafe { self.device.upload(&part) } {
                Ok(()) => {
                    self.stats.bytes_to_device.fetch_add((n * bs) as u64, Relaxed);
                    done.extend(todo.drain(..n));
                }
                Err(BackendError::NoFrames { needed, free }) => {
                    let want = needed.saturating_sub(free).max(1);
                    if self.evict(want, held)? == 0 {
                        break; // nothing evictable: the rest stays on the host
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(done)
    }

    /// Evict up to `n` least-recently-used blocks not in `exclude`. Returns how many.
    pub fn evict(&self, n: usize, exclude: &[usize]) -> Result<usize, CoherenceError> {
        let _internal = InternalScope::new();
        let _no_launch = self.exclusive();
        let mut evicted = 0;
        for cand in self.device.eviction_candidates(n + exclude.len()) {
            let b = cand as usize;
            if evicted == n || exclude.contains(&b) {
                continue;
            }
            let Some(w) = self.try_lock(b) else { continue };
            let s = state_of(w);
            let r = self.bring_home_locked(b, s);
            self.unlock(b, s, if r.is_ok() { State::Host } else { s });
            r?;
            self.stats.evictions.fetch_add(1, Relaxed);
            evicted += 1;
        }
        Ok(evicted)
    }

    /// With `b` held in state `s`: make the host copy valid and writable, drop the device copy.
    fn bring_home_locked(&self, b: usize, s: State) -> Result<(), CoherenceError> {
        let (addr, bs) = (self.block_addr(b), self.block_size());
        match s {
            State::Device => {
                self.fill_from_device(b, true)?;
                self.stats.bytes_to_host.fetch_add(bs as u64, Relaxed);
            }
            State::Shared => self.prot.make_writable(addr, bs).map_err(|e| self.errno_err(b, e))?,
            State::Host | State::InPlace => {}
        }
        self.drop_device_copy(b);
        Ok(())
    }

    /// Fill block `b`'s absent host pages from its device copy (normal context).
    fn fill_from_device(&self, b: usize, writable: bool) -> Result<(), CoherenceError> {
        let (addr, bs) = (self.block_addr(b), self.block_size());
        let mut bounce = Vec::new();
        let src = self.device_copy(b, &mut bounce)?;
        // SAFETY: `src` is readable for a block; the pages are absent (state Device) and
        // ours to fill.
        unsafe { self.prot.fill(addr, src.as_ptr(), bs, writable) }.map_err(|e| self.errno_err(b, e))
    }

    /// Block `b`'s device copy (the caller holds the block; a kernel running meanwhile may
    /// still change it, as for any CPU read during a launch): the device's host view where
    /// the CPU can read device memory, else downloaded into `bounce`. Normal context.
    fn device_copy<'a>(&self, b: usize, bounce: &'a mut Vec<u8>) -> Result<&'a [u8], CoherenceError> {
        let bs = self.block_size();
        if let Some(view) = self.device.host_view(b as BlockId) {
            // SAFETY: the view is readable for a block while we hold the block, and stays
            // mapped for the device's life.
            return Ok(unsafe { std::slice::from_raw_parts(view, bs) });
        }
        bounce.resize(bs, 0);
        // SAFETY: bounce is writable for a block.
        unsafe { self.device.download(&[(b as BlockId, bounce.as_mut_ptr())]) }?;
        Ok(bounce)
    }

    /// The service thread's half of a CPU fault on block `b` (whose migration bit the
    /// faulting thread holds): fill its host pages from the device copy.
    pub(super) fn service_fill(&self, b: usize, writable: bool) -> bool {
        let ok = self.fill_from_device(b, writable);
        if let Err(e) = &ok {
            eprintln!("unimem: fault service: {e}");
        }
        ok.is_ok()
    }

    /// Bring the blocks overlapping `[addr, addr+len)` home: host copies valid and
    /// writable, device copies dropped.
    pub fn to_host(&self, addr: usize, len: usize) -> Result<(), CoherenceError> {
        let _internal = InternalScope::new();
        let _no_launch = self.exclusive();
        for b in self.blocks_in(addr, len)? {
            let w = self.lock(b);
            let s = state_of(w);
            let r = self.bring_home_locked(b, s);
            self.unlock(b, s, if r.is_ok() { State::Host } else { s });
            r?;
        }
        Ok(())
    }

    /// Make `[addr, addr+len)` safe for a kernel-mode access (a system call reading or, with
    /// `for_write`, writing it): Device blocks come home, and for writes Shared blocks become
    /// Host. Cheap when nothing needs doing (one load per block).
    pub fn make_host_accessible(&self, addr: usize, len: usize, for_write: bool) -> Result<(), CoherenceError> {
        let Ok(range) = self.blocks_in(addr, len) else { return Ok(()) };
        for b in range {
            if !needs_transition(self.states.load(b), for_write) {
                continue;
            }
            // Needed, or a transition is running: decide under the migration bit.
            let _internal = InternalScope::new();
            let w = self.lock(b);
            let s = state_of(w);
            let to = match s {
                State::Device if !for_write => {
                    if let Err(e) = self.fill_from_device(b, false) {
                        self.unlock(b, s, s);
                        return Err(e);
                    }
                    self.stats.bytes_to_host.fetch_add(self.block_size() as u64, Relaxed);
                    State::Shared
                }
                State::Device | State::Shared if for_write => {
                    let gate = self.twins.gate();
                    if gate.launch_running() {
                        // A kernel may be writing the device copy: keep it (stale) and twin
                        // the block, as a CPU write fault does.
                        match self.cpu_writes_during_launch(b, s, &gate) {
                            Ok(()) => State::Host,
                            Err((e, reached)) => {
                                self.unlock(b, s, reached);
                                return Err(e);
                            }
                        }
                    } else {
                        if let Err(e) = self.bring_home_locked(b, s) {
                            self.unlock(b, s, s);
                            return Err(e);
                        }
                        State::Host
                    }
                }
                other => other,
            };
            self.unlock(b, s, to);
        }
        Ok(())
    }

    /// [`Space::make_host_accessible`] for writing block `b` (held, Shared or Device) while a
    /// launch runs: the CPU write fault's transition in normal context (fill read-only if
    /// Device, twin, writable, device copy stale). On error, also the state reached.
    fn cpu_writes_during_launch(&self, b: usize, s: State, gate: &twin::Gate<'_>) -> Result<(), (CoherenceError, State)> {
        let (addr, bs) = (self.block_addr(b), self.block_size());
        if s == State::Device {
            self.fill_from_device(b, false).map_err(|e| (e, s))?;
            self.stats.bytes_to_host.fetch_add(bs as u64, Relaxed);
        }
        self.twin_if_launch(gate, b, addr);
        self.prot.make_writable(addr, bs).map_err(|e| (self.errno_err(b, e), State::Shared))?;
        self.mark_stale(b);
        Ok(())
    }

    /// Forget the contents of the whole blocks inside `[addr, addr+len)`: device copies are
    /// dropped without copying anything back and host pages read as zero. Blocks only partly
    /// inside the range are left alone, and so are blocks the allocator has not committed
    /// (they read as zero once it does).
    pub fn discard(&self, addr: usize, len: usize) -> Result<(), CoherenceError> {
        let _internal = InternalScope::new();
        let _no_launch = self.exclusive();
        // The whole range must be ours (as for a prefetch), even where it covers no whole block.
        let touched = self.committed_blocks_in(addr, len)?;
        // Only the blocks it covers entirely: the first if it starts on its boundary, the
        // last if it ends on one (`addr + len` cannot overflow: the range is in the heap).
        let (off, bs) = (addr - self.base, self.block_size());
        let first = touched.start + usize::from(off % bs != 0);
        let end = (off + len) >> self.shift;
        for b in first..end.min(touched.end) {
            self.discard_block(b, true)?;
        }
        Ok(())
    }

    /// Drops block `b`'s device copy without copying it back; with `zero`, its memory reads
    /// as zero afterwards (otherwise a block with a host copy keeps it: `freed` calls this
    /// for blocks without live allocations, which another thread may be allocating in).
    fn discard_block(&self, b: usize, zero: bool) -> Result<(), CoherenceError> {
        let (addr, bs) = (self.block_addr(b), self.block_size());
        let w = self.lock(b);
        let s = state_of(w);
        let r = match s {
            State::Device => self.prot.fill_zero(addr, bs).map_err(|e| self.errno_err(b, e)),
            State::Shared => self.prot.make_writable(addr, bs).map_err(|e| self.errno_err(b, e)),
            State::Host | State::InPlace => Ok(()),
        };
        if r.is_ok() && zero && s != State::Device {
            // SAFETY: the block's host pages are present (registered granules are never
            // purged; others fault in normally) and writable now; we hold the block, and the
            // caller is forgetting its contents.
            unsafe { std::ptr::write_bytes(addr as *mut u8, 0, bs) };
        }
        if r.is_ok() && (s != State::Host || self.device.is_resident(b as BlockId)) {
            self.drop_device_copy(b);
            self.stats.discards.fetch_add(1, Relaxed);
        }
        self.unlock(b, s, if r.is_ok() { State::Host } else { s });
        r
    }

    /// The allocator freed `[addr, addr+size)`: discard device copies of blocks that no
    /// longer hold any live allocation (nothing is copied back for freed memory).
    pub fn freed(&self, addr: usize, size: usize) {
        let _internal = InternalScope::new();
        let Ok(range) = self.blocks_in(addr, size) else { return };
        for b in range {
            if self.state(b) == State::Host {
                continue;
            }
            if !unimem_alloc::any_live(self.block_addr(b), self.block_size()) {
                let _ = self.discard_block(b, false);
            }
        }
    }

    /// A kernel finished: the blocks it wrote hold their only valid copy on the device.
    /// A block the CPU wrote meanwhile (other bytes of it: a data race only where both wrote
    /// the same byte) gets the kernel's bytes merged into its host copy and stays Host
    /// (`twin.rs`, counted in `write_merges`); without a twin (none was free) it keeps the
    /// device's version, counted in `write_conflicts`.
    pub fn device_wrote(&self, blocks: &[BlockId]) -> Result<(), CoherenceError> {
        let _internal = InternalScope::new();
        let bs = self.block_size();
        for &blk in blocks {
            let b = blk as usize;
            let w = self.lock(b);
            let s = state_of(w);
            if !self.device.is_resident(blk) {
                // The written copy is gone (nothing may drop one under a launch: see
                // exclusion.rs); whatever the host holds is all there is.
                self.unlock(b, s, s);
                continue;
            }
            if s == State::Host {
                if let Some(twin) = self.twins.take(b) {
                    let r = self.merge_locked(b, &twin);
                    drop(twin);
                    self.unlock(b, s, s);
                    r?;
                    continue;
                }
                self.stats.write_conflicts.fetch_add(1, Relaxed);
                // The stale mark from the CPU write must not drop the device's version.
                self.clear_stale(b);
            }
            let r = if s != State::Device { self.prot.make_absent(self.block_addr(b), bs).map_err(|e| self.protect_err(b, e)) } else { Ok(()) };
            self.unlock(b, s, if r.is_ok() { State::Device } else { s });
            r?;
        }
        Ok(())
    }

    /// [`Space::device_wrote`] for a block the CPU wrote while the kernel ran (held, Host):
    /// the kernel's bytes, those where the device copy differs from `twin`, go into the host
    /// copy, and the device copy is dropped.
    fn merge_locked(&self, b: usize, twin: &twin::Twin<'_>) -> Result<(), CoherenceError> {
        let bs = self.block_size();
        let mut bounce = Vec::new();
        // No kernel runs: the launch claims written blocks between dispatches.
        let device = self.device_copy(b, &mut bounce)?;
        // SAFETY: the block is Host after a CPU write fault: its pages are present and
        // writable (registered blocks are never purged); other threads may write other
        // bytes meanwhile, which `merge` leaves alone.
        unsafe { twin::merge(self.block_addr(b) as *mut u8, device, twin.bytes()) };
        self.drop_device_copy(b);
        // The device copy is gone: nothing stale left to reap.
        self.clear_stale(b);
        self.stats.write_merges.fetch_add(1, Relaxed);
        self.stats.bytes_to_host.fetch_add(bs as u64, Relaxed);
        Ok(())
    }

    /// Bring every Device block home (before `fork`: the child has no device). Tries every
    /// block; on failure returns how many stayed on the device and the first error (those
    /// blocks stay Device, valid in this process; the child cannot read them).
    pub fn all_home(&self) -> Result<(), (usize, CoherenceError)> {
        let _internal = InternalScope::new();
        if self.device_block_count() == 0 {
            return Ok(());
        }
        let mut failed: Option<(usize, CoherenceError)> = None;
        for b in 0..self.states.blocks() {
            if self.state(b) == State::Device {
                if let Err(e) = self.to_host(self.block_addr(b), 1) {
                    match &mut failed {
                        Some((n, _)) => *n += 1,
                        None => failed = Some((1, e)),
                    }
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// In a fork child (one thread, no device): make every protected block plainly
    /// read-write (only the mprotect backend's protections survive a fork), except the
    /// blocks still Device (`all_home` failed for them): their host pages hold nothing (in
    /// both backends a Device block's pages are dropped, and the child has no uffd
    /// registration to report them), so they are made inaccessible, and a touch faults
    /// (reported by [`lost_in_fork`](super::lost_in_fork)) instead of reading zeros.
    /// Returns how many blocks are lost. Async-signal-safe (system calls only): it runs in
    /// `fork`'s child handler.
    pub(super) fn release_protections_in_child(&self) -> usize {
        // uffd protections are not inherited: only lost blocks need a pass (none, normally).
        if self.prot.mode() != FaultMode::Mprotect && self.device_block_count() == 0 {
            return 0;
        }
        let mut lost = 0;
        for b in 0..self.states.blocks() {
            let s = self.states.load(b) & 3;
            if s == State::Device as u64 {
                // SAFETY: the block's pages are arena memory with no content in this
                // process; no other thread exists in a fork child.
                unsafe { libc::mprotect(self.block_addr(b) as *mut _, self.block_size(), libc::PROT_NONE) };
                lost += 1;
            } else if s != State::Host as u64 && self.prot.mode() == FaultMode::Mprotect {
                let _ = self.prot.make_writable(self.block_addr(b), self.block_size());
            }
        }
        lost
    }

    /// Serve a CPU fault at `addr` (`write`: the access was a store). Called from the
    /// SIGBUS/SIGSEGV handler: async-signal-safe (no allocation, no blocking lock other than
    /// waiting for a block's migration bit with FUTEX_WAIT).
    pub fn handle_fault(&self, addr: usize, write: bool) -> FaultOutcome {
        let Some(b) = self.block_of(addr) else { return FaultOutcome::NotOurs };
        let t0 = now_ns();
        let (baddr, bs) = (self.block_addr(b), self.block_size());
        loop {
            let w = self.states.load(b);
            if w & BUSY != 0 {
                if HELD.with(|h| h.get()) != 0 {
                    return FaultOutcome::Fatal("unimem: a thread faulted on managed memory while migrating a block (would deadlock)");
                }
                self.states.wait_while_busy(b);
                continue;
            }
            match state_of(w) {
                State::Device => {
                    let Some(w) = self.states.try_lock(b) else { continue };
                    if state_of(w) != State::Device {
                        self.states.unlock(b, state_of(w));
                        continue;
                    }
                    // A write while a launch runs fills read-only, saves the twin, and only
                    // then lets the CPU write.
                    let gate = write.then(|| self.twins.gate());
                    let twin = gate.as_ref().is_some_and(|g| g.launch_running());
                    let filled = match self.device.host_view(b as BlockId) {
                        // SAFETY: the view is readable while we hold the block; its pages
                        // are absent and ours to fill.
                        Some(view) => unsafe { self.prot.fill(baddr, view, bs, write && !twin) }.is_ok(),
                        // Device memory the CPU cannot read: the service thread copies.
                        None => self.service.fill(b, write && !twin),
                    };
                    if !filled {
                        self.states.unlock(b, State::Device);
                        return FaultOutcome::Fatal("unimem: filling host pages from the device copy failed");
                    }
                    if let Some(gate) = gate.as_ref().filter(|_| twin) {
                        self.twin_if_launch(gate, b, baddr);
                        if self.prot.make_writable(baddr, bs).is_err() {
                            // Filled read-only: both copies valid, as after a read fault.
                            self.device_blocks.fetch_sub(1, Relaxed);
                            self.states.unlock(b, State::Shared);
                            return FaultOutcome::Fatal("unimem: un-protecting a block filled from the device failed");
                        }
                    }
                    let to = if write {
                        self.mark_stale(b);
                        State::Host
                    } else {
                        State::Shared
                    };
                    self.device_blocks.fetch_sub(1, Relaxed);
                    self.states.unlock(b, to);
                    let c = if write { &self.stats.write_faults_device } else { &self.stats.read_faults_device };
                    c.fetch_add(1, Relaxed);
                    self.stats.bytes_to_host.fetch_add(bs as u64, Relaxed);
                    self.stats.fault_ns.fetch_add(now_ns() - t0, Relaxed);
                    return FaultOutcome::Handled;
                }
                State::Shared if write => {
                    let Some(w) = self.states.try_lock(b) else { continue };
                    if state_of(w) != State::Shared {
                        self.states.unlock(b, state_of(w));
                        continue;
                    }
                    let gate = self.twins.gate();
                    self.twin_if_launch(&gate, b, baddr);
                    if self.prot.make_writable(baddr, bs).is_err() {
                        self.states.unlock(b, State::Shared);
                        return FaultOutcome::Fatal("unimem: un-protecting a shared block failed");
                    }
                    self.mark_stale(b);
                    self.states.unlock(b, State::Host);
                    self.stats.write_faults_shared.fetch_add(1, Relaxed);
                    self.stats.fault_ns.fetch_add(now_ns() - t0, Relaxed);
                    return FaultOutcome::Handled;
                }
                State::Host | State::InPlace if self.prot.zero_if_missing(addr) => {
                    // A page the program dropped (madvise by system call, a reclaimed
                    // MADV_FREE page): it reads as zero, as Linux would have it.
                    self.stats.spurious_faults.fetch_add(1, Relaxed);
                    return FaultOutcome::Handled;
                }
                _ => {
                    // Host, or a read of Shared: the transition that caused the fault has
                    // completed, or the fault is genuine. A second identical fault with no
                    // transition in between is genuine.
                    let again = LAST_HOST_FAULT.with(|c| c.replace((addr, w)) == (addr, w));
                    if again || !self.prot.is_tracked(addr) {
                        LAST_HOST_FAULT.with(|c| c.set((0, 0)));
                        return FaultOutcome::NotOurs;
                    }
                    self.stats.spurious_faults.fetch_add(1, Relaxed);
                    return FaultOutcome::Handled;
                }
            }
        }
    }
}

pub use unimem_alloc::os::now_ns;
