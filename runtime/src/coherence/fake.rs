//! A CPU-backed [`BlockDevice`]: frames are plain anonymous memory, so every coherence test
//! runs without Vulkan (the role `lib/test_hmm.c` plays for Linux HMM). It also simulates
//! kernels: [`FakeDevice::device_write`] changes a device copy and sets its dirty bit, as a
//! store accessor would.
//!
//! Everything it allocates is internal (never migrates). Locking: one mutex for frame allocation and LRU order. `host_view` reads a lock-free
//! block -> frame table, so the fault handler can call it.

use super::backend::{BackendError, BlockDevice, BlockId};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::sync::Mutex;

struct Inner {
    free: Vec<u32>,
    /// LRU order: tick -> block; `last_use[block]` is its tick.
    lru: BTreeMap<u64, BlockId>,
    last_use: std::collections::HashMap<BlockId, u64>,
    tick: u64,
    dirty: HashSet<BlockId>,
}

/// The fake device.
pub struct FakeDevice {
    block_size: usize,
    frames: usize,
    memory: *mut u8,
    /// block -> frame + 1 (0: not resident). Lock-free for `host_view`.
    table: Box<[AtomicU32]>,
    inner: Mutex<Inner>,
    /// Bytes copied each way (for tests).
    pub uploaded: AtomicU64,
    /// Bytes copied back.
    pub downloaded: AtomicU64,
}

// SAFETY: `memory` is a private anonymous mapping owned by the device; frames are only
// written under the coherence protocol (one migrator per block) or by `device_write`.
unsafe impl Send for FakeDevice {}
// SAFETY: as above.
unsafe impl Sync for FakeDevice {}

impl FakeDevice {
    /// A device of `frames` frames of `block_size` bytes for a space of `blocks` blocks.
    pub fn new(block_size: usize, frames: usize, blocks: usize) -> FakeDevice {
        let _internal = unimem_alloc::InternalScope::new();
        // SAFETY: fresh anonymous mapping.
        let memory = unsafe {
            libc::mmap(std::ptr::null_mut(), block_size * frames, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, -1, 0)
        };
        assert!(memory != libc::MAP_FAILED, "fake device: cannot map {} bytes", block_size * frames);
        FakeDevice {
            block_size,
            frames,
            memory: memory as *mut u8,
            table: (0..blocks).map(|_| AtomicU32::new(0)).collect(),
            inner: Mutex::new(Inner {
                free: (0..frames as u32).rev().collect(),
                lru: BTreeMap::new(),
                last_use: Default::default(),
                tick: 0,
                dirty: HashSet::new(),
            }),
            uploaded: AtomicU64::new(0),
            downloaded: AtomicU64::new(0),
        }
    }

    fn frame_ptr(&self, frame: u32) -> *mut u8 {
        // SAFETY: frame < frames, inside the mapping.
        unsafe { self.memory.add(frame as usize * self.block_size) }
    }

    fn frame_of(&self, b: BlockId) -> Option<u32> {
        match self.table[b as usize].load(Acquire) {
            0 => None,
            f => Some(f - 1),
        }
    }

    fn touch(inner: &mut Inner, b: BlockId) {
        inner.tick += 1;
        if let Some(old) = inner.last_use.insert(b, inner.tick) {
            inner.lru.remove(&old);
        }
        inner.lru.insert(inner.tick, b);
    }

    /// Simulate a kernel store: write `bytes` at `offset` of `block`'s device copy and set
    /// its dirty bit. Panics if the block is not resident (a real kernel would fault).
    pub fn device_write(&self, block: BlockId, offset: usize, bytes: &[u8]) {
        let _internal = unimem_alloc::InternalScope::new();
        let f = self.frame_of(block).unwrap_or_else(|| panic!("fake device: block {block} not resident"));
        assert!(offset + bytes.len() <= self.block_size);
        // SAFETY: inside frame f; the caller (a test acting as a kernel) owns the device copy.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.frame_ptr(f).add(offset), bytes.len()) };
        let mut inner = self.inner.lock().unwrap();
        inner.dirty.insert(block);
        Self::touch(&mut inner, block);
    }

    /// Read from `block`'s device copy (a simulated kernel load).
    pub fn device_read(&self, block: BlockId, offset: usize, out: &mut [u8]) {
        let f = self.frame_of(block).unwrap_or_else(|| panic!("fake device: block {block} not resident"));
        // SAFETY: inside frame f.
        unsafe { std::ptr::copy_nonoverlapping(self.frame_ptr(f).add(offset), out.as_mut_ptr(), out.len()) };
    }
}

impl Drop for FakeDevice {
    fn drop(&mut self) {
        // SAFETY: our mapping; no frame pointer outlives the device (host views are only
        // used under the coherence protocol while the device is installed).
        unsafe { libc::munmap(self.memory as *mut _, self.block_size * self.frames) };
    }
}

impl BlockDevice for FakeDevice {
    fn block_size(&self) -> usize {
        self.block_size
    }

    fn capacity(&self) -> usize {
        self.frames
    }

    fn free_frames(&self) -> usize {
        self.inner.lock().unwrap().free.len()
    }

    unsafe fn upload(&self, blocks: &[(BlockId, *const u8)]) -> Result<(), BackendError> {
        let _internal = unimem_alloc::InternalScope::new();
        let mut inner = self.inner.lock().unwrap();
        let needed = blocks.iter().filter(|(b, _)| self.frame_of(*b).is_none()).count();
        if needed > inner.free.len() {
            return Err(BackendError::NoFrames { needed, free: inner.free.len() });
        }
        for &(b, src) in blocks {
            let f = match self.frame_of(b) {
                Some(f) => f,
                None => {
                    let f = inner.free.pop().expect("counted above");
                    self.table[b as usize].store(f + 1, Release);
                    f
                }
            };
            // SAFETY: the caller guarantees `src` is readable for a block; frame f is ours.
            unsafe { std::ptr::copy_nonoverlapping(src, self.frame_ptr(f), self.block_size) };
            Self::touch(&mut inner, b);
        }
        self.uploaded.fetch_add((blocks.len() * self.block_size) as u64, Relaxed);
        Ok(())
    }

    unsafe fn download(&self, blocks: &[(BlockId, *mut u8)]) -> Result<(), BackendError> {
        for &(b, dst) in blocks {
            let f = self.frame_of(b).unwrap_or_else(|| panic!("fake device: download of non-resident block {b}"));
            // SAFETY: the caller guarantees `dst` is writable for a block.
            unsafe { std::ptr::copy_nonoverlapping(self.frame_ptr(f), dst, self.block_size) };
        }
        self.downloaded.fetch_add((blocks.len() * self.block_size) as u64, Relaxed);
        Ok(())
    }

    fn host_view(&self, block: BlockId) -> Option<*const u8> {
        self.frame_of(block).map(|f| self.frame_ptr(f) as *const u8)
    }

    fn is_resident(&self, block: BlockId) -> bool {
        self.frame_of(block).is_some()
    }

    fn discard(&self, blocks: &[BlockId]) {
        let _internal = unimem_alloc::InternalScope::new();
        let mut inner = self.inner.lock().unwrap();
        for &b in blocks {
            let f = self.table[b as usize].swap(0, AcqRel);
            if f != 0 {
                inner.free.push(f - 1);
                if let Some(t) = inner.last_use.remove(&b) {
                    inner.lru.remove(&t);
                }
                inner.dirty.remove(&b);
            }
        }
    }

    fn eviction_candidates(&self, n: usize) -> Vec<BlockId> {
        let _internal = unimem_alloc::InternalScope::new();
        self.inner.lock().unwrap().lru.values().take(n).copied().collect()
    }

    fn take_dirty(&self) -> Vec<BlockId> {
        let _internal = unimem_alloc::InternalScope::new();
        let mut v: Vec<BlockId> = self.inner.lock().unwrap().dirty.drain().collect();
        v.sort_unstable();
        v
    }
}
