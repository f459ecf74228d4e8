//! Upload with eviction: the loop coherence runs when the frame pool is full, packaged for
//! tests and benchmarks (and any caller that keeps its own notion of which device copies are
//! dirty). Generic over [`BlockDevice`], so it drives the Vulkan engine and the fake device
//! alike.
//!
//! Policy: least recently used first, as the device reports it
//! ([`BlockDevice::eviction_candidates`]); clean victims are dropped for free, dirty ones are
//! written back to their host addresses first (one batched download), then all are discarded
//! and the upload is retried. Blocks of the batch itself are never chosen as victims.

use crate::coherence::backend::{BackendError, BlockDevice, BlockId};

/// What one [`upload_evicting`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvictionStats {
    /// Blocks whose device copies were discarded.
    pub evicted: usize,
    /// Of those, blocks written back to the host first.
    pub written_back: usize,
    /// Upload attempts that found the pool full.
    pub full: usize,
}

/// Uploads `blocks` (as [`BlockDevice::upload`]), evicting least recently used blocks while the
/// pool is too full. `dirty(victim)` says where a victim's device copy must be written back
/// before it is dropped (`Some(host address)`) or that it can be dropped (`None`).
///
/// Fails with `NoFrames` only when the batch needs more frames than the pool has, or when
/// every resident block belongs to the batch; any device error is returned as is (victims
/// already discarded stay discarded, written-back data is on the host).
///
/// # Safety
/// [`BlockDevice::upload`]'s contract for `blocks`; every address `dirty` returns is writable
/// for `block_size` bytes and not otherwise accessed during the call.
pub unsafe fn upload_evicting<D: BlockDevice + ?Sized>(
    dev: &D,
    blocks: &[(BlockId, *const u8)],
    mut dirty: impl FnMut(BlockId) -> Option<*mut u8>,
) -> Result<EvictionStats, BackendError> {
    let mut stats = EvictionStats::default();
    let mut batch: Option<Vec<BlockId>> = None; // sorted ids, built on the first failure
    loop {
        // SAFETY: the caller's contract.
        let (needed, free) = match unsafe { dev.upload(blocks) } {
            Ok(()) => return Ok(stats),
            Err(BackendError::NoFrames { needed, free }) => (needed, free),
            Err(e) => return Err(e),
        };
        stats.full += 1;
        if needed > dev.capacity() {
            return Err(BackendError::NoFrames { needed, free });
        }
        let batch = batch.get_or_insert_with(|| {
            let mut ids: Vec<BlockId> = blocks.iter().map(|b| b.0).collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        });
        let want = needed - free;
        let victims: Vec<BlockId> = dev
            .eviction_candidates(want + batch.len())
            .into_iter()
            .filter(|b| batch.binary_search(b).is_err())
            .take(want)
            .collect();
        if victims.is_empty() {
            return Err(BackendError::NoFrames { needed, free });
        }
        let write_back: Vec<(BlockId, *mut u8)> = victims
            .iter()
            .filter_map(|&b| dirty(b).map(|p| (b, p)))
            .collect();
        if !write_back.is_empty() {
            // SAFETY: every victim is resident (an eviction candidate); the addresses are
            // writable (the caller's contract).
            unsafe { dev.download(&write_back) }?;
        }
        dev.discard(&victims);
        stats.evicted += victims.len();
        stats.written_back += write_back.len();
    }
}
