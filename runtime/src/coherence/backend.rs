//! The interface between coherence and whatever holds device copies of blocks: the Vulkan
//! device (`device::migrate`) or the CPU-backed [`super::FakeDevice`] that lets every
//! coherence test run without Vulkan (the way Linux tests HMM with `lib/test_hmm.c`).
//!
//! Division of labour: coherence owns block *state* (who holds the truth, host protection,
//! sequence numbers) and performs every transition; a `BlockDevice` owns *frames* (device
//! storage, the device page table, LRU order, dirty bits) and moves bytes. Eviction policy
//! (which block) comes from the device's LRU, eviction mechanism (write back, change state)
//! from coherence.

use crate::device::DeviceError;

/// A block's number: `(address - managed base) / block_size`.
pub type BlockId = u32;

/// Why a device operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// No free frame for the batch: evict (see [`BlockDevice::eviction_candidates`]) and
    /// retry. Nothing in the batch was changed.
    #[error("the device frame pool is full ({needed} frames needed, {free} free)")]
    NoFrames {
        /// Frames the batch needed.
        needed: usize,
        /// Frames free when it was tried.
        free: usize,
    },
    /// The device failed; host-valid data is unaffected.
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// Something that holds device copies of blocks.
///
/// Concurrency contract: every method may be called from any thread, concurrently; the
/// implementation serialises what it must. Coherence never calls two methods for the same
/// block concurrently (it holds the block's migration bit). Only [`BlockDevice::host_view`]
/// may be called from a signal handler: it must not allocate, lock, or call the driver.
pub trait BlockDevice: Send + Sync {
    /// Bytes per block (= per frame).
    fn block_size(&self) -> usize;

    /// Total frames.
    fn capacity(&self) -> usize;

    /// Frames not holding any block.
    fn free_frames(&self) -> usize;

    /// Copy each block's `block_size` host bytes at the given address into its device copy,
    /// taking a frame for blocks that have none, and mark them valid in the device page
    /// table. All or nothing: on `NoFrames` no block was changed.
    ///
    /// # Safety
    /// Each address must be readable for `block_size` bytes and not written during the call.
    unsafe fn upload(&self, blocks: &[(BlockId, *const u8)]) -> Result<(), BackendError>;

    /// Copy each block's device copy into host memory at the given address.
    ///
    /// # Safety
    /// Each address must be writable for `block_size` bytes and not otherwise accessed
    /// during the call; each block must have a device copy.
    unsafe fn download(&self, blocks: &[(BlockId, *mut u8)]) -> Result<(), BackendError>;

    /// The device copy of `block` as CPU-readable memory, when frames are host-visible
    /// (lavapipe, ReBAR, the fake device): the CPU fault path then fills host pages straight
    /// from it. Valid until the block is discarded. Async-signal-safe.
    fn host_view(&self, block: BlockId) -> Option<*const u8>;

    /// Does `block` have a device copy?
    fn is_resident(&self, block: BlockId) -> bool;

    /// Drop device copies: frames freed, page-table entries invalid. Nothing is copied.
    fn discard(&self, blocks: &[BlockId]);

    /// Up to `n` resident blocks, least recently used first, for eviction.
    fn eviction_candidates(&self, n: usize) -> Vec<BlockId>;

    /// Blocks the device wrote since the last call (its dirty bits), clearing them.
    fn take_dirty(&self) -> Vec<BlockId>;

    /// True when kernels access host memory in place (`device/mirror.rs`): blocks are then
    /// mapped with [`BlockDevice::map_in_place`] instead of uploaded, and never use frames.
    fn in_place(&self) -> bool {
        false
    }

    /// Maps each block to its own host pages in the device page table (in-place mode only).
    /// [`BlockDevice::discard`] unmaps. [`BlockDevice::is_resident`] is true for a mapped
    /// block, [`BlockDevice::host_view`] `None`.
    fn map_in_place(&self, blocks: &[BlockId]) -> Result<(), BackendError> {
        let _ = blocks;
        Err(BackendError::Device(DeviceError::Usage("this device does not map host memory in place".into())))
    }
}
