//! The staging path of block copies: frames in device memory the CPU does not map, a
//! host-visible staging ring, and `vkCmdCopyBuffer` on the device's queue (compute queues are
//! transfer-capable by definition).
//!
//! The ring is split in two halves so that the CPU fills (or drains) one half while the
//! device copies the other: a batch of `n` blocks becomes `ceil(n / half)` submissions, each
//! with its own command buffer and fence, at most two in flight. Every operation waits for
//! all its submissions before it returns, so the caller sees a synchronous copy.
//!
//! Invariants (`Staging`, protected by the migration engine's staging mutex):
//! - half `h` of the ring and `cmds[h]` are used by at most one submission, `fences[h]`'s;
//!   `pending[h]` is true from that submission until its fence was waited for and reset;
//! - between operations nothing is pending (every operation drains both halves), unless the
//!   device is poisoned, when the objects are leaked instead of destroyed;
//! - each command buffer starts with a barrier ordering earlier compute work before its copies
//!   and ends with one ordering its copies before later compute work (upload) or host reads
//!   (download), so copies and dispatches on the one queue never race.

use std::sync::Arc;

use ash::vk;

use super::buffer::{Backing, Buffer, Placement};
use super::error::{DeviceError, DeviceResult};
use super::logical::DeviceShared;
use super::select::HOST_MAPPABLE;

/// One block's copy: the host address and the frame's `(buffer, offset)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Transfer<P> {
    pub host: P,
    pub buffer: vk::Buffer,
    pub offset: u64,
}

/// Copy direction.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Direction {
    ToDevice,
    ToHost,
}

/// The staging ring and the command objects that drive it.
pub(crate) struct Staging {
    shared: Arc<DeviceShared>,
    ring: Buffer,
    /// Start of the ring's mapping.
    ring_ptr: *mut u8,
    block_size: usize,
    /// Blocks per half of the ring.
    half: usize,
    pool: vk::CommandPool,
    cmds: [vk::CommandBuffer; 2],
    fences: [vk::Fence; 2],
    pending: [bool; 2],
}

// SAFETY: `ring_ptr` points into `ring`'s mapping, owned by this struct and valid from any
// thread; the Vulkan handles are plain handles whose external synchronisation is provided by
// the engine's staging mutex (every method takes `&mut self`).
unsafe impl Send for Staging {}

impl Staging {
    /// A ring of `ring_bytes` (rounded to an even number of blocks, at least two) for blocks
    /// of `block_size` bytes.
    pub(crate) fn new(
        shared: &Arc<DeviceShared>,
        ring_bytes: u64,
        block_size: usize,
    ) -> DeviceResult<Staging> {
        let half = ((ring_bytes / block_size as u64 / 2).max(1)) as usize;
        let placement = Placement {
            required: HOST_MAPPABLE,
            preferred: vk::MemoryPropertyFlags::HOST_CACHED,
            mapped: true,
            zeroed: false,
            purpose: "the staging ring",
        };
        // SAFETY: `Backing::Allocate` has no caller obligations.
        let ring = unsafe {
            Buffer::create(
                shared,
                (2 * half * block_size) as u64,
                placement,
                Backing::Allocate,
            )
        }?;
        let ring_ptr = ring.mapped_ptr().expect("the ring is mapped").as_ptr();
        let raw = &shared.raw;
        let pool_info = vk::CommandPoolCreateInfo::default()
            .queue_family_index(shared.queue_family())
            .flags(
                vk::CommandPoolCreateFlags::TRANSIENT
                    | vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER,
            );
        // SAFETY: `raw` is a live device; `pool_info` is valid.
        let pool = unsafe { raw.create_command_pool(&pool_info, None) }
            .map_err(DeviceError::at("vkCreateCommandPool"))?;
        let mut staging = Staging {
            shared: Arc::clone(shared),
            ring,
            ring_ptr,
            block_size,
            half,
            pool,
            cmds: [vk::CommandBuffer::null(); 2],
            fences: [vk::Fence::null(); 2],
            pending: [false; 2],
        };
        // From here on, `Drop` releases whatever was created.
        let alloc = vk::CommandBufferAllocateInfo::default()
            .command_pool(pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(2);
        // SAFETY: `pool` was just created from `raw`.
        let cmds = unsafe { raw.allocate_command_buffers(&alloc) }
            .map_err(DeviceError::at("vkAllocateCommandBuffers"))?;
        staging.cmds = [cmds[0], cmds[1]];
        for fence in &mut staging.fences {
            // SAFETY: `raw` is a live device.
            *fence = unsafe { raw.create_fence(&vk::FenceCreateInfo::default(), None) }
                .map_err(DeviceError::at("vkCreateFence"))?;
        }
        Ok(staging)
    }

    /// Blocks one submission carries.
    pub(crate) fn blocks_per_submission(&self) -> usize {
        self.half
    }

    /// Copies each transfer's `block_size` host bytes into its frame.
    ///
    /// # Safety
    /// Each `host` is readable for `block_size` bytes; each `(buffer, offset)` is a frame of
    /// this device's pool, not used by running work.
    pub(crate) unsafe fn upload(&mut self, copies: &[Transfer<*const u8>]) -> DeviceResult<()> {
        let result = self.upload_chunks(copies);
        self.finish(result, "staging upload")
    }

    /// Copies each transfer's frame into `block_size` host bytes.
    ///
    /// # Safety
    /// Each `host` is writable for `block_size` bytes and not otherwise accessed; each
    /// `(buffer, offset)` is a frame of this device's pool, not written by running work.
    pub(crate) unsafe fn download(&mut self, copies: &[Transfer<*mut u8>]) -> DeviceResult<()> {
        let result = self.download_chunks(copies);
        self.finish(result, "staging download")
    }

    fn upload_chunks(&mut self, copies: &[Transfer<*const u8>]) -> DeviceResult<()> {
        for (i, chunk) in copies.chunks(self.half).enumerate() {
            let h = i % 2;
            self.wait(h, "staging upload")?;
            for (slot, t) in chunk.iter().enumerate() {
                // SAFETY: the slot is inside half `h` of the ring, which no pending work uses
                // (just waited); `t.host` is readable for a block (`upload`'s contract).
                unsafe {
                    std::ptr::copy_nonoverlapping(t.host, self.slot(h, slot), self.block_size)
                };
            }
            self.record_and_submit(h, chunk, Direction::ToDevice)?;
        }
        Ok(())
    }

    fn download_chunks(&mut self, copies: &[Transfer<*mut u8>]) -> DeviceResult<()> {
        let mut previous: Option<(usize, &[Transfer<*mut u8>])> = None;
        for (i, chunk) in copies.chunks(self.half).enumerate() {
            let h = i % 2;
            // Half `h` was drained by the previous iteration (or never used).
            debug_assert!(!self.pending[h]);
            self.record_and_submit(h, chunk, Direction::ToHost)?;
            if let Some((ph, pchunk)) = previous.replace((h, chunk)) {
                self.drain(ph, pchunk)?;
            }
        }
        if let Some((ph, pchunk)) = previous {
            self.drain(ph, pchunk)?;
        }
        Ok(())
    }

    /// Waits for half `h`'s copies to the host, then moves them to their destinations.
    fn drain(&mut self, h: usize, chunk: &[Transfer<*mut u8>]) -> DeviceResult<()> {
        self.wait(h, "staging download")?;
        for (slot, t) in chunk.iter().enumerate() {
            // SAFETY: the device finished writing the slot (fence waited; the command buffer's
            // final barrier made the writes visible to the host); `t.host` is writable for a
            // block (`download`'s contract).
            unsafe { std::ptr::copy_nonoverlapping(self.slot(h, slot), t.host, self.block_size) };
        }
        Ok(())
    }

    /// Waits for everything still pending after `result`; the first error wins.
    fn finish(&mut self, result: DeviceResult<()>, what: &'static str) -> DeviceResult<()> {
        let mut result = result;
        for h in 0..2 {
            if self.shared.is_poisoned() {
                break; // pending work is abandoned with the device
            }
            let waited = self.wait(h, what);
            if result.is_ok() {
                result = waited;
            }
        }
        result
    }

    /// The start of slot `slot` of half `h`.
    fn slot(&self, h: usize, slot: usize) -> *mut u8 {
        debug_assert!(h < 2 && slot < self.half);
        // SAFETY: in bounds of the ring, which holds `2 * half` blocks.
        unsafe { self.ring_ptr.add((h * self.half + slot) * self.block_size) }
    }

    /// Waits for half `h`'s submission, if any.
    fn wait(&mut self, h: usize, what: &'static str) -> DeviceResult<()> {
        if !self.pending[h] {
            return Ok(());
        }
        let blocks = self.half;
        self.shared.wait_and_reset(self.fences[h], || {
            format!("{what} of up to {blocks} blocks")
        })?;
        self.pending[h] = false;
        Ok(())
    }

    /// Records the copies of `chunk` between half `h` of the ring and the frames into
    /// `cmds[h]` and submits it with `fences[h]`.
    fn record_and_submit<P>(
        &mut self,
        h: usize,
        chunk: &[Transfer<P>],
        direction: Direction,
    ) -> DeviceResult<()> {
        debug_assert!(!self.pending[h]);
        let shared = &self.shared;
        let raw = &shared.raw;
        let cmd = self.cmds[h];
        let begin = vk::CommandBufferBeginInfo::default()
            .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
        // SAFETY: `cmd` is not pending (`pending[h]` is false) and its pool allows resets, so
        // beginning it resets it.
        unsafe { raw.begin_command_buffer(cmd, &begin) }
            .map_err(|e| shared.fail("vkBeginCommandBuffer (staging copy)", e))?;

        let shader = vk::AccessFlags::SHADER_READ | vk::AccessFlags::SHADER_WRITE;
        let (before, after, after_stage) = match direction {
            // Earlier kernels' accesses to the frames happen before the copies overwrite them;
            // the copies' writes are visible to later kernels.
            Direction::ToDevice => (
                vk::MemoryBarrier::default()
                    .src_access_mask(shader)
                    .dst_access_mask(vk::AccessFlags::TRANSFER_WRITE),
                vk::MemoryBarrier::default()
                    .src_access_mask(vk::AccessFlags::TRANSFER_WRITE)
                    .dst_access_mask(shader),
                vk::PipelineStageFlags::COMPUTE_SHADER,
            ),
            // Earlier kernels' writes are visible to the copies; the copies' writes to the
            // ring are visible to the host once the fence signals.
            Direction::ToHost => (
                vk::MemoryBarrier::default()
                    .src_access_mask(vk::AccessFlags::SHADER_WRITE)
                    .dst_access_mask(vk::AccessFlags::TRANSFER_READ),
                vk::MemoryBarrier::default()
                    .src_access_mask(vk::AccessFlags::TRANSFER_WRITE)
                    .dst_access_mask(vk::AccessFlags::HOST_READ),
                vk::PipelineStageFlags::HOST,
            ),
        };
        let ring = self.ring.raw();
        let ring_offset = |slot: usize| ((h * self.half + slot) * self.block_size) as u64;
        let size = self.block_size as u64;
        // SAFETY: `cmd` is recording; every buffer is a live buffer of this device and every
        // region lies inside its buffer (frames come from the pool geometry, ring slots from
        // `half`); regions of one call never overlap (distinct slots, distinct frames).
        unsafe {
            raw.cmd_pipeline_barrier(
                cmd,
                vk::PipelineStageFlags::COMPUTE_SHADER,
                vk::PipelineStageFlags::TRANSFER,
                vk::DependencyFlags::empty(),
                &[before],
                &[],
                &[],
            );
            // One vkCmdCopyBuffer per run of transfers with the same frame buffer, one region
            // per run of adjacent frames.
            let mut regions: Vec<vk::BufferCopy> = Vec::with_capacity(chunk.len());
            let mut start = 0;
            while start < chunk.len() {
                let buffer = chunk[start].buffer;
                let mut end = start;
                regions.clear();
                while end < chunk.len() && chunk[end].buffer == buffer {
                    let (src, dst) = match direction {
                        Direction::ToDevice => (ring_offset(end), chunk[end].offset),
                        Direction::ToHost => (chunk[end].offset, ring_offset(end)),
                    };
                    // Adjacent frames filled from adjacent slots: one region.
                    match regions.last_mut() {
                        Some(r) if r.src_offset + r.size == src && r.dst_offset + r.size == dst => {
                            r.size += size
                        }
                        _ => regions.push(vk::BufferCopy {
                            src_offset: src,
                            dst_offset: dst,
                            size,
                        }),
                    }
                    end += 1;
                }
                match direction {
                    Direction::ToDevice => raw.cmd_copy_buffer(cmd, ring, buffer, &regions),
                    Direction::ToHost => raw.cmd_copy_buffer(cmd, buffer, ring, &regions),
                }
                start = end;
            }
            raw.cmd_pipeline_barrier(
                cmd,
                vk::PipelineStageFlags::TRANSFER,
                after_stage,
                vk::DependencyFlags::empty(),
                &[after],
                &[],
                &[],
            );
        }
        // SAFETY: `cmd` is recording.
        unsafe { raw.end_command_buffer(cmd) }
            .map_err(|e| shared.fail("vkEndCommandBuffer (staging copy)", e))?;
        let call = match direction {
            Direction::ToDevice => "vkQueueSubmit (staging upload)",
            Direction::ToHost => "vkQueueSubmit (staging download)",
        };
        // SAFETY: `cmd` is executable and from a pool of the device's queue family; the fence
        // is unsignalled (created so, reset after every wait) and not pending; the ring and
        // frames outlive the submission (we wait for it before returning or reusing the half;
        // the frames belong to the engine that owns this ring).
        unsafe { shared.submit_one(cmd, self.fences[h], call) }?;
        self.pending[h] = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.shared.is_poisoned() {
            return; // work may still use the ring and command buffers: leak them
        }
        for h in 0..2 {
            if self.wait(h, "staging ring shutdown").is_err() {
                return; // now poisoned: leak
            }
        }
        let raw = &self.shared.raw;
        // SAFETY: nothing is pending (waited above); the handles were created from `raw`
        // (null ones are ignored by Vulkan); the command buffers are freed with the pool.
        unsafe {
            for &fence in &self.fences {
                raw.destroy_fence(fence, None);
            }
            raw.destroy_command_pool(self.pool, None);
        }
    }
}
