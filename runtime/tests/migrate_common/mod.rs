//! Helpers shared by the `migrate_*` tests: opening an engine under the device-test rule, a
//! seeded random generator, and host memory laid out as blocks.

#![allow(dead_code)] // each test binary uses a different subset

use unimem::device::pagetable::BINDING_FRAMES;
use unimem::device::test_support::or_skip;
use unimem::device::{Device, MigrateConfig, VulkanBlockDevice};
use unimem::options::{CopyMode, InPlaceMode};

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
        // These tests are about frames: blocks migrate.
        in_place: InPlaceMode::Off,
        ..MigrateConfig::default()
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

/// WGSL accessors over the engine's bindings, as the prelude will provide them: the layout
/// constants, bindings 0..3+F, `frame_load(frame, word)` / `frame_store(frame, word, value)`
/// (the store also marks the frame's dirty word) and `record_fault(block)`. Kernels put their own
/// buffers at `UNIMEM_FIRST_ARG_BINDING`.
pub fn accessors(dev: &VulkanBlockDevice) -> String {
    let frames = dev.geometry().buffers();
    let mut s = dev.wgsl_constants();
    s.push_str(
        "
@group(0) @binding(0) var<storage, read> unimem_pt: array<u32>;
@group(0) @binding(1) var<storage, read_write> unimem_dirty: array<u32>;
@group(0) @binding(2) var<storage, read_write> unimem_faults: array<atomic<u32>>;
",
    );
    for i in 0..frames {
        s.push_str(&format!(
            "@group(0) @binding({}) var<storage, read_write> unimem_frames_{i}: array<u32>;\n",
            BINDING_FRAMES as usize + i
        ));
    }
    let cases = |body: &str| {
        (0..frames)
            .map(|i| {
                format!(
                    "        case {i}u: {{ {} }}\n",
                    body.replace('#', &i.to_string())
                )
            })
            .collect::<String>()
    };
    s.push_str(&format!(
        "
fn frame_load(f: u32, word: u32) -> u32 {{
    let w = ((f & (UNIMEM_FRAMES_PER_BUFFER - 1u)) << (UNIMEM_BLOCK_SHIFT - 2u)) + word;
    switch f >> UNIMEM_FRAME_BUFFER_SHIFT {{
{}        default: {{ return 0u; }}
    }}
}}

fn frame_store(f: u32, word: u32, value: u32) {{
    let w = ((f & (UNIMEM_FRAMES_PER_BUFFER - 1u)) << (UNIMEM_BLOCK_SHIFT - 2u)) + word;
    switch f >> UNIMEM_FRAME_BUFFER_SHIFT {{
{}        default: {{ }}
    }}
    if (unimem_dirty[f] == 0u) {{ unimem_dirty[f] = 1u; }}
}}

fn record_fault(b: u32) {{
    let bit = 1u << (b & 31u);
    let old = atomicOr(&unimem_faults[UNIMEM_FAULT_PENDING_AT + (b >> 5u)], bit);
    if ((old & bit) == 0u) {{
        let i = atomicAdd(&unimem_faults[UNIMEM_FAULT_COUNT], 1u);
        if (i < UNIMEM_FAULT_CAPACITY) {{
            atomicStore(&unimem_faults[UNIMEM_FAULT_ENTRIES_AT + i], b);
        }}
    }}
}}
",
        cases("return unimem_frames_#[w];"),
        cases("unimem_frames_#[w] = value;"),
    ));
    s
}
