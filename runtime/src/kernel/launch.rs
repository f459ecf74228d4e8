//! Kernels on shared pointers: [`Kernel`] (user WGSL on the prelude of `prelude.rs`, compiled
//! once and cached) and its launch protocol, the device-fault replay loop.
//!
//! # Launch protocol ([`Kernel::launch`])
//!
//! 1. Stale device copies are reaped; the allocations the pointer arguments point into, and
//!    the blocks earlier launches of this kernel faulted on, are made resident (`to_device`,
//!    read duplication: Host -> Shared), up to the pool's capacity. In place, where mapping
//!    copies nothing, every live block of the heap not mapped yet is mapped instead, so that
//!    a launch faults only on memory allocated while it runs, or freed memory.
//! 2. Round 0 dispatches all `n` invocations. An invocation that meets a block without a
//!    device copy, or errs (bad pointer, step limit, ...), stops and appends its id (with the
//!    error kind) to the output list, leaving the address in the spare list (see `prelude.rs`
//!    "Id buffer"). One whose private store or atomic log is full stops before that access
//!    and is *escalated* (flag in the output list): it moves to the spill queue (`spill.rs`)
//!    with the atomic results it saved. (In place effects are direct: no logs, no
//!    escalation.)
//! 3. Each later round dispatches the pending ordinary invocations, then a batch of the spill
//!    queue in a spill round (logs in a slot of the spill buffer) and the commit pass for
//!    the slots that completed.
//! 4. After each round: the dirty blocks become Device-owned (`Space::device_wrote`, so that
//!    evicting them later writes them back). An error, or a fault on a block holding no live
//!    allocation, ends the launch, naming the lowest failing invocation and its address
//!    (blocks without live allocations that spill rounds faulted on go on the poison list,
//!    which their next run checks, reporting the address); the other faulted blocks are
//!    migrated with a prefetch of the blocks that follow them. Migrating, an invocation that
//!    stopped on a fault is *parked* (`parking.rs`): kept off the id list, by the block it
//!    waits on, until a round migrates that block (the blocks waited on by the lowest ids
//!    first), so that a round runs the invocations whose block came and not all those
//!    pending. Once the chunk faults on a block it migrated before (evicted), its rounds are
//!    *paced* (`pacing.rs`): migrations are chosen by invocation, from the blocks each
//!    pending one faulted on so far, the parked ones return to the list, and those a paced
//!    round does not run wait in a host-side backlog instead of the id list.
//! 5. Bounded: a kernel error ends the launch. Two consecutive rounds that complete
//!    no invocation and fault on no new block (invocations evicting each other's blocks)
//!    switch to *solo* rounds: one invocation at a time (an escalated one first), one block
//!    migrated per round, no prefetch, the whole pool its own (the arguments' blocks stay
//!    pinned only in rounds of many), until one completes. An invocation that saved more
//!    atomic results in a round made progress, as one that faulted on a new block did. A solo invocation that still makes no progress after more
//!    rounds than the pool has frames needs more blocks at once than the pool holds:
//!    [`LaunchError::NoProgress`]. At most [`MAX_ROUNDS`] rounds.
//!
//! 6. A launch of more than [`CHUNK`] invocations runs them in chunks of `CHUNK` (of 2^22
//!    for kernels with logged atomics on lavapipe: `Kernel::chunk_len`), in order,
//!    each through steps 2-5 (the id lists, logs and reports inside a chunk use chunk-local
//!    ids; the user's entry gets the launch-wide id). An error ends the launch at its chunk.
//!
//! Launches are serialised (one fault buffer and dirty bitmap per engine). Everything the
//! runtime allocates here is in the internal heap.

use std::collections::HashSet;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::check;
use super::compile::{compile_wgsl_checked, CompileError};
use super::guard;
use super::objects;
use super::pacing::{self, Backlog, Pacer};
use super::parking::ParkingLot;
use super::places::{argument_text, outside_heap, past_the_end, word_pair};
use super::discover;
use super::prelude::{
    self, Round, Variant, ARGS_AT, ARGS_COUNT_AT, ARGS_LIVE_AT, ARGS_POISON_AT, OWN_STORAGE_BUFFERS, CTL_PENDING_COUNT, CTL_WORDS, ERROR_SITE_SHIFT, ESCALATE, ESCALATE_STORES, IDS_ENTRY_WORDS, ID_MASK, KIND_SHIFT, NO_BLOCK,
    NO_LIST, NO_SLOT, POISON_CAPACITY, SITE_SHIFT, SLOT_MASK,
};
use super::sites;
use super::spill::{Collected, Escalated, Spill, SpillError, MODE_COMMIT, MODE_NORMAL, MODE_SPILL};
use crate::advice;
use crate::api::{vulkan_runtime, Advice, Error};
use crate::coherence::backend::BlockDevice;
use crate::coherence::State as CoState;
use crate::coherence::Space;
use crate::device::pagetable::BINDING_FRAMES;
use crate::device::{Buffer, ComputePipeline, VulkanBlockDevice};
use std::sync::atomic::Ordering::Relaxed;
use unimem_alloc::InternalScope;

/// Most bytes of launch arguments (3968: the argument buffer, `prelude::ARGS_BYTES`, less its
/// header).
const MAX_ARGS_BYTES: usize = prelude::ARGS_BYTES - ARGS_AT * 4;
/// Rounds after which a launch gives up (in one chunk of [`CHUNK`] invocations).
pub const MAX_ROUNDS: u32 = 100_000;
/// Default accessor calls one invocation may make in one round ([`Kernel::set_max_steps`]).
pub const DEFAULT_MAX_STEPS: u32 = 1 << 24;
/// The default on lavapipe (llvmpipe), which runs at most 65535 loop iterations per shader
/// invocation and silently cuts loops short after that: a loop that accesses memory in each
/// iteration fails as a runaway here, clearly, before lavapipe would truncate it.
pub const LAVAPIPE_MAX_STEPS: u32 = 60_000;
/// Blocks after a faulted one that the prefetcher migrates with it (when they hold live data).
pub const PREFETCH_BLOCKS: usize = 7;
/// Most invocations dispatched as one chunk (two id lists of two-word entries for each must
/// fit one storage buffer of 128 MiB, lavapipe's `maxStorageBufferRange` and the least
/// Vulkan allows); a launch of more runs them chunk after chunk. Kernels whose atomics are
/// logged (migrating mode) use smaller chunks where their atomic log would not fit one
/// buffer: 2^22 at 128 MiB (`Kernel::chunk_len`).
pub const CHUNK: u32 = 1 << 23;
// Chunk-local ids fit their field of an id-list entry.
const _: () = assert!(CHUNK - 1 <= ID_MASK);

/// Why a launch failed. The runtime stays usable; blocks written by invocations that
/// completed keep their writes (they are Device-owned and come home on CPU access).
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// An invocation made a bad access or ran away.
    #[error("kernel `{kernel}`: invocation {invocation} {what}{place}; {errors} invocation(s) failed. Invocations that completed kept their stores; {left}")]
    Kernel {
        /// The kernel's entry function.
        kernel: String,
        /// The failing invocation with the lowest id (of those that failed in the round).
        invocation: u32,
        /// The address it accessed (0 for a runaway loop, which needs no access; for an
        /// argument it did not pass, the argument word's index).
        address: u64,
        /// `KERNEL_ERROR_*` kind.
        kind: u32,
        /// What happened, in words.
        what: &'static str,
        /// The address and where it is, then where in the kernel's source, for messages:
        /// ` (address 0x..., inside ...) at line N of its source (`...`)`; a runaway loop has
        /// no address, and names its loop (` in the loop at line N ...`). The line is missing
        /// past the kernel's 510th access or loop.
        place: String,
        /// Invocations that failed in that round.
        errors: u32,
        /// What the failed invocations left in memory (docs/MEMORY-MODEL.md, "Errors").
        left: &'static str,
    },
    /// An invocation running alone stopped making progress: it needs more blocks at once
    /// than the pool holds.
    #[error("kernel `{kernel}`: invocation {invocation} cannot complete: after round {round} it keeps faulting on blocks already migrated this launch (e.g. the block at {address:#x}), so it needs more memory at once than the device pool holds ({frames} blocks of {block_size} bytes). Raise UNIMEM_DEVICE_MEMORY, or split the invocation's work")]
    NoProgress {
        /// The kernel's entry function.
        kernel: String,
        /// An invocation still pending.
        invocation: u32,
        /// The round.
        round: u32,
        /// Address of a block it faulted on.
        address: usize,
        /// Frames of the pool.
        frames: usize,
        /// Bytes per block.
        block_size: usize,
    },
    /// The driver cut an invocation's loops short (lavapipe's loop budget).
    #[error("kernel `{kernel}`: invocation {invocation} (or one of the invocations the driver runs with it) ran more loop iterations than the driver allows: lavapipe runs at most 65535 loop iterations per batch of invocations (8 on 256-bit vectors; all their loops together) and silently cuts longer loops short, so the launch's results would be wrong. The loop guard (UNIMEM_LOOP_GUARD=on, the default) stops a long loop first and names its invocation, unless the step limit was raised past the budget or the batch's invocations ran long in different loops (the driver adds those up); split the work over more invocations. Invocations that completed kept their stores; those of this batch may be partly applied")]
    LoopBudget {
        /// The kernel's entry function.
        kernel: String,
        /// The invocation.
        invocation: u32,
    },
    /// The round limit was reached.
    #[error("kernel `{kernel}`: still {pending} invocation(s) pending (e.g. invocation {invocation}) after {rounds} rounds of its chunk; giving up")]
    TooManyRounds {
        /// The kernel's entry function.
        kernel: String,
        /// Invocations pending.
        pending: u32,
        /// One of them.
        invocation: u32,
        /// Rounds run.
        rounds: u32,
    },
    /// One invocation logged more stores or atomics than a replay may keep.
    #[error("kernel `{kernel}`: {detail}")]
    LogLimit {
        /// The kernel's entry function.
        kernel: String,
        /// Which invocation, and what to do.
        detail: SpillError,
    },
    /// Bad launch parameters.
    #[error("kernel `{kernel}`: {what}")]
    Usage {
        /// The kernel's entry function.
        kernel: String,
        /// What is wrong and what to do.
        what: String,
    },
}

/// What one launch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LaunchReport {
    /// Dispatch rounds: one per chunk plus the replay rounds.
    pub rounds: u32,
    /// Chunks the invocations ran in (each of up to [`CHUNK`] invocations; half that or less
    /// for kernels with logged atomics, see [`CHUNK`]).
    pub chunks: u32,
    /// Device faults (blocks, once per round).
    pub device_faults: u64,
    /// Invocations replayed, summed over rounds (spill rounds included).
    pub replayed: u64,
    /// Runs of invocations in spill rounds (restarted because their private store or atomic
    /// log overflowed; see `kernel/spill.rs`).
    pub escalated: u64,
    /// Blocks made resident before the first dispatch.
    pub prefetched_blocks: u64,
    /// Wall time of the launch.
    pub time: Duration,
    /// Of which: waiting for dispatches.
    pub dispatch_time: Duration,
    /// Of which: migrating (prefetch before the first round and faulted blocks between rounds).
    pub migrate_time: Duration,
}

/// Launch arguments: `u32` words, as the kernel reads them with `unimem_arg_u32(i)` /
/// `unimem_arg_u64(i)` / `unimem_arg_ptr(i)` (`i` is the word index, i.e. the byte offset
/// over 4, as in a C struct: 64-bit values are aligned to an even word). Before the launch,
/// every 64-bit value that points into a live allocation (a pointer added with [`Args::ptr`],
/// or any other) is taken for a pointer: its allocation is made resident, and the data it
/// reaches discovered (`discover.rs`).
#[derive(Clone, Debug, Default)]
pub struct Args {
    words: Vec<u32>,
}

impl Args {
    /// No arguments.
    pub fn new() -> Args {
        Args::default()
    }
    /// Appends a `u32` (one word).
    pub fn u32(mut self, v: u32) -> Args {
        self.words.push(v);
        self
    }
    /// Appends an `i32`.
    pub fn i32(self, v: i32) -> Args {
        self.u32(v as u32)
    }
    /// Appends an `f32`.
    pub fn f32(self, v: f32) -> Args {
        self.u32(v.to_bits())
    }
    /// Appends a `u64` at the next even word.
    pub fn u64(mut self, v: u64) -> Args {
        self.align_even();
        self.words.extend_from_slice(&[v as u32, (v >> 32) as u32]);
        self
    }
    /// Appends an `i64` at the next even word (`unimem_arg_u64(i)`, then `bitcast<i64>`).
    pub fn i64(self, v: i64) -> Args {
        self.u64(v as u64)
    }
    /// Appends an `f64` at the next even word (`bitcast<f64>(unimem_arg_u64(i))`).
    pub fn f64(self, v: f64) -> Args {
        self.u64(v.to_bits())
    }
    /// Pads to an even word, where a C struct puts a member aligned to 8.
    fn align_even(&mut self) {
        if self.words.len() % 2 == 1 {
            self.words.push(0);
        }
    }
    /// Appends a pointer to `r` (the address of its first byte) at the next even word; the
    /// allocation it points into is made resident before the launch.
    pub fn ptr<T: ?Sized>(self, r: &T) -> Args {
        self.raw_ptr(r as *const T as *const u8 as u64)
    }
    /// Appends a pointer to `r` that the kernel writes through (an output). Same as
    /// [`Args::ptr`], but takes `&mut` so the program states the write: the kernel's stores
    /// are there when the launch returns (launches are synchronous: in place they land in
    /// the host pages while it runs, migrating they come home when the CPU touches them), and
    /// the borrow ends with the `Args`.
    pub fn ptr_mut<T: ?Sized>(self, r: &mut T) -> Args {
        self.raw_ptr(r as *mut T as *mut u8 as u64)
    }
    /// Appends a pointer given as an address (prefetched like [`Args::ptr`]).
    pub fn raw_ptr(self, p: u64) -> Args {
        self.u64(p)
    }
    /// Appends a plain value's bytes, padded to whole words, where a C struct would put it:
    /// at the next even word when `T` is aligned to 8 (it holds a `u64`, `f64` or pointer),
    /// at the next multiple of 4 words when it is aligned to 16 (a `u128`, a
    /// `#[repr(align(16))]` vector type), and so on, so that the offsets of its fields, over
    /// 4, are the word indices the kernel reads them at, and pointers among them are
    /// prefetched like [`Args::ptr`]'s.
    pub fn pod<T: bytemuck::Pod>(mut self, v: &T) -> Args {
        let align = std::mem::align_of::<T>() / 4;
        while align > 1 && !self.words.len().is_multiple_of(align) {
            self.words.push(0);
        }
        let bytes = bytemuck::bytes_of(v);
        for chunk in bytes.chunks(4) {
            let mut w = [0u8; 4];
            w[..chunk.len()].copy_from_slice(chunk);
            self.words.push(u32::from_ne_bytes(w));
        }
        self
    }
    /// The words.
    pub fn words(&self) -> &[u32] {
        &self.words
    }
}

/// Buffers and history of one kernel, reused across launches. Protected by `Inner::state`.
#[derive(Default)]
struct State {
    args: Option<Buffer>,
    ctl: Option<Buffer>,
    spill: Option<Buffer>,
    ids: Option<Buffer>,
    alog: Option<Buffer>,
    /// The live map (`objects.rs`); a small spare for kernels that do not check objects.
    live: Option<Buffer>,
    /// Blocks earlier launches faulted on (prefetched next time), at most the pool's size.
    touched: Vec<u32>,
    max_steps: u32,
}

struct Inner {
    name: String,
    /// The user's source (the spill and commit pipelines are compiled from it when needed).
    source: String,
    /// The pipelines built so far, by variant (round mode and frame buffers bound); `new`
    /// builds the ordinary one for the buffers then in use.
    pipelines: Mutex<Vec<(Variant, Arc<ComputePipeline>)>>,
    atomics: bool,
    /// Its loops count their iterations (`guard.rs`; `UNIMEM_LOOP_GUARD` when it was made).
    loop_guard: bool,
    /// Its accesses are checked against the live map (`objects.rs`; `UNIMEM_CHECK_OBJECTS`
    /// when it was made).
    objects: bool,
    state: Mutex<State>,
}

impl Drop for Inner {
    /// Releases the pipelines and buffers in the internal heap, as they were made: the last
    /// kernel holding a pipeline destroys it, and the driver may allocate while it does. In
    /// the child of a `fork` they are left alone: the device is the parent's, and a driver
    /// call there could free the parent's objects through the file descriptors both share.
    fn drop(&mut self) {
        let pipelines = std::mem::take(self.pipelines.get_mut().unwrap_or_else(|p| p.into_inner()));
        let state = std::mem::take(self.state.get_mut().unwrap_or_else(|p| p.into_inner()));
        if crate::coherence::is_fork_child() {
            std::mem::forget((pipelines, state));
            return;
        }
        let _internal = InternalScope::new();
        drop((pipelines, state));
    }
}

/// A compiled kernel. Cheap to clone; the pipeline is cached per (source, entry).
///
/// The source is WGSL defining `fn <entry>(id: u32)`, called once per invocation `id` in
/// `0..n`; the runtime adds the `@compute` entry point, so the source declares none. It
/// reaches memory only through the prelude's accessors, on host pointers (`u64` addresses):
///
/// - `unimem_arg_u32(i)`, `unimem_arg_u64(i)`, `unimem_arg_ptr(i)`: argument word `i`
///   ([`Args`]: the byte offset over 4; a word the launch did not pass is an error);
/// - `unimem_load_{u32,i32,f32,u64,i64,ptr}(p)`, `unimem_store_{u32,i32,f32,u64,i64,ptr}(p, v)`,
///   and `unimem_load_f64(p)`, `unimem_store_f64(p, v)` on devices with `shaderFloat64`
///   (accesses aligned to their size);
/// - `unimem_atomic_{add,min,max,exchange}_u32(p, v)`, `unimem_atomic_compare_exchange_u32(p, cmp, v)`
///   (the old value);
/// - `unimem_running()`: false once the invocation faulted (the accessors then return 0).
///
/// Helper functions and `var<private>` are fine; buffers, `var<workgroup>`, barriers and
/// names beginning with `unimem_`, `UNIMEM_` or `Unimem` are refused at their line.
/// docs/MEMORY-MODEL.md states what a kernel may rely on.
#[derive(Clone)]
pub struct Kernel {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel").field("name", &self.inner.name).finish_non_exhaustive()
    }
}

/// Serialises launches (one fault buffer, one dirty bitmap). Explicit migrations and `fork`
/// wait for them through coherence's launch lock (`Space::launch`, `Space::exclusive`).
static LAUNCH: Mutex<()> = Mutex::new(());

/// Compiled pipelines by (user source, entry, variant, loop guard). Weak: a pipeline lives while a
/// kernel holds it (`Inner::pipelines`), a launch uses it, or it is among the [`KEPT_PIPELINES`] most
/// recently built or found (`RECENT`). So a kernel made again from the same source (a program
/// that creates, launches and destroys a kernel in a loop) finds it compiled, while a program
/// that generates new kernels for ever does not keep every one it destroyed (each holds its
/// JIT code and Vulkan objects: about 1.1 MiB on lavapipe).
type Cache = Vec<((String, String, Variant, bool), Weak<ComputePipeline>)>;
static CACHE: Mutex<Cache> = Mutex::new(Vec::new());

/// How many pipelines the cache keeps alive beyond those that kernels hold.
pub const KEPT_PIPELINES: usize = 16;
/// The [`KEPT_PIPELINES`] most recently built or found pipelines, the most recent first.
static RECENT: Mutex<VecDeque<Arc<ComputePipeline>>> = Mutex::new(VecDeque::new());

/// Makes `p` the most recent of `RECENT`; the oldest beyond [`KEPT_PIPELINES`] is released (and
/// destroyed, if no kernel holds it), outside the lock since that calls into the driver.
fn keep(p: &Arc<ComputePipeline>) {
    let released = {
        let mut recent = lock(&RECENT);
        recent.retain(|q| !Arc::ptr_eq(q, p));
        recent.push_front(Arc::clone(p));
        if recent.len() > KEPT_PIPELINES { recent.pop_back() } else { None }
    };
    drop(released);
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The WGSL module the runtime compiles for `user`'s `entry` on `dev`, for ordinary rounds
/// with every frame buffer bound, or in place with the windows the heap needs now (for
/// inspection; launches bind only the buffers in use).
pub fn generated_source(dev: &VulkanBlockDevice, space: &Space, user: &str, entry: &str) -> String {
    let variant = match dev.in_place() {
        true => variant_now(dev, MODE_NORMAL).unwrap_or(Variant { mode: MODE_NORMAL, buffers: 1, in_place: true, wide: true, addressed: false, objects: false }),
        false => Variant { mode: MODE_NORMAL, buffers: dev.geometry().buffers(), in_place: false, wide: false, addressed: false, objects: false },
    };
    module_for(dev, space, user, entry, variant)
}

fn module_for(dev: &VulkanBlockDevice, space: &Space, user: &str, entry: &str, variant: Variant) -> String {
    let (base, _) = unimem_alloc::managed_range();
    let arena = u64::from(dev.layout().blocks) * space.block_size() as u64;
    prelude::module(&dev.wgsl_constants(), dev.geometry().buffers(), base as u64, arena, user, entry, variant, dev.device().report().shader_float64)
}

/// The variant of round mode `mode` to dispatch now: it binds the frame buffers in use, or
/// in place the windows covering the committed heap, rounded up to a power of two (so a
/// kernel compiles at most log2(buffers) + 1 variants per mode), or none where in-place
/// kernels reach the heap at its addresses (`VulkanBlockDevice::in_place_addressed`: one
/// variant per mode, whatever the heap's size). Caller holds `LAUNCH`, so no
/// launch makes blocks resident meanwhile; anything else that does may put a frame (or a
/// mapped block, as the heap grows) beyond the bound, which the kernel then takes for a fault.
///
/// In place, each window takes a storage buffer, two with its 64-bit view, and a shader may
/// bind only `maxPerStageDescriptorStorageBuffers` (32 on lavapipe) of them, the runtime's
/// own included ([`OWN_STORAGE_BUFFERS`] at most): so the 64-bit views are dropped when the
/// windows would not fit with them, and a heap that needs more windows than fit without
/// them is an error (binding more crashed lavapipe's threads).
fn variant_now(dev: &VulkanBlockDevice, mode: u32) -> Result<Variant, Error> {
    if dev.in_place_addressed() {
        return Ok(Variant { mode, buffers: 1, in_place: true, wide: false, addressed: true, objects: false });
    }
    if let Some(w) = dev.window_bytes() {
        let committed = unimem_alloc::managed_committed();
        let windows = (committed as u64).div_ceil(w).max(1) as usize;
        let max = dev.device().report().max_storage_buffers as usize;
        let narrow = max.saturating_sub(OWN_STORAGE_BUFFERS);
        let (wide, cap) = match windows {
            n if n <= narrow / 2 => (true, narrow / 2),
            n if n <= narrow => (false, narrow),
            _ => {
                return Err(Error::Usage(format!(
                    "in place, kernels reach the managed heap through windows of {} MiB, one storage buffer each, and this device lets a shader bind {max} storage buffers (maxPerStageDescriptorStorageBuffers), {OWN_STORAGE_BUFFERS} of them the runtime's own: at most {narrow} windows, {} MiB of heap. {} MiB of heap are committed now (the allocator keeps its high-water mark). Set UNIMEM_IN_PLACE=off (blocks then migrate into device memory, with no such limit), or keep the heap smaller",
                    w >> 20,
                    (narrow as u64 * w) >> 20,
                    committed >> 20
                )))
            }
        };
        return Ok(Variant { mode, buffers: windows.next_power_of_two().min(cap), in_place: true, wide, addressed: false, objects: false });
    }
    let all = dev.geometry().buffers();
    Ok(Variant { mode, buffers: dev.buffers_in_use().max(1).next_power_of_two().min(all), in_place: false, wide: false, addressed: false, objects: false })
}

/// The pipeline of `variant` for `user`'s `entry`, its loops guarded if `loop_guard`
/// (`guard.rs`): cached, or compiled and warmed up. `serial` is the caller's hold on
/// `LAUNCH` if it has one (the warm-up dispatch needs it).
#[allow(clippy::too_many_arguments)]
fn build(dev: &VulkanBlockDevice, space: &Space, user: &str, entry: &str, variant: Variant, loop_guard: bool, serial: Option<&MutexGuard<'_, ()>>) -> Result<Arc<ComputePipeline>, Error> {
    let key = (user.to_owned(), entry.to_owned(), variant, loop_guard);
    // Two threads building one key at once leave two entries: take a live one.
    let cached = lock(&CACHE).iter().filter(|(k, _)| *k == key).find_map(|(_, p)| p.upgrade());
    if let Some(p) = cached {
        keep(&p);
        return Ok(p);
    }
    let source = module_for(dev, space, user, entry, variant);
    let report = dev.device().report();
    let float64 = report.shader_float64.then_some(()).ok_or(report.name.as_str());
    let name = format!("kernel `{entry}`");
    check::reserved_names(user)
        .and_then(|()| check::entry_points(user, entry))
        .and_then(|()| check::shadowed_builtins(user, &source[user.len()..], entry))
        .map_err(|(line, what)| CompileError::Rule { source_name: name.clone(), line, what })?;
    let prepare = |m: &mut naga::Module| {
        check::user_kernel(m, user, entry, float64)?;
        if loop_guard {
            guard::loops(m, user.len());
        }
        sites::mark(m, user.len());
        Ok(())
    };
    let compiled = compile_wgsl_checked(&name, &source, prelude::ENTRY_POINT, &prepare)?;
    let p = Arc::new(dev.device().create_pipeline(&compiled)?);
    match serial {
        Some(_) => warm_up(dev, &p)?,
        None => {
            let _serial = lock(&LAUNCH);
            warm_up(dev, &p)?;
        }
    }
    {
        let mut cache = lock(&CACHE);
        cache.retain(|(_, p)| p.strong_count() > 0);
        cache.push((key, Arc::downgrade(&p)));
    }
    keep(&p);
    Ok(p)
}

/// How a kernel is built: [`Kernel::with_options`]. [`KernelOptions::from_env`] reads the
/// environment as [`Kernel::new`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOptions {
    /// Every loop of the kernel counts its iterations against the step limit, so that an
    /// endless loop is an error instead of a hung device (`UNIMEM_LOOP_GUARD`; default on).
    pub loop_guard: bool,
    /// Every access is checked against the allocations live when each launch begins: freed
    /// objects and free space are errors even in blocks that hold live objects, at a cost
    /// per access (`UNIMEM_CHECK_OBJECTS`; default off; docs/OPTIONS.md).
    pub check_objects: bool,
}

impl Default for KernelOptions {
    fn default() -> Self {
        KernelOptions { loop_guard: true, check_objects: false }
    }
}

impl KernelOptions {
    /// `UNIMEM_LOOP_GUARD` and `UNIMEM_CHECK_OBJECTS`, validated (a bad value is an error
    /// naming the variable).
    pub fn from_env() -> Result<KernelOptions, Error> {
        Ok(KernelOptions {
            loop_guard: crate::options::loop_guard().map_err(Error::Config)?,
            check_objects: crate::options::check_objects().map_err(Error::Config)?,
        })
    }
}

impl Kernel {
    /// Compiles `wgsl`, which defines `fn <entry>(id: u32)`, on the prelude, with the options
    /// the environment sets ([`KernelOptions::from_env`]). Starts the runtime if needed.
    /// Errors: no Vulkan device, WGSL errors (with the line), a bad option value.
    pub fn new(wgsl: &str, entry: &str) -> Result<Kernel, Error> {
        let options = {
            let _internal = InternalScope::new();
            KernelOptions::from_env()?
        };
        Kernel::with_options(wgsl, entry, options)
    }

    /// [`Kernel::new`] with `options` instead of the environment's.
    pub fn with_options(wgsl: &str, entry: &str, options: KernelOptions) -> Result<Kernel, Error> {
        let _internal = InternalScope::new();
        // A byte-order mark, as editors on Windows save text files (a kernel read from one):
        // naga takes it for an identifier character, so `\u{feff}fn f(...)` would define no
        // `fn f` and the kernel be refused as not defining its entry. It is not code: dropped.
        let wgsl = wgsl.strip_prefix('\u{feff}').unwrap_or(wgsl);
        let wgsl = one_line_break(wgsl);
        let wgsl = &*wgsl;
        let (space, dev) = vulkan_runtime()?;
        let valid_name = entry.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && entry.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !check::is_reserved(entry);
        let refused = if !valid_name {
            Some(format!(
                "`{}` cannot name an entry function: use an identifier of ASCII letters, digits and `_`, not starting with a digit or a prefix of the runtime's (`unimem_`, `UNIMEM_`, `Unimem`)",
                entry.escape_debug()
            ))
        } else if !check::defines(wgsl, entry) {
            let defined = check::functions(wgsl);
            let hint = match defined.len() {
                0 => " (it defines no function)".to_owned(),
                _ => format!(" (it defines: {})", defined.iter().map(|f| format!("`fn {f}`")).collect::<Vec<_>>().join(", ")),
            };
            Some(format!("the source must define `fn {entry}(id: u32)`, called once per invocation{hint}"))
        } else {
            None
        };
        if let Some(what) = refused {
            return Err(LaunchError::Usage { kernel: entry.into(), what }.into());
        }
        let KernelOptions { loop_guard, check_objects: objects } = options;
        let variant = Variant { objects, ..variant_now(dev, MODE_NORMAL)? };
        let normal = build(dev, space, wgsl, entry, variant, loop_guard, None)?;
        Ok(Kernel {
            inner: Arc::new(Inner {
                name: entry.to_owned(),
                source: wgsl.to_owned(),
                pipelines: Mutex::new(vec![(variant, normal)]),
                atomics: prelude::uses_atomics(wgsl),
                loop_guard,
                objects,
                state: Mutex::new(State { max_steps: default_max_steps(dev), ..State::default() }),
            }),
        })
    }

    /// The pipeline of `variant`, built on first use. A launch whose blocks come to occupy
    /// more frame buffers than any before it compiles (and warms up) a variant inside the
    /// launch, once per kernel, mode and power of two.
    fn pipeline_of(&self, dev: &VulkanBlockDevice, space: &Space, variant: Variant, serial: &MutexGuard<'_, ()>) -> Result<Arc<ComputePipeline>, Error> {
        let variant = Variant { objects: self.inner.objects, ..variant };
        let mut pipes = lock(&self.inner.pipelines);
        if let Some((_, p)) = pipes.iter().find(|(v, _)| *v == variant) {
            return Ok(Arc::clone(p));
        }
        let p = build(dev, space, &self.inner.source, &self.inner.name, variant, self.inner.loop_guard, Some(serial))?;
        pipes.push((variant, Arc::clone(&p)));
        Ok(p)
    }

    /// Where site `site` (`sites.rs`) is in the kernel's source, for an error message (empty
    /// for 0, unknown), with the helper function it is in and where that is called. Parses
    /// the source again: called only to report an error.
    fn site_text(&self, dev: &VulkanBlockDevice, space: &Space, site: u32) -> String {
        let Some(i) = (site as usize).checked_sub(1) else { return String::new() };
        let user = &self.inner.source;
        let Ok(variant) = variant_now(dev, MODE_NORMAL) else { return String::new() };
        let source = module_for(dev, space, user, &self.inner.name, variant);
        let Ok(mut module) = naga::front::wgsl::parse_str(&source) else { return String::new() };
        if self.inner.loop_guard {
            guard::loops(&mut module, user.len());
        }
        let Some(&span) = sites::collect(&mut module, user.len()).get(i) else { return String::new() };
        sites::describe(user, span) + &sites::callers(&mut module, user, span, &self.inner.name)
    }

    /// True when the kernel's accesses are checked against the allocations live when each
    /// launch begins ([`KernelOptions::check_objects`]: `UNIMEM_CHECK_OBJECTS` when it was
    /// created by [`Kernel::new`]; off by default): freed
    /// memory and free space are errors even inside blocks holding live objects.
    pub fn objects_checked(&self) -> bool {
        self.inner.objects
    }

    /// The entry function's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// True when the kernel's loops count their iterations (`UNIMEM_LOOP_GUARD` when it was
    /// created; on by default).
    pub fn loops_guarded(&self) -> bool {
        self.inner.loop_guard
    }

    /// Sets how many accessor calls one invocation may make in one round before the launch
    /// fails as a runaway (default [`DEFAULT_MAX_STEPS`]; [`LAVAPIPE_MAX_STEPS`] on
    /// lavapipe), and, when its loops are guarded ([`Kernel::loops_guarded`]), how many loop
    /// iterations (each entry into a loop's body counts, all loops together).
    /// `steps` is clamped to `1..=u32::MAX - 1`, so that the counts always reach it.
    pub fn set_max_steps(&self, steps: u32) {
        lock(&self.inner.state).max_steps = steps.clamp(1, u32::MAX - 1);
    }

    /// Runs invocations `0..n` with `args` (at most 3968 bytes: `prelude::ARGS_BYTES` less
    /// the header); returns when all completed.
    pub fn launch(&self, n: u32, args: &Args) -> Result<LaunchReport, Error> {
        self.launch_words(n, &args.words)
    }

    /// Runs invocations `0..n` with arguments given as raw bytes (the C API), prefetched as
    /// [`Args`] are.
    pub fn launch_bytes(&self, n: u32, bytes: &[u8]) -> Result<LaunchReport, Error> {
        let _internal = InternalScope::new();
        // Refused here with the size the caller passed (the words below round it up to 4).
        if bytes.len() > MAX_ARGS_BYTES {
            return Err(self.too_many_args(bytes.len()));
        }
        let mut words = vec![0u32; bytes.len().div_ceil(4)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        self.launch_words(n, &words)
    }

    /// The error of a launch given `bytes` bytes of arguments, more than [`MAX_ARGS_BYTES`].
    fn too_many_args(&self, bytes: usize) -> Error {
        let what = format!("{bytes} bytes of arguments; at most {MAX_ARGS_BYTES} (pass a pointer to a larger struct instead)");
        LaunchError::Usage { kernel: self.inner.name.clone(), what }.into()
    }

    fn launch_words(&self, n: u32, words: &[u32]) -> Result<LaunchReport, Error> {
        let _internal = InternalScope::new();
        let start = Instant::now();
        let (space, dev) = vulkan_runtime()?;
        let serial = lock(&LAUNCH);
        if words.len() * 4 > MAX_ARGS_BYTES {
            return Err(self.too_many_args(words.len() * 4));
        }
        // Read before anything runs or is counted, at every launch (n = 0 too), so that a bad
        // value refuses the launch as a bad argument size does (docs/OPTIONS.md).
        let discover = crate::options::discover().map_err(Error::Config)?;
        let mut report = LaunchReport::default();
        if n == 0 {
            return Ok(report);
        }
        // Launches that run invocations (not those refused above, nor n = 0).
        space.stats.launches.fetch_add(1, Relaxed);
        let mut state = lock(&self.inner.state);
        // Until the launch returns, CPU writes to blocks with device copies are twinned, so
        // that blocks both the CPU and the kernel write are merged (coherence/twin.rs), and
        // explicit migrations and `fork` on other threads wait (`Space::exclusive`).
        let _coherence = space.launch();
        space.reap_stale();
        let t = Instant::now();
        let advised = advice::ranges();
        // Every aligned 64-bit argument may be a pointer (the blocks of those that are not
        // pointers into live allocations are skipped).
        let pointers: Vec<u64> = words.chunks_exact(2).map(word_pair).collect();
        let pinned = self.prefetch(space, dev, &pointers, &advised, discover, &mut state.touched, &mut report)?;
        report.migrate_time += t.elapsed();
        // Chunk after chunk; an error ends the launch at its chunk.
        let chunk = self.chunk_len(dev);
        let r = (0..n.div_ceil(chunk)).try_for_each(|c| {
            let base = c * chunk;
            self.rounds(space, dev, &serial, &mut state, base, (n - base).min(chunk), words, &pinned, &mut report)
        });
        // Advised PreferredHost: what the launch pulled to the device goes home now.
        let home = advised.iter().filter(|a| a.advice == Advice::PreferredHost).try_for_each(|a| space.to_host(a.start, a.end - a.start));
        report.time = start.elapsed();
        r?;
        home?;
        Ok(report)
    }

    /// Makes the arguments' allocations, the ranges advised for the device (`ReadMostly`,
    /// `Mirror`: read-duplicated; `PreferredDevice`: moved), the blocks their data points to
    /// (`discover.rs`, unless `UNIMEM_DISCOVER=off`) and the blocks of earlier launches
    /// resident, in that order of priority, as many as the pool holds. Returns the arguments'
    /// and advised blocks (at most half the pool), which replay rounds of many invocations keep
    /// most recently used so that migrating faulted blocks evicts other blocks first (a lone
    /// invocation's rounds do not: the whole pool is its own). `discover`: the
    /// `UNIMEM_DISCOVER` option, read once per launch by the caller.
    #[allow(clippy::too_many_arguments)]
    fn prefetch(&self, space: &Space, dev: &VulkanBlockDevice, pointers: &[u64], advised: &[advice::Advised], discover: bool, touched: &mut Vec<u32>, report: &mut LaunchReport) -> Result<Vec<u32>, Error> {
        if dev.in_place() {
            // Mapping costs no copy and no frame: map every live block not mapped yet, so that
            // the launch faults only on memory allocated while it runs (or freed memory).
            report.prefetched_blocks = map_all_live(space)?;
            return Ok(Vec::new());
        }
        let bs = space.block_size();
        // Wanted blocks in priority order, each once: (block, moved for writing).
        let mut want: Vec<(u32, bool)> = Vec::new();
        let mut known: HashSet<u32> = HashSet::new();
        let mut add = |want: &mut Vec<(u32, bool)>, b: u32, for_write: bool| {
            if known.insert(b) {
                want.push((b, for_write));
            }
        };
        for &p in pointers {
            if space.block_of(p as usize).is_none() {
                continue;
            }
            if let Some((base, size)) = unimem_alloc::lookup(p as *const u8) {
                if let Ok(r) = space.blocks_in(base, size) {
                    r.for_each(|b| add(&mut want, b as u32, false));
                }
            }
        }
        let roots: Vec<u32> = want.iter().map(|&(b, _)| b).collect();
        for a in advised {
            let for_write = match a.advice {
                Advice::ReadMostly | Advice::Mirror => false,
                Advice::PreferredDevice => true,
                Advice::PreferredHost | Advice::Clear => continue,
            };
            if let Ok(r) = space.blocks_in(a.start, a.end - a.start) {
                r.map(|b| b as u32).filter(|&b| has_live(space, b)).for_each(|b| add(&mut want, b, for_write));
            }
        }
        let capacity = dev.capacity();
        let mut pinned: Vec<u32> = want.iter().map(|&(b, _)| b).take(capacity / 2).collect();
        // What the arguments' data points to, transitively: before the history (this launch's
        // arguments reach it; the history is what earlier launches reached), and then part of
        // it: once resident these blocks are no longer scanned, so a block the CPU changes
        // behind them is found through the history.
        let mut found = Vec::new();
        if discover {
            let known: Vec<u32> = want.iter().map(|&(b, _)| b).collect();
            let room = capacity.saturating_sub(want.len());
            found = discover::reachable(space, &roots, &known, room);
            for &b in &found {
                add(&mut want, b, false);
            }
        }
        for &b in touched.iter() {
            if has_live(space, b) {
                add(&mut want, b, false);
            }
        }
        remember(touched, &found, capacity);
        want.truncate(capacity);
        report.prefetched_blocks = want.len() as u64;
        for for_write in [false, true] {
            let mut list: Vec<u32> = want.iter().filter(|w| w.1 == for_write).map(|w| w.0).collect();
            list.sort_unstable();
            for (first, count) in runs(&list) {
                space.to_device(space.block_addr(first as usize), count * bs, for_write)?;
            }
        }
        pinned.sort_unstable();
        Ok(pinned)
    }

    /// The dispatch / replay loop over the chunk of invocations `base..base + n` (`n` at
    /// most [`CHUNK`]). Each iteration ("round") dispatches the pending ordinary invocations,
    /// then a batch of escalated ones in a spill round followed by its commit pass (see
    /// `spill.rs`), then handles faults and migrates. Ids here are chunk-local; errors name
    /// launch-wide ones.
    #[allow(clippy::too_many_arguments)]
    fn rounds(&self, space: &Space, dev: &VulkanBlockDevice, serial: &MutexGuard<'_, ()>, state: &mut State, base: u32, n: u32, words: &[u32], pinned: &[u32], report: &mut LaunchReport) -> Result<(), Error> {
        let kernel = &self.inner.name;
        let bs = space.block_size();
        self.size_buffers(dev, state, n)?;
        let max_steps = state.max_steps;
        let State { args, ctl, alog, spill: spill_buf, ids, live, touched, .. } = state;
        let (args, ctl, spill_buf, ids, live) = (args.as_mut().expect("sized"), ctl.as_mut().expect("sized"), spill_buf.as_mut().expect("sized"), ids.as_mut().expect("sized"), live.as_mut().expect("sized"));
        let mut alog = alog.as_mut().filter(|_| self.logs_atomics(dev));
        // Reading a word past the arguments is an error (the count); they are zeroed anyway,
        // so that no earlier launch's arguments are left to read.
        args.as_mut_slice::<u32>()[ARGS_COUNT_AT] = words.len() as u32;
        // The live map, filled now (a snapshot of the allocations; `objects.rs`), and the
        // granules it covers; 0 without object checks.
        args.as_mut_slice::<u32>()[ARGS_LIVE_AT] = if self.inner.objects {
            let (heap, _) = unimem_alloc::managed_range();
            let map = live.as_mut_slice::<u32>();
            let bytes = unimem_alloc::managed_committed().min(map.len() * 32 * objects::GRANULE);
            objects::fill(&mut map[..objects::words_for(bytes)], heap, bytes);
            u32::try_from(bytes / objects::GRANULE).unwrap_or(u32::MAX)
        } else {
            0
        };
        let a = &mut args.as_mut_slice::<u32>()[ARGS_AT..prelude::ARGS_BYTES / 4];
        a[..words.len()].copy_from_slice(words);
        a[words.len()..].fill(0);
        if let Some(a) = alog.as_mut() {
            a.as_mut_slice::<u32>()[..prelude::alog_words(n)].fill(0);
        }
        // The two id lists (entry indices); each round's output list is the other's spare.
        let lists = [0, n];
        // The ordinary invocations pending (count 0: none) and the escalated ones.
        let mut round = Round::normal(n, NO_LIST, lists[0], lists[1], max_steps);
        let mut spill = Spill::new();
        let mut seen: HashSet<u32> = HashSet::new();
        let mut poison: Vec<u32> = Vec::new();
        let mut stalls = 0;
        let mut chunk_rounds = 0u32;
        report.chunks += 1;
        // After rounds without progress (invocations evicting each other's blocks), one
        // invocation runs alone until it completes: progress is then guaranteed whenever one
        // invocation's blocks fit in the pool.
        let mut solo = false;
        let capacity = dev.capacity().max(1);
        // Blocks this chunk migrated, until it is paced (`pacing.rs`): a fault on one of them
        // means it was evicted.
        let mut loaded: HashSet<u32> = HashSet::new();
        let mut pacer: Option<Pacer> = None;
        // Paced, the pending invocations that do not run next, in the order of the paced list:
        // the id list holds only those that run, so that a round does not copy the millions
        // that wait from one list to the other. Empty unless paced.
        let mut backlog = Backlog::default();
        // Invocations of unpaced rounds that wait on a block not migrated yet, kept off the
        // id list (`parking.rs`): never in place (nothing live faults there), empty while the
        // chunk is paced or solo.
        let mut lot = ParkingLot::default();
        let parks = !dev.in_place();
        loop {
            {
                let a = args.as_mut_slice::<u32>();
                let list = &mut a[ARGS_POISON_AT..ARGS_POISON_AT + POISON_CAPACITY];
                list.fill(NO_BLOCK);
                list[..poison.len()].copy_from_slice(&poison);
                ctl.as_mut_slice::<u32>()[CTL_PENDING_COUNT] = 0;
            }
            // Dispatches the pipeline of `variant` (in place, the heap imported up to what is
            // committed now: with its windows after the argument buffers, or reaching the part
            // it may by address).
            let mut dispatch = |variant: Variant, round: Round, bufs: [&mut Buffer; 5], alog: Option<&mut Buffer>| -> Result<(), Error> {
                let pipeline = self.pipeline_of(dev, space, variant, serial)?;
                let mut windows = dev.windows()?;
                let mut bufs: Vec<&mut Buffer> = bufs.into_iter().collect();
                let mut heap = 0u64;
                match windows.as_deref_mut() {
                    // At addresses: no window bound, the reach in the immediates instead.
                    Some(w) if variant.addressed => {
                        heap = dev.addressed_bytes(w)? as u64;
                        bufs.extend(w.for_dispatch(dev.device(), 0, alog)?);
                    }
                    Some(w) => bufs.extend(w.for_dispatch(dev.device(), variant.buffers, alog)?),
                    None => bufs.extend(alog),
                }
                let t = Instant::now();
                let round = Round { base, heap_lo: heap as u32, heap_hi: (heap >> 32) as u32, ..round };
                dev.dispatch(&pipeline, &mut bufs, bytemuck::bytes_of(&round), groups(round.count))?;
                report.dispatch_time += t.elapsed();
                Ok(())
            };
            // Alone, an escalated invocation goes first: it already applied atomics, and running
            // the ordinary ones alone until each is escalated in turn would take rounds in
            // proportion to the launch's size without completing any.
            let ran = match solo {
                true if spill.is_empty() => round.count.min(1),
                true => 0,
                false => round.count,
            };
            // The atomic results the lone ordinary invocation has saved: more after the round is
            // progress (they do not run again), though it needs no new block. Its id is read
            // before the round, which overwrites its input entry (the round's spare list).
            let lone = (solo && ran == 1 && alog.is_some())
                .then(|| if round.in_at == NO_LIST { 0 } else { ids.as_slice::<u32>()[round.in_at as usize * IDS_ENTRY_WORDS] & ID_MASK });
            let lone_saved = |alog: Option<&Buffer>| -> Option<u32> { Some(alog?.as_slice::<u32>()[prelude::alog_words(lone?)]) };
            let saved_before = lone_saved(alog.as_deref());
            if ran > 0 {
                dispatch(variant_now(dev, MODE_NORMAL)?, Round { count: ran, ..round }, [&mut *args, &mut *ctl, &mut *spill_buf, &mut *ids, &mut *live], alog.as_deref_mut())?;
            }
            let mut spilled = Collected::default();
            let mut spill_slots = 0;
            // Solo rounds run one invocation: the first escalated one if any waits, else an ordinary one.
            if !(spill.is_empty() || (solo && ran > 0)) {
                let slots = if solo { 1 } else { spill.next_batch_len() };
                let layout = spill.layout();
                let need = (slots * layout.words() * 4) as u64;
                if spill_buf.len() < need {
                    *spill_buf = dev.device().create_host_buffer(need.next_power_of_two())?;
                }
                spill.lay_out(spill_buf.as_mut_slice::<u32>(), slots);
                let spill_variant = variant_now(dev, MODE_SPILL)?;
                dispatch(spill_variant, Round::spill(MODE_SPILL, slots as u32, layout, max_steps), [&mut *args, &mut *ctl, &mut *spill_buf, &mut *ids, &mut *live], alog.as_deref_mut())?;
                spilled = spill.collect(spill_buf.as_slice::<u32>()).map_err(|detail| LaunchError::LogLimit { kernel: kernel.clone(), detail: SpillError { invocation: base + detail.invocation, ..detail } })?;
                if spilled.done > 0 && layout.stores > 0 {
                    // The spill round's buffers: its logged stores are in frames it bound.
                    dispatch(Variant { mode: MODE_COMMIT, ..spill_variant }, Round::spill(MODE_COMMIT, slots as u32, layout, max_steps), [&mut *args, &mut *ctl, &mut *spill_buf, &mut *ids, &mut *live], alog.as_deref_mut())?;
                }
                spill_slots = slots as u32;
            }
            report.rounds += 1;
            chunk_rounds += 1;
            report.escalated += u64::from(spill_slots);
            if chunk_rounds > 1 {
                space.stats.replay_rounds.fetch_add(1, Relaxed);
                report.replayed += u64::from(ran + spill_slots);
            }
            // Errors, and the blocks spill rounds faulted on, come through the fault buffer;
            // the blocks ordinary invocations faulted on, through the output list.
            let lone_advanced = matches!((saved_before, lone_saved(alog.as_deref())), (Some(b), Some(a)) if a > b);
            let faults = dev.take_faults();
            let mut pending = if ran > 0 { ctl.as_slice::<u32>()[CTL_PENDING_COUNT] } else { 0 };
            // Written blocks become Device-owned now, so that an eviction writes them back.
            space.device_wrote(&dev.take_dirty())?;
            let out = OutList::read(ids, &round, pending, space, faults.blocks);
            // `invocation` is chunk-local.
            let fail = |invocation: u32, kind: u32, address: u64, site: u32, errors: u32| -> Error {
                let invocation = base + invocation;
                if kind == prelude::KERNEL_ERROR_LOOP_BUDGET {
                    return LaunchError::LoopBudget { kernel: kernel.clone(), invocation }.into();
                }
                // A runaway loop has no address; an argument error's is the word's index.
                let place = if kind == prelude::KERNEL_ERROR_RUNAWAY_LOOP {
                    String::new()
                } else if kind == prelude::KERNEL_ERROR_ARGUMENT {
                    argument_text(address, words.len())
                } else {
                    match unimem_alloc::lookup(address as *const u8) {
                        // Live now, though the live map said freed: allocated while it ran.
                        Some((b, s)) if kind == prelude::KERNEL_ERROR_FREED && self.inner.objects => format!(
                            " (address {address:#x}, inside the allocation {b:#x}+{s}, which was not live when the launch began: object checks see the allocations of that moment, and another thread made this one while the kernel ran)"
                        ),
                        Some((b, s)) if space.block_of(address as usize).is_some() => format!(" (address {address:#x}, inside the live allocation {b:#x}+{s})"),
                        _ if space.block_of(address as usize).is_some() => format!(" (address {address:#x}, in the managed heap but in no live allocation{})", past_the_end(address)),
                        _ => outside_heap(address, words),
                    }
                };
                let left = if dev.in_place() {
                    "in place, the failed ones kept what they stored, and the atomics they ran, before they failed"
                } else {
                    "the failed ones stored nothing"
                };
                // A legitimate long walk needs only a higher limit: say what it is.
                let limit = match kind {
                    prelude::KERNEL_ERROR_RUNAWAY | prelude::KERNEL_ERROR_RUNAWAY_LOOP => format!(" (the step limit is {max_steps} per invocation and round)"),
                    _ => String::new(),
                };
                let place = place + &limit + &self.site_text(dev, space, site);
                LaunchError::Kernel { kernel: kernel.clone(), invocation, address, kind, what: prelude::error_kind_text(kind), place, errors, left }.into()
            };
            // Errors end the launch: those a spill round reported, else the ordinary round's
            // (the lowest invocation id), else faults on blocks without live data.
            if let Some(e) = faults.first_error {
                let kind = e.kind & ((1 << ERROR_SITE_SHIFT) - 1);
                return Err(fail(e.invocation, kind, e.address, e.kind >> ERROR_SITE_SHIFT, faults.errors + out.errors));
            }
            if let Some(e) = out.first_error {
                return Err(fail(e.id, e.kind, e.address, e.site, out.errors));
            }
            let faulted = out.blocks;
            let dead: Vec<u32> = faulted.iter().copied().filter(|&b| !has_live(space, b)).collect();
            if let Some((e, errors)) = OutList::first_fault_on(ids, &round, pending, space, &dead) {
                return Err(fail(e.id, prelude::KERNEL_ERROR_FREED, e.address, e.site, errors));
            }
            let escalations = out.escalated;
            let nf = faulted.len() as u64 + u64::from(faults.overflowed);
            report.device_faults += nf;
            space.stats.device_faults.fetch_add(nf, Relaxed);
            remember(touched, &faulted, capacity);
            let mut new_blocks = 0;
            let mut load: Vec<u32> = Vec::new();
            let mut new_poison = false;
            for &b in &faulted {
                if seen.insert(b) {
                    new_blocks += 1;
                }
                if dead.binary_search(&b).is_err() {
                    load.push(b);
                } else if !poison.contains(&b) && poison.len() < POISON_CAPACITY {
                    // Only spill rounds fault on it now (ordinary rounds' faults on it are
                    // errors above): their next run reports it as an error, with the address.
                    poison.push(b);
                    new_poison = true;
                }
            }
            if pacer.is_none() && load.iter().any(|b| loaded.contains(b)) {
                pacer = Some(Pacer::new(n, capacity));
                loaded = HashSet::new();
            }
            let learned = pacer.as_mut().map_or(0, |p| {
                learn(p, ids, &round, pending, space) + spilled.faults.iter().map(|&(id, b)| u32::from(p.learn(id, b))).sum::<u32>()
            });
            // Escalated invocations go to the spill queue.
            let escalated = if escalations > 0 { escalate(ids, alog.as_deref(), round.out_at, &mut pending, &mut spill) } else { 0 };
            let completed = ran - pending - escalated + spilled.done;
            // The entries of invocations that stopped this round (with a stop address); those
            // carried over follow them.
            let stopped = pending;
            if ran < round.count {
                carry_over(ids, &round, ran, &mut pending);
            }
            if pending == 0 && spill.is_empty() && lot.is_empty() && backlog.is_empty() {
                return Ok(());
            }
            // Launch-wide, for messages.
            let first_pending = base
                + match pending {
                    0 => lot.first_id().or(backlog.front()).or(spill.first()).unwrap_or(0),
                    _ => ids.as_slice::<u32>()[round.out_at as usize * IDS_ENTRY_WORDS] & ID_MASK,
                };
            if chunk_rounds >= MAX_ROUNDS {
                let pending = pending + (lot.len() + backlog.len() + spill.len()) as u32;
                return Err(LaunchError::TooManyRounds { kernel: kernel.clone(), pending, invocation: first_pending, rounds: chunk_rounds }.into());
            }
            let progress = completed > 0 || new_blocks > 0 || learned > 0 || new_poison || faults.overflowed > 0 || escalated > 0 || spilled.grew > 0 || spilled.advanced > 0 || lone_advanced;
            if completed > 0 {
                solo = false;
            }
            if progress {
                stalls = 0;
            } else {
                stalls += 1;
                if !solo && stalls >= 2 {
                    solo = true;
                    stalls = 0;
                } else if solo && stalls > capacity + 1 {
                    // Alone, it loads one block per round and the LRU keeps the last
                    // `capacity` it loaded (pinned blocks are not kept for it): after more
                    // rounds than that, its blocks do not fit.
                    let b = faulted.first().copied().unwrap_or(0);
                    return Err(LaunchError::NoProgress { kernel: kernel.clone(), invocation: first_pending, round: report.rounds, address: space.block_addr(b as usize), frames: capacity, block_size: bs }.into());
                }
            }
            let t = Instant::now();
            if (solo || pacer.is_some()) && !lot.is_empty() {
                // Paced and solo rounds take their invocations from the list: the parked ones
                // return to it, after those pending (paced, with the block each waits on learned,
                // as its run this round would have taught).
                let list = &mut ids.as_mut_slice::<u32>()[round.out_at as usize * IDS_ENTRY_WORDS..];
                lot.drain(|id, b| {
                    put(list, &mut pending, id);
                    if let Some(p) = pacer.as_mut() {
                        p.learn(id, b);
                    }
                });
            }
            if solo && !backlog.is_empty() {
                // Solo rounds take the list's first entry, and carry the others over.
                let list = &mut ids.as_mut_slice::<u32>()[round.out_at as usize * IDS_ENTRY_WORDS..];
                backlog.drain().for_each(|id| put(list, &mut pending, id));
            }
            if solo {
                // The whole pool is the lone invocation's: the arguments' blocks it does not
                // use are evicted before the ones it loaded (kept, they could leave it too
                // little room though its blocks fit the pool).
                self.migrate(space, 1, 0, &mut load)?;
            } else if let Some(p) = &pacer {
                // The paced list is the output list's entries (those that stopped, and any
                // carried over), then the backlog: they go to its front, in order.
                let list = &ids.as_slice::<u32>()[round.out_at as usize * IDS_ENTRY_WORDS..][..pending as usize * IDS_ENTRY_WORDS];
                backlog.push_front(list.chunks_exact(IDS_ENTRY_WORDS).map(|e| e[0] & ID_MASK));
                // The arguments' blocks are not pinned: those the invocations need are in
                // their histories.
                let resident = |b: u32| matches!(space.state(b as usize), CoState::Shared | CoState::Device);
                let mut choice = p.choose(spill.next_batch().chain(backlog.iter()), resident);
                dev.touch(&choice.keep);
                self.migrate(space, capacity, 0, &mut choice.load)?;
                // Those the choice looked at (the chosen among them) and a margin are tested,
                // and those ready run (an invocation a block of whose history is not resident
                // would stop at a fault the runtime knows of, or an earlier one, and teach
                // nothing); the rest of the list waits as it is.
                let tested = backlog.len().min(choice.scanned + pacing::READY_MARGIN);
                let list = &mut ids.as_mut_slice::<u32>()[round.out_at as usize * IDS_ENTRY_WORDS..];
                pending = 0;
                backlog.take_ready(tested, |id| p.ready(id, resident), |id| put(list, &mut pending, id));
            } else {
                dev.touch(pinned);
                let room = capacity - pinned.len();
                let budget = (room / 2).max(1);
                if parks {
                    // The invocations that stopped park by their block, and the blocks to load
                    // are chosen from the lot (`parking.rs`): those spill rounds faulted on
                    // (no invocation of the list waits on them) first, leaving room for one of
                    // the lot, then the lot's, of the lowest waiting ids first. Each block
                    // migrated, prefetched ones included, returns its invocations to the list.
                    park(ids, &round, stopped, &mut pending, space, &mut lot);
                    let reserve = usize::from(!lot.is_empty());
                    let mut want: Vec<u32> = load.iter().copied().filter(|&b| !lot.holds(b)).take(budget - reserve).collect();
                    let room = budget - want.len();
                    want.extend(lot.first_blocks(room));
                    let moved = self.migrate(space, budget, PREFETCH_BLOCKS as u32, &mut want)?;
                    let list = &mut ids.as_mut_slice::<u32>()[round.out_at as usize * IDS_ENTRY_WORDS..];
                    for &b in &moved {
                        lot.unpark(b, |id| put(list, &mut pending, id));
                    }
                    debug_assert!(lot.len() > 1 << 12 || lot.check());
                    loaded.extend(moved);
                } else {
                    loaded.extend(self.migrate(space, budget, PREFETCH_BLOCKS as u32, &mut load)?);
                }
            }
            report.migrate_time += t.elapsed();
            let next_out = if round.out_at == lists[0] { lists[1] } else { lists[0] };
            round = Round::normal(pending, round.out_at, next_out, round.out_at, max_steps);
        }
    }

    /// Invocations per chunk on `dev`: [`CHUNK`], halved until every buffer sized per
    /// invocation (the id lists; the atomic log, when atomics are logged) fits the device's
    /// `maxStorageBufferRange` (bound whole, each must).
    fn chunk_len(&self, dev: &VulkanBlockDevice) -> u32 {
        let range = u64::from(dev.device().report().max_storage_buffer_range);
        let logs = self.logs_atomics(dev);
        let fits = |c: u32| (prelude::ids_words(c) * 4) as u64 <= range && (!logs || (prelude::alog_words(c) * 4) as u64 <= range);
        let mut c = CHUNK;
        while c > 1 && !fits(c) {
            c /= 2;
        }
        c
    }

    /// True when the kernel's atomics save their results in the atomic log: it has atomics,
    /// and they are not direct (in place, `prelude::IN_PLACE`).
    fn logs_atomics(&self, dev: &VulkanBlockDevice) -> bool {
        self.inner.atomics && !dev.in_place()
    }

    /// Creates or grows the kernel's argument, control, spill and atomic-log buffers.
    fn size_buffers(&self, dev: &VulkanBlockDevice, state: &mut State, n: u32) -> Result<(), Error> {
        let device = dev.device();
        let ensure = |buf: &mut Option<Buffer>, bytes: u64| -> Result<(), Error> {
            if buf.as_ref().is_none_or(|b| b.len() < bytes) {
                *buf = Some(device.create_host_buffer(bytes)?);
            }
            Ok(())
        };
        ensure(&mut state.args, prelude::ARGS_BYTES as u64)?;
        ensure(&mut state.ctl, (CTL_WORDS * 4) as u64)?;
        ensure(&mut state.spill, 64)?;
        ensure(&mut state.ids, (prelude::ids_words(n) * 4) as u64)?;
        if self.logs_atomics(dev) {
            ensure(&mut state.alog, (prelude::alog_words(n) * 4) as u64)?;
        }
        // The live map covers the heap committed now (grown by a quarter beyond it, so that
        // a growing heap does not make a new buffer every launch).
        let committed = if self.inner.objects { unimem_alloc::managed_committed() } else { 0 };
        let words = objects::words_for(committed);
        if state.live.as_ref().is_none_or(|b| b.len() < (words * 4) as u64) {
            state.live = Some(device.create_host_buffer(((words + words / 4) * 4).max(16) as u64)?);
        }
        Ok(())
    }

    /// Migrates faulted blocks, at most `budget` (ordinary rounds: half the frames not pinned,
    /// so that the invocations whose blocks arrive can complete), plus, within that budget,
    /// up to `prefetch` live blocks that follow each of them.
    ///
    /// In place, mapping costs no copy and no frame: the faulted blocks and every other live
    /// block of the heap not yet mapped are mapped, so the next round faults only on memory
    /// allocated meanwhile (or freed memory, an error).
    fn migrate(&self, space: &Space, budget: usize, prefetch: u32, faulted: &mut Vec<u32>) -> Result<Vec<u32>, Error> {
        if space.device().in_place() {
            return map_all_live(space).map(|_| Vec::new());
        }
        faulted.truncate(budget);
        faulted.sort_unstable();
        faulted.dedup();
        let mut all = faulted.clone();
        'outer: for &b in faulted.iter() {
            for k in 1..=prefetch {
                if all.len() >= budget {
                    break 'outer;
                }
                let nb = b + k;
                if space.block_of(space.block_addr(nb as usize)).is_none() || !has_live(space, nb) {
                    break;
                }
                all.push(nb);
            }
        }
        all.sort_unstable();
        all.dedup();
        for (first, count) in runs(&all) {
            space.to_device(space.block_addr(first as usize), count * space.block_size(), false)?;
        }
        Ok(all)
    }
}

/// Runs `pipeline` once with no invocations: drivers that compile lazily (lavapipe JITs on
/// the first dispatch, ~0.8 s for the demo's kernel) do it here, when the pipeline is built,
/// rather than in a launch. The caller holds `LAUNCH` (the dispatch uses the engine's
/// buffers). Binds a small buffer to each kernel binding the pipeline uses.
fn warm_up(dev: &VulkanBlockDevice, pipeline: &ComputePipeline) -> Result<(), Error> {
    let first_arg = BINDING_FRAMES + dev.geometry().buffers() as u32;
    let count = pipeline.bindings().iter().map(|b| (b.binding + 1).saturating_sub(first_arg)).max().unwrap_or(0);
    let mut bufs: Vec<Buffer> = Vec::new();
    for k in 0..count {
        // Uniform buffers hold what the kernel declares; the others are never read here.
        let b = pipeline.bindings().iter().find(|b| b.binding == first_arg + k);
        bufs.push(dev.device().create_host_buffer(b.and_then(|b| b.uniform_bytes).unwrap_or(64))?);
    }
    let mut refs: Vec<&mut Buffer> = bufs.iter_mut().collect();
    let round = Round::normal(0, NO_LIST, 0, 0, 0);
    dev.dispatch(pipeline, &mut refs, bytemuck::bytes_of(&round), [1, 1, 1])?;
    Ok(())
}

/// [`LAVAPIPE_MAX_STEPS`] on lavapipe, else [`DEFAULT_MAX_STEPS`].
fn default_max_steps(dev: &VulkanBlockDevice) -> u32 {
    if dev.device().report().name.contains("llvmpipe") {
        LAVAPIPE_MAX_STEPS
    } else {
        DEFAULT_MAX_STEPS
    }
}

/// In place: maps every block of the committed heap that holds a live allocation and is not
/// mapped yet (one state load per mapped block, a bitmap scan per other block). Returns how
/// many it mapped.
fn map_all_live(space: &Space) -> Result<u64, Error> {
    let committed = (unimem_alloc::managed_committed() / space.block_size()) as u32;
    let todo: Vec<u32> = (0..committed).filter(|&b| space.state(b as usize) != CoState::InPlace && has_live(space, b)).collect();
    for (first, count) in runs(&todo) {
        space.to_device(space.block_addr(first as usize), count * space.block_size(), false)?;
    }
    Ok(todo.len() as u64)
}

/// True when block `b` holds a live allocation.
fn has_live(space: &Space, b: u32) -> bool {
    unimem_alloc::any_live(space.block_addr(b as usize), space.block_size())
}

/// Runs of consecutive blocks in sorted `blocks`: (first, count).
fn runs(blocks: &[u32]) -> Vec<(u32, usize)> {
    let mut out: Vec<(u32, usize)> = Vec::new();
    for &b in blocks {
        match out.last_mut() {
            Some((f, c)) if *f + *c as u32 == b => *c += 1,
            _ => out.push((b, 1)),
        }
    }
    out
}

/// `src` with every line break a `\n`: a lone `\r` (old Mac line ends), vertical tab and form
/// feed, which WGSL counts as line breaks too, become `\n` (`\r\n` stays: its `\n` ends the
/// line). The runtime's text checks, comment skipping and line numbers (its own and naga's)
/// count `\n`; byte offsets are unchanged, so spans stay valid.
fn one_line_break(src: &str) -> std::borrow::Cow<'_, str> {
    let lone = |i: usize, b: u8| matches!(b, 0x0b | 0x0c) || (b == b'\r' && src.as_bytes().get(i + 1) != Some(&b'\n'));
    if !src.bytes().enumerate().any(|(i, b)| lone(i, b)) {
        return src.into();
    }
    let bytes: Vec<u8> = src.bytes().enumerate().map(|(i, b)| if lone(i, b) { b'\n' } else { b }).collect();
    // Only ASCII bytes were replaced, by an ASCII byte: still UTF-8.
    String::from_utf8(bytes).expect("ASCII replaced by ASCII").into()
}

/// Workgroups for `count` invocations (x capped at 65535, the rest along y).
fn groups(count: u32) -> [u32; 3] {
    let total = count.div_ceil(64);
    let gx = total.clamp(1, 65535);
    [gx, total.div_ceil(gx), 1]
}

/// An invocation that stopped with an address (fault or error), from an output list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stop {
    id: u32,
    /// 0 for a fault, else `KERNEL_ERROR_*`.
    kind: u32,
    address: u64,
    /// The site it stopped at (`sites.rs`; 0: unknown).
    site: u32,
}

impl Stop {
    /// Puts `self` in `lowest` unless it holds a stop of a lower invocation id (errors name
    /// the lowest failing id, whatever order the round appended them in).
    fn keep_if_lower(self, lowest: &mut Option<Stop>) {
        if lowest.is_none_or(|l| self.id < l.id) {
            *lowest = Some(self);
        }
    }
}

/// The entries of an output list (prelude.rs "Id buffer"). Invocations that completed are
/// not in it.
fn entries<'a>(ids: &'a Buffer, round: &Round, pending: u32) -> impl Iterator<Item = (u32, Option<Stop>)> + 'a {
    let w = ids.as_slice::<u32>();
    let list = &w[round.out_at as usize * IDS_ENTRY_WORDS..][..pending as usize * IDS_ENTRY_WORDS];
    let spare = round.spare_at as usize * IDS_ENTRY_WORDS;
    list.chunks_exact(IDS_ENTRY_WORDS).map(move |e| {
        let stop = (e[1] != NO_SLOT).then(|| {
            let at = spare + (e[1] & SLOT_MASK) as usize * IDS_ENTRY_WORDS;
            let kind = (e[0] & !ESCALATE & !ESCALATE_STORES) >> KIND_SHIFT;
            Stop { id: e[0] & ID_MASK, kind, address: u64::from(w[at]) | u64::from(w[at + 1]) << 32, site: e[1] >> SITE_SHIFT }
        });
        (e[0], stop)
    })
}

/// What an ordinary round's output list of `pending` entries says.
struct OutList {
    /// Blocks faulted on, with those of the spill round, each once, sorted.
    blocks: Vec<u32>,
    /// Entries escalated (a log was full).
    escalated: u32,
    /// Entries that erred, and the one of them with the lowest id.
    errors: u32,
    first_error: Option<Stop>,
}

impl OutList {
    fn read(ids: &Buffer, round: &Round, pending: u32, space: &Space, also: Vec<u32>) -> OutList {
        let mut out = OutList { blocks: also, escalated: 0, errors: 0, first_error: None };
        let mut last = NO_BLOCK;
        for (first, stop) in entries(ids, round, pending) {
            match stop {
                _ if first & ESCALATE != 0 => out.escalated += 1,
                Some(s) if s.kind != 0 => {
                    out.errors += 1;
                    s.keep_if_lower(&mut out.first_error);
                }
                Some(s) => {
                    // A fault is on a block of the heap: the kernel made an address outside
                    // it an error. (Were that broken, the invocation would stall into the
                    // no-progress error rather than bring the process down.)
                    let Some(b) = space.block_of(s.address as usize).map(|b| b as u32) else {
                        debug_assert!(false, "a fault outside the managed heap: {s:?}");
                        continue;
                    };
                    // Neighbouring invocations often fault on the same block: skip repeats early.
                    if b != last {
                        last = b;
                        out.blocks.push(b);
                    }
                }
                None => {}
            }
        }
        out.blocks.sort_unstable();
        out.blocks.dedup();
        out
    }

    /// The fault, with the lowest id, on one of the sorted `dead` blocks (those without live
    /// data: an access there is an error), and how many faulted there. None if `dead` is empty.
    fn first_fault_on(ids: &Buffer, round: &Round, pending: u32, space: &Space, dead: &[u32]) -> Option<(Stop, u32)> {
        if dead.is_empty() {
            return None;
        }
        let mut first: Option<Stop> = None;
        let mut count = 0;
        for (_, stop) in entries(ids, round, pending) {
            let Some(s) = stop.filter(|s| s.kind == 0) else { continue };
            if space.block_of(s.address as usize).is_some_and(|b| dead.binary_search(&(b as u32)).is_ok()) {
                count += 1;
                s.keep_if_lower(&mut first);
            }
        }
        first.map(|s| (s, count))
    }
}

/// After a round that ran only the first `ran` of `round`'s invocations: appends the others
/// (in order) to the output list, which holds `pending` entries.
fn carry_over(ids: &mut Buffer, round: &Round, ran: u32, pending: &mut u32) {
    let w = ids.as_mut_slice::<u32>();
    let e = IDS_ENTRY_WORDS;
    let out = (round.out_at + *pending) as usize * e;
    let rest = (round.count - ran) as usize;
    if round.in_at == NO_LIST {
        for (k, id) in (ran..round.count).enumerate() {
            w[out + k * e] = id;
            w[out + k * e + 1] = NO_SLOT;
        }
    } else {
        let from = (round.in_at + ran) as usize * e;
        w.copy_within(from..from + rest * e, out);
    }
    *pending += rest as u32;
}

/// Appends the entry of invocation `id` (no stop address) to an id `list` of `pending`
/// entries.
fn put(list: &mut [u32], pending: &mut u32, id: u32) {
    list[*pending as usize * IDS_ENTRY_WORDS..][..IDS_ENTRY_WORDS].copy_from_slice(&[id, NO_SLOT]);
    *pending += 1;
}

/// Moves the escalated entries (flag `ESCALATE`) of the output list of `pending` entries at
/// `out_at` to `spill`, with the atomic results they saved, and compacts the list. Returns
/// how many moved.
fn escalate(ids: &mut Buffer, alog: Option<&Buffer>, out_at: u32, pending: &mut u32, spill: &mut Spill) -> u32 {
    let e = IDS_ENTRY_WORDS;
    let list = &mut ids.as_mut_slice::<u32>()[out_at as usize * e..][..*pending as usize * e];
    let mut keep = 0;
    for i in 0..*pending as usize {
        let entry = list[i * e];
        if entry & ESCALATE == 0 {
            list.copy_within(i * e..(i + 1) * e, keep * e);
            keep += 1;
            continue;
        }
        let id = entry & ID_MASK;
        if entry & ESCALATE_STORES != 0 {
            spill.need_table();
        }
        let atomics = alog.map_or_else(Vec::new, |a| {
            let w = a.as_slice::<u32>();
            let at = prelude::alog_words(id);
            let saved = (w[at] as usize).min(prelude::ATOMIC_LOG as usize);
            w[at + 1..at + 1 + saved].to_vec()
        });
        spill.push(Escalated { id, atomics });
    }
    let moved = *pending - keep as u32;
    *pending = keep as u32;
    moved
}

/// Parks the invocations of the first `stopped` entries of the output list at `round.out_at`
/// (this round's faults; escalated entries were moved to the spill queue) in `lot`, by the
/// block each stopped on, and leaves the list of `pending` entries holding those it could
/// not park (a stop address outside the heap, which a fault never has; entries carried over,
/// whose stop address is gone), updating `pending`.
fn park(ids: &mut Buffer, round: &Round, stopped: u32, pending: &mut u32, space: &Space, lot: &mut ParkingLot) {
    // The ids of stopped entries that stay (none but for a fault outside the heap).
    let mut stay: Vec<u32> = Vec::new();
    lot.park(entries(ids, round, stopped).filter_map(|(first, stop)| {
        let parked = stop.filter(|s| s.kind == 0 && first & ESCALATE == 0).and_then(|s| Some((s.id, space.block_of(s.address as usize)? as u32)));
        if parked.is_none() {
            stay.push(first & ID_MASK);
        }
        parked
    }));
    let e = IDS_ENTRY_WORDS;
    let list = &mut ids.as_mut_slice::<u32>()[round.out_at as usize * e..][..*pending as usize * e];
    // Those carried over move up behind the ones that stay; neither has a stop address now.
    list.copy_within(stopped as usize * e.., stay.len() * e);
    let mut front = 0;
    stay.iter().for_each(|&id| put(list, &mut front, id));
    *pending = front + (*pending - stopped);
}

/// Teaches `pacer` the faults of the output list of `pending` entries at `round.out_at`
/// (escalated entries are not in it yet). Returns how many histories grew.
fn learn(pacer: &mut Pacer, ids: &Buffer, round: &Round, pending: u32, space: &Space) -> u32 {
    let mut learned = 0;
    for (first, stop) in entries(ids, round, pending) {
        let Some(s) = stop.filter(|s| s.kind == 0 && first & ESCALATE == 0) else { continue };
        if let Some(b) = space.block_of(s.address as usize) {
            learned += u32::from(pacer.learn(s.id, b as u32));
        }
    }
    learned
}

/// Adds `blocks` to the kernel's history, keeping at most `cap` (the newest).
fn remember(touched: &mut Vec<u32>, blocks: &[u32], cap: usize) {
    if blocks.is_empty() {
        return;
    }
    let mut known: HashSet<u32> = touched.iter().copied().collect();
    for &b in blocks {
        if known.insert(b) {
            touched.push(b);
        }
    }
    if touched.len() > cap {
        let drop = touched.len() - cap;
        touched.drain(..drop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Args::pod` puts a value where a C (or `#[repr(C)]`) struct would: a type aligned to
    /// 16 at a multiple of 4 words. It was put at the next even word, so after one `u32` a
    /// `#[repr(align(16))]` vector was read 8 bytes early (found by a user's test).
    #[test]
    fn pod_arguments_are_aligned_as_in_a_c_struct() {
        #[repr(C, align(16))]
        #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        struct V4 {
            v: [f32; 4],
        }
        #[repr(C)]
        #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        struct Both {
            a: u32,
            _pad: [u32; 3],
            v: V4,
        }
        let v = V4 { v: [1.0, 2.0, 3.0, 4.0] };
        let whole = Args::new().pod(&Both { a: 7, _pad: [0; 3], v });
        let by_field = Args::new().u32(7).pod(&v);
        assert_eq!(by_field.words(), whole.words(), "V4 at word 4, as in the struct");
        assert_eq!(Args::new().u32(1).pod(&5u128).words(), [1, 0, 0, 0, 5, 0, 0, 0]);
        // Aligned to 8: the next even word; to 4 or less: the next word.
        assert_eq!(Args::new().u32(1).pod(&3u64).words(), [1, 0, 3, 0]);
        assert_eq!(Args::new().u32(1).pod(&[2u16, 3]).pod(&4u8).words(), [1, 2 | 3 << 16, 4]);
        assert_eq!(Args::new().u32(1).u32(2).u32(3).pod(&[9u32; 4]).words(), [1, 2, 3, 9, 9, 9, 9]);
    }

    #[test]
    fn every_line_break_becomes_a_newline() {
        assert_eq!(one_line_break("a\rb\r\nc\x0bd\x0ce\n\r"), "a\nb\r\nc\nd\ne\n\n");
        assert!(matches!(one_line_break("a\r\nb\n"), std::borrow::Cow::Borrowed("a\r\nb\n")));
        assert_eq!(one_line_break("é\rü"), "é\nü");
    }

    #[test]
    fn f64_is_found_as_a_word_or_in_its_accessors() {
        use prelude::uses_f64;
        assert!(uses_f64("fn f(id: u32) { let x: f64 = 1.0lf; }"));
        assert!(uses_f64("let v = unimem_load_f64(p);"));
        assert!(uses_f64("unimem_store_f64(p, v)"));
        assert!(!uses_f64("fn f(id: u32) { let x = unimem_load_u64(p); }"));
        assert!(!uses_f64("let myf64 = 1u; let f64x = 2u;"));
    }

    #[test]
    fn runs_coalesce_consecutive_blocks() {
        assert_eq!(runs(&[1, 2, 3, 7, 9, 10]), vec![(1, 3), (7, 1), (9, 2)]);
        assert!(runs(&[]).is_empty());
    }

    #[test]
    fn args_align_64_bit_values_like_c() {
        let a = Args::new().u32(7).u64(0x1_0000_0002).f32(1.0);
        assert_eq!(a.words(), &[7, 0, 2, 1, 1.0f32.to_bits()]);
    }

    #[test]
    fn history_keeps_the_newest() {
        let mut t = vec![1, 2];
        remember(&mut t, &[2, 3, 4], 3);
        assert_eq!(t, vec![2, 3, 4]);
    }
}
