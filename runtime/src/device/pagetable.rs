//! The device page table, the dirty bitmap and the fault buffer: their exact layout in device
//! memory (the contract with the WGSL accessor prelude) and the host-side operations on them.
//! No Vulkan here: `migrate.rs` allocates the three storage buffers, maps them, and hands
//! their mappings to the views below (unit tests hand them plain memory instead).
//!
//! # Binding convention
//!
//! A kernel launched through `VulkanBlockDevice::dispatch` sees, in `@group(0)`:
//!
//! | binding | buffer | WGSL declaration |
//! |---|---|---|
//! | 0 | page table | `var<storage, read> unimem_pt: array<u32>` |
//! | 1 | dirty words | `var<storage, read_write> unimem_dirty: array<u32>` |
//! | 1 | in place instead: the in-place map | `var<uniform> unimem_map: array<vec4<u32>, MAP_VEC4>` (or storage, see below) |
//! | 2 | fault buffer | `var<storage, read_write> unimem_faults: array<atomic<u32>>` |
//! | 3 ..= 2+F | frame buffers 0..F | `var<storage, read_write> unimem_frames_i: array<u32>` |
//! | 3+F .. | the launch's own buffers | |
//!
//! `F` is the number of frame buffers ([`super::pool::Geometry::buffers`]). A kernel may leave
//! any of them out (bindings are matched by number). [`wgsl_constants`] writes the numbers
//! below as WGSL `const`s.
//!
//! # Page table (binding 0)
//!
//! One `u32` per block of the managed range: entry `b` describes the block at
//! `managed_base + b * block_size`. Written only by the runtime (kernels read it).
//!
//! - bits 0..=27 ([`PTE_FRAME_MASK`]): `frame + 1`; **0 means the block has no device copy**
//!   (an access must record a fault);
//! - bit 28 ([`PTE_WRITABLE`]): stores are allowed (set on upload; cleared by
//!   `set_writable(.., false)`; a store to a resident block without it is an error kind
//!   [`KERNEL_ERROR_READ_ONLY`]);
//! - bit 29 ([`PTE_IN_PLACE`]): in-place mode, the block is mapped to its own host pages
//!   (frame bits 0; kernels read the in-place map below instead of this entry);
//! - bits 30..=31: zero (reserved).
//!
//! Frame `f` lives in frame buffer `f >> FRAME_BUFFER_SHIFT` at byte offset
//! `(f & (FRAMES_PER_BUFFER - 1)) * BLOCK_SIZE`, so the word holding byte `o` of block `b` is
//! word `((f & (FRAMES_PER_BUFFER - 1)) << (BLOCK_SHIFT - 2)) + (o >> 2)` of that buffer.
//!
//! # In-place map (binding 1 in in-place mode)
//!
//! In place, kernels need only know whether a block is mapped (every in-place mapping is
//! writable): bit `b % 32` of word `b / 32` is set exactly when block `b`'s entry has
//! [`PTE_IN_PLACE`] (kept by `publish` and `clear`). `MAP_VEC4` vec4s of words; declared as
//! a uniform buffer when that fits `maxUniformBufferRange` ([`map_is_uniform`]), since a
//! uniform load costs lavapipe a gather where a storage load is a loop over the lanes, else
//! as `var<storage, read> unimem_map: array<u32>`. The dirty words are not needed in place
//! (the host pages are the only copy), so the map takes their binding.
//!
//! # Dirty words (binding 1)
//!
//! One `u32` per **frame**: nonzero when a kernel stored to the frame (like
//! `hmm_pte_set_dirty()`). A kernel that stores to a block writes 1 to its frame's word with a
//! plain store when it reads 0 there: every writer writes the same value, so no atomic is
//! needed, and after the first store the word is only read (an `atomicOr` on a shared bitmap
//! word cost ~11 ns per storing invocation on lavapipe, which runs atomics lane by lane). The
//! runtime clears a frame's word when it gives the frame a new block or refills it by upload,
//! and `take_dirty` reads and clears all words, translating frames to blocks.
//!
//! # Fault buffer (binding 2)
//!
//! `u32` words. A header of [`FAULT_HEADER_WORDS`] words:
//!
//! | word | name | meaning |
//! |---|---|---|
//! | 0 | `COUNT` | faults appended this round (`atomicAdd`); may exceed `CAPACITY` |
//! | 1 | `CAPACITY` | entries in the list (written by the runtime) |
//! | 2 | `ENTRIES_AT` | word index of the entry list (written by the runtime) |
//! | 3 | `PENDING_AT` | word index of the pending bitmap (written by the runtime) |
//! | 4 | `ERROR_COUNT` | kernel errors this round (`atomicAdd`) |
//! | 5 | `ERROR_KIND` | first error's kind (`KERNEL_ERROR_*`), written by whoever took count 0 |
//! | 6, 7 | `ERROR_ADDR_LO/HI` | first error's 64-bit address |
//! | 8 | `ERROR_INVOCATION` | first error's global invocation index |
//! | 9..16 | | reserved, zero |
//!
//! then `CAPACITY` entries (block ids), then the pending bitmap: one bit per block of the page
//! table, set by the kernel that records the block so that each block is listed once per
//! round. Recording a fault for block `b` (the prelude's miss path):
//!
//! ```wgsl
//! let bit = 1u << (b & 31u);
//! let old = atomicOr(&unimem_faults[PENDING_AT + (b >> 5u)], bit);
//! if ((old & bit) == 0u) {
//!     let i = atomicAdd(&unimem_faults[COUNT], 1u);
//!     if (i < CAPACITY) { atomicStore(&unimem_faults[ENTRIES_AT + i], b); }
//! }
//! ```
//!
//! The runtime drains the buffer after the dispatch (`take_faults`): it reads the entries,
//! clears their pending bits (the whole bitmap when the list overflowed, so that the blocks
//! left out are recorded again on replay), and zeroes `COUNT` and the error words.

use std::fmt::Write as _;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use super::pool::{FrameId, Geometry};

/// Binding of the page table.
pub const BINDING_PAGE_TABLE: u32 = 0;
/// Binding of the dirty bitmap.
pub const BINDING_DIRTY: u32 = 1;
/// Binding of the fault buffer.
pub const BINDING_FAULTS: u32 = 2;
/// Binding of frame buffer 0; frame buffer `i` is at `BINDING_FRAMES + i`.
pub const BINDING_FRAMES: u32 = 3;

/// Page-table entry bits holding `frame + 1` (0: no device copy).
pub const PTE_FRAME_MASK: u32 = (1 << 28) - 1;
/// Page-table entry bit: kernels may store to the block.
pub const PTE_WRITABLE: u32 = 1 << 28;
/// Page-table entry bit: the block is mapped in place, to its own host pages, which kernels
/// reach through the imported windows of `mirror.rs` (frame bits 0).
pub const PTE_IN_PLACE: u32 = 1 << 29;
/// The most frames a page table can address.
pub const MAX_FRAMES: u32 = PTE_FRAME_MASK - 1;

/// Host-mirror-only bit: a frame is reserved for the block but the upload has not finished
/// (never written to the device page table).
const HOST_FILLING: u32 = 1 << 31;

/// Fault buffer header words (see the module docs).
pub const FAULT_COUNT: usize = 0;
/// Word holding the entry list's capacity.
pub const FAULT_CAPACITY: usize = 1;
/// Word holding the word index of the entry list.
pub const FAULT_ENTRIES_AT: usize = 2;
/// Word holding the word index of the pending bitmap.
pub const FAULT_PENDING_AT: usize = 3;
/// Word counting kernel errors.
pub const FAULT_ERROR_COUNT: usize = 4;
/// Word holding the first error's kind.
pub const FAULT_ERROR_KIND: usize = 5;
/// Word holding the low half of the first error's address.
pub const FAULT_ERROR_ADDR_LO: usize = 6;
/// Word holding the high half of the first error's address.
pub const FAULT_ERROR_ADDR_HI: usize = 7;
/// Word holding the first error's global invocation index.
pub const FAULT_ERROR_INVOCATION: usize = 8;
/// Words of the fault buffer header.
pub const FAULT_HEADER_WORDS: usize = 16;

/// Kernel error kind: a pointer outside the managed range.
pub const KERNEL_ERROR_OUT_OF_RANGE: u32 = 1;
/// Kernel error kind: a store to a block whose entry lacks [`PTE_WRITABLE`].
pub const KERNEL_ERROR_READ_ONLY: u32 = 2;

/// The page-table entry for a block in frame `f`.
pub const fn pte(f: FrameId, writable: bool) -> u32 {
    debug_assert!(f < MAX_FRAMES);
    (f + 1) | if writable { PTE_WRITABLE } else { 0 }
}

/// The frame an entry points at, if any.
pub const fn pte_frame(entry: u32) -> Option<FrameId> {
    match entry & PTE_FRAME_MASK {
        0 => None,
        n => Some(n - 1),
    }
}

/// Words of the in-place map for `blocks` blocks: one bit each, in whole vec4s.
pub fn map_words(blocks: u32) -> usize {
    (blocks as usize).div_ceil(128) * 4
}

/// Whether the in-place map for `blocks` blocks is declared as a uniform buffer: when it fits
/// `max_uniform_range` bytes.
pub fn map_is_uniform(blocks: u32, max_uniform_range: u32) -> bool {
    (map_words(blocks) * 4) as u64 <= u64::from(max_uniform_range)
}

/// The WGSL declaration of the in-place map (binding 1) for `blocks` blocks, as a uniform
/// buffer or a storage buffer, and `unimem_map_word(w)`, its word `w`.
pub fn wgsl_in_place_map(blocks: u32, uniform: bool) -> String {
    if uniform {
        format!(
            "@group(0) @binding({BINDING_DIRTY}) var<uniform> unimem_map: array<vec4<u32>, {}>;\n\
             fn unimem_map_word(w: u32) -> u32 {{ return unimem_map[w >> 2u][w & 3u]; }}\n",
            map_words(blocks) / 4
        )
    } else {
        format!(
            "@group(0) @binding({BINDING_DIRTY}) var<storage, read> unimem_map: array<u32>;\n\
             fn unimem_map_word(w: u32) -> u32 {{ return unimem_map[w]; }}\n"
        )
    }
}

/// Sizes of the three control buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlLayout {
    /// Page-table entries (blocks of the managed range it covers).
    pub blocks: u32,
    /// Frames of the pool (words of the dirty array).
    pub frames: u32,
    /// Entries of the fault list.
    pub fault_capacity: u32,
}

impl ControlLayout {
    /// Bytes of the page table.
    pub fn page_table_bytes(&self) -> u64 {
        u64::from(self.blocks) * 4
    }
    /// Words of the dirty array.
    pub fn dirty_words(&self) -> usize {
        self.frames as usize
    }
    /// Word index of the fault list.
    pub fn fault_entries_at(&self) -> usize {
        FAULT_HEADER_WORDS
    }
    /// Word index of the pending bitmap.
    pub fn fault_pending_at(&self) -> usize {
        FAULT_HEADER_WORDS + self.fault_capacity as usize
    }
    /// Words of the fault buffer.
    pub fn fault_words(&self) -> usize {
        self.fault_pending_at() + (self.blocks as usize).div_ceil(32)
    }
}

/// `u32` words of mapped memory, accessed as atomics. Wraps only the raw pointer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Words {
    ptr: NonNull<AtomicU32>,
    len: usize,
}

// SAFETY: the words are only accessed through atomics, which any thread may use; the memory's
// owner keeps it mapped for the view's life (`Words::new`'s contract).
unsafe impl Send for Words {}
// SAFETY: as above; all access is atomic.
unsafe impl Sync for Words {}

impl Words {
    /// A view of `len` words at `ptr`.
    ///
    /// # Safety
    /// `ptr` is 4-byte aligned and addresses `len` words that stay valid (mapped) for as long
    /// as the view or a copy of it is used, and that are accessed only atomically (or by a
    /// device that the caller synchronises with) meanwhile.
    pub unsafe fn new(ptr: NonNull<u8>, len: usize) -> Words {
        debug_assert_eq!(ptr.as_ptr() as usize % 4, 0);
        Words {
            ptr: ptr.cast(),
            len,
        }
    }

    /// The number of words.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Word `i`.
    pub fn at(&self, i: usize) -> &AtomicU32 {
        assert!(i < self.len, "word {i} of {}", self.len);
        // SAFETY: in bounds; valid and atomically accessed per `new`'s contract.
        unsafe { &*self.ptr.as_ptr().add(i) }
    }

    /// Zeroes words `start..start + n`.
    pub fn zero(&self, start: usize, n: usize) {
        for i in start..start + n {
            self.at(i).store(0, Ordering::Relaxed);
        }
    }
}

/// The page table: a host mirror (what the CPU reads, lock-free and signal-safe) and the
/// device copy (what kernels read), written together.
///
/// Invariants: for every block, the device entry equals the host entry without
/// `HOST_FILLING`, except while `HOST_FILLING` is set, when the device entry is 0. Entries are
/// changed only under the pool lock of `migrate.rs`, or, for blocks the caller is uploading,
/// by that upload (coherence never runs two operations on one block at once); readers
/// (`host_view`, `is_resident`) take no lock.
#[derive(Debug)]
pub(crate) struct PageTable {
    host: Box<[AtomicU32]>,
    device: Words,
    /// In place: the in-place map (module docs), one bit per block, kept equal to "the device
    /// entry has `PTE_IN_PLACE`".
    map: Option<Words>,
}

impl PageTable {
    /// A page table over `device` (one word per block), cleared; in place with its map
    /// (at least one bit per block), cleared.
    pub fn new(device: Words, map: Option<Words>) -> PageTable {
        device.zero(0, device.len());
        if let Some(m) = &map {
            assert!(m.len() * 32 >= device.len(), "in-place map of {} words for {} blocks", m.len(), device.len());
            m.zero(0, m.len());
        }
        PageTable {
            host: (0..device.len()).map(|_| AtomicU32::new(0)).collect(),
            device,
            map,
        }
    }

    /// Sets `block`'s bit in the in-place map to whether `entry` maps it in place.
    fn set_mapped(&self, block: u32, entry: u32) {
        if let Some(m) = &self.map {
            let (word, bit) = (m.at(block as usize / 32), 1u32 << (block % 32));
            if entry & PTE_IN_PLACE != 0 {
                word.fetch_or(bit, Ordering::Relaxed);
            } else {
                word.fetch_and(!bit, Ordering::Relaxed);
            }
        }
    }

    /// The published entry of `block` (0 when out of range, absent or being filled).
    /// Lock-free and async-signal-safe.
    pub fn entry(&self, block: u32) -> u32 {
        match self.host.get(block as usize) {
            Some(e) => match e.load(Ordering::Acquire) {
                e if e & HOST_FILLING != 0 => 0,
                e => e,
            },
            None => 0,
        }
    }

    /// The frame of `block`, published or being filled.
    pub fn frame_any(&self, block: u32) -> Option<FrameId> {
        pte_frame(self.host[block as usize].load(Ordering::Acquire))
    }

    /// True while an upload fills `block`'s frame.
    pub fn is_filling(&self, block: u32) -> bool {
        self.host[block as usize].load(Ordering::Acquire) & HOST_FILLING != 0
    }

    /// Records that `block` owns frame `f` while its upload runs (device entry stays 0).
    pub fn reserve(&self, block: u32, f: FrameId) {
        self.host[block as usize].store(pte(f, true) | HOST_FILLING, Ordering::Release);
    }

    /// Publishes `entry` for `block` in the device table, then in the host mirror.
    pub fn publish(&self, block: u32, entry: u32) {
        debug_assert_eq!(entry & HOST_FILLING, 0);
        self.device
            .at(block as usize)
            .store(entry, Ordering::Relaxed);
        self.set_mapped(block, entry);
        self.host[block as usize].store(entry, Ordering::Release);
    }

    /// Ends `block`'s fill: publishes its entry (without the filling mark).
    pub fn finish_fill(&self, block: u32) {
        let e = self.host[block as usize].load(Ordering::Acquire) & !HOST_FILLING;
        debug_assert!(
            pte_frame(e).is_some(),
            "finish_fill of block {block} without a frame"
        );
        self.publish(block, e);
    }

    /// Marks `block` absent in both tables.
    pub fn clear(&self, block: u32) {
        self.device.at(block as usize).store(0, Ordering::Relaxed);
        self.set_mapped(block, 0);
        self.host[block as usize].store(0, Ordering::Release);
    }

    /// The device copy of `block`'s entry (what kernels see), for tests and checks.
    pub fn device_entry(&self, block: u32) -> u32 {
        self.device.at(block as usize).load(Ordering::Relaxed)
    }
}

/// The dirty words: one per frame, nonzero when a kernel stored to it (see the module docs).
#[derive(Debug)]
pub(crate) struct DirtyBits {
    words: Words,
}

impl DirtyBits {
    /// Dirty words over `words` (one per frame), cleared.
    pub fn new(words: Words) -> DirtyBits {
        words.zero(0, words.len());
        DirtyBits { words }
    }

    /// Clears frame `f`'s word.
    pub fn clear(&self, f: FrameId) {
        self.words.at(f as usize).store(0, Ordering::Relaxed);
    }

    /// Marks frame `f` (what a kernel does; for tests).
    #[cfg(test)]
    pub fn set(&self, f: FrameId) {
        self.words.at(f as usize).store(1, Ordering::Relaxed);
    }

    /// Clears every word, calling `each` with every frame that was marked, in frame order.
    pub fn take(&self, mut each: impl FnMut(FrameId)) {
        for f in 0..self.words.len() {
            let word = self.words.at(f);
            // Most words are clear: read before the (dearer) swap.
            if word.load(Ordering::Relaxed) != 0 && word.swap(0, Ordering::Relaxed) != 0 {
                each(f as u32);
            }
        }
    }
}

/// A kernel error recorded in the fault buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelError {
    /// `KERNEL_ERROR_*`.
    pub kind: u32,
    /// The offending 64-bit address.
    pub address: u64,
    /// The global invocation index that made the access.
    pub invocation: u32,
}

impl std::fmt::Display for KernelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            KERNEL_ERROR_OUT_OF_RANGE => "accessed an address outside the managed range",
            KERNEL_ERROR_READ_ONLY => "stored to a block mapped read-only",
            _ => "reported an unknown error kind",
        };
        write!(
            f,
            "invocation {} {what} (address {:#x}, kind {})",
            self.invocation, self.address, self.kind
        )
    }
}

/// What the kernels of one round recorded in the fault buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultReport {
    /// Blocks that faulted, each once, in the order recorded.
    pub blocks: Vec<u32>,
    /// Faults that did not fit in the list (their invocations fault again on replay).
    pub overflowed: u32,
    /// Kernel errors this round.
    pub errors: u32,
    /// The first of them.
    pub first_error: Option<KernelError>,
}

/// The fault buffer (see the module docs).
#[derive(Debug)]
pub(crate) struct FaultBuffer {
    words: Words,
    layout: ControlLayout,
}

impl FaultBuffer {
    /// A fault buffer over `words` (at least `layout.fault_words()` long), with its header.
    pub fn new(words: Words, layout: ControlLayout) -> FaultBuffer {
        assert!(words.len() >= layout.fault_words());
        words.zero(0, words.len());
        let at = |i| words.at(i);
        at(FAULT_CAPACITY).store(layout.fault_capacity, Ordering::Relaxed);
        at(FAULT_ENTRIES_AT).store(layout.fault_entries_at() as u32, Ordering::Relaxed);
        at(FAULT_PENDING_AT).store(layout.fault_pending_at() as u32, Ordering::Relaxed);
        FaultBuffer { words, layout }
    }

    /// Records a fault for `block` exactly as the prelude does (for tests).
    #[cfg(test)]
    pub fn record(&self, block: u32) {
        let bit = 1 << (block % 32);
        let pending = self
            .words
            .at(self.layout.fault_pending_at() + block as usize / 32);
        if pending.fetch_or(bit, Ordering::Relaxed) & bit == 0 {
            let i = self.words.at(FAULT_COUNT).fetch_add(1, Ordering::Relaxed);
            if i < self.layout.fault_capacity {
                self.words
                    .at(self.layout.fault_entries_at() + i as usize)
                    .store(block, Ordering::Relaxed);
            }
        }
    }

    /// Reads and resets what the last round recorded (see the module docs).
    pub fn take(&self) -> FaultReport {
        let w = &self.words;
        let count = w.at(FAULT_COUNT).load(Ordering::Relaxed);
        let listed = count.min(self.layout.fault_capacity) as usize;
        let entries = self.layout.fault_entries_at();
        let pending = self.layout.fault_pending_at();
        let mut blocks = Vec::with_capacity(listed);
        for i in 0..listed {
            let b = w.at(entries + i).load(Ordering::Relaxed);
            if b < self.layout.blocks {
                blocks.push(b);
            }
        }
        if count as usize > listed {
            w.zero(pending, self.layout.fault_words() - pending);
        } else {
            for &b in &blocks {
                w.at(pending + b as usize / 32)
                    .fetch_and(!(1 << (b % 32)), Ordering::Relaxed);
            }
        }
        let errors = w.at(FAULT_ERROR_COUNT).load(Ordering::Relaxed);
        let first_error = (errors > 0).then(|| KernelError {
            kind: w.at(FAULT_ERROR_KIND).load(Ordering::Relaxed),
            address: u64::from(w.at(FAULT_ERROR_ADDR_LO).load(Ordering::Relaxed))
                | u64::from(w.at(FAULT_ERROR_ADDR_HI).load(Ordering::Relaxed)) << 32,
            invocation: w.at(FAULT_ERROR_INVOCATION).load(Ordering::Relaxed),
        });
        w.at(FAULT_COUNT).store(0, Ordering::Relaxed);
        w.zero(
            FAULT_ERROR_COUNT,
            FAULT_ERROR_INVOCATION + 1 - FAULT_ERROR_COUNT,
        );
        FaultReport {
            blocks,
            overflowed: count - listed as u32,
            errors,
            first_error,
        }
    }
}

/// The layout as WGSL `const` declarations (`UNIMEM_*`), for kernels and the prelude.
pub fn wgsl_constants(geometry: &Geometry, layout: &ControlLayout) -> String {
    let mut s = String::new();
    let mut c = |name: &str, value: u64| {
        let _ = writeln!(s, "const UNIMEM_{name}: u32 = {value}u;");
    };
    c("BLOCK_SIZE", geometry.block_size as u64);
    c(
        "BLOCK_SHIFT",
        u64::from(geometry.block_size.trailing_zeros()),
    );
    c("BLOCKS", u64::from(layout.blocks));
    c("FRAMES", u64::from(geometry.frames));
    c("FRAMES_PER_BUFFER", u64::from(geometry.frames_per_buffer));
    c("FRAME_BUFFER_SHIFT", u64::from(geometry.buffer_shift()));
    c("FRAME_BUFFERS", geometry.buffers() as u64);
    c("PTE_FRAME_MASK", u64::from(PTE_FRAME_MASK));
    c("PTE_WRITABLE", u64::from(PTE_WRITABLE));
    c("PTE_IN_PLACE", u64::from(PTE_IN_PLACE));
    c("FAULT_COUNT", FAULT_COUNT as u64);
    c("FAULT_CAPACITY", u64::from(layout.fault_capacity));
    c("FAULT_ENTRIES_AT", layout.fault_entries_at() as u64);
    c("FAULT_PENDING_AT", layout.fault_pending_at() as u64);
    c("FAULT_ERROR_COUNT", FAULT_ERROR_COUNT as u64);
    c("FAULT_ERROR_KIND", FAULT_ERROR_KIND as u64);
    c("FAULT_ERROR_ADDR_LO", FAULT_ERROR_ADDR_LO as u64);
    c("FAULT_ERROR_ADDR_HI", FAULT_ERROR_ADDR_HI as u64);
    c("FAULT_ERROR_INVOCATION", FAULT_ERROR_INVOCATION as u64);
    c("ERROR_OUT_OF_RANGE", u64::from(KERNEL_ERROR_OUT_OF_RANGE));
    c("ERROR_READ_ONLY", u64::from(KERNEL_ERROR_READ_ONLY));
    c("BINDING_FRAMES", u64::from(BINDING_FRAMES));
    c(
        "FIRST_ARG_BINDING",
        u64::from(BINDING_FRAMES) + geometry.buffers() as u64,
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain memory standing in for a mapped buffer.
    fn memory(words: usize) -> (Vec<AtomicU32>, Words) {
        let v: Vec<AtomicU32> = (0..words).map(|_| AtomicU32::new(0xdead_beef)).collect();
        let ptr = NonNull::new(v.as_ptr() as *mut u8).unwrap();
        // SAFETY: `v` outlives every use of the view in these tests and is only accessed
        // atomically.
        let view = unsafe { Words::new(ptr, words) };
        (v, view)
    }

    #[test]
    fn entries_encode_frame_plus_one() {
        assert_eq!(pte(0, false), 1);
        assert_eq!(pte(41, true), 42 | PTE_WRITABLE);
        assert_eq!(pte_frame(0), None);
        assert_eq!(pte_frame(PTE_WRITABLE), None);
        assert_eq!(pte_frame(pte(7, true)), Some(7));
        assert_eq!(pte_frame(pte(MAX_FRAMES - 1, false)), Some(MAX_FRAMES - 1));
    }

    #[test]
    fn the_in_place_map_follows_the_entries() {
        let (_mem, words) = memory(300);
        let (_map_mem, map) = memory(map_words(300));
        let pt = PageTable::new(words, Some(map));
        let bit = |b: u32| pt.map.as_ref().unwrap().at(b as usize / 32).load(Ordering::Relaxed) >> (b % 32) & 1;
        assert!((0..300).all(|b| bit(b) == 0), "cleared at creation");
        for b in [0, 31, 32, 299] {
            pt.publish(b, PTE_IN_PLACE | PTE_WRITABLE);
        }
        assert!((0..300).all(|b| bit(b) == u32::from([0, 31, 32, 299].contains(&b))));
        pt.publish(31, pte(5, true)); // a frame: not in place
        pt.clear(299);
        assert_eq!((bit(0), bit(31), bit(32), bit(299)), (1, 0, 1, 0));
        assert_eq!(map_words(300), 12);
        assert!(map_is_uniform(1 << 16, 65536) && !map_is_uniform(1 << 20, 65536));
    }

    #[test]
    fn page_table_mirrors_and_hides_filling_entries() {
        let (_mem, words) = memory(64);
        let pt = PageTable::new(words, None);
        assert_eq!(pt.device_entry(3), 0, "cleared at creation");
        pt.reserve(3, 9);
        assert!(pt.is_filling(3));
        assert_eq!(pt.entry(3), 0, "a filling block is not visible");
        assert_eq!(pt.frame_any(3), Some(9));
        assert_eq!(pt.device_entry(3), 0);
        pt.finish_fill(3);
        assert!(!pt.is_filling(3));
        assert_eq!(pt.entry(3), pte(9, true));
        assert_eq!(pt.device_entry(3), pte(9, true));
        assert_eq!(pt.entry(64), 0, "out of range reads as absent");
        pt.clear(3);
        assert_eq!((pt.entry(3), pt.device_entry(3)), (0, 0));
    }

    #[test]
    fn dirty_bits_take_in_frame_order_and_clear() {
        let (_mem, words) = memory(96);
        let dirty = DirtyBits::new(words);
        for f in [70, 0, 33, 31, 95] {
            dirty.set(f);
        }
        dirty.clear(33);
        let mut got = Vec::new();
        dirty.take(|f| got.push(f));
        assert_eq!(got, vec![0, 31, 70, 95]);
        got.clear();
        dirty.take(|f| got.push(f));
        assert!(got.is_empty());
    }

    #[test]
    fn faults_are_listed_once_and_overflow_is_recovered() {
        let layout = ControlLayout {
            blocks: 100,
            frames: 8,
            fault_capacity: 4,
        };
        let (_mem, words) = memory(layout.fault_words());
        let faults = FaultBuffer::new(words, layout);
        assert_eq!(words.at(FAULT_CAPACITY).load(Ordering::Relaxed), 4);
        assert_eq!(words.at(FAULT_PENDING_AT).load(Ordering::Relaxed), 20);
        for b in [5, 99, 5, 5, 64, 99] {
            faults.record(b);
        }
        let r = faults.take();
        assert_eq!(r.blocks, vec![5, 99, 64]);
        assert_eq!((r.overflowed, r.errors, r.first_error), (0, 0, None));
        // Pending bits were cleared: the same blocks can fault again next round.
        for b in [1, 2, 3, 4, 5, 6, 5] {
            faults.record(b);
        }
        let r = faults.take();
        assert_eq!(r.blocks, vec![1, 2, 3, 4]);
        assert_eq!(r.overflowed, 2);
        // After an overflow every pending bit is clear, so 5 and 6 are recorded again.
        faults.record(6);
        faults.record(5);
        assert_eq!(faults.take().blocks, vec![6, 5]);
        assert_eq!(faults.take(), FaultReport::default());
    }

    #[test]
    fn kernel_errors_are_reported_and_reset() {
        let layout = ControlLayout {
            blocks: 32,
            frames: 1,
            fault_capacity: 2,
        };
        let (_mem, words) = memory(layout.fault_words());
        let faults = FaultBuffer::new(words, layout);
        words.at(FAULT_ERROR_COUNT).store(3, Ordering::Relaxed);
        words
            .at(FAULT_ERROR_KIND)
            .store(KERNEL_ERROR_OUT_OF_RANGE, Ordering::Relaxed);
        words
            .at(FAULT_ERROR_ADDR_LO)
            .store(0x1000, Ordering::Relaxed);
        words.at(FAULT_ERROR_ADDR_HI).store(0x7f, Ordering::Relaxed);
        words
            .at(FAULT_ERROR_INVOCATION)
            .store(12, Ordering::Relaxed);
        let r = faults.take();
        assert_eq!(r.errors, 3);
        let e = r.first_error.unwrap();
        assert_eq!(e.address, 0x7f_0000_1000);
        assert!(e.to_string().contains("outside the managed range"), "{e}");
        assert!(e.to_string().contains("invocation 12"), "{e}");
        assert_eq!(faults.take().errors, 0);
    }

    #[test]
    fn wgsl_constants_parse() {
        let g = Geometry::new(65536, 1 << 30, 128 << 20, None).unwrap();
        let layout = ControlLayout {
            blocks: 1 << 20,
            frames: g.frames,
            fault_capacity: 4096,
        };
        let text = wgsl_constants(&g, &layout);
        assert!(
            text.contains("const UNIMEM_BLOCK_SHIFT: u32 = 16u;"),
            "{text}"
        );
        assert!(
            text.contains("const UNIMEM_FIRST_ARG_BINDING: u32 = 11u;"),
            "{text}"
        );
        naga::front::wgsl::parse_str(&text).expect("valid WGSL");
    }
}
