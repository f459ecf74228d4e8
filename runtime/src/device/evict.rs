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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coherence::FakeDevice;

    const BS: usize = 4096;

    #[test]
    fn victims_are_lru_dirty_ones_written_back_and_the_batch_is_spared() {
        let dev = FakeDevice::new(BS, 4, 64);
        let home: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; BS]).collect();
        let up = |ids: &[BlockId]| -> Vec<(BlockId, *const u8)> {
            ids.iter()
                .map(|&b| (b, home[b as usize].as_ptr()))
                .collect()
        };
        // SAFETY: the home blocks are readable.
        unsafe { dev.upload(&up(&[0, 1, 2, 3])) }.unwrap();
        dev.device_write(1, 0, &[0xee; 16]); // block 1's device copy is now newer
                                             // SAFETY: as above. LRU order now: 1 (dirty), 0, 2, 3.
        unsafe { dev.upload(&up(&[0, 2, 3])) }.unwrap();
        let mut written = vec![0u8; BS];
        let mut asked = Vec::new();
        // Block 5 needs a frame and the pool is full; block 1, the oldest, is in the batch,
        // so the least recently used other block, 0, goes: written back, since it is dirty.
        // SAFETY: the home blocks are readable; `written` is writable.
        let stats = unsafe {
            upload_evicting(&dev, &up(&[5, 1]), |v| {
                asked.push(v);
                Some(written.as_mut_ptr())
            })
        }
        .unwrap();
        assert_eq!(asked, vec![0]);
        assert_eq!(
            stats,
            EvictionStats {
                evicted: 1,
                written_back: 1,
                full: 1
            }
        );
        assert_eq!(written, home[0]);
        assert!(dev.is_resident(5) && dev.is_resident(1) && !dev.is_resident(0));

        // A batch larger than the pool cannot fit, whatever is evicted.
        let big: Vec<BlockId> = (0..5).collect();
        // SAFETY: as above.
        let err = unsafe { upload_evicting(&dev, &up(&big), |_| None) }.unwrap_err();
        assert!(matches!(err, BackendError::NoFrames { .. }), "{err}");
    }
}
