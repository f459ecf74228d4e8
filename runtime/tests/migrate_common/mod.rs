//! Helpers shared by the `migrate_*` tests: opening an engine under the device-test rule, a
//! seeded random generator, and host memory laid out as blocks.

#![allow(dead_code)] // each test binary uses a different subset

use unimem::device::test_support::or_skip;
use unimem::device::{Device, MigrateConfig, VulkanBlockDevice};
use unimem::options::CopyMode;

/// A small block size so tests move many blocks cheaply.
pub const BS: usize = 4096;

/// Opens an engine for `test` with `config`, following `device::test_support`'s rule.
pub fn engine(test: &str, config: MigrateConfig) -> Option<VulkanBlockDevice> {
    let device = or_skip(test, Device::open())?;
    or_skip(test, VulkanBlockDevice::new(device, config))
}

/// 4 KiB blocks, `frames` frames, `frames_per_buffer` per buffer, `blocks` page-table entries.
pub fn config(copy: CopyMode, frames: u32, frames_per_buffer: u32, blocks: u32) -> MigrateConfig {
    MigrateConfig {
        block_size: BS,
        pool_bytes: Some(u64::from(frames) * BS as u64),
        copy,
        blocks: Some(blocks),
        frames_per_buffer: Some(frames_per_buffer),
        // A ring of 6 blocks: batches larger than 3 blocks take several submissions.
        staging_bytes: 6 * BS as u64,
        fault_capacity: 64,
    }
}

/// xorshift64*: deterministic, dependency-free.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let v = self.next().to_ne_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    /// `n` distinct values below `limit`, in random order.
    pub fn distinct(&mut self, n: usize, limit: usize) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::with_capacity(n);
        while out.len() < n {
            let v = self.below(limit) as u32;
            if !out.contains(&v) {
                out.push(v);
            }
        }
        out
    }
}

/// `n` blocks of host memory.
pub struct HostBlocks(pub Vec<u8>);

impl HostBlocks {
    pub fn new(n: usize) -> HostBlocks {
        HostBlocks(vec![0; n * BS])
    }
    pub fn block(&self, i: usize) -> &[u8] {
        &self.0[i * BS..(i + 1) * BS]
    }
    pub fn block_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.0[i * BS..(i + 1) * BS]
    }
    pub fn ptr(&self, i: usize) -> *const u8 {
        self.block(i).as_ptr()
    }
    pub fn ptr_mut(&mut self, i: usize) -> *mut u8 {
        self.block_mut(i).as_mut_ptr()
    }
}

/// Both copy paths, for tests that run on each.
pub const PATHS: [CopyMode; 2] = [CopyMode::Direct, CopyMode::Staging];
