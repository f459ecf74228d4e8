//! `VulkanBlockDevice`: the migration engine. Implements coherence's [`BlockDevice`] on a
//! Vulkan device: a frame pool (`pool.rs`), the device page table, dirty words and fault
//! buffer (`pagetable.rs`), and the two copy paths (direct memcpy into mapped frames, or the
//! staging ring of `staging.rs`).
//!
//! Owns: the frame buffers and control buffers, which frame holds which block, LRU order,
//! dirty bits, byte movement. Does not own: block state (coherence decides what moves and
//! when; this file only does what it is told and reports when the pool is full).
//!
//! # Copy paths
//!
//! Direct: frames are mapped (host-visible, preferably device-local and host-cached memory:
//! lavapipe, integrated GPUs), copies are `memcpy`, and [`BlockDevice::host_view`] hands the
//! CPU fault path the frame itself. Staging: frames are device memory the CPU does not map;
//! copies go through the ring of `staging.rs`; `host_view` is `None`, so coherence serves CPU
//! faults on Device blocks from its fault service thread, which calls `download` (a signal
//! handler cannot call the driver). `auto` picks direct when a `DEVICE_LOCAL | HOST_VISIBLE |
//! HOST_COHERENT | HOST_CACHED` type exists ([`resolve_copy_mode`]).
//!
//! # Concurrency
//!
//! Every method may be called from any thread (the [`BlockDevice`] contract); coherence never
//! runs two operations on the same block at once. Three locks, never nested except in the
//! order `buffers` -> `pool`, `staging` -> `pool`:
//! - `pool` (the [`FramePool`]: free list, owners, LRU) is held briefly: to reserve frames,
//!   release them, touch, list candidates, translate dirty frames. Never during a copy;
//! - `staging` serialises staging-path copies (one ring);
//! - `buffers` (the `Buffer` objects) is held by `dispatch` and `take_faults`.
//!
//! The page table's host mirror is read without a lock (`host_view`, `is_resident`); an upload
//! reserves a block's frame (host entry marked filling, invisible to readers), copies with no
//! lock held, then publishes the entry to the device table and the mirror.
//!
//! # Failure
//!
//! A full pool is not an error of the device: `upload` returns `NoFrames` and changes
//! nothing. Allocation failure while creating the pool shrinks the pool (at least one frame
//! buffer is needed). A lost or hung device poisons it: the failing call returns
//! `DeviceLost`/`Timeout`, every later call fails fast with `DeviceLost` naming the operation,
//! and no host memory is written by a failing upload (a failing download may have written
//! part of its destinations, which held no valid data). A batch whose copy failed loses its
//! device copies (they may be partial); the host copies it was uploaded from are intact.

use std::sync::{Mutex, MutexGuard};

use ash::vk;

use super::buffer::{Backing, Buffer, Placement};
use super::error::{DeviceError, DeviceResult};
use super::logical::Device;
use super::mirror::Windows;
use super::pagetable::{
    map_is_uniform, map_words, wgsl_constants, wgsl_in_place_map, ControlLayout, DirtyBits,
    FaultBuffer, FaultReport, PageTable, Words, BINDING_FRAMES, PTE_IN_PLACE, PTE_WRITABLE,
};
use super::pipeline::ComputePipeline;
use super::pool::{FrameId, FramePool, Geometry};
use super::select::HOST_MAPPABLE;
use super::staging::{Staging, Transfer};
use crate::coherence::backend::{BackendError, BlockDevice, BlockId};
use crate::options::{self, CopyMode, InPlaceAccess, InPlaceMode};
use crate::InternalScope;

const MIB: u64 = 1 << 20;

/// How a [`VulkanBlockDevice`] is built. [`MigrateConfig::from_env`] reads the `UNIMEM_*`
/// options; tests set fields directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MigrateConfig {
    /// Bytes per block and frame: a power of two from 4 KiB to 16 MiB.
    pub block_size: usize,
    /// Bytes of frames; `None`: [`default_pool_bytes`].
    pub pool_bytes: Option<u64>,
    /// The copy path; `Auto` picks direct when frames can be host-visible and host-cached.
    pub copy: CopyMode,
    /// Blocks the page table covers; `None`: the allocator's managed range.
    pub blocks: Option<u32>,
    /// Frames per frame buffer; `None`: as many as the device limits allow. Tests use small
    /// values to cross buffer boundaries with few frames.
    pub frames_per_buffer: Option<u32>,
    /// Bytes of the staging ring (staging path only; at least two blocks are used). Each half
    /// is one submission: the CPU fills one half while the device copies the other. 4 MiB
    /// measured best on lavapipe (16 MiB batches: 1 MiB 1.46 ms, 4 MiB 1.18 ms, 32 MiB
    /// 1.63 ms, where a single submission leaves nothing to overlap).
    pub staging_bytes: u64,
    /// Entries of the fault list.
    pub fault_capacity: u32,
    /// Whether kernels access host memory in place (`resolve_in_place`).
    pub in_place: InPlaceMode,
    /// In place, how kernels reach the heap ([`VulkanBlockDevice::in_place_addressed`]).
    pub in_place_access: InPlaceAccess,
}

impl Default for MigrateConfig {
    fn default() -> Self {
        MigrateConfig {
            block_size: options::DEFAULT_BLOCK_SIZE as usize,
            pool_bytes: None,
            copy: CopyMode::Auto,
            blocks: None,
            frames_per_buffer: None,
            staging_bytes: 4 * MIB,
            fault_capacity: 4096,
            in_place: InPlaceMode::Auto,
            in_place_access: InPlaceAccess::Auto,
        }
    }
}

impl MigrateConfig {
    /// The defaults with `UNIMEM_BLOCK_SIZE`, `UNIMEM_DEVICE_MEMORY`, `UNIMEM_DEVICE_COPY` and
    /// `UNIMEM_IN_PLACE` (and `UNIMEM_IN_PLACE_ACCESS`) applied. An invalid value is a [`DeviceError::Config`] naming the
    /// variable.
    pub fn from_env() -> DeviceResult<MigrateConfig> {
        Ok(MigrateConfig {
            block_size: options::block_size().map_err(DeviceError::Config)?,
            pool_bytes: options::device_memory().map_err(DeviceError::Config)?,
            copy: options::device_copy().map_err(DeviceError::Config)?,
            in_place: options::in_place().map_err(DeviceError::Config)?,
            in_place_access: options::in_place_access().map_err(DeviceError::Config)?,
            ..MigrateConfig::default()
        })
    }
}

/// The default pool size: a quarter of the largest `DEVICE_LOCAL` heap (of the largest heap
/// when none is device-local), at most 1 GiB.
pub fn default_pool_bytes(report: &super::DeviceReport) -> u64 {
    let local = report
        .memory_heaps
        .iter()
        .filter(|h| h.flags.contains(vk::MemoryHeapFlags::DEVICE_LOCAL))
        .map(|h| h.size)
        .max();
    let heap = local
        .or_else(|| report.memory_heaps.iter().map(|h| h.size).max())
        .unwrap_or(0);
    (heap / 4).min(1 << 30)
}

/// The memory flags of frames the direct path is fast with: the CPU writes and reads them
/// like RAM (lavapipe, integrated GPUs). ReBAR memory lacks `HOST_CACHED` (CPU reads are
/// slow), so `auto` stages there.
const DIRECT_FAST: vk::MemoryPropertyFlags = vk::MemoryPropertyFlags::from_raw(
    HOST_MAPPABLE.as_raw()
        | vk::MemoryPropertyFlags::DEVICE_LOCAL.as_raw()
        | vk::MemoryPropertyFlags::HOST_CACHED.as_raw(),
);

/// The copy path `requested` resolves to on this device: `Direct` or `Staging`.
pub fn resolve_copy_mode(report: &super::DeviceReport, requested: CopyMode) -> CopyMode {
    match requested {
        CopyMode::Auto if report.has_memory_type(DIRECT_FAST) => CopyMode::Direct,
        CopyMode::Auto => CopyMode::Staging,
        other => other,
    }
}

/// Whether `requested` means in-place mode on this device. `auto`: when the device shares
/// the CPU's memory (a CPU or integrated device: in place costs no bus crossing, and
/// migrating would only copy RAM to RAM) and can import host memory. `on` without the
/// extension is an error naming it.
pub fn resolve_in_place(report: &super::DeviceReport, import: bool, requested: InPlaceMode) -> DeviceResult<bool> {
    use super::report::DeviceKind;
    match requested {
        InPlaceMode::Off => Ok(false),
        InPlaceMode::Auto => Ok(import && matches!(report.kind, DeviceKind::Cpu | DeviceKind::Integrated)),
        InPlaceMode::On if import => Ok(true),
        InPlaceMode::On => Err(DeviceError::MissingFeature {
            device: report.name.clone(),
            what: "VK_EXT_external_memory_host (needed by UNIMEM_IN_PLACE=on: kernels reading host memory in place); set UNIMEM_IN_PLACE=off or auto".into(),
        }),
    }
}

/// With `UNIMEM_IN_PLACE_ACCESS=auto`, in-place kernels reach a heap of up to this many
/// windows through the windows, a larger one at its addresses. An access through an address
/// pays for its bounds check on the chain of dependent loads, a switch over the windows pays
/// for every window bound: on lavapipe, a pointer chase of 8M steps took 13.6-14.8 ms with one
/// window, 15.2-16.4 with two, 18.5 with three (a switch of four), 32 with nine, 111 with
/// seventeen, and 16.9-17.6 ms at addresses whatever the heap's size (docs/PERFORMANCE.md).
pub const AUTO_WINDOWS: u64 = 2;

/// The in-place window size: the largest power of two within `max` (the bytes a
/// storage-buffer binding and one allocation can span), at least a block.
fn window_bytes(max: u64, block_size: usize) -> DeviceResult<u64> {
    let w = if max == 0 { 0 } else { 1u64 << (63 - max.leading_zeros()) };
    if w < block_size as u64 {
        return Err(DeviceError::Usage(format!(
            "in-place mode needs storage buffers of at least one block ({block_size} bytes), the device allows {max}; set UNIMEM_IN_PLACE=off"
        )));
    }
    Ok(w)
}

/// The `Buffer` objects, for dispatch. Protected by `VulkanBlockDevice::buffers`; the views
/// (`PageTable`, `DirtyBits`, `FaultBuffer`, frame base addresses) point into their mappings,
/// which never move and live until the engine is dropped.
struct Buffers {
    page_table: Buffer,
    dirty: Buffer,
    faults: Buffer,
    frames: Vec<Buffer>,
    /// In place: the in-place map, bound at the dirty words' binding (`pagetable.rs`).
    map: Option<Buffer>,
}

/// Device copies of blocks on a Vulkan device. See the module docs.
pub struct VulkanBlockDevice {
    device: Device,
    geometry: Geometry,
    layout: ControlLayout,
    /// `Direct` or `Staging`.
    mode: CopyMode,
    table: PageTable,
    dirty: DirtyBits,
    faults: FaultBuffer,
    /// Raw handle of each frame buffer (immutable).
    frame_handles: Box<[vk::Buffer]>,
    /// Start address of each frame buffer's mapping; empty on the staging path (immutable).
    frame_bases: Box<[usize]>,
    /// Free frames, owners and LRU order. Never held during a copy.
    pool: Mutex<FramePool>,
    /// The staging ring, on the staging path.
    staging: Option<Mutex<Staging>>,
    /// In-place mode: the managed heap imported in windows (`mirror.rs`); `None` otherwise.
    /// Held while a dispatch binds them (the launch lock serialises dispatches) and while
    /// they grow.
    windows: Option<Mutex<Windows>>,
    /// In place, how kernels reach the heap (`UNIMEM_IN_PLACE_ACCESS`).
    access: InPlaceAccess,
    /// Dropped last: everything above points into these buffers.
    buffers: Mutex<Buffers>,
}

impl std::fmt::Debug for VulkanBlockDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VulkanBlockDevice")
            .field("device", &self.device)
            .field("geometry", &self.geometry)
            .field("layout", &self.layout)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// Locks `m`, ignoring poisoning: every critical section leaves its data consistent before
/// anything that can panic (the structures' own assertions excepted, which abort the test).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Word view of a mapped control buffer.
fn words_of(buffer: &Buffer) -> Words {
    let ptr = buffer.mapped_ptr().expect("control buffers are mapped");
    // SAFETY: the mapping is at least 64-byte aligned and holds `len` bytes; the buffer lives
    // in `VulkanBlockDevice::buffers` as long as the engine, so as long as the view; the CPU
    // accesses control buffers only through these atomic views.
    unsafe { Words::new(ptr, (buffer.len() / 4) as usize) }
}

impl VulkanBlockDevice {
    /// Opens the default device (`UNIMEM_DEVICE`) with the configuration of the environment.
    pub fn open() -> DeviceResult<VulkanBlockDevice> {
        let config = MigrateConfig::from_env()?;
        VulkanBlockDevice::new(Device::open()?, config)
    }

    /// Builds the engine on `device`: allocates the frame buffers (fewer when device memory
    /// runs out, at least one), the control buffers and, on the staging path, the ring.
    pub fn new(device: Device, config: MigrateConfig) -> DeviceResult<VulkanBlockDevice> {
        let _internal = InternalScope::new();
        let report = device.report().clone();
        let bs = config.block_size;
        if !bs.is_power_of_two()
            || (bs as u64) < options::MIN_BLOCK_SIZE
            || bs as u64 > options::MAX_BLOCK_SIZE
        {
            return Err(DeviceError::Usage(format!(
                "block size {bs} is not a power of two from 4 KiB to 16 MiB"
            )));
        }
        let mode = resolve_copy_mode(&report, config.copy);
        let import = device.external_memory_host_enabled() && report.external_memory_host.is_some();
        let in_place = resolve_in_place(&report, import, config.in_place)?;
        let mut max_buffer = u64::from(report.max_storage_buffer_range);
        if report.max_memory_allocation_size != 0 {
            max_buffer = max_buffer.min(report.max_memory_allocation_size);
        }
        let pool_bytes = config
            .pool_bytes
            .unwrap_or_else(|| default_pool_bytes(&report))
            .min(u64::from(super::pagetable::MAX_FRAMES) * bs as u64);
        let mut geometry = Geometry::new(bs, pool_bytes, max_buffer, config.frames_per_buffer)
            .map_err(DeviceError::Usage)?;

        let max_entries = (u64::from(report.max_storage_buffer_range) / 4).min(u64::from(u32::MAX));
        let blocks = match config.blocks {
            Some(n) => u64::from(n),
            None => {
                crate::alloc::init();
                (crate::alloc::managed_range().1 / bs) as u64
            }
        };
        if blocks == 0 {
            return Err(DeviceError::Usage(
                "the page table would cover no block (the managed range is empty)".into(),
            ));
        }
        let blocks = blocks.min(max_entries) as u32;

        let shared = &device.shared;
        let frame_placement = match mode {
            CopyMode::Staging => Placement {
                required: if report.has_memory_type(vk::MemoryPropertyFlags::DEVICE_LOCAL) {
                    vk::MemoryPropertyFlags::DEVICE_LOCAL
                } else {
                    vk::MemoryPropertyFlags::empty()
                },
                preferred: vk::MemoryPropertyFlags::empty(),
                mapped: false,
                zeroed: false,
                purpose: "device frames",
            },
            _ => Placement {
                required: HOST_MAPPABLE,
                preferred: vk::MemoryPropertyFlags::DEVICE_LOCAL
                    | vk::MemoryPropertyFlags::HOST_CACHED,
                mapped: true,
                zeroed: false,
                purpose: "host-visible device frames",
            },
        };
        let mut frames = Vec::with_capacity(geometry.buffers());
        for i in 0..geometry.buffers() {
            // SAFETY: `Backing::Allocate` has no caller obligations.
            match unsafe {
                Buffer::create(
                    shared,
                    geometry.buffer_bytes(i),
                    frame_placement,
                    Backing::Allocate,
                )
            } {
                Ok(b) => frames.push(b),
                Err(
                    DeviceError::OutOfDeviceMemory { .. } | DeviceError::OutOfHostMemory { .. },
                ) if i > 0 => {
                    geometry = geometry.truncated(i); // a smaller pool is still a pool
                    break;
                }
                Err(e) => return Err(e),
            }
        }

        let layout = ControlLayout {
            blocks,
            frames: geometry.frames,
            fault_capacity: config.fault_capacity.max(1),
        };
        let control = |bytes: u64, purpose| {
            let placement = Placement {
                required: HOST_MAPPABLE,
                preferred: vk::MemoryPropertyFlags::DEVICE_LOCAL
                    | vk::MemoryPropertyFlags::HOST_CACHED,
                mapped: true,
                zeroed: false,
                purpose,
            };
            // SAFETY: `Backing::Allocate` has no caller obligations.
            unsafe { Buffer::create(shared, bytes.max(4), placement, Backing::Allocate) }
        };
        let page_table = control(layout.page_table_bytes(), "the device page table")?;
        let dirty = control(layout.dirty_words() as u64 * 4, "the dirty words")?;
        let faults = control(layout.fault_words() as u64 * 4, "the fault buffer")?;
        let staging = match mode {
            CopyMode::Staging => Some(Mutex::new(Staging::new(
                shared,
                config.staging_bytes.min(geometry.pool_bytes()),
                bs,
            )?)),
            _ => None,
        };

        let map = match in_place {
            true => Some(control(map_words(blocks) as u64 * 4, "the in-place map")?),
            false => None,
        };
        let table = PageTable::new(words_of(&page_table), map.as_ref().map(words_of));
        let dirty_bits = DirtyBits::new(words_of(&dirty));
        let fault_buffer = FaultBuffer::new(words_of(&faults), layout);
        let frame_handles = frames.iter().map(|b| b.raw()).collect();
        let frame_bases = frames
            .iter()
            .filter_map(|b| b.mapped_ptr().map(|p| p.as_ptr() as usize))
            .collect();
        let windows = if in_place {
            Some(Mutex::new(Windows::new(crate::alloc::managed_range().0, window_bytes(max_buffer, bs)?)))
        } else {
            None
        };
        Ok(VulkanBlockDevice {
            windows,
            access: config.in_place_access,
            geometry,
            layout,
            mode,
            table,
            dirty: dirty_bits,
            faults: fault_buffer,
            frame_handles,
            frame_bases,
            pool: Mutex::new(FramePool::with_buffers(geometry.frames, geometry.frames_per_buffer)),
            staging,
            buffers: Mutex::new(Buffers {
                page_table,
                dirty,
                faults,
                frames,
                map,
            }),
            device,
        })
    }

    /// The Vulkan device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The frame pool's shape.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// How many frame buffers, from the first, hold every frame in use (0 when none is).
    /// Frames are handed out lowest buffer first, so a kernel dispatched now needs only these
    /// buffers bound; one that makes a block resident meanwhile may put it in the next.
    pub fn buffers_in_use(&self) -> usize {
        lock(&self.pool).buffers_in_use()
    }

    /// True in in-place mode: kernels read and write the managed heap's own pages through
    /// [`VulkanBlockDevice::windows`]; blocks are mapped, never uploaded.
    pub fn in_place(&self) -> bool {
        self.windows.is_some()
    }

    /// In-place mode: the bytes of heap each window covers.
    pub fn window_bytes(&self) -> Option<u64> {
        self.windows.as_ref().map(|w| lock(w).window_bytes())
    }

    /// In-place mode: whether kernels reach the heap at its addresses (through physical
    /// pointers, `kernel/addresses.rs`) rather than through windows bound as storage buffers:
    /// `UNIMEM_IN_PLACE_ACCESS`, and with `auto`, whether the committed heap needs more than
    /// [`AUTO_WINDOWS`] windows and the device's address of every window imported so far is
    /// the window's host address. `false` in migration mode.
    pub fn in_place_addressed(&self) -> bool {
        let Some(w) = &self.windows else { return false };
        match self.access {
            InPlaceAccess::Windows => false,
            InPlaceAccess::Addresses => true,
            InPlaceAccess::Auto => {
                let w = lock(w);
                let big = crate::alloc::managed_committed() as u64 > AUTO_WINDOWS * w.window_bytes();
                big && w.addressed() == w.covered()
            }
        }
    }

    /// In-place mode with addresses: the bytes of heap, from its start, a dispatch may reach
    /// through its addresses (imported, device address = host address), from `windows`,
    /// the guard [`VulkanBlockDevice::windows`] returned. With `UNIMEM_IN_PLACE_ACCESS=addresses`,
    /// a window whose device address differs is an error.
    pub fn addressed_bytes(&self, windows: &Windows) -> DeviceResult<usize> {
        if self.access == InPlaceAccess::Addresses && windows.addressed() < windows.covered() {
            return Err(DeviceError::Usage(format!(
                "UNIMEM_IN_PLACE_ACCESS=addresses: {} gives the host memory it imports device addresses other than its host addresses (from offset {:#x} of the heap), so kernels cannot use host pointers as device addresses; set UNIMEM_IN_PLACE_ACCESS=auto or windows",
                self.device.report().name,
                windows.addressed()
            )));
        }
        Ok(windows.addressed())
    }

    /// In-place mode: imports the managed heap committed so far (`mirror.rs`) and returns
    /// the windows, locked, for a dispatch to bind. `None` in migration mode.
    ///
    /// Callers hold the launch lock: no kernel runs while a window is replaced.
    pub fn windows(&self) -> DeviceResult<Option<MutexGuard<'_, Windows>>> {
        let Some(w) = &self.windows else { return Ok(None) };
        let mut w = lock(w);
        let committed = crate::alloc::managed_committed();
        if w.covered() < committed {
            let _internal = InternalScope::new();
            // SAFETY: the allocator keeps [base, base + committed) mapped read-write for the
            // life of the process (it never decommits), and the caller holds the launch lock.
            unsafe { w.ensure(&self.device, committed) }?;
        }
        Ok(Some(w))
    }

    /// The control buffers' sizes.
    pub fn layout(&self) -> ControlLayout {
        self.layout
    }

    /// The copy path in use: `Direct` or `Staging`.
    pub fn copy_mode(&self) -> CopyMode {
        self.mode
    }

    /// The layout as WGSL constants (see [`wgsl_constants`]), and in in-place mode the
    /// window size (`UNIMEM_WINDOW_SHIFT`).
    pub fn wgsl_constants(&self) -> String {
        let mut s = wgsl_constants(&self.geometry, &self.layout);
        if let Some(w) = &self.windows {
            s.push_str(&format!("const UNIMEM_WINDOW_SHIFT: u32 = {}u;\n", lock(w).window_bytes().trailing_zeros()));
            let uniform = map_is_uniform(self.layout.blocks, self.device.report().max_uniform_buffer_range);
            s.push_str(&wgsl_in_place_map(self.layout.blocks, uniform));
        }
        s
    }

    /// What kernels see in the device page table for `block` (0: absent).
    pub fn device_entry(&self, block: BlockId) -> u32 {
        if block < self.layout.blocks {
            self.table.device_entry(block)
        } else {
            0
        }
    }

    /// The frame holding `block`'s published device copy.
    pub fn frame_of(&self, block: BlockId) -> Option<FrameId> {
        super::pagetable::pte_frame(self.table.entry(block))
    }

    /// Makes the resident ones of `blocks` the most recently used (kernel launches call this
    /// for the blocks they use).
    pub fn touch(&self, blocks: &[BlockId]) {
        let mut pool = lock(&self.pool);
        for &b in blocks {
            if let Some(f) = self.frame_of(b) {
                pool.touch(f);
            }
        }
    }

    /// Allows (`true`, the default after upload) or forbids kernel stores to the resident ones
    /// of `blocks` ([`PTE_WRITABLE`]).
    pub fn set_writable(&self, blocks: &[BlockId], writable: bool) {
        let _pool = lock(&self.pool); // serialises with discard
        for &b in blocks {
            let e = self.table.entry(b);
            if e != 0 {
                let e = if writable {
                    e | PTE_WRITABLE
                } else {
                    e & !PTE_WRITABLE
                };
                self.table.publish(b, e);
            }
        }
    }

    /// Reads and resets the fault buffer (call between dispatches).
    pub fn take_faults(&self) -> FaultReport {
        let _buffers = lock(&self.buffers); // no dispatch is running
        let _internal = InternalScope::new();
        self.faults.take()
    }

    /// Runs `pipeline` with the engine's buffers bound by the binding convention of
    /// `pagetable.rs` (page table at 0, dirty bitmap at 1 or in place the in-place map, fault
    /// buffer at 2, frame buffers from 3) and `args[i]` at binding `3 + frame buffers + i`. Bindings the kernel does not
    /// use are skipped. Waits for completion.
    pub fn dispatch(
        &self,
        pipeline: &ComputePipeline,
        args: &mut [&mut Buffer],
        immediates: &[u8],
        groups: [u32; 3],
    ) -> DeviceResult<()> {
        let _internal = InternalScope::new();
        let mut buffers = lock(&self.buffers);
        let Buffers {
            page_table,
            dirty,
            faults,
            frames,
            map,
        } = &mut *buffers;
        let first_arg = BINDING_FRAMES as usize + frames.len();
        let at_dirty = map.as_mut().unwrap_or(dirty);
        let mut own: Vec<Option<&mut Buffer>> = [page_table, at_dirty, faults]
            .into_iter()
            .chain(frames.iter_mut())
            .map(Some)
            .collect();
        let mut user: Vec<Option<&mut Buffer>> = args.iter_mut().map(|b| Some(&mut **b)).collect();
        let mut bound = Vec::with_capacity(pipeline.bindings().len());
        for binding in pipeline.bindings() {
            let n = binding.binding as usize;
            let slot = if n < first_arg {
                own.get_mut(n)
            } else {
                user.get_mut(n - first_arg)
            };
            match slot.and_then(Option::take) {
                Some(b) => bound.push(b),
                None => {
                    return Err(DeviceError::Usage(format!(
                        "{} uses @binding({n}), but the engine binds {first_arg} buffers of its \
                         own and {} argument buffers were passed (argument i is at binding {first_arg} + i)",
                        pipeline.name(),
                        args.len()
                    )))
                }
            }
        }
        self.device
            .dispatch(pipeline, &mut bound, immediates, groups)
    }

    /// Fails fast once the device is lost or hung.
    fn alive(&self, what: &'static str) -> Result<(), BackendError> {
        if self.device.is_lost() {
            return Err(DeviceError::DeviceLost { call: what }.into());
        }
        Ok(())
    }

    fn check_ids(
        &self,
        ids: impl Iterator<Item = BlockId>,
        what: &str,
    ) -> Result<(), BackendError> {
        for b in ids {
            if b >= self.layout.blocks {
                return Err(DeviceError::Usage(format!(
                    "{what} of block {b}: the page table covers blocks 0..{} (the managed range); \
                     this is a bug in the caller",
                    self.layout.blocks
                ))
                .into());
            }
        }
        Ok(())
    }

    /// The mapped address of frame `f` (direct path).
    fn frame_ptr(&self, f: FrameId) -> *mut u8 {
        let (buffer, offset) = self.geometry.locate(f);
        (self.frame_bases[buffer] + offset as usize) as *mut u8
    }

    /// The `(buffer, offset)` of frame `f` for a staging transfer.
    fn transfer<P>(&self, host: P, f: FrameId) -> (usize, Transfer<P>) {
        let (buffer, offset) = self.geometry.locate(f);
        let t = Transfer {
            host,
            buffer: self.frame_handles[buffer],
            offset,
        };
        (buffer, t)
    }

    /// Gives every block of the batch without a frame a frame (marked filling), all or
    /// nothing, and makes the batch the most recently used.
    fn reserve(&self, blocks: &[(BlockId, *const u8)]) -> Result<(), BackendError> {
        let mut pool = lock(&self.pool);
        let mut fresh = Vec::new();
        for &(b, _) in blocks {
            if self.table.frame_any(b).is_some() {
                continue;
            }
            match pool.alloc(b) {
                Some(f) => {
                    self.table.reserve(b, f);
                    fresh.push(b);
                }
                None => {
                    let free = pool.free_frames() + fresh.len();
                    self.release_locked(&mut pool, fresh.iter().copied());
                    let mut missing: Vec<BlockId> = blocks
                        .iter()
                        .map(|&(b, _)| b)
                        .filter(|&b| self.table.frame_any(b).is_none())
                        .collect();
                    missing.sort_unstable();
                    missing.dedup();
                    return Err(BackendError::NoFrames {
                        needed: missing.len(),
                        free,
                    });
                }
            }
        }
        for &(b, _) in blocks {
            let f = self.table.frame_any(b).expect("reserved above");
            pool.touch(f);
        }
        Ok(())
    }

    /// Frees the frames of `blocks` (those that have one) and clears their entries. Caller
    /// holds the pool lock. Allocation-free. Frees in reverse order, so that each buffer's
    /// free stack hands its frames out again in their old order (a batch discarded and
    /// re-uploaded gets ascending frames again, lowest buffer first: sequential copies,
    /// mergeable staging regions).
    fn release_locked(
        &self,
        pool: &mut FramePool,
        blocks: impl DoubleEndedIterator<Item = BlockId>,
    ) {
        for b in blocks.rev() {
            if b >= self.layout.blocks {
                continue;
            }
            if let Some(f) = self.table.frame_any(b) {
                pool.release(f);
                self.dirty.clear(f);
                self.table.clear(b);
            } else if self.table.entry(b) & PTE_IN_PLACE != 0 {
                self.table.clear(b);
            }
        }
    }

    /// Moves the batch's bytes into its (reserved) frames.
    ///
    /// # Safety
    /// `upload`'s contract.
    unsafe fn copy_in(&self, blocks: &[(BlockId, *const u8)]) -> DeviceResult<()> {
        let bs = self.geometry.block_size;
        let frame = |b| self.table.frame_any(b).expect("reserved");
        match &self.staging {
            None => {
                for &(b, src) in blocks {
                    // SAFETY: `src` is readable for a block (caller); the frame is mapped,
                    // `bs` bytes long, and no one else writes it (the caller owns the block).
                    unsafe { std::ptr::copy_nonoverlapping(src, self.frame_ptr(frame(b)), bs) };
                }
                Ok(())
            }
            Some(staging) => {
                let mut transfers: Vec<_> = blocks
                    .iter()
                    .map(|&(b, src)| self.transfer(src, frame(b)))
                    .collect();
                transfers.sort_by_key(|t| t.0); // stable: one vkCmdCopyBuffer per frame buffer
                let transfers: Vec<_> = transfers.into_iter().map(|t| t.1).collect();
                // SAFETY: `upload`'s contract; the frames belong to this engine's pool.
                unsafe { lock(staging).upload(&transfers) }
            }
        }
    }

    /// Checks the whole structure (expensive: O(frames + blocks)); panics with the first
    /// violation. The frame pool's conservation law, and: a block's host entry names frame
    /// `f` if and only if frame `f`'s owner is that block; the device entry equals the host
    /// entry for every published block and is 0 for every other. Call it when no operation
    /// runs (tests).
    pub fn validate(&self) {
        let pool = lock(&self.pool);
        pool.validate();
        for f in 0..self.geometry.frames {
            if let Some(b) = pool.owner(f) {
                assert_eq!(
                    self.table.frame_any(b),
                    Some(f),
                    "frame {f} owned by block {b}"
                );
            }
        }
        for b in 0..self.layout.blocks {
            let host = self.table.entry(b);
            assert_eq!(
                self.table.device_entry(b),
                host,
                "device entry of block {b}"
            );
            if let Some(f) = self.table.frame_any(b) {
                assert_eq!(pool.owner(f), Some(b), "block {b} names frame {f}");
            }
        }
    }

    /// Blocks one staging submission carries (`None` on the direct path).
    pub fn staging_batch(&self) -> Option<usize> {
        self.staging
            .as_ref()
            .map(|s| lock(s).blocks_per_submission())
    }
}

impl BlockDevice for VulkanBlockDevice {
    fn block_size(&self) -> usize {
        self.geometry.block_size
    }

    fn capacity(&self) -> usize {
        self.geometry.frames as usize
    }

    fn free_frames(&self) -> usize {
        lock(&self.pool).free_frames()
    }

    unsafe fn upload(&self, blocks: &[(BlockId, *const u8)]) -> Result<(), BackendError> {
        self.alive("block upload (refused: the device was lost or hung earlier)")?;
        self.check_ids(blocks.iter().map(|b| b.0), "upload")?;
        let _internal = InternalScope::new();
        self.reserve(blocks)?;
        // SAFETY: the caller's contract; every block has a frame now.
        if let Err(e) = unsafe { self.copy_in(blocks) } {
            // Every frame of the batch may hold a partial copy: drop them all (the host holds
            // valid data for every block it uploads, so nothing is lost).
            self.release_locked(&mut lock(&self.pool), blocks.iter().map(|b| b.0));
            return Err(e.into());
        }
        for &(b, _) in blocks {
            let f = self.table.frame_any(b).expect("reserved");
            self.dirty.clear(f); // the device copy now equals the host's
            self.table.finish_fill(b);
        }
        Ok(())
    }

    unsafe fn download(&self, blocks: &[(BlockId, *mut u8)]) -> Result<(), BackendError> {
        self.alive("block download (refused: the device was lost or hung earlier)")?;
        self.check_ids(blocks.iter().map(|b| b.0), "download")?;
        let _internal = InternalScope::new();
        let frame = |b| {
            self.frame_of(b).ok_or_else(|| {
                DeviceError::Usage(format!(
                    "download of block {b}, which has no device copy; this is a bug in the caller"
                ))
            })
        };
        let bs = self.geometry.block_size;
        match &self.staging {
            None => {
                for &(b, dst) in blocks {
                    let src = self.frame_ptr(frame(b)?);
                    // SAFETY: `dst` is writable for a block (caller); the frame is mapped and
                    // `bs` bytes long; the caller owns the block, so no upload writes it.
                    unsafe { std::ptr::copy_nonoverlapping(src, dst, bs) };
                }
                Ok(())
            }
            Some(staging) => {
                let mut transfers = Vec::with_capacity(blocks.len());
                for &(b, dst) in blocks {
                    transfers.push(self.transfer(dst, frame(b)?));
                }
                transfers.sort_by_key(|t| t.0);
                let transfers: Vec<_> = transfers.into_iter().map(|t| t.1).collect();
                // SAFETY: the caller's contract; the frames belong to this engine's pool.
                unsafe { lock(staging).download(&transfers) }.map_err(Into::into)
            }
        }
    }

    fn host_view(&self, block: BlockId) -> Option<*const u8> {
        // Lock-free: an atomic flag, an atomic load of the mirror, arithmetic on immutable
        // tables. No allocation, no driver call.
        if self.frame_bases.is_empty() || self.device.is_lost() {
            return None;
        }
        self.frame_of(block).map(|f| self.frame_ptr(f) as *const u8)
    }

    fn is_resident(&self, block: BlockId) -> bool {
        self.table.entry(block) != 0
    }

    fn discard(&self, blocks: &[BlockId]) {
        // No allocation: coherence may call this from the allocator's free hook.
        let mut pool = lock(&self.pool);
        self.release_locked(&mut pool, blocks.iter().copied());
    }

    fn eviction_candidates(&self, n: usize) -> Vec<BlockId> {
        let _internal = InternalScope::new();
        let pool = lock(&self.pool);
        pool.lru()
            .filter_map(|f| pool.owner(f))
            .filter(|&b| !self.table.is_filling(b))
            .take(n)
            .collect()
    }

    fn in_place(&self) -> bool {
        VulkanBlockDevice::in_place(self)
    }

    fn map_in_place(&self, blocks: &[BlockId]) -> Result<(), BackendError> {
        if self.windows.is_none() {
            return Err(DeviceError::Usage("map_in_place outside in-place mode".into()).into());
        }
        self.alive("map_in_place")?;
        let _pool = lock(&self.pool); // serialises with discard and set_writable
        for &b in blocks {
            if b < self.layout.blocks {
                self.table.publish(b, PTE_IN_PLACE | PTE_WRITABLE);
            }
        }
        Ok(())
    }

    fn take_dirty(&self) -> Vec<BlockId> {
        if self.in_place() {
            // In place kernels mark nothing (the host pages are the only copy), and scanning
            // a word per frame of the unused pool cost ~0.1x of an empty launch.
            return Vec::new();
        }
        let _internal = InternalScope::new();
        let pool = lock(&self.pool);
        let mut out = Vec::new();
        self.dirty.take(|f| out.extend(pool.owner(f)));
        out
    }
}
